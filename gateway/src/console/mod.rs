//! The web console for people, under `/console`: the process director's board and an
//! escalation's page, a partner's mandates, inbox and cases, and the region's "who decides what".
//! Pages are rendered on the server from the same API handlers the REST API serves, with the
//! person's own token, so the node and the coordinator decide what each person sees; forms work
//! without JavaScript, which only adds the live timeline. The token lives in an `HttpOnly`,
//! `SameSite=Strict` cookie that scripts cannot read; every form post must come from the console's
//! own origin.

use std::time::{SystemTime, UNIX_EPOCH};

use askama::Template;
use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;

use crate::api::AppState;
use crate::error::Problem;
use crate::upstream::Token;

mod board;
pub mod i18n;
pub mod oidc;
mod partner;
mod region;
mod sign_in;

pub use i18n::{Lang, Texts};

const SESSION_COOKIE: &str = "doorzet_session";
const LANG_COOKIE: &str = "doorzet_lang";

/// The console's routes, relative to `/console`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/escalations") }))
        .route("/sign-in", get(sign_in::page).post(sign_in::dev_sign_in))
        .route("/sign-out", post(sign_in::sign_out))
        .route("/oidc/start", get(sign_in::oidc_start))
        .route("/oidc/callback", get(sign_in::oidc_callback))
        .route("/language", get(sign_in::language))
        .route("/escalations", get(board::board))
        .route("/escalations/{id}", get(board::escalation))
        .route("/escalations/{id}/meeting", post(board::plan_meeting))
        .route("/escalations/{id}/decision", post(board::record_decision))
        .route("/escalations/{id}/report", get(board::report))
        .route("/escalations/{id}/report.md", get(board::report_markdown))
        .route("/escalations/{id}/events", get(board::events))
        .route("/mandates", get(partner::mandates))
        .route("/region", get(region::region))
        .route("/inbox", get(partner::inbox))
        .route("/cases", get(partner::cases))
        .route("/cases/{id}", get(partner::case))
        .route("/assets/console.css", get(stylesheet))
        .route("/assets/console.js", get(script))
        .layer(axum::middleware::from_fn(guard))
}

/// Security headers on every console answer, and form posts only from the console's own origin
/// (on top of the `SameSite=Strict` cookie).
async fn guard(request: Request, next: Next) -> Response {
    if request.method() != Method::GET
        && request.method() != Method::HEAD
        && !same_origin(request.headers())
    {
        return (StatusCode::FORBIDDEN, "cross-site form posts are refused").into_response();
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        // Pages carry case data: never kept by a browser or proxy.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return site == "same-origin";
    }
    let (Some(origin), Some(host)) = (headers.get(header::ORIGIN), headers.get(header::HOST))
    else {
        return false;
    };
    let (Ok(origin), Ok(host)) = (origin.to_str(), host.to_str()) else {
        return false;
    };
    origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .is_some_and(|o| o == host)
}

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        include_str!("../../assets/console.css"),
    )
}

async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        include_str!("../../assets/console.js"),
    )
}

/// The language a request asks for (the `doorzet_lang` cookie); Dutch by default.
pub struct Language(pub Lang);

impl<S: Send + Sync> FromRequestParts<S> for Language {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            cookie(&parts.headers, LANG_COOKIE)
                .map(Lang::from_code)
                .unwrap_or(Lang::Nl),
        ))
    }
}

/// Who is signed in, as their token says. Only for showing it: every call is still checked with
/// the token by the node or the coordinator.
#[derive(Debug, Clone, Default)]
pub struct Who {
    /// The token's subject.
    pub sub: String,
    /// The token's role.
    pub role: String,
    /// Seconds since the epoch when the token expires.
    pub exp: u64,
}

impl Who {
    /// The claims of a JWT, read without checking its signature (the services check it).
    fn read(jwt: &str) -> Option<Self> {
        #[derive(serde::Deserialize)]
        struct Claims {
            sub: String,
            #[serde(default)]
            role: String,
            exp: u64,
        }
        let payload = jwt.split('.').nth(1)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()?;
        let c: Claims = serde_json::from_slice(&bytes).ok()?;
        Some(Self {
            sub: c.sub,
            role: c.role,
            exp: c.exp,
        })
    }
}

/// A signed-in person: their token and language. Without a live session a page answers with the
/// sign-in page's address.
pub struct Session {
    /// The person's token, put on every call.
    pub token: Token,
    /// Who it names.
    pub who: Who,
    /// Their language.
    pub lang: Lang,
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let Language(lang) = Language::from_request_parts(parts, state)
            .await
            .unwrap_or(Language(Lang::Nl));
        let to_sign_in = |ended: bool| {
            // Nested under `/console`, the request's own URI has lost that prefix.
            let next = parts
                .extensions
                .get::<axum::extract::OriginalUri>()
                .and_then(|u| u.0.path_and_query())
                .map(|p| p.as_str())
                .unwrap_or("/console");
            sign_in::redirect(next, ended)
        };
        let Some(jwt) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(to_sign_in(false));
        };
        let who = Who::read(jwt).ok_or_else(|| to_sign_in(true))?;
        if who.exp <= now_secs() {
            return Err(to_sign_in(true));
        }
        let token = Token::bearer(jwt).map_err(|_| to_sign_in(true))?;
        Ok(Self { token, who, lang })
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The value of cookie `name`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// What every page shows around its content.
pub struct Chrome {
    /// The page's language.
    pub t: &'static Texts,
    /// The page's title (before the application's name).
    pub title: String,
    /// Who is signed in, if anyone.
    pub who: Option<Who>,
    /// The menu entry the page belongs to.
    pub section: &'static str,
    /// This page's path, to come back to after switching language.
    pub here: String,
    /// Whether this gateway fronts a node (the partner pages).
    pub has_node: bool,
    /// A confirmation to show at the top.
    pub flash: Option<&'static str>,
}

impl Chrome {
    /// The chrome of a signed-in page.
    pub fn new(session: &Session, state: &AppState, section: &'static str, here: String) -> Self {
        Self {
            t: session.lang.texts(),
            title: String::new(),
            who: Some(session.who.clone()),
            section,
            here,
            has_node: state.upstreams.node().is_ok(),
            flash: None,
        }
    }

    /// With the page's title.
    pub fn titled(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }

    /// The address that switches to the other language and comes back here.
    pub fn other_lang_href(&self) -> String {
        format!(
            "/console/language?to={}&back={}",
            self.t.other_lang,
            urlencode(&self.here)
        )
    }
}

/// Percent-encodes everything but unreserved characters and `/`.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A rendered page, or a plain 500 when a template fails (a bug, logged).
pub fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "console template failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The error page.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    c: Chrome,
    message: &'static str,
    detail: String,
}

/// A failed page: the sign-in page when the session is over, else an error page in the person's
/// language saying what they can do.
pub struct Failure {
    problem: Problem,
    chrome: Chrome,
}

impl Failure {
    /// `problem` on a page with `chrome`.
    pub fn new(problem: Problem, chrome: Chrome) -> Self {
        Self { problem, chrome }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = self.problem.status();
        if status == StatusCode::UNAUTHORIZED {
            return sign_in::redirect(&self.chrome.here, true);
        }
        let t = self.chrome.t;
        let (message, detail) = match status {
            StatusCode::NOT_FOUND => (t.not_found, String::new()),
            StatusCode::FORBIDDEN => (t.forbidden, self.problem.detail),
            StatusCode::NOT_IMPLEMENTED => (t.no_node, String::new()),
            s if s.is_server_error() => (t.unavailable, String::new()),
            _ => (t.error_title, self.problem.detail),
        };
        let page = ErrorPage {
            c: self.chrome.titled(t.error_title),
            message,
            detail,
        };
        render(status, &page)
    }
}

/// A form field's error, shown beside the field and in the summary at the top.
#[derive(Debug, Clone)]
pub struct FieldError {
    /// The field's id.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// The organisations' names by OIN, from the directory (empty when it cannot be read).
pub(crate) async fn names(
    state: &AppState,
    token: &Token,
) -> std::collections::HashMap<String, String> {
    match crate::api::cases::members(axum::extract::State(state.clone()), token.clone()).await {
        Ok(page) => page
            .0
            .items
            .into_iter()
            .map(|m| (m.org_id, m.name))
            .collect(),
        Err(_) => std::collections::HashMap::new(),
    }
}

/// A fresh idempotency key for a form, so a double submit is one request.
pub fn form_key() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    format!(
        "console-{:016x}{:016x}",
        rng.r#gen::<u64>(),
        rng.r#gen::<u64>()
    )
}

/// The snake-case name a REST enum value serialises to.
pub fn name_of<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_post_must_come_from_the_consoles_own_origin() {
        let mut h = HeaderMap::new();
        assert!(!same_origin(&h), "no evidence of origin is refused");
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_origin(&h));
    }

    #[test]
    fn cookies_are_found_by_name_among_several() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; doorzet_lang=en; doorzet_session=x.y.z"),
        );
        assert_eq!(cookie(&h, LANG_COOKIE), Some("en"));
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("x.y.z"));
        assert_eq!(cookie(&h, "b"), None);
    }

    #[test]
    fn the_token_claims_are_read_for_display() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"pd-1","role":"procesregisseur","exp":4102444800}"#);
        let who = Who::read(&format!("e30.{payload}.sig")).unwrap();
        assert_eq!(
            (who.sub.as_str(), who.role.as_str()),
            ("pd-1", "procesregisseur")
        );
        assert!(Who::read("not-a-jwt").is_none());
    }
}
