//! Keeps the served directory in step with the operator's file: loads it at start (refusing to
//! start on an invalid file), then polls it and swaps in each valid change. An invalid edit, an
//! unreadable file, or an edit that removes more members at once than the configured share (every
//! member, at the least) is logged loudly, shows in the metrics, and leaves the last good directory
//! in force. At start the file is held against the members of the directory applied last (kept
//! with its version), so a restart does not let through the edit a running coordinator would hold.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use doorzet_domain::Oin;
use doorzet_mesh::directory::{Directory, Snapshot};
use doorzet_mesh::layers::metrics::Metrics;
use doorzet_mesh::log_throttle::Throttle;
use doorzet_store::Database;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::config::DirectorySource;
use crate::directory_file::DirectoryFile;
use crate::{Error, store};

/// Loads the directory file into a snapshot with its version.
pub async fn load(
    source: &DirectorySource,
    db: &Database,
    own_org: Oin,
    audit_verifier_key: &str,
) -> Result<(Snapshot, String), Error> {
    let last = store::directory_versions::last_members(db).await?;
    let (_, snapshot, sha) = load_file(source, db, own_org, audit_verifier_key, last).await?;
    Ok((snapshot, sha))
}

/// Reads and checks the file; `current` holds the members in force (at start, those of the
/// directory applied last), which an edit may not remove too many of at once.
async fn load_file(
    source: &DirectorySource,
    db: &Database,
    own_org: Oin,
    audit_verifier_key: &str,
    current: Option<BTreeSet<Oin>>,
) -> Result<(DirectoryFile, Snapshot, String), Error> {
    let (file, text) = DirectoryFile::load(&source.file)?;
    let mut wire = file
        .to_wire()
        .map_err(|e| Error::Directory(format!("{}: {e}", source.file.display())))?;
    if wire.coordinator.as_ref().map(|c| c.org_id.as_str()) != Some(own_org.as_str()) {
        return Err(Error::Directory(format!(
            "{}: coordinator: field `org_id`: must be this coordinator's organisation id {own_org}",
            source.file.display()
        )));
    }
    if let Some(coordinator) = wire.coordinator.as_mut() {
        coordinator.audit_log_verifier_key = audit_verifier_key.to_owned();
    }
    let next: BTreeSet<Oin> = wire
        .members
        .iter()
        .filter_map(|m| m.org_id.parse().ok())
        .collect();
    if let Some(current) = &current {
        check_removals(
            current,
            &next,
            source.max_removed_share,
            file.confirm_removals,
        )
        .map_err(|e| Error::Directory(format!("{}: {e}", source.file.display())))?;
    }
    let sha = hex::encode(Sha256::digest(text.as_bytes()));
    let now = SystemTime::now();
    wire.version = store::directory_versions::version_for(db, &sha, &next, now).await?;
    wire.loaded_at = Some(prost_types::Timestamp::from(now));
    let snapshot = Snapshot::from_pb(wire, now)
        .map_err(|e| Error::Directory(format!("{}: {e}", source.file.display())))?;
    Ok((file, snapshot, sha))
}

/// Checks that an edit from `current` to `next` members removes no more than `max_share` of them
/// (and never all of them) unless `confirmed` names exactly the number it removes.
pub fn check_removals(
    current: &BTreeSet<Oin>,
    next: &BTreeSet<Oin>,
    max_share: f64,
    confirmed: Option<usize>,
) -> Result<(), String> {
    let removed = current.difference(next).count();
    if removed == 0 {
        return Ok(());
    }
    let removes_all = removed == current.len();
    let share = removed as f64 / current.len() as f64;
    if (removes_all || share > max_share) && confirmed != Some(removed) {
        return Err(format!(
            "edit held back: it removes {removed} of {} members at once, more than directory.max_removed_share ({:.0}%) allows{}; if that is intended, add `confirm_removals = {removed}` to the file",
            current.len(),
            max_share * 100.0,
            if removes_all { " (every member)" } else { "" },
        ));
    }
    Ok(())
}

/// The coordinator's directory-file metrics.
#[derive(Debug, Clone, Default)]
pub struct FileMetrics {
    /// 1 when the file as it is now is in force, 0 when it is unreadable, invalid or held back.
    pub valid: Gauge,
    /// When the file in force was last applied (Unix seconds).
    pub applied_at: Gauge,
    /// Checks that found the file unreadable (missing, no permission).
    pub unreadable: Counter,
}

impl FileMetrics {
    /// Registers the metrics as `doorzet_coordinator_directory_file_*`.
    pub fn register(metrics: &Metrics) -> Self {
        let this = Self::default();
        metrics.register(|registry| {
            registry.register(
                "coordinator_directory_file_valid",
                "1 when the directory file as it is now is in force; 0 when it is unreadable, invalid or held back",
                this.valid.clone(),
            );
            registry.register(
                "coordinator_directory_file_applied_timestamp_seconds",
                "When the directory in force was applied from the file (Unix time)",
                this.applied_at.clone(),
            );
            registry.register(
                "coordinator_directory_file_unreadable",
                "Checks that found the directory file unreadable",
                this.unreadable.clone(),
            );
        });
        this
    }

    /// Records that the file was applied now.
    pub fn applied(&self) {
        self.valid.set(1);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.applied_at.set(now as i64);
    }
}

fn members(snapshot: &Snapshot) -> BTreeSet<Oin> {
    snapshot.members.keys().copied().collect()
}

/// Everything the watcher needs.
#[derive(Debug, Clone)]
pub struct Watcher {
    /// The file and its polling interval.
    pub source: DirectorySource,
    /// Where versions are kept.
    pub db: Database,
    /// The coordinator's organisation id.
    pub own_org: Oin,
    /// The audit log's verifier key, published in the directory.
    pub audit_verifier_key: String,
    /// The directory the listener consults.
    pub directory: Arc<Directory>,
    /// Directory age and size.
    pub metrics: Metrics,
    /// Validity and last application of the file.
    pub file_metrics: FileMetrics,
}

impl Watcher {
    /// Polls the file every `reload_interval` and swaps in valid changes until `shutdown`.
    pub fn spawn(self, mut last_sha: String, shutdown: CancellationToken) {
        static UNREADABLE: Throttle = Throttle::per(Duration::from_secs(60));
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(self.source.reload_interval.max(Duration::from_millis(50)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let text = match tokio::fs::read(&self.source.file).await {
                    Ok(text) => text,
                    Err(e) => {
                        self.file_metrics.valid.set(0);
                        self.file_metrics.unreadable.inc();
                        if let Some(suppressed) = UNREADABLE.allow() {
                            tracing::error!(file = %self.source.file.display(), error = %e, suppressed, "directory file unreadable; keeping the last good directory");
                        }
                        last_sha.clear();
                        continue;
                    }
                };
                let sha = hex::encode(Sha256::digest(&text));
                if sha == last_sha {
                    if let Some(current) = self.directory.current() {
                        self.metrics
                            .directory_age_seconds
                            .set(current.age(SystemTime::now()).as_secs() as i64);
                    }
                    continue;
                }
                // Do not re-log the same content every tick, whatever becomes of it.
                last_sha = sha;
                if let Err(e) = self.apply().await {
                    self.file_metrics.valid.set(0);
                    tracing::error!(error = %e, "directory file not applied; keeping the last good directory");
                }
            }
        });
    }

    async fn apply(&self) -> Result<(), Error> {
        let current = self.directory.current().map(|c| members(&c));
        let (_, snapshot, _) = load_file(
            &self.source,
            &self.db,
            self.own_org,
            &self.audit_verifier_key,
            current,
        )
        .await?;
        tracing::info!(
            version = snapshot.version(),
            members = snapshot.members.len(),
            revoked = snapshot.revoked.len(),
            "directory reloaded"
        );
        self.metrics
            .directory_members
            .set(snapshot.members.len() as i64);
        self.metrics.directory_age_seconds.set(0);
        self.directory.replace(snapshot);
        self.file_metrics.applied();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn orgs(range: std::ops::Range<u64>) -> BTreeSet<Oin> {
        range
            .map(|n| format!("{:020}", 1_999_000_000_000u64 + n).parse().unwrap())
            .collect()
    }

    #[test]
    fn removing_every_member_is_held_back_until_confirmed_with_the_count() {
        let current = orgs(0..4);
        let err = check_removals(&current, &BTreeSet::new(), 1.0, None).unwrap_err();
        assert!(err.contains("removes 4 of 4 members"), "{err}");
        assert!(err.contains("confirm_removals = 4"), "{err}");
        assert!(check_removals(&current, &BTreeSet::new(), 1.0, Some(3)).is_err());
        assert!(check_removals(&current, &BTreeSet::new(), 1.0, Some(4)).is_ok());
    }

    #[test]
    fn a_share_within_the_limit_passes_and_one_above_it_is_held() {
        let current = orgs(0..10);
        assert!(check_removals(&current, &orgs(5..10), 0.5, None).is_ok());
        assert!(check_removals(&current, &orgs(6..10), 0.5, None).is_err());
        assert!(check_removals(&current, &orgs(6..10), 0.5, Some(6)).is_ok());
        // Additions never need confirmation.
        assert!(check_removals(&current, &orgs(0..20), 0.0, None).is_ok());
    }

    proptest! {
        #[test]
        fn an_unconfirmed_edit_never_removes_more_than_the_share_or_everyone(
            now in 1u64..30, keep in 0u64..30, share in 0.0f64..=1.0,
        ) {
            let current = orgs(0..now);
            let next = orgs(0..keep.min(now));
            let removed = (now - keep.min(now)) as f64;
            let allowed = check_removals(&current, &next, share, None).is_ok();
            prop_assert_eq!(allowed, removed == 0.0 || (removed / now as f64 <= share && !next.is_empty()));
        }
    }
}
