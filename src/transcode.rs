//! Converting a stored object for a receiver that cannot take its transfer
//! syntax: the pixel data is decoded with dicom-pixeldata and the data set
//! re-encoded uncompressed. Stored objects are never changed.
//!
//! Unlike storing and sending as stored, this holds the object in memory, so
//! it is bounded by [`MAX_TRANSCODE_BYTES`]. Blocking work runs in
//! `spawn_blocking`.

use dicom_encoding::TransferSyntaxIndex;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::Transcode;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use tokio::io::AsyncReadExt;

use crate::storage::{Storage, StorageError};

pub const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";
pub const IMPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2";
/// The syntaxes Tessera can convert to, in order of preference.
pub const TARGETS: [&str; 2] = [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN];
/// Objects larger than this are not transcoded (they are held in memory).
pub const MAX_TRANSCODE_BYTES: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("object is {0} bytes, over the transcoding limit")]
    TooLarge(u64),
    #[error("cannot transcode to {ts}: {reason}")]
    Failed { ts: String, reason: String },
}

/// The data set of a stored object, encoded in `target_ts` (one of
/// [`TARGETS`]), without the Part-10 header.
pub async fn data_set_in(
    storage: &Storage,
    key: &str,
    target_ts: &str,
) -> Result<Vec<u8>, TranscodeError> {
    convert(storage, key, target_ts, false).await
}

/// A stored object as a Part-10 file in `target_ts`.
pub async fn part10_in(
    storage: &Storage,
    key: &str,
    target_ts: &str,
) -> Result<Vec<u8>, TranscodeError> {
    convert(storage, key, target_ts, true).await
}

/// A stored object decoded into memory, for rendering.
pub async fn load(storage: &Storage, key: &str) -> Result<DefaultDicomObject, TranscodeError> {
    let bytes = read_bounded(storage, key).await?;
    tokio::task::spawn_blocking(move || {
        OpenFileOptions::new()
            .read_preamble(ReadPreamble::Always)
            .from_reader(bytes.as_slice())
            .map_err(|e| TranscodeError::Failed {
                ts: String::new(),
                reason: e.to_string(),
            })
    })
    .await
    .map_err(|e| TranscodeError::Failed {
        ts: String::new(),
        reason: e.to_string(),
    })?
}

async fn read_bounded(storage: &Storage, key: &str) -> Result<Vec<u8>, TranscodeError> {
    let reader = storage.open_read(key).await?;
    let mut bytes = Vec::new();
    let read = reader
        .take(MAX_TRANSCODE_BYTES + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| StorageError::io(std::path::Path::new(key), e))?;
    if read as u64 > MAX_TRANSCODE_BYTES {
        return Err(TranscodeError::TooLarge(read as u64));
    }
    Ok(bytes)
}

async fn convert(
    storage: &Storage,
    key: &str,
    target_ts: &str,
    with_meta: bool,
) -> Result<Vec<u8>, TranscodeError> {
    let bytes = read_bounded(storage, key).await?;
    let target = target_ts.to_owned();
    tokio::task::spawn_blocking(move || transcode_bytes(&bytes, &target, with_meta))
        .await
        .map_err(|e| TranscodeError::Failed {
            ts: target_ts.to_owned(),
            reason: e.to_string(),
        })?
}

fn transcode_bytes(
    part10: &[u8],
    target_ts: &str,
    with_meta: bool,
) -> Result<Vec<u8>, TranscodeError> {
    let failed = |reason: String| TranscodeError::Failed {
        ts: target_ts.to_owned(),
        reason,
    };
    let ts = TransferSyntaxRegistry
        .get(target_ts)
        .ok_or_else(|| failed("unknown transfer syntax".into()))?;
    let mut obj = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Always)
        .from_reader(part10)
        .map_err(|e| failed(e.to_string()))?;
    obj.transcode(ts).map_err(|e| failed(e.to_string()))?;
    let mut out = Vec::with_capacity(part10.len() * 2);
    if with_meta {
        obj.write_all(&mut out).map_err(|e| failed(e.to_string()))?;
    } else {
        obj.write_dataset_with_ts(&mut out, ts)
            .map_err(|e| failed(e.to_string()))?;
    }
    Ok(out)
}
