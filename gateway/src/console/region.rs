//! The region's "who decides what": every partner's mandates in force, searchable by domain and
//! tier, for anyone signed in (a process director putting a table together, a partner looking for
//! whom to ask). Members whose node did not answer are named, so a short list is never mistaken
//! for a complete one.

use std::collections::BTreeSet;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::partner::MandateCells;
use super::{Chrome, Failure, Session, name_of, render, urlencode};
use crate::api::region::{self, RegionMandateQuery};
use crate::api::{AppState, Params};

struct Row {
    organisation: String,
    kind: String,
    cells: MandateCells,
}

#[derive(Template)]
#[template(path = "region.html")]
struct RegionPage {
    c: Chrome,
    domain: String,
    domains: Vec<(String, String)>,
    tiers: Vec<(u32, bool)>,
    rows: Vec<Row>,
    unanswered: Vec<(String, String)>,
}

/// The page's search.
#[derive(Debug, Deserialize)]
pub(super) struct Search {
    #[serde(default)]
    domain: String,
    #[serde(default)]
    tier: String,
}

/// Every partner's mandates in force, searchable by domain and tier.
pub(super) async fn region(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<Search>,
) -> Response {
    let t = session.lang.texts();
    let tier: Option<u32> = q.tier.parse().ok();
    let mut here = format!("/console/region?domain={}", urlencode(&q.domain));
    if let Some(tier) = tier {
        here.push_str(&format!("&tier={tier}"));
    }
    let chrome = Chrome::new(&session, &state, "region", here).titled(t.region);
    // One round to every node; the domains and tiers to search by come from the same answer.
    let all = match region::region_mandates(
        State(state.clone()),
        session.token.clone(),
        Params(RegionMandateQuery::default()),
    )
    .await
    {
        Ok(answer) => answer.0,
        Err(p) => return Failure::new(p, chrome).into_response(),
    };
    let domains: BTreeSet<String> = all
        .items
        .iter()
        .flat_map(|m| m.mandate.domains.clone())
        .collect();
    let tiers: BTreeSet<u32> = all
        .items
        .iter()
        .flat_map(|m| m.mandate.tiers.clone())
        .collect();
    let rows = all
        .items
        .into_iter()
        .filter(|m| q.domain.is_empty() || m.mandate.domains.contains(&q.domain))
        .filter(|m| tier.is_none_or(|tier| m.mandate.tiers.contains(&tier)))
        .map(|m| Row {
            organisation: m.org_name,
            kind: m
                .org_kind
                .map(|k| t.label(&name_of(&k)).to_owned())
                .unwrap_or_default(),
            cells: MandateCells::new(t, m.mandate),
        })
        .collect();
    let page = RegionPage {
        c: chrome,
        domains: domains
            .into_iter()
            .map(|d| (t.label(&d).to_owned(), d))
            .collect(),
        domain: q.domain,
        tiers: tiers.into_iter().map(|n| (n, tier == Some(n))).collect(),
        rows,
        unanswered: all
            .unanswered
            .into_iter()
            .map(|u| (u.org_name, u.reason))
            .collect(),
    };
    render(StatusCode::OK, &page)
}
