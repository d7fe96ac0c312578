//! Delivering notifications to the nodes: at least once, in order per escalation and node, with
//! backoff for a node that is down (1 s doubling up to `max_retry_interval`), so a node that was
//! offline receives everything when it returns. Rows are claimed with a lease, so a second
//! coordinator on the same database skips them; the nodes deduplicate by notification id.

use std::collections::BTreeMap;
use std::time::Duration;

use doorzet_domain::Oin;
use doorzet_proto::v1;
use tokio_util::sync::CancellationToken;

use super::{Engine, store};
use crate::Error;

/// Notifications claimed per round.
const BATCH: u32 = 4096;
/// Most notifications in one `NotifyBatch` (the node's limit).
const BATCH_PER_CALL: usize = 256;
/// How long a claim holds before another coordinator may take the row (a round ends within the
/// notify timeout; an instance that restarts releases its own claims at once).
const LEASE: Duration = Duration::from_secs(30);

pub(super) fn spawn(engine: Engine, shutdown: CancellationToken) {
    tokio::spawn(async move {
        match store::release_claims(&engine.inner.db, &engine.inner.instance).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                notifications = n,
                "released this instance's claims from before its restart"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "could not release earlier claims; they expire with their lease")
            }
        }
        loop {
            let wait = match round(&engine).await {
                Ok(true) => continue,
                Ok(false) => {
                    let next = store::next_attempt(&engine.inner.db).await.ok().flatten();
                    let now = engine.inner.clock.now();
                    next.map(|n| n.duration_since(now).unwrap_or_default())
                        .unwrap_or(Duration::from_secs(5))
                        .min(Duration::from_secs(5))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "notification delivery round failed");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = engine.inner.outbox_wake.notified() => {}
                _ = engine.inner.clock.moved() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    });
}

/// Delivers one batch; `true` when there may be more due now.
async fn round(engine: &Engine) -> Result<bool, Error> {
    let db = &engine.inner.db;
    let now = engine.inner.clock.now();
    let claimed = store::claim_due(db, &engine.inner.instance, now, LEASE, BATCH).await?;
    if claimed.is_empty() {
        return Ok(false);
    }
    let full = claimed.len() as u32 == BATCH;
    let mut by_node: BTreeMap<String, Vec<store::Claimed>> = BTreeMap::new();
    for c in claimed {
        by_node.entry(c.recipient_org.clone()).or_default().push(c);
    }
    let sends = by_node
        .into_iter()
        .map(|(org, items)| deliver(engine, org, items));
    let results = futures_util::future::join_all(sends).await;
    let now = engine.inner.clock.now();
    let mut delivered = Vec::new();
    for (ok, failed) in results {
        delivered.extend(ok);
        if let Some((ids, attempts, error)) = failed {
            let backoff = Duration::from_secs(1 << attempts.min(16))
                .min(engine.inner.config.max_retry_interval);
            tracing::info!(notifications = ids.len(), retry_in = ?backoff, error = %error, "node not reached; notifications kept for retry");
            store::failed(db, &ids, attempts + 1, now + backoff, &error).await?;
        }
    }
    store::delivered(db, &delivered, now).await?;
    Ok(full)
}

type Outcome = (Vec<i64>, Option<(Vec<i64>, u32, String)>);

/// Sends one node's notifications in order, up to [`BATCH_PER_CALL`] per `NotifyBatch` (one
/// transaction at the node); a node that does not know `NotifyBatch` gets them one by one. Stops at
/// the first failure: the rest wait with it, so the node never sees a later one first.
async fn deliver(engine: &Engine, org: String, items: Vec<store::Claimed>) -> Outcome {
    let mut ok = Vec::new();
    let peers = &engine.inner.peers;
    let timeout = engine.inner.config.notify_timeout;
    let failed = |rest: &[store::Claimed], error: String| {
        let attempts = rest.iter().map(|c| c.attempts).max().unwrap_or(0);
        Some((rest.iter().map(|c| c.id).collect(), attempts, error))
    };
    let mut client = match org
        .parse::<Oin>()
        .map_err(|e| Error::Corrupt(e.to_string()))
        .and_then(|o| peers.client(o))
    {
        Ok(c) => c,
        Err(e) => return (ok, failed(&items, e.to_string())),
    };
    let mut one_by_one = false;
    let mut done = 0;
    while done < items.len() {
        let chunk = if one_by_one {
            &items[done..done + 1]
        } else {
            &items[done..(done + BATCH_PER_CALL).min(items.len())]
        };
        let sent = if one_by_one {
            let mut request = peers.request(chunk[0].notification.clone());
            request.set_timeout(timeout);
            tokio::time::timeout(timeout, client.notify(request))
                .await
                .map(|r| r.map(|_| ()))
        } else {
            let mut request = peers.request(v1::NotifyBatchRequest {
                notifications: chunk.iter().map(|c| c.notification.clone()).collect(),
            });
            request.set_timeout(timeout);
            tokio::time::timeout(timeout, client.notify_batch(request))
                .await
                .map(|r| r.map(|_| ()))
        };
        match sent.unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("Notify timed out"))) {
            Ok(()) => {
                ok.extend(chunk.iter().map(|c| c.id));
                done += chunk.len();
            }
            Err(status) if status.code() == tonic::Code::Unimplemented && !one_by_one => {
                one_by_one = true;
            }
            Err(status) => {
                return (
                    ok,
                    failed(
                        &items[done..],
                        format!("{:?}: {}", status.code(), status.message()),
                    ),
                );
            }
        }
    }
    (ok, None)
}
