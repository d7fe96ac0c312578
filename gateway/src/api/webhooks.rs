//! Registering webhooks and seeing their deliveries. Only a role in `webhooks.admin_roles` of the
//! gateway's own organisation may register; the token is checked at the node first.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use doorzet_proto::v1;
use doorzet_store::{from_millis, millis};
use serde::{Deserialize, Serialize};
use tonic::Code;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::partner::EventType;
use super::{AppState, Body, IdempotencyHeader, Page, Refused};
use crate::error::Problem;
use crate::upstream::Token;
use crate::webhooks::Webhooks;

fn time(ms: Option<i64>) -> Option<String> {
    super::time_out(ms.map(|ms| from_millis(ms).into()))
}

fn storage(e: sqlx::Error) -> Problem {
    tracing::error!(error = %e, "webhook storage");
    Problem::new(Code::Internal, "webhook storage failed")
        .with_status(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The webhooks and who is asking, after checking that the caller may manage them.
pub(crate) async fn authorised(
    state: &AppState,
    token: &Token,
) -> Result<(Arc<Webhooks>, v1::WhoAmIResponse), Problem> {
    let hooks = state.webhooks.clone().ok_or_else(|| {
        Problem::new(
            Code::Unimplemented,
            "webhooks are not configured at this gateway ([webhooks])",
        )
    })?;
    let me = state
        .upstreams
        .node()?
        .who_am_i(token.request(v1::WhoAmIRequest {}))
        .await?
        .into_inner();
    if !hooks.config.admin_roles.contains(&me.role) {
        return Err(Problem::new(
            Code::PermissionDenied,
            format!("role `{}` may not manage webhooks", me.role),
        ));
    }
    Ok((hooks, me))
}

/// A webhook to register.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewWebhook {
    /// The endpoint, `https://...`.
    pub url: String,
    /// Only these events; empty: all.
    #[serde(default)]
    pub events: Vec<EventType>,
}

/// A registered webhook.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    /// Its id.
    pub webhook_id: String,
    /// The endpoint.
    pub url: String,
    /// The events it receives; empty: all.
    pub events: Vec<EventType>,
    /// Who registered it.
    pub created_by: String,
    /// When (RFC 3339).
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
    /// The signing secret: shown once, in the answer to the registration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

fn events_out(events: &str) -> Vec<EventType> {
    events
        .split(',')
        .filter(|e| !e.is_empty())
        .filter_map(|e| serde_json::from_value(serde_json::Value::String(e.to_owned())).ok())
        .collect()
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// Registers an endpoint for the organisation's escalation events. The answer holds the signing
/// secret, once.
#[utoipa::path(post, path = "/webhooks", tag = "webhooks", request_body = NewWebhook,
    params(IdempotencyHeader),
    responses((status = 201, description = "Registered", body = Webhook), Refused),
    security(("bearer" = [])))]
pub(crate) async fn register(
    State(state): State<AppState>,
    token: Token,
    Body(body): Body<NewWebhook>,
) -> Result<Response, Problem> {
    let (hooks, me) = authorised(&state, &token).await?;
    let url: http::Uri = body
        .url
        .parse()
        .map_err(|_| Problem::invalid("url", "is not a URL"))?;
    let host = url.host().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme_str() {
        Some("https") if !host.is_empty() => {}
        Some("http") if loopback && hooks.config.allow_plain_http_loopback => {}
        _ => return Err(Problem::invalid("url", "must be an https:// URL")),
    }
    let events = body
        .events
        .iter()
        .filter_map(|e| serde_json::to_value(e).ok()?.as_str().map(str::to_owned))
        .collect::<Vec<_>>()
        .join(",");
    let id = format!("webhook-{}", random_hex(8));
    let secret = format!("whsec-{}", random_hex(24));
    let now = SystemTime::now();
    sqlx::query(
        "INSERT INTO webhooks (webhook_id, url, secret, events, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(&body.url)
    .bind(&secret)
    .bind(&events)
    .bind(&me.subject)
    .bind(millis(now))
    .execute(hooks.db.pool())
    .await
    .map_err(storage)?;
    let hook = Webhook {
        webhook_id: id.clone(),
        url: body.url,
        events: events_out(&events),
        created_by: me.subject,
        created_at: time(Some(millis(now))),
        secret: Some(secret),
    };
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/v1/webhooks/{id}"))],
        Json(hook),
    )
        .into_response())
}

/// The organisation's webhooks (without their secrets).
#[utoipa::path(get, path = "/webhooks", tag = "webhooks",
    responses((status = 200, description = "Every webhook (one page)", body = Page<Webhook>), Refused),
    security(("bearer" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    token: Token,
) -> Result<Json<Page<Webhook>>, Problem> {
    let (hooks, _) = authorised(&state, &token).await?;
    let rows: Vec<(String, String, String, String, i64)> = sqlx::query_as(
        "SELECT webhook_id, url, events, created_by, created_at FROM webhooks ORDER BY created_at",
    )
    .fetch_all(hooks.db.pool())
    .await
    .map_err(storage)?;
    let items = rows
        .into_iter()
        .map(|(webhook_id, url, events, created_by, at)| Webhook {
            webhook_id,
            url,
            events: events_out(&events),
            created_by,
            created_at: time(Some(at)),
            secret: None,
        })
        .collect();
    Ok(Json(Page::new(items, String::new())))
}

/// One delivery of an event to a webhook.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// The event's id.
    pub event_id: String,
    /// `pending` (not yet accepted; retried with backoff) or `delivered`.
    pub state: String,
    /// Attempts so far.
    pub attempts: i64,
    /// Why the last attempt failed.
    pub last_error: String,
    /// When the next attempt is due (RFC 3339), while pending.
    #[schema(format = DateTime)]
    pub next_attempt_at: Option<String>,
    /// When the endpoint accepted it (RFC 3339).
    #[schema(format = DateTime)]
    pub delivered_at: Option<String>,
    /// What was (or will be) delivered.
    pub event: crate::webhooks::WebhookEvent,
}

/// A webhook's deliveries, oldest first (the last 500).
#[utoipa::path(get, path = "/webhooks/{webhookId}/deliveries", tag = "webhooks",
    params(("webhookId" = String, Path, description = "The webhook")),
    responses((status = 200, description = "The deliveries (one page)", body = Page<Delivery>), Refused),
    security(("bearer" = [])))]
pub(crate) async fn deliveries(
    State(state): State<AppState>,
    token: Token,
    Path(id): Path<String>,
) -> Result<Json<Page<Delivery>>, Problem> {
    let (hooks, _) = authorised(&state, &token).await?;
    let known: Option<(String,)> =
        sqlx::query_as("SELECT webhook_id FROM webhooks WHERE webhook_id = $1")
            .bind(&id)
            .fetch_optional(hooks.db.pool())
            .await
            .map_err(storage)?;
    if known.is_none() {
        return Err(Problem::new(Code::NotFound, format!("webhook {id}")));
    }
    type Row = (String, String, i64, String, i64, Option<i64>, String);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT event_id, state, attempts, last_error, next_attempt_at, delivered_at, payload \
         FROM deliveries WHERE webhook_id = $1 ORDER BY created_at, event_id LIMIT 500",
    )
    .bind(&id)
    .fetch_all(hooks.db.pool())
    .await
    .map_err(storage)?;
    let items = rows
        .into_iter()
        .filter_map(
            |(event_id, state, attempts, last_error, next, delivered, payload)| {
                Some(Delivery {
                    event: serde_json::from_str(&payload).ok()?,
                    event_id,
                    next_attempt_at: (state == "pending").then(|| time(Some(next))).flatten(),
                    state,
                    attempts,
                    last_error,
                    delivered_at: time(delivered),
                })
            },
        )
        .collect();
    Ok(Json(Page::new(items, String::new())))
}

/// The webhook routes and their documentation.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register, list))
        .routes(routes!(deliveries))
}
