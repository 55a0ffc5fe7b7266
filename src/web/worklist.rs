//! `/api/v1/worklist`: the modality worklist for a site without a RIS (and
//! a view of what the RIS scheduled): list, create and change the status
//! of scheduled procedure steps, with the rules HL7 orders follow; and the
//! orders cancelled after their images; `/api/v1/mpps`: the performed
//! procedure steps modalities reported.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::error::ApiError;
use super::AppState;
use crate::index::hl7::{Change, Outcome, Refusal};
use crate::index::patients::{Demographics, PatientChange, PatientKey};
use crate::index::worklist::{ScheduledStep, StepStatus, WorklistChange, WorklistFilter};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/worklist", web::get().to(list))
        .route("/worklist", web::post().to(create))
        .route("/worklist/conflicts", web::get().to(conflicts))
        .route("/worklist/{id}/status", web::post().to(set_status))
        .route("/mpps", web::get().to(performed));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    modality: Option<String>,
    station: Option<String>,
    from: Option<String>,
    to: Option<String>,
    status: Option<StepStatus>,
    patient: Option<String>,
    accession: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

async fn list(
    state: web::Data<AppState>,
    query: Result<web::Query<ListQuery>, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let q = super::error::parsed(query)?;
    for date in [&q.from, &q.to].into_iter().flatten() {
        check_date(date)?;
    }
    let filter = WorklistFilter {
        modality: q.modality,
        station: q.station,
        from: q.from,
        to: q.to,
        from_time: None,
        to_time: None,
        status: q.status,
        patient_id: q.patient,
        accession_number: q.accession,
        patient_name: None,
        step_id: None,
        performing_physician: None,
        limit: q.limit.unwrap_or(100).clamp(1, 1000),
        offset: q.offset.unwrap_or(0).max(0),
    };
    let items = state
        .index
        .worklist(&filter)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPatient {
    id: String,
    name: Option<String>,
    birth_date: Option<String>,
    sex: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewItem {
    patient: NewPatient,
    step: ScheduledStep,
}

async fn create(
    state: web::Data<AppState>,
    body: web::Json<NewItem>,
) -> Result<HttpResponse, ApiError> {
    let NewItem { patient, mut step } = body.into_inner();
    if patient.id.trim().is_empty() || patient.id.len() > 64 {
        return Err(ApiError::BadRequest(
            "patient.id must be 1 to 64 characters".into(),
        ));
    }
    if step.accession_number.len() > 16 || step.modality.len() > 16 {
        return Err(ApiError::BadRequest(
            "accession_number and modality are at most 16 characters".into(),
        ));
    }
    check_date(&step.start_date)?;
    if let Some(d) = &patient.birth_date {
        check_date(d)?;
    }
    if !step.start_time.chars().all(|c| c.is_ascii_digit()) || step.start_time.len() > 6 {
        return Err(ApiError::BadRequest(format!(
            "start_time {:?} is not HHMMSS",
            step.start_time
        )));
    }
    if let Some(sex) = &patient.sex {
        if !["M", "F", "O", ""].contains(&sex.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "sex {sex:?} is not M, F or O"
            )));
        }
    }
    if step.placer_order.is_empty() && step.filler_order.is_empty() {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        step.placer_order = format!("TESSERA-{micros}");
    }
    if step.study_instance_uid.is_empty() {
        step.study_instance_uid = crate::model::derived_uid(&[
            &step.placer_order,
            &step.filler_order,
            &step.accession_number,
            &step.requested_procedure_id,
        ]);
    }
    let key = PatientKey {
        id: patient.id,
        issuer: String::new(),
    };
    let changes = [
        Change::Patient(PatientChange::Update {
            key: key.clone(),
            demographics: Demographics {
                name: patient.name,
                birth_date: patient.birth_date,
                sex: patient.sex,
                ..Default::default()
            },
        }),
        Change::Worklist(WorklistChange::Schedule {
            patient: key,
            step: Box::new(step.clone()),
            status: StepStatus::Scheduled,
        }),
    ];
    let outcome = state
        .index
        .apply_changes(&changes)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    match outcome {
        Outcome::Applied => Ok(HttpResponse::Created().json(serde_json::json!({
            "placer_order": step.placer_order,
            "filler_order": step.filler_order,
            "study_instance_uid": step.study_instance_uid,
        }))),
        Outcome::Refused(Refusal::Error(e) | Refusal::Reject(e)) => Err(ApiError::BadRequest(e)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewStatus {
    status: StepStatus,
}

async fn set_status(
    state: web::Data<AppState>,
    id: web::Path<i64>,
    body: web::Json<NewStatus>,
) -> Result<HttpResponse, ApiError> {
    let unavailable = |e: crate::index::IndexError| ApiError::Unavailable(e.to_string());
    let Some((placer_order, filler_order)) =
        state.index.worklist_order(*id).await.map_err(unavailable)?
    else {
        return Ok(HttpResponse::NotFound()
            .json(serde_json::json!({"error": format!("no worklist item {id}")})));
    };
    let change = Change::Worklist(WorklistChange::SetStatus {
        placer_order,
        filler_order,
        status: body.status,
    });
    match state
        .index
        .apply_changes(&[change])
        .await
        .map_err(unavailable)?
    {
        Outcome::Applied => Ok(HttpResponse::NoContent().finish()),
        // A cancel after images: kept as a conflict, answered as one.
        Outcome::Refused(Refusal::Error(e) | Refusal::Reject(e)) => {
            Ok(HttpResponse::Conflict().json(serde_json::json!({ "error": e })))
        }
    }
}

async fn conflicts(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let rows = state
        .index
        .worklist_conflicts(200)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "conflicts": rows })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PerformedQuery {
    study: Option<String>,
    limit: Option<i64>,
}

/// Performed procedure steps (MPPS), newest first.
async fn performed(
    state: web::Data<AppState>,
    query: Result<web::Query<PerformedQuery>, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let q = super::error::parsed(query)?;
    let steps = state
        .index
        .performed_steps(q.study.as_deref(), q.limit.unwrap_or(100).clamp(1, 1000))
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "performed_steps": steps })))
}

/// A DICOM DA: YYYYMMDD with a real month and day, or empty.
fn check_date(value: &str) -> Result<(), ApiError> {
    let ok = value.is_empty()
        || (value.len() == 8
            && value.chars().all(|c| c.is_ascii_digit())
            && crate::model::valid_date(value));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "{value:?} is not a date (YYYYMMDD)"
        )))
    }
}
