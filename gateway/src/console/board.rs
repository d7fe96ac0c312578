//! The process director's board (open escalations by tier; what needs attention first: terms
//! passed or ending, tables with a missing seat, commitments overdue) and an escalation's page
//! (its table, meeting, decision, live timeline, and the forms to plan the meeting and record the
//! decision), with the tier-3 report. Participants see the same pages for their escalations; the
//! coordinator decides which those are.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use doorzet_proto::v1;
use futures_util::StreamExt;
use jiff::{Timestamp, ToSpan};
use serde::Deserialize;

use super::i18n::amsterdam;
use super::{Chrome, Failure, FieldError, Session, Texts, form_key, name_of, names, render};
use crate::api::escalations::{
    self, CommitmentInput, Escalation, EscalationState, PlanMeeting, RecordDecision,
};
use crate::api::{AppState, Body};
use crate::error::Problem;
use crate::upstream::{IdempotencyKey, Token};

/// Escalations still on the ladder.
const OPEN: [v1::EscalationState; 6] = [
    v1::EscalationState::Registered,
    v1::EscalationState::Accepted,
    v1::EscalationState::ParticipantsResolved,
    v1::EscalationState::MeetingPlanned,
    v1::EscalationState::Decided,
    v1::EscalationState::Monitoring,
];

/// The board reads at most this many pages of 500.
const MAX_PAGES: usize = 20;

/// Whether the term at the tier still runs (no decision yet).
fn term_runs(e: &Escalation) -> bool {
    matches!(
        e.state,
        Some(
            EscalationState::Registered
                | EscalationState::Accepted
                | EscalationState::ParticipantsResolved
                | EscalationState::MeetingPlanned
        )
    )
}

/// How a term stands now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TermFlag {
    Passed,
    EndsSoon,
}

fn term_flag(e: &Escalation, now: Timestamp) -> Option<TermFlag> {
    let deadline: Timestamp = e.deadline.as_deref()?.parse().ok()?;
    if !term_runs(e) {
        return None;
    }
    if deadline <= now {
        Some(TermFlag::Passed)
    } else if deadline <= now + 24.hours() {
        Some(TermFlag::EndsSoon)
    } else {
        None
    }
}

/// A commitment not done by its due date (the coordinator marks it when its check runs; the page
/// does not wait for that).
fn commitment_overdue(c: &escalations::Commitment, now: Timestamp) -> bool {
    match c.state {
        Some(escalations::CommitmentState::Overdue) => true,
        Some(escalations::CommitmentState::Done) => false,
        _ => c
            .due
            .as_deref()
            .and_then(|d| d.parse::<Timestamp>().ok())
            .is_some_and(|d| d < now),
    }
}

fn overdue_commitments(e: &Escalation, now: Timestamp) -> usize {
    e.decision.as_ref().map_or(0, |d| {
        d.commitments
            .iter()
            .filter(|c| commitment_overdue(c, now))
            .count()
    })
}

/// One escalation on the board.
#[derive(Debug, Clone)]
struct Row {
    id: String,
    case_ref: String,
    tier: u32,
    state: String,
    deadline: String,
    deadline_text: String,
    flag: Option<&'static str>,
    passed: bool,
    urgent: bool,
    complete: bool,
    missing: Vec<String>,
    overdue_commitments: usize,
    registrant: String,
}

struct TierGroup {
    tier: u32,
    name: String,
    rows: Vec<Row>,
}

#[derive(Template)]
#[template(path = "board.html")]
struct BoardPage {
    c: Chrome,
    tiers: Vec<TierGroup>,
    passed: Vec<Row>,
    ending: Vec<Row>,
    incomplete: Vec<Row>,
    commitments: Vec<Row>,
    total: usize,
}

impl BoardPage {
    fn attention(&self) -> bool {
        !(self.passed.is_empty()
            && self.ending.is_empty()
            && self.incomplete.is_empty()
            && self.commitments.is_empty())
    }
}

fn name(names: &HashMap<String, String>, org: &str) -> String {
    names.get(org).cloned().unwrap_or_else(|| org.to_owned())
}

/// The board.
pub(super) async fn board(State(state): State<AppState>, session: Session) -> Response {
    let chrome = Chrome::new(&session, &state, "board", "/console/escalations".into())
        .titled(session.lang.texts().board);
    match open_escalations(&state, &session.token).await {
        Ok(list) => {
            let names = names(&state, &session.token).await;
            render(StatusCode::OK, &board_page(chrome, list, &names))
        }
        Err(p) => Failure::new(p, chrome).into_response(),
    }
}

async fn open_escalations(state: &AppState, token: &Token) -> Result<Vec<Escalation>, Problem> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    for _ in 0..MAX_PAGES {
        let page = state
            .upstreams
            .coordinator()?
            .list_escalations(token.request(v1::ListEscalationsRequest {
                states: OPEN.iter().map(|s| *s as i32).collect(),
                page_size: 500,
                page_token,
                ..Default::default()
            }))
            .await?
            .into_inner();
        all.extend(page.escalations.into_iter().map(Escalation::from));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    Ok(all)
}

fn board_page(c: Chrome, list: Vec<Escalation>, names: &HashMap<String, String>) -> BoardPage {
    let t = c.t;
    let now = Timestamp::now();
    let mut tiers: BTreeMap<u32, TierGroup> = BTreeMap::new();
    let (mut passed, mut ending, mut incomplete, mut commitments) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let total = list.len();
    for e in list {
        let flag = term_flag(&e, now);
        let row = Row {
            id: e.escalation_id.clone(),
            case_ref: e.case_ref.clone(),
            tier: e.tier,
            state: t
                .label(&e.state.map(|s| name_of(&s)).unwrap_or_default())
                .to_owned(),
            deadline: e.deadline.clone().unwrap_or_default(),
            deadline_text: e.deadline.as_deref().map(|d| t.time(d)).unwrap_or_default(),
            flag: flag.map(|f| match f {
                TermFlag::Passed => t.overdue,
                TermFlag::EndsSoon => t.due_soon,
            }),
            passed: flag == Some(TermFlag::Passed),
            urgent: e.urgent,
            complete: e.table_complete,
            missing: e
                .participants
                .iter()
                .filter(|p| p.missing)
                .filter_map(|p| p.seat.as_ref())
                .map(|s| format!("{} ({})", t.label(&s.org_kind), s.role))
                .collect(),
            overdue_commitments: overdue_commitments(&e, now),
            registrant: name(names, &e.registrant_org),
        };
        match flag {
            Some(TermFlag::Passed) => passed.push(row.clone()),
            Some(TermFlag::EndsSoon) => ending.push(row.clone()),
            None => {}
        }
        if !e.table_complete && term_runs(&e) {
            incomplete.push(row.clone());
        }
        if row.overdue_commitments > 0 {
            commitments.push(row.clone());
        }
        tiers
            .entry(e.tier)
            .or_insert_with(|| TierGroup {
                tier: e.tier,
                name: e.tier_name.clone(),
                rows: Vec::new(),
            })
            .rows
            .push(row);
    }
    let by_deadline = |rows: &mut Vec<Row>| rows.sort_by(|a, b| a.deadline.cmp(&b.deadline));
    by_deadline(&mut passed);
    by_deadline(&mut ending);
    let mut tiers: Vec<TierGroup> = tiers.into_values().collect();
    for g in &mut tiers {
        // Terms that end first at the top; those without a running term after them.
        g.rows
            .sort_by_key(|r| (r.deadline.is_empty(), r.deadline.clone()));
    }
    BoardPage {
        c,
        tiers,
        passed,
        ending,
        incomplete,
        commitments,
        total,
    }
}

struct ParticipantRow {
    org: String,
    seat: String,
    kind: String,
    mandate: String,
    missing: bool,
    missing_reason: String,
}

struct CommitmentRow {
    org: String,
    action: String,
    due: String,
    state: String,
    overdue: bool,
    progress: String,
}

struct EventRow {
    sequence: u64,
    label: String,
    at: String,
    at_text: String,
    tier: u32,
    actor: String,
}

struct SeatOption {
    value: String,
    label: String,
}

/// The values of the two forms, as entered (kept when a form comes back with errors).
#[derive(Default)]
struct Forms {
    meeting_key: String,
    at: String,
    location: String,
    decision_key: String,
    summary: String,
    lessons: String,
    national_advice: String,
    rows: Vec<(String, String, String)>,
}

const COMMITMENT_ROWS: usize = 3;

#[derive(Template)]
#[template(path = "escalation.html")]
struct EscalationPage {
    c: Chrome,
    e: Escalation,
    state: String,
    deadline_text: String,
    deadline_flag: Option<&'static str>,
    registrant: String,
    categories: String,
    tables_tried: Vec<String>,
    participants: Vec<ParticipantRow>,
    meeting: Option<String>,
    decision: Option<String>,
    follow_up: String,
    commitments: Vec<CommitmentRow>,
    events: Vec<EventRow>,
    last_sequence: u64,
    labels_json: String,
    seats: Vec<SeatOption>,
    f: Forms,
    errors: Vec<FieldError>,
    can_plan: bool,
    can_decide: bool,
    show_report: bool,
}

impl EscalationPage {
    fn error_for(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.message.as_str())
    }

    /// The error of field `what` in commitment row `i`.
    fn row_error(&self, what: &str, i: &usize) -> Option<&str> {
        self.error_for(&format!("{what}{i}"))
    }
}

/// The query of an escalation's page: which form just succeeded.
#[derive(Debug, Deserialize)]
pub(super) struct Done {
    #[serde(default)]
    done: Option<String>,
}

/// An escalation's page.
pub(super) async fn escalation(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    let t = session.lang.texts();
    let flash = match done.done.as_deref() {
        Some("meeting") => Some(t.meeting_planned),
        Some("decision") => Some(t.decision_recorded),
        _ => None,
    };
    escalation_page(
        &state,
        &session,
        id,
        flash,
        Forms::default(),
        Vec::new(),
        StatusCode::OK,
    )
    .await
}

async fn escalation_page(
    state: &AppState,
    session: &Session,
    id: String,
    flash: Option<&'static str>,
    mut f: Forms,
    errors: Vec<FieldError>,
    status: StatusCode,
) -> Response {
    let t = session.lang.texts();
    let mut chrome = Chrome::new(
        session,
        state,
        "board",
        format!("/console/escalations/{id}"),
    );
    chrome.flash = flash;
    let e = match escalations::get_one(State(state.clone()), session.token.clone(), Path(id)).await
    {
        Ok(axum::Json(e)) => e,
        Err(p) => return Failure::new(p, chrome).into_response(),
    };
    let names = names(state, &session.token).await;
    let events = stored_events(state, &session.token, &e, &names, t).await;
    let now = Timestamp::now();
    if f.meeting_key.is_empty() {
        f.meeting_key = form_key();
        if let Some(m) = &e.meeting {
            f.at = m.at.as_deref().map(local_input).unwrap_or_default();
            f.location = m.location.clone();
        }
    }
    if f.decision_key.is_empty() {
        f.decision_key = form_key();
    }
    f.rows.resize(COMMITMENT_ROWS, Default::default());
    let flag = term_flag(&e, now);
    let state_name = e.state.map(|s| name_of(&s)).unwrap_or_default();
    let page = EscalationPage {
        c: chrome.titled(format!("{} {}", t.escalation, e.case_ref)),
        state: t.label(&state_name).to_owned(),
        deadline_text: e.deadline.as_deref().map(|d| t.time(d)).unwrap_or_default(),
        deadline_flag: flag.map(|f| match f {
            TermFlag::Passed => t.overdue,
            TermFlag::EndsSoon => t.due_soon,
        }),
        registrant: name(&names, &e.registrant_org),
        categories: e
            .categories
            .iter()
            .map(|c| t.label(c))
            .collect::<Vec<_>>()
            .join(", "),
        tables_tried: e
            .tables_tried
            .iter()
            .map(|tt| {
                format!(
                    "{} {} ({}): {}{}",
                    t.tier,
                    tt.tier,
                    tt.table,
                    t.label(&name_of(&tt.outcome)),
                    tt.at
                        .as_deref()
                        .map(|a| format!(", {}", t.time(a)))
                        .unwrap_or_default()
                )
            })
            .collect(),
        participants: e
            .participants
            .iter()
            .map(|p| ParticipantRow {
                org: if p.org_name.is_empty() {
                    name(&names, &p.org)
                } else {
                    p.org_name.clone()
                },
                seat: p
                    .seat
                    .as_ref()
                    .map(|s| format!("{} ({})", t.label(&s.org_kind), s.role))
                    .unwrap_or_default(),
                kind: p
                    .kind
                    .map(|k| t.label(&name_of(&k)).to_owned())
                    .unwrap_or_default(),
                mandate: p.mandate_id.clone(),
                missing: p.missing,
                missing_reason: p.missing_reason.clone(),
            })
            .collect(),
        meeting: e.meeting.as_ref().map(|m| {
            format!(
                "{}, {}",
                m.at.as_deref().map(|a| t.time(a)).unwrap_or_default(),
                m.location
            )
        }),
        decision: e.decision.as_ref().map(|d| d.summary.clone()),
        follow_up: e
            .decision
            .as_ref()
            .and_then(|d| d.follow_up_at.as_deref())
            .map(|a| t.time(a))
            .unwrap_or_default(),
        commitments: e
            .decision
            .iter()
            .flat_map(|d| &d.commitments)
            .map(|c| CommitmentRow {
                org: name(&names, &c.org),
                action: c.action.clone(),
                due: c.due.as_deref().map(|d| t.time(d)).unwrap_or_default(),
                state: c
                    .state
                    .map(|s| t.label(&name_of(&s)).to_owned())
                    .unwrap_or_default(),
                overdue: commitment_overdue(c, now),
                progress: c.progress.clone(),
            })
            .collect(),
        last_sequence: events.last().map_or(0, |ev| ev.sequence),
        events,
        labels_json: labels_json(t),
        seats: e
            .participants
            .iter()
            .filter(|p| !p.missing && !p.org.is_empty())
            .map(|p| SeatOption {
                value: format!("{}|{}", p.org, p.mandate_id),
                label: format!(
                    "{} — {}",
                    if p.org_name.is_empty() {
                        name(&names, &p.org)
                    } else {
                        p.org_name.clone()
                    },
                    p.seat.as_ref().map(|s| s.role.as_str()).unwrap_or_default()
                ),
            })
            .collect(),
        can_plan: matches!(
            e.state,
            Some(
                EscalationState::Accepted
                    | EscalationState::ParticipantsResolved
                    | EscalationState::MeetingPlanned
            )
        ),
        can_decide: matches!(e.state, Some(EscalationState::MeetingPlanned)),
        show_report: e.tier >= 3 && e.decision.is_some(),
        f,
        errors,
        e,
    };
    render(status, &page)
}

/// The escalation's events so far, read from the coordinator's stream up to its last sequence.
async fn stored_events(
    state: &AppState,
    token: &Token,
    e: &Escalation,
    names: &HashMap<String, String>,
    t: &Texts,
) -> Vec<EventRow> {
    let mut rows = Vec::new();
    if e.sequence == 0 {
        return rows;
    }
    let Ok(stream) = escalations::timeline(state, token, e.escalation_id.clone(), 0).await else {
        return rows;
    };
    let mut stream = std::pin::pin!(stream);
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(ev) = stream.next().await {
            let last = ev.sequence >= e.sequence;
            rows.push(EventRow {
                sequence: ev.sequence,
                label: t
                    .label(&ev.event.map(|k| name_of(&k)).unwrap_or_default())
                    .to_owned(),
                at: ev.occurred_at.clone().unwrap_or_default(),
                at_text: ev
                    .occurred_at
                    .as_deref()
                    .map(|a| t.time(a))
                    .unwrap_or_default(),
                tier: ev.tier,
                actor: name(names, &ev.actor_org),
            });
            if last {
                break;
            }
        }
    })
    .await;
    rows
}

/// The event labels for the live timeline's script.
fn labels_json(t: &Texts) -> String {
    let events = [
        "registered",
        "accepted",
        "rejected",
        "invited",
        "participants_resolved",
        "meeting_planned",
        "decided",
        "escalated",
        "scaled_down",
        "deadline_passed",
        "commitment_overdue",
        "closed",
        "reopened",
        "monitoring",
        "follow_up_due",
        "commitment_reported",
    ];
    let mut map: serde_json::Map<String, serde_json::Value> = events
        .iter()
        .map(|k| ((*k).to_owned(), t.label(k).into()))
        .collect();
    map.insert("tier".into(), t.tier.into());
    serde_json::Value::Object(map).to_string()
}

/// An RFC 3339 instant as a `datetime-local` input's value in Amsterdam time.
fn local_input(instant: &str) -> String {
    instant
        .parse::<Timestamp>()
        .map(|at| {
            at.to_zoned(amsterdam())
                .strftime("%Y-%m-%dT%H:%M")
                .to_string()
        })
        .unwrap_or_default()
}

/// A `datetime-local` value (Amsterdam time) as RFC 3339.
fn from_local_input(value: &str) -> Option<String> {
    let civil: jiff::civil::DateTime = value.trim().parse().ok()?;
    Some(civil.to_zoned(amsterdam()).ok()?.timestamp().to_string())
}

/// A `date` value as 17:00 Amsterdam time that day, in RFC 3339.
fn from_date_input(value: &str) -> Option<String> {
    let date: jiff::civil::Date = value.trim().parse().ok()?;
    Some(
        date.at(17, 0, 0, 0)
            .to_zoned(amsterdam())
            .ok()?
            .timestamp()
            .to_string(),
    )
}

/// Posts a form's call: success goes back to the page with `done`; a refusal the person can act
/// on comes back with the form as entered and the coordinator's reason.
async fn after_post(
    state: &AppState,
    session: &Session,
    id: String,
    done: &str,
    forms: Forms,
    field: &str,
    result: Result<axum::Json<Escalation>, Problem>,
) -> Response {
    match result {
        Ok(_) => Redirect::to(&format!(
            "/console/escalations/{}?done={done}",
            super::urlencode(&id)
        ))
        .into_response(),
        Err(p)
            if matches!(
                p.status(),
                StatusCode::BAD_REQUEST
                    | StatusCode::CONFLICT
                    | StatusCode::PRECONDITION_FAILED
                    | StatusCode::FORBIDDEN
            ) =>
        {
            let errors = vec![FieldError {
                field: field.to_owned(),
                message: p.detail,
            }];
            refused_form(state, session, id, forms, errors).await
        }
        Err(p) => Failure::new(
            p,
            Chrome::new(
                session,
                state,
                "board",
                format!("/console/escalations/{id}"),
            ),
        )
        .into_response(),
    }
}

/// The page again with the form as entered and what is wrong with it.
async fn refused_form(
    state: &AppState,
    session: &Session,
    id: String,
    forms: Forms,
    errors: Vec<FieldError>,
) -> Response {
    let status = StatusCode::UNPROCESSABLE_ENTITY;
    escalation_page(state, session, id, None, forms, errors, status).await
}

/// A field that must be filled in; the message names it, so the summary at the top reads alone.
fn required(errors: &mut Vec<FieldError>, t: &Texts, field: &str, label: &str, value: &str) {
    if value.trim().is_empty() {
        errors.push(FieldError {
            field: field.to_owned(),
            message: format!("{label}: {}", t.required_field),
        });
    }
}

fn invalid_time(errors: &mut Vec<FieldError>, t: &Texts, field: &str, label: &str) {
    errors.push(FieldError {
        field: field.to_owned(),
        message: format!("{label}: {}", t.invalid_time),
    });
}

fn field(form: &HashMap<String, String>, name: &str) -> String {
    form.get(name).cloned().unwrap_or_default()
}

/// Plans the meeting.
pub(super) async fn plan_meeting(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let t = session.lang.texts();
    let forms = Forms {
        meeting_key: field(&form, "key"),
        at: field(&form, "at"),
        location: field(&form, "location"),
        ..Forms::default()
    };
    let mut errors = Vec::new();
    required(&mut errors, t, "location", t.location, &forms.location);
    let at = from_local_input(&forms.at);
    if at.is_none() {
        invalid_time(&mut errors, t, "at", t.when);
    }
    if forms.meeting_key.is_empty() {
        errors.push(FieldError {
            field: "at".into(),
            message: t.form_invalid.into(),
        });
    }
    if !errors.is_empty() {
        return refused_form(&state, &session, id, forms, errors).await;
    }
    let result = escalations::plan_meeting(
        State(state.clone()),
        session.token.clone(),
        IdempotencyKey(forms.meeting_key.clone()),
        Path(id.clone()),
        Body(PlanMeeting {
            at: at.unwrap_or_default(),
            location: forms.location.clone(),
        }),
    )
    .await;
    after_post(&state, &session, id, "meeting", forms, "at", result).await
}

/// Records the decision with its commitments.
pub(super) async fn record_decision(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let t = session.lang.texts();
    let forms = Forms {
        decision_key: field(&form, "key"),
        summary: field(&form, "summary"),
        lessons: field(&form, "lessons"),
        national_advice: field(&form, "national_advice"),
        rows: (0..COMMITMENT_ROWS)
            .map(|i| {
                (
                    field(&form, &format!("seat{i}")),
                    field(&form, &format!("action{i}")),
                    field(&form, &format!("due{i}")),
                )
            })
            .collect(),
        ..Forms::default()
    };
    let mut errors = Vec::new();
    required(&mut errors, t, "summary", t.summary, &forms.summary);
    let mut commitments = Vec::new();
    for (i, (seat, action, due)) in forms.rows.iter().enumerate() {
        if seat.is_empty() && action.trim().is_empty() && due.is_empty() {
            continue;
        }
        let n = i + 1;
        required(
            &mut errors,
            t,
            &format!("seat{i}"),
            &format!("{} {n}, {}", t.commitment_n, t.organisation),
            seat,
        );
        required(
            &mut errors,
            t,
            &format!("action{i}"),
            &format!("{} {n}, {}", t.commitment_n, t.action),
            action,
        );
        let due_at = from_date_input(due);
        if due_at.is_none() {
            invalid_time(
                &mut errors,
                t,
                &format!("due{i}"),
                &format!("{} {n}, {}", t.commitment_n, t.due),
            );
        }
        if let (Some((org, mandate)), Some(due)) = (seat.split_once('|'), due_at) {
            commitments.push(CommitmentInput {
                org: org.to_owned(),
                action: action.trim().to_owned(),
                due,
                mandate_id: mandate.to_owned(),
            });
        }
    }
    if !errors.is_empty() {
        return refused_form(&state, &session, id, forms, errors).await;
    }
    let result = escalations::record_decision(
        State(state.clone()),
        session.token.clone(),
        IdempotencyKey(forms.decision_key.clone()),
        Path(id.clone()),
        Body(RecordDecision {
            summary: forms.summary.trim().to_owned(),
            commitments,
            lessons: forms.lessons.trim().to_owned(),
            national_advice: forms.national_advice.trim().to_owned(),
        }),
    )
    .await;
    after_post(&state, &session, id, "decision", forms, "summary", result).await
}

#[derive(Template)]
#[template(path = "report.html")]
struct ReportPage {
    c: Chrome,
    id: String,
    r: v1::GetReportResponse,
}

async fn get_report(
    state: &AppState,
    token: &Token,
    id: &str,
) -> Result<v1::GetReportResponse, Problem> {
    Ok(state
        .upstreams
        .coordinator()?
        .get_report(token.request(v1::GetReportRequest {
            escalation_id: id.to_owned(),
        }))
        .await?
        .into_inner())
}

/// The tier-3 report.
pub(super) async fn report(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let t = session.lang.texts();
    let chrome = Chrome::new(
        &session,
        &state,
        "board",
        format!("/console/escalations/{id}/report"),
    )
    .titled(t.report);
    match get_report(&state, &session.token, &id).await {
        Ok(r) => render(StatusCode::OK, &ReportPage { c: chrome, id, r }),
        Err(p) => Failure::new(p, chrome).into_response(),
    }
}

/// The tier-3 report as a Markdown download.
pub(super) async fn report_markdown(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let chrome = Chrome::new(
        &session,
        &state,
        "board",
        format!("/console/escalations/{id}/report"),
    );
    match get_report(&state, &session.token, &id).await {
        Ok(r) => (
            [
                (
                    header::CONTENT_TYPE,
                    "text/markdown; charset=utf-8".to_owned(),
                ),
                (
                    header::CONTENT_DISPOSITION,
                    format!(
                        "attachment; filename=\"verslag-{}.md\"",
                        id.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "")
                    ),
                ),
            ],
            r.markdown,
        )
            .into_response(),
        Err(p) => Failure::new(p, chrome).into_response(),
    }
}

/// Where the live timeline resumes.
#[derive(Debug, Deserialize)]
pub(super) struct After {
    #[serde(default)]
    after: u64,
}

/// The live timeline for the page's script: unnamed server-sent events after `after` (or the
/// browser's `Last-Event-ID` when it reconnects).
pub(super) async fn events(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<After>,
    headers: HeaderMap,
) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};

    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(q.after);
    match escalations::timeline(&state, &session.token, id, after).await {
        Ok(stream) => Sse::new(stream.map(|ev| {
            Event::default()
                .id(ev.sequence.to_string())
                .json_data(&ev)
                .map_err(std::io::Error::other)
        }))
        .keep_alive(KeepAlive::default())
        .into_response(),
        Err(p) => p.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_times_are_amsterdam_time() {
        assert_eq!(
            from_local_input("2026-12-03T14:00").as_deref(),
            Some("2026-12-03T13:00:00Z")
        );
        assert_eq!(
            from_local_input("2026-07-03T14:00").as_deref(),
            Some("2026-07-03T12:00:00Z")
        );
        assert_eq!(from_local_input("morgen"), None);
        assert_eq!(
            from_date_input("2026-12-10").as_deref(),
            Some("2026-12-10T16:00:00Z")
        );
        assert_eq!(local_input("2026-12-03T13:00:00Z"), "2026-12-03T14:00");
    }
}
