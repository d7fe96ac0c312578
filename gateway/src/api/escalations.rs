//! Escalations at the coordinator: register, list, read, and every step of the ladder (meeting,
//! decision and commitments, follow-up, moving up or down), the tier-3 report and the region's
//! statistics. Registration with a local case id goes through the organisation's node, which
//! links the case to a case reference; everything else goes to the coordinator directly.

use std::collections::BTreeMap;

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

rest_enum!(
    /// Where an escalation is in its lifecycle.
    EscalationState => v1::EscalationState {
        Registered,
        Accepted,
        Rejected,
        ParticipantsResolved,
        MeetingPlanned,
        Decided,
        Monitoring,
        Closed,
    }
);

rest_enum!(
    /// How a table that was tried ended.
    TableOutcome => v1::TableOutcome {
        NoSolution,
        NoMandate,
        NotCarriedOut,
        NoMeetingInTime,
    }
);

rest_enum!(
    /// Why a participant is at the table.
    SeatKind => v1::SeatKind {
        Required,
        CaseDependent,
        Registrant,
    }
);

rest_enum!(
    /// Where a commitment stands.
    CommitmentState => v1::CommitmentState {
        Open,
        Done,
        Overdue,
    }
);

/// A table tried before this one, and how it ended.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TableTried {
    /// The tier of the table.
    pub tier: u32,
    /// The table's name.
    pub table: String,
    /// When it met or should have (RFC 3339).
    #[schema(format = DateTime)]
    pub at: Option<String>,
    /// How it ended.
    pub outcome: TableOutcome,
}

/// A seat at a table: an organisation kind and the mandate role it brings.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Seat {
    /// Organisation kind (as in the directory), e.g. `municipality`.
    pub org_kind: String,
    /// Mandate role, e.g. `procesregisseur`.
    pub role: String,
}

/// Who sits at the table, or which seat is missing.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Participant {
    /// The seat.
    pub seat: Option<Seat>,
    /// Why the seat is at the table.
    pub kind: Option<SeatKind>,
    /// The organisation found for the seat (empty when missing).
    pub org: String,
    /// Its display name.
    pub org_name: String,
    /// The mandate it sits under.
    pub mandate_id: String,
    /// True when no organisation with the mandate was found: the table is not complete.
    pub missing: bool,
    /// Why it is missing.
    pub missing_reason: String,
}

/// The planned meeting.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Meeting {
    /// When (RFC 3339).
    #[schema(format = DateTime)]
    pub at: Option<String>,
    /// Where.
    pub location: String,
    /// The organiser's organisation.
    pub organiser_org: String,
}

/// One commitment of a decision.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Commitment {
    /// Its id.
    pub commitment_id: String,
    /// The organisation that committed.
    pub org: String,
    /// What it will do.
    pub action: String,
    /// By when (RFC 3339).
    #[schema(format = DateTime)]
    pub due: Option<String>,
    /// The mandate it acts under.
    pub mandate_id: String,
    /// Where it stands.
    pub state: Option<CommitmentState>,
    /// The last progress reported.
    pub progress: String,
    /// When progress was last reported (RFC 3339).
    #[schema(format = DateTime)]
    pub reported_at: Option<String>,
}

/// The table's decision.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// What was decided.
    pub summary: String,
    /// Who does what by when.
    pub commitments: Vec<Commitment>,
    /// When (RFC 3339).
    #[schema(format = DateTime)]
    pub decided_at: Option<String>,
    /// When the registrant confirms the solution or the case reopens (RFC 3339).
    #[schema(format = DateTime)]
    pub follow_up_at: Option<String>,
    /// The tier that decided.
    pub tier: u32,
    /// Lessons for the region.
    pub lessons: String,
    /// Advice for national lobbying.
    pub national_advice: String,
}

/// An escalation as the coordinator keeps it. It holds no direct identifiers: the facts stay at
/// the nodes.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Escalation {
    /// Its id.
    pub escalation_id: String,
    /// The case reference (never a BSN or a name).
    pub case_ref: String,
    /// The region.
    pub region: String,
    /// Where it is in its lifecycle.
    pub state: Option<EscalationState>,
    /// The tier it is at.
    pub tier: u32,
    /// The tier's name.
    pub tier_name: String,
    /// The table at this tier.
    pub table: String,
    /// Registered under the urgent procedure.
    pub urgent: bool,
    /// The registering organisation.
    pub registrant_org: String,
    /// The registering person (the subject of their token).
    pub registrant_person: String,
    /// On whose behalf the ZVH acts.
    pub on_behalf_of_org: String,
    /// Fact categories the case is about.
    pub categories: Vec<String>,
    /// The question for the table.
    pub question: String,
    /// The tables tried, with outcomes.
    pub tables_tried: Vec<TableTried>,
    /// Who sits at the table, and which seats are missing.
    pub participants: Vec<Participant>,
    /// False while a required seat is missing.
    pub table_complete: bool,
    /// When the term at this tier ends (RFC 3339).
    #[schema(format = DateTime)]
    pub deadline: Option<String>,
    /// The planned meeting.
    pub meeting: Option<Meeting>,
    /// The decision, once taken.
    pub decision: Option<Decision>,
    /// Why it was rejected.
    pub rejection_reason: String,
    /// The advice it was scaled down with.
    pub advice: String,
    /// The number of its last event; a later read never has a lower one.
    pub sequence: u64,
    /// When it was registered (RFC 3339).
    #[schema(format = DateTime)]
    pub registered_at: Option<String>,
    /// When it last changed (RFC 3339).
    #[schema(format = DateTime)]
    pub updated_at: Option<String>,
    /// The process director was alerted that the term passed.
    pub term_alerted: bool,
    /// The registrant was reminded of the follow-up.
    pub follow_up_reminded: bool,
}

fn seat_out(s: v1::Seat) -> Seat {
    Seat {
        org_kind: s.org_kind,
        role: s.role,
    }
}

fn seat_in(s: Seat) -> v1::Seat {
    v1::Seat {
        org_kind: s.org_kind,
        role: s.role,
    }
}

impl From<v1::Escalation> for Escalation {
    fn from(e: v1::Escalation) -> Self {
        Self {
            escalation_id: e.escalation_id,
            case_ref: e.case_ref,
            region: e.region,
            state: EscalationState::from_proto(e.state),
            tier: e.tier,
            tier_name: e.tier_name,
            table: e.table,
            urgent: e.urgent,
            registrant_org: e.registrant_org,
            registrant_person: e.registrant_person,
            on_behalf_of_org: e.on_behalf_of_org,
            categories: e.categories,
            question: e.question,
            tables_tried: e
                .tables_tried
                .into_iter()
                .filter_map(|t| {
                    Some(TableTried {
                        tier: t.tier,
                        table: t.table,
                        at: time_out(t.at),
                        outcome: TableOutcome::from_proto(t.outcome)?,
                    })
                })
                .collect(),
            participants: e
                .participants
                .into_iter()
                .map(|p| Participant {
                    seat: p.seat.map(seat_out),
                    kind: SeatKind::from_proto(p.kind),
                    org: p.org,
                    org_name: p.org_name,
                    mandate_id: p.mandate_id,
                    missing: p.missing,
                    missing_reason: p.missing_reason,
                })
                .collect(),
            table_complete: e.table_complete,
            deadline: time_out(e.deadline),
            meeting: e.meeting.map(|m| Meeting {
                at: time_out(m.at),
                location: m.location,
                organiser_org: m.organiser_org,
            }),
            decision: e.decision.map(|d| Decision {
                summary: d.summary,
                commitments: d
                    .commitments
                    .into_iter()
                    .map(|c| Commitment {
                        commitment_id: c.commitment_id,
                        org: c.org,
                        action: c.action,
                        due: time_out(c.due),
                        mandate_id: c.mandate_id,
                        state: CommitmentState::from_proto(c.state),
                        progress: c.progress,
                        reported_at: time_out(c.reported_at),
                    })
                    .collect(),
                decided_at: time_out(d.decided_at),
                follow_up_at: time_out(d.follow_up_at),
                tier: d.tier,
                lessons: d.lessons,
                national_advice: d.national_advice,
            }),
            rejection_reason: e.rejection_reason,
            advice: e.advice,
            sequence: e.sequence,
            registered_at: time_out(e.registered_at),
            updated_at: time_out(e.updated_at),
            term_alerted: e.term_alerted,
            follow_up_reminded: e.follow_up_reminded,
        }
    }
}

/// A registration: a local case (through the organisation's node, which makes and links the case
/// reference) or a case reference the caller already has.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegisterEscalation {
    /// The organisation's own case id at its node; give this or `caseRef`.
    pub case_id: Option<String>,
    /// An existing case reference; give this or `caseId`.
    pub case_ref: Option<String>,
    /// The tier asked for.
    pub tier: u32,
    /// The urgent procedure (terms in hours; earlier tiers may be skipped where the ladder allows).
    #[serde(default)]
    pub urgent: bool,
    /// Fact categories the case is about.
    #[serde(default)]
    pub categories: Vec<String>,
    /// The tables tried, with outcomes.
    #[serde(default)]
    pub tables_tried: Vec<TableTried>,
    /// The question for the table (no direct identifiers).
    pub question: String,
    /// Case-dependent seats asked for.
    #[serde(default)]
    pub asked_seats: Vec<Seat>,
}

fn tables_in(tables: Vec<TableTried>) -> Result<Vec<v1::TableTried>, Problem> {
    tables
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            Ok(v1::TableTried {
                tier: t.tier,
                table: t.table,
                at: opt_time_in(&format!("tablesTried[{i}].at"), t.at.as_deref())?,
                outcome: t.outcome.to_proto() as i32,
            })
        })
        .collect()
}

/// Registers an escalation.
#[utoipa::path(
    post,
    path = "/escalations",
    tag = "escalations",
    request_body = RegisterEscalation,
    params(IdempotencyHeader),
    responses(
        (status = 201, description = "Registered", body = Escalation),
        Refused,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn register(
    State(state): State<AppState>,
    token: Token,
    IdempotencyKey(key): IdempotencyKey,
    Body(body): Body<RegisterEscalation>,
) -> Result<Response, Problem> {
    let tables_tried = tables_in(body.tables_tried)?;
    let asked_seats = body.asked_seats.into_iter().map(seat_in).collect();
    let escalation = match (body.case_id, body.case_ref) {
        (Some(case_id), None) => {
            state
                .upstreams
                .node()?
                .escalate(token.request(v1::EscalateRequest {
                    request_id: key,
                    case_id,
                    tier: body.tier,
                    urgent: body.urgent,
                    categories: body.categories,
                    tables_tried,
                    question: body.question,
                    asked_seats,
                }))
                .await?
                .into_inner()
                .escalation
        }
        (None, Some(case_ref)) => {
            state
                .upstreams
                .coordinator()?
                .submit_escalation(token.request(v1::SubmitEscalationRequest {
                    request_id: key,
                    case_ref,
                    tier: body.tier,
                    urgent: body.urgent,
                    categories: body.categories,
                    tables_tried,
                    question: body.question,
                    asked_seats,
                }))
                .await?
                .into_inner()
                .escalation
        }
        _ => {
            return Err(Problem::invalid(
                "caseId",
                "give exactly one of caseId and caseRef",
            ));
        }
    };
    let escalation = Escalation::from(escalation.unwrap_or_default());
    let location = format!("/api/v1/escalations/{}", escalation.escalation_id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(escalation),
    )
        .into_response())
}

/// Filters and paging for the escalation list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only escalations in this state.
    pub state: Option<EscalationState>,
    /// Only escalations at this tier.
    pub tier: Option<u32>,
    /// Only escalations whose term ends before this instant (RFC 3339).
    pub deadline_before: Option<String>,
    /// The process director only: one organisation's escalations.
    pub org: Option<String>,
    /// At most this many (1 to 500; default 50).
    pub page_size: Option<u32>,
    /// The `nextPageToken` of the previous page.
    pub page_token: Option<String>,
}

/// Lists the escalations the caller takes part in (the process director: all).
#[utoipa::path(
    get,
    path = "/escalations",
    tag = "escalations",
    params(ListQuery),
    responses(
        (status = 200, description = "One page", body = Page<Escalation>),
        Refused,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    token: Token,
    Params(q): Params<ListQuery>,
) -> Result<Json<Page<Escalation>>, Problem> {
    let response = state
        .upstreams
        .coordinator()?
        .list_escalations(token.request(v1::ListEscalationsRequest {
            states: q.state.map(|s| s.to_proto() as i32).into_iter().collect(),
            tier: q.tier,
            deadline_before: opt_time_in("deadlineBefore", q.deadline_before.as_deref())?,
            org: q.org.unwrap_or_default(),
            page_size: q.page_size.unwrap_or(0),
            page_token: q.page_token.unwrap_or_default(),
        }))
        .await?
        .into_inner();
    Ok(Json(Page::new(
        response
            .escalations
            .into_iter()
            .map(Escalation::from)
            .collect(),
        response.next_page_token,
    )))
}

/// One escalation, for a participant or the process director. Another organisation's
/// escalation is 404, the same as one that does not exist: a stranger learns nothing of it.
#[utoipa::path(
    get,
    path = "/escalations/{escalationId}",
    tag = "escalations",
    params(("escalationId" = String, Path, description = "The escalation")),
    responses(
        (status = 200, description = "The escalation", body = Escalation),
        Refused,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    token: Token,
    Path(id): Path<String>,
) -> Result<Json<Escalation>, Problem> {
    let e = state
        .upstreams
        .coordinator()?
        .get_escalation(token.request(v1::GetEscalationRequest { escalation_id: id }))
        .await?
        .into_inner();
    Ok(Json(e.into()))
}

/// The meeting to plan.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanMeeting {
    /// When (RFC 3339), within the term.
    #[schema(format = DateTime)]
    pub at: String,
    /// Where.
    pub location: String,
}

/// Plans the meeting (the organiser the ladder names).
#[utoipa::path(
    post,
    path = "/escalations/{escalationId}/meeting",
    tag = "escalations",
    request_body = PlanMeeting,
    params(
        ("escalationId" = String, Path, description = "The escalation"),
        IdempotencyHeader,
    ),
    responses(
        (status = 200, description = "The escalation with its meeting", body = Escalation),
        Refused,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn plan_meeting(
    State(state): State<AppState>,
    token: Token,
    IdempotencyKey(key): IdempotencyKey,
    Path(id): Path<String>,
    Body(body): Body<PlanMeeting>,
) -> Result<Json<Escalation>, Problem> {
    let e = state
        .upstreams
        .coordinator()?
        .plan_meeting(token.request(v1::PlanMeetingRequest {
            request_id: key,
            escalation_id: id,
            at: Some(time_in("at", &body.at)?),
            location: body.location,
        }))
        .await?
        .into_inner();
    Ok(Json(e.into()))
}

/// One commitment of a decision being recorded.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommitmentInput {
    /// The organisation that commits (its OIN).
    pub org: String,
    /// What it will do.
    pub action: String,
    /// By when (RFC 3339).
    #[schema(format = DateTime)]
    pub due: String,
    /// The mandate it acts under, checked against that organisation's mandates.
    pub mandate_id: String,
}

/// The decision to record.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordDecision {
    /// What was decided.
    pub summary: String,
    /// Who does what by when.
    #[serde(default)]
    pub commitments: Vec<CommitmentInput>,
    /// Lessons for the region.
    #[serde(default)]
    pub lessons: String,
    /// Advice for national lobbying.
    #[serde(default)]
    pub national_advice: String,
}

/// Records the table's decision with its commitments.
#[utoipa::path(
    post,
    path = "/escalations/{escalationId}/decision",
    tag = "escalations",
    request_body = RecordDecision,
    params(
        ("escalationId" = String, Path, description = "The escalation"),
        IdempotencyHeader,
    ),
    responses(
        (status = 200, description = "The escalation with its decision", body = Escalation),
        Refused,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn record_decision(
    State(state): State<AppState>,
    token: Token,
    IdempotencyKey(key): IdempotencyKey,
    Path(id): Path<String>,
    Body(body): Body<RecordDecision>,
) -> Result<Json<Escalation>, Problem> {
    let commitments = body
        .commitments
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            Ok(v1::CommitmentInput {
                org: c.org,
                action: c.action,
                due: Some(time_in(&format!("commitments[{i}].due"), &c.due)?),
                mandate_id: c.mandate_id,
            })
        })
        .collect::<Result<_, Problem>>()?;
    let e = state
        .upstreams
        .coordinator()?
        .record_decision(token.request(v1::RecordDecisionRequest {
            request_id: key,
            escalation_id: id,
            summary: body.summary,
            commitments,
            lessons: body.lessons,
            national_advice: body.national_advice,
        }))
        .await?
        .into_inner();
    Ok(Json(e.into()))
}

/// Progress on a commitment.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReportCommitment {
    /// The commitment is carried out.
    #[serde(default)]
    pub done: bool,
    /// What happened.
    #[serde(default)]
    pub progress: String,
}

/// Reports progress on the caller's organisation's commitment.
#[utoipa::path(
    post,
    path = "/escalations/{escalationId}/commitments/{commitmentId}/reports",
    tag = "escalations",
    request_body = ReportCommitment,
    params(
        ("escalationId" = String, Path, description = "The escalation"),
        ("commitmentId" = String, Path, description = "The commitment"),
        IdempotencyHeader,
    ),
    responses(
        (status = 200, description = "The escalation", body = Escalation),
        Refused,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn report_commitment(
    State(state): State<AppState>,
    token: Token,
    IdempotencyKey(key): IdempotencyKey,
    Path((id, commitment_id)): Path<(String, String)>,
    Body(body): Body<ReportCommitment>,
) -> Result<Json<Escalation>, Problem> {
    let e = state
        .upstreams
        .coordinator()?
        .report_commitment(token.request(v1::ReportCommitmentRequest {
            request_id: key,
            escalation_id: id,
            commitment_id,
            done: body.done,
            progress: body.progress,
        }))
        .await?
        .into_inner();
    Ok(Json(e.into()))
}

/// The registrant's answer at the follow-up date.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfirmFollowUp {
    /// True: the solution holds and the case closes; false: it reopens at the tier the ladder says.
    pub solved: bool,
    /// A note for the record.
    #[serde(default)]
    pub note: String,
}

/// Confirms the solution or reopens the case (the registrant, at follow-up).
#[utoipa::path(
    post,
    path = "/escalations/{escalationId}/follow-up",
    tag = "escalations",
    request_body = ConfirmFollowUp,
    params(
        ("escalationId" = String, Path, description = "The escalation"),
        IdempotencyHeader,
    ),
    responses(
        (status = 200, description = "The escalation", body = Escalation),
        Refused,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn confirm_follow_up(
    State(state): State<AppState>,
    token: Token,
    IdempotencyKey(key): IdempotencyKey,
    Path(id): Path<String>,
    Body(body): Body<ConfirmFollowUp>,
) -> Result<Json<Escalation>, Problem> {
    let e = state
        .upstreams
        .coordinator()?
        .confirm_follow_up(token.request(v1::ConfirmFollowUpRequest {
            request_id: key,
            escalation_id: id,
            solved: body.solved,
            note: body.note,
        }))
        .await?
        .into_inner();
    Ok(Json(e.into()))
}

/// A move to a higher tier.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EscalateTier {
    /// The tier to move to (one up, or further where the ladder allows a skip).
    pub to_tier: u32,
    /// Why.
    pub reason: String,
}

/// Moves the escalation up the ladder.
#[utoipa::path(
    post,
    path = "/escalations/{escalationId}/scale-ups",
    tag = "escalations",
    request_body = EscalateTier,
    params(
        ("escalationId" = String, Path, description = "The escalation"),
        IdempotencyHeader,
    ),
    responses(
        (status = 200, description = "The escalation at its new tier", body = Escalation),
        Refused,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn escalate_tier(
    State(state): State<AppState>,
    token: Token,
    IdempotencyKey(key): IdempotencyKey,
    Path(id): Path<String>,
    Body(body): Body<EscalateTier>,
) -> Result<Json<Escalation>, Problem> {
    let e = state
        .upstreams
        .coordinator()?
        .escalate_tier(token.request(v1::EscalateTierRequest {
            request_id: key,
            escalation_id: id,
            to_tier: body.to_tier,
            reason: body.reason,
        }))
        .await?
        .into_inner();
    Ok(Json(e.into()))
}

/// A return to a lower tier or the regular table.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScaleDown {
    /// The tier to return to; absent: the regular table (the case leaves the ladder).
    pub to_tier: Option<u32>,
    /// The advice it goes back with.
    pub advice: String,
}

/// Returns the escalation to a lower tier or the regular table, with advice.
#[utoipa::path(
    post,
    path = "/escalations/{escalationId}/scale-downs",
    tag = "escalations",
    request_body = ScaleDown,
    params(
        ("escalationId" = String, Path, description = "The escalation"),
        IdempotencyHeader,
    ),
    responses(
        (status = 200, description = "The escalation", body = Escalation),
        Refused,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn scale_down(
    State(state): State<AppState>,
    token: Token,
    IdempotencyKey(key): IdempotencyKey,
    Path(id): Path<String>,
    Body(body): Body<ScaleDown>,
) -> Result<Json<Escalation>, Problem> {
    let e = state
        .upstreams
        .coordinator()?
        .scale_down(token.request(v1::ScaleDownRequest {
            request_id: key,
            escalation_id: id,
            to_tier: body.to_tier,
            advice: body.advice,
        }))
        .await?
        .into_inner();
    Ok(Json(e.into()))
}

/// The fixed-format tier-3 report.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The escalation.
    pub escalation_id: String,
    /// The case, without direct identifiers.
    pub case_description: String,
    /// Outcomes and agreements.
    pub outcomes: String,
    /// Lessons for the region.
    pub lessons: String,
    /// Advice for national lobbying.
    pub national_advice: String,
}

/// The tier-3 report, as JSON or (with `Accept: text/markdown`) as Markdown.
#[utoipa::path(
    get,
    path = "/escalations/{escalationId}/report",
    tag = "escalations",
    params(("escalationId" = String, Path, description = "The escalation")),
    responses(
        (status = 200, description = "The report", content(
            (Report = "application/json"),
            (String = "text/markdown"),
        )),
        Refused,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn report(
    State(state): State<AppState>,
    token: Token,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Response, Problem> {
    let r = state
        .upstreams
        .coordinator()?
        .get_report(token.request(v1::GetReportRequest { escalation_id: id }))
        .await?
        .into_inner();
    let markdown = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/markdown"));
    if markdown {
        return Ok((
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            r.markdown,
        )
            .into_response());
    }
    Ok(Json(Report {
        escalation_id: r.escalation_id,
        case_description: r.case_description,
        outcomes: r.outcomes,
        lessons: r.lessons,
        national_advice: r.national_advice,
    })
    .into_response())
}

/// The period of the statistics.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatisticsQuery {
    /// From this instant (RFC 3339, inclusive).
    pub from: Option<String>,
    /// Until this instant (RFC 3339, exclusive).
    pub until: Option<String>,
}

/// One tier's figures.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TierStatistics {
    /// The tier.
    pub tier: u32,
    /// Cases at the tier (counts below 5 are suppressed, shown as 0).
    pub cases: i64,
    /// Of those, solved at the tier.
    pub solved: i64,
    /// Median time at the tier, in hours.
    pub median_hours: f64,
}

/// The region's figures for a period.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Statistics {
    /// The region.
    pub region: String,
    /// Per tier.
    pub tiers: Vec<TierStatistics>,
    /// Fact categories of the cases that got stuck, with their counts.
    pub bottleneck_categories: BTreeMap<String, i64>,
    /// Commitments past their due date.
    pub overdue_commitments: i64,
}

/// The region's statistics for a period, small counts suppressed.
#[utoipa::path(
    get,
    path = "/statistics",
    tag = "escalations",
    params(StatisticsQuery),
    responses(
        (status = 200, description = "The figures", body = Statistics),
        Refused,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn statistics(
    State(state): State<AppState>,
    token: Token,
    Params(q): Params<StatisticsQuery>,
) -> Result<Json<Statistics>, Problem> {
    let s = state
        .upstreams
        .coordinator()?
        .get_statistics(token.request(v1::GetStatisticsRequest {
            from: opt_time_in("from", q.from.as_deref())?,
            until: opt_time_in("until", q.until.as_deref())?,
        }))
        .await?
        .into_inner();
    Ok(Json(Statistics {
        region: s.region,
        tiers: s
            .tiers
            .into_iter()
            .map(|t| TierStatistics {
                tier: t.tier,
                cases: t.cases,
                solved: t.solved,
                median_hours: t.median_hours,
            })
            .collect(),
        bottleneck_categories: s.bottleneck_categories.into_iter().collect(),
        overdue_commitments: s.overdue_commitments,
    }))
}

/// One event of an escalation's timeline, as the event stream sends it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEvent {
    /// The escalation.
    pub escalation_id: String,
    /// Its number within the escalation (also the SSE `id`).
    pub sequence: u64,
    /// What happened (also the SSE `event`).
    pub event: Option<super::partner::EventType>,
    /// When (RFC 3339).
    #[schema(format = DateTime)]
    pub occurred_at: Option<String>,
    /// The tier after it.
    pub tier: u32,
    /// The state after it.
    pub state: Option<EscalationState>,
    /// The organisation that acted.
    pub actor_org: String,
    /// The tier before it, when it moved.
    pub from_tier: u32,
}

/// The escalation's events as server-sent events: first those stored, then each as it happens.
/// `Last-Event-ID` (or `after`) resumes after that sequence number.
#[utoipa::path(
    get,
    path = "/escalations/{escalationId}/events",
    tag = "escalations",
    params(
        ("escalationId" = String, Path, description = "The escalation"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this sequence number"),
    ),
    responses(
        (status = 200, description = "`text/event-stream`: `id` the sequence, `event` the event type, `data` a TimelineEvent", content_type = "text/event-stream", body = String),
        Refused,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn events(
    State(state): State<AppState>,
    token: Token,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Response, Problem> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures_util::StreamExt;

    let after = match headers.get("last-event-id") {
        None => 0,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| Problem::invalid("Last-Event-ID", "must be a sequence number"))?,
    };
    let events = timeline(&state, &token, id, after).await?.map(|body| {
        let name = serde_json::to_value(body.event)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "event".into());
        Event::default()
            .id(body.sequence.to_string())
            .event(name)
            .json_data(&body)
            .map_err(std::io::Error::other)
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The escalation's events after sequence `after`: those stored, then each as it happens, until
/// the coordinator ends the stream.
pub(crate) async fn timeline(
    state: &AppState,
    token: &Token,
    id: String,
    after: u64,
) -> Result<impl futures_util::Stream<Item = TimelineEvent> + use<>, Problem> {
    use futures_util::StreamExt;

    let stream = state
        .upstreams
        .coordinator()?
        .watch_escalation(token.request(v1::WatchEscalationRequest {
            escalation_id: id,
            after_sequence: after,
        }))
        .await?
        .into_inner();
    Ok(stream
        .take_while(|item| std::future::ready(item.is_ok()))
        .filter_map(|item| {
            std::future::ready(item.ok().map(|e| TimelineEvent {
                escalation_id: e.escalation_id,
                sequence: e.sequence,
                event: super::partner::EventType::from_proto(e.r#type),
                occurred_at: time_out(e.occurred_at),
                tier: e.tier,
                state: EscalationState::from_proto(e.state),
                actor_org: e.actor_org,
                from_tier: e.from_tier,
            }))
        }))
}

/// The escalation routes and their documentation.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register, list))
        .routes(routes!(get_one))
        .routes(routes!(events))
        .routes(routes!(plan_meeting))
        .routes(routes!(record_decision))
        .routes(routes!(report_commitment))
        .routes(routes!(confirm_follow_up))
        .routes(routes!(escalate_tier))
        .routes(routes!(scale_down))
        .routes(routes!(report))
        .routes(routes!(statistics))
}
