//! The coordinator under load: a release coordinator and `ESC_NODES` (default 50) release partner
//! nodes on loopback, each a real process over mutual TLS. Ten nodes hold a mandate for the
//! tier-1 seat, so each escalation resolves ten participants from their `ListMandates` and notifies
//! eleven nodes (participants and registrant). `ESC_CONCURRENCY` (default 64) callers submit
//! escalations as the other nodes' organisations for `ESC_SECONDS` (default 10); halfway the
//! coordinator is killed with SIGKILL and restarted, and callers retry with the same idempotency
//! key. After the load, an open-loop phase submits `ESC_PACED_RATE` (default 50) escalations a
//! second for `ESC_PACED_SECONDS` (default 20: 1,000 registrations, so that its p99 is the tenth
//! slowest, not decided by one stall of the disk the 51 processes share). Throughout, a watcher
//! asks the audit log for its latest signed checkpoint every 10 ms, so each audit entry's wait from
//! its transition to a checkpoint that covers it is known (within the 10 ms).
//! `ESC_MANDATE_CACHE_TTL` (default `30s`; `0s` asks the nodes every time) is the coordinator's
//! mandate cache. Reported: submissions per second, submit latency, the time from registration to
//! the last participant's `Notify` acknowledged (stored durably at the node), under the load and in
//! the open-loop phase, notifications delivered per second, how long the audit entries wait for the
//! log after the load, and, from every node's inbox, notifications lost (committed at the
//! coordinator, never in an inbox) and stored twice.
//!
//! ```sh
//! cargo build --release --bins && cargo bench -p doorzet-e2e --bench escalations
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use doorzet_proto::v1::{
    self, audit_log_client::AuditLogClient, coordinator_client::CoordinatorClient,
    node_admin_client::NodeAdminClient,
};
use doorzet_testkit::audit::checkpoint_size;
use doorzet_testkit::measure::{cpu_seconds, listing_only, percentile, runtime, setting};
use doorzet_testkit::mesh::{channel_as, channel_with, health, with_token};
use doorzet_testkit::pki::{Pki, TestOrg, server_only_client_config};
use doorzet_testkit::process::Running;
use prost::Message;
use tonic::transport::Channel;

const PARTICIPANTS: usize = 10;

const LADDER: &str = r#"
[region]
id = "bench"
name = "Bench"
model = "rdm"
process_director = { kind = "care_and_safety_house", role = "procesregisseur" }
example_values = true

[[tiers]]
number = 1
name = "Tafel"
table = "Benchtafel"
registrants = { kinds = ["municipality"] }
organiser = { kind = "municipality", role = "procesregisseur" }
required = [{ kind = "other", role = "deelnemer" }]
term = { working_days = 10, urgent_hours = 48 }
on_term_passed = "escalate"
follow_up_working_days = 20

[[tiers]]
number = 2
name = "Bestuur"
table = "Bestuurstafel"
registrants = { kinds = ["municipality"] }
organiser = { kind = "municipality", role = "procesregisseur" }
required = [{ kind = "other", role = "deelnemer" }]
term = { working_days = 5, urgent_hours = 24 }
on_term_passed = "alert_process_director"
follow_up_working_days = 20
"#;

/// `n` distinct free loopback addresses (all held until chosen, so none repeats).
fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("port"))
        .collect();
    held.iter().map(|l| l.local_addr().expect("addr")).collect()
}

struct Node {
    org: TestOrg,
    kind: &'static str,
    mesh: SocketAddr,
    local: SocketAddr,
    config: PathBuf,
    process: Option<Running>,
}

fn key_line(org: &TestOrg) -> String {
    let jwk = org.jwk();
    format!(
        "signing_keys = [{{ kid = \"{}\", alg = \"EdDSA\", kty = \"OKP\", crv = \"Ed25519\", x = \"{}\" }}]\n",
        jwk.kid, jwk.x
    )
}

fn coordinator_config(dir: &Path, org: &TestOrg, mesh: SocketAddr, admin: SocketAddr) -> PathBuf {
    let audit_key = dir.join("audit.key");
    doorzet_ctl::pki::write_private(
        &audit_key,
        doorzet_ctl::pki::TokenKey::generate()
            .expect("key")
            .private_pem
            .as_bytes(),
    )
    .expect("audit key");
    let grant_key = dir.join("grant.key");
    doorzet_ctl::pki::write_private(&grant_key, org.token_key.private_pem.as_bytes())
        .expect("grant key");
    std::fs::write(dir.join("ladder.toml"), LADDER).expect("ladder");
    let config = dir.join("coordinator.toml");
    std::fs::write(
        &config,
        format!(
            "org = \"{}\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n[mesh]\nlisten = \"{mesh}\"\n[admin]\nlisten = \"{admin}\"\n[directory]\nfile = \"{}\"\n[audit]\nsigning_key = \"{}\"\norigin = \"bench.example/audit\"\n[storage]\nurl = \"sqlite:{}\"\n[limits]\nmax_concurrent_requests = 4096\n[escalations]\nladder = \"{}\"\ngrant_signing_key = \"{}\"\ngrant_key_id = \"{}\"\nmax_retry_interval = \"2s\"\nmandate_cache_ttl = \"{}\"\n",
            org.org,
            org.tls.cert.display(),
            org.tls.key.display(),
            org.tls.ca.display(),
            dir.join("directory.toml").display(),
            audit_key.display(),
            dir.join("coordinator.db").display(),
            dir.join("ladder.toml").display(),
            grant_key.display(),
            org.jwk().kid,
            std::env::var("ESC_MANDATE_CACHE_TTL").unwrap_or_else(|_| "30s".into()),
        ),
    )
    .expect("config");
    config
}

/// The registration a caller submits; case references are letters only, as a case reference never
/// holds a BSN-shaped number.
fn submission(prefix: &str, n: usize) -> v1::SubmitEscalationRequest {
    v1::SubmitEscalationRequest {
        request_id: format!("{prefix}-{n}"),
        case_ref: format!(
            "case-{prefix}-{}",
            n.to_string()
                .bytes()
                .map(|d| (b'a' + d - b'0') as char)
                .collect::<String>()
        ),
        tier: 1,
        urgent: false,
        categories: vec!["eviction_date".into()],
        tables_tried: vec![],
        question: "Bench".into(),
        asked_seats: vec![],
    }
}

async fn wait_for(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ok().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the count `sql` reads from the coordinator's database is 0.
async fn wait_until_none(db: &sqlx::SqlitePool, what: &str, sql: &'static str) {
    wait_for(what, async || {
        let (n,): (i64,) = sqlx::query_as(sql).fetch_one(db).await.unwrap_or((1,));
        n == 0
    })
    .await;
}

/// Prints `label`, the p50 and p99 of `sorted` in milliseconds, and `note`.
fn p50_p99(label: impl std::fmt::Display, sorted: &[Duration], note: &str) {
    println!(
        "{label:<58} {:>8.0} / {:.0} ms   {note}",
        percentile(sorted, 0.5).as_secs_f64() * 1e3,
        percentile(sorted, 0.99).as_secs_f64() * 1e3
    );
}

fn unix_millis(t: SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// Samples `(unix ms, size)` of the audit log's latest signed checkpoint every 10 ms until
/// `stop`; a coordinator that is down gives no sample.
fn watch_checkpoints(
    audit: AuditLogClient<Channel>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(i64, u64)>> {
    tokio::spawn(async move {
        let mut samples: Vec<(i64, u64)> = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let size = checkpoint_size(&audit).await.ok();
            if let Some(size) = size
                && samples.last().is_none_or(|(_, s)| *s < size)
            {
                samples.push((unix_millis(SystemTime::now()), size));
            }
        }
        samples
    })
}

/// For each escalation, the longest wait of its audit entries from their transition (the entry's
/// time) to the first sampled checkpoint that covers them.
fn audit_waits(entries: &[(i64, Vec<u8>)], samples: &[(i64, u64)]) -> HashMap<String, Duration> {
    let mut waits: HashMap<String, Duration> = HashMap::new();
    for (idx, body) in entries {
        let entry = v1::AuditEntry::decode(body.as_slice()).expect("a stored audit entry decodes");
        let Some(time) = entry.time.and_then(|t| SystemTime::try_from(t).ok()) else {
            continue;
        };
        let first = samples.partition_point(|(_, size)| *size <= *idx as u64);
        let Some((seen, _)) = samples.get(first) else {
            continue;
        };
        let wait = Duration::from_millis((seen - unix_millis(time)).max(0) as u64);
        let longest = waits.entry(entry.escalation_id).or_default();
        *longest = (*longest).max(wait);
    }
    waits
}

fn main() {
    if listing_only() {
        return; // cargo bench --list asks which benches exist
    }
    let nodes_n = setting("ESC_NODES", 50) as usize;
    let concurrency = setting("ESC_CONCURRENCY", 64) as usize;
    let seconds = setting("ESC_SECONDS", 10);
    let paced_rate = setting("ESC_PACED_RATE", 50).max(1);
    let paced_seconds = setting("ESC_PACED_SECONDS", 20).max(1);
    assert!(
        nodes_n > PARTICIPANTS,
        "ESC_NODES must exceed {PARTICIPANTS}"
    );
    runtime().block_on(run(
        nodes_n,
        concurrency,
        seconds,
        paced_rate,
        paced_seconds,
    ));
}

async fn run(
    nodes_n: usize,
    concurrency: usize,
    seconds: u64,
    paced_rate: u64,
    paced_seconds: u64,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new();
    let coordinator = pki.org("00000001999000000001".parse().unwrap(), "ZVH Bench");
    let mut ports = free_addrs(2 + 3 * nodes_n).into_iter();
    let mut port = move || ports.next().expect("enough ports");
    let (c_mesh, c_admin) = (port(), port());
    let mut node_ports = Vec::new();
    for _ in 0..nodes_n {
        node_ports.push((port(), port(), port()));
    }
    let mut nodes: Vec<Node> = (0..nodes_n)
        .map(|i| {
            let oin = format!("0000000199910{:07}", i + 1);
            let kind = if i < PARTICIPANTS {
                "other"
            } else {
                "municipality"
            };
            Node {
                org: pki.org(oin.parse().unwrap(), &format!("Org {i}")),
                kind,
                mesh: node_ports[i].0,
                local: node_ports[i].1,
                config: dir.path().join(format!("node-{i}.toml")),
                process: None,
            }
        })
        .collect();
    let mut directory = format!(
        "region = \"bench\"\n[coordinator]\norg_id = \"{}\"\nname = \"ZVH\"\nmesh_endpoint = \"https://{c_mesh}\"\n{}\n",
        coordinator.org,
        key_line(&coordinator)
    );
    for n in &nodes {
        directory.push_str(&format!(
            "[[members]]\norg_id = \"{}\"\nkind = \"{}\"\nname = \"{}\"\nmesh_endpoint = \"https://{}\"\n{}\n",
            n.org.org,
            n.kind,
            n.org.org,
            n.mesh,
            key_line(&n.org)
        ));
    }
    std::fs::write(dir.path().join("directory.toml"), directory).expect("directory");
    let c_config = coordinator_config(dir.path(), &coordinator, c_mesh, c_admin);
    let mut c_process = Some(Running::spawn("doorzet-coordinator", &c_config, &[], None));
    let c_endpoint = format!("https://{c_mesh}");
    let first = nodes[PARTICIPANTS].org.clone();
    wait_for("coordinator SERVING", async || {
        health(&first, &c_endpoint).await == Some(1)
    })
    .await;
    for (i, n) in nodes.iter_mut().enumerate() {
        std::fs::write(
            &n.config,
            format!(
                "org = \"{}\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n[mesh]\nlisten = \"{}\"\n[local]\nlisten = \"{}\"\n[admin]\nlisten = \"{}\"\n[coordinator]\nendpoint = \"{c_endpoint}\"\norg = \"{}\"\n[storage]\nurl = \"sqlite:{}\"\n[telemetry]\nlog_filter = \"warn\"\n",
                n.org.org,
                n.org.tls.cert.display(),
                n.org.tls.key.display(),
                n.org.tls.ca.display(),
                n.mesh,
                n.local,
                node_ports[i].2,
                coordinator.org,
                dir.path().join(format!("node-{i}.db")).display(),
            ),
        )
        .expect("node config");
        n.process = Some(Running::spawn(
            "doorzet-node",
            &n.config,
            &[("DOORZET_TELEMETRY__LOG_FILTER", "warn")],
            None,
        ));
    }
    let ca = pki.ca_path();
    let local = |n: &Node| {
        channel_with(
            doorzet_mesh::client::ClientTls::Fixed(server_only_client_config(&ca)),
            &format!("https://{}", n.local),
        )
    };
    for n in &nodes {
        let endpoint = format!("https://{}", n.mesh);
        wait_for("node SERVING", async || {
            health(&n.org, &endpoint).await == Some(1)
        })
        .await;
    }
    let now = SystemTime::now();
    for n in nodes.iter().take(PARTICIPANTS) {
        NodeAdminClient::new(local(n))
            .create_mandate(with_token(
                v1::CreateMandateRequest {
                    mandate: Some(v1::Mandate {
                        role: "deelnemer".into(),
                        tiers: vec![1, 2],
                        domains: vec!["housing".into()],
                        decision_types: vec!["suspend_eviction".into()],
                        legal_basis: "Bench".into(),
                        valid_from: Some((now - Duration::from_secs(86400)).into()),
                        review_date: Some((now + Duration::from_secs(200 * 86400)).into()),
                        ..Default::default()
                    }),
                },
                &n.org.token("ops", "beheerder"),
            ))
            .await
            .expect("mandate");
    }
    println!(
        "\nescalations bench: {nodes_n} nodes ({PARTICIPANTS} participants per escalation, + the registrant notified), {concurrency} callers, {seconds} s, SIGKILL of the coordinator halfway\n"
    );

    // Callers: one channel per registrant organisation.
    let registrants: Arc<Vec<(CoordinatorClient<Channel>, String)>> = Arc::new(
        nodes[PARTICIPANTS..]
            .iter()
            .map(|n| {
                (
                    CoordinatorClient::new(channel_as(&n.org, &c_endpoint)),
                    n.org.token("cm", "casemanager"),
                )
            })
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let watching = Arc::new(AtomicBool::new(false));
    let watcher = watch_checkpoints(
        AuditLogClient::new(channel_as(&first, &c_endpoint)),
        watching.clone(),
    );
    let counter = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (registrants, stop, counter) = (registrants.clone(), stop.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut retries = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let (client, token) = &registrants[(worker + n) % registrants.len()];
                let request = submission("bench", n);
                let t = Instant::now();
                // Retried with the same key until it lands (across the coordinator's restart).
                let mut attempts = 0;
                loop {
                    let mut c = client.clone();
                    match c
                        .submit_escalation(with_token(request.clone(), token))
                        .await
                    {
                        Ok(_) => break,
                        Err(e) => {
                            attempts += 1;
                            retries += 1;
                            assert!(attempts < 3000, "submit kept failing: {e:?}");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                latencies.push(t.elapsed());
            }
            (latencies, retries)
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds / 2)).await;
    let killed_at = Instant::now();
    let killed_ms = unix_millis(SystemTime::now());
    drop(c_process.take());
    c_process = Some(Running::spawn("doorzet-coordinator", &c_config, &[], None));
    wait_for("coordinator back", async || {
        health(&first, &c_endpoint).await == Some(1)
    })
    .await;
    let downtime = killed_at.elapsed();
    let back_ms = unix_millis(SystemTime::now());
    let c_pid = c_process.as_ref().unwrap().pid();
    let cpu_restart = cpu_seconds(c_pid);
    let node_pids: Vec<u32> = nodes
        .iter()
        .map(|n| n.process.as_ref().expect("running").pid())
        .collect();
    let nodes_cpu = || node_pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>();
    let nodes_cpu_restart = nodes_cpu();
    let submitted_at_restart = counter.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(seconds - seconds / 2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut retries = 0;
    for t in tasks {
        let (l, r) = t.await.expect("caller");
        latencies.extend(l);
        retries += r;
    }
    let elapsed = started.elapsed();
    let load_end = Instant::now();
    latencies.sort();

    // Let delivery and the audit drain finish, reading the coordinator's database.
    let db = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&format!(
            "sqlite:{}?mode=ro",
            dir.path().join("coordinator.db").display()
        ))
        .await
        .expect("coordinator db");
    wait_until_none(
        &db,
        "outbox drained",
        "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL",
    )
    .await;
    let delivered_after = load_end.elapsed();
    wait_until_none(&db, "audit drained", "SELECT COUNT(*) FROM audit_pending").await;
    let audit_after = load_end.elapsed();
    let cpu_second = cpu_seconds(c_pid) - cpu_restart;
    let nodes_cpu_second = nodes_cpu() - nodes_cpu_restart;

    // Open loop at a rate the mesh sustains: the notification path without a queue in front.
    let paced_from = unix_millis(SystemTime::now());
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / paced_rate as f64));
    let mut paced = Vec::new();
    for n in 0..(paced_rate * paced_seconds) as usize {
        tick.tick().await;
        let registrants = registrants.clone();
        paced.push(tokio::spawn(async move {
            let (client, token) = &registrants[n % registrants.len()];
            client
                .clone()
                .submit_escalation(with_token(submission("paced", n), token))
                .await
                .expect("paced submission");
        }));
    }
    for p in paced {
        p.await.expect("paced caller");
    }
    wait_until_none(
        &db,
        "outbox drained after the paced phase",
        "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL",
    )
    .await;

    wait_until_none(
        &db,
        "audit drained after the paced phase",
        "SELECT COUNT(*) FROM audit_pending",
    )
    .await;
    let (logged,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM audit_entries")
        .fetch_one(&db)
        .await
        .expect("audit entries");
    wait_for("a checkpoint over every entry", async || {
        checkpoint_size(&AuditLogClient::new(channel_as(&first, &c_endpoint)))
            .await
            .is_ok_and(|size| size >= logged as u64)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(30)).await; // one more sample after it
    watching.store(true, Ordering::Relaxed);
    let samples = watcher.await.expect("checkpoint watcher");
    let entries: Vec<(i64, Vec<u8>)> = sqlx::query_as("SELECT idx, body FROM audit_entries")
        .fetch_all(&db)
        .await
        .expect("audit entries");
    let waits = audit_waits(&entries, &samples);

    let registered: HashMap<String, i64> =
        sqlx::query_as::<_, (String, i64)>("SELECT escalation_id, registered_at FROM escalations")
            .fetch_all(&db)
            .await
            .expect("escalations")
            .into_iter()
            .collect();
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT notification_id, recipient_org, delivered_at FROM outbox")
            .fetch_all(&db)
            .await
            .expect("outbox");
    let mut last_invite: BTreeMap<String, i64> = BTreeMap::new();
    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let (mut first_delivery, mut last_delivery, mut under_load) = (i64::MAX, 0, 0usize);
    for (id, org, at) in &rows {
        let escalation = id.split('.').next().unwrap_or_default().to_owned();
        if registered.get(&escalation).is_some_and(|r| *r < paced_from) {
            first_delivery = first_delivery.min(*at);
            last_delivery = last_delivery.max(*at);
            under_load += 1;
        }
        if id.split('.').nth(1) == Some("2") {
            let e = last_invite.entry(escalation).or_default();
            *e = (*e).max(*at);
        }
        expected.entry(org.clone()).or_default().insert(id.clone());
    }
    let (mut notify, mut notify_paced) = (Vec::new(), Vec::new());
    for (e, at) in &last_invite {
        if let Some(r) = registered.get(e) {
            let took = Duration::from_millis((at - r).max(0) as u64);
            if *r >= paced_from {
                notify_paced.push(took);
            } else {
                notify.push(took);
            }
        }
    }
    notify.sort();
    notify_paced.sort();
    // Audit waits: under the load (apart from escalations registered in the 2 s before the kill
    // until the coordinator was back, whose entries wait for the restart) and in the open loop.
    let (mut audit_load, mut audit_restart, mut audit_paced) = (Vec::new(), Vec::new(), Vec::new());
    for (e, r) in &registered {
        let Some(wait) = waits.get(e) else { continue };
        if *r >= paced_from {
            audit_paced.push(*wait);
        } else if *r >= killed_ms - 2000 && *r <= back_ms {
            audit_restart.push(*wait);
        } else {
            audit_load.push(*wait);
        }
    }
    audit_load.sort();
    audit_restart.sort();
    audit_paced.sort();
    let unlogged = registered.len() - waits.len();

    // Every node's inbox: lost and duplicated notifications.
    let (mut lost, mut twice, mut stored) = (0usize, 0usize, 0usize);
    for n in &nodes {
        let want = expected
            .get(n.org.org.as_str())
            .cloned()
            .unwrap_or_default();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut after = 0;
        loop {
            let items = NodeAdminClient::new(local(n))
                .max_decoding_message_size(64 * 1024 * 1024)
                .list_inbox(with_token(
                    v1::ListInboxRequest {
                        after,
                        limit: 1000,
                        ..Default::default()
                    },
                    &n.org.token("cm", "casemanager"),
                ))
                .await
                .expect("inbox")
                .into_inner()
                .items;
            if items.is_empty() {
                break;
            }
            after = items.last().unwrap().position;
            for i in items {
                if let Some(note) = i.notification {
                    *seen.entry(note.notification_id).or_default() += 1;
                }
            }
        }
        stored += seen.values().sum::<usize>();
        twice += seen.values().filter(|c| **c > 1).count();
        lost += want.iter().filter(|id| !seen.contains_key(*id)).count();
    }

    let count = latencies.len();
    let span_s = (last_delivery - first_delivery).max(1) as f64 / 1000.0;
    println!(
        "{:<58} {:>12}",
        "escalations submitted (each acknowledged)", count
    );
    println!(
        "{:<58} {:>12.0}   (goal >= 1,000 on SQLite)",
        "escalations/s over the run, kill and restart included",
        count as f64 / elapsed.as_secs_f64()
    );
    println!(
        "{:<58} {:>8.2} / {:.2} ms",
        "submit latency p50 / p99 (incl. retries across the kill)",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3
    );
    p50_p99(
        "registration -> last participant's Notify stored, p50 / p99",
        &notify,
        "(goal p99 < 20 ms)",
    );
    p50_p99(
        format!("the same at {paced_rate} escalations/s, open loop, p50 / p99"),
        &notify_paced,
        "(goal p99 < 20 ms)",
    );
    println!(
        "{:<58} {:>12.0}   (goal >= 10,000)",
        "notifications delivered/s (under the load)",
        under_load as f64 / span_s
    );
    println!(
        "{:<58} {:>10.1} s",
        "outbox empty after the load ended",
        delivered_after.as_secs_f64()
    );
    println!(
        "{:<58} {:>10.1} s",
        "audit entries all in the log after the load ended",
        audit_after.as_secs_f64()
    );
    p50_p99(
        "transition -> audit entries in a signed checkpoint, p50 / p99",
        &audit_load,
        "(goal p99 < 1 s)",
    );
    p50_p99(
        "  the same for those registered around the restart",
        &audit_restart,
        &format!("({} escalations)", audit_restart.len()),
    );
    p50_p99(
        format!("  the same at {paced_rate} escalations/s, open loop"),
        &audit_paced,
        "(goal p99 < 1 s)",
    );
    println!(
        "{:<58} {:>12}   (goal 0)",
        "escalations without an entry in a checkpoint", unlogged
    );
    println!(
        "{:<58} {:>10.1} s",
        "coordinator down (SIGKILL to SERVING again)",
        downtime.as_secs_f64()
    );
    println!(
        "{:<58} {:>12}",
        "submit retries (during the restart)", retries
    );
    println!(
        "{:<58} {:>12}",
        "notifications committed / stored in inboxes",
        format!("{} / {stored}", rows.len())
    );
    println!("{:<58} {:>12}   (goal 0)", "notifications lost", lost);
    println!(
        "{:<58} {:>12}   (goal 0)",
        "notifications stored twice", twice
    );
    let second_half = (count.saturating_sub(submitted_at_restart) as f64).max(1.0);
    println!(
        "{:<58} {:>10.0} µs",
        "coordinator CPU per escalation (second half, delivery included)",
        cpu_second / second_half * 1e6
    );
    println!(
        "{:<58} {:>10.0} µs",
        format!("the nodes' CPU per escalation ({nodes_n} together)"),
        nodes_cpu_second / second_half * 1e6
    );
    println!(
        "\ndeadline-firing lag under registrations is the deadlines bench's (terms are hours or days, so\nits coordinator runs in-process on a clock it moves): cargo bench -p doorzet-e2e --bench deadlines"
    );
}
