//! Single sign-on pages: `/login/oidc` sends the browser to the identity
//! provider, `/login/oidc/callback` takes it back, starts a session for
//! the account the provider vouched for, and records the login.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::account::{cookie, escape, html_page, login_html, safe_next};
use super::audit::client;
use super::auth::{CSRF_COOKIE, SESSION_COOKIE};
use super::AppState;
use crate::audit::{Actor, AuditEvent, Event, Outcome};
use crate::auth::oidc::OidcError;
use crate::auth::AuthError;

/// Carries a login in progress through the provider's pages. Lax, not
/// Strict: it must come back on the provider's cross-site redirect.
const PENDING_COOKIE: &str = "tessera_oidc";
const CALLBACK_PATH: &str = "/login/oidc/callback";
/// Longest value taken from the provider's query parameters.
const MAX_PARAM: usize = 4096;

pub fn pages(cfg: &mut web::ServiceConfig) {
    cfg.route("/login/oidc", web::get().to(begin))
        .route(CALLBACK_PATH, web::get().to(callback));
}

#[derive(Deserialize)]
struct BeginQuery {
    next: Option<String>,
}

fn secure(req: &HttpRequest) -> bool {
    req.connection_info().scheme() == "https"
}

fn pending_cookie(value: String, secure: bool) -> Cookie<'static> {
    Cookie::build(PENDING_COOKIE, value)
        .path(CALLBACK_PATH)
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Lax)
        .max_age(actix_web::cookie::time::Duration::minutes(10))
        .finish()
}

fn not_configured() -> HttpResponse {
    HttpResponse::NotFound().json(serde_json::json!({"error": "single sign-on is not set up"}))
}

async fn begin(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<BeginQuery>,
) -> HttpResponse {
    let Some(oidc) = state.auth.oidc.clone() else {
        return not_configured();
    };
    let redirect = oidc.redirect_url().map_or_else(
        || {
            let info = req.connection_info();
            format!("{}://{}{CALLBACK_PATH}", info.scheme(), info.host())
        },
        str::to_owned,
    );
    match oidc
        .begin(&redirect, &safe_next(query.next.as_deref()))
        .await
    {
        Ok(begun) => HttpResponse::Found()
            .insert_header(("Location", begun.authorize_url))
            .insert_header(("Cache-Control", "no-store"))
            .cookie(pending_cookie(begun.cookie, secure(&req)))
            .finish(),
        Err(e) => {
            tracing::error!(error = %e, "cannot start a single sign-on login");
            failure_page(&state, StatusCode::BAD_GATEWAY, &e.to_string())
        }
    }
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn callback(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<CallbackQuery>,
) -> HttpResponse {
    let Some(oidc) = state.auth.oidc.clone() else {
        return not_configured();
    };
    let failed = |who: &str, reason: &str| {
        AuditEvent::new(Event::Login, Actor::User(who.to_owned()), client(&req))
            .outcome(Outcome::MinorFailure)
            .detail(format!("single sign-on: {reason}"))
    };
    let query = query.into_inner();
    let too_long = [
        &query.code,
        &query.state,
        &query.error,
        &query.error_description,
    ]
    .into_iter()
    .flatten()
    .any(|v| v.len() > MAX_PARAM);
    let (code, login_state) = match (query.code, query.state, query.error) {
        _ if too_long => {
            return failure_page(&state, StatusCode::BAD_REQUEST, "oversized parameters")
        }
        (_, _, Some(error)) => {
            let reason = match query.error_description {
                Some(d) => format!("{error}: {d}"),
                None => error,
            };
            state.auditor.record(failed("", &reason));
            let message = OidcError::Refused(reason).to_string();
            return failure_page(&state, StatusCode::UNAUTHORIZED, &message);
        }
        (Some(code), Some(s), None) => (code, s),
        _ => {
            return failure_page(
                &state,
                StatusCode::BAD_REQUEST,
                "the identity provider sent neither a code nor an error",
            )
        }
    };
    let pending = req
        .cookie(PENDING_COOKIE)
        .map(|c| c.value().to_owned())
        .unwrap_or_default();
    let finished = match oidc.finish(&pending, &login_state, &code).await {
        Ok(finished) => finished,
        Err(e) => {
            let (status, who) = match &e {
                OidcError::NoRoles(name) => (StatusCode::FORBIDDEN, name.as_str()),
                OidcError::Provider(_) => (StatusCode::BAD_GATEWAY, ""),
                OidcError::Setup(_) => (StatusCode::INTERNAL_SERVER_ERROR, ""),
                OidcError::State => (StatusCode::BAD_REQUEST, ""),
                _ => (StatusCode::UNAUTHORIZED, ""),
            };
            tracing::warn!(error = %e, "single sign-on login refused");
            state.auditor.record(failed(who, &e.to_string()));
            return failure_page(&state, status, &e.to_string());
        }
    };
    let who = finished.identity;
    let started = match state
        .auth
        .accounts
        .login_external(&who.name, &who.roles, &who.physician_name)
        .await
    {
        Ok(started) => started,
        Err(e) => {
            let status = match e {
                AuthError::Index(_) => StatusCode::SERVICE_UNAVAILABLE,
                AuthError::LocalAccount(_) => StatusCode::CONFLICT,
                _ => StatusCode::FORBIDDEN,
            };
            tracing::warn!(user = %who.name, error = %e, "single sign-on account refused");
            state.auditor.record(failed(&who.name, &e.to_string()));
            return failure_page(&state, status, &e.to_string());
        }
    };
    tracing::info!(user = %who.name, subject = %who.subject, roles = %who.roles, "single sign-on login");
    state.auditor.record(
        AuditEvent::new(Event::Login, Actor::User(who.name.clone()), client(&req))
            .outcome(Outcome::Success)
            .detail(who.name.clone()),
    );
    let secure = secure(&req);
    let mut done = pending_cookie(String::new(), secure);
    done.make_removal();
    // A page, not a redirect: the browser arrived here from the provider's
    // site, and SameSite=Strict cookies set now are only sent on a
    // navigation that starts on this site.
    let target = escape(&safe_next(Some(&finished.next)));
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .cookie(cookie(SESSION_COOKIE, started.cookie, true, secure))
        .cookie(cookie(CSRF_COOKIE, started.session.csrf, false, secure))
        .cookie(done)
        .body(format!(
            "<!doctype html><html lang=en><meta charset=utf-8>\
             <meta http-equiv=refresh content=\"0;url={target}\"><title>Tessera</title>\
             <p>Logged in. <a href=\"{target}\">Continue</a></p></html>"
        ))
}

fn failure_page(state: &AppState, status: StatusCode, message: &str) -> HttpResponse {
    html_page(status, &login_html(state, None, Some(message)))
}
