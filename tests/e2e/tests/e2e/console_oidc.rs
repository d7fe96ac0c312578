//! The console's sign-in through an organisation's identity provider (OpenID Connect, code flow
//! with PKCE), against a real mesh: a small provider on a real socket (discovery, authorize, token,
//! keys; it checks the PKCE verifier and the client secret and signs ID tokens with its own
//! Ed25519 key) stands in for the organisation's. The process director signs in and sees the
//! board; then a forged state, an ID token with another sign-in's nonce, a replayed code and a
//! person without an admitted role are refused, and none of them gets a session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::{Form, Query, State};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use base64::Engine;
use doorzet_ctl::pki::TokenKey;
use doorzet_gateway::config::{ConsoleConfig, HttpLimits, OidcConfig};
use doorzet_testkit::TestMesh;
use doorzet_testkit::gateway::TestGateway;
use serde_json::json;
use sha2::{Digest, Sha256};

const ZVH: usize = 4;
const CLIENT: &str = "doorzet-console";
const SECRET: &str = "provider-secret-for-tests";

/// Who the provider signs in next, and how it misbehaves.
#[derive(Clone, Default)]
struct Person {
    sub: String,
    roles: Vec<String>,
    wrong_nonce: bool,
}

/// A code the provider issued: to whom, with which nonce and PKCE challenge.
type Issued = (Person, String, String);

#[derive(Clone)]
struct Provider {
    base: String,
    key: TokenKey,
    next: Arc<Mutex<Person>>,
    codes: Arc<Mutex<HashMap<String, Issued>>>,
}

async fn discovery(State(p): State<Provider>) -> impl IntoResponse {
    axum::Json(json!({
        "issuer": p.base,
        "authorization_endpoint": format!("{}/authorize", p.base),
        "token_endpoint": format!("{}/token", p.base),
        "jwks_uri": format!("{}/jwks", p.base),
    }))
}

async fn jwks(State(p): State<Provider>) -> impl IntoResponse {
    axum::Json(json!({ "keys": [p.key.jwk] }))
}

/// Signs in whoever is next at once, as a provider with a live session would.
async fn authorize(
    State(p): State<Provider>,
    Query(q): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    assert_eq!(q["client_id"], CLIENT);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    let code = format!("code-{}", p.codes.lock().unwrap().len());
    let person = p.next.lock().unwrap().clone();
    p.codes.lock().unwrap().insert(
        code.clone(),
        (person, q["nonce"].clone(), q["code_challenge"].clone()),
    );
    Redirect::to(&format!(
        "{}?code={code}&state={}",
        q["redirect_uri"], q["state"]
    ))
}

async fn token(
    State(p): State<Provider>,
    Form(f): Form<HashMap<String, String>>,
) -> axum::response::Response {
    let refused = |why: &str| {
        (
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": "invalid_grant", "error_description": why })),
        )
            .into_response()
    };
    if f.get("client_secret").map(String::as_str) != Some(SECRET) {
        return refused("client authentication");
    }
    // A code is good once.
    let Some((person, nonce, challenge)) = p.codes.lock().unwrap().remove(&f["code"]) else {
        return refused("unknown or used code");
    };
    let verifier = &f["code_verifier"];
    let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    if computed != challenge {
        return refused("PKCE verifier");
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(p.key.jwk.kid.clone());
    let claims = json!({
        "iss": p.base,
        "aud": CLIENT,
        "sub": person.sub,
        "iat": now,
        "exp": now + 300,
        "nonce": if person.wrong_nonce { "another-sign-ins-nonce".to_owned() } else { nonce },
        "doorzet_role": person.roles,
        "name": "Fictieve Procesregisseur",
    });
    let id_token = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_pem(p.key.private_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    axum::Json(json!({ "id_token": id_token, "access_token": "opaque", "token_type": "Bearer" }))
        .into_response()
}

async fn provider() -> Provider {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let p = Provider {
        base: format!("http://{}", listener.local_addr().unwrap()),
        key: TokenKey::generate().unwrap(),
        next: Arc::default(),
        codes: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/authorize", get(authorize))
        .route("/token", post(token))
        .with_state(p.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    p
}

/// A `Set-Cookie` of `response` named `name`, as `name=value`.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
}

fn location(response: &reqwest::Response) -> String {
    response.headers()["location"].to_str().unwrap().to_owned()
}

/// Runs the flow as a browser would, up to the callback; returns the callback URL and the flow
/// cookie.
async fn to_callback(http: &reqwest::Client, gateway: &TestGateway) -> (String, String) {
    let start = http
        .get(format!(
            "{}/console/oidc/start?next=/console/escalations",
            gateway.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status().as_u16(), 303);
    let flow = set_cookie(&start, "doorzet_oidc").expect("a flow cookie");
    let at_provider = http.get(location(&start)).send().await.unwrap();
    assert!(at_provider.status().is_redirection());
    (location(&at_provider), flow)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_signs_in_through_the_organisations_identity_provider() {
    let mesh = TestMesh::start(5).await;
    let idp = provider().await;
    let dir = tempfile::tempdir().unwrap();
    let org = &mesh.nodes[ZVH].org;
    let key = dir.path().join("token.key");
    std::fs::write(&key, &org.token_key.private_pem).unwrap();
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let console = |base: &str| ConsoleConfig {
        enabled: true,
        dev_sign_in: false,
        secure_cookie: false,
        oidc: Some(OidcConfig {
            issuer: idp.base.clone(),
            client_id: CLIENT.into(),
            client_secret_file: Some(secret),
            redirect_url: format!("{base}/console/oidc/callback"),
            scopes: vec!["openid".into()],
            role_claim: "doorzet_role".into(),
            roles: vec!["procesregisseur".into(), "casemanager".into()],
            signing_key: key,
            key_id: org.token_key.jwk.kid.clone(),
            audience: "doorzet".into(),
            session_ttl: Duration::from_secs(600),
        }),
    };
    let gateway =
        TestGateway::start_with_console(&mesh, ZVH, HttpLimits::default(), None, console).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // The sign-in page offers the provider, and no development sign-in.
    let page = http
        .get(format!("{}/console/sign-in", gateway.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Inloggen via uw organisatie"), "{page}");
    assert!(
        !page.contains("id=\"token\""),
        "no development sign-in here"
    );

    // The process director signs in.
    *idp.next.lock().unwrap() = Person {
        sub: "pd-7".into(),
        roles: vec!["medewerker".into(), "procesregisseur".into()],
        wrong_nonce: false,
    };
    let (callback, flow) = to_callback(&http, &gateway).await;
    let done = http
        .get(callback.clone())
        .header("cookie", &flow)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status().as_u16(), 303, "{:?}", done.text().await);
    assert_eq!(location(&done), "/console/escalations");
    let session = set_cookie(&done, "doorzet_session").expect("a session");
    let board = http
        .get(format!("{}/console/escalations", gateway.base))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(board.status().as_u16(), 200);
    let board = board.text().await.unwrap();
    assert!(
        board.contains("<strong>pd-7</strong> (procesregisseur)"),
        "{board}"
    );
    // The session token is the organisation's own, accepted by the coordinator through the API.
    let jwt = session.trim_start_matches("doorzet_session=");
    let listed = http
        .get(gateway.url("/escalations"))
        .bearer_auth(jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status().as_u16(), 200);

    // A form post from another site is refused; the same post from the console's origin works.
    let sign_out = |origin: &str| {
        http.post(format!("{}/console/sign-out", gateway.base))
            .header("cookie", &session)
            .header("origin", origin.to_owned())
            .send()
    };
    let foreign = sign_out("https://elders.example").await.unwrap();
    assert_eq!(foreign.status().as_u16(), 403);
    assert!(set_cookie(&foreign, "doorzet_session").is_none());
    let own = sign_out(&gateway.base).await.unwrap();
    assert_eq!(own.status().as_u16(), 303);
    assert_eq!(
        set_cookie(&own, "doorzet_session").as_deref(),
        Some("doorzet_session="),
        "signing out clears the session"
    );

    // The same code again: the provider refuses it, and no session is set.
    let replay = http
        .get(callback)
        .header("cookie", &flow)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status().as_u16(), 403);
    assert!(set_cookie(&replay, "doorzet_session").is_none());

    // A state that is not this browser's sign-in.
    let (callback, _) = to_callback(&http, &gateway).await;
    let (_, other_flow) = to_callback(&http, &gateway).await;
    let forged = http
        .get(callback)
        .header("cookie", &other_flow)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 403);
    assert!(set_cookie(&forged, "doorzet_session").is_none());
    assert!(
        forged
            .text()
            .await
            .unwrap()
            .contains("Inloggen bij uw organisatie is niet gelukt")
    );

    // An ID token carrying another sign-in's nonce.
    idp.next.lock().unwrap().wrong_nonce = true;
    let (callback, flow) = to_callback(&http, &gateway).await;
    let wrong = http
        .get(callback)
        .header("cookie", &flow)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 403);
    assert!(set_cookie(&wrong, "doorzet_session").is_none());

    // A person whose roles the console does not admit.
    *idp.next.lock().unwrap() = Person {
        sub: "stagiair-1".into(),
        roles: vec!["stagiair".into()],
        wrong_nonce: false,
    };
    let (callback, flow) = to_callback(&http, &gateway).await;
    let outsider = http
        .get(callback)
        .header("cookie", &flow)
        .send()
        .await
        .unwrap();
    assert_eq!(outsider.status().as_u16(), 403);
    assert!(set_cookie(&outsider, "doorzet_session").is_none());
}
