//! The DICOM JSON metadata document (PS3.18 F.2) of an instance, built once
//! at ingest so that WADO-RS metadata of a whole series is a single index
//! read instead of opening every object.
//!
//! Binary values larger than [`INLINE_LIMIT`], ICC profiles and the Pixel
//! Data are replaced by BulkDataURIs. Those are written relative to [`BULK_BASE`], a marker the
//! DICOMweb edge replaces with the request's own base URL, because the
//! address clients reach us at is not known at ingest.

use std::io::Read;

use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{InMemDicomObject, OpenFileOptions};
use serde_json::{Map, Value};

use crate::model::{InstanceMeta, PixelLayout};
use crate::storage::Storage;

/// Stands for the DICOMweb root (e.g. `http://host:8042/dicom-web`).
pub const BULK_BASE: &str = "tessera-base:";
/// Binary values up to this many bytes are inlined as base64.
const INLINE_LIMIT: usize = 1024;
const BINARY_VRS: &[&str] = &["OB", "OD", "OF", "OL", "OV", "OW", "UN"];
/// ICCProfile (0028,2000), top level or in an OpticalPathSequence item.
const ICC_PROFILE: &str = "00282000";

/// Build the document of the Part-10 object that `open` reads from its
/// first byte (a file, or bytes in memory). Blocking.
pub fn build<R: Read>(
    open: impl Fn() -> std::io::Result<R>,
    meta: &InstanceMeta,
    pixels: Option<&PixelLayout>,
    has_pixel_data: bool,
) -> Result<String, String> {
    let past_preamble = || {
        let mut reader = open().map_err(|e| e.to_string())?;
        let mut preamble = [0u8; 128];
        reader
            .read_exact(&mut preamble)
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(reader)
    };
    let mut object = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .read_preamble(ReadPreamble::Never)
        .from_reader(past_preamble()?)
        .map_err(|e| e.to_string())?;
    // Text in ISO 2022 character sets is decoded as the index decodes it,
    // so metadata and QIDO agree on the patient's name.
    if crate::model::needs_redecoding(&crate::model::character_set_of(&object)) {
        let ts = object.meta().transfer_syntax().to_owned();
        let mut file = past_preamble()?;
        super::part10::read_meta(&mut file)?;
        crate::model::redecode_top_level(&mut object, file, ts.trim_end_matches('\0'))?;
    }
    let pixel_vr = has_pixel_data.then(|| match pixels {
        Some(PixelLayout::Native { .. }) if meta.bits_allocated.unwrap_or(8) > 8 => "OW",
        _ => "OB",
    });
    render(
        &object,
        &format!(
            "{}/series/{}/instances/{}",
            meta.study.study_instance_uid, meta.series.series_instance_uid, meta.sop_instance_uid
        ),
        pixel_vr,
    )
}

/// Build the document of a stored object that has none (stored before
/// documents existed). Holds the object in memory, so it is bounded like
/// transcoding.
pub async fn rebuild(storage: &Storage, key: &str) -> Result<String, String> {
    let mut object = crate::transcode::load(storage, key, crate::transcode::Admission::Wait)
        .await
        .map_err(|e| e.to_string())?;
    let pixel_vr =
        object
            .element(tags::PIXEL_DATA)
            .ok()
            .map(|e| if e.vr() == VR::OW { "OW" } else { "OB" });
    object.remove_element(tags::PIXEL_DATA);
    let uid = |tag| {
        object
            .element(tag)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).to_owned())
            .unwrap_or_default()
    };
    let path = format!(
        "{}/series/{}/instances/{}",
        uid(tags::STUDY_INSTANCE_UID),
        uid(tags::SERIES_INSTANCE_UID),
        uid(tags::SOP_INSTANCE_UID)
    );
    render(&object, &path, pixel_vr)
}

/// The document of a data set (without Pixel Data) whose instance is at
/// `instance_path` (`{study}/series/{series}/instances/{sop}`).
fn render(
    dataset: &InMemDicomObject,
    instance_path: &str,
    pixel_vr: Option<&str>,
) -> Result<String, String> {
    let mut value = dicom_json::to_value(dataset).map_err(|e| e.to_string())?;
    let base = format!("{BULK_BASE}/studies/{instance_path}/bulk");
    if let Value::Object(map) = &mut value {
        replace_large_values(map, &base);
        if let Some(vr) = pixel_vr {
            let mut element = Map::new();
            element.insert("vr".into(), Value::from(vr));
            element.insert(
                "BulkDataURI".into(),
                Value::from(format!("{base}/7FE00010")),
            );
            map.insert("7FE00010".into(), Value::Object(element));
        }
    }
    serde_json::to_string(&value).map_err(|e| e.to_string())
}

/// Swap large inline binaries for BulkDataURIs, descending into sequences;
/// the URI path names the tag at each level and the item index between.
fn replace_large_values(map: &mut Map<String, Value>, base: &str) {
    for (tag, element) in map.iter_mut() {
        let Value::Object(element) = element else {
            continue;
        };
        let vr = element
            .get("vr")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if vr == "DS" || vr == "IS" {
            numbers_as_json_numbers(element);
            continue;
        }
        let vr = vr.as_str();
        if vr == "SQ" {
            if let Some(Value::Array(items)) = element.get_mut("Value") {
                for (i, item) in items.iter_mut().enumerate() {
                    if let Value::Object(item) = item {
                        replace_large_values(item, &format!("{base}/{tag}/{i}"));
                    }
                }
            }
            continue;
        }
        // Slide viewers fetch an ICC profile as bulk data, however small.
        let large = BINARY_VRS.contains(&vr)
            && element
                .get("InlineBinary")
                .and_then(Value::as_str)
                .is_some_and(|b| b.len() / 4 * 3 > INLINE_LIMIT || tag.as_str() == ICC_PROFILE);
        if large {
            element.remove("InlineBinary");
            element.insert("BulkDataURI".into(), Value::from(format!("{base}/{tag}")));
        }
    }
}

/// DS and IS values are JSON numbers (PS3.18 F.2.3); dicom-json keeps the
/// decimal strings as read. A value that is not a number stays a string
/// rather than being lost.
fn numbers_as_json_numbers(element: &mut Map<String, Value>) {
    let Some(Value::Array(values)) = element.get_mut("Value") else {
        return;
    };
    for value in values.iter_mut() {
        let Value::String(text) = value else {
            continue;
        };
        let text = text.trim();
        let number = text.parse::<i64>().map(Value::from).ok().or_else(|| {
            text.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
        });
        if let Some(number) = number {
            *value = number;
        }
    }
}

/// Whether a document key names Pixel Data or a path below the instance
/// that a BulkDataURI may address: tags as 8 hex digits, item indices as
/// numbers, alternating.
pub fn valid_bulk_path(path: &str) -> bool {
    path.split('/').enumerate().all(|(i, part)| {
        if i % 2 == 0 {
            part.len() == 8 && part.chars().all(|c| c.is_ascii_hexdigit())
        } else {
            !part.is_empty() && part.len() < 8 && part.chars().all(|c| c.is_ascii_digit())
        }
    }) && path.split('/').count() % 2 == 1
}
