//! The gateway's configuration file (`gateway.toml`), with `DOORZET_*` environment overrides.

use std::path::{Path, PathBuf};
use std::time::Duration;

use doorzet_domain::Oin;
use doorzet_mesh::config::{Listen, Telemetry, TlsFiles};
use serde::{Deserialize, Serialize};

use crate::Error;

/// Everything a gateway needs to start. It runs beside a partner's node (`node`), beside the
/// coordinator (`coordinator`), or both: a partner's gateway reads escalations from the
/// coordinator with the organisation's own certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// The organisation this gateway serves, as in its certificate's subject serialNumber. Every
    /// token it forwards must be issued by this organisation (the node and coordinator check).
    pub org: Oin,
    /// The organisation's certificate, key and trust anchors, presented towards the node and the
    /// coordinator.
    pub tls: TlsFiles,
    /// The HTTP listener for the partners' systems and browsers. Plain HTTP: put it behind the
    /// organisation's TLS-terminating proxy, or keep it on loopback.
    pub http: Listen,
    /// The admin listener (metrics, probes); keep it internal.
    pub admin: Listen,
    /// The organisation's own node (its local listener), for mandates, cases and the inbox.
    #[serde(default)]
    pub node: Option<NodeLink>,
    /// The coordinator, for escalations, reports, statistics, the directory and the audit log.
    #[serde(default)]
    pub coordinator: Option<CoordinatorLink>,
    /// Webhooks for the organisation's systems; unset: no webhooks.
    #[serde(default)]
    pub webhooks: Option<WebhookConfig>,
    /// The web console for people, under `/console`.
    #[serde(default)]
    pub console: ConsoleConfig,
    /// Request limits.
    #[serde(default)]
    pub limits: HttpLimits,
    /// Logs and traces.
    #[serde(default)]
    pub telemetry: Telemetry,
}

/// The organisation's own node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeLink {
    /// Its local listener, `https://host:port`.
    pub endpoint: String,
}

/// The region's coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorLink {
    /// Its mesh address, `https://host:port`.
    pub endpoint: String,
    /// The organisation id its certificate must carry.
    pub org: Oin,
}

/// The web console: how people sign in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve the console under `/console`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Development only: sign in by pasting a token from `doorzetctl token issue`.
    #[serde(default)]
    pub dev_sign_in: bool,
    /// Mark the session cookie `Secure` (the console is reached over https, as it must be in
    /// production). Off only for the local mesh on loopback.
    #[serde(default = "yes")]
    pub secure_cookie: bool,
    /// Sign-in through the organisation's own identity provider (OpenID Connect).
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dev_sign_in: false,
            secure_cookie: true,
            oidc: None,
        }
    }
}

/// Sign-in through the organisation's identity provider: the authorization code flow with PKCE.
/// After the provider signed a person in, the gateway checks the ID token and mints the
/// person's doorzet token with the organisation's own signing key (published in the directory),
/// in the role the ID token names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer URL (its discovery document is at
    /// `ISSUER/.well-known/openid-configuration`). `https://`; `http://` only on loopback.
    pub issuer: String,
    /// The console's client id at the provider.
    pub client_id: String,
    /// A file holding the client secret (a confidential client); unset for a public client.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// The console's callback as registered at the provider: `https://HOST/console/oidc/callback`.
    pub redirect_url: String,
    /// Scopes asked for.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The ID token claim with the person's doorzet role (a string or a list of strings).
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// Roles that may sign in to the console; the first of the person's that is listed is used.
    pub roles: Vec<String>,
    /// The organisation's token signing key (PKCS#8 Ed25519 PEM, published in the directory).
    pub signing_key: PathBuf,
    /// The key's id (`kid`) as published.
    pub key_id: String,
    /// The audience of the minted tokens (the region's mesh).
    #[serde(default = "default_audience")]
    pub audience: String,
    /// How long a console session lasts before the person signs in again.
    #[serde(with = "humantime_serde", default = "default_session_ttl")]
    pub session_ttl: Duration,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into()]
}
fn default_role_claim() -> String {
    "doorzet_role".into()
}
fn default_session_ttl() -> Duration {
    Duration::from_secs(3600)
}

fn yes() -> bool {
    true
}

/// Webhooks: where they are kept, and how the gateway reads its node's inbox for them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where registrations and deliveries are kept: `sqlite:PATH` or `postgres://...`.
    pub storage: String,
    /// A token signing key of the organisation (PKCS#8 Ed25519 PEM, published in the directory),
    /// with which the gateway mints its own short tokens to read the node's inbox.
    pub signing_key: PathBuf,
    /// The key's id (`kid`) as published.
    pub key_id: String,
    /// The role of those tokens; the node must allow it to read the inbox.
    #[serde(default = "default_webhook_role")]
    pub role: String,
    /// The audience of those tokens (the region's mesh).
    #[serde(default = "default_audience")]
    pub audience: String,
    /// Roles that may register webhooks.
    #[serde(default = "default_webhook_admin_roles")]
    pub admin_roles: Vec<String>,
    /// How often the inbox is read.
    #[serde(with = "humantime_serde", default = "default_poll_interval")]
    pub poll_interval: Duration,
    /// The longest wait between retries to an endpoint that is down.
    #[serde(with = "humantime_serde", default = "default_max_retry_interval")]
    pub max_retry_interval: Duration,
    /// How long one delivery may take.
    #[serde(with = "humantime_serde", default = "default_delivery_timeout")]
    pub delivery_timeout: Duration,
    /// Development only: also accept `http://` endpoints on loopback addresses.
    #[serde(default)]
    pub allow_plain_http_loopback: bool,
}

fn default_webhook_role() -> String {
    "casemanager".into()
}
fn default_audience() -> String {
    "doorzet".into()
}
fn default_webhook_admin_roles() -> Vec<String> {
    vec!["beheerder".into()]
}
fn default_poll_interval() -> Duration {
    Duration::from_millis(500)
}
fn default_max_retry_interval() -> Duration {
    Duration::from_secs(300)
}
fn default_delivery_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Limits that keep the gateway's callers from exhausting it or what it fronts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpLimits {
    /// A request that takes longer is answered with 504.
    #[serde(with = "humantime_serde", default = "default_request_timeout")]
    pub request_timeout: Duration,
    /// Requests in progress at once; more are answered with 503.
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// Largest request body accepted, in bytes; larger is answered with 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Connections held open at once; beyond it new connections are closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Requests per second one client address may make (sustained); more get 429.
    #[serde(default = "default_requests_per_second")]
    pub requests_per_second: u32,
    /// Requests one client address may make in a burst above the sustained rate.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[serde(with = "humantime_serde", default = "default_drain_timeout")]
    pub drain_timeout: Duration,
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(15)
}
fn default_max_concurrent_requests() -> usize {
    512
}
fn default_max_body_bytes() -> usize {
    256 * 1024
}
fn default_max_connections() -> usize {
    1024
}
fn default_requests_per_second() -> u32 {
    200
}
fn default_burst() -> u32 {
    400
}
fn default_drain_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            request_timeout: default_request_timeout(),
            max_concurrent_requests: default_max_concurrent_requests(),
            max_body_bytes: default_max_body_bytes(),
            max_connections: default_max_connections(),
            requests_per_second: default_requests_per_second(),
            burst: default_burst(),
            drain_timeout: default_drain_timeout(),
        }
    }
}

impl GatewayConfig {
    /// Loads `file` and the environment overrides, and checks rules that span fields.
    pub fn load(file: &Path) -> Result<Self, Error> {
        let config: Self = doorzet_mesh::config::load(file)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks rules that span fields.
    pub fn validate(&self) -> Result<(), Error> {
        if self.node.is_none() && self.coordinator.is_none() {
            return Err(Error::Config(
                "at least one of [node] and [coordinator] must be set".into(),
            ));
        }
        if self.webhooks.is_some() && self.node.is_none() {
            return Err(Error::Config(
                "[webhooks] needs [node]: the events come from the node's inbox".into(),
            ));
        }
        if self.http.listen == self.admin.listen {
            return Err(Error::Config(
                "http.listen and admin.listen must differ".into(),
            ));
        }
        let endpoints = [
            ("node.endpoint", self.node.as_ref().map(|n| &n.endpoint)),
            (
                "coordinator.endpoint",
                self.coordinator.as_ref().map(|c| &c.endpoint),
            ),
        ];
        for (field, endpoint) in endpoints {
            if endpoint.is_some_and(|e| !e.starts_with("https://")) {
                return Err(Error::Config(format!("{field} must start with https://")));
            }
        }
        let l = &self.limits;
        for (field, zero) in [
            (
                "limits.max_concurrent_requests",
                l.max_concurrent_requests == 0,
            ),
            ("limits.max_body_bytes", l.max_body_bytes == 0),
            ("limits.max_connections", l.max_connections == 0),
            ("limits.requests_per_second", l.requests_per_second == 0),
            ("limits.burst", l.burst == 0),
            ("limits.request_timeout", l.request_timeout.is_zero()),
        ] {
            if zero {
                return Err(Error::Config(format!("{field} must be more than 0")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_in_deploy_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/gateway.example.toml");
        let config = GatewayConfig::load(&path).unwrap();
        assert!(config.node.is_some() && config.coordinator.is_some());
        assert_eq!(config.limits, HttpLimits::default());
        let oidc = config
            .console
            .oidc
            .expect("the example shows the identity provider");
        assert_eq!(oidc.session_ttl, Duration::from_secs(3600));
        assert!(!config.console.dev_sign_in && config.console.secure_cookie);
    }

    #[test]
    fn a_gateway_in_front_of_nothing_is_refused_naming_the_sections() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/gateway.example.toml");
        let mut config = GatewayConfig::load(&path).unwrap();
        config.node = None;
        config.coordinator = None;
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("[node]") && err.contains("[coordinator]"),
            "{err}"
        );
    }
}
