//! The single write path for instances from any protocol:
//! receive (in memory, or spooled when large) → header walk (validate,
//! extract) → journal + index (group commit) → outcome → placement.
//!
//! C-STORE, STOW-RS and `tessera import` all come through here, so the
//! durability rule is enforced in one place: an [`IngestOutcome`] exists
//! only once the object would survive a power cut (in the ingest journal,
//! or fsync'd in its place) and its index row is committed.
//!
//! Objects up to [`journal_limit`] that fit the memory budget are
//! held in memory, appended to the journal with their group's one sync, and
//! written to their places after the acknowledgement. Larger objects are
//! spooled to disk while they arrive and made durable in their place before
//! it, as are all objects when no journal runs.

mod committer;
pub mod document;
mod early_walk;
mod header;
pub mod journal;
mod part10;
mod placer;
mod recovery;

pub use part10::read_meta;
pub use recovery::open_journal;

/// Parse a Part-10 object held in memory, as ingest does a spooled file;
/// for fuzzing. Returns whether it was accepted.
pub fn fuzz_header(bytes: &[u8]) -> bool {
    header::parse_from(std::io::Cursor::new(bytes), bytes.len() as u64).is_ok()
}

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::index::{IndexError, NewForward, Recorded, StoreRequest};
use crate::model::{AeTitle, StoredObject, Uid};
use crate::routing::Router;
use crate::storage::{direct, SpoolWriter, Storage, StorageError};
use crate::telemetry::Metrics;
use committer::Inline;
pub use committer::{GroupCommitter, JournalSetup};
use early_walk::{HeadWalk, Walked, HEAD_WALK_AT};
pub use header::HeaderError;

/// Bytes of objects held in memory at once, while received or waiting to
/// be placed, in KiB. Beyond it objects are spooled to disk as they arrive.
const MEMORY_BUDGET_KIB: usize = 128 * 1024;
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
    #[error("series {series} of instance {sop_instance} is already filed under study {stored}, not under the instance's study")]
    SeriesInOtherStudy {
        series: String,
        stored: String,
        sop_class: Uid,
        sop_instance: Uid,
    },
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
            IngestError::Invalid(_)
                | IngestError::WrongStudy { .. }
                | IngestError::SeriesInOtherStudy { .. }
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
    /// Present when objects may be held in memory for the journal.
    budget: Option<Arc<Semaphore>>,
}

/// Where a received object's bytes are.
enum Body {
    /// In memory, with its share of the budget.
    Memory {
        /// The object is `buf[start..]`, block-aligned whenever the buffer
        /// was allocated for it (see [`direct::reserve_aligned`]).
        buf: Vec<u8>,
        start: usize,
        permit: Option<OwnedSemaphorePermit>,
        /// Hashed as it arrives (C-STORE: 64 KiB at a time; otherwise a
        /// chunk at a time), so that the hash is ready when the last
        /// fragment is.
        hasher: Sha256,
        /// How much of the object is hashed and counted.
        hashed: usize,
    },
    Spool(SpoolWriter),
}

/// An object being received.
pub struct Incoming {
    body: Body,
    source: String,
    /// For Part-10 input, until its meta group has been replaced.
    reheader: Option<part10::Reheader>,
    storage: Storage,
    budget: Option<Arc<Semaphore>>,
    size: u64,
    head: Option<HeadWalk>,
}

impl Incoming {
    /// Append a received chunk; ownership avoids a copy.
    pub async fn write(&mut self, chunk: Vec<u8>) -> Result<(), IngestError> {
        let Some(reheader) = self.reheader.as_mut() else {
            return self.append(chunk).await;
        };
        if let part10::Prefix::Ready(head) = reheader.push(&chunk) {
            self.reheader = None;
            self.append(head).await?;
        }
        Ok(())
    }

    /// Room for the next `len` bytes in the object's own buffer, for the
    /// caller to append them in place (straight from the socket); `None`
    /// when they must come through [`Incoming::write`] instead.
    pub fn room(&mut self, len: usize) -> Option<&mut Vec<u8>> {
        self.catch_up();
        if self.reheader.is_some() {
            return None;
        }
        let Body::Memory {
            buf, start, permit, ..
        } = &mut self.body
        else {
            return None;
        };
        let needed = buf.len() - *start + len;
        if needed > journal_limit(&self.storage) || !grow(&self.budget, permit, needed) {
            return None;
        }
        *start = direct::reserve_aligned(buf, *start, len);
        Some(buf)
    }

    /// Account for bytes appended to the buffer: hash and count them, and
    /// start the early walk of the header once enough has arrived.
    fn catch_up(&mut self) {
        let Body::Memory {
            buf,
            start,
            hasher,
            hashed,
            ..
        } = &mut self.body
        else {
            return;
        };
        let object = &buf[*start..];
        if *hashed == object.len() {
            return;
        }
        hasher.update(&object[*hashed..]);
        self.size += (object.len() - *hashed) as u64;
        if let Some(walk) = &mut self.head {
            walk.feed(object);
        } else if self.reheader.is_none() && object.len() >= HEAD_WALK_AT {
            self.head = Some(HeadWalk::start(object));
        }
        *hashed = object.len();
    }

    async fn append(&mut self, chunk: Vec<u8>) -> Result<(), IngestError> {
        self.catch_up();
        if let Body::Memory {
            buf,
            start,
            permit,
            hasher,
            ..
        } = &mut self.body
        {
            let needed = buf.len() - *start + chunk.len();
            if needed <= journal_limit(&self.storage) && grow(&self.budget, permit, needed) {
                *start = direct::reserve_aligned(buf, *start, chunk.len());
                buf.extend_from_slice(&chunk);
                self.catch_up();
                return Ok(());
            }
            // Too large for the journal, or memory is spoken for: spool.
            // What arrived so far is hashed already (`catch_up` above).
            let held = Bytes::from(std::mem::take(buf)).slice(*start..);
            let hasher = std::mem::take(hasher);
            let mut spool = self.storage.spool().await?;
            self.head = HeadWalk::spooling(self.head.take(), &held).await;
            spool.write_hashed(held, hasher).await?;
            self.body = Body::Spool(spool);
        }
        self.size += chunk.len() as u64;
        if let Some(walk) = self.head.take() {
            self.head = walk.pass(&chunk).await;
        }
        match &mut self.body {
            Body::Spool(spool) => Ok(spool.write(chunk).await?),
            Body::Memory { .. } => Ok(()),
        }
    }

    async fn into_body(mut self) -> Result<(Body, String, Option<HeadWalk>), IngestError> {
        if let Some(reheader) = self.reheader.take() {
            self.append(reheader.into_remainder()).await?;
        }
        self.catch_up();
        if let Body::Memory { buf, start, .. } = &mut self.body {
            // Room made for a larger object than this one would be held
            // outside the memory budget until placement. Shrinking in place
            // copies nothing.
            if buf.capacity() - buf.len() > (buf.len() - *start) / 4 {
                buf.shrink_to_fit();
            }
        }
        Ok((self.body, self.source, self.head))
    }

    pub fn size(&mut self) -> u64 {
        self.catch_up();
        self.size
    }

    /// Make room for an object of about `bytes` (the last one on the same
    /// association, say): one allocation, where growing by doubling would
    /// copy what has arrived once per power of two.
    pub fn expect(&mut self, bytes: u64) {
        if let Body::Memory { buf, start, .. } = &mut self.body {
            let room = usize::try_from(bytes)
                .unwrap_or(usize::MAX)
                .min(journal_limit(&self.storage));
            let held = buf.len() - *start;
            *start = direct::reserve_aligned(buf, *start, room.saturating_sub(held));
        }
    }
}

/// The largest object worth sending through the ingest journal. On a
/// local disk the journal costs a second write of every byte; past a few
/// MiB that write, not the fixed cost of syncing a new file and its folder,
/// is what the disk spends its time on, so larger objects are better
/// written once, to their place. On S3 the journal is the only local write
/// and keeps the upload off the acknowledgement.
fn journal_limit(storage: &Storage) -> usize {
    if storage.is_local() {
        4 << 20
    } else {
        journal::MAX_RECORD
    }
}

/// Take enough of the budget to hold `bytes`; false when it is spent.
fn grow(
    budget: &Option<Arc<Semaphore>>,
    permit: &mut Option<OwnedSemaphorePermit>,
    bytes: usize,
) -> bool {
    let Some(budget) = budget else {
        return false;
    };
    let want = bytes.div_ceil(1024);
    let held = permit.as_ref().map_or(0, |p| p.num_permits());
    if want <= held {
        return true;
    }
    let Ok(more) = budget.clone().try_acquire_many_owned((want - held) as u32) else {
        return false;
    };
    match permit {
        Some(p) => p.merge(more),
        None => *permit = Some(more),
    }
    true
}

impl Ingest {
    pub fn new(
        storage: Storage,
        committer: GroupCommitter,
        router: Arc<Router>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let budget = committer
            .journaled()
            .then(|| Arc::new(Semaphore::new(MEMORY_BUDGET_KIB)));
        Ingest {
            storage,
            committer,
            router,
            metrics,
            budget,
        }
    }

    fn incoming(&self, source: String, reheader: Option<part10::Reheader>) -> Incoming {
        Incoming {
            body: Body::Memory {
                buf: Vec::new(),
                start: 0,
                permit: None,
                hasher: Sha256::new(),
                hashed: 0,
            },
            source,
            reheader,
            storage: self.storage.clone(),
            budget: self.budget.clone(),
            size: 0,
            head: None,
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
        let head = part10::header(sop_class, sop_instance, transfer_syntax)?;
        let mut incoming = self.incoming(calling_ae.to_string(), None);
        incoming.write(head).await?;
        Ok(incoming)
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
        Ok(self.incoming(source.to_owned(), Some(part10::Reheader::default())))
    }

    async fn finish_inner(
        &self,
        incoming: Incoming,
        study: Option<&str>,
    ) -> Result<(IngestOutcome, StoredIds), IngestError> {
        let (body, source, head) = incoming.into_body().await?;
        let (parsed, document, object, inline, spooled) = match body {
            Body::Memory {
                buf,
                start,
                permit,
                hasher,
                ..
            } => {
                let bytes = Bytes::from(buf).slice(start..);
                let sha256: [u8; 32] = hasher.finalize().into();
                let head = match head {
                    Some(walk) => walk.finish(&bytes).await,
                    None => Walked::Nothing,
                };
                let (parsed, document) = examine(bytes.clone(), head).await?;
                let object = stored_object(&sha256, bytes.len() as u64, &parsed);
                let inline = Inline {
                    bytes,
                    sha256,
                    budget: permit,
                };
                (parsed, document, object, Some(inline), None)
            }
            Body::Spool(spool) => {
                let spooled = spool.finish().await?;
                let path = spooled.path().to_owned();
                let passed = match head {
                    Some(walk) => walk.spooled(spooled.size).await,
                    None => None,
                };
                let (parsed, document) = match passed {
                    Some((parsed, Some(document))) => (parsed, Ok(document)),
                    passed => tokio::task::spawn_blocking(move || {
                        let parsed = match passed {
                            // Walked whole as it passed: only the document
                            // is left, from the file's head.
                            Some((parsed, None)) => parsed,
                            _ => header::parse(&path)?,
                        };
                        let document = document::build(
                            || std::fs::File::open(&path).map(std::io::BufReader::new),
                            &parsed.meta,
                            parsed.pixels.as_ref(),
                            parsed.has_pixel_data,
                        );
                        Ok::<_, HeaderError>((parsed, document))
                    })
                    .await
                    .map_err(|e| HeaderError::Meta(format!("header task failed: {e}")))??,
                };
                let object = StoredObject {
                    key: crate::storage::key_for(&spooled.sha256),
                    size: spooled.size,
                    sha256: spooled.sha256.clone(),
                    transfer_syntax_uid: parsed.transfer_syntax_uid.clone(),
                };
                (parsed, document, object, None, Some(spooled))
            }
        };
        let ids = StoredIds {
            sop_class_uid: parsed.meta.sop_class_uid.clone(),
            sop_instance_uid: parsed.meta.sop_instance_uid.clone(),
            study_instance_uid: parsed.meta.study.study_instance_uid.clone(),
            series_instance_uid: parsed.meta.series.series_instance_uid.clone(),
        };
        if let Some(expected) = study {
            if ids.study_instance_uid.as_str() != expected {
                // Never committed: a spool file is dropped with `spooled`.
                return Err(IngestError::WrongStudy {
                    expected: expected.to_owned(),
                    found: ids.study_instance_uid.to_string(),
                    sop_class: ids.sop_class_uid,
                    sop_instance: ids.sop_instance_uid,
                });
            }
        }
        let size = object.size;
        let sop_uid = parsed.meta.sop_instance_uid.clone();

        // Keys are content hashes: a resend of identical bytes finds its
        // object already stored and writes nothing. The index decides
        // duplicates in the same transaction that records the instance.
        let (existed, object_existed) = match spooled {
            Some(spooled) => {
                let committed = self.storage.commit(spooled).await?;
                let found = committed.existed.is_some();
                (committed.existed, found)
            }
            // Placed after the commit, so whether it is there already is not
            // looked up on the way to the acknowledgement (a `stat` that
            // could stall on a NAS): it may be, with a tombstone the
            // collector is acting on. A commit that references it takes the
            // tombstone over (waiting for the collector), and placement
            // then writes the object again if the collector got there first.
            None => (None, true),
        };
        let key = object.key.clone();
        let request = request_for(
            &self.router,
            parsed,
            document,
            object,
            source,
            object_existed,
        );
        let recorded = self.committer.record(request, inline).await?;
        if let Some(spool) = existed {
            // The object was there before this store referenced it; the
            // collector may have deleted it since. Now that the reference is
            // committed, nothing can delete it again: put it back if gone.
            self.storage.ensure_present(&key, spool).await?;
        }
        let outcome = match recorded {
            Recorded::Inserted => IngestOutcome::Stored,
            Recorded::Identical => IngestOutcome::AlreadyStored,
            Recorded::KeptExisting => IngestOutcome::KeptExisting,
            Recorded::Rejected => return Err(IngestError::Duplicate(sop_uid)),
            Recorded::SeriesInOtherStudy(stored) => {
                return Err(IngestError::SeriesInOtherStudy {
                    series: ids.series_instance_uid.to_string(),
                    stored,
                    sop_class: ids.sop_class_uid.clone(),
                    sop_instance: sop_uid,
                })
            }
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
    ) -> Result<(IngestOutcome, StoredIds), IngestError> {
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
        self.finish_in_study(incoming, None).await
    }
}

/// Walk and describe an object held in memory. With the early walk of its
/// head, only the rest is walked, and nothing at all when the head ends
/// where the object does (a native image, mostly): then no trip to the
/// blocking pool is taken. A deflated object walked whole while it arrived
/// is only described.
async fn examine(
    bytes: Bytes,
    walked: Walked,
) -> Result<(header::ParsedHeader, Result<String, String>), IngestError> {
    let walked = match walked {
        Walked::Head(head, document) if header::settled_by_head(&head, bytes.len() as u64) => {
            return Ok((head.settled(), Ok(document)));
        }
        other => other,
    };
    tokio::task::spawn_blocking(move || {
        let parsed = match walked {
            Walked::Head(head, document) => match header::parse_rest(head, &bytes) {
                Some(parsed) => return Ok((parsed, Ok(document))),
                None => None,
            },
            Walked::Whole(parsed) => Some(parsed),
            Walked::Nothing => None,
        };
        let parsed = match parsed {
            Some(parsed) => parsed,
            None => header::parse_from(std::io::Cursor::new(&bytes[..]), bytes.len() as u64)?,
        };
        let document = document::build(
            || Ok(std::io::Cursor::new(&bytes[..])),
            &parsed.meta,
            parsed.pixels.as_ref(),
            parsed.has_pixel_data,
        );
        Ok::<_, HeaderError>((parsed, document))
    })
    .await
    .map_err(|e| HeaderError::Meta(format!("header task failed: {e}")))?
    .map_err(IngestError::from)
}

fn stored_object(sha256: &[u8; 32], size: u64, parsed: &header::ParsedHeader) -> StoredObject {
    let hex = hex::encode(sha256);
    StoredObject {
        key: crate::storage::key_for(&hex),
        size,
        sha256: hex,
        transfer_syntax_uid: parsed.transfer_syntax_uid.clone(),
    }
}

/// The index request for a walked object, with the forwards its routes ask for.
fn request_for(
    router: &Router,
    parsed: header::ParsedHeader,
    document: Result<String, String>,
    object: StoredObject,
    source: String,
    object_existed: bool,
) -> StoreRequest {
    // The document is a cache: without it, metadata is built on request.
    let document = document
        .map_err(|e| tracing::warn!(error = %e, "cannot build the metadata document"))
        .ok();
    let forward_to = router
        .destinations(&parsed.meta, &source)
        .into_iter()
        .map(|d| NewForward {
            route: d.route,
            destination_ae: d.destination.to_string(),
            confirm_commitment: d.confirm_commitment,
        })
        .collect();
    StoreRequest {
        forward_to,
        meta: parsed.meta,
        object,
        source_ae_title: source,
        document,
        pixels: parsed.pixels,
        object_existed,
    }
}
