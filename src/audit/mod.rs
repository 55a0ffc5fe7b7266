//! The audit trail: who accessed which patient's data, and every security
//! event, as DICOM audit messages (PS3.15 A.5, IHE ATNA).
//!
//! - [`Auditor`]: the handle the edges report [`AuditEvent`]s to. It never
//!   blocks the caller: events queue for one writer task, which appends
//!   them in batches (one transaction per batch) to the node's hash chain
//!   in the index ([`chain`]), and sends each to a syslog collector when
//!   one is configured ([`syslog`]).
//! - [`atna`]: the XML message and its syslog frame.
//! - [`event`]: the events and their DCM codes.

pub mod atna;
pub mod chain;
mod event;
mod syslog;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use atna::Source;
pub use event::{Actor, AuditEvent, Event, Outcome};
pub use syslog::SyslogTarget;

use crate::index::audit::AuditRow;
use crate::index::Index;
use crate::telemetry::Metrics;

/// Events waiting for the writer. Far more than a busy second produces;
/// when full, events are counted as dropped and logged, never waited for.
const QUEUE: usize = 65_536;
/// Most events one transaction appends.
const BATCH: usize = 2_000;
/// How long a stopping writer keeps retrying an unreachable index.
const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(10);
/// How long the writer waits for more events before it writes a batch.
const GATHER: Duration = Duration::from_millis(50);

/// The studies a response was about, when its request did not name them
/// (STOW-RS to `/studies`): the handler leaves them in the response's
/// extensions for the HTTP edge's audit record.
#[derive(Debug, Clone, Default)]
pub struct Subjects {
    pub studies: Vec<String>,
}

/// Where the trail goes.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node's chain: host and data directory.
    pub node: String,
    pub source: Source,
    pub syslog: Option<SyslogTarget>,
}

/// Handle for reporting events; cheap to clone.
#[derive(Clone)]
pub struct Auditor {
    tx: Option<mpsc::Sender<(i64, AuditEvent)>>,
    metrics: Option<Arc<Metrics>>,
}

impl Auditor {
    /// Start the writer in `tracker`; it drains the queue and stops once
    /// `shutdown` fires and the queue is empty.
    pub fn start(
        index: Index,
        settings: Settings,
        metrics: Arc<Metrics>,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let syslog = settings
            .syslog
            .clone()
            .map(|target| syslog::start(target, tracker, shutdown.clone()));
        tracker.spawn(write(index, settings, rx, syslog, shutdown));
        Auditor {
            tx: Some(tx),
            metrics: Some(metrics),
        }
    }

    /// An auditor that records nothing, for tools that serve no one.
    pub fn off() -> Self {
        Auditor {
            tx: None,
            metrics: None,
        }
    }

    /// Queue an event, stamped now.
    pub fn record(&self, event: AuditEvent) {
        let Some(tx) = &self.tx else { return };
        let now = unix_micros();
        if let Err(e) = tx.try_send((now, event)) {
            if let Some(m) = &self.metrics {
                m.audit_dropped.inc();
            }
            tracing::error!(error = %e, "audit event not recorded: queue full or writer stopped");
        }
    }
}

fn unix_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The writer: gather a batch, chain it onto the node's last row, append
/// it in one transaction (retrying until the index takes it), then pass
/// the messages to syslog.
async fn write(
    index: Index,
    settings: Settings,
    mut rx: mpsc::Receiver<(i64, AuditEvent)>,
    syslog: Option<mpsc::Sender<Vec<u8>>>,
    shutdown: CancellationToken,
) {
    let mut tail = loop {
        match index.audit_tail(&settings.node).await {
            Ok(tail) => break tail.unwrap_or((0, chain::GENESIS.to_owned())),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the audit chain; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    let mut stopping = false;
    loop {
        let first = if stopping {
            match rx.try_recv() {
                Ok(first) => first,
                Err(_) => return,
            }
        } else {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(first) => first,
                    None => return,
                },
                _ = shutdown.cancelled() => {
                    stopping = true;
                    continue;
                }
            }
        };
        let mut batch = vec![first];
        if !stopping {
            tokio::time::sleep(GATHER).await;
        }
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        add_patients(&index, &mut batch).await;
        let before = tail.clone();
        let mut rows = chain_rows(&settings, &mut tail, &batch);
        let mut delay = Duration::from_millis(200);
        let mut given_up_at = None;
        while let Err(e) = index.append_audit(&rows).await {
            // Shutting down with the index gone: say what is lost rather
            // than hold the shutdown for ever.
            if shutdown.is_cancelled() {
                let at = *given_up_at.get_or_insert_with(std::time::Instant::now);
                if at.elapsed() > SHUTDOWN_PATIENCE {
                    tracing::error!(error = %e, rows = rows.len(), "audit records not written: the index is unreachable at shutdown");
                    return;
                }
            }
            tracing::error!(error = %e, rows = rows.len(), "cannot append to the audit trail; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
            // Another writer on this chain (a server restarted in the same
            // process before the old one finished) moved its end: chain
            // onto the end as it is now.
            if let Ok(Some(now)) = index.audit_tail(&settings.node).await {
                if now.0 != before.0 {
                    tail = now;
                    rows = chain_rows(&settings, &mut tail, &batch);
                }
            }
        }
        if let Some(syslog) = &syslog {
            for (row, (_, event)) in rows.iter().zip(&batch) {
                let frame = atna::syslog_frame(
                    &row.message,
                    row.at,
                    &settings.source.host,
                    event.outcome != Outcome::Success,
                );
                if syslog.try_send(frame).is_err() {
                    tracing::warn!("syslog queue full; a record went only to the index");
                }
            }
        }
    }
}

/// Name the study and patient of every instance, and the patient of every
/// study, an event names, so the trail answers "who saw this patient" even
/// where the edge only knew UIDs.
async fn add_patients(index: &Index, batch: &mut [(i64, AuditEvent)]) {
    for (_, event) in batch.iter_mut() {
        let instances = std::mem::take(&mut event.instances);
        if instances.is_empty() {
            continue;
        }
        match index.studies_of_instances(&instances).await {
            Ok(found) => {
                let (studies, patients): (Vec<String>, Vec<String>) = found.into_iter().unzip();
                event.add_studies(studies);
                event.add_patients(patients);
            }
            Err(e) => tracing::warn!(error = %e, "cannot name the studies of audited instances"),
        }
    }
    let mut studies: Vec<String> = batch
        .iter()
        .flat_map(|(_, e)| e.studies.iter().cloned())
        .collect();
    studies.sort();
    studies.dedup();
    if studies.is_empty() {
        return;
    }
    match index.patients_of_studies(&studies).await {
        Ok(found) => {
            for (_, event) in batch.iter_mut() {
                let more: Vec<String> = event
                    .studies
                    .iter()
                    .filter_map(|s| found.get(s).cloned())
                    .collect();
                event.add_patients(more);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot name the patients of audited studies"),
    }
}

fn chain_rows(
    settings: &Settings,
    tail: &mut (i64, String),
    batch: &[(i64, AuditEvent)],
) -> Vec<AuditRow> {
    batch
        .iter()
        .map(|(at, event)| {
            let mut row = AuditRow {
                id: 0,
                node: settings.node.clone(),
                seq: tail.0 + 1,
                at: *at,
                event: event.event.slug().to_owned(),
                outcome: event.outcome as i64,
                user: event.actor.name().to_owned(),
                address: event.address.clone(),
                patients: serde_json::to_string(&event.patients).unwrap_or_default(),
                studies: serde_json::to_string(&event.studies).unwrap_or_default(),
                message: atna::message(event, *at, &settings.source),
                prev_hash: tail.1.clone(),
                hash: String::new(),
            };
            row.hash = chain::hash(&row.prev_hash, &row);
            *tail = (row.seq, row.hash.clone());
            row
        })
        .collect()
}
