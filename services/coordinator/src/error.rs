//! The coordinator's error type and its one mapping to `tonic::Status`.

use doorzet_proto::convert::ConvertError;

/// What can go wrong in the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is invalid.
    #[error(transparent)]
    InvalidArgument(#[from] ConvertError),
    /// The thing asked for does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The directory file is invalid; the message names the file, member and field.
    #[error("{0}")]
    Directory(String),
    /// The configuration is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// Mesh plumbing failed (TLS files, sockets, config loading).
    #[error(transparent)]
    Mesh(#[from] doorzet_mesh::MeshError),
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] doorzet_store::StoreError),
    /// A query failed.
    #[error("storage failure")]
    Storage(#[from] sqlx::Error),
    /// The caller may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// A per-organisation quota is used up.
    #[error("{0}")]
    Quota(String),
    /// A dependency is not ready.
    #[error("{0}")]
    Unavailable(String),
    /// The escalation is not in a state (or tier) that allows this.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The idempotency key was used for another request.
    #[error("{0}")]
    AlreadyExists(String),
    /// A person's token is needed.
    #[error("{0}")]
    Unauthenticated(String),
    /// Another transition of the same escalation committed first (retried internally).
    #[error("the escalation changed meanwhile")]
    Conflict,
    /// Stored data does not decode.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The audit log refused or failed.
    #[error(transparent)]
    Audit(#[from] doorzet_audit::AuditError),
}

impl doorzet_mesh::service_main::Failure for Error {
    fn is_config(&self) -> bool {
        match self {
            Self::Config(_)
            | Self::Directory(_)
            | Self::Store(doorzet_store::StoreError::UnsupportedUrl(_)) => true,
            Self::Mesh(e) => doorzet_mesh::service_main::Failure::is_config(e),
            _ => false,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidArgument(e) => Self::invalid_argument(e.to_string()),
            Error::NotFound(_) => Self::not_found(err.to_string()),
            Error::PermissionDenied(_) => Self::permission_denied(err.to_string()),
            Error::Quota(_) => Self::resource_exhausted(err.to_string()),
            Error::FailedPrecondition(_) => Self::failed_precondition(err.to_string()),
            Error::AlreadyExists(_) => Self::already_exists(err.to_string()),
            Error::Unauthenticated(_) => Self::unauthenticated(err.to_string()),
            Error::Conflict => Self::aborted(err.to_string()),
            Error::Unavailable(_) => Self::unavailable(err.to_string()),
            Error::Audit(e) => match e {
                doorzet_audit::AuditError::Entry(_) | doorzet_audit::AuditError::Range(_) => {
                    Self::invalid_argument(e.to_string())
                }
                doorzet_audit::AuditError::UnknownHash(_) => Self::not_found(e.to_string()),
                doorzet_audit::AuditError::Closed | doorzet_audit::AuditError::NotLeader => {
                    Self::unavailable(e.to_string())
                }
                other => {
                    tracing::error!(error = %other, "audit log failure");
                    Self::internal("internal error")
                }
            },
            Error::Storage(e) => {
                tracing::error!(error = %e, "storage failure");
                Self::internal("internal error")
            }
            other => {
                tracing::error!(error = %other, "internal failure");
                Self::internal("internal error")
            }
        }
    }
}
