//! A whole study as one ZIP file, for the study browser's download button:
//! `GET /api/v1/studies/{study}/archive`, with `?transfer=uncompressed` for
//! sites whose tools cannot read JPEG or JPEG 2000 pixel data.
//!
//! The archive is written while it is sent: entries are stored, not
//! deflated (pixel data barely shrinks and the CPU is better spent
//! elsewhere), with data descriptors so no size is needed up front, and in
//! ZIP64 once past 4 GiB. Memory stays at one read buffer, unless an object
//! is converted, which is done one object at a time as WADO-RS does.
//! Each file is `STUDY/SERIES/SOP.dcm` by UID: unique, and free of the
//! patient's name.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use async_zip::tokio::write::ZipFileWriter;
use async_zip::{Compression, ZipEntryBuilder};
use futures::{AsyncWriteExt, TryStreamExt};
use serde::Deserialize;
use tokio::io::DuplexStream;
use tokio_util::io::ReaderStream;

use super::retrieve::prepared;
use super::{study_scope, DicomWebError};
use crate::index::ScopedInstance;
use crate::storage::Storage;
use crate::transcode::{self, EXPLICIT_VR_LITTLE_ENDIAN};
use crate::web::AppState;

/// How much of the archive may wait in memory for a slow client.
const PIPE_BYTES: usize = 1 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveQuery {
    /// `stored` (the default) or `uncompressed`.
    transfer: Option<String>,
}

/// Mount the archive route (inside its own scope).
pub fn archive_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("", web::get().to(study_archive));
}

async fn study_archive(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: Result<web::Query<ArchiveQuery>, actix_web::Error>,
) -> Result<HttpResponse, DicomWebError> {
    let query = query.map_err(|e| DicomWebError::BadRequest(e.to_string()))?;
    let uncompressed = match query.transfer.as_deref() {
        None | Some("stored") => false,
        Some("uncompressed") => true,
        Some(other) => {
            return Err(DicomWebError::BadRequest(format!(
                "transfer must be stored or uncompressed, not {other:?}"
            )))
        }
    };
    let study = req.match_info().get("study").unwrap_or_default();
    let scope = study_scope(study)?;
    let items = super::retrieve::instances_of(&state, &scope).await?;
    let (pipe, body) = tokio::io::duplex(PIPE_BYTES);
    let storage = state.storage.clone();
    let study = scope.study.clone();
    tokio::spawn(async move {
        if let Err(reason) = write_archive(pipe, &storage, &study, items, uncompressed).await {
            // The client sees a truncated ZIP, which every unzip tool
            // reports as damaged, rather than a complete-looking one.
            tracing::warn!(%study, %reason, "study archive stopped");
        }
    });
    let name = format!("attachment; filename=\"{}.zip\"", scope.study);
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/zip"))
        .insert_header((header::CONTENT_DISPOSITION, name))
        .streaming(ReaderStream::with_capacity(body, 256 * 1024)))
}

async fn write_archive(
    pipe: DuplexStream,
    storage: &Storage,
    study: &str,
    items: Vec<ScopedInstance>,
    uncompressed: bool,
) -> Result<(), String> {
    let mut zip = ZipFileWriter::with_tokio(pipe);
    for item in items {
        let name = format!(
            "{study}/{}/{}.dcm",
            item.series_instance_uid, item.sop_instance_uid
        );
        let entry = ZipEntryBuilder::new(name.into(), Compression::Stored)
            .unix_permissions(0o644)
            .build();
        let mut writer = zip
            .write_entry_stream(entry)
            .await
            .map_err(|e| e.to_string())?;
        let converted = prepared(storage, &item, target(&item, uncompressed))
            .await
            .map_err(|e| format!("{}: {e}", item.sop_instance_uid))?;
        match converted {
            Some(bytes) => writer.write_all(&bytes).await.map_err(|e| e.to_string())?,
            None => {
                let reader = storage
                    .open_read(&item.key)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut chunks = ReaderStream::with_capacity(reader, 256 * 1024);
                while let Some(chunk) = chunks.try_next().await.map_err(|e| e.to_string())? {
                    writer.write_all(&chunk).await.map_err(|e| e.to_string())?;
                }
            }
        }
        writer.close().await.map_err(|e| e.to_string())?;
    }
    zip.close().await.map_err(|e| e.to_string())?;
    Ok(())
}

/// The syntax an object goes into the archive in.
fn target(item: &ScopedInstance, uncompressed: bool) -> &str {
    if uncompressed && !transcode::TARGETS.contains(&item.transfer_syntax_uid.as_str()) {
        EXPLICIT_VR_LITTLE_ENDIAN
    } else {
        &item.transfer_syntax_uid
    }
}
