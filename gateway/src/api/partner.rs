//! The partner side, at the organisation's own node: its mandates (the region's "who decides
//! what") and its inbox of coordinator notifications.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use doorzet_proto::v1;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::convert::{opt_time_in, rest_enum, time_in, time_out};
use super::{AppState, Body, IdempotencyHeader, Page, Params, Refused};
use crate::error::Problem;
use crate::upstream::{IdempotencyKey, Token};

/// A mandate: who at this organisation may decide what, at which tiers.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Mandate {
    /// Its id.
    pub mandate_id: String,
    /// The organisation.
    pub org_id: String,
    /// The role at the table, e.g. `procesregisseur`.
    pub role: String,
    /// The person holding it, when it is personal.
    pub person: String,
    /// The tiers it covers.
    pub tiers: Vec<u32>,
    /// The domains it covers.
    pub domains: Vec<String>,
    /// The decision types it covers.
    pub decision_types: Vec<String>,
    /// What it rests on (a mandate decree, an article).
    pub legal_basis: String,
    /// From (RFC 3339, inclusive).
    #[schema(format = DateTime)]
    pub valid_from: Option<String>,
    /// Until (RFC 3339, exclusive); absent: open-ended.
    #[schema(format = DateTime)]
    pub valid_until: Option<String>,
    /// When it must be reviewed (RFC 3339).
    #[schema(format = DateTime)]
    pub review_date: Option<String>,
    /// In force now (and so served to the mesh).
    pub is_current: bool,
    /// Past its review date: flagged, and not served to others.
    pub is_review_overdue: bool,
    /// When it was ended (RFC 3339).
    #[schema(format = DateTime)]
    pub ended_at: Option<String>,
}

impl From<v1::Mandate> for Mandate {
    fn from(m: v1::Mandate) -> Self {
        Self {
            mandate_id: m.mandate_id,
            org_id: m.org_id,
            role: m.role,
            person: m.person,
            tiers: m.tiers,
            domains: m.domains,
            decision_types: m.decision_types,
            legal_basis: m.legal_basis,
            valid_from: time_out(m.valid_from),
            valid_until: time_out(m.valid_until),
            review_date: time_out(m.review_date),
            is_current: m.is_current,
            is_review_overdue: m.is_review_overdue,
            ended_at: time_out(m.ended_at),
        }
    }
}

/// A new mandate's terms.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewMandate {
    /// The role at the table.
    pub role: String,
    /// The person holding it, when it is personal.
    #[serde(default)]
    pub person: String,
    /// The tiers it covers.
    pub tiers: Vec<u32>,
    /// The domains it covers.
    #[serde(default)]
    pub domains: Vec<String>,
    /// The decision types it covers.
    #[serde(default)]
    pub decision_types: Vec<String>,
    /// What it rests on.
    pub legal_basis: String,
    /// From (RFC 3339, inclusive).
    #[schema(format = DateTime)]
    pub valid_from: String,
    /// Until (RFC 3339, exclusive).
    #[schema(format = DateTime)]
    pub valid_until: Option<String>,
    /// When it must be reviewed (RFC 3339; at most a year out).
    #[schema(format = DateTime)]
    pub review_date: String,
}

/// Filters for the mandate list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MandateQuery {
    /// Only mandates covering this tier.
    pub tier: Option<u32>,
    /// Only this role.
    pub role: Option<String>,
    /// Only mandates covering this domain.
    pub domain: Option<String>,
    /// Only mandates covering this decision type.
    pub decision_type: Option<String>,
    /// In force at this instant (RFC 3339; default now).
    pub valid_at: Option<String>,
    /// Also mandates that are ended, expired or overdue for review.
    pub include_not_current: Option<bool>,
}

/// The organisation's own mandates, review-due ones flagged.
#[utoipa::path(
    get,
    path = "/mandates",
    tag = "partner",
    params(MandateQuery),
    responses(
        (status = 200, description = "The mandates (one page holds them all)", body = Page<Mandate>),
        Refused,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list_mandates(
    State(state): State<AppState>,
    token: Token,
    Params(q): Params<MandateQuery>,
) -> Result<Json<Page<Mandate>>, Problem> {
    let response = state
        .upstreams
        .node()?
        .list_own_mandates(token.request(v1::ListOwnMandatesRequest {
            filter: Some(v1::ListMandatesRequest {
                tier: q.tier,
                role: q.role.unwrap_or_default(),
                domain: q.domain.unwrap_or_default(),
                decision_type: q.decision_type.unwrap_or_default(),
                valid_at: opt_time_in("validAt", q.valid_at.as_deref())?,
            }),
            include_not_current: q.include_not_current.unwrap_or(false),
        }))
        .await?
        .into_inner();
    Ok(Json(Page::new(
        response.mandates.into_iter().map(Mandate::from).collect(),
        String::new(),
    )))
}

/// Creates a mandate. With an `Idempotency-Key`, the key is the mandate's id, so a retry finds
/// the mandate it made.
#[utoipa::path(
    post,
    path = "/mandates",
    tag = "partner",
    request_body = NewMandate,
    params(IdempotencyHeader),
    responses(
        (status = 201, description = "Created", body = Mandate),
        Refused,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn create_mandate(
    State(state): State<AppState>,
    token: Token,
    key: Option<IdempotencyKey>,
    Body(body): Body<NewMandate>,
) -> Result<Response, Problem> {
    let mandate = v1::Mandate {
        mandate_id: key.map(|k| k.0).unwrap_or_default(),
        role: body.role,
        person: body.person,
        tiers: body.tiers,
        domains: body.domains,
        decision_types: body.decision_types,
        legal_basis: body.legal_basis,
        valid_from: Some(time_in("validFrom", &body.valid_from)?),
        valid_until: opt_time_in("validUntil", body.valid_until.as_deref())?,
        review_date: Some(time_in("reviewDate", &body.review_date)?),
        ..Default::default()
    };
    let mut node = state.upstreams.node()?;
    let created = match node
        .create_mandate(token.request(v1::CreateMandateRequest {
            mandate: Some(mandate.clone()),
        }))
        .await
    {
        Ok(created) => created.into_inner(),
        // A retry with the same key: the mandate it made, if it is the same mandate.
        Err(status) if status.code() == tonic::Code::AlreadyExists => {
            let existing = node
                .list_own_mandates(token.request(v1::ListOwnMandatesRequest {
                    filter: Some(v1::ListMandatesRequest::default()),
                    include_not_current: true,
                }))
                .await?
                .into_inner()
                .mandates
                .into_iter()
                .find(|m| m.mandate_id == mandate.mandate_id);
            return match existing {
                Some(m) if same_terms(&m, &mandate) => Ok(Json(Mandate::from(m)).into_response()),
                _ => Err(Problem::new(
                    tonic::Code::AlreadyExists,
                    "Idempotency-Key: already used for a different mandate",
                )),
            };
        }
        Err(status) => return Err(status.into()),
    };
    let location = format!("/api/v1/mandates/{}", created.mandate_id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(Mandate::from(created)),
    )
        .into_response())
}

/// The node keeps tiers, domains and decision types as sets, so they are compared as sets.
fn same_terms(a: &v1::Mandate, b: &v1::Mandate) -> bool {
    fn set<T: Ord + Clone>(v: &[T]) -> std::collections::BTreeSet<T> {
        v.iter().cloned().collect()
    }
    a.role == b.role
        && a.person == b.person
        && set(&a.tiers) == set(&b.tiers)
        && set(&a.domains) == set(&b.domains)
        && set(&a.decision_types) == set(&b.decision_types)
        && a.legal_basis == b.legal_basis
        && a.valid_from == b.valid_from
        && a.valid_until == b.valid_until
        && a.review_date == b.review_date
}

/// When a mandate ends.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndMandate {
    /// When it ends (RFC 3339); absent: now.
    #[schema(format = DateTime)]
    pub ended_at: Option<String>,
}

/// Ends a mandate; it is no longer served to the mesh from that moment.
#[utoipa::path(
    post,
    path = "/mandates/{mandateId}/end",
    tag = "partner",
    request_body = EndMandate,
    params(
        ("mandateId" = String, Path, description = "The mandate"),
        IdempotencyHeader,
    ),
    responses(
        (status = 200, description = "The ended mandate", body = Mandate),
        Refused,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn end_mandate(
    State(state): State<AppState>,
    token: Token,
    _key: IdempotencyKey,
    Path(id): Path<String>,
    Body(body): Body<EndMandate>,
) -> Result<Json<Mandate>, Problem> {
    let ended = state
        .upstreams
        .node()?
        .end_mandate(token.request(v1::EndMandateRequest {
            mandate_id: id,
            ended_at: opt_time_in("endedAt", body.ended_at.as_deref())?,
        }))
        .await?
        .into_inner();
    Ok(Json(ended.into()))
}

rest_enum!(
    /// What happened to an escalation.
    EventType => v1::EscalationEventType {
        Registered,
        Accepted,
        Rejected,
        Invited,
        ParticipantsResolved,
        MeetingPlanned,
        Decided,
        Escalated,
        ScaledDown,
        DeadlinePassed,
        CommitmentOverdue,
        Closed,
        Reopened,
        Monitoring,
        FollowUpDue,
        CommitmentReported,
    }
);

/// A notification from the coordinator, as the node stored it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InboxItem {
    /// Its position in the inbox (page with `after`).
    pub position: u64,
    /// The notification's id (a repeat is stored once).
    pub notification_id: String,
    /// The escalation.
    pub escalation_id: String,
    /// What happened.
    pub event: Option<EventType>,
    /// The event's number within the escalation; a gap means one is still on its way.
    pub sequence: u64,
    /// The case reference.
    pub case_ref: String,
    /// The tier.
    pub tier: u32,
    /// When it happened (RFC 3339).
    #[schema(format = DateTime)]
    pub occurred_at: Option<String>,
    /// When the node stored it (RFC 3339).
    #[schema(format = DateTime)]
    pub received_at: Option<String>,
    /// True when it carries a participation grant (the grant itself stays at the node).
    pub has_grant: bool,
}

/// Which end of the inbox comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InboxOrder {
    /// The oldest first: a system reading on from where it was.
    OldestFirst,
    /// The most recent first: a person's view.
    NewestFirst,
}

/// Paging through the inbox.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InboxQuery {
    /// The `nextPageToken` of the previous page (asked in the same order).
    pub page_token: Option<String>,
    /// At most this many (default 100).
    pub page_size: Option<u32>,
    /// `oldest_first` (the default) or `newest_first`.
    pub order: Option<InboxOrder>,
}

/// The node's inbox of coordinator notifications, oldest first unless asked otherwise.
#[utoipa::path(
    get,
    path = "/inbox",
    tag = "partner",
    params(InboxQuery),
    responses(
        (status = 200, description = "One page", body = Page<InboxItem>),
        Refused,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn inbox(
    State(state): State<AppState>,
    token: Token,
    Params(q): Params<InboxQuery>,
) -> Result<Json<Page<InboxItem>>, Problem> {
    let from: u64 = match q.page_token.as_deref() {
        None | Some("") => 0,
        Some(t) => t
            .parse()
            .map_err(|_| Problem::invalid("pageToken", "is not a token this API gave"))?,
    };
    let newest_first = q.order == Some(InboxOrder::NewestFirst);
    let (after, before) = if newest_first { (0, from) } else { (from, 0) };
    let limit = q.page_size.unwrap_or(100);
    let items = state
        .upstreams
        .node()?
        .list_inbox(token.request(v1::ListInboxRequest {
            after,
            limit,
            newest_first,
            before,
        }))
        .await?
        .into_inner()
        .items;
    let next = if items.len() as u32 >= limit.max(1) {
        items
            .last()
            .map(|i| i.position.to_string())
            .unwrap_or_default()
    } else {
        String::new()
    };
    let items = items
        .into_iter()
        .map(|i| {
            let n = i.notification.unwrap_or_default();
            InboxItem {
                position: i.position,
                notification_id: n.notification_id,
                escalation_id: n.escalation_id,
                event: EventType::from_proto(n.event),
                sequence: n.sequence,
                case_ref: n.case_ref,
                tier: n.tier,
                occurred_at: time_out(n.occurred_at),
                received_at: time_out(i.received_at),
                has_grant: !n.grant.is_empty(),
            }
        })
        .collect();
    Ok(Json(Page::new(items, next)))
}

/// The partner routes and their documentation.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_mandates, create_mandate))
        .routes(routes!(end_mandate))
        .routes(routes!(inbox))
}
