//! C-ECHO SCP (Verification SOP Class, PS3.4 Annex A).

use crate::dimse::association::{Association, AssociationError, Request};
use crate::dimse::command::{Command, Status};

#[tracing::instrument(skip_all, fields(message_id = request.command.message_id))]
pub async fn handle(assoc: &mut Association, request: Request) -> Result<(), AssociationError> {
    if request.command.has_dataset {
        assoc.drain_data_set(request.context_id).await?;
    }
    let rsp = Command::response_to(&request.command, Status::Success);
    assoc.send_command(request.context_id, &rsp).await
}
