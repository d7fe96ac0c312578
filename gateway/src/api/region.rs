//! The region's "who decides what": every member's current mandates, asked of each member's node
//! in parallel (any member may ask another's `ListMandates`, with its own certificate), and the
//! members that did not answer in time listed as such rather than silently left out.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use doorzet_domain::Oin;
use doorzet_proto::v1;
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::cases::OrganisationKind;
use super::convert::opt_time_in;
use super::partner::Mandate;
use super::{AppState, Params, Refused, authenticate};
use crate::error::Problem;
use crate::upstream::Token;

/// How long one member's node may take; a slower one is listed as not answering.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(3);

/// A member's mandate, with the member's name and kind.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegionMandate {
    /// The mandate, as its organisation's node serves it.
    #[serde(flatten)]
    pub mandate: Mandate,
    /// The organisation's name in the directory.
    pub org_name: String,
    /// Its kind.
    pub org_kind: Option<OrganisationKind>,
}

/// A member whose node gave no answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Unanswered {
    /// The organisation.
    pub org_id: String,
    /// Its name in the directory.
    pub org_name: String,
    /// Why: unreachable, too slow, or what it answered.
    pub reason: String,
}

/// The region's current mandates.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegionMandates {
    /// Every current mandate that matches, by organisation name and role (one page holds them
    /// all).
    pub items: Vec<RegionMandate>,
    /// Members whose nodes did not answer: their mandates are missing from `items`.
    pub unanswered: Vec<Unanswered>,
}

/// Filters for the region's mandates.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RegionMandateQuery {
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
    /// Only this organisation (its OIN).
    pub org_id: Option<String>,
}

/// Who decides what in the region: the current mandates of every member, as each member's own
/// node serves them (ended, expired and review-overdue mandates are never served).
#[utoipa::path(
    get,
    path = "/region/mandates",
    tag = "partner",
    params(RegionMandateQuery),
    responses(
        (status = 200, description = "The mandates, and the members that did not answer", body = RegionMandates),
        Refused,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn region_mandates(
    State(state): State<AppState>,
    token: Token,
    Params(q): Params<RegionMandateQuery>,
) -> Result<Json<RegionMandates>, Problem> {
    let only: Option<Oin> = q
        .org_id
        .as_deref()
        .map(|o| {
            o.parse()
                .map_err(|_| Problem::invalid("orgId", "must be an OIN of 20 digits"))
        })
        .transpose()?;
    let filter = v1::ListMandatesRequest {
        tier: q.tier,
        role: q.role.unwrap_or_default(),
        domain: q.domain.unwrap_or_default(),
        decision_type: q.decision_type.unwrap_or_default(),
        valid_at: opt_time_in("validAt", q.valid_at.as_deref())?,
    };
    authenticate(&state, &token).await?;
    let members = state
        .upstreams
        .directory()?
        .list_members(v1::ListMembersRequest {})
        .await?
        .into_inner()
        .members;
    let asks = members
        .into_iter()
        .filter_map(|m| Some((m.org_id.parse::<Oin>().ok()?, m)))
        .filter(|(org, _)| only.is_none_or(|o| o == *org))
        .map(|(org, m)| {
            let filter = filter.clone();
            let state = state.clone();
            async move {
                let answer = ask(&state, org, &m.mesh_endpoint, filter).await;
                (m, answer)
            }
        });
    let mut items = Vec::new();
    let mut unanswered = Vec::new();
    for (member, answer) in join_all(asks).await {
        match answer {
            Ok(mandates) => {
                items.extend(
                    mandates
                        .into_iter()
                        .filter(|m| m.is_current)
                        .map(|m| RegionMandate {
                            mandate: m.into(),
                            org_name: member.name.clone(),
                            org_kind: OrganisationKind::from_proto(member.kind),
                        }),
                )
            }
            // The filter is the same for every node: one that finds it invalid speaks for all.
            Err(Ask::Refused(status)) if status.code() == tonic::Code::InvalidArgument => {
                return Err(status.into());
            }
            Err(why) => unanswered.push(Unanswered {
                org_id: member.org_id,
                org_name: member.name,
                reason: why.to_string(),
            }),
        }
    }
    items.sort_by(|a, b| {
        (
            &a.org_name,
            &a.mandate.org_id,
            &a.mandate.role,
            &a.mandate.mandate_id,
        )
            .cmp(&(
                &b.org_name,
                &b.mandate.org_id,
                &b.mandate.role,
                &b.mandate.mandate_id,
            ))
    });
    unanswered.sort_by(|a, b| a.org_name.cmp(&b.org_name));
    Ok(Json(RegionMandates { items, unanswered }))
}

/// Why a member's node gave no list.
#[derive(Debug, thiserror::Error)]
enum Ask {
    #[error("no mesh address in the directory")]
    NoEndpoint,
    #[error("not reachable: {0}")]
    Unreachable(String),
    #[error("no answer within {} s", MEMBER_TIMEOUT.as_secs())]
    TooSlow,
    #[error("answered {}: {}", .0.code(), .0.message())]
    Refused(tonic::Status),
}

async fn ask(
    state: &AppState,
    org: Oin,
    endpoint: &str,
    filter: v1::ListMandatesRequest,
) -> Result<Vec<v1::Mandate>, Ask> {
    if endpoint.is_empty() {
        return Err(Ask::NoEndpoint);
    }
    let mut client = state
        .upstreams
        .member(org, endpoint)
        .map_err(|p| Ask::Unreachable(p.detail))?;
    let mut request = tonic::Request::new(filter);
    request.set_timeout(MEMBER_TIMEOUT);
    match tokio::time::timeout(MEMBER_TIMEOUT, client.list_mandates(request)).await {
        Err(_) => Err(Ask::TooSlow),
        Ok(Ok(answer)) => Ok(answer.into_inner().mandates),
        Ok(Err(status))
            if matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
            ) =>
        {
            Err(Ask::Unreachable(status.message().to_owned()))
        }
        Ok(Err(status)) => Err(Ask::Refused(status)),
    }
}

/// The region routes and their documentation.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(region_mandates))
}
