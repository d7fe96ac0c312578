//! Database connections for doorzet services: SQLite is the embedded default (the file is created
//! and migrated on start, WAL with synchronous=FULL), PostgreSQL the production option. One pool
//! type serves both, so a store's queries are written once with `$1` placeholders (or, for large
//! generated statements, with [`Params`]).
//!
//! # Layout
//! - [`StorageConfig`]: the `[storage]` configuration section.
//! - [`Database`]: a connected, migrated pool and which backend it talks to.
//! - [`Migrations`]: a service's migration sets for both backends.
//! - [`ids`]: time-ordered record ids, so that keys grow at the end of their B-trees.
//! - `testing` (feature `testing`): throwaway databases on SQLite and PostgreSQL for storage tests.

pub mod ids;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyConnection, AnyPool, Connection, Executor};

/// The `[storage]` section of a service's configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `sqlite:path/to/file.db` (created and migrated on start) or `postgres://user@host/db`.
    pub url: String,
}

/// Which database server a [`Database`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file, embedded in the process.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// Failures of connecting to or migrating a database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is neither `sqlite:` nor `postgres://`.
    #[error("storage.url must start with sqlite: or postgres://, got `{0}`")]
    UnsupportedUrl(String),
    /// The database could not be reached or opened.
    #[error("cannot open database: {0}")]
    Connect(#[source] sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
}

/// A service's migrations, one set per backend (`migrations/{sqlite,postgres}/NNNN_<what>.sql`).
#[derive(Debug)]
pub struct Migrations {
    /// Migrations for SQLite.
    pub sqlite: &'static Migrator,
    /// Migrations for PostgreSQL.
    pub postgres: &'static Migrator,
}

/// A connected and migrated database.
#[derive(Debug, Clone)]
pub struct Database {
    pool: AnyPool,
    backend: Backend,
    /// SQLite: the process's one writing connection (see [`Database::writer`]).
    writer: Option<std::sync::Arc<tokio::sync::Mutex<Option<AnyConnection>>>>,
    /// SQLite on a file: the file (see [`Database::sqlite_file`]).
    file: Option<std::path::PathBuf>,
}

/// The connection to write on, held until dropped (see [`Database::writer`]).
#[derive(Debug)]
pub struct Writer {
    held: Held,
}

#[derive(Debug)]
enum Held {
    Sqlite(tokio::sync::OwnedMappedMutexGuard<Option<AnyConnection>, AnyConnection>),
    Postgres(sqlx::pool::PoolConnection<sqlx::Any>),
}

impl std::ops::Deref for Writer {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        match &self.held {
            Held::Sqlite(conn) => conn,
            Held::Postgres(conn) => conn,
        }
    }
}

impl std::ops::DerefMut for Writer {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match &mut self.held {
            Held::Sqlite(conn) => conn,
            Held::Postgres(conn) => conn,
        }
    }
}

/// The settings every SQLite connection runs with. The page size comes first, so that it applies
/// to a file that `journal_mode` is about to create; SQLite takes it only before a file's first
/// write (an existing file keeps its own). Against the default 4 KiB, 16 KiB pages make a commit of
/// a batch of log records write a quarter of the WAL frames (each one two system calls): the facts
/// bench's `QueryFacts` rose by 0.03 × echo in each of three interleaved pairs and by 0.005 on
/// average in four more, within the bench's noise (docs/performance.md, 2026-12-06, ninth
/// session); 32 KiB gave no more, and the coordinator's appends were slower.
const SQLITE_PRAGMAS: &str = "PRAGMA page_size = 16384; PRAGMA journal_mode = WAL; \
    PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; \
    PRAGMA cache_size = -32768;";

impl Database {
    /// Connects to `url` and applies every set of `migrations` (their versions must not overlap:
    /// each crate that owns tables numbers its own range). An SQLite file is created when missing.
    /// Accepted forms: `sqlite:path/to/file.db`, `sqlite://path`, `sqlite::memory:`,
    /// `postgres://user@host:port/db`.
    pub async fn connect(url: &str, migrations: &[&Migrations]) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(redact(url)));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") && !url.contains(":memory:") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url).map_err(StoreError::Connect)?;
        let mut pool = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        pool = match backend {
            // One writer at a time is SQLite's model; a few readers share the WAL.
            Backend::Sqlite => pool.max_connections(4).after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute(SQLITE_PRAGMAS).await?;
                    Ok(())
                })
            }),
            Backend::Postgres => pool.max_connections(16),
        };
        let pool = pool
            .connect_with(options.clone())
            .await
            .map_err(StoreError::Connect)?;
        let mut all: Vec<_> = migrations
            .iter()
            .flat_map(|set| match backend {
                Backend::Sqlite => set.sqlite.migrations.iter(),
                Backend::Postgres => set.postgres.migrations.iter(),
            })
            .cloned()
            .collect();
        all.sort_by_key(|m| m.version);
        Migrator::with_migrations(all).run(&pool).await?;
        let (writer, file) = match backend {
            Backend::Sqlite => {
                let mut conn = AnyConnection::connect_with(&options)
                    .await
                    .map_err(StoreError::Connect)?;
                conn.execute(SQLITE_PRAGMAS).await?;
                // Its cache stays valid between writes and would grow to the full 32 MiB; appends
                // and recent rows need far less.
                conn.execute("PRAGMA cache_size = -4096;").await?;
                // The main database's file; empty for an in-memory one.
                let files: Vec<(i64, String, String)> = sqlx::query_as("PRAGMA database_list")
                    .fetch_all(&mut conn)
                    .await?;
                let file = files
                    .into_iter()
                    .find(|(_, name, file)| name == "main" && !file.is_empty())
                    .map(|(_, _, file)| std::path::PathBuf::from(file));
                (
                    Some(std::sync::Arc::new(tokio::sync::Mutex::new(Some(conn)))),
                    file,
                )
            }
            Backend::Postgres => (None, None),
        };
        let db = Self {
            pool,
            backend,
            writer,
            file,
        };
        let durability = db.durability().await?;
        if !durability.is_durable() {
            // A crash could then lose what was acknowledged; the server's owner must know.
            tracing::error!(?durability, "the database does not make commits durable");
        }
        Ok(db)
    }

    /// Reads the durability settings in force on a connection of the pool.
    pub async fn durability(&self) -> Result<Durability, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => {
                let mut conn = self.pool.acquire().await?;
                let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
                    .fetch_one(&mut *conn)
                    .await?;
                let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
                    .fetch_one(&mut *conn)
                    .await?;
                Durability::Sqlite {
                    journal_mode: journal,
                    synchronous,
                }
            }
            Backend::Postgres => {
                let fsync: String = sqlx::query_scalar("SHOW fsync")
                    .fetch_one(&self.pool)
                    .await?;
                let synchronous_commit: String = sqlx::query_scalar("SHOW synchronous_commit")
                    .fetch_one(&self.pool)
                    .await?;
                Durability::Postgres {
                    fsync,
                    synchronous_commit,
                }
            }
        })
    }

    /// The connection to write on. On SQLite, which lets one connection write at a time, it is
    /// the process's one writing connection, handed to one writer after the other: a writer that
    /// found the file locked would sleep in SQLite's busy handler (1, 2, 5, 10, ... up to 100 ms
    /// a round) however soon the lock is free again, and this connection's page cache stays
    /// valid between writes (another connection's write empties it). Take it just before a write
    /// transaction (or a lone writing statement) and drop it when that commits, never holding it
    /// across other awaits. On PostgreSQL, which locks rows, it is a pooled connection, so
    /// writers go at once.
    pub async fn writer(&self) -> Result<Writer, sqlx::Error> {
        Ok(Writer {
            held: match &self.writer {
                Some(slot) => Held::Sqlite(
                    tokio::sync::OwnedMutexGuard::try_map(slot.clone().lock_owned().await, |c| {
                        c.as_mut()
                    })
                    .map_err(|_| sqlx::Error::PoolClosed)?,
                ),
                None => Held::Postgres(self.pool.acquire().await?),
            },
        })
    }

    /// SQLite on a file: the database file, beside which a store may keep files of its own (the
    /// node's disclosure journal). `None` on PostgreSQL and in memory.
    pub fn sqlite_file(&self) -> Option<&std::path::Path> {
        self.file.as_deref()
    }

    /// Returns the pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Returns the backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes every connection (the writing connection once no writer holds it).
    pub async fn close(&self) {
        self.pool.close().await;
        let writer = match &self.writer {
            Some(slot) => slot.lock().await.take(),
            None => None,
        };
        if let Some(conn) = writer {
            let _ = conn.close().await;
        }
    }
}

/// The settings that decide whether a commit survives a crash or power loss.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Durability {
    /// SQLite: WAL journal with `synchronous = FULL` (2) syncs the WAL on every commit.
    Sqlite {
        /// `PRAGMA journal_mode`.
        journal_mode: String,
        /// `PRAGMA synchronous` (0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA).
        synchronous: i64,
    },
    /// PostgreSQL: `fsync` and `synchronous_commit` on.
    Postgres {
        /// `SHOW fsync`.
        fsync: String,
        /// `SHOW synchronous_commit`.
        synchronous_commit: String,
    },
}

impl Durability {
    /// Returns true when an acknowledged commit survives a crash of the process or the machine.
    pub fn is_durable(&self) -> bool {
        match self {
            Self::Sqlite {
                journal_mode,
                synchronous,
            } => journal_mode == "wal" && *synchronous >= 2,
            Self::Postgres {
                fsync,
                synchronous_commit,
            } => {
                fsync == "on"
                    && matches!(
                        synchronous_commit.as_str(),
                        "on" | "remote_apply" | "remote_write"
                    )
            }
        }
    }
}

/// Writes a generated statement's placeholders in the order its values are bound: `$1, $2, ...`
/// on PostgreSQL, `?` on SQLite. SQLite looks a numbered placeholder up by name in a list as long
/// as the statement's parameters, so a multi-row INSERT of hundreds of `$N` costs quadratically;
/// anonymous ones are bound by position. Every placeholder of a statement must come from one
/// `Params`, each used once, in binding order (sqlx cannot mix `?` with `$N`).
#[derive(Debug)]
pub struct Params {
    backend: Backend,
    written: usize,
}

impl Params {
    /// Placeholders for a new statement on `backend`.
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            written: 0,
        }
    }

    /// The next placeholder.
    pub fn one(&mut self) -> String {
        let mut sql = String::new();
        self.push(&mut sql);
        sql
    }

    /// `n` placeholders separated by commas (an `IN` list).
    pub fn list(&mut self, n: usize) -> String {
        let mut sql = String::with_capacity(n * 6);
        self.push_list(&mut sql, n);
        sql
    }

    /// `rows` parenthesised rows of `columns` placeholders: a multi-row `VALUES` list.
    pub fn rows(&mut self, rows: usize, columns: usize) -> String {
        let mut sql = String::with_capacity(rows * (columns * 6 + 4));
        for row in 0..rows {
            if row > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            self.push_list(&mut sql, columns);
            sql.push(')');
        }
        sql
    }

    fn push_list(&mut self, sql: &mut String, n: usize) {
        for i in 0..n {
            if i > 0 {
                sql.push_str(", ");
            }
            self.push(sql);
        }
    }

    fn push(&mut self, sql: &mut String) {
        use std::fmt::Write;
        self.written += 1;
        match self.backend {
            Backend::Sqlite => sql.push('?'),
            // Writing to a String cannot fail.
            Backend::Postgres => {
                let _ = write!(sql, "${}", self.written);
            }
        }
    }
}

/// Unix milliseconds, as timestamps are stored in both backends (0 before 1970).
pub fn millis(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The moment of stored Unix milliseconds `ms`.
pub fn from_millis(ms: i64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64)
}

/// Hides a password in a database URL before it reaches an error message or log.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDatabase;

    static SQLITE: Migrator = sqlx::migrate!("tests/migrations/sqlite");
    static POSTGRES: Migrator = sqlx::migrate!("tests/migrations/postgres");
    static MIGRATIONS: Migrations = Migrations {
        sqlite: &SQLITE,
        postgres: &POSTGRES,
    };

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://doorzet:s3cret@db:5432/doorzet"),
            "postgres://doorzet:***@db:5432/doorzet"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1/test"),
            "postgres://postgres@127.0.0.1/test"
        );
    }

    #[tokio::test]
    async fn rejects_other_urls_without_leaking_secrets() {
        let err = Database::connect("mysql://u:pw@h/db", &[&MIGRATIONS])
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("storage.url"), "{err}");
        assert!(!err.contains("pw"), "{err}");
    }

    #[tokio::test]
    async fn sqlite_file_is_created_migrated_and_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub.db");
        let url = format!("sqlite:{}", path.display());
        let db = Database::connect(&url, &[&MIGRATIONS]).await.unwrap();
        assert!(path.exists());
        sqlx::query("INSERT INTO probe (id, note) VALUES ($1, $2)")
            .bind(1_i64)
            .bind("kept")
            .execute(db.pool())
            .await
            .unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(page_size, 16_384, "a new file's page size");
        db.close().await;
        // Reopening runs the migrations again without effect and keeps the data.
        let db = Database::connect(&url, &[&MIGRATIONS]).await.unwrap();
        let note: String = sqlx::query_scalar("SELECT note FROM probe WHERE id = $1")
            .bind(1_i64)
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(note, "kept");
    }

    #[tokio::test]
    async fn every_connection_makes_commits_durable_on_both_backends() {
        for test_db in TestDatabase::all().await {
            let db = Database::connect(test_db.url(), &[&MIGRATIONS])
                .await
                .unwrap();
            // Every pooled connection, not just the first one.
            for _ in 0..6 {
                let durability = db.durability().await.unwrap();
                assert!(durability.is_durable(), "{durability:?}");
            }
            if db.backend() == Backend::Sqlite {
                // And the writing connection, which is not the pool's.
                let mut writer = db.writer().await.unwrap();
                let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
                    .fetch_one(&mut *writer)
                    .await
                    .unwrap();
                let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
                    .fetch_one(&mut *writer)
                    .await
                    .unwrap();
                assert_eq!((synchronous, journal.as_str()), (2, "wal"));
            }
            db.close().await;
            // Closed means closed, the writing connection too.
            assert!(db.writer().await.is_err());
            test_db.drop().await;
        }
        assert!(
            !Durability::Sqlite {
                journal_mode: "wal".into(),
                synchronous: 1
            }
            .is_durable()
        );
        assert!(
            !Durability::Postgres {
                fsync: "on".into(),
                synchronous_commit: "off".into()
            }
            .is_durable()
        );
    }

    #[test]
    fn generated_placeholders_are_numbered_in_writing_order_on_postgresql_only() {
        let mut p = Params::new(Backend::Postgres);
        assert_eq!(
            (p.one(), p.rows(2, 2), p.list(2)),
            ("$1".into(), "($2, $3), ($4, $5)".into(), "$6, $7".into())
        );
        let mut p = Params::new(Backend::Sqlite);
        assert_eq!(
            (p.one(), p.rows(2, 2), p.list(2)),
            ("?".into(), "(?, ?), (?, ?)".into(), "?, ?".into())
        );
    }

    #[tokio::test]
    async fn generated_placeholders_bind_in_order_on_both_backends() {
        for test_db in TestDatabase::all().await {
            let db = Database::connect(test_db.url(), &[&MIGRATIONS])
                .await
                .unwrap();
            let mut p = Params::new(db.backend());
            let sql = format!("INSERT INTO probe (id, note) VALUES {}", p.rows(300, 2));
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for i in 0..300_i64 {
                q = q.bind(i).bind(format!("note {i}"));
            }
            q.execute(db.pool()).await.unwrap();
            let mut p = Params::new(db.backend());
            let sql = format!(
                "SELECT id, note FROM probe WHERE note <> {} AND id IN ({}) ORDER BY id",
                p.one(),
                p.list(3)
            );
            let rows: Vec<(i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind("note 7")
                .bind(7_i64)
                .bind(299_i64)
                .bind(0_i64)
                .fetch_all(db.pool())
                .await
                .unwrap();
            assert_eq!(rows, [(0, "note 0".into()), (299, "note 299".into())]);
            db.close().await;
            test_db.drop().await;
        }
    }

    #[tokio::test]
    async fn both_backends_migrate_and_round_trip() {
        for test_db in TestDatabase::all().await {
            let db = Database::connect(test_db.url(), &[&MIGRATIONS])
                .await
                .unwrap();
            sqlx::query("INSERT INTO probe (id, note) VALUES ($1, $2)")
                .bind(7_i64)
                .bind("seven")
                .execute(db.pool())
                .await
                .unwrap();
            let dup = sqlx::query("INSERT INTO probe (id, note) VALUES ($1, $2)")
                .bind(7_i64)
                .bind("again")
                .execute(db.pool())
                .await;
            assert!(dup.is_err(), "{:?}: primary key must hold", db.backend());
            let note: String = sqlx::query_scalar("SELECT note FROM probe WHERE id = $1")
                .bind(7_i64)
                .fetch_one(db.pool())
                .await
                .unwrap();
            assert_eq!(note, "seven");
            db.close().await;
            test_db.drop().await;
        }
    }
}
