//! WADO-RS retrieve (PS3.18 10.4): instances of a study, series or single
//! instance as `multipart/related; type="application/dicom"`, frames, and
//! bulk data.
//!
//! Objects go out as stored, streamed chunk by chunk, unless the client
//! asks for another transfer syntax; then each is converted alone. Frames
//! are read by byte range from the locations found at ingest, so one tile
//! of a whole-slide image costs one small read.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures::TryStreamExt;
use tokio_util::io::ReaderStream;

use super::accept::{bitstream_media_type, dicom_syntax, ranges, DicomSyntax};
use super::multipart::{self, Disconnected, PartSender};
use super::{instance_scope, series_scope, study_scope, DicomWebError};
use crate::index::{FrameLocation, Scope, ScopedInstance};
use crate::ingest::document::valid_bulk_path;
use crate::storage::Storage;
use crate::transcode::{self, EXPLICIT_VR_LITTLE_ENDIAN};
use crate::web::AppState;

pub async fn study(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, DicomWebError> {
    send_instances(&req, &state, study_scope(&path)?).await
}

pub async fn series(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, DicomWebError> {
    send_instances(&req, &state, series_scope(path.into_inner())?).await
}

pub async fn instance(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, DicomWebError> {
    send_instances(&req, &state, instance_scope(path.into_inner())?).await
}

/// The instances of a scope, in order; a 404 when there are none.
pub(super) async fn instances_of(
    state: &AppState,
    scope: &Scope,
) -> Result<Vec<ScopedInstance>, DicomWebError> {
    let items: Vec<ScopedInstance> = state
        .index
        .scoped_instances(scope, false)
        .try_collect()
        .await?;
    if items.is_empty() {
        return Err(DicomWebError::NotFound(format!(
            "no instances in {}",
            scope
                .instance
                .as_ref()
                .or(scope.series.as_ref())
                .unwrap_or(&scope.study)
        )));
    }
    Ok(items)
}

async fn send_instances(
    req: &HttpRequest,
    state: &AppState,
    scope: Scope,
) -> Result<HttpResponse, DicomWebError> {
    let syntax = dicom_syntax(req)?;
    if let DicomSyntax::Target(ts) = &syntax {
        if !transcode::TARGETS.contains(&ts.as_str()) {
            // Only conversions to native syntaxes are offered; an object
            // already in the asked syntax still goes out below.
            let items = instances_of(state, &scope).await?;
            if items.iter().any(|i| i.transfer_syntax_uid != *ts) {
                return Err(DicomWebError::NotAcceptable(format!(
                    "cannot convert to transfer syntax {ts}; ask for transfer-syntax=* to receive objects as stored"
                )));
            }
        }
    }
    let items = instances_of(state, &scope).await?;
    let (response, parts) = multipart::response("application/dicom");
    let storage = state.storage.clone();
    tokio::spawn(async move {
        let mut parts = parts;
        for item in items {
            match send_one(&mut parts, &storage, &item, &syntax).await {
                Ok(()) => {}
                Err(SendError::Disconnected) => return,
                Err(SendError::Failed(reason)) => {
                    tracing::warn!(sop = %item.sop_instance_uid, %reason, "WADO-RS retrieve stopped");
                    parts.fail(reason).await;
                    return;
                }
            }
        }
        parts.finish().await;
    });
    Ok(response)
}

enum SendError {
    Disconnected,
    Failed(String),
}

impl From<Disconnected> for SendError {
    fn from(_: Disconnected) -> Self {
        SendError::Disconnected
    }
}

async fn send_one(
    parts: &mut PartSender,
    storage: &Storage,
    item: &ScopedInstance,
    syntax: &DicomSyntax,
) -> Result<(), SendError> {
    let target = syntax.for_stored(&item.transfer_syntax_uid);
    let content_type = format!("application/dicom; transfer-syntax={target}");
    match prepared(storage, item, target)
        .await
        .map_err(|e| SendError::Failed(e.to_string()))?
    {
        Some(bytes) => {
            parts.begin_part(&content_type, None).await?;
            parts.send(Bytes::from(bytes)).await?;
        }
        None => {
            let reader = storage
                .open_read(&item.key)
                .await
                .map_err(|e| SendError::Failed(e.to_string()))?;
            parts.begin_part(&content_type, None).await?;
            let mut chunks = ReaderStream::with_capacity(reader, 256 * 1024);
            while let Some(chunk) = chunks
                .try_next()
                .await
                .map_err(|e| SendError::Failed(e.to_string()))?
            {
                parts.send(chunk).await?;
            }
        }
    }
    Ok(())
}

/// A stored object converted to `target`, or given the patient as it is
/// now ([`crate::coerce`]); `None` when it goes out as stored. An object too
/// large to hold goes as stored when that is what was asked. Inside a
/// response already under way, so it waits for a core.
pub(super) async fn prepared(
    storage: &Storage,
    item: &ScopedInstance,
    target: &str,
) -> Result<Option<Vec<u8>>, transcode::TranscodeError> {
    let as_stored = target == item.transfer_syntax_uid;
    if as_stored && item.coerce.is_none() {
        return Ok(None);
    }
    match transcode::part10_in(
        storage,
        &item.key,
        target,
        item.coerce.as_ref(),
        transcode::Admission::Wait,
    )
    .await
    {
        Ok(bytes) => Ok(Some(bytes)),
        Err(transcode::TranscodeError::TooLarge(size)) if as_stored => {
            tracing::warn!(sop_instance = %item.sop_instance_uid, size, "too large to give its current patient; sent as stored");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// How the client wants frames.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FrameSyntax {
    /// As stored: the compressed bitstream, or raw bytes when native.
    AsStored,
    /// Uncompressed bytes.
    Uncompressed,
}

/// How the client wants frames, and the media type of their parts: that of
/// the first acceptable range in the client's order of preference.
fn frame_syntax(
    req: &HttpRequest,
    stored_ts: &str,
) -> Result<(FrameSyntax, &'static str), DicomWebError> {
    const OCTETS: &str = "application/octet-stream";
    let native = !is_encapsulated(stored_ts);
    let stored_type = bitstream_media_type(stored_ts);
    for range in ranges(req) {
        let wildcard_ts = range.transfer_syntax.as_deref() == Some("*");
        let exact_ts = range.transfer_syntax.as_deref() == Some(stored_ts);
        if range.payload_matches(OCTETS) && range.payload() != "*/*" {
            if native || wildcard_ts || exact_ts {
                return Ok((FrameSyntax::AsStored, OCTETS));
            }
            return Ok((FrameSyntax::Uncompressed, OCTETS));
        }
        if !native && range.payload() != "*/*" && range.payload_matches(stored_type) {
            if range.transfer_syntax.is_none() || wildcard_ts || exact_ts {
                return Ok((FrameSyntax::AsStored, stored_type));
            }
            continue;
        }
        if range.payload() == "*/*" {
            return Ok(if native {
                (FrameSyntax::AsStored, OCTETS)
            } else if wildcard_ts || exact_ts {
                (FrameSyntax::AsStored, stored_type)
            } else {
                (FrameSyntax::Uncompressed, OCTETS)
            });
        }
    }
    Err(DicomWebError::NotAcceptable(format!(
        "frames of this instance are available as application/octet-stream or {stored_type}"
    )))
}

fn is_encapsulated(ts: &str) -> bool {
    !matches!(
        ts,
        "1.2.840.10008.1.2"
            | "1.2.840.10008.1.2.1"
            | "1.2.840.10008.1.2.2"
            | "1.2.840.10008.1.2.1.99"
    )
}

/// More frame numbers than any instance has frames.
const MAX_FRAME_LIST: usize = 1 << 16;

/// `1,3,5` → distinct frame numbers, 1-based, in the order first asked for.
/// Repeats are dropped, so `1,1,1,…` costs one frame; with every number
/// checked against Number of Frames, no list asks for more than the
/// instance holds.
pub(super) fn frame_numbers(list: &str) -> Result<Vec<u32>, DicomWebError> {
    let bad = || {
        DicomWebError::BadRequest(format!(
            "{:?} is not a list of frame numbers (1, 2, …)",
            list.chars().take(64).collect::<String>()
        ))
    };
    if list.split(',').count() > MAX_FRAME_LIST {
        return Err(DicomWebError::BadRequest(format!(
            "more than {MAX_FRAME_LIST} frame numbers"
        )));
    }
    let mut seen = std::collections::HashSet::new();
    let mut numbers = Vec::new();
    for n in list.split(',') {
        let n = n.trim().parse::<u32>().map_err(|_| bad())?;
        if n == 0 {
            return Err(bad());
        }
        if seen.insert(n) {
            numbers.push(n);
        }
    }
    if numbers.is_empty() {
        return Err(bad());
    }
    Ok(numbers)
}

pub async fn frames(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String, String, String)>,
) -> Result<HttpResponse, DicomWebError> {
    let (study, series, instance, list) = path.into_inner();
    let numbers = frame_numbers(&list)?;
    let scope = instance_scope((study, series, instance))?;
    let item = instances_of(&state, &scope).await?.remove(0);
    let (wanted, media) = frame_syntax(&req, &item.transfer_syntax_uid)?;
    let frame_count = item.number_of_frames.unwrap_or(1).max(1);
    if let Some(bad) = numbers.iter().find(|n| i64::from(**n) > frame_count) {
        return Err(DicomWebError::NotFound(format!(
            "frame {bad} does not exist; the instance has {frame_count}"
        )));
    }
    let stored_ts = item.transfer_syntax_uid.clone();
    let (part_type, ts_out) = match wanted {
        FrameSyntax::Uncompressed => (media, EXPLICIT_VR_LITTLE_ENDIAN),
        FrameSyntax::AsStored => (media, stored_ts.as_str()),
    };
    let part_content_type = format!("{part_type}; transfer-syntax={ts_out}");
    Ok(send_frames(
        &state,
        item,
        numbers,
        wanted,
        part_type,
        part_content_type,
    ))
}

/// Stream frames as parts of one type; the object is decoded at most once.
fn send_frames(
    state: &AppState,
    item: ScopedInstance,
    numbers: Vec<u32>,
    wanted: FrameSyntax,
    part_type: &str,
    part_content_type: String,
) -> HttpResponse {
    let (response, mut parts) = multipart::response(part_type);
    let state = state.clone();
    tokio::spawn(async move {
        let mut decoded: Option<std::sync::Arc<dicom_object::DefaultDicomObject>> = None;
        for number in numbers {
            let bytes = match frame_bytes(&state, &item, number, &wanted, &mut decoded).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(sop = %item.sop_instance_uid, error = %e, "frame retrieve stopped");
                    parts.fail(e.to_string()).await;
                    return;
                }
            };
            if parts.begin_part(&part_content_type, None).await.is_err()
                || parts.send(Bytes::from(bytes)).await.is_err()
            {
                return;
            }
        }
        parts.finish().await;
    });
    response
}

/// One frame's bytes: a ranged read when its location is known and no
/// decoding is wanted; otherwise the object is decoded (once per request).
async fn frame_bytes(
    state: &AppState,
    item: &ScopedInstance,
    number: u32,
    wanted: &FrameSyntax,
    decoded: &mut Option<std::sync::Arc<dicom_object::DefaultDicomObject>>,
) -> Result<Vec<u8>, DicomWebError> {
    let encapsulated = is_encapsulated(&item.transfer_syntax_uid);
    if *wanted == FrameSyntax::AsStored || !encapsulated {
        match state
            .index
            .frame_location(&item.sop_instance_uid, number)
            .await?
        {
            FrameLocation::Native { offset, length } => {
                return Ok(state.storage.read_range(&item.key, offset, length).await?)
            }
            FrameLocation::Encapsulated { offset, length } if encapsulated => {
                let items = state.storage.read_range(&item.key, offset, length).await?;
                return fragments_of(&items);
            }
            FrameLocation::OutOfRange => {
                return Err(DicomWebError::NotFound(format!(
                    "frame {number} does not exist"
                )))
            }
            _ => {}
        }
    }
    if decoded.is_none() {
        // Frames stream inside a response already under way: wait for a
        // core rather than cut the body short.
        let object = transcode::load(&state.storage, &item.key, transcode::Admission::Wait).await?;
        *decoded = Some(std::sync::Arc::new(object));
    }
    let object = decoded
        .clone()
        .ok_or_else(|| DicomWebError::Internal("object not loaded".into()))?;
    let bitstream = *wanted == FrameSyntax::AsStored && encapsulated;
    transcode::on_cpu(transcode::Admission::Wait, move || {
        super::render::decoded_frame(&object, number, bitstream)
    })
    .await?
}

/// Concatenate the values of the fragment items in `items` (explicit VR
/// little endian item headers, as encapsulation always uses).
fn fragments_of(items: &[u8]) -> Result<Vec<u8>, DicomWebError> {
    let mut out = Vec::with_capacity(items.len());
    let mut rest = items;
    while rest.len() >= 8 {
        let tag = (
            u16::from_le_bytes([rest[0], rest[1]]),
            u16::from_le_bytes([rest[2], rest[3]]),
        );
        let len = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        if tag != (0xFFFE, 0xE000) || rest.len() < 8 + len {
            return Err(DicomWebError::Internal(
                "stored fragment items do not match the index".into(),
            ));
        }
        out.extend_from_slice(&rest[8..8 + len]);
        rest = &rest[8 + len..];
    }
    Ok(out)
}

/// Bulk data by the BulkDataURIs of the metadata. Pixel Data of native
/// objects supports byte ranges (RFC 9110 14), so large images can be
/// fetched piecewise.
pub async fn bulk(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String, String, String)>,
) -> Result<HttpResponse, DicomWebError> {
    let (study, series, instance, bulk_path) = path.into_inner();
    if !valid_bulk_path(&bulk_path) {
        return Err(DicomWebError::BadRequest(format!(
            "{bulk_path:?} is not a bulk data path"
        )));
    }
    let scope = instance_scope((study, series, instance))?;
    let item = instances_of(&state, &scope).await?.remove(0);
    let (offset, length) = if bulk_path.eq_ignore_ascii_case("7FE00010") {
        match state
            .index
            .frame_location(&item.sop_instance_uid, 1)
            .await?
        {
            FrameLocation::Native { offset, length } => {
                let frames = item.number_of_frames.unwrap_or(1).max(1) as u64;
                (offset, length * frames)
            }
            _ => return encapsulated_pixel_data(&state, &item).await,
        }
    } else {
        let value = super::render::bulk_value(&state.storage, &item.key, &bulk_path).await?;
        return Ok(ranged(&req, Bytes::from(value)));
    };
    let range = byte_range(&req, length)?;
    let (start, end) = range.unwrap_or((0, length));
    // Streamed from storage in bounded chunks, whatever the range's size.
    let reader = state
        .storage
        .open_range(&item.key, offset + start, end - start)
        .await?;
    let body = ReaderStream::with_capacity(reader, 256 * 1024);
    Ok(bulk_response(
        &req,
        body,
        end - start,
        range.map(|r| (r, length)),
    ))
}

/// Compressed Pixel Data as bulk data: every frame's bitstream, one part
/// each, as frames are.
async fn encapsulated_pixel_data(
    state: &AppState,
    item: &ScopedInstance,
) -> Result<HttpResponse, DicomWebError> {
    let count = item.number_of_frames.unwrap_or(1).max(1) as u32;
    let media = bitstream_media_type(&item.transfer_syntax_uid);
    let content_type = format!("{media}; transfer-syntax={}", item.transfer_syntax_uid);
    Ok(send_frames(
        state,
        item.clone(),
        (1..=count).collect(),
        FrameSyntax::AsStored,
        media,
        content_type,
    ))
}

/// Serve a small in-memory value, honouring a single byte range.
fn ranged(req: &HttpRequest, bytes: Bytes) -> HttpResponse {
    let length = bytes.len() as u64;
    let once = |b: Bytes| futures::stream::once(futures::future::ready(Ok(b)));
    match byte_range(req, length) {
        Ok(Some((start, end))) => bulk_response(
            req,
            once(bytes.slice(start as usize..end as usize)),
            end - start,
            Some(((start, end), length)),
        ),
        Ok(None) => bulk_response(req, once(bytes), length, None),
        Err(e) => actix_web::ResponseError::error_response(&e),
    }
}

/// Bulk data as the client asked: a one-part `multipart/related` (the
/// PS3.18 default) or a bare `application/octet-stream`; 206 with
/// Content-Range when `range` (`[start, end)` of `total`) was asked for.
fn bulk_response<S>(
    req: &HttpRequest,
    value: S,
    value_len: u64,
    range: Option<((u64, u64), u64)>,
) -> HttpResponse
where
    S: futures::Stream<Item = Result<Bytes, std::io::Error>> + 'static,
{
    use futures::StreamExt;
    let content_range =
        range.map(|((start, end), total)| format!("bytes {start}-{}/{total}", end - 1));
    let mut response = if content_range.is_some() {
        HttpResponse::PartialContent()
    } else {
        HttpResponse::Ok()
    };
    response.insert_header((header::ACCEPT_RANGES, "bytes"));
    if let Some(content_range) = &content_range {
        response.insert_header((header::CONTENT_RANGE, content_range.as_str()));
    }
    let bare = ranges(req)
        .first()
        .is_some_and(|r| r.mime == "application/octet-stream");
    if bare {
        return response
            .content_type("application/octet-stream")
            .insert_header((header::CONTENT_LENGTH, value_len.to_string()))
            .streaming(value);
    }
    let boundary = multipart::boundary();
    let info = req.connection_info();
    let location = format!("{}://{}{}", info.scheme(), info.host(), req.uri().path());
    let mut head = format!(
        "--{boundary}\r\nContent-Type: application/octet-stream\r\nContent-Location: {location}\r\n"
    );
    if let Some(content_range) = &content_range {
        head.push_str(&format!("Content-Range: {content_range}\r\n"));
    }
    head.push_str("\r\n");
    let tail = format!("\r\n--{boundary}--\r\n");
    let total = head.len() as u64 + value_len + tail.len() as u64;
    let piece = |text: String| futures::stream::once(futures::future::ready(Ok(Bytes::from(text))));
    let body = piece(head).chain(value).chain(piece(tail));
    response
        .content_type(format!(
            "multipart/related; type=\"application/octet-stream\"; boundary={boundary}"
        ))
        .insert_header((header::CONTENT_LENGTH, total.to_string()))
        .streaming(body)
}

/// A single `bytes=a-b`, `bytes=a-` or `bytes=-n` range as `[start, end)`.
/// As RFC 9110 14.2 allows, whatever Tessera does not serve as a range is
/// ignored and the whole value sent: another unit, several ranges, a range
/// that does not parse (`bytes=10-5`), or one under `If-Range` (bulk data
/// carries no validator that could match). Only a range wholly past the
/// end is 416.
pub(super) fn byte_range(
    req: &HttpRequest,
    length: u64,
) -> Result<Option<(u64, u64)>, DicomWebError> {
    let Some(value) = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(None);
    };
    if req.headers().contains_key(header::IF_RANGE) {
        return Ok(None);
    }
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let number = |s: &str| s.parse::<u64>().ok();
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => match number(n) {
            Some(0) => return Err(DicomWebError::RangeNotSatisfiable(length)),
            Some(n) => (length.saturating_sub(n), length),
            None => return Ok(None),
        },
        (a, "") => match number(a) {
            Some(a) => (a, length),
            None => return Ok(None),
        },
        (a, b) => match (number(a), number(b)) {
            (Some(a), Some(b)) if a <= b => (a, b.saturating_add(1).min(length)),
            _ => return Ok(None),
        },
    };
    if start >= length {
        return Err(DicomWebError::RangeNotSatisfiable(length));
    }
    Ok(Some((start, end)))
}
