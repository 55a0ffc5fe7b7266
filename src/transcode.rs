//! Converting a stored object for a receiver that cannot take its transfer
//! syntax: the pixel data is decoded with dicom-pixeldata and the data set
//! re-encoded uncompressed. The same path writes the copy of an object
//! whose patient the RIS changed since ([`crate::coerce`]). Stored objects
//! are never changed.
//!
//! Unlike storing and sending as stored, this holds the object in memory, so
//! it is bounded by [`MAX_TRANSCODE_BYTES`]. Decoding, transcoding and
//! rendering run on the blocking pool behind one limiter sized to the
//! cores ([`on_cpu`]): HTTP callers wait briefly and are then refused
//! ([`Admission::Now`], answered 503), DIMSE sub-operations wait their turn
//! ([`Admission::Wait`]). The permit is taken before the object is read, so
//! the limiter bounds memory as well as CPU.

use dicom_encoding::TransferSyntaxIndex;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::Transcode;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use std::sync::{Arc, LazyLock};

use tokio::io::AsyncReadExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::model::PatientMeta;
use crate::storage::{Storage, StorageError};

pub const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";
pub const IMPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2";
/// The syntaxes Tessera can convert to, in order of preference.
pub const TARGETS: [&str; 2] = [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN];
/// Objects larger than this are not transcoded (they are held in memory).
pub const MAX_TRANSCODE_BYTES: u64 = 1 << 30;

/// One permit per core for CPU-heavy work on stored objects.
static CPU: LazyLock<Arc<Semaphore>> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    Arc::new(Semaphore::new(cores))
});

/// What to do when every core is busy decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Wait for a core (DIMSE sub-operations, parts of a response already
    /// under way).
    Wait,
    /// Wait briefly ([`BRIEF_WAIT`]), then refuse with
    /// [`TranscodeError::Busy`] (HTTP: 503 with Retry-After): a burst is
    /// absorbed, sustained overload is not queued.
    Now,
}

/// How long an HTTP request waits for a core before it is refused.
pub const BRIEF_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Hold a core for CPU-heavy work.
pub async fn cpu_permit(admission: Admission) -> Result<OwnedSemaphorePermit, TranscodeError> {
    let acquire = CPU.clone().acquire_owned();
    match admission {
        Admission::Wait => acquire.await.map_err(|_| TranscodeError::Busy),
        Admission::Now => tokio::time::timeout(BRIEF_WAIT, acquire)
            .await
            .map_err(|_| TranscodeError::Busy)?
            .map_err(|_| TranscodeError::Busy),
    }
}

/// Run `work` on the blocking pool under a core's permit.
pub async fn on_cpu<T: Send + 'static>(
    admission: Admission,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, TranscodeError> {
    let permit = cpu_permit(admission).await?;
    tokio::task::spawn_blocking(move || {
        let out = work();
        drop(permit);
        out
    })
    .await
    .map_err(|e| TranscodeError::Failed {
        ts: String::new(),
        reason: e.to_string(),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("every core is busy decoding; try again shortly")]
    Busy,
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
    coerce: Option<&PatientMeta>,
    admission: Admission,
) -> Result<Vec<u8>, TranscodeError> {
    convert(storage, key, target_ts, false, coerce, admission).await
}

/// A stored object as a Part-10 file in `target_ts`.
pub async fn part10_in(
    storage: &Storage,
    key: &str,
    target_ts: &str,
    coerce: Option<&PatientMeta>,
    admission: Admission,
) -> Result<Vec<u8>, TranscodeError> {
    convert(storage, key, target_ts, true, coerce, admission).await
}

/// A stored object parsed into memory, for rendering and decoding.
pub async fn load(
    storage: &Storage,
    key: &str,
    admission: Admission,
) -> Result<DefaultDicomObject, TranscodeError> {
    let permit = cpu_permit(admission).await?;
    let bytes = read_bounded(storage, key).await?;
    tokio::task::spawn_blocking(move || {
        let parsed = OpenFileOptions::new()
            .read_preamble(ReadPreamble::Always)
            .from_reader(bytes.as_slice())
            .map_err(|e| TranscodeError::Failed {
                ts: String::new(),
                reason: e.to_string(),
            });
        drop(permit);
        parsed
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
    coerce: Option<&PatientMeta>,
    admission: Admission,
) -> Result<Vec<u8>, TranscodeError> {
    let permit = cpu_permit(admission).await?;
    let bytes = read_bounded(storage, key).await?;
    let target = target_ts.to_owned();
    let coerce = coerce.cloned();
    tokio::task::spawn_blocking(move || {
        let converted = transcode_bytes(&bytes, &target, with_meta, coerce.as_ref());
        drop(permit);
        converted
    })
    .await
    .map_err(|e| TranscodeError::Failed {
        ts: target_ts.to_owned(),
        reason: e.to_string(),
    })?
}

/// `part10` in `target_ts`, with `coerce`'s patient when given.
fn transcode_bytes(
    part10: &[u8],
    target_ts: &str,
    with_meta: bool,
    coerce: Option<&PatientMeta>,
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
    if let Some(patient) = coerce {
        crate::coerce::apply(&mut obj, patient);
    }
    let stored = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_owned();
    if stored != target_ts {
        obj.transcode(ts).map_err(|e| failed(e.to_string()))?;
    }
    let mut out = Vec::with_capacity(part10.len() * 2);
    if with_meta {
        obj.write_all(&mut out).map_err(|e| failed(e.to_string()))?;
    } else {
        obj.write_dataset_with_ts(&mut out, ts)
            .map_err(|e| failed(e.to_string()))?;
    }
    Ok(out)
}
