//! Checking a participation grant: a JWT of type `doorzet-grant+jwt`, signed with one of the
//! coordinator's keys in the directory, whose claims the domain rule accepts for this caller,
//! this case reference and this moment (no leeway on its expiry).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
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

/// Grants whose signature verified, by token, for the directory version that held the key: a grant
/// is presented on every request of a meeting, and its signature needs checking once. The claims
/// are judged on every request (time, caller, case).
#[derive(Debug, Clone, Default)]
pub struct Verified {
    claims: Arc<RwLock<HashMap<String, Known>>>,
}

/// A verified grant's claims (shared, not copied, into each request's check) and the directory
/// version whose key verified them.
type Known = (u64, Arc<GrantClaims>);

/// Most grants remembered; past it the cache starts over.
const MAX_GRANTS: usize = 10_000;

impl Verified {
    /// Verifies `token` for `caller` asking about `case_ref` at `now`.
    pub fn verify(
        &self,
        snapshot: &Snapshot,
        token: &str,
        caller: &Oin,
        case_ref: &str,
        now: SystemTime,
    ) -> Result<Grant, GrantError> {
        let version = snapshot.version();
        let known = self
            .claims
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .filter(|(v, _)| *v == version)
            .map(|(_, c)| Arc::clone(c));
        let claims = match known {
            Some(claims) => claims,
            None => {
                let claims = Arc::new(signed_claims(snapshot, token)?);
                let mut map = self.claims.write().unwrap_or_else(|e| e.into_inner());
                if map.len() >= MAX_GRANTS {
                    map.clear();
                }
                map.insert(token.to_owned(), (version, Arc::clone(&claims)));
                claims
            }
        };
        Ok(grant::check(
            &claims,
            &snapshot.coordinator,
            caller,
            case_ref,
            now,
        )?)
    }
}

/// The claims of `token` once its type, algorithm and signature by a coordinator key check out.
fn signed_claims(snapshot: &Snapshot, token: &str) -> Result<GrantClaims, GrantError> {
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
    jsonwebtoken::decode::<GrantClaims>(token, &key.key, &validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => GrantError::Signature,
            _ => GrantError::Malformed("claims do not decode"),
        })
}
