//! DICOMweb (PS3.18) under `/dicom-web`, and WADO-URI at `/wado`.
//!
//! - [`qido`]: searches, through the same [`crate::query`] model and SQL as
//!   C-FIND, so both protocols match identically.
//! - [`retrieve`]: instances as `multipart/related` streamed from storage,
//!   bulk data (with Range), and single frames read by byte range.
//! - [`metadata`]: the DICOM JSON documents built at ingest, concatenated.
//! - [`render`]: rendered images and thumbnails (JPEG/PNG) via dicom-pixeldata;
//!   [`video`]: an H.264 instance rendered as MP4, with byte ranges.
//! - [`stow`]: STOW-RS through the same ingest path as C-STORE, so a
//!   success status means the same durability.
//! - [`wado_uri`]: the PS3.18 chapter 9 single-instance URI service.
//! - [`archive`]: a study as one ZIP file, streamed, for download.
//!
//! [`accept`] negotiates media types and transfer syntaxes; [`error`] shapes
//! every failure as a status code with a readable message.

mod accept;
mod archive;
mod error;
mod json;
mod metadata;
mod multipart;
mod qido;
mod render;
mod retrieve;
mod stow;
mod stow_limits;
mod video;
mod wado_uri;

/// Parsers that request bytes reach, for fuzzing and corpus replay.
pub mod fuzz {
    pub use super::qido::fuzz_query_string as query_string;
    pub use super::stow::fuzz_body as stow_body;
}

use actix_web::{web, HttpRequest};

use crate::index::Scope;

pub use archive::archive_routes;
pub use error::DicomWebError;

/// Mount the DICOMweb routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let studies = "/studies/{study}";
    let series = "/studies/{study}/series/{series}";
    let instance = "/studies/{study}/series/{series}/instances/{instance}";
    cfg.route("/studies", web::get().to(qido::studies))
        .route("/studies", web::post().to(stow::store))
        .route("/series", web::get().to(qido::series))
        .route("/instances", web::get().to(qido::instances))
        .route(studies, web::get().to(retrieve::study))
        .route(studies, web::post().to(stow::store_in_study))
        .route(
            &format!("{studies}/metadata"),
            web::get().to(metadata::study),
        )
        .route(
            &format!("{studies}/rendered"),
            web::get().to(render::study_rendered),
        )
        .route(
            &format!("{studies}/thumbnail"),
            web::get().to(render::study_thumbnail),
        )
        .route(
            &format!("{studies}/series"),
            web::get().to(qido::series_in_study),
        )
        .route(
            &format!("{studies}/instances"),
            web::get().to(qido::instances_in_study),
        )
        .route(series, web::get().to(retrieve::series))
        .route(
            &format!("{series}/metadata"),
            web::get().to(metadata::series),
        )
        .route(
            &format!("{series}/rendered"),
            web::get().to(render::series_rendered),
        )
        .route(
            &format!("{series}/thumbnail"),
            web::get().to(render::series_thumbnail),
        )
        .route(
            &format!("{series}/instances"),
            web::get().to(qido::instances_in_series),
        )
        .route(instance, web::get().to(retrieve::instance))
        .route(
            &format!("{instance}/metadata"),
            web::get().to(metadata::instance),
        )
        .route(
            &format!("{instance}/rendered"),
            web::get().to(render::instance_rendered),
        )
        .route(
            &format!("{instance}/thumbnail"),
            web::get().to(render::instance_thumbnail),
        )
        .route(
            &format!("{instance}/frames/{{frames}}"),
            web::get().to(retrieve::frames),
        )
        .route(
            &format!("{instance}/frames/{{frames}}/rendered"),
            web::get().to(render::frames_rendered),
        )
        .route(
            &format!("{instance}/frames/{{frames}}/thumbnail"),
            web::get().to(render::frames_thumbnail),
        )
        .route(
            &format!("{instance}/bulk/{{path:.*}}"),
            web::get().to(retrieve::bulk),
        );
}

/// Mount WADO-URI (inside the `/wado` scope).
pub fn wado_uri_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("", web::get().to(wado_uri::wado));
}

/// The DICOMweb root for RetrieveURL and BulkDataURI values: the
/// configured public URL, else as this client reached us (Host header).
fn base_url(req: &HttpRequest) -> String {
    let configured = req
        .app_data::<web::Data<crate::web::AppState>>()
        .and_then(|s| s.dicomweb.public_url.clone());
    if let Some(url) = configured {
        return url;
    }
    let info = req.connection_info();
    format!("{}://{}/dicom-web", info.scheme(), info.host())
}

/// A UID from the path, checked before it reaches the index.
fn path_uid(value: &str) -> Result<String, DicomWebError> {
    if !value.is_empty()
        && value.len() <= 64
        && value.chars().all(|c| c.is_ascii_digit() || c == '.')
    {
        Ok(value.to_owned())
    } else {
        Err(DicomWebError::BadRequest(format!(
            "{value:?} is not a valid UID"
        )))
    }
}

/// The study named by a path.
fn study_scope(study: &str) -> Result<Scope, DicomWebError> {
    Ok(Scope {
        study: path_uid(study)?,
        series: None,
        instance: None,
    })
}

/// The series named by a path.
fn series_scope((study, series): (String, String)) -> Result<Scope, DicomWebError> {
    Ok(Scope {
        study: path_uid(&study)?,
        series: Some(path_uid(&series)?),
        instance: None,
    })
}

/// The instance named by a path.
fn instance_scope(
    (study, series, instance): (String, String, String),
) -> Result<Scope, DicomWebError> {
    Ok(Scope {
        study: path_uid(&study)?,
        series: Some(path_uid(&series)?),
        instance: Some(path_uid(&instance)?),
    })
}
