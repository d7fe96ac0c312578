//! Group commit of transitions: the transitions that arrive while one transaction runs go into the
//! next one together, so a burst (deadlines falling due at once, a wave of registrations) pays one
//! sync of the database's log per batch rather than one per transition, and a lone transition
//! waits for nothing. Each keeps its own outcome (see [`store::commit_all`]).

use std::time::SystemTime;

use doorzet_store::Database;
use tokio::sync::{mpsc, oneshot};

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

impl Committer {
    /// Starts the writer on `db`; it stops when the last clone is dropped.
    pub(super) fn spawn(db: Database) -> Self {
        let (jobs, mut queue) = mpsc::channel::<Job>(4 * MAX_BATCH);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let outcomes = {
                    let writes: Vec<(&store::Write, SystemTime)> =
                        batch.iter().map(|(w, at, _)| (w, *at)).collect();
                    store::commit_all(&db, &writes).await
                };
                match outcomes {
                    Ok(outcomes) => {
                        for ((_, _, reply), outcome) in batch.drain(..).zip(outcomes) {
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
