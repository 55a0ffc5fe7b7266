//! Storage commitment reports for Tessera's own requests (Tessera as the
//! Push Model SCU, PS3.4 J.3.3): the destination of a forward says which
//! instances it has committed and which failed. A report can come on the
//! forwarding association or on one the destination opens later; both end
//! in [`apply`], which updates the forwarding queue before the report is
//! answered, so an acknowledged report is never lost.

use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::super::ServiceContext;
use crate::dimse::association::{Association, AssociationError, Request};
use crate::dimse::command::{Command, Status};
use crate::index::{CommitmentOutcome, Index, IndexError};

/// Largest report accepted: a few hundred thousand references.
pub const MAX_REPORT: usize = 64 * 1024 * 1024;
const PROCESSING_FAILURE: Status = Status::Other(0x0110);
const NO_SUCH_EVENT_TYPE: Status = Status::Other(0x0113);
const INVALID_ARGUMENT: Status = Status::Other(0x0115);

/// The content of one N-EVENT-REPORT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitReport {
    pub transaction_uid: String,
    pub committed: Vec<String>,
    /// SOP Instance UID and Failure Reason.
    pub failed: Vec<(String, u16)>,
}

/// Read the event information in the transfer syntax it came in.
pub fn parse(bytes: &[u8], transfer_syntax: &str) -> Option<CommitReport> {
    let ts = TransferSyntaxRegistry.get(transfer_syntax)?;
    let obj = crate::model::read_dataset(bytes, ts).ok()?;
    let text = |o: &InMemDicomObject, tag| {
        o.get(tag)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).to_owned())
            .filter(|s| !s.is_empty())
    };
    let items = |tag| {
        obj.get(tag)
            .and_then(|e| e.items())
            .map(|items| items.to_vec())
            .unwrap_or_default()
    };
    Some(CommitReport {
        transaction_uid: text(&obj, tags::TRANSACTION_UID)?,
        committed: items(tags::REFERENCED_SOP_SEQUENCE)
            .iter()
            .filter_map(|i| text(i, tags::REFERENCED_SOP_INSTANCE_UID))
            .collect(),
        failed: items(tags::FAILED_SOP_SEQUENCE)
            .iter()
            .filter_map(|i| {
                let reason = i
                    .get(tags::FAILURE_REASON)
                    .and_then(|e| e.to_int::<u16>().ok())
                    .unwrap_or(0x0110);
                Some((text(i, tags::REFERENCED_SOP_INSTANCE_UID)?, reason))
            })
            .collect(),
    })
}

/// Mark committed forwards done and send failed ones again (after the
/// usual backoff). Instances the report does not mention keep waiting
/// until the commitment timeout.
pub async fn apply(
    index: &Index,
    report: &CommitReport,
    max_attempts: i64,
) -> Result<CommitmentOutcome, IndexError> {
    let mut outcome = CommitmentOutcome::default();
    for forward in index.committing_forwards(&report.transaction_uid).await? {
        let uid = forward.sop_instance_uid.as_str();
        if report.committed.iter().any(|c| c == uid) {
            index.forward_done(forward.id).await?;
            outcome.committed += 1;
        } else if let Some((_, reason)) = report.failed.iter().find(|(f, _)| f == uid) {
            let error = format!("the destination did not commit it (failure reason {reason:04X}H)");
            let delay = crate::dimse::forwarder::backoff_secs(forward.attempts);
            index
                .forward_retry(forward.id, delay, max_attempts, &error)
                .await?;
            outcome.failed += 1;
        }
    }
    if outcome.committed + outcome.failed == 0 {
        tracing::warn!(transaction = %report.transaction_uid, "commitment report for no waiting forward");
    } else {
        tracing::info!(transaction = %report.transaction_uid, committed = outcome.committed, failed = outcome.failed, "storage commitment report");
    }
    Ok(outcome)
}

/// The answer to an N-EVENT-REPORT-RQ after trying to apply it.
pub async fn answer(
    index: &Index,
    command: &Command,
    data: &[u8],
    transfer_syntax: &str,
    max_attempts: i64,
) -> Command {
    let mut rsp = Command::response_to(command, Status::Success);
    rsp.event_type_id = command.event_type_id;
    if !matches!(command.event_type_id, Some(1 | 2)) {
        rsp.status = Some(NO_SUCH_EVENT_TYPE);
        return rsp.with_error_comment("Event Type ID must be 1 or 2");
    }
    let Some(report) = parse(data, transfer_syntax) else {
        rsp.status = Some(INVALID_ARGUMENT);
        return rsp.with_error_comment("Transaction UID missing or data set unreadable");
    };
    if let Err(e) = apply(index, &report, max_attempts).await {
        // Not recorded: a failure status makes the destination send it again.
        tracing::error!(error = %e, "cannot record a storage commitment report");
        rsp.status = Some(PROCESSING_FAILURE);
        return rsp.with_error_comment("cannot record the report now");
    }
    rsp
}

/// An N-EVENT-REPORT-RQ on an association the destination opened.
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
    let data = if command.has_dataset {
        assoc.read_data_set(context_id, MAX_REPORT).await?
    } else {
        Vec::new()
    };
    let transfer_syntax = assoc
        .context(context_id)
        .map(|c| c.transfer_syntax.as_str().to_owned())
        .unwrap_or_default();
    let rsp = answer(
        &ctx.index,
        &command,
        &data,
        &transfer_syntax,
        ctx.forward_max_attempts,
    )
    .await;
    assoc.send_command(context_id, &rsp).await
}
