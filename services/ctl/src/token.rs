//! Minting development JWTs as an organisation's identity provider would: EdDSA, with issuer =
//! organisation id, subject, role, audience, not-before and expiry.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use doorzet_domain::Oin;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// What a token should say.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// Issuing organisation.
    pub org: Oin,
    /// Employee or system id.
    pub subject: String,
    /// Role, e.g. `procesregisseur`.
    pub role: String,
    /// Audience (the region's mesh).
    pub audience: String,
    /// Issued-at; not-before equals it.
    pub issued_at: SystemTime,
    /// Lifetime.
    pub ttl: Duration,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    role: &'a str,
    aud: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
    jti: String,
}

/// Failures of minting a token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The signing key is not an Ed25519 PKCS#8 PEM key.
    #[error("signing key: {0}")]
    Key(jsonwebtoken::errors::Error),
    /// Signing failed.
    #[error("signing: {0}")]
    Sign(jsonwebtoken::errors::Error),
}

/// Signs a token with an Ed25519 PKCS#8 PEM key whose id is `kid`.
pub fn mint(private_pem: &[u8], kid: &str, request: &TokenRequest) -> Result<String, TokenError> {
    let key = EncodingKey::from_ed_pem(private_pem).map_err(TokenError::Key)?;
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    let iat = request
        .issued_at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims = Claims {
        iss: request.org.as_str(),
        sub: &request.subject,
        role: &request.role,
        aud: &request.audience,
        iat,
        nbf: iat,
        exp: iat + request.ttl.as_secs(),
        jti: hex::encode(rand::random::<[u8; 12]>()),
    };
    jsonwebtoken::encode(&header, &claims, &key).map_err(TokenError::Sign)
}

/// Signs a participation grant as the coordinator does, with the coordinator's key `kid` (for the
/// local mesh's development key).
pub fn mint_grant(
    private_pem: &[u8],
    kid: &str,
    claims: &doorzet_domain::grant::GrantClaims,
) -> Result<String, doorzet_mesh::grant_signer::GrantSignError> {
    doorzet_mesh::grant_signer::GrantSigner::from_pem(private_pem, kid)?.sign(claims)
}
