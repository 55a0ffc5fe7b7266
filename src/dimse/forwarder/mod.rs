//! The store-and-forward worker: delivers queued instances to their
//! destination peers with C-STORE (as stored, or transcoded when the peer
//! only takes uncompressed data), retrying with exponential backoff and
//! turning a forward into a dead letter after too many failures. The queue
//! is in the index, so it survives restarts; an instance is marked done only
//! after its C-STORE succeeded, or, on routes that ask for it, only once the
//! destination has confirmed it by storage commitment ([`confirm`]).

mod confirm;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::scu::Scu;
use super::service::retrieve::{send_instance, store_proposals, SubOpOutcome};
use crate::index::{DueForward, Index};
use crate::peers::PeerRegistry;
use crate::storage::Storage;
use crate::telemetry::Metrics;

const POLL: Duration = Duration::from_secs(1);
const BATCH: i64 = 64;
const MAX_BACKOFF_SECS: i64 = 600;

/// Seconds before the next attempt after `attempts` failed ones.
pub fn backoff_secs(attempts: i64) -> i64 {
    (1i64 << attempts.clamp(0, 10)).min(MAX_BACKOFF_SECS)
}

pub struct Forwarder {
    pub index: Index,
    pub storage: Storage,
    pub peers: PeerRegistry,
    pub scu: Scu,
    pub metrics: Arc<Metrics>,
    pub wake: Arc<Notify>,
    /// Attempts before a forward becomes a dead letter.
    pub max_attempts: i64,
    /// A forward waiting for a commitment report longer than this is sent
    /// again.
    pub commitment_timeout_secs: i64,
    /// How long the forwarding association stays open for the report.
    pub report_wait: Duration,
    /// Destinations whose last report came on a new association, and when
    /// that was seen: for a while their batches do not wait for one.
    pub reports_elsewhere: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

/// How long a destination that reported on a new association is not waited
/// for; then the forwarding association waits once more.
const RECHECK_REPORT_PATH: Duration = Duration::from_secs(600);

impl Forwarder {
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            match self
                .index
                .expire_commitments(self.commitment_timeout_secs, self.max_attempts)
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::warn!(
                    forwards = n,
                    "no storage commitment report in time; sending again"
                ),
                Err(e) => tracing::warn!(error = %e, "cannot expire commitments"),
            }
            match self.index.due_forwards(BATCH).await {
                Ok(due) if !due.is_empty() => {
                    let mut by_destination: BTreeMap<String, Vec<DueForward>> = BTreeMap::new();
                    for f in due {
                        by_destination
                            .entry(f.destination_ae.clone())
                            .or_default()
                            .push(f);
                    }
                    for (destination, forwards) in by_destination {
                        if shutdown.is_cancelled() {
                            return;
                        }
                        self.deliver(&destination, forwards).await;
                    }
                    self.update_metrics().await;
                    continue;
                }
                Ok(_) => self.update_metrics().await,
                Err(e) => tracing::warn!(error = %e, "cannot read the forwarding queue"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    async fn update_metrics(&self) {
        if let Ok(stats) = self.index.forwarding_stats().await {
            self.metrics.forward_pending.set(stats.pending);
            self.metrics.forward_committing.set(stats.committing);
            self.metrics.forward_dead.set(stats.dead);
        }
    }

    async fn deliver(&self, destination: &str, forwards: Vec<DueForward>) {
        let peer = match self.peers.get(destination).await {
            Ok(peer) => peer,
            Err(e) => {
                return self
                    .retry_all(&forwards, &format!("destination not registered: {e}"))
                    .await
            }
        };
        let pairs = store_proposals(forwards.iter().map(|f| &f.item));
        let commitment = forwards.iter().any(|f| f.confirm_commitment);
        let mut association = match self.scu.open_store(&peer, &pairs, commitment).await {
            Ok(a) => a,
            Err(e) => return self.retry_all(&forwards, &e.to_string()).await,
        };
        let mut to_confirm = Vec::new();
        for (n, f) in forwards.iter().enumerate() {
            let message_id = u16::try_from(n % 0xFFFF + 1).unwrap_or(1);
            match send_instance(&mut association, &self.storage, &f.item, message_id, None).await {
                Ok((SubOpOutcome::Completed | SubOpOutcome::Warning, _)) => {
                    self.metrics.forwarded.inc();
                    if f.confirm_commitment {
                        to_confirm.push(f);
                    } else if let Err(e) = self.index.forward_done(f.id).await {
                        tracing::warn!(error = %e, "cannot mark forward done");
                    }
                }
                Ok((SubOpOutcome::Failed, _)) => {
                    self.retry(f, "refused by the destination or not sendable")
                        .await;
                }
                Err(e) => {
                    // The association broke: this and the rest go again
                    // later, as do those sent but not yet confirmed.
                    self.retry_all(&forwards[n..], &e.to_string()).await;
                    for f in to_confirm {
                        self.retry(f, "association broke before storage commitment")
                            .await;
                    }
                    association.abort().await;
                    return;
                }
            }
        }
        if !to_confirm.is_empty() {
            confirm::request_commitment(self, destination, &mut association, &to_confirm).await;
        }
        association.release().await;
    }

    /// Whether to keep the association open for the report: not for a
    /// destination that lately reported on a new association instead.
    fn waits_for_report(&self, destination: &str) -> bool {
        let Ok(seen) = self.reports_elsewhere.lock() else {
            return true;
        };
        seen.get(destination)
            .is_none_or(|at| at.elapsed() > RECHECK_REPORT_PATH)
    }

    /// Remember where `destination` sent its last report.
    fn report_came_on_association(&self, destination: &str, on_association: bool) {
        if let Ok(mut seen) = self.reports_elsewhere.lock() {
            if on_association {
                seen.remove(destination);
            } else {
                seen.insert(destination.to_owned(), std::time::Instant::now());
            }
        }
    }

    async fn retry_all(&self, forwards: &[DueForward], error: &str) {
        for f in forwards {
            self.retry(f, error).await;
        }
    }

    async fn retry(&self, f: &DueForward, error: &str) {
        let delay = backoff_secs(f.attempts);
        tracing::warn!(sop_instance = %f.item.sop_instance_uid, destination = %f.destination_ae, %error, retry_in_secs = delay, "forward failed");
        if let Err(e) = self
            .index
            .forward_retry(f.id, delay, self.max_attempts, error)
            .await
        {
            tracing::warn!(error = %e, "cannot update the forwarding queue");
        }
    }
}
