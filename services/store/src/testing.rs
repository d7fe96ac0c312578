//! Throwaway databases for storage tests: a fresh SQLite file, and, when
//! `DOORZET_TEST_DATABASE_URL` names a PostgreSQL server, a fresh database on it that is dropped
//! afterwards. The test scripts always set that variable, so CI covers both backends.

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::Connection;

/// Name of the variable that points storage tests at a PostgreSQL server.
pub const POSTGRES_ENV: &str = "DOORZET_TEST_DATABASE_URL";

/// One throwaway database.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin_url: String, name: String },
}

impl TestDatabase {
    /// Returns a fresh SQLite database in a temporary directory.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite:{}", dir.path().join("test.db").display());
        Self {
            url,
            kind: Kind::Sqlite(dir),
        }
    }

    /// Returns a fresh PostgreSQL database, or `None` when `DOORZET_TEST_DATABASE_URL` is unset.
    /// Panics when it is set but the server cannot be reached: a broken setup must fail loudly.
    pub async fn postgres() -> Option<Self> {
        let admin_url = std::env::var(POSTGRES_ENV).ok()?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let name = format!("doorzet_test_{}_{nanos}", std::process::id());
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("{POSTGRES_ENV} is set but unreachable: {e}"));
        // The name is ours: a fixed prefix, a process id and a timestamp.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        conn.close().await.ok();
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(base, _)| base);
        Some(Self {
            url: format!("{base}/{name}"),
            kind: Kind::Postgres { admin_url, name },
        })
    }

    /// Returns SQLite and, when configured, PostgreSQL.
    pub async fn all() -> Vec<Self> {
        let mut all = vec![Self::sqlite()];
        match Self::postgres().await {
            Some(pg) => all.push(pg),
            None => eprintln!("note: {POSTGRES_ENV} unset; storage test ran on SQLite only"),
        }
        all
    }

    /// Returns the connection URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Drops the database (PostgreSQL) or its directory (SQLite).
    pub async fn drop(self) {
        if let Kind::Postgres { admin_url, name } = &self.kind
            && let Ok(mut conn) = sqlx::PgConnection::connect(admin_url).await
        {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await;
        }
    }
}
