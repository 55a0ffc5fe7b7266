//! Logging in and out, the caller's own session, password and API tokens:
//! the login page, `/logout`, `/account/password` and
//! `/api/v1/session`, `/api/v1/account/*`.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header::CONTENT_TYPE;
use actix_web::{web, Either, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::audit::{by, client};
use super::auth::{CSRF_COOKIE, SESSION_COOKIE};
use super::error::ApiError;
use super::AppState;
use crate::audit::{Actor, AuditEvent, Event, Outcome};
use crate::auth::{AuthError, Principal};
use crate::model::Roles;

pub fn pages(cfg: &mut web::ServiceConfig) {
    cfg.route("/login", web::get().to(login_page))
        .route("/login.css", web::get().to(style))
        .route("/login", web::post().to(login))
        .route("/logout", web::post().to(logout))
        .route("/account/password", web::get().to(password_page));
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/session", web::get().to(session))
        .route("/account/password", web::post().to(change_password))
        .route("/account/tokens", web::get().to(tokens))
        .route("/account/tokens", web::post().to(create_token))
        .route("/account/tokens/{name}", web::delete().to(revoke_token));
}

#[derive(Deserialize)]
struct LoginPageQuery {
    next: Option<String>,
}

async fn login_page(state: web::Data<AppState>, query: web::Query<LoginPageQuery>) -> HttpResponse {
    html_page(
        actix_web::http::StatusCode::OK,
        &login_html(&state, query.next.as_deref(), None),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginForm {
    name: String,
    password: String,
    next: Option<String>,
}

/// A form post from the login page (answered with a redirect) or a JSON
/// post from a script (answered with JSON). Both set the cookies.
async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: Either<web::Form<LoginForm>, web::Json<LoginForm>>,
) -> Result<HttpResponse, ApiError> {
    let (form, from_page) = match body {
        Either::Left(form) => (form.into_inner(), true),
        Either::Right(json) => (json.into_inner(), false),
    };
    let attempt = |outcome| {
        AuditEvent::new(Event::Login, Actor::User(form.name.clone()), client(&req))
            .outcome(outcome)
            .detail(form.name.clone())
    };
    let result = state.auth.accounts.login(&form.name, &form.password).await;
    match &result {
        Ok(_) => state.auditor.record(attempt(Outcome::Success)),
        Err(AuthError::LockedNow) => {
            state.auditor.record(attempt(Outcome::MinorFailure));
            state
                .auditor
                .record(attempt(Outcome::Success).event_kind(Event::Lockout));
        }
        Err(AuthError::Index(_) | AuthError::Random(_)) => {}
        Err(_) => state.auditor.record(attempt(Outcome::MinorFailure)),
    }
    let started = match result {
        Ok(started) => started,
        Err(e @ (AuthError::BadCredentials | AuthError::LockedNow | AuthError::Locked { .. }))
            if from_page =>
        {
            let status = if matches!(e, AuthError::Locked { .. }) {
                actix_web::http::StatusCode::TOO_MANY_REQUESTS
            } else {
                actix_web::http::StatusCode::UNAUTHORIZED
            };
            return Ok(html_page(
                status,
                &login_html(&state, form.next.as_deref(), Some(&e.to_string())),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(user = %started.user.name, "login");
    let secure = req.connection_info().scheme() == "https";
    let mut rsp = if from_page {
        let target = if started.user.must_change {
            "/account/password".to_owned()
        } else {
            safe_next(form.next.as_deref())
        };
        let mut rsp = HttpResponse::SeeOther();
        rsp.insert_header(("Location", target));
        rsp
    } else {
        HttpResponse::Ok()
    };
    rsp.cookie(cookie(SESSION_COOKIE, started.cookie.clone(), true, secure))
        .cookie(cookie(
            CSRF_COOKIE,
            started.session.csrf.clone(),
            false,
            secure,
        ));
    Ok(if from_page {
        rsp.finish()
    } else {
        rsp.json(serde_json::json!({
            "user": started.user.name,
            "roles": started.user.roles,
            "must_change": started.user.must_change,
            "csrf": started.session.csrf,
        }))
    })
}

async fn logout(
    req: HttpRequest,
    state: web::Data<AppState>,
    principal: Principal,
) -> Result<HttpResponse, ApiError> {
    state.auth.accounts.logout(&principal).await?;
    state
        .auditor
        .record(by(&req, Event::Logout).detail(principal.user.clone()));
    let secure = req.connection_info().scheme() == "https";
    let mut gone = cookie(SESSION_COOKIE, String::new(), true, secure);
    gone.make_removal();
    let mut csrf = cookie(CSRF_COOKIE, String::new(), false, secure);
    csrf.make_removal();
    Ok(HttpResponse::SeeOther()
        .insert_header(("Location", "/login"))
        .cookie(gone)
        .cookie(csrf)
        .finish())
}

pub(super) fn cookie(
    name: &'static str,
    value: String,
    http_only: bool,
    secure: bool,
) -> Cookie<'static> {
    Cookie::build(name, value)
        .path("/")
        .http_only(http_only)
        .secure(secure)
        .same_site(SameSite::Strict)
        .finish()
}

/// Only a path on this server: never `//host` or a full URL.
pub(super) fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/".to_owned(),
    }
}

async fn session(principal: Principal) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "user": principal.user,
        "roles": principal.roles,
        "must_change": principal.must_change,
        "csrf": principal.csrf,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current: String,
    new: String,
}

async fn change_password(
    req: HttpRequest,
    state: web::Data<AppState>,
    principal: Principal,
    body: web::Json<PasswordChange>,
) -> Result<HttpResponse, ApiError> {
    let result = state
        .auth
        .accounts
        .change_own_password(&principal, &body.current, &body.new)
        .await;
    let outcome = if result.is_ok() {
        Outcome::Success
    } else {
        Outcome::MinorFailure
    };
    state.auditor.record(
        by(&req, Event::UserChanged)
            .outcome(outcome)
            .detail(format!("{} password", principal.user)),
    );
    result?;
    tracing::info!(user = %principal.user, "password changed");
    Ok(HttpResponse::NoContent().finish())
}

/// A new token: its name, optional roles (default: all of the user's) and
/// lifetime in days (default 90).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenRequest {
    pub name: String,
    pub roles: Option<Vec<String>>,
    pub days: Option<i64>,
}

pub(super) async fn issue_token(
    req: &HttpRequest,
    state: &AppState,
    user: &str,
    body: TokenRequest,
) -> Result<HttpResponse, ApiError> {
    let roles = body
        .roles
        .map(|list| Roles::parse(&list.join(",")))
        .transpose()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let made = state
        .auth
        .accounts
        .create_token(user, &body.name, roles.as_ref(), body.days.unwrap_or(90))
        .await?;
    tracing::info!(%user, token = %made.token.name, "API token created");
    state.auditor.record(
        by(req, Event::UserChanged).detail(format!("{user} token {} created", made.token.name)),
    );
    Ok(HttpResponse::Created().json(serde_json::json!({
        "token": made.token,
        "secret": made.secret,
    })))
}

async fn tokens(
    state: web::Data<AppState>,
    principal: Principal,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.auth.accounts.tokens(&principal.user).await?))
}

async fn create_token(
    req: HttpRequest,
    state: web::Data<AppState>,
    principal: Principal,
    body: web::Json<TokenRequest>,
) -> Result<HttpResponse, ApiError> {
    issue_token(&req, &state, &principal.user, body.into_inner()).await
}

async fn revoke_token(
    req: HttpRequest,
    state: web::Data<AppState>,
    principal: Principal,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state
        .auth
        .accounts
        .revoke_token(&principal.user, &name)
        .await?;
    state.auditor.record(
        by(&req, Event::UserChanged).detail(format!("{} token {name} revoked", principal.user)),
    );
    Ok(HttpResponse::NoContent().finish())
}

pub(super) fn html_page(status: actix_web::http::StatusCode, body: &str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("X-Frame-Options", "DENY"))
        .body(body.to_owned())
}

pub(super) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Shared by the login and password pages, served at `/login.css`.
const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#0b1220;color:#e5e7eb;\
display:flex;justify-content:center;padding-top:10vh}form{background:#111a2e;padding:2em;\
border-radius:8px;width:20em}label{display:block;margin:.8em 0 .2em}input{width:100%;\
padding:.5em;box-sizing:border-box}button{margin-top:1.2em;width:100%;padding:.6em}\
.error{color:#fca5a5}.sso{display:block;text-align:center;padding:.6em;background:#1d4ed8;\
color:#fff;border-radius:4px;text-decoration:none}";

/// The login form, and a single sign-on button when `[oidc]` is set.
pub(super) fn login_html(state: &AppState, next: Option<&str>, error: Option<&str>) -> String {
    let raw_next = safe_next(next);
    let next = escape(&raw_next);
    let error = error
        .map(|e| format!("<p class=error role=alert>{}</p>", escape(e)))
        .unwrap_or_default();
    let sso = state
        .auth
        .oidc
        .as_ref()
        .map(|oidc| {
            format!(
                "<p><a class=sso href=\"/login/oidc?next={}\">{}</a></p>",
                escape(&super::auth::percent_encode(&raw_next)),
                escape(oidc.label())
            )
        })
        .unwrap_or_default();
    format!(
        "<!doctype html><html lang=en><meta charset=utf-8><title>Tessera: log in</title>\
         <meta name=viewport content=\"width=device-width\"><link rel=stylesheet href=/login.css>\
         <form method=post action=/login><h1>Tessera</h1>{error}{sso}\
         <label for=name>Name</label><input id=name name=name autocomplete=username required autofocus>\
         <label for=password>Password</label>\
         <input id=password name=password type=password autocomplete=current-password required>\
         <input type=hidden name=next value=\"{next}\"><button type=submit>Log in</button></form></html>"
    )
}

async fn style() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/css; charset=utf-8"))
        .insert_header(("Cache-Control", "max-age=3600"))
        .body(STYLE)
}

async fn password_page() -> HttpResponse {
    html_page(actix_web::http::StatusCode::OK, PASSWORD_PAGE)
}

/// The form posts JSON with the CSRF token the login cookie carries.
const PASSWORD_PAGE: &str = concat!(
    "<!doctype html><html lang=en><meta charset=utf-8><title>Tessera: change password</title>",
    "<meta name=viewport content=\"width=device-width\">",
    "<link rel=stylesheet href=/login.css>",
    "<form id=f><h1>Choose a new password</h1><p id=msg class=error role=alert></p>",
    "<p>At least 8 characters, with an upper-case letter, a lower-case letter, a digit ",
    "and a special character.</p>",
    "<label for=current>Current password</label>",
    "<input id=current type=password autocomplete=current-password required>",
    "<label for=new>New password</label>",
    "<input id=new type=password autocomplete=new-password required>",
    "<button type=submit>Change password</button></form><script>",
    "document.getElementById('f').addEventListener('submit',async e=>{e.preventDefault();",
    "const csrf=(document.cookie.match(/(?:^|; )tessera_csrf=([^;]*)/)||[])[1]||'';",
    "const r=await fetch('/api/v1/account/password',{method:'POST',headers:{",
    "'Content-Type':'application/json','X-CSRF-Token':csrf},body:JSON.stringify({",
    "current:document.getElementById('current').value,new:document.getElementById('new').value})});",
    "if(r.ok){location.href='/';}else{const b=await r.json().catch(()=>({}));",
    "document.getElementById('msg').textContent=b.error||('failed: '+r.status);}});",
    "</script></html>"
);
