//! The HTTP edge's part of the audit trail: who is calling (the
//! [`Principal`] the auth middleware found, and the client address), the
//! `/api/v1/audit` listing for auditors, and [`dicomweb`], the middleware
//! that records every DICOMweb query, retrieve and store.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::error::{parsed, ApiError};
use super::AppState;
use crate::audit::{Actor, AuditEvent, Event, Outcome};
use crate::auth::Principal;
use crate::index::audit::AuditFilter;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/audit", web::get().to(list));
}

/// An event by the caller of `req`.
pub fn by(req: &HttpRequest, event: Event) -> AuditEvent {
    let actor = req.extensions().get::<Principal>().map_or_else(
        || Actor::User("anonymous".into()),
        |p| Actor::User(p.user.clone()),
    );
    AuditEvent::new(event, actor, client(req))
}

pub fn client(req: &HttpRequest) -> String {
    req.peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default()
}

/// A viewer opening a study fetches its metadata and frames in hundreds of
/// requests; one retrieve record per user and study in this window says
/// the same.
const RETRIEVE_WINDOW: Duration = Duration::from_secs(300);

/// Recent (user, study) retrieves, to fold a viewer's requests into one
/// record.
#[derive(Default)]
pub struct RecentRetrieves(Mutex<HashMap<(String, String), Instant>>);

impl RecentRetrieves {
    /// Whether this retrieve needs a record now.
    fn first(&self, user: &str, study: &str) -> bool {
        let Ok(mut seen) = self.0.lock() else {
            return true;
        };
        let now = Instant::now();
        if seen.len() > 10_000 {
            seen.retain(|_, at| now.duration_since(*at) < RETRIEVE_WINDOW);
        }
        let key = (user.to_owned(), study.to_owned());
        match seen.get(&key) {
            Some(at) if now.duration_since(*at) < RETRIEVE_WINDOW => false,
            _ => {
                seen.insert(key, now);
                true
            }
        }
    }
}

/// Record DICOMweb and WADO-URI requests once they are answered: searches
/// as queries (with the query string), reads as retrieves of their study,
/// STOW-RS as stores. Failed requests are recorded with their outcome.
pub async fn dicomweb(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let response = next.call(req).await?;
    let status = response.status();
    let req = response.request();
    let Some(state) = req.app_data::<web::Data<AppState>>() else {
        return Ok(response);
    };
    let path = req.path();
    let study = study_of(req);
    let event = match (req.method().as_str(), &study) {
        ("POST", _) => Event::Stored,
        (_, Some(_)) => Event::Retrieved,
        (_, None) => Event::Queried,
    };
    let outcome = if status.is_success() && status.as_u16() != 202 {
        Outcome::Success
    } else if status.as_u16() == 202 || status.is_client_error() {
        Outcome::MinorFailure
    } else {
        Outcome::SeriousFailure
    };
    let mut record = by(req, event).outcome(outcome);
    if let Some(subjects) = response
        .response()
        .extensions()
        .get::<crate::audit::Subjects>()
    {
        record = record.studies(subjects.studies.iter().cloned());
    }
    if let Some(study) = study {
        if event == Event::Retrieved
            && outcome == Outcome::Success
            && !state.recent_retrieves.first(record.actor.name(), &study)
        {
            return Ok(response);
        }
        record = record.studies([study]);
    }
    let detail = match req.query_string() {
        "" => path.to_owned(),
        q => format!("{path}?{q}"),
    };
    state.auditor.record(record.detail(detail));
    Ok(response)
}

/// The study a request is about: from the path, or WADO-URI's studyUID.
pub(super) fn study_of(req: &HttpRequest) -> Option<String> {
    if req.path().starts_with("/wado") {
        return web::Query::<HashMap<String, String>>::from_query(req.query_string())
            .ok()
            .and_then(|q| q.get("studyUID").cloned());
    }
    let mut segments = req.path().split('/').skip_while(|s| *s != "studies");
    segments.next()?;
    segments.next().filter(|s| !s.is_empty()).map(str::to_owned)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    patient: Option<String>,
    user: Option<String>,
    event: Option<String>,
    /// Unix seconds.
    since: Option<i64>,
    until: Option<i64>,
    limit: Option<i64>,
    offset: Option<i64>,
}

const MAX_LIMIT: i64 = 1000;

/// `GET /api/v1/audit`: the trail, newest first, for auditors.
async fn list(
    state: web::Data<AppState>,
    query: Result<web::Query<ListQuery>, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let q = parsed(query)?;
    if let Some(event) = &q.event {
        if Event::parse(event).is_none() {
            let known: Vec<&str> = Event::ALL.iter().map(|e| e.slug()).collect();
            return Err(ApiError::BadRequest(format!(
                "unknown event {event:?} ({})",
                known.join(", ")
            )));
        }
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) || q.offset.is_some_and(|o| o < 0) {
        return Err(ApiError::BadRequest(format!(
            "limit is 1 to {MAX_LIMIT} and offset not negative"
        )));
    }
    let micros = |secs: i64| secs.saturating_mul(1_000_000);
    let filter = AuditFilter {
        patient: q.patient,
        user: q.user,
        event: q.event,
        since: q.since.map(micros),
        until: q.until.map(micros),
        limit,
        offset: q.offset.unwrap_or(0),
    };
    let rows = state
        .index
        .audit_rows(&filter)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let records: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|r| {
            serde_json::json!({
                "id": r.id,
                "node": r.node,
                "seq": r.seq,
                "at": crate::audit::atna::date_time(r.at),
                "event": r.event,
                "outcome": r.outcome,
                "user": r.user,
                "address": r.address,
                "patients": serde_json::from_str::<serde_json::Value>(&r.patients).unwrap_or_default(),
                "studies": serde_json::from_str::<serde_json::Value>(&r.studies).unwrap_or_default(),
                "message": r.message,
                "hash": r.hash,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "records": records })))
}
