//! Sign-in through the organisation's own identity provider (OpenID Connect, the authorization
//! code flow with PKCE, state and nonce). The provider's ID token is checked against its published
//! keys, issuer, audience, expiry and the nonce of this sign-in; then the gateway mints the
//! person's doorzet token with the organisation's signing key, in the first of the person's roles
//! that the console admits. The provider's own tokens never leave the gateway.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::Url;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::{GatewayConfig, OidcConfig};
use crate::error::Error;
use crate::minting::OrgKey;

/// The provider's metadata is read again after this long.
const PROVIDER_TTL: Duration = Duration::from_secs(3600);

/// Why a sign-in through the provider did not complete.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider could not be reached or answered nonsense.
    #[error("identity provider: {0}")]
    Provider(String),
    /// The answer does not sign this person in (state, nonce, token or role).
    #[error("sign-in refused: {0}")]
    Refused(String),
}

#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

struct Provider {
    fetched: Instant,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks: JwkSet,
}

/// The console's client of the organisation's identity provider.
pub struct Oidc {
    config: OidcConfig,
    http: reqwest::Client,
    key: OrgKey,
    secret: Option<String>,
    provider: tokio::sync::Mutex<Option<Provider>>,
}

/// A sign-in that went to the provider: where to send the browser, and the cookie that binds the
/// answer to this browser.
pub struct Started {
    /// The provider's authorization URL.
    pub location: String,
    /// `state.nonce.verifier.next`, for the flow cookie.
    pub cookie: String,
}

/// A completed sign-in.
pub struct SignedIn {
    /// The person's doorzet token.
    pub token: String,
    /// How long it lasts.
    pub ttl: Duration,
    /// Where to go now.
    pub next: String,
}

fn random() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    B64.encode(bytes)
}

fn challenge(verifier: &str) -> String {
    B64.encode(Sha256::digest(verifier.as_bytes()))
}

/// `https://`, or `http://` to a loopback host (development and tests).
fn acceptable(url: &str, field: &str) -> Result<Url, Error> {
    let parsed = Url::parse(url).map_err(|e| Error::Config(format!("{field}: {e}")))?;
    let loopback = matches!(
        parsed.host_str(),
        Some("127.0.0.1" | "[::1]" | "::1" | "localhost")
    );
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if loopback => Ok(parsed),
        _ => Err(Error::Config(format!(
            "{field}: must be https (http only on loopback)"
        ))),
    }
}

impl Oidc {
    /// The client `config.console.oidc` describes, if any; its files are read now.
    pub fn load(config: &GatewayConfig) -> Result<Option<Arc<Self>>, Error> {
        let Some(c) = config.console.oidc.clone() else {
            return Ok(None);
        };
        acceptable(&c.issuer, "console.oidc.issuer")?;
        acceptable(&c.redirect_url, "console.oidc.redirect_url")?;
        if c.roles.is_empty() {
            return Err(Error::Config(
                "console.oidc.roles: list the roles that may sign in".into(),
            ));
        }
        let secret = c
            .client_secret_file
            .as_ref()
            .map(|path| {
                std::fs::read_to_string(path)
                    .map(|s| s.trim().to_owned())
                    .map_err(|e| {
                        Error::Config(format!(
                            "console.oidc.client_secret_file: {}: {e}",
                            path.display()
                        ))
                    })
            })
            .transpose()?;
        let key = OrgKey::load(
            &c.signing_key,
            &c.key_id,
            config.org,
            &c.audience,
            "console.oidc.signing_key",
        )?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Config(format!("console.oidc: {e}")))?;
        Ok(Some(Arc::new(Self {
            config: c,
            http,
            key,
            secret,
            provider: tokio::sync::Mutex::new(None),
        })))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, OidcError> {
        acceptable(url, "provider URL").map_err(|e| OidcError::Provider(e.to_string()))?;
        self.http
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| OidcError::Provider(format!("{url}: {e}")))?
            .json()
            .await
            .map_err(|e| OidcError::Provider(format!("{url}: {e}")))
    }

    /// The provider's endpoints and keys, read again when stale or when `refresh`.
    async fn provider(&self, refresh: bool) -> Result<(String, String, JwkSet), OidcError> {
        let mut cached = self.provider.lock().await;
        if let Some(p) = cached.as_ref()
            && !refresh
            && p.fetched.elapsed() < PROVIDER_TTL
        {
            return Ok((
                p.authorization_endpoint.clone(),
                p.token_endpoint.clone(),
                p.jwks.clone(),
            ));
        }
        let issuer = self.config.issuer.trim_end_matches('/');
        let d: Discovery = self
            .get_json(&format!("{issuer}/.well-known/openid-configuration"))
            .await?;
        if d.issuer.trim_end_matches('/') != issuer {
            return Err(OidcError::Provider(format!(
                "the discovery document names issuer {}, not {issuer}",
                d.issuer
            )));
        }
        let jwks: JwkSet = self.get_json(&d.jwks_uri).await?;
        let p = Provider {
            fetched: Instant::now(),
            authorization_endpoint: d.authorization_endpoint,
            token_endpoint: d.token_endpoint,
            jwks,
        };
        let out = (
            p.authorization_endpoint.clone(),
            p.token_endpoint.clone(),
            p.jwks.clone(),
        );
        *cached = Some(p);
        Ok(out)
    }

    /// Starts a sign-in that comes back to `next`.
    pub async fn start(&self, next: &str) -> Result<Started, OidcError> {
        let (authorization, _, _) = self.provider(false).await?;
        let mut url = acceptable(&authorization, "authorization_endpoint")
            .map_err(|e| OidcError::Provider(e.to_string()))?;
        let (state, nonce, verifier) = (random(), random(), random());
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", &self.config.redirect_url)
            .append_pair("scope", &self.config.scopes.join(" "))
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge(&verifier))
            .append_pair("code_challenge_method", "S256");
        Ok(Started {
            location: url.into(),
            cookie: format!("{state}.{nonce}.{verifier}.{}", B64.encode(next)),
        })
    }

    /// Completes a sign-in: `flow` is the flow cookie this browser carries, `state` and `code`
    /// what the provider sent it back with.
    pub async fn finish(&self, flow: &str, state: &str, code: &str) -> Result<SignedIn, OidcError> {
        let mut parts = flow.split('.');
        let (Some(expected), Some(nonce), Some(verifier), Some(next)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(OidcError::Refused(
                "no sign-in in progress in this browser".into(),
            ));
        };
        if expected.is_empty() || expected != state {
            return Err(OidcError::Refused(
                "state does not match this browser's sign-in".into(),
            ));
        }
        let next = B64
            .decode(next)
            .ok()
            .and_then(|n| String::from_utf8(n).ok())
            .unwrap_or_default();
        let (_, token_endpoint, _) = self.provider(false).await?;
        acceptable(&token_endpoint, "token_endpoint")
            .map_err(|e| OidcError::Provider(e.to_string()))?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &self.config.redirect_url),
            ("client_id", &self.config.client_id),
            ("code_verifier", verifier),
        ];
        if let Some(secret) = &self.secret {
            form.push(("client_secret", secret));
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            id_token: String,
        }
        let response = self
            .http
            .post(&token_endpoint)
            .form(&form)
            .send()
            .await
            .map_err(|e| OidcError::Provider(format!("token endpoint: {e}")))?;
        if response.status().is_client_error() {
            return Err(OidcError::Refused(format!(
                "the provider refused the code ({})",
                response.status()
            )));
        }
        let tokens: TokenResponse = response
            .error_for_status()
            .map_err(|e| OidcError::Provider(format!("token endpoint: {e}")))?
            .json()
            .await
            .map_err(|e| OidcError::Provider(format!("token endpoint: {e}")))?;
        let claims = self.verify(&tokens.id_token, nonce).await?;
        let sub = claims
            .get("sub")
            .and_then(|s| s.as_str())
            .ok_or_else(|| OidcError::Refused("the ID token has no subject".into()))?;
        let role = self.role(&claims)?;
        let token = self
            .key
            .mint(
                &subject(&self.config.issuer, sub),
                &role,
                self.config.session_ttl,
            )
            .map_err(|e| OidcError::Provider(format!("minting the session token: {e}")))?;
        Ok(SignedIn {
            token,
            ttl: self.config.session_ttl,
            next,
        })
    }

    /// The ID token's claims, once its signature, issuer, audience, expiry and nonce check out.
    async fn verify(
        &self,
        id_token: &str,
        nonce: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>, OidcError> {
        let refused = |why: String| OidcError::Refused(format!("ID token: {why}"));
        let header = jsonwebtoken::decode_header(id_token).map_err(|e| refused(e.to_string()))?;
        if !matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::EdDSA
        ) {
            return Err(refused(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let find = |jwks: &JwkSet| match &header.kid {
            Some(kid) => jwks.find(kid).cloned(),
            None if jwks.keys.len() == 1 => jwks.keys.first().cloned(),
            None => None,
        };
        let jwk = match find(&self.provider(false).await?.2) {
            Some(jwk) => jwk,
            // A key the provider rotated in since the keys were read.
            None => find(&self.provider(true).await?.2)
                .ok_or_else(|| refused("signed with a key the provider does not publish".into()))?,
        };
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| refused(e.to_string()))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[self.config.issuer.as_str()]);
        validation.set_audience(&[self.config.client_id.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 60;
        let claims = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            id_token,
            &key,
            &validation,
        )
        .map_err(|e| refused(e.to_string()))?
        .claims;
        if claims.get("nonce").and_then(|n| n.as_str()) != Some(nonce) {
            return Err(refused("the nonce is not this sign-in's".into()));
        }
        Ok(claims)
    }

    /// The first of the person's roles (the role claim, a string or a list) the console admits.
    fn role(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, OidcError> {
        let held: Vec<&str> = match claims.get(&self.config.role_claim) {
            Some(serde_json::Value::String(r)) => vec![r.as_str()],
            Some(serde_json::Value::Array(rs)) => rs.iter().filter_map(|r| r.as_str()).collect(),
            _ => Vec::new(),
        };
        held.into_iter()
            .find(|r| self.config.roles.iter().any(|a| a == r))
            .map(str::to_owned)
            .ok_or_else(|| {
                OidcError::Refused(format!(
                    "none of the person's roles (claim `{}`) may use the console",
                    self.config.role_claim
                ))
            })
    }
}

/// The doorzet subject for the provider's `sub`: itself when it has the shape of a subject claim
/// (and nothing like a citizen service number), else a stable pseudonym of it.
fn subject(issuer: &str, sub: &str) -> String {
    let shaped = (1..=64).contains(&sub.len())
        && sub
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-'))
        && !doorzet_domain::bsn::contains_bsn_shaped(sub);
    if shaped {
        sub.to_owned()
    } else {
        let digest = Sha256::digest(format!("{issuer}\n{sub}").as_bytes());
        format!("oidc-{}", &hex::encode(digest)[..32])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pkce_challenge_is_the_unpadded_base64url_of_the_verifiers_sha256() {
        // SHA-256("abc") = ba7816bf...f20015ad (FIPS 180-2), base64url without padding.
        assert_eq!(
            challenge("abc"),
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
        let v = random();
        assert!((43..=128).contains(&v.len()), "RFC 7636 verifier length");
        assert_ne!(v, random());
    }

    #[test]
    fn provider_subjects_become_claim_shaped_and_never_carry_a_bsn() {
        assert_eq!(subject("https://idp", "f3b1-77aa"), "f3b1-77aa");
        let bsn_like = subject("https://idp", "123456782");
        assert!(bsn_like.starts_with("oidc-") && !bsn_like.contains("123456782"));
        assert_eq!(bsn_like, subject("https://idp", "123456782"), "stable");
        assert!(subject("https://idp", "Jan Jansen").starts_with("oidc-"));
    }

    #[test]
    fn the_provider_must_be_reached_over_https_except_on_loopback() {
        assert!(acceptable("https://login.example.nl", "x").is_ok());
        assert!(acceptable("http://127.0.0.1:8080", "x").is_ok());
        assert!(acceptable("http://login.example.nl", "x").is_err());
        assert!(acceptable("ftp://login.example.nl", "x").is_err());
    }
}
