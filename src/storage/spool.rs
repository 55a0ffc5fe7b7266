//! Spool files: an object being received, hashed as it is written. A spool
//! file that is dropped before commit is deleted, so an aborted association
//! leaves nothing behind.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use super::StorageError;

static NEXT_SPOOL_ID: AtomicU64 = AtomicU64::new(0);

/// Removes the spool file unless disarmed by a successful commit.
#[derive(Debug)]
struct DeleteOnDrop(Option<PathBuf>);

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            // Runs on error paths only; an unlink is cheap enough inline.
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Received chunks are queued without copying and handed to a blocking
/// task in batches of about this size, which hashes and writes them: one
/// thread hop per batch instead of one per network PDU.
const BATCH_BYTES: usize = 1024 * 1024;

/// What the blocking side owns between batches.
#[derive(Debug)]
struct Sink {
    file: std::fs::File,
    hasher: Sha256,
}

type BatchTask = tokio::task::JoinHandle<(Sink, std::io::Result<()>)>;

/// Streams bytes to a spool file while hashing them. One batch is written
/// in the background while the next is received.
#[derive(Debug)]
pub struct SpoolWriter {
    /// The sink when idle; while a batch is in flight it travels with it.
    sink: Option<Sink>,
    in_flight: Option<BatchTask>,
    queued: Vec<Vec<u8>>,
    queued_bytes: usize,
    size: u64,
    guard: DeleteOnDrop,
}

impl SpoolWriter {
    pub(super) async fn create(dir: &Path) -> Result<Self, StorageError> {
        let id = NEXT_SPOOL_ID.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{}-{id}.part", std::process::id()));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| StorageError::io(&path, e))?;
        Ok(SpoolWriter {
            sink: Some(Sink {
                file: file.into_std().await,
                hasher: Sha256::new(),
            }),
            in_flight: None,
            queued: Vec::new(),
            queued_bytes: 0,
            size: 0,
            guard: DeleteOnDrop(Some(path)),
        })
    }

    /// Queue a chunk; it is written once a batch is full or at
    /// [`Self::finish`].
    pub async fn write(&mut self, chunk: Vec<u8>) -> Result<(), StorageError> {
        self.size += chunk.len() as u64;
        self.queued_bytes += chunk.len();
        self.queued.push(chunk);
        if self.queued_bytes >= BATCH_BYTES {
            self.start_batch().await?;
        }
        Ok(())
    }

    /// Wait for the batch in flight, if any, and take the sink back.
    async fn settle(&mut self) -> Result<(), StorageError> {
        if let Some(task) = self.in_flight.take() {
            let path = self.path().to_owned();
            let (sink, result) = task
                .await
                .map_err(|e| StorageError::io(&path, std::io::Error::other(e)))?;
            result.map_err(|e| StorageError::io(&path, e))?;
            self.sink = Some(sink);
        }
        Ok(())
    }

    /// Hash and write the queued chunks on a blocking thread.
    async fn start_batch(&mut self) -> Result<(), StorageError> {
        self.settle().await?;
        let batch = std::mem::take(&mut self.queued);
        self.queued_bytes = 0;
        let Some(mut sink) = self.sink.take() else {
            let path = self.path().to_owned();
            return Err(StorageError::io(
                &path,
                std::io::Error::other("earlier write failed"),
            ));
        };
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            use std::io::Write;
            for chunk in &batch {
                sink.hasher.update(chunk);
                if let Err(e) = sink.file.write_all(chunk) {
                    return (sink, Err(e));
                }
            }
            (sink, Ok(()))
        }));
        Ok(())
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    fn path(&self) -> &Path {
        self.guard.0.as_deref().unwrap_or(Path::new(""))
    }

    /// Write what is queued; the file stays owned by the returned
    /// [`Spooled`] and is still deleted if that is dropped.
    pub async fn finish(mut self) -> Result<Spooled, StorageError> {
        self.start_batch().await?;
        self.settle().await?;
        let path = self.path().to_owned();
        let sink = self
            .sink
            .take()
            .ok_or_else(|| StorageError::io(&path, std::io::Error::other("spool closed")))?;
        Ok(Spooled {
            file: sink.file,
            size: self.size,
            sha256: hex::encode(sink.hasher.finalize()),
            guard: self.guard,
        })
    }
}

/// A complete spool file with its size and hash, ready to be parsed and
/// committed.
#[derive(Debug)]
pub struct Spooled {
    file: std::fs::File,
    pub size: u64,
    pub sha256: String,
    guard: DeleteOnDrop,
}

impl Spooled {
    pub fn path(&self) -> &Path {
        self.guard.0.as_deref().unwrap_or(Path::new(""))
    }

    /// Hand path and file over to the backend, which now owns clean-up.
    pub(super) fn into_std(mut self) -> (PathBuf, std::fs::File) {
        let path = self.guard.0.take().unwrap_or_default();
        (path, self.file)
    }
}

/// This node's name for its spool folder: the host name, reduced to
/// characters safe in a path.
pub(super) fn node_name() -> String {
    let raw = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(64)
        .collect();
    if name.is_empty() || name.starts_with('.') {
        "node".to_owned()
    } else {
        name
    }
}

pub(super) async fn create_dir(dir: &Path) -> Result<(), StorageError> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| StorageError::io(dir, e))
}

/// Remove anything a crash left in the spool directory.
pub(super) async fn clear_dir(dir: &Path) -> Result<(), StorageError> {
    let mut entries = tokio::fs::read_dir(dir)
        .await
        .map_err(|e| StorageError::io(dir, e))?;
    let mut removed = 0usize;
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(|e| StorageError::io(dir, e))?
    {
        if entry.file_name().to_string_lossy().ends_with(".part") {
            tokio::fs::remove_file(entry.path())
                .await
                .map_err(|e| StorageError::io(&entry.path(), e))?;
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(removed, dir = %dir.display(), "removed incomplete objects from spool");
    }
    Ok(())
}
