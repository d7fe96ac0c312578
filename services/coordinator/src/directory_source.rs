//! Keeps the served directory in step with the operator's file: loads it at start (refusing to
//! start on an invalid file), then polls it and swaps in each valid change. An invalid edit is
//! logged loudly and the last good directory stays in force.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use doorzet_mesh::directory::{Directory, Snapshot};
use doorzet_mesh::layers::metrics::Metrics;
use doorzet_store::Database;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::config::DirectorySource;
use crate::directory_file::DirectoryFile;
use crate::{Error, store};

/// Loads the directory file into a snapshot with its version.
pub async fn load(
    source: &DirectorySource,
    db: &Database,
    own_org: doorzet_domain::Oin,
    audit_verifier_key: &str,
) -> Result<(Snapshot, String), Error> {
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
    let sha = hex::encode(Sha256::digest(text.as_bytes()));
    let now = SystemTime::now();
    wire.version = store::directory_versions::version_for(db, &sha, now).await?;
    wire.loaded_at = Some(prost_types::Timestamp::from(now));
    let snapshot = Snapshot::from_pb(wire, now)
        .map_err(|e| Error::Directory(format!("{}: {e}", source.file.display())))?;
    Ok((snapshot, sha))
}

/// Polls the file every `reload_interval` and swaps in valid changes until `shutdown`.
#[allow(clippy::too_many_arguments)]
pub fn spawn_watcher(
    source: DirectorySource,
    db: Database,
    own_org: doorzet_domain::Oin,
    audit_verifier_key: String,
    directory: Arc<Directory>,
    metrics: Metrics,
    mut last_sha: String,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(source.reload_interval.max(Duration::from_millis(50)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Ok(text) = tokio::fs::read(&source.file).await else {
                tracing::error!(file = %source.file.display(), "directory file unreadable; keeping the last good directory");
                continue;
            };
            let sha = hex::encode(Sha256::digest(&text));
            if sha == last_sha {
                if let Some(current) = directory.current() {
                    metrics
                        .directory_age_seconds
                        .set(current.age(SystemTime::now()).as_secs() as i64);
                }
                continue;
            }
            match load(&source, &db, own_org, &audit_verifier_key).await {
                Ok((snapshot, loaded_sha)) => {
                    tracing::info!(
                        version = snapshot.version(),
                        members = snapshot.members.len(),
                        revoked = snapshot.revoked.len(),
                        "directory reloaded"
                    );
                    metrics.directory_members.set(snapshot.members.len() as i64);
                    metrics.directory_age_seconds.set(0);
                    directory.replace(snapshot);
                    last_sha = loaded_sha;
                }
                Err(e) => {
                    tracing::error!(error = %e, "directory file invalid; keeping the last good directory");
                    // Do not re-log the same broken content every tick.
                    last_sha = sha;
                }
            }
        }
    });
}
