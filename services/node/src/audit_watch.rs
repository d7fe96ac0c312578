//! Keeps the ZVH honest: fetches the coordinator's audit-log checkpoint periodically, checks its
//! signature with the key pinned on first sight, checks it is consistent with every checkpoint this
//! node saw before, and re-verifies a sweep of entries by inclusion proof, so a changed, deleted or
//! rolled-back log is noticed. Any break raises a sticky alarm: an error log, the
//! `doorzet_node_audit_alarm` metric, health `doorzet.audit` NOT_SERVING, and
//! `GetNodeStatus.audit_alarm`.

use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use doorzet_audit::checkpoint::{Checkpoint, NoteVerifier};
use doorzet_audit::merkle::{self, Hash};
use doorzet_mesh::directory::Directory;
use doorzet_proto::v1::{self, audit_log_client::AuditLogClient};
use doorzet_store::Database;
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

type Propagate = fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>;
type Client = AuditLogClient<tonic::service::interceptor::InterceptedService<Channel, Propagate>>;

/// Health service name that reports the audit log's state.
pub const HEALTH_SERVICE: &str = "doorzet.audit";

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Everything verified up to this size.
    Verified(u64),
    /// The check could not run (coordinator unreachable, no key yet); try again later.
    Unavailable(String),
    /// The log is not what it was: rewritten, truncated, rolled back or badly signed.
    Broken(String),
}

/// The node's view of the audit log.
#[derive(Debug, Clone)]
pub struct AuditWatch {
    db: Database,
    coordinator: Channel,
    directory: Arc<Directory>,
    health: HealthReporter,
    sweep: u64,
    alarm: Arc<RwLock<Option<String>>>,
    verified: Arc<std::sync::atomic::AtomicU64>,
    alarm_gauge: Gauge<i64>,
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

fn status_message(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// Classifies a failed call: transient failures postpone the check, anything else means the
/// coordinator cannot back its own log, which is a break described by `what`.
fn rpc_failure(what: impl Fn() -> String) -> impl Fn(tonic::Status) -> Outcome {
    move |s| {
        if is_transient(&s) {
            Outcome::Unavailable(status_message(&s))
        } else {
            Outcome::Broken(format!("{}: {}", what(), status_message(&s)))
        }
    }
}

fn is_transient(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::ResourceExhausted
            | tonic::Code::Cancelled
    )
}

impl AuditWatch {
    /// Makes the watcher; loads a persisted alarm, if any.
    pub async fn new(
        db: Database,
        coordinator: Channel,
        directory: Arc<Directory>,
        health: HealthReporter,
        metrics: &doorzet_mesh::layers::metrics::Metrics,
        sweep: u64,
    ) -> Result<Self, crate::Error> {
        let alarm_gauge = Gauge::<i64>::default();
        metrics.register(|r| {
            r.register(
                "node_audit_alarm",
                "1 when this node found the coordinator's audit log rewritten, truncated or rolled back",
                alarm_gauge.clone(),
            )
        });
        let stored: Option<(Option<String>,)> =
            sqlx::query_as("SELECT alarm FROM audit_watch WHERE id = 1")
                .fetch_optional(db.pool())
                .await?;
        let alarm = stored.and_then(|(a,)| a);
        let verified: Option<(i64,)> =
            sqlx::query_as("SELECT size FROM audit_checkpoints_seen ORDER BY size DESC LIMIT 1")
                .fetch_optional(db.pool())
                .await?;
        let watch = Self {
            db,
            coordinator,
            directory,
            health,
            sweep: sweep.clamp(1, 1000),
            alarm: Arc::new(RwLock::new(None)),
            verified: Arc::new(std::sync::atomic::AtomicU64::new(
                verified.map_or(0, |(s,)| s as u64),
            )),
            alarm_gauge,
        };
        match alarm {
            Some(reason) => watch.raise(&reason, false).await,
            None => {
                watch
                    .health
                    .set_service_status(HEALTH_SERVICE, ServingStatus::Serving)
                    .await
            }
        }
        Ok(watch)
    }

    /// Returns the alarm, if one was raised.
    pub fn alarm(&self) -> Option<String> {
        self.alarm.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Returns the size of the latest checkpoint verified.
    pub fn verified_size(&self) -> u64 {
        self.verified.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn raise(&self, reason: &str, persist: bool) {
        tracing::error!(alarm = %reason, "AUDIT LOG ALARM: the coordinator's audit log cannot be trusted");
        *self.alarm.write().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_owned());
        self.alarm_gauge.set(1);
        self.health
            .set_service_status(HEALTH_SERVICE, ServingStatus::NotServing)
            .await;
        if persist {
            let result = sqlx::query("UPDATE audit_watch SET alarm = $1 WHERE id = 1")
                .bind(reason)
                .execute(self.db.pool())
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "could not persist the audit alarm");
            }
        }
    }

    /// Runs one check and raises the alarm when the log is broken.
    pub async fn check(&self) -> Outcome {
        let outcome = match self.check_inner().await {
            Ok(size) => Outcome::Verified(size),
            Err(outcome) => outcome,
        };
        match &outcome {
            Outcome::Broken(reason) if self.alarm().is_none() => self.raise(reason, true).await,
            Outcome::Unavailable(reason) => tracing::warn!(%reason, "audit log check skipped"),
            _ => {}
        }
        outcome
    }

    async fn verifier(&self) -> Result<NoteVerifier, Outcome> {
        let published = self
            .directory
            .current()
            .and_then(|d| {
                d.wire
                    .coordinator
                    .as_ref()
                    .map(|c| c.audit_log_verifier_key.clone())
            })
            .unwrap_or_default();
        let pinned: Option<(String,)> =
            sqlx::query_as("SELECT verifier_key FROM audit_watch WHERE id = 1")
                .fetch_optional(self.db.pool())
                .await
                .map_err(|e| Outcome::Unavailable(e.to_string()))?;
        let key = match pinned {
            Some((key,)) => {
                if !published.is_empty() && published != key {
                    return Err(Outcome::Broken(format!(
                        "the directory now publishes audit key `{published}` instead of the pinned `{key}`"
                    )));
                }
                key
            }
            None if published.is_empty() => {
                return Err(Outcome::Unavailable(
                    "no audit key in the directory yet".into(),
                ));
            }
            None => {
                sqlx::query(
                    "INSERT INTO audit_watch (id, verifier_key, sweep_cursor) VALUES (1, $1, 0)",
                )
                .bind(&published)
                .execute(self.db.pool())
                .await
                .map_err(|e| Outcome::Unavailable(e.to_string()))?;
                tracing::info!(key = %published, "pinned the audit log's verifier key");
                published
            }
        };
        NoteVerifier::parse(&key)
            .map_err(|e| Outcome::Broken(format!("pinned audit key unusable: {e}")))
    }

    async fn check_inner(&self) -> Result<u64, Outcome> {
        let verifier = self.verifier().await?;
        let propagate: Propagate = doorzet_mesh::telemetry::propagate;
        let mut client = AuditLogClient::with_interceptor(self.coordinator.clone(), propagate);
        let rpc = rpc_failure(|| "coordinator refused the checkpoint request".into());
        let note = client
            .get_checkpoint(v1::GetCheckpointRequest {})
            .await
            .map_err(rpc)?
            .into_inner()
            .checkpoint;
        let checkpoint = verifier
            .verify(&note)
            .map_err(|e| Outcome::Broken(format!("checkpoint does not verify: {e}")))?;
        if checkpoint.origin != verifier.name() {
            return Err(Outcome::Broken(format!(
                "checkpoint is for origin `{}`, the pinned key is `{}`",
                checkpoint.origin,
                verifier.name()
            )));
        }
        let db_err = |e: sqlx::Error| Outcome::Unavailable(e.to_string());
        let last: Option<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT size, root FROM audit_checkpoints_seen ORDER BY size DESC LIMIT 1",
        )
        .fetch_optional(self.db.pool())
        .await
        .map_err(db_err)?;
        if let Some((last_size, last_root)) = &last {
            let last_size = *last_size as u64;
            let last_root: Hash = last_root.clone().try_into().unwrap_or([0; 32]);
            self.check_against(&mut client, &checkpoint, last_size, &last_root)
                .await?;
        }
        if last
            .as_ref()
            .is_none_or(|(s, _)| (*s as u64) < checkpoint.size)
        {
            sqlx::query("INSERT INTO audit_checkpoints_seen (size, root, note, seen_at) VALUES ($1, $2, $3, $4)")
                .bind(checkpoint.size as i64)
                .bind(checkpoint.root.to_vec())
                .bind(&note)
                .bind(now_millis())
                .execute(self.db.pool())
                .await
                .map_err(db_err)?;
        }
        self.sweep(&mut client, &checkpoint).await?;
        self.verified
            .store(checkpoint.size, std::sync::atomic::Ordering::Relaxed);
        Ok(checkpoint.size)
    }

    async fn check_against(
        &self,
        client: &mut Client,
        checkpoint: &Checkpoint,
        last_size: u64,
        last_root: &Hash,
    ) -> Result<(), Outcome> {
        if checkpoint.size < last_size {
            return Err(Outcome::Broken(format!(
                "audit log rolled back: checkpoint of size {} after size {last_size} was seen",
                checkpoint.size
            )));
        }
        if checkpoint.size == last_size {
            return if checkpoint.root == *last_root {
                Ok(())
            } else {
                Err(Outcome::Broken(format!(
                    "two different roots for tree size {last_size}: history was rewritten"
                )))
            };
        }
        if last_size == 0 {
            return Ok(());
        }
        let proof = client
            .get_consistency_proof(v1::GetConsistencyProofRequest {
                first_size: last_size,
                second_size: checkpoint.size,
            })
            .await
            .map_err(rpc_failure(|| {
                format!(
                    "no consistency proof from {last_size} to {}",
                    checkpoint.size
                )
            }))?
            .into_inner()
            .hashes;
        let proof = to_hashes(proof).ok_or_else(|| {
            Outcome::Broken("consistency proof has a hash that is not 32 bytes".into())
        })?;
        merkle::verify_consistency(last_size, checkpoint.size, last_root, &checkpoint.root, &proof).map_err(|e| {
            Outcome::Broken(format!(
                "checkpoint of size {} is not consistent with size {last_size} seen before ({e}): history was rewritten",
                checkpoint.size
            ))
        })
    }

    async fn sweep(&self, client: &mut Client, checkpoint: &Checkpoint) -> Result<(), Outcome> {
        let size = checkpoint.size;
        if size == 0 {
            return Ok(());
        }
        let db_err = |e: sqlx::Error| Outcome::Unavailable(e.to_string());
        let cursor: Option<(i64,)> =
            sqlx::query_as("SELECT sweep_cursor FROM audit_watch WHERE id = 1")
                .fetch_optional(self.db.pool())
                .await
                .map_err(db_err)?;
        let start = cursor.map_or(0, |(c,)| c as u64) % size;
        let count = self.sweep.min(size);
        let mut index = start;
        let mut done = 0;
        while done < count {
            let take = (count - done).min(size - index);
            let entries = client
                .get_entries(v1::GetEntriesRequest {
                    start: index,
                    limit: take as u32,
                })
                .await
                .map_err(rpc_failure(|| format!("entries from {index} refused")))?
                .into_inner()
                .entries;
            if (entries.len() as u64) < take {
                return Err(Outcome::Broken(format!(
                    "entry {} is missing: the checkpoint covers {size} entries",
                    index + entries.len() as u64
                )));
            }
            for (offset, body) in entries.iter().enumerate() {
                let leaf_index = index + offset as u64;
                if doorzet_audit::entry::decode(body).is_err() {
                    return Err(Outcome::Broken(format!(
                        "entry {leaf_index} is not a valid canonical entry"
                    )));
                }
                let proof = client
                    .get_inclusion_proof(v1::GetInclusionProofRequest {
                        tree_size: size,
                        entry: Some(v1::get_inclusion_proof_request::Entry::LeafIndex(
                            leaf_index,
                        )),
                    })
                    .await
                    .map_err(rpc_failure(|| {
                        format!("no inclusion proof for entry {leaf_index}")
                    }))?
                    .into_inner()
                    .hashes;
                let proof = to_hashes(proof).ok_or_else(|| {
                    Outcome::Broken("inclusion proof has a hash that is not 32 bytes".into())
                })?;
                merkle::verify_inclusion(leaf_index, size, &merkle::leaf_hash(body), &proof, &checkpoint.root).map_err(|_| {
                    Outcome::Broken(format!("entry {leaf_index} does not match the checkpoint of size {size}: it was changed"))
                })?;
            }
            done += take;
            index = (index + take) % size;
        }
        sqlx::query("UPDATE audit_watch SET sweep_cursor = $1 WHERE id = 1")
            .bind(index as i64)
            .execute(self.db.pool())
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Checks every `interval` until `shutdown`.
    pub fn spawn(self, interval: std::time::Duration, shutdown: CancellationToken) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if let Outcome::Verified(size) = self.check().await {
                    tracing::debug!(size, "audit log verified");
                }
            }
        });
    }
}

fn to_hashes(hashes: Vec<Vec<u8>>) -> Option<Vec<Hash>> {
    hashes.into_iter().map(|h| h.try_into().ok()).collect()
}
