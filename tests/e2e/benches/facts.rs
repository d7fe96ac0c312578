//! `QueryFacts` against a release node over mutual TLS, against an echo over the same TLS setup in
//! the same run: the node's own `grpc.health.v1.Health/Check` on its mesh listener (same process,
//! same certificates, same identity, limit and metric layers, an empty answer). 64 concurrent
//! callers, a case of 10 facts of which 7 are disclosed and 3 withheld, the disclosure log on
//! (every answer is a stored record, appended to the coordinator's audit log in the background).
//! The two loads take turns, a few seconds each, so that a machine whose speed drifts during the
//! run (a shared virtual machine) gives both the same conditions; each round's ratio is shown
//! beside the totals. Also the node's start-up time to SERVING on an empty SQLite file and its
//! resident memory idle and after the run.
//!
//! ```sh
//! cargo build --release --bins && cargo bench -p doorzet-e2e --bench facts
//! ```
//! `FACTS_ROUNDS` sets how many turns each load gets (default 5), `FACTS_SECONDS` how long one
//! turn lasts (default 2).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use doorzet_domain::grant::GrantClaims;
use doorzet_proto::v1::{
    self, audit_log_client::AuditLogClient, node_admin_client::NodeAdminClient,
    partner_node_client::PartnerNodeClient,
};
use doorzet_testkit::audit::checkpoint_size;
use doorzet_testkit::measure::{cpu_seconds, listing_only, percentile, rss_mib, runtime, setting};
use doorzet_testkit::mesh::{channel_as, with_token};
use doorzet_testkit::process::{CoordinatorProcess, NodeProcess};
use tonic::transport::Channel;

const CONCURRENCY: usize = 64;
const CASE_REF: &str = "case-benchqwertyu";
const CATEGORIES: [&str; 8] = [
    "living_situation",
    "eviction_date",
    "legal_title",
    "required_security_level",
    "current_provider",
    "diagnosis_group",
    "risk_signal",
    "financing",
];

/// What one load measured, over all its turns.
#[derive(Default)]
struct Load {
    latencies: Vec<Duration>,
    seconds: f64,
    failed: usize,
}

impl Load {
    fn requests(&self) -> usize {
        self.latencies.len()
    }

    fn per_second(&self) -> f64 {
        self.requests() as f64 / self.seconds.max(1e-9)
    }

    fn percentile(&mut self, q: f64) -> Duration {
        self.latencies.sort_unstable();
        percentile(&self.latencies, q)
    }

    fn add(&mut self, turn: Load) {
        self.latencies.extend(turn.latencies);
        self.seconds += turn.seconds;
        self.failed += turn.failed;
    }
}

/// Runs `CONCURRENCY` callers of `call` for `seconds`.
async fn load<F, Fut>(seconds: u64, call: F) -> Load
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (call, stop) = (call.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failed = 0;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if call().await {
                    latencies.push(t.elapsed());
                } else {
                    failed += 1;
                }
            }
            (latencies, failed)
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut turn = Load::default();
    for t in tasks {
        let (l, f) = t.await.expect("caller");
        turn.latencies.extend(l);
        turn.failed += f;
    }
    turn.seconds = started.elapsed().as_secs_f64();
    turn
}

async fn seed(node: &NodeProcess) {
    let token = node.org.token("cm-1", "casemanager");
    let mut admin = NodeAdminClient::new(node.local_channel());
    let case = admin
        .create_case(with_token(
            v1::CreateCaseRequest {
                local_id: "zaak-bench".into(),
                bsn: String::new(),
            },
            &token,
        ))
        .await
        .expect("case")
        .into_inner();
    // 10 facts over 8 categories; the consent covers 5 categories (7 facts), 3 facts are withheld.
    for i in 0..10 {
        admin
            .add_fact(with_token(
                v1::AddFactRequest {
                    request_id: String::new(),
                    case_id: case.case_id.clone(),
                    fact: Some(v1::Fact {
                        category: CATEGORIES[i % CATEGORIES.len()].into(),
                        value: format!("fictieve waarde {i}"),
                        source: "zaaksysteem".into(),
                        ..Default::default()
                    }),
                },
                &token,
            ))
            .await
            .expect("fact");
    }
    admin
        .record_consent(with_token(
            v1::RecordConsentRequest {
                request_id: String::new(),
                consent: Some(v1::Consent {
                    case_id: case.case_id.clone(),
                    given_by: v1::ConsentGiver::Person as i32,
                    categories: CATEGORIES[..5].iter().map(|c| c.to_string()).collect(),
                    recipients: Some(v1::Recipients {
                        org_ids: vec![node.org.org.to_string()],
                        kinds: vec![],
                    }),
                    purposes: vec!["escalation_meeting".into()],
                    ..Default::default()
                }),
            },
            &token,
        ))
        .await
        .expect("consent");
    admin
        .link_case(with_token(
            v1::LinkCaseRequest {
                case_id: case.case_id,
                case_ref: CASE_REF.into(),
                with_pseudonym: false,
            },
            &token,
        ))
        .await
        .expect("link");
}

fn main() {
    if listing_only() {
        return; // cargo bench --list asks which benches exist
    }
    let rounds = setting("FACTS_ROUNDS", 5).max(1);
    let seconds = setting("FACTS_SECONDS", 2).max(1);
    runtime().block_on(async move {
        let mut coordinator = CoordinatorProcess::new("");
        // The bench's appends would pass the shipped per-organisation quota (50/s) at once.
        // FACTS_APPEND_RATE=50 runs with the shipped quota, so the appends mostly wait.
        let rate = setting("FACTS_APPEND_RATE", 1_000_000);
        coordinator.start_with_env(&[
            ("DOORZET_AUDIT__APPEND_RATE", &rate.to_string()),
            ("DOORZET_AUDIT__APPEND_BURST", &rate.max(100).to_string()),
        ]);
        coordinator.wait_serving().await;
        let mut node = NodeProcess::new(&coordinator, "");
        let started = Instant::now();
        node.start(None);
        node.wait_serving().await;
        let startup = started.elapsed();
        let pid = node.running().pid();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle_mib = rss_mib(pid);
        seed(&node).await;

        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let grant = coordinator.org.grant(&GrantClaims {
            iss: coordinator.org.org.to_string(),
            jti: "grant-bench".into(),
            escalation_id: "esc-bench".into(),
            case_ref: CASE_REF.into(),
            tier: 2,
            participants: vec![node.org.org.to_string()],
            purpose: "escalation_meeting".into(),
            iat: now,
            nbf: now - 5,
            exp: now + 3600,
        });
        let mesh: Channel = channel_as(&node.org, &node.mesh_endpoint());
        // One check that the answer is what the consent allows; it also tells how many audit
        // entries an answer makes (one per decision; two, disclosed and withheld, in binaries from
        // before), as one answer's entries go in with one append.
        let audit = AuditLogClient::new(coordinator.member_channel());
        let probe_before = checkpoint_size(&audit).await.expect("checkpoint");
        let answer = PartnerNodeClient::new(mesh.clone())
            .query_facts(v1::QueryFactsRequest {
                grant: grant.clone(),
                case_ref: CASE_REF.into(),
                categories: vec![],
                requested_by: "emp-bench".into(),
            })
            .await
            .expect("facts")
            .into_inner();
        assert_eq!((answer.facts.len(), answer.withheld.len()), (7, 3));
        let mut probe_after = probe_before;
        while probe_after == probe_before {
            tokio::time::sleep(Duration::from_millis(5)).await;
            probe_after = checkpoint_size(&audit).await.expect("checkpoint");
        }
        let entries_per_answer = probe_after - probe_before;

        let coordinator_pid = coordinator.running().pid();
        let cpu = move || {
            [
                cpu_seconds(pid),
                cpu_seconds(coordinator_pid),
                cpu_seconds(std::process::id()),
            ]
        };
        let audit_before = checkpoint_size(&audit).await.expect("checkpoint");
        let (mut echo, mut facts) = (Load::default(), Load::default());
        // CPU seconds of node, coordinator and caller under each load, and each round's ratio.
        let (mut echo_cpu, mut facts_cpu) = ([0.0; 3], [0.0; 3]);
        let mut round_ratios = Vec::new();
        let mut after_facts = [0.0; 3];
        for _ in 0..rounds {
            let before_echo = cpu();
            let echo_channel = mesh.clone();
            let echo_turn = load(seconds, move || {
                let mut client = tonic_health::pb::health_client::HealthClient::new(echo_channel.clone());
                async move {
                    client
                        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
                        .await
                        .is_ok()
                }
            })
            .await;
            let after_echo = cpu();
            let (facts_channel, grant) = (mesh.clone(), grant.clone());
            let facts_turn = load(seconds, move || {
                let mut client = PartnerNodeClient::new(facts_channel.clone());
                let request = v1::QueryFactsRequest {
                    grant: grant.clone(),
                    case_ref: CASE_REF.into(),
                    categories: vec![],
                    requested_by: "emp-bench".into(),
                };
                async move { client.query_facts(request).await.is_ok() }
            })
            .await;
            after_facts = cpu();
            for i in 0..3 {
                echo_cpu[i] += after_echo[i] - before_echo[i];
                facts_cpu[i] += after_facts[i] - after_echo[i];
            }
            round_ratios.push(facts_turn.per_second() / echo_turn.per_second().max(1e-9));
            echo.add(echo_turn);
            facts.add(facts_turn);
        }
        let load_ended = Instant::now();
        let expected = audit_before + entries_per_answer * facts.requests() as u64;
        let in_log_at_end = checkpoint_size(&audit).await.expect("checkpoint").saturating_sub(audit_before);
        while checkpoint_size(&audit).await.expect("checkpoint") < expected {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let caught_up = load_ended.elapsed();
        let after_audit = cpu();
        let after_mib = rss_mib(pid);
        let metrics = doorzet_testkit::metrics::scrape(node.admin_addr).await;
        let refused = doorzet_testkit::metrics::value(&metrics, "doorzet_node_disclosure_records_refused_by_audit_log_total")
            .map_or("-".to_owned(), |n| n.to_string());

        let (requests, echo_requests) = (facts.requests(), echo.requests());
        let expected_entries = expected - audit_before;
        let (echo_p50, echo_p99, facts_p50, facts_p99) = (
            echo.percentile(0.5),
            echo.percentile(0.99),
            facts.percentile(0.5),
            facts.percentile(0.99),
        );

        println!(
            "\nfacts bench: {rounds} rounds of {seconds} s per load, the loads in turn, {CONCURRENCY} concurrent callers, release node on SQLite\n"
        );
        println!("{:<44} {:>10} {:>9} {:>9} {:>7}", "load", "req/s", "p50 ms", "p99 ms", "failed");
        for (name, l, p50, p99) in [
            ("echo: Health/Check on the mesh listener", &echo, echo_p50, echo_p99),
            ("QueryFacts (10 facts, disclosure log on)", &facts, facts_p50, facts_p99),
        ] {
            println!(
                "{:<44} {:>10.0} {:>9.2} {:>9.2} {:>7}",
                name,
                l.per_second(),
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3,
                l.failed
            );
        }
        println!(
            "\nQueryFacts throughput = {:.2} x echo (goal >= 0.50); p50 {:.2} x, p99 {:.2} x",
            facts.per_second() / echo.per_second().max(1e-9),
            facts_p50.as_secs_f64() / echo_p50.as_secs_f64().max(1e-9),
            facts_p99.as_secs_f64() / echo_p99.as_secs_f64().max(1e-9),
        );
        let shown: Vec<String> = round_ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!("each round: {}", shown.join(", "));
        println!("\nCPU per request (µs): {:<10} {:>10} {:>12} {:>8}", "", "node", "coordinator", "caller");
        for (name, n, used) in [("echo", echo_requests, echo_cpu), ("QueryFacts", requests, facts_cpu)] {
            let per = |i: usize| used[i] / n.max(1) as f64 * 1e6;
            println!("{:<31} {:>10.1} {:>12.1} {:>8.1}", name, per(0), per(1), per(2));
        }
        let with_audit =
            |i: usize| (facts_cpu[i] + after_audit[i] - after_facts[i]) / requests.max(1) as f64 * 1e6;
        println!(
            "{:<31} {:>10.1} {:>12.1} {:>8.1}",
            "QueryFacts + audit catch-up",
            with_audit(0),
            with_audit(1),
            with_audit(2)
        );
        println!(
            "audit log ({entries_per_answer} entries per answer): {:.0} % of the run's entries were in a signed checkpoint when the load ended, all {} {:.2} s later",
            in_log_at_end as f64 / expected_entries.max(1) as f64 * 100.0,
            expected_entries,
            caught_up.as_secs_f64()
        );
        println!("start-up to SERVING on an empty SQLite file: {:.0} ms (goal < 500 ms)", startup.as_secs_f64() * 1e3);
        println!("resident memory: idle {idle_mib:.1} MiB (goal < 30 MiB), after the run {after_mib:.1} MiB");
        println!("disclosure records the audit log refused: {refused}");
    });
}
