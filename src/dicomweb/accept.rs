//! Content negotiation (PS3.18 8.7): the Accept header (or the `accept`
//! query parameter, which overrides it) parsed into media ranges with their
//! `type` and `transfer-syntax` parameters.

use actix_web::HttpRequest;

use super::DicomWebError;
use crate::transcode::EXPLICIT_VR_LITTLE_ENDIAN;

/// One acceptable media range.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaRange {
    /// Lower-case `type/subtype`.
    pub mime: String,
    /// The `type` parameter of `multipart/related`.
    pub part_type: Option<String>,
    pub transfer_syntax: Option<String>,
    pub quality: f32,
}

impl MediaRange {
    /// The media type of the parts: `type` for multipart, else the range.
    pub fn payload(&self) -> &str {
        if self.mime == "multipart/related" {
            self.part_type.as_deref().unwrap_or("*/*")
        } else {
            &self.mime
        }
    }

    pub fn payload_matches(&self, mime: &str) -> bool {
        let payload = self.payload();
        payload == "*/*"
            || payload == mime
            || payload
                .strip_suffix("/*")
                .is_some_and(|t| mime.split('/').next() == Some(t))
    }
}

/// The ranges a request accepts, best first; `*/*` when it states none.
pub fn ranges(req: &HttpRequest) -> Vec<MediaRange> {
    let from_query = req
        .query_string()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == "accept")
        .map(|(_, v)| percent_decode(v))
        .collect::<Vec<_>>()
        .join(",");
    let header = req
        .headers()
        .get_all(actix_web::http::header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let text = if from_query.is_empty() {
        header
    } else {
        from_query
    };
    let mut ranges: Vec<MediaRange> = split_top_level(&text)
        .iter()
        .filter_map(|r| parse_range(r))
        .filter(|r| r.quality > 0.0)
        .collect();
    if ranges.is_empty() {
        ranges.push(MediaRange {
            mime: "*/*".into(),
            part_type: None,
            transfer_syntax: None,
            quality: 1.0,
        });
    }
    ranges.sort_by(|a, b| b.quality.total_cmp(&a.quality));
    ranges
}

/// Split on commas outside quotes.
fn split_top_level(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    out.push(current);
    out.into_iter().filter(|s| !s.trim().is_empty()).collect()
}

fn parse_range(text: &str) -> Option<MediaRange> {
    let mut parts = text.split(';');
    let mime = parts.next()?.trim().to_ascii_lowercase();
    if !mime.contains('/') {
        return None;
    }
    let mut range = MediaRange {
        mime,
        part_type: None,
        transfer_syntax: None,
        quality: 1.0,
    };
    for param in parts {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"').to_owned();
        match name.trim().to_ascii_lowercase().as_str() {
            "type" => range.part_type = Some(value.to_ascii_lowercase()),
            "transfer-syntax" => range.transfer_syntax = Some(value),
            "q" => range.quality = value.parse().unwrap_or(1.0),
            _ => {}
        }
    }
    Some(range)
}

pub(super) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How instances are to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DicomSyntax {
    AsStored,
    /// Convert anything not already in this syntax.
    Target(String),
}

impl DicomSyntax {
    /// The syntax to send an object stored in `stored` in.
    pub fn for_stored<'a>(&'a self, stored: &'a str) -> &'a str {
        match self {
            DicomSyntax::AsStored => stored,
            DicomSyntax::Target(ts) => ts,
        }
    }
}

/// Negotiate `application/dicom` retrieval. Without a transfer-syntax
/// parameter the PS3.18 default, Explicit VR Little Endian, applies.
pub fn dicom_syntax(req: &HttpRequest) -> Result<DicomSyntax, DicomWebError> {
    for range in ranges(req) {
        if !(range.mime == "multipart/related" || range.mime == "*/*")
            || !range.payload_matches("application/dicom")
        {
            continue;
        }
        return Ok(match range.transfer_syntax.as_deref() {
            Some("*") => DicomSyntax::AsStored,
            Some(ts) if crate::transcode::TARGETS.contains(&ts) => {
                DicomSyntax::Target(ts.to_owned())
            }
            Some(ts) => DicomSyntax::Target(ts.to_owned()),
            None => DicomSyntax::Target(EXPLICIT_VR_LITTLE_ENDIAN.to_owned()),
        });
    }
    Err(DicomWebError::NotAcceptable(
        "instances are available as multipart/related; type=\"application/dicom\"".into(),
    ))
}

/// The media type of a transfer syntax's pixel data bitstream (PS3.18
/// table 8.7.3-2); native syntaxes are `application/octet-stream`.
pub fn bitstream_media_type(ts: &str) -> &'static str {
    match ts {
        "1.2.840.10008.1.2.4.50"
        | "1.2.840.10008.1.2.4.51"
        | "1.2.840.10008.1.2.4.57"
        | "1.2.840.10008.1.2.4.70" => "image/jpeg",
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => "image/jls",
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => "image/jp2",
        "1.2.840.10008.1.2.4.92" | "1.2.840.10008.1.2.4.93" => "image/jpx",
        "1.2.840.10008.1.2.4.201" | "1.2.840.10008.1.2.4.202" | "1.2.840.10008.1.2.4.203" => {
            "image/jphc"
        }
        "1.2.840.10008.1.2.5" => "image/dicom-rle",
        "1.2.840.10008.1.2.4.100" | "1.2.840.10008.1.2.4.101" => "video/mpeg",
        "1.2.840.10008.1.2.4.102"
        | "1.2.840.10008.1.2.4.103"
        | "1.2.840.10008.1.2.4.104"
        | "1.2.840.10008.1.2.4.105"
        | "1.2.840.10008.1.2.4.106" => "video/mp4",
        "1.2.840.10008.1.2.4.107" | "1.2.840.10008.1.2.4.108" => "video/H265",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quoted_parameters() {
        let list = split_top_level(
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*, application/json;q=0.5",
        );
        assert_eq!(list.len(), 2);
        let first = parse_range(&list[0]).unwrap();
        assert_eq!(first.mime, "multipart/related");
        assert_eq!(first.part_type.as_deref(), Some("application/dicom"));
        assert_eq!(first.transfer_syntax.as_deref(), Some("*"));
        assert!(first.payload_matches("application/dicom"));
        assert!(!first.payload_matches("image/jpeg"));
        assert_eq!(parse_range(&list[1]).unwrap().quality, 0.5);
    }

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(percent_decode("image%2Fjpeg"), "image/jpeg");
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
