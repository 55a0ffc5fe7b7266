//! C-FIND SCP, Patient Root and Study Root (PS3.4 C.4.1).
//!
//! The identifier becomes a protocol-neutral [`Query`]; matches stream from
//! the index and each is sent as a pending response as soon as it is read,
//! so no result set is built in memory. A C-CANCEL is checked between
//! responses, and a configured maximum ends the query with a clear status.

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::identifier::receive_query;
use super::ServiceContext;
use crate::dimse::association::{Association, AssociationError, Request};
use crate::dimse::command::{Command, CommandField, Status};
use crate::index::FindRow;
use crate::query::{Attribute, Level, Query};

pub const PATIENT_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.1.1";
pub const STUDY_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";

/// Matches read from the index at a time.
const FIND_PAGE: usize = 256;
const PENDING: Status = Status::Other(0xFF00);
const PENDING_WITH_UNSUPPORTED_KEYS: Status = Status::Other(0xFF01);
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
    let Some((mut query, context)) =
        receive_query(assoc, context_id, &command, PATIENT_ROOT_FIND).await?
    else {
        return Ok(());
    };
    query.combined_date_time = assoc.combined_date_time(&context.abstract_syntax);
    query.fuzzy_names = ctx.fuzzy_person_names;
    ctx.auditor.record(
        super::audit_event(assoc, crate::audit::Event::Queried)
            .detail(format!("C-FIND {}", super::describe_query(&query))),
    );
    tracing::debug!(level = ?query.level, keys = query.keys.len(), "C-FIND");

    let ts = match TransferSyntaxRegistry.get(context.transfer_syntax.as_str()) {
        Some(ts) => ts,
        None => {
            return assoc
                .send_command(context_id, &respond(Status::CannotUnderstand))
                .await
        }
    };
    let max = ctx.max_find_results;
    let pending = if query.unsupported.is_empty() {
        PENDING
    } else {
        PENDING_WITH_UNSUPPORTED_KEYS
    };
    // Matches are read a page at a time, and the index connection goes back
    // to the pool before any of them is sent: a requester that stops
    // reading holds a socket, never a connection that stores need.
    let mut page = std::collections::VecDeque::new();
    let mut fetched = 0usize;
    let mut exhausted = false;
    let mut sent = 0usize;
    let final_status = loop {
        if let Some(next) = assoc.poll_request() {
            match next? {
                Some(req) if req.command.field == CommandField::CCancelRq => {
                    break respond(CANCELLED)
                }
                Some(_) => {
                    return Err(AssociationError::Protocol(
                        "new request during a C-FIND".into(),
                    ));
                }
                None => return Ok(()),
            }
        }
        if page.is_empty() && !exhausted {
            let want = FIND_PAGE.min(max + 1 - fetched);
            let plan = ctx.index.plan_find_page(&query, want, fetched);
            match ctx.index.find_page(&plan).await {
                Ok(rows) => {
                    exhausted = rows.len() < want || fetched + rows.len() > max;
                    fetched += rows.len();
                    page.extend(rows);
                }
                Err(e) => {
                    tracing::error!(error = %e, "C-FIND query failed");
                    break respond(UNABLE_TO_PROCESS).with_error_comment("index query failed");
                }
            }
        }
        let Some(row) = page.pop_front() else {
            break respond(Status::Success);
        };
        if sent == max {
            break respond(Status::OutOfResources)
                .with_error_comment(format!("more than {max} matches; narrow the query"));
        }
        let mut bytes = Vec::with_capacity(512);
        let encoded = response_identifier(&query, &row, ctx.ae_title.as_str())
            .write_dataset_with_ts(&mut bytes, ts);
        if let Err(e) = encoded {
            tracing::error!(error = %e, "cannot encode C-FIND response");
            break respond(UNABLE_TO_PROCESS).with_error_comment("cannot encode a match");
        }
        let mut rsp = respond(pending);
        rsp.has_dataset = true;
        assoc
            .send_command_and_data_set(context_id, &rsp, bytes)
            .await?;
        sent += 1;
    };
    assoc.send_command(context_id, &final_status).await
}

fn value_element(attribute: Attribute, value: &str) -> DataElement<InMemDicomObject> {
    match attribute.vr() {
        VR::US => match value.parse::<u16>() {
            Ok(n) => DataElement::new(attribute.tag(), VR::US, PrimitiveValue::from(n)),
            Err(_) => DataElement::new(attribute.tag(), VR::US, PrimitiveValue::Empty),
        },
        vr => DataElement::new(attribute.tag(), vr, PrimitiveValue::from(value)),
    }
}

/// The identifier of one match: the requested keys with their values, the
/// unique keys of every level down to the query level, and the character
/// set (values are UTF-8).
fn response_identifier(query: &Query, row: &FindRow, ae_title: &str) -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    obj.put(DataElement::new(
        tags::SPECIFIC_CHARACTER_SET,
        VR::CS,
        PrimitiveValue::from("ISO_IR 192"),
    ));
    obj.put(DataElement::new(
        tags::QUERY_RETRIEVE_LEVEL,
        VR::CS,
        PrimitiveValue::from(query.level.keyword()),
    ));
    obj.put(DataElement::new(
        tags::RETRIEVE_AE_TITLE,
        VR::AE,
        PrimitiveValue::from(ae_title),
    ));
    let unique = [
        (Level::Patient, Attribute::PatientId),
        (Level::Study, Attribute::StudyInstanceUid),
        (Level::Series, Attribute::SeriesInstanceUid),
        (Level::Image, Attribute::SopInstanceUid),
    ];
    let requested = query.keys.iter().map(|k| k.attribute);
    let always = unique
        .iter()
        .filter(|(l, _)| *l <= query.level)
        .map(|(_, a)| *a);
    // Item attributes go into one item of their sequence.
    let mut items: Vec<(Tag, InMemDicomObject)> = Vec::new();
    for attribute in requested.chain(always) {
        let element = value_element(attribute, row.get(attribute));
        match attribute.sequence() {
            None => {
                obj.put(element);
            }
            Some(seq) => match items.iter_mut().find(|(t, _)| *t == seq) {
                Some((_, item)) => {
                    item.put(element);
                }
                None => {
                    let mut item = InMemDicomObject::new_empty();
                    item.put(element);
                    items.push((seq, item));
                }
            },
        }
    }
    for (seq, item) in items {
        obj.put(DataElement::new(
            seq,
            VR::SQ,
            DataSetSequence::from(vec![item]),
        ));
    }
    // Keys the index does not hold are answered empty (status FF01 says so).
    for tag in &query.unsupported {
        obj.put(DataElement::new(*tag, VR::UN, PrimitiveValue::Empty));
    }
    obj
}
