//! STOW-RS (PS3.18 10.5): a `multipart/related; type="application/dicom"`
//! body is parsed as it arrives; each part streams into the same ingest
//! path as C-STORE, so an instance is listed as stored only once it is
//! durable and indexed.
//!
//! Response codes (PS3.18 10.5.3): 200 all stored, 202 some failed,
//! 409 none stored because of a conflict (e.g. a study UID differing from
//! the URL), 400 none stored because the parts were not valid DICOM,
//! 415 not `application/dicom` parts, 413 over the configured body limit.

use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;
use serde_json::{json, Map, Value};

use super::{base_url, path_uid, DicomWebError};
use crate::ingest::{HeaderError, IngestError, StoredIds};
use crate::web::AppState;

/// PS3.4 C-STORE failure reasons used in FailureReason (0008,1197).
const PROCESSING_FAILURE: u16 = 0x0110;
const DUPLICATE_INSTANCE: u16 = 0x0111;
const OUT_OF_RESOURCES: u16 = 0xA700;
const DATA_SET_MISMATCH: u16 = 0xA900;
const CANNOT_UNDERSTAND: u16 = 0xC000;
/// The part was not application/dicom (PS3.18 table 10.5.3-2 uses 0x0122
/// "SOP class not supported" for parts that cannot be stored as given).
const NOT_SUPPORTED: u16 = 0x0122;

pub async fn store(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, DicomWebError> {
    receive(&req, &state, payload, None).await
}

pub async fn store_in_study(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
    path: web::Path<String>,
) -> Result<HttpResponse, DicomWebError> {
    let study = path_uid(&path)?;
    receive(&req, &state, payload, Some(study)).await
}

/// One part's result.
enum PartResult {
    Stored(StoredIds),
    Failed {
        ids: Option<(String, String)>,
        reason: u16,
        conflict: bool,
        /// Ours, not the client's: retryable, answered 503 when nothing
        /// was stored.
        server_fault: bool,
        message: String,
    },
}

/// The boundary of a `multipart/related; type="application/dicom"` body,
/// read with a media-type parser (quoted values may hold `;`, `=` or
/// spaces). A body in a content coding is refused: STOW-RS bodies are not
/// inflated, and a compressed one would otherwise fail as malformed.
fn boundary_of(req: &HttpRequest) -> Result<String, DicomWebError> {
    use actix_web::http::header;
    let coding = req
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or("identity");
    if !coding.eq_ignore_ascii_case("identity") {
        return Err(DicomWebError::UnsupportedMediaType(format!(
            "Content-Encoding {coding:?} is not accepted; send the body uncompressed"
        )));
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let unsupported = || {
        DicomWebError::UnsupportedMediaType(format!(
            "STOW-RS takes multipart/related; type=\"application/dicom\", not {:?}",
            content_type.chars().take(200).collect::<String>()
        ))
    };
    let parsed: mime::Mime = content_type.parse().map_err(|_| unsupported())?;
    if parsed.essence_str() != "multipart/related" {
        return Err(unsupported());
    }
    if let Some(kind) = parsed.get_param("type") {
        if !kind.as_str().eq_ignore_ascii_case("application/dicom") {
            return Err(unsupported());
        }
    }
    parsed
        .get_param(mime::BOUNDARY)
        .map(|b| b.as_str().to_owned())
        .filter(|b| !b.is_empty())
        .ok_or_else(|| DicomWebError::BadRequest("the multipart body has no boundary".into()))
}

async fn receive(
    req: &HttpRequest,
    state: &AppState,
    payload: web::Payload,
    study: Option<String>,
) -> Result<HttpResponse, DicomWebError> {
    let boundary = boundary_of(req)?;
    let limit = state.dicomweb.max_upload_bytes;
    if let Some(length) = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if length > limit {
            return Err(DicomWebError::PayloadTooLarge(format!(
                "the body is {length} bytes; the limit is {limit}"
            )));
        }
    }
    let guard = super::stow_limits::Guard::new(&boundary);
    let idle = state.dicomweb.body_idle_timeout;
    let mut multipart = multer::Multipart::new(forward_body(payload, limit, idle, guard), boundary);
    let source = format!(
        "STOW:{}",
        req.peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default()
    );
    let mut results = Vec::new();
    // A body that breaks after some parts were stored: those are durable,
    // so the answer lists them, with the break as the last part's failure.
    let broken = |results: &mut Vec<PartResult>, e: DicomWebError| {
        if !results.iter().any(|r| matches!(r, PartResult::Stored(_))) {
            return Err(e);
        }
        results.push(PartResult::Failed {
            ids: None,
            reason: CANNOT_UNDERSTAND,
            conflict: false,
            server_fault: false,
            message: e.to_string(),
        });
        Ok(())
    };
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => {
                broken(&mut results, body_error(e, limit))?;
                break;
            }
        };
        let part_type = field
            .content_type()
            .map(|m| m.essence_str().to_ascii_lowercase())
            .unwrap_or_else(|| "application/dicom".into());
        if part_type != "application/dicom" {
            results.push(PartResult::Failed {
                ids: None,
                reason: NOT_SUPPORTED,
                conflict: false,
                server_fault: false,
                message: format!("part of type {part_type} is not application/dicom"),
            });
            continue;
        }
        match store_part(state, field, &source, study.as_deref(), limit).await {
            Ok(result) => results.push(result),
            Err(e) => {
                broken(&mut results, e)?;
                break;
            }
        }
    }
    if results.is_empty() {
        return Err(DicomWebError::BadRequest("the request has no parts".into()));
    }
    if results.iter().all(|r| {
        matches!(
            r,
            PartResult::Failed {
                reason: NOT_SUPPORTED,
                ..
            }
        )
    }) {
        return Err(DicomWebError::UnsupportedMediaType(
            "no part is application/dicom".into(),
        ));
    }
    Ok(response(req, &results, study.as_deref()))
}

/// The request body as a `Send` stream (actix's payload is bound to its
/// worker thread), counting bytes so bodies without Content-Length are held
/// to the limit too.
fn forward_body(
    mut payload: web::Payload,
    limit: u64,
    idle: std::time::Duration,
    mut guard: super::stow_limits::Guard,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    actix_web::rt::spawn(async move {
        let mut seen = 0u64;
        loop {
            // A client that announces a body and then sends nothing must not
            // hold the connection and its spool file forever.
            let chunk = match tokio::time::timeout(idle, payload.next()).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return,
                Err(_) => {
                    let _ = tx
                        .send(Err(std::io::Error::other(format!(
                            "no body data for {} s",
                            idle.as_secs()
                        ))))
                        .await;
                    return;
                }
            };
            let item = match chunk {
                Ok(chunk) => {
                    seen += chunk.len() as u64;
                    if seen > limit {
                        Err(std::io::Error::other(format!(
                            "body exceeds the limit of {limit} bytes"
                        )))
                    } else if let Err(e) = guard.feed(&chunk) {
                        Err(std::io::Error::other(e))
                    } else {
                        Ok(chunk)
                    }
                }
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                return;
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

fn body_error(e: multer::Error, limit: u64) -> DicomWebError {
    // The limit error raised in `forward_body` arrives wrapped by multer.
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    if text.contains("exceeds the limit") {
        DicomWebError::PayloadTooLarge(format!("the body exceeds the limit of {limit} bytes"))
    } else {
        DicomWebError::BadRequest(format!("malformed multipart body: {text}"))
    }
}

async fn store_part(
    state: &AppState,
    mut field: multer::Field<'_>,
    source: &str,
    study: Option<&str>,
    limit: u64,
) -> Result<PartResult, DicomWebError> {
    let mut incoming = match state.ingest.begin_part10(source).await {
        Ok(incoming) => incoming,
        Err(e) => return Ok(failure(e)),
    };
    loop {
        match field.chunk().await {
            Ok(Some(chunk)) => {
                if let Err(e) = incoming.write(chunk.to_vec()).await {
                    return Ok(failure(e));
                }
            }
            Ok(None) => break,
            // The spool file is removed when `incoming` is dropped.
            Err(e) => return Err(body_error(e, limit)),
        }
    }
    Ok(match state.ingest.finish_in_study(incoming, study).await {
        Ok((_, ids)) => PartResult::Stored(ids),
        Err(e) => failure(e),
    })
}

fn failure(e: IngestError) -> PartResult {
    let message = e.to_string();
    let client = |ids, reason, conflict| PartResult::Failed {
        ids,
        reason,
        conflict,
        server_fault: false,
        message: message.clone(),
    };
    // Our own faults carry paths and internals: logged, not sent.
    let server = |reason, what: &str| {
        tracing::error!(error = %e, "STOW-RS part not stored");
        PartResult::Failed {
            ids: None,
            reason,
            conflict: false,
            server_fault: true,
            message: format!("{what}; try again later"),
        }
    };
    match &e {
        IngestError::WrongStudy {
            sop_class,
            sop_instance,
            ..
        }
        | IngestError::SeriesInOtherStudy {
            sop_class,
            sop_instance,
            ..
        } => client(
            Some((sop_class.to_string(), sop_instance.to_string())),
            DATA_SET_MISMATCH,
            true,
        ),
        IngestError::Duplicate(uid) => client(
            Some((String::new(), uid.to_string())),
            DUPLICATE_INSTANCE,
            true,
        ),
        IngestError::Invalid(HeaderError::Io(_)) => server(
            PROCESSING_FAILURE,
            "the received object could not be read back",
        ),
        IngestError::Invalid(_) => client(None, CANNOT_UNDERSTAND, false),
        IngestError::Storage(_) => server(OUT_OF_RESOURCES, "storage is unavailable"),
        IngestError::ShuttingDown => server(OUT_OF_RESOURCES, "the archive is shutting down"),
        IngestError::Index(_) => server(PROCESSING_FAILURE, "the index is unavailable"),
    }
}

fn uid_element(vr: &str, value: &str) -> Value {
    if value.is_empty() {
        json!({ "vr": vr })
    } else {
        json!({ "vr": vr, "Value": [value] })
    }
}

fn response(req: &HttpRequest, results: &[PartResult], study: Option<&str>) -> HttpResponse {
    let base = base_url(req);
    let mut referenced = Vec::new();
    let mut failed = Vec::new();
    let mut messages = Vec::new();
    let mut any_conflict = false;
    let mut any_server_fault = false;
    let mut stored_study = study.map(str::to_owned);
    let mut audited = crate::audit::Subjects::default();
    for result in results {
        match result {
            PartResult::Stored(ids) => {
                audited
                    .studies
                    .push(ids.study_instance_uid.as_str().to_owned());
                let url = format!(
                    "{base}/studies/{}/series/{}/instances/{}",
                    ids.study_instance_uid, ids.series_instance_uid, ids.sop_instance_uid
                );
                stored_study.get_or_insert_with(|| ids.study_instance_uid.to_string());
                referenced.push(json!({
                    "00081150": uid_element("UI", ids.sop_class_uid.as_str()),
                    "00081155": uid_element("UI", ids.sop_instance_uid.as_str()),
                    "00081190": uid_element("UR", &url),
                }));
            }
            PartResult::Failed {
                ids,
                reason,
                conflict,
                server_fault,
                message,
            } => {
                any_conflict |= conflict;
                any_server_fault |= server_fault;
                messages.push(message.clone());
                let (class, instance) = ids.clone().unwrap_or_default();
                failed.push(json!({
                    "00081150": uid_element("UI", &class),
                    "00081155": uid_element("UI", &instance),
                    "00081197": { "vr": "US", "Value": [reason] },
                }));
            }
        }
    }
    let mut body = Map::new();
    if let Some(study) = stored_study.filter(|_| !referenced.is_empty()) {
        body.insert(
            "00081190".into(),
            uid_element("UR", &format!("{base}/studies/{study}")),
        );
    }
    let status = if failed.is_empty() {
        actix_web::http::StatusCode::OK
    } else if !referenced.is_empty() {
        actix_web::http::StatusCode::ACCEPTED
    } else if any_server_fault {
        actix_web::http::StatusCode::SERVICE_UNAVAILABLE
    } else if any_conflict {
        actix_web::http::StatusCode::CONFLICT
    } else {
        actix_web::http::StatusCode::BAD_REQUEST
    };
    if !referenced.is_empty() {
        body.insert(
            "00081199".into(),
            json!({ "vr": "SQ", "Value": referenced }),
        );
    }
    if !failed.is_empty() {
        body.insert("00081198".into(), json!({ "vr": "SQ", "Value": failed }));
    }
    let mut builder = HttpResponse::build(status);
    builder.content_type("application/dicom+json");
    for message in messages.iter().take(5) {
        let clean: String = message
            .chars()
            .filter(|c| (c.is_ascii_graphic() || *c == ' ') && *c != '"')
            .take(200)
            .collect();
        builder.append_header(("Warning", format!("299 tessera \"{clean}\"")));
    }
    let mut response = builder.body(Value::Object(body).to_string());
    response.extensions_mut().insert(audited);
    response
}

/// Run a request body through the limits and the multipart parser, as a
/// STOW-RS request with boundary `fuzz` would be, reading every part; for
/// fuzzing. Returns the number of complete parts, or `None` when refused.
pub fn fuzz_body(body: &[u8]) -> Option<usize> {
    const BOUNDARY: &str = "fuzz";
    let mut guard = super::stow_limits::Guard::new(BOUNDARY);
    // Chunks of varying size, so patterns split across chunks are exercised.
    let mut chunks = Vec::new();
    let mut rest = body;
    let mut size = 1;
    while !rest.is_empty() {
        let (head, tail) = rest.split_at(size.min(rest.len()));
        guard.feed(head).ok()?;
        chunks.push(Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(head)));
        rest = tail;
        size = size * 3 % 4093 + 1;
    }
    let runtime = tokio::runtime::Builder::new_current_thread().build().ok()?;
    runtime.block_on(async {
        let mut multipart = multer::Multipart::new(futures::stream::iter(chunks), BOUNDARY);
        let mut parts = 0;
        while let Some(mut field) = multipart.next_field().await.ok()? {
            while field.chunk().await.ok()?.is_some() {}
            parts += 1;
        }
        Some(parts)
    })
}
