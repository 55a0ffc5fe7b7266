//! Outbound associations (SCU side): C-ECHO to verify a peer, C-STORE
//! sub-operations for C-MOVE and forwarding (with an optional storage
//! commitment request on the same association), and storage commitment
//! reports to requesters that released their association.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dicom_ul::pdu::{PDataValue, PDataValueType, PresentationContextResultReason};
use dicom_ul::{ClientAssociationOptions, Pdu};
use futures::future::BoxFuture;

use super::association::VERIFICATION;
use super::command::{request, Command, CommandField, Status};
use super::link::{Link, LinkError};
use crate::model::{AeTitle, Peer};
use crate::peers::Verifier;

#[derive(Debug, thiserror::Error)]
pub enum ScuError {
    #[error("cannot associate with {peer}: {source}")]
    Associate {
        peer: String,
        source: dicom_ul::association::Error,
    },
    #[error("{0} did not accept the Verification SOP class")]
    NotAccepted(String),
    #[error("{0}")]
    Tls(String),
    /// Not called: the name does not resolve, or only outside
    /// `dicom.peer_networks`.
    #[error("{0}")]
    Refused(String),
    #[error("{0} timed out")]
    Timeout(String),
    #[error("unexpected answer from {peer}: {what}")]
    Protocol { peer: String, what: String },
    #[error("{peer} answered with status {status:04X}H")]
    Status { peer: String, status: u16 },
}

impl ScuError {
    fn from_link(peer: &str, e: LinkError) -> Self {
        match e {
            LinkError::NoTlsConfig => ScuError::Tls(format!("{peer}: {e}")),
            LinkError::Unresolved(_) | LinkError::OutsideNetworks(_) => {
                ScuError::Refused(format!("{peer}: {e}"))
            }
            LinkError::Associate(source) => ScuError::Associate {
                peer: peer.to_owned(),
                source,
            },
        }
    }
}

/// A message as PDVs: the command, then the data set (if any) in pieces of
/// at most `max` bytes, the last one marked.
fn message_pdvs(
    context_id: u8,
    command: Vec<u8>,
    data: Option<Vec<u8>>,
    max: usize,
) -> Vec<PDataValue> {
    let pdv = |value_type, is_last, data| PDataValue {
        presentation_context_id: context_id,
        value_type,
        is_last,
        data,
    };
    let mut pdvs = vec![pdv(PDataValueType::Command, true, command)];
    if let Some(data) = data {
        let chunks = data.len().div_ceil(max).max(1);
        pdvs.extend((0..chunks).map(|i| {
            let piece = data[(i * max).min(data.len())..((i + 1) * max).min(data.len())].to_vec();
            pdv(PDataValueType::Data, i + 1 == chunks, piece)
        }));
    }
    pdvs
}

/// Send one request (its PDVs in order), read the response, release, and
/// turn anything but success into an error.
async fn request_and_release(
    mut assoc: Link,
    pdvs: Vec<PDataValue>,
    peer: &str,
) -> Result<(), ScuError> {
    let protocol = |what: String| ScuError::Protocol {
        peer: peer.to_owned(),
        what,
    };
    for pdv in pdvs {
        assoc
            .send(&Pdu::PData { data: vec![pdv] })
            .await
            .map_err(|e| protocol(e.to_string()))?;
    }
    let status = match assoc.receive().await.map_err(|e| protocol(e.to_string()))? {
        Pdu::PData { data } if !data.is_empty() => {
            let rsp = Command::decode(&data[0].data).map_err(|e| protocol(e.to_string()))?;
            rsp.status.unwrap_or(Status::Other(0xFFFF))
        }
        other => return Err(protocol(format!("{other:?}"))),
    };
    let _ = assoc.release().await;
    match status {
        Status::Success => Ok(()),
        other => Err(ScuError::Status {
            peer: peer.to_owned(),
            status: other.code(),
        }),
    }
}

/// Our identity when calling peers.
#[derive(Debug, Clone)]
pub struct Scu {
    pub ae_title: AeTitle,
    pub timeout: Duration,
    /// For peers marked `tls`; `None` when `[tls]` is not configured.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// `dicom.peer_networks`: where peers may be; empty for anywhere.
    pub networks: Arc<[ipnet::IpNet]>,
}

impl Scu {
    /// C-ECHO: associate, verify, release. Returns the round-trip time.
    pub async fn echo(&self, peer: &Peer) -> Result<Duration, ScuError> {
        let started = Instant::now();
        let name = format!("{}@{}:{}", peer.ae_title, peer.host, peer.port);
        let work = async {
            let options = ClientAssociationOptions::new()
                .calling_ae_title(self.ae_title.as_str())
                .called_ae_title(peer.ae_title.as_str())
                .with_abstract_syntax(VERIFICATION);
            let assoc = Link::establish(options, peer, self.tls.as_ref(), &self.networks)
                .await
                .map_err(|e| ScuError::from_link(&name, e))?;
            let pc = assoc
                .presentation_contexts()
                .iter()
                .find(|pc| pc.reason == PresentationContextResultReason::Acceptance)
                .map(|pc| pc.id)
                .ok_or_else(|| ScuError::NotAccepted(name.clone()))?;
            let rq = request(CommandField::CEchoRq, 1, VERIFICATION);
            let bytes = rq.encode().map_err(|e| ScuError::Protocol {
                peer: name.clone(),
                what: e.to_string(),
            })?;
            let pdv = PDataValue {
                presentation_context_id: pc,
                value_type: PDataValueType::Command,
                is_last: true,
                data: bytes,
            };
            request_and_release(assoc, vec![pdv], &name).await?;
            Ok(started.elapsed())
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| ScuError::Timeout(format!("C-ECHO to {}", peer.ae_title)))?
    }
}

impl Verifier for Scu {
    fn verify<'a>(&'a self, peer: &'a Peer) -> BoxFuture<'a, Result<Duration, String>> {
        Box::pin(async move { self.echo(peer).await.map_err(|e| e.to_string()) })
    }
}

/// An outbound association for C-STORE sub-operations (C-MOVE) and
/// forwarding.
pub struct StoreAssociation {
    inner: Link,
    /// (SOP class, transfer syntax, presentation context id) accepted.
    contexts: Vec<(String, String, u8)>,
    peer: String,
    timeout: Duration,
    /// Encoded P-DATA-TF PDUs not yet written. Peers often take 16 KiB
    /// PDUs; one write per PDU made the system calls the largest cost of
    /// sending a study, so PDUs are written in batches.
    unsent: Vec<u8>,
}

/// Write buffered PDUs once this many bytes are waiting.
const WRITE_BATCH: usize = 256 * 1024;

/// A presentation context can list at most this many (odd ids 1..=255).
const MAX_CONTEXTS: usize = 128;

impl Scu {
    /// Associate with `peer` proposing each (SOP class, transfer syntax)
    /// pair as its own presentation context, so data goes as stored; with
    /// `commitment`, also the Storage Commitment Push Model (we as SCU).
    pub async fn open_store(
        &self,
        peer: &Peer,
        pairs: &[(String, String)],
        commitment: bool,
    ) -> Result<StoreAssociation, ScuError> {
        let name = format!("{}@{}:{}", peer.ae_title, peer.host, peer.port);
        let mut options = ClientAssociationOptions::new()
            .calling_ae_title(self.ae_title.as_str())
            .called_ae_title(peer.ae_title.as_str());
        let room = MAX_CONTEXTS - usize::from(commitment);
        for (sop_class, ts) in pairs.iter().take(room) {
            options = options.with_presentation_context(sop_class.as_str(), vec![ts.as_str()]);
        }
        if commitment {
            options = options.with_presentation_context(
                crate::dimse::service::commitment::STORAGE_COMMITMENT_PUSH,
                vec![
                    crate::transcode::EXPLICIT_VR_LITTLE_ENDIAN,
                    crate::transcode::IMPLICIT_VR_LITTLE_ENDIAN,
                ],
            );
        }
        let inner = tokio::time::timeout(
            self.timeout,
            Link::establish(options, peer, self.tls.as_ref(), &self.networks),
        )
        .await
        .map_err(|_| ScuError::Timeout(format!("association with {name}")))?
        .map_err(|e| ScuError::from_link(&name, e))?;
        let contexts = inner
            .presentation_contexts()
            .iter()
            .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
            .map(|pc| {
                (
                    pc.abstract_syntax.trim_end_matches('\0').to_owned(),
                    pc.transfer_syntax.trim_end_matches('\0').to_owned(),
                    pc.id,
                )
            })
            .collect();
        Ok(StoreAssociation {
            inner,
            contexts,
            peer: name,
            timeout: self.timeout.max(Duration::from_secs(60)),
            unsent: Vec::with_capacity(WRITE_BATCH + (1 << 20)),
        })
    }
}

impl StoreAssociation {
    pub async fn release(mut self) {
        let _ = self.flush().await;
        let _ = self.inner.release().await;
    }

    pub async fn abort(self) {
        let _ = self.inner.abort().await;
    }

    /// Queue one PDV as its own P-DATA-TF PDU; written when enough is
    /// waiting, at the end of a data set, or before anything is read.
    async fn queue_pdv(
        &mut self,
        pdv: PDataValue,
    ) -> Result<(), crate::dimse::association::AssociationError> {
        let end_of_data_set = pdv.is_last && pdv.value_type == PDataValueType::Data;
        dicom_ul::write_pdu(&mut self.unsent, &Pdu::PData { data: vec![pdv] })
            .map_err(|e| crate::dimse::association::AssociationError::Protocol(e.to_string()))?;
        if end_of_data_set || self.unsent.len() >= WRITE_BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    /// Write what is queued. dicom-ul's own `send` writes each PDU at once,
    /// so nothing of its own is pending on the socket.
    async fn flush(&mut self) -> Result<(), crate::dimse::association::AssociationError> {
        use crate::dimse::association::AssociationError;
        if self.unsent.is_empty() {
            return Ok(());
        }
        let timeout = self.timeout;
        let written = tokio::time::timeout(timeout, self.inner.write_encoded(&self.unsent)).await;
        self.unsent.clear();
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(AssociationError::Protocol(format!(
                "cannot write to {}: {e}",
                self.peer
            ))),
            Err(_) => Err(AssociationError::IdleTimeout(timeout)),
        }
    }

    /// The accepted context for an abstract syntax, with its transfer syntax.
    pub fn context_of(&self, abstract_syntax: &str) -> Option<(u8, String)> {
        self.contexts
            .iter()
            .find(|(c, _, _)| c == abstract_syntax)
            .map(|(_, ts, id)| (*id, ts.clone()))
    }

    /// Send a command and, when given, its encoded data set.
    pub async fn send_message(
        &mut self,
        context_id: u8,
        command: &Command,
        data: Option<Vec<u8>>,
    ) -> Result<(), crate::dimse::association::AssociationError> {
        use crate::dimse::service::retrieve::SubOpChannel;
        let max = self.max_pdv_len();
        for pdv in message_pdvs(context_id, command.encode()?, data, max) {
            self.queue_pdv(pdv).await?;
        }
        self.flush().await
    }

    /// The next whole message the peer sends (command, data set bytes),
    /// or `None` when nothing came within `wait` or the peer released.
    pub async fn receive_message(
        &mut self,
        wait: Duration,
        max_data: usize,
    ) -> Result<Option<PeerMessage>, crate::dimse::association::AssociationError> {
        use crate::dimse::association::AssociationError;
        self.flush().await?;
        let deadline = tokio::time::Instant::now() + wait;
        let mut command: Option<Command> = None;
        let mut command_bytes = Vec::new();
        let mut data = Vec::new();
        loop {
            let pdu = match tokio::time::timeout_at(deadline, self.inner.receive()).await {
                Err(_) => return Ok(None),
                Ok(pdu) => pdu?,
            };
            let pdvs = match pdu {
                Pdu::PData { data } => data,
                Pdu::ReleaseRQ => return Ok(None),
                Pdu::AbortRQ { .. } => return Err(AssociationError::PeerAborted),
                other => {
                    return Err(AssociationError::Protocol(format!(
                        "{} sent {other:?} during a DIMSE exchange",
                        self.peer
                    )))
                }
            };
            for pdv in pdvs {
                let context_id = pdv.presentation_context_id;
                match pdv.value_type {
                    PDataValueType::Command => {
                        command_bytes.extend_from_slice(&pdv.data);
                        if pdv.is_last {
                            let decoded = Command::decode(&command_bytes)?;
                            if !decoded.has_dataset {
                                return Ok(Some(PeerMessage {
                                    context_id,
                                    command: decoded,
                                    data,
                                }));
                            }
                            command = Some(decoded);
                        }
                    }
                    PDataValueType::Data => {
                        if data.len() + pdv.data.len() > max_data {
                            return Err(AssociationError::Protocol(format!(
                                "{} sent a data set over {max_data} bytes",
                                self.peer
                            )));
                        }
                        data.extend_from_slice(&pdv.data);
                        if pdv.is_last {
                            if let Some(command) = command.take() {
                                return Ok(Some(PeerMessage {
                                    context_id,
                                    command,
                                    data,
                                }));
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A request or response the peer sent on an outbound association.
#[derive(Debug)]
pub struct PeerMessage {
    pub context_id: u8,
    pub command: Command,
    pub data: Vec<u8>,
}

impl crate::dimse::service::retrieve::SubOpChannel for StoreAssociation {
    fn context_for(&self, sop_class: &str, transfer_syntax: &str) -> Option<u8> {
        self.contexts
            .iter()
            .find(|(c, t, _)| c == sop_class && t == transfer_syntax)
            .map(|(_, _, id)| *id)
    }

    fn max_pdv_len(&self) -> usize {
        // The acceptor's limit applies to what we send; 6 bytes of PDV header.
        (self.inner.acceptor_max_pdu_length() as usize)
            .saturating_sub(6)
            .clamp(1024, 1 << 20)
    }

    async fn send_pdv(
        &mut self,
        pdv: PDataValue,
    ) -> Result<(), crate::dimse::association::AssociationError> {
        self.queue_pdv(pdv).await
    }

    async fn store_response(
        &mut self,
    ) -> Result<(Command, bool), crate::dimse::association::AssociationError> {
        use crate::dimse::association::AssociationError;
        self.flush().await?;
        let mut bytes = Vec::new();
        loop {
            let pdu = tokio::time::timeout(self.timeout, self.inner.receive())
                .await
                .map_err(|_| AssociationError::IdleTimeout(self.timeout))??;
            match pdu {
                Pdu::PData { data } => {
                    for pdv in data {
                        if pdv.value_type != PDataValueType::Command {
                            return Err(AssociationError::Protocol(format!(
                                "{} sent a data set instead of a C-STORE-RSP",
                                self.peer
                            )));
                        }
                        bytes.extend_from_slice(&pdv.data);
                        if pdv.is_last {
                            return Ok((Command::decode(&bytes)?, false));
                        }
                    }
                }
                Pdu::AbortRQ { .. } => return Err(AssociationError::PeerAborted),
                other => {
                    return Err(AssociationError::Protocol(format!(
                        "{} sent {other:?} instead of a C-STORE-RSP",
                        self.peer
                    )))
                }
            }
        }
    }
}

impl Scu {
    /// Deliver a storage commitment report on a new association to the
    /// requester, proposing the SCP role for the Push Model SOP class.
    pub async fn send_commitment_report(
        &self,
        peer: &Peer,
        result: &crate::dimse::service::commitment::CommitResult,
    ) -> Result<(), ScuError> {
        use crate::dimse::service::commitment::{
            STORAGE_COMMITMENT_INSTANCE, STORAGE_COMMITMENT_PUSH,
        };
        use dicom_encoding::TransferSyntaxIndex;
        let name = format!("{}@{}:{}", peer.ae_title, peer.host, peer.port);
        let protocol = |what: String| ScuError::Protocol {
            peer: name.clone(),
            what,
        };
        let work = async {
            let options = ClientAssociationOptions::new()
                .calling_ae_title(self.ae_title.as_str())
                .called_ae_title(peer.ae_title.as_str())
                .with_presentation_context(
                    STORAGE_COMMITMENT_PUSH,
                    vec![
                        crate::transcode::EXPLICIT_VR_LITTLE_ENDIAN,
                        crate::transcode::IMPLICIT_VR_LITTLE_ENDIAN,
                    ],
                )
                .with_role_selection(STORAGE_COMMITMENT_PUSH, false, true);
            let assoc = Link::establish(options, peer, self.tls.as_ref(), &self.networks)
                .await
                .map_err(|e| ScuError::from_link(&name, e))?;
            let (pc, ts_uid) = assoc
                .presentation_contexts()
                .iter()
                .find(|pc| pc.reason == PresentationContextResultReason::Acceptance)
                .map(|pc| (pc.id, pc.transfer_syntax.trim_end_matches('\0').to_owned()))
                .ok_or_else(|| ScuError::NotAccepted(name.clone()))?;
            let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry
                .get(&ts_uid)
                .ok_or_else(|| protocol(format!("accepted unknown transfer syntax {ts_uid}")))?;
            let mut data = Vec::new();
            result
                .report()
                .write_dataset_with_ts(&mut data, ts)
                .map_err(|e| protocol(e.to_string()))?;
            let mut rq = request(CommandField::NEventReportRq, 1, STORAGE_COMMITMENT_PUSH);
            rq.affected_sop_instance_uid = Some(STORAGE_COMMITMENT_INSTANCE.to_owned());
            rq.event_type_id = Some(result.event_type());
            rq.has_dataset = true;
            let command = rq.encode().map_err(|e| protocol(e.to_string()))?;
            let max = (assoc.acceptor_max_pdu_length() as usize)
                .saturating_sub(6)
                .clamp(1024, 1 << 20);
            let pdvs = message_pdvs(pc, command, Some(data), max);
            request_and_release(assoc, pdvs, &name).await
        };
        tokio::time::timeout(self.timeout.max(Duration::from_secs(30)), work)
            .await
            .map_err(|_| ScuError::Timeout(format!("N-EVENT-REPORT to {}", peer.ae_title)))?
    }
}
