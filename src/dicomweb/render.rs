//! Rendered and thumbnail resources (PS3.18 10.4.1.1.3, 8.3.5.1): a frame
//! decoded with dicom-pixeldata, passed through the Modality LUT (rescale)
//! and a VOI LUT (the `window` parameter, else the object's first window or
//! VOI LUT, else min-max), scaled to the `viewport`, and encoded as JPEG
//! (with `quality`) or PNG.
//!
//! Decoding holds one object in memory, bounded like transcoding.

use std::io::Cursor;
use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use dicom_core::Tag;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::{
    ConvertOptions, PhotometricInterpretation, PixelDecoder, VoiLutFunction, VoiLutOption,
    WindowLevel,
};
use image::{DynamicImage, ImageFormat};

use super::accept::{percent_decode, ranges};
use super::multipart;
use super::retrieve::{frame_numbers, instances_of};
use super::{instance_scope, series_scope, study_scope, DicomWebError};
use crate::index::{Scope, ScopedInstance};
use crate::storage::Storage;
use crate::transcode;
use crate::web::AppState;

/// The largest rendered width or height: a 8192² RGBA buffer is 256 MiB.
pub(super) const MAX_VIEWPORT: u32 = 8192;

const THUMBNAIL_SIZE: u32 = 128;
const DEFAULT_QUALITY: u8 = 90;

/// Output format and PS3.18 rendering parameters.
#[derive(Debug, Clone)]
struct Rendering {
    format: ImageFormat,
    window: Option<(WindowLevel, VoiLutFunction)>,
    viewport: Option<(u32, u32)>,
    quality: u8,
}

impl Rendering {
    fn mime(&self) -> &'static str {
        if self.format == ImageFormat::Png {
            "image/png"
        } else {
            "image/jpeg"
        }
    }
}

fn parse_rendering(req: &HttpRequest, thumbnail: bool) -> Result<Rendering, DicomWebError> {
    let bad = |m: String| DicomWebError::BadRequest(m);
    let mut format = None;
    for range in ranges(req) {
        format = match range.payload() {
            "image/jpeg" | "image/*" | "*/*" => Some(ImageFormat::Jpeg),
            "image/png" => Some(ImageFormat::Png),
            _ => continue,
        };
        break;
    }
    let format = format.ok_or_else(|| {
        DicomWebError::NotAcceptable(
            "rendered images are available as image/jpeg or image/png".into(),
        )
    })?;
    let mut rendering = Rendering {
        format,
        window: None,
        viewport: thumbnail.then_some((THUMBNAIL_SIZE, THUMBNAIL_SIZE)),
        quality: DEFAULT_QUALITY,
    };
    for pair in req.query_string().split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        let numbers = || -> Vec<&str> { value.split(',').map(str::trim).collect() };
        match name {
            "window" => {
                let parts = numbers();
                let (Some(c), Some(w)) = (parts.first(), parts.get(1)) else {
                    return Err(bad(format!(
                        "window must be center,width[,function], not {value:?}"
                    )));
                };
                let finite = |v: &str| v.parse::<f64>().ok().filter(|v| v.is_finite());
                let center = finite(c).ok_or_else(|| bad(format!("bad window center {c:?}")))?;
                let width = finite(w).ok_or_else(|| bad(format!("bad window width {w:?}")))?;
                if width <= 0.0 {
                    return Err(bad("window width must be positive".into()));
                }
                let function = match parts.get(2).map(|f| f.to_ascii_lowercase()) {
                    None => VoiLutFunction::Linear,
                    Some(f) if f == "linear" => VoiLutFunction::Linear,
                    Some(f) if f == "linear-exact" || f == "linear_exact" => {
                        VoiLutFunction::LinearExact
                    }
                    Some(f) if f == "sigmoid" => VoiLutFunction::Sigmoid,
                    Some(f) => return Err(bad(format!("unknown window function {f:?}"))),
                };
                rendering.window = Some((WindowLevel { center, width }, function));
            }
            "viewport" => {
                let parts = numbers();
                let parse = |s: Option<&&str>| {
                    s.and_then(|v| v.parse::<u32>().ok())
                        .filter(|v| (1..=MAX_VIEWPORT).contains(v))
                };
                match (parse(parts.first()), parse(parts.get(1))) {
                    (Some(w), Some(h)) => rendering.viewport = Some((w, h)),
                    _ => {
                        return Err(bad(format!(
                            "viewport must be width,height (1–{MAX_VIEWPORT}), not {value:?}"
                        )))
                    }
                }
            }
            "quality" => {
                rendering.quality = value
                    .parse::<u8>()
                    .ok()
                    .filter(|q| (1..=100).contains(q))
                    .ok_or_else(|| bad(format!("quality must be 1–100, not {value:?}")))?;
            }
            // Annotations, ICC profiles and the rest are optional; ignored.
            _ => {}
        }
    }
    Ok(rendering)
}

/// Render frame `number` (1-based) of a decoded object.
fn render_frame(
    object: &DefaultDicomObject,
    number: u32,
    rendering: &Rendering,
) -> Result<Vec<u8>, DicomWebError> {
    let failed =
        |e: String| DicomWebError::NotAcceptable(format!("cannot render this object: {e}"));
    let pixels = object
        .decode_pixel_data_frame(number - 1)
        .map_err(|e| failed(e.to_string()))?;
    let (w, h) = (pixels.columns(), pixels.rows());
    let photometric = pixels.photometric_interpretation().clone();
    let image = if photometric.is_monochrome() {
        let voi = match &rendering.window {
            Some((window, function)) => VoiLutOption::CustomWithFunction(*window, *function),
            None => VoiLutOption::First,
        };
        let options = ConvertOptions::new().with_voi_lut(voi);
        // The LUT spans the stored depth rounded up to 8 or 16 bits; only a
        // 16-bit target holds both, so narrow afterwards.
        let wide: Vec<u16> = pixels
            .to_vec_frame_with_options(0, &options)
            .map_err(|e| failed(e.to_string()))?;
        let shift = if pixels.bits_stored() > 8 { 8 } else { 0 };
        let mut grey: Vec<u8> = wide.iter().map(|v| (v >> shift).min(255) as u8).collect();
        if photometric == PhotometricInterpretation::Monochrome1 {
            grey.iter_mut().for_each(|p| *p = 255 - *p);
        }
        image::GrayImage::from_raw(w, h, grey).map(DynamicImage::ImageLuma8)
    } else {
        let rgb: Vec<u8> = pixels.to_vec_frame(0).map_err(|e| failed(e.to_string()))?;
        image::RgbImage::from_raw(w, h, rgb).map(DynamicImage::ImageRgb8)
    }
    .ok_or_else(|| failed("decoded frame has an unexpected size".into()))?;
    let image = match rendering.viewport {
        Some((vw, vh)) if vw != w || vh != h => {
            image.resize(vw, vh, image::imageops::FilterType::Triangle)
        }
        _ => image,
    };
    let mut out = Cursor::new(Vec::new());
    if rendering.format == ImageFormat::Jpeg {
        let encoder =
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, rendering.quality);
        image.write_with_encoder(encoder)
    } else {
        image.write_to(&mut out, ImageFormat::Png)
    }
    .map_err(|e| DicomWebError::Internal(format!("cannot encode image: {e}")))?;
    Ok(out.into_inner())
}

/// A frame's pixel bytes from a loaded object: the stored bitstream when
/// `bitstream` (and the object is encapsulated), else decoded native bytes.
pub(super) fn decoded_frame(
    object: &DefaultDicomObject,
    number: u32,
    bitstream: bool,
) -> Result<Vec<u8>, DicomWebError> {
    let failed =
        |e: String| DicomWebError::NotAcceptable(format!("cannot decode frame {number}: {e}"));
    if bitstream {
        let element = object
            .element(dicom_dictionary_std::tags::PIXEL_DATA)
            .map_err(|e| failed(e.to_string()))?;
        let fragments = element
            .value()
            .fragments()
            .ok_or_else(|| failed("pixel data is not encapsulated".into()))?;
        let frames = object
            .element(dicom_dictionary_std::tags::NUMBER_OF_FRAMES)
            .ok()
            .and_then(|e| e.to_int::<u32>().ok())
            .unwrap_or(1)
            .max(1);
        return if frames == 1 {
            Ok(fragments.concat())
        } else if fragments.len() as u32 == frames {
            Ok(fragments[(number - 1) as usize].clone())
        } else {
            Err(failed("fragments cannot be assigned to frames".into()))
        };
    }
    let pixels = object
        .decode_pixel_data_frame(number - 1)
        .map_err(|e| failed(e.to_string()))?;
    Ok(pixels
        .frame_data(0)
        .map_err(|e| failed(e.to_string()))?
        .to_vec())
}

/// The raw value at a bulk data path (`tag[/item/tag]…`) of a stored object.
pub(super) async fn bulk_value(
    storage: &Storage,
    key: &str,
    path: &str,
) -> Result<Vec<u8>, DicomWebError> {
    let object = transcode::load(storage, key, transcode::Admission::Now).await?;
    let missing = || DicomWebError::NotFound(format!("no bulk data at {path}"));
    let parts: Vec<&str> = path.split('/').collect();
    let tag_of = |s: &str| -> Option<Tag> {
        Some(Tag(
            u16::from_str_radix(s.get(..4)?, 16).ok()?,
            u16::from_str_radix(s.get(4..)?, 16).ok()?,
        ))
    };
    let mut dataset: &dicom_object::InMemDicomObject = &object;
    let mut i = 0;
    loop {
        let tag = tag_of(parts[i]).ok_or_else(missing)?;
        let element = dataset.element(tag).map_err(|_| missing())?;
        if i + 1 == parts.len() {
            return element
                .value()
                .to_bytes()
                .map(|b| b.into_owned())
                .map_err(|_| missing());
        }
        let index: usize = parts[i + 1].parse().map_err(|_| missing())?;
        dataset = element
            .items()
            .and_then(|items| items.get(index))
            .ok_or_else(missing)?;
        i += 2;
    }
}

/// Which frames of which instances a rendered request covers.
fn targets(
    mut items: Vec<ScopedInstance>,
    frames: Option<Vec<u32>>,
    representative: bool,
) -> Vec<(ScopedInstance, u32)> {
    if representative {
        // A study or series thumbnail shows its middle image.
        let middle = items.len() / 2;
        items = vec![items.swap_remove(middle)];
    }
    match frames {
        Some(numbers) => {
            let item = items.remove(0);
            numbers.into_iter().map(|n| (item.clone(), n)).collect()
        }
        None => items.into_iter().map(|i| (i, 1)).collect(),
    }
}

async fn respond(
    req: &HttpRequest,
    state: &AppState,
    scope: Scope,
    frames: Option<Vec<u32>>,
    thumbnail: bool,
) -> Result<HttpResponse, DicomWebError> {
    let rendering = parse_rendering(req, thumbnail)?;
    let items = instances_of(state, &scope).await?;
    respond_with(state, &scope, items, frames, thumbnail, rendering).await
}

/// [`respond`] with the request's rendering read and the scope's instances
/// looked up.
async fn respond_with(
    state: &AppState,
    scope: &Scope,
    items: Vec<ScopedInstance>,
    frames: Option<Vec<u32>>,
    thumbnail: bool,
    rendering: Rendering,
) -> Result<HttpResponse, DicomWebError> {
    let single_instance = scope.instance.is_some();
    let targets = targets(items, frames, thumbnail && !single_instance);
    for (item, number) in &targets {
        if i64::from(*number) > item.number_of_frames.unwrap_or(1).max(1) {
            return Err(DicomWebError::NotFound(format!(
                "frame {number} does not exist"
            )));
        }
    }
    if targets.len() == 1 {
        let (item, number) = &targets[0];
        let image = render_one(&state.storage, item, *number, &rendering).await?;
        return Ok(HttpResponse::Ok()
            .content_type(rendering.mime())
            .body(image));
    }
    // Admission is decided before the response starts: refused now (503)
    // when every core is busy, and once streaming, parts wait their turn
    // rather than cut the body short.
    drop(transcode::cpu_permit(transcode::Admission::Now).await?);
    let (response, mut parts) = multipart::response(rendering.mime());
    let storage = state.storage.clone();
    tokio::spawn(async move {
        // Frames of one instance come in a row: it is loaded once for all.
        let mut loaded: Option<(String, Arc<DefaultDicomObject>)> = None;
        for (item, number) in targets {
            let object = match &loaded {
                Some((key, object)) if *key == item.key => Ok(object.clone()),
                _ => transcode::load(&storage, &item.key, transcode::Admission::Wait)
                    .await
                    .map(Arc::new)
                    .map_err(DicomWebError::from),
            };
            let rendered = match object {
                Ok(object) => {
                    loaded = Some((item.key.clone(), object.clone()));
                    render_loaded(object, number, &rendering, transcode::Admission::Wait).await
                }
                Err(e) => Err(e),
            };
            match rendered {
                Ok(image) => {
                    if parts.begin_part(rendering.mime(), None).await.is_err()
                        || parts.send(Bytes::from(image)).await.is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    parts.fail(e.to_string()).await;
                    return;
                }
            }
        }
        parts.finish().await;
    });
    Ok(response)
}

async fn render_one(
    storage: &Storage,
    item: &ScopedInstance,
    number: u32,
    rendering: &Rendering,
) -> Result<Vec<u8>, DicomWebError> {
    let now = transcode::Admission::Now;
    let object = transcode::load(storage, &item.key, now).await?;
    render_loaded(Arc::new(object), number, rendering, now).await
}

async fn render_loaded(
    object: Arc<DefaultDicomObject>,
    number: u32,
    rendering: &Rendering,
    admission: transcode::Admission,
) -> Result<Vec<u8>, DicomWebError> {
    let rendering = rendering.clone();
    transcode::on_cpu(admission, move || render_frame(&object, number, &rendering)).await?
}

type Resp = Result<HttpResponse, DicomWebError>;

pub async fn study_rendered(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Resp {
    respond(&req, &state, study_scope(&path)?, None, false).await
}

pub async fn study_thumbnail(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Resp {
    respond(&req, &state, study_scope(&path)?, None, true).await
}

pub async fn series_rendered(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Resp {
    respond(&req, &state, series_scope(path.into_inner())?, None, false).await
}

pub async fn series_thumbnail(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Resp {
    respond(&req, &state, series_scope(path.into_inner())?, None, true).await
}

pub async fn instance_rendered(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String, String)>,
) -> Resp {
    let scope = instance_scope(path.into_inner())?;
    let items = instances_of(&state, &scope).await?;
    if let [item] = items.as_slice() {
        if super::video::wanted(&req, item) {
            return super::video::respond(&req, &state, item).await;
        }
    }
    let rendering = parse_rendering(&req, false)?;
    respond_with(&state, &scope, items, None, false, rendering).await
}

pub async fn instance_thumbnail(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String, String)>,
) -> Resp {
    respond(&req, &state, instance_scope(path.into_inner())?, None, true).await
}

pub async fn frames_rendered(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String, String, String)>,
) -> Resp {
    frames(&req, &state, path.into_inner(), false).await
}

pub async fn frames_thumbnail(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String, String, String)>,
) -> Resp {
    frames(&req, &state, path.into_inner(), true).await
}

async fn frames(
    req: &HttpRequest,
    state: &AppState,
    (study, series, instance, list): (String, String, String, String),
    thumbnail: bool,
) -> Resp {
    let frames = frame_numbers(&list)?;
    let scope = instance_scope((study, series, instance))?;
    respond(req, state, scope, Some(frames), thumbnail).await
}

/// Render one instance for WADO-URI.
pub(super) async fn render_for_uri(
    storage: &Storage,
    item: &ScopedInstance,
    frame: u32,
    viewport: Option<(u32, u32)>,
    window: Option<(f64, f64)>,
    quality: Option<u8>,
    png: bool,
) -> Result<Vec<u8>, DicomWebError> {
    let rendering = Rendering {
        format: if png {
            ImageFormat::Png
        } else {
            ImageFormat::Jpeg
        },
        window: window
            .map(|(center, width)| (WindowLevel { center, width }, VoiLutFunction::Linear)),
        viewport,
        quality: quality.unwrap_or(DEFAULT_QUALITY),
    };
    render_one(storage, item, frame, &rendering).await
}
