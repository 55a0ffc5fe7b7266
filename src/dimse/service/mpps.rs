//! Modality Performed Procedure Step SCP (PS3.4 F.7): N-CREATE starts a
//! performed step, N-SET changes or ends it, on the same association or on
//! separate ones. The worklist step it names follows (STARTED, COMPLETED,
//! DISCONTINUED); a step with no worklist item is kept as unscheduled. An
//! N-SET after COMPLETED or DISCONTINUED is refused with 0110.

use dicom_dictionary_std::{tags, uids};
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::identifier::{first_item, text, MAX_IDENTIFIER};
use super::ServiceContext;
use crate::dimse::association::{Association, AssociationError, Request};
use crate::dimse::command::{Command, CommandField, Status};
use crate::index::mpps::{Created, PerformedStep, PerformedUpdate, Updated};

pub const MPPS: &str = uids::MODALITY_PERFORMED_PROCEDURE_STEP;

const PROCESSING_FAILURE: Status = Status::Other(0x0110);
const INVALID_ATTRIBUTE_VALUE: Status = Status::Other(0x0106);
const NO_SUCH_INSTANCE: Status = Status::Other(0x0112);
const MISSING_ATTRIBUTE: Status = Status::Other(0x0120);

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
        Some(assoc.read_data_set(context_id, MAX_IDENTIFIER).await?)
    } else {
        None
    };
    let ts = assoc
        .context(context_id)
        .and_then(|c| TransferSyntaxRegistry.get(c.transfer_syntax.as_str()));
    let obj = match (data, ts) {
        (Some(bytes), Some(ts)) => crate::model::read_dataset(&bytes, ts).ok(),
        _ => None,
    };
    let rsp = match (command.field, obj) {
        (_, None) => Command::response_to(&command, Status::DataSetDoesNotMatchSopClass)
            .with_error_comment("missing or unreadable data set"),
        (CommandField::NCreateRq, Some(obj)) => create(&command, &obj, ctx).await,
        (_, Some(obj)) => set(&command, &obj, ctx).await,
    };
    assoc.send_command(context_id, &rsp).await
}

async fn create(command: &Command, obj: &InMemDicomObject, ctx: &ServiceContext) -> Command {
    let respond = |status: Status| Command::response_to(command, status);
    let status = text(obj, tags::PERFORMED_PROCEDURE_STEP_STATUS);
    if status != "IN PROGRESS" {
        return respond(INVALID_ATTRIBUTE_VALUE).with_error_comment(format!(
            "N-CREATE status must be IN PROGRESS, not {status:?}"
        ));
    }
    // The SCU may leave the instance UID to us (PS3.4 F.7.2.1.1).
    let uid = command
        .affected_sop_instance_uid
        .clone()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            crate::model::derived_uid(&[
                "mpps",
                &text(obj, tags::PERFORMED_PROCEDURE_STEP_ID),
                &text(obj, tags::PERFORMED_STATION_AE_TITLE),
                &format!("{:?}", std::time::SystemTime::now()),
            ])
        });
    let scheduled = first_item(obj, tags::SCHEDULED_STEP_ATTRIBUTES_SEQUENCE);
    let from_scheduled = |tag| scheduled.map(|s| text(s, tag)).unwrap_or_default();
    let step = PerformedStep {
        sop_instance_uid: uid.clone(),
        patient_id: text(obj, tags::PATIENT_ID),
        study_instance_uid: from_scheduled(tags::STUDY_INSTANCE_UID),
        accession_number: from_scheduled(tags::ACCESSION_NUMBER),
        scheduled_step_id: from_scheduled(tags::SCHEDULED_PROCEDURE_STEP_ID),
        performed_step_id: text(obj, tags::PERFORMED_PROCEDURE_STEP_ID),
        modality: text(obj, tags::MODALITY),
        station_ae_title: text(obj, tags::PERFORMED_STATION_AE_TITLE),
        started_at: format!(
            "{}{}",
            text(obj, tags::PERFORMED_PROCEDURE_STEP_START_DATE),
            text(obj, tags::PERFORMED_PROCEDURE_STEP_START_TIME)
        ),
    };
    if scheduled.is_none() {
        return respond(MISSING_ATTRIBUTE)
            .with_error_comment("Scheduled Step Attributes Sequence is missing");
    }
    let mut rsp = match ctx.index.create_performed_step(&step).await {
        Ok(Created::Created { scheduled }) => {
            tracing::info!(uid = %uid, scheduled, "MPPS created");
            respond(Status::Success)
        }
        Ok(Created::Duplicate) => respond(Status::DuplicateSopInstance)
            .with_error_comment("this performed procedure step exists already"),
        Err(e) => {
            tracing::error!(error = %e, "cannot record MPPS N-CREATE");
            respond(PROCESSING_FAILURE).with_error_comment("index unavailable")
        }
    };
    rsp.affected_sop_instance_uid = Some(uid);
    rsp
}

async fn set(command: &Command, obj: &InMemDicomObject, ctx: &ServiceContext) -> Command {
    let respond = |status: Status| {
        let mut rsp = Command::response_to(command, status);
        rsp.affected_sop_instance_uid = command.requested_sop_instance_uid.clone();
        rsp
    };
    let Some(uid) = command.requested_sop_instance_uid.clone() else {
        return respond(MISSING_ATTRIBUTE).with_error_comment("no Requested SOP Instance UID");
    };
    let status = Some(text(obj, tags::PERFORMED_PROCEDURE_STEP_STATUS)).filter(|s| !s.is_empty());
    if let Some(s) = &status {
        if !["IN PROGRESS", "COMPLETED", "DISCONTINUED"].contains(&s.as_str()) {
            return respond(INVALID_ATTRIBUTE_VALUE)
                .with_error_comment(format!("unknown status {s:?}"));
        }
    }
    let ended = format!(
        "{}{}",
        text(obj, tags::PERFORMED_PROCEDURE_STEP_END_DATE),
        text(obj, tags::PERFORMED_PROCEDURE_STEP_END_TIME)
    );
    let reason = first_item(
        obj,
        tags::PERFORMED_PROCEDURE_STEP_DISCONTINUATION_REASON_CODE_SEQUENCE,
    )
    .map(|item| {
        format!(
            "{}^{}^{}",
            text(item, tags::CODE_VALUE),
            text(item, tags::CODING_SCHEME_DESIGNATOR),
            text(item, tags::CODE_MEANING)
        )
    });
    let series = obj
        .element(tags::PERFORMED_SERIES_SEQUENCE)
        .ok()
        .and_then(|e| e.items())
        .map(|items| {
            items
                .iter()
                .map(|i| text(i, tags::SERIES_INSTANCE_UID))
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let update = PerformedUpdate {
        status,
        ended_at: Some(ended).filter(|e| !e.is_empty()),
        discontinue_reason: reason,
        performed_series: series,
    };
    match ctx.index.update_performed_step(&uid, &update).await {
        Ok(Updated::Updated) => respond(Status::Success),
        Ok(Updated::NotFound) => {
            respond(NO_SUCH_INSTANCE).with_error_comment("no such performed procedure step")
        }
        Ok(Updated::Final(s)) => respond(PROCESSING_FAILURE)
            .with_error_comment(format!("the step is {s} and cannot change")),
        Err(e) => {
            tracing::error!(error = %e, "cannot record MPPS N-SET");
            respond(PROCESSING_FAILURE).with_error_comment("index unavailable")
        }
    }
}
