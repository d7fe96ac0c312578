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
    /// The audit log refused or failed.
    #[error(transparent)]
    Audit(#[from] doorzet_audit::AuditError),
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidArgument(e) => Self::invalid_argument(e.to_string()),
            Error::NotFound(_) => Self::not_found(err.to_string()),
            Error::PermissionDenied(_) => Self::permission_denied(err.to_string()),
            Error::Audit(e) => match e {
                doorzet_audit::AuditError::Entry(_) | doorzet_audit::AuditError::Range(_) => {
                    Self::invalid_argument(e.to_string())
                }
                doorzet_audit::AuditError::UnknownHash(_) => Self::not_found(e.to_string()),
                doorzet_audit::AuditError::Closed => Self::unavailable(e.to_string()),
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
