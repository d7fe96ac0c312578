//! Delivering notifications to the nodes: at least once, in order per escalation and node, with
//! backoff for a node that is down (1 s doubling up to `max_retry_interval`), so a node that was
//! offline receives everything when it returns. Rows are claimed with a lease, so a second
//! coordinator on the same database skips them; the nodes deduplicate by notification id.
//!
//! The notifications this instance commits are written claimed by it and handed over in memory
//! ([`Fresh`]): the loop delivers them without reading them back. The database is claimed from
//! for the rest (retries, a restarted instance's claims, another instance's lapsed leases) when
//! the earliest of them is due, and at least every few seconds.
//!
//! Each node has its own lane ([`Lanes`]): one call at a time, in order, so a node that is slow or
//! hangs until the notify timeout holds up only its own notifications. While a node backs off after
//! a failed call, what arrives for it waits in the database behind what failed.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use doorzet_domain::Oin;
use doorzet_mesh::layers::metrics::Metrics;
use doorzet_proto::v1;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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

/// What an operator watches of delivery, per node (organisation id): notifications delivered,
/// calls that failed (the node down, hanging or refusing), and how many wait in the lanes.
#[derive(Debug, Clone, Default)]
pub struct DeliveryMetrics {
    delivered: Family<NodeLabels, Counter>,
    failed: Family<NodeLabels, Counter>,
    in_lanes: Gauge,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

impl DeliveryMetrics {
    /// Registers `doorzet_coordinator_notifications_delivered_total`,
    /// `doorzet_coordinator_notification_failures_total` and
    /// `doorzet_coordinator_notifications_in_lanes` in `metrics`.
    pub fn register(metrics: &Metrics) -> Self {
        let this = Self::default();
        metrics.register(|registry| {
            registry.register(
                "coordinator_notifications_delivered",
                "Notifications a node acknowledged (stored in its inbox)",
                this.delivered.clone(),
            );
            registry.register(
                "coordinator_notification_failures",
                "Calls to a node that failed or timed out; their notifications wait for a retry",
                this.failed.clone(),
            );
            registry.register(
                "coordinator_notifications_in_lanes",
                "Notifications claimed by this coordinator and queued or in flight to their nodes",
                this.in_lanes.clone(),
            );
        });
        this
    }

    fn node(org: &str) -> NodeLabels {
        NodeLabels {
            node: org.to_owned(),
        }
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
    let lanes = Arc::new(Lanes {
        metrics: engine.inner.metrics.delivery.clone(),
        ..Lanes::default()
    });
    spawn_marker(engine.clone(), lanes.clone(), shutdown.clone());
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
            let wait = match round(&engine, &lanes, &mut look, &shutdown).await {
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

/// One delivery lane per node: a node's notifications go out in order, one call at a time, and a
/// node that is slow, hanging or down holds up only its own lane, never the other nodes'. What
/// arrives for a busy lane waits in its queue and goes out with its next call.
#[derive(Debug, Default)]
struct Lanes {
    lanes: Mutex<HashMap<String, Lane>>,
    /// Notifications in lanes, queued or in flight: the loop takes no more past [`LANES_MAX`].
    held: AtomicUsize,
    /// Delivered, waiting to be marked: whatever gathers while a mark is written goes in the next
    /// one transaction.
    marks: Mutex<Vec<i64>>,
    mark_wake: tokio::sync::Notify,
    /// The earliest retry a lane set, for the loop's next look at the database.
    retry_due: Mutex<Option<SystemTime>>,
    metrics: DeliveryMetrics,
}

#[derive(Debug, Default)]
struct Lane {
    queue: Vec<store::Claimed>,
    busy: bool,
    /// After a failed call: until then, what arrives waits in the database behind what failed, so
    /// the node never sees a later notification first and is not tried more often than backoff says.
    backoff_until: Option<SystemTime>,
}

/// What a lane does with what it holds.
enum Next {
    Send(Vec<store::Claimed>),
    /// The lane backs off until then: back to the database, due then.
    Defer(Vec<store::Claimed>, SystemTime),
}

/// Most notifications held in lanes.
const LANES_MAX: usize = 65_536;

impl Lanes {
    /// Adds `items` (one node's, in order) to `org`'s lane; `true` when the lane needs a task.
    fn enqueue(&self, org: &str, items: Vec<store::Claimed>) -> bool {
        let held = self.held.fetch_add(items.len(), Ordering::AcqRel) + items.len();
        self.metrics.in_lanes.set(held as i64);
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        let lane = lanes.entry(org.to_owned()).or_default();
        lane.queue.extend(items);
        !std::mem::replace(&mut lane.busy, true)
    }

    /// Takes what `org`'s lane holds, or ends its task (`None`) when nothing is left.
    fn next(&self, org: &str, now: SystemTime) -> Option<Next> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        let lane = lanes.get_mut(org)?;
        if lane.queue.is_empty() {
            lane.busy = false;
            if lane.backoff_until.is_none_or(|until| until <= now) {
                lanes.remove(org);
            }
            return None;
        }
        let items = std::mem::take(&mut lane.queue);
        Some(match lane.backoff_until.filter(|until| *until > now) {
            Some(until) => Next::Defer(items, until),
            None => {
                lane.backoff_until = None;
                Next::Send(items)
            }
        })
    }

    fn back_off(&self, org: &str, until: SystemTime) {
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lane) = lanes.get_mut(org) {
            lane.backoff_until = Some(until);
        }
        let mut due = self.retry_due.lock().unwrap_or_else(|e| e.into_inner());
        *due = Some(due.map_or(until, |d| d.min(until)));
    }

    fn done(&self, n: usize) {
        let held = self.held.fetch_sub(n, Ordering::AcqRel) - n;
        self.metrics.in_lanes.set(held as i64);
    }

    fn mark(&self, ids: Vec<i64>) {
        if ids.is_empty() {
            return;
        }
        self.marks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(ids);
        self.mark_wake.notify_one();
    }
}

/// Claims a batch (what this instance handed over, and from the database what is due there) and
/// hands it to the nodes' lanes. `true` when there may be more due now.
async fn round(
    engine: &Engine,
    lanes: &Arc<Lanes>,
    look: &mut DbLook,
    shutdown: &CancellationToken,
) -> Result<bool, Error> {
    let db = &engine.inner.db;
    let now = engine.inner.clock.now();
    if let Some(retry) = lanes
        .retry_due
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    {
        look.due = Some(look.due.map_or(retry, |d| d.min(retry)));
    }
    let room = LANES_MAX.saturating_sub(lanes.held.load(Ordering::Acquire));
    if room == 0 {
        // A lane that finishes wakes the loop.
        return Ok(false);
    }
    let batch = room.min(BATCH as usize);
    let mut claimed = engine.inner.fresh.take(batch);
    let mut full = claimed.len() == batch;
    let spilled = engine.inner.fresh.spilled.swap(false, Ordering::AcqRel);
    if !full && (spilled || look.now_due(now)) {
        let room = (batch - claimed.len()) as u32;
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
    let mut by_node: BTreeMap<String, Vec<store::Claimed>> = BTreeMap::new();
    for c in claimed {
        by_node.entry(c.recipient_org.clone()).or_default().push(c);
    }
    for (org, mut items) in by_node {
        // In the order written: a retry before what was committed after it.
        items.sort_by_key(|c| c.id);
        if lanes.enqueue(&org, items) {
            tokio::spawn(run_lane(
                engine.clone(),
                lanes.clone(),
                org,
                shutdown.clone(),
            ));
        }
    }
    Ok(full)
}

/// Delivers `org`'s lane until it is empty.
async fn run_lane(engine: Engine, lanes: Arc<Lanes>, org: String, shutdown: CancellationToken) {
    let db = &engine.inner.db;
    loop {
        let now = engine.inner.clock.now();
        let Some(next) = lanes.next(&org, now) else {
            return;
        };
        // Not delivered: the ids, the attempts to store, why, and the retry when already known.
        let (n, undelivered) = match next {
            Next::Send(items) => {
                let n = items.len();
                let (ok, failed) = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    outcome = deliver(&engine, org.clone(), items) => outcome,
                };
                let node = DeliveryMetrics::node(&org);
                lanes
                    .metrics
                    .delivered
                    .get_or_create(&node)
                    .inc_by(ok.len() as u64);
                if failed.is_some() {
                    lanes.metrics.failed.get_or_create(&node).inc();
                }
                lanes.mark(ok);
                (
                    n,
                    failed.map(|(ids, attempts, error)| (ids, attempts + 1, error, None)),
                )
            }
            Next::Defer(items, until) => {
                let ids = items.iter().map(|c| c.id).collect();
                let attempts = items.iter().map(|c| c.attempts).max().unwrap_or(0);
                let why = "waiting behind earlier notifications to this node".to_owned();
                (items.len(), Some((ids, attempts, why, Some(until))))
            }
        };
        if let Some((ids, attempts, error, until)) = undelivered {
            let now = engine.inner.clock.now();
            let retry = until.unwrap_or_else(|| {
                now + Duration::from_secs(1 << attempts.saturating_sub(1).min(16))
                    .min(engine.inner.config.max_retry_interval)
            });
            if until.is_none() {
                tracing::info!(node = %org, notifications = ids.len(), retry_in = ?retry.duration_since(now).unwrap_or_default(), error = %error, "node not reached; notifications kept for retry");
            }
            if let Err(e) = store::failed(db, &ids, attempts, retry, &error).await {
                // Their claims lapse with the lease, and the loop takes them up again then.
                tracing::warn!(error = %e, notifications = ids.len(), "could not schedule the retry");
            }
            lanes.back_off(&org, retry);
        }
        lanes.done(n);
        engine.inner.outbox_wake.notify_one();
    }
}

/// Marks delivered notifications, one transaction for whatever the lanes delivered meanwhile.
fn spawn_marker(engine: Engine, lanes: Arc<Lanes>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = lanes.mark_wake.notified() => {}
            }
            loop {
                let ids =
                    std::mem::take(&mut *lanes.marks.lock().unwrap_or_else(|e| e.into_inner()));
                if ids.is_empty() {
                    break;
                }
                let now = engine.inner.clock.now();
                if let Err(e) = store::delivered(&engine.inner.db, &ids, now).await {
                    tracing::warn!(error = %e, notifications = ids.len(), "could not mark notifications delivered; trying again");
                    lanes
                        .marks
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend(ids);
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    });
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

    fn ids(next: Option<Next>) -> (&'static str, Vec<i64>) {
        match next {
            Some(Next::Send(items)) => ("send", items.iter().map(|c| c.id).collect()),
            Some(Next::Defer(items, _)) => ("defer", items.iter().map(|c| c.id).collect()),
            None => ("idle", Vec::new()),
        }
    }

    #[test]
    fn a_lane_sends_in_order_and_defers_while_it_backs_off() {
        let lanes = Lanes::default();
        let org = "00000001000000000001";
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert!(
            lanes.enqueue(org, vec![claimed(1), claimed(2)]),
            "a new lane needs a task"
        );
        assert!(!lanes.enqueue(org, vec![claimed(3)]), "a busy lane has one");
        assert_eq!(ids(lanes.next(org, now)), ("send", vec![1, 2, 3]));

        // A failed call: what arrives before the retry waits behind it.
        let retry = now + Duration::from_secs(2);
        lanes.back_off(org, retry);
        assert!(!lanes.enqueue(org, vec![claimed(4)]));
        assert_eq!(ids(lanes.next(org, now)), ("defer", vec![4]));
        assert_eq!(ids(lanes.next(org, now)), ("idle", vec![]));
        assert_eq!(*lanes.retry_due.lock().unwrap(), Some(retry));

        // At the retry, the lane sends again and, once empty, goes.
        assert!(
            lanes.enqueue(org, vec![claimed(5)]),
            "an idle lane needs a task again"
        );
        assert_eq!(ids(lanes.next(org, retry)), ("send", vec![5]));
        assert_eq!(ids(lanes.next(org, retry)), ("idle", vec![]));
        assert!(lanes.lanes.lock().unwrap().is_empty());
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
