//! Delivers storage commitment reports that could not go back on the
//! requester's association: a new association to the requester's
//! registered AE (Tessera proposing the SCP role), retried with exponential
//! backoff up to a bounded number of attempts, after which the report is
//! marked failed (a requester that never takes it must not be called
//! forever). The queue lives in the index, so it survives restarts; reports
//! are claimed with a lease, so nodes sharing the index never send one twice.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{verify_references, CommitResult};
use crate::dimse::scu::Scu;
use crate::index::{Index, Lease, PendingCommitment};
use crate::peers::PeerRegistry;
use crate::storage::Storage;

/// How often due reports are looked for when nothing wakes the worker.
const POLL: Duration = Duration::from_secs(1);
const MAX_BACKOFF_SECS: i64 = 300;

pub struct CommitmentWorker {
    pub index: Index,
    pub storage: Storage,
    pub peers: PeerRegistry,
    pub scu: Scu,
    pub wake: Arc<Notify>,
    /// Delivery attempts before a report is given up.
    pub max_attempts: i64,
    /// This node's claim on the reports it delivers.
    pub lease: Lease,
}

impl CommitmentWorker {
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            match self.index.claim_commitments(&self.lease, 32).await {
                Ok(due) => {
                    for commitment in due {
                        if shutdown.is_cancelled() {
                            return;
                        }
                        self.deliver(commitment).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the commitment queue"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    async fn deliver(&self, c: PendingCommitment) {
        let stored: Option<CommitResult> = c
            .result_json
            .as_deref()
            .and_then(|j| serde_json::from_str(j).ok());
        let result = match stored {
            Some(result) => result,
            None => {
                let result = verify_references(
                    &self.index,
                    &self.storage,
                    &c.transaction_uid,
                    &c.references,
                )
                .await;
                if let Ok(json) = serde_json::to_string(&result) {
                    let _ = self.index.set_commitment_result(c.id, &json).await;
                }
                result
            }
        };
        let outcome = match self.peers.get(&c.requester_ae).await {
            Ok(peer) => self
                .scu
                .send_commitment_report(&peer, &result)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(format!("requester not registered as a peer: {e}")),
        };
        let saved = match outcome {
            Ok(()) => {
                tracing::info!(transaction = %c.transaction_uid, requester = %c.requester_ae, "commitment report delivered");
                self.index.commitment_delivered(c.id).await
            }
            Err(error) if c.attempts + 1 >= self.max_attempts => {
                tracing::warn!(transaction = %c.transaction_uid, requester = %c.requester_ae, %error, attempts = c.attempts + 1, "commitment report given up");
                self.index.commitment_failed(c.id, &error).await
            }
            Err(error) => {
                let delay = 1i64 << c.attempts.clamp(0, 9);
                let delay = delay.min(MAX_BACKOFF_SECS);
                tracing::warn!(transaction = %c.transaction_uid, requester = %c.requester_ae, %error, retry_in_secs = delay, "commitment report not delivered");
                self.index.commitment_retry(c.id, delay, &error).await
            }
        };
        if let Err(e) = saved {
            tracing::warn!(error = %e, "cannot update the commitment queue");
        }
    }
}
