//! The REST gateway end to end: in-process gateways beside the municipality's, the mental-health
//! institution's, the housing corporation's, the care office's and the ZVH's nodes, in front of a
//! real mesh over mutual TLS. Mandates and an escalation are made through REST, the participants'
//! inboxes show the invitation, and the refusals (no token, another organisation's escalation,
//! bad JSON, an unknown path) are problem answers after the same call succeeded for the right
//! caller. The region's "who decides what" is asked of every member's node, and names a node that
//! is down; a console session that ended goes back to sign-in.

use std::time::{Duration, SystemTime};

use doorzet_ctl::local_mesh::MEMBERS;
use doorzet_gateway::config::HttpLimits;
use doorzet_proto::v1::{self, node_admin_client::NodeAdminClient};
use doorzet_testkit::gateway::TestGateway;
use doorzet_testkit::mesh::{TestNode, channel_as, with_token};
use doorzet_testkit::pki::TestClaims;
use doorzet_testkit::{TestMesh, eventually};
use serde_json::{Value, json};

// Members of the local mesh, in MEMBERS order.
const MUNICIPALITY: usize = 0;
const GGZ: usize = 1;
const CARE_OFFICE: usize = 2;
const HOUSING: usize = 3;
const ZVH: usize = 4;

async fn gateway(mesh: &TestMesh, i: usize) -> TestGateway {
    TestGateway::start(mesh, i, HttpLimits::default()).await
}

/// Reads an event stream until `marker` has arrived; returns what was read.
async fn read_events(response: &mut reqwest::Response, marker: &str) -> String {
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while !text.contains(marker) {
            let chunk = response
                .chunk()
                .await
                .unwrap()
                .expect("the stream stays open");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no `{marker}` in: {text}"));
    text
}

/// RFC 3339 in UTC, without pulling a date crate into the tests.
fn rfc3339(at: SystemTime) -> String {
    let secs = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

const DAY: Duration = Duration::from_secs(24 * 3600);

fn new_mandate(role: &str, tiers: &[u32]) -> Value {
    let now = SystemTime::now();
    json!({
        "role": role,
        "tiers": tiers,
        "domains": ["housing", "wmo_support"],
        "decisionTypes": ["suspend_eviction", "provide_housing"],
        "legalBasis": "Mandaatbesluit 2026 art. 4 (fictief)",
        "validFrom": rfc3339(now - 30 * DAY),
        "reviewDate": rfc3339(now + 300 * DAY),
    })
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    key: &str,
    body: &Value,
) -> reqwest::Response {
    client
        .post(url)
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .expect("gateway answers")
}

/// The JSON answer to a GET with `token`.
async fn get_json(http: &reqwest::Client, url: &str, token: &str) -> Value {
    http.get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("gateway answers")
        .json()
        .await
        .expect("a JSON answer")
}

async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(response.headers().contains_key("api-version"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    body
}

/// The municipality's case at its node, with the facts of the eviction.
async fn eviction_case(node: &TestNode) -> String {
    let token = node.org.token("cm-7", "casemanager");
    NodeAdminClient::new(channel_as(&node.org, &node.local_endpoint))
        .create_case(with_token(
            v1::CreateCaseRequest {
                local_id: "zaak-2026-0147".into(),
                bsn: String::new(),
            },
            &token,
        ))
        .await
        .expect("case")
        .into_inner()
        .case_id
}

#[tokio::test(flavor = "multi_thread")]
async fn an_escalation_registered_and_followed_through_rest() {
    let mesh = TestMesh::start(5).await;
    let http = reqwest::Client::new();
    let municipality = gateway(&mesh, MUNICIPALITY).await;
    let ggz = gateway(&mesh, GGZ).await;
    let housing = gateway(&mesh, HOUSING).await;
    let care_office = gateway(&mesh, CARE_OFFICE).await;
    let zvh = gateway(&mesh, ZVH).await;

    // Mandates through each partner's own gateway; a retry with the same key makes no second one.
    let ops = ggz.token("ops-1", "beheerder");
    // A retry sends the same body: one made a moment later would carry other dates.
    let teamleider = new_mandate("teamleider", &[1]);
    let created = post(
        &http,
        &ggz.url("/mandates"),
        &ops,
        "mandate-teamleider",
        &teamleider,
    )
    .await;
    assert_eq!(created.status().as_u16(), 201);
    assert!(
        created.headers()["location"]
            .to_str()
            .unwrap()
            .ends_with("/mandates/mandate-teamleider")
    );
    let again = post(
        &http,
        &ggz.url("/mandates"),
        &ops,
        "mandate-teamleider",
        &teamleider,
    )
    .await;
    assert!(
        again.status().is_success(),
        "{}",
        again.text().await.unwrap()
    );
    let listed: Value = get_json(&http, &ggz.url("/mandates"), &ops).await;
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{listed}");
    assert_eq!(items[0]["role"], "teamleider");
    assert_eq!(items[0]["isCurrent"], true);
    let housing_ops = housing.token("ops-1", "beheerder");
    let created = post(
        &http,
        &housing.url("/mandates"),
        &housing_ops,
        "mandate-woonconsulent",
        &new_mandate("woonconsulent", &[1]),
    )
    .await;
    assert_eq!(created.status().as_u16(), 201);

    // The municipality registers its local case at tier 1.
    let case_id = eviction_case(&mesh.nodes[MUNICIPALITY]).await;
    let registration = json!({
        "caseId": case_id,
        "tier": 1,
        "categories": ["eviction_date", "living_situation"],
        "question": "Ontruiming opschorten tot er passende woonruimte met begeleiding is",
    });
    let cm = municipality.token("cm-7", "casemanager");
    let response = post(
        &http,
        &municipality.url("/escalations"),
        &cm,
        "reg-1",
        &registration,
    )
    .await;
    assert_eq!(response.status().as_u16(), 201);
    assert_eq!(response.headers()["api-version"], "1.0.0");
    let escalation: Value = response.json().await.unwrap();
    let id = escalation["escalationId"].as_str().unwrap().to_owned();
    assert_eq!(escalation["tier"], 1);
    assert!(escalation["deadline"].as_str().is_some(), "{escalation}");
    assert!(!escalation["caseRef"].as_str().unwrap().is_empty());
    let retried: Value = post(
        &http,
        &municipality.url("/escalations"),
        &cm,
        "reg-1",
        &registration,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        retried["escalationId"],
        id.as_str(),
        "the same key is the same registration"
    );

    // Participants see the invitation in their inboxes, through their own gateways.
    let ggz_cm = ggz.token("cm-1", "casemanager");
    let invited = eventually(
        Duration::from_secs(20),
        "invitation in the GGZ inbox",
        || async {
            let page: Value = http
                .get(ggz.url("/inbox"))
                .bearer_auth(&ggz_cm)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            page["items"]
                .as_array()?
                .iter()
                .find(|i| i["escalationId"] == id.as_str() && i["event"] == "invited")
                .cloned()
        },
    )
    .await;
    assert_eq!(invited["hasGrant"], true);
    assert!(
        invited.get("grant").is_none(),
        "the grant stays at the node"
    );

    // The registrant's inbox, the most recent first; an order the API does not know is refused.
    let registrant = municipality.token("cm-1", "casemanager");
    let positions = eventually(
        Duration::from_secs(20),
        "two notifications in the municipality's inbox",
        || async {
            let page: Value = http
                .get(municipality.url("/inbox?order=newest_first"))
                .bearer_auth(&registrant)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let positions: Vec<u64> = page["items"]
                .as_array()?
                .iter()
                .filter_map(|i| i["position"].as_u64())
                .collect();
            (positions.len() >= 2).then_some(positions)
        },
    )
    .await;
    assert!(positions.windows(2).all(|w| w[0] > w[1]), "{positions:?}");
    let sideways = problem(
        http.get(municipality.url("/inbox?order=sideways"))
            .bearer_auth(&registrant)
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert!(
        sideways["detail"].as_str().unwrap().contains("order"),
        "{sideways}"
    );

    // The process director sees it on the region's list; the registrant reads it.
    let director = zvh.token("pd-1", "procesregisseur");
    let page: Value = get_json(
        &http,
        &zvh.url("/escalations?state=participants_resolved&pageSize=10"),
        &director,
    )
    .await;
    assert!(
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["escalationId"] == id.as_str()),
        "{page}"
    );
    let read = http
        .get(municipality.url(&format!("/escalations/{id}")))
        .bearer_auth(&cm)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status().as_u16(), 200);

    // The timeline as server-sent events, and resumed after the first.
    let sse = |last: Option<&str>| {
        let mut request = http
            .get(municipality.url(&format!("/escalations/{id}/events")))
            .bearer_auth(&cm);
        if let Some(last) = last {
            request = request.header("Last-Event-ID", last);
        }
        request.send()
    };
    let mut stream = sse(None).await.unwrap();
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let text = read_events(&mut stream, "event: participants_resolved").await;
    assert!(text.contains("id: 1\nevent: accepted\n"), "{text}");
    let mut resumed = sse(Some("1")).await.unwrap();
    let text = read_events(&mut resumed, "event: participants_resolved").await;
    assert!(
        !text.contains("event: accepted"),
        "resumed after sequence 1: {text}"
    );

    // Refusals, each after the same call succeeded above.
    let stranger = care_office.token("cm-2", "casemanager");
    let hidden = http
        .get(care_office.url(&format!("/escalations/{id}")))
        .bearer_auth(&stranger)
        .send()
        .await
        .unwrap();
    let body = problem(hidden, 404).await;
    assert_eq!(body["grpcStatus"], "NOT_FOUND");
    let anonymous = http
        .get(municipality.url(&format!("/escalations/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        anonymous.headers()["www-authenticate"],
        "Bearer realm=\"doorzet\""
    );
    problem(anonymous, 401).await;
    let forged = http
        .get(municipality.url(&format!("/escalations/{id}")))
        .bearer_auth(care_office.token("cm-2", "casemanager"))
        .send()
        .await
        .unwrap();
    // A token another organisation issued, presented through this organisation's gateway: the
    // coordinator refuses it, as the issuer is not the organisation on the TLS connection.
    let body = problem(forged, 403).await;
    assert_eq!(body["grpcStatus"], "PERMISSION_DENIED", "{body}");
    let bad = http
        .post(municipality.url("/escalations"))
        .bearer_auth(&cm)
        .json(&json!({"caseId": case_id, "tier": "one", "question": "x"}))
        .send()
        .await
        .unwrap();
    let body = problem(bad, 400).await;
    assert!(body["detail"].as_str().unwrap().contains("tier"), "{body}");
    let bad_key = http
        .post(municipality.url("/escalations"))
        .bearer_auth(&cm)
        .header("Idempotency-Key", "no spaces allowed")
        .json(&registration)
        .send()
        .await
        .unwrap();
    let body = problem(bad_key, 400).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("Idempotency-Key"),
        "{body}"
    );
    let nowhere = http
        .get(format!("{}/v1/escalations", municipality.base))
        .send()
        .await
        .unwrap();
    problem(nowhere, 404).await;

    // Metrics name the route template, never an escalation id or another raw path.
    let metrics = doorzet_testkit::mesh::http_get(municipality.admin, "/metrics").await;
    assert!(
        metrics.contains(r#"route="/api/v1/escalations/{escalationId}",status="200""#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"route="unmatched""#), "{metrics}");
    assert!(
        !metrics.contains(&id),
        "a raw path in the metrics: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_served_openapi_document_is_the_committed_one() {
    let mesh = TestMesh::start(1).await;
    let gw = gateway(&mesh, MUNICIPALITY).await;
    let response = reqwest::get(gw.url("/openapi.json")).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let served: Value = response.json().await.unwrap();
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../gateway/openapi.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(served, committed);
    assert!(served["paths"]["/escalations"]["post"].is_object());
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_bodies_and_floods_get_problem_answers_and_the_gateway_keeps_serving() {
    let mesh = TestMesh::start(1).await;
    let gw = TestGateway::start(
        &mesh,
        MUNICIPALITY,
        HttpLimits {
            max_body_bytes: 2048,
            requests_per_second: 1,
            burst: 3,
            ..HttpLimits::default()
        },
    )
    .await;
    let http = reqwest::Client::new();
    let ops = gw.token("ops-1", "beheerder");
    let small = new_mandate("teamleider", &[1]);
    let created = post(&http, &gw.url("/mandates"), &ops, "m-small", &small).await;
    assert_eq!(created.status().as_u16(), 201);
    let mut big = small.clone();
    big["legalBasis"] = Value::String("x".repeat(4096));
    let refused = post(&http, &gw.url("/mandates"), &ops, "m-big", &big).await;
    problem(refused, 413).await;

    // The burst is spent; the next request from this address waits for the rate.
    let flooded = eventually(Duration::from_secs(5), "a 429", || async {
        let r = http
            .get(gw.url("/mandates"))
            .bearer_auth(&ops)
            .send()
            .await
            .ok()?;
        (r.status().as_u16() == 429).then_some(r)
    })
    .await;
    assert_eq!(flooded.headers()["retry-after"], "1");
    problem(flooded, 429).await;
    let served = eventually(Duration::from_secs(5), "served again", || async {
        let r = http
            .get(gw.url("/mandates"))
            .bearer_auth(&ops)
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(r)
    })
    .await;
    let page: Value = served.json().await.unwrap();
    assert_eq!(
        page["items"].as_array().unwrap().len(),
        1,
        "the oversized mandate was not made"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_case_with_facts_and_a_consent_through_rest_seen_only_by_its_own_organisation() {
    let mesh = TestMesh::start(5).await;
    let http = reqwest::Client::new();
    let municipality = gateway(&mesh, MUNICIPALITY).await;
    let housing = gateway(&mesh, HOUSING).await;
    let cm = municipality.token("cm-7", "casemanager");

    let created = post(
        &http,
        &municipality.url("/cases"),
        &cm,
        "case-1",
        &json!({"localId": "zaak-2026-0147"}),
    )
    .await;
    assert_eq!(created.status().as_u16(), 201);
    let case: Value = created.json().await.unwrap();
    let case_id = case["caseId"].as_str().unwrap().to_owned();
    assert_eq!(case["hasBsn"], false);
    // A retry with the same key and body is the same case, replayed; another body is refused.
    let retried = post(
        &http,
        &municipality.url("/cases"),
        &cm,
        "case-1",
        &json!({"localId": "zaak-2026-0147"}),
    )
    .await;
    assert_eq!(retried.status().as_u16(), 201);
    assert_eq!(retried.headers()["idempotent-replayed"], "true");
    let again: Value = retried.json().await.unwrap();
    assert_eq!(again["caseId"], case_id.as_str());
    let other = post(
        &http,
        &municipality.url("/cases"),
        &cm,
        "case-1",
        &json!({"localId": "zaak-2026-0148"}),
    )
    .await;
    let body = problem(other, 409).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("Idempotency-Key"),
        "{body}"
    );

    for (key, category, value) in [
        ("fact-1", "eviction_date", "2027-01-15"),
        (
            "fact-2",
            "diagnosis_group",
            "psychotische stoornis (fictief)",
        ),
    ] {
        let fact = post(
            &http,
            &municipality.url(&format!("/cases/{case_id}/facts")),
            &cm,
            key,
            &json!({"category": category, "value": value, "source": "zaaksysteem"}),
        )
        .await;
        assert_eq!(fact.status().as_u16(), 201);
    }
    let consent = post(
        &http,
        &municipality.url(&format!("/cases/{case_id}/consents")),
        &cm,
        "consent-1",
        &json!({
            "givenBy": "person",
            "categories": ["eviction_date"],
            "recipients": {"kinds": ["mental_health_institution", "housing_corporation"]},
            "purposes": ["escalation_meeting"],
        }),
    )
    .await;
    assert_eq!(consent.status().as_u16(), 201);
    let consent: Value = consent.json().await.unwrap();
    assert_eq!(consent["recipients"]["kinds"][1], "housing_corporation");

    let url = municipality.url(&format!("/cases/{case_id}"));
    let detail: Value = get_json(&http, &url, &cm).await;
    assert_eq!(detail["facts"].as_array().unwrap().len(), 2, "{detail}");
    assert_eq!(detail["consents"].as_array().unwrap().len(), 1);
    let listed: Value = get_json(&http, &municipality.url("/cases"), &cm).await;
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["caseId"] == case_id.as_str())
    );

    let withdrawn = post(
        &http,
        &municipality.url(&format!(
            "/consents/{}/withdrawal",
            consent["consentId"].as_str().unwrap()
        )),
        &cm,
        "withdraw-1",
        &json!({}),
    )
    .await;
    assert_eq!(withdrawn.status().as_u16(), 200);
    let withdrawn: Value = withdrawn.json().await.unwrap();
    assert!(withdrawn["withdrawnAt"].is_string(), "{withdrawn}");

    // The same read by a role the node does not allow for cases, and by another organisation at
    // its own node: refused, and no fact content in either answer.
    let ops = municipality.token("ops-1", "beheerder");
    let refused = http.get(&url).bearer_auth(&ops).send().await.unwrap();
    let body = problem(refused, 403).await;
    assert!(!body.to_string().contains("psychotische"));
    let elsewhere = http
        .get(housing.url(&format!("/cases/{case_id}")))
        .bearer_auth(housing.token("cm-2", "casemanager"))
        .send()
        .await
        .unwrap();
    let body = problem(elsewhere, 404).await;
    assert!(!body.to_string().contains("psychotische"));

    // The node's status and the region's members.
    let status: Value = get_json(&http, &municipality.url("/node-status"), &cm).await;
    assert_eq!(status["orgId"], mesh.nodes[MUNICIPALITY].org.org.as_str());
    assert_eq!(status["kind"], "municipality");
    let members: Value = get_json(&http, &municipality.url("/members"), &cm).await;
    assert_eq!(members["items"].as_array().unwrap().len(), 5, "{members}");
    let anonymous = http
        .get(municipality.url("/members"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    problem(anonymous, 401).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_regions_who_decides_what_comes_from_every_members_node_and_names_a_silent_one() {
    let mut mesh = TestMesh::start(5).await;
    let http = reqwest::Client::new();
    let municipality = gateway(&mesh, MUNICIPALITY).await;
    let ggz = gateway(&mesh, GGZ).await;
    let housing = gateway(&mesh, HOUSING).await;
    let ggz_ops = ggz.token("ops-1", "beheerder");
    let housing_ops = housing.token("ops-1", "beheerder");
    for (gw, token, key, body) in [
        (
            &ggz,
            &ggz_ops,
            "m-teamleider",
            new_mandate("teamleider", &[1]),
        ),
        (
            &housing,
            &housing_ops,
            "m-woonconsulent",
            new_mandate("woonconsulent", &[1, 2]),
        ),
        (
            &housing,
            &housing_ops,
            "m-directeur",
            new_mandate("directeur", &[3]),
        ),
    ] {
        let created = post(&http, &gw.url("/mandates"), token, key, &body).await;
        assert_eq!(created.status().as_u16(), 201);
    }
    let ended = post(
        &http,
        &housing.url("/mandates/m-directeur/end"),
        &housing_ops,
        "end-directeur",
        &json!({}),
    )
    .await;
    assert!(ended.status().is_success());

    // A case manager at the municipality sees the other partners' mandates in force, named.
    let reader = municipality.token("cm-7", "casemanager");
    let region = |query: &'static str| {
        let (http, url, reader) = (http.clone(), municipality.url("/region/mandates"), &reader);
        async move {
            http.get(format!("{url}{query}"))
                .bearer_auth(reader)
                .send()
                .await
                .expect("gateway answers")
        }
    };
    let all: Value = region("").await.json().await.unwrap();
    let roles: Vec<(&str, &str)> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["orgName"].as_str().unwrap(), m["role"].as_str().unwrap()))
        .collect();
    let ggz_name = MEMBERS[GGZ].name;
    let housing_name = MEMBERS[HOUSING].name;
    assert!(roles.contains(&(ggz_name, "teamleider")), "{all}");
    assert!(roles.contains(&(housing_name, "woonconsulent")), "{all}");
    assert!(
        !roles.iter().any(|(_, role)| *role == "directeur"),
        "an ended mandate is not served: {all}"
    );
    assert_eq!(all["unanswered"], json!([]));
    let at_tier_2: Value = region("?tier=2").await.json().await.unwrap();
    assert_eq!(
        at_tier_2["items"].as_array().unwrap().len(),
        1,
        "{at_tier_2}"
    );
    assert_eq!(at_tier_2["items"][0]["role"], "woonconsulent");
    let other_domain: Value = region("?domain=debts").await.json().await.unwrap();
    assert_eq!(other_domain["items"], json!([]), "{other_domain}");

    // The same page in the console, searched by domain.
    let page = http
        .get(format!(
            "{}/console/region?domain=housing",
            municipality.base
        ))
        .header("cookie", format!("doorzet_session={reader}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("teamleider") && html.contains(housing_name),
        "{html}"
    );

    // Refusals: no token, a filter no node accepts.
    problem(
        http.get(municipality.url("/region/mandates"))
            .send()
            .await
            .unwrap(),
        401,
    )
    .await;
    let bad = problem(region("?domain=Not%20A%20Term").await, 400).await;
    assert!(bad["detail"].as_str().unwrap().contains("domain"), "{bad}");

    // A node that is down is named, and the rest of the region is still listed.
    mesh.stop_node(HOUSING).await;
    let partial: Value = region("").await.json().await.unwrap();
    assert_eq!(
        partial["unanswered"][0]["orgName"], housing_name,
        "{partial}"
    );
    let roles: Vec<&str> = partial["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert!(roles.contains(&"teamleider") && !roles.contains(&"woonconsulent"));
    let page = http
        .get(format!("{}/console/region", municipality.base))
        .header("cookie", format!("doorzet_session={reader}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(housing_name) && page.contains("Niet bereikbaar"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ended_or_refused_console_session_goes_back_to_sign_in_and_says_so() {
    let mesh = TestMesh::start(1).await;
    let gw = gateway(&mesh, MUNICIPALITY).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = |jwt: String| {
        let (http, url) = (http.clone(), format!("{}/console/mandates", gw.base));
        async move {
            http.get(url)
                .header("cookie", format!("doorzet_session={jwt}"))
                .send()
                .await
                .expect("gateway answers")
        }
    };
    let org = &mesh.nodes[MUNICIPALITY].org;
    assert_eq!(page(org.token("ops-1", "beheerder")).await.status(), 200);

    let mut expired = TestClaims::new(org.org, "ops-1", "beheerder");
    expired.iat -= 3600;
    expired.nbf -= 3600;
    expired.exp = expired.iat + 600;
    let mut wrong_audience = TestClaims::new(org.org, "ops-1", "beheerder");
    wrong_audience.aud = "elsewhere".into();
    // The first ends at the gateway (its expiry is plain to read), the second at the node.
    for refused in [org.sign(&expired), org.sign(&wrong_audience)] {
        let answer = page(refused).await;
        assert_eq!(answer.status(), 303);
        assert_eq!(
            answer.headers()["location"],
            "/console/sign-in?next=/console/mandates&ended=1"
        );
        let cleared = answer.headers()["set-cookie"].to_str().unwrap();
        assert!(
            cleared.starts_with("doorzet_session=;") && cleared.contains("Max-Age=0"),
            "{cleared}"
        );
    }
    let sign_in = http
        .get(format!(
            "{}/console/sign-in?next=/console/mandates&ended=1",
            gw.base
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(sign_in.contains("Uw sessie is verlopen"), "{sign_in}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_beside_the_coordinator_only_checks_tokens_there_and_shows_the_region() {
    let mesh = TestMesh::start(5).await;
    let http = reqwest::Client::new();
    let ggz = gateway(&mesh, GGZ).await;
    let created = post(
        &http,
        &ggz.url("/mandates"),
        &ggz.token("ops-1", "beheerder"),
        "m-teamleider",
        &new_mandate("teamleider", &[1]),
    )
    .await;
    assert_eq!(created.status().as_u16(), 201);

    // The ZVH's gateway has no node behind it: the coordinator checks the process director's token.
    let zvh = TestGateway::start_without_node(&mesh, ZVH).await;
    let director = zvh.token("pd-1", "procesregisseur");
    let region: Value = get_json(&http, &zvh.url("/region/mandates"), &director).await;
    assert!(
        region["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["orgName"] == MEMBERS[GGZ].name && m["role"] == "teamleider"),
        "{region}"
    );
    let members: Value = get_json(&http, &zvh.url("/members"), &director).await;
    assert_eq!(members["items"].as_array().unwrap().len(), 5, "{members}");
    // Without a node, the partner pages are not there (501); a token another organisation issued
    // is refused by the coordinator (403: it is valid, but not this connection's), no token 401.
    problem(
        http.get(zvh.url("/mandates"))
            .bearer_auth(&director)
            .send()
            .await
            .unwrap(),
        501,
    )
    .await;
    problem(
        http.get(zvh.url("/region/mandates"))
            .bearer_auth(ggz.token("ops-1", "beheerder"))
            .send()
            .await
            .unwrap(),
        403,
    )
    .await;
    problem(
        http.get(zvh.url("/region/mandates")).send().await.unwrap(),
        401,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_keyed_fact_or_consent_is_recorded_once_even_across_a_gateway_restart() {
    let mesh = TestMesh::start(2).await;
    let http = reqwest::Client::new();
    let case_id = eviction_case(&mesh.nodes[MUNICIPALITY]).await;
    let facts = format!("/cases/{case_id}/facts");
    let consents = format!("/cases/{case_id}/consents");
    let fact = json!({"category": "eviction_date", "value": "2027-03-01", "source": "deurwaarder"});
    let consent = json!({
        "givenBy": "person",
        "categories": ["eviction_date"],
        "recipients": {"kinds": ["housing_corporation"]},
        "purposes": ["escalation_meeting"],
    });
    let recorded = |response: reqwest::Response, id: &'static str| async move {
        assert!(response.status().is_success(), "{}", response.status());
        let body: Value = response.json().await.unwrap();
        body[id].as_str().unwrap().to_owned()
    };
    let (fact_id, consent_id) = {
        let gw = gateway(&mesh, MUNICIPALITY).await;
        let cm = gw.token("cm-1", "casemanager");
        (
            recorded(
                post(&http, &gw.url(&facts), &cm, "f-1", &fact).await,
                "factId",
            )
            .await,
            recorded(
                post(&http, &gw.url(&consents), &cm, "c-1", &consent).await,
                "consentId",
            )
            .await,
        )
    };
    // A new gateway (its replay cache empty, as after a restart): the retries find the records.
    let gw = gateway(&mesh, MUNICIPALITY).await;
    let cm = gw.token("cm-1", "casemanager");
    let again = post(&http, &gw.url(&facts), &cm, "f-1", &fact).await;
    assert_eq!(recorded(again, "factId").await, fact_id);
    let again = post(&http, &gw.url(&consents), &cm, "c-1", &consent).await;
    assert_eq!(recorded(again, "consentId").await, consent_id);
    let detail = get_json(&http, &gw.url(&format!("/cases/{case_id}")), &cm).await;
    assert_eq!(detail["facts"].as_array().unwrap().len(), 1, "{detail}");
    assert_eq!(detail["consents"].as_array().unwrap().len(), 1, "{detail}");
    // The same key for another fact is refused, and nothing is added.
    let other =
        json!({"category": "eviction_date", "value": "2027-04-01", "source": "deurwaarder"});
    let refused = problem(post(&http, &gw.url(&facts), &cm, "f-1", &other).await, 409).await;
    assert!(
        refused["detail"].as_str().unwrap().contains("already used"),
        "{refused}"
    );
    // So is it at a gateway that never saw the key: the node keeps it with the fact.
    let fresh = gateway(&mesh, MUNICIPALITY).await;
    let refused = problem(
        post(&http, &fresh.url(&facts), &cm, "f-1", &other).await,
        409,
    )
    .await;
    assert!(
        refused["detail"].as_str().unwrap().contains("already used"),
        "{refused}"
    );
    // A consent for other recipients under the key of the first is refused too.
    let wider = json!({
        "givenBy": "person",
        "categories": ["eviction_date"],
        "recipients": {"kinds": ["housing_corporation", "police"]},
        "purposes": ["escalation_meeting"],
    });
    let refused = problem(
        post(&http, &fresh.url(&consents), &cm, "c-1", &wider).await,
        409,
    )
    .await;
    assert!(
        refused["detail"].as_str().unwrap().contains("already used"),
        "{refused}"
    );
    let detail = get_json(&http, &gw.url(&format!("/cases/{case_id}")), &cm).await;
    assert_eq!(detail["facts"].as_array().unwrap().len(), 1, "{detail}");
    assert_eq!(detail["consents"].as_array().unwrap().len(), 1, "{detail}");
    assert_eq!(
        detail["consents"][0]["recipients"]["kinds"],
        json!(["housing_corporation"])
    );
}
