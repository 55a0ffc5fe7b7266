//! `/api/v1/studies/{uid}/reports` and `/status`: the reports the RIS sent
//! for a study (ORU^R01) and where the study stands (scheduled, arrived,
//! performed, reported, final).

use actix_web::{web, HttpResponse};

use super::error::ApiError;
use super::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/studies/{uid}/reports", web::get().to(reports))
        .route("/studies/{uid}/status", web::get().to(status));
}

/// The reports of a study (ORU^R01), oldest first.
async fn reports(
    state: web::Data<AppState>,
    uid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let reports = state
        .index
        .study_reports(&uid)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "reports": reports })))
}

/// scheduled, arrived, performed, reported or final; 404 when the study
/// is not known at all.
async fn status(
    state: web::Data<AppState>,
    uid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    match state
        .index
        .study_status(&uid)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
    {
        Some(status) => Ok(HttpResponse::Ok()
            .json(serde_json::json!({ "study_instance_uid": *uid, "status": status }))),
        None => {
            Ok(HttpResponse::NotFound()
                .json(serde_json::json!({"error": format!("no study {uid}")})))
        }
    }
}
