//! The Part-10 preamble and file meta group of every stored object
//! (PS3.10 7.1).
//!
//! Tessera writes the meta group itself, from the SOP class, SOP instance
//! and transfer syntax alone, for data sets received over the network and
//! for Part-10 files (STOW-RS, import) alike. The stored object, and so its
//! hash, is then a function of the data set: the same data set sent by two
//! modalities, or forwarded by a peer, is the same object and an identical
//! duplicate. Who sent it is kept in the index, not in the file.

use dicom_object::meta::FileMetaTableBuilder;

use super::HeaderError;
use crate::model::Uid;

/// Tessera's implementation class UID (UUID-derived 2.25 root).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.190748385416352795183411367203981126941";
/// Without a version number: a new release must not make a resent data set
/// look different from the copy an older release stored.
pub const IMPLEMENTATION_VERSION_NAME: &str = "TESSERA";
/// Preamble, magic, and the (0002,0000) element that gives the group length.
const FIXED_PREFIX: usize = 128 + 4 + 12;
/// A received meta group longer than this is not re-written; the object
/// then goes to the header walk as it came, which judges it.
const MAX_RECEIVED_META: usize = 64 * 1024;

/// What Tessera takes from a received file meta group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceivedMeta {
    pub media_storage_sop_class_uid: String,
    pub media_storage_sop_instance_uid: String,
    pub transfer_syntax: String,
}

/// Read a file meta group from `reader`, positioned after the preamble,
/// leaving it at the data set. The group is read whole (at most 64 KiB, as
/// its (0002,0000) length says) and walked here: dicom-rs's meta reader
/// allocates each element at the length it declares, or at one it misreads
/// from an element whose VR it does not expect, before reading it.
pub fn read_meta<R: std::io::Read>(mut reader: R) -> Result<ReceivedMeta, String> {
    let mut group = vec![0u8; 16];
    reader
        .read_exact(&mut group)
        .map_err(|_| "shorter than a file meta group".to_owned())?;
    if &group[..4] != b"DICM" {
        return Err("no DICM prefix after the preamble".into());
    }
    if group[4..12] != [2, 0, 0, 0, b'U', b'L', 4, 0] {
        return Err("the file meta group does not start with its group length".into());
    }
    let length = u32::from_le_bytes([group[12], group[13], group[14], group[15]]) as usize;
    if length > MAX_RECEIVED_META {
        return Err(format!(
            "a file meta group of {length} bytes; the limit is {MAX_RECEIVED_META}"
        ));
    }
    group.resize(16 + length, 0);
    reader
        .read_exact(&mut group[16..])
        .map_err(|_| "the file meta group ends early".to_owned())?;
    let mut meta = ReceivedMeta::default();
    for (element, value) in meta_elements(&group[16..])? {
        let text = || {
            String::from_utf8_lossy(value)
                .trim_end_matches(['\0', ' '])
                .to_owned()
        };
        match element {
            0x0002 => meta.media_storage_sop_class_uid = text(),
            0x0003 => meta.media_storage_sop_instance_uid = text(),
            0x0010 => meta.transfer_syntax = text(),
            _ => {}
        }
    }
    if meta.transfer_syntax.is_empty() {
        return Err("the file meta group has no transfer syntax".into());
    }
    Ok(meta)
}

/// The (element number, value) pairs of an explicit VR little endian group
/// 0002, each checked to lie within it.
fn meta_elements(mut rest: &[u8]) -> Result<Vec<(u16, &[u8])>, String> {
    const LONG: [&[u8; 2]; 13] = [
        b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV", b"SV", b"UV",
    ];
    let mut elements = Vec::new();
    while !rest.is_empty() {
        let short = || {
            format!(
                "a file meta element header is cut off ({} bytes)",
                rest.len()
            )
        };
        let tag = rest.get(..6).ok_or_else(short)?;
        if tag[..2] != [2, 0] {
            return Err("an element outside group 0002 inside the file meta group".into());
        }
        let element = u16::from_le_bytes([tag[2], tag[3]]);
        let (head, length) = if LONG.iter().any(|l| l.as_slice() == &tag[4..6]) {
            let b = rest.get(8..12).ok_or_else(short)?;
            (
                12usize,
                u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize,
            )
        } else {
            let b = rest.get(6..8).ok_or_else(short)?;
            (8, usize::from(u16::from_le_bytes([b[0], b[1]])))
        };
        let end = head
            .checked_add(length)
            .filter(|end| *end <= rest.len())
            .ok_or_else(|| {
                format!(
                    "a file meta element declares {length} bytes; the group has {} left",
                    rest.len().saturating_sub(head)
                )
            })?;
        elements.push((element, &rest[head..end]));
        rest = &rest[end..];
    }
    Ok(elements)
}

pub fn header(
    sop_class: &Uid,
    sop_instance: &Uid,
    transfer_syntax: &Uid,
) -> Result<Vec<u8>, HeaderError> {
    let table = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(sop_class.as_str())
        .media_storage_sop_instance_uid(sop_instance.as_str())
        .transfer_syntax(transfer_syntax.as_str())
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
        .build()
        .map_err(|e| HeaderError::Meta(e.to_string()))?;
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    table
        .write(&mut out)
        .map_err(|e| HeaderError::Meta(e.to_string()))?;
    Ok(out)
}

/// What [`Reheader::push`] decided about the start of a Part-10 stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Prefix {
    /// Not enough bytes yet to read the meta group.
    NeedMore,
    /// Write these bytes, then everything that follows unchanged.
    Ready(Vec<u8>),
}

/// Replaces the meta group at the start of a Part-10 stream with Tessera's
/// own, buffering only the meta group.
#[derive(Debug, Default)]
pub struct Reheader {
    buffered: Vec<u8>,
}

impl Reheader {
    pub fn push(&mut self, chunk: &[u8]) -> Prefix {
        self.buffered.extend_from_slice(chunk);
        if self.buffered.len() < FIXED_PREFIX {
            return Prefix::NeedMore;
        }
        let b = &self.buffered;
        let group_length = u32::from_le_bytes([b[140], b[141], b[142], b[143]]) as usize;
        let is_group_length = &b[128..132] == b"DICM" && b[132..136] == [2, 0, 0, 0];
        if !is_group_length || group_length > MAX_RECEIVED_META {
            return Prefix::Ready(std::mem::take(&mut self.buffered));
        }
        let end = FIXED_PREFIX + group_length;
        if b.len() < end {
            return Prefix::NeedMore;
        }
        let ours = read_meta(&b[128..end]).ok().and_then(|meta| {
            let uid = |s: &str| Uid::new(s.trim_end_matches(['\0', ' '])).ok();
            header(
                &uid(&meta.media_storage_sop_class_uid)?,
                &uid(&meta.media_storage_sop_instance_uid)?,
                &uid(&meta.transfer_syntax)?,
            )
            .ok()
        });
        let mut buffered = std::mem::take(&mut self.buffered);
        Prefix::Ready(match ours {
            Some(mut head) => {
                head.extend_from_slice(&buffered[end..]);
                head
            }
            // Unreadable: passed on as received, for the walk to refuse.
            None => std::mem::take(&mut buffered),
        })
    }

    /// The bytes held when the stream ended before the meta group did.
    pub fn into_remainder(self) -> Vec<u8> {
        self.buffered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(s: &str) -> Uid {
        Uid::new(s).expect("uid")
    }

    /// A Part-10 stream as another implementation writes it.
    fn foreign(data_set: &[u8]) -> Vec<u8> {
        let table = FileMetaTableBuilder::new()
            .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.2")
            .media_storage_sop_instance_uid("1.2.3.4")
            .transfer_syntax("1.2.840.10008.1.2.1")
            .implementation_class_uid("1.2.3.999")
            .implementation_version_name("OTHER_9.9")
            .source_application_entity_title("MODALITY_A")
            .build()
            .expect("meta");
        let mut out = vec![0u8; 128];
        out.extend_from_slice(b"DICM");
        table.write(&mut out).expect("write");
        out.extend_from_slice(data_set);
        out
    }

    #[test]
    fn received_meta_is_replaced_by_ours_in_any_chunking() {
        let data_set = b"\x08\x00\x16\x00\x1a\x00\x00\x00rest-of-the-data-set";
        let ours = header(
            &uid("1.2.840.10008.5.1.4.1.1.2"),
            &uid("1.2.3.4"),
            &uid("1.2.840.10008.1.2.1"),
        )
        .expect("header");
        let stream = foreign(data_set);
        for chunk in [1, 7, 150, stream.len()] {
            let mut r = Reheader::default();
            let mut out = Vec::new();
            let mut pieces = stream.chunks(chunk);
            for piece in pieces.by_ref() {
                if let Prefix::Ready(head) = r.push(piece) {
                    out = head;
                    break;
                }
            }
            for piece in pieces {
                out.extend_from_slice(piece);
            }
            let mut want = ours.clone();
            want.extend_from_slice(data_set);
            assert_eq!(out, want, "chunks of {chunk}");
        }
    }

    #[test]
    fn unreadable_prefixes_pass_through() {
        let mut r = Reheader::default();
        let junk = vec![0x42u8; 400];
        assert_eq!(r.push(&junk), Prefix::Ready(junk.clone()));
        let mut r = Reheader::default();
        assert_eq!(r.push(b"short"), Prefix::NeedMore);
        assert_eq!(r.into_remainder(), b"short");
    }
}
