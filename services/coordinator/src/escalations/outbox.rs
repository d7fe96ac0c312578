//! Delivering notifications to the nodes: at least once, in order per escalation and node, with
//! backoff for a node that is down (1 s doubling up to `max_retry_interval`), so a node that was
//! offline receives everything when it returns. Rows are claimed with a lease, so a second
//! coordinator on the same database skips them; the nodes deduplicate by notification id.
//!
//! The notifications this instance commits are written claimed by it and handed over in memory
//! ([`Fresh`]): the loop delivers them without reading them back. The database is claimed from
//! for the rest (retries, a restarted instance's claims, another instance's lapsed leases) when
//! the earliest of them is due, and at least every few seconds.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

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
pub(super) const LEASE: Duration = Duration::from_secs(30);
/// Most notifications waiting in memory; past it, commits leave theirs for the loop to claim.
const FRESH_MAX: usize = 65_536;
/// Longest wait between looks at the database (for another instance's lapsed leases).
const DB_LOOK: Duration = Duration::from_secs(5);

/// Notifications this instance committed, claimed by it in the same transaction, waiting for the
/// delivery loop.
#[derive(Debug, Default)]
pub(super) struct Fresh {
    queue: Mutex<Vec<store::Claimed>>,
    spilled: AtomicBool,
}

impl Fresh {
    /// Whether a commit may hand its notifications over.
    pub(super) fn has_room(&self) -> bool {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).len() < FRESH_MAX
    }

    /// Hands committed notifications over, in commit order.
    pub(super) fn push(&self, claimed: Vec<store::Claimed>) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(claimed);
    }

    /// Says a commit left its notifications in the database, due at once.
    pub(super) fn spilled(&self) {
        self.spilled.store(true, Ordering::Release);
    }

    /// Puts back what a failed round took, before anything handed over since.
    fn put_back(&self, mut taken: Vec<store::Claimed>) {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        taken.append(&mut queue);
        *queue = taken;
    }

    fn take(&self, max: usize) -> Vec<store::Claimed> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let at = max.min(queue.len());
        let rest = queue.split_off(at);
        std::mem::replace(&mut *queue, rest)
    }
}

/// When the loop next claims from the database.
#[derive(Debug)]
struct DbLook {
    /// The earliest notification due there (a claimed one is due when its claim ends).
    due: Option<SystemTime>,
    /// The last look.
    last: std::time::Instant,
}

impl DbLook {
    fn now_due(&self, now: SystemTime) -> bool {
        self.due.is_some_and(|d| d <= now) || self.last.elapsed() >= DB_LOOK
    }

    /// How long the loop may sleep.
    fn wait(&self, now: SystemTime) -> Duration {
        let until_due = self
            .due
            .map_or(DB_LOOK, |d| d.duration_since(now).unwrap_or_default());
        until_due.min(DB_LOOK.saturating_sub(self.last.elapsed()))
    }
}

pub(super) fn spawn(engine: Engine, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let now = engine.inner.clock.now();
        match store::release_claims(&engine.inner.db, &engine.inner.instance, now).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                notifications = n,
                "released this instance's claims from before its restart"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "could not release earlier claims; they expire with their lease")
            }
        }
        let mut look = DbLook {
            due: Some(now),
            last: std::time::Instant::now(),
        };
        loop {
            let wait = match round(&engine, &mut look).await {
                Ok(true) => continue,
                Ok(false) => look.wait(engine.inner.clock.now()),
                Err(e) => {
                    tracing::warn!(error = %e, "notification delivery round failed");
                    look.due = Some(engine.inner.clock.now());
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

/// Delivers one batch: what this instance handed over, and from the database what is due there.
/// `true` when there may be more due now.
async fn round(engine: &Engine, look: &mut DbLook) -> Result<bool, Error> {
    let db = &engine.inner.db;
    let now = engine.inner.clock.now();
    let mut claimed = engine.inner.fresh.take(BATCH as usize);
    let mut full = claimed.len() == BATCH as usize;
    let spilled = engine.inner.fresh.spilled.swap(false, Ordering::AcqRel);
    if !full && (spilled || look.now_due(now)) {
        let room = BATCH - claimed.len() as u32;
        let from_db = match store::claim_due(db, &engine.inner.instance, now, LEASE, room).await {
            Ok(from_db) => from_db,
            Err(e) => {
                engine.inner.fresh.put_back(claimed);
                return Err(e);
            }
        };
        look.last = std::time::Instant::now();
        if from_db.len() as u32 == room {
            full = true;
            look.due = Some(now);
        } else {
            // Unknown for now: the next round looks again.
            look.due = store::next_attempt(db).await.unwrap_or(Some(now));
        }
        claimed.extend(from_db);
    }
    if claimed.is_empty() {
        return Ok(false);
    }
    let mut by_node: BTreeMap<String, Vec<store::Claimed>> = BTreeMap::new();
    for c in claimed {
        by_node.entry(c.recipient_org.clone()).or_default().push(c);
    }
    let sends = by_node.into_iter().map(|(org, mut items)| {
        // In the order written: a retry before what was committed after it.
        items.sort_by_key(|c| c.id);
        deliver(engine, org, items)
    });
    let results = futures_util::future::join_all(sends).await;
    let now = engine.inner.clock.now();
    let mut delivered = Vec::new();
    for (ok, failed) in results {
        delivered.extend(ok);
        if let Some((ids, attempts, error)) = failed {
            let backoff = Duration::from_secs(1 << attempts.min(16))
                .min(engine.inner.config.max_retry_interval);
            tracing::info!(notifications = ids.len(), retry_in = ?backoff, error = %error, "node not reached; notifications kept for retry");
            let retry = now + backoff;
            store::failed(db, &ids, attempts + 1, retry, &error).await?;
            look.due = Some(look.due.map_or(retry, |d| d.min(retry)));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(id: i64) -> store::Claimed {
        store::Claimed {
            id,
            recipient_org: "00000001000000000001".into(),
            notification: v1::NotifyRequest::default(),
            attempts: 0,
        }
    }

    #[test]
    fn what_a_failed_round_took_goes_back_before_what_came_since() {
        let fresh = Fresh::default();
        fresh.push((1..=3).map(claimed).collect());
        let taken = fresh.take(2);
        assert_eq!(taken.iter().map(|c| c.id).collect::<Vec<_>>(), [1, 2]);
        fresh.push(vec![claimed(4)]);
        fresh.put_back(taken);
        let all = fresh.take(BATCH as usize);
        assert_eq!(all.iter().map(|c| c.id).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert!(fresh.take(1).is_empty());
        assert!(fresh.has_room());
    }
}
