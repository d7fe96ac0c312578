//! The gateway's errors, and the one place they become HTTP answers: `application/problem+json`
//! (RFC 9457) carrying the meaning of the gRPC status behind them.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tonic::Code;
use utoipa::ToSchema;

/// What can stop the gateway from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is not usable.
    #[error("configuration: {0}")]
    Config(String),
    /// Certificates, keys or endpoints.
    #[error(transparent)]
    Mesh(#[from] doorzet_mesh::MeshError),
    /// A listener failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl doorzet_mesh::service_main::Failure for Error {
    fn is_config(&self) -> bool {
        match self {
            Self::Config(_) => true,
            Self::Mesh(e) => e.is_config(),
            Self::Io(_) => false,
        }
    }
}

/// An error answer (RFC 9457).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[schema(example = "urn:doorzet:problem:not-found")]
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    #[schema(example = "Not found")]
    pub title: String,
    /// The HTTP status code.
    #[schema(example = 404)]
    pub status: u16,
    /// What went wrong with this request, naming the field where one is at fault.
    #[schema(example = "escalation esc-abc")]
    pub detail: String,
    /// The gRPC status of the call behind the answer.
    #[schema(example = "NOT_FOUND")]
    pub grpc_status: String,
}

impl Problem {
    /// A problem of `code`'s meaning with `detail`.
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        let (status, slug, title) = meaning(code);
        Self {
            kind: format!("urn:doorzet:problem:{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            grpc_status: grpc_name(code).to_owned(),
        }
    }

    /// A request field the gateway itself found invalid.
    pub fn invalid(field: &str, reason: impl std::fmt::Display) -> Self {
        Self::new(Code::InvalidArgument, format!("{field}: {reason}"))
    }

    /// A request without a usable bearer token.
    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::new(Code::Unauthenticated, detail)
    }

    /// The same problem answered with another HTTP status (for the gateway's own limits, which
    /// HTTP names more precisely than gRPC).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status.as_u16();
        self.title = status.canonical_reason().unwrap_or("Error").to_owned();
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<tonic::Status> for Problem {
    fn from(status: tonic::Status) -> Self {
        match status.code() {
            // Upstream failures carry nothing the caller can act on; the node or coordinator
            // logged them with their cause.
            Code::Internal | Code::Unknown | Code::DataLoss => {
                Self::new(status.code(), "the service behind the gateway failed")
            }
            // A transport failure reaching the upstream (tonic reports it as UNAVAILABLE or
            // UNKNOWN without a message of the server's).
            _ => Self::new(status.code(), status.message()),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let unauthenticated = status == StatusCode::UNAUTHORIZED;
        let mut response = (status, axum::Json(self)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if unauthenticated {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"doorzet\""),
            );
        }
        response
    }
}

/// The HTTP status, URI slug and title of a gRPC status code.
fn meaning(code: Code) -> (StatusCode, &'static str, &'static str) {
    match code {
        Code::Ok => (StatusCode::OK, "ok", "OK"),
        Code::InvalidArgument | Code::OutOfRange => (
            StatusCode::BAD_REQUEST,
            "invalid-argument",
            "Invalid request",
        ),
        Code::Unauthenticated => (
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Authentication required",
        ),
        Code::PermissionDenied => (StatusCode::FORBIDDEN, "permission-denied", "Not allowed"),
        Code::NotFound => (StatusCode::NOT_FOUND, "not-found", "Not found"),
        Code::AlreadyExists => (StatusCode::CONFLICT, "already-exists", "Already exists"),
        Code::Aborted => (StatusCode::CONFLICT, "conflict", "Changed meanwhile; retry"),
        Code::FailedPrecondition => (
            StatusCode::CONFLICT,
            "failed-precondition",
            "Not possible in the current state",
        ),
        Code::ResourceExhausted => (
            StatusCode::TOO_MANY_REQUESTS,
            "resource-exhausted",
            "Too many requests",
        ),
        Code::Unimplemented => (
            StatusCode::NOT_IMPLEMENTED,
            "unimplemented",
            "Not supported",
        ),
        Code::Unavailable | Code::Cancelled => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Temporarily unavailable",
        ),
        Code::DeadlineExceeded => (
            StatusCode::GATEWAY_TIMEOUT,
            "deadline-exceeded",
            "Took too long",
        ),
        Code::Internal | Code::Unknown | Code::DataLoss => {
            (StatusCode::BAD_GATEWAY, "upstream-failed", "Service failed")
        }
    }
}

fn grpc_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_grpc_code_has_a_distinct_name_and_an_error_status() {
        let codes = (1..=16).map(Code::from_i32).collect::<Vec<_>>();
        let names: std::collections::BTreeSet<_> = codes.iter().map(|c| grpc_name(*c)).collect();
        assert_eq!(names.len(), 16);
        for code in codes {
            let p = Problem::new(code, "x");
            assert!(p.status >= 400, "{code:?}");
        }
    }

    #[test]
    fn upstream_internal_detail_is_not_passed_on() {
        let p = Problem::from(tonic::Status::internal("database at 10.0.0.7 refused"));
        assert_eq!(p.status, 502);
        assert!(!p.detail.contains("10.0.0.7"));
    }
}
