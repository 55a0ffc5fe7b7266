//! Group commit: stores from every association meet here, and all requests
//! waiting at the same moment are recorded in one index transaction. While
//! one transaction commits (and fsyncs), the next batch gathers, so the cost
//! of a durable commit is shared instead of paid per instance.

use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

use crate::config::DuplicatePolicy;
use crate::index::{Index, IndexError, Recorded, StoreRequest};

use super::IngestError;

/// Enough to amortise a commit; small enough to keep one transaction short.
const MAX_BATCH: usize = 256;

type Reply = oneshot::Sender<Result<Recorded, IndexError>>;

/// Handle for submitting records; cheap to clone. The committer task ends
/// once every handle is dropped and the queue is drained.
#[derive(Clone)]
pub struct GroupCommitter {
    tx: mpsc::Sender<(StoreRequest, Reply)>,
}

impl GroupCommitter {
    pub fn start(index: Index, policy: DuplicatePolicy, tracker: &TaskTracker) -> Self {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        tracker.spawn(run(index, policy, rx));
        GroupCommitter { tx }
    }

    /// Record one instance; resolves once its transaction has committed.
    pub async fn record(&self, request: StoreRequest) -> Result<Recorded, IngestError> {
        let (reply, wait) = oneshot::channel();
        self.tx
            .send((request, reply))
            .await
            .map_err(|_| IngestError::ShuttingDown)?;
        match wait.await {
            Ok(result) => Ok(result?),
            Err(_) => Err(IngestError::ShuttingDown),
        }
    }
}

async fn run(index: Index, policy: DuplicatePolicy, mut rx: mpsc::Receiver<(StoreRequest, Reply)>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (requests, replies): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
        match index.record_batch(&requests, policy).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) if requests.len() == 1 => {
                let _ = replies.into_iter().next().map(|r| r.send(Err(e)));
            }
            Err(e) => {
                // One bad record must not fail its neighbours: retry singly.
                tracing::warn!(error = %e, size = requests.len(), "batch commit failed; retrying one by one");
                for (request, reply) in requests.iter().zip(replies) {
                    let result = index
                        .record_batch(std::slice::from_ref(request), policy)
                        .await
                        .map(|mut v| v.pop().unwrap_or(Recorded::Identical));
                    let _ = reply.send(result);
                }
            }
        }
    }
    tracing::debug!("group committer stopped");
}
