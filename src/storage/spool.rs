//! Spool files: an object being received, hashed as it is written. A spool
//! file that is dropped before commit is deleted, so an aborted association
//! leaves nothing behind.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use tokio::fs::File;
use tokio::io::{AsyncWriteExt, BufWriter};

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

/// Streams bytes to a spool file while hashing them.
#[derive(Debug)]
pub struct SpoolWriter {
    file: BufWriter<File>,
    hasher: Sha256,
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
            file: BufWriter::with_capacity(256 * 1024, file),
            hasher: Sha256::new(),
            size: 0,
            guard: DeleteOnDrop(Some(path)),
        })
    }

    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        let path = self.path().to_owned();
        self.file
            .write_all(bytes)
            .await
            .map_err(|e| StorageError::io(&path, e))
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    fn path(&self) -> &Path {
        self.guard.0.as_deref().unwrap_or(Path::new(""))
    }

    /// Flush and close for writing; the file stays owned by the returned
    /// [`Spooled`] and is still deleted if that is dropped.
    pub async fn finish(mut self) -> Result<Spooled, StorageError> {
        let path = self.path().to_owned();
        self.file
            .flush()
            .await
            .map_err(|e| StorageError::io(&path, e))?;
        let file = self.file.into_inner();
        Ok(Spooled {
            file,
            size: self.size,
            sha256: hex::encode(self.hasher.finalize()),
            guard: self.guard,
        })
    }
}

/// A complete spool file with its size and hash, ready to be parsed and
/// committed.
#[derive(Debug)]
pub struct Spooled {
    file: File,
    pub size: u64,
    pub sha256: String,
    guard: DeleteOnDrop,
}

impl Spooled {
    pub fn path(&self) -> &Path {
        self.guard.0.as_deref().unwrap_or(Path::new(""))
    }

    pub(super) async fn sync(&self) -> Result<(), StorageError> {
        self.file
            .sync_data()
            .await
            .map_err(|e| StorageError::io(self.path(), e))
    }

    /// Hand the file over to the backend; it no longer gets deleted on drop.
    pub(super) fn into_path(mut self) -> PathBuf {
        self.guard.0.take().unwrap_or_default()
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
