//! Logging and metrics, shared by the binary and the tests.
//!
//! Logs go through `tracing` (plain text or JSON lines). Metrics are kept in
//! a prometheus-client registry and served as text by `/metrics`.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::ingest::IngestError;

/// Install the global tracing subscriber. `RUST_LOG` overrides `default`.
pub fn init_logging(default: &str, json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests) is harmless; ignore it.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
}

/// An HL7 interface and the acknowledgement code sent.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Hl7Labels {
    pub interface: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InterfaceLabels {
    pub interface: String,
}

/// Every metric Tessera exports.
pub struct Metrics {
    registry: Registry,
    pub associations_total: Counter,
    pub associations_active: Gauge,
    pub associations_rejected: Counter,
    pub instances_received: Counter,
    pub bytes_received: Counter<u64, AtomicU64>,
    pub store_latency: Histogram,
    /// Per group commit: the ingest journal's write and sync, which every
    /// acknowledgement in the group waits for.
    pub journal_append: Histogram,
    /// Per group commit: the index transaction, from its first statement
    /// to its commit.
    pub index_commit: Histogram,
    pub errors: Family<ErrorLabels, Counter>,
    pub forward_pending: Gauge,
    pub forward_committing: Gauge,
    pub forward_dead: Gauge,
    pub forwarded: Counter,
    pub hl7_messages: Family<Hl7Labels, Counter>,
    pub hl7_ack_latency: Family<InterfaceLabels, Histogram>,
    /// Messages to the RIS by how the send ended: the RIS's code, or
    /// "retry" when it did not answer.
    pub hl7_outbound: Family<CodeLabels, Counter>,
    pub hl7_outbound_pending: Gauge,
    pub hl7_outbound_failed: Gauge,
    /// Audit events that could not be queued for the trail.
    pub audit_dropped: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tessera");
        let m = Metrics {
            associations_total: Counter::default(),
            associations_active: Gauge::default(),
            associations_rejected: Counter::default(),
            instances_received: Counter::default(),
            bytes_received: Counter::default(),
            store_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            journal_append: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            index_commit: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            errors: Family::default(),
            forward_pending: Gauge::default(),
            forward_committing: Gauge::default(),
            forward_dead: Gauge::default(),
            forwarded: Counter::default(),
            hl7_messages: Family::default(),
            hl7_ack_latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0002, 2.0, 16))
            }),
            hl7_outbound: Family::default(),
            hl7_outbound_pending: Gauge::default(),
            hl7_outbound_failed: Gauge::default(),
            audit_dropped: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "dicom_associations",
            "DICOM associations accepted",
            m.associations_total.clone(),
        );
        registry.register(
            "dicom_associations_active",
            "DICOM associations currently open",
            m.associations_active.clone(),
        );
        registry.register(
            "dicom_associations_rejected",
            "DICOM associations rejected or refused at the connection limit",
            m.associations_rejected.clone(),
        );
        registry.register(
            "instances_received",
            "New instances stored",
            m.instances_received.clone(),
        );
        registry.register(
            "received_bytes",
            "Bytes of new instances stored",
            m.bytes_received.clone(),
        );
        registry.register(
            "store_latency_seconds",
            "Time from the end of a received data set to its durable commit",
            m.store_latency.clone(),
        );
        registry.register(
            "journal_append_seconds",
            "Time to write and sync one group of received objects to the ingest journal",
            m.journal_append.clone(),
        );
        registry.register(
            "index_commit_seconds",
            "Time to record one group of stored instances in the index, up to its commit",
            m.index_commit.clone(),
        );
        registry.register("errors", "Errors by kind", m.errors.clone());
        registry.register(
            "forward_queue_pending",
            "Instances waiting to be forwarded",
            m.forward_pending.clone(),
        );
        registry.register(
            "forward_queue_committing",
            "Forwarded instances waiting for the destination's storage commitment",
            m.forward_committing.clone(),
        );
        registry.register(
            "forward_queue_dead",
            "Forwards given up after too many attempts (dead letters)",
            m.forward_dead.clone(),
        );
        registry.register("forwarded", "Instances forwarded", m.forwarded.clone());
        registry.register(
            "hl7_messages",
            "HL7 messages answered, by interface and acknowledgement code",
            m.hl7_messages.clone(),
        );
        registry.register(
            "hl7_ack_latency_seconds",
            "Time from a whole HL7 message to its acknowledgement",
            m.hl7_ack_latency.clone(),
        );
        registry.register(
            "hl7_outbound",
            "HL7 messages sent to the RIS, by acknowledgement code (retry: no answer)",
            m.hl7_outbound.clone(),
        );
        registry.register(
            "hl7_outbound_pending",
            "HL7 messages waiting to be sent to the RIS",
            m.hl7_outbound_pending.clone(),
        );
        registry.register(
            "hl7_outbound_failed",
            "HL7 messages the RIS refused, waiting for an operator",
            m.hl7_outbound_failed.clone(),
        );
        registry.register(
            "audit_dropped",
            "Audit events that could not be queued for the trail",
            m.audit_dropped.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn hl7_sent(&self, code: &str) {
        self.hl7_outbound
            .get_or_create(&CodeLabels { code: code.into() })
            .inc();
    }

    pub fn instance_stored(&self, bytes: u64) {
        self.instances_received.inc();
        self.bytes_received.inc_by(bytes);
    }

    pub fn error(&self, kind: &str) {
        self.errors
            .get_or_create(&ErrorLabels { kind: kind.into() })
            .inc();
    }

    pub fn observe_store(&self, elapsed: Duration, error: Option<&IngestError>) {
        self.store_latency.observe(elapsed.as_secs_f64());
        if let Some(e) = error {
            self.error(match e {
                IngestError::Invalid(_) => "invalid_object",
                IngestError::Duplicate(_) => "duplicate_rejected",
                IngestError::Storage(_) => "storage",
                IngestError::Index(_) => "index",
                IngestError::ShuttingDown => "shutting_down",
                IngestError::WrongStudy { .. } => "wrong_study",
                IngestError::SeriesInOtherStudy { .. } => "series_in_other_study",
            });
        }
    }

    pub fn hl7_answered(&self, interface: &str, code: &str, elapsed: Duration) {
        self.hl7_messages
            .get_or_create(&Hl7Labels {
                interface: interface.into(),
                code: code.into(),
            })
            .inc();
        self.hl7_ack_latency
            .get_or_create(&InterfaceLabels {
                interface: interface.into(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
