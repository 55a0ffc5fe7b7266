//! Group commit: stores from every association meet here. All requests
//! waiting at the same moment are appended to the ingest journal with one
//! sync and recorded in one index transaction, whose rows are written while
//! the journal syncs and which commits once it has; while one group
//! commits, the next gathers. The objects then go to their places in the background
//! ([`placer`](super::placer)), off the acknowledgement path.
//!
//! Without a journal (command-line tools, or `storage.place_before_ack`),
//! objects are already in place when they arrive here and the index commit
//! is synced.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio_util::task::TaskTracker;

use super::journal::{Entry, Journal, Position, Releaser};
use super::placer::{self, Placement};
use super::IngestError;
use crate::config::DuplicatePolicy;
use crate::index::{Durability, Index, IndexError, Recorded, StoreRequest};
use crate::storage::Storage;
use crate::telemetry::Metrics;

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
        metrics: Arc<Metrics>,
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
        tracker.spawn(run(index, policy, writer, rx, metrics));
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

/// What the journal keeps of one object: its source, hash and bytes.
type JournalEntry = (String, [u8; 32], Bytes);

/// A request and its object, when held in memory.
type Pair<'a> = (&'a StoreRequest, Option<&'a Inline>);

impl JournalWriter {
    /// Append `entries` with one sync; their positions, in order.
    async fn append(&mut self, owned: Vec<JournalEntry>) -> Result<Vec<Position>, IngestError> {
        if owned.is_empty() {
            return Ok(Vec::new());
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
        appended.map_err(|e| crate::storage::StorageError::io(self.storage.spool_dir(), e).into())
    }
}

/// The journal entries of a batch's objects held in memory.
fn entries_of(batch: &[Pair<'_>]) -> Vec<JournalEntry> {
    batch
        .iter()
        .filter_map(|(request, inline)| {
            let inline = (*inline)?;
            Some((
                request.source_ae_title.clone(),
                inline.sha256,
                inline.bytes.clone(),
            ))
        })
        .collect()
}

/// Each request's journal position, from those of the inline objects.
fn positions_of(batch: &[Pair<'_>], appended: Vec<Position>) -> Vec<Option<Position>> {
    let mut positions = appended.into_iter();
    batch
        .iter()
        .map(|(_, inline)| inline.and_then(|_| positions.next()))
        .collect()
}

async fn run(
    index: Index,
    policy: DuplicatePolicy,
    mut writer: Option<JournalWriter>,
    mut rx: mpsc::Receiver<Submission>,
    metrics: Arc<Metrics>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let submissions: Vec<Submission> = std::mem::take(&mut batch);
        let (requests, rest): (Vec<StoreRequest>, Vec<(Option<Inline>, Reply)>) = submissions
            .into_iter()
            .map(|s| (s.request, (s.inline, s.reply)))
            .unzip();
        let started = Instant::now();
        let mut times = Times::default();
        let committed = journal_and_commit(
            &index,
            policy,
            writer.as_mut(),
            &requests,
            &rest,
            &mut times,
        )
        .await;
        times.report(&metrics);
        let (positions, outcomes) = match committed {
            Ok(done) => done,
            Err(message) => {
                for (_, reply) in rest {
                    let _ = reply.send(Err(journal_failed(&message)));
                }
                continue;
            }
        };
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
                if outcome.as_ref().is_ok_and(Recorded::references_object) {
                    let _ = w.placements.send(Placement {
                        key: request.object.key,
                        bytes: inline.bytes,
                        position,
                        budget: inline.budget,
                    });
                } else {
                    // Not acknowledged, or refused: nothing refers to it.
                    w.storage.unstage(&request.object.key);
                    w.releaser.release(position);
                }
            }
            let _ = reply.send(outcome.map_err(IngestError::from));
        }
    }
    tracing::debug!("group committer stopped");
}

type Outcomes = Vec<Result<Recorded, IndexError>>;

/// Append a batch's objects to the journal and record its rows. When every
/// object is journaled, the rows are written while the journal syncs and
/// committed after it; otherwise the commit follows the append and is
/// synced. An error when the journal failed: nothing was committed.
async fn journal_and_commit(
    index: &Index,
    policy: DuplicatePolicy,
    writer: Option<&mut JournalWriter>,
    requests: &[StoreRequest],
    rest: &[(Option<Inline>, Reply)],
    times: &mut Times,
) -> Result<(Vec<Option<Position>>, Outcomes), String> {
    let Some(w) = writer else {
        let outcomes = times
            .index(commit(index, requests, policy, Durability::Synced))
            .await;
        return Ok((requests.iter().map(|_| None).collect(), outcomes));
    };
    let batch: Vec<Pair<'_>> = requests
        .iter()
        .zip(rest.iter())
        .map(|(r, (i, _))| (r, i.as_ref()))
        .collect();
    let entries = entries_of(&batch);
    let all_journaled = entries.len() == requests.len();
    let journaled = !entries.is_empty();
    let append = timed(w.append(entries));
    let (appended, prepared) = if all_journaled {
        let ((appended, took), (prepared, preparing)) =
            tokio::join!(append, timed(index.prepare_journaled(requests, policy)));
        times.index += preparing;
        times.journal = journaled.then_some(took);
        (appended, Some(prepared))
    } else {
        let (appended, took) = append.await;
        times.journal = journaled.then_some(took);
        (appended, None)
    };
    let positions = match appended {
        Ok(appended) => positions_of(&batch, appended),
        Err(e) => {
            // A prepared transaction is dropped here: rolled back.
            tracing::error!(error = %e, "cannot append to the ingest journal");
            return Err(e.to_string());
        }
    };
    crate::crash_points::reach("journal-synced");
    if let Some(last) = positions.iter().flatten().max() {
        w.last = *last;
    }
    // Readable as soon as it is acknowledged, before it is placed.
    for (request, inline) in &batch {
        if let Some(inline) = inline {
            w.storage.stage(&request.object.key, inline.bytes.clone());
        }
    }
    let outcomes = match prepared {
        Some(Ok(prepared)) => match times.index(index.commit_prepared(prepared)).await {
            Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "batch commit failed; retrying");
                let again = commit(index, requests, policy, Durability::Journaled);
                times.index(again).await
            }
        },
        // The batch as a whole failed to record: again, then one by one.
        Some(Err(_)) => {
            let again = commit(index, requests, policy, Durability::Journaled);
            times.index(again).await
        }
        None => {
            let durability = Durability::SyncedThrough {
                node: &w.node,
                mark: (w.last.sequence, w.last.end),
            };
            times
                .index(commit(index, requests, policy, durability))
                .await
        }
    };
    Ok((positions, outcomes))
}

/// Where one group's time went, for the metrics.
#[derive(Default)]
struct Times {
    /// The journal's write and sync; `None` when nothing was journaled.
    journal: Option<Duration>,
    /// The index's statements and commit, without waiting for the journal.
    index: Duration,
}

impl Times {
    /// Await `work`, counting its time as the index's.
    async fn index<T>(&mut self, work: impl Future<Output = T>) -> T {
        let (out, took) = timed(work).await;
        self.index += took;
        out
    }

    fn report(&self, metrics: &Metrics) {
        if let Some(journal) = self.journal {
            metrics.journal_append.observe(journal.as_secs_f64());
        }
        metrics.index_commit.observe(self.index.as_secs_f64());
    }
}

async fn timed<T>(work: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let out = work.await;
    (out, started.elapsed())
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
