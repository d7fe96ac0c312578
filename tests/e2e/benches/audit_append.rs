//! What a release coordinator spends on the audit entries nodes append: `AuditLog.Append` over
//! mutual TLS, full calls (500 entries) shaped like a node's disclosure records (7 facts disclosed, 3
//! withheld), from a few callers at once, against `AuditLog.GetCheckpoint` on the same listener in
//! the same run (the request path without an entry). The two loads take turns. It reports the
//! coordinator's CPU per entry and per checkpoint read, and their ratio: the figure to watch when
//! the coordinator's side of `QueryFacts` (one entry an answer) is worked on.
//!
//! ```sh
//! cargo build --release --bins && cargo bench -p doorzet-e2e --bench audit_append
//! ```
//! `APPEND_ROUNDS` sets how many turns each load gets (default 4), `APPEND_SECONDS` how long one
//! turn lasts (default 2).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use doorzet_proto::v1::{self, audit_log_client::AuditLogClient};
use doorzet_testkit::measure::{cpu_seconds, listing_only, runtime, setting};
use doorzet_testkit::process::CoordinatorProcess;
use tonic::transport::Channel;

/// Entries in one `Append` call: the contract's most.
const PER_CALL: usize = doorzet_audit::entry::MAX_APPEND;
/// Letters at the end of an entry's record id that number the call it goes in.
const RECORD_TAIL: usize = 8;

/// `call` as the `n`-th call sends it: each entry's record id (its last field, so the end of its
/// bytes) ends in letters of `n`. The coordinator appends an entry with a record id once, so the
/// calls made before the load, sent over and over, would otherwise be appended only the first
/// time.
fn numbered(call: &v1::AppendRequest, n: u64) -> v1::AppendRequest {
    let tail = letters(n, RECORD_TAIL);
    v1::AppendRequest {
        entries: call
            .entries
            .iter()
            .map(|entry| {
                let mut bytes = entry.to_vec();
                let at = bytes.len() - RECORD_TAIL;
                bytes[at..].copy_from_slice(tail.as_bytes());
                bytes.into()
            })
            .collect(),
    }
}

/// Concurrent appending callers (a few busy nodes).
const APPENDERS: usize = 4;
/// Concurrent checkpoint readers.
const READERS: usize = 16;

/// Letters for `x`, so no identifier holds a digit run the BSN check would refuse.
fn letters(mut x: u64, n: usize) -> String {
    let mut out = vec![b'a'; n];
    for c in out.iter_mut().rev() {
        *c = b'a' + (x % 26) as u8;
        x /= 26;
    }
    String::from_utf8(out).unwrap_or_default()
}

/// One entry as a node makes it for an answer that disclosed 7 facts and withheld 3.
fn entry(org: &str, i: u64) -> v1::AuditEntry {
    let mut e = doorzet_audit::entry::new_entry(
        SystemTime::now(),
        org.parse().expect("org"),
        v1::AuditAction::FactsDisclosed,
    );
    e.actor_subject = "doorzet-node".into();
    // Its last letters are the call's own (see `numbered`), so an entry is never sent twice.
    e.record_id = format!("disc-{}{}", letters(i, 14), letters(0, RECORD_TAIL));
    e.recipient_org = org.into();
    e.escalation_id = format!("esc-{}", letters(i / 50, 12));
    e.case_ref = format!("case-{}", letters(i / 10, 12));
    e.purpose = "escalation_meeting".into();
    e.fact_ids = (0..7)
        .map(|f| format!("fact-{}", letters(i * 10 + f, 24)))
        .collect();
    e.fact_categories = [
        "living_situation",
        "eviction_date",
        "legal_title",
        "required_security_level",
        "current_provider",
    ]
    .iter()
    .map(|c| c.to_string())
    .collect();
    e.withheld_fact_ids = (7..10)
        .map(|f| format!("fact-{}", letters(i * 10 + f, 24)))
        .collect();
    e.withheld_fact_categories = ["diagnosis_group", "risk_signal", "financing"]
        .iter()
        .map(|c| c.to_string())
        .collect();
    e
}

/// Runs `callers` loops of `call` for `seconds`; returns the calls that succeeded and failed.
async fn load<F, Fut>(callers: usize, seconds: u64, call: F) -> (u64, u64)
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (call, stop, ok, failed) = (call.clone(), stop.clone(), ok.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if call().await {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("caller");
    }
    (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
}

fn main() {
    if listing_only() {
        return; // cargo bench --list asks which benches exist
    }
    let rounds = setting("APPEND_ROUNDS", 4).max(1);
    let seconds = setting("APPEND_SECONDS", 2).max(1);
    runtime().block_on(async move {
        let mut coordinator = CoordinatorProcess::new("");
        // The shipped per-organisation quota (50 entries/s) would refuse the load at once.
        coordinator.start_with_env(&[
            ("DOORZET_AUDIT__APPEND_RATE", "10000000"),
            ("DOORZET_AUDIT__APPEND_BURST", "10000000"),
        ]);
        coordinator.wait_serving().await;
        let pid = coordinator.running().pid();
        let channel: Channel = coordinator.member_channel();
        let org = coordinator.member.org.to_string();
        // The entries are made before the load, so the caller's own work stays out of the turns.
        let calls: Arc<Vec<v1::AppendRequest>> = Arc::new(
            (0..64u64)
                .map(|c| {
                    v1::AppendRequest::of(
                        &(0..PER_CALL as u64)
                            .map(|i| entry(&org, c * PER_CALL as u64 + i))
                            .collect::<Vec<_>>(),
                    )
                })
                .collect(),
        );
        let probe = AuditLogClient::new(channel.clone())
            .append(numbered(&calls[0], u64::MAX))
            .await;
        assert!(probe.is_ok(), "a node's entries are taken: {probe:?}");

        let (mut entries, mut reads) = (0u64, 0u64);
        let (mut append_cpu, mut read_cpu) = (0.0, 0.0);
        let (mut append_secs, mut read_secs) = (0.0, 0.0);
        let mut failed = 0;
        // Numbers the calls across the rounds, so that no round sends what an earlier one did.
        let sent = Arc::new(AtomicU64::new(0));
        for _ in 0..rounds {
            let (channel_a, calls_a, sent) = (channel.clone(), calls.clone(), sent.clone());
            let (before, started) = (cpu_seconds(pid), Instant::now());
            let (ok, bad) = load(APPENDERS, seconds, move || {
                let mut client = AuditLogClient::new(channel_a.clone());
                let n = sent.fetch_add(1, Ordering::Relaxed);
                let batch = numbered(&calls_a[n as usize % calls_a.len()], n);
                async move {
                    client
                        .append(batch)
                        .await
                        .is_ok()
                }
            })
            .await;
            append_secs += started.elapsed().as_secs_f64();
            append_cpu += cpu_seconds(pid) - before;
            entries += ok * PER_CALL as u64;
            failed += bad;

            let channel_r = channel.clone();
            let (before, started) = (cpu_seconds(pid), Instant::now());
            let (ok, bad) = load(READERS, seconds, move || {
                let mut client = AuditLogClient::new(channel_r.clone());
                async move {
                    client
                        .get_checkpoint(v1::GetCheckpointRequest {})
                        .await
                        .is_ok()
                }
            })
            .await;
            read_secs += started.elapsed().as_secs_f64();
            read_cpu += cpu_seconds(pid) - before;
            reads += ok;
            failed += bad;
        }
        let per_entry = append_cpu / entries.max(1) as f64 * 1e6;
        let per_read = read_cpu / reads.max(1) as f64 * 1e6;
        println!(
            "\naudit append bench: {rounds} rounds of {seconds} s per load, the loads in turn, release coordinator on SQLite\n"
        );
        println!(
            "Append ({PER_CALL} entries a call, {APPENDERS} callers): {:>8.0} entries/s, coordinator CPU {per_entry:.2} µs an entry",
            entries as f64 / append_secs.max(1e-9)
        );
        println!(
            "GetCheckpoint ({READERS} callers):            {:>8.0} reads/s,   coordinator CPU {per_read:.2} µs a read",
            reads as f64 / read_secs.max(1e-9)
        );
        println!(
            "an appended entry costs the coordinator {:.2} x a checkpoint read; calls failed: {failed}",
            per_entry / per_read.max(1e-9)
        );
    });
}
