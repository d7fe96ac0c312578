//! Checking a participation grant: a JWT of type `doorzet-grant+jwt`, signed with one of the
//! coordinator's keys in the directory, whose claims the domain rule accepts for this caller,
//! this case reference and this moment (no leeway on its expiry).

use std::time::SystemTime;

use doorzet_domain::Oin;
use doorzet_domain::grant::{self, GRANT_TYPE, Grant, GrantClaims, GrantRefusal};
use doorzet_mesh::directory::Snapshot;
use jsonwebtoken::{Algorithm, Validation};

/// Why a grant was not accepted; the request is refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// No grant was sent.
    #[error("a participation grant is required")]
    Missing,
    /// Not a grant: malformed, wrong type or algorithm.
    #[error("grant is malformed: {0}")]
    Malformed(&'static str),
    /// Not signed by the coordinator's keys.
    #[error("grant is not signed by the coordinator")]
    Signature,
    /// Signed, but not for this caller, case or moment.
    #[error(transparent)]
    Refused(#[from] GrantRefusal),
}

/// Verifies `token` for `caller` asking about `case_ref` at `now`.
pub fn verify(
    snapshot: &Snapshot,
    token: &str,
    caller: &Oin,
    case_ref: &str,
    now: SystemTime,
) -> Result<Grant, GrantError> {
    if token.is_empty() {
        return Err(GrantError::Missing);
    }
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| GrantError::Malformed("header does not decode"))?;
    if header.typ.as_deref() != Some(GRANT_TYPE) {
        return Err(GrantError::Malformed("typ is not doorzet-grant+jwt"));
    }
    if !matches!(header.alg, Algorithm::EdDSA | Algorithm::ES256) {
        return Err(GrantError::Malformed("algorithm must be EdDSA or ES256"));
    }
    let key = snapshot
        .coordinator_keys
        .iter()
        .find(|k| header.kid.as_deref() == Some(k.kid.as_str()) && k.alg == header.alg)
        .ok_or(GrantError::Signature)?;
    let mut validation = Validation::new(key.alg);
    // Time and audience are the domain rule's to judge, exactly and without leeway.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.leeway = 0;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<GrantClaims>(token, &key.key, &validation)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => GrantError::Signature,
            _ => GrantError::Malformed("claims do not decode"),
        })?
        .claims;
    Ok(grant::check(
        &claims,
        &snapshot.coordinator,
        caller,
        case_ref,
        now,
    )?)
}
