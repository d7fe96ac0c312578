//! Deadline-firing lag: an in-process coordinator and five nodes over mutual TLS
//! (`deploy/regions/local-mesh.toml`). `DEADLINES` (default 200) escalations are registered at tier
//! 1, then the coordinator's clock is moved past their terms at once, so every deadline falls due
//! in the same instant; reported is how long after that instant each escalation is at tier 2 with
//! its new participants resolved (read with `ListEscalations`, polled every 2 ms), p50/p99/max.
//! The scheduler sleeps until the earliest deadline and is woken when the clock moves, so the lag
//! is the work of firing (a transition, a participant lookup, the transaction), not a polling tick.
//! The burst runs twice in one process: quiet, then while `DEADLINES_LOAD` (default 8) callers keep
//! registering escalations, and the ratio of the two p99s is reported. Beside what the polling
//! client sees, the coordinator's own count of how late each deadline's transition committed
//! (`doorzet_coordinator_deadline_lag_seconds`, a histogram, so its p99 is a bucket bound): the
//! polls (each lists every escalation fired so far) are load of their own and see a firing only
//! at their next round.
//!
//! ```sh
//! cargo bench -p doorzet-e2e --bench deadlines
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use doorzet_proto::v1::{
    self, coordinator_client::CoordinatorClient, node_admin_client::NodeAdminClient,
};
use doorzet_testkit::TestMesh;
use doorzet_testkit::measure::{listing_only, percentile, runtime, setting};
use doorzet_testkit::mesh::{channel_as, with_token};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn main() {
    if listing_only() {
        return; // cargo bench --list asks which benches exist
    }
    let count = setting("DEADLINES", 200) as usize;
    let load = setting("DEADLINES_LOAD", 8) as usize;
    runtime().block_on(run(count, load));
}

/// One round's outcome: the lags the client saw, the coordinator's count, the load's rate.
struct Round {
    lags: Vec<Duration>,
    fired: String,
    rate: f64,
}

async fn run(count: usize, load: usize) {
    // Each round on a mesh of its own, so a later one does not also fire an earlier one's next tier.
    let quiet = round(count, 0, None).await;
    let loaded = round(count, load, None).await;
    // Deadlines as they fall in a region: each its own moment, here one every 10 ms.
    let spread = round(count, load, Some(Duration::from_millis(10))).await;
    println!(
        "\ndeadlines bench: in-process coordinator and 5 nodes on SQLite; {count} deadlines falling due in one instant, then {count} one every 10 ms\n"
    );
    for (what, r) in [
        ("burst, quiet".to_owned(), &quiet),
        (
            format!(
                "burst, while {load} callers register ({:.0}/s)",
                loaded.rate
            ),
            &loaded,
        ),
        (
            format!(
                "one every 10 ms, while {load} callers register ({:.0}/s)",
                spread.rate
            ),
            &spread,
        ),
    ] {
        let lags = &r.lags;
        println!(
            "{what}: firing lag (due -> escalated, participants resolved) p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, first {:.1} ms (goal p99 < 100 ms)",
            ms(percentile(lags, 0.5)),
            ms(percentile(lags, 0.99)),
            ms(lags.last().copied().unwrap_or_default()),
            ms(lags.first().copied().unwrap_or_default()),
        );
        println!("  the coordinator's count (due -> committed): {}", r.fired);
    }
    println!(
        "burst p99 under load / quiet: {:.2}",
        percentile(&loaded.lags, 0.99).as_secs_f64() / percentile(&quiet.lags, 0.99).as_secs_f64()
    );
}

/// A round on a new mesh: `count` deadlines fall due (all at once, or one every `spacing`) while
/// `load` callers keep registering (non-urgent: their terms run on).
async fn round(count: usize, load: usize, spacing: Option<Duration>) -> Round {
    let (mesh, client, token) = mesh().await;
    let stop = Arc::new(AtomicBool::new(false));
    let registered = Arc::new(AtomicUsize::new(0));
    let name = match (load, spacing) {
        (0, _) => "quiet",
        (_, None) => "loaded",
        _ => "spread",
    };
    let callers: Vec<_> = (0..load)
        .map(|c| {
            let (mut client, token) = (client.clone(), token.clone());
            let (stop, registered) = (stop.clone(), registered.clone());
            tokio::spawn(async move {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    client
                        .submit_escalation(with_token(
                            registration(&format!("load-{c}-{i}"), false),
                            &token,
                        ))
                        .await
                        .expect("submit under load");
                    registered.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    let started = Instant::now();
    let buckets_before = lag_buckets(&mesh).await;
    let lags = burst(&mesh, &client, &token, count, name, spacing).await;
    let fired = fired_p99(&buckets_before, &lag_buckets(&mesh).await);
    let rate = registered.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.expect("caller");
    }
    Round { lags, fired, rate }
}

/// A mesh whose care providers hold the tier-1 and tier-2 mandates, and the municipality's
/// client and token.
async fn mesh() -> (
    TestMesh,
    CoordinatorClient<tonic::transport::Channel>,
    String,
) {
    let mesh = TestMesh::start(5).await;
    let now = SystemTime::now();
    for (i, role, tiers) in [(1usize, "teamleider", vec![1]), (2, "zorginkoper", vec![2])] {
        let node = &mesh.nodes[i];
        NodeAdminClient::new(channel_as(&node.org, &node.local_endpoint))
            .create_mandate(with_token(
                v1::CreateMandateRequest {
                    mandate: Some(v1::Mandate {
                        role: role.into(),
                        tiers,
                        domains: vec!["housing".into()],
                        decision_types: vec!["suspend_eviction".into()],
                        legal_basis: "Bench".into(),
                        valid_from: Some((now - DAY).into()),
                        review_date: Some((now + 300 * DAY).into()),
                        ..Default::default()
                    }),
                },
                &node.org.token("ops", "beheerder"),
            ))
            .await
            .expect("mandate");
    }
    let municipality = &mesh.nodes[0];
    let token = municipality.org.token("cm", "casemanager");
    let client = CoordinatorClient::new(channel_as(&municipality.org, &mesh.coordinator.endpoint));
    (mesh, client, token)
}

/// The coordinator's deadline-lag histogram for terms: (upper bound in seconds, cumulative count).
async fn lag_buckets(mesh: &TestMesh) -> Vec<(f64, u64)> {
    let metrics = doorzet_testkit::metrics::scrape(mesh.coordinator.admin).await;
    doorzet_testkit::metrics::samples(&metrics, "doorzet_coordinator_deadline_lag_seconds_bucket")
        .filter_map(|(labels, count)| {
            let le = labels
                .strip_prefix("{le=\"")?
                .strip_suffix("\",due=\"term\"}")?;
            // "+Inf" parses as infinity.
            Some((le.parse().ok()?, count as u64))
        })
        .collect()
}

/// The p99 of the firings between two readings of [`lag_buckets`], as the bucket holding it.
fn fired_p99(before: &[(f64, u64)], after: &[(f64, u64)]) -> String {
    let count =
        |le: f64, of: &[(f64, u64)]| of.iter().find(|(b, _)| *b == le).map_or(0, |(_, c)| *c);
    let diff: Vec<(f64, u64)> = after
        .iter()
        .map(|(le, c)| (*le, c - count(*le, before)))
        .collect();
    let total = diff.last().map_or(0, |(_, c)| *c);
    if total == 0 {
        return "none counted".into();
    }
    let p99 = diff
        .iter()
        .find(|(_, c)| *c as f64 >= 0.99 * total as f64)
        .map_or(f64::INFINITY, |(le, _)| *le);
    let within_100 = count(0.1, &diff) as f64 / total as f64 * 100.0;
    format!(
        "{total} fired, p99 <= {:.0} ms, {within_100:.1} % within 100 ms",
        p99 * 1e3
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A registration of case `name` at tier 1.
fn registration(name: &str, urgent: bool) -> v1::SubmitEscalationRequest {
    // Case references are letters and dashes.
    let letters: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_digit() {
                (b'a' + b - b'0') as char
            } else {
                b as char
            }
        })
        .collect();
    v1::SubmitEscalationRequest {
        request_id: format!("dl-{name}"),
        case_ref: format!("case-deadline-{letters}"),
        tier: 1,
        urgent,
        categories: vec![],
        tables_tried: vec![],
        question: "Bench".into(),
        asked_seats: vec![],
    }
}

/// Registers `count` urgent escalations (one every `spacing`, or as fast as they go) and moves the
/// clock: past all their terms in one step, or, with `spacing`, to just before the first, so
/// they fall due one by one. Returns how long after falling due each was seen at tier 2 with
/// its participants, sorted.
async fn burst(
    mesh: &TestMesh,
    client: &CoordinatorClient<tonic::transport::Channel>,
    token: &str,
    count: usize,
    round: &str,
    spacing: Option<Duration>,
) -> Vec<Duration> {
    let mut client = client.clone();
    let mut waiting = HashMap::new();
    for i in 0..count {
        let registered = client
            .submit_escalation(with_token(
                registration(&format!("{round}-{i}"), true),
                token,
            ))
            .await
            .expect("submit")
            .into_inner()
            .escalation
            .expect("escalation");
        let deadline = registered
            .deadline
            .and_then(|d| SystemTime::try_from(d).ok())
            .expect("an urgent escalation has a deadline");
        waiting.insert(registered.escalation_id, deadline);
        if let Some(spacing) = spacing {
            tokio::time::sleep(spacing).await;
        }
    }
    let first = waiting.values().min().copied().expect("deadlines");
    let jump = match spacing {
        // Every term (48 hours, urgent) passes in the same instant.
        None => Duration::from_secs(49 * 3600),
        Some(_) => first
            .duration_since(mesh.clock.now())
            .expect("deadline ahead")
            .saturating_sub(Duration::from_millis(100)),
    };
    mesh.clock.advance(jump);
    let (moved, clock_at_move) = (Instant::now(), mesh.clock.now());
    // When each falls due, on this process's monotonic clock.
    let due: HashMap<String, Instant> = waiting
        .iter()
        .map(|(id, deadline)| {
            let ahead = deadline.duration_since(clock_at_move).unwrap_or_default();
            (id.clone(), moved + ahead)
        })
        .collect();
    let mut lags = Vec::with_capacity(count);
    while !waiting.is_empty() {
        let mut page = String::new();
        loop {
            let list = client
                .list_escalations(with_token(
                    v1::ListEscalationsRequest {
                        tier: Some(2),
                        states: vec![v1::EscalationState::ParticipantsResolved as i32],
                        page_size: 500,
                        page_token: page.clone(),
                        ..Default::default()
                    },
                    token,
                ))
                .await
                .expect("list")
                .into_inner();
            let seen = Instant::now();
            for e in list.escalations {
                if waiting.remove(&e.escalation_id).is_some() {
                    lags.push(seen.saturating_duration_since(due[&e.escalation_id]));
                }
            }
            if list.next_page_token.is_empty() {
                break;
            }
            page = list.next_page_token;
        }
        assert!(
            moved.elapsed() < Duration::from_secs(300),
            "deadlines did not fire"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    lags.sort();
    lags
}
