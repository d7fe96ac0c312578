//! Draining the audit entries that transitions wrote into `audit_pending` into the audit log, in
//! order. The log's group-commit writer owns its own transaction, so an entry is removed from
//! `audit_pending` only after the log has it; after a crash between the two, the entries already in
//! the log are recognised by their leaf hash and not appended twice. With several coordinators on one
//! database only the one that writes the log drains (the table is shared).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Engine, store};
use crate::Error;

/// Entries per append.
const BATCH: u32 = 512;

pub(super) fn spawn(engine: Engine, shutdown: CancellationToken) {
    tokio::spawn(async move {
        // The first batch after this coordinator starts writing the log may already be in it.
        let mut was_writer = false;
        loop {
            let writer = engine.inner.audit.is_writer();
            let result = drain(&engine, writer && !was_writer).await;
            if result.is_ok() {
                was_writer = writer;
            }
            match result {
                Ok(more) => {
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
    if !engine.inner.audit.is_writer() {
        // Another coordinator writes the log and drains the shared table.
        return Ok(false);
    }
    let rows = store::audit_pending(db, BATCH).await?;
    if rows.is_empty() {
        return Ok(false);
    }
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
    let ids: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
    store::audit_drained(db, &ids).await?;
    Ok(rows.len() as u32 == BATCH)
}
