//! The store-and-forward worker: delivers queued instances to their
//! destination peers with C-STORE (as stored, or transcoded when the peer
//! only takes uncompressed data), retrying with exponential backoff and
//! turning a forward into a dead letter after too many failures. The queue
//! is in the index, so it survives restarts; an instance is marked done only
//! after its C-STORE succeeded, or, on routes that ask for it, only once the
//! destination has confirmed it by storage commitment ([`confirm`]).
//!
//! Each destination with due work gets a worker of its own, up to a cap, so
//! one slow or unreachable destination never holds up the others. Workers
//! claim their batches with a lease ([`Lease`]), so nodes that share one
//! index never send the same forward twice.

mod confirm;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::scu::Scu;
use super::service::retrieve::{send_instance, store_proposals, SubOpOutcome};
use crate::index::{DueForward, Index, Lease};
use crate::peers::PeerRegistry;
use crate::storage::Storage;
use crate::telemetry::Metrics;

const POLL: Duration = Duration::from_secs(1);
const BATCH: i64 = 64;
/// Queue counts for metrics are read at most this often, not every pass.
const STATS_EVERY: Duration = Duration::from_secs(15);
/// Finished rows are purged this often.
const PURGE_EVERY: Duration = Duration::from_secs(600);
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
    pub reports_elsewhere: Mutex<std::collections::HashMap<String, Instant>>,
    /// This node's claim on the batches it sends.
    pub lease: Lease,
    /// Destinations delivered to at once.
    pub max_parallel: usize,
    /// Seconds finished queue rows are kept.
    pub retention_secs: i64,
    /// Destinations with a worker running now.
    pub busy: Mutex<HashSet<String>>,
    pub auditor: crate::audit::Auditor,
}

/// How long a destination that reported on a new association is not waited
/// for; then the forwarding association waits once more.
const RECHECK_REPORT_PATH: Duration = Duration::from_secs(600);

impl Forwarder {
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let workers = tokio_util::task::TaskTracker::new();
        let mut stats_at: Option<Instant> = None;
        let mut purged_at: Option<Instant> = None;
        loop {
            match this
                .index
                .expire_commitments(this.commitment_timeout_secs, this.max_attempts)
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::warn!(
                    forwards = n,
                    "no storage commitment report in time; sending again"
                ),
                Err(e) => tracing::warn!(error = %e, "cannot expire commitments"),
            }
            this.start_workers(&workers, &shutdown).await;
            if stats_at.is_none_or(|at| at.elapsed() >= STATS_EVERY) {
                this.update_metrics().await;
                stats_at = Some(Instant::now());
            }
            if purged_at.is_none_or(|at| at.elapsed() >= PURGE_EVERY) {
                match this.index.purge_finished(this.retention_secs).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(rows = n, "purged finished queue rows"),
                    Err(e) => tracing::warn!(error = %e, "cannot purge finished queue rows"),
                }
                purged_at = Some(Instant::now());
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = this.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
        workers.close();
        workers.wait().await;
    }

    /// A worker for each destination with due work and none yet, up to
    /// the cap.
    async fn start_workers(
        self: &Arc<Self>,
        workers: &tokio_util::task::TaskTracker,
        shutdown: &CancellationToken,
    ) {
        let destinations = match self.index.due_destinations(256).await {
            Ok(d) => d,
            Err(e) => return tracing::warn!(error = %e, "cannot read the forwarding queue"),
        };
        for destination in destinations {
            {
                let Ok(mut busy) = self.busy.lock() else {
                    return;
                };
                if busy.len() >= self.max_parallel {
                    return;
                }
                if !busy.insert(destination.clone()) {
                    continue;
                }
            }
            let this = self.clone();
            let shutdown = shutdown.clone();
            workers.spawn(async move {
                this.drain(&destination, &shutdown).await;
                if let Ok(mut busy) = this.busy.lock() {
                    busy.remove(&destination);
                }
                // Another destination may be waiting for this slot.
                this.wake.notify_one();
            });
        }
    }

    /// Send claimed batches to `destination` until none is due.
    async fn drain(&self, destination: &str, shutdown: &CancellationToken) {
        while !shutdown.is_cancelled() {
            match self
                .index
                .claim_forwards(destination, &self.lease, BATCH)
                .await
            {
                Ok(batch) if batch.is_empty() => return,
                Ok(batch) => self.deliver(destination, batch).await,
                Err(e) => return tracing::warn!(error = %e, %destination, "cannot claim forwards"),
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
        let mut sent = Vec::new();
        for (n, f) in forwards.iter().enumerate() {
            let message_id = u16::try_from(n % 0xFFFF + 1).unwrap_or(1);
            match send_instance(&mut association, &self.storage, &f.item, message_id, None).await {
                Ok((SubOpOutcome::Completed | SubOpOutcome::Warning, _)) => {
                    self.metrics.forwarded.inc();
                    sent.push(f.item.sop_instance_uid.clone());
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
                    self.audit_export(destination, sent);
                    for f in to_confirm {
                        self.retry(f, "association broke before storage commitment")
                            .await;
                    }
                    association.abort().await;
                    return;
                }
            }
        }
        self.audit_export(destination, sent);
        if !to_confirm.is_empty() {
            confirm::request_commitment(self, destination, &mut association, &to_confirm).await;
        }
        association.release().await;
    }

    /// One Export record per batch sent to a destination.
    fn audit_export(&self, destination: &str, sent: Vec<String>) {
        if sent.is_empty() {
            return;
        }
        let detail = format!("forwarded {} instances to {destination}", sent.len());
        self.auditor.record(
            crate::audit::AuditEvent::new(
                crate::audit::Event::Exported,
                crate::audit::Actor::Local,
                "",
            )
            .instances(sent)
            .detail(detail),
        );
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
