//! Abuse bench against a release node: what a stranger's flood, held connections or random method
//! paths cost the node's own callers (latency of `GetNodeStatus` on an established connection) and
//! the node's resident memory, during each abuse and after it, against the same calls on the idle
//! node measured in the same run.
//!
//! ```sh
//! cargo build --release --bins && cargo bench -p doorzet-e2e --bench abuse
//! ```
//! `ABUSE_SECONDS` sets how long each abuse lasts (default 10).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use doorzet_proto::v1::{self, node_admin_client::NodeAdminClient};
use doorzet_testkit::measure::{listing_only, percentile, rss_mib, runtime, setting};
use doorzet_testkit::mesh::with_token;
use doorzet_testkit::pki::server_only_client_config;
use doorzet_testkit::process::{CoordinatorProcess, NodeProcess};
use tonic::transport::Channel;

/// Legitimate calls, one every 10 ms on an established connection, until `stop`; returns their
/// latencies (a failed call counts as the request timeout) and the peak memory seen meanwhile.
async fn legit_calls(
    channel: Channel,
    token: String,
    pid: u32,
    stop: Arc<AtomicBool>,
) -> (Vec<Duration>, usize, f64) {
    let mut client = NodeAdminClient::new(channel);
    let mut latencies = Vec::new();
    let mut failed = 0;
    let mut peak: f64 = 0.0;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let result = client
            .get_node_status(with_token(v1::GetNodeStatusRequest {}, &token))
            .await;
        let took = started.elapsed();
        if result.is_err() {
            failed += 1;
            latencies.push(Duration::from_secs(15));
        } else {
            latencies.push(took);
        }
        peak = peak.max(rss_mib(pid));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    latencies.sort();
    (latencies, failed, peak)
}

struct Row {
    name: &'static str,
    p50: Duration,
    p99: Duration,
    failed: usize,
    abuse_requests: u64,
    peak_mib: f64,
    after_mib: f64,
}

async fn measure<F, Fut>(
    name: &'static str,
    node: &NodeProcess,
    pid: u32,
    legit: &Channel,
    seconds: u64,
    abuse: F,
) -> Row
where
    F: FnOnce(Arc<AtomicBool>, Arc<AtomicU64>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let abuser = tokio::spawn(abuse(stop.clone(), count.clone()));
    let measurer = tokio::spawn(legit_calls(legit.clone(), node.token(), pid, stop.clone()));
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let (latencies, failed, peak_mib) = measurer.await.expect("legit calls");
    let _ = abuser.await;
    // The node's handshake timeout (10 s) and the allocator's decay of freed pages (10 s) pass.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let metrics = doorzet_testkit::metrics::scrape(node.admin_addr).await;
    let open =
        doorzet_testkit::metrics::value(&metrics, r#"doorzet_mesh_connections{listener="local"}"#)
            .map_or("no connections gauge".to_owned(), |n| {
                format!("{n} open connections on the local listener")
            });
    println!("{name}: 20 s after, {open}");
    Row {
        name,
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        failed,
        abuse_requests: count.load(Ordering::Relaxed),
        peak_mib,
        after_mib: rss_mib(pid),
    }
}

/// Unauthenticated requests on `channels` connections, `streams` at a time on each.
fn flood(
    node: &NodeProcess,
    channels: usize,
    streams: usize,
    random_paths: bool,
) -> impl FnOnce(Arc<AtomicBool>, Arc<AtomicU64>) -> futures_util::future::BoxFuture<'static, ()> {
    let channels: Vec<Channel> = (0..channels).map(|_| node.local_channel()).collect();
    move |stop, count| {
        Box::pin(async move {
            let mut tasks = Vec::new();
            for (c, channel) in channels.into_iter().enumerate() {
                for s in 0..streams {
                    let (channel, stop, count) = (channel.clone(), stop.clone(), count.clone());
                    tasks.push(tokio::spawn(async move {
                        let mut grpc = tonic::client::Grpc::new(channel);
                        let mut i = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            i += 1;
                            let path = if random_paths {
                                format!("/p{c}x{s}.S{i}/M{}", i * 31)
                            } else {
                                "/doorzet.v1.NodeAdmin/WhoAmI".to_owned()
                            };
                            if grpc.ready().await.is_err() {
                                break;
                            }
                            let _ = grpc
                                .unary(
                                    tonic::Request::new(v1::WhoAmIRequest {}),
                                    http::uri::PathAndQuery::try_from(path).expect("path"),
                                    doorzet_proto::codec::StrictCodec::<
                                        v1::WhoAmIRequest,
                                        v1::WhoAmIResponse,
                                    >::default(),
                                )
                                .await;
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                    }));
                }
            }
            for task in tasks {
                let _ = task.await;
            }
        })
    }
}

/// `n` TLS connections that say nothing after the handshake, opened again as the node closes them.
fn held_connections(
    node: &NodeProcess,
    n: usize,
) -> impl FnOnce(Arc<AtomicBool>, Arc<AtomicU64>) -> futures_util::future::BoxFuture<'static, ()> {
    let addr = node.local_addr;
    let config = server_only_client_config(&node.org.tls.ca);
    move |stop, count| {
        Box::pin(async move {
            let mut tasks = Vec::new();
            for _ in 0..n {
                let (config, stop, count) = (config.clone(), stop.clone(), count.clone());
                tasks.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(Ok(tcp)) = tokio::time::timeout(
                            Duration::from_secs(1),
                            tokio::net::TcpStream::connect(addr),
                        )
                        .await
                        else {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        };
                        let connector = tokio_rustls::TlsConnector::from(config.clone());
                        let name = "127.0.0.1".try_into().expect("name");
                        if let Ok(Ok(mut stream)) = tokio::time::timeout(
                            Duration::from_secs(2),
                            connector.connect(name, tcp),
                        )
                        .await
                        {
                            count.fetch_add(1, Ordering::Relaxed);
                            // Hold it until the node closes it or the abuse ends.
                            let mut buf = [0u8; 64];
                            while !stop.load(Ordering::Relaxed) {
                                use tokio::io::AsyncReadExt;
                                let read = tokio::time::timeout(
                                    Duration::from_millis(200),
                                    stream.read(&mut buf),
                                )
                                .await;
                                if let Ok(Ok(0) | Err(_)) = read {
                                    break;
                                }
                            }
                        } else {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }));
            }
            for task in tasks {
                let _ = task.await;
            }
        })
    }
}

fn raise_own_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard.min(65536), hard);
    }
}

fn main() {
    if listing_only() {
        return; // cargo bench --list asks which benches exist
    }
    raise_own_file_limit();
    let seconds = setting("ABUSE_SECONDS", 10);
    runtime().block_on(async move {
        let mut coordinator = CoordinatorProcess::new("");
        coordinator.start();
        coordinator.wait_serving().await;
        let mut node = NodeProcess::new(&coordinator, "");
        // As the shipped unit had it before: 1024 open files, default limits.
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("MALLOC_"))
            .collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        node.start_with_env(&env, Some(1024));
        node.wait_serving().await;
        let pid = node.running().pid();
        let legit = node.local_channel();

        // Warm up, then the idle baseline.
        let idle_mib = rss_mib(pid);
        let baseline = measure("idle (baseline)", &node, pid, &legit, seconds, |_, _| async {}).await;
        let rows = vec![
            baseline,
            measure("unauthenticated flood, 4 connections x 64 streams", &node, pid, &legit, seconds, flood(&node, 4, 64, false)).await,
            measure("random method paths, 4 connections x 64 streams", &node, pid, &legit, seconds, flood(&node, 4, 64, true)).await,
            measure("1,100 held TLS connections", &node, pid, &legit, seconds, held_connections(&node, 1100)).await,
        ];
        let base_p99 = rows[0].p99.as_secs_f64().max(1e-6);
        println!("\nabuse bench: {seconds} s per abuse, release node with 1024 open files, idle RSS {idle_mib:.1} MiB\n");
        println!(
            "{:<52} {:>9} {:>9} {:>8} {:>7} {:>11} {:>10} {:>10} {:>9}",
            "abuse", "p50 ms", "p99 ms", "p99 x", "failed", "abuse reqs", "peak MiB", "after MiB", "after x"
        );
        for row in &rows {
            println!(
                "{:<52} {:>9.2} {:>9.2} {:>8.2} {:>7} {:>11} {:>10.1} {:>10.1} {:>9.2}",
                row.name,
                row.p50.as_secs_f64() * 1e3,
                row.p99.as_secs_f64() * 1e3,
                row.p99.as_secs_f64() / base_p99,
                row.failed,
                row.abuse_requests,
                row.peak_mib,
                row.after_mib,
                row.after_mib / idle_mib.max(1e-6),
            );
        }
        let stderr = node.running().stderr();
        println!(
            "\nnode log: {} lines, {} bytes over the whole run; by message:",
            stderr.lines().count(),
            stderr.len()
        );
        let mut by_message = std::collections::BTreeMap::<String, usize>::new();
        for line in stderr.lines() {
            // `<time> <LEVEL> <target>: <message> <fields>`: keep level, target and message.
            let key: String = line.split_whitespace().skip(1).take(6).collect::<Vec<_>>().join(" ");
            *by_message.entry(key).or_default() += 1;
        }
        for (message, count) in by_message {
            println!("{count:>6}  {message}");
        }
    });
}
