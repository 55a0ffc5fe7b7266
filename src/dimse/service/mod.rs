//! DIMSE services: one file per service, each with a `handle` that takes the
//! parsed request and answers on the association. [`serve`] dispatches.

pub mod c_get;
pub mod c_move;
pub mod commitment;
mod echo;
pub mod find;
pub mod identifier;
pub mod mpps;
pub mod retrieve;
mod store;
pub mod worklist;

use std::sync::Arc;

use super::association::{Association, AssociationError, Request};
use super::command::{Command, CommandField, Status};
use crate::dimse::scu::Scu;
use crate::index::Index;
use crate::ingest::Ingest;
use crate::model::{AeTitle, PeerService};

/// Refused: Not Authorized (PS3.7 C.5.5).
const NOT_AUTHORIZED: u16 = 0x0124;
use crate::peers::PeerRegistry;
use crate::storage::Storage;
use crate::telemetry::Metrics;

/// What a service handler needs from the rest of Tessera.
#[derive(Clone)]
pub struct ServiceContext {
    pub ingest: Ingest,
    /// Read-only queries (C-FIND); writes go through `ingest`.
    pub index: Index,
    pub metrics: Arc<Metrics>,
    pub ae_title: AeTitle,
    pub max_find_results: usize,
    /// Person names match case- and diacritic-insensitively in C-FIND.
    pub fuzzy_person_names: bool,
    /// Stored objects, read for C-MOVE and C-GET.
    pub storage: Storage,
    /// Move destinations.
    pub peers: PeerRegistry,
    /// Outbound associations.
    pub scu: Scu,
    /// Wakes the storage commitment worker.
    pub commitments: Arc<tokio::sync::Notify>,
    /// Attempts before a forward becomes a dead letter; a commitment report
    /// that lists a forward as failed counts as one.
    pub forward_max_attempts: i64,
    pub auditor: crate::audit::Auditor,
    /// Accounts, for associations that send a user identity.
    pub accounts: crate::auth::Accounts,
}

/// An audit event by the association's proved user, or else its calling
/// AE.
pub fn audit_event(assoc: &Association, event: crate::audit::Event) -> crate::audit::AuditEvent {
    let actor = match assoc.user() {
        Some(user) => crate::audit::Actor::User(user.to_owned()),
        None => crate::audit::Actor::AeTitle(assoc.calling_ae().as_str().to_owned()),
    };
    crate::audit::AuditEvent::new(event, actor, assoc.peer())
}

/// A query's level and keys, short enough for an audit record.
pub fn describe_query(query: &crate::query::Query) -> String {
    let mut text = format!("{:?} {:?}", query.level, query.keys);
    if text.len() > 2000 {
        let mut cut = 2000;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// Answer one request.
pub async fn dispatch(
    assoc: &mut Association,
    request: Request,
    ctx: &ServiceContext,
) -> Result<(), AssociationError> {
    if let Some(service) = required_service(&request.command) {
        if !assoc.permits(service) || !assoc.user_permits(service) {
            return refuse_unauthorized(assoc, request, service).await;
        }
    }
    match request.command.field {
        CommandField::CEchoRq => echo::handle(assoc, request).await,
        CommandField::CStoreRq => store::handle(assoc, request, ctx).await,
        CommandField::CFindRq
            if assoc
                .context(request.context_id)
                .is_some_and(|c| c.abstract_syntax == worklist::WORKLIST_FIND) =>
        {
            worklist::handle(assoc, request, ctx).await
        }
        CommandField::CFindRq => find::handle(assoc, request, ctx).await,
        CommandField::CMoveRq => c_move::handle(assoc, request, ctx).await,
        CommandField::CGetRq => c_get::handle(assoc, request, ctx).await,
        CommandField::NCreateRq
            if request.command.affected_sop_class_uid.as_deref() == Some(mpps::MPPS) =>
        {
            mpps::handle(assoc, request, ctx).await
        }
        CommandField::NSetRq
            if request.command.requested_sop_class_uid.as_deref() == Some(mpps::MPPS) =>
        {
            mpps::handle(assoc, request, ctx).await
        }
        CommandField::NActionRq
            if request.command.requested_sop_class_uid.as_deref()
                == Some(commitment::STORAGE_COMMITMENT_PUSH) =>
        {
            commitment::handle(assoc, request, ctx).await
        }
        CommandField::NEventReportRq
            if request.command.affected_sop_class_uid.as_deref()
                == Some(commitment::STORAGE_COMMITMENT_PUSH) =>
        {
            commitment::report::handle(assoc, request, ctx).await
        }
        // C-CANCEL for an operation that is not running needs no answer.
        CommandField::CCancelRq => Ok(()),
        // A response nothing waits for (a late N-EVENT-REPORT-RSP, say) is
        // never answered: responses get no responses.
        other if other.code() & 0x8000 != 0 => {
            tracing::info!(command = ?other, "response to nothing pending; ignored");
            if request.command.has_dataset {
                assoc.drain_data_set(request.context_id).await?;
            }
            Ok(())
        }
        other => {
            tracing::info!(command = ?other, "unsupported DIMSE operation");
            if request.command.has_dataset {
                assoc.drain_data_set(request.context_id).await?;
            }
            let rsp = Command::response_to(&request.command, Status::UnrecognizedOperation)
                .with_error_comment("operation not supported by this SCP");
            assoc.send_command(request.context_id, &rsp).await
        }
    }
}

/// The peer service a request uses, for the registry's per-peer limits.
fn required_service(command: &Command) -> Option<PeerService> {
    match command.field {
        CommandField::CStoreRq => Some(PeerService::Store),
        CommandField::CFindRq => Some(PeerService::Find),
        CommandField::CMoveRq => Some(PeerService::Move),
        CommandField::CGetRq => Some(PeerService::Get),
        CommandField::NActionRq => Some(PeerService::Commit),
        CommandField::NCreateRq | CommandField::NSetRq => Some(PeerService::Mpps),
        _ => None,
    }
}

/// Refused: Not Authorized (PS3.7 C.5.5), after reading any data set.
async fn refuse_unauthorized(
    assoc: &mut Association,
    request: Request,
    service: PeerService,
) -> Result<(), AssociationError> {
    let who = match assoc.user() {
        Some(user) if !assoc.user_permits(service) => format!("user {user} (roles)"),
        _ => format!("{} (peer services)", assoc.calling_ae()),
    };
    tracing::warn!(%who, service = service.as_str(), "request refused");
    if request.command.has_dataset {
        assoc.drain_data_set(request.context_id).await?;
    }
    let rsp = Command::response_to(&request.command, Status::Other(NOT_AUTHORIZED))
        .with_error_comment(format!("{who} may not use {}", service.as_str()));
    assoc.send_command(request.context_id, &rsp).await
}
