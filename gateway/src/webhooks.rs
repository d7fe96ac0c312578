//! Webhooks: a partner's system registers an endpoint and receives its organisation's escalation
//! events without polling. The gateway reads its node's inbox (with a token it mints with the
//! organisation's key), queues one delivery per endpoint and event (deduplicated by the event's
//! id), and posts each, signed, until the endpoint accepts it, backing off while it is down.
//!
//! A delivery carries `Doorzet-Event-Id` and `Doorzet-Signature: t=<unix seconds>,v1=<hex>`, the
//! HMAC-SHA256 with the endpoint's secret over `<t>.<body>`; [`verify`] is what a receiver does,
//! refusing a wrong signature and a timestamp outside its tolerance (a replay).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use doorzet_proto::v1;
use doorzet_store::{Database, Migrations, millis};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;

use crate::config::{GatewayConfig, WebhookConfig};
use crate::error::Error;
use crate::minting::OrgKey;
use crate::upstream::Upstreams;

static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");

/// The gateway's migrations for both backends.
pub static MIGRATIONS: Migrations = Migrations {
    sqlite: &SQLITE,
    postgres: &POSTGRES,
};

/// The header with the signature.
pub const SIGNATURE_HEADER: &str = "doorzet-signature";
/// The header with the event's id (the same on every retry).
pub const EVENT_ID_HEADER: &str = "doorzet-event-id";

/// Why a receiver refuses a delivery.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// No or a malformed signature header.
    #[error("Doorzet-Signature: missing or malformed")]
    Malformed,
    /// The timestamp is outside the tolerance: a replay or a badly set clock.
    #[error("Doorzet-Signature: timestamp outside the tolerance (a replay?)")]
    Stale,
    /// The signature does not match.
    #[error("Doorzet-Signature: does not match")]
    Mismatch,
}

/// Signs `body` at `at` with `secret`: the `Doorzet-Signature` header value.
pub fn sign(secret: &[u8], at: SystemTime, body: &[u8]) -> String {
    let t = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    format!(
        "t={t},v1={}",
        hex::encode(mac(secret, t, body).finalize().into_bytes())
    )
}

fn mac(secret: &[u8], t: u64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Checks a delivery as a receiver should: the signature over the body with the endpoint's secret,
/// and a timestamp within `tolerance` of `now`.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<u64>().ok(),
            Some(("v1", v)) => v1 = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return Err(SignatureError::Malformed);
    };
    let now_s = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    if now_s.abs_diff(t) > tolerance.as_secs() {
        return Err(SignatureError::Stale);
    }
    let mut check = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    check.update(t.to_string().as_bytes());
    check.update(b".");
    check.update(body);
    check
        .verify_slice(&v1)
        .map_err(|_| SignatureError::Mismatch)
}

/// What a webhook delivers: one event of one of the organisation's escalations.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEvent {
    /// The event's id: the same on every retry, so a receiver can drop a repeat.
    pub event_id: String,
    /// The escalation.
    pub escalation_id: String,
    /// What happened.
    pub event: Option<crate::api::partner::EventType>,
    /// Its number within the escalation; a gap means one is on its way.
    pub sequence: u64,
    /// The case reference.
    pub case_ref: String,
    /// The tier.
    pub tier: u32,
    /// When it happened (RFC 3339).
    pub occurred_at: Option<String>,
}

/// The webhook machinery: its database and settings.
pub struct Webhooks {
    /// Registrations, deliveries and the inbox cursor.
    pub db: Database,
    /// The settings.
    pub config: WebhookConfig,
    wake: tokio::sync::Notify,
}

impl Webhooks {
    /// Opens the database and starts reading the inbox and delivering.
    pub async fn start(
        config: &GatewayConfig,
        upstreams: Upstreams,
        shutdown: CancellationToken,
    ) -> Result<Option<Arc<Self>>, Error> {
        let Some(settings) = config.webhooks.clone() else {
            return Ok(None);
        };
        let db = Database::connect(&settings.storage, &[&MIGRATIONS])
            .await
            .map_err(|e| Error::Config(format!("webhooks.storage: {e}")))?;
        let minter = Minter {
            key: OrgKey::load(
                &settings.signing_key,
                &settings.key_id,
                config.org,
                &settings.audience,
                "webhooks.signing_key",
            )?,
            role: settings.role.clone(),
            cached: std::sync::Mutex::new(None),
        };
        let this = Arc::new(Self {
            db,
            config: settings,
            wake: tokio::sync::Notify::new(),
        });
        tokio::spawn(this.clone().read_inbox(upstreams, minter, shutdown.clone()));
        tokio::spawn(this.clone().deliver(config.tls.ca.clone(), shutdown));
        Ok(Some(this))
    }

    async fn read_inbox(
        self: Arc<Self>,
        upstreams: Upstreams,
        minter: Minter,
        stop: CancellationToken,
    ) {
        let Ok(mut node) = upstreams.node() else {
            tracing::error!("webhooks need [node]: nothing to read events from");
            return;
        };
        loop {
            match self.read_once(&mut node, &minter).await {
                Ok(0) => {}
                Ok(_) => {
                    self.wake.notify_one();
                    continue;
                }
                Err(e) => tracing::warn!(error = %e, "reading the node's inbox for webhooks"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
    }

    /// Queues deliveries for the next page of the inbox; returns how many items it read.
    async fn read_once(
        &self,
        node: &mut v1::node_admin_client::NodeAdminClient<tonic::transport::Channel>,
        minter: &Minter,
    ) -> Result<usize, String> {
        let pool = self.db.pool();
        let after: i64 = sqlx::query_scalar("SELECT position FROM inbox_cursor WHERE id = 1")
            .fetch_optional(pool)
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or(0);
        let mut request = tonic::Request::new(v1::ListInboxRequest {
            after: after as u64,
            limit: 100,
            ..Default::default()
        });
        let token = minter.token().map_err(|e| e.to_string())?;
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}")
                .parse()
                .map_err(|_| "token is not ASCII")?,
        );
        let items = node
            .list_inbox(request)
            .await
            .map_err(|s| s.message().to_owned())?
            .into_inner()
            .items;
        let Some(last) = items.last().map(|i| i.position) else {
            return Ok(0);
        };
        let hooks: Vec<(String, String)> =
            sqlx::query_as("SELECT webhook_id, events FROM webhooks")
                .fetch_all(pool)
                .await
                .map_err(|e| e.to_string())?;
        let now = millis(SystemTime::now());
        let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
        for item in &items {
            let Some(n) = &item.notification else {
                continue;
            };
            let event = WebhookEvent {
                event_id: n.notification_id.clone(),
                escalation_id: n.escalation_id.clone(),
                event: crate::api::partner::EventType::from_proto(n.event),
                sequence: n.sequence,
                case_ref: n.case_ref.clone(),
                tier: n.tier,
                occurred_at: crate::api::time_out(n.occurred_at),
            };
            let name = serde_json::to_value(event.event)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let payload = serde_json::to_string(&event).map_err(|e| e.to_string())?;
            for (hook, events) in &hooks {
                if !events.is_empty() && !events.split(',').any(|e| e == name) {
                    continue;
                }
                sqlx::query(
                    "INSERT INTO deliveries (webhook_id, event_id, payload, state, attempts, \
                     next_attempt_at, last_error, created_at) VALUES ($1, $2, $3, 'pending', 0, $4, '', $4) \
                     ON CONFLICT (webhook_id, event_id) DO NOTHING",
                )
                .bind(hook)
                .bind(&event.event_id)
                .bind(&payload)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| e.to_string())?;
            }
        }
        sqlx::query(
            "INSERT INTO inbox_cursor (id, position) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET position = excluded.position",
        )
        .bind(last as i64)
        .execute(&mut *tx)
        .await
        .map_err(|e| e.to_string())?;
        tx.commit().await.map_err(|e| e.to_string())?;
        Ok(items.len())
    }

    async fn deliver(self: Arc<Self>, ca: std::path::PathBuf, stop: CancellationToken) {
        let mut client = reqwest::Client::builder()
            .timeout(self.config.delivery_timeout)
            .redirect(reqwest::redirect::Policy::none());
        // The region's trust anchors too, for endpoints with certificates of the region's PKI.
        if let Ok(pem) = std::fs::read(&ca)
            && let Ok(certs) = reqwest::Certificate::from_pem_bundle(&pem)
        {
            for cert in certs {
                client = client.add_root_certificate(cert);
            }
        }
        let client = match client.build() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "webhook client");
                return;
            }
        };
        loop {
            match self.deliver_due(&client).await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "webhook deliveries"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    /// Posts the deliveries that are due; returns how many were tried.
    async fn deliver_due(&self, client: &reqwest::Client) -> Result<usize, sqlx::Error> {
        let pool = self.db.pool();
        let now = SystemTime::now();
        let due: Vec<(String, String, String, i64, String, String)> = sqlx::query_as(
            "SELECT d.webhook_id, d.event_id, d.payload, d.attempts, w.url, w.secret \
             FROM deliveries d JOIN webhooks w ON w.webhook_id = d.webhook_id \
             WHERE d.state = 'pending' AND d.next_attempt_at <= $1 \
             ORDER BY d.created_at, d.event_id LIMIT 32",
        )
        .bind(millis(now))
        .fetch_all(pool)
        .await?;
        let tries = due
            .iter()
            .map(|(hook, event, payload, attempts, url, secret)| async move {
                let signature = sign(secret.as_bytes(), SystemTime::now(), payload.as_bytes());
                let outcome = client
                    .post(url)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header(EVENT_ID_HEADER, event)
                    .header(SIGNATURE_HEADER, signature)
                    .body(payload.clone())
                    .send()
                    .await;
                let error = match outcome {
                    Ok(r) if r.status().is_success() => None,
                    Ok(r) => Some(format!("answered {}", r.status())),
                    Err(e) => Some(if e.is_timeout() {
                        "timed out".to_owned()
                    } else if e.is_connect() {
                        "could not connect".to_owned()
                    } else {
                        "request failed".to_owned()
                    }),
                };
                (hook, event, *attempts, error)
            });
        let results = futures_util::future::join_all(tries).await;
        let count = results.len();
        for (hook, event, attempts, error) in results {
            let attempts = attempts + 1;
            match error {
                None => {
                    sqlx::query(
                        "UPDATE deliveries SET state = 'delivered', attempts = $1, delivered_at = $2, \
                         last_error = '' WHERE webhook_id = $3 AND event_id = $4",
                    )
                    .bind(attempts)
                    .bind(millis(SystemTime::now()))
                    .bind(hook)
                    .bind(event)
                    .execute(pool)
                    .await?;
                }
                Some(error) => {
                    let backoff = Duration::from_secs(1)
                        .saturating_mul(1 << attempts.clamp(0, 16) as u32)
                        .min(self.config.max_retry_interval);
                    sqlx::query(
                        "UPDATE deliveries SET attempts = $1, next_attempt_at = $2, last_error = $3 \
                         WHERE webhook_id = $4 AND event_id = $5",
                    )
                    .bind(attempts)
                    .bind(millis(SystemTime::now() + backoff))
                    .bind(error)
                    .bind(hook)
                    .bind(event)
                    .execute(pool)
                    .await?;
                }
            }
        }
        Ok(count)
    }
}

/// Mints the gateway's own short tokens for reading the inbox, reusing one for four minutes.
struct Minter {
    key: OrgKey,
    role: String,
    cached: std::sync::Mutex<Option<(String, SystemTime)>>,
}

impl Minter {
    fn token(&self) -> Result<String, jsonwebtoken::errors::Error> {
        let now = SystemTime::now();
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((token, renew)) = cached.as_ref()
            && now < *renew
        {
            return Ok(token.clone());
        }
        let token = self
            .key
            .mint("doorzet-gateway", &self.role, Duration::from_secs(300))?;
        *cached = Some((token.clone(), now + Duration::from_secs(240)));
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_delivery_verifies_and_a_replay_or_a_change_does_not() {
        let secret = b"whsec-test";
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let header = sign(secret, at, b"{\"a\":1}");
        let tolerance = Duration::from_secs(300);
        assert_eq!(verify(secret, &header, b"{\"a\":1}", at, tolerance), Ok(()));
        assert_eq!(
            verify(secret, &header, b"{\"a\":2}", at, tolerance),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", &header, b"{\"a\":1}", at, tolerance),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                secret,
                &header,
                b"{\"a\":1}",
                at + Duration::from_secs(301),
                tolerance
            ),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(secret, "v1=00", b"", at, tolerance),
            Err(SignatureError::Malformed)
        );
    }
}
