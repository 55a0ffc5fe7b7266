//! The one place HTTP requests are authenticated and authorised. Every
//! request, pages and probes included, passes [`authenticate`]: it finds
//! the caller (session cookie, API token, the deprecated shared token, or
//! a loopback client while no account exists), looks the route up in
//! [`crate::auth::access`], and checks the CSRF token of state-changing
//! requests made with a session.

use std::future::{ready, Ready};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{ACCEPT, AUTHORIZATION};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, HttpResponse};

use super::AppState;
use crate::auth::access::{self, Access};
use crate::auth::{same_secret, Accounts, Principal, Via};

/// The session cookie (HttpOnly) and its CSRF companion (readable by the
/// pages' scripts, which echo it in [`CSRF_HEADER`]).
pub const SESSION_COOKIE: &str = "tessera_session";
pub const CSRF_COOKIE: &str = "tessera_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How callers are recognised.
#[derive(Clone)]
pub struct AuthPolicy {
    pub accounts: Accounts,
    /// `http.api_token`: one bearer secret with every right. Deprecated.
    pub shared_token: Option<String>,
    /// `http.public_metrics`.
    pub public_metrics: bool,
    /// Single sign-on, when `[oidc]` is set.
    pub oidc: Option<std::sync::Arc<crate::auth::oidc::Oidc>>,
}

pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(policy) = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.auth.clone())
    else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let access = access::required(req.method().as_str(), req.path());
    if access == Access::Public || (access == Access::Metrics && policy.public_metrics) {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let principal = match identify(&req, &policy).await {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(error = %e, "cannot authenticate a request");
            let rsp = HttpResponse::ServiceUnavailable()
                .json(serde_json::json!({"error": "authentication is unavailable"}));
            return Ok(req.into_response(rsp));
        }
    };
    let principal = match principal {
        Some(p) => p,
        None => {
            let rsp = match anonymous(&req, &policy).await {
                Ok(Some(local)) => {
                    req.extensions_mut().insert(local);
                    return Ok(next.call(req).await?.map_into_boxed_body());
                }
                Ok(None) => refuse_anonymous(&req),
                Err(rsp) => rsp,
            };
            return Ok(req.into_response(rsp));
        }
    };
    if principal.must_change && access != Access::Account {
        let rsp = if wants_html(&req) {
            see_other("/account/password")
        } else {
            HttpResponse::Forbidden()
                .json(serde_json::json!({"error": "the password must be changed first"}))
        };
        return Ok(req.into_response(rsp));
    }
    if !access::allows(access, principal.roles.iter()) {
        let rsp = HttpResponse::Forbidden().json(serde_json::json!({
            "error": format!("the roles of {} do not allow this", principal.user)
        }));
        return Ok(req.into_response(rsp));
    }
    if principal.via == Via::Session && changes_state(req.method()) && !csrf_ok(&req, &principal) {
        let rsp = HttpResponse::Forbidden()
            .json(serde_json::json!({"error": "missing or wrong X-CSRF-Token"}));
        return Ok(req.into_response(rsp));
    }
    req.extensions_mut().insert(principal);
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// The caller named by the request's credentials; `None` when it carries
/// none, or none that is valid.
async fn identify(
    req: &ServiceRequest,
    policy: &AuthPolicy,
) -> Result<Option<Principal>, crate::auth::AuthError> {
    let bearer = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if let Some(given) = bearer {
        if let Some(shared) = &policy.shared_token {
            if same_secret(given, shared) {
                return Ok(Some(Principal::superuser("api-token", Via::SharedToken)));
            }
        }
        return policy.accounts.from_token(given).await;
    }
    match req.cookie(SESSION_COOKIE) {
        Some(cookie) if !cookie.value().is_empty() => {
            policy.accounts.from_cookie(cookie.value()).await
        }
        _ => Ok(None),
    }
}

/// A caller without credentials. Before the first account exists, a
/// client on this machine may do everything, so the README's run command
/// works as it is; anyone else is told how to create the first admin.
async fn anonymous(
    req: &ServiceRequest,
    policy: &AuthPolicy,
) -> Result<Option<Principal>, HttpResponse> {
    let users_exist = policy.accounts.users_exist().await.map_err(|e| {
        tracing::error!(error = %e, "cannot read the user table");
        HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"error": "authentication is unavailable"}))
    })?;
    // Single sign-on set up means logins are expected, from anywhere.
    if users_exist || policy.shared_token.is_some() || policy.oidc.is_some() {
        return Ok(None);
    }
    let loopback = req.peer_addr().is_some_and(|a| a.ip().is_loopback());
    if loopback {
        return Ok(Some(Principal::superuser("local", Via::Loopback)));
    }
    Err(HttpResponse::Forbidden()
        .content_type("text/html; charset=utf-8")
        .body(SETUP_PAGE))
}

const SETUP_PAGE: &str = "<!doctype html><html lang=en><meta charset=utf-8>\
<title>Tessera: no users yet</title>\
<body style=\"font-family:sans-serif;max-width:40em;margin:4em auto\">\
<h1>Tessera has no users yet</h1>\
<p>Until the first account exists, Tessera answers only on the machine it runs on.</p>\
<p>On that machine, create the first administrator:</p>\
<pre>tessera user add --role admin NAME</pre>\
<p>Then log in here with that name and password.</p></body></html>";

fn refuse_anonymous(req: &ServiceRequest) -> HttpResponse {
    if wants_html(req) {
        let target = match req.query_string() {
            "" => req.path().to_owned(),
            q => format!("{}?{q}", req.path()),
        };
        see_other(&format!("/login?next={}", percent_encode(&target)))
    } else {
        HttpResponse::Unauthorized()
            .insert_header(("WWW-Authenticate", "Bearer"))
            .json(serde_json::json!({"error": "authentication required"}))
    }
}

/// A browser navigating (not a script fetching data).
fn wants_html(req: &ServiceRequest) -> bool {
    req.method() == Method::GET
        && req
            .headers()
            .get(ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"))
}

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header(("Location", location))
        .finish()
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn csrf_ok(req: &ServiceRequest, principal: &Principal) -> bool {
    let given = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    matches!((given, &principal.csrf), (Some(g), Some(want)) if same_secret(g, want))
}

/// Encode a path for a query parameter: everything but unreserved
/// characters and `/`.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Handlers take the caller as an argument; [`authenticate`] put it there.
impl FromRequest for Principal {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<Principal>()
                .cloned()
                .ok_or_else(|| actix_web::error::ErrorUnauthorized("authentication required")),
        )
    }
}
