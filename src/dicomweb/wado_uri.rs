//! WADO-URI (PS3.18 chapter 9): one instance by `studyUID`, `seriesUID` and
//! `objectUID`, as `application/dicom` (as stored, or in `transferSyntax`)
//! or rendered as `image/jpeg` (the default) or `image/png`.

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use futures::TryStreamExt;
use tokio_util::io::ReaderStream;

use super::accept::percent_decode;
use super::render::{render_for_uri, MAX_VIEWPORT};
use super::retrieve::instances_of;
use super::{path_uid, DicomWebError};
use crate::index::Scope;
use crate::transcode;
use crate::web::AppState;

pub async fn wado(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, DicomWebError> {
    let params: HashMap<String, String> = req
        .query_string()
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect();
    let get = |name: &str| params.get(name).map(String::as_str);
    let required = |name: &str| {
        get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| DicomWebError::BadRequest(format!("{name} is required")))
    };
    if required("requestType")? != "WADO" {
        return Err(DicomWebError::BadRequest("requestType must be WADO".into()));
    }
    let scope = Scope {
        study: path_uid(required("studyUID")?)?,
        series: Some(path_uid(required("seriesUID")?)?),
        instance: Some(path_uid(required("objectUID")?)?),
    };
    let item = instances_of(&state, &scope).await?.remove(0);
    let content_type = get("contentType")
        .unwrap_or("image/jpeg")
        .split(',')
        .map(str::trim)
        .next()
        .unwrap_or("image/jpeg")
        .to_ascii_lowercase();
    match content_type.as_str() {
        "application/dicom" => {
            let target = get("transferSyntax").unwrap_or(&item.transfer_syntax_uid);
            // Given the patient as it is now (crate::coerce), unless too
            // large to hold.
            let coerce = item
                .coerce
                .as_ref()
                .filter(|_| (item.size as u64) <= transcode::MAX_TRANSCODE_BYTES);
            if target == item.transfer_syntax_uid && coerce.is_none() {
                let reader = state.storage.open_read(&item.key).await?;
                let body = ReaderStream::with_capacity(reader, 256 * 1024).map_err(|e| {
                    tracing::warn!(error = %e, "WADO-URI read failed");
                    e
                });
                return Ok(HttpResponse::Ok()
                    .content_type("application/dicom")
                    .insert_header(("Content-Length", item.size.to_string()))
                    .streaming(body));
            }
            if target != item.transfer_syntax_uid && !transcode::TARGETS.contains(&target) {
                return Err(DicomWebError::NotAcceptable(format!(
                    "cannot convert to transfer syntax {target}"
                )));
            }
            let bytes = transcode::part10_in(
                &state.storage,
                &item.key,
                target,
                coerce,
                transcode::Admission::Now,
            )
            .await?;
            Ok(HttpResponse::Ok()
                .content_type("application/dicom")
                .body(bytes))
        }
        "image/jpeg" | "image/png" | "image/*" | "*/*" => {
            let number = |name: &str| -> Result<Option<f64>, DicomWebError> {
                get(name)
                    .map(|v| {
                        v.parse::<f64>()
                            .ok()
                            .filter(|v| v.is_finite())
                            .ok_or_else(|| {
                                DicomWebError::BadRequest(format!("{name} must be a number"))
                            })
                    })
                    .transpose()
            };
            // Sizes become pixel buffers: each is checked against the same
            // cap as a rendered viewport before anything is allocated.
            let size = |name: &str| -> Result<Option<u32>, DicomWebError> {
                match number(name)? {
                    Some(v) if (1.0..=f64::from(MAX_VIEWPORT)).contains(&v) => Ok(Some(v as u32)),
                    Some(_) => Err(DicomWebError::BadRequest(format!(
                        "{name} must be between 1 and {MAX_VIEWPORT}"
                    ))),
                    None => Ok(None),
                }
            };
            let frame = match number("frameNumber")? {
                Some(f) if (1.0..=f64::from(u32::MAX)).contains(&f) => f as u32,
                Some(_) => {
                    return Err(DicomWebError::BadRequest(
                        "frameNumber must be 1 or more".into(),
                    ))
                }
                None => 1,
            };
            let viewport = match (size("columns")?, size("rows")?) {
                (Some(c), Some(r)) => Some((c, r)),
                (Some(c), None) => Some((c, c)),
                (None, Some(r)) => Some((r, r)),
                (None, None) => None,
            };
            let window = match (number("windowCenter")?, number("windowWidth")?) {
                (Some(c), Some(w)) if w > 0.0 => Some((c, w)),
                _ => None,
            };
            let quality = number("imageQuality")?.map(|q| q.clamp(1.0, 100.0) as u8);
            let png = content_type == "image/png";
            let image =
                render_for_uri(&state.storage, &item, frame, viewport, window, quality, png)
                    .await?;
            Ok(HttpResponse::Ok()
                .content_type(if png { "image/png" } else { "image/jpeg" })
                .body(image))
        }
        other => Err(DicomWebError::NotAcceptable(format!(
            "contentType {other} is not offered; use application/dicom, image/jpeg or image/png"
        ))),
    }
}
