//! Group commit of transitions: the transitions that arrive while one transaction runs go into the
//! next one together, so a burst (deadlines falling due at once, a wave of registrations) pays one
//! sync of the database's log per batch rather than one per transition, and a lone transition
//! waits for nothing. Each keeps its own outcome (see [`store::commit_all`]). The notifications
//! of a batch are written claimed by this instance and handed to the delivery loop in memory
//! ([`Fresh`]), so it need not claim them and read them back.

use std::sync::Arc;
use std::time::SystemTime;

use doorzet_store::Database;
use tokio::sync::{mpsc, oneshot};

use super::outbox::{Fresh, LEASE};
use super::store;
use crate::Error;

/// Most transitions in one transaction.
const MAX_BATCH: usize = 128;

type Job = (
    store::Write,
    SystemTime,
    oneshot::Sender<Result<bool, Error>>,
);

/// The writer of transitions; clones share it.
#[derive(Debug, Clone)]
pub(super) struct Committer {
    jobs: mpsc::Sender<Job>,
}

/// The notifications of the stored writes in `batch`, with their row ids, in commit order.
fn handover(batch: &mut [Job], committed: &store::Committed) -> Vec<store::Claimed> {
    let mut ids = committed.outbox_ids.iter().copied();
    let mut claimed = Vec::with_capacity(committed.outbox_ids.len());
    for ((write, _, _), outcome) in batch.iter_mut().zip(&committed.outcomes) {
        if matches!(outcome, Ok(true)) {
            for ((recipient_org, notification), id) in write.outbox.drain(..).zip(&mut ids) {
                claimed.push(store::Claimed {
                    id,
                    recipient_org,
                    notification,
                    attempts: 0,
                });
            }
        }
    }
    claimed
}

impl Committer {
    /// Starts the writer on `db` for coordinator `instance`, handing the notifications it commits
    /// to `fresh`; it stops when the last clone is dropped.
    pub(super) fn spawn(db: Database, fresh: Arc<Fresh>, instance: String) -> Self {
        let (jobs, mut queue) = mpsc::channel::<Job>(4 * MAX_BATCH);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
                // With the delivery loop far behind, the rows are left for it to claim instead.
                let handed = fresh.has_room();
                let committed = {
                    let writes: Vec<(&store::Write, SystemTime)> =
                        batch.iter().map(|(w, at, _)| (w, *at)).collect();
                    let delivery = match writes.iter().map(|(_, at)| *at).max() {
                        Some(latest) if handed => store::Delivery::Claimed {
                            instance: &instance,
                            until: latest + LEASE,
                        },
                        _ => store::Delivery::Due,
                    };
                    store::commit_all(&db, &writes, delivery).await
                };
                match committed {
                    Ok(committed) => {
                        if handed {
                            fresh.push(handover(&mut batch, &committed));
                        } else {
                            fresh.spilled();
                        }
                        for ((_, _, reply), outcome) in batch.drain(..).zip(committed.outcomes) {
                            let _ = reply.send(outcome);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, transitions = batch.len(), "a batch of transitions was not stored");
                        let why = e.to_string();
                        for (_, _, reply) in batch.drain(..) {
                            let _ = reply.send(Err(Error::Unavailable(format!(
                                "the transition was not stored ({why}); try again"
                            ))));
                        }
                    }
                }
            }
        });
        Self { jobs }
    }

    /// Stores `write` with the transitions queued beside it; `false` when another transition of
    /// the same escalation got there first.
    pub(super) async fn commit(&self, write: store::Write, now: SystemTime) -> Result<bool, Error> {
        let stopped = || Error::Unavailable("the transition writer stopped".into());
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send((write, now, reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}
