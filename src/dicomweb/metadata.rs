//! WADO-RS metadata (PS3.18 10.4.1.1.2) at study, series and instance
//! level: the documents built at ingest, joined into one JSON array in a
//! single index read. Instances without a document get one built from the
//! stored object, which is then saved. Documents of objects stored before
//! the RIS changed their patient are read one by one and given the patient
//! as it is now ([`crate::coerce`]).

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use super::{base_url, instance_scope, series_scope, study_scope, DicomWebError};
use crate::index::{Scope, ScopedInstance};
use crate::ingest::document::{rebuild, BULK_BASE};
use crate::web::AppState;

pub async fn study(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, DicomWebError> {
    respond(&req, &state, study_scope(&path)?).await
}

pub async fn series(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, DicomWebError> {
    respond(&req, &state, series_scope(path.into_inner())?).await
}

pub async fn instance(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, DicomWebError> {
    respond(&req, &state, instance_scope(path.into_inner())?).await
}

async fn respond(
    req: &HttpRequest,
    state: &AppState,
    scope: Scope,
) -> Result<HttpResponse, DicomWebError> {
    let accepts_json = super::accept::ranges(req).iter().any(|r| {
        matches!(
            r.mime.as_str(),
            "*/*" | "application/*" | "application/dicom+json" | "application/json"
        ) || (r.mime == "multipart/related" && r.payload_matches("application/dicom+xml"))
    });
    if !accepts_json {
        return Err(DicomWebError::NotAcceptable(
            "metadata is available as application/dicom+json".into(),
        ));
    }
    let version = state
        .index
        .scope_version(&scope)
        .await?
        .ok_or_else(|| DicomWebError::NotFound(not_found(&scope)))?;
    let etag = format!("\"{version}\"");
    let unchanged = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == etag)
        });
    if unchanged {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .finish());
    }
    let joined = state.index.joined_documents(&scope).await?;
    if joined.instances == 0 {
        return Err(DicomWebError::NotFound(not_found(&scope)));
    }
    let body = match joined.joined {
        Some(documents) if joined.documented == joined.instances && !joined.coerced => {
            format!("[{documents}]")
        }
        _ => {
            let documents = collect_documents(state, &scope).await?;
            format!("[{}]", documents.join(","))
        }
    };
    let body = body.replace(BULK_BASE, &base_url(req));
    Ok(HttpResponse::Ok()
        .content_type("application/dicom+json")
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body))
}

fn not_found(scope: &Scope) -> String {
    match (&scope.series, &scope.instance) {
        (_, Some(i)) => format!("instance {i} is not in this archive"),
        (Some(s), None) => format!("series {s} is not in this archive"),
        _ => format!("study {} is not in this archive", scope.study),
    }
}

async fn collect_documents(state: &AppState, scope: &Scope) -> Result<Vec<String>, DicomWebError> {
    use futures::TryStreamExt;
    let rows: Vec<ScopedInstance> = state
        .index
        .scoped_instances(scope, true)
        .try_collect()
        .await?;
    let mut documents = Vec::with_capacity(rows.len());
    for row in rows {
        let document = match &row.metadata {
            Some(doc) => doc.clone(),
            None => build_missing(state, &row).await?,
        };
        documents.push(match &row.coerce {
            Some(patient) => coerced(&document, patient),
            None => document,
        });
    }
    Ok(documents)
}

/// `document` with the patient as the RIS last sent it.
fn coerced(document: &str, patient: &crate::model::PatientMeta) -> String {
    match serde_json::from_str::<serde_json::Value>(document) {
        Ok(mut doc) => {
            crate::coerce::apply_json(&mut doc, patient);
            doc.to_string()
        }
        Err(_) => document.to_owned(),
    }
}

/// Build, save and return the document of an instance stored without one.
async fn build_missing(state: &AppState, row: &ScopedInstance) -> Result<String, DicomWebError> {
    let document = rebuild(&state.storage, &row.key).await.map_err(|e| {
        DicomWebError::Internal(format!(
            "cannot build metadata of {}: {e}",
            row.sop_instance_uid
        ))
    })?;
    if let Err(e) = state
        .index
        .save_document(&row.sop_instance_uid, &document)
        .await
    {
        tracing::warn!(error = %e, "could not save a rebuilt metadata document");
    }
    Ok(document)
}
