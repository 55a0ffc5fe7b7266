//! The single write path for instances from any protocol:
//! spool (streamed, hashed) → header walk (validate, extract) → storage
//! commit (durable) → index (group commit) → outcome.
//!
//! C-STORE and `tessera import` both come through here, so the durability
//! rule is enforced in one place: an [`IngestOutcome`] exists only after the
//! object is fsync'd (or uploaded) and its index row is committed.

mod committer;
pub mod document;
mod header;
mod part10;

pub use part10::read_meta;

/// Parse a Part-10 object held in memory, as ingest does a spooled file;
/// for fuzzing. Returns whether it was accepted.
pub fn fuzz_header(bytes: &[u8]) -> bool {
    header::parse_from(std::io::Cursor::new(bytes), bytes.len() as u64).is_ok()
}

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::AsyncReadExt;

use crate::index::{IndexError, NewForward, Recorded, StoreRequest};
use crate::model::{AeTitle, StoredObject, Uid};
use crate::routing::Router;
use crate::storage::{SpoolWriter, Storage, StorageError};
use crate::telemetry::Metrics;
pub use committer::GroupCommitter;
pub use header::HeaderError;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("invalid object: {0}")]
    Invalid(#[from] HeaderError),
    #[error("an instance with SOP Instance UID {0} and different content is already stored")]
    Duplicate(Uid),
    #[error("the archive is shutting down")]
    ShuttingDown,
    #[error("instance {sop_instance} belongs to study {found}, not to study {expected}")]
    WrongStudy {
        expected: String,
        found: String,
        sop_class: Uid,
        sop_instance: Uid,
    },
}

/// The identity of a stored instance, for protocol responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredIds {
    pub sop_class_uid: Uid,
    pub sop_instance_uid: Uid,
    pub study_instance_uid: Uid,
    pub series_instance_uid: Uid,
}

impl IngestError {
    /// Problems with the sender's data, as opposed to ours.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            IngestError::Invalid(_) | IngestError::WrongStudy { .. }
        )
    }
}

/// How a stored instance ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    Stored,
    /// Identical bytes were already stored under this SOP Instance UID.
    AlreadyStored,
    /// Different bytes under a known UID; the first version was kept.
    KeptExisting,
    /// Different bytes under a known UID replaced the stored version.
    Replaced,
}

/// Shared handle on the write path.
#[derive(Clone)]
pub struct Ingest {
    storage: Storage,
    committer: GroupCommitter,
    router: Arc<Router>,
    metrics: Arc<Metrics>,
}

/// An object being received.
pub struct Incoming {
    spool: SpoolWriter,
    source: String,
    /// For Part-10 input, until its meta group has been replaced.
    reheader: Option<part10::Reheader>,
}

impl Incoming {
    /// Append a received chunk; ownership avoids a copy.
    pub async fn write(&mut self, chunk: Vec<u8>) -> Result<(), IngestError> {
        let Some(reheader) = self.reheader.as_mut() else {
            return Ok(self.spool.write(chunk).await?);
        };
        if let part10::Prefix::Ready(head) = reheader.push(&chunk) {
            self.reheader = None;
            self.spool.write(head).await?;
        }
        Ok(())
    }

    /// The spooled object, with whatever a too-short stream left buffered.
    async fn into_spooled(mut self) -> Result<(crate::storage::Spooled, String), IngestError> {
        if let Some(reheader) = self.reheader.take() {
            self.spool.write(reheader.into_remainder()).await?;
        }
        Ok((self.spool.finish().await?, self.source))
    }

    pub fn size(&self) -> u64 {
        self.spool.size()
    }
}

impl Ingest {
    pub fn new(
        storage: Storage,
        committer: GroupCommitter,
        router: Arc<Router>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Ingest {
            storage,
            committer,
            router,
            metrics,
        }
    }

    /// Begin receiving a data set sent over the network in `transfer_syntax`.
    /// The Part-10 header is written first, so the stored object is a
    /// standard file holding the data set exactly as received.
    pub async fn begin_dataset(
        &self,
        sop_class: &Uid,
        sop_instance: &Uid,
        transfer_syntax: &Uid,
        calling_ae: &AeTitle,
    ) -> Result<Incoming, IngestError> {
        let mut spool = self.storage.spool().await?;
        let head = part10::header(sop_class, sop_instance, transfer_syntax)?;
        spool.write(head).await?;
        Ok(Incoming {
            spool,
            source: calling_ae.to_string(),
            reheader: None,
        })
    }

    /// Validate, store durably and index an object received in full.
    pub async fn finish(&self, incoming: Incoming) -> Result<IngestOutcome, IngestError> {
        self.finish_in_study(incoming, None)
            .await
            .map(|(outcome, _)| outcome)
    }

    /// As [`Ingest::finish`], refusing the object before it is committed
    /// unless it belongs to `study` (STOW-RS to a study URL).
    pub async fn finish_in_study(
        &self,
        incoming: Incoming,
        study: Option<&str>,
    ) -> Result<(IngestOutcome, StoredIds), IngestError> {
        let started = Instant::now();
        let result = self.finish_inner(incoming, study).await;
        self.metrics
            .observe_store(started.elapsed(), result.as_ref().err());
        result
    }

    /// Begin receiving a complete Part-10 object (STOW-RS, import). Its
    /// meta group is replaced by Tessera's own; the data set is kept as is.
    pub async fn begin_part10(&self, source: &str) -> Result<Incoming, IngestError> {
        Ok(Incoming {
            spool: self.storage.spool().await?,
            source: source.to_owned(),
            reheader: Some(part10::Reheader::default()),
        })
    }

    async fn finish_inner(
        &self,
        incoming: Incoming,
        study: Option<&str>,
    ) -> Result<(IngestOutcome, StoredIds), IngestError> {
        let (spooled, source) = incoming.into_spooled().await?;
        let path = spooled.path().to_owned();
        let (parsed, document) = tokio::task::spawn_blocking(move || {
            let parsed = header::parse(&path)?;
            let document = document::build(
                &path,
                &parsed.meta,
                parsed.pixels.as_ref(),
                parsed.has_pixel_data,
            );
            Ok::<_, HeaderError>((parsed, document))
        })
        .await
        .map_err(|e| HeaderError::Meta(format!("header task failed: {e}")))??;
        // The document is a cache: without it, metadata is built on request.
        let document = document
            .map_err(|e| tracing::warn!(error = %e, "cannot build the metadata document"))
            .ok();
        let size = spooled.size;
        let sha256 = spooled.sha256.clone();
        let ids = StoredIds {
            sop_class_uid: parsed.meta.sop_class_uid.clone(),
            sop_instance_uid: parsed.meta.sop_instance_uid.clone(),
            study_instance_uid: parsed.meta.study.study_instance_uid.clone(),
            series_instance_uid: parsed.meta.series.series_instance_uid.clone(),
        };
        if let Some(expected) = study {
            if ids.study_instance_uid.as_str() != expected {
                // Never committed: the spool file is dropped with `spooled`.
                return Err(IngestError::WrongStudy {
                    expected: expected.to_owned(),
                    found: ids.study_instance_uid.to_string(),
                    sop_class: ids.sop_class_uid,
                    sop_instance: ids.sop_instance_uid,
                });
            }
        }

        // Keys are content hashes: a resend of identical bytes finds its
        // object already stored and writes nothing. The index decides
        // duplicates in the same transaction that records the instance.
        let committed = self.storage.commit(spooled).await?;
        let key = committed.key.clone();
        let sop_uid = parsed.meta.sop_instance_uid.clone();
        let forward_to = self
            .router
            .destinations(&parsed.meta, &source)
            .into_iter()
            .map(|d| NewForward {
                route: d.route,
                destination_ae: d.destination.to_string(),
                confirm_commitment: d.confirm_commitment,
            })
            .collect();
        let request = StoreRequest {
            forward_to,
            meta: parsed.meta,
            object: StoredObject {
                key,
                size,
                sha256,
                transfer_syntax_uid: parsed.transfer_syntax_uid,
            },
            source_ae_title: source,
            document,
            pixels: parsed.pixels,
            object_existed: committed.existed.is_some(),
        };
        let recorded = self.committer.record(request).await?;
        if let Some(spool) = committed.existed {
            // The object was there before this store referenced it; the
            // collector may have deleted it since. Now that the reference is
            // committed, nothing can delete it again: put it back if gone.
            self.storage.ensure_present(&committed.key, spool).await?;
        }
        let outcome = match recorded {
            Recorded::Inserted => IngestOutcome::Stored,
            Recorded::Identical => IngestOutcome::AlreadyStored,
            Recorded::KeptExisting => IngestOutcome::KeptExisting,
            Recorded::Rejected => return Err(IngestError::Duplicate(sop_uid)),
            Recorded::Replaced => IngestOutcome::Replaced,
        };
        if outcome == IngestOutcome::Stored {
            self.metrics.instance_stored(size);
        }
        Ok((outcome, ids))
    }

    /// Import a Part-10 file from disk: the data set byte for byte, under
    /// Tessera's meta group.
    pub async fn import_file(
        &self,
        path: &Path,
        source: &str,
    ) -> Result<IngestOutcome, IngestError> {
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| StorageError::io(path, e))?;
        let mut incoming = self.begin_part10(source).await?;
        loop {
            let mut buf = Vec::with_capacity(256 * 1024);
            let n = (&mut file)
                .take(256 * 1024)
                .read_to_end(&mut buf)
                .await
                .map_err(|e| StorageError::io(path, e))?;
            if n == 0 {
                break;
            }
            incoming.write(buf).await?;
        }
        self.finish(incoming).await
    }
}
