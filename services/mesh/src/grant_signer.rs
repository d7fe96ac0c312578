//! Signing participation grants as the coordinator does: a JWT with header `typ`
//! `doorzet-grant+jwt`, EdDSA, and the key id of a key the directory publishes for the coordinator.

use doorzet_domain::grant::{GRANT_TYPE, GrantClaims};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

/// Why a grant could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum GrantSignError {
    /// The key is not an Ed25519 PKCS#8 PEM key.
    #[error("grant signing key: {0}")]
    Key(jsonwebtoken::errors::Error),
    /// Signing failed.
    #[error("signing a grant: {0}")]
    Sign(jsonwebtoken::errors::Error),
}

/// The coordinator's grant key.
#[derive(Clone)]
pub struct GrantSigner {
    key: EncodingKey,
    kid: String,
}

impl std::fmt::Debug for GrantSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl GrantSigner {
    /// Reads an Ed25519 PKCS#8 PEM key with id `kid`.
    pub fn from_pem(private_pem: &[u8], kid: &str) -> Result<Self, GrantSignError> {
        Ok(Self {
            key: EncodingKey::from_ed_pem(private_pem).map_err(GrantSignError::Key)?,
            kid: kid.to_owned(),
        })
    }

    /// Signs `claims`.
    pub fn sign(&self, claims: &GrantClaims) -> Result<String, GrantSignError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        header.typ = Some(GRANT_TYPE.to_owned());
        jsonwebtoken::encode(&header, claims, &self.key).map_err(GrantSignError::Sign)
    }
}
