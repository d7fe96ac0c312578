//! Signing in and out of the console, and choosing its language. The development sign-in takes a
//! token from `doorzetctl token issue` and keeps it only after the organisation's node (or the
//! coordinator, beside it) accepted it.

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{
    Chrome, FieldError, LANG_COOKIE, Language, SESSION_COOKIE, Who, now_secs, render, urlencode,
};
use crate::api::AppState;
use crate::upstream::Token;

/// The address of the sign-in page that comes back to `next` afterwards.
pub(super) fn redirect(next: &str, ended: bool) -> Response {
    let mut to = format!("/console/sign-in?next={}", urlencode(safe_next(next)));
    if ended {
        to.push_str("&ended=1");
    }
    let mut response = Redirect::to(&to).into_response();
    if ended {
        response
            .headers_mut()
            .insert(header::SET_COOKIE, clear_session());
    }
    response
}

/// Only a console path is a place to come back to (no open redirect).
fn safe_next(next: &str) -> &str {
    if next.starts_with("/console") && !next.starts_with("//") && !next.contains("/sign-") {
        next
    } else {
        "/console/escalations"
    }
}

fn clear_session() -> HeaderValue {
    HeaderValue::from_static(
        "doorzet_session=; Path=/console; Max-Age=0; HttpOnly; SameSite=Strict",
    )
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    c: Chrome,
    next: String,
    notice: Option<&'static str>,
    dev: bool,
    oidc: bool,
    errors: Vec<FieldError>,
}

impl SignInPage {
    fn token_error(&self) -> Option<&str> {
        self.errors
            .iter()
            .find(|e| e.field == "token")
            .map(|e| e.message.as_str())
    }

    fn oidc_href(&self) -> String {
        format!("/console/oidc/start?next={}", urlencode(&self.next))
    }
}

/// The sign-in page's query.
#[derive(Debug, Deserialize)]
pub(super) struct SignInQuery {
    #[serde(default)]
    next: String,
    #[serde(default)]
    ended: Option<String>,
}

fn chrome(state: &AppState, lang: super::Lang, next: &str) -> Chrome {
    let t = lang.texts();
    Chrome {
        t,
        title: t.sign_in.to_owned(),
        who: None,
        section: "sign-in",
        here: format!("/console/sign-in?next={}", urlencode(safe_next(next))),
        has_node: state.upstreams.node().is_ok(),
        flash: None,
    }
}

/// The sign-in page.
pub(super) async fn page(
    State(state): State<AppState>,
    Language(lang): Language,
    Query(q): Query<SignInQuery>,
) -> Response {
    let page = SignInPage {
        c: chrome(&state, lang, &q.next),
        next: safe_next(&q.next).to_owned(),
        notice: q.ended.map(|_| lang.texts().session_ended),
        dev: state.console.dev_sign_in,
        oidc: state.oidc.is_some(),
        errors: Vec::new(),
    };
    render(StatusCode::OK, &page)
}

/// The development sign-in form.
#[derive(Debug, Deserialize)]
pub(super) struct DevSignIn {
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: String,
}

/// Signs in with a pasted token, once the node (or the coordinator) accepted it.
pub(super) async fn dev_sign_in(
    State(state): State<AppState>,
    Language(lang): Language,
    Form(form): Form<DevSignIn>,
) -> Response {
    let t = lang.texts();
    let refuse = |message: &str| {
        let page = SignInPage {
            c: chrome(&state, lang, &form.next),
            next: safe_next(&form.next).to_owned(),
            notice: None,
            dev: state.console.dev_sign_in,
            oidc: state.oidc.is_some(),
            errors: vec![FieldError {
                field: "token".into(),
                message: message.to_owned(),
            }],
        };
        render(StatusCode::UNPROCESSABLE_ENTITY, &page)
    };
    if !state.console.dev_sign_in {
        return (StatusCode::NOT_FOUND, "no development sign-in here").into_response();
    }
    let jwt = form.token.trim();
    if jwt.is_empty() {
        return refuse(t.token_required);
    }
    let Some(who) = Who::read(jwt).filter(|w| w.exp > now_secs()) else {
        return refuse(t.token_refused);
    };
    let Ok(token) = Token::bearer(jwt) else {
        return refuse(t.token_refused);
    };
    match crate::api::authenticate(&state, &token).await {
        Ok(()) => {}
        Err(p) if p.status().is_client_error() => return refuse(t.token_refused),
        Err(p) => return refuse(&format!("{} ({})", t.unavailable, p.detail)),
    }
    signed_in(&state, jwt, who.exp.saturating_sub(now_secs()), &form.next)
        .unwrap_or_else(|| refuse(t.token_refused))
}

fn secure(state: &AppState) -> &'static str {
    if state.console.secure_cookie {
        "; Secure"
    } else {
        ""
    }
}

/// The session cookie holding `jwt` for `max_age` seconds, and on to `next`.
fn signed_in(state: &AppState, jwt: &str, max_age: u64, next: &str) -> Option<Response> {
    let cookie = HeaderValue::try_from(format!(
        "{SESSION_COOKIE}={jwt}; Path=/console; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        secure(state)
    ))
    .ok()?;
    let mut response = Redirect::to(safe_next(next)).into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Some(response)
}

const OIDC_COOKIE: &str = "doorzet_oidc";

/// Where the provider's sign-in should come back to.
#[derive(Debug, Deserialize)]
pub(super) struct OidcStart {
    #[serde(default)]
    next: String,
}

/// Sends the browser to the organisation's identity provider.
pub(super) async fn oidc_start(
    State(state): State<AppState>,
    Language(lang): Language,
    Query(q): Query<OidcStart>,
) -> Response {
    let Some(oidc) = state.oidc.clone() else {
        return (StatusCode::NOT_FOUND, "no identity provider is configured").into_response();
    };
    match oidc.start(safe_next(&q.next)).await {
        Ok(started) => {
            // Lax: the provider sends the browser back with a top-level GET from its own site.
            let cookie = HeaderValue::try_from(format!(
                "{OIDC_COOKIE}={}; Path=/console/oidc; Max-Age=600; HttpOnly; SameSite=Lax{}",
                started.cookie,
                secure(&state)
            ));
            let mut response = Redirect::to(&started.location).into_response();
            if let Ok(cookie) = cookie {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            response
        }
        Err(e) => {
            tracing::warn!(error = %e, "console sign-in could not start");
            oidc_failed(&state, lang, &q.next, StatusCode::BAD_GATEWAY)
        }
    }
}

/// The provider's answer.
#[derive(Debug, Deserialize)]
pub(super) struct OidcCallback {
    #[serde(default)]
    code: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    error: Option<String>,
}

/// Completes the sign-in the provider sends the browser back with.
pub(super) async fn oidc_callback(
    State(state): State<AppState>,
    Language(lang): Language,
    Query(q): Query<OidcCallback>,
    headers: axum::http::HeaderMap,
) -> Response {
    let Some(oidc) = state.oidc.clone() else {
        return (StatusCode::NOT_FOUND, "no identity provider is configured").into_response();
    };
    let flow = super::cookie(&headers, OIDC_COOKIE).unwrap_or_default();
    let result = match &q.error {
        Some(error) => Err(super::oidc::OidcError::Refused(format!(
            "the provider answered `{}`",
            error.chars().take(64).collect::<String>()
        ))),
        None => oidc.finish(flow, &q.state, &q.code).await,
    };
    let mut response = match result {
        Ok(done) => signed_in(&state, &done.token, done.ttl.as_secs(), &done.next)
            .unwrap_or_else(|| oidc_failed(&state, lang, "", StatusCode::BAD_GATEWAY)),
        Err(e) => {
            tracing::warn!(error = %e, "console sign-in through the identity provider failed");
            let status = match e {
                super::oidc::OidcError::Refused(_) => StatusCode::FORBIDDEN,
                super::oidc::OidcError::Provider(_) => StatusCode::BAD_GATEWAY,
            };
            oidc_failed(&state, lang, "", status)
        }
    };
    // One answer per sign-in.
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("doorzet_oidc=; Path=/console/oidc; Max-Age=0; HttpOnly"),
    );
    response
}

fn oidc_failed(state: &AppState, lang: super::Lang, next: &str, status: StatusCode) -> Response {
    let page = SignInPage {
        c: chrome(state, lang, next),
        next: safe_next(next).to_owned(),
        notice: None,
        dev: state.console.dev_sign_in,
        oidc: state.oidc.is_some(),
        errors: vec![FieldError {
            field: "oidc".into(),
            message: lang.texts().oidc_failed.to_owned(),
        }],
    };
    render(status, &page)
}

/// Signs out: the cookie is cleared.
pub(super) async fn sign_out() -> Response {
    let mut response = Redirect::to("/console/sign-in").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, clear_session());
    response
}

/// The language switch's query.
#[derive(Debug, Deserialize)]
pub(super) struct LanguageQuery {
    to: String,
    #[serde(default)]
    back: String,
}

/// Switches the console's language and goes back to the page.
pub(super) async fn language(Query(q): Query<LanguageQuery>) -> Response {
    let code = if q.to == "en" { "en" } else { "nl" };
    let mut response = Redirect::to(safe_next(&q.back)).into_response();
    if let Ok(v) = HeaderValue::try_from(format!(
        "{LANG_COOKIE}={code}; Path=/console; Max-Age=31536000; SameSite=Lax"
    )) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn only_console_paths_are_places_to_come_back_to() {
        assert_eq!(safe_next("/console/cases/c-1"), "/console/cases/c-1");
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/api/v1/x",
            "/console/sign-in",
        ] {
            assert_eq!(safe_next(bad), "/console/escalations", "{bad}");
        }
    }
}
