//! Probes and status: `/healthz` (process alive), `/readyz` (index
//! reachable), `/metrics` (Prometheus) and `/api/v1/stats` (JSON).

use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::AppState;
use crate::index::IndexStats;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.index.ping().await {
        HttpResponse::Ok().json(serde_json::json!({"status": "ready"}))
    } else {
        HttpResponse::ServiceUnavailable().json(serde_json::json!({"status": "index unavailable"}))
    }
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.encode())
}

#[derive(Serialize)]
struct Stats {
    #[serde(flatten)]
    index: IndexStats,
    storage: String,
    /// Acknowledged objects still only in the ingest journal (and memory).
    awaiting_placement: usize,
    uptime_seconds: u64,
    version: &'static str,
}

pub async fn stats(state: web::Data<AppState>) -> HttpResponse {
    match state.index.stats().await {
        Ok(index) => HttpResponse::Ok().json(Stats {
            index,
            storage: state.storage.describe(),
            awaiting_placement: state.storage.awaiting_placement(),
            uptime_seconds: state.started.elapsed().as_secs(),
            version: env!("CARGO_PKG_VERSION"),
        }),
        Err(e) => {
            tracing::error!(error = %e, "stats query failed");
            HttpResponse::ServiceUnavailable()
                .json(serde_json::json!({"error": "index unavailable"}))
        }
    }
}
