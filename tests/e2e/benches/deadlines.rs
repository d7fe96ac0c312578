//! Deadline-firing lag: an in-process coordinator and five nodes over mutual TLS
//! (`deploy/regions/local-mesh.toml`). `DEADLINES` (default 200) escalations are registered at tier
//! 1, then the coordinator's clock is moved past their terms at once, so every deadline falls due
//! in the same instant; reported is how long after that instant each escalation is at tier 2 with
//! its new participants resolved (read with `ListEscalations`, polled every 2 ms), p50/p99/max.
//! The scheduler sleeps until the earliest deadline and is woken when the clock moves, so the lag
//! is the work of firing (a transition, a participant lookup, the transaction), not a polling tick.
//! The burst runs twice in one process: quiet, then while `DEADLINES_LOAD` (default 8) callers keep
//! registering escalations, and the ratio of the two p99s is reported.
//!
//! ```sh
//! cargo bench -p doorzet-e2e --bench deadlines
//! ```

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use doorzet_proto::v1::{
    self, coordinator_client::CoordinatorClient, node_admin_client::NodeAdminClient,
};
use doorzet_testkit::TestMesh;
use doorzet_testkit::measure::percentile;
use doorzet_testkit::mesh::{channel_as, with_token};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let count: usize = std::env::var("DEADLINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let load: usize = std::env::var("DEADLINES_LOAD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run(count, load));
}

async fn run(count: usize, load: usize) {
    // Each round on a mesh of its own, so the second does not also fire the first's next tier.
    let quiet = {
        let (mesh, client, token) = mesh().await;
        burst(&mesh, &client, &token, count, "quiet").await
    };
    let (mesh, client, token) = mesh().await;
    // The same again while `load` callers keep registering (non-urgent: their terms run on).
    let stop = Arc::new(AtomicBool::new(false));
    let registered = Arc::new(AtomicUsize::new(0));
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
    let before = registered.load(Ordering::Relaxed);
    let started = Instant::now();
    let loaded = burst(&mesh, &client, &token, count, "loaded").await;
    let rate =
        (registered.load(Ordering::Relaxed) - before) as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.expect("caller");
    }

    println!(
        "\ndeadlines bench: {count} deadlines falling due in one instant, in-process coordinator and 5 nodes on SQLite\n"
    );
    for (what, lags) in [
        ("quiet".to_owned(), &quiet),
        (
            format!("while {load} callers register ({rate:.0}/s)"),
            &loaded,
        ),
    ] {
        println!(
            "{what}: firing lag (due -> escalated, participants resolved) p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, first {:.1} ms (goal p99 < 100 ms)",
            ms(percentile(lags, 0.5)),
            ms(percentile(lags, 0.99)),
            ms(lags.last().copied().unwrap_or_default()),
            ms(lags.first().copied().unwrap_or_default()),
        );
    }
    println!(
        "p99 under load / quiet: {:.2}",
        percentile(&loaded, 0.99).as_secs_f64() / percentile(&quiet, 0.99).as_secs_f64()
    );
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

/// Registers `count` urgent escalations, moves the clock past their terms in one step, and
/// returns how long after that step each was seen at tier 2 with its participants, sorted.
async fn burst(
    mesh: &TestMesh,
    client: &CoordinatorClient<tonic::transport::Channel>,
    token: &str,
    count: usize,
    round: &str,
) -> Vec<Duration> {
    let mut client = client.clone();
    let mut waiting = HashSet::new();
    for i in 0..count {
        let registered = client
            .submit_escalation(with_token(
                registration(&format!("{round}-{i}"), true),
                token,
            ))
            .await
            .expect("submit")
            .into_inner();
        waiting.insert(registered.escalation.expect("escalation").escalation_id);
    }
    // Every term (48 hours, urgent) passes in the same instant.
    let moved = Instant::now();
    mesh.clock.advance(Duration::from_secs(49 * 3600));
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
            let at = moved.elapsed();
            for e in list.escalations {
                if waiting.remove(&e.escalation_id) {
                    lags.push(at);
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
