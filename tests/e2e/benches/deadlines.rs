//! Deadline-firing lag: an in-process coordinator and five nodes over mutual TLS
//! (`deploy/regions/local-mesh.toml`). `DEADLINES` (default 200) escalations are registered at tier
//! 1, then the coordinator's clock is moved past their terms at once, so every deadline falls due
//! in the same instant; reported is how long after that instant each escalation is at tier 2 with
//! its new participants resolved (read with `ListEscalations`, polled every 2 ms), p50/p99/max.
//! The scheduler sleeps until the earliest deadline and is woken when the clock moves, so the lag
//! is the work of firing (a transition, a participant lookup, the transaction), not a polling tick.
//!
//! ```sh
//! cargo bench -p doorzet-e2e --bench deadlines
//! ```

use std::collections::HashMap;
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
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run(count));
}

async fn run(count: usize) {
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
    let mut client =
        CoordinatorClient::new(channel_as(&municipality.org, &mesh.coordinator.endpoint));
    for i in 0..count {
        let letters: String = i
            .to_string()
            .bytes()
            .map(|d| (b'a' + d - b'0') as char)
            .collect();
        client
            .submit_escalation(with_token(
                v1::SubmitEscalationRequest {
                    request_id: format!("dl-{i}"),
                    case_ref: format!("case-deadline-{letters}"),
                    tier: 1,
                    urgent: true,
                    categories: vec![],
                    tables_tried: vec![],
                    question: "Bench".into(),
                    asked_seats: vec![],
                },
                &token,
            ))
            .await
            .expect("submit");
    }
    // Every term (48 hours, urgent) passes in the same instant.
    let moved = Instant::now();
    mesh.clock.advance(Duration::from_secs(49 * 3600));
    let mut fired: HashMap<String, Duration> = HashMap::new();
    while fired.len() < count {
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
                    &token,
                ))
                .await
                .expect("list")
                .into_inner();
            let at = moved.elapsed();
            for e in list.escalations {
                fired.entry(e.escalation_id).or_insert(at);
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
    let mut lags: Vec<Duration> = fired.into_values().collect();
    lags.sort();
    println!(
        "\ndeadlines bench: {count} deadlines falling due in one instant, in-process coordinator and 5 nodes on SQLite\n"
    );
    println!(
        "firing lag (due -> escalated, participants resolved): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (goal p99 < 100 ms)",
        percentile(&lags, 0.5).as_secs_f64() * 1e3,
        percentile(&lags, 0.99).as_secs_f64() * 1e3,
        lags.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    println!(
        "first fired {:.1} ms after the instant (the scheduler's wake-up)",
        lags.first().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
}
