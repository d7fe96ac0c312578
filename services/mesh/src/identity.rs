//! Who is calling: the organisation from the peer certificate's subject serialNumber (an OIN, as in
//! the Dutch government PKI), and the person or system from a JWT that organisation issued. The
//! checks run once per request in [`crate::layers::identity`]; handlers only read [`Caller`].

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use doorzet_domain::{Oin, OrgKind};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::connections::ConnInfo;
use crate::directory::{Directory, Snapshot};
use crate::{IdentityError, config};

/// Which listener a request came in on; decides what identity it must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Mutual TLS with other organisations: a client certificate is required, a token optional.
    Mesh,
    /// The organisation's own systems and staff: a token issued by this organisation is required.
    Local,
}

/// A person or system inside an organisation, from a verified JWT.
#[derive(Clone, PartialEq, Eq)]
pub struct Person {
    /// Subject: employee or system id within the issuing organisation.
    pub subject: String,
    /// Role claim, e.g. `procesregisseur`.
    pub role: String,
    /// Expiry of the token.
    pub expires_at: SystemTime,
    /// The raw token, for forwarding to the coordinator as the same person.
    pub token: String,
}

impl std::fmt::Debug for Person {
    // The raw token is a bearer credential: it never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Person")
            .field("subject", &self.subject)
            .field("role", &self.role)
            .field("expires_at", &self.expires_at)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// The verified identity of a request, put in its extensions by the identity layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The calling organisation.
    pub org: Oin,
    /// Its kind, when it is a directory member.
    pub kind: Option<OrgKind>,
    /// The person or system, when the call carried a token.
    pub person: Option<Person>,
    /// SHA-256 (lowercase hex) of the client certificate, on mesh listeners.
    pub certificate_sha256: Option<String>,
}

impl Caller {
    /// Returns the caller of a request that passed the identity layer.
    pub fn from_request<T>(request: &tonic::Request<T>) -> Result<&Caller, tonic::Status> {
        request
            .extensions()
            .get::<Caller>()
            .ok_or_else(|| tonic::Status::unauthenticated("no verified caller"))
    }

    /// Returns the person, or `UNAUTHENTICATED` when the call carried no token.
    pub fn person(&self) -> Result<&Person, IdentityError> {
        self.person.as_ref().ok_or(IdentityError::PersonRequired)
    }

    /// Returns the label used for the peer in metrics: its kind, never its id.
    pub fn kind_label(&self) -> &'static str {
        self.kind.map_or("coordinator_or_unknown", OrgKind::as_str)
    }
}

/// Reads the organisation id from a DER certificate's subject serialNumber (OID 2.5.4.5), and
/// checks that the certificate may sign (TLS client and server authentication sign the handshake):
/// when it has a key-usage extension, that must allow digitalSignature (RFC 5280 section 4.2.1.3).
pub fn oin_from_certificate(der: &[u8]) -> Result<Oin, IdentityError> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|_| IdentityError::NoOrganisation("certificate does not parse".into()))?;
    match cert.key_usage() {
        Ok(Some(usage)) if !usage.value.digital_signature() => {
            return Err(IdentityError::KeyUsage);
        }
        Ok(_) => {}
        Err(_) => return Err(IdentityError::KeyUsage),
    }
    let mut values = cert
        .subject()
        .iter_by_oid(&x509_parser::oid_registry::OID_X509_SERIALNUMBER);
    let attr = values.next().ok_or_else(|| {
        IdentityError::NoOrganisation("subject has no serialNumber attribute".into())
    })?;
    if values.next().is_some() {
        return Err(IdentityError::NoOrganisation(
            "subject has more than one serialNumber attribute".into(),
        ));
    }
    let text = attr
        .as_str()
        .map_err(|_| IdentityError::NoOrganisation("serialNumber is not a string".into()))?;
    text.parse()
        .map_err(|e: doorzet_domain::ParseError| IdentityError::NoOrganisation(e.to_string()))
}

/// Returns the SHA-256 fingerprint (lowercase hex) of a DER certificate.
pub fn certificate_sha256(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

#[derive(Debug, Clone, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    #[serde(default)]
    role: Option<String>,
    exp: u64,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    iat: Option<u64>,
}

/// Tokens whose signature, audience and issuer checked out, by token, with the directory version
/// whose key verified them: a person's token comes with every call of a session, and its
/// signature needs checking once per directory version (a rotated or revoked key is a new
/// version). Time and everything else are judged on every call.
#[derive(Debug, Default)]
struct VerifiedTokens {
    tokens: std::sync::Mutex<std::collections::HashMap<String, (u64, Claims)>>,
}

/// Most tokens remembered; past it the cache starts over.
const MAX_TOKENS: usize = 4096;

impl VerifiedTokens {
    fn get(&self, token: &str, version: u64) -> Option<Claims> {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens
            .get(token)
            .filter(|(v, _)| *v == version)
            .map(|(_, c)| c.clone())
    }

    fn put(&self, token: &str, version: u64, claims: Claims) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if tokens.len() >= MAX_TOKENS {
            tokens.clear();
        }
        tokens.insert(token.to_owned(), (version, claims));
    }
}

/// Returns true when `value` has the shape of a subject or role claim: 1 to 64 characters of
/// letters, digits and `. _ : @ -`, and nothing that could be a citizen service number.
fn is_claim_token(value: &str) -> bool {
    (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-'))
        && !doorzet_domain::bsn::contains_bsn_shaped(value)
}

/// The one method that still answers while the directory copy is stale, so an operator can see
/// why the node refuses everything else.
const DIAGNOSTICS: &str = "/doorzet.v1.NodeAdmin/GetNodeStatus";

/// Checks the identity of requests on one listener against the directory.
#[derive(Debug)]
pub struct Verifier {
    own_org: Oin,
    listener: ListenerKind,
    directory: Arc<Directory>,
    audience: String,
    leeway: Duration,
    max_lifetime: Duration,
    verified: VerifiedTokens,
}

impl Verifier {
    /// Makes a verifier for a listener of organisation `own_org`.
    pub fn new(
        own_org: Oin,
        listener: ListenerKind,
        directory: Arc<Directory>,
        jwt: &config::Jwt,
    ) -> Self {
        Self {
            own_org,
            listener,
            directory,
            audience: jwt.audience.clone(),
            leeway: jwt.leeway,
            max_lifetime: jwt.max_lifetime,
            verified: VerifiedTokens::default(),
        }
    }

    /// Returns the listener this verifier guards.
    pub fn listener(&self) -> ListenerKind {
        self.listener
    }

    /// Authenticates a request: strips client-sent `x-doorzet-*` metadata, reads the peer
    /// certificate and the bearer token, and checks both against the directory.
    pub fn authenticate<B>(&self, req: &mut http::Request<B>) -> Result<Caller, IdentityError> {
        let doorzet_headers: Vec<_> = req
            .headers()
            .keys()
            .filter(|name| name.as_str().starts_with("x-doorzet-"))
            .cloned()
            .collect();
        for name in doorzet_headers {
            req.headers_mut().remove(name);
        }
        // Probes must work before the directory is loaded, so health needs only the transport.
        let is_health = req.uri().path().starts_with("/grpc.health.v1.Health/");
        let token = bearer(req.headers())?;
        let now = SystemTime::now();

        match self.listener {
            ListenerKind::Mesh => {
                let (org, fingerprint) = req
                    .extensions()
                    .get::<ConnInfo>()
                    .ok_or(IdentityError::NoCertificate)?
                    .peer_certificate()
                    .clone()?;
                if is_health {
                    return Ok(Caller {
                        org,
                        kind: None,
                        person: None,
                        certificate_sha256: Some(fingerprint),
                    });
                }
                let snapshot = self.directory.usable(now)?;
                if snapshot.is_revoked(&fingerprint) {
                    return Err(IdentityError::Revoked);
                }
                if !snapshot.is_participant(&org) {
                    return Err(IdentityError::NotMember(org));
                }
                let person = token
                    .map(|t| self.verify_token(&snapshot, t, org))
                    .transpose()?;
                Ok(Caller {
                    org,
                    kind: snapshot.member(&org).map(|m| m.kind),
                    person,
                    certificate_sha256: Some(fingerprint),
                })
            }
            ListenerKind::Local => {
                if is_health {
                    return Ok(Caller {
                        org: self.own_org,
                        kind: None,
                        person: None,
                        certificate_sha256: None,
                    });
                }
                let token = token.ok_or(IdentityError::MissingToken)?;
                let snapshot = match self.directory.usable(now) {
                    Ok(snapshot) => snapshot,
                    // Diagnostics check the token against the last copy, however old.
                    Err(_) if req.uri().path() == DIAGNOSTICS => {
                        self.directory.current().ok_or_else(|| {
                            IdentityError::DirectoryUnavailable("not loaded yet".into())
                        })?
                    }
                    Err(e) => return Err(e),
                };
                let person = self.verify_token(&snapshot, token, self.own_org)?;
                Ok(Caller {
                    org: self.own_org,
                    kind: snapshot.member(&self.own_org).map(|m| m.kind),
                    person: Some(person),
                    certificate_sha256: None,
                })
            }
        }
    }

    /// Verifies a JWT: EdDSA or ES256 only, pinned per key; signature by a key the directory lists
    /// for the claimed issuer; `exp`, `nbf`, `aud` and `iss` checked with the leeway; no `iat` in
    /// the future beyond the leeway; a lifetime of at most `jwt.max_lifetime`; a `sub` and a `role`
    /// of the claim shape; and the issuer must be `presenter`, the organisation whose connection
    /// carried the token.
    pub fn verify_token(
        &self,
        snapshot: &Snapshot,
        token: &str,
        presenter: Oin,
    ) -> Result<Person, IdentityError> {
        let bad = |reason: &str| IdentityError::BadToken(reason.to_owned());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let version = snapshot.version();
        let claims = match self.verified.get(token, version) {
            // As `jsonwebtoken` judges them, with the same leeway.
            Some(claims) if claims.exp < now.saturating_sub(self.leeway.as_secs()) => {
                return Err(bad("token has expired"));
            }
            Some(claims)
                if claims
                    .nbf
                    .is_some_and(|nbf| nbf > now.saturating_add(self.leeway.as_secs())) =>
            {
                return Err(bad("token is not yet valid (nbf)"));
            }
            Some(claims) => claims,
            None => {
                let claims = self.verify_signed(snapshot, token)?;
                self.verified.put(token, version, claims.clone());
                claims
            }
        };
        let issuer: Oin = claims
            .iss
            .parse()
            .map_err(|_| bad("issuer is not an organisation id"))?;
        if let Some(iat) = claims.iat
            && iat > now.saturating_add(self.leeway.as_secs())
        {
            return Err(bad("token is issued in the future (iat)"));
        }
        let lifetime = claims
            .exp
            .saturating_sub(claims.iat.unwrap_or(now).min(now));
        if lifetime > self.max_lifetime.as_secs() + self.leeway.as_secs() {
            return Err(IdentityError::BadToken(format!(
                "token lifetime exceeds the maximum of {}s",
                self.max_lifetime.as_secs()
            )));
        }
        if !is_claim_token(&claims.sub) {
            return Err(bad(
                "sub must be 1 to 64 characters of letters, digits and . _ : @ - (an id, never a name or citizen number)",
            ));
        }
        let role = claims
            .role
            .filter(|role| is_claim_token(role))
            .ok_or_else(|| {
                bad("role is required: 1 to 64 characters of letters, digits and . _ : @ -")
            })?;
        if issuer != presenter {
            return Err(IdentityError::IssuerNotPeer {
                issuer,
                peer: presenter,
            });
        }
        Ok(Person {
            subject: claims.sub,
            role,
            expires_at: UNIX_EPOCH + Duration::from_secs(claims.exp),
            token: token.to_owned(),
        })
    }

    /// The claims of `token` once its algorithm, signature (by a key the directory lists for the
    /// claimed issuer), `exp`, `nbf`, `aud` and `iss` check out.
    fn verify_signed(&self, snapshot: &Snapshot, token: &str) -> Result<Claims, IdentityError> {
        let bad = |reason: &str| IdentityError::BadToken(reason.to_owned());
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| bad("malformed header or algorithm not allowed"))?;
        if !matches!(header.alg, Algorithm::EdDSA | Algorithm::ES256) {
            return Err(IdentityError::BadToken(format!(
                "algorithm {:?} is not allowed; use EdDSA or ES256",
                header.alg
            )));
        }
        // The issuer picks the keys; the signature is checked with those keys before the issuer is
        // trusted for anything else.
        let unverified: Claims = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|_| bad("malformed claims"))?;
        let issuer: Oin = unverified
            .iss
            .parse()
            .map_err(|_| bad("issuer is not an organisation id"))?;
        let keys = snapshot
            .signing_keys(&issuer)
            .ok_or_else(|| bad("issuer is not in the directory"))?;
        let key = keys
            .iter()
            .find(|k| header.kid.as_deref().is_none_or(|kid| kid == k.kid) && k.alg == header.alg)
            .ok_or_else(|| bad("signing key unknown for this issuer and algorithm"))?;

        let mut validation = Validation::new(key.alg);
        validation.leeway = self.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_audience(&[&self.audience]);
        validation.set_issuer(&[issuer.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|e| {
            bad(match e.kind() {
                ErrorKind::ExpiredSignature => "token has expired",
                ErrorKind::ImmatureSignature => "token is not yet valid (nbf)",
                ErrorKind::InvalidAudience => "token is for another audience",
                ErrorKind::InvalidIssuer => "issuer mismatch",
                ErrorKind::InvalidSignature => "signature does not verify",
                ErrorKind::MissingRequiredClaim(_) => {
                    "a required claim (exp, iss, aud, sub) is missing"
                }
                _ => "token does not verify",
            })
        })?;
        Ok(data.claims)
    }
}

fn bearer(headers: &http::HeaderMap) -> Result<Option<&str>, IdentityError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| IdentityError::BadToken("authorization header is not ASCII".into()))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() => {
            Ok(Some(token.trim()))
        }
        _ => Err(IdentityError::BadToken(
            "authorization header must be `Bearer <token>`".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_raw_token() {
        let person = Person {
            subject: "emp-0042".into(),
            role: "procesregisseur".into(),
            expires_at: UNIX_EPOCH,
            token: "eyJhbGciOiJFZERTQSJ9.secret.signature".into(),
        };
        let caller = Caller {
            org: "00000001999000001001".parse().unwrap(),
            kind: None,
            person: Some(person),
            certificate_sha256: None,
        };
        let debug = format!("{caller:?}");
        assert!(!debug.contains("eyJhbGci"), "{debug}");
        assert!(
            debug.contains("emp-0042") && debug.contains("<redacted>"),
            "{debug}"
        );
    }

    #[test]
    fn claim_tokens_are_ids_never_names_or_citizen_numbers() {
        for good in ["emp-0042", "svc:case-system", "a.b@c"] {
            assert!(is_claim_token(good), "{good}");
        }
        for bad in ["", "Jan Jansen", "123456782", &"x".repeat(65)] {
            assert!(!is_claim_token(bad), "{bad}");
        }
    }
}
