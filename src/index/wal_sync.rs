//! Group sync of SQLite's write-ahead log: a writer commits without
//! waiting for the disk (`synchronous=NORMAL`), goes on to its next
//! transaction, and whoever acknowledges waits for [`WalSync::sync_through`]
//! instead. One fdatasync covers every commit that finished before it
//! started, so the disk wait overlaps the next group's statements.
//!
//! Durability is the same as `synchronous=FULL`: a commit's frames are in
//! the WAL file's page cache when COMMIT returns, and a checkpoint syncs
//! the WAL before it copies frames into the database (and syncs that)
//! before the WAL may be reset. The file is opened by path for each sync:
//! SQLite deletes the WAL when its last connection closes, after a full
//! checkpoint, and a later connection makes a new one.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Mutex;

/// A commit made with [`super::Index::begin_deferred_write`], durable once
/// [`super::Index::make_durable`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a deferred commit is not durable until make_durable"]
pub struct Unsynced(u64);

impl Unsynced {
    /// A commit that was synced when it was made.
    pub(crate) const SYNCED: Unsynced = Unsynced(0);
}

#[derive(Debug)]
pub(crate) struct WalSync {
    wal: PathBuf,
    /// Tickets handed out, one per finished deferred commit.
    committed: AtomicU64,
    /// The highest ticket known durable; held while a sync runs, so a
    /// waiter that finds one running is usually covered by the next.
    synced: Mutex<u64>,
    /// Off with `storage.fsync = false`: commits stay unsynced
    /// (benchmarks only).
    enabled: AtomicBool,
}

impl WalSync {
    pub(crate) fn new(database: PathBuf) -> Self {
        let mut wal = database.into_os_string();
        wal.push("-wal");
        WalSync {
            wal: wal.into(),
            committed: AtomicU64::new(0),
            synced: Mutex::new(0),
            enabled: AtomicBool::new(true),
        }
    }

    pub(crate) fn disable(&self) {
        self.enabled.store(false, Ordering::Relaxed);
    }

    /// Take a ticket for a commit that has just returned.
    pub(crate) fn committed(&self) -> Unsynced {
        Unsynced(self.committed.fetch_add(1, Ordering::AcqRel) + 1)
    }

    /// Return once the commit of `ticket`, and every one before it, is on
    /// disk.
    pub(crate) async fn sync_through(&self, ticket: Unsynced) -> std::io::Result<()> {
        if ticket == Unsynced::SYNCED || !self.enabled.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut synced = self.synced.lock().await;
        if *synced >= ticket.0 {
            return Ok(());
        }
        // Every ticket up to here belongs to a commit that has returned,
        // so its frames are in the file this sync flushes.
        let covered = self.committed.load(Ordering::Acquire);
        let wal = self.wal.clone();
        tokio::task::spawn_blocking(move || sync_file(&wal))
            .await
            .map_err(std::io::Error::other)??;
        *synced = covered;
        Ok(())
    }
}

fn sync_file(path: &std::path::Path) -> std::io::Result<()> {
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(file) => file.sync_data(),
        // Gone: the last connection closed and checkpointed it, synced,
        // into the database file.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_sync_covers_every_earlier_commit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("index.sqlite");
        std::fs::write(dir.path().join("index.sqlite-wal"), b"frames").expect("wal");
        let sync = WalSync::new(db);
        let first = sync.committed();
        let second = sync.committed();
        sync.sync_through(second).await.expect("sync");
        assert_eq!(*sync.synced.lock().await, 2);
        // Already covered: no second sync needed.
        sync.sync_through(first).await.expect("covered");
        assert_eq!(*sync.synced.lock().await, 2);
        let third = sync.committed();
        std::fs::remove_file(dir.path().join("index.sqlite-wal")).expect("rm");
        sync.sync_through(third)
            .await
            .expect("a missing WAL was checkpointed");
        assert_eq!(*sync.synced.lock().await, 3);
    }
}
