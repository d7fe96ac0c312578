//! Keeps the node's directory copy fresh: follows the coordinator's `WatchMembers` stream, so a new
//! directory (a removal, a revocation) is in force within milliseconds of the coordinator applying
//! it, and fetches it every refresh interval as the fallback. Each copy is verified, swapped in, and
//! stored as the last good copy (a failed save is logged and counted; the copy is in force anyway).
//! A copy with a lower version than the one in force is refused and counted as a rollback. When the
//! coordinator is unreachable the last good copy stays in force until it passes
//! `directory.max_age`; health and metrics show its age throughout.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use doorzet_mesh::Snapshot;
use doorzet_mesh::directory::Directory;
use doorzet_mesh::layers::metrics::Metrics;
use doorzet_mesh::log_throttle::Throttle;
use doorzet_proto::v1::directory_client::DirectoryClient;
use doorzet_proto::v1::{self};
use doorzet_store::Database;
use prometheus_client::metrics::counter::Counter;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::config::NodeConfig;
use crate::{Error, store};

/// Services whose health follows the directory's usability.
pub const SERVICES: [&str; 3] = ["", "doorzet.v1.PartnerNode", "doorzet.v1.NodeAdmin"];

/// Everything the refresh loop needs.
#[derive(Debug, Clone)]
pub struct DirectorySync {
    /// The directory the listeners consult.
    pub directory: Arc<Directory>,
    /// The database holding the last good copy.
    pub db: Database,
    /// Channel to the coordinator.
    pub coordinator: Channel,
    /// The coordinator's expected organisation id.
    pub coordinator_org: doorzet_domain::Oin,
    /// Health reporters (one per listener) whose statuses follow the directory.
    pub health: Vec<HealthReporter>,
    /// Metrics for the directory's age and size.
    pub metrics: Metrics,
    /// Directories refused because their version was lower than the copy in force.
    pub rollbacks: Counter,
    /// Directories in force that could not be saved as the last good copy.
    pub save_failures: Counter,
    /// The node's certificates and revocation lists, whose state is reported with the directory's.
    pub tls: Arc<doorzet_mesh::ReloadingTls>,
}

impl DirectorySync {
    /// Loads the stored copy, if any, so a restarted node serves at once.
    pub async fn restore(&self) -> Result<(), Error> {
        if let Some((wire, fetched_at)) = store::directory_copy::load(&self.db).await? {
            match Snapshot::from_pb(wire, fetched_at) {
                Ok(snapshot) => {
                    tracing::info!(
                        version = snapshot.version(),
                        "restored the last good directory copy"
                    );
                    self.directory.replace(snapshot);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "stored directory copy is invalid; waiting for a fresh one")
                }
            }
        }
        Ok(())
    }

    /// Registers the directory's counters as `doorzet_node_directory_*`.
    pub fn counters(metrics: &Metrics) -> (Counter, Counter) {
        let (rollbacks, save_failures) = (Counter::default(), Counter::default());
        metrics.register(|r| {
            r.register(
                "node_directory_rollbacks_refused",
                "Directories refused because their version was lower than the copy in force",
                rollbacks.clone(),
            );
            r.register(
                "node_directory_save_failures",
                "Directories in force that could not be saved as the last good copy",
                save_failures.clone(),
            );
        });
        (rollbacks, save_failures)
    }

    /// Fetches, verifies, stores and swaps in the coordinator's directory once.
    pub async fn refresh(&self) -> Result<u64, String> {
        let mut client = DirectoryClient::with_interceptor(
            self.coordinator.clone(),
            doorzet_mesh::telemetry::propagate,
        );
        let wire = client
            .list_members(v1::ListMembersRequest {})
            .await
            .map_err(|s| format!("coordinator answered {:?}: {}", s.code(), s.message()))?
            .into_inner();
        self.apply(wire).await
    }

    /// Follows the coordinator's `WatchMembers` stream until it ends; returns why it ended and
    /// whether it delivered anything.
    async fn watch_once(&self) -> (String, bool) {
        let mut client = DirectoryClient::with_interceptor(
            self.coordinator.clone(),
            doorzet_mesh::telemetry::propagate,
        );
        let mut stream = match client.watch_members(v1::WatchMembersRequest {}).await {
            Ok(response) => response.into_inner(),
            Err(s) => return (format!("{:?}: {}", s.code(), s.message()), false),
        };
        let mut delivered = false;
        loop {
            match stream.message().await {
                Ok(Some(wire)) => {
                    delivered = true;
                    match self.apply(wire).await {
                        Ok(_) => self.report().await,
                        Err(e) => tracing::warn!(error = %e, "pushed directory refused"),
                    }
                }
                Ok(None) => return ("the coordinator ended the stream".into(), delivered),
                Err(s) => return (format!("{:?}: {}", s.code(), s.message()), delivered),
            }
        }
    }

    /// Verifies, stores and swaps in one directory from the coordinator.
    pub async fn apply(&self, wire: v1::ListMembersResponse) -> Result<u64, String> {
        let now = SystemTime::now();
        let snapshot =
            Snapshot::from_pb(wire, now).map_err(|e| format!("invalid directory: {e}"))?;
        if snapshot.coordinator != self.coordinator_org {
            return Err(format!(
                "directory names coordinator {}, configured {}",
                snapshot.coordinator, self.coordinator_org
            ));
        }
        if let Some(current) = self.directory.current()
            && snapshot.version() < current.version()
        {
            self.rollbacks.inc();
            return Err(format!(
                "coordinator served directory version {} after {}: a rollback; keeping the newer copy",
                snapshot.version(),
                current.version()
            ));
        }
        let version = snapshot.version();
        let wire = snapshot.wire.clone();
        // In force first: a revocation must not wait for the disk.
        self.directory.replace(snapshot);
        if let Err(e) = store::directory_copy::save(&self.db, &wire, now).await {
            static SAVE_FAILED: Throttle = Throttle::per(Duration::from_secs(60));
            self.save_failures.inc();
            if let Some(suppressed) = SAVE_FAILED.allow() {
                tracing::error!(error = %e, suppressed, "directory in force but not saved as the last good copy");
            }
        }
        Ok(version)
    }

    /// Updates health and metrics from the current copy's age.
    pub async fn report(&self) {
        let now = SystemTime::now();
        let status = match self.directory.usable(now) {
            Ok(_) => ServingStatus::Serving,
            Err(_) => ServingStatus::NotServing,
        };
        if let Some(current) = self.directory.current() {
            self.metrics
                .directory_age_seconds
                .set(current.age(now).as_secs() as i64);
            self.metrics
                .directory_members
                .set(current.members.len() as i64);
        }
        for reporter in &self.health {
            for service in SERVICES {
                reporter.set_service_status(service, status).await;
            }
        }
        doorzet_mesh::server::report_crl(&self.tls, &self.metrics, &self.health).await;
    }

    /// Refreshes every `config.directory.refresh_interval` until `shutdown`. Health and metrics
    /// follow the copy's age on their own tick, so they turn when `max_age` passes even while a
    /// refresh is stuck on an unreachable coordinator.
    pub fn spawn(self, config: &NodeConfig, shutdown: CancellationToken) {
        let interval = config.directory.refresh_interval;
        let reporter = self.clone();
        let report_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval.min(Duration::from_secs(1)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = report_shutdown.cancelled() => return,
                    _ = tick.tick() => reporter.report().await,
                }
            }
        });
        let watcher = self.clone();
        let watch_shutdown = shutdown.clone();
        tokio::spawn(async move {
            static WATCH_ENDED: Throttle = Throttle::per(Duration::from_secs(60));
            let mut backoff = Duration::from_secs(1);
            loop {
                let (why, delivered) = tokio::select! {
                    _ = watch_shutdown.cancelled() => return,
                    ended = watcher.watch_once() => ended,
                };
                if delivered {
                    backoff = Duration::from_secs(1);
                }
                if let Some(suppressed) = WATCH_ENDED.allow() {
                    tracing::info!(reason = %why, suppressed, retry_in = ?backoff, "directory watch ended; polling meanwhile");
                }
                tokio::select! {
                    _ = watch_shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        });
        tokio::spawn(async move {
            static REFRESH_FAILED: Throttle = Throttle::per(Duration::from_secs(60));
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_version = None;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match self.refresh().await {
                    Ok(version) => {
                        if last_version != Some(version) {
                            tracing::info!(version, "directory refreshed");
                            last_version = Some(version);
                        }
                    }
                    Err(e) => {
                        if let Some(suppressed) = REFRESH_FAILED.allow() {
                            tracing::warn!(error = %e, suppressed, "directory refresh failed; keeping the last good copy");
                        }
                    }
                }
                self.report().await;
            }
        });
    }
}
