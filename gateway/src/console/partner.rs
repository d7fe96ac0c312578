//! A partner's own pages: its mandates (who decides what, searchable by domain, review dates
//! flagged), its inbox of the coordinator's messages, its cases with their facts, consents and
//! legal bases, and per case who saw which categories when. All of it comes from the
//! organisation's own node with the person's token; nothing here reaches another organisation's
//! data.

use std::collections::BTreeSet;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jiff::{Timestamp, ToSpan};
use serde::Deserialize;

use super::{Chrome, Failure, Session, Texts, name_of, render, urlencode};
use crate::api::cases::{self, CaseQuery, DisclosureQuery};
use crate::api::partner::{self, InboxOrder, InboxQuery, MandateQuery};
use crate::api::{AppState, Params};

/// A mandate as a table row shows it, on the organisation's page and the region's.
pub(super) struct MandateCells {
    pub role: String,
    pub person: String,
    pub tiers: String,
    pub domains: String,
    pub decision_types: String,
    pub legal_basis: String,
    pub valid: String,
    pub review: String,
}

impl MandateCells {
    pub(super) fn new(t: &Texts, m: partner::Mandate) -> Self {
        let words = |values: &[String]| {
            values
                .iter()
                .map(|v| t.label(v).replace('_', " "))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let time = |v: Option<&str>| v.map(|v| t.time(v)).unwrap_or_default();
        Self {
            tiers: m
                .tiers
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            domains: words(&m.domains),
            decision_types: words(&m.decision_types),
            valid: format!(
                "{} – {}",
                time(m.valid_from.as_deref()),
                time(m.valid_until.as_deref())
            ),
            review: time(m.review_date.as_deref()),
            role: m.role,
            person: m.person,
            legal_basis: m.legal_basis,
        }
    }
}

struct MandateRow {
    cells: MandateCells,
    flags: Vec<&'static str>,
    warn: bool,
}

#[derive(Template)]
#[template(path = "mandates.html")]
struct MandatesPage {
    c: Chrome,
    domain: String,
    domains: Vec<(String, String)>,
    rows: Vec<MandateRow>,
}

/// The mandates page's search.
#[derive(Debug, Deserialize)]
pub(super) struct MandateSearch {
    #[serde(default)]
    domain: String,
}

/// The organisation's mandates, every one (flagged when not current), searchable by domain.
pub(super) async fn mandates(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<MandateSearch>,
) -> Response {
    let t = session.lang.texts();
    let here = if q.domain.is_empty() {
        "/console/mandates".to_owned()
    } else {
        format!("/console/mandates?domain={}", urlencode(&q.domain))
    };
    let chrome = Chrome::new(&session, &state, "mandates", here).titled(t.mandates);
    let all = match partner::list_mandates(
        State(state.clone()),
        session.token.clone(),
        Params(MandateQuery {
            tier: None,
            role: None,
            domain: None,
            decision_type: None,
            valid_at: None,
            include_not_current: Some(true),
        }),
    )
    .await
    {
        Ok(page) => page.0.items,
        Err(p) => return Failure::new(p, chrome).into_response(),
    };
    let domains: BTreeSet<String> = all.iter().flat_map(|m| m.domains.clone()).collect();
    let now = Timestamp::now();
    let soon = now + (60 * 24).hours();
    let rows = all
        .into_iter()
        .filter(|m| q.domain.is_empty() || m.domains.contains(&q.domain))
        .map(|m| {
            let review = m
                .review_date
                .as_deref()
                .and_then(|r| r.parse::<Timestamp>().ok());
            let mut flags = Vec::new();
            if m.ended_at.is_some() {
                flags.push(t.ended);
            } else if m.is_review_overdue {
                flags.push(t.review_overdue);
            } else if !m.is_current {
                flags.push(t.not_current);
            } else {
                flags.push(t.current);
                if review.is_some_and(|r| r <= soon) {
                    flags.push(t.review_due);
                }
            }
            MandateRow {
                warn: !m.is_current || review.is_some_and(|r| r <= soon),
                cells: MandateCells::new(t, m),
                flags,
            }
        })
        .collect();
    let page = MandatesPage {
        c: chrome,
        domains: domains
            .into_iter()
            .map(|d| (t.label(&d).to_owned(), d))
            .collect(),
        domain: q.domain,
        rows,
    };
    render(StatusCode::OK, &page)
}

struct InboxRow {
    escalation_id: String,
    case_ref: String,
    event: String,
    sequence: u64,
    tier: u32,
    at: String,
    received: String,
    has_grant: bool,
}

#[derive(Template)]
#[template(path = "inbox.html")]
struct InboxPage {
    c: Chrome,
    rows: Vec<InboxRow>,
    next: Option<String>,
}

/// The inbox page's paging.
#[derive(Debug, Deserialize)]
pub(super) struct InboxPaging {
    #[serde(default)]
    before: Option<String>,
}

/// The node's inbox, the most recent first, a hundred at a time.
pub(super) async fn inbox(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<InboxPaging>,
) -> Response {
    let t = session.lang.texts();
    let chrome = Chrome::new(&session, &state, "inbox", "/console/inbox".into()).titled(t.inbox);
    let page = match partner::inbox(
        State(state.clone()),
        session.token.clone(),
        Params(InboxQuery {
            page_token: q.before,
            page_size: Some(100),
            order: Some(InboxOrder::NewestFirst),
        }),
    )
    .await
    {
        Ok(page) => page.0,
        Err(p) => return Failure::new(p, chrome).into_response(),
    };
    let rows = page
        .items
        .into_iter()
        .map(|i| InboxRow {
            escalation_id: i.escalation_id,
            case_ref: i.case_ref,
            event: t
                .label(&i.event.map(|e| name_of(&e)).unwrap_or_default())
                .to_owned(),
            sequence: i.sequence,
            tier: i.tier,
            at: i
                .occurred_at
                .as_deref()
                .map(|v| t.time(v))
                .unwrap_or_default(),
            received: i
                .received_at
                .as_deref()
                .map(|v| t.time(v))
                .unwrap_or_default(),
            has_grant: i.has_grant,
        })
        .collect();
    render(
        StatusCode::OK,
        &InboxPage {
            c: chrome,
            rows,
            next: page.next_page_token,
        },
    )
}

#[derive(Template)]
#[template(path = "cases.html")]
struct CasesPage {
    c: Chrome,
    rows: Vec<(String, String, String)>,
    next: Option<String>,
}

/// The cases page's paging.
#[derive(Debug, Deserialize)]
pub(super) struct CasePaging {
    #[serde(default)]
    before: Option<String>,
}

/// The organisation's cases, newest first.
pub(super) async fn cases(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<CasePaging>,
) -> Response {
    let t = session.lang.texts();
    let chrome = Chrome::new(&session, &state, "cases", "/console/cases".into()).titled(t.cases);
    match cases::list_cases(
        State(state.clone()),
        session.token.clone(),
        Params(CaseQuery {
            page_token: q.before,
            page_size: Some(50),
        }),
    )
    .await
    {
        Ok(page) => {
            let page = page.0;
            let rows = page
                .items
                .into_iter()
                .map(|c| {
                    (
                        c.case_id,
                        c.local_id,
                        c.created_at
                            .as_deref()
                            .map(|v| t.time(v))
                            .unwrap_or_default(),
                    )
                })
                .collect();
            render(
                StatusCode::OK,
                &CasesPage {
                    c: chrome,
                    rows,
                    next: page.next_page_token,
                },
            )
        }
        Err(p) => Failure::new(p, chrome).into_response(),
    }
}

struct FactRow {
    category: String,
    value: String,
    source: String,
    recorded: String,
}

struct PermissionRow {
    given_by: String,
    categories: String,
    recipients: String,
    purposes: String,
    valid: String,
    withdrawn: String,
}

struct DisclosureRow {
    at: String,
    requester: String,
    purpose: String,
    disclosed: String,
    withheld: String,
    outcome: String,
    refusal: String,
}

struct LinkRow {
    case_ref: String,
    linked: String,
    disclosures: Vec<DisclosureRow>,
}

#[derive(Template)]
#[template(path = "case.html")]
struct CasePage {
    c: Chrome,
    local_id: String,
    facts: Vec<FactRow>,
    consents: Vec<PermissionRow>,
    legal_bases: Vec<PermissionRow>,
    links: Vec<LinkRow>,
}

/// One case: its facts (the organisation's own), consents, legal bases, and per case reference
/// who asked for which categories when.
pub(super) async fn case(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let t = session.lang.texts();
    let chrome = Chrome::new(&session, &state, "cases", format!("/console/cases/{id}"));
    let d = match cases::get_case(State(state.clone()), session.token.clone(), Path(id)).await {
        Ok(d) => d.0,
        Err(p) => return Failure::new(p, chrome).into_response(),
    };
    let names = super::names(&state, &session.token).await;
    let org = |o: &str| names.get(o).cloned().unwrap_or_else(|| o.to_owned());
    let labels = |v: &[String]| {
        if v.is_empty() {
            t.none.to_owned()
        } else {
            v.iter().map(|c| t.label(c)).collect::<Vec<_>>().join(", ")
        }
    };
    let period = |from: &Option<String>, until: &Option<String>| {
        format!(
            "{} – {}",
            from.as_deref().map(|v| t.time(v)).unwrap_or_default(),
            until.as_deref().map(|v| t.time(v)).unwrap_or_default()
        )
    };
    let recipients = |r: &cases::Recipients| {
        r.org_ids
            .iter()
            .map(|o| org(o))
            .chain(r.kinds.iter().map(|k| t.label(&name_of(k)).to_owned()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut links = Vec::new();
    for l in &d.links {
        let disclosures = match cases::disclosures(
            State(state.clone()),
            session.token.clone(),
            Params(DisclosureQuery {
                case_ref: l.case_ref.clone(),
                page_size: Some(100),
            }),
        )
        .await
        {
            Ok(page) => page
                .0
                .items
                .into_iter()
                .map(|x| DisclosureRow {
                    at: x.at.as_deref().map(|v| t.time(v)).unwrap_or_default(),
                    requester: format!("{} ({})", org(&x.requester_org), x.requester_person),
                    purpose: t.label(&x.purpose).to_owned(),
                    disclosed: labels(&x.disclosed_categories),
                    withheld: labels(&x.withheld_categories),
                    outcome: x
                        .outcome
                        .map(|o| t.label(&name_of(&o)).to_owned())
                        .unwrap_or_default(),
                    refusal: x.refusal,
                })
                .collect(),
            // The log is for roles that may read it; the rest of the case still shows.
            Err(_) => Vec::new(),
        };
        links.push(LinkRow {
            case_ref: l.case_ref.clone(),
            linked: l
                .linked_at
                .as_deref()
                .map(|v| t.time(v))
                .unwrap_or_default(),
            disclosures,
        });
    }
    let page = CasePage {
        c: chrome.titled(format!("{} {}", t.case, d.case.local_id)),
        local_id: d.case.local_id.clone(),
        facts: d
            .facts
            .iter()
            .map(|f| FactRow {
                category: t.label(&f.category).to_owned(),
                value: f.value.clone(),
                source: f.source.clone(),
                recorded: f
                    .recorded_at
                    .as_deref()
                    .map(|v| t.time(v))
                    .unwrap_or_default(),
            })
            .collect(),
        consents: d
            .consents
            .iter()
            .map(|c| PermissionRow {
                given_by: c
                    .given_by
                    .map(|g| t.label(&name_of(&g)).to_owned())
                    .unwrap_or_default(),
                categories: labels(&c.categories),
                recipients: recipients(&c.recipients),
                purposes: labels(&c.purposes),
                valid: period(&c.valid_from, &c.valid_until),
                withdrawn: c
                    .withdrawn_at
                    .as_deref()
                    .map(|v| t.time(v))
                    .unwrap_or_default(),
            })
            .collect(),
        legal_bases: d
            .legal_bases
            .iter()
            .map(|b| PermissionRow {
                given_by: format!("{} {}", b.law, b.article),
                categories: labels(&b.categories),
                recipients: recipients(&b.recipients),
                purposes: labels(&b.purposes),
                valid: period(&b.valid_from, &b.valid_until),
                withdrawn: String::new(),
            })
            .collect(),
        links,
    };
    render(StatusCode::OK, &page)
}
