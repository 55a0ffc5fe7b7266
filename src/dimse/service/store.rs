//! C-STORE SCP (Storage Service Class, PS3.4 Annex B).
//!
//! The data set is streamed fragment by fragment into the ingest path, so
//! memory stays bounded by one PDU whatever the instance size. The response
//! is sent only after ingest reports the object durable and indexed.

use super::ServiceContext;
use crate::dimse::association::{Association, AssociationError, Request};
use crate::dimse::command::{Command, Status};
use crate::ingest::{HeaderError, IngestError, IngestOutcome};
use crate::model::Uid;

/// How much of a data set is read before what arrived is hashed: the
/// hash keeps up with the network, so little is left to hash once the
/// last fragment is in.
const RECEIVE_STEP: usize = 64 * 1024;

#[tracing::instrument(skip_all, fields(
    calling_ae = %assoc.calling_ae(),
    sop_instance = request.command.affected_sop_instance_uid.as_deref().unwrap_or(""),
))]
pub async fn handle(
    assoc: &mut Association,
    request: Request,
    ctx: &ServiceContext,
) -> Result<(), AssociationError> {
    let Request {
        context_id,
        command,
    } = request;
    let refuse =
        |status: Status, why: &str| Command::response_to(&command, status).with_error_comment(why);

    if !command.has_dataset {
        let rsp = refuse(Status::CannotUnderstand, "C-STORE-RQ without a data set");
        return assoc.send_command(context_id, &rsp).await;
    }
    let Some(context) = assoc.context(context_id).cloned() else {
        assoc.drain_data_set(context_id).await?;
        let rsp = refuse(Status::CannotUnderstand, "unknown presentation context");
        return assoc.send_command(context_id, &rsp).await;
    };
    let uids = (
        command.affected_sop_class_uid.as_deref().map(Uid::new),
        command.affected_sop_instance_uid.as_deref().map(Uid::new),
    );
    let (Some(Ok(sop_class)), Some(Ok(sop_instance))) = uids else {
        assoc.drain_data_set(context_id).await?;
        let rsp = refuse(
            Status::CannotUnderstand,
            "missing or invalid affected SOP UIDs",
        );
        return assoc.send_command(context_id, &rsp).await;
    };
    if sop_class.as_str() != context.abstract_syntax {
        assoc.drain_data_set(context_id).await?;
        let rsp = refuse(
            Status::DataSetDoesNotMatchSopClass,
            "SOP class differs from the presentation context",
        );
        return assoc.send_command(context_id, &rsp).await;
    }

    let calling_ae = assoc.calling_ae().clone();
    let mut incoming = match ctx
        .ingest
        .begin_dataset(
            &sop_class,
            &sop_instance,
            &context.transfer_syntax,
            &calling_ae,
        )
        .await
    {
        Ok(mut incoming) => {
            incoming.expect(assoc.store_size_hint());
            Some(incoming)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start receiving");
            None
        }
    };
    let mut write_error = None;
    loop {
        let fragment = assoc.next_data_fragment_header(context_id).await?;
        // Into the object's buffer straight from the socket when it is held
        // in memory, a step at a time, each hashed while the next arrives;
        // otherwise through a fragment of its own.
        let mut left = fragment.len;
        let mut whole = false;
        while !whole {
            let Some(room) = incoming.as_mut().and_then(|inc| inc.room(left)) else {
                break;
            };
            let before = room.len();
            whole = assoc.read_fragment_part(room, RECEIVE_STEP).await?;
            left -= room.len() - before;
        }
        if !whole {
            let bytes = assoc.read_fragment(left).await?;
            if let Some(inc) = incoming.as_mut() {
                if let Err(e) = inc.write(bytes).await {
                    // Keep reading so the association stays usable.
                    write_error = Some(e);
                    incoming = None;
                }
            }
        }
        if fragment.last {
            break;
        }
    }

    if let Some(incoming) = &mut incoming {
        assoc.note_store_size(incoming.size());
    }
    let result = match (incoming, write_error) {
        (Some(incoming), None) => ctx.ingest.finish(incoming).await,
        (_, Some(e)) => Err(e),
        (None, None) => Err(IngestError::ShuttingDown),
    };
    assoc.note_store(sop_instance.as_str(), result.is_ok());
    let rsp = match &result {
        Ok(outcome) => {
            if *outcome != IngestOutcome::Stored {
                tracing::info!(?outcome, "instance already known");
            }
            Command::response_to(&command, Status::Success)
        }
        Err(e) => {
            tracing::warn!(error = %e, "C-STORE failed");
            refuse(status_for(e), &e.to_string())
        }
    };
    assoc.send_command(context_id, &rsp).await
}

fn status_for(error: &IngestError) -> Status {
    match error {
        // Reading back our own spool file failed: our problem, not theirs.
        IngestError::Invalid(HeaderError::Io(_)) => Status::OutOfResources,
        IngestError::Invalid(HeaderError::Mismatch(_)) => Status::DataSetDoesNotMatchSopClass,
        IngestError::Invalid(HeaderError::Missing(_))
        | IngestError::WrongStudy { .. }
        | IngestError::SeriesInOtherStudy { .. } => Status::DataSetDoesNotMatchSopClass,
        IngestError::Invalid(_) => Status::CannotUnderstand,
        IngestError::Duplicate(_) => Status::DuplicateSopInstance,
        IngestError::Storage(_) | IngestError::Index(_) | IngestError::ShuttingDown => {
            Status::OutOfResources
        }
    }
}
