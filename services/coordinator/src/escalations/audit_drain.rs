//! Draining the audit entries that transitions wrote into `audit_pending` into the audit log, in
//! order. The log's group-commit writer owns its own transaction, so an entry is removed from
//! `audit_pending` only after the log has it; after a crash between the two, the entries already in
//! the log are recognised by their leaf hash and not appended twice.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Engine, store};
use crate::Error;

/// Entries per append.
const BATCH: u32 = 512;

pub(super) fn spawn(engine: Engine, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut first = true;
        loop {
            match drain(&engine, first).await {
                Ok(more) => {
                    first = false;
                    if more {
                        continue;
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = engine.inner.audit_wake.notified() => {}
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "audit entries not yet in the log; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    });
}

/// Appends one batch; `true` when there may be more.
async fn drain(engine: &Engine, after_start: bool) -> Result<bool, Error> {
    let db = &engine.inner.db;
    let rows = store::audit_pending(db, BATCH).await?;
    let Some(&(last, _)) = rows.last() else {
        return Ok(false);
    };
    let mut entries: Vec<Vec<u8>> = Vec::with_capacity(rows.len());
    for (_, entry) in rows.iter() {
        if after_start {
            let hash = doorzet_audit::merkle::leaf_hash(entry);
            if engine
                .inner
                .audit
                .inclusion_proof_by_hash(&hash, 0)
                .await
                .is_ok()
            {
                continue;
            }
        }
        entries.push(entry.clone());
    }
    if !entries.is_empty() {
        engine.inner.audit.append_encoded(entries).await?;
    }
    store::audit_drained(db, last).await?;
    Ok(rows.len() as u32 == BATCH)
}
