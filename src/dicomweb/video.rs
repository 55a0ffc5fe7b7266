//! `/rendered` of an MPEG-4 AVC (H.264) instance: an MP4 file (PS3.18
//! 8.7.4 lists `video/mp4` for video), built by [`crate::video`] from the
//! stored stream, with single byte ranges so a `<video>` element can seek.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use dicom_core::Tag;
use dicom_object::DefaultDicomObject;

use super::accept::ranges;
use super::retrieve::byte_range;
use super::DicomWebError;
use crate::index::ScopedInstance;
use crate::transcode;
use crate::video::{self, Timing};
use crate::web::AppState;

const FRAME_TIME: Tag = Tag(0x0018, 0x1063);
const CINE_RATE: Tag = Tag(0x0018, 0x0040);
const RECOMMENDED_RATE: Tag = Tag(0x0008, 0x2144);
const ROWS: Tag = Tag(0x0028, 0x0010);
const COLUMNS: Tag = Tag(0x0028, 0x0011);

/// Whether `item` is a video this client takes as MP4: an H.264 instance,
/// and an Accept header that allows `video/mp4` (or none).
pub(super) fn wanted(req: &HttpRequest, item: &ScopedInstance) -> bool {
    video::is_avc(&item.transfer_syntax_uid) && {
        let accepted = ranges(req);
        accepted.is_empty()
            || accepted
                .iter()
                .any(|r| matches!(r.mime.as_str(), "video/mp4" | "video/*" | "*/*"))
    }
}

pub(super) async fn respond(
    req: &HttpRequest,
    state: &AppState,
    item: &ScopedInstance,
) -> Result<HttpResponse, DicomWebError> {
    let object = transcode::load(&state.storage, &item.key, transcode::Admission::Now).await?;
    let permit = transcode::cpu_permit(transcode::Admission::Now).await?;
    let mp4 = tokio::task::spawn_blocking(move || {
        let made = rewrap(&object);
        drop(permit);
        made
    })
    .await
    .map_err(|e| DicomWebError::Internal(e.to_string()))??;
    let mp4 = bytes::Bytes::from(mp4);
    let length = mp4.len() as u64;
    let (status, body, range) = match byte_range(req, length)? {
        Some((start, end)) => (
            actix_web::http::StatusCode::PARTIAL_CONTENT,
            mp4.slice(start as usize..end as usize),
            Some(format!("bytes {start}-{}/{length}", end - 1)),
        ),
        None => (actix_web::http::StatusCode::OK, mp4, None),
    };
    let mut response = HttpResponse::build(status);
    response
        .content_type("video/mp4")
        .insert_header((header::ACCEPT_RANGES, "bytes"));
    if let Some(range) = range {
        response.insert_header((header::CONTENT_RANGE, range));
    }
    Ok(response.body(body))
}

/// The stream of the pixel data's fragments, joined (PS3.5 A.4.5: a
/// stream may be split across fragments), as MP4.
fn rewrap(object: &DefaultDicomObject) -> Result<Vec<u8>, DicomWebError> {
    let fragments = object
        .element(dicom_dictionary_std::tags::PIXEL_DATA)
        .ok()
        .and_then(|e| e.value().fragments())
        .ok_or_else(|| {
            DicomWebError::BadRequest("the video has no encapsulated pixel data".into())
        })?;
    let stream: Vec<u8> = fragments.concat();
    let number = |tag: Tag| {
        object
            .element(tag)
            .ok()
            .and_then(|e| e.to_str().ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v > 0.0)
    };
    let frame_ms = number(FRAME_TIME)
        .or_else(|| number(CINE_RATE).map(|rate| 1000.0 / rate))
        .or_else(|| number(RECOMMENDED_RATE).map(|rate| 1000.0 / rate))
        .unwrap_or(1000.0 / 30.0);
    let size = |tag: Tag| number(tag).map_or(0, |v| v.min(f64::from(u16::MAX)) as u16);
    let timing = Timing {
        frame_ms,
        width: size(COLUMNS),
        height: size(ROWS),
    };
    video::to_mp4(&stream, timing).map_err(|e| DicomWebError::Internal(e.to_string()))
}
