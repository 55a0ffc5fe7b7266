//! Object placement: after an instance is acknowledged from the journal,
//! its object is written to its content-addressed place (a file, or S3) in
//! the background, a group at a time. Once a group is in place and the
//! index rows are synced, its journal records are released for reuse. A
//! failure is retried until it succeeds: the journal still holds the
//! objects, and a restart's recovery would place them too.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::task::TaskTracker;

use super::journal::{Position, Releaser};
use crate::index::Index;
use crate::storage::{Found, Storage};

/// Enough to share one file-system sync between many objects.
const MAX_GROUP: usize = 128;
/// A group waits this long for company after its first object: one sync
/// and one index commit per object would cost more CPU than the whole
/// store. Reads are served from memory meanwhile.
const GATHER: Duration = Duration::from_millis(100);
/// A group stops gathering at this size, well inside the ingest memory
/// budget that unplaced objects hold.
const GATHER_BYTES: usize = 32 << 20;
const RETRY: Duration = Duration::from_secs(1);

/// One object to place.
pub struct Placement {
    pub key: String,
    pub bytes: Bytes,
    pub position: Position,
    pub budget: Option<OwnedSemaphorePermit>,
}

pub fn start(
    storage: Storage,
    index: Index,
    node: String,
    releaser: Releaser,
    tracker: &TaskTracker,
) -> mpsc::UnboundedSender<Placement> {
    // Unbounded in count, bounded in bytes: every object holds a share of
    // the ingest memory budget until it is placed.
    let (tx, rx) = mpsc::unbounded_channel();
    tracker.spawn(run(storage, index, node, releaser, rx));
    tx
}

async fn run(
    storage: Storage,
    index: Index,
    node: String,
    releaser: Releaser,
    mut rx: mpsc::UnboundedReceiver<Placement>,
) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while gather(&mut rx, &mut group).await > 0 {
        let objects: Vec<(String, Bytes)> = group
            .iter()
            .map(|p: &Placement| (p.key.clone(), p.bytes.clone()))
            .collect();
        crate::crash_points::reach("placing");
        while let Err(e) = storage.place(objects.clone(), Found::SameLength).await {
            tracing::error!(error = %e, objects = objects.len(), "cannot place objects; retrying");
            tokio::time::sleep(RETRY).await;
        }
        crate::crash_points::reach("placed");
        let mark = group.iter().map(|p| p.position).max().unwrap_or_default();
        while let Err(e) = index.mark_journal(&node, (mark.sequence, mark.end)).await {
            tracing::error!(error = %e, "cannot sync the index after placement; retrying");
            tokio::time::sleep(RETRY).await;
        }
        crate::crash_points::reach("marked");
        for placement in group.drain(..) {
            storage.unstage(&placement.key);
            releaser.release(placement.position);
            // Its memory is free for the next object.
            drop(placement.budget);
        }
    }
    tracing::debug!("object placement stopped");
}

/// Wait for the next object, then gather more until the group is full or
/// [`GATHER`] has passed. Returns the group's size; 0 once every sender is
/// gone and nothing is left.
async fn gather(rx: &mut mpsc::UnboundedReceiver<Placement>, group: &mut Vec<Placement>) -> usize {
    if rx.recv_many(group, MAX_GROUP).await == 0 {
        return 0;
    }
    let deadline = tokio::time::Instant::now() + GATHER;
    let bytes = |group: &[Placement]| group.iter().map(|p| p.bytes.len()).sum::<usize>();
    while group.len() < MAX_GROUP && bytes(group) < GATHER_BYTES {
        let room = MAX_GROUP - group.len();
        match tokio::time::timeout_at(deadline, rx.recv_many(group, room)).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    group.len()
}
