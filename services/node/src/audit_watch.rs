//! Keeps the ZVH honest: fetches the coordinator's audit-log checkpoint periodically, checks its
//! signature with the key pinned on first sight, checks it is consistent with every checkpoint this
//! node saw before, and re-verifies a sweep of entries by inclusion proof, so a changed, deleted or
//! rolled-back log is noticed.
//!
//! Only evidence raises the sticky alarm (an error log, `doorzet_node_audit_alarm 1`, health
//! `doorzet.audit` NOT_SERVING, `GetNodeStatus.audit_alarm`): a checkpoint that does not verify under
//! the pinned key, a failed consistency or inclusion proof, two roots for one size, a log that
//! shrank, an entry that changed or vanished below a signed size, an audit key the node's operator
//! did not configure. A check that cannot run (the coordinator unreachable, refusing or failing) is
//! "cannot check": health UNKNOWN, `doorzet_node_audit_check_failing 1`,
//! `GetNodeStatus.audit_check_error`, retried with backoff, never sticky. An operator clears an
//! alarm after an investigation with `ClearAuditAlarm`, which is recorded.

use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use doorzet_audit::checkpoint::{Checkpoint, NoteVerifier};
use doorzet_audit::merkle::{self, Hash};
use doorzet_mesh::log_throttle::Throttle;
use doorzet_proto::v1::{self, audit_log_client::AuditLogClient};
use doorzet_store::Database;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerCheckLabels {
    result: &'static str,
}

/// What comparing a member's checkpoint with this node's found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerCheck {
    /// Same history.
    Consistent,
    /// Different histories, both signed by the coordinator: the alarm is raised.
    Fork(String),
    /// The member's note does not verify under the pinned key (not evidence against the log).
    Unverifiable(String),
    /// The comparison could not run now.
    CannotCheck(String),
}

/// The node's view of the audit log.
#[derive(Debug, Clone)]
pub struct AuditWatch {
    db: Database,
    coordinator: Channel,
    directory: crate::directory_sync::DirectorySync,
    health: HealthReporter,
    sweep: u64,
    alarm: Arc<RwLock<Option<String>>>,
    check_error: Arc<RwLock<Option<String>>>,
    verified: Arc<std::sync::atomic::AtomicU64>,
    verified_at: Arc<std::sync::atomic::AtomicI64>,
    pinned_key: Arc<RwLock<String>>,
    latest: Arc<RwLock<Option<(Checkpoint, String)>>>,
    compared: Arc<std::sync::Mutex<std::collections::HashSet<(u64, Hash)>>>,
    peer_queue: Arc<crate::gossip::PeerQueue>,
    alarm_gauge: Gauge<i64>,
    peer_checks: Family<PeerCheckLabels, Counter>,
    failing_gauge: Gauge<i64>,
    verified_at_gauge: Gauge<i64>,
    accepted_keys: Arc<Vec<String>>,
}

/// Who clears an alarm, and why.
#[derive(Debug, Clone)]
pub struct Clearing {
    /// Subject of the operator's token.
    pub subject: String,
    /// Role of the operator's token.
    pub role: String,
    /// The outcome of the investigation.
    pub reason: String,
    /// Whether the checkpoints seen so far are forgotten.
    pub forget_checkpoints: bool,
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

/// Classifies a failed call: whatever the status (a passing database error, a refused certificate
/// during a rollover), a failed call is no evidence about the log, so the check cannot run now.
fn rpc_failure(what: impl Fn() -> String) -> impl Fn(tonic::Status) -> Outcome {
    move |s| Outcome::Unavailable(format!("{}: {}", what(), status_message(&s)))
}

impl AuditWatch {
    /// Makes the watcher; loads a persisted alarm, if any. `directory` is the node's directory
    /// sync, refreshed on the spot when a checkpoint does not verify under the key in force.
    pub async fn new(
        db: Database,
        coordinator: Channel,
        directory: crate::directory_sync::DirectorySync,
        health: HealthReporter,
        metrics: &doorzet_mesh::layers::metrics::Metrics,
        config: &crate::config::AuditWatch,
    ) -> Result<Self, crate::Error> {
        let alarm_gauge = Gauge::<i64>::default();
        let peer_checks = Family::<PeerCheckLabels, Counter>::default();
        let failing_gauge = Gauge::<i64>::default();
        let verified_at_gauge = Gauge::<i64>::default();
        metrics.register(|r| {
            r.register(
                "node_audit_alarm",
                "1 when this node found evidence that the coordinator's audit log was rewritten, truncated or rolled back",
                alarm_gauge.clone(),
            );
            r.register(
                "node_peer_checkpoints",
                "Checkpoints sent by calling members, compared with this node's: consistent, fork, unverifiable or cannot_check",
                peer_checks.clone(),
            );
            r.register(
                "node_audit_check_failing",
                "1 while the audit log cannot be checked (coordinator unreachable or failing); not evidence of tampering",
                failing_gauge.clone(),
            );
            r.register(
                "node_audit_verified_timestamp_seconds",
                "When the audit log was last verified (Unix time)",
                verified_at_gauge.clone(),
            );
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
            sweep: config.sweep.clamp(1, 1000),
            alarm: Arc::new(RwLock::new(None)),
            check_error: Arc::new(RwLock::new(None)),
            verified: Arc::new(std::sync::atomic::AtomicU64::new(
                verified.map_or(0, |(s,)| s as u64),
            )),
            verified_at: Arc::new(std::sync::atomic::AtomicI64::new(0)),
            alarm_gauge,
            failing_gauge,
            verified_at_gauge,
            accepted_keys: Arc::new(config.accepted_verifier_keys.clone()),
            pinned_key: Arc::default(),
            latest: Arc::default(),
            peer_checks,
            compared: Arc::default(),
            peer_queue: Arc::default(),
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

    /// Returns why the last check could not run, if it could not.
    pub fn check_error(&self) -> Option<String> {
        self.check_error
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Returns when the log was last verified (Unix seconds), if it was since the start.
    pub fn verified_at(&self) -> Option<SystemTime> {
        let secs = self.verified_at.load(std::sync::atomic::Ordering::Relaxed);
        (secs > 0).then(|| UNIX_EPOCH + std::time::Duration::from_secs(secs as u64))
    }

    /// Clears the alarm after an investigation and records who did it and why; with
    /// `forget_checkpoints`, the log as it is now becomes the new baseline.
    pub async fn clear(&self, clearing: &Clearing) -> Result<String, crate::Error> {
        let Some(alarm) = self.alarm() else {
            return Err(crate::Error::FailedPrecondition(
                "there is no audit alarm to clear".into(),
            ));
        };
        let mut tx = self.db.pool().begin().await?;
        sqlx::query(
            "INSERT INTO audit_alarm_clearings (cleared_at, subject, role, alarm, reason, forgot_checkpoints) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(now_millis())
        .bind(&clearing.subject)
        .bind(&clearing.role)
        .bind(&alarm)
        .bind(&clearing.reason)
        .bind(clearing.forget_checkpoints)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE audit_watch SET alarm = NULL WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        if clearing.forget_checkpoints {
            sqlx::query("DELETE FROM audit_checkpoints_seen")
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE audit_watch SET sweep_cursor = 0 WHERE id = 1")
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        *self.alarm.write().unwrap_or_else(|e| e.into_inner()) = None;
        self.alarm_gauge.set(0);
        if clearing.forget_checkpoints {
            self.verified.store(0, std::sync::atomic::Ordering::Relaxed);
        }
        self.health
            .set_service_status(HEALTH_SERVICE, ServingStatus::Unknown)
            .await;
        tracing::warn!(subject = %clearing.subject, role = %clearing.role, forgot_checkpoints = clearing.forget_checkpoints, "audit alarm cleared by an operator; the reason is recorded in audit_alarm_clearings");
        Ok(alarm)
    }

    /// The verifier key pinned at the last check; empty before the first.
    pub fn pinned_key(&self) -> String {
        self.pinned_key
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The signed note of the latest checkpoint this node verified, to show the members it calls.
    pub fn latest_note(&self) -> Option<String> {
        self.latest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, note)| note.clone())
    }

    /// The members' checkpoints waiting to be compared (see [`crate::gossip`]).
    pub fn peer_queue(&self) -> &crate::gossip::PeerQueue {
        &self.peer_queue
    }

    /// Compares a checkpoint another member verified (sent with its call) with this node's own:
    /// the same size must have the same root, and different sizes must be consistent by the
    /// coordinator's proof. A fork is evidence that the coordinator showed the two members
    /// different histories and raises the alarm; a note that does not verify under the pinned
    /// key is the peer's problem, not the coordinator's, and is only reported.
    pub async fn compare_peer(&self, peer: doorzet_domain::Oin, note: &str) -> PeerCheck {
        let check = self.compare_peer_inner(peer, note).await;
        let result = match &check {
            PeerCheck::Consistent => "consistent",
            PeerCheck::Fork(_) => "fork",
            PeerCheck::Unverifiable(_) => "unverifiable",
            PeerCheck::CannotCheck(_) => "cannot_check",
        };
        self.peer_checks
            .get_or_create(&PeerCheckLabels { result })
            .inc();
        check
    }

    async fn compare_peer_inner(&self, peer: doorzet_domain::Oin, note: &str) -> PeerCheck {
        let key = self.pinned_key();
        let Some((mine, _)) = self
            .latest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return PeerCheck::CannotCheck("this node has not verified the log yet".into());
        };
        let theirs = match NoteVerifier::parse(&key).and_then(|v| v.verify(note)) {
            Ok(c) if c.origin == mine.origin => c,
            Ok(_) => return PeerCheck::Unverifiable("checkpoint of another log".into()),
            Err(e) => return PeerCheck::Unverifiable(e.to_string()),
        };
        if self
            .compared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&(theirs.size, theirs.root))
        {
            return PeerCheck::Consistent;
        }
        let fork = |why: String| {
            format!(
                "fork: member {peer} holds a checkpoint of size {} signed by the coordinator that {why}; the coordinator shows members different histories",
                theirs.size
            )
        };
        let verdict = if theirs.size == mine.size {
            if theirs.root == mine.root {
                Ok(())
            } else {
                Err(fork(
                    "has another root than this node's of the same size".to_owned(),
                ))
            }
        } else {
            let (small, large) = if theirs.size < mine.size {
                (&theirs, &mine)
            } else {
                (&mine, &theirs)
            };
            if small.size == 0 {
                Ok(())
            } else {
                let mut client = AuditLogClient::new(self.coordinator.clone());
                let proof = match client
                    .get_consistency_proof(v1::GetConsistencyProofRequest {
                        first_size: small.size,
                        second_size: large.size,
                    })
                    .await
                {
                    Ok(r) => r.into_inner().hashes,
                    Err(s) => {
                        return PeerCheck::CannotCheck(format!(
                            "no consistency proof from the coordinator: {}",
                            status_message(&s)
                        ));
                    }
                };
                match merkle::hashes_from_wire(proof) {
                    Some(proof)
                        if merkle::verify_consistency(
                            small.size,
                            large.size,
                            &small.root,
                            &large.root,
                            &proof,
                        )
                        .is_ok() =>
                    {
                        Ok(())
                    }
                    _ => Err(fork(format!(
                        "is not consistent with this node's of size {}",
                        mine.size
                    ))),
                }
            }
        };
        match verdict {
            Ok(()) => {
                let mut compared = self.compared.lock().unwrap_or_else(|e| e.into_inner());
                if compared.len() > 4096 {
                    compared.clear();
                }
                compared.insert((theirs.size, theirs.root));
                PeerCheck::Consistent
            }
            Err(reason) => {
                self.raise(&reason, true).await;
                PeerCheck::Fork(reason)
            }
        }
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
            Outcome::Broken(reason) => {
                self.set_check_error(None);
                if self.alarm().is_none() {
                    self.raise(reason, true).await;
                }
            }
            Outcome::Unavailable(reason) => {
                static SKIPPED: Throttle = Throttle::per(std::time::Duration::from_secs(300));
                if let Some(suppressed) = SKIPPED.allow() {
                    tracing::warn!(%reason, suppressed, "audit log cannot be checked now; retrying with backoff");
                }
                self.set_check_error(Some(reason.clone()));
                if self.alarm().is_none() {
                    self.health
                        .set_service_status(HEALTH_SERVICE, ServingStatus::Unknown)
                        .await;
                }
            }
            Outcome::Verified(_) => {
                self.set_check_error(None);
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs() as i64;
                self.verified_at
                    .store(now, std::sync::atomic::Ordering::Relaxed);
                self.verified_at_gauge.set(now);
                if self.alarm().is_none() {
                    self.health
                        .set_service_status(HEALTH_SERVICE, ServingStatus::Serving)
                        .await;
                }
            }
        }
        outcome
    }

    fn set_check_error(&self, error: Option<String>) {
        self.failing_gauge.set(i64::from(error.is_some()));
        *self.check_error.write().unwrap_or_else(|e| e.into_inner()) = error;
    }

    /// The audit key the directory in force publishes (empty before there is one).
    fn published_key(&self) -> String {
        self.directory
            .directory
            .current()
            .and_then(|d| {
                d.wire
                    .coordinator
                    .as_ref()
                    .map(|c| c.audit_log_verifier_key.clone())
            })
            .unwrap_or_default()
    }

    /// The key to check `note` with: the pinned one, or the directory's new key when this node's
    /// operator configured it or `note` is signed by both the pinned and the new key.
    /// `published` is read before `note` is fetched, so a checkpoint from a coordinator that has
    /// since restarted with a new key is never judged against that key.
    async fn verifier(&self, published: String, note: &str) -> Result<NoteVerifier, Outcome> {
        let pinned: Option<(String,)> =
            sqlx::query_as("SELECT verifier_key FROM audit_watch WHERE id = 1")
                .fetch_optional(self.db.pool())
                .await
                .map_err(|e| Outcome::Unavailable(e.to_string()))?;
        let key = match pinned {
            Some((key,)) if published.is_empty() || published == key => key,
            Some((key,)) => {
                // A planned rotation: this node's own operator configured the new key, or the
                // pinned key vouches for it by co-signing the checkpoint.
                let cosigned = || {
                    let both = NoteVerifier::parse(&key)
                        .and_then(|old| old.verify(note))
                        .and_then(|_| NoteVerifier::parse(&published))
                        .and_then(|new| new.verify(note));
                    both.is_ok()
                };
                let how = if self.accepted_keys.contains(&published) {
                    "configured by this node's operator"
                } else if cosigned() {
                    "vouched for by a checkpoint signed by the pinned key and the new one"
                } else {
                    return Err(Outcome::Broken(format!(
                        "the directory now publishes audit key `{published}` instead of the pinned `{key}`; this node's audit.accepted_verifier_keys does not list it and the checkpoint is not signed by both"
                    )));
                };
                sqlx::query("UPDATE audit_watch SET verifier_key = $1 WHERE id = 1")
                    .bind(&published)
                    .execute(self.db.pool())
                    .await
                    .map_err(|e| Outcome::Unavailable(e.to_string()))?;
                tracing::warn!(old = %key, new = %published, how, "audit log key rotated");
                published
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
        *self.pinned_key.write().unwrap_or_else(|e| e.into_inner()) = key.clone();
        NoteVerifier::parse(&key)
            .map_err(|e| Outcome::Broken(format!("pinned audit key unusable: {e}")))
    }

    async fn check_inner(&self) -> Result<u64, Outcome> {
        let propagate: Propagate = doorzet_mesh::telemetry::propagate;
        let mut client = AuditLogClient::with_interceptor(self.coordinator.clone(), propagate);
        let rpc = rpc_failure(|| "coordinator refused the checkpoint request".into());
        let published = self.published_key();
        let note = client
            .get_checkpoint(v1::GetCheckpointRequest {})
            .await
            .map_err(rpc)?
            .into_inner()
            .checkpoint;
        let mut verifier = self.verifier(published.clone(), &note).await?;
        let broken = |e| Outcome::Broken(format!("checkpoint does not verify: {e}"));
        let checkpoint = match verifier.verify(&note) {
            Ok(checkpoint) => checkpoint,
            Err(e) => {
                // The coordinator may have restarted with a new key before this node's directory
                // copy caught up: the checkpoint is judged by the directory as it is now, and not
                // at all while that cannot be read (a stale copy is no evidence).
                self.directory.refresh().await.map_err(|why| {
                    Outcome::Unavailable(format!(
                        "checkpoint does not verify under the key in force, and the directory could not be refreshed to judge it: {why}"
                    ))
                })?;
                self.directory.report().await;
                let fresh = self.published_key();
                if fresh == published {
                    return Err(broken(e));
                }
                verifier = self.verifier(fresh, &note).await?;
                verifier.verify(&note).map_err(broken)?
            }
        };
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
        *self.latest.write().unwrap_or_else(|e| e.into_inner()) = Some((checkpoint.clone(), note));
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
        let proof = merkle::hashes_from_wire(proof).ok_or_else(|| {
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
                if doorzet_audit::entry::check_encoded(body).is_err() {
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
                let proof = merkle::hashes_from_wire(proof).ok_or_else(|| {
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

    /// Checks every `interval` until `shutdown`; a check that cannot run is retried sooner, after
    /// 1 s, 2 s, 4 s ... up to `interval`.
    pub fn spawn(self, interval: std::time::Duration, shutdown: CancellationToken) {
        tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                let delay = match self.check().await {
                    Outcome::Unavailable(_) => {
                        failures = failures.saturating_add(1);
                        std::time::Duration::from_secs(1u64 << failures.min(16).saturating_sub(1))
                            .min(interval)
                    }
                    Outcome::Verified(size) => {
                        tracing::debug!(size, "audit log verified");
                        failures = 0;
                        interval
                    }
                    Outcome::Broken(_) => {
                        failures = 0;
                        interval
                    }
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        });
    }
}
