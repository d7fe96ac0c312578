//! Firing deadlines: the scheduler sleeps until the earliest stored `next_due` (a term's end, a
//! follow-up date or a commitment's due date), woken early when a transition sets an earlier one or
//! the clock is moved, so a deadline fires within milliseconds of being due and survives restarts.
//! A transition names the sequence number it expects, so two coordinators never fire one deadline
//! twice. How late each fires is a histogram, `doorzet_coordinator_deadline_lag_seconds{due}`.

use std::time::Duration;

use doorzet_mesh::layers::metrics::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use tokio_util::sync::CancellationToken;

use super::{Engine, store};

/// Escalations fired per round.
const BATCH: u32 = 256;
/// Firings in flight at once: their transitions are committed together (see `committer`), so a
/// burst due at once (a region's terms ending at 17:00) makes a few large transactions rather
/// than many small ones that the registrations coming in meanwhile interleave with.
const PARALLEL: usize = 256;

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
                            .map(|escalation| {
                                let engine = engine.clone();
                                async move {
                                    let id = escalation.escalation_id.clone();
                                    (id, engine.fire(escalation).await)
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

/// What fell due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DueKind {
    /// A tier's term (escalate or alert, as the ladder says).
    Term,
    /// The follow-up date of a decision.
    FollowUp,
    /// A commitment's due date.
    Commitment,
}

impl DueKind {
    fn label(self) -> &'static str {
        match self {
            Self::Term => "term",
            Self::FollowUp => "follow_up",
            Self::Commitment => "commitment",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DueLabels {
    due: &'static str,
}

/// Bucket bounds in seconds: fine around the 100 ms a deadline should fire within, then coarse
/// up to the hour a coordinator that was down may be late by.
const LAG_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 1.0, 10.0, 60.0, 3600.0,
];

fn lag_histogram() -> Histogram {
    Histogram::new(LAG_BUCKETS)
}

/// How late deadlines fired: from the moment they fell due (on the coordinator's clock) to their
/// transition committed.
#[derive(Debug, Clone)]
pub struct FiringMetrics {
    lag: Family<DueLabels, Histogram, fn() -> Histogram>,
}

impl FiringMetrics {
    /// Registers `doorzet_coordinator_deadline_lag_seconds` in `metrics`.
    pub fn register(metrics: &Metrics) -> Self {
        let lag: Family<DueLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(lag_histogram);
        metrics.register(|registry| {
            registry.register(
                "coordinator_deadline_lag_seconds",
                "How long after falling due a deadline's transition was committed",
                lag.clone(),
            );
        });
        Self { lag }
    }

    pub(super) fn observe(&self, kind: DueKind, late: Duration) {
        self.lag
            .get_or_create(&DueLabels { due: kind.label() })
            .observe(late.as_secs_f64());
    }
}
