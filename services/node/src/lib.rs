//! The doorzet partner node: one per organisation. It serves its own mandates and consented case
//! facts to the mesh (mutual TLS), and a local API to the organisation's own systems and staff
//! (JWT). It keeps a verified copy of the region's directory from the coordinator.
//!
//! # Layout
//! - [`audit_watch`]: verifying the coordinator's audit log.
//! - [`config`]: `node.toml` and its environment overrides.
//! - [`directory_sync`]: fetching, storing and following the directory.
//! - [`case_cache`]: cases as `QueryFacts` reads them, kept between writes.
//! - [`facts`]: `QueryFacts` as a decision: grant, disclosure rule, disclosure-log record.
//! - [`grant`]: checking a participation grant's signature and claims.
//! - [`gossip`]: members comparing the audit log's checkpoints on every call between them.
//! - [`disclosure_audit`]: appending the disclosure log's metadata to the coordinator's audit log.
//! - [`ids`]: identifiers the node makes and the shape of a case reference.
//! - [`sealed`]: the BSN sealed at rest and the subject pseudonym.
//! - [`grpc`]: the gRPC services on the mesh and local listeners.
//! - [`store`]: persistent state and migrations.
//! - [`error`]: the error type and its mapping to `tonic::Status`.

pub mod audit_watch;
pub mod case_cache;
pub mod config;
pub mod directory_sync;
pub mod disclosure_audit;
pub mod error;
pub mod facts;
pub mod gossip;
pub mod grant;
pub mod grpc;
pub mod ids;
pub mod sealed;
pub mod store;

use std::sync::Arc;
use std::time::SystemTime;

use doorzet_mesh::ReloadingTls;
use doorzet_mesh::directory::Directory;
use doorzet_mesh::identity::{ListenerKind, Verifier};
use doorzet_mesh::layers::metrics::Metrics;
use doorzet_mesh::server::{ListenerSetup, base_routes};
use doorzet_proto::v1::{
    node_admin_server::NodeAdminServer, partner_node_server::PartnerNodeServer,
};
use doorzet_store::Database;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::NodeConfig;
pub use error::Error;

/// The sockets the node serves on, bound by the caller so tests never race for ports.
#[derive(Debug)]
pub struct Listeners {
    /// Mutual-TLS listener for the coordinator and other participants.
    pub mesh: TcpListener,
    /// Listener for the organisation's own systems and staff.
    pub local: TcpListener,
    /// Admin listener (metrics, probes).
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the addresses in `config`.
    pub async fn bind(config: &NodeConfig) -> Result<Self, Error> {
        use doorzet_mesh::server::bind;
        Ok(Self {
            mesh: bind(config.mesh.listen).await?,
            local: bind(config.local.listen).await?,
            admin: bind(config.admin.listen).await?,
        })
    }
}

/// How long a stopping node waits for an audit append that is under way.
const SHUTDOWN_APPEND: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs the node until `shutdown`, then drains in-flight requests and returns.
pub async fn serve(
    listeners: Listeners,
    config: NodeConfig,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    // Two listeners (mesh and local) hold connections.
    doorzet_mesh::connections::ensure_file_limit(&config.limits, 2);
    let tls = ReloadingTls::load_for(config.tls.clone(), config.org)?;
    tls.spawn_watcher(shutdown.clone());
    let db = Database::connect(&config.storage.url, &[&store::MIGRATIONS]).await?;
    let metrics = Metrics::new();
    let directory = Directory::new(Some(config.directory.max_age));
    let coordinator_channel = doorzet_mesh::client::member_channel(
        tls.clone(),
        &config.coordinator.endpoint,
        config.coordinator.org,
        directory.clone(),
        config.limits.request_timeout,
    )?;

    let (health, mut mesh_routes) = base_routes();
    let (local_health, mut local_routes) = base_routes();
    let (rollbacks, save_failures) = directory_sync::DirectorySync::counters(&metrics);
    let sync = directory_sync::DirectorySync {
        directory: directory.clone(),
        db: db.clone(),
        coordinator: coordinator_channel.clone(),
        coordinator_org: config.coordinator.org,
        health: vec![health.clone(), local_health],
        metrics: metrics.clone(),
        rollbacks,
        save_failures,
        tls: tls.clone(),
    };
    sync.restore().await?;
    sync.report().await;
    sync.clone().spawn(&config, shutdown.clone());
    let audit = audit_watch::AuditWatch::new(
        db.clone(),
        coordinator_channel.clone(),
        sync.clone(),
        health.clone(),
        &metrics,
        &config.audit,
    )
    .await?;
    audit
        .clone()
        .spawn(config.audit.check_interval, shutdown.clone());
    let audit_wake = Arc::new(tokio::sync::Notify::new());
    let refused = prometheus_client::metrics::counter::Counter::default();
    metrics.register(|registry| {
        registry.register(
            "node_disclosure_records_refused_by_audit_log",
            "Disclosure records the coordinator's audit log refused as invalid (kept in the node's log only)",
            refused.clone(),
        );
    });
    let repeated = prometheus_client::metrics::counter::Counter::default();
    metrics.register(|registry| {
        registry.register(
            "node_notifications_repeated",
            "Notifications the coordinator delivered again (acknowledged, not stored twice)",
            repeated.clone(),
        );
    });
    let disclosure_writer = store::disclosures::Writer::start(db.clone()).await?;
    let appender = disclosure_audit::Appender {
        db: db.clone(),
        coordinator: coordinator_channel.clone(),
        org: config.org,
        wake: audit_wake.clone(),
        refused,
        writer: disclosure_writer.clone(),
    }
    .spawn(shutdown.clone());
    let flush_writer = disclosure_writer.clone();

    let max = config.limits.max_message_bytes;
    let case_cache = case_cache::CaseCache::default();
    mesh_routes.add_service(
        PartnerNodeServer::new(grpc::partner_node::PartnerNodeService {
            db: db.clone(),
            cases: case_cache.clone(),
            grants: grant::Verified::default(),
            disclosures: disclosure_writer.clone(),
            directory: directory.clone(),
            audit_wake,
            org: config.org,
            audit: audit.clone(),
            repeated,
        })
        .max_decoding_message_size(max),
    );
    local_routes.add_service(
        NodeAdminServer::new(grpc::node_admin::NodeAdminService::new(
            &config,
            directory.clone(),
            audit.clone(),
            db.clone(),
            tls.clone(),
            sealed::BsnKeys::load(&config.cases)?,
            case_cache,
            coordinator_channel.clone(),
            disclosure_writer,
        ))
        .max_decoding_message_size(max),
    );
    let readiness_directory = directory.clone();
    let readiness: doorzet_mesh::admin::Readiness = Arc::new(move || {
        readiness_directory
            .usable(SystemTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    let admin = tokio::spawn(doorzet_mesh::admin::serve(
        listeners.admin,
        metrics.clone(),
        readiness,
        shutdown.clone(),
    ));

    let setup = |kind| ListenerSetup {
        tls: tls.clone(),
        verifier: Arc::new(Verifier::new(
            config.org,
            kind,
            directory.clone(),
            &config.jwt,
        )),
        limits: config.limits.clone(),
        metrics: metrics.clone(),
    };
    tracing::info!(org = %config.org, mesh = ?listeners.mesh.local_addr().ok(), local = ?listeners.local.local_addr().ok(), "node serving");
    let mesh = doorzet_mesh::server::serve(
        listeners.mesh,
        setup(ListenerKind::Mesh),
        mesh_routes.routes(),
        shutdown.clone(),
    );
    let local = doorzet_mesh::server::serve(
        listeners.local,
        setup(ListenerKind::Local),
        local_routes.routes(),
        shutdown.clone(),
    );
    let (mesh, local) = tokio::join!(mesh, local);
    shutdown.cancel();
    // What the audit log acknowledged is marked before the database closes: an append that is
    // under way ends first, then the mark goes into the table. Without this, records appended
    // just before a stop were appended a second time after the restart.
    if tokio::time::timeout(SHUTDOWN_APPEND, appender)
        .await
        .is_err()
    {
        tracing::warn!(
            "an audit append was still under way at shutdown; its records are sent again after the restart"
        );
    }
    if let Err(e) = flush_writer.flush().await {
        tracing::warn!(error = %e, "the disclosure log's last marks were not stored; records may be appended again after the restart");
    }
    let _ = admin.await;
    db.close().await;
    mesh?;
    local?;
    Ok(())
}
