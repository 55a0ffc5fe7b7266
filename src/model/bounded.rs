//! Reading a small data set that came over the network (a query identifier,
//! a storage commitment request or report) without trusting its lengths.
//! dicom-rs allocates each value at the length its header declares before
//! reading it, so four bytes of a hostile identifier could ask for 4 GiB.
//! A first pass walks the structure lazily (values skipped, nothing
//! allocated) and refuses any length that reaches past the data, and
//! nesting deeper than [`MAX_DEPTH`]; only then is the data set parsed.

use std::io::Cursor;

use dicom_encoding::{TransferSyntax, TransferSyntaxIndex};
use dicom_object::InMemDicomObject;
use dicom_parser::dataset::lazy_read::LazyDataSetReader;
use dicom_parser::dataset::LazyDataToken;
use dicom_parser::stateful::decode::{DynStatefulDecoder, StatefulDecode};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

const PIXEL_DATA: dicom_core::Tag = dicom_core::Tag(0x7FE0, 0x0010);

/// Sequences nested deeper than this are refused, as at ingest.
pub const MAX_DEPTH: usize = 64;

/// A deflated data set may inflate to at most this many bytes here.
pub const MAX_INFLATED: u64 = 16 * 1024 * 1024;

/// Syntaxes whose whole data set is deflated explicit VR little endian:
/// Deflated Explicit VR LE, JPIP Referenced Deflate, JPIP HTJ2K Referenced
/// Deflate.
pub const DEFLATED_SYNTAXES: &[&str] = &[
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.4.95",
    "1.2.840.10008.1.2.4.205",
];
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

/// Parse `bytes` as a data set in `ts` once its structure has been checked.
/// A deflated one is inflated first, up to [`MAX_INFLATED`] bytes.
pub fn read_dataset(bytes: &[u8], ts: &TransferSyntax) -> Result<InMemDicomObject, String> {
    if is_deflated(ts) {
        let inflated = inflate(bytes)?;
        let explicit = TransferSyntaxRegistry
            .get(EXPLICIT_VR_LE)
            .ok_or("explicit VR little endian is not registered")?;
        return read_dataset(&inflated, explicit);
    }
    check_structure(bytes, ts)?;
    without_panic(|| InMemDicomObject::read_dataset_with_ts(bytes, ts))?.map_err(|e| e.to_string())
}

fn is_deflated(ts: &TransferSyntax) -> bool {
    DEFLATED_SYNTAXES.contains(&ts.uid().trim_end_matches('\0'))
}

fn inflate(bytes: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(bytes)
        .take(MAX_INFLATED + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("cannot inflate the data set: {e}"))?;
    if out.len() as u64 > MAX_INFLATED {
        return Err(format!(
            "the data set inflates to more than {MAX_INFLATED} bytes"
        ));
    }
    Ok(out)
}

/// Whether a value of `len` bytes holds whole values of `vr`. dicom-rs
/// reads binary values one by one and leaves any remainder unread, so the
/// next element header would be read from the middle of a value: a length
/// from there is garbage, and allocated. Callers let odd-length Pixel Data
/// pass only as the last element (some devices write 8-bit pixels so in
/// Implicit VR), where nothing is read after it.
pub fn length_fits_vr(vr: dicom_core::VR, len: u32) -> bool {
    use dicom_core::VR::*;
    let size = match vr {
        US | SS | OW => 2,
        UL | SL | FL | AT | OF | OL => 4,
        FD | OD | SV | UV | OV => 8,
        _ => return true,
    };
    len % size == 0
}

/// Run `walk`, a pass of dicom-parser's readers over untrusted bytes, and
/// turn a panic into an error. dicom-parser 0.10 panics on some malformed
/// input (an item header where it tracks no open sequence, found by
/// fuzzing); such a data set is refused, not a task lost.
pub fn without_panic<T>(walk: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(walk)).map_err(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        format!("the DICOM parser gave up on the data set: {what}")
    })
}

/// Walk `bytes` without reading values: every element, item and fragment
/// must end within the data, sequences must close, and nesting is bounded.
pub fn check_structure(bytes: &[u8], ts: &TransferSyntax) -> Result<(), String> {
    without_panic(|| walk_structure(bytes, ts))?
}

fn walk_structure(bytes: &[u8], ts: &TransferSyntax) -> Result<(), String> {
    if ts.is_unsupported() || is_deflated(ts) {
        return Err(format!("transfer syntax {} is not accepted here", ts.uid()));
    }
    let charset = dicom_encoding::text::SpecificCharacterSet::default();
    let decoder = DynStatefulDecoder::new_with(Cursor::new(bytes), ts, charset, 0)
        .map_err(|e| e.to_string())?;
    let mut reader = LazyDataSetReader::new(decoder);
    let mut depth = 0usize;
    let total = bytes.len() as u64;
    let mut odd_pixel_data = false;
    while let Some(token) = reader.advance() {
        let token = token.map_err(|e| e.to_string())?;
        if odd_pixel_data {
            return Err("elements follow odd-length Pixel Data".into());
        }
        match token {
            LazyDataToken::SequenceStart { .. } | LazyDataToken::PixelSequenceStart => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!("sequences nested deeper than {MAX_DEPTH} levels"));
                }
            }
            LazyDataToken::SequenceEnd => depth = depth.saturating_sub(1),
            LazyDataToken::LazyValue { header, decoder } => {
                if !header.len.is_undefined() && !length_fits_vr(header.vr, header.len.0) {
                    if header.tag != PIXEL_DATA || depth > 0 {
                        return Err(format!(
                            "{} is {} bytes, not a whole number of {:?} values",
                            header.tag, header.len.0, header.vr
                        ));
                    }
                    odd_pixel_data = true;
                }
                let end = decoder.position() + u64::from(header.len.0);
                if !header.len.is_undefined() && end > total {
                    return Err(format!(
                        "{} declares {} bytes; only {} are left",
                        header.tag,
                        header.len.0,
                        total.saturating_sub(decoder.position())
                    ));
                }
                LazyDataToken::LazyValue { header, decoder }
                    .skip()
                    .map_err(|e| e.to_string())?;
            }
            LazyDataToken::LazyItemValue { len, decoder } => {
                if decoder.position() + u64::from(len) > total {
                    return Err(format!("an item declares {len} bytes past the data"));
                }
                LazyDataToken::LazyItemValue { len, decoder }
                    .skip()
                    .map_err(|e| e.to_string())?;
            }
            _ => {}
        }
    }
    let consumed = reader.into_decoder().position();
    if depth != 0 {
        return Err("the data set ends inside a sequence".into());
    }
    if consumed != total {
        return Err(format!(
            "{consumed} bytes of structure in {total} bytes of data"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn implicit() -> &'static TransferSyntax {
        TransferSyntaxRegistry
            .get("1.2.840.10008.1.2")
            .expect("implicit VR LE")
    }

    fn element(group: u16, elem: u16, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&group.to_le_bytes());
        out.extend_from_slice(&elem.to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    #[test]
    fn a_length_inside_a_sequence_cannot_reach_past_the_data() {
        // (0008,1115) Referenced Series Sequence, undefined length, one
        // item of undefined length holding an element that claims 4 GiB.
        let mut data = element(0x0010, 0x0020, b"P1");
        data.extend_from_slice(&[0x08, 0x00, 0x15, 0x11, 0xFF, 0xFF, 0xFF, 0xFF]);
        data.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        data.extend_from_slice(&[0x20, 0x00, 0x0E, 0x00, 0xF0, 0xFF, 0xFF, 0xFF]);
        data.extend_from_slice(b"1.2.3.4");
        let refused = read_dataset(&data, implicit());
        assert!(refused.is_err(), "{refused:?}");
        assert!(read_dataset(&element(0x0010, 0x0020, b"P1"), implicit()).is_ok());
    }

    #[test]
    fn nesting_is_bounded() {
        let mut data = Vec::new();
        for _ in 0..(MAX_DEPTH + 1) {
            data.extend_from_slice(&[0x08, 0x00, 0x15, 0x11, 0xFF, 0xFF, 0xFF, 0xFF]);
            data.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        for _ in 0..(MAX_DEPTH + 1) {
            data.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
            data.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        }
        let refused = check_structure(&data, implicit()).expect_err("too deep");
        assert!(refused.contains("nested deeper"), "{refused}");
    }
}
