//! The doorzet coordinator at the Zorg- en Veiligheidshuis: serves the region's member directory
//! over mutual TLS, routes escalations across the nodes along the region's ladder, keeps deadlines
//! and keeps the mesh's audit log. It never stores case facts.
//!
//! # Layout
//! - [`config`]: `coordinator.toml` and its environment overrides.
//! - [`clock`]: the clock deadlines run on (moved forward in tests).
//! - [`escalations`]: the ladder at work: registrations, transitions, notifications, deadlines.
//! - [`directory_file`]: the operator's directory file and its validation.
//! - [`directory_source`]: loading that file and following its changes.
//! - [`grpc`]: the gRPC services.
//! - [`store`]: persistent state and migrations.
//! - [`error`]: the error type and its mapping to `tonic::Status`.

pub mod clock;
pub mod config;
pub mod directory_file;
pub mod directory_source;
pub mod error;
pub mod escalations;
pub mod grpc;
pub mod store;

use std::sync::Arc;

use doorzet_mesh::ReloadingTls;
use doorzet_mesh::directory::Directory;
use doorzet_mesh::identity::{ListenerKind, Verifier};
use doorzet_mesh::layers::metrics::Metrics;
use doorzet_mesh::server::{ListenerSetup, base_routes};
use doorzet_proto::v1::{
    audit_log_server::AuditLogServer, coordinator_server::CoordinatorServer,
    directory_server::DirectoryServer,
};
use doorzet_store::Database;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::CoordinatorConfig;
pub use error::Error;

/// The sockets the coordinator serves on, bound by the caller so tests never race for ports.
#[derive(Debug)]
pub struct Listeners {
    /// Mutual-TLS listener for the nodes.
    pub mesh: TcpListener,
    /// Admin listener (metrics, probes).
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the addresses in `config`.
    pub async fn bind(config: &CoordinatorConfig) -> Result<Self, Error> {
        use doorzet_mesh::server::bind;
        Ok(Self {
            mesh: bind(config.mesh.listen).await?,
            admin: bind(config.admin.listen).await?,
        })
    }
}

async fn open_audit_log(
    config: &CoordinatorConfig,
    db: Database,
) -> Result<doorzet_audit::log::AuditLog, Error> {
    let read = |field: &str, path: &std::path::Path| {
        let pem = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "audit.{field}: cannot read {}: {e}",
                path.display()
            ))
        })?;
        doorzet_audit::checkpoint::NoteSigner::from_pkcs8_pem(&config.audit.origin, &pem)
            .map_err(|e| Error::Config(format!("audit.{field}: {e}")))
    };
    let mut signer = read("signing_key", &config.audit.signing_key)?;
    if let Some(path) = &config.audit.previous_signing_key {
        let previous = read("previous_signing_key", path)?;
        tracing::warn!(previous = %previous.verifier_key(), current = %signer.verifier_key(), "audit key rotation: checkpoints are co-signed by the previous key");
        signer = signer
            .cosigned_by(previous)
            .map_err(|e| Error::Config(format!("audit.previous_signing_key: {e}")))?;
    }
    let log = doorzet_audit::log::AuditLog::open(
        db,
        signer,
        doorzet_audit::log::LogOptions::new(&config.audit.origin),
    )
    .await?;
    let (checkpoint, _) = log.checkpoint();
    tracing::info!(size = checkpoint.size, origin = %checkpoint.origin, "audit log opened");
    Ok(log)
}

/// This coordinator instance's name: host and mesh listener, the same across restarts, different
/// for two coordinators on one database.
fn instance_name(config: &CoordinatorConfig) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}/{}", config.mesh.listen)
}

/// Runs the coordinator until `shutdown`, then drains in-flight requests and returns.
pub async fn serve(
    listeners: Listeners,
    config: CoordinatorConfig,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    serve_with_clock(listeners, config, shutdown, clock::Clock::default()).await
}

/// [`serve`] with deadlines on `clock` (tests move it forward instead of sleeping).
pub async fn serve_with_clock(
    listeners: Listeners,
    config: CoordinatorConfig,
    shutdown: CancellationToken,
    clock: clock::Clock,
) -> Result<(), Error> {
    let ladder = config
        .escalations
        .as_ref()
        .map(|e| escalations::load_ladder(&e.ladder))
        .transpose()?;
    let grant_signer = config
        .escalations
        .as_ref()
        .map(|e| {
            let pem = std::fs::read(&e.grant_signing_key).map_err(|err| {
                Error::Config(format!(
                    "escalations.grant_signing_key: cannot read {}: {err}",
                    e.grant_signing_key.display()
                ))
            })?;
            doorzet_mesh::grant_signer::GrantSigner::from_pem(&pem, &e.grant_key_id)
                .map_err(|err| Error::Config(format!("escalations.grant_signing_key: {err}")))
        })
        .transpose()?;
    doorzet_mesh::connections::ensure_file_limit(&config.limits, 1);
    let tls = ReloadingTls::load_for(config.tls.clone(), config.org)?;
    tls.spawn_watcher(shutdown.clone());
    let db = Database::connect(
        &config.storage.url,
        &[&store::MIGRATIONS, &doorzet_audit::store::MIGRATIONS],
    )
    .await?;
    let metrics = Metrics::new();
    let audit = open_audit_log(&config, db.clone()).await?;
    let verifier_key = audit.verifier_key();

    let directory = Directory::new(None);
    let (snapshot, sha) =
        directory_source::load(&config.directory, &db, config.org, &verifier_key).await?;
    tracing::info!(
        version = snapshot.version(),
        members = snapshot.members.len(),
        region = %snapshot.wire.region,
        "directory loaded"
    );
    metrics.directory_members.set(snapshot.members.len() as i64);
    directory.replace(snapshot);
    let file_metrics = directory_source::FileMetrics::register(&metrics);
    file_metrics.applied();
    directory_source::Watcher {
        source: config.directory.clone(),
        db: db.clone(),
        own_org: config.org,
        audit_verifier_key: verifier_key,
        directory: directory.clone(),
        metrics: metrics.clone(),
        file_metrics,
    }
    .spawn(sha, shutdown.clone());

    let engine = match (config.escalations.clone(), ladder, grant_signer) {
        (Some(settings), Some(ladder), Some(grants)) => {
            let peers = escalations::peers::Peers::new(
                tls.clone(),
                directory.clone(),
                audit.clone(),
                settings.participant_lookup_timeout,
                settings.notify_timeout,
                settings.mandate_cache_ttl,
            );
            tracing::info!(region = %ladder.region.id, tiers = ladder.top(), "escalation ladder loaded");
            let engine = escalations::Engine::new(
                db.clone(),
                ladder,
                config.org,
                peers,
                grants,
                settings,
                clock,
                audit.clone(),
                instance_name(&config),
                escalations::EngineMetrics::register(&metrics),
            );
            engine.spawn_workers(shutdown.clone());
            Some(engine)
        }
        _ => None,
    };
    let verifier = Arc::new(Verifier::new(
        config.org,
        ListenerKind::Mesh,
        directory.clone(),
        &config.jwt,
    ));
    let max = config.limits.max_message_bytes;
    let (health, mut routes) = base_routes();
    routes
        .add_service(
            DirectoryServer::new(grpc::directory::DirectoryService::new(
                directory.clone(),
                shutdown.clone(),
            ))
            .max_decoding_message_size(max),
        )
        .add_service(
            CoordinatorServer::new(grpc::coordinator::CoordinatorService::new(engine))
                .max_decoding_message_size(max),
        )
        .add_service(
            AuditLogServer::new(grpc::audit_log::AuditLogService::new(
                audit,
                directory.clone(),
                &config.audit,
            ))
            .max_decoding_message_size(max),
        );
    for service in [
        "",
        "doorzet.v1.Directory",
        "doorzet.v1.Coordinator",
        "doorzet.v1.AuditLog",
    ] {
        health
            .set_service_status(service, tonic_health::ServingStatus::Serving)
            .await;
    }

    {
        let (tls, metrics, health, shutdown) = (
            tls.clone(),
            metrics.clone(),
            health.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {
                        doorzet_mesh::server::report_crl(&tls, &metrics, std::slice::from_ref(&health)).await;
                    }
                }
            }
        });
    }
    let readiness: doorzet_mesh::admin::Readiness = Arc::new(|| Ok(()));
    let admin = tokio::spawn(doorzet_mesh::admin::serve(
        listeners.admin,
        metrics.clone(),
        readiness,
        shutdown.clone(),
    ));
    tracing::info!(addr = ?listeners.mesh.local_addr().ok(), org = %config.org, "coordinator serving");
    let setup = ListenerSetup {
        tls,
        verifier,
        limits: config.limits.clone(),
        metrics,
    };
    let served =
        doorzet_mesh::server::serve(listeners.mesh, setup, routes.routes(), shutdown.clone()).await;
    shutdown.cancel();
    let _ = admin.await;
    db.close().await;
    served?;
    Ok(())
}
