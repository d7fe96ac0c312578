//! Configuration sections every doorzet binary shares, and the loader: a TOML file first, then
//! `DOORZET_<SECTION>__<KEY>` environment overrides (figment).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::MeshError;

/// Loads a configuration of type `T` from `file`, then applies `DOORZET_*` environment overrides
/// (`DOORZET_MESH__LISTEN=127.0.0.1:7443` sets `mesh.listen`, `DOORZET_ORG` sets `org`).
pub fn load<T: DeserializeOwned>(file: &Path) -> Result<T, MeshError> {
    // Only `SECTION__KEY` variables and `DOORZET_ORG` are configuration; others that share the
    // prefix (DOORZET_CONFIG, DOORZET_TEST_DATABASE_URL) belong to the CLI and the tests.
    let overrides = Env::prefixed("DOORZET_")
        .filter(|key| key.as_str().contains("__") || key == "org")
        .split("__");
    Figment::new()
        .merge(Toml::file_exact(file))
        .merge(overrides)
        .extract()
        .map_err(|e| MeshError::Config(Box::new(e)))
}

/// The certificate, key and trust anchors of this organisation, as PEM file paths.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// Certificate chain (leaf first) whose subject serialNumber is this organisation's OIN.
    pub cert: PathBuf,
    /// PKCS#8 private key of the certificate.
    pub key: PathBuf,
    /// Trust anchors (CA certificates) that peers' certificates must chain to.
    pub ca: PathBuf,
    /// How often the files are checked for changes (they are also re-read on SIGHUP).
    #[serde(with = "humantime_serde", default = "default_reload_interval")]
    pub reload_interval: Duration,
    /// Certificate revocation lists (PEM or DER files) the trust anchors publish, fetched by the
    /// operator's tooling; re-read like the certificates. Peers whose issuer publishes no list here
    /// are checked against the directory's revocations only.
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    /// What a list past its next update means: `allow` (default) keeps refusing what it lists and
    /// accepting the rest, `refuse` refuses every peer whose status it cannot vouch for. Either way
    /// a stale list shows as health `doorzet.crl` NOT_SERVING and `doorzet_mesh_crl_stale 1`.
    #[serde(default)]
    pub crl_stale: CrlStalePolicy,
}

impl TlsFiles {
    /// Returns the files `cert`, `key` and `ca` with the defaults for the rest.
    pub fn new(cert: PathBuf, key: PathBuf, ca: PathBuf) -> Self {
        Self {
            cert,
            key,
            ca,
            reload_interval: default_reload_interval(),
            crls: Vec::new(),
            crl_stale: CrlStalePolicy::default(),
        }
    }
}

/// What a revocation list past its next update means for peers it would vouch for.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum CrlStalePolicy {
    /// Keep using it: listed certificates are refused, others accepted; the staleness shows.
    #[default]
    Allow,
    /// Refuse every peer certificate whose status depends on it.
    Refuse,
}

fn default_reload_interval() -> Duration {
    Duration::from_secs(10)
}

/// A listening socket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// Address and port, e.g. `127.0.0.1:7443`.
    pub listen: SocketAddr,
}

/// Limits that protect a server from too much or too large traffic.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// A request that takes longer is answered with `DEADLINE_EXCEEDED`.
    #[serde(with = "humantime_serde", default = "default_request_timeout")]
    pub request_timeout: Duration,
    /// Requests in progress at once; more are refused with `RESOURCE_EXHAUSTED`.
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// Largest request message accepted, in bytes.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[serde(with = "humantime_serde", default = "default_drain_timeout")]
    pub drain_timeout: Duration,
    /// Connections each listener holds open at once; beyond it new connections are closed at
    /// once while established ones keep working. Each takes a file handle.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// TLS handshakes in progress at once per listener; beyond it new connections are closed.
    #[serde(default = "default_max_handshakes")]
    pub max_handshakes: usize,
    /// Time for a new connection to finish its TLS handshake, and again to send its first
    /// accepted request; a connection that does neither is closed.
    #[serde(with = "humantime_serde", default = "default_handshake_timeout")]
    pub handshake_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    #[serde(with = "humantime_serde", default = "default_idle_timeout")]
    pub idle_timeout: Duration,
    /// Requests one connection may have open at once (HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`).
    #[serde(default = "default_max_streams_per_connection")]
    pub max_streams_per_connection: u32,
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(15)
}
fn default_max_concurrent_requests() -> usize {
    512
}
fn default_max_message_bytes() -> usize {
    1024 * 1024
}
fn default_drain_timeout() -> Duration {
    Duration::from_secs(20)
}
fn default_max_connections() -> usize {
    1024
}
fn default_max_handshakes() -> usize {
    64
}
fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_max_streams_per_connection() -> u32 {
    64
}

impl Limits {
    /// Checks that the limits leave a usable server; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_concurrent_requests == 0 {
            return Err("limits.max_concurrent_requests must be at least 1".into());
        }
        if self.max_message_bytes < 1024 {
            return Err("limits.max_message_bytes must be at least 1024".into());
        }
        if self.request_timeout.is_zero() {
            return Err("limits.request_timeout must be longer than 0s".into());
        }
        if self.max_connections == 0 {
            return Err("limits.max_connections must be at least 1".into());
        }
        if self.max_handshakes == 0 || self.max_handshakes > self.max_connections {
            return Err(
                "limits.max_handshakes must be at least 1 and at most limits.max_connections"
                    .into(),
            );
        }
        if self.handshake_timeout.is_zero() || self.idle_timeout.is_zero() {
            return Err(
                "limits.handshake_timeout and limits.idle_timeout must be longer than 0s".into(),
            );
        }
        if self.max_streams_per_connection == 0 {
            return Err("limits.max_streams_per_connection must be at least 1".into());
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            request_timeout: default_request_timeout(),
            max_concurrent_requests: default_max_concurrent_requests(),
            max_message_bytes: default_max_message_bytes(),
            drain_timeout: default_drain_timeout(),
            max_connections: default_max_connections(),
            max_handshakes: default_max_handshakes(),
            handshake_timeout: default_handshake_timeout(),
            idle_timeout: default_idle_timeout(),
            max_streams_per_connection: default_max_streams_per_connection(),
        }
    }
}

/// How person and system tokens are checked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Jwt {
    /// The audience every token must carry (one per region's mesh).
    #[serde(default = "default_audience")]
    pub audience: String,
    /// Clock-skew allowance on `exp`, `nbf` and `iat`.
    #[serde(with = "humantime_serde", default = "default_leeway")]
    pub leeway: Duration,
    /// Longest lifetime a token may have (`exp` − `iat`, or `exp` − now without `iat`).
    #[serde(with = "humantime_serde", default = "default_max_lifetime")]
    pub max_lifetime: Duration,
}

fn default_audience() -> String {
    "doorzet".to_owned()
}
fn default_leeway() -> Duration {
    Duration::from_secs(30)
}
fn default_max_lifetime() -> Duration {
    Duration::from_secs(12 * 3600)
}

impl Default for Jwt {
    fn default() -> Self {
        Self {
            audience: default_audience(),
            leeway: default_leeway(),
            max_lifetime: default_max_lifetime(),
        }
    }
}

/// Log format on standard error.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Logs, traces and their export.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    /// `tracing` filter directives, e.g. `info,doorzet_mesh=debug`.
    #[serde(default = "default_log_filter")]
    pub log_filter: String,
    /// Format of the log lines.
    #[serde(default)]
    pub log_format: LogFormat,
    /// OTLP/gRPC collector to export traces to, e.g. `http://127.0.0.1:4317`; unset = no export.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
}

fn default_log_filter() -> String {
    "info".to_owned()
}

impl Default for Telemetry {
    fn default() -> Self {
        Self {
            log_filter: default_log_filter(),
            log_format: LogFormat::default(),
            otlp_endpoint: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        tls: TlsFiles,
        #[serde(default)]
        limits: Limits,
    }

    #[test]
    fn missing_key_is_named_and_defaults_fill_in() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sample.toml");
        std::fs::write(&file, "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n").unwrap();
        let err = load::<Sample>(&file).unwrap_err().to_string();
        assert!(err.contains("ca"), "{err}");

        std::fs::write(
            &file,
            "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nca = \"ca.pem\"\n[limits]\nrequest_timeout = \"2s\"\n",
        )
        .unwrap();
        let sample = load::<Sample>(&file).unwrap();
        assert_eq!(sample.limits.request_timeout, Duration::from_secs(2));
        assert_eq!(sample.limits.max_message_bytes, 1024 * 1024);
        assert_eq!(sample.tls.reload_interval, Duration::from_secs(10));
    }

    #[test]
    fn unusable_limits_are_named() {
        assert!(Limits::default().validate().is_ok());
        let zero = Limits {
            max_concurrent_requests: 0,
            ..Limits::default()
        };
        assert!(
            zero.validate()
                .unwrap_err()
                .contains("max_concurrent_requests")
        );
        let tiny = Limits {
            max_message_bytes: 10,
            ..Limits::default()
        };
        assert!(tiny.validate().unwrap_err().contains("max_message_bytes"));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sample.toml");
        std::fs::write(
            &file,
            "[tls]\ncert = \"c\"\nkey = \"k\"\nca = \"a\"\ncerts = \"typo\"\n",
        )
        .unwrap();
        let err = load::<Sample>(&file).unwrap_err().to_string();
        assert!(err.contains("certs"), "{err}");
    }
}
