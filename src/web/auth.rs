//! Authentication of HTTP requests: the one place a policy is applied.
//! Today: open, or a static bearer token from config. An OIDC or mTLS policy
//! slots in as another [`AuthPolicy`] variant without touching handlers.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};

use super::AppState;

#[derive(Clone, Debug, Default)]
pub enum AuthPolicy {
    /// Anyone on the network may call the API.
    #[default]
    Open,
    /// `Authorization: Bearer <token>` is required.
    BearerToken(String),
}

pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let allowed = match req.app_data::<web::Data<AppState>>().map(|s| &s.auth) {
        None | Some(AuthPolicy::Open) => true,
        Some(AuthPolicy::BearerToken(token)) => req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes())),
    };
    if !allowed {
        let rsp = HttpResponse::Unauthorized()
            .insert_header(("WWW-Authenticate", "Bearer"))
            .json(serde_json::json!({"error": "authentication required"}));
        return Ok(req.into_response(rsp));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
