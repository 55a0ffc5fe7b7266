//! C-MOVE SCP (PS3.4 C.4.2): the matching instances are sent as C-STORE
//! sub-operations over a new association to the Move Destination, which
//! must be a registered peer. Pending responses carry the sub-operation
//! counts; C-CANCEL is honoured between sub-operations.

use super::identifier::receive_query;
use super::retrieve::{
    refused_without_unique_keys, requester_stopped, send_final, send_instance, send_pending,
    store_proposals, Tally,
};
use super::ServiceContext;
use crate::dimse::association::{Association, AssociationError, Request};
use crate::dimse::command::{Command, Status};
use crate::peers::RegistryError;

pub const PATIENT_ROOT_MOVE: &str = "1.2.840.10008.5.1.4.1.2.1.2";
pub const STUDY_ROOT_MOVE: &str = "1.2.840.10008.5.1.4.1.2.2.2";

const DESTINATION_UNKNOWN: Status = Status::Other(0xA801);
const UNABLE_TO_CALCULATE: Status = Status::Other(0xA701);

#[tracing::instrument(skip_all, fields(calling_ae = %assoc.calling_ae(), destination = request.command.move_destination.as_deref().unwrap_or("")))]
pub async fn handle(
    assoc: &mut Association,
    request: Request,
    ctx: &ServiceContext,
) -> Result<(), AssociationError> {
    let Request {
        context_id,
        command,
    } = request;
    let respond = |status: Status| Command::response_to(&command, status);
    let Some((query, context)) =
        receive_query(assoc, context_id, &command, PATIENT_ROOT_MOVE).await?
    else {
        return Ok(());
    };
    if refused_without_unique_keys(assoc, context_id, &command, &query).await? {
        return Ok(());
    }
    let destination = command.move_destination.clone().unwrap_or_default();
    let peer = match ctx.peers.get(destination.trim()).await {
        Ok(peer) => peer,
        Err(RegistryError::NotFound(_)) => {
            let rsp = respond(DESTINATION_UNKNOWN)
                .with_error_comment(format!("unknown move destination {destination}"));
            return assoc.send_command(context_id, &rsp).await;
        }
        Err(e) => {
            tracing::error!(error = %e, "peer lookup failed");
            return assoc
                .send_command(context_id, &respond(UNABLE_TO_CALCULATE))
                .await;
        }
    };
    let items = match ctx.index.retrieve_items(&query).await {
        Ok(items) => items,
        Err(e) => {
            tracing::error!(error = %e, "retrieve query failed");
            let rsp = respond(UNABLE_TO_CALCULATE).with_error_comment("index query failed");
            return assoc.send_command(context_id, &rsp).await;
        }
    };
    let mut tally = Tally::new(items.len());
    ctx.auditor.record(
        super::audit_event(assoc, crate::audit::Event::Retrieved)
            .instances(items.iter().map(|i| i.sop_instance_uid.clone()))
            .detail(format!("C-MOVE to {}", peer.ae_title)),
    );
    if items.is_empty() {
        let mut rsp = respond(Status::Success);
        rsp.sub_operations = Some(tally.counts(true));
        return assoc.send_command(context_id, &rsp).await;
    }
    let pairs = store_proposals(&items);
    let mut out = match ctx.scu.open_store(&peer, &pairs, false).await {
        Ok(out) => Some(out),
        Err(e) => {
            // Unreachable, or it accepted none of the syntaxes: every
            // sub-operation fails and is listed.
            tracing::warn!(error = %e, "cannot open an association to the move destination");
            for item in &items {
                tally.record(item, super::retrieve::SubOpOutcome::Failed);
            }
            None
        }
    };
    let originator = assoc.calling_ae().as_str().to_owned();
    let message_id = command.message_id.unwrap_or(1);
    let mut cancelled = false;
    for (n, item) in items.iter().enumerate() {
        let Some(out) = out.as_mut() else { break };
        if requester_stopped(assoc)? {
            cancelled = true;
            break;
        }
        let sub_id = u16::try_from(n % 0xFFFF + 1).unwrap_or(1);
        let outcome = match send_instance(
            out,
            &ctx.storage,
            item,
            sub_id,
            Some((&originator, message_id)),
        )
        .await
        {
            Ok((outcome, _)) => outcome,
            Err(e) => {
                // The destination association broke: the rest fail.
                tracing::warn!(error = %e, "move destination failed");
                for rest in &items[n..] {
                    tally.record(rest, super::retrieve::SubOpOutcome::Failed);
                }
                break;
            }
        };
        tally.record(item, outcome);
        send_pending(assoc, context_id, &command, &tally).await?;
    }
    if let Some(out) = out {
        out.release().await;
    }

    send_final(
        assoc,
        context_id,
        &command,
        &tally,
        cancelled,
        context.transfer_syntax.as_str(),
    )
    .await
}
