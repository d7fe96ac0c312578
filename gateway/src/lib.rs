//! The doorzet gateway: a REST/JSON API and a web console in front of an organisation's node and
//! the region's coordinator, for systems that do not speak gRPC and for people. It holds no data:
//! each request becomes a gRPC call carrying the caller's own token, so every access decision
//! stays with the node and the coordinator.

use std::future::IntoFuture;
use std::sync::Arc;

use axum::Router;
use axum::http::HeaderValue;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod api;
pub mod config;
pub mod console;
pub mod error;
pub mod http;
pub mod idempotency;
pub mod minting;
pub mod upstream;
pub mod webhooks;

pub use config::GatewayConfig;
pub use error::{Error, Problem};

use crate::api::AppState;
use crate::http::{CappedListener, Guard, HttpMetrics};
use crate::upstream::Upstreams;

/// Answers to keyed POSTs kept for retries (each a few KiB at most).
const REPLAYS_KEPT: usize = 10_000;

/// The gateway's listeners, bound before anything else starts so a taken port fails at once.
pub struct Listeners {
    /// REST/JSON.
    pub http: TcpListener,
    /// Metrics and probes.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the addresses `config` names.
    pub async fn bind(config: &GatewayConfig) -> Result<Self, Error> {
        Ok(Self {
            http: TcpListener::bind(config.http.listen).await?,
            admin: TcpListener::bind(config.admin.listen).await?,
        })
    }
}

/// The OpenAPI document of the API, as served at `/api/v1/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api::router(idempotency::Replays::new(0, 0)).1
}

/// The whole HTTP application: the API under `/api/v1` with its OpenAPI document, the console
/// under `/console` (when enabled), and the limits.
pub fn app(state: AppState, guard: Guard) -> Router {
    let (api, doc) = api::router(idempotency::Replays::new(
        REPLAYS_KEPT,
        guard.max_body_bytes(),
    ));
    let doc = Arc::new(
        doc.to_pretty_json()
            .expect("the OpenAPI document serialises"),
    );
    let api = api.route(
        "/openapi.json",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    )],
                    doc.as_str().to_owned(),
                )
            }
        }),
    );
    let mut router = Router::new().nest("/api/v1", api.with_state(state.clone()));
    if state.console.enabled {
        router = router
            .nest("/console", console::router().with_state(state))
            .route(
                "/",
                axum::routing::get(|| async { axum::response::Redirect::to("/console") }),
            );
    }
    router
        .fallback(|| async {
            Problem::new(
                tonic::Code::NotFound,
                "no such resource; the API is under /api/v1",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            guard.clone(),
            http::guard,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(guard.max_body_bytes()))
}

/// Runs the gateway until `shutdown`, then drains in-flight requests.
pub async fn serve(
    listeners: Listeners,
    config: GatewayConfig,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let tls = doorzet_mesh::ReloadingTls::load_for(config.tls.clone(), config.org)?;
    tls.spawn_watcher(shutdown.clone());
    let upstreams = Upstreams::connect(&config, tls)?;
    let metrics = doorzet_mesh::layers::metrics::Metrics::new();
    let http_metrics = HttpMetrics::register(&metrics);
    let guard = Guard::new(&config.limits, http_metrics.clone());
    http::spawn_rate_limiter_cleanup(&guard, shutdown.clone());
    let webhooks = webhooks::Webhooks::start(&config, upstreams.clone(), shutdown.clone()).await?;
    let state = AppState {
        upstreams,
        webhooks,
        console: Arc::new(config.console.clone()),
        oidc: console::oidc::Oidc::load(&config)?,
    };
    let app = app(state, guard);
    let addr = listeners.http.local_addr()?;
    tracing::info!(%addr, org = %config.org, "gateway serving");
    let listener = CappedListener::new(listeners.http, config.limits.max_connections, http_metrics);
    let admin = tokio::spawn(doorzet_mesh::admin::serve(
        listeners.admin,
        metrics,
        Arc::new(|| Ok(())),
        shutdown.clone(),
    ));
    let drain = config.limits.drain_timeout;
    let stopping = shutdown.clone();
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<http::PeerAddr>(),
    )
    .with_graceful_shutdown(async move { stopping.cancelled().await })
    .into_future();
    tokio::select! {
        served = server => served?,
        _ = async {
            shutdown.cancelled().await;
            tokio::time::sleep(drain).await;
        } => tracing::warn!("drain timeout passed; closing the remaining connections"),
    }
    admin.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The committed `gateway/openapi.json` is what partners build clients from: it must be the
    /// document the code generates.
    #[test]
    fn the_committed_openapi_document_is_the_generated_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
        let committed = std::fs::read_to_string(&path).expect("gateway/openapi.json");
        let generated = super::openapi().to_pretty_json().expect("serialises");
        assert!(
            committed.trim_end() == generated.trim_end(),
            "gateway/openapi.json is out of date; regenerate it with\n  cargo run -p doorzet-gateway -- --openapi > gateway/openapi.json"
        );
    }
}
