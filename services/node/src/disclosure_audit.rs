//! Appends the disclosure log's metadata to the coordinator's audit log. Records are stored first
//! (so a request never waits on the coordinator) and appended in order in the background, in
//! batches, retried with backoff while the coordinator is unreachable; a record the coordinator
//! refuses as invalid (its recipient left the directory, say) is kept here only and counted.

use std::sync::Arc;
use std::time::Duration;

use doorzet_domain::Oin;
use doorzet_proto::v1::{self, audit_log_client::AuditLogClient};
use doorzet_store::Database;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::store::disclosures::{self, Outcome, Record};

/// Most facts one audit entry lists (the audit log's limit).
const FACTS_PER_ENTRY: usize = 64;
/// Records appended per call.
const BATCH: u32 = 200;

/// The background appender; `wake` after storing a record.
#[derive(Debug, Clone)]
pub struct Appender {
    /// The node's database.
    pub db: Database,
    /// The coordinator (mutual TLS, checked against the directory).
    pub coordinator: Channel,
    /// This organisation.
    pub org: Oin,
    /// Signalled when a record is stored.
    pub wake: Arc<Notify>,
    /// Records the coordinator refused (kept locally only).
    pub refused: Counter,
}

/// The audit entries for one record: one for the disclosed facts, one for the withheld ones, or
/// one refusal; facts split 64 per entry.
pub fn entries(org: Oin, record: &Record) -> Vec<v1::AuditEntry> {
    let base = |action: v1::AuditAction, outcome: v1::AuditOutcome| {
        let mut e = doorzet_audit::entry::new_entry(record.at, org, action);
        e.actor_subject = "doorzet-node".into();
        e.recipient_org = record.requester_org.clone();
        e.escalation_id = record.escalation_id.clone();
        e.case_ref = record.case_ref.clone();
        e.purpose = record.purpose.clone();
        e.outcome = outcome as i32;
        e
    };
    if record.outcome == Outcome::Refused {
        return vec![base(
            v1::AuditAction::FactsWithheld,
            v1::AuditOutcome::Refused,
        )];
    }
    let mut out = Vec::new();
    let mut add = |action, outcome, ids: &[String], categories: &[String]| {
        for (ids, categories) in ids
            .chunks(FACTS_PER_ENTRY)
            .zip(categories.chunks(FACTS_PER_ENTRY))
        {
            let mut e = base(action, outcome);
            e.fact_ids = ids.to_vec();
            e.fact_categories = categories.to_vec();
            out.push(e);
        }
    };
    add(
        v1::AuditAction::FactsDisclosed,
        v1::AuditOutcome::Success,
        &record.disclosed_fact_ids,
        &record.disclosed_categories,
    );
    add(
        v1::AuditAction::FactsWithheld,
        v1::AuditOutcome::Refused,
        &record.withheld_fact_ids,
        &record.withheld_categories,
    );
    if out.is_empty() {
        // Nothing linked to the case reference: the request is on record all the same.
        out.push(base(
            v1::AuditAction::FactsWithheld,
            v1::AuditOutcome::Success,
        ));
    }
    out
}

impl Appender {
    /// Runs until `shutdown`.
    pub fn spawn(self, shutdown: CancellationToken) {
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(250);
            loop {
                match self.drain().await {
                    Ok(()) => {
                        backoff = Duration::from_millis(250);
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = self.wake.notified() => {}
                            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "disclosure records not yet in the audit log");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        });
    }

    /// Appends everything pending, in order.
    pub async fn drain(&self) -> Result<(), crate::Error> {
        let mut client = AuditLogClient::new(self.coordinator.clone());
        loop {
            let pending = disclosures::pending(&self.db, BATCH).await?;
            if pending.is_empty() {
                return Ok(());
            }
            let all: Vec<_> = pending
                .iter()
                .flat_map(|(_, r)| entries(self.org, r))
                .collect();
            match client.append(v1::AppendRequest { entries: all }).await {
                Ok(_) => {
                    disclosures::mark_appended(&self.db, pending[pending.len() - 1].0).await?;
                }
                Err(status) if status.code() == tonic::Code::InvalidArgument => {
                    // One record spoils the batch: append one by one, keep the refused here.
                    for (seq, record) in &pending {
                        let one = v1::AppendRequest {
                            entries: entries(self.org, record),
                        };
                        match client.append(one).await {
                            Ok(_) => disclosures::mark_appended(&self.db, *seq).await?,
                            Err(s) if s.code() == tonic::Code::InvalidArgument => {
                                tracing::error!(disclosure = %record.disclosure_id, reason = %s.message(), "disclosure record refused by the audit log; kept in the node's log only");
                                self.refused.inc();
                                disclosures::mark_local_only(&self.db, *seq).await?;
                                disclosures::mark_appended(&self.db, *seq).await?;
                            }
                            Err(s) => {
                                return Err(crate::Error::Coordinator(format!(
                                    "{}: {}",
                                    s.code(),
                                    s.message()
                                )));
                            }
                        }
                    }
                }
                Err(status) => {
                    return Err(crate::Error::Coordinator(format!(
                        "{}: {}",
                        status.code(),
                        status.message()
                    )));
                }
            }
        }
    }
}
