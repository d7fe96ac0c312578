//! A node's listeners face networks its organisation does not control. Against the real binaries,
//! with a lowered file limit: strangers who hold connections, flood one connection with requests or
//! send random method paths cannot lock out the node's own callers, cannot fill its metrics, and
//! cost no more than a debug line each.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use doorzet_proto::v1::{self, node_admin_client::NodeAdminClient};
use doorzet_testkit::mesh::with_token;
use doorzet_testkit::metrics::{scrape, value};
use doorzet_testkit::pki::server_only_client_config;
use doorzet_testkit::process::{CoordinatorProcess, NodeProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;
use tonic::transport::Channel;

async fn node_with(extra: &str, file_limit: Option<u64>) -> (CoordinatorProcess, NodeProcess) {
    let mut coordinator = CoordinatorProcess::new("");
    coordinator.start();
    coordinator.wait_serving().await;
    let mut node = NodeProcess::new(&coordinator, extra);
    node.start(file_limit);
    node.wait_serving().await;
    (coordinator, node)
}

async fn node_status(
    channel: Channel,
    token: &str,
) -> Result<v1::GetNodeStatusResponse, tonic::Status> {
    NodeAdminClient::new(channel)
        .get_node_status(with_token(v1::GetNodeStatusRequest {}, token))
        .await
        .map(tonic::Response::into_inner)
}

async fn tls_connect(
    node: &NodeProcess,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let config = server_only_client_config(&node.org.tls.ca);
    let tcp = TcpStream::connect(node.local_addr).await?;
    tokio_rustls::TlsConnector::from(config)
        .connect("127.0.0.1".try_into().expect("name"), tcp)
        .await
}

/// Waits until the server closes `stream` (end of file or an error), up to `timeout`.
async fn closed_by_server<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> bool {
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue, // session tickets and settings; keep reading
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn random_method_paths_are_counted_as_unknown_and_never_become_labels() {
    let (_coordinator, node) = node_with("", None).await;
    let channel = node.local_channel();
    node_status(channel.clone(), &node.token())
        .await
        .expect("a known method answers");

    let mut grpc = tonic::client::Grpc::new(channel.clone());
    for i in 0..400 {
        let path = if i == 0 {
            "/bsn:123456782/geboortedatum:1970-01-01".to_owned()
        } else {
            format!("/probe{i}.Svc{}/Method{}", i * 7, i * 13)
        };
        grpc.ready().await.expect("ready");
        let err = grpc
            .unary(
                tonic::Request::new(v1::WhoAmIRequest {}),
                http::uri::PathAndQuery::try_from(path).expect("path"),
                doorzet_proto::codec::StrictCodec::<v1::WhoAmIRequest, v1::WhoAmIResponse>::default(
                ),
            )
            .await
            .expect_err("no such method");
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    }
    let body = scrape(node.admin_addr).await;
    assert!(
        body.len() < 32 * 1024,
        "metrics grew to {} bytes",
        body.len()
    );
    for caller_text in ["bsn", "geboortedatum", "probe17", "Svc", "Method13"] {
        assert!(!body.contains(caller_text), "`{caller_text}` in metrics");
    }
    assert_eq!(
        value(
            &body,
            r#"doorzet_mesh_requests_total{service="unknown",method="unknown",code="16",peer_kind="unidentified"}"#
        ),
        Some(400.0),
        "{body}"
    );
    assert!(body.contains(r#"service="doorzet.v1.NodeAdmin",method="GetNodeStatus",code="0""#));
}

#[tokio::test(flavor = "multi_thread")]
async fn held_connections_beyond_the_cap_are_refused_while_callers_keep_working() {
    let (_coordinator, mut node) = node_with(
        "[limits]\nmax_connections = 100\nmax_handshakes = 32\nhandshake_timeout = \"3s\"\nidle_timeout = \"60s\"\n",
        Some(1024),
    )
    .await;
    let token = node.token();
    let established = node.local_channel();
    node_status(established.clone(), &token)
        .await
        .expect("established caller works before the flood");

    // Strangers open 200 TLS connections and then say nothing.
    let mut held = Vec::new();
    let mut refused = 0;
    for batch in 0..10 {
        let attempts = (0..20).map(|_| tls_connect(&node));
        for result in futures_util::future::join_all(attempts).await {
            match result {
                Ok(stream) => held.push(stream),
                Err(_) => refused += 1,
            }
        }
        assert!(batch < 9 || !held.is_empty());
    }
    assert!(
        held.len() < 100,
        "{} connections held past the cap",
        held.len()
    );
    assert!(refused >= 100, "only {refused} refused");

    // The caller that was already connected is not locked out.
    for _ in 0..5 {
        node_status(established.clone(), &token)
            .await
            .expect("established caller keeps working at the cap");
    }
    let body = scrape(node.admin_addr).await;
    assert!(
        value(
            &body,
            r#"doorzet_mesh_connections_refused_total{listener="local",reason="connection_cap"}"#
        )
        .is_some_and(|n| n >= 100.0),
        "{body}"
    );

    // Connections that never send a request are closed after the handshake timeout.
    for stream in &mut held {
        assert!(
            closed_by_server(stream, Duration::from_secs(10)).await,
            "a silent connection stayed open"
        );
    }
    drop(held);
    node_status(node.local_channel(), &token)
        .await
        .expect("a new caller gets in once the silent connections are gone");
    let stderr = node.running().stderr();
    assert!(
        stderr.matches("new connection refused").count() <= 2,
        "refusals are rate-limited: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn running_out_of_file_handles_is_survived_and_logged_once() {
    // 128 files, caps that need more: the node warns at start, and the file limit is hit first.
    let (_coordinator, mut node) = node_with(
        "[limits]\nmax_connections = 200\nmax_handshakes = 200\nhandshake_timeout = \"3s\"\n",
        Some(128),
    )
    .await;
    assert!(
        node.running()
            .stderr()
            .contains("open-file limit is below what the connection caps need"),
        "{}",
        node.running().stderr()
    );
    let token = node.token();
    let established = node.local_channel();
    node_status(established.clone(), &token)
        .await
        .expect("works before");

    // Past the file limit a connection waits in the kernel's backlog: not served within a second
    // counts as not held.
    // All at once, so none is closed by the handshake timeout while the others are still opening.
    let attempts =
        (0..200).map(|_| tokio::time::timeout(Duration::from_secs(1), tls_connect(&node)));
    let mut held: Vec<_> = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .filter_map(|r| r.ok().and_then(Result::ok))
        .collect();
    assert!(held.len() < 128, "{} held with 128 files", held.len());
    node_status(established.clone(), &token)
        .await
        .expect("established caller keeps working with the file handles used up");
    for stream in &mut held {
        assert!(closed_by_server(stream, Duration::from_secs(10)).await);
    }
    drop(held);
    node_status(node.local_channel(), &token)
        .await
        .expect("new callers get in again afterwards");
    let stderr = node.running().stderr();
    let accept_failed = stderr.matches("accept failed").count();
    assert!(
        (1..=2).contains(&accept_failed),
        "accept failures logged {accept_failed} times: {stderr}"
    );
}

/// An HTTP/2 client connection whose peer settings can be read while it runs.
struct H2 {
    send: h2::client::SendRequest<bytes::Bytes>,
    max_streams: Arc<Mutex<usize>>,
    closed: tokio::task::JoinHandle<()>,
}

async fn h2_connect(node: &NodeProcess) -> H2 {
    let stream = tls_connect(node).await.expect("tls");
    let (send, mut conn) = h2::client::handshake(stream).await.expect("h2 handshake");
    let max_streams = Arc::new(Mutex::new(0));
    let seen = max_streams.clone();
    let closed = tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| {
            let polled = std::pin::Pin::new(&mut conn).poll(cx);
            *seen.lock().unwrap() = conn.max_concurrent_send_streams();
            polled
        })
        .await;
    });
    H2 {
        send,
        max_streams,
        closed,
    }
}

fn grpc_request(path: &str, token: Option<&str>) -> http::Request<()> {
    let mut builder = http::Request::post(format!("https://127.0.0.1{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    builder.body(()).expect("request")
}

/// Sends one empty gRPC message on `path` and returns the final grpc-status.
async fn h2_call(
    send: &mut h2::client::SendRequest<bytes::Bytes>,
    path: &str,
    token: Option<&str>,
) -> Option<i32> {
    let mut send = send.clone().ready().await.ok()?;
    let (response, mut body) = send.send_request(grpc_request(path, token), false).ok()?;
    body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .ok()?;
    let response = response.await.ok()?;
    let status = |h: &http::HeaderMap| {
        h.get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    };
    if let Some(code) = status(response.headers()) {
        return Some(code);
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.ok()?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    body.trailers()
        .await
        .ok()
        .flatten()
        .as_ref()
        .and_then(status)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_flood_on_one_connection_is_bounded_and_other_callers_keep_working() {
    let (_coordinator, mut node) = node_with(
        "[limits]\nmax_streams_per_connection = 16\nidle_timeout = \"30s\"\n",
        Some(1024),
    )
    .await;
    let token = node.token();
    let mut flood = h2_connect(&node).await;
    assert_eq!(
        h2_call(&mut flood.send, "/grpc.health.v1.Health/Check", None).await,
        Some(0),
        "a health check answers on the connection"
    );
    // The connection task records the peer's settings right after it handled them.
    let advertised = flood.max_streams.clone();
    doorzet_testkit::eventually(
        Duration::from_secs(5),
        "SETTINGS_MAX_CONCURRENT_STREAMS of 16",
        || {
            let value = *advertised.lock().unwrap();
            async move { (value == 16).then_some(()) }
        },
    )
    .await;

    let flooding = {
        let send = flood.send.clone();
        tokio::spawn(async move {
            let calls = (0..3000).map(|_| {
                let mut send = send.clone();
                async move { h2_call(&mut send, "/doorzet.v1.NodeAdmin/WhoAmI", None).await }
            });
            futures_util::future::join_all(calls).await
        })
    };
    let legit = node.local_channel();
    for _ in 0..20 {
        node_status(legit.clone(), &token)
            .await
            .expect("another caller is served during the flood");
    }
    let outcomes = flooding.await.expect("flood");
    let refused = outcomes.iter().filter(|c| **c == Some(16)).count();
    assert!(
        refused > 2500,
        "{refused} of 3000 refused as unauthenticated"
    );
    let stderr = node.running().stderr();
    assert!(
        !stderr.contains("request refused"),
        "refusals are logged at debug level only"
    );
    drop(flood.send);
    flood.closed.abort();
}

/// HTTP/2 frames of a stream, as (type, flags).
async fn frames_of_stream<S>(stream: &mut S, id: u32, timeout: Duration) -> Vec<(u8, u8)>
where
    S: tokio::io::AsyncRead + Unpin,
{
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut header = [0u8; 9];
        match tokio::time::timeout_at(deadline, stream.read_exact(&mut header)).await {
            Ok(Ok(_)) => {}
            _ => return seen,
        }
        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let (kind, flags) = (header[3], header[4]);
        let stream_id =
            u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        if tokio::time::timeout_at(deadline, stream.read_exact(&mut payload))
            .await
            .is_err()
        {
            return seen;
        }
        if stream_id == id {
            seen.push((kind, flags));
            // HEADERS with END_STREAM, or RST_STREAM, ends the stream.
            if (kind == 1 && flags & 1 == 1) || kind == 3 {
                return seen;
            }
        }
        if kind == 7 {
            return seen; // GOAWAY
        }
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK block with `:method POST`, `:scheme https`, content-type and te, and `:path` if given.
fn header_block(path: Option<&str>) -> Vec<u8> {
    let mut block = vec![0x83, 0x87]; // :method POST, :scheme https (static table)
    if let Some(path) = path {
        block.push(0x04); // literal without indexing, name = :path (static index 4)
        block.push(path.len() as u8);
        block.extend_from_slice(path.as_bytes());
    }
    block.push(0x0f);
    block.push(0x10); // literal without indexing, name index 31 (content-type)
    block.push(16);
    block.extend_from_slice(b"application/grpc");
    block.push(0x00);
    block.push(2);
    block.extend_from_slice(b"te");
    block.push(8);
    block.extend_from_slice(b"trailers");
    block
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_without_path_is_refused_and_an_idle_connection_is_closed() {
    let (_coordinator, node) = node_with(
        "[limits]\nidle_timeout = \"2s\"\nhandshake_timeout = \"5s\"\n",
        None,
    )
    .await;
    let mut stream = tls_connect(&node).await.expect("tls");
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(4, 0, 0, &[])); // SETTINGS
    // Stream 1: a health check with a proper :path answers with a message (a DATA frame).
    out.extend(frame(
        1,
        4,
        1,
        &header_block(Some("/grpc.health.v1.Health/Check")),
    ));
    out.extend(frame(0, 1, 1, &[0, 0, 0, 0, 0]));
    stream.write_all(&out).await.expect("write");
    let answered = frames_of_stream(&mut stream, 1, Duration::from_secs(5)).await;
    assert!(
        answered.iter().any(|(kind, _)| *kind == 0),
        "control answered: {answered:?}"
    );

    // Stream 3: the same request without :path is refused: no message, the stream ends.
    let mut out = frame(1, 4, 3, &header_block(None));
    out.extend(frame(0, 1, 3, &[0, 0, 0, 0, 0]));
    stream.write_all(&out).await.expect("write");
    let refused = frames_of_stream(&mut stream, 3, Duration::from_secs(5)).await;
    assert!(!refused.is_empty(), "no answer to a request without :path");
    assert!(
        !refused.iter().any(|(kind, _)| *kind == 0),
        "a request without :path was served: {refused:?}"
    );
    if refused.iter().any(|(kind, _)| *kind == 1) {
        let body = scrape(node.admin_addr).await;
        assert!(
            body.contains(r#"service="unknown",method="unknown",code="3""#),
            "{body}"
        );
    }

    // Nothing more in flight: the server closes the connection after the idle timeout.
    assert!(
        closed_by_server(&mut stream, Duration::from_secs(10)).await,
        "an idle connection stayed open"
    );
    let body = scrape(node.admin_addr).await;
    assert!(
        value(
            &body,
            r#"doorzet_mesh_connections_idle_closed_total{listener="local"}"#
        )
        .is_some_and(|n| n >= 1.0),
        "{body}"
    );
}
