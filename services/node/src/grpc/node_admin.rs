//! `NodeAdmin` on the local listener: the organisation's own systems and staff, each with a token
//! the organisation issued.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use doorzet_domain::Oin;
use doorzet_domain::disclosure::{Basis, GivenBy, Recipient};
use doorzet_domain::mandate::Ladder;
use doorzet_mesh::directory::Directory;
use doorzet_mesh::{Caller, Person};
use doorzet_proto::convert::{self, ConvertError};
use doorzet_proto::v1::{self, node_admin_server};
use doorzet_store::{Database, from_millis, millis};
use tonic::{Request, Response, Status};

use crate::config::Access;
use crate::store::{cases, disclosures, inbox, mandates};
use crate::{Error, ids};

/// The `NodeAdmin` service.
#[derive(Debug, Clone)]
pub struct NodeAdminService {
    org: Oin,
    directory: Arc<Directory>,
    audit: crate::audit_watch::AuditWatch,
    clear_roles: Arc<Vec<String>>,
    db: Database,
    access: Arc<Access>,
    ladder: Arc<Ladder>,
    tls: Arc<doorzet_mesh::ReloadingTls>,
    request_timeout: std::time::Duration,
    members: Arc<std::sync::Mutex<std::collections::HashMap<Oin, tonic::transport::Channel>>>,
    bsn: crate::sealed::BsnKeys,
    cache: crate::case_cache::CaseCache,
    coordinator: tonic::transport::Channel,
    coordinator_org: Oin,
    disclosures: disclosures::Writer,
}

impl NodeAdminService {
    /// Makes the service for the node configured by `config`.
    #[allow(clippy::too_many_arguments)] // the node's parts, wired once in `serve`
    pub fn new(
        config: &crate::NodeConfig,
        directory: Arc<Directory>,
        audit: crate::audit_watch::AuditWatch,
        db: Database,
        tls: Arc<doorzet_mesh::ReloadingTls>,
        bsn: crate::sealed::BsnKeys,
        cache: crate::case_cache::CaseCache,
        coordinator: tonic::transport::Channel,
        disclosures: disclosures::Writer,
    ) -> Self {
        Self {
            org: config.org,
            directory,
            audit,
            clear_roles: Arc::new(config.audit.clear_roles.clone()),
            db,
            access: Arc::new(config.access.clone()),
            ladder: Arc::new(Ladder {
                max_tier: config.ladder.max_tier,
                roles: config.ladder.roles.iter().cloned().collect(),
            }),
            tls,
            request_timeout: config.limits.request_timeout,
            members: Arc::default(),
            bsn,
            cache,
            coordinator,
            coordinator_org: config.coordinator.org,
            disclosures,
        }
    }

    /// A channel to another member's node, checked against the directory on every connection.
    fn member(&self, org: Oin) -> Result<tonic::transport::Channel, Error> {
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = members.get(&org) {
            return Ok(channel.clone());
        }
        let snapshot = self
            .directory
            .current()
            .ok_or_else(|| Error::FailedPrecondition("no directory yet".into()))?;
        let member = snapshot
            .member(&org)
            .ok_or_else(|| Error::NotFound(format!("{org} is not a member of the directory")))?;
        let channel = doorzet_mesh::client::member_channel(
            self.tls.clone(),
            &member.mesh_endpoint,
            org,
            self.directory.clone(),
            self.request_timeout,
        )?;
        members.insert(org, channel.clone());
        Ok(channel)
    }
}

/// The case reference of escalation request `request_id` for local case `case_id`: `case-` and 20
/// letters from their hash.
fn case_ref_for(case_id: &str, request_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(case_id.as_bytes())
        .chain_update([0])
        .chain_update(request_id.as_bytes())
        .finalize();
    let letters: String = digest[..20]
        .iter()
        .map(|b| (b'a' + b % 26) as char)
        .collect();
    format!("case-{letters}")
}

/// The person calling, when their role is among `roles`.
fn person_in<T>(request: &Request<T>, roles: &[String], work: &str) -> Result<Person, Status> {
    let person = Caller::from_request(request)?
        .person()
        .map_err(Error::from)?
        .clone();
    if !roles.contains(&person.role) {
        return Err(
            Error::PermissionDenied(format!("role `{}` may not {work}", person.role)).into(),
        );
    }
    Ok(person)
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Status {
    Error::InvalidArgument(ConvertError::new(field, reason)).into()
}

fn domain_invalid(prefix: &'static str, e: doorzet_domain::Invalid) -> Status {
    invalid(prefix, format!("{}: {}", e.field, e.reason))
}

fn page(limit: u32) -> u32 {
    if limit == 0 { 100 } else { limit.min(1000) }
}

fn case_pb(c: &cases::Case) -> v1::Case {
    v1::Case {
        case_id: c.case_id.clone(),
        local_id: c.local_id.clone(),
        has_bsn: c.has_bsn,
        created_at: Some(c.created_at.into()),
    }
}

fn recipients_pb(b: &Basis) -> v1::Recipients {
    let mut r = v1::Recipients::default();
    for recipient in &b.recipients {
        match recipient {
            Recipient::Org(o) => r.org_ids.push(o.to_string()),
            Recipient::Kind(k) => r.kinds.push(v1::OrganisationKind::from(*k) as i32),
        }
    }
    r
}

fn recipients_from(
    field: &'static str,
    r: Option<v1::Recipients>,
) -> Result<BTreeSet<Recipient>, Status> {
    let r = r.unwrap_or_default();
    let mut out = BTreeSet::new();
    for o in &r.org_ids {
        out.insert(Recipient::Org(convert::oin(field, o).map_err(Error::from)?));
    }
    for k in &r.kinds {
        out.insert(Recipient::Kind(
            convert::org_kind(field, *k).map_err(Error::from)?,
        ));
    }
    Ok(out)
}

fn vocab_set<T: Ord + std::str::FromStr<Err = doorzet_domain::ParseError>>(
    field: &'static str,
    values: &[String],
) -> Result<BTreeSet<T>, Status> {
    values
        .iter()
        .map(|v| convert::vocab(field, v).map_err(|e| Error::from(e).into()))
        .collect()
}

/// A stored basis as the contract shows it.
enum BasisPb {
    Consent(v1::Consent),
    Law(v1::LegalBasis),
}

fn basis_pb(b: &cases::StoredBasis) -> BasisPb {
    let x = &b.basis;
    let categories = x.categories.iter().map(|c| c.to_string()).collect();
    let purposes = x.purposes.iter().map(|p| p.to_string()).collect();
    match &x.given_by {
        GivenBy::Law { law, article } => BasisPb::Law(v1::LegalBasis {
            legal_basis_id: b.basis_id.clone(),
            case_id: b.case_id.clone(),
            law: law.clone(),
            article: article.clone(),
            categories,
            recipients: Some(recipients_pb(x)),
            purposes,
            valid_from: Some(x.valid_from.into()),
            valid_until: x.valid_until.map(Into::into),
            recorded_by: b.recorded_by.clone(),
        }),
        giver => BasisPb::Consent(v1::Consent {
            consent_id: b.basis_id.clone(),
            case_id: b.case_id.clone(),
            given_by: if *giver == GivenBy::Person {
                v1::ConsentGiver::Person
            } else {
                v1::ConsentGiver::Representative
            } as i32,
            categories,
            recipients: Some(recipients_pb(x)),
            purposes,
            valid_from: Some(x.valid_from.into()),
            valid_until: x.valid_until.map(Into::into),
            withdrawn_at: x.withdrawn_at.map(Into::into),
            recorded_by: b.recorded_by.clone(),
        }),
    }
}

fn consent_of(stored: &cases::StoredBasis) -> Result<Response<v1::Consent>, Status> {
    match basis_pb(stored) {
        BasisPb::Consent(c) => Ok(Response::new(c)),
        BasisPb::Law(_) => Err(Status::internal("internal error")),
    }
}

fn disclosure_pb(r: disclosures::Record) -> v1::Disclosure {
    use disclosures::Outcome;
    v1::Disclosure {
        disclosure_id: r.disclosure_id,
        at: Some(r.at.into()),
        requester_org: r.requester_org,
        requester_person: r.requester_person,
        on_behalf_of_org: r.on_behalf_of_org,
        case_ref: r.case_ref,
        escalation_id: r.escalation_id,
        purpose: r.purpose,
        disclosed_fact_ids: r.disclosed_fact_ids,
        disclosed_categories: r.disclosed_categories,
        withheld_categories: r.withheld_categories,
        outcome: match r.outcome {
            Outcome::Disclosed => v1::DisclosureOutcome::Disclosed,
            Outcome::PartlyWithheld => v1::DisclosureOutcome::PartlyWithheld,
            Outcome::Withheld => v1::DisclosureOutcome::Withheld,
            Outcome::Refused => v1::DisclosureOutcome::Refused,
        } as i32,
        refusal: r.refusal,
        grant_id: r.grant_id,
    }
}

/// A `request_id` a caller used before for another record.
fn request_id_taken() -> Error {
    Error::AlreadyExists("request_id: already used for another request".into())
}

impl NodeAdminService {
    /// Records a consent or legal basis. With a `request_id`, a retry returns what the first
    /// attempt recorded (`valid_from` left to the node counts as the same), and another request
    /// under the same id is `AlreadyExists`.
    #[allow(clippy::too_many_arguments)]
    async fn record_basis(
        &self,
        case_id: &str,
        basis: Basis,
        valid_from_given: bool,
        request_id: &str,
        person: &Person,
        now: SystemTime,
        prefix: &'static str,
    ) -> Result<cases::StoredBasis, Status> {
        basis.validate().map_err(|e| domain_invalid(prefix, e))?;
        cases::get_case(&self.db, case_id).await?;
        let kind = if prefix == "consent" {
            "consent"
        } else {
            "basis"
        };
        let basis_id = match request_id {
            "" => ids::random(kind),
            key => ids::keyed(kind, key).map_err(|why| invalid("request_id", why))?,
        };
        let stored = cases::StoredBasis {
            basis_id,
            case_id: case_id.to_owned(),
            basis,
            recorded_by: person.subject.clone(),
        };
        match cases::add_basis(&self.db, &stored, now).await {
            Ok(()) => {}
            Err(Error::AlreadyExists(_)) if !request_id.is_empty() => {
                let first = cases::bases(&self.db, case_id)
                    .await?
                    .into_iter()
                    .find(|b| b.basis_id == stored.basis_id)
                    .filter(|b| {
                        // As stored: to the millisecond, and `valid_from` as the first attempt set it.
                        let mut asked = stored.basis.clone();
                        asked.valid_from = if valid_from_given {
                            from_millis(millis(asked.valid_from))
                        } else {
                            b.basis.valid_from
                        };
                        asked.valid_until = asked.valid_until.map(|t| from_millis(millis(t)));
                        b.basis == asked
                    });
                return first.ok_or_else(|| request_id_taken().into());
            }
            Err(e) => return Err(e.into()),
        }
        self.cache.invalidate();
        Ok(stored)
    }

    async fn save_mandate(
        &self,
        person: &Person,
        pb: Option<v1::Mandate>,
        create: bool,
    ) -> Result<v1::Mandate, Status> {
        let now = SystemTime::now();
        let pb = pb.ok_or_else(|| invalid("mandate", "must be set"))?;
        let terms = mandates::terms_from_pb(&pb, now).map_err(Error::from)?;
        terms
            .validate(&self.ladder, now)
            .map_err(|e| domain_invalid("mandate", e))?;
        let mandate_id = if pb.mandate_id.is_empty() {
            if !create {
                return Err(invalid("mandate.mandate_id", "must be set"));
            }
            ids::random("mandate")
        } else {
            ids::check_token(&pb.mandate_id).map_err(|why| invalid("mandate.mandate_id", why))?;
            pb.mandate_id.clone()
        };
        let stored = mandates::StoredMandate { mandate_id, terms };
        if !create {
            mandates::get(&self.db, &stored.mandate_id).await?;
        }
        mandates::save(&self.db, &stored, &person.subject, create, now).await?;
        self.announce_mandates_changed().await;
        Ok(stored.to_pb(self.org, now))
    }

    /// Tells the coordinator this organisation's mandates changed, so it drops its cached answers
    /// before the admin's call returns. A failure only delays the change there, by at most its
    /// `mandate_cache_ttl`.
    async fn announce_mandates_changed(&self) {
        let mut call = Request::new(v1::MandatesChangedRequest {});
        call.set_timeout(std::time::Duration::from_secs(2));
        crate::gossip::attach(&self.audit, &mut call);
        if let Err(status) =
            v1::coordinator_client::CoordinatorClient::new(self.coordinator.clone())
                .mandates_changed(call)
                .await
        {
            tracing::warn!(
                code = ?status.code(),
                "could not tell the coordinator that the mandates changed; it sees the change within its mandate_cache_ttl"
            );
        }
    }
}

#[tonic::async_trait]
impl node_admin_server::NodeAdmin for NodeAdminService {
    async fn who_am_i(
        &self,
        request: Request<v1::WhoAmIRequest>,
    ) -> Result<Response<v1::WhoAmIResponse>, Status> {
        let caller = Caller::from_request(&request)?;
        let person = caller.person().map_err(Error::from)?;
        Ok(Response::new(v1::WhoAmIResponse {
            org_id: caller.org.to_string(),
            subject: person.subject.clone(),
            role: person.role.clone(),
            expires_at: Some(person.expires_at.into()),
        }))
    }

    async fn get_node_status(
        &self,
        request: Request<v1::GetNodeStatusRequest>,
    ) -> Result<Response<v1::GetNodeStatusResponse>, Status> {
        Caller::from_request(&request)?
            .person()
            .map_err(Error::from)?;
        let now = SystemTime::now();
        let current = self.directory.current();
        let kind = current
            .as_ref()
            .and_then(|d| d.member(&self.org))
            .map_or(v1::OrganisationKind::Unspecified, |m| m.kind.into());
        Ok(Response::new(v1::GetNodeStatusResponse {
            org_id: self.org.to_string(),
            kind: kind as i32,
            directory_members: current.as_ref().map_or(0, |d| d.members.len() as u32),
            directory_version: current.as_ref().map_or(0, |d| d.version()),
            directory_fetched_at: current.as_ref().map(|d| d.obtained_at.into()),
            is_directory_stale: self.directory.usable(now).is_err(),
            audit_checkpoint_size: self.audit.verified_size(),
            audit_alarm: self.audit.alarm().unwrap_or_default(),
            audit_check_error: self.audit.check_error().unwrap_or_default(),
            audit_verified_at: self.audit.verified_at().map(Into::into),
            audit_verifier_key: self.audit.pinned_key(),
        }))
    }

    async fn clear_audit_alarm(
        &self,
        request: Request<v1::ClearAuditAlarmRequest>,
    ) -> Result<Response<v1::ClearAuditAlarmResponse>, Status> {
        let person = Caller::from_request(&request)?
            .person()
            .map_err(Error::from)?
            .clone();
        if !self.clear_roles.contains(&person.role) {
            return Err(Error::PermissionDenied(format!(
                "role `{}` may not clear the audit alarm; audit.clear_roles lists who may",
                person.role
            ))
            .into());
        }
        let req = request.into_inner();
        let reason = req.reason.trim();
        if reason.is_empty() || reason.chars().count() > 500 {
            return Err(
                Error::InvalidArgument(doorzet_proto::convert::ConvertError::new(
                    "reason",
                    "must hold 1 to 500 characters: the outcome of the investigation",
                ))
                .into(),
            );
        }
        let clearing = crate::audit_watch::Clearing {
            subject: person.subject,
            role: person.role,
            reason: reason.to_owned(),
            forget_checkpoints: req.forget_checkpoints,
        };
        let cleared_alarm = self.audit.clear(&clearing).await?;
        Ok(Response::new(v1::ClearAuditAlarmResponse { cleared_alarm }))
    }

    async fn create_mandate(
        &self,
        request: Request<v1::CreateMandateRequest>,
    ) -> Result<Response<v1::Mandate>, Status> {
        let person = person_in(&request, &self.access.mandate_roles, "manage mandates")?;
        let m = self
            .save_mandate(&person, request.into_inner().mandate, true)
            .await?;
        Ok(Response::new(m))
    }

    async fn update_mandate(
        &self,
        request: Request<v1::UpdateMandateRequest>,
    ) -> Result<Response<v1::Mandate>, Status> {
        let person = person_in(&request, &self.access.mandate_roles, "manage mandates")?;
        let m = self
            .save_mandate(&person, request.into_inner().mandate, false)
            .await?;
        Ok(Response::new(m))
    }

    async fn end_mandate(
        &self,
        request: Request<v1::EndMandateRequest>,
    ) -> Result<Response<v1::Mandate>, Status> {
        let person = person_in(&request, &self.access.mandate_roles, "manage mandates")?;
        let req = request.into_inner();
        let now = SystemTime::now();
        let mut stored = mandates::get(&self.db, &req.mandate_id).await?;
        let at = convert::time("ended_at", req.ended_at)
            .map_err(Error::from)?
            .unwrap_or(now);
        stored.terms.ended_at = Some(stored.terms.ended_at.map_or(at, |e| e.min(at)));
        mandates::save(&self.db, &stored, &person.subject, false, now).await?;
        self.announce_mandates_changed().await;
        Ok(Response::new(stored.to_pb(self.org, now)))
    }

    async fn list_own_mandates(
        &self,
        request: Request<v1::ListOwnMandatesRequest>,
    ) -> Result<Response<v1::ListMandatesResponse>, Status> {
        Caller::from_request(&request)?
            .person()
            .map_err(Error::from)?;
        let req = request.into_inner();
        let now = SystemTime::now();
        let filter =
            mandates::Filter::parse(req.filter.unwrap_or_default(), now).map_err(Error::from)?;
        let list = mandates::list(&self.db, &filter, req.include_not_current).await?;
        Ok(Response::new(v1::ListMandatesResponse {
            mandates: list.iter().map(|m| m.to_pb(self.org, now)).collect(),
        }))
    }

    async fn create_case(
        &self,
        request: Request<v1::CreateCaseRequest>,
    ) -> Result<Response<v1::Case>, Status> {
        let person = person_in(&request, &self.access.case_roles, "manage cases")?;
        let req = request.into_inner();
        ids::check_token(&req.local_id).map_err(|why| invalid("local_id", why))?;
        let case_id = ids::random("case");
        let sealed = if req.bsn.is_empty() {
            None
        } else {
            if req.bsn.len() != 9 || !doorzet_domain::bsn::passes_eleven_test(&req.bsn) {
                return Err(invalid(
                    "bsn",
                    "must be nine digits that pass the eleven-test",
                ));
            }
            Some(self.bsn.seal(&case_id, &req.bsn)?)
        };
        let case = cases::create_case(
            &self.db,
            &case_id,
            &req.local_id,
            sealed,
            &person.subject,
            SystemTime::now(),
        )
        .await?;
        Ok(Response::new(case_pb(&case)))
    }

    async fn get_case(
        &self,
        request: Request<v1::GetCaseRequest>,
    ) -> Result<Response<v1::CaseDetail>, Status> {
        person_in(&request, &self.access.case_roles, "read cases")?;
        let case_id = request.into_inner().case_id;
        let case = cases::get_case(&self.db, &case_id).await?;
        let mut detail = v1::CaseDetail {
            case: Some(case_pb(&case)),
            facts: cases::facts(&self.db, &case_id)
                .await?
                .into_iter()
                .map(|f| f.to_pb())
                .collect(),
            ..Default::default()
        };
        for b in cases::bases(&self.db, &case_id).await? {
            match basis_pb(&b) {
                BasisPb::Consent(consent) => detail.consents.push(consent),
                BasisPb::Law(law) => detail.legal_bases.push(law),
            }
        }
        detail.links = cases::links(&self.db, &case_id)
            .await?
            .into_iter()
            .map(|l| v1::CaseLink {
                case_id: l.case_id,
                case_ref: l.case_ref,
                subject_pseudonym: l.subject_pseudonym.unwrap_or_default(),
                linked_at: Some(l.linked_at.into()),
            })
            .collect();
        Ok(Response::new(detail))
    }

    async fn list_cases(
        &self,
        request: Request<v1::ListCasesRequest>,
    ) -> Result<Response<v1::ListCasesResponse>, Status> {
        person_in(&request, &self.access.case_roles, "read cases")?;
        let req = request.into_inner();
        let before = (!req.before_case_id.is_empty()).then_some(req.before_case_id.as_str());
        let list = cases::list_cases(&self.db, page(req.limit), before).await?;
        Ok(Response::new(v1::ListCasesResponse {
            cases: list.iter().map(case_pb).collect(),
        }))
    }

    async fn add_fact(
        &self,
        request: Request<v1::AddFactRequest>,
    ) -> Result<Response<v1::Fact>, Status> {
        let person = person_in(&request, &self.access.case_roles, "record facts")?;
        let req = request.into_inner();
        let fact = req.fact.ok_or_else(|| invalid("fact", "must be set"))?;
        cases::get_case(&self.db, &req.case_id).await?;
        let category = convert::vocab("fact.category", &fact.category).map_err(Error::from)?;
        if fact.value.trim().is_empty() || fact.value.chars().count() > 2000 {
            return Err(invalid("fact.value", "must be 1 to 2000 characters"));
        }
        if fact.source.trim().is_empty() || fact.source.chars().count() > 200 {
            return Err(invalid("fact.source", "must be 1 to 200 characters"));
        }
        let fact_id = match req.request_id.as_str() {
            "" => ids::random("fact"),
            key => ids::keyed("fact", key).map_err(|why| invalid("request_id", why))?,
        };
        let recorded_at_given = fact.recorded_at.is_some();
        let stored = cases::Fact {
            fact_id,
            case_id: req.case_id,
            category,
            value: fact.value,
            source: fact.source,
            recorded_at: convert::time("fact.recorded_at", fact.recorded_at)
                .map_err(Error::from)?
                .unwrap_or_else(SystemTime::now),
        };
        match cases::add_fact(&self.db, &stored, &person.subject).await {
            Ok(()) => {}
            // A retry of a named request: the fact the first attempt recorded, if it is this one.
            Err(Error::AlreadyExists(_)) if !req.request_id.is_empty() => {
                let first = cases::facts(&self.db, &stored.case_id)
                    .await?
                    .into_iter()
                    .find(|f| f.fact_id == stored.fact_id)
                    .filter(|f| {
                        f.category == stored.category
                            && f.value == stored.value
                            && f.source == stored.source
                            && (!recorded_at_given
                                || millis(f.recorded_at) == millis(stored.recorded_at))
                    });
                return first
                    .map(|f| Response::new(f.to_pb()))
                    .ok_or_else(|| request_id_taken().into());
            }
            Err(e) => return Err(e.into()),
        }
        self.cache.invalidate();
        Ok(Response::new(stored.to_pb()))
    }

    async fn record_consent(
        &self,
        request: Request<v1::RecordConsentRequest>,
    ) -> Result<Response<v1::Consent>, Status> {
        let person = person_in(&request, &self.access.case_roles, "record consents")?;
        let req = request.into_inner();
        let c = req
            .consent
            .ok_or_else(|| invalid("consent", "must be set"))?;
        let given_by = match v1::ConsentGiver::try_from(c.given_by) {
            Ok(v1::ConsentGiver::Person) => GivenBy::Person,
            Ok(v1::ConsentGiver::Representative) => GivenBy::Representative,
            _ => {
                return Err(invalid(
                    "consent.given_by",
                    "must be PERSON or REPRESENTATIVE",
                ));
            }
        };
        let now = SystemTime::now();
        let basis = Basis {
            given_by,
            categories: vocab_set("consent.categories", &c.categories)?,
            recipients: recipients_from("consent.recipients", c.recipients)?,
            purposes: vocab_set("consent.purposes", &c.purposes)?,
            valid_from: convert::time("consent.valid_from", c.valid_from)
                .map_err(Error::from)?
                .unwrap_or(now),
            valid_until: convert::time("consent.valid_until", c.valid_until)
                .map_err(Error::from)?,
            withdrawn_at: None,
        };
        let stored = self
            .record_basis(
                &c.case_id,
                basis,
                c.valid_from.is_some(),
                &req.request_id,
                &person,
                now,
                "consent",
            )
            .await?;
        consent_of(&stored)
    }

    async fn record_legal_basis(
        &self,
        request: Request<v1::RecordLegalBasisRequest>,
    ) -> Result<Response<v1::LegalBasis>, Status> {
        let person = person_in(&request, &self.access.case_roles, "record legal bases")?;
        let req = request.into_inner();
        let l = req
            .legal_basis
            .ok_or_else(|| invalid("legal_basis", "must be set"))?;
        let now = SystemTime::now();
        let basis = Basis {
            given_by: GivenBy::Law {
                law: l.law.clone(),
                article: l.article.clone(),
            },
            categories: vocab_set("legal_basis.categories", &l.categories)?,
            recipients: recipients_from("legal_basis.recipients", l.recipients)?,
            purposes: vocab_set("legal_basis.purposes", &l.purposes)?,
            valid_from: convert::time("legal_basis.valid_from", l.valid_from)
                .map_err(Error::from)?
                .unwrap_or(now),
            valid_until: convert::time("legal_basis.valid_until", l.valid_until)
                .map_err(Error::from)?,
            withdrawn_at: None,
        };
        let stored = self
            .record_basis(
                &l.case_id,
                basis,
                l.valid_from.is_some(),
                &req.request_id,
                &person,
                now,
                "legal_basis",
            )
            .await?;
        match basis_pb(&stored) {
            BasisPb::Law(law) => Ok(Response::new(law)),
            BasisPb::Consent(_) => Err(Status::internal("internal error")),
        }
    }

    async fn withdraw_consent(
        &self,
        request: Request<v1::WithdrawConsentRequest>,
    ) -> Result<Response<v1::Consent>, Status> {
        let person = person_in(&request, &self.access.case_roles, "withdraw consents")?;
        let id = request.into_inner().consent_id;
        let stored = cases::withdraw(&self.db, &id, SystemTime::now()).await?;
        self.cache.invalidate();
        tracing::info!(consent = %id, by = %person.subject, "consent withdrawn");
        consent_of(&stored)
    }

    async fn link_case(
        &self,
        request: Request<v1::LinkCaseRequest>,
    ) -> Result<Response<v1::CaseLink>, Status> {
        person_in(&request, &self.access.case_roles, "link cases")?;
        let req = request.into_inner();
        ids::check_case_ref(&req.case_ref).map_err(|why| invalid("case_ref", why))?;
        let pseudonym = if req.with_pseudonym {
            let sealed = cases::sealed_bsn(&self.db, &req.case_id)
                .await?
                .ok_or_else(|| {
                    Error::FailedPrecondition(
                        "the case has no BSN to derive a pseudonym from".into(),
                    )
                })?;
            let bsn = self.bsn.open(&req.case_id, &sealed)?;
            Some(self.bsn.pseudonym(&bsn)?)
        } else {
            None
        };
        let l = cases::link(
            &self.db,
            &req.case_id,
            &req.case_ref,
            pseudonym.as_deref(),
            SystemTime::now(),
        )
        .await?;
        self.cache.invalidate();
        Ok(Response::new(v1::CaseLink {
            case_id: l.case_id,
            case_ref: l.case_ref,
            subject_pseudonym: l.subject_pseudonym.unwrap_or_default(),
            linked_at: Some(l.linked_at.into()),
        }))
    }

    async fn query_partner_facts(
        &self,
        request: Request<v1::QueryPartnerFactsRequest>,
    ) -> Result<Response<v1::QueryFactsResponse>, Status> {
        let person = person_in(&request, &self.access.case_roles, "ask partners for facts")?;
        let req = request.into_inner();
        let org = convert::oin("org_id", &req.org_id).map_err(Error::from)?;
        if org == self.org {
            return Err(invalid(
                "org_id",
                "is this organisation; read the case with GetCase",
            ));
        }
        let mut call = Request::new(v1::QueryFactsRequest {
            grant: req.grant,
            case_ref: req.case_ref,
            categories: req.categories,
            requested_by: person.subject.clone(),
        });
        crate::gossip::attach(&self.audit, &mut call);
        let answer = v1::partner_node_client::PartnerNodeClient::new(self.member(org)?)
            .query_facts(call)
            .await
            .map_err(|status| Error::Member { org, status })?;
        Ok(Response::new(answer.into_inner()))
    }

    async fn escalate(
        &self,
        request: Request<v1::EscalateRequest>,
    ) -> Result<Response<v1::EscalateResponse>, Status> {
        let person = person_in(&request, &self.access.case_roles, "escalate cases")?;
        let req = request.into_inner();
        if req.request_id.is_empty() || req.request_id.len() > 64 {
            return Err(invalid("request_id", "must be 1 to 64 characters"));
        }
        cases::get_case(&self.db, &req.case_id).await?;
        // The case reference follows from the case and the request id, so a retry sends the very
        // same registration; letters only, so it never holds a BSN-shaped number.
        let case_ref = case_ref_for(&req.case_id, &req.request_id);
        let linked = cases::links(&self.db, &req.case_id).await?;
        if !linked.iter().any(|l| l.case_ref == case_ref) {
            cases::link(&self.db, &req.case_id, &case_ref, None, SystemTime::now()).await?;
            self.cache.invalidate();
        }
        let mut call = Request::new(v1::SubmitEscalationRequest {
            request_id: req.request_id,
            case_ref,
            tier: req.tier,
            urgent: req.urgent,
            categories: req.categories,
            tables_tried: req.tables_tried,
            question: req.question,
            asked_seats: req.asked_seats,
        });
        call.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", person.token)
                .parse()
                .map_err(|_| Error::FailedPrecondition("token is not ASCII".into()))?,
        );
        crate::gossip::attach(&self.audit, &mut call);
        let answer = v1::coordinator_client::CoordinatorClient::new(self.coordinator.clone())
            .submit_escalation(call)
            .await
            .map_err(|status| Error::Member {
                org: self.coordinator_org,
                status,
            })?;
        Ok(Response::new(v1::EscalateResponse {
            escalation: answer.into_inner().escalation,
        }))
    }

    async fn list_inbox(
        &self,
        request: Request<v1::ListInboxRequest>,
    ) -> Result<Response<v1::ListInboxResponse>, Status> {
        person_in(&request, &self.access.case_roles, "read the inbox")?;
        let req = request.into_inner();
        let items = inbox::list(
            &self.db,
            req.after,
            req.before,
            req.newest_first,
            page(req.limit),
        )
        .await?;
        Ok(Response::new(v1::ListInboxResponse { items }))
    }

    async fn list_disclosures(
        &self,
        request: Request<v1::ListDisclosuresRequest>,
    ) -> Result<Response<v1::ListDisclosuresResponse>, Status> {
        person_in(
            &request,
            &self.access.disclosure_roles,
            "read the disclosure log",
        )?;
        let req = request.into_inner();
        ids::check_case_ref(&req.case_ref).map_err(|why| invalid("case_ref", why))?;
        let list = self
            .disclosures
            .for_case_ref(&req.case_ref, page(req.limit))
            .await?;
        Ok(Response::new(v1::ListDisclosuresResponse {
            disclosures: list.into_iter().map(disclosure_pb).collect(),
        }))
    }
}
