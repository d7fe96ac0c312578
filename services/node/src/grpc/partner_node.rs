//! `PartnerNode` on the mesh listener: facts under a participation grant and the disclosure rule,
//! notifications from the coordinator into the inbox. Mandates are served from the mandate store.

use std::sync::Arc;
use std::time::SystemTime;

use doorzet_domain::Oin;
use doorzet_mesh::Caller;
use doorzet_mesh::directory::Directory;
use doorzet_proto::convert::ConvertError;
use doorzet_proto::v1::{self, partner_node_server};
use doorzet_store::Database;
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use crate::store::{disclosures, inbox};
use crate::{Error, facts, gossip};

/// The `PartnerNode` service.
#[derive(Debug, Clone)]
pub struct PartnerNodeService {
    /// The node's database.
    pub db: Database,
    /// The directory in force.
    pub directory: Arc<Directory>,
    /// Grants whose signature verified.
    pub grants: crate::grant::Verified,
    /// Cases as QueryFacts reads them.
    pub cases: crate::case_cache::CaseCache,
    /// Stores disclosure records (group commit).
    pub disclosures: disclosures::Writer,
    /// Wakes the audit appender after a disclosure record is stored.
    pub audit_wake: Arc<Notify>,
    /// This organisation.
    pub org: Oin,
    /// The audit log's view, to compare callers' checkpoints with.
    pub audit: crate::audit_watch::AuditWatch,
    /// Notifications delivered again (`doorzet_node_notifications_repeated_total`).
    pub repeated: prometheus_client::metrics::counter::Counter,
}

impl PartnerNodeService {
    fn snapshot(&self) -> Result<Arc<doorzet_mesh::directory::Snapshot>, Error> {
        self.directory
            .current()
            .ok_or_else(|| Error::FailedPrecondition("no directory yet".into()))
    }
}

#[tonic::async_trait]
impl partner_node_server::PartnerNode for PartnerNodeService {
    async fn list_mandates(
        &self,
        request: Request<v1::ListMandatesRequest>,
    ) -> Result<Response<v1::ListMandatesResponse>, Status> {
        Caller::from_request(&request)?;
        gossip::observe(&self.audit, &request);
        let filter = crate::store::mandates::Filter::parse(request.into_inner(), SystemTime::now())
            .map_err(Error::from)?;
        let mandates = crate::store::mandates::list(&self.db, &filter, false).await?;
        Ok(Response::new(v1::ListMandatesResponse {
            mandates: mandates
                .iter()
                .map(|m| m.to_pb(self.org, SystemTime::now()))
                .collect(),
        }))
    }

    async fn query_facts(
        &self,
        request: Request<v1::QueryFactsRequest>,
    ) -> Result<Response<v1::QueryFactsResponse>, Status> {
        let caller = Caller::from_request(&request)?.org;
        gossip::observe(&self.audit, &request);
        let snapshot = self.snapshot()?;
        let query = facts::Query::parse(caller, &snapshot, request.into_inner())?;
        let (answer, record) = facts::decide(
            &self.db,
            &self.cases,
            &self.grants,
            &snapshot,
            &query,
            SystemTime::now(),
        )
        .await?;
        // The disclosure log (stored before the answer leaves) is the record of every decision;
        // this line is for debugging only.
        tracing::debug!(
            disclosure = %record.disclosure_id,
            requester = %record.requester_org,
            outcome = record.outcome.as_str(),
            disclosed = record.disclosed_fact_ids.len(),
            withheld = record.withheld_fact_ids.len(),
            "facts query decided"
        );
        self.disclosures.write(record).await?;
        self.audit_wake.notify_one();
        Ok(Response::new(answer?))
    }

    async fn notify(
        &self,
        request: Request<v1::NotifyRequest>,
    ) -> Result<Response<v1::NotifyResponse>, Status> {
        let caller = Caller::from_request(&request)?.org;
        gossip::observe(&self.audit, &request);
        let snapshot = self.snapshot()?;
        if caller != snapshot.coordinator {
            return Err(Error::PermissionDenied(
                "only the coordinator delivers notifications".into(),
            )
            .into());
        }
        let n = request.into_inner();
        check_notification(&n).map_err(Error::from)?;
        let is_new = inbox::store(&self.db, &n, SystemTime::now()).await?;
        if !is_new {
            self.repeated.inc();
        }
        Ok(Response::new(v1::NotifyResponse { is_new }))
    }

    async fn notify_batch(
        &self,
        request: Request<v1::NotifyBatchRequest>,
    ) -> Result<Response<v1::NotifyBatchResponse>, Status> {
        let caller = Caller::from_request(&request)?.org;
        gossip::observe(&self.audit, &request);
        let snapshot = self.snapshot()?;
        if caller != snapshot.coordinator {
            return Err(Error::PermissionDenied(
                "only the coordinator delivers notifications".into(),
            )
            .into());
        }
        let batch = request.into_inner().notifications;
        if batch.is_empty() || batch.len() > MAX_NOTIFY_BATCH {
            return Err(Error::from(ConvertError::new(
                "notifications",
                format!("must hold 1 to {MAX_NOTIFY_BATCH} notifications"),
            ))
            .into());
        }
        for (i, n) in batch.iter().enumerate() {
            check_notification(n).map_err(|e| {
                Error::from(ConvertError::new(
                    "notifications",
                    format!("notification {}: {e}", i + 1),
                ))
            })?;
        }
        let is_new = inbox::store_all(&self.db, &batch, SystemTime::now()).await?;
        self.repeated
            .inc_by(is_new.iter().filter(|n| !**n).count() as u64);
        Ok(Response::new(v1::NotifyBatchResponse { is_new }))
    }
}

/// Most notifications in one `NotifyBatch`.
const MAX_NOTIFY_BATCH: usize = 256;

/// Checks a notification's id and event type.
fn check_notification(n: &v1::NotifyRequest) -> Result<(), ConvertError> {
    crate::ids::check_token(&n.notification_id)
        .map_err(|why| ConvertError::new("notification_id", why))?;
    match v1::EscalationEventType::try_from(n.event) {
        Ok(e) if e != v1::EscalationEventType::Unspecified => Ok(()),
        _ => Err(ConvertError::new("event", "must be a known event")),
    }
}
