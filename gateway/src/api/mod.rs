//! The REST/JSON API under `/api/v1`, its OpenAPI document (generated from the handlers and
//! their types, so the two cannot drift), and the extractors that turn malformed JSON or query
//! strings into problem answers naming the field.

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use crate::error::Problem;
use crate::idempotency::Replays;
use crate::upstream::{Token, Upstreams};

pub mod cases;
pub(crate) mod convert;
pub(crate) use convert::time_out;
pub mod escalations;
pub mod partner;
pub mod region;
pub mod webhooks;

/// The API's version, in every response's `API-Version` header and in the OpenAPI document.
pub const API_VERSION: &str = "1.0.0";

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The services behind the gateway.
    pub upstreams: Upstreams,
    /// Webhooks, when configured.
    pub webhooks: Option<std::sync::Arc<crate::webhooks::Webhooks>>,
    /// How people sign in to the console.
    pub console: std::sync::Arc<crate::config::ConsoleConfig>,
    /// The organisation's identity provider, when the console signs in through it.
    pub oidc: Option<std::sync::Arc<crate::console::oidc::Oidc>>,
}

/// One page of a list.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `pageToken` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

impl<T> Page<T> {
    /// A page; an empty `next` means the last one.
    pub fn new(items: Vec<T>, next: String) -> Self {
        Self {
            items,
            next_page_token: (!next.is_empty()).then_some(next),
        }
    }
}

/// The answers besides success every operation documents: problems (RFC 9457).
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum Refused {
    /// Refused: the detail names the field or rule at fault.
    #[response(status = "4XX", content_type = "application/problem+json")]
    Refused(Problem),
    /// The service behind the gateway is unavailable, too slow, or failed.
    #[response(status = "5XX", content_type = "application/problem+json")]
    Failed(Problem),
}

/// The `Idempotency-Key` header every POST takes.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IdempotencyHeader {
    /// A retry with the same key answers with the first result; the same key with another request
    /// is refused (1 to 64 of A-Z a-z 0-9 . _ : -).
    #[param(rename = "Idempotency-Key", pattern = r"^[A-Za-z0-9._:-]{1,64}$")]
    idempotency_key: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "doorzet",
        description = "The escalation ladder between care and safety organisations: escalations at the coordinator, and a partner's mandates and inbox at its own node. Every call carries the caller's own token (`Authorization: Bearer`), issued by their organisation.",
        license(name = "EUPL-1.2"),
        version = "1.0.0",
    ),
    servers((url = "/api/v1")),
    components(schemas(Problem)),
    modifiers(&BearerAuth),
    tags(
        (name = "escalations", description = "The escalation ladder, at the coordinator"),
        (name = "partner", description = "This organisation's mandates, cases and inbox, at its node"),
        (name = "webhooks", description = "This organisation's escalation events, pushed to its systems"),
    ),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The API's routes (relative to `/api/v1`) and its OpenAPI document. `replays` keeps the
/// answers to keyed POSTs whose gRPC call carries no request id of its own.
pub fn router(replays: Replays) -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(escalations::routes())
        .merge(partner::routes())
        .merge(region::routes())
        .merge(webhooks::routes())
        .merge(
            cases::routes().route_layer(axum::middleware::from_fn_with_state(
                replays,
                crate::idempotency::replay,
            )),
        )
        .split_for_parts()
}

/// Checks that `token` is one a person of this organisation holds, for answers that come from
/// the organisation's certificate alone (the directory, other members' mandates): the node checks
/// it, or, on a gateway beside the coordinator only, the coordinator.
pub(crate) async fn authenticate(state: &AppState, token: &Token) -> Result<(), Problem> {
    use doorzet_proto::v1;
    if let Ok(mut node) = state.upstreams.node() {
        node.who_am_i(token.request(v1::WhoAmIRequest {})).await?;
    } else {
        state
            .upstreams
            .coordinator()?
            .list_escalations(token.request(v1::ListEscalationsRequest {
                page_size: 1,
                ..Default::default()
            }))
            .await?;
    }
    Ok(())
}

/// A JSON body whose rejections are problem answers: 400 naming the field, 413, 415.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        use axum::extract::rejection::JsonRejection as R;
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(R::JsonDataError(e)) => Err(Problem::invalid("body", e.body_text())),
            Err(R::JsonSyntaxError(e)) => Err(Problem::invalid("body", e.body_text())),
            Err(R::MissingJsonContentType(_)) => {
                Err(Problem::invalid("Content-Type", "must be application/json")
                    .with_status(axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE))
            }
            Err(R::BytesRejection(e))
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(
                    Problem::new(tonic::Code::ResourceExhausted, "body: too large")
                        .with_status(axum::http::StatusCode::PAYLOAD_TOO_LARGE),
                )
            }
            Err(e) => Err(Problem::invalid("body", e.body_text())),
        }
    }
}

/// A query string whose rejections are problem answers naming the parameter.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e| Problem::invalid("query", e.body_text()))
    }
}
