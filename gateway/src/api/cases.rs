//! The organisation's own cases at its node: facts, consents and legal bases, links to an
//! escalation's case reference, and the disclosure log; plus the node's status (its directory copy
//! and the audit log's last verified checkpoint) and the region's directory. Fact contents appear
//! only here, to the organisation's own staff whose role the node allows.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use doorzet_proto::v1;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::convert::{opt_time_in, rest_enum, time_out};
use super::{AppState, Body, IdempotencyHeader, Page, Params, Refused};
use crate::error::Problem;
use crate::upstream::{IdempotencyKey, Token};

fn created<T: Serialize>(location: String, body: T) -> Response {
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response()
}

/// A local case. The BSN, if stored, never leaves the node: only whether there is one.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Case {
    /// The node's id of the case.
    pub case_id: String,
    /// The organisation's own identifier of the case.
    pub local_id: String,
    /// A BSN is stored (encrypted, at the node).
    pub has_bsn: bool,
    /// When it was created (RFC 3339).
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
}

impl From<v1::Case> for Case {
    fn from(c: v1::Case) -> Self {
        Self {
            case_id: c.case_id,
            local_id: c.local_id,
            has_bsn: c.has_bsn,
            created_at: time_out(c.created_at),
        }
    }
}

/// A new local case.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewCase {
    /// The organisation's own identifier of the case.
    pub local_id: String,
    /// The person's BSN, kept encrypted at the node and never sent across the mesh.
    #[serde(default)]
    pub bsn: String,
}

/// A fact about a case.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Fact {
    /// Its id.
    pub fact_id: String,
    /// Its category, e.g. `eviction_date`.
    pub category: String,
    /// The content.
    pub value: String,
    /// Where it comes from.
    pub source: String,
    /// When it was recorded (RFC 3339).
    #[schema(format = DateTime)]
    pub recorded_at: Option<String>,
}

impl From<v1::Fact> for Fact {
    fn from(f: v1::Fact) -> Self {
        Self {
            fact_id: f.fact_id,
            category: f.category,
            value: f.value,
            source: f.source,
            recorded_at: time_out(f.recorded_at),
        }
    }
}

/// A new fact.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewFact {
    /// Its category: `living_situation`, `eviction_date`, `legal_title`,
    /// `required_security_level`, `current_provider`, `diagnosis_group`, `risk_signal` or
    /// `financing`.
    pub category: String,
    /// The content.
    pub value: String,
    /// Where it comes from.
    pub source: String,
}

rest_enum!(
    /// A kind of organisation.
    OrganisationKind => v1::OrganisationKind {
        Municipality,
        MentalHealthInstitution,
        CareOffice,
        HealthInsurer,
        CareAndSafetyHouse,
        HousingCorporation,
        Police,
        PublicProsecutor,
        ClientSupport,
        Other,
    }
);

rest_enum!(
    /// Who gave a consent.
    ConsentGiver => v1::ConsentGiver {
        Person,
        Representative,
    }
);

/// Who a consent or legal basis lets see the facts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Recipients {
    /// Organisations, by OIN.
    #[serde(default)]
    pub org_ids: Vec<String>,
    /// Kinds of organisation.
    #[serde(default)]
    pub kinds: Vec<OrganisationKind>,
}

fn recipients_out(r: Option<v1::Recipients>) -> Recipients {
    let r = r.unwrap_or_default();
    Recipients {
        org_ids: r.org_ids,
        kinds: r
            .kinds
            .into_iter()
            .filter_map(OrganisationKind::from_proto)
            .collect(),
    }
}

fn recipients_in(r: Recipients) -> v1::Recipients {
    v1::Recipients {
        org_ids: r.org_ids,
        kinds: r.kinds.into_iter().map(|k| k.to_proto() as i32).collect(),
    }
}

/// A consent given by the person or a representative.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Consent {
    /// Its id.
    pub consent_id: String,
    /// The case.
    pub case_id: String,
    /// Who gave it.
    pub given_by: Option<ConsentGiver>,
    /// The fact categories it covers.
    pub categories: Vec<String>,
    /// Who may see them.
    pub recipients: Recipients,
    /// For which purposes.
    pub purposes: Vec<String>,
    /// From (RFC 3339, inclusive).
    #[schema(format = DateTime)]
    pub valid_from: Option<String>,
    /// Until (RFC 3339, exclusive).
    #[schema(format = DateTime)]
    pub valid_until: Option<String>,
    /// When it was withdrawn (RFC 3339); from then on it covers nothing.
    #[schema(format = DateTime)]
    pub withdrawn_at: Option<String>,
    /// Who recorded it.
    pub recorded_by: String,
}

impl From<v1::Consent> for Consent {
    fn from(c: v1::Consent) -> Self {
        Self {
            consent_id: c.consent_id,
            case_id: c.case_id,
            given_by: ConsentGiver::from_proto(c.given_by),
            categories: c.categories,
            recipients: recipients_out(c.recipients),
            purposes: c.purposes,
            valid_from: time_out(c.valid_from),
            valid_until: time_out(c.valid_until),
            withdrawn_at: time_out(c.withdrawn_at),
            recorded_by: c.recorded_by,
        }
    }
}

/// A consent to record.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewConsent {
    /// Who gave it.
    pub given_by: ConsentGiver,
    /// The fact categories it covers.
    pub categories: Vec<String>,
    /// Who may see them.
    pub recipients: Recipients,
    /// For which purposes: `escalation_meeting`, `follow_up`, `urgent_intervention`.
    pub purposes: Vec<String>,
    /// From (RFC 3339, inclusive); absent: now.
    #[schema(format = DateTime)]
    pub valid_from: Option<String>,
    /// Until (RFC 3339, exclusive); absent: until withdrawn.
    #[schema(format = DateTime)]
    pub valid_until: Option<String>,
}

/// A legal basis (a law and article) that allows disclosure without consent.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LegalBasis {
    /// Its id.
    pub legal_basis_id: String,
    /// The case.
    pub case_id: String,
    /// The law.
    pub law: String,
    /// The article.
    pub article: String,
    /// The fact categories it covers.
    pub categories: Vec<String>,
    /// Who may see them.
    pub recipients: Recipients,
    /// For which purposes.
    pub purposes: Vec<String>,
    /// From (RFC 3339, inclusive).
    #[schema(format = DateTime)]
    pub valid_from: Option<String>,
    /// Until (RFC 3339, exclusive).
    #[schema(format = DateTime)]
    pub valid_until: Option<String>,
    /// Who recorded it.
    pub recorded_by: String,
}

impl From<v1::LegalBasis> for LegalBasis {
    fn from(l: v1::LegalBasis) -> Self {
        Self {
            legal_basis_id: l.legal_basis_id,
            case_id: l.case_id,
            law: l.law,
            article: l.article,
            categories: l.categories,
            recipients: recipients_out(l.recipients),
            purposes: l.purposes,
            valid_from: time_out(l.valid_from),
            valid_until: time_out(l.valid_until),
            recorded_by: l.recorded_by,
        }
    }
}

/// A legal basis to record.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewLegalBasis {
    /// The law, e.g. `Wet verplichte ggz`.
    pub law: String,
    /// The article.
    pub article: String,
    /// The fact categories it covers.
    pub categories: Vec<String>,
    /// Who may see them.
    pub recipients: Recipients,
    /// For which purposes.
    pub purposes: Vec<String>,
    /// From (RFC 3339, inclusive); absent: now.
    #[schema(format = DateTime)]
    pub valid_from: Option<String>,
    /// Until (RFC 3339, exclusive).
    #[schema(format = DateTime)]
    pub valid_until: Option<String>,
}

/// A link from a case to an escalation's case reference.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaseLink {
    /// The case.
    pub case_id: String,
    /// The case reference.
    pub case_ref: String,
    /// The subject pseudonym, when asked for.
    pub subject_pseudonym: String,
    /// When it was linked (RFC 3339).
    #[schema(format = DateTime)]
    pub linked_at: Option<String>,
}

impl From<v1::CaseLink> for CaseLink {
    fn from(l: v1::CaseLink) -> Self {
        Self {
            case_id: l.case_id,
            case_ref: l.case_ref,
            subject_pseudonym: l.subject_pseudonym,
            linked_at: time_out(l.linked_at),
        }
    }
}

/// A link to make.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewLink {
    /// The escalation's case reference.
    pub case_ref: String,
    /// Also derive the subject pseudonym.
    #[serde(default)]
    pub with_pseudonym: bool,
}

/// A case with everything recorded about it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaseDetail {
    /// The case.
    pub case: Case,
    /// Its facts.
    pub facts: Vec<Fact>,
    /// Its consents.
    pub consents: Vec<Consent>,
    /// Its legal bases.
    pub legal_bases: Vec<LegalBasis>,
    /// Its links to case references.
    pub links: Vec<CaseLink>,
}

/// Paging through cases, newest first.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CaseQuery {
    /// The `nextPageToken` of the previous page.
    pub page_token: Option<String>,
    /// At most this many (default 50).
    pub page_size: Option<u32>,
}

/// Creates a local case.
#[utoipa::path(post, path = "/cases", tag = "partner", request_body = NewCase,
    params(IdempotencyHeader),
    responses((status = 201, description = "Created", body = Case), Refused),
    security(("bearer" = [])))]
pub(crate) async fn create_case(
    State(state): State<AppState>,
    token: Token,
    Body(body): Body<NewCase>,
) -> Result<Response, Problem> {
    let case = state
        .upstreams
        .node()?
        .create_case(token.request(v1::CreateCaseRequest {
            local_id: body.local_id,
            bsn: body.bsn,
        }))
        .await?
        .into_inner();
    Ok(created(
        format!("/api/v1/cases/{}", case.case_id),
        Case::from(case),
    ))
}

/// Lists the organisation's cases, newest first.
#[utoipa::path(get, path = "/cases", tag = "partner", params(CaseQuery),
    responses((status = 200, description = "One page", body = Page<Case>), Refused),
    security(("bearer" = [])))]
pub(crate) async fn list_cases(
    State(state): State<AppState>,
    token: Token,
    Params(q): Params<CaseQuery>,
) -> Result<Json<Page<Case>>, Problem> {
    let limit = q.page_size.unwrap_or(50);
    let cases = state
        .upstreams
        .node()?
        .list_cases(token.request(v1::ListCasesRequest {
            limit,
            before_case_id: q.page_token.unwrap_or_default(),
        }))
        .await?
        .into_inner()
        .cases;
    let next = if cases.len() as u32 >= limit.max(1) {
        cases.last().map(|c| c.case_id.clone()).unwrap_or_default()
    } else {
        String::new()
    };
    Ok(Json(Page::new(
        cases.into_iter().map(Case::from).collect(),
        next,
    )))
}

/// A case with its facts, consents, legal bases and links.
#[utoipa::path(get, path = "/cases/{caseId}", tag = "partner",
    params(("caseId" = String, Path, description = "The case")),
    responses((status = 200, description = "The case", body = CaseDetail), Refused),
    security(("bearer" = [])))]
pub(crate) async fn get_case(
    State(state): State<AppState>,
    token: Token,
    Path(case_id): Path<String>,
) -> Result<Json<CaseDetail>, Problem> {
    let d = state
        .upstreams
        .node()?
        .get_case(token.request(v1::GetCaseRequest { case_id }))
        .await?
        .into_inner();
    Ok(Json(CaseDetail {
        case: d.case.unwrap_or_default().into(),
        facts: d.facts.into_iter().map(Fact::from).collect(),
        consents: d.consents.into_iter().map(Consent::from).collect(),
        legal_bases: d.legal_bases.into_iter().map(LegalBasis::from).collect(),
        links: d.links.into_iter().map(CaseLink::from).collect(),
    }))
}

/// Records a fact about a case.
#[utoipa::path(post, path = "/cases/{caseId}/facts", tag = "partner", request_body = NewFact,
    params(("caseId" = String, Path, description = "The case"), IdempotencyHeader),
    responses((status = 201, description = "Recorded", body = Fact), Refused),
    security(("bearer" = [])))]
pub(crate) async fn add_fact(
    State(state): State<AppState>,
    token: Token,
    key: Option<IdempotencyKey>,
    Path(case_id): Path<String>,
    Body(body): Body<NewFact>,
) -> Result<Response, Problem> {
    // The node keeps the key with the record, so a retry is safe across gateway restarts too.
    let request_id = key.map(|k| k.0).unwrap_or_default();
    let fact = state
        .upstreams
        .node()?
        .add_fact(token.request(v1::AddFactRequest {
            case_id: case_id.clone(),
            fact: Some(v1::Fact {
                category: body.category,
                value: body.value,
                source: body.source,
                ..Default::default()
            }),
            request_id,
        }))
        .await?
        .into_inner();
    Ok(created(
        format!("/api/v1/cases/{case_id}"),
        Fact::from(fact),
    ))
}

/// Records a consent.
#[utoipa::path(post, path = "/cases/{caseId}/consents", tag = "partner", request_body = NewConsent,
    params(("caseId" = String, Path, description = "The case"), IdempotencyHeader),
    responses((status = 201, description = "Recorded", body = Consent), Refused),
    security(("bearer" = [])))]
pub(crate) async fn record_consent(
    State(state): State<AppState>,
    token: Token,
    key: Option<IdempotencyKey>,
    Path(case_id): Path<String>,
    Body(body): Body<NewConsent>,
) -> Result<Response, Problem> {
    // The node keeps the key with the record, so a retry is safe across gateway restarts too.
    let request_id = key.map(|k| k.0).unwrap_or_default();
    let consent = state
        .upstreams
        .node()?
        .record_consent(token.request(v1::RecordConsentRequest {
            consent: Some(v1::Consent {
                case_id: case_id.clone(),
                given_by: body.given_by.to_proto() as i32,
                categories: body.categories,
                recipients: Some(recipients_in(body.recipients)),
                purposes: body.purposes,
                valid_from: opt_time_in("validFrom", body.valid_from.as_deref())?,
                valid_until: opt_time_in("validUntil", body.valid_until.as_deref())?,
                ..Default::default()
            }),
            request_id,
        }))
        .await?
        .into_inner();
    Ok(created(
        format!("/api/v1/cases/{case_id}"),
        Consent::from(consent),
    ))
}

/// Records a legal basis.
#[utoipa::path(post, path = "/cases/{caseId}/legal-bases", tag = "partner", request_body = NewLegalBasis,
    params(("caseId" = String, Path, description = "The case"), IdempotencyHeader),
    responses((status = 201, description = "Recorded", body = LegalBasis), Refused),
    security(("bearer" = [])))]
pub(crate) async fn record_legal_basis(
    State(state): State<AppState>,
    token: Token,
    key: Option<IdempotencyKey>,
    Path(case_id): Path<String>,
    Body(body): Body<NewLegalBasis>,
) -> Result<Response, Problem> {
    // The node keeps the key with the record, so a retry is safe across gateway restarts too.
    let request_id = key.map(|k| k.0).unwrap_or_default();
    let basis = state
        .upstreams
        .node()?
        .record_legal_basis(token.request(v1::RecordLegalBasisRequest {
            legal_basis: Some(v1::LegalBasis {
                case_id: case_id.clone(),
                law: body.law,
                article: body.article,
                categories: body.categories,
                recipients: Some(recipients_in(body.recipients)),
                purposes: body.purposes,
                valid_from: opt_time_in("validFrom", body.valid_from.as_deref())?,
                valid_until: opt_time_in("validUntil", body.valid_until.as_deref())?,
                ..Default::default()
            }),
            request_id,
        }))
        .await?
        .into_inner();
    Ok(created(
        format!("/api/v1/cases/{case_id}"),
        LegalBasis::from(basis),
    ))
}

/// Withdraws a consent; from this moment it covers nothing.
#[utoipa::path(post, path = "/consents/{consentId}/withdrawal", tag = "partner",
    params(("consentId" = String, Path, description = "The consent"), IdempotencyHeader),
    responses((status = 200, description = "The withdrawn consent", body = Consent), Refused),
    security(("bearer" = [])))]
pub(crate) async fn withdraw_consent(
    State(state): State<AppState>,
    token: Token,
    Path(consent_id): Path<String>,
) -> Result<Json<Consent>, Problem> {
    let consent = state
        .upstreams
        .node()?
        .withdraw_consent(token.request(v1::WithdrawConsentRequest { consent_id }))
        .await?
        .into_inner();
    Ok(Json(consent.into()))
}

/// Links a case to an escalation's case reference.
#[utoipa::path(post, path = "/cases/{caseId}/links", tag = "partner", request_body = NewLink,
    params(("caseId" = String, Path, description = "The case"), IdempotencyHeader),
    responses((status = 201, description = "Linked", body = CaseLink), Refused),
    security(("bearer" = [])))]
pub(crate) async fn link_case(
    State(state): State<AppState>,
    token: Token,
    Path(case_id): Path<String>,
    Body(body): Body<NewLink>,
) -> Result<Response, Problem> {
    let link = state
        .upstreams
        .node()?
        .link_case(token.request(v1::LinkCaseRequest {
            case_id: case_id.clone(),
            case_ref: body.case_ref,
            with_pseudonym: body.with_pseudonym,
        }))
        .await?
        .into_inner();
    Ok(created(
        format!("/api/v1/cases/{case_id}"),
        CaseLink::from(link),
    ))
}

rest_enum!(
    /// The outcome of a request for facts.
    DisclosureOutcome => v1::DisclosureOutcome {
        Disclosed,
        PartlyWithheld,
        Withheld,
        Refused,
    }
);

/// One decision on a request for facts (NEN 7513 fields). Which facts, never their contents.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Disclosure {
    /// Its id.
    pub disclosure_id: String,
    /// When (RFC 3339).
    #[schema(format = DateTime)]
    pub at: Option<String>,
    /// The organisation that asked.
    pub requester_org: String,
    /// The person who asked.
    pub requester_person: String,
    /// On whose behalf.
    pub on_behalf_of_org: String,
    /// The case reference.
    pub case_ref: String,
    /// The escalation.
    pub escalation_id: String,
    /// The purpose.
    pub purpose: String,
    /// The facts disclosed, by id.
    pub disclosed_fact_ids: Vec<String>,
    /// The categories disclosed.
    pub disclosed_categories: Vec<String>,
    /// The categories withheld.
    pub withheld_categories: Vec<String>,
    /// The outcome.
    pub outcome: Option<DisclosureOutcome>,
    /// Why it was refused.
    pub refusal: String,
    /// The grant read, if any.
    pub grant_id: String,
}

/// Which disclosures.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DisclosureQuery {
    /// The case reference.
    pub case_ref: String,
    /// At most this many (default 100).
    pub page_size: Option<u32>,
}

/// The disclosure log for a case reference: who asked for what, and what they got.
#[utoipa::path(get, path = "/disclosures", tag = "partner", params(DisclosureQuery),
    responses((status = 200, description = "The log, newest first (one page)", body = Page<Disclosure>), Refused),
    security(("bearer" = [])))]
pub(crate) async fn disclosures(
    State(state): State<AppState>,
    token: Token,
    Params(q): Params<DisclosureQuery>,
) -> Result<Json<Page<Disclosure>>, Problem> {
    let items = state
        .upstreams
        .node()?
        .list_disclosures(token.request(v1::ListDisclosuresRequest {
            case_ref: q.case_ref,
            limit: q.page_size.unwrap_or(100),
        }))
        .await?
        .into_inner()
        .disclosures
        .into_iter()
        .map(|d| Disclosure {
            disclosure_id: d.disclosure_id,
            at: time_out(d.at),
            requester_org: d.requester_org,
            requester_person: d.requester_person,
            on_behalf_of_org: d.on_behalf_of_org,
            case_ref: d.case_ref,
            escalation_id: d.escalation_id,
            purpose: d.purpose,
            disclosed_fact_ids: d.disclosed_fact_ids,
            disclosed_categories: d.disclosed_categories,
            withheld_categories: d.withheld_categories,
            outcome: DisclosureOutcome::from_proto(d.outcome),
            refusal: d.refusal,
            grant_id: d.grant_id,
        })
        .collect();
    Ok(Json(Page::new(items, String::new())))
}

/// The node's view of the mesh: its directory copy and the audit log as it last verified it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// The organisation.
    pub org_id: String,
    /// Its kind.
    pub kind: Option<OrganisationKind>,
    /// Members in the directory copy.
    pub directory_members: u32,
    /// The directory copy's version.
    pub directory_version: u64,
    /// When the copy was fetched (RFC 3339).
    #[schema(format = DateTime)]
    pub directory_fetched_at: Option<String>,
    /// The copy is too old: the node refuses mesh traffic until it is fresh.
    pub is_directory_stale: bool,
    /// The size of the last audit checkpoint the node verified.
    pub audit_checkpoint_size: u64,
    /// When it last verified the audit log's consistency (RFC 3339).
    #[schema(format = DateTime)]
    pub audit_verified_at: Option<String>,
    /// The audit alarm, when raised (a fork or a rewritten log): empty when all is well.
    pub audit_alarm: String,
    /// Why the last check could not run, if it could not.
    pub audit_check_error: String,
}

/// The node's status: directory copy and the audit log's last consistency check.
#[utoipa::path(get, path = "/node-status", tag = "partner",
    responses((status = 200, description = "The status", body = NodeStatus), Refused),
    security(("bearer" = [])))]
pub(crate) async fn node_status(
    State(state): State<AppState>,
    token: Token,
) -> Result<Json<NodeStatus>, Problem> {
    let s = state
        .upstreams
        .node()?
        .get_node_status(token.request(v1::GetNodeStatusRequest {}))
        .await?
        .into_inner();
    Ok(Json(NodeStatus {
        org_id: s.org_id,
        kind: OrganisationKind::from_proto(s.kind),
        directory_members: s.directory_members,
        directory_version: s.directory_version,
        directory_fetched_at: time_out(s.directory_fetched_at),
        is_directory_stale: s.is_directory_stale,
        audit_checkpoint_size: s.audit_checkpoint_size,
        audit_verified_at: time_out(s.audit_verified_at),
        audit_alarm: s.audit_alarm,
        audit_check_error: s.audit_check_error,
    }))
}

/// A member of the region's mesh.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// Its OIN.
    pub org_id: String,
    /// Its kind.
    pub kind: Option<OrganisationKind>,
    /// Its name.
    pub name: String,
    /// Its region.
    pub region: String,
}

/// The region's members, as the coordinator's directory lists them (the caller's token is checked
/// first).
#[utoipa::path(get, path = "/members", tag = "partner",
    responses((status = 200, description = "Every member (one page)", body = Page<Member>), Refused),
    security(("bearer" = [])))]
pub(crate) async fn members(
    State(state): State<AppState>,
    token: Token,
) -> Result<Json<Page<Member>>, Problem> {
    // The directory is served to the organisation's certificate; the token is what says a person
    // of the organisation is asking.
    super::authenticate(&state, &token).await?;
    let items = state
        .upstreams
        .directory()?
        .list_members(v1::ListMembersRequest {})
        .await?
        .into_inner()
        .members
        .into_iter()
        .map(|m| Member {
            org_id: m.org_id,
            kind: OrganisationKind::from_proto(m.kind),
            name: m.name,
            region: m.region,
        })
        .collect();
    Ok(Json(Page::new(items, String::new())))
}

/// The case routes and their documentation.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_case, list_cases))
        .routes(routes!(get_case))
        .routes(routes!(add_fact))
        .routes(routes!(record_consent))
        .routes(routes!(record_legal_basis))
        .routes(routes!(withdraw_consent))
        .routes(routes!(link_case))
        .routes(routes!(disclosures))
        .routes(routes!(node_status))
        .routes(routes!(members))
}
