//! Firing deadlines: the scheduler sleeps until the earliest stored `next_due` (a term's end, a
//! follow-up date or a commitment's due date), woken early when a transition sets an earlier one or
//! the clock is moved, so a deadline fires within milliseconds of being due and survives restarts.
//! A transition names the sequence number it expects, so two coordinators never fire one deadline
//! twice.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Engine, store};

/// Escalations fired per round.
const BATCH: u32 = 128;
/// Firings in flight at once: their transitions are committed together (see `committer`).
const PARALLEL: usize = 64;

pub(super) fn spawn(engine: Engine, shutdown: CancellationToken) {
    tokio::spawn(async move {
        loop {
            let now = engine.inner.clock.now();
            let next = match store::due(&engine.inner.db, now, BATCH).await {
                Ok(due) if !due.is_empty() => {
                    // Each firing waits on the members' nodes (the next tier's participants), so
                    // several run at once.
                    use futures_util::StreamExt;
                    let results: Vec<(String, Result<(), crate::Error>)> =
                        futures_util::stream::iter(due)
                            .map(|id| {
                                let engine = engine.clone();
                                async move {
                                    let r = engine.fire(&id).await;
                                    (id, r)
                                }
                            })
                            .buffer_unordered(PARALLEL)
                            .collect()
                            .await;
                    let mut failed = false;
                    for (id, result) in results {
                        if let Err(e) = result {
                            tracing::warn!(escalation = %id, error = %e, "deadline not fired; retrying");
                            failed = true;
                        }
                    }
                    if failed {
                        Some(now + Duration::from_secs(1))
                    } else {
                        continue;
                    }
                }
                Ok(_) => store::next_due(&engine.inner.db).await.ok().flatten(),
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler could not read deadlines");
                    Some(now + Duration::from_secs(1))
                }
            };
            let at = next.unwrap_or(now + Duration::from_secs(60));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = engine.inner.scheduler_wake.notified() => {}
                _ = engine.inner.clock.sleep_until(at) => {}
            }
        }
    });
}
