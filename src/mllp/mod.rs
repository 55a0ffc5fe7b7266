//! The MLLP port: HL7 v2 messages from the RIS/HIS, framed by MLLP on TCP,
//! each answered with its acknowledgement once [`crate::ris`] has committed
//! it. A connection cap, a message-size cap, an idle timeout and a write
//! timeout keep one bad sender from holding the port. With `hl7.tls` every
//! connection speaks TLS first.

mod frame;
pub mod sender;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::{Actor, AuditEvent, Auditor, Event, Outcome};
use crate::config::Hl7Config;
use crate::ris::Ris;
use frame::{Frame, FrameReader};

/// How long a sender may take to read its acknowledgement.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The interface name in the message log and the metrics.
const INTERFACE: &str = "mllp";

/// Accept connections until `shutdown`; each is served by its own task in
/// `connections`.
pub async fn run(
    listener: TcpListener,
    tls: Option<crate::tls::ServerTls>,
    config: Hl7Config,
    ris: Ris,
    auditor: Auditor,
    shutdown: CancellationToken,
    connections: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(config.max_connections));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "MLLP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = config.max_connections, "MLLP connection refused: too many open");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let ris = ris.clone();
        let auditor = auditor.clone();
        let config = config.clone();
        let shutdown = shutdown.clone();
        let tls = tls
            .as_ref()
            .map(|t| tokio_rustls::TlsAcceptor::from(t.config()));
        connections.spawn(async move {
            match tls {
                None => serve(stream, peer, &ris, &auditor, &config, &shutdown).await,
                Some(acceptor) => {
                    // The handshake counts against the idle timeout.
                    match tokio::time::timeout(config.idle_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            serve(stream, peer, &ris, &auditor, &config, &shutdown).await
                        }
                        Ok(Err(e)) => {
                            tracing::info!(%peer, error = %e, "MLLP TLS handshake failed")
                        }
                        Err(_) => tracing::info!(%peer, "MLLP TLS handshake timed out"),
                    }
                }
            }
            drop(slot);
        });
    }
    tracing::info!("MLLP listener stopped");
}

/// Record a message the RIS sent: patients (ADT), orders, results.
fn audit(auditor: &Auditor, reply: &crate::ris::Reply, peer: SocketAddr) {
    let event = match reply.message_type.get(..3) {
        Some("ADT") => Event::PatientRecord,
        Some("ORU") => Event::ProcedureRecord,
        _ => Event::OrderRecord,
    };
    let outcome = match reply.code.as_str() {
        "AA" | "CA" => Outcome::Success,
        "AE" | "CE" => Outcome::MinorFailure,
        _ => Outcome::SeriousFailure,
    };
    auditor.record(
        AuditEvent::new(
            event,
            Actor::Hl7Sender(reply.sender.clone()),
            peer.ip().to_string(),
        )
        .outcome(outcome)
        .patients([reply.patient_id.clone()])
        .detail(reply.message_type.clone()),
    );
}

/// One connection, over plain TCP or TLS.
async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    ris: &Ris,
    auditor: &Auditor,
    config: &Hl7Config,
    shutdown: &CancellationToken,
) {
    let mut reader = FrameReader::new(config.max_message_bytes);
    loop {
        let next = tokio::select! {
            // A message being answered finishes first; an idle one ends.
            _ = shutdown.cancelled() => break,
            next = tokio::time::timeout(config.idle_timeout, reader.next(&mut stream)) => next,
        };
        let frame = match next {
            Err(_) => {
                tracing::info!(%peer, "MLLP connection idle; closing");
                break;
            }
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                // Framing that cannot be answered: close cleanly.
                tracing::warn!(%peer, error = %e, "MLLP framing error; closing");
                break;
            }
            Ok(Ok(Some(frame))) => frame,
        };
        let reply = match frame {
            Frame::Message(bytes) => match ris.receive(&bytes, INTERFACE).await {
                Ok(reply) => {
                    audit(auditor, &reply, peer);
                    reply.bytes
                }
                Err(e) => {
                    // Not recorded: no acknowledgement, the sender retries.
                    tracing::error!(%peer, error = %e, "HL7 message not recorded; closing");
                    break;
                }
            },
            Frame::Oversized { head, size } => {
                tracing::warn!(%peer, size, limit = config.max_message_bytes, "HL7 message too large");
                Some(too_large(&head, size, config.max_message_bytes))
            }
        };
        if let Some(bytes) = reply {
            let framed = frame::encode(&bytes);
            let write = stream.write_all(&framed);
            match tokio::time::timeout(WRITE_TIMEOUT, write).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "cannot send HL7 acknowledgement");
                    break;
                }
                Err(_) => {
                    tracing::warn!(%peer, "HL7 sender stopped reading; closing");
                    break;
                }
            }
        }
    }
    let _ = stream.shutdown().await;
}

/// A rejection for a message over the size limit, addressed from its head.
fn too_large(head: &[u8], size: usize, limit: usize) -> Vec<u8> {
    use crate::hl7::{ack, AckCode, ErrorCondition, Message};
    let header = Message::parse_header(head).unwrap_or_else(Message::anonymous);
    let condition = ErrorCondition::new(
        207,
        format!("the message is {size} bytes; at most {limit} are taken"),
    );
    let text = ack::build(&header, AckCode::Ar, Some(&condition), "TOOLARGE", "");
    ack::to_wire(&header, &text)
}
