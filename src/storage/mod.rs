//! Object storage: where the bytes of every instance live.
//!
//! An object is first written to a spool file ([`SpoolWriter`]) while its
//! SHA-256 is computed, then [`Storage::commit`] makes it durable under a key
//! derived from that hash: `ab/cd/<sha256>.dcm`. Keys therefore carry no
//! patient data or UIDs, and identical content is stored once.
//!
//! Two backends: a local directory (RAID/DAS, NAS or iSCSI mount) written
//! with temp file → fsync → rename → directory fsync, and any S3-compatible
//! bucket through `object_store`, where a completed PUT is atomic. Either way
//! a crash can only leave debris in the spool, which is emptied at startup;
//! a partial object is never visible under its key. This module knows nothing
//! of SQL or DICOM.

pub(crate) mod direct;
mod local;
mod s3;
mod spool;
mod staged;

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::SystemTime;

use bytes::Bytes;

use futures::Stream;
use tokio::io::AsyncRead;

use crate::config::{Config, StorageLocation};
pub use spool::{SpoolWriter, Spooled};
use staged::Staged;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("invalid object key {0:?}")]
    BadKey(String),
    #[error("object {0} not found")]
    NotFound(String),
}

impl StorageError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        StorageError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

pub type ObjectReader = Pin<Box<dyn AsyncRead + Send>>;

/// A committed object: its key, and the spool when the object was already
/// stored (dropping it removes the spool file).
#[derive(Debug)]
pub struct Committed {
    pub key: String,
    pub existed: Option<Spooled>,
}

#[derive(Debug, Clone)]
enum Backend {
    Local(local::LocalStore),
    S3(s3::S3Store),
}

/// The object store of this node; cheap to clone.
#[derive(Debug, Clone)]
pub struct Storage {
    backend: Backend,
    spool_dir: PathBuf,
    staged: Staged,
    node: String,
}

impl Storage {
    /// Open the configured backend and create its directories. The spool is
    /// left as it is: a tool run beside a live server must not touch the
    /// server's transfers. The server calls [`Storage::recover_spool`].
    pub async fn open(config: &Config) -> Result<Self, StorageError> {
        let (backend, spool_dir) = match &config.storage {
            StorageLocation::Local { root } => (
                Backend::Local(local::LocalStore::new(root.clone(), config.fsync)),
                // Same file system as the objects, so commit is a rename;
                // one folder per node, so nodes sharing a NAS root never
                // touch each other's spool files.
                root.join(".spool").join(spool::node_name()),
            ),
            StorageLocation::S3 {
                bucket,
                prefix,
                settings,
            } => (
                Backend::S3(s3::S3Store::new(bucket, prefix, settings)?),
                // Per node too: a data directory on shared storage must not
                // let one node's startup clear another's transfers.
                config.spool_dir().join(spool::node_name()),
            ),
        };
        if let Backend::Local(store) = &backend {
            store.create_root().await?;
        }
        spool::create_dir(&spool_dir).await?;
        Ok(Storage {
            backend,
            spool_dir,
            staged: Staged::default(),
            node: spool::node_name(),
        })
    }

    /// This node's name (its host name), which keeps its files apart from
    /// other nodes' on shared storage.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// This node's spool folder, which also holds the ingest journal.
    pub fn spool_dir(&self) -> &Path {
        &self.spool_dir
    }

    /// Whether objects live on a file system of this machine.
    pub fn is_local(&self) -> bool {
        matches!(self.backend, Backend::Local(_))
    }

    /// Serve `bytes` under `key` until [`Storage::unstage`]: an object whose
    /// durable copy is still only in the ingest journal can already be read.
    pub fn stage(&self, key: &str, bytes: Bytes) {
        self.staged.insert(key, bytes);
    }

    pub fn unstage(&self, key: &str) {
        self.staged.remove(key);
    }

    /// Objects acknowledged from the journal and not yet in their places.
    pub fn awaiting_placement(&self) -> usize {
        self.staged.len()
    }

    /// Write objects held in memory to their places, durably: every file,
    /// then one sync of the file system (local), or one PUT each (S3).
    /// A file already in place is kept when `found` says it is whole.
    pub async fn place(
        &self,
        objects: Vec<(String, Bytes)>,
        found: Found,
    ) -> Result<(), StorageError> {
        for (key, _) in &objects {
            check_key(key)?;
        }
        match &self.backend {
            Backend::Local(store) => store.place(objects, self.spool_dir.clone(), found).await,
            Backend::S3(store) => store.place(objects).await,
        }
    }

    /// Remove what a crash of this node left half-written in its spool. Only
    /// for a server starting up: nothing of this node may be writing yet.
    pub async fn recover_spool(&self) -> Result<(), StorageError> {
        spool::clear_dir(&self.spool_dir).await
    }

    /// Start writing a new object.
    pub async fn spool(&self) -> Result<SpoolWriter, StorageError> {
        SpoolWriter::create(&self.spool_dir, self.spool_direct()).await
    }

    /// Whether spool files are written around the page cache: where they
    /// are synced and renamed into place. An upload to S3 reads its spool
    /// file straight back, and without fsync nothing waits for the disk.
    fn spool_direct(&self) -> bool {
        matches!(&self.backend, Backend::Local(store) if store.syncs())
    }

    /// Make a spooled object durable and return its key. Identical content
    /// that is already stored is not written again: it is made durable as
    /// it stands (another writer may not have synced it yet), and the spool
    /// is handed back, for [`Storage::ensure_present`] once the index
    /// references the key.
    pub async fn commit(&self, spooled: Spooled) -> Result<Committed, StorageError> {
        let key = key_for(&spooled.sha256);
        let existed = match &self.backend {
            Backend::Local(store) => store.commit(spooled, &key).await?,
            Backend::S3(store) => store.commit(spooled, &key).await?,
        };
        Ok(Committed { key, existed })
    }

    /// After the index references an object that already existed: if the
    /// collector deleted it in between, write it again from the spool.
    pub async fn ensure_present(&self, key: &str, spooled: Spooled) -> Result<(), StorageError> {
        check_key(key)?;
        match self.commit(spooled).await? {
            Committed { key: written, .. } if written == key => Ok(()),
            Committed { key: written, .. } => Err(StorageError::BadKey(written)),
        }
    }

    /// When the object was last written, or `None` when it does not exist.
    pub async fn modified(&self, key: &str) -> Result<Option<SystemTime>, StorageError> {
        check_key(key)?;
        if self.staged.get(key).is_some() {
            return Ok(Some(SystemTime::now()));
        }
        match &self.backend {
            Backend::Local(store) => store.modified(key).await,
            Backend::S3(store) => store.modified(key).await,
        }
    }

    /// Stream an object's bytes.
    pub async fn open_read(&self, key: &str) -> Result<ObjectReader, StorageError> {
        check_key(key)?;
        if let Some(bytes) = self.staged.get(key) {
            return Ok(Box::pin(std::io::Cursor::new(bytes)));
        }
        match &self.backend {
            Backend::Local(store) => store.open_read(key).await,
            Backend::S3(store) => store.open_read(key).await,
        }
    }

    /// Stream `length` bytes from `offset`, in bounded chunks: a range of a
    /// multi-gigabyte value is never held in memory.
    pub async fn open_range(
        &self,
        key: &str,
        offset: u64,
        length: u64,
    ) -> Result<ObjectReader, StorageError> {
        check_key(key)?;
        if let Some(bytes) = self.staged.get(key) {
            let range = staged::slice(&bytes, offset, length);
            return Ok(Box::pin(std::io::Cursor::new(range)));
        }
        match &self.backend {
            Backend::Local(store) => store.open_range(key, offset, length).await,
            Backend::S3(store) => store.open_range(key, offset, length).await,
        }
    }

    /// `length` bytes from `offset`: one frame of a large object without
    /// reading the rest.
    pub async fn read_range(
        &self,
        key: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, StorageError> {
        check_key(key)?;
        if let Some(bytes) = self.staged.get(key) {
            let range = staged::slice(&bytes, offset, length);
            if (range.len() as u64) < length {
                return Err(StorageError::NotFound(key.to_owned()));
            }
            return Ok(range.to_vec());
        }
        match &self.backend {
            Backend::Local(store) => store.read_range(key, offset, length).await,
            Backend::S3(store) => store.read_range(key, offset, length).await,
        }
    }

    /// The whole object in one read when it is at most `limit` bytes (one
    /// thread hop instead of one per chunk); `None` when it is larger.
    pub async fn read_small(&self, key: &str, limit: u64) -> Result<Option<Vec<u8>>, StorageError> {
        check_key(key)?;
        if let Some(bytes) = self.staged.get(key) {
            return Ok((bytes.len() as u64 <= limit).then(|| bytes.to_vec()));
        }
        match &self.backend {
            Backend::Local(store) => store.read_small(key, limit).await,
            Backend::S3(_) => Ok(None),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        check_key(key)?;
        match &self.backend {
            Backend::Local(store) => store.delete(key).await,
            Backend::S3(store) => store.delete(key).await,
        }
    }

    /// Every stored key, for cross-checking against the index.
    pub fn keys(&self) -> Pin<Box<dyn Stream<Item = Result<String, StorageError>> + Send + '_>> {
        match &self.backend {
            Backend::Local(store) => store.keys(),
            Backend::S3(store) => store.keys(),
        }
    }

    /// A short description for logs and `/api/v1/stats`.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Local(store) => format!("local:{}", store.root().display()),
            Backend::S3(store) => store.describe(),
        }
    }
}

/// What [`Storage::place`] takes as proof that a file found in an
/// object's place is whole. A power cut after a placement's renames were
/// committed but before its data reached the disk leaves files that exist
/// with fewer bytes than they should (ext4), or with the right length and
/// zeros (XFS), until the journal's copy is written again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Its length. Enough while the server runs: everything placed before
    /// was synced before its journal record was released.
    SameLength,
    /// Its bytes, compared with the object's: for recovery after a crash.
    SameBytes,
}

/// `ab/cd/<sha256>.dcm`: two levels of fan-out keep directories small on
/// file systems that slow down with many entries.
pub fn key_for(sha256_hex: &str) -> String {
    format!(
        "{}/{}/{}.dcm",
        &sha256_hex[0..2],
        &sha256_hex[2..4],
        sha256_hex
    )
}

/// Keys come from the index; still, never let one escape the object root.
fn check_key(key: &str) -> Result<(), StorageError> {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let parts: Vec<&str> = key.split('/').collect();
    let ok = match parts.as_slice() {
        [a, b, name] => match name.strip_suffix(".dcm") {
            Some(sha) => {
                hex(a, 2) && hex(b, 2) && hex(sha, 64) && sha.starts_with(&format!("{a}{b}"))
            }
            None => false,
        },
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(StorageError::BadKey(key.chars().take(100).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hash_derived_and_checked() {
        let sha = "ab".repeat(32);
        let key = key_for(&sha);
        assert_eq!(key, format!("ab/ab/{sha}.dcm"));
        assert!(check_key(&key).is_ok());
        assert!(check_key("../../etc/passwd").is_err());
        assert!(check_key(&format!("ab/ab/{}.dcm", "g".repeat(64))).is_err());
    }
}
