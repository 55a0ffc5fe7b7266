//! `tessera verify`: re-hash every indexed object and cross-check the index
//! against storage. Missing or corrupt objects are failures. Unreferenced
//! objects are stores interrupted before they were acknowledged, or objects
//! waiting for the collector; they are reported and can be pruned, but are
//! not failures. Pruning refuses while a server holds a lease on the
//! storage, and spares objects younger than the grace period, which may be
//! stores still in flight. An object that is still only in a node's
//! ingest journal, acknowledged but not yet placed, is not missing.

use std::collections::HashSet;

use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::index::{Index, IndexError, IndexedObject};
use crate::storage::{Storage, StorageError};

#[derive(Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    pub checked: u64,
    pub bytes: u64,
    pub missing: Vec<String>,
    /// Acknowledged objects still only in an ingest journal.
    pub in_journal: u64,
    pub corrupt: Vec<String>,
    pub unreferenced: Vec<String>,
    pub pruned: usize,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.corrupt.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(
        "a running server holds the storage ({}); stop it before pruning, \
         or let its collector reclaim unreferenced objects",
        .0.join(", ")
    )]
    Leased(Vec<String>),
}

/// Bytes hashed per trip to the blocking pool.
const HASH_BATCH: usize = 4 * 1024 * 1024;

/// What re-hashing one object found.
pub enum Check {
    Ok(u64),
    Missing,
    Corrupt(String),
}

/// Re-hash one indexed object and compare size and SHA-256.
pub async fn check(storage: &Storage, obj: &IndexedObject) -> Result<Check, StorageError> {
    let mut reader = match storage.open_read(&obj.key).await {
        Ok(r) => r,
        Err(StorageError::NotFound(_)) => return Ok(Check::Missing),
        Err(e) => return Err(e),
    };
    // Reading is async; hashing (the CPU part) goes to the blocking pool a
    // few MiB at a time, never on an async worker.
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    loop {
        let mut batch = Vec::with_capacity(HASH_BATCH);
        let n = (&mut reader)
            .take(HASH_BATCH as u64)
            .read_to_end(&mut batch)
            .await
            .map_err(|e| StorageError::io(std::path::Path::new(&obj.key), e))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher = tokio::task::spawn_blocking(move || {
            hasher.update(&batch);
            hasher
        })
        .await
        .map_err(|e| StorageError::io(std::path::Path::new(&obj.key), std::io::Error::other(e)))?;
    }
    let sha = hex::encode(hasher.finalize());
    if size != obj.size || sha != obj.sha256 {
        return Ok(Check::Corrupt(format!(
            "{} ({}): expected {} bytes sha256 {}, found {} bytes sha256 {}",
            obj.sop_instance_uid, obj.key, obj.size, obj.sha256, size, sha
        )));
    }
    Ok(Check::Ok(size))
}

/// Check everything; with `prune`, delete unreferenced objects last written
/// more than `grace` ago.
pub async fn verify(
    index: &Index,
    storage: &Storage,
    prune: bool,
    grace: std::time::Duration,
) -> Result<VerifyReport, VerifyError> {
    if prune {
        let holders = index.storage_lease_holders(&storage.describe()).await?;
        if !holders.is_empty() {
            return Err(VerifyError::Leased(holders));
        }
    }
    let mut report = VerifyReport::default();
    let mut referenced = HashSet::new();
    let mut journals = Journals::new(storage);
    let mut checks = std::pin::pin!(index
        .objects()
        .map_ok(|obj| async move {
            let result = check(storage, &obj).await;
            Ok::<_, IndexError>((obj, result))
        })
        .try_buffer_unordered(4));
    while let Some((obj, result)) = checks.try_next().await? {
        report.checked += 1;
        match result? {
            Check::Ok(size) => report.bytes += size,
            Check::Missing if journals.hold(&obj.sha256).await => report.in_journal += 1,
            Check::Missing => report
                .missing
                .push(format!("{} ({})", obj.sop_instance_uid, obj.key)),
            Check::Corrupt(detail) => report.corrupt.push(detail),
        }
        referenced.insert(obj.key);
    }
    let mut keys = storage.keys();
    while let Some(key) = keys.next().await {
        let key = key?;
        if !referenced.contains(&key) {
            report.unreferenced.push(key);
        }
    }
    drop(keys);
    if prune {
        let cutoff = std::time::SystemTime::now()
            .checked_sub(grace)
            .unwrap_or(std::time::UNIX_EPOCH);
        for key in &report.unreferenced {
            if storage.modified(key).await?.is_some_and(|t| t <= cutoff) {
                storage.delete(key).await?;
                report.pruned += 1;
            }
        }
    }
    Ok(report)
}

/// The objects held in the ingest journals of every node that shares this
/// storage, read on demand. A journal is read again when an object is not
/// in it, at most once a second: it may have been acknowledged since.
struct Journals {
    dirs: Vec<std::path::PathBuf>,
    held: HashSet<String>,
    read_at: Option<std::time::Instant>,
}

impl Journals {
    fn new(storage: &Storage) -> Self {
        let dirs = storage
            .spool_dir()
            .parent()
            .and_then(|nodes| std::fs::read_dir(nodes).ok())
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.path().join("journal"))
                    .collect()
            })
            .unwrap_or_default();
        Journals {
            dirs,
            held: HashSet::new(),
            read_at: None,
        }
    }

    async fn hold(&mut self, sha256: &str) -> bool {
        if self.held.contains(sha256) {
            return true;
        }
        if self
            .read_at
            .is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1))
        {
            return false;
        }
        let dirs = self.dirs.clone();
        let read = tokio::task::spawn_blocking(move || {
            let mut held = HashSet::new();
            for dir in dirs {
                match crate::ingest::journal::held_hashes(&dir) {
                    Ok(hashes) => held.extend(hashes.iter().map(hex::encode)),
                    Err(e) => {
                        tracing::warn!(error = %e, dir = %dir.display(), "cannot read journal")
                    }
                }
            }
            held
        })
        .await;
        self.held = read.unwrap_or_default();
        self.read_at = Some(std::time::Instant::now());
        self.held.contains(sha256)
    }
}
