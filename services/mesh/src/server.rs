//! The shared gRPC server: the guarded TLS accept loop of [`crate::connections`], HTTP/2 settings
//! that bound what one connection may ask, the standard layer stack, health and reflection (`v1`
//! and `v1alpha`), and graceful drain on shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::{Routes, RoutesBuilder};
use tower::ServiceBuilder;

use crate::config::Limits;
use crate::connections::{ActivityLayer, incoming};
use crate::identity::Verifier;
use crate::layers::{
    identity::IdentityLayer, metrics::Metrics, metrics::MetricsLayer, shape::ShapeLayer,
    shed::ShedLayer, timeout::TimeoutLayer, trace::TraceLayer,
};
use crate::{MeshError, ReloadingTls};

/// Returns a routes builder that already serves `grpc.health.v1.Health` and server reflection for
/// the doorzet and health descriptors, with the reporter that sets health statuses.
pub fn base_routes() -> (tonic_health::server::HealthReporter, RoutesBuilder) {
    let (reporter, health) = tonic_health::server::health_reporter();
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(doorzet_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // Both descriptor sets are compiled in; failing here is a build defect, not input.
    let v1 = reflection()
        .build_v1()
        .expect("compiled-in descriptor sets are valid");
    // Older grpcurl, Postman and Python's grpcio-reflection speak only v1alpha.
    let v1alpha = reflection()
        .build_v1alpha()
        .expect("compiled-in descriptor sets are valid");
    let mut builder = RoutesBuilder::default();
    builder
        .add_service(health)
        .add_service(v1)
        .add_service(v1alpha);
    (reporter, builder)
}

/// Health service name that reports the certificate revocation lists' state.
pub const CRL_HEALTH_SERVICE: &str = "doorzet.crl";

/// Reports the revocation lists' state: `doorzet_mesh_crl_*` metrics and health `doorzet.crl`
/// (SERVING when current or none configured, NOT_SERVING when one is past its next update).
pub async fn report_crl(
    tls: &ReloadingTls,
    metrics: &Metrics,
    health: &[tonic_health::server::HealthReporter],
) {
    let status = tls.crl_status(std::time::SystemTime::now());
    let is_stale = status.is_some_and(|s| s.is_stale);
    if let Some(status) = status {
        metrics.crl_stale.set(i64::from(is_stale));
        let next = status
            .next_update
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        metrics.crl_next_update_seconds.set(next as i64);
    }
    let serving = if is_stale {
        tonic_health::ServingStatus::NotServing
    } else {
        tonic_health::ServingStatus::Serving
    };
    for reporter in health {
        reporter
            .set_service_status(CRL_HEALTH_SERVICE, serving)
            .await;
    }
}

/// Binds a listening socket; the error names the address and counts as configuration.
pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, MeshError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| MeshError::Invalid(format!("cannot listen on {addr}: {e}")))
}

/// Everything one listener needs besides its socket and routes.
#[derive(Debug, Clone)]
pub struct ListenerSetup {
    /// Certificates, reloaded on change.
    pub tls: Arc<ReloadingTls>,
    /// Identity checks for this listener.
    pub verifier: Arc<Verifier>,
    /// Request limits.
    pub limits: Limits,
    /// Where request metrics go.
    pub metrics: Metrics,
}

/// Serves `routes` on `listener` over TLS until `shutdown`, then drains in-flight requests for at
/// most `limits.drain_timeout`.
pub async fn serve(
    listener: TcpListener,
    setup: ListenerSetup,
    routes: Routes,
    shutdown: CancellationToken,
) -> Result<(), MeshError> {
    let ListenerSetup {
        tls,
        verifier,
        limits,
        metrics,
    } = setup;
    let kind = verifier.listener();
    let incoming = incoming(
        listener,
        tls,
        kind,
        &limits,
        metrics.clone(),
        shutdown.clone(),
    );
    let layers = ServiceBuilder::new()
        // Outermost, so the span covers refusals by every layer below.
        .layer(TraceLayer)
        // Before the limits, so refused, shed and timed-out requests are counted too.
        .layer(MetricsLayer::new(metrics))
        // Before any work: what is not a gRPC call of our shape costs nothing more.
        .layer(ShapeLayer::new(limits.max_message_bytes))
        // Before identity: verifying a token is work a slow client must not stretch.
        .layer(TimeoutLayer::new(limits.request_timeout))
        // Before identity, so an overload is refused before any crypto is spent on it.
        .layer(ShedLayer::new(limits.max_concurrent_requests))
        // Handlers may rely on `Caller` being present.
        .layer(IdentityLayer::new(verifier))
        // After identity: only accepted requests keep a connection from its idle timeout.
        .layer(ActivityLayer)
        .into_inner();
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .max_concurrent_streams(limits.max_streams_per_connection)
        // Rapid-reset floods: a connection that resets or errors streams at this rate is closed.
        .http2_max_pending_accept_reset_streams(Some(limits.max_streams_per_connection as usize))
        .http2_max_local_error_reset_streams(Some(1024))
        .http2_max_header_list_size(16 * 1024)
        .layer(layers)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
    let drain_limit = async {
        shutdown.cancelled().await;
        tokio::time::sleep(limits.drain_timeout).await;
    };
    tokio::select! {
        result = server => result.map_err(MeshError::from),
        () = drain_limit => {
            tracing::warn!(limit = ?limits.drain_timeout, "drain timeout passed; closing remaining connections");
            Ok(())
        }
    }
}
