//! `QueryFacts` as a decision: the grant is checked first (without a valid one the request is
//! refused as a whole), then each fact of the linked case is judged by the domain's disclosure
//! rule. Every outcome becomes a disclosure-log record. Fact values are personal data: they go
//! into the answer and nowhere else (no log line, span or metric).

use std::time::SystemTime;

use doorzet_domain::disclosure::{self, Asker, Decision, FactCategory};
use doorzet_domain::{Oin, OrgKind};
use doorzet_mesh::directory::Snapshot;
use doorzet_proto::convert::{ConvertError, vocab};
use doorzet_proto::v1;
use doorzet_store::Database;

use crate::store::disclosures::{Outcome, Record};
use crate::{Error, grant, ids};

/// A checked request.
#[derive(Debug)]
pub struct Query {
    /// The asking organisation (from its certificate).
    pub caller: Oin,
    /// Its kind (from the directory).
    pub kind: OrgKind,
    /// The person asking there.
    pub requested_by: String,
    /// The case reference.
    pub case_ref: String,
    /// Categories asked for; empty = all.
    pub categories: Vec<FactCategory>,
    /// The grant token.
    pub grant: String,
}

impl Query {
    /// Checks the request's fields; errors name the field.
    pub fn parse(
        caller: Oin,
        snapshot: &Snapshot,
        req: v1::QueryFactsRequest,
    ) -> Result<Self, Error> {
        ids::check_token(&req.requested_by)
            .map_err(|why| ConvertError::new("requested_by", why))?;
        ids::check_case_ref(&req.case_ref).map_err(|why| ConvertError::new("case_ref", why))?;
        let categories = req
            .categories
            .iter()
            .map(|c| vocab("categories", c))
            .collect::<Result<Vec<_>, _>>()?;
        let kind = snapshot
            .member(&caller)
            .map(|m| m.kind)
            .ok_or_else(|| Error::PermissionDenied("the caller is not a member".into()))?;
        Ok(Self {
            caller,
            kind,
            requested_by: req.requested_by,
            case_ref: req.case_ref,
            categories,
            grant: req.grant,
        })
    }

    fn record(&self, at: SystemTime) -> Record {
        Record {
            disclosure_id: ids::ordered("disc"),
            // The log keeps milliseconds: a record (and so its audit entry) is the same whether it
            // is appended from memory or, after a restart, read back.
            at: doorzet_store::from_millis(doorzet_store::millis(at)),
            requester_org: self.caller.as_str().to_owned(),
            requester_person: self.requested_by.clone(),
            on_behalf_of_org: String::new(),
            case_ref: self.case_ref.clone(),
            escalation_id: String::new(),
            purpose: String::new(),
            disclosed_fact_ids: Vec::new(),
            disclosed_categories: Vec::new(),
            withheld_fact_ids: Vec::new(),
            withheld_categories: Vec::new(),
            outcome: Outcome::Refused,
            refusal: String::new(),
            grant_id: String::new(),
        }
    }
}

/// Decides `query` at `now`: the answer (or the refusal) and the record to log either way.
pub async fn decide(
    db: &Database,
    cache: &crate::case_cache::CaseCache,
    grants: &grant::Verified,
    snapshot: &Snapshot,
    query: &Query,
    now: SystemTime,
) -> Result<(Result<v1::QueryFactsResponse, Error>, Record), Error> {
    let mut record = query.record(now);
    let grant = match grants.verify(snapshot, &query.grant, &query.caller, &query.case_ref, now) {
        Ok(grant) => grant,
        Err(e) => {
            record.refusal = e.to_string();
            return Ok((Err(e.into()), record));
        }
    };
    record.on_behalf_of_org = snapshot.coordinator.as_str().to_owned();
    record.escalation_id = grant.escalation_id.clone();
    record.purpose = grant.purpose.as_str().to_owned();
    record.grant_id = grant.id.clone();

    let asker = Asker {
        org: query.caller,
        kind: query.kind,
        purpose: grant.purpose,
        at: now,
    };
    let mut response = v1::QueryFactsResponse::default();
    if let Some(case) = cache.get(db, &query.case_ref).await? {
        for fact in &case.facts {
            if !query.categories.is_empty() && !query.categories.contains(&fact.category) {
                continue;
            }
            match disclosure::decide(fact.category, &case.bases, &asker) {
                Decision::Disclose { .. } => {
                    record.disclosed_fact_ids.push(fact.pb.fact_id.clone());
                    record
                        .disclosed_categories
                        .push(fact.category.as_str().to_owned());
                    response.facts.push(fact.pb.clone());
                }
                Decision::Withhold(reason) => {
                    record.withheld_fact_ids.push(fact.pb.fact_id.clone());
                    record
                        .withheld_categories
                        .push(fact.category.as_str().to_owned());
                    response.withheld.push(v1::WithheldFact {
                        category: fact.category.as_str().to_owned(),
                        reason: v1::WithheldReason::from(reason) as i32,
                    });
                }
            }
        }
    }
    record.outcome = match (response.facts.is_empty(), response.withheld.is_empty()) {
        (false, true) => Outcome::Disclosed,
        (false, false) => Outcome::PartlyWithheld,
        (true, _) => Outcome::Withheld,
    };
    response.disclosure_id = record.disclosure_id.clone();
    Ok((Ok(response), record))
}
