//! A referring physician sees only studies that name them or were shared
//! with them. Searches are narrowed in QIDO itself; this middleware guards every request on
//! `/dicom-web` and `/wado` that names a study, answering 404 for a study
//! that is not theirs, as for one that does not exist.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse};

use super::AppState;
use crate::auth::Principal;
use crate::index::shares::StudyVisibility;
use crate::model::fold_for_matching;

pub async fn own_studies_only(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let referrer = req.extensions().get::<Principal>().and_then(|p| {
        p.only_referred_by()
            .map(|name| (fold_for_matching(name), p.user.clone()))
    });
    let (Some((physician, user)), Some(state)) = (referrer, req.app_data::<web::Data<AppState>>())
    else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let Some(study) = super::audit::study_of(req.request()) else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let theirs = match state
        .index
        .study_visibility(&study, &physician, &user)
        .await
    {
        Ok(seen) => seen == StudyVisibility::Visible,
        Err(e) => {
            tracing::error!(error = %e, "cannot read who may see a study");
            let rsp = HttpResponse::ServiceUnavailable()
                .json(serde_json::json!({"error": "index unavailable"}));
            return Ok(req.into_response(rsp));
        }
    };
    if !theirs {
        let rsp = HttpResponse::NotFound()
            .json(serde_json::json!({"error": format!("no study {study}")}));
        return Ok(req.into_response(rsp));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}
