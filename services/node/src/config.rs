//! The node's configuration file (`node.toml`), with `DOORZET_*` environment overrides.

use std::path::Path;
use std::time::Duration;

use doorzet_domain::Oin;
use doorzet_mesh::config::{Jwt, Limits, Listen, Telemetry, TlsFiles};
use doorzet_store::StorageConfig;
use serde::{Deserialize, Serialize};

use crate::Error;

/// Everything a partner node needs to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This organisation's id, as in its certificate's subject serialNumber.
    pub org: Oin,
    /// Certificate, key and trust anchors (used on both listeners and towards peers).
    pub tls: TlsFiles,
    /// The mutual-TLS listener for the coordinator and other participants.
    pub mesh: Listen,
    /// The listener for this organisation's own systems and staff (TLS, JWT required).
    pub local: Listen,
    /// The admin listener (metrics, probes); keep it internal.
    pub admin: Listen,
    /// How to reach the coordinator.
    pub coordinator: CoordinatorLink,
    /// How the directory copy is kept fresh.
    #[serde(default)]
    pub directory: DirectoryRefresh,
    /// How the coordinator's audit log is verified.
    #[serde(default)]
    pub audit: AuditWatch,
    /// Which token roles may do what on the local listener.
    #[serde(default)]
    pub access: Access,
    /// What the region's ladder knows, for validating mandates.
    #[serde(default)]
    pub ladder: LadderTerms,
    /// Keys for the BSN at rest and the subject pseudonym.
    #[serde(default)]
    pub cases: Cases,
    /// Where state is kept.
    #[serde(default = "default_storage")]
    pub storage: StorageConfig,
    /// Request limits.
    #[serde(default)]
    pub limits: Limits,
    /// Token checks.
    #[serde(default)]
    pub jwt: Jwt,
    /// Logs and traces.
    #[serde(default)]
    pub telemetry: Telemetry,
}

/// The coordinator this node belongs to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorLink {
    /// Its mesh address, `https://host:port`.
    pub endpoint: String,
    /// The organisation id its certificate must carry.
    pub org: Oin,
}

/// Directory refresh policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryRefresh {
    /// How often the directory is fetched from the coordinator; a removed member or revoked
    /// certificate is refused within this interval.
    #[serde(with = "humantime_serde", default = "default_refresh_interval")]
    pub refresh_interval: Duration,
    /// How long the last good copy is trusted while the coordinator is unreachable; after that
    /// the mesh listener refuses traffic with `UNAVAILABLE`.
    #[serde(with = "humantime_serde", default = "default_max_age")]
    pub max_age: Duration,
}

fn default_refresh_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_max_age() -> Duration {
    Duration::from_secs(24 * 3600)
}

impl Default for DirectoryRefresh {
    fn default() -> Self {
        Self {
            refresh_interval: default_refresh_interval(),
            max_age: default_max_age(),
        }
    }
}

/// Verification of the coordinator's audit log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditWatch {
    /// How often the latest checkpoint is fetched and checked against the ones seen before.
    #[serde(with = "humantime_serde", default = "default_check_interval")]
    pub check_interval: Duration,
    /// Entries re-verified per check (by inclusion proof), sweeping the whole log over time.
    #[serde(default = "default_sweep")]
    pub sweep: u64,
    /// Verifier keys (in the directory's `audit_log_verifier_key` form) this node accepts when the
    /// coordinator rotates its audit key as planned; any other change of key is an alarm.
    #[serde(default)]
    pub accepted_verifier_keys: Vec<String>,
    /// Token roles that may clear an audit alarm (`doorzetctl audit alarm clear`).
    #[serde(default = "default_clear_roles")]
    pub clear_roles: Vec<String>,
}

fn default_clear_roles() -> Vec<String> {
    vec!["beheerder".to_owned()]
}

fn default_check_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_sweep() -> u64 {
    64
}

impl Default for AuditWatch {
    fn default() -> Self {
        Self {
            check_interval: default_check_interval(),
            sweep: default_sweep(),
            accepted_verifier_keys: Vec::new(),
            clear_roles: default_clear_roles(),
        }
    }
}

/// Keys for citizen service numbers (each optional: without it a BSN is refused, never stored in
/// the clear). Each file holds 64 hex digits (32 random bytes).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cases {
    /// The node's own key that seals a case's BSN at rest.
    #[serde(default)]
    pub bsn_key_file: Option<std::path::PathBuf>,
    /// The region's key for subject pseudonyms (shared by the partners, not by the coordinator).
    #[serde(default)]
    pub pseudonym_key_file: Option<std::path::PathBuf>,
}

/// Token roles per kind of work on the local listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Access {
    /// Roles that manage cases, facts, consents, legal bases and links, and read the inbox.
    #[serde(default = "default_case_roles")]
    pub case_roles: Vec<String>,
    /// Roles that manage mandates.
    #[serde(default = "default_mandate_roles")]
    pub mandate_roles: Vec<String>,
    /// Roles that read the disclosure log.
    #[serde(default = "default_disclosure_roles")]
    pub disclosure_roles: Vec<String>,
}

fn default_case_roles() -> Vec<String> {
    vec!["casemanager".to_owned(), "procesregisseur".to_owned()]
}
fn default_mandate_roles() -> Vec<String> {
    vec!["beheerder".to_owned()]
}
fn default_disclosure_roles() -> Vec<String> {
    vec!["privacy_officer".to_owned(), "beheerder".to_owned()]
}

impl Default for Access {
    fn default() -> Self {
        Self {
            case_roles: default_case_roles(),
            mandate_roles: default_mandate_roles(),
            disclosure_roles: default_disclosure_roles(),
        }
    }
}

/// The region's ladder as far as mandates need it (until the coordinator publishes the ladder).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LadderTerms {
    /// The highest tier.
    #[serde(default = "default_max_tier")]
    pub max_tier: u32,
    /// Roles that may hold mandates; empty = any well-formed role.
    #[serde(default)]
    pub roles: Vec<String>,
}

fn default_max_tier() -> u32 {
    4
}

impl Default for LadderTerms {
    fn default() -> Self {
        Self {
            max_tier: default_max_tier(),
            roles: Vec::new(),
        }
    }
}

fn default_storage() -> StorageConfig {
    StorageConfig {
        url: "sqlite:node.db".to_owned(),
    }
}

impl NodeConfig {
    /// Loads `file` and the environment overrides, and checks rules that span fields.
    pub fn load(file: &Path) -> Result<Self, Error> {
        let config: Self = doorzet_mesh::config::load(file)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks rules that span fields.
    pub fn validate(&self) -> Result<(), Error> {
        let addrs = [self.mesh.listen, self.local.listen, self.admin.listen];
        if addrs[0] == addrs[1] || addrs[0] == addrs[2] || addrs[1] == addrs[2] {
            return Err(Error::Config(
                "mesh.listen, local.listen and admin.listen must all differ".into(),
            ));
        }
        if self.directory.refresh_interval >= self.directory.max_age {
            return Err(Error::Config(
                "directory.refresh_interval must be shorter than directory.max_age".into(),
            ));
        }
        if !self.coordinator.endpoint.starts_with("https://") {
            return Err(Error::Config(
                "coordinator.endpoint must start with https://".into(),
            ));
        }
        self.limits.validate().map_err(Error::Config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_in_deploy_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/node.example.toml");
        let config = NodeConfig::load(&path).unwrap();
        assert_eq!(config.directory.max_age, Duration::from_secs(24 * 3600));
        assert_eq!(config.coordinator.org.as_str(), "00000001999000000001");
    }

    #[test]
    fn cross_field_rules_are_checked() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/node.example.toml");
        let mut config = NodeConfig::load(&path).unwrap();
        config.local.listen = config.mesh.listen;
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("must all differ")
        );
        let mut config = NodeConfig::load(&path).unwrap();
        config.directory.refresh_interval = config.directory.max_age;
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("refresh_interval")
        );
    }
}
