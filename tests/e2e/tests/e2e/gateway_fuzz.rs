//! The REST gateway against its own OpenAPI document, fuzzed by schemathesis (property-based, from
//! PyPI): over every operation, generated valid and invalid requests must never get a 5xx, and
//! every answer must match the document (status codes, content types, bodies). The gateway stands
//! before a real mesh over mutual TLS; an escalation and a mandate exist, so the operations on one
//! reach the coordinator and the node rather than stopping at 404.
//!
//! schemathesis is installed into `target/tools/schemathesis` (a Python venv) on first use.
//! `SCHEMATHESIS_SEED` replays a run; the default seed keeps CI reproducible.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use doorzet_gateway::config::{HttpLimits, WebhookConfig};
use doorzet_proto::v1::{self, node_admin_client::NodeAdminClient};
use doorzet_testkit::TestMesh;
use doorzet_testkit::gateway::TestGateway;
use doorzet_testkit::mesh::{channel_as, with_token};
use serde_json::{Value, json};

const SCHEMATHESIS: &str = "schemathesis==4.32.5";

/// The schemathesis executable, installed into a venv under `target/` when missing.
fn schemathesis() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/tools/schemathesis");
    let bin = venv.join("bin/schemathesis");
    if bin.is_file() {
        return bin;
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 runs");
    assert!(made.success(), "python3 -m venv failed");
    let installed = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", SCHEMATHESIS])
        .status()
        .expect("pip runs");
    assert!(installed.success(), "pip install {SCHEMATHESIS} failed");
    bin
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_holds_to_its_openapi_document_under_fuzzing() {
    let bin = tokio::task::spawn_blocking(schemathesis).await.unwrap();
    let mesh = TestMesh::start(5).await;
    let node = &mesh.nodes[0];
    // The fuzzer is one address sending as fast as it can; the rate limit is tested elsewhere.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("gateway-token.key");
    std::fs::write(&key, &node.org.token_key.private_pem).unwrap();
    let gateway = TestGateway::start_with(
        &mesh,
        0,
        HttpLimits {
            requests_per_second: 100_000,
            burst: 100_000,
            ..HttpLimits::default()
        },
        Some(WebhookConfig {
            storage: format!("sqlite:{}", dir.path().join("gateway.db").display()),
            signing_key: key,
            key_id: node.org.token_key.jwk.kid.clone(),
            role: "casemanager".into(),
            audience: "doorzet".into(),
            admin_roles: vec!["beheerder".into()],
            poll_interval: Duration::from_millis(200),
            max_retry_interval: Duration::from_secs(5),
            delivery_timeout: Duration::from_secs(2),
            allow_plain_http_loopback: false,
        }),
    )
    .await;
    let api = gateway.url("");

    // Something to find: a case registered at tier 1, and a mandate.
    let token = node.org.token("fuzz-1", "casemanager");
    let ops = node.org.token("ops-1", "beheerder");
    let case = NodeAdminClient::new(channel_as(&node.org, &node.local_endpoint))
        .create_case(with_token(
            v1::CreateCaseRequest {
                local_id: "zaak-fuzz".into(),
                bsn: String::new(),
            },
            &token,
        ))
        .await
        .expect("case")
        .into_inner()
        .case_id;
    let http = reqwest::Client::new();
    let escalation: Value = http
        .post(format!("{api}/escalations"))
        .bearer_auth(&token)
        .json(&json!({"caseId": case, "tier": 1, "question": "Fuzz"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let escalation_id = escalation["escalationId"]
        .as_str()
        .expect("registered")
        .to_owned();
    let mandate: Value = http
        .get(format!("{api}/mandates?includeNotCurrent=true"))
        .bearer_auth(&ops)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mandate_id = mandate["items"][0]["mandateId"]
        .as_str()
        .unwrap_or("mandate-none")
        .to_owned();

    let config = dir.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            "[headers]\nAuthorization = \"Bearer {token}\"\n\n[parameters]\n\"path.escalationId\" = \"{escalation_id}\"\n\"path.mandateId\" = \"{mandate_id}\"\n\"path.caseId\" = \"{case}\"\n"
        ),
    )
    .unwrap();
    let seed = std::env::var("SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261202".into());
    let run = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .arg("--config-file")
            .arg(&config)
            .args(["run", &format!("{api}/openapi.json"), "--url", &api])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
                "--max-examples",
                "40",
                "--seed",
                &seed,
                "--no-color",
                // The event stream stays open for as long as the escalation lives.
                "--exclude-path-regex",
                "/events$",
            ])
            .env("HOME", dir.path())
            .output()
            .expect("schemathesis runs")
    });
    let output = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("schemathesis finished in 10 minutes")
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let operations: usize = doorzet_gateway::openapi()
        .paths
        .paths
        .values()
        .map(|item| {
            [&item.get, &item.post, &item.put, &item.delete, &item.patch]
                .iter()
                .filter(|op| op.is_some())
                .count()
        })
        .sum();
    // All but the event stream.
    assert!(
        report.contains(&format!("Tested: {}", operations - 1)),
        "not every operation was tested:\n{report}"
    );
    println!("{report}");
}
