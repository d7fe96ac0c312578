//! The member directory file the ZVH operator edits: parsed, validated with errors that name the
//! file, the member and the field, and turned into the wire directory the coordinator serves.

use std::path::Path;

use doorzet_domain::{Oin, OrgKind};
use doorzet_mesh::directory::SigningKey;
use doorzet_proto::v1;
use serde::{Deserialize, Serialize};

use crate::Error;

/// The directory file as written by the operator.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DirectoryFile {
    /// Region this directory describes, e.g. `twente`.
    pub region: String,
    /// The coordinator's own entry.
    pub coordinator: CoordinatorEntry,
    /// The member organisations.
    #[serde(default)]
    pub members: Vec<MemberEntry>,
    /// Revoked certificates.
    #[serde(default)]
    pub revoked: Revoked,
    /// Confirms an edit that removes this many members at once, more than
    /// `directory.max_removed_share` allows without confirmation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm_removals: Option<usize>,
}

/// The coordinator's entry in the file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorEntry {
    /// Organisation id in the coordinator's certificate.
    pub org_id: String,
    /// Display name.
    pub name: String,
    /// Mesh address, `https://host:port`.
    pub mesh_endpoint: String,
    /// Keys that verify tokens the coordinator issues.
    #[serde(default)]
    pub signing_keys: Vec<KeyEntry>,
}

/// One member in the file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MemberEntry {
    /// Organisation id (20 digits).
    pub org_id: String,
    /// Kind, e.g. `municipality` or `mental_health_institution`.
    pub kind: String,
    /// Display name of the organisation.
    pub name: String,
    /// Mesh address of its node, `https://host:port`.
    pub mesh_endpoint: String,
    /// Keys that verify the tokens it issues.
    #[serde(default)]
    pub signing_keys: Vec<KeyEntry>,
}

/// A public JWT verification key (RFC 7517 field names).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Key id.
    pub kid: String,
    /// `EdDSA` or `ES256`.
    pub alg: String,
    /// `OKP` or `EC`.
    pub kty: String,
    /// `Ed25519` or `P-256`.
    pub crv: String,
    /// Public key or x coordinate, base64url.
    pub x: String,
    /// y coordinate (EC only), base64url.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub y: String,
}

/// Revoked certificates, by SHA-256 fingerprint of the DER (hex).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Revoked {
    /// Fingerprints, 64 hex digits each.
    #[serde(default)]
    pub certificate_sha256: Vec<String>,
}

impl KeyEntry {
    fn to_pb(&self) -> v1::JsonWebKey {
        v1::JsonWebKey {
            kid: self.kid.clone(),
            kty: self.kty.clone(),
            crv: self.crv.clone(),
            alg: self.alg.clone(),
            x: self.x.clone(),
            y: self.y.clone(),
        }
    }
}

fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|_| format!("`{endpoint}` is not a URI"))?;
    if uri.scheme_str() != Some("https") || uri.host().is_none() || uri.port_u16().is_none() {
        return Err(format!("`{endpoint}` must look like https://host:port"));
    }
    Ok(())
}

fn keys(field_owner: &str, keys: &[KeyEntry]) -> Result<Vec<v1::JsonWebKey>, String> {
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            let pb = k.to_pb();
            SigningKey::from_pb("signing_keys", &pb)
                .map(|_| pb)
                .map_err(|e| format!("{field_owner}: field `signing_keys[{i}]`: {}", e.reason))
        })
        .collect()
}

impl DirectoryFile {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<(Self, String), Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Directory(format!("{}: cannot read: {e}", path.display())))?;
        let file: Self = toml::from_str(&text)
            .map_err(|e| Error::Directory(format!("{}: {e}", path.display())))?;
        file.to_wire()
            .map_err(|e| Error::Directory(format!("{}: {e}", path.display())))?;
        Ok((file, text))
    }

    /// Validates the file and returns the wire directory (without version and load time). Errors
    /// name the member (by position and id) and the field.
    pub fn to_wire(&self) -> Result<v1::ListMembersResponse, String> {
        if self.region.trim().is_empty() {
            return Err("field `region`: must not be empty".into());
        }
        let coordinator_org: Oin = self
            .coordinator
            .org_id
            .parse()
            .map_err(|e| format!("coordinator: field `org_id`: {e}"))?;
        check_endpoint(&self.coordinator.mesh_endpoint)
            .map_err(|e| format!("coordinator: field `mesh_endpoint`: {e}"))?;
        let coordinator = v1::CoordinatorEntry {
            org_id: coordinator_org.to_string(),
            name: self.coordinator.name.clone(),
            mesh_endpoint: self.coordinator.mesh_endpoint.clone(),
            signing_keys: keys("coordinator", &self.coordinator.signing_keys)?,
            audit_log_verifier_key: String::new(),
        };
        let mut seen = std::collections::BTreeSet::new();
        let mut members = Vec::with_capacity(self.members.len());
        for (i, m) in self.members.iter().enumerate() {
            let who = format!("member {} (org_id `{}`)", i + 1, m.org_id);
            let org: Oin = m
                .org_id
                .parse()
                .map_err(|e| format!("{who}: field `org_id`: {e}"))?;
            if org == coordinator_org || !seen.insert(org) {
                return Err(format!("{who}: field `org_id`: listed more than once"));
            }
            let kind: OrgKind = m
                .kind
                .parse()
                .map_err(|e| format!("{who}: field `kind`: {e}"))?;
            if m.name.trim().is_empty() {
                return Err(format!("{who}: field `name`: must not be empty"));
            }
            check_endpoint(&m.mesh_endpoint)
                .map_err(|e| format!("{who}: field `mesh_endpoint`: {e}"))?;
            members.push(v1::Member {
                org_id: org.to_string(),
                kind: v1::OrganisationKind::from(kind) as i32,
                name: m.name.clone(),
                region: self.region.clone(),
                mesh_endpoint: m.mesh_endpoint.clone(),
                signing_keys: keys(&who, &m.signing_keys)?,
            });
        }
        let mut revoked = Vec::with_capacity(self.revoked.certificate_sha256.len());
        for (i, fp) in self.revoked.certificate_sha256.iter().enumerate() {
            let fp = doorzet_mesh::directory::normalize_fingerprint(fp).ok_or_else(|| {
                format!("revoked: field `certificate_sha256[{i}]`: must be 64 hex digits")
            })?;
            revoked.push(fp);
        }
        Ok(v1::ListMembersResponse {
            members,
            revoked_certificate_sha256: revoked,
            coordinator: Some(coordinator),
            region: self.region.clone(),
            version: 0,
            loaded_at: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DirectoryFile {
        DirectoryFile {
            region: "twente-demo".into(),
            coordinator: CoordinatorEntry {
                org_id: "00000001999000000001".into(),
                name: "ZVH coordinator".into(),
                mesh_endpoint: "https://127.0.0.1:7000".into(),
                signing_keys: vec![],
            },
            members: vec![MemberEntry {
                org_id: "00000001999000001000".into(),
                kind: "municipality".into(),
                name: "Gemeente Voorbeeld".into(),
                mesh_endpoint: "https://127.0.0.1:7001".into(),
                signing_keys: vec![KeyEntry {
                    kid: "k1".into(),
                    alg: "EdDSA".into(),
                    kty: "OKP".into(),
                    crv: "Ed25519".into(),
                    x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into(),
                    y: String::new(),
                }],
            }],
            revoked: Revoked::default(),
            confirm_removals: None,
        }
    }

    #[test]
    fn valid_file_converts() {
        let wire = sample().to_wire().unwrap();
        assert_eq!(wire.members.len(), 1);
        assert_eq!(wire.members[0].region, "twente-demo");
    }

    #[test]
    fn errors_name_member_and_field() {
        let mut bad = sample();
        bad.members[0].kind = "ministry".into();
        let err = bad.to_wire().unwrap_err();
        assert!(
            err.starts_with("member 1 (org_id `00000001999000001000`): field `kind`"),
            "{err}"
        );

        let mut bad = sample();
        bad.members[0].mesh_endpoint = "http://127.0.0.1:7001".into();
        assert!(bad.to_wire().unwrap_err().contains("field `mesh_endpoint`"));

        let mut bad = sample();
        bad.members[0].org_id = "123".into();
        assert!(bad.to_wire().unwrap_err().contains("field `org_id`"));

        let mut bad = sample();
        bad.members[0].signing_keys[0].alg = "HS256".into();
        let err = bad.to_wire().unwrap_err();
        assert!(err.contains("field `signing_keys[0]`"), "{err}");

        let mut bad = sample();
        bad.members.push(bad.members[0].clone());
        assert!(bad.to_wire().unwrap_err().starts_with("member 2"));

        let mut bad = sample();
        bad.revoked.certificate_sha256.push("abc".into());
        assert!(bad.to_wire().unwrap_err().contains("certificate_sha256[0]"));
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("directory.toml");
        std::fs::write(&path, "region = \"x\"\n[coordinator]\norg_id = \"1\"\nname = \"c\"\nmesh_endpoint = \"https://h:1\"\n").unwrap();
        let err = DirectoryFile::load(&path).unwrap_err().to_string();
        assert!(err.starts_with(&path.display().to_string()), "{err}");
        assert!(err.contains("coordinator: field `org_id`"), "{err}");

        std::fs::write(&path, "region = \"x\"\nmembres = []\n").unwrap();
        let err = DirectoryFile::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("membres") || err.contains("coordinator"),
            "{err}"
        );
    }
}
