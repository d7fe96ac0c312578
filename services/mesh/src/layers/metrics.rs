//! Request metrics in Prometheus form: counts by service, method, final gRPC status and peer
//! organisation kind, and latency histograms. Labels come from a closed set: the contract's methods
//! (anything else is `unknown`), status codes and organisation kinds, so nothing a caller sends, and
//! no person id, organisation id or case data, ever becomes a label.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::body::{Outcome, on_finish};
use super::rpc_labels;

/// Where the identity layer, which runs inside this one, leaves the caller's organisation kind.
#[derive(Debug, Clone, Default)]
pub struct PeerKindSlot(Arc<std::sync::OnceLock<&'static str>>);

impl PeerKindSlot {
    /// Records the peer kind label; later calls are ignored.
    pub fn set(&self, kind: &'static str) {
        let _ = self.0.set(kind);
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    service: &'static str,
    method: &'static str,
    code: &'static str,
    peer_kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    service: &'static str,
    method: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    listener: &'static str,
    reason: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// The metrics of one process, registered once and shared by its listeners.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<std::sync::Mutex<Registry>>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    /// Age of the directory copy in seconds (nodes), or since the file was loaded (coordinator).
    pub directory_age_seconds: Gauge<i64>,
    /// Members in the current directory copy.
    pub directory_members: Gauge<i64>,
    /// 1 when a configured revocation list is past its next update, 0 when all are current.
    pub crl_stale: Gauge<i64>,
    /// The earliest next update of the configured revocation lists (Unix time).
    pub crl_next_update_seconds: Gauge<i64>,
    connections_open: Family<ListenerLabels, Gauge>,
    connections_refused: Family<RefusedLabels, Counter>,
    connections_idle_closed: Family<ListenerLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Makes and registers the metric families as `doorzet_mesh_*`; other crates register theirs
    /// as `doorzet_<crate>_*` through [`Metrics::register`].
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("doorzet");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: Family<LatencyLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        let directory_age_seconds = Gauge::<i64>::default();
        let directory_members = Gauge::<i64>::default();
        registry.register("mesh_requests", "gRPC requests handled", requests.clone());
        registry.register(
            "mesh_request_duration_seconds",
            "gRPC request latency until the stream's final status",
            latency.clone(),
        );
        registry.register(
            "mesh_directory_age_seconds",
            "Age of the directory copy in use",
            directory_age_seconds.clone(),
        );
        registry.register(
            "mesh_directory_members",
            "Members in the directory copy in use",
            directory_members.clone(),
        );
        let crl_stale = Gauge::<i64>::default();
        let crl_next_update_seconds = Gauge::<i64>::default();
        registry.register(
            "mesh_crl_stale",
            "1 when a configured certificate revocation list is past its next update",
            crl_stale.clone(),
        );
        registry.register(
            "mesh_crl_next_update_timestamp_seconds",
            "Earliest next update of the configured certificate revocation lists",
            crl_next_update_seconds.clone(),
        );
        let connections_open = Family::<ListenerLabels, Gauge>::default();
        let connections_refused = Family::<RefusedLabels, Counter>::default();
        let connections_idle_closed = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "mesh_connections",
            "Connections open, by listener",
            connections_open.clone(),
        );
        registry.register(
            "mesh_connections_refused",
            "Connections closed before serving: at a cap, or a failed or late TLS handshake",
            connections_refused.clone(),
        );
        registry.register(
            "mesh_connections_idle_closed",
            "Connections closed after sending no accepted request for the idle or handshake timeout",
            connections_idle_closed.clone(),
        );
        Self {
            registry: Arc::new(std::sync::Mutex::new(registry)),
            requests,
            latency,
            directory_age_seconds,
            directory_members,
            crl_stale,
            crl_next_update_seconds,
            connections_open,
            connections_refused,
            connections_idle_closed,
        }
    }

    /// Lets another crate register its own metrics in the same registry.
    pub fn register(&self, f: impl FnOnce(&mut Registry)) {
        f(&mut self.registry.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Encodes every metric in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    pub(crate) fn connection_opened(&self, listener: &'static str) {
        self.connections_open
            .get_or_create(&ListenerLabels { listener })
            .inc();
    }

    pub(crate) fn connection_closed(&self, listener: &'static str) {
        self.connections_open
            .get_or_create(&ListenerLabels { listener })
            .dec();
    }

    pub(crate) fn connection_refused(&self, listener: &'static str, reason: &'static str) {
        self.connections_refused
            .get_or_create(&RefusedLabels { listener, reason })
            .inc();
    }

    pub(crate) fn connection_idle_closed(&self, listener: &'static str) {
        self.connections_idle_closed
            .get_or_create(&ListenerLabels { listener })
            .inc();
    }

    fn observe(
        &self,
        labels: (&'static str, &'static str),
        code: &'static str,
        peer_kind: &'static str,
        seconds: f64,
    ) {
        let (service, method) = labels;
        self.requests
            .get_or_create(&RequestLabels {
                service,
                method,
                code,
                peer_kind,
            })
            .inc();
        self.latency
            .get_or_create(&LatencyLabels { service, method })
            .observe(seconds);
    }
}

/// Wraps services in [`Measure`].
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    metrics: Metrics,
}

impl MetricsLayer {
    /// Makes the layer recording into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S> tower_layer::Layer<S> for MetricsLayer {
    type Service = Measure<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Measure {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// Service that records each request's outcome and latency.
#[derive(Debug, Clone)]
pub struct Measure<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, B> tower_service::Service<http::Request<B>> for Measure<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let labels = rpc_labels(req.uri().path());
        let slot = PeerKindSlot::default();
        req.extensions_mut().insert(slot.clone());
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let response = fut.await?;
            Ok(on_finish(response, move |outcome: Outcome| {
                let peer_kind = slot.0.get().copied().unwrap_or("unidentified");
                metrics.observe(
                    labels,
                    outcome.label(),
                    peer_kind,
                    started.elapsed().as_secs_f64(),
                );
            }))
        })
    }
}
