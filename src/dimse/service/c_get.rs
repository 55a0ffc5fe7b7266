//! C-GET SCP (PS3.4 C.4.3): the matching instances are sent as C-STORE
//! sub-operations back over the same association, on the storage
//! presentation contexts the requestor proposed with the SCP role.

use dicom_ul::pdu::PDataValue;

use super::identifier::receive_query;
use super::retrieve::{
    refused_without_unique_keys, requester_stopped, send_final, send_instance, send_pending,
    SubOpChannel, Tally,
};
use super::ServiceContext;
use crate::dimse::association::{Association, AssociationError, Request};
use crate::dimse::command::{Command, CommandField, Status};

pub const PATIENT_ROOT_GET: &str = "1.2.840.10008.5.1.4.1.2.1.3";
pub const STUDY_ROOT_GET: &str = "1.2.840.10008.5.1.4.1.2.2.3";

const UNABLE_TO_CALCULATE: Status = Status::Other(0xA701);

impl SubOpChannel for Association {
    fn context_for(&self, sop_class: &str, transfer_syntax: &str) -> Option<u8> {
        self.context_for_syntax(sop_class, transfer_syntax)
    }

    fn max_pdv_len(&self) -> usize {
        self.max_send_pdv()
    }

    async fn send_pdv(&mut self, pdv: PDataValue) -> Result<(), AssociationError> {
        self.send_raw(pdv).await
    }

    async fn store_response(&mut self) -> Result<(Command, bool), AssociationError> {
        let mut cancelled = false;
        loop {
            let request = self
                .next_request()
                .await?
                .ok_or_else(|| AssociationError::Protocol("released during a C-GET".into()))?;
            match request.command.field {
                CommandField::CStoreRsp => return Ok((request.command, cancelled)),
                CommandField::CCancelRq => cancelled = true,
                other => {
                    return Err(AssociationError::Protocol(format!(
                        "{other:?} where a C-STORE-RSP was expected"
                    )))
                }
            }
        }
    }
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
    let respond = |status: Status| Command::response_to(&command, status);
    let Some((query, context)) =
        receive_query(assoc, context_id, &command, PATIENT_ROOT_GET).await?
    else {
        return Ok(());
    };
    if refused_without_unique_keys(assoc, context_id, &command, &query).await? {
        return Ok(());
    }
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
            .detail("C-GET".to_owned()),
    );
    let mut cancelled = false;
    for (n, item) in items.iter().enumerate() {
        if requester_stopped(assoc)? {
            cancelled = true;
            break;
        }
        let sub_id = u16::try_from(n % 0xFFFF + 1).unwrap_or(1);
        let (outcome, cancel_seen) = send_instance(assoc, &ctx.storage, item, sub_id, None).await?;
        tally.record(item, outcome);
        if cancel_seen {
            cancelled = true;
            break;
        }
        send_pending(assoc, context_id, &command, &tally).await?;
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
