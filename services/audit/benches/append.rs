//! Audit log throughput and proof latency, against the storage's own ceiling measured in the same
//! run. Appends ENTRIES entries of about 200 bytes (default 1,000,000; set AUDIT_BENCH_ENTRIES to
//! change) through the log's group commit, with a signed checkpoint per batch, and compares the
//! rate with plain sqlx inserts of the same rows (index, leaf hash, body) in transactions of 1000.
//! Runs on SQLite (WAL, synchronous=FULL) and, when DOORZET_TEST_DATABASE_URL is set, PostgreSQL.
//!
//! `cargo bench -p doorzet-audit --bench append`

use std::str::FromStr;
use std::time::{Duration, Instant};

use doorzet_audit::checkpoint::NoteSigner;
use doorzet_audit::entry;
use doorzet_audit::log::{AuditLog, LogOptions};
use doorzet_audit::merkle::{self, Hash};
use doorzet_audit::store;
use doorzet_proto::v1;
use doorzet_store::Database;
use doorzet_store::testing::TestDatabase;
use rand::Rng;
use sqlx::Connection;

fn sample(i: u64) -> v1::AuditEntry {
    let mut e = entry::new_entry(
        std::time::UNIX_EPOCH + Duration::from_secs(1_790_000_000 + i),
        "00000001999000002002".parse().unwrap(),
        v1::AuditAction::FactsDisclosed,
    );
    e.actor_subject = format!("emp-{:06}", i % 100_000);
    e.on_behalf_of_org = "00000001999000001001".into();
    e.recipient_org = "00000001999000003003".into();
    e.escalation_id = format!("esc-{:012x}", i / 7);
    e.case_ref = format!("case-{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    e.fact_ids = vec![format!("fact-{:08}", i), format!("fact-{:08}", i + 1)];
    e.fact_categories = vec!["legal_title".into(), "living_situation".into()];
    e.purpose = "tier3_meeting".into();
    e
}

fn rows(n: u64) -> Vec<(Hash, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let bytes = entry::encode(&sample(i)).unwrap();
            (merkle::leaf_hash(&bytes), bytes)
        })
        .collect()
}

/// Plain sqlx inserts of the same rows, prepared once, 1000 rows per transaction: the ceiling.
async fn baseline_sqlite(path: &std::path::Path, rows: &[(Hash, Vec<u8>)]) -> f64 {
    let options =
        sqlx::sqlite::SqliteConnectOptions::from_str(&format!("sqlite:{}", path.display()))
            .unwrap()
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    sqlx::query(
        "CREATE TABLE plain (idx INTEGER PRIMARY KEY, leaf_hash BLOB NOT NULL, body BLOB NOT NULL)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let started = Instant::now();
    for (chunk_no, chunk) in rows.chunks(1000).enumerate() {
        let mut tx = conn.begin().await.unwrap();
        for (i, (hash, body)) in chunk.iter().enumerate() {
            sqlx::query("INSERT INTO plain (idx, leaf_hash, body) VALUES ($1, $2, $3)")
                .bind((chunk_no * 1000 + i) as i64)
                .bind(&hash[..])
                .bind(&body[..])
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
    rows.len() as f64 / started.elapsed().as_secs_f64()
}

/// The same rows with multi-row INSERTs (500 rows a statement), 1000 rows per transaction: the
/// ceiling once per-statement round trips are taken out, as the log itself does.
async fn baseline_sqlite_multirow(path: &std::path::Path, rows: &[(Hash, Vec<u8>)]) -> f64 {
    let options =
        sqlx::sqlite::SqliteConnectOptions::from_str(&format!("sqlite:{}", path.display()))
            .unwrap()
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    sqlx::query(
        "CREATE TABLE plain (idx INTEGER PRIMARY KEY, leaf_hash BLOB NOT NULL, body BLOB NOT NULL)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let started = Instant::now();
    for (tx_no, tx_rows) in rows.chunks(1000).enumerate() {
        let mut tx = conn.begin().await.unwrap();
        for (stmt_no, chunk) in tx_rows.chunks(500).enumerate() {
            let placeholders: Vec<String> = (0..chunk.len())
                .map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
                .collect();
            let sql = format!(
                "INSERT INTO plain (idx, leaf_hash, body) VALUES {}",
                placeholders.join(",")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (i, (hash, body)) in chunk.iter().enumerate() {
                query = query
                    .bind((tx_no * 1000 + stmt_no * 500 + i) as i64)
                    .bind(&hash[..])
                    .bind(&body[..]);
            }
            query.execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    rows.len() as f64 / started.elapsed().as_secs_f64()
}

async fn baseline_postgres(url: &str, rows: &[(Hash, Vec<u8>)]) -> f64 {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query("CREATE TABLE plain (idx BIGINT PRIMARY KEY, leaf_hash BYTEA NOT NULL, body BYTEA NOT NULL)")
        .execute(&mut conn)
        .await
        .unwrap();
    let started = Instant::now();
    for (chunk_no, chunk) in rows.chunks(1000).enumerate() {
        let mut tx = conn.begin().await.unwrap();
        for (i, (hash, body)) in chunk.iter().enumerate() {
            sqlx::query("INSERT INTO plain (idx, leaf_hash, body) VALUES ($1, $2, $3)")
                .bind((chunk_no * 1000 + i) as i64)
                .bind(&hash[..])
                .bind(&body[..])
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
    rows.len() as f64 / started.elapsed().as_secs_f64()
}

struct LogFigures {
    appends_per_second: f64,
    checkpoints: u64,
    inclusion: Vec<Duration>,
    consistency: Vec<Duration>,
}

async fn run_log(url: &str, n: u64) -> LogFigures {
    let db = Database::connect(url, &[&store::MIGRATIONS]).await.unwrap();
    let signer = NoteSigner::new(
        "bench.example/audit",
        ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
    )
    .unwrap();
    let log = AuditLog::open(db.clone(), signer, LogOptions::new("bench.example/audit"))
        .await
        .unwrap();
    let entries: Vec<v1::AuditEntry> = (0..n).map(sample).collect();
    let entries = std::sync::Arc::new(entries);
    // Many callers, each appending one entry at a time, as nodes and handlers do.
    let workers = 2048u64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (log, entries) = (log.clone(), entries.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < n {
                log.append(std::slice::from_ref(&entries[i as usize]))
                    .await
                    .unwrap();
                i += workers;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let appends_per_second = n as f64 / started.elapsed().as_secs_f64();
    let size = log.checkpoint().0.size;
    assert_eq!(size, n);
    let checkpoints: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_checkpoints")
        .fetch_one(db.pool())
        .await
        .unwrap();

    let mut rng = rand::thread_rng();
    let mut inclusion = Vec::new();
    let mut consistency = Vec::new();
    for _ in 0..2000 {
        let index = rng.gen_range(0..size);
        let t = Instant::now();
        let (_, proof) = log.inclusion_proof(index, size).await.unwrap();
        inclusion.push(t.elapsed());
        assert!(!proof.is_empty());
        let first = rng.gen_range(1..size);
        let t = Instant::now();
        log.consistency_proof(first, size).await.unwrap();
        consistency.push(t.elapsed());
    }
    inclusion.sort();
    consistency.sort();
    LogFigures {
        appends_per_second,
        checkpoints: checkpoints as u64,
        inclusion,
        consistency,
    }
}

fn pct(v: &[Duration], p: f64) -> String {
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    format!("{:.0}µs", v[i].as_secs_f64() * 1e6)
}

fn report(backend: &str, n: u64, ceiling: f64, multirow: Option<f64>, log: &LogFigures) {
    println!("{backend}: {n} entries");
    println!("  storage ceiling (plain sqlx inserts, 1000/tx): {ceiling:>10.0} rows/s");
    if let Some(multirow) = multirow {
        println!(
            "  storage ceiling (multi-row inserts, 1000/tx):   {multirow:>10.0} rows/s; the log is {:.2} x this",
            log.appends_per_second / multirow
        );
    }
    println!(
        "  audit log appends (group commit, {} signed checkpoints): {:>10.0} appends/s = {:.2} x ceiling",
        log.checkpoints,
        log.appends_per_second,
        log.appends_per_second / ceiling
    );
    println!(
        "  inclusion proof at {n}: p50 {} p99 {} max {}",
        pct(&log.inclusion, 0.5),
        pct(&log.inclusion, 0.99),
        pct(&log.inclusion, 1.0)
    );
    println!(
        "  consistency proof at {n}: p50 {} p99 {} max {}",
        pct(&log.consistency, 0.5),
        pct(&log.consistency, 0.99),
        pct(&log.consistency, 1.0)
    );
}

fn main() {
    let n: u64 = std::env::var("AUDIT_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    // `cargo bench` passes --bench; `cargo test --benches` runs this with a tiny size.
    let n = if std::env::args().any(|a| a == "--bench") {
        n
    } else {
        n.min(2_000)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let rows = rows(n);
        let dir = tempfile::tempdir().unwrap();
        let ceiling = baseline_sqlite(&dir.path().join("plain.db"), &rows).await;
        let multirow = baseline_sqlite_multirow(&dir.path().join("multirow.db"), &rows).await;
        let url = format!("sqlite:{}", dir.path().join("audit.db").display());
        let log = run_log(&url, n).await;
        report("SQLite", n, ceiling, Some(multirow), &log);

        if let Some(pg) = TestDatabase::postgres().await {
            let ceiling = baseline_postgres(pg.url(), &rows).await;
            let pg_log = TestDatabase::postgres().await.unwrap();
            let log = run_log(pg_log.url(), n).await;
            report("PostgreSQL", n, ceiling, None, &log);
            pg.drop().await;
            pg_log.drop().await;
        } else {
            println!("PostgreSQL: skipped (DOORZET_TEST_DATABASE_URL unset)");
        }
    });
}
