//! The MLLP client to the RIS: sends the queued messages of
//! [`crate::index::outbox`] oldest first over one connection, waits for
//! each acknowledgement, and records the outcome. A message the RIS does
//! not answer is tried again with backoff, and the ones after it wait, so
//! the RIS sees every order's events in order. Only the node holding the
//! sending lease sends.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::frame::{self, Frame, FrameReader};
use crate::config::Hl7OutboundConfig;
use crate::index::outbox::{Delivery, OutboundRow};
use crate::index::{Index, IndexError};
use crate::ris::outbound::{self, Answer};

/// Looked for new rows this often when nothing rings.
const POLL: Duration = Duration::from_secs(1);
/// The sending lease lasts at least this long unless renewed.
const MIN_LEASE_SECS: i64 = 30;
/// The queue's gauges are read at most this often.
const STATS_EVERY: Duration = Duration::from_secs(15);
/// Rows read per pass.
const BATCH: i64 = 64;
/// The largest acknowledgement read.
const MAX_ACK_BYTES: usize = 1 << 20;
/// Delivered rows are kept this long for the API.
const RETENTION_SECS: i64 = 7 * 86_400;

pub struct Sender {
    pub index: Index,
    pub metrics: std::sync::Arc<crate::telemetry::Metrics>,
    pub config: Hl7OutboundConfig,
    /// This node's name on the lease.
    pub holder: String,
}

/// When this node's sending lease was last renewed.
struct LeaseClock {
    secs: i64,
    renewed_at: Option<tokio::time::Instant>,
}

impl LeaseClock {
    fn new(secs: i64) -> Self {
        LeaseClock {
            secs,
            renewed_at: None,
        }
    }

    /// Held and renewed within the last third of the lease.
    fn fresh(&self) -> bool {
        self.renewed_at
            .is_some_and(|at| at.elapsed() < Duration::from_secs(self.secs as u64 / 3))
    }

    fn renewed(&mut self, held: bool) {
        self.renewed_at = held.then(tokio::time::Instant::now);
    }
}

/// One open connection to the RIS.
struct Link {
    stream: TcpStream,
    reader: FrameReader,
}

impl Sender {
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(ris = %self.config.address, "HL7 sender to the RIS started");
        let mut link: Option<Link> = None;
        let mut lease = LeaseClock::new(self.lease_secs());
        let mut purged_at = tokio::time::Instant::now();
        let mut counted_at: Option<tokio::time::Instant> = None;
        loop {
            match self.hold(&mut lease).await {
                Ok(true) => {
                    if let Err(e) = self.pass(&mut link, &mut lease, &shutdown).await {
                        tracing::warn!(error = %e, "HL7 outbox unavailable");
                    }
                }
                Ok(false) => link = None,
                Err(e) => tracing::warn!(error = %e, "cannot take the HL7 sending lease"),
            }
            if counted_at.is_none_or(|at| at.elapsed() > STATS_EVERY) {
                counted_at = Some(tokio::time::Instant::now());
                if let Ok((pending, failed)) = self.index.outbound_counts().await {
                    self.metrics.hl7_outbound_pending.set(pending);
                    self.metrics.hl7_outbound_failed.set(failed);
                }
            }
            if purged_at.elapsed() > Duration::from_secs(600) {
                purged_at = tokio::time::Instant::now();
                if let Err(e) = self.index.purge_outbound(RETENTION_SECS).await {
                    tracing::warn!(error = %e, "cannot purge the HL7 outbox");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.index.outbox_rung() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
        if let Err(e) = self.index.release_outbound_lease(&self.holder).await {
            tracing::debug!(error = %e, "cannot release the HL7 sending lease");
        }
        tracing::debug!("HL7 sender stopped");
    }

    /// A lease outlasts the longest wait for one acknowledgement.
    fn lease_secs(&self) -> i64 {
        MIN_LEASE_SECS.max(3 * self.config.ack_timeout.as_secs() as i64)
    }

    /// Whether this node holds the sending lease, renewing it when a third
    /// of it has passed.
    async fn hold(&self, lease: &mut LeaseClock) -> Result<bool, IndexError> {
        if lease.fresh() {
            return Ok(true);
        }
        let held = self
            .index
            .hold_outbound_lease(&self.holder, lease.secs)
            .await?;
        lease.renewed(held);
        Ok(held)
    }

    /// Send what is due, in order, until the queue is empty, a message
    /// must wait for its retry, or the lease is lost.
    async fn pass(
        &self,
        link: &mut Option<Link>,
        lease: &mut LeaseClock,
        shutdown: &CancellationToken,
    ) -> Result<(), IndexError> {
        loop {
            let rows = self.index.outbound_pending(BATCH).await?;
            if rows.is_empty() {
                return Ok(());
            }
            for row in rows {
                if shutdown.is_cancelled() || row.next_attempt_at > crate::index::unix_now() {
                    return Ok(());
                }
                if !self.hold(lease).await? {
                    *link = None;
                    return Ok(());
                }
                let rendered = outbound::render(
                    row.id,
                    &row.message,
                    &self.config.addressing,
                    &crate::ris::timestamp(),
                );
                let delivery = match self.send(link, &rendered.bytes, &rendered.control_id).await {
                    Ok(Answer::Accepted(code)) => Delivery::Done { ack_code: code },
                    Ok(Answer::Refused { code, error }) => {
                        tracing::warn!(id = row.id, %code, %error, "the RIS refused a message");
                        Delivery::Refused {
                            ack_code: code,
                            error,
                        }
                    }
                    Err(error) => {
                        *link = None;
                        let retry_at = crate::index::unix_now() + self.backoff_secs(&row);
                        tracing::info!(id = row.id, %error, retry_at, "HL7 message to the RIS not delivered");
                        Delivery::Retry { error, retry_at }
                    }
                };
                let retry = matches!(delivery, Delivery::Retry { .. });
                self.metrics.hl7_sent(match &delivery {
                    Delivery::Done { ack_code } | Delivery::Refused { ack_code, .. } => ack_code,
                    Delivery::Retry { .. } => "retry",
                });
                self.index
                    .outbound_sent(row.id, &rendered.control_id, &delivery)
                    .await?;
                if retry {
                    return Ok(());
                }
            }
        }
    }

    fn backoff_secs(&self, row: &OutboundRow) -> i64 {
        (1i64 << row.attempts.clamp(0, 16)).min(self.config.max_backoff_secs)
    }

    /// Send one message and read its acknowledgement.
    async fn send(
        &self,
        link: &mut Option<Link>,
        bytes: &[u8],
        control_id: &str,
    ) -> Result<Answer, String> {
        let timeout = self.config.ack_timeout;
        if link.is_none() {
            let stream = tokio::time::timeout(timeout, TcpStream::connect(&self.config.address))
                .await
                .map_err(|_| format!("connecting to {} timed out", self.config.address))?
                .map_err(|e| format!("cannot connect to {}: {e}", self.config.address))?;
            let _ = stream.set_nodelay(true);
            *link = Some(Link {
                stream,
                reader: FrameReader::new(MAX_ACK_BYTES),
            });
        }
        let Some(Link { stream, reader }) = link.as_mut() else {
            return Err("no connection".into());
        };
        let exchange = async {
            stream
                .write_all(&frame::encode(bytes))
                .await
                .map_err(|e| format!("cannot send: {e}"))?;
            match reader.next(stream).await {
                Ok(Some(Frame::Message(ack))) => outbound::read_answer(&ack, control_id),
                Ok(Some(Frame::Oversized { size, .. })) => {
                    Err(format!("an acknowledgement of {size} bytes"))
                }
                Ok(None) => Err("the RIS closed the connection".into()),
                Err(e) => Err(format!("no acknowledgement: {e}")),
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| format!("no acknowledgement within {timeout:?}"))?
    }
}
