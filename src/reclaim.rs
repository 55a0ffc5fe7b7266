//! Reclaiming objects no instance references any more.
//!
//! Objects are content-addressed and shared, so a replaced or refused
//! object may still be, or may again become, another row's object. Nothing
//! on the write path deletes: it records a tombstone in the transaction
//! that unreferences the object. The [`Collector`] deletes a tombstoned
//! object once the tombstone and the object itself are older than the grace
//! period, re-checking under the index's write lock that no row references
//! it (see [`Index::reclaim`]). A store that finds its object already
//! present checks again after its own commit ([`Storage::ensure_present`]).
//!
//! The collector also holds this node's lease on the storage, which
//! `tessera verify --prune-unreferenced` respects.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::index::{Index, IndexError, Reclaimed};
use crate::storage::{Storage, StorageError};

/// A lease outlives a few missed renewals, and no more.
const LEASE_SECS: i64 = 90;
/// Tombstones handled per pass.
const BATCH: i64 = 500;

#[derive(Debug, thiserror::Error)]
pub enum ReclaimError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub deleted: usize,
    pub referenced: usize,
    pub kept: usize,
}

#[derive(Clone)]
pub struct Collector {
    pub index: Index,
    pub storage: Storage,
    pub grace: Duration,
    pub interval: Duration,
    /// This node's name in the lease table.
    pub holder: String,
}

impl Collector {
    /// Renew the lease and collect, every interval, until shutdown; then
    /// give the lease up.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.renew_lease().await {
                tracing::warn!(error = %e, "cannot renew the storage lease");
            }
            match self.collect().await {
                Ok(pass) if pass.deleted + pass.referenced > 0 => {
                    tracing::info!(?pass, "reclaimed unreferenced objects")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reclamation pass failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.interval.min(Duration::from_secs(LEASE_SECS as u64 / 3))) => {}
            }
        }
        if let Err(e) = self.index.release_storage_lease(&self.holder).await {
            tracing::warn!(error = %e, "cannot release the storage lease");
        }
    }

    pub async fn renew_lease(&self) -> Result<(), IndexError> {
        self.index
            .renew_storage_lease(&self.holder, &self.storage.describe(), LEASE_SECS)
            .await
    }

    /// One pass over the tombstones that are due.
    pub async fn collect(&self) -> Result<Pass, ReclaimError> {
        let now = SystemTime::now();
        let cutoff_time = now.checked_sub(self.grace).unwrap_or(UNIX_EPOCH);
        let cutoff = unix_seconds(cutoff_time);
        let mut pass = Pass::default();
        for key in self.index.tombstones_due(cutoff, BATCH).await? {
            let storage = &self.storage;
            let outcome = self
                .index
                .reclaim(&key, cutoff, || async {
                    // An object written within the grace period is a store
                    // still in flight, whatever the tombstone says.
                    match storage.modified(&key).await? {
                        Some(written) if written > cutoff_time => Ok(false),
                        _ => storage.delete(&key).await.map(|()| true),
                    }
                })
                .await??;
            match outcome {
                Reclaimed::Deleted => pass.deleted += 1,
                Reclaimed::Referenced => pass.referenced += 1,
                Reclaimed::Kept => pass.kept += 1,
            }
        }
        Ok(pass)
    }
}

fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A server's name in the lease table: host, process, start time, and a
/// counter for servers started in one process (tests).
pub fn lease_holder() -> String {
    static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "node".to_owned());
    format!(
        "{host}:{}:{}:{}",
        std::process::id(),
        unix_seconds(SystemTime::now()),
        STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}
