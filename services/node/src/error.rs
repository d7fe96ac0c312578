//! The node's error type and its one mapping to `tonic::Status`.

use doorzet_proto::convert::ConvertError;

/// What can go wrong in the node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is invalid.
    #[error(transparent)]
    InvalidArgument(#[from] ConvertError),
    /// The caller's identity does not allow this call.
    #[error(transparent)]
    Identity(#[from] doorzet_mesh::IdentityError),
    /// The caller's role does not allow this call.
    #[error("{0}")]
    PermissionDenied(String),
    /// What the call names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// What the call would create exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The coordinator refused or failed a call.
    #[error("coordinator: {0}")]
    Coordinator(String),
    /// Another member's node refused or failed a call made on the caller's behalf.
    #[error("member {org}: {}", status.message())]
    Member {
        /// The member.
        org: doorzet_domain::Oin,
        /// Its answer.
        status: tonic::Status,
    },
    /// A participation grant was not accepted.
    #[error(transparent)]
    Grant(#[from] crate::grant::GrantError),
    /// The node is not in a state where this call makes sense.
    #[error("{0}")]
    FailedPrecondition(String),
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
    /// The disclosure log did not store a record (the request that made it fails).
    #[error("disclosure log: {0}")]
    DisclosureLog(String),
    /// A stored value could not be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl doorzet_mesh::service_main::Failure for Error {
    fn is_config(&self) -> bool {
        match self {
            Self::Config(_) | Self::Store(doorzet_store::StoreError::UnsupportedUrl(_)) => true,
            Self::Mesh(e) => doorzet_mesh::service_main::Failure::is_config(e),
            _ => false,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidArgument(e) => Self::invalid_argument(e.to_string()),
            Error::Identity(e) => e.into(),
            Error::PermissionDenied(_) => Self::permission_denied(err.to_string()),
            Error::FailedPrecondition(_) => Self::failed_precondition(err.to_string()),
            Error::NotFound(_) => Self::not_found(err.to_string()),
            Error::AlreadyExists(_) => Self::already_exists(err.to_string()),
            Error::Grant(_) => Self::permission_denied(err.to_string()),
            Error::Coordinator(_) => Self::unavailable(err.to_string()),
            Error::Member { ref status, .. } => Self::new(status.code(), err.to_string()),
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
