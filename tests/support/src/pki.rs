//! A throwaway PKI in a temporary directory, built on the same generator as `doorzetctl pki`, plus
//! the bad cases tests need: a certificate from a foreign CA, an expired one, one without an
//! organisation id, and tokens that are expired, premature, for another audience, unsigned, HMAC
//! or signed by an unknown key.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use doorzet_ctl::pki::{CertSpec, DevCa, PublicJwk, TokenKey, write_private};
use doorzet_domain::Oin;
use doorzet_mesh::config::TlsFiles;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use tempfile::TempDir;

/// A CA in a temporary directory.
pub struct Pki {
    dir: TempDir,
    ca: DevCa,
    counter: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir.path())
            .finish()
    }
}

/// An organisation's certificate files and token key.
#[derive(Debug, Clone)]
pub struct TestOrg {
    /// Organisation id (for the no-OIN case: the id it would have had).
    pub org: Oin,
    /// Certificate, key and the trust anchors to use.
    pub tls: TlsFiles,
    /// Its token signing key.
    pub token_key: TokenKey,
}

/// The claims of a test token; every field can be bent to make a bad one.
#[derive(Debug, Clone, Serialize)]
pub struct TestClaims {
    /// Issuer.
    pub iss: String,
    /// Subject.
    pub sub: String,
    /// Role.
    pub role: String,
    /// Audience.
    pub aud: String,
    /// Issued at (seconds).
    pub iat: u64,
    /// Not before (seconds).
    pub nbf: u64,
    /// Expiry (seconds).
    pub exp: u64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl TestClaims {
    /// Good claims for `org`: valid now for 10 minutes, audience `doorzet`.
    pub fn new(org: Oin, sub: &str, role: &str) -> Self {
        let now = now_secs();
        Self {
            iss: org.to_string(),
            sub: sub.into(),
            role: role.into(),
            aud: "doorzet".into(),
            iat: now,
            nbf: now,
            exp: now + 600,
        }
    }
}

impl TestOrg {
    /// Signs `claims` with this organisation's key (EdDSA, its `kid`).
    pub fn sign(&self, claims: &TestClaims) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.token_key.jwk.kid.clone());
        let key = EncodingKey::from_ed_pem(self.token_key.private_pem.as_bytes()).expect("ed key");
        jsonwebtoken::encode(&header, claims, &key).expect("sign")
    }

    /// Signs arbitrary JSON claims (to leave a claim out entirely).
    pub fn sign_json(&self, claims: &serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.token_key.jwk.kid.clone());
        let key = EncodingKey::from_ed_pem(self.token_key.private_pem.as_bytes()).expect("ed key");
        jsonwebtoken::encode(&header, claims, &key).expect("sign")
    }

    /// A participation grant signed with this organisation's key (the coordinator's, for a valid
    /// one).
    pub fn grant(&self, claims: &doorzet_domain::grant::GrantClaims) -> String {
        doorzet_ctl::token::mint_grant(
            self.token_key.private_pem.as_bytes(),
            &self.token_key.jwk.kid,
            claims,
        )
        .expect("grant")
    }

    /// A good token for a person of this organisation.
    pub fn token(&self, sub: &str, role: &str) -> String {
        self.sign(&TestClaims::new(self.org, sub, role))
    }

    /// Returns the public JWK of its token key.
    pub fn jwk(&self) -> &PublicJwk {
        &self.token_key.jwk
    }

    /// Returns a fixed client config presenting this organisation's certificate.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let material = doorzet_mesh::tls::TlsMaterial::load(&self.tls).expect("tls material");
        Arc::new(material.client_config().expect("client config"))
    }
}

/// An unsigned token (`alg: none`).
pub fn unsigned_token(claims: &TestClaims) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = b64.encode(serde_json::to_vec(claims).expect("claims"));
    format!("{header}.{body}.")
}

/// A token signed with HS256, using `secret` (e.g. a public key, as in algorithm confusion).
pub fn hmac_token(claims: &TestClaims, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("sign")
}

impl Pki {
    /// Makes a new CA in a temporary directory.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let ca = DevCa::generate("doorzet test CA").expect("ca");
        ca.write(dir.path()).expect("write ca");
        Self {
            dir,
            ca,
            counter: Default::default(),
        }
    }

    /// Returns the directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Returns the CA bundle path.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn write(&self, issued: &doorzet_ctl::pki::Issued, ca: PathBuf) -> TlsFiles {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cert = self.dir.path().join(format!("cert-{n}.pem"));
        let key = self.dir.path().join(format!("key-{n}.pem"));
        std::fs::write(&cert, &issued.cert_pem).expect("write cert");
        write_private(&key, issued.key_pem.as_bytes()).expect("write key");
        TlsFiles {
            reload_interval: Duration::from_millis(100),
            ..TlsFiles::new(cert, key, ca)
        }
    }

    /// Issues a good certificate for `org`.
    pub fn org(&self, org: Oin, name: &str) -> TestOrg {
        let issued = self
            .ca
            .issue(&CertSpec::for_org(org, name, 30))
            .expect("issue");
        TestOrg {
            org,
            tls: self.write(&issued, self.ca_path()),
            token_key: TokenKey::generate().expect("token key"),
        }
    }

    /// Reissues `org`'s certificate into the same files (for reload tests); returns the new
    /// certificate's SHA-256.
    pub fn reissue(&self, org: &TestOrg, name: &str) -> String {
        let issued = self
            .ca
            .issue(&CertSpec::for_org(org.org, name, 30))
            .expect("issue");
        // Key first: the watcher must never pair a new certificate with the old key for long.
        write_private(&org.tls.key, issued.key_pem.as_bytes()).expect("write key");
        std::fs::write(&org.tls.cert, &issued.cert_pem).expect("write cert");
        let der = doorzet_mesh::tls::read_certs(&org.tls.cert).expect("cert")[0].clone();
        doorzet_mesh::identity::certificate_sha256(&der)
    }

    /// A certificate for `org` from a different CA (trusting our CA, so only the server refuses).
    pub fn foreign_org(&self, org: Oin) -> TestOrg {
        let other = DevCa::generate("someone else's CA").expect("ca");
        let issued = other
            .issue(&CertSpec::for_org(org, "Foreign", 30))
            .expect("issue");
        TestOrg {
            org,
            tls: self.write(&issued, self.ca_path()),
            token_key: TokenKey::generate().expect("token key"),
        }
    }

    /// A certificate for `org` from our CA that expired yesterday.
    pub fn expired_org(&self, org: Oin) -> TestOrg {
        let mut spec = CertSpec::for_org(org, "Expired", 30);
        spec.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
        spec.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        let issued = self.ca.issue(&spec).expect("issue");
        TestOrg {
            org,
            tls: self.write(&issued, self.ca_path()),
            token_key: TokenKey::generate().expect("token key"),
        }
    }

    /// A certificate from our CA with no subject serialNumber.
    pub fn org_without_oin(&self, would_be: Oin) -> TestOrg {
        let mut spec = CertSpec::for_org(would_be, "No OIN", 30);
        spec.serial_number = None;
        let issued = self.ca.issue(&spec).expect("issue");
        TestOrg {
            org: would_be,
            tls: self.write(&issued, self.ca_path()),
            token_key: TokenKey::generate().expect("token key"),
        }
    }

    /// Writes `crl.pem` in the PKI directory, signed by our CA, listing the certificates of
    /// `revoked`, issued at `this_update` and due again at `next_update`; returns its path.
    pub fn write_crl(
        &self,
        revoked: &[&TestOrg],
        this_update: SystemTime,
        next_update: SystemTime,
    ) -> PathBuf {
        let serials: Vec<Vec<u8>> = revoked
            .iter()
            .map(|org| doorzet_ctl::pki::serial_of(&org.tls.cert).expect("serial"))
            .collect();
        let at = |t: SystemTime| {
            time::OffsetDateTime::UNIX_EPOCH + t.duration_since(UNIX_EPOCH).expect("after 1970")
        };
        let number = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed) as u64;
        let pem = self
            .ca
            .crl(&serials, at(this_update), at(next_update), number + 1)
            .expect("crl");
        let path = self.dir.path().join("crl.pem");
        std::fs::write(&path, pem).expect("write crl");
        path
    }

    /// A certificate for `org` from our CA whose key usage allows keyEncipherment only.
    pub fn encipherment_only_org(&self, org: Oin) -> TestOrg {
        let mut spec = CertSpec::for_org(org, "Encipherment only", 30);
        spec.is_signing_allowed = false;
        let issued = self.ca.issue(&spec).expect("issue");
        TestOrg {
            org,
            tls: self.write(&issued, self.ca_path()),
            token_key: TokenKey::generate().expect("token key"),
        }
    }

    /// A client config that presents no certificate at all.
    pub fn anonymous_client_config(&self) -> Arc<rustls::ClientConfig> {
        server_only_client_config(&self.ca_path())
    }
}

/// A client config that trusts the CA in `ca` and presents no certificate (for local listeners).
pub fn server_only_client_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    Arc::new(doorzet_mesh::tls::server_only_client_config(ca).expect("client config"))
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}
