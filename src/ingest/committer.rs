//! Group commit: stores from every association meet here. All requests
//! waiting at the same moment are appended to the ingest journal with one
//! sync and recorded in one index transaction; while one group commits,
//! the next gathers. The objects then go to their places in the background
//! ([`placer`](super::placer)), off the acknowledgement path.
//!
//! Without a journal (command-line tools, or `storage.place_before_ack`),
//! objects are already in place when they arrive here and the index commit
//! is synced.

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio_util::task::TaskTracker;

use super::journal::{Entry, Journal, Position, Releaser};
use super::placer::{self, Placement};
use super::IngestError;
use crate::config::DuplicatePolicy;
use crate::index::{Durability, Index, IndexError, Recorded, StoreRequest};
use crate::storage::Storage;

/// Enough to amortise a commit; small enough to keep one transaction short.
const MAX_BATCH: usize = 256;
/// A commit that holds the index writer longer than this is logged.
const SLOW_COMMIT: std::time::Duration = std::time::Duration::from_millis(250);

type Reply = oneshot::Sender<Result<Recorded, IngestError>>;

/// An object held in memory, to be journaled and placed after the commit.
pub struct Inline {
    pub bytes: Bytes,
    pub sha256: [u8; 32],
    /// Its share of the ingest memory budget, returned once it is placed.
    pub budget: Option<OwnedSemaphorePermit>,
}

struct Submission {
    request: StoreRequest,
    inline: Option<Inline>,
    reply: Reply,
}

/// Handle for submitting records; cheap to clone. The committer task ends
/// once every handle is dropped and the queue is drained.
#[derive(Clone)]
pub struct GroupCommitter {
    tx: mpsc::Sender<Submission>,
    journaled: bool,
}

/// What the committer needs to run a journal.
pub struct JournalSetup {
    pub journal: Journal,
    pub storage: Storage,
    pub node: String,
}

impl GroupCommitter {
    pub fn start(
        index: Index,
        policy: DuplicatePolicy,
        journal: Option<JournalSetup>,
        tracker: &TaskTracker,
    ) -> Self {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        let journaled = journal.is_some();
        let writer = journal.map(|setup| {
            let releaser = setup.journal.releaser();
            let placements = placer::start(
                setup.storage.clone(),
                index.clone(),
                setup.node.clone(),
                releaser.clone(),
                tracker,
            );
            JournalWriter {
                journal: Some(setup.journal),
                storage: setup.storage,
                node: setup.node,
                releaser,
                placements,
                last: Position::default(),
            }
        });
        tracker.spawn(run(index, policy, writer, rx));
        GroupCommitter { tx, journaled }
    }

    /// Whether objects may arrive in memory, for the journal.
    pub fn journaled(&self) -> bool {
        self.journaled
    }

    /// Record one instance; resolves once it is durable and committed.
    pub async fn record(
        &self,
        request: StoreRequest,
        inline: Option<Inline>,
    ) -> Result<Recorded, IngestError> {
        let (reply, wait) = oneshot::channel();
        self.tx
            .send(Submission {
                request,
                inline,
                reply,
            })
            .await
            .map_err(|_| IngestError::ShuttingDown)?;
        wait.await.unwrap_or(Err(IngestError::ShuttingDown))
    }
}

struct JournalWriter {
    /// Taken while an append runs on the blocking pool.
    journal: Option<Journal>,
    storage: Storage,
    node: String,
    releaser: Releaser,
    placements: mpsc::UnboundedSender<Placement>,
    /// The end of the last record appended.
    last: Position,
}

impl JournalWriter {
    /// Append the inline objects of `batch` with one sync.
    async fn append(&mut self, batch: &[Submission]) -> Result<Vec<Option<Position>>, IngestError> {
        let owned: Vec<(String, [u8; 32], Bytes)> = batch
            .iter()
            .filter_map(|s| {
                let inline = s.inline.as_ref()?;
                Some((
                    s.request.source_ae_title.clone(),
                    inline.sha256,
                    inline.bytes.clone(),
                ))
            })
            .collect();
        if owned.is_empty() {
            return Ok(batch.iter().map(|_| None).collect());
        }
        let mut journal = self.journal.take().ok_or(IngestError::ShuttingDown)?;
        let (journal, appended) = tokio::task::spawn_blocking(move || {
            let entries: Vec<Entry<'_>> = owned
                .iter()
                .map(|(source, sha256, bytes)| Entry {
                    source,
                    sha256: *sha256,
                    bytes,
                })
                .collect();
            let appended = journal.append(&entries);
            (journal, appended)
        })
        .await
        .map_err(|e| {
            crate::storage::StorageError::io(self.storage.spool_dir(), std::io::Error::other(e))
        })?;
        self.journal = Some(journal);
        let appended =
            appended.map_err(|e| crate::storage::StorageError::io(self.storage.spool_dir(), e))?;
        let mut positions = appended.into_iter();
        Ok(batch
            .iter()
            .map(|s| s.inline.as_ref().and_then(|_| positions.next()))
            .collect())
    }
}

async fn run(
    index: Index,
    policy: DuplicatePolicy,
    mut writer: Option<JournalWriter>,
    mut rx: mpsc::Receiver<Submission>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let submissions: Vec<Submission> = std::mem::take(&mut batch);
        let positions = match writer.as_mut() {
            Some(w) => match w.append(&submissions).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "cannot append to the ingest journal");
                    let message = e.to_string();
                    for s in submissions {
                        let _ = s.reply.send(Err(journal_failed(&message)));
                    }
                    continue;
                }
            },
            None => submissions.iter().map(|_| None).collect(),
        };
        if let Some(w) = writer.as_mut() {
            crate::crash_points::reach("journal-synced");
            if let Some(last) = positions.iter().flatten().max() {
                w.last = *last;
            }
            // Readable as soon as it is acknowledged, before it is placed.
            for s in &submissions {
                if let Some(inline) = &s.inline {
                    w.storage.stage(&s.request.object.key, inline.bytes.clone());
                }
            }
        }
        let all_journaled = positions.iter().all(Option::is_some);
        let durability = match writer.as_ref() {
            Some(_) if all_journaled => Durability::Journaled,
            Some(w) => Durability::SyncedThrough {
                node: &w.node,
                mark: (w.last.sequence, w.last.end),
            },
            None => Durability::Synced,
        };
        let (requests, rest): (Vec<StoreRequest>, Vec<(Option<Inline>, Reply)>) = submissions
            .into_iter()
            .map(|s| (s.request, (s.inline, s.reply)))
            .unzip();
        let started = std::time::Instant::now();
        let outcomes = commit(&index, &requests, policy, durability).await;
        let held = started.elapsed();
        if held > SLOW_COMMIT {
            // Every other store waits this long: worth knowing.
            tracing::info!(
                ms = held.as_millis() as u64,
                instances = requests.len(),
                "slow index commit"
            );
        }
        crate::crash_points::reach("index-committed");
        for (((request, (inline, reply)), position), outcome) in
            requests.into_iter().zip(rest).zip(positions).zip(outcomes)
        {
            if let (Some(w), Some(inline), Some(position)) = (writer.as_ref(), inline, position) {
                if outcome.is_ok() {
                    let _ = w.placements.send(Placement {
                        key: request.object.key,
                        bytes: inline.bytes,
                        position,
                        budget: inline.budget,
                    });
                } else {
                    // Never acknowledged: nothing to place.
                    w.storage.unstage(&request.object.key);
                    w.releaser.release(position);
                }
            }
            let _ = reply.send(outcome.map_err(IngestError::from));
        }
    }
    tracing::debug!("group committer stopped");
}

fn journal_failed(message: &str) -> IngestError {
    IngestError::Storage(crate::storage::StorageError::io(
        std::path::Path::new("journal"),
        std::io::Error::other(message.to_owned()),
    ))
}

/// Commit a batch; when it fails, commit its requests one by one, so one
/// bad record does not fail its neighbours.
async fn commit(
    index: &Index,
    requests: &[StoreRequest],
    policy: DuplicatePolicy,
    durability: Durability<'_>,
) -> Vec<Result<Recorded, IndexError>> {
    match index.record_batch(requests, policy, durability).await {
        Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
        Err(e) if requests.len() == 1 => vec![Err(e)],
        Err(e) => {
            tracing::warn!(error = %e, size = requests.len(), "batch commit failed; retrying one by one");
            let mut outcomes = Vec::with_capacity(requests.len());
            for request in requests {
                outcomes.push(
                    index
                        .record_batch(std::slice::from_ref(request), policy, durability)
                        .await
                        .map(|mut v| v.pop().unwrap_or(Recorded::Identical)),
                );
            }
            outcomes
        }
    }
}
