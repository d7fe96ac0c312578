//! What stands between the network and the handlers: a connection cap on the listener, and
//! middleware for the request limits (concurrency, per-address rate, time), metrics labelled by
//! route template (never the raw path), and the `API-Version` header.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Code;

use crate::api::API_VERSION;
use crate::config::HttpLimits;
use crate::error::Problem;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteOnly {
    method: String,
    route: String,
}

/// The gateway's own metrics, registered as `doorzet_gateway_*`.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: Family<RouteLabels, Counter>,
    latency: Family<RouteOnly, Histogram, fn() -> Histogram>,
    refused: Family<RefusedLabels, Counter>,
    connections_open: Gauge,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusedLabels {
    reason: &'static str,
}

impl HttpMetrics {
    /// Makes the families and registers them with `metrics`.
    pub fn register(metrics: &doorzet_mesh::layers::metrics::Metrics) -> Self {
        let this = Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
            refused: Family::default(),
            connections_open: Gauge::default(),
        };
        metrics.register(|r| {
            let r = r.sub_registry_with_prefix("doorzet_gateway");
            r.register(
                "http_requests",
                "HTTP requests by method, route template and status",
                this.requests.clone(),
            );
            r.register(
                "http_request_duration_seconds",
                "HTTP request duration by method and route template",
                this.latency.clone(),
            );
            r.register(
                "refused",
                "Requests or connections refused by a limit, by reason",
                this.refused.clone(),
            );
            r.register(
                "connections_open",
                "HTTP connections open",
                this.connections_open.clone(),
            );
        });
        this
    }
}

/// The request limits, shared by all requests.
#[derive(Clone)]
pub struct Guard {
    limits: HttpLimits,
    in_flight: Arc<Semaphore>,
    per_address: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    metrics: HttpMetrics,
}

impl Guard {
    /// The guard for `limits`, counting into `metrics`.
    pub fn new(limits: &HttpLimits, metrics: HttpMetrics) -> Self {
        let rate = NonZeroU32::new(limits.requests_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(limits.burst).unwrap_or(NonZeroU32::MIN);
        Self {
            limits: limits.clone(),
            in_flight: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            per_address: Arc::new(RateLimiter::keyed(
                Quota::per_second(rate).allow_burst(burst),
            )),
            metrics,
        }
    }

    /// The largest request body accepted.
    pub fn max_body_bytes(&self) -> usize {
        self.limits.max_body_bytes
    }

    fn refuse(&self, reason: &'static str, problem: Problem) -> Response {
        self.metrics
            .refused
            .get_or_create(&RefusedLabels { reason })
            .inc();
        problem.into_response()
    }
}

/// Applies the limits, measures the request under its route template, and sets `API-Version`.
pub async fn guard(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let peer = request
        .extensions()
        .get::<ConnectInfo<PeerAddr>>()
        .map(|c| c.0.0.ip());
    let mut response = match run(&guard, peer, request, next).await {
        Ok(r) | Err(r) => r,
    };
    response
        .headers_mut()
        .insert("api-version", HeaderValue::from_static(API_VERSION));
    guard
        .metrics
        .requests
        .get_or_create(&RouteLabels {
            method: method.clone(),
            route: route.clone(),
            status: response.status().as_u16(),
        })
        .inc();
    guard
        .metrics
        .latency
        .get_or_create(&RouteOnly { method, route })
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn run(
    guard: &Guard,
    peer: Option<IpAddr>,
    request: Request,
    next: Next,
) -> Result<Response, Response> {
    if let Some(ip) = peer
        && guard.per_address.check_key(&ip).is_err()
    {
        let mut r = guard.refuse(
            "rate",
            Problem::new(
                Code::ResourceExhausted,
                "too many requests from this address; retry after a second",
            ),
        );
        r.headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
        return Err(r);
    }
    let Ok(_permit) = guard.in_flight.clone().try_acquire_owned() else {
        return Err(guard.refuse(
            "concurrency",
            Problem::new(
                Code::Unavailable,
                "the gateway is at its request limit; retry",
            )
            .with_status(StatusCode::SERVICE_UNAVAILABLE),
        ));
    };
    match tokio::time::timeout(guard.limits.request_timeout, next.run(request)).await {
        Ok(response) => Ok(response),
        Err(_) => Err(guard.refuse(
            "timeout",
            Problem::new(Code::DeadlineExceeded, "the request took too long"),
        )),
    }
}

/// Sheds memory the rate limiter keeps for addresses that went quiet.
pub fn spawn_rate_limiter_cleanup(guard: &Guard, shutdown: tokio_util::sync::CancellationToken) {
    let limiter = guard.per_address.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    limiter.retain_recent();
                    limiter.shrink_to_fit();
                }
            }
        }
    });
}

/// The client's address, as the capped listener accepted it.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, CappedListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, CappedListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// A listener that holds at most a fixed number of connections; beyond it a new connection is
/// closed at once, while established ones keep working.
pub struct CappedListener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    metrics: HttpMetrics,
}

impl CappedListener {
    /// Caps `inner` at `max` connections.
    pub fn new(inner: TcpListener, max: usize, metrics: HttpMetrics) -> Self {
        Self {
            inner,
            slots: Arc::new(Semaphore::new(max)),
            metrics,
        }
    }
}

impl axum::serve::Listener for CappedListener {
    type Io = CappedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file handles and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            match self.slots.clone().try_acquire_owned() {
                Ok(permit) => {
                    let _ = stream.set_nodelay(true);
                    self.metrics.connections_open.inc();
                    return (
                        CappedStream {
                            stream,
                            _permit: permit,
                            open: self.metrics.connections_open.clone(),
                        },
                        addr,
                    );
                }
                Err(_) => {
                    self.metrics
                        .refused
                        .get_or_create(&RefusedLabels {
                            reason: "connections",
                        })
                        .inc();
                    drop(stream);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection holding one of the listener's slots until it closes.
pub struct CappedStream {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Drop for CappedStream {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl AsyncRead for CappedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CappedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
