//! The coordinator's configuration file (`coordinator.toml`), with `DOORZET_*` environment
//! overrides.

use std::path::{Path, PathBuf};
use std::time::Duration;

use doorzet_domain::Oin;
use doorzet_mesh::config::{Jwt, Limits, Listen, Telemetry, TlsFiles};
use doorzet_store::StorageConfig;
use serde::{Deserialize, Serialize};

use crate::Error;

/// Everything the coordinator needs to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// The coordinator's organisation id, as in its certificate's subject serialNumber.
    pub org: Oin,
    /// Certificate, key and trust anchors.
    pub tls: TlsFiles,
    /// The mutual-TLS listener for the nodes.
    pub mesh: Listen,
    /// The admin listener (metrics, probes); keep it internal.
    pub admin: Listen,
    /// Where the member directory comes from.
    pub directory: DirectorySource,
    /// The audit log.
    pub audit: AuditConfig,
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
    /// The escalation ladder; without it the `Coordinator` service answers `FAILED_PRECONDITION`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalations: Option<EscalationsConfig>,
}

/// The escalation ladder and how the coordinator runs it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationsConfig {
    /// The region's ladder file (`deploy/regions/*.toml`).
    pub ladder: PathBuf,
    /// Ed25519 key (PKCS#8 PEM) that signs participation grants; its public key must be one of the
    /// coordinator's `signing_keys` in the directory, with id `grant_key_id`.
    pub grant_signing_key: PathBuf,
    /// The key's id (`kid`) in the directory.
    pub grant_key_id: String,
    /// How long a participation grant is valid (at most 90 days).
    #[serde(with = "humantime_serde", default = "default_grant_validity")]
    pub grant_validity: Duration,
    /// How long the coordinator waits for a member's `ListMandates`; a member that does not answer
    /// in time leaves its seat marked missing.
    #[serde(with = "humantime_serde", default = "default_lookup_timeout")]
    pub participant_lookup_timeout: Duration,
    /// How long a member's answer to `ListMandates` is reused for participant lookups and
    /// commitment checks. Nodes say at once when their mandates change, so this only bounds how
    /// late a change is seen when that message is lost; mandates that expire meanwhile are never
    /// served. `0s`: ask the node every time.
    #[serde(with = "humantime_serde", default = "default_mandate_cache_ttl")]
    pub mandate_cache_ttl: Duration,
    /// How long one `Notify` may take before it counts as failed and is retried.
    #[serde(with = "humantime_serde", default = "default_notify_timeout")]
    pub notify_timeout: Duration,
    /// Longest wait between two delivery attempts to a node that is down.
    #[serde(with = "humantime_serde", default = "default_max_retry_interval")]
    pub max_retry_interval: Duration,
}

fn default_grant_validity() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}
fn default_lookup_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_mandate_cache_ttl() -> Duration {
    Duration::from_secs(30)
}
fn default_notify_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_max_retry_interval() -> Duration {
    Duration::from_secs(60)
}

/// The member directory file the ZVH operator edits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectorySource {
    /// Path of the directory file (TOML).
    pub file: PathBuf,
    /// How often the file is checked for changes.
    #[serde(with = "humantime_serde", default = "default_reload_interval")]
    pub reload_interval: Duration,
    /// Largest share of the members (0.0 to 1.0) one edit may remove without confirmation; an edit
    /// that removes more, or every member, is held back until the file says
    /// `confirm_removals = <that number>`.
    #[serde(default = "default_max_removed_share")]
    pub max_removed_share: f64,
}

fn default_reload_interval() -> Duration {
    // With the push to watching nodes, an edit reaches every node within this plus milliseconds.
    Duration::from_secs(1)
}
fn default_max_removed_share() -> f64 {
    0.5
}

/// The audit log's identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Ed25519 key (PKCS#8 PEM) that signs checkpoints; its verifier key is published in the
    /// directory.
    pub signing_key: PathBuf,
    /// During a planned rotation, the key `signing_key` replaces: it co-signs every checkpoint, so
    /// a node that pinned it accepts the new key from a checkpoint signed by both. Keep it until
    /// every node's `GetNodeStatus` shows the new key, then remove it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_signing_key: Option<PathBuf>,
    /// Origin line of the checkpoints, unique per log, e.g. `zvh-hofland.example/doorzet/audit`.
    pub origin: String,
    /// How far the time of an entry a node appends may lie ahead of the coordinator's clock.
    #[serde(with = "humantime_serde", default = "default_max_clock_skew")]
    pub max_clock_skew: Duration,
    /// How far it may lie behind: nodes queue their disclosure records while the coordinator is
    /// unreachable and append them when it returns.
    #[serde(with = "humantime_serde", default = "default_max_append_delay")]
    pub max_append_delay: Duration,
    /// Entries per second each organisation may append, on average.
    #[serde(default = "default_append_rate")]
    pub append_rate: u32,
    /// Entries an organisation may append in one burst above that rate; at least one full
    /// `Append` (`doorzet_audit::entry::MAX_APPEND`, 500).
    #[serde(default = "default_append_burst")]
    pub append_burst: u32,
}

fn default_max_clock_skew() -> Duration {
    Duration::from_secs(300)
}
fn default_max_append_delay() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
fn default_append_rate() -> u32 {
    50
}
fn default_append_burst() -> u32 {
    500
}

fn default_storage() -> StorageConfig {
    StorageConfig {
        url: "sqlite:coordinator.db".to_owned(),
    }
}

impl CoordinatorConfig {
    /// Loads `file` and the environment overrides, and checks rules that span fields.
    pub fn load(file: &Path) -> Result<Self, Error> {
        let config: Self = doorzet_mesh::config::load(file)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks rules that span fields.
    pub fn validate(&self) -> Result<(), Error> {
        if self.mesh.listen == self.admin.listen {
            return Err(Error::Config(
                "mesh.listen and admin.listen must differ".into(),
            ));
        }
        let full_call = doorzet_audit::entry::MAX_APPEND;
        if self.audit.append_rate == 0 || (self.audit.append_burst as usize) < full_call {
            return Err(Error::Config(format!(
                "audit.append_rate must be at least 1 and audit.append_burst at least {full_call} (one full Append)"
            )));
        }
        if !(0.0..=1.0).contains(&self.directory.max_removed_share) {
            return Err(Error::Config(
                "directory.max_removed_share must be between 0.0 and 1.0".into(),
            ));
        }
        if let Some(e) = &self.escalations {
            if e.grant_validity.is_zero()
                || e.grant_validity > doorzet_domain::grant::MAX_GRANT_PERIOD
            {
                return Err(Error::Config(
                    "escalations.grant_validity must be more than 0 and at most 90 days".into(),
                ));
            }
            if e.grant_key_id.trim().is_empty() {
                return Err(Error::Config(
                    "escalations.grant_key_id must name the key in the directory".into(),
                ));
            }
        }
        self.limits.validate().map_err(Error::Config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_in_deploy_load() {
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
        let config = CoordinatorConfig::load(&deploy.join("coordinator.example.toml")).unwrap();
        assert_eq!(config.org.as_str(), "00000001999000000001");
        assert_eq!(config.audit.append_rate, 50);
        assert_eq!(config.directory.max_removed_share, 0.5);
        let escalations = config.escalations.as_ref().expect("[escalations]");
        assert_eq!(
            escalations.grant_validity,
            Duration::from_secs(30 * 24 * 3600)
        );
        let ladder = deploy
            .join("regions")
            .join(escalations.ladder.file_name().expect("a file name"));
        crate::escalations::load_ladder(&ladder).expect("the example's ladder loads");
        let (directory, _) =
            crate::directory_file::DirectoryFile::load(&deploy.join("directory.example.toml"))
                .unwrap();
        assert_eq!(directory.members.len(), 2);
        for unit in ["doorzet-node.service", "doorzet-coordinator.service"] {
            let text = std::fs::read_to_string(deploy.join("systemd").join(unit)).unwrap();
            assert!(text.contains("ExecStart=/usr/local/bin/doorzet-"), "{unit}");
            let files: usize = text
                .lines()
                .find_map(|l| l.strip_prefix("LimitNOFILE="))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{unit} sets LimitNOFILE"));
            // Two listeners at most (a node's mesh and local), plus the process's other files.
            assert!(files >= 2 * config.limits.max_connections + 256, "{unit}");
        }
    }

    #[test]
    fn a_burst_must_hold_one_full_append() {
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
        let mut config = CoordinatorConfig::load(&deploy.join("coordinator.example.toml")).unwrap();
        config.audit.append_burst = doorzet_audit::entry::MAX_APPEND as u32;
        assert!(config.validate().is_ok());
        config.audit.append_burst -= 1;
        let refused = config.validate().unwrap_err().to_string();
        assert!(refused.contains("audit.append_burst"), "{refused}");
    }
}
