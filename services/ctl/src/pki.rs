//! A development PKI of the production shape: a CA, and per organisation a certificate whose subject
//! serialNumber (OID 2.5.4.5) holds the 20-digit OIN, usable for both server and client
//! authentication, plus an Ed25519 key that signs the organisation's JWTs. Private keys are written
//! with mode 0600. Production uses real certificates: nothing in the services assumes this CA.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use doorzet_domain::Oin;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

/// Failures of making or reading development PKI material.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A certificate to revoke could not be read.
    #[error("{0}")]
    Certificate(String),
    /// A file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes a file readable by its owner only (private keys).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    file.write_all(contents).map_err(io(path))
}

fn write_public(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    std::fs::write(path, contents).map_err(io(path))
}

/// A certificate authority that signs organisation certificates.
pub struct DevCa {
    cert_pem: String,
    key: KeyPair,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa").finish_non_exhaustive()
    }
}

/// What an issued certificate should say; the bad shapes are there for tests.
#[derive(Debug, Clone)]
pub struct CertSpec {
    /// The OIN for the subject serialNumber; `None` leaves it out.
    pub serial_number: Option<String>,
    /// Subject common name and organisation name.
    pub name: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// Whether the key-usage extension allows digitalSignature, as TLS needs; `false` makes the
    /// bad case of a certificate that allows keyEncipherment only.
    pub is_signing_allowed: bool,
}

impl CertSpec {
    /// A certificate for `org`, valid from an hour ago for `days`.
    pub fn for_org(org: Oin, name: &str, days: i64) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            serial_number: Some(org.to_string()),
            name: name.to_owned(),
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(days),
            is_signing_allowed: true,
        }
    }
}

/// A certificate with its private key, both PEM.
#[derive(Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// The PKCS#8 private key.
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").finish_non_exhaustive()
    }
}

impl DevCa {
    /// Makes a new CA named `name`, valid for ten years.
    pub fn generate(name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(3650);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key,
        })
    }

    /// Loads a CA written by [`DevCa::write`].
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key");
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        Ok(Self {
            cert_pem,
            key: KeyPair::from_pem(&key_pem)?,
        })
    }

    /// Writes `ca.pem` and `ca.key` (0600) into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), PkiError> {
        write_public(&dir.join("ca.pem"), self.cert_pem.as_bytes())?;
        write_private(&dir.join("ca.key"), self.key.serialize_pem().as_bytes())
    }

    /// Returns the CA certificate.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Signs a revocation list (PEM) naming the certificates with these serial numbers, issued at
    /// `this_update` and due again at `next_update`.
    pub fn crl(
        &self,
        serials: &[Vec<u8>],
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
        number: u64,
    ) -> Result<String, PkiError> {
        let params = rcgen::CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: rcgen::SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|serial| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from_slice(serial),
                    revocation_time: this_update,
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)?;
        Ok(params.signed_by(&issuer)?.pem()?)
    }
}

/// Returns the serial number of the first certificate in a PEM file.
pub fn serial_of(cert_pem_path: &Path) -> Result<Vec<u8>, PkiError> {
    use x509_parser::prelude::FromDer;
    let der = doorzet_mesh::tls::read_certs(cert_pem_path)
        .map_err(|e| PkiError::Certificate(e.to_string()))?
        .remove(0);
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der)
        .map_err(|e| PkiError::Certificate(format!("{}: {e}", cert_pem_path.display())))?;
    Ok(cert.raw_serial().to_vec())
}

/// Revokes the certificate in `cert` with the development CA in `dir`: adds its serial to
/// `dir/revoked-serials.txt` and writes `dir/crl.pem` listing every serial revoked so far, due
/// again after `valid_for`. Returns the CRL's path.
pub fn revoke(
    dir: &Path,
    cert: &Path,
    valid_for: std::time::Duration,
) -> Result<PathBuf, PkiError> {
    let ca = DevCa::load(dir)?;
    let list = dir.join("revoked-serials.txt");
    let mut serials: Vec<String> = std::fs::read_to_string(&list)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    let serial = hex::encode(serial_of(cert)?);
    if !serials.contains(&serial) {
        serials.push(serial);
    }
    write_public(&list, format!("{}\n", serials.join("\n")).as_bytes())?;
    let raw: Vec<Vec<u8>> = serials.iter().filter_map(|s| hex::decode(s).ok()).collect();
    let now = OffsetDateTime::now_utc();
    let pem = ca.crl(
        &raw,
        now,
        now + Duration::seconds(valid_for.as_secs() as i64),
        serials.len() as u64,
    )?;
    let path = dir.join("crl.pem");
    write_public(&path, pem.as_bytes())?;
    Ok(path)
}

impl DevCa {
    /// Issues a certificate for server and client authentication on localhost, 127.0.0.1 and ::1.
    pub fn issue(&self, spec: &CertSpec) -> Result<Issued, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
        params.distinguished_name.push(DnType::CountryName, "NL");
        params
            .distinguished_name
            .push(DnType::OrganizationName, spec.name.as_str());
        params
            .distinguished_name
            .push(DnType::CommonName, spec.name.as_str());
        if let Some(serial) = &spec.serial_number {
            params
                .distinguished_name
                .push(DnType::CustomDnType(vec![2, 5, 4, 5]), serial.as_str());
        }
        params.key_usages = vec![if spec.is_signing_allowed {
            KeyUsagePurpose::DigitalSignature
        } else {
            KeyUsagePurpose::KeyEncipherment
        }];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A public JWT verification key in RFC 7517 form.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PublicJwk {
    /// Key id.
    pub kid: String,
    /// `EdDSA`.
    pub alg: String,
    /// `OKP`.
    pub kty: String,
    /// `Ed25519`.
    pub crv: String,
    /// The public key, base64url without padding.
    pub x: String,
}

/// An organisation's token signing key.
#[derive(Clone)]
pub struct TokenKey {
    /// PKCS#8 PEM of the Ed25519 private key.
    pub private_pem: String,
    /// The public half, as published in the directory.
    pub jwk: PublicJwk,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("kid", &self.jwk.kid)
            .finish_non_exhaustive()
    }
}

impl TokenKey {
    /// Makes a new Ed25519 signing key; its `kid` is derived from the public key.
    pub fn generate() -> Result<Self, PkiError> {
        use base64::Engine;
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        let raw = key.public_key_raw();
        let kid = hex::encode(&Sha256::digest(raw)[..8]);
        Ok(Self {
            private_pem: key.serialize_pem(),
            jwk: PublicJwk {
                kid,
                alg: "EdDSA".into(),
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw),
            },
        })
    }
}

/// Where one organisation's files are.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OrgFiles {
    /// Certificate (PEM).
    pub cert: PathBuf,
    /// Private key of the certificate (PEM, 0600).
    pub key: PathBuf,
    /// Trust anchors (the CA, PEM).
    pub ca: PathBuf,
    /// Ed25519 token signing key (PKCS#8 PEM, 0600).
    pub signing_key: PathBuf,
    /// Public JWK of the signing key (JSON).
    pub signing_jwk: PathBuf,
}

impl OrgFiles {
    /// Returns the paths under `dir` for `org`.
    pub fn under(dir: &Path, org: Oin) -> Self {
        let base = dir.join("orgs").join(org.as_str());
        Self {
            cert: base.join("cert.pem"),
            key: base.join("key.pem"),
            ca: dir.join("ca.pem"),
            signing_key: base.join("signing.key"),
            signing_jwk: base.join("signing.jwk.json"),
        }
    }

    /// Reads the public JWK.
    pub fn read_jwk(&self) -> Result<PublicJwk, PkiError> {
        let text = std::fs::read_to_string(&self.signing_jwk).map_err(io(&self.signing_jwk))?;
        serde_json::from_str(&text).map_err(|e| PkiError::Io {
            path: self.signing_jwk.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })
    }
}

/// Writes a certificate, key and token key for `org` signed by `ca` into `dir/orgs/<org>/`.
pub fn issue_org(ca: &DevCa, dir: &Path, org: Oin, name: &str) -> Result<OrgFiles, PkiError> {
    let files = OrgFiles::under(dir, org);
    let parent = files.cert.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let issued = ca.issue(&CertSpec::for_org(org, name, 397))?;
    write_public(&files.cert, issued.cert_pem.as_bytes())?;
    write_private(&files.key, issued.key_pem.as_bytes())?;
    let token_key = TokenKey::generate()?;
    write_private(&files.signing_key, token_key.private_pem.as_bytes())?;
    let jwk = serde_json::to_vec_pretty(&token_key.jwk).unwrap_or_default();
    write_public(&files.signing_jwk, &jwk)?;
    Ok(files)
}

/// Makes a CA in `dir` (or reuses the one there) and issues every organisation in `orgs`.
pub fn init(dir: &Path, orgs: &[(Oin, String)]) -> Result<Vec<OrgFiles>, PkiError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let ca = if dir.join("ca.pem").exists() {
        DevCa::load(dir)?
    } else {
        let ca = DevCa::generate("doorzet development CA")?;
        ca.write(dir)?;
        ca
    };
    orgs.iter()
        .map(|(org, name)| issue_org(&ca, dir, *org, name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn init_writes_production_shaped_certificates_and_private_keys_0600() {
        let dir = tempfile::tempdir().unwrap();
        let org: Oin = "00000001999000001001".parse().unwrap();
        let files = init(dir.path(), &[(org, "Gemeente Test".into())]).unwrap();
        let files = &files[0];
        for private in [&files.key, &files.signing_key, &dir.path().join("ca.key")] {
            let mode = std::fs::metadata(private).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", private.display());
        }
        let pem = std::fs::read(&files.cert).unwrap();
        let der = rustls_pem_first_cert(&pem);
        assert_eq!(
            doorzet_mesh::identity::oin_from_certificate(&der).unwrap(),
            org
        );
        assert_eq!(files.read_jwk().unwrap().alg, "EdDSA");
    }

    fn rustls_pem_first_cert(pem: &[u8]) -> Vec<u8> {
        let text = std::str::from_utf8(pem).unwrap();
        let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    }
}
