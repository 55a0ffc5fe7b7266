//! Storage commitment for forwards on routes that ask for it (PS3.4 J.3,
//! Tessera as the Push Model SCU). After the C-STOREs of a batch, one
//! N-ACTION asks the destination to commit them all under a new Transaction
//! UID. The rows wait in state `committing` until the N-EVENT-REPORT says
//! which were committed; it may come on this association, while it stays
//! open for `report_wait`, or later on one the destination opens
//! ([`crate::dimse::service::commitment::report`]). A destination seen
//! reporting on a new association is not waited for during the next ten
//! minutes, so its batches do not each pay `report_wait`. A report that never
//! comes sends the instances again after the commitment timeout.

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::Forwarder;
use crate::dimse::command::{request, CommandField, Status};
use crate::dimse::scu::StoreAssociation;
use crate::dimse::service::commitment::report::{self, MAX_REPORT};
use crate::dimse::service::commitment::{
    referenced_sop, STORAGE_COMMITMENT_INSTANCE, STORAGE_COMMITMENT_PUSH,
};
use crate::index::DueForward;
use crate::model::Uid;

/// The Action Information of a commitment request for `sent`.
fn action_information(transaction_uid: &Uid, sent: &[&DueForward]) -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    obj.put(DataElement::new(
        tags::TRANSACTION_UID,
        VR::UI,
        PrimitiveValue::from(transaction_uid.as_str()),
    ));
    let items: Vec<InMemDicomObject> = sent
        .iter()
        .map(|f| referenced_sop(&f.item.sop_class_uid, &f.item.sop_instance_uid))
        .collect();
    obj.put(DataElement::new(
        tags::REFERENCED_SOP_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(items),
    ));
    obj
}

/// Ask the destination to commit `sent`, and take its report if it comes
/// while the association is open. Every failure path puts the forwards
/// back in the queue, to be sent again.
pub(super) async fn request_commitment(
    forwarder: &Forwarder,
    destination: &str,
    association: &mut StoreAssociation,
    sent: &[&DueForward],
) {
    let give_back = |why: String| async move {
        for f in sent {
            forwarder.retry(f, &why).await;
        }
    };
    let Some((context_id, ts_uid)) = association.context_of(STORAGE_COMMITMENT_PUSH) else {
        return give_back(
            "the destination did not accept the Storage Commitment Push Model".into(),
        )
        .await;
    };
    let Some(ts) = TransferSyntaxRegistry.get(&ts_uid) else {
        return give_back(format!("unknown transfer syntax {ts_uid} for commitment")).await;
    };
    let transaction_uid = Uid::generate();
    let mut data = Vec::new();
    if let Err(e) = action_information(&transaction_uid, sent).write_dataset_with_ts(&mut data, ts)
    {
        return give_back(format!("cannot encode the commitment request: {e}")).await;
    }
    let ids: Vec<i64> = sent.iter().map(|f| f.id).collect();
    if let Err(e) = forwarder
        .index
        .forwards_committing(&ids, transaction_uid.as_str())
        .await
    {
        // Still pending in the index: they are simply sent again later.
        tracing::warn!(error = %e, "cannot record forwards as waiting for commitment");
        return;
    }
    let mut rq = request(CommandField::NActionRq, 1, STORAGE_COMMITMENT_PUSH);
    rq.requested_sop_class_uid = rq.affected_sop_class_uid.take();
    rq.requested_sop_instance_uid = Some(STORAGE_COMMITMENT_INSTANCE.to_owned());
    rq.action_type_id = Some(1);
    rq.has_dataset = true;
    if let Err(e) = association.send_message(context_id, &rq, Some(data)).await {
        return give_back(format!("cannot send the commitment request: {e}")).await;
    }

    let mut accepted = false;
    let mut wait = forwarder.scu.timeout;
    loop {
        let message = match association.receive_message(wait, MAX_REPORT).await {
            Ok(Some(message)) => message,
            Ok(None) if accepted => {
                tracing::debug!(transaction = %transaction_uid, "no report on the forwarding association; waiting for one on a new association");
                forwarder.report_came_on_association(destination, false);
                return;
            }
            Ok(None) => return give_back("no answer to the commitment request".into()).await,
            Err(e) if accepted => {
                tracing::debug!(error = %e, "forwarding association ended before the report");
                return;
            }
            Err(e) => return give_back(format!("commitment request failed: {e}")).await,
        };
        match message.command.field {
            CommandField::NActionRsp => {
                let status = message.command.status.unwrap_or(Status::Other(0xFFFF));
                if status != Status::Success {
                    return give_back(format!(
                        "the destination refused the commitment request (status {:04X}H)",
                        status.code()
                    ))
                    .await;
                }
                if !forwarder.waits_for_report(destination) {
                    return;
                }
                accepted = true;
                wait = forwarder.report_wait;
            }
            CommandField::NEventReportRq => {
                let rsp = report::answer(
                    &forwarder.index,
                    &message.command,
                    &message.data,
                    &ts_uid,
                    forwarder.max_attempts,
                )
                .await;
                if let Err(e) = association
                    .send_message(message.context_id, &rsp, None)
                    .await
                {
                    tracing::warn!(error = %e, "cannot answer the commitment report");
                }
                forwarder.report_came_on_association(destination, true);
                return;
            }
            other => {
                tracing::warn!(command = ?other, "unexpected message while waiting for storage commitment");
            }
        }
    }
}
