//! Account management for admins: `/api/v1/users`, the same operations as
//! `tessera user`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::account::{issue_token, TokenRequest};
use super::audit::by;
use super::error::ApiError;
use super::AppState;
use crate::audit::Event;
use crate::auth::Principal;
use crate::model::Roles;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/users", web::get().to(list))
        .route("/users", web::post().to(create))
        .route("/users/{name}", web::get().to(one))
        .route("/users/{name}", web::patch().to(update))
        .route("/users/{name}/password", web::post().to(reset_password))
        .route("/users/{name}/tokens", web::get().to(tokens))
        .route("/users/{name}/tokens", web::post().to(create_token))
        .route(
            "/users/{name}/tokens/{token}",
            web::delete().to(revoke_token),
        );
}

fn roles(list: &[String]) -> Result<Roles, ApiError> {
    Roles::parse(&list.join(",")).map_err(|e| ApiError::BadRequest(e.to_string()))
}

async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.auth.accounts.users().await?))
}

async fn one(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.auth.accounts.user(&name).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    roles: Vec<String>,
    password: String,
    #[serde(default)]
    physician_name: String,
}

/// An account an admin creates must choose its own password at first
/// login.
async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    principal: Principal,
    body: web::Json<NewUser>,
) -> Result<HttpResponse, ApiError> {
    let roles = roles(&body.roles)?;
    state
        .auth
        .accounts
        .add_user(
            &body.name,
            &roles,
            &body.password,
            true,
            &body.physician_name,
        )
        .await?;
    tracing::info!(by = %principal.user, user = %body.name, %roles, "user created");
    state.auditor.record(
        by(&req, Event::UserChanged).detail(format!("{} created with roles {roles}", body.name)),
    );
    Ok(HttpResponse::Created().json(state.auth.accounts.user(&body.name).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Update {
    roles: Option<Vec<String>>,
    disabled: Option<bool>,
}

async fn update(
    req: HttpRequest,
    state: web::Data<AppState>,
    principal: Principal,
    name: web::Path<String>,
    body: web::Json<Update>,
) -> Result<HttpResponse, ApiError> {
    let accounts = &state.auth.accounts;
    if let Some(list) = &body.roles {
        accounts.set_roles(&name, &roles(list)?).await?;
    }
    if let Some(disabled) = body.disabled {
        accounts.set_disabled(&name, disabled).await?;
    }
    tracing::info!(by = %principal.user, user = %name, "user changed");
    state
        .auditor
        .record(by(&req, Event::UserChanged).detail(format!(
            "{name}: roles {:?}, disabled {:?}",
            body.roles, body.disabled
        )));
    Ok(HttpResponse::Ok().json(accounts.user(&name).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reset {
    password: String,
}

/// A reset by an admin: the user must change it again at next login.
async fn reset_password(
    req: HttpRequest,
    state: web::Data<AppState>,
    principal: Principal,
    name: web::Path<String>,
    body: web::Json<Reset>,
) -> Result<HttpResponse, ApiError> {
    state
        .auth
        .accounts
        .set_password(&name, &body.password, true, None)
        .await?;
    tracing::info!(by = %principal.user, user = %name, "password reset");
    state
        .auditor
        .record(by(&req, Event::UserChanged).detail(format!("{name} password reset")));
    Ok(HttpResponse::NoContent().finish())
}

async fn tokens(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.auth.accounts.tokens(&name).await?))
}

async fn create_token(
    req: HttpRequest,
    state: web::Data<AppState>,
    name: web::Path<String>,
    body: web::Json<TokenRequest>,
) -> Result<HttpResponse, ApiError> {
    issue_token(&req, &state, &name, body.into_inner()).await
}

async fn revoke_token(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (user, token) = path.into_inner();
    state.auth.accounts.revoke_token(&user, &token).await?;
    state
        .auditor
        .record(by(&req, Event::UserChanged).detail(format!("{user} token {token} revoked")));
    Ok(HttpResponse::NoContent().finish())
}
