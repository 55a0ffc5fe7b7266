//! `/api/v1/studies/{uid}/shares`: a radiologist, technologist or admin
//! shares a study with a referring user who is not its referring
//! physician (a consultant, a second opinion), for a time or until
//! revoked.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::audit::by;
use super::error::ApiError;
use super::AppState;
use crate::audit::Event;
use crate::auth::Principal;
use crate::model::Role;

/// The longest share: ten years.
const MAX_DAYS: i64 = 3650;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/studies/{uid}/shares", web::get().to(list))
        .route("/studies/{uid}/shares/{user}", web::put().to(share))
        .route("/studies/{uid}/shares/{user}", web::delete().to(unshare));
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(e.to_string())
}

async fn known_study(state: &AppState, uid: &str) -> Result<(), ApiError> {
    if state.index.study_exists(uid).await.map_err(unavailable)? {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("no study {uid}")))
    }
}

async fn list(
    state: web::Data<AppState>,
    uid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    known_study(&state, &uid).await?;
    let shares = state.index.study_shares(&uid).await.map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "shares": shares })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ShareRequest {
    /// How long the share lasts; without it, until revoked.
    days: Option<i64>,
}

/// Share with a referring user; sharing again replaces the end date.
async fn share(
    req: HttpRequest,
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (uid, name) = path.into_inner();
    let request: ShareRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ShareRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?
    };
    let expires_at = match request.days {
        None => 0,
        Some(days @ 1..=MAX_DAYS) => crate::index::unix_now() + days * 86_400,
        Some(_) => {
            return Err(ApiError::BadRequest(format!(
                "a share lasts 1 to {MAX_DAYS} days"
            )))
        }
    };
    known_study(&state, &uid).await?;
    let user = state.auth.accounts.user(&name).await?;
    if !user.roles.contains(Role::Referring) || user.roles.see_every_study() {
        return Err(ApiError::BadRequest(format!(
            "{name} is not a referring-only account; shares are for those"
        )));
    }
    let made = state
        .index
        .share_study(&uid, &name, &principal.user, expires_at)
        .await
        .map_err(unavailable)?;
    tracing::info!(by = %principal.user, user = %name, study = %uid, "study shared");
    state.auditor.record(
        by(&req, Event::UserChanged)
            .studies([uid.clone()])
            .detail(format!("study {uid} shared with {name}")),
    );
    Ok(HttpResponse::Ok().json(made))
}

async fn unshare(
    req: HttpRequest,
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (uid, name) = path.into_inner();
    if !state
        .index
        .unshare_study(&uid, &name)
        .await
        .map_err(unavailable)?
    {
        return Err(ApiError::NotFound(format!(
            "study {uid} is not shared with {name}"
        )));
    }
    tracing::info!(by = %principal.user, user = %name, study = %uid, "study share revoked");
    state.auditor.record(
        by(&req, Event::UserChanged)
            .studies([uid.clone()])
            .detail(format!("share of study {uid} with {name} revoked")),
    );
    Ok(HttpResponse::NoContent().finish())
}
