//! Reading what the index needs from a spooled Part-10 object, without
//! holding it in memory.
//!
//! The file meta group is parsed by dicom-object; the data set is walked
//! token by token with dicom-parser's lazy reader. Top-level attributes the
//! index needs are read as raw bytes (so text can be decoded with the full
//! ISO 2022 rules in [`crate::model::decode_text`]); everything else,
//! including multi-gigabyte pixel data, is skipped. Walking to the end also
//! proves the data set is complete: a truncated or malformed object fails
//! here and is never committed. Blocking: call from `spawn_blocking`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_parser::dataset::lazy_read::LazyDataSetReader;
use dicom_parser::dataset::LazyDataToken;
use dicom_parser::stateful::decode::{DynStatefulDecoder, StatefulDecode};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use crate::model::{
    decode_text, InstanceMeta, PatientMeta, PixelLayout, SeriesMeta, StudyMeta, Uid,
    DEFLATED_SYNTAXES,
};

const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
const BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";
const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
/// No indexed attribute is anywhere near this long; a longer value is
/// skipped rather than read.
const MAX_INDEXED_VALUE: u32 = 64 * 1024;
/// Sequences nested deeper than this are refused at ingest: no IOD comes
/// close, and every later reader of the object (conversion, JSON, C-GET)
/// would otherwise have to survive the depth a sender chose.
pub use crate::model::MAX_SEQUENCE_DEPTH;
/// A Basic Offset Table larger than this (over two million frames) is not
/// read; such an object's frames are found by decoding instead.
const MAX_OFFSET_TABLE: u32 = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("cannot read object: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a DICOM Part-10 object: {0}")]
    Meta(String),
    #[error("unknown or unsupported transfer syntax {0}")]
    TransferSyntax(String),
    #[error("malformed data set at byte {offset}: {reason}")]
    Malformed { offset: u64, reason: String },
    #[error("data set is truncated: {declared} bytes declared, {actual} present")]
    Truncated { declared: u64, actual: u64 },
    #[error("required attribute {0} is missing or invalid")]
    Missing(&'static str),
    #[error("{0}")]
    Mismatch(String),
}

/// What the header walk found.
#[derive(Debug, Clone)]
pub struct ParsedHeader {
    pub meta: InstanceMeta,
    pub transfer_syntax_uid: Uid,
    /// Where the frames are, when they can be located without decoding.
    pub pixels: Option<PixelLayout>,
    pub has_pixel_data: bool,
}

/// Pixel Data as the walk met it, in data-set offsets.
#[derive(Debug, Default)]
struct PixelScan {
    /// Native Pixel Data: value offset and length.
    native: Option<(u64, u64)>,
    /// Encapsulated Pixel Data: each item's value offset and length; the
    /// first item is the Basic Offset Table.
    items: Vec<(u64, u64)>,
    offset_table: Vec<u8>,
}

/// The attributes the index keeps, read at the top level of the data set.
const WANTED: &[Tag] = &[
    tags::SPECIFIC_CHARACTER_SET,
    tags::SOP_CLASS_UID,
    tags::SOP_INSTANCE_UID,
    tags::STUDY_DATE,
    tags::CONTENT_DATE,
    tags::STUDY_TIME,
    tags::CONTENT_TIME,
    tags::ACCESSION_NUMBER,
    tags::MODALITY,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::STUDY_DESCRIPTION,
    tags::SERIES_DESCRIPTION,
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::ISSUER_OF_PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::BODY_PART_EXAMINED,
    tags::STUDY_INSTANCE_UID,
    tags::SERIES_INSTANCE_UID,
    tags::STUDY_ID,
    tags::SERIES_NUMBER,
    tags::INSTANCE_NUMBER,
    tags::NUMBER_OF_FRAMES,
    tags::ROWS,
    tags::COLUMNS,
    tags::PERFORMED_PROCEDURE_STEP_START_DATE,
    tags::PERFORMED_PROCEDURE_STEP_START_TIME,
    tags::BITS_ALLOCATED,
    tags::TIMEZONE_OFFSET_FROM_UTC,
    tags::SAMPLES_PER_PIXEL,
    tags::SERIES_DATE,
    tags::SERIES_TIME,
    tags::INSTITUTION_NAME,
    tags::STATION_NAME,
];

/// Read from the first item of the Request Attributes Sequence, which QIDO-RS
/// returns at series level.
const WANTED_IN_REQUEST_ATTRIBUTES: &[Tag] = &[
    tags::SCHEDULED_PROCEDURE_STEP_ID,
    tags::REQUESTED_PROCEDURE_ID,
];

struct RawValue {
    vr: VR,
    bytes: Vec<u8>,
}

/// The most of an object's first bytes a walk of its head looks at; the
/// header of an image with a larger one is walked whole.
pub(crate) const HEAD_MAX: usize = 256 * 1024;

/// Parse and validate the object at `path`.
pub fn parse(path: &Path) -> Result<ParsedHeader, HeaderError> {
    let file = File::open(path)?;
    let total = file.metadata()?.len();
    parse_stored(file, total)
}

/// Parse an object of `total` bytes read from its first byte by `file`,
/// reading as little of it as settles it.
fn parse_stored<R: Read + Seek>(mut file: R, total: u64) -> Result<ParsedHeader, HeaderError> {
    // Most images end with native Pixel Data, which their head settles:
    // reading through it would only copy it (megabytes, for a CR).
    let mut prefix = Vec::with_capacity(HEAD_MAX);
    (&mut file).take(HEAD_MAX as u64).read_to_end(&mut prefix)?;
    if let Some(head) = parse_head(&prefix).filter(|head| settled_by_head(head, total)) {
        return Ok(head.settled());
    }
    file.rewind()?;
    parse_from(BufReader::with_capacity(128 * 1024, file), total)
}

/// Parse and validate a Part-10 object of `total` bytes read from `file`.
pub(crate) fn parse_from<R: Read + Seek>(
    mut file: R,
    total: u64,
) -> Result<ParsedHeader, HeaderError> {
    let (file_meta, ts_uid) = read_file_meta(&mut file)?;
    let dataset_start = file.stream_position()?;
    let deflated = DEFLATED_SYNTAXES.contains(&ts_uid.as_str());
    let dataset_len = total - dataset_start.min(total);
    let (raw, scan) =
        crate::model::without_panic(|| walk_dataset(file, ts_uid.as_str(), dataset_len))
            .unwrap_or_else(|reason| Err(HeaderError::Malformed { offset: 0, reason }))?;
    let meta = build_meta(&raw, &file_meta)?;
    // Offsets into a deflated stream do not address the stored file.
    let pixels = if deflated {
        None
    } else {
        pixel_layout(
            &scan,
            &meta,
            integer(&raw, tags::SAMPLES_PER_PIXEL),
            dataset_start,
        )?
    };
    Ok(ParsedHeader {
        meta,
        transfer_syntax_uid: ts_uid,
        pixels,
        has_pixel_data: scan.native.is_some() || !scan.items.is_empty(),
    })
}

/// What a walk of an object's first bytes found: everything up to the
/// top-level Pixel Data, whose header those bytes hold.
pub(crate) struct Head {
    samples_per_pixel: Option<i64>,
    ts_uid: Uid,
    dataset_start: u64,
    /// Data-set offset of the Pixel Data element's first byte.
    pixel_element: u64,
    /// Data-set offset of its value: the first item, when encapsulated.
    pixel_value: u64,
    /// Native Pixel Data: value offset and length.
    native: Option<(u64, u64)>,
    pub meta: InstanceMeta,
    /// The frames, as far as the head can tell: all of them for native
    /// Pixel Data, which is what the metadata document needs to know.
    pub provisional: Option<PixelLayout>,
}

/// Walk `prefix`, the first bytes of an object still arriving, up to its
/// top-level Pixel Data, so that only the rest is left once it is whole.
/// `None` when the prefix does not reach that far, for deflated objects
/// (their offsets address the inflated stream, which ends with the
/// object), and whenever anything is wrong: the whole walk then finds and
/// reports it.
pub(crate) fn parse_head(prefix: &[u8]) -> Option<Head> {
    let mut file = std::io::Cursor::new(prefix);
    let mut preamble = [0u8; 128];
    file.read_exact(&mut preamble).ok()?;
    let file_meta = super::part10::read_meta(&mut file).ok()?;
    let ts_uid = Uid::new(&file_meta.transfer_syntax).ok()?;
    if DEFLATED_SYNTAXES.contains(&ts_uid.as_str()) {
        return None;
    }
    let ts = TransferSyntaxRegistry
        .get(ts_uid.as_str())
        .filter(|ts| !ts.is_unsupported())?;
    let dataset_start = file.position();
    let charset = dicom_encoding::text::SpecificCharacterSet::default();
    let decoder = DynStatefulDecoder::new_with(file, ts, charset, 0).ok()?;
    let big_endian = ts_uid.as_str() == BIG_ENDIAN;
    let walked =
        crate::model::without_panic(|| collect(LazyDataSetReader::new(decoder), big_endian, true));
    let (raw, _, reached, stop) = walked.ok()?.ok()?;
    // The element's header is 12 bytes where explicit VR gives it a
    // 4-byte length (always so for undefined length), else 8.
    let explicit = ts_uid.as_str() != IMPLICIT_VR_LE;
    let long = |vr: VR| {
        explicit
            && matches!(
                vr,
                VR::OB
                    | VR::OD
                    | VR::OF
                    | VR::OL
                    | VR::OV
                    | VR::OW
                    | VR::SQ
                    | VR::SV
                    | VR::UC
                    | VR::UN
                    | VR::UR
                    | VR::UT
                    | VR::UV
            )
    };
    let (header_len, native) = match stop? {
        PixelStop::Native(vr, len) => (
            if long(vr) { 12 } else { 8 },
            Some((reached, u64::from(len))),
        ),
        PixelStop::Encapsulated => (if explicit { 12 } else { 8 }, None),
    };
    let pixel_element = reached.checked_sub(header_len)?;
    // Private syntaxes may differ: the tag must be where the header starts.
    let tag: [u8; 4] = if big_endian {
        [0x7F, 0xE0, 0x00, 0x10]
    } else {
        [0xE0, 0x7F, 0x10, 0x00]
    };
    let at = usize::try_from(dataset_start + pixel_element).ok()?;
    if prefix.get(at..at + 4)? != tag {
        return None;
    }
    let meta = build_meta(&raw, &file_meta).ok()?;
    let samples_per_pixel = integer(&raw, tags::SAMPLES_PER_PIXEL);
    let scan = PixelScan {
        native,
        ..PixelScan::default()
    };
    let provisional = pixel_layout(&scan, &meta, samples_per_pixel, dataset_start).ok()?;
    Some(Head {
        samples_per_pixel,
        ts_uid,
        dataset_start,
        pixel_element,
        pixel_value: reached,
        native: scan.native,
        meta,
        provisional,
    })
}

/// Finish over the whole object `bytes` the walk that [`parse_head`]
/// began: from the Pixel Data to the end. `None` when the rest does not
/// walk cleanly, or holds anything the head would have kept: the whole
/// walk then decides, and words the error.
pub(crate) fn parse_rest(head: Head, bytes: &[u8]) -> Option<ParsedHeader> {
    if settled_by_head(&head, bytes.len() as u64) {
        return Some(head.settled());
    }
    let dataset_len = (bytes.len() as u64).checked_sub(head.dataset_start)?;
    let from = usize::try_from(head.dataset_start + head.pixel_element).ok()?;
    let rest = bytes.get(from..)?;
    let ts = TransferSyntaxRegistry.get(head.ts_uid.as_str())?;
    let charset = dicom_encoding::text::SpecificCharacterSet::default();
    let decoder =
        DynStatefulDecoder::new_with(std::io::Cursor::new(rest), ts, charset, head.pixel_element)
            .ok()?;
    let big_endian = head.ts_uid.as_str() == BIG_ENDIAN;
    let walked =
        crate::model::without_panic(|| collect(LazyDataSetReader::new(decoder), big_endian, false));
    let (values, scan, consumed, _) = walked.ok()?.ok()?;
    if consumed != dataset_len || !values.is_empty() {
        return None;
    }
    head.finished_by(&scan)
}

/// Whether the native Pixel Data [`parse_head`] found ends the data set
/// of an object of `total` bytes, as it mostly does: the head then settles
/// the whole header (see [`Head::settled`]), with nothing left to walk.
pub(crate) fn settled_by_head(head: &Head, total: u64) -> bool {
    let dataset_len = total.checked_sub(head.dataset_start);
    head.native.is_some_and(|(offset, len)| {
        dataset_len.is_some() && offset.checked_add(len) == dataset_len
    })
}

impl Head {
    /// The whole header, once the rest of the walk found the Pixel Data's
    /// layout to be `scan`; `None` when the layout does not add up, for the
    /// whole walk to word the error.
    fn finished_by(self, scan: &PixelScan) -> Option<ParsedHeader> {
        let pixels =
            pixel_layout(scan, &self.meta, self.samples_per_pixel, self.dataset_start).ok()?;
        Some(ParsedHeader {
            meta: self.meta,
            transfer_syntax_uid: self.ts_uid,
            pixels,
            has_pixel_data: scan.native.is_some() || !scan.items.is_empty(),
        })
    }

    pub(crate) fn settled(self) -> ParsedHeader {
        ParsedHeader {
            meta: self.meta,
            transfer_syntax_uid: self.ts_uid,
            pixels: self.provisional,
            has_pixel_data: true,
        }
    }
}

/// Where a [`FragmentScan`] is.
enum Scanning {
    /// Reading item headers; `header` holds the first `have` bytes of one.
    Items { header: [u8; 8], have: usize },
    /// Copying the Basic Offset Table, `left` bytes still to come.
    Table { left: usize },
    /// The sequence delimiter ended at this stream offset.
    Done(u64),
    /// Not what the whole walk would accept as it stands: it decides.
    Off,
}

impl Scanning {
    /// At the start of an item header.
    const ITEM: Scanning = Scanning::Items {
        header: [0; 8],
        have: 0,
    };
}

/// The items of an object's encapsulated Pixel Data, read from its bytes
/// as they pass on their way to a spool file: only the 8-byte item headers
/// (and the Basic Offset Table) are looked at, so a whole-slide image's
/// gigabytes of fragments are never read back from the disk to find where
/// its frames are. Begun from [`parse_head`]'s walk of the first bytes.
pub(crate) struct FragmentScan {
    head: Head,
    /// Stream offset of the next byte fed.
    fed: u64,
    /// Stream offset of the next byte the scan needs.
    next: u64,
    state: Scanning,
    scan: PixelScan,
}

impl FragmentScan {
    /// Scan the object whose first bytes `head` walked; it is then fed the
    /// object from its first byte.
    pub(crate) fn new(head: Head) -> Self {
        let state = if head.native.is_some() {
            Scanning::Off
        } else {
            Scanning::ITEM
        };
        FragmentScan {
            next: head.dataset_start + head.pixel_value,
            head,
            fed: 0,
            state,
            scan: PixelScan::default(),
        }
    }

    /// The object's next bytes.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        let base = self.fed;
        let end = base + bytes.len() as u64;
        self.fed = end;
        while self.next < end {
            let Some(i) = self.next.checked_sub(base).map(|i| i as usize) else {
                self.state = Scanning::Off;
                return;
            };
            match &mut self.state {
                Scanning::Table { left } => {
                    let n = (*left).min(bytes.len() - i);
                    self.scan.offset_table.extend_from_slice(&bytes[i..i + n]);
                    *left -= n;
                    self.next += n as u64;
                    if *left == 0 {
                        self.state = Scanning::ITEM;
                    }
                }
                Scanning::Items { header, have } => {
                    let n = (8 - *have).min(bytes.len() - i);
                    header[*have..*have + n].copy_from_slice(&bytes[i..i + n]);
                    *have += n;
                    self.next += n as u64;
                    if *have == 8 {
                        let header = *header;
                        self.item(header);
                    }
                }
                Scanning::Done(_) | Scanning::Off => return,
            }
        }
    }

    /// An item header has been read; `next` is just past it.
    fn item(&mut self, header: [u8; 8]) {
        let word = |i: usize| u16::from_le_bytes([header[i], header[i + 1]]);
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let value = self.next - self.head.dataset_start;
        self.state = match (word(0), word(2)) {
            (0xFFFE, 0xE000) if len != u32::MAX => {
                let first = self.scan.items.is_empty();
                self.scan.items.push((value, u64::from(len)));
                if first && len <= MAX_OFFSET_TABLE && len > 0 {
                    Scanning::Table { left: len as usize }
                } else {
                    self.next += u64::from(len);
                    Scanning::ITEM
                }
            }
            (0xFFFE, 0xE0DD) if len == 0 => Scanning::Done(self.next),
            _ => Scanning::Off,
        };
    }

    /// The header of the whole object, `total` bytes, when what was seen
    /// settles it as the whole walk would: native Pixel Data that ends the
    /// data set, or encapsulated Pixel Data whose delimiter ends it. `None`
    /// otherwise, for the whole walk to decide.
    pub(crate) fn finish(self, total: u64) -> Option<ParsedHeader> {
        if settled_by_head(&self.head, total) {
            return Some(self.head.settled());
        }
        let Scanning::Done(end) = self.state else {
            return None;
        };
        if end != total || self.fed != total {
            return None;
        }
        self.head.finished_by(&self.scan)
    }
}

/// Walk a deflated data set whole: inflating all of it is what proves it
/// complete.
fn walk_deflated<R: Read>(
    source: R,
    ts_uid: &str,
) -> Result<(HashMap<Tag, RawValue>, PixelScan), HeaderError> {
    let ts = TransferSyntaxRegistry
        .get(EXPLICIT_VR_LE)
        .ok_or_else(|| HeaderError::TransferSyntax(ts_uid.to_owned()))?;
    let charset = dicom_encoding::text::SpecificCharacterSet::default();
    let inflater = flate2::read::DeflateDecoder::new(source);
    let decoder = DynStatefulDecoder::new_with(BufReader::new(inflater), ts, charset, 0)
        .map_err(|e| HeaderError::TransferSyntax(format!("{ts_uid}: {e}")))?;
    let (values, scan, _, _) = collect(LazyDataSetReader::new(decoder), false, false)?;
    Ok((values, scan))
}

/// Whether the object whose first bytes are `prefix` is deflated; `None`
/// when they do not say.
pub(crate) fn is_deflated(prefix: &[u8]) -> Option<bool> {
    let meta = super::part10::read_meta(prefix.get(128..)?).ok()?;
    let ts_uid = Uid::new(&meta.transfer_syntax).ok()?;
    Some(DEFLATED_SYNTAXES.contains(&ts_uid.as_str()))
}

/// The preamble and file meta group at the start of a Part-10 object, and
/// its transfer syntax.
fn read_file_meta<R: Read>(
    source: &mut R,
) -> Result<(super::part10::ReceivedMeta, Uid), HeaderError> {
    let mut preamble = [0u8; 128];
    source
        .read_exact(&mut preamble)
        .map_err(|_| HeaderError::Meta("shorter than the 128-byte preamble".into()))?;
    let file_meta = super::part10::read_meta(&mut *source).map_err(HeaderError::Meta)?;
    let ts_uid = Uid::new(&file_meta.transfer_syntax)
        .map_err(|_| HeaderError::TransferSyntax(file_meta.transfer_syntax.clone()))?;
    Ok((file_meta, ts_uid))
}

/// Parse a deflated object read once from its first byte, as it arrives:
/// nothing is sought, so the reader may be fed while the walk runs.
/// Anything but a deflated object is refused.
pub(crate) fn parse_deflated<R: Read>(mut source: R) -> Result<ParsedHeader, HeaderError> {
    let (file_meta, ts_uid) = read_file_meta(&mut source)?;
    if !DEFLATED_SYNTAXES.contains(&ts_uid.as_str()) {
        return Err(HeaderError::TransferSyntax(ts_uid.to_string()));
    }
    let (raw, scan) = crate::model::without_panic(|| walk_deflated(source, ts_uid.as_str()))
        .unwrap_or_else(|reason| Err(HeaderError::Malformed { offset: 0, reason }))?;
    let meta = build_meta(&raw, &file_meta)?;
    Ok(ParsedHeader {
        meta,
        transfer_syntax_uid: ts_uid,
        // Offsets into a deflated stream do not address the stored file.
        pixels: None,
        has_pixel_data: scan.native.is_some() || !scan.items.is_empty(),
    })
}

fn walk_dataset<R: Read + Seek>(
    mut source: R,
    ts_uid: &str,
    dataset_len: u64,
) -> Result<(HashMap<Tag, RawValue>, PixelScan), HeaderError> {
    if DEFLATED_SYNTAXES.contains(&ts_uid) {
        return walk_deflated(source, ts_uid);
    }
    let ts = TransferSyntaxRegistry
        .get(ts_uid)
        .filter(|ts| !ts.is_unsupported())
        .ok_or_else(|| HeaderError::TransferSyntax(ts_uid.to_owned()))?;
    let big_endian = ts_uid == BIG_ENDIAN;
    let charset = dicom_encoding::text::SpecificCharacterSet::default();
    let start = source.stream_position()?;
    source.seek(SeekFrom::Start(start))?;
    let decoder = DynStatefulDecoder::new_with(source, ts, charset, 0)
        .map_err(|e| HeaderError::TransferSyntax(format!("{ts_uid}: {e}")))?;
    let (values, scan, consumed, _) = collect(LazyDataSetReader::new(decoder), big_endian, false)?;
    // The lazy reader skips values by length without noticing a short read,
    // so completeness is checked here.
    if consumed != dataset_len {
        return Err(HeaderError::Truncated {
            declared: consumed,
            actual: dataset_len,
        });
    }
    Ok((values, scan))
}

type Decoder<R> = DynStatefulDecoder<R>;

/// Where a walk asked to stop at the top-level Pixel Data did so.
enum PixelStop {
    /// Native, of this VR and value length.
    Native(VR, u32),
    Encapsulated,
}

/// Walk the data set, keeping the wanted values and the Pixel Data's
/// layout. With `head_only`, stop once the header of the top-level Pixel
/// Data has been read, and say so. Returns the position reached.
#[allow(clippy::type_complexity)]
fn collect<R: Read>(
    mut reader: LazyDataSetReader<Decoder<R>>,
    big_endian: bool,
    head_only: bool,
) -> Result<(HashMap<Tag, RawValue>, PixelScan, u64, Option<PixelStop>), HeaderError> {
    let mut values = HashMap::new();
    let mut scan = PixelScan::default();
    // Open sequences, each with the number of items seen so far.
    let mut open: Vec<(Tag, usize)> = Vec::new();
    // Odd-length Pixel Data passes only as the last element: dicom-rs
    // would read anything after it from the wrong offset.
    let mut odd_pixel_data = false;
    while let Some(token) = reader.advance() {
        let token = token.map_err(|e| HeaderError::Malformed {
            offset: 0,
            reason: e.to_string(),
        })?;
        if odd_pixel_data {
            return Err(HeaderError::Malformed {
                offset: 0,
                reason: "elements follow odd-length Pixel Data".into(),
            });
        }
        if open.len() > MAX_SEQUENCE_DEPTH {
            return Err(HeaderError::Malformed {
                offset: 0,
                reason: format!("sequences nested deeper than {MAX_SEQUENCE_DEPTH} levels"),
            });
        }
        if head_only && open.is_empty() {
            let stop = match &token {
                LazyDataToken::LazyValue { header, .. } if header.tag == tags::PIXEL_DATA => {
                    Some(PixelStop::Native(header.vr, header.len.0))
                }
                LazyDataToken::PixelSequenceStart => Some(PixelStop::Encapsulated),
                _ => None,
            };
            if stop.is_some() {
                let reached = reader.into_decoder().position();
                return Ok((values, scan, reached, stop));
            }
        }
        match token {
            LazyDataToken::SequenceStart { tag, .. } => open.push((tag, 0)),
            LazyDataToken::PixelSequenceStart => open.push((tags::PIXEL_DATA, 0)),
            LazyDataToken::ItemStart { .. } => {
                if let Some(last) = open.last_mut() {
                    last.1 += 1;
                }
            }
            LazyDataToken::SequenceEnd => {
                open.pop();
            }
            LazyDataToken::LazyValue { header, decoder } => {
                if !header.len.is_undefined()
                    && !crate::model::length_fits_vr(header.vr, header.len.0)
                {
                    if header.tag != tags::PIXEL_DATA || !open.is_empty() {
                        return Err(HeaderError::Malformed {
                            offset: decoder.position(),
                            reason: format!(
                                "{} is {} bytes, not a whole number of {:?} values",
                                header.tag, header.len.0, header.vr
                            ),
                        });
                    }
                    odd_pixel_data = true;
                }
                let wanted = header.len.0 <= MAX_INDEXED_VALUE
                    && match open.as_slice() {
                        [] => WANTED.contains(&header.tag),
                        [(seq, 1)] if *seq == tags::REQUEST_ATTRIBUTES_SEQUENCE => {
                            WANTED_IN_REQUEST_ATTRIBUTES.contains(&header.tag)
                                && !values.contains_key(&header.tag)
                        }
                        _ => false,
                    };
                let offset = decoder.position();
                if open.is_empty() && header.tag == tags::PIXEL_DATA && !header.len.is_undefined() {
                    scan.native = Some((offset, u64::from(header.len.0)));
                }
                let result = if wanted {
                    let mut bytes = Vec::with_capacity(header.len.0 as usize);
                    let r =
                        LazyDataToken::LazyValue { header, decoder }.read_value_into(&mut bytes);
                    if big_endian && matches!(header.vr, VR::US) {
                        for pair in bytes.chunks_exact_mut(2) {
                            pair.swap(0, 1);
                        }
                    }
                    if bytes.len() as u32 != header.len.0 && !header.len.is_undefined() {
                        return Err(HeaderError::Malformed {
                            offset,
                            reason: format!("value of {} ends early", header.tag),
                        });
                    }
                    values.insert(
                        header.tag,
                        RawValue {
                            vr: header.vr,
                            bytes,
                        },
                    );
                    r.map_err(|e| e.to_string())
                } else {
                    LazyDataToken::LazyValue { header, decoder }
                        .skip()
                        .map_err(|e| e.to_string())
                };
                result.map_err(|reason| HeaderError::Malformed { offset, reason })?;
            }
            LazyDataToken::LazyItemValue { len, decoder } => {
                let offset = decoder.position();
                let in_pixel_data = matches!(open.as_slice(), [(t, _)] if *t == tags::PIXEL_DATA);
                let token = LazyDataToken::LazyItemValue { len, decoder };
                let result = if in_pixel_data && scan.items.is_empty() && len <= MAX_OFFSET_TABLE {
                    token
                        .read_value_into(&mut scan.offset_table)
                        .map_err(|e| e.to_string())
                } else {
                    token.skip().map_err(|e| e.to_string())
                };
                result.map_err(|reason| HeaderError::Malformed { offset, reason })?;
                if in_pixel_data {
                    scan.items.push((offset, u64::from(len)));
                }
            }
            _ => {}
        }
    }
    let consumed = reader.into_decoder().position();
    if !open.is_empty() {
        return Err(HeaderError::Malformed {
            offset: consumed,
            reason: "data set ends inside a sequence".into(),
        });
    }
    Ok((values, scan, consumed, None))
}

/// Turn the scan into file ranges per frame, or `None` when frames cannot be
/// told apart without decoding (several fragments per frame and no offset
/// table).
fn pixel_layout(
    scan: &PixelScan,
    meta: &InstanceMeta,
    samples_per_pixel: Option<i64>,
    base: u64,
) -> Result<Option<PixelLayout>, HeaderError> {
    let frames = meta.number_of_frames.unwrap_or(1).max(1) as u64;
    if let Some((offset, length)) = scan.native {
        let (Some(bits), Some(rows), Some(columns)) =
            (meta.bits_allocated, meta.rows, meta.columns)
        else {
            return Ok(None);
        };
        // The sender chose these numbers: a product that overflows is
        // invalid data, not a wrapped frame size.
        let overflow = || HeaderError::Malformed {
            offset: offset + base,
            reason: "Rows, Columns, Samples per Pixel, Bits Allocated and Number of Frames \
                     describe more pixel data than can exist"
                .into(),
        };
        let positive = |v: i64| u64::try_from(v).map_err(|_| overflow());
        let (bits, rows, columns) = (positive(bits)?, positive(rows)?, positive(columns)?);
        let samples = positive(samples_per_pixel.unwrap_or(1))?;
        let pixels = rows
            .checked_mul(columns)
            .and_then(|p| p.checked_mul(samples))
            .ok_or_else(overflow)?;
        let frame_len = if bits == 1 {
            pixels.div_ceil(8)
        } else {
            pixels.checked_mul(bits.div_ceil(8)).ok_or_else(overflow)?
        };
        let all_frames = frame_len.checked_mul(frames).ok_or_else(overflow)?;
        if frame_len == 0 || all_frames > length {
            return Ok(None);
        }
        return Ok(Some(PixelLayout::Native {
            offset: base + offset,
            length,
            frame_len,
        }));
    }
    Ok(encapsulated_layout(scan, frames, base))
}

fn encapsulated_layout(scan: &PixelScan, frames: u64, base: u64) -> Option<PixelLayout> {
    // Item ranges include their 8-byte headers.
    let fragments: Vec<(u64, u64)> = scan
        .items
        .iter()
        .skip(1)
        .map(|(offset, len)| (base + offset - 8, len + 8))
        .collect();
    let (first, last) = (fragments.first()?, fragments.last()?);
    let end = last.0 + last.1;
    let table: Vec<u64> = scan
        .offset_table
        .chunks_exact(4)
        .map(|c| u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .collect();
    let ranges: Vec<(u64, u64)> = if table.len() as u64 == frames {
        let starts: Vec<u64> = table.iter().map(|o| first.0 + o).collect();
        let mut ranges = Vec::with_capacity(starts.len());
        for (i, start) in starts.iter().enumerate() {
            let stop = starts.get(i + 1).copied().unwrap_or(end);
            if stop <= *start || stop > end {
                return None;
            }
            ranges.push((*start, stop - start));
        }
        ranges
    } else if fragments.len() as u64 == frames {
        fragments
    } else if frames == 1 {
        vec![(first.0, end - first.0)]
    } else {
        return None;
    };
    Some(PixelLayout::Encapsulated { frames: ranges })
}

fn build_meta(
    raw: &HashMap<Tag, RawValue>,
    file_meta: &super::part10::ReceivedMeta,
) -> Result<InstanceMeta, HeaderError> {
    let charset = ascii(raw, tags::SPECIFIC_CHARACTER_SET);
    let text = |tag: Tag| -> String {
        match raw.get(&tag) {
            Some(v) if v.vr == VR::PN => normalize_person_name(&decode_text(&charset, &v.bytes)),
            Some(v) if matches!(v.vr, VR::LO | VR::SH | VR::LT | VR::ST | VR::UT | VR::UC) => {
                decode_text(&charset, &v.bytes)
            }
            Some(_) => ascii(raw, tag),
            None => String::new(),
        }
    };
    let uid = |tag: Tag, name: &'static str| -> Result<Uid, HeaderError> {
        Uid::new(&ascii(raw, tag)).map_err(|_| HeaderError::Missing(name))
    };
    let sop_instance_uid = uid(tags::SOP_INSTANCE_UID, "SOPInstanceUID")?;
    let sop_class_uid = uid(tags::SOP_CLASS_UID, "SOPClassUID")?;
    let meta_uid = file_meta.media_storage_sop_instance_uid.as_str();
    if meta_uid != sop_instance_uid.as_str() {
        return Err(HeaderError::Mismatch(format!(
            "SOP Instance UID {sop_instance_uid} differs from the one announced ({meta_uid})"
        )));
    }
    Ok(InstanceMeta {
        patient: PatientMeta {
            patient_id: text(tags::PATIENT_ID),
            issuer_of_patient_id: text(tags::ISSUER_OF_PATIENT_ID),
            patient_name: text(tags::PATIENT_NAME),
            patient_birth_date: ascii(raw, tags::PATIENT_BIRTH_DATE),
            patient_sex: ascii(raw, tags::PATIENT_SEX),
        },
        study: StudyMeta {
            study_instance_uid: uid(tags::STUDY_INSTANCE_UID, "StudyInstanceUID")?,
            study_date: ascii(raw, tags::STUDY_DATE),
            study_time: ascii(raw, tags::STUDY_TIME),
            accession_number: text(tags::ACCESSION_NUMBER),
            study_id: text(tags::STUDY_ID),
            study_description: text(tags::STUDY_DESCRIPTION),
            referring_physician_name: text(tags::REFERRING_PHYSICIAN_NAME),
            timezone_offset_from_utc: ascii(raw, tags::TIMEZONE_OFFSET_FROM_UTC),
        },
        series: SeriesMeta {
            series_instance_uid: uid(tags::SERIES_INSTANCE_UID, "SeriesInstanceUID")?,
            modality: ascii(raw, tags::MODALITY),
            series_number: integer(raw, tags::SERIES_NUMBER),
            series_description: text(tags::SERIES_DESCRIPTION),
            series_date: ascii(raw, tags::SERIES_DATE),
            series_time: ascii(raw, tags::SERIES_TIME),
            body_part_examined: ascii(raw, tags::BODY_PART_EXAMINED),
            performed_procedure_step_start_date: ascii(
                raw,
                tags::PERFORMED_PROCEDURE_STEP_START_DATE,
            ),
            performed_procedure_step_start_time: ascii(
                raw,
                tags::PERFORMED_PROCEDURE_STEP_START_TIME,
            ),
            scheduled_procedure_step_id: text(tags::SCHEDULED_PROCEDURE_STEP_ID),
            requested_procedure_id: text(tags::REQUESTED_PROCEDURE_ID),
            institution_name: text(tags::INSTITUTION_NAME),
            station_name: text(tags::STATION_NAME),
        },
        sop_instance_uid,
        sop_class_uid,
        instance_number: integer(raw, tags::INSTANCE_NUMBER),
        number_of_frames: integer(raw, tags::NUMBER_OF_FRAMES),
        rows: integer(raw, tags::ROWS),
        columns: integer(raw, tags::COLUMNS),
        bits_allocated: integer(raw, tags::BITS_ALLOCATED),
        specific_character_set: charset.clone(),
        content_date: ascii(raw, tags::CONTENT_DATE),
        content_time: ascii(raw, tags::CONTENT_TIME),
    })
}

/// Drop the trailing empty components and groups PS3.5 6.2 allows, so
/// "Wang^XiaoDong=王^小東=" and "Wang^XiaoDong=王^小東" are one name.
fn normalize_person_name(name: &str) -> String {
    let groups: Vec<&str> = name
        .split('=')
        .map(|g| g.trim_end_matches(['^', ' ']))
        .collect();
    let keep = groups
        .iter()
        .rposition(|g| !g.is_empty())
        .map_or(0, |i| i + 1);
    groups[..keep].join("=")
}

/// A value of the default repertoire (UI, CS, DA, TM, IS …), trimmed.
fn ascii(raw: &HashMap<Tag, RawValue>, tag: Tag) -> String {
    raw.get(&tag)
        .map(|v| {
            String::from_utf8_lossy(&v.bytes)
                .trim_matches(['\0', ' '])
                .to_owned()
        })
        .unwrap_or_default()
}

/// IS values are text; US values are binary (already little endian here).
fn integer(raw: &HashMap<Tag, RawValue>, tag: Tag) -> Option<i64> {
    let v = raw.get(&tag)?;
    match v.vr {
        VR::US if v.bytes.len() >= 2 => {
            Some(i64::from(u16::from_le_bytes([v.bytes[0], v.bytes[1]])))
        }
        _ => ascii(raw, tag).split('\\').next()?.trim().parse().ok(),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue};
    use dicom_object::meta::FileMetaTableBuilder;
    use dicom_object::InMemDicomObject;

    const IMPLICIT_LE: &str = "1.2.840.10008.1.2";

    /// Implicit VR LE bytes of `depth` nested undefined-length sequences.
    fn nested(depth: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..depth {
            out.extend_from_slice(&[0x40, 0x00, 0x30, 0xA7, 0xFF, 0xFF, 0xFF, 0xFF]);
            out.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        for _ in 0..depth {
            out.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
            out.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        }
        out
    }

    #[test]
    fn deep_nesting_is_refused() {
        let ok = nested(MAX_SEQUENCE_DEPTH);
        let len = ok.len() as u64;
        assert!(walk_dataset(std::io::Cursor::new(ok), IMPLICIT_LE, len).is_ok());
        let deep = nested(1000);
        let len = deep.len() as u64;
        match walk_dataset(std::io::Cursor::new(deep), IMPLICIT_LE, len) {
            Err(HeaderError::Malformed { reason, .. }) => assert!(reason.contains("nested")),
            other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
        }
    }

    /// A Part-10 file with a tiny native Pixel Data and the given sizes.
    fn image_file(rows: u16, columns: u16, samples: u16, frames: &str) -> tempfile::NamedTempFile {
        let mut obj = InMemDicomObject::new_empty();
        let mut put = |tag, vr, value: PrimitiveValue| obj.put(DataElement::new(tag, vr, value));
        put(
            tags::SOP_CLASS_UID,
            VR::UI,
            "1.2.840.10008.5.1.4.1.1.7".into(),
        );
        put(tags::SOP_INSTANCE_UID, VR::UI, "1.2.3.4".into());
        put(tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3".into());
        put(tags::SERIES_INSTANCE_UID, VR::UI, "1.2.3.5".into());
        put(
            tags::SAMPLES_PER_PIXEL,
            VR::US,
            PrimitiveValue::from(samples),
        );
        put(tags::NUMBER_OF_FRAMES, VR::IS, frames.into());
        put(tags::ROWS, VR::US, PrimitiveValue::from(rows));
        put(tags::COLUMNS, VR::US, PrimitiveValue::from(columns));
        put(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16));
        put(tags::PIXEL_DATA, VR::OW, PrimitiveValue::from(vec![0u8; 8]));
        let file = obj
            .with_meta(
                FileMetaTableBuilder::new()
                    .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.7")
                    .media_storage_sop_instance_uid("1.2.3.4")
                    .transfer_syntax(EXPLICIT_VR_LE),
            )
            .expect("meta");
        let tmp = tempfile::NamedTempFile::new().expect("tmp");
        file.write_to_file(tmp.path()).expect("write");
        tmp
    }

    #[test]
    fn pixel_sizes_that_overflow_are_invalid() {
        let small = image_file(2, 2, 1, "1");
        assert!(matches!(
            parse(small.path()).expect("valid").pixels,
            Some(PixelLayout::Native { frame_len: 8, .. })
        ));
        let huge = image_file(u16::MAX, u16::MAX, u16::MAX, "2147483647");
        match parse(huge.path()) {
            Err(HeaderError::Malformed { reason, .. }) => assert!(reason.contains("pixel")),
            other => panic!("expected a refusal, got {:?}", other.map(|p| p.pixels)),
        }
    }

    /// A Part-10 object in `ts` with a 400-byte description before its
    /// Pixel Data, native or as two fragments with an offset table, and
    /// with or without padding after it.
    pub(in crate::ingest) fn object_bytes(ts: &str, encapsulated: bool, trailing: bool) -> Vec<u8> {
        object_of_side(ts, encapsulated, trailing, 2)
    }

    /// Two frames of `side` x `side` pixels, 16 bits each when native.
    pub(in crate::ingest) fn object_of_side(
        ts: &str,
        encapsulated: bool,
        trailing: bool,
        side: u16,
    ) -> Vec<u8> {
        use dicom_core::value::{PixelFragmentSequence, Value};
        let mut obj = InMemDicomObject::new_empty();
        let text = |tag, vr, value: &str| DataElement::new(tag, vr, PrimitiveValue::from(value));
        let short = |tag, value: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(value));
        for element in [
            text(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.2"),
            text(tags::SOP_INSTANCE_UID, VR::UI, "1.2.3.4"),
            text(tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3"),
            text(tags::SERIES_INSTANCE_UID, VR::UI, "1.2.3.5"),
            text(tags::STUDY_DESCRIPTION, VR::LO, &"x".repeat(400)),
            text(tags::PATIENT_NAME, VR::PN, "Doe^Jane"),
            short(tags::SAMPLES_PER_PIXEL, 1),
            text(tags::NUMBER_OF_FRAMES, VR::IS, "2"),
            short(tags::ROWS, side),
            short(tags::COLUMNS, side),
            short(tags::BITS_ALLOCATED, 16),
        ] {
            obj.put(element);
        }
        if trailing {
            obj.put(DataElement::new(
                tags::DATA_SET_TRAILING_PADDING,
                VR::OB,
                PrimitiveValue::from(vec![0u8; 4]),
            ));
        }
        if encapsulated {
            let len = 2 * u32::from(side) * u32::from(side);
            let fragments = PixelFragmentSequence::new(
                vec![0u32, len + 8],
                vec![vec![1; len as usize], vec![2; len as usize]],
            );
            obj.put(DataElement::new(
                tags::PIXEL_DATA,
                VR::OB,
                Value::PixelSequence(fragments),
            ));
        } else {
            obj.put(DataElement::new(
                tags::PIXEL_DATA,
                VR::OW,
                PrimitiveValue::from(vec![7u8; 4 * usize::from(side) * usize::from(side)]),
            ));
        }
        let file = obj
            .with_meta(
                FileMetaTableBuilder::new()
                    .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.2")
                    .media_storage_sop_instance_uid("1.2.3.4")
                    .transfer_syntax(ts),
            )
            .expect("meta");
        let mut out = Vec::new();
        file.write_all(&mut out).expect("write");
        out
    }

    /// The early walk of every prefix that reaches the Pixel Data, finished
    /// over the whole object, finds what the whole walk finds, and its
    /// metadata document is the same; a truncated rest is left to the
    /// whole walk.
    #[test]
    fn a_walk_in_two_parts_finds_what_one_walk_finds() {
        const RLE: &str = "1.2.840.10008.1.2.5";
        for (ts, encapsulated, trailing) in [
            (EXPLICIT_VR_LE, false, false),
            (EXPLICIT_VR_LE, false, true),
            (IMPLICIT_LE, false, false),
            (IMPLICIT_LE, false, true),
            (RLE, true, false),
            (RLE, true, true),
        ] {
            let bytes = object_bytes(ts, encapsulated, trailing);
            let whole =
                parse_from(std::io::Cursor::new(&bytes[..]), bytes.len() as u64).expect("valid");
            assert!(whole.has_pixel_data && whole.pixels.is_some(), "{ts}");
            let document = |b: &[u8], pixels: Option<&PixelLayout>| {
                super::super::document::build(
                    || Ok(std::io::Cursor::new(b)),
                    &whole.meta,
                    pixels,
                    true,
                )
                .expect("document")
            };
            let expected = document(&bytes, whole.pixels.as_ref());
            let mut walked = 0;
            for cut in 0..=bytes.len() {
                let Some(head) = parse_head(&bytes[..cut]) else {
                    assert!(walked == 0, "{ts}: a longer prefix than {cut} bytes walked");
                    continue;
                };
                walked += 1;
                assert_eq!(
                    document(&bytes[..cut], head.provisional.as_ref()),
                    expected,
                    "{ts}"
                );
                let rest = parse_rest(head, &bytes).expect("the rest walks");
                assert_eq!(format!("{rest:?}"), format!("{whole:?}"), "{ts} at {cut}");
                let head = parse_head(&bytes[..cut]).expect("head");
                assert!(
                    parse_rest(head, &bytes[..bytes.len() - 2]).is_none(),
                    "{ts}: truncated"
                );
            }
            // From the Pixel Data's header on, every prefix walks.
            assert!(walked > 16, "{ts}: only {walked} prefixes walked");
        }
    }

    /// A file, counting the bytes read from it.
    struct Counted<'a> {
        file: std::io::Cursor<&'a [u8]>,
        read: usize,
    }

    impl Read for Counted<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.file.read(out)?;
            self.read += n;
            Ok(n)
        }
    }

    impl Seek for Counted<'_> {
        fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
            self.file.seek(to)
        }
    }

    /// A stored image whose native Pixel Data ends it is settled by its
    /// head, as the whole walk would settle it, without reading its pixels;
    /// anything else, or anything cut short, is walked whole.
    #[test]
    fn a_stored_image_is_read_no_further_than_its_head_settles_it() {
        const RLE: &str = "1.2.840.10008.1.2.5";
        for (ts, encapsulated, trailing) in [
            (EXPLICIT_VR_LE, false, false),
            (IMPLICIT_LE, false, false),
            (EXPLICIT_VR_LE, false, true),
            (RLE, true, false),
        ] {
            let bytes = object_of_side(ts, encapsulated, trailing, 1024);
            let whole =
                parse_from(std::io::Cursor::new(&bytes[..]), bytes.len() as u64).expect("valid");
            let mut file = Counted {
                file: std::io::Cursor::new(&bytes[..]),
                read: 0,
            };
            let parsed = parse_stored(&mut file, bytes.len() as u64).expect("valid");
            assert_eq!(format!("{parsed:?}"), format!("{whole:?}"), "{ts}");
            if encapsulated || trailing {
                assert!(file.read > bytes.len(), "{ts}: walked whole after the head");
            } else {
                assert!(
                    bytes.len() > 4 << 20 && file.read <= HEAD_MAX,
                    "{ts}: {}",
                    file.read
                );
            }
            let cut = &bytes[..bytes.len() - 2];
            assert!(
                parse_stored(std::io::Cursor::new(cut), cut.len() as u64).is_err(),
                "{ts}"
            );
        }
    }

    /// The Pixel Data items read from an object's bytes as they pass, in
    /// pieces of any size, give what the whole walk gives; an object that
    /// goes on after its Pixel Data, or is cut short, is left to that walk.
    #[test]
    fn items_seen_passing_give_what_the_whole_walk_finds() {
        const RLE: &str = "1.2.840.10008.1.2.5";
        for (ts, encapsulated, trailing, side) in [
            (RLE, true, false, 2),
            (RLE, true, true, 2),
            (EXPLICIT_VR_LE, false, false, 64),
            (EXPLICIT_VR_LE, false, true, 64),
        ] {
            let bytes = object_of_side(ts, encapsulated, trailing, side);
            let total = bytes.len() as u64;
            let whole = parse_from(std::io::Cursor::new(&bytes[..]), total).expect("valid");
            let scanned = |bytes: &[u8], piece: usize| {
                let head = parse_head(&bytes[..bytes.len().min(HEAD_MAX)]).expect("head");
                let mut scan = FragmentScan::new(head);
                for piece in bytes.chunks(piece) {
                    scan.feed(piece);
                }
                scan.finish(bytes.len() as u64)
            };
            for piece in [1, 3, 8, 100, 1 << 20] {
                let what = format!("{ts}, trailing {trailing}, pieces of {piece}");
                match scanned(&bytes, piece) {
                    Some(found) => {
                        assert!(!trailing, "{what}: settled without what follows");
                        assert_eq!(format!("{found:?}"), format!("{whole:?}"), "{what}");
                    }
                    None => assert!(trailing, "{what}: not settled"),
                }
                for cut in [1, 2, 9] {
                    let short = &bytes[..bytes.len() - cut];
                    assert!(scanned(short, piece).is_none(), "{what}: cut by {cut}");
                }
            }
        }
    }

    /// A reader that hands out at most `step` bytes at a time, as a
    /// connection does.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = out.len().min(self.step).min(self.bytes.len());
            out[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    /// A deflated object read once as it arrives, in pieces of any size,
    /// parses as the whole walk parses it; cut short, neither accepts it.
    #[test]
    fn a_deflated_object_read_as_it_arrives_parses_as_a_whole() {
        const DEFLATED: &str = "1.2.840.10008.1.2.1.99";
        for trailing in [false, true] {
            let bytes = object_bytes(DEFLATED, false, trailing);
            assert_eq!(is_deflated(&bytes), Some(true));
            let whole =
                parse_from(std::io::Cursor::new(&bytes[..]), bytes.len() as u64).expect("valid");
            assert!(whole.has_pixel_data && whole.pixels.is_none());
            for step in [1, 7, 100, 1 << 20] {
                let read = parse_deflated(Trickle {
                    bytes: &bytes,
                    step,
                })
                .expect("parses");
                assert_eq!(format!("{read:?}"), format!("{whole:?}"), "step {step}");
            }
            // Into the Pixel Data: 16 bytes inflated from far fewer.
            let cut = &bytes[..bytes.len() - 12];
            assert!(parse_from(std::io::Cursor::new(cut), cut.len() as u64).is_err());
            assert!(parse_deflated(Trickle {
                bytes: cut,
                step: 100
            })
            .is_err());
        }
        let plain = object_bytes(EXPLICIT_VR_LE, false, false);
        assert_eq!(is_deflated(&plain), Some(false));
        assert_eq!(is_deflated(&plain[..100]), None);
        assert!(parse_deflated(&plain[..]).is_err());
    }

    #[test]
    fn person_names_lose_trailing_empty_parts() {
        assert_eq!(
            normalize_person_name("Wang^XiaoDong=王^小東="),
            "Wang^XiaoDong=王^小東"
        );
        assert_eq!(normalize_person_name("DOE^JOHN^^^"), "DOE^JOHN");
        assert_eq!(normalize_person_name("=山田^太郎"), "=山田^太郎");
        assert_eq!(normalize_person_name(""), "");
    }
}
