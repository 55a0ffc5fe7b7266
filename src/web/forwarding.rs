//! `/api/v1/forwarding`: the store-and-forward queue and its dead letters.

use actix_web::{web, HttpResponse};

use super::AppState;

pub async fn forwarding(state: web::Data<AppState>) -> HttpResponse {
    let stats = state.index.forwarding_stats().await;
    let dead = state.index.dead_letters(100).await;
    match (stats, dead) {
        (Ok(stats), Ok(dead)) => HttpResponse::Ok().json(serde_json::json!({
            "pending": stats.pending,
            "committing": stats.committing,
            "done": stats.done,
            "dead": stats.dead,
            "dead_letters": dead,
        })),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "forwarding query failed");
            HttpResponse::ServiceUnavailable()
                .json(serde_json::json!({"error": "index unavailable"}))
        }
    }
}
