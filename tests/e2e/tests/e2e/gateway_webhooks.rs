//! Webhooks end to end: the municipality's gateway reads its node's inbox and posts each of the
//! organisation's escalation events, signed, to a registered endpoint. The endpoint is down when
//! the events happen; once it is up, every event arrives, each once. The sample receiver
//! (`doorzet_gateway::webhooks::verify`) refuses a wrong signature and a replayed (stale)
//! delivery after accepting the real ones. Only a role allowed to manage webhooks may register,
//! and only an https endpoint (plain http on loopback is the development switch used here).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use doorzet_gateway::config::{HttpLimits, WebhookConfig};
use doorzet_gateway::webhooks::{EVENT_ID_HEADER, SIGNATURE_HEADER, sign, verify};
use doorzet_testkit::gateway::TestGateway;
use doorzet_testkit::{TestMesh, eventually};
use serde_json::{Value, json};

#[derive(Default)]
struct Received {
    /// Event id → times processed.
    events: BTreeMap<String, usize>,
    /// Deliveries refused, with why.
    refused: Vec<String>,
}

/// A receiver as a partner would write it: verify, then process each event id once.
fn receiver(secret: Arc<Mutex<String>>, received: Arc<Mutex<Received>>) -> axum::Router {
    axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let (secret, received) = (secret.clone(), received.clone());
            async move {
                let signature = headers
                    .get(SIGNATURE_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let secret = secret.lock().unwrap().clone();
                let mut r = received.lock().unwrap();
                if let Err(e) = verify(
                    secret.as_bytes(),
                    signature,
                    &body,
                    SystemTime::now(),
                    Duration::from_secs(300),
                ) {
                    r.refused.push(e.to_string());
                    return StatusCode::UNAUTHORIZED;
                }
                let id = headers[EVENT_ID_HEADER].to_str().unwrap().to_owned();
                *r.events.entry(id).or_default() += 1;
                StatusCode::NO_CONTENT
            }
        }),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_that_was_down_receives_every_event_once_signed() {
    let mesh = TestMesh::start(5).await;
    let dir = tempfile::tempdir().unwrap();
    let org = &mesh.nodes[0].org;
    let key = dir.path().join("gateway-token.key");
    std::fs::write(&key, &org.token_key.private_pem).unwrap();
    let gateway = TestGateway::start_with(
        &mesh,
        0,
        HttpLimits::default(),
        Some(WebhookConfig {
            storage: format!("sqlite:{}", dir.path().join("gateway.db").display()),
            signing_key: key,
            key_id: org.token_key.jwk.kid.clone(),
            role: "casemanager".into(),
            audience: "doorzet".into(),
            admin_roles: vec!["beheerder".into()],
            poll_interval: Duration::from_millis(100),
            max_retry_interval: Duration::from_millis(500),
            delivery_timeout: Duration::from_secs(5),
            allow_plain_http_loopback: true,
        }),
    )
    .await;
    let http = reqwest::Client::new();
    let ops = gateway.token("ops-1", "beheerder");

    // The endpoint's port, with nothing listening on it yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/hook");

    let registered = http
        .post(gateway.url("/webhooks"))
        .bearer_auth(&ops)
        .json(&json!({"url": url}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        registered.status().as_u16(),
        201,
        "{:?}",
        registered.text().await
    );
    let hook: Value = registered.json().await.unwrap();
    let hook_id = hook["webhookId"].as_str().unwrap().to_owned();
    let secret = Arc::new(Mutex::new(hook["secret"].as_str().unwrap().to_owned()));
    // Refusals after that success: a role that may not, and a plain-http endpoint elsewhere.
    let cm = gateway.token("cm-7", "casemanager");
    let refused = http
        .post(gateway.url("/webhooks"))
        .bearer_auth(&cm)
        .json(&json!({"url": url}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 403);
    let refused = http
        .post(gateway.url("/webhooks"))
        .bearer_auth(&ops)
        .json(&json!({"url": "http://partner.example/hook"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 400);
    let listed: Value = http
        .get(gateway.url("/webhooks"))
        .bearer_auth(&ops)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        listed["items"][0].get("secret").is_none(),
        "the secret is shown once: {listed}"
    );

    // Events happen while the endpoint is down.
    let escalation: Value = http
        .post(gateway.url("/escalations"))
        .bearer_auth(&cm)
        .json(&json!({"caseRef": "case-webhook", "tier": 1, "question": "Webhook"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(escalation["escalationId"].is_string(), "{escalation}");
    let deliveries_url = gateway.url(&format!("/webhooks/{hook_id}/deliveries"));
    let pending = eventually(
        Duration::from_secs(20),
        "failed attempts recorded",
        || async {
            let page: Value = http
                .get(&deliveries_url)
                .bearer_auth(&ops)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let items = page["items"].as_array()?.clone();
            (items.len() >= 2
                && items
                    .iter()
                    .all(|d| d["state"] == "pending" && d["attempts"].as_i64() >= Some(1)))
            .then_some(items)
        },
    )
    .await;
    assert_eq!(pending[0]["lastError"], "could not connect");

    // The endpoint comes up: every event arrives, each once.
    let received = Arc::new(Mutex::new(Received::default()));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(axum::serve(listener, receiver(secret.clone(), received.clone())).into_future());
    let delivered = eventually(
        Duration::from_secs(20),
        "every delivery accepted",
        || async {
            let page: Value = http
                .get(&deliveries_url)
                .bearer_auth(&ops)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let items = page["items"].as_array()?.clone();
            items
                .iter()
                .all(|d| d["state"] == "delivered")
                .then_some(items)
        },
    )
    .await;
    {
        let r = received.lock().unwrap();
        assert_eq!(r.events.len(), delivered.len(), "{:?}", r.events);
        assert!(
            r.events.values().all(|n| *n == 1),
            "each event once: {:?}",
            r.events
        );
        for d in &delivered {
            assert!(r.events.contains_key(d["eventId"].as_str().unwrap()));
            assert_eq!(d["event"]["escalationId"], escalation["escalationId"]);
        }
        assert!(r.refused.is_empty(), "{:?}", r.refused);
    }

    // Another webhook id than the one whose deliveries were just read: 404.
    let unknown = http
        .get(gateway.url("/webhooks/webhook-unknown/deliveries"))
        .bearer_auth(&ops)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);

    // A forged and a replayed delivery are refused by the receiver.
    let body = json!({"eventId": "forged"}).to_string();
    let hook_url = format!("http://127.0.0.1:{port}/hook");
    let forged = http
        .post(&hook_url)
        .header(EVENT_ID_HEADER, "forged")
        .header(
            SIGNATURE_HEADER,
            sign(b"not-the-secret", SystemTime::now(), body.as_bytes()),
        )
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 401);
    let stale_secret = secret.lock().unwrap().clone();
    let replayed = http
        .post(&hook_url)
        .header(EVENT_ID_HEADER, "replayed")
        .header(
            SIGNATURE_HEADER,
            sign(
                stale_secret.as_bytes(),
                SystemTime::now() - Duration::from_secs(3600),
                body.as_bytes(),
            ),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status().as_u16(), 401);
    let r = received.lock().unwrap();
    assert_eq!(r.refused.len(), 2, "{:?}", r.refused);
    assert!(r.refused[1].contains("timestamp"), "{:?}", r.refused);
    assert!(!r.events.contains_key("forged") && !r.events.contains_key("replayed"));
}
