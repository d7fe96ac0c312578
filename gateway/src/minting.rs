//! The organisation's token signing key, in the gateway's hands: it mints the doorzet tokens the
//! gateway itself needs (reading the inbox for webhooks) and, after the organisation's identity
//! provider signed a person in, the person's console session. The key must be one the
//! organisation publishes in the directory, so the node and the coordinator verify these tokens
//! like any other of the organisation's.

use std::path::Path;
use std::time::{Duration, SystemTime};

use doorzet_domain::Oin;
use serde::Serialize;

use crate::error::Error;

/// A signing key of the organisation (Ed25519) with its published key id.
pub struct OrgKey {
    key: jsonwebtoken::EncodingKey,
    kid: String,
    org: Oin,
    audience: String,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    role: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

impl OrgKey {
    /// Reads the PKCS#8 PEM at `path`; `field` names the setting in errors.
    pub fn load(
        path: &Path,
        kid: &str,
        org: Oin,
        audience: &str,
        field: &str,
    ) -> Result<Self, Error> {
        let pem = std::fs::read(path)
            .map_err(|e| Error::Config(format!("{field}: {}: {e}", path.display())))?;
        Ok(Self {
            key: jsonwebtoken::EncodingKey::from_ed_pem(&pem)
                .map_err(|e| Error::Config(format!("{field}: {e}")))?,
            kid: kid.to_owned(),
            org,
            audience: audience.to_owned(),
        })
    }

    /// A token of the organisation for `sub` in `role`, valid for `ttl` from now.
    pub fn mint(
        &self,
        sub: &str,
        role: &str,
        ttl: Duration,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let iat = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(
            &header,
            &Claims {
                iss: self.org.as_str(),
                sub,
                role,
                aud: &self.audience,
                iat,
                exp: iat + ttl.as_secs(),
            },
            &self.key,
        )
    }
}
