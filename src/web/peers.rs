//! `/api/v1/peers`: list, read, create/replace, delete and C-ECHO remote AEs.

use actix_web::{web, HttpRequest, HttpResponse};

use super::audit::by;
use super::error::ApiError;
use super::AppState;
use crate::audit::Event;
use crate::model::RawPeer;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/peers", web::get().to(list))
        .route("/peers/{ae}", web::get().to(get))
        .route("/peers/{ae}", web::put().to(put))
        .route("/peers/{ae}", web::delete().to(delete))
        .route("/peers/{ae}/echo", web::post().to(echo));
}

async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.peers.list().await?))
}

async fn get(state: web::Data<AppState>, ae: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.peers.get(&ae).await?))
}

async fn put(
    req: HttpRequest,
    state: web::Data<AppState>,
    ae: web::Path<String>,
    body: web::Json<RawPeer>,
) -> Result<HttpResponse, ApiError> {
    let (peer, created) = state.peers.put(&ae, body.into_inner()).await?;
    state
        .auditor
        .record(by(&req, Event::PeerChanged).detail(format!(
            "{} {}:{} {}",
            peer.ae_title,
            peer.host,
            peer.port,
            if created { "registered" } else { "changed" }
        )));
    Ok(if created {
        HttpResponse::Created().json(peer)
    } else {
        HttpResponse::Ok().json(peer)
    })
}

async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    ae: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.peers.delete(&ae).await?;
    state
        .auditor
        .record(by(&req, Event::PeerChanged).detail(format!("{ae} removed")));
    Ok(HttpResponse::NoContent().finish())
}

/// 200 with the result when the peer answered, 502 when it did not.
async fn echo(state: web::Data<AppState>, ae: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let result = state.peers.echo(&ae).await?;
    Ok(if result.ok {
        HttpResponse::Ok().json(result)
    } else {
        HttpResponse::BadGateway().json(result)
    })
}
