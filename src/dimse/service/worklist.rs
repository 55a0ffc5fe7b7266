//! Modality Worklist C-FIND SCP (PS3.4 K.6): the identifier's matching
//! keys, top level and in the Scheduled Procedure Step Sequence item,
//! become a worklist filter; each scheduled step found is answered with
//! the return keys asked for, in UTF-8. An empty sequence, or an empty
//! item, asks for every step attribute, as modalities often send it.

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_encoding::text::SpecificCharacterSet;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::identifier::{first_item, text, MAX_IDENTIFIER};
use super::ServiceContext;
use crate::dimse::association::{Association, AssociationError, Request};
use crate::dimse::command::{Command, CommandField, Status};
use crate::index::worklist::{StepStatus, WorklistFilter, WorklistItem};

pub const WORKLIST_FIND: &str = uids::MODALITY_WORKLIST_INFORMATION_MODEL_FIND;

const PENDING: Status = Status::Other(0xFF00);
const CANCELLED: Status = Status::Other(0xFE00);
const UNABLE_TO_PROCESS: Status = Status::Other(0xC001);

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
    if !command.has_dataset {
        let rsp = respond(Status::DataSetDoesNotMatchSopClass)
            .with_error_comment("request without an identifier");
        return assoc.send_command(context_id, &rsp).await;
    }
    let bytes = assoc.read_data_set(context_id, MAX_IDENTIFIER).await?;
    let ts = assoc
        .context(context_id)
        .and_then(|c| TransferSyntaxRegistry.get(c.transfer_syntax.as_str()));
    let Some(ts) = ts else {
        return assoc
            .send_command(context_id, &respond(Status::CannotUnderstand))
            .await;
    };
    let identifier = match crate::model::read_dataset(&bytes, ts) {
        Ok(obj) => obj,
        Err(e) => {
            let rsp = respond(Status::DataSetDoesNotMatchSopClass)
                .with_error_comment(format!("unreadable identifier: {e}"));
            return assoc.send_command(context_id, &rsp).await;
        }
    };
    let filter = match filter_of(&identifier, ctx.max_find_results) {
        Ok(filter) => filter,
        Err(why) => {
            let rsp = respond(Status::DataSetDoesNotMatchSopClass).with_error_comment(why);
            return assoc.send_command(context_id, &rsp).await;
        }
    };
    ctx.auditor.record(
        super::audit_event(assoc, crate::audit::Event::Queried)
            .detail(format!("worklist C-FIND {filter:?}")),
    );
    let items = match ctx.index.worklist(&filter).await {
        Ok(items) => items,
        Err(e) => {
            tracing::error!(error = %e, "worklist query failed");
            let rsp = respond(UNABLE_TO_PROCESS).with_error_comment("index query failed");
            return assoc.send_command(context_id, &rsp).await;
        }
    };
    tracing::debug!(matches = items.len(), "modality worklist C-FIND");
    let max = ctx.max_find_results;
    let mut final_status = respond(Status::Success);
    for (n, item) in items.iter().enumerate() {
        if let Some(next) = assoc.poll_request() {
            match next? {
                Some(req) if req.command.field == CommandField::CCancelRq => {
                    final_status = respond(CANCELLED);
                    break;
                }
                Some(_) => {
                    return Err(AssociationError::Protocol(
                        "new request during a C-FIND".into(),
                    ))
                }
                None => return Ok(()),
            }
        }
        if n == max {
            final_status = respond(Status::OutOfResources)
                .with_error_comment(format!("more than {max} matches; narrow the query"));
            break;
        }
        let mut out = Vec::with_capacity(1024);
        let charset = assoc.worklist_charset();
        let written = if charset.is_empty() {
            answer(&identifier, item, "ISO_IR 192").write_dataset_with_ts(&mut out, ts)
        } else {
            let fitted = transliterated(item, charset);
            let cs = SpecificCharacterSet::from_code(charset).unwrap_or_default();
            answer(&identifier, &fitted, charset).write_dataset_with_ts_cs(&mut out, ts, cs)
        };
        if let Err(e) = written {
            tracing::error!(error = %e, "cannot encode a worklist response");
            final_status = respond(UNABLE_TO_PROCESS).with_error_comment("cannot encode a match");
            break;
        }
        let mut rsp = respond(PENDING);
        rsp.has_dataset = true;
        assoc
            .send_command_and_data_set(context_id, &rsp, out)
            .await?;
    }
    assoc.send_command(context_id, &final_status).await
}

/// The first Scheduled Procedure Step Sequence item, if any.
fn step_item(obj: &InMemDicomObject) -> Option<&InMemDicomObject> {
    first_item(obj, tags::SCHEDULED_PROCEDURE_STEP_SEQUENCE)
}

/// Matching keys → filter. Universal (empty) and `*` keys match all.
fn filter_of(identifier: &InMemDicomObject, max: usize) -> Result<WorklistFilter, String> {
    let some = |v: String| (!v.is_empty() && v != "*").then_some(v);
    let mut filter = WorklistFilter {
        patient_id: some(text(identifier, tags::PATIENT_ID)),
        patient_name: some(text(identifier, tags::PATIENT_NAME)),
        accession_number: some(text(identifier, tags::ACCESSION_NUMBER)),
        limit: (max + 1) as i64,
        ..Default::default()
    };
    if let Some(item) = step_item(identifier) {
        filter.modality = some(text(item, tags::MODALITY));
        filter.station = some(text(item, tags::SCHEDULED_STATION_AE_TITLE));
        filter.step_id = some(text(item, tags::SCHEDULED_PROCEDURE_STEP_ID));
        filter.performing_physician = some(text(item, tags::SCHEDULED_PERFORMING_PHYSICIAN_NAME));
        if let Some(status) = some(text(item, tags::SCHEDULED_PROCEDURE_STEP_STATUS)) {
            filter.status = Some(
                serde_json::from_value::<StepStatus>(serde_json::Value::String(status.clone()))
                    .map_err(|_| format!("unknown Scheduled Procedure Step Status {status:?}"))?,
            );
        }
        let date = text(item, tags::SCHEDULED_PROCEDURE_STEP_START_DATE);
        if !date.is_empty() {
            let (from, to) = match date.split_once('-') {
                Some((from, to)) => (from.to_owned(), to.to_owned()),
                None => (date.clone(), date.clone()),
            };
            for d in [&from, &to] {
                if !d.is_empty() && !crate::model::valid_date(d) {
                    return Err(format!(
                        "Scheduled Procedure Step Start Date {date:?} is not a date or range"
                    ));
                }
            }
            filter.from = Some(from).filter(|d| !d.is_empty());
            filter.to = Some(to).filter(|d| !d.is_empty());
        }
        let time = text(item, tags::SCHEDULED_PROCEDURE_STEP_START_TIME);
        if !time.is_empty() {
            let (from, to) = time.split_once('-').unwrap_or((&time, &time));
            let bound = |t: &str, upper: bool| -> Result<Option<String>, String> {
                if t.is_empty() {
                    return Ok(None);
                }
                crate::model::time_bound(t, upper).map(Some).ok_or_else(|| {
                    format!("Scheduled Procedure Step Start Time {time:?} is not a time or range")
                })
            };
            filter.from_time = bound(from, false)?;
            filter.to_time = bound(to, true)?;
        }
    }
    Ok(filter)
}

fn element(tag: Tag, vr: VR, value: &str) -> DataElement<InMemDicomObject> {
    if value.is_empty() {
        DataElement::new(tag, vr, PrimitiveValue::Empty)
    } else {
        DataElement::new(tag, vr, PrimitiveValue::from(value))
    }
}

fn code_sequence(tag: Tag, code: &str) -> DataElement<InMemDicomObject> {
    let mut parts = code.splitn(3, '^');
    let (value, scheme, meaning) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let items = if value.is_empty() {
        Vec::new()
    } else {
        vec![InMemDicomObject::from_element_iter([
            element(tags::CODE_VALUE, VR::SH, value),
            element(tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme),
            element(tags::CODE_MEANING, VR::LO, meaning),
        ])]
    };
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

/// Everything a step has, as the worklist attributes of K.6.
fn full(item: &WorklistItem) -> (InMemDicomObject, InMemDicomObject) {
    let s = &item.step;
    let step = InMemDicomObject::from_element_iter([
        element(tags::MODALITY, VR::CS, &s.modality),
        element(
            tags::SCHEDULED_STATION_AE_TITLE,
            VR::AE,
            &s.station_ae_titles.join("\\"),
        ),
        element(
            tags::SCHEDULED_PROCEDURE_STEP_START_DATE,
            VR::DA,
            &s.start_date,
        ),
        element(
            tags::SCHEDULED_PROCEDURE_STEP_START_TIME,
            VR::TM,
            &s.start_time,
        ),
        element(
            tags::SCHEDULED_PERFORMING_PHYSICIAN_NAME,
            VR::PN,
            &s.performing_physician,
        ),
        element(
            tags::SCHEDULED_PROCEDURE_STEP_DESCRIPTION,
            VR::LO,
            &s.requested_procedure_description,
        ),
        element(
            tags::SCHEDULED_PROCEDURE_STEP_ID,
            VR::SH,
            &s.scheduled_step_id,
        ),
        element(
            tags::SCHEDULED_PROCEDURE_STEP_STATUS,
            VR::CS,
            item.status.as_str(),
        ),
    ]);
    let top = InMemDicomObject::from_element_iter([
        element(tags::PATIENT_NAME, VR::PN, &item.patient_name),
        element(tags::PATIENT_ID, VR::LO, &item.patient_id),
        element(tags::PATIENT_BIRTH_DATE, VR::DA, &item.patient_birth_date),
        element(tags::PATIENT_SEX, VR::CS, &item.patient_sex),
        element(tags::ACCESSION_NUMBER, VR::SH, &s.accession_number),
        element(
            tags::REQUESTED_PROCEDURE_ID,
            VR::SH,
            &s.requested_procedure_id,
        ),
        element(
            tags::REQUESTED_PROCEDURE_DESCRIPTION,
            VR::LO,
            &s.requested_procedure_description,
        ),
        code_sequence(
            tags::REQUESTED_PROCEDURE_CODE_SEQUENCE,
            &s.requested_procedure_code,
        ),
        element(tags::STUDY_INSTANCE_UID, VR::UI, &s.study_instance_uid),
        element(tags::REQUESTING_PHYSICIAN, VR::PN, &s.requesting_physician),
        element(
            tags::REFERRING_PHYSICIAN_NAME,
            VR::PN,
            &s.requesting_physician,
        ),
        element(tags::REQUESTED_PROCEDURE_PRIORITY, VR::SH, &s.priority),
        element(tags::REASON_FOR_THE_REQUESTED_PROCEDURE, VR::LO, &s.reason),
        element(
            tags::PLACER_ORDER_NUMBER_IMAGING_SERVICE_REQUEST,
            VR::LO,
            &s.placer_order,
        ),
        element(
            tags::FILLER_ORDER_NUMBER_IMAGING_SERVICE_REQUEST,
            VR::LO,
            &s.filler_order,
        ),
    ]);
    (top, step)
}

/// `item` with every text fitted to `charset` (docs/conformance.md:
/// characters the set lacks lose their diacritics, then become `?`).
fn transliterated(item: &WorklistItem, charset: &str) -> WorklistItem {
    let fit = |s: &mut String| *s = crate::model::transliterate(s, charset);
    let mut item = item.clone();
    fit(&mut item.patient_name);
    let s = &mut item.step;
    for text in [
        &mut s.requested_procedure_description,
        &mut s.requested_procedure_code,
        &mut s.requesting_physician,
        &mut s.performing_physician,
        &mut s.reason,
    ] {
        fit(text);
    }
    item
}

/// The keys the identifier asks for, with this step's values. A key
/// Tessera does not hold is returned empty, as it was asked.
fn answer(identifier: &InMemDicomObject, item: &WorklistItem, charset: &str) -> InMemDicomObject {
    let (top, step) = full(item);
    let mut out = InMemDicomObject::new_empty();
    let charset = if charset == "ISO_IR 6" { "" } else { charset };
    out.put(element(tags::SPECIFIC_CHARACTER_SET, VR::CS, charset));
    for asked in identifier.iter() {
        let tag = asked.header().tag;
        if tag == tags::SPECIFIC_CHARACTER_SET {
            continue;
        }
        if tag == tags::SCHEDULED_PROCEDURE_STEP_SEQUENCE {
            let chosen = match step_item(identifier) {
                Some(keys) if keys.iter().next().is_some() => {
                    let mut sub = InMemDicomObject::new_empty();
                    for key in keys.iter() {
                        let t = key.header().tag;
                        let value = match step.element(t) {
                            Ok(e) => e.clone(),
                            Err(_) => DataElement::new(t, key.vr(), PrimitiveValue::Empty),
                        };
                        sub.put(value);
                    }
                    sub
                }
                // An empty sequence or item: every step attribute.
                _ => step.clone(),
            };
            out.put(DataElement::new(
                tag,
                VR::SQ,
                DataSetSequence::from(vec![chosen]),
            ));
            continue;
        }
        let value = match top.element(tag) {
            Ok(e) => e.clone(),
            Err(_) if asked.vr() == VR::SQ => {
                DataElement::new(tag, VR::SQ, DataSetSequence::from(Vec::new()))
            }
            Err(_) => DataElement::new(tag, asked.vr(), PrimitiveValue::Empty),
        };
        out.put(value);
    }
    out
}
