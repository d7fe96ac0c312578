//! The shared gRPC server: a TLS accept loop that takes the current certificate for each new
//! connection, the standard layer stack, health and reflection, and graceful drain on shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::service::{Routes, RoutesBuilder};
use tower::ServiceBuilder;

use crate::config::Limits;
use crate::identity::{ListenerKind, Verifier};
use crate::layers::{
    identity::IdentityLayer, metrics::Metrics, metrics::MetricsLayer, shed::ShedLayer,
    timeout::TimeoutLayer, trace::TraceLayer,
};
use crate::{MeshError, ReloadingTls};

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Returns a routes builder that already serves `grpc.health.v1.Health` and server reflection for
/// the doorzet and health descriptors, with the reporter that sets health statuses.
pub fn base_routes() -> (tonic_health::server::HealthReporter, RoutesBuilder) {
    let (reporter, health) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(doorzet_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        // Both descriptor sets are compiled in; failing here is a build defect, not input.
        .expect("compiled-in descriptor sets are valid");
    let mut builder = RoutesBuilder::default();
    builder.add_service(health).add_service(reflection);
    (reporter, builder)
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
    let incoming = tls_incoming(listener, tls, kind, shutdown.clone());
    let layers = ServiceBuilder::new()
        // Outermost, so the span covers refusals by every layer below.
        .layer(TraceLayer)
        // Before the limits, so shed and timed-out requests are counted too.
        .layer(MetricsLayer::new(metrics))
        // Before identity: verifying a token is work a slow client must not stretch.
        .layer(TimeoutLayer::new(limits.request_timeout))
        // Before identity, so an overload is refused before any crypto is spent on it.
        .layer(ShedLayer::new(limits.max_concurrent_requests))
        // Last before the routes: handlers may rely on `Caller` being present.
        .layer(IdentityLayer::new(verifier))
        .into_inner();
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
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

fn tls_incoming(
    listener: TcpListener,
    tls: Arc<ReloadingTls>,
    kind: ListenerKind,
    shutdown: CancellationToken,
) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Running out of file descriptors must not spin the loop.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let config = match kind {
                ListenerKind::Mesh => tls.mesh_server(),
                ListenerKind::Local => tls.local_server(),
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
