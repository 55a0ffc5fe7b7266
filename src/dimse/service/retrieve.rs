//! What C-MOVE and C-GET share: reading the identifier, sending one stored
//! instance as a C-STORE sub-operation over any association, and the
//! sub-operation bookkeeping (PS3.4 C.4.2 and C.4.3).

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::pdu::{PDataValue, PDataValueType};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::dimse::association::{Association, AssociationError};
use crate::dimse::command::{request, Command, CommandField, Status, SubOperations};
use crate::index::RetrieveItem;
use crate::storage::{ObjectReader, Storage};
use crate::transcode;

/// Objects up to this size are read whole before sending.
const SMALL_OBJECT: u64 = 16 * 1024 * 1024;

/// An association C-STORE sub-operations can be sent on.
pub(crate) trait SubOpChannel {
    /// The accepted presentation context for this SOP class and syntax.
    fn context_for(&self, sop_class: &str, transfer_syntax: &str) -> Option<u8>;
    /// Largest PDV payload the receiver accepts.
    fn max_pdv_len(&self) -> usize;
    async fn send_pdv(&mut self, pdv: PDataValue) -> Result<(), AssociationError>;
    /// The next C-STORE-RSP, and whether a C-CANCEL arrived meanwhile.
    async fn store_response(&mut self) -> Result<(Command, bool), AssociationError>;
}

/// How one sub-operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubOpOutcome {
    Completed,
    Warning,
    Failed,
}

/// Running counts plus the failed instances, for responses.
#[derive(Debug, Default)]
pub struct Tally {
    pub total: usize,
    pub completed: usize,
    pub failed: usize,
    pub warning: usize,
    pub failed_uids: Vec<String>,
}

impl Tally {
    pub fn new(total: usize) -> Self {
        Tally {
            total,
            ..Default::default()
        }
    }

    pub fn record(&mut self, item: &RetrieveItem, outcome: SubOpOutcome) {
        match outcome {
            SubOpOutcome::Completed => self.completed += 1,
            SubOpOutcome::Warning => self.warning += 1,
            SubOpOutcome::Failed => {
                self.failed += 1;
                self.failed_uids.push(item.sop_instance_uid.clone());
            }
        }
    }

    fn done(&self) -> usize {
        self.completed + self.failed + self.warning
    }

    /// The counts as the US fields of a response carry them: a retrieve of
    /// more than 65,535 instances reports 65,535 until the count drops.
    pub fn counts(&self, final_response: bool) -> SubOperations {
        let us = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
        let remaining = if final_response {
            0
        } else {
            self.total.saturating_sub(self.done())
        };
        SubOperations {
            remaining: us(remaining),
            completed: us(self.completed),
            failed: us(self.failed),
            warning: us(self.warning),
        }
    }

    /// Final status: success, or B000 when some sub-operations failed or
    /// warned, or A702 when all failed.
    pub fn final_status(&self) -> Status {
        if self.failed == 0 && self.warning == 0 {
            Status::Success
        } else if self.completed == 0 && self.warning == 0 && self.total > 0 {
            Status::Other(0xA702)
        } else {
            Status::Other(0xB000)
        }
    }

    /// The Failed SOP Instance UID List identifier, when there are failures.
    pub fn failed_identifier(&self, ts_uid: &str) -> Option<Vec<u8>> {
        if self.failed_uids.is_empty() {
            return None;
        }
        let ts = TransferSyntaxRegistry.get(ts_uid)?;
        let mut obj = InMemDicomObject::new_empty();
        obj.put(DataElement::new(
            tags::FAILED_SOP_INSTANCE_UID_LIST,
            VR::UI,
            PrimitiveValue::from(self.failed_uids.join("\\")),
        ));
        let mut out = Vec::new();
        obj.write_dataset_with_ts(&mut out, ts).ok()?;
        Some(out)
    }
}

const PENDING: Status = Status::Other(0xFF00);
const CANCELLED: Status = Status::Other(0xFE00);

/// The presentation contexts to propose for sending `items`: each SOP class
/// in its stored syntax and in the uncompressed syntaxes Tessera can
/// transcode to, so a receiver that takes only those still gets the object.
pub(crate) fn store_proposals<'a>(
    items: impl IntoIterator<Item = &'a RetrieveItem>,
) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = items
        .into_iter()
        .flat_map(|item| {
            std::iter::once(item.transfer_syntax_uid.as_str())
                .chain(transcode::TARGETS)
                .map(|ts| (item.sop_class_uid.clone(), ts.to_owned()))
        })
        .collect();
    pairs.sort();
    pairs.dedup();
    pairs
}

/// Refuse a retrieve whose identifier lacks the unique keys of its level
/// (PS3.4 C.4.2.2.1); true when the refusal was sent.
pub(crate) async fn refused_without_unique_keys(
    assoc: &mut Association,
    context_id: u8,
    request: &Command,
    query: &crate::query::Query,
) -> Result<bool, AssociationError> {
    let Err(e) = query.check_retrieve_keys() else {
        return Ok(false);
    };
    let rsp = Command::response_to(request, Status::DataSetDoesNotMatchSopClass)
        .with_error_comment(e.to_string());
    assoc.send_command(context_id, &rsp).await?;
    Ok(true)
}

/// Between sub-operations: whether the requester cancelled (C-CANCEL) or
/// released; any other request in the middle is a protocol error.
pub(crate) fn requester_stopped(assoc: &mut Association) -> Result<bool, AssociationError> {
    match assoc.poll_request() {
        None => Ok(false),
        Some(next) => match next? {
            Some(r) if r.command.field == CommandField::CCancelRq => Ok(true),
            Some(r) => Err(AssociationError::Protocol(format!(
                "{:?} during a retrieve",
                r.command.field
            ))),
            None => Ok(true),
        },
    }
}

/// A pending response with the counts so far.
pub(crate) async fn send_pending(
    assoc: &mut Association,
    context_id: u8,
    request: &Command,
    tally: &Tally,
) -> Result<(), AssociationError> {
    let mut rsp = Command::response_to(request, PENDING);
    rsp.sub_operations = Some(tally.counts(false));
    assoc.send_command(context_id, &rsp).await
}

/// The final response: cancelled (FE00) or the tally's status, with the
/// Failed SOP Instance UID List when something failed.
pub(crate) async fn send_final(
    assoc: &mut Association,
    context_id: u8,
    request: &Command,
    tally: &Tally,
    cancelled: bool,
    ts_uid: &str,
) -> Result<(), AssociationError> {
    let status = if cancelled {
        CANCELLED
    } else {
        tally.final_status()
    };
    let mut rsp = Command::response_to(request, status);
    rsp.sub_operations = Some(tally.counts(!cancelled));
    let failed = tally.failed_identifier(ts_uid);
    rsp.has_dataset = failed.is_some();
    assoc.send_command(context_id, &rsp).await?;
    if let Some(bytes) = failed {
        assoc.send_data_set(context_id, bytes).await?;
    }
    Ok(())
}

/// Read until `buf` is full or the reader ends; returns the bytes read.
async fn fill<R: AsyncRead + Unpin + ?Sized>(
    reader: &mut R,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let got = reader.read(&mut buf[n..]).await?;
        if got == 0 {
            break;
        }
        n += got;
    }
    Ok(n)
}

/// Skip the Part-10 preamble and file meta group; the rest is the data set.
async fn skip_part10_header<R: AsyncRead + Unpin + ?Sized>(reader: &mut R) -> std::io::Result<()> {
    let mut head = [0u8; 132 + 12];
    reader.read_exact(&mut head).await?;
    if &head[128..132] != b"DICM" {
        return Err(std::io::Error::other("stored object is not Part-10"));
    }
    let group_len = u32::from_le_bytes([head[140], head[141], head[142], head[143]]);
    let mut rest = reader.take(u64::from(group_len));
    tokio::io::copy(&mut rest, &mut tokio::io::sink()).await?;
    Ok(())
}

/// Send one stored instance as a C-STORE sub-operation, streaming it from
/// storage two PDVs at a time.
pub(crate) async fn send_instance<C: SubOpChannel>(
    chan: &mut C,
    storage: &Storage,
    item: &RetrieveItem,
    message_id: u16,
    originator: Option<(&str, u16)>,
) -> Result<(SubOpOutcome, bool), AssociationError> {
    // As stored when the receiver takes that syntax; else decoded to an
    // uncompressed syntax it accepts.
    let as_stored = chan.context_for(&item.sop_class_uid, &item.transfer_syntax_uid);
    // Stored before the RIS changed its patient: a patched copy in the
    // stored syntax (crate::coerce); one too large to hold goes as stored.
    let coerced = match (&item.coerce, as_stored) {
        (Some(patient), Some(_)) => match transcode::data_set_in(
            storage,
            &item.key,
            &item.transfer_syntax_uid,
            Some(patient),
            transcode::Admission::Wait,
        )
        .await
        {
            Ok(bytes) => Some(bytes),
            Err(transcode::TranscodeError::TooLarge(size)) => {
                tracing::warn!(sop_instance = %item.sop_instance_uid, size, "too large to give its current patient; sent as stored");
                None
            }
            Err(e) => {
                tracing::warn!(sop_instance = %item.sop_instance_uid, error = %e, "cannot give the instance its current patient");
                return Ok((SubOpOutcome::Failed, false));
            }
        },
        _ => None,
    };
    let (context_id, mut reader): (u8, std::pin::Pin<Box<dyn AsyncRead + Send>>) = match as_stored {
        Some(id) if coerced.is_some() => (
            id,
            Box::pin(std::io::Cursor::new(coerced.unwrap_or_default())),
        ),
        Some(id) => {
            // Typical images in one read (one thread hop); large ones
            // streamed through a big buffer, since PDVs can be as small as
            // 16 KiB and every file read is a hop.
            let opened = match storage.read_small(&item.key, SMALL_OBJECT).await {
                Ok(Some(bytes)) => Ok(Box::pin(std::io::Cursor::new(bytes)) as ObjectReader),
                Ok(None) => storage.open_read(&item.key).await.map(|r| {
                    Box::pin(tokio::io::BufReader::with_capacity(1 << 20, r)) as ObjectReader
                }),
                Err(e) => Err(e),
            };
            let mut reader = match opened {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(sop_instance = %item.sop_instance_uid, error = %e, "cannot read stored object");
                    return Ok((SubOpOutcome::Failed, false));
                }
            };
            if let Err(e) = skip_part10_header(&mut reader).await {
                tracing::error!(sop_instance = %item.sop_instance_uid, error = %e, "stored object unreadable");
                return Ok((SubOpOutcome::Failed, false));
            }
            (id, reader)
        }
        None => {
            let Some((id, ts)) = transcode::TARGETS.iter().find_map(|ts| {
                chan.context_for(&item.sop_class_uid, ts)
                    .map(|id| (id, *ts))
            }) else {
                tracing::warn!(sop_instance = %item.sop_instance_uid, ts = %item.transfer_syntax_uid, "receiver accepts neither the stored syntax nor an uncompressed one");
                return Ok((SubOpOutcome::Failed, false));
            };
            match transcode::data_set_in(
                storage,
                &item.key,
                ts,
                item.coerce.as_ref(),
                transcode::Admission::Wait,
            )
            .await
            {
                Ok(bytes) => (id, Box::pin(std::io::Cursor::new(bytes))),
                Err(e) => {
                    tracing::warn!(sop_instance = %item.sop_instance_uid, error = %e, "transcoding failed");
                    return Ok((SubOpOutcome::Failed, false));
                }
            }
        }
    };
    let mut rq = request(CommandField::CStoreRq, message_id, &item.sop_class_uid);
    rq.affected_sop_instance_uid = Some(item.sop_instance_uid.clone());
    rq.priority = Some(0);
    rq.has_dataset = true;
    if let Some((ae, id)) = originator {
        rq.move_originator_ae_title = Some(ae.to_owned());
        rq.move_originator_message_id = Some(id);
    }
    chan.send_pdv(PDataValue {
        presentation_context_id: context_id,
        value_type: PDataValueType::Command,
        is_last: true,
        data: rq.encode()?,
    })
    .await?;

    let max = chan.max_pdv_len();
    let mut current = vec![0u8; max];
    let io = |e: std::io::Error| AssociationError::Protocol(format!("reading stored object: {e}"));
    let mut len = fill(&mut reader, &mut current).await.map_err(io)?;
    loop {
        let mut next = vec![0u8; max];
        let next_len = if len == max {
            fill(&mut reader, &mut next).await.map_err(io)?
        } else {
            0
        };
        current.truncate(len);
        chan.send_pdv(PDataValue {
            presentation_context_id: context_id,
            value_type: PDataValueType::Data,
            is_last: next_len == 0,
            data: current,
        })
        .await?;
        if next_len == 0 {
            break;
        }
        current = next;
        len = next_len;
    }

    let (rsp, cancelled) = chan.store_response().await?;
    let outcome = match rsp.status.map(Status::code) {
        Some(0x0000) => SubOpOutcome::Completed,
        Some(code) if code & 0xF000 == 0xB000 => SubOpOutcome::Warning,
        _ => SubOpOutcome::Failed,
    };
    Ok((outcome, cancelled))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: usize) -> RetrieveItem {
        RetrieveItem {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            sop_instance_uid: format!("1.2.3.{n}"),
            transfer_syntax_uid: "1.2.840.10008.1.2.4.90".into(),
            key: String::new(),
            coerce: None,
        }
    }

    #[test]
    fn counts_past_65535_saturate() {
        let total = 70_000;
        let mut tally = Tally::new(total);
        let one = item(1);
        for _ in 0..total - 1 {
            tally.record(&one, SubOpOutcome::Completed);
        }
        let counts = tally.counts(false);
        assert_eq!(counts.completed, u16::MAX);
        assert_eq!(counts.remaining, 1);
        tally.record(&one, SubOpOutcome::Failed);
        assert_eq!(tally.final_status(), Status::Other(0xB000));
        assert_eq!(tally.counts(true).failed, 1);
    }

    #[test]
    fn proposals_include_uncompressed_fallbacks() {
        let pairs = store_proposals(&[item(1), item(2)]);
        let syntaxes: Vec<&str> = pairs.iter().map(|(_, ts)| ts.as_str()).collect();
        assert_eq!(pairs.len(), 3, "{pairs:?}");
        assert!(syntaxes.contains(&"1.2.840.10008.1.2.4.90"));
        for ts in transcode::TARGETS {
            assert!(syntaxes.contains(&ts));
        }
    }
}
