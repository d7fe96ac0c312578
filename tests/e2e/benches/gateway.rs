//! Gateway overhead: the same read (one escalation) directly over gRPC with mutual TLS to the
//! coordinator, and through the municipality's REST gateway (HTTP/1.1 keep-alive on loopback, the
//! gateway's own gRPC channel behind it), each by `GATEWAY_CLIENTS` (default 64) concurrent
//! callers for `GATEWAY_SECONDS` (default 5) after a second of warm-up, in one process and one
//! run. Reported: throughput, p50 and p99 of both, the REST/gRPC throughput ratio and the latency
//! the gateway adds. Goal: under 1 ms added at p50, at least 70 % of the direct throughput. The
//! process allocates with jemalloc, as the gateway's and the coordinator's binaries do.
//!
//! ```sh
//! cargo bench -p doorzet-e2e --bench gateway
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use doorzet_gateway::config::HttpLimits;
use doorzet_proto::v1::{self, coordinator_client::CoordinatorClient};
use doorzet_testkit::TestMesh;
use doorzet_testkit::gateway::TestGateway;
use doorzet_testkit::measure::{listing_only, percentile, runtime, setting};
use doorzet_testkit::mesh::{channel_as, with_token};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    if listing_only() {
        return; // cargo bench --list asks which benches exist
    }
    let clients = setting("GATEWAY_CLIENTS", 64) as usize;
    let seconds = setting("GATEWAY_SECONDS", 5);
    runtime().block_on(run(clients, Duration::from_secs(seconds)));
}

struct Run {
    per_second: f64,
    latencies: Vec<Duration>,
}

/// `clients` callers doing `read` until `span` has passed after a second of warm-up.
async fn load<F, Fut>(clients: usize, span: Duration, read: F) -> Run
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let read = Arc::new(read);
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (read, measuring, stop) = (read.clone(), measuring.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                read().await;
                if measuring.load(Ordering::Relaxed) {
                    latencies.push(t.elapsed());
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(span).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("caller"));
    }
    latencies.sort();
    Run {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        latencies,
    }
}

async fn run(clients: usize, span: Duration) {
    let mesh = TestMesh::start(5).await;
    let gateway = TestGateway::start(
        &mesh,
        0,
        HttpLimits {
            requests_per_second: 1_000_000,
            burst: 1_000_000,
            ..HttpLimits::default()
        },
    )
    .await;
    let token = gateway.token("cm-7", "casemanager");
    let http = reqwest::Client::new();
    let registered: serde_json::Value = http
        .post(gateway.url("/escalations"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"caseRef": "case-bench", "tier": 1, "question": "Bench"}))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("json");
    let id = registered["escalationId"]
        .as_str()
        .unwrap_or_else(|| panic!("registered: {registered}"))
        .to_owned();

    let direct = CoordinatorClient::new(channel_as(&mesh.nodes[0].org, &mesh.coordinator.endpoint));
    let url = gateway.url(&format!("/escalations/{id}"));
    let mut rows = Vec::new();
    for callers in [1, clients] {
        let grpc = {
            let (token, id, direct) = (token.clone(), id.clone(), direct.clone());
            load(callers, span, move || {
                let mut client = direct.clone();
                let request = with_token(
                    v1::GetEscalationRequest {
                        escalation_id: id.clone(),
                    },
                    &token,
                );
                async move {
                    client.get_escalation(request).await.expect("gRPC read");
                }
            })
            .await
        };
        let rest = {
            let (token, url, http) = (token.clone(), url.clone(), http.clone());
            load(callers, span, move || {
                let request = http.get(&url).bearer_auth(&token).send();
                async move {
                    let response = request.await.expect("REST read");
                    assert!(response.status().is_success(), "{}", response.status());
                    response.bytes().await.expect("body");
                }
            })
            .await
        };
        rows.push((callers, grpc, rest));
    }

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "\ngateway bench: GetEscalation, {} s per phase after 1 s warm-up, callers, gateway and mesh in one process\n",
        span.as_secs()
    );
    println!(
        "{:<8} {:<28} {:>10} {:>9} {:>9}",
        "callers", "", "reads/s", "p50 ms", "p99 ms"
    );
    for (callers, grpc, rest) in &rows {
        for (name, r) in [
            ("gRPC, direct (mutual TLS)", grpc),
            ("REST through the gateway", rest),
        ] {
            println!(
                "{callers:<8} {name:<28} {:>10.0} {:>9.2} {:>9.2}",
                r.per_second,
                ms(percentile(&r.latencies, 0.5)),
                ms(percentile(&r.latencies, 0.99))
            );
        }
        println!(
            "{:<8} REST/gRPC throughput {:.2}; added at p50 {:.2} ms, at p99 {:.2} ms\n",
            "",
            rest.per_second / grpc.per_second,
            ms(percentile(&rest.latencies, 0.5)) - ms(percentile(&grpc.latencies, 0.5)),
            ms(percentile(&rest.latencies, 0.99)) - ms(percentile(&grpc.latencies, 0.99)),
        );
    }
    println!("goal at {clients} callers: throughput ratio >= 0.70, added p50 < 1 ms");
}
