//! Storage Commitment Push Model SCP (PS3.4 J.3).
//!
//! An N-ACTION request is recorded in the index before it is acknowledged.
//! Commitment is decided by real verification: the instance must be indexed
//! and its stored object must re-hash to the recorded SHA-256. The
//! N-EVENT-REPORT goes back on the same association when the requester keeps
//! it open; otherwise the [`worker`] delivers it on a new association to the
//! requester's registered AE, retrying with backoff, across restarts.

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use serde::{Deserialize, Serialize};

use super::ServiceContext;
use crate::dimse::association::{Association, AssociationError, Request};
use crate::dimse::command::{Command, CommandField, Status};
use crate::index::{Index, IndexedObject};
use crate::storage::Storage;
use crate::verify::{check, Check};

pub mod report;
pub mod worker;

pub const STORAGE_COMMITMENT_PUSH: &str = "1.2.840.10008.1.20.1";
pub const STORAGE_COMMITMENT_INSTANCE: &str = "1.2.840.10008.1.20.1.1";

/// Failure reasons (PS3.4 J.3.3.1.1.3; PS3.7 C).
const PROCESSING_FAILURE: u16 = 0x0110;
const NO_SUCH_OBJECT_INSTANCE: u16 = 0x0112;
const CLASS_INSTANCE_CONFLICT: u16 = 0x0119;
const NO_SUCH_ACTION_TYPE: Status = Status::Other(0x0123);
const MISSING_ATTRIBUTE: Status = Status::Other(0x0120);
const MAX_REQUEST: usize = 4 * 1024 * 1024;
/// References one request may list: more than any study holds, and the
/// bound on what a request from anyone can make Tessera verify and store.
pub const MAX_REFERENCES: usize = 20_000;
/// N-ACTION failure: Resource limitation (PS3.7 Annex C).
const RESOURCE_LIMITATION: u16 = 0x0213;

/// Verification outcome for one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitResult {
    pub transaction_uid: String,
    pub committed: Vec<(String, String)>,
    pub failed: Vec<(String, String, u16)>,
}

impl CommitResult {
    /// Event Type ID: 1 all committed, 2 failures exist.
    pub fn event_type(&self) -> u16 {
        if self.failed.is_empty() {
            1
        } else {
            2
        }
    }

    /// The N-EVENT-REPORT information.
    pub fn report(&self) -> InMemDicomObject {
        let mut obj = InMemDicomObject::new_empty();
        obj.put(DataElement::new(
            tags::TRANSACTION_UID,
            VR::UI,
            PrimitiveValue::from(self.transaction_uid.as_str()),
        ));
        let item = referenced_sop;
        if !self.committed.is_empty() {
            let items: Vec<_> = self.committed.iter().map(|(c, i)| item(c, i)).collect();
            obj.put(DataElement::new(
                tags::REFERENCED_SOP_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(items),
            ));
        }
        if !self.failed.is_empty() {
            let items: Vec<_> = self
                .failed
                .iter()
                .map(|(c, i, reason)| {
                    let mut it = item(c, i);
                    it.put(DataElement::new(
                        tags::FAILURE_REASON,
                        VR::US,
                        PrimitiveValue::from(*reason),
                    ));
                    it
                })
                .collect();
            obj.put(DataElement::new(
                tags::FAILED_SOP_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(items),
            ));
        }
        obj
    }
}

/// A Referenced SOP Sequence item: SOP Class and SOP Instance UID.
pub fn referenced_sop(class: &str, instance: &str) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    item.put(DataElement::new(
        tags::REFERENCED_SOP_CLASS_UID,
        VR::UI,
        PrimitiveValue::from(class),
    ));
    item.put(DataElement::new(
        tags::REFERENCED_SOP_INSTANCE_UID,
        VR::UI,
        PrimitiveValue::from(instance),
    ));
    item
}

/// Verify each referenced instance: indexed, same SOP class, and its stored
/// object re-hashes to the recorded SHA-256.
pub async fn verify_references(
    index: &Index,
    storage: &Storage,
    transaction_uid: &str,
    references: &[(String, String)],
) -> CommitResult {
    let mut result = CommitResult {
        transaction_uid: transaction_uid.to_owned(),
        ..Default::default()
    };
    for (class, uid) in references {
        let reason = match index.instance(uid).await {
            Ok(None) => Some(NO_SUCH_OBJECT_INSTANCE),
            Err(_) => Some(PROCESSING_FAILURE),
            Ok(Some(record)) if record.sop_class_uid != *class => Some(CLASS_INSTANCE_CONFLICT),
            Ok(Some(record)) => {
                let obj = IndexedObject {
                    sop_instance_uid: uid.clone(),
                    key: record.key,
                    size: u64::try_from(record.size).unwrap_or(0),
                    sha256: record.sha256,
                };
                match check(storage, &obj).await {
                    Ok(Check::Ok(_)) => None,
                    Ok(Check::Missing) | Ok(Check::Corrupt(_)) | Err(_) => {
                        tracing::warn!(sop_instance = %uid, "commitment refused: stored object missing or corrupt");
                        Some(PROCESSING_FAILURE)
                    }
                }
            }
        };
        match reason {
            None => result.committed.push((class.clone(), uid.clone())),
            Some(r) => result.failed.push((class.clone(), uid.clone(), r)),
        }
    }
    result
}

fn parse_request(obj: &InMemDicomObject) -> Option<(String, Vec<(String, String)>)> {
    let text = |o: &InMemDicomObject, tag| {
        o.get(tag)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).to_owned())
            .filter(|s| !s.is_empty())
    };
    let transaction = text(obj, tags::TRANSACTION_UID)?;
    let items = obj.get(tags::REFERENCED_SOP_SEQUENCE)?.items()?;
    let refs = items
        .iter()
        .filter_map(|i| {
            Some((
                text(i, tags::REFERENCED_SOP_CLASS_UID)?,
                text(i, tags::REFERENCED_SOP_INSTANCE_UID)?,
            ))
        })
        .collect();
    Some((transaction, refs))
}

#[tracing::instrument(skip_all, fields(calling_ae = %assoc.calling_ae()))]
pub async fn handle(
    assoc: &mut Association,
    request: Request,
    ctx: &ServiceContext,
) -> Result<(), AssociationError> {
    let Request {
        context_id,
        command,
    } = request;
    let mut rsp = Command::response_to(&command, Status::Success);
    rsp.affected_sop_class_uid = command.requested_sop_class_uid.clone();
    rsp.affected_sop_instance_uid = command.requested_sop_instance_uid.clone();
    rsp.action_type_id = command.action_type_id;
    let refuse = |mut rsp: Command, status: Status, why: &str| {
        rsp.status = Some(status);
        rsp.with_error_comment(why)
    };
    if !command.has_dataset {
        let rsp = refuse(
            rsp,
            MISSING_ATTRIBUTE,
            "N-ACTION-RQ without action information",
        );
        return assoc.send_command(context_id, &rsp).await;
    }
    let bytes = assoc.read_data_set(context_id, MAX_REQUEST).await?;
    if command.action_type_id != Some(1) {
        let rsp = refuse(
            rsp,
            NO_SUCH_ACTION_TYPE,
            "only Action Type ID 1 (request commitment)",
        );
        return assoc.send_command(context_id, &rsp).await;
    }
    let Some(context) = assoc.context(context_id).cloned() else {
        return assoc
            .send_command(context_id, &refuse(rsp, Status::CannotUnderstand, ""))
            .await;
    };
    let Some(ts) = TransferSyntaxRegistry.get(context.transfer_syntax.as_str()) else {
        return assoc
            .send_command(context_id, &refuse(rsp, Status::CannotUnderstand, ""))
            .await;
    };
    let parsed = crate::model::read_dataset(bytes.as_slice(), ts)
        .ok()
        .and_then(|o| parse_request(&o));
    let Some((transaction_uid, references)) = parsed else {
        let rsp = refuse(
            rsp,
            MISSING_ATTRIBUTE,
            "Transaction UID or Referenced SOP Sequence missing",
        );
        return assoc.send_command(context_id, &rsp).await;
    };
    if references.len() > MAX_REFERENCES {
        let rsp = refuse(
            rsp,
            Status::Other(RESOURCE_LIMITATION),
            &format!("more than {MAX_REFERENCES} references in one request"),
        );
        return assoc.send_command(context_id, &rsp).await;
    }
    let requester = assoc.calling_ae().to_string();
    // Durable before it is acknowledged: a restart cannot lose the request.
    let id = match ctx
        .index
        .add_commitment(&transaction_uid, &requester, &references, 3600)
        .await
    {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, "cannot record commitment request");
            let rsp = refuse(
                rsp,
                Status::Other(PROCESSING_FAILURE),
                "cannot record the request",
            );
            return assoc.send_command(context_id, &rsp).await;
        }
    };
    assoc.send_command(context_id, &rsp).await?;

    let result = verify_references(&ctx.index, &ctx.storage, &transaction_uid, &references).await;
    if let Ok(json) = serde_json::to_string(&result) {
        if let Err(e) = ctx.index.set_commitment_result(id, &json).await {
            tracing::warn!(error = %e, "cannot record commitment result");
        }
    }
    let attempt = report_on_association(assoc, context_id, &result).await;
    if let Err(e) = &attempt {
        tracing::debug!(error = %e, "report not delivered on the requester's association");
    }
    let delivered = matches!(attempt, Ok(true));
    let saved = if delivered {
        ctx.index.commitment_delivered(id).await
    } else {
        // Released or refused: the worker delivers on a new association.
        ctx.index
            .commitment_retry(id, 0, "not accepted on the requester's association")
            .await
    };
    if let Err(e) = saved {
        tracing::warn!(error = %e, "cannot update the commitment queue");
    }
    ctx.commitments.notify_one();
    Ok(())
}

/// Send the N-EVENT-REPORT on the requester's association; true when it
/// answered with success.
async fn report_on_association(
    assoc: &mut Association,
    context_id: u8,
    result: &CommitResult,
) -> Result<bool, AssociationError> {
    let Some(context) = assoc.context(context_id).cloned() else {
        return Ok(false);
    };
    let Some(ts) = TransferSyntaxRegistry.get(context.transfer_syntax.as_str()) else {
        return Ok(false);
    };
    let mut bytes = Vec::new();
    if let Err(e) = result.report().write_dataset_with_ts(&mut bytes, ts) {
        tracing::error!(error = %e, "cannot encode the commitment report");
        return Ok(false);
    }
    let mut rq =
        crate::dimse::command::request(CommandField::NEventReportRq, 1, STORAGE_COMMITMENT_PUSH);
    rq.affected_sop_instance_uid = Some(STORAGE_COMMITMENT_INSTANCE.to_owned());
    rq.event_type_id = Some(result.event_type());
    rq.has_dataset = true;
    assoc.send_command(context_id, &rq).await?;
    assoc.send_data_set(context_id, bytes).await?;
    let answer =
        tokio::time::timeout(std::time::Duration::from_secs(30), assoc.next_request()).await;
    tracing::debug!(
        ?answer,
        "answer to N-EVENT-REPORT on the requester's association"
    );
    match answer {
        Ok(Ok(Some(request))) if request.command.field == CommandField::NEventReportRsp => {
            Ok(request.command.status == Some(Status::Success))
        }
        // The requester sent something else first: it is served as usual,
        // and the report goes out on a new association instead (a late
        // N-EVENT-REPORT-RSP here is then ignored).
        Ok(Ok(Some(request))) => {
            assoc.defer(request);
            Ok(false)
        }
        Ok(other) => other.map(|_| false),
        Err(_) => Ok(false),
    }
}
