//! Audit log throughput and proof latency, against the storage's own ceiling measured in the same
//! run. Appends ENTRIES entries of about 200 bytes (default 1,000,000; set AUDIT_BENCH_ENTRIES to
//! change; the figure is at 10^7) through the log's group commit, with a signed checkpoint
//! per batch, and compares the rate with plain sqlx inserts of the same rows (index, leaf hash,
//! body) in transactions of 1000. Then it reopens the log (start-up time, the leaf-hash index's
//! memory against the hash map it replaced) and measures proofs by index and by leaf hash.
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

/// `x` in lowercase letters: identifiers without digit runs that the BSN check would refuse.
fn letters(mut x: u64) -> String {
    let mut out = [b'a'; 14];
    for c in out.iter_mut().rev() {
        *c = b'a' + (x % 26) as u8;
        x /= 26;
    }
    String::from_utf8(out.to_vec()).unwrap_or_default()
}

fn sample(i: u64) -> v1::AuditEntry {
    let mut e = entry::new_entry(
        std::time::UNIX_EPOCH + Duration::from_secs(1_790_000_000 + i),
        "00000001999000002002".parse().unwrap(),
        v1::AuditAction::FactsDisclosed,
    );
    e.actor_subject = format!("emp-{:06}", i % 100_000);
    e.on_behalf_of_org = "00000001999000001001".into();
    e.recipient_org = "00000001999000003003".into();
    e.escalation_id = format!("esc-{}", letters(i / 7));
    e.case_ref = format!(
        "case-{}",
        letters(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 1)
    );
    e.fact_ids = vec![
        format!("fact-{}", letters(i)),
        format!("fact-{}", letters(i + 1)),
    ];
    e.fact_categories = vec!["legal_title".into(), "living_situation".into()];
    e.purpose = "tier3_meeting".into();
    e
}

/// Rows `start..start + n`, made as they are written so 10^7 of them never sit in memory at once.
fn rows(start: u64, n: u64) -> Vec<(Hash, Vec<u8>)> {
    (start..start + n)
        .map(|i| {
            let bytes = entry::encode(&sample(i)).unwrap();
            (merkle::leaf_hash(&bytes), bytes)
        })
        .collect()
}

/// Batches of 1000 rows, `n` in all.
fn chunks(n: u64) -> impl Iterator<Item = (u64, Vec<(Hash, Vec<u8>)>)> {
    (0..n)
        .step_by(1000)
        .map(move |start| (start, rows(start, 1000.min(n - start))))
}

/// Plain sqlx inserts of the same rows, prepared once, 1000 rows per transaction: the ceiling.
async fn baseline_sqlite(path: &std::path::Path, n: u64) -> f64 {
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
    for (first, chunk) in chunks(n) {
        let mut tx = conn.begin().await.unwrap();
        for (i, (hash, body)) in chunk.iter().enumerate() {
            sqlx::query("INSERT INTO plain (idx, leaf_hash, body) VALUES ($1, $2, $3)")
                .bind((first + i as u64) as i64)
                .bind(&hash[..])
                .bind(&body[..])
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// The same rows with multi-row INSERTs (500 rows a statement), 1000 rows per transaction: the
/// ceiling once per-statement round trips are taken out, as the log itself does.
async fn baseline_sqlite_multirow(path: &std::path::Path, n: u64) -> f64 {
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
    for (first, tx_rows) in chunks(n) {
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
                    .bind((first + (stmt_no * 500 + i) as u64) as i64)
                    .bind(&hash[..])
                    .bind(&body[..]);
            }
            query.execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn baseline_postgres(url: &str, n: u64) -> f64 {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query("CREATE TABLE plain (idx BIGINT PRIMARY KEY, leaf_hash BYTEA NOT NULL, body BYTEA NOT NULL)")
        .execute(&mut conn)
        .await
        .unwrap();
    let started = Instant::now();
    for (first, chunk) in chunks(n) {
        let mut tx = conn.begin().await.unwrap();
        for (i, (hash, body)) in chunk.iter().enumerate() {
            sqlx::query("INSERT INTO plain (idx, leaf_hash, body) VALUES ($1, $2, $3)")
                .bind((first + i as u64) as i64)
                .bind(&hash[..])
                .bind(&body[..])
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

struct LogFigures {
    appends_per_second: f64,
    checkpoints: u64,
    inclusion: Vec<Duration>,
    consistency: Vec<Duration>,
    by_hash: Vec<Duration>,
    startup: Duration,
    index_bytes: usize,
    hashmap_bytes: usize,
    rss_after_open: u64,
}

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// Heap of the general map the log used before (first 8 bytes of the hash → index) for the same
/// hashes: hashbrown's buckets of 16 bytes plus a control byte each, at its load factor.
fn hashmap_bytes(n: u64) -> usize {
    let map: std::collections::HashMap<u64, u64> = (0..n)
        .map(|i| {
            let h = merkle::leaf_hash(&entry::encode(&sample(i)).unwrap());
            (u64::from_be_bytes(h[..8].try_into().unwrap()), i)
        })
        .collect();
    let buckets = (map.capacity() * 8 / 7).next_power_of_two();
    buckets * 17
}

async fn open_log(db: &Database) -> AuditLog {
    let signer = NoteSigner::new(
        "bench.example/audit",
        ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
    )
    .unwrap();
    AuditLog::open(db.clone(), signer, LogOptions::new("bench.example/audit"))
        .await
        .unwrap()
}

async fn run_log(url: &str, n: u64) -> LogFigures {
    let db = Database::connect(url, &[&store::MIGRATIONS]).await.unwrap();
    let log = open_log(&db).await;
    // Many callers, each appending one entry at a time, as nodes and handlers do.
    let workers = 2048u64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < n {
                log.append(&[sample(i)]).await.unwrap();
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
    // Start-up of a log this size: the upper subtrees, the right edge and the leaf-hash index.
    drop(log);
    let started = Instant::now();
    let log = open_log(&db).await;
    let startup = started.elapsed();
    let rss_after_open = rss();
    let mut by_hash = Vec::new();
    for _ in 0..2000 {
        let index = rng.gen_range(0..size);
        // Concurrent appenders land in arrival order: take the hash of what is at `index`.
        let body = log.entries(index, 1).await.unwrap().remove(0);
        let hash = merkle::leaf_hash(&body);
        let t = Instant::now();
        let (found, _, _) = log.inclusion_proof_by_hash(&hash, size).await.unwrap();
        by_hash.push(t.elapsed());
        assert_eq!(found, index);
    }
    inclusion.sort();
    consistency.sort();
    by_hash.sort();
    LogFigures {
        appends_per_second,
        checkpoints: checkpoints as u64,
        inclusion,
        consistency,
        by_hash,
        startup,
        index_bytes: log.index_bytes(),
        hashmap_bytes: hashmap_bytes(n),
        rss_after_open,
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
    println!(
        "  inclusion proof by leaf hash at {n}: p50 {} p99 {} max {}",
        pct(&log.by_hash, 0.5),
        pct(&log.by_hash, 0.99),
        pct(&log.by_hash, 1.0)
    );
    println!(
        "  start-up at {n}: {:.2} s; leaf-hash index {:.1} MB ({:.2} bytes/entry) = {:.2} x the hash map it replaced ({:.1} MB); process RSS after start-up {:.0} MB",
        log.startup.as_secs_f64(),
        log.index_bytes as f64 / 1e6,
        log.index_bytes as f64 / n as f64,
        log.index_bytes as f64 / log.hashmap_bytes as f64,
        log.hashmap_bytes as f64 / 1e6,
        log.rss_after_open as f64 / 1e6
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
        let dir = tempfile::tempdir().unwrap();
        // The ceilings append to a table keyed by index, whose cost per row does not grow with
        // its size: measured on at most 10^6 rows, so a run at 10^7 takes minutes, not an hour.
        let base = n.min(1_000_000);
        let ceiling = baseline_sqlite(&dir.path().join("plain.db"), base).await;
        let multirow = baseline_sqlite_multirow(&dir.path().join("multirow.db"), base).await;
        let url = format!("sqlite:{}", dir.path().join("audit.db").display());
        let log = run_log(&url, n).await;
        report("SQLite", n, ceiling, Some(multirow), &log);

        if let Some(pg) = TestDatabase::postgres().await {
            let ceiling = baseline_postgres(pg.url(), base).await;
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
