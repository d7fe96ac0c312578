//! Errors of the mesh crate, and the one place where identity failures become `tonic::Status`.

use std::path::PathBuf;

use doorzet_domain::Oin;

/// Why a caller was not accepted. Messages never contain token contents or personal data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// No client certificate was presented on a listener that requires one.
    #[error("no client certificate")]
    NoCertificate,
    /// The client certificate has no usable organisation id in its subject serialNumber.
    #[error("client certificate has no organisation id: {0}")]
    NoOrganisation(String),
    /// The certificate has a key-usage extension that does not allow digitalSignature.
    #[error("certificate key usage does not allow digitalSignature")]
    KeyUsage,
    /// The certificate is listed as revoked in the directory.
    #[error("client certificate is revoked")]
    Revoked,
    /// The organisation is not (or no longer) a member of the directory.
    #[error("organisation {0} is not a member of the directory")]
    NotMember(Oin),
    /// A token is required on this listener and none was sent.
    #[error("a bearer token is required")]
    MissingToken,
    /// The token could not be verified.
    #[error("invalid token: {0}")]
    BadToken(String),
    /// The token is valid but was presented by an organisation other than its issuer.
    #[error("token issued by {issuer} was presented over the connection of {peer}")]
    IssuerNotPeer {
        /// The token's issuer.
        issuer: Oin,
        /// The organisation of the TLS peer (or this node, on the local listener).
        peer: Oin,
    },
    /// The directory is not loaded yet, or older than its maximum age.
    #[error("directory unavailable: {0}")]
    DirectoryUnavailable(String),
    /// The handler needs a person or system token and the call carried none.
    #[error("this call needs a person or system token")]
    PersonRequired,
}

impl From<IdentityError> for tonic::Status {
    fn from(err: IdentityError) -> Self {
        let message = err.to_string();
        match err {
            IdentityError::NoCertificate
            | IdentityError::NoOrganisation(_)
            | IdentityError::KeyUsage
            | IdentityError::Revoked
            | IdentityError::MissingToken
            | IdentityError::BadToken(_)
            | IdentityError::PersonRequired => Self::unauthenticated(message),
            IdentityError::NotMember(_) | IdentityError::IssuerNotPeer { .. } => {
                Self::permission_denied(message)
            }
            IdentityError::DirectoryUnavailable(_) => Self::unavailable(message),
        }
    }
}

/// Failures of setting up or running mesh plumbing.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A PEM file did not hold what it should.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// rustls rejected the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The client verifier could not be built from the trust anchors.
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// A configuration file or environment override is invalid.
    #[error("configuration: {0}")]
    Config(#[from] Box<figment::Error>),
    /// A configuration value breaks a rule that spans fields.
    #[error("configuration: {0}")]
    Invalid(String),
    /// An endpoint address could not be used.
    #[error("endpoint {endpoint}: {reason}")]
    Endpoint {
        /// The endpoint as configured.
        endpoint: String,
        /// What was wrong.
        reason: String,
    },
    /// A socket operation failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The gRPC server failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Telemetry could not be set up.
    #[error("telemetry: {0}")]
    Telemetry(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn identity_errors_map_to_the_codes_design_md_names() {
        let oin: Oin = "00000001999000001000".parse().unwrap();
        let cases = [
            (IdentityError::NoCertificate, Code::Unauthenticated),
            (
                IdentityError::BadToken("expired".into()),
                Code::Unauthenticated,
            ),
            (IdentityError::Revoked, Code::Unauthenticated),
            (IdentityError::NotMember(oin), Code::PermissionDenied),
            (
                IdentityError::IssuerNotPeer {
                    issuer: oin,
                    peer: oin,
                },
                Code::PermissionDenied,
            ),
            (
                IdentityError::DirectoryUnavailable("stale".into()),
                Code::Unavailable,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(tonic::Status::from(err).code(), code);
        }
    }
}
