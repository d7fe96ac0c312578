//! Signing in and out of the console, and choosing its language. The development sign-in takes a
//! token from `doorzetctl token issue` and keeps it only after the organisation's node (or the
//! coordinator, beside it) accepted it.

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use doorzet_proto::v1;
use serde::Deserialize;

use super::{
    Chrome, FieldError, LANG_COOKIE, Language, SESSION_COOKIE, Who, now_secs, render, urlencode,
};
use crate::api::AppState;
use crate::error::Problem;
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
    errors: Vec<FieldError>,
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
    match accepted(&state, &token).await {
        Ok(()) => {}
        Err(p) if p.status().is_client_error() => return refuse(t.token_refused),
        Err(p) => return refuse(&format!("{} ({})", t.unavailable, p.detail)),
    }
    let secure = if state.console.secure_cookie {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{SESSION_COOKIE}={jwt}; Path=/console; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
        who.exp.saturating_sub(now_secs())
    );
    let mut response = Redirect::to(safe_next(&form.next)).into_response();
    match HeaderValue::try_from(cookie) {
        Ok(v) => {
            response.headers_mut().insert(header::SET_COOKIE, v);
            response
        }
        Err(_) => refuse(t.token_refused),
    }
}

/// The services accept the token: the node's `WhoAmI`, or beside the coordinator a one-item list.
async fn accepted(state: &AppState, token: &Token) -> Result<(), Problem> {
    if let Ok(mut node) = state.upstreams.node() {
        node.who_am_i(token.request(v1::WhoAmIRequest {})).await?;
    } else {
        state
            .upstreams
            .coordinator()?
            .list_escalations(token.request(v1::ListEscalationsRequest {
                page_size: 1,
                ..Default::default()
            }))
            .await?;
    }
    Ok(())
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
        for bad in ["https://evil.example", "//evil.example", "/api/v1/x", "/console/sign-in"] {
            assert_eq!(safe_next(bad), "/console/escalations", "{bad}");
        }
    }
}
