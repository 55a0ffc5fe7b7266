//! Text values of a parsed data set decoded again, from their raw bytes,
//! with [`decode_text`]: the one decoder the index uses. dicom-rs does not
//! switch character sets on ISO 2022 escape sequences, so without this a
//! Japanese query or metadata document would disagree with what was
//! indexed for the same patient.

use std::io::Read;

use dicom_core::header::Header;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_parser::dataset::lazy_read::LazyDataSetReader;
use dicom_parser::dataset::LazyDataToken;
use dicom_parser::stateful::decode::DynStatefulDecoder;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::decode_text;

/// VRs whose values are in the Specific Character Set.
const TEXT_VRS: &[VR] = &[VR::PN, VR::LO, VR::SH, VR::LT, VR::ST, VR::UT, VR::UC];
/// Longer text values are left as dicom-rs decoded them.
const MAX_VALUE: u32 = 64 * 1024;

/// The Specific Character Set of `obj`, as written.
pub fn character_set_of(obj: &InMemDicomObject) -> String {
    obj.get(tags::SPECIFIC_CHARACTER_SET)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.into_owned())
        .unwrap_or_default()
}

/// Whether dicom-rs and [`decode_text`] can disagree on this character set.
pub fn needs_redecoding(specific_character_set: &str) -> bool {
    specific_character_set.contains("2022") || specific_character_set.contains('\\')
}

/// Replace every top-level text value of `obj` by [`decode_text`] of its
/// raw bytes, read from `dataset` (the same data set, in `ts_uid`).
pub fn redecode_top_level(
    obj: &mut InMemDicomObject,
    dataset: impl Read,
    ts_uid: &str,
) -> Result<(), String> {
    let charset = character_set_of(obj);
    let ts = TransferSyntaxRegistry
        .get(ts_uid)
        .filter(|ts| !ts.is_unsupported())
        .ok_or_else(|| format!("unknown transfer syntax {ts_uid}"))?;
    let decoder = DynStatefulDecoder::new_with(
        dataset,
        ts,
        dicom_encoding::text::SpecificCharacterSet::default(),
        0,
    )
    .map_err(|e| e.to_string())?;
    let mut reader = LazyDataSetReader::new(decoder);
    let mut depth = 0usize;
    let mut values: Vec<(Tag, VR, Vec<u8>)> = Vec::new();
    while let Some(token) = reader.advance() {
        let token = token.map_err(|e| e.to_string())?;
        match token {
            LazyDataToken::SequenceStart { .. } | LazyDataToken::PixelSequenceStart => depth += 1,
            LazyDataToken::SequenceEnd => depth = depth.saturating_sub(1),
            LazyDataToken::LazyValue { header, decoder } => {
                let token = LazyDataToken::LazyValue { header, decoder };
                if depth == 0 && TEXT_VRS.contains(&header.vr()) && header.len.0 <= MAX_VALUE {
                    let mut bytes = Vec::new();
                    token
                        .read_value_into(&mut bytes)
                        .map_err(|e| e.to_string())?;
                    values.push((header.tag(), header.vr(), bytes));
                } else {
                    token.skip().map_err(|e| e.to_string())?;
                }
            }
            LazyDataToken::LazyItemValue { len, decoder } => {
                LazyDataToken::LazyItemValue { len, decoder }
                    .skip()
                    .map_err(|e| e.to_string())?;
            }
            _ => {}
        }
    }
    for (tag, vr, bytes) in values {
        let text = decode_text(&charset, &bytes);
        let text = text.trim_end_matches([' ', '\0']);
        let parts: Vec<&str> = text.split('\\').collect();
        let value = if parts.len() > 1 && !matches!(vr, VR::LT | VR::ST | VR::UT) {
            PrimitiveValue::Strs(parts.iter().map(|p| (*p).to_owned()).collect())
        } else {
            PrimitiveValue::from(text)
        };
        obj.put(DataElement::new(tag, vr, value));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_2022_names_are_decoded_like_the_index() {
        // PS3.5 H.3.1: Yamada^Tarou=山田^太郎=やまだ^たろう
        let raw: &[u8] =
            b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B";
        let mut dataset = Vec::new();
        let mut put = |tag: [u8; 4], value: &[u8]| {
            dataset.extend_from_slice(&tag);
            let mut v = value.to_vec();
            if v.len() % 2 == 1 {
                v.push(b' ');
            }
            dataset.extend_from_slice(&(v.len() as u32).to_le_bytes());
            dataset.extend_from_slice(&v);
        };
        put([0x08, 0x00, 0x05, 0x00], b"\\ISO 2022 IR 87");
        put([0x10, 0x00, 0x10, 0x00], raw);
        let ts = "1.2.840.10008.1.2";
        let mut obj = InMemDicomObject::read_dataset_with_ts(
            dataset.as_slice(),
            TransferSyntaxRegistry.get(ts).expect("ts"),
        )
        .expect("parses");
        redecode_top_level(&mut obj, dataset.as_slice(), ts).expect("redecoded");
        let name = obj
            .get(tags::PATIENT_NAME)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.into_owned());
        assert_eq!(
            name.as_deref(),
            Some("Yamada^Tarou=山田^太郎=やまだ^たろう")
        );
    }
}
