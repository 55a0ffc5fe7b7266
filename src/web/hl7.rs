//! `/api/v1/hl7/messages`: the log of every HL7 message received, its
//! outcome and acknowledgement, and replay of one that failed; and
//! `/api/v1/hl7/outbound`: the messages queued for the RIS, with retry of
//! one it refused; and `/api/v1/patients/{id}`: a patient's demographics
//! and visits as the RIS/HIS last sent them.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::error::ApiError;
use super::AppState;
use crate::index::hl7::MessageFilter;
use crate::index::patients::PatientKey;
use crate::ris::RisError;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/hl7/messages", web::get().to(list))
        .route("/hl7/messages/{id}", web::get().to(one))
        .route("/hl7/messages/{id}/replay", web::post().to(replay))
        .route("/hl7/outbound", web::get().to(outbound))
        .route("/hl7/outbound/{id}/retry", web::post().to(retry_outbound))
        .route("/patients/{id}", web::get().to(patient));
}

/// Most rows one request returns.
const MAX_LIMIT: i64 = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(rename = "type")]
    message_type: Option<String>,
    patient: Option<String>,
    outcome: Option<String>,
    /// Unix seconds.
    since: Option<i64>,
    until: Option<i64>,
    limit: Option<i64>,
    offset: Option<i64>,
}

async fn list(
    state: web::Data<AppState>,
    query: Result<web::Query<ListQuery>, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let q = super::error::parsed(query)?;
    if let Some(outcome) = &q.outcome {
        if !["AA", "AE", "AR", "CA", "CE", "CR"].contains(&outcome.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "outcome {outcome:?} is not one of AA, AE, AR, CA, CE, CR"
            )));
        }
    }
    let filter = MessageFilter {
        message_type: q.message_type,
        patient_id: q.patient,
        outcome: q.outcome,
        since: q.since,
        until: q.until,
        limit: q.limit.unwrap_or(100).clamp(1, MAX_LIMIT),
        offset: q.offset.unwrap_or(0).max(0),
    };
    let messages = state
        .index
        .hl7_messages(&filter)
        .await
        .map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "messages": messages })))
}

async fn one(state: web::Data<AppState>, id: web::Path<i64>) -> Result<HttpResponse, ApiError> {
    match state.index.hl7_message(*id).await.map_err(unavailable)? {
        Some(message) => Ok(HttpResponse::Ok().json(message)),
        None => Ok(not_found(format!("no HL7 message {id}"))),
    }
}

async fn replay(state: web::Data<AppState>, id: web::Path<i64>) -> Result<HttpResponse, ApiError> {
    match state.ris.replay(*id).await {
        Ok(outcome) => {
            Ok(HttpResponse::Ok().json(serde_json::json!({ "id": *id, "outcome": outcome })))
        }
        Err(RisError::NotFound(id)) => Ok(not_found(format!("no HL7 message {id}"))),
        Err(e) => Err(unavailable(e)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutboundQuery {
    state: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

async fn outbound(
    state: web::Data<AppState>,
    query: Result<web::Query<OutboundQuery>, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let q = super::error::parsed(query)?;
    if let Some(s) = &q.state {
        if !["pending", "done", "failed"].contains(&s.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "state {s:?} is not one of pending, done, failed"
            )));
        }
    }
    let messages = state
        .index
        .outbound_messages(
            q.state.as_deref(),
            q.limit.unwrap_or(100).clamp(1, MAX_LIMIT),
            q.offset.unwrap_or(0).max(0),
        )
        .await
        .map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "messages": messages })))
}

async fn retry_outbound(
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    if state.index.retry_outbound(*id).await.map_err(unavailable)? {
        Ok(HttpResponse::Ok().json(serde_json::json!({ "id": *id, "state": "pending" })))
    } else {
        Ok(not_found(format!("no failed outbound HL7 message {id}")))
    }
}

async fn patient(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let key = PatientKey {
        id: id.into_inner(),
        issuer: String::new(),
    };
    match state.index.patient(&key).await.map_err(unavailable)? {
        Some(p) => Ok(HttpResponse::Ok().json(p)),
        None => Ok(not_found(format!("no patient {:?}", key.id))),
    }
}

fn not_found(message: String) -> HttpResponse {
    HttpResponse::NotFound().json(serde_json::json!({ "error": message }))
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(e.to_string())
}
