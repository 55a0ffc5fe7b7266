//! Reading the identifier of a C-FIND, C-MOVE or C-GET request into a
//! protocol-neutral [`Query`], answering bad ones with the right status.

use dicom_encoding::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use crate::dimse::association::{Association, AssociationError, PresentationContext};
use crate::dimse::command::{Command, Status};
use crate::query::{Query, Root};

/// Identifiers are small; this bounds a hostile one.
pub const MAX_IDENTIFIER: usize = 1024 * 1024;

/// Parse an identifier in the context's transfer syntax.
pub fn parse_identifier(bytes: &[u8], ts_uid: &str, root: Root) -> Result<Query, String> {
    let ts = TransferSyntaxRegistry
        .get(ts_uid)
        .ok_or_else(|| format!("unknown transfer syntax {ts_uid}"))?;
    let mut obj =
        crate::model::read_dataset(bytes, ts).map_err(|e| format!("unreadable identifier: {e}"))?;
    // Text in ISO 2022 character sets is decoded as the index decoded it
    // (dicom-rs does not switch on escapes), so a query in the data's own
    // character set matches.
    if crate::model::needs_redecoding(&crate::model::character_set_of(&obj)) {
        crate::model::redecode_top_level(&mut obj, bytes, ts_uid)
            .map_err(|e| format!("unreadable identifier: {e}"))?;
    }
    Query::from_identifier(&obj, root).map_err(|e| e.to_string())
}

/// Read the identifier that follows `command`. When it is missing or bad,
/// the failure response is sent here and `None` returned.
pub async fn receive_query(
    assoc: &mut Association,
    context_id: u8,
    command: &Command,
    patient_root_uid: &str,
) -> Result<Option<(Query, PresentationContext)>, AssociationError> {
    let refuse =
        |status: Status, why: String| Command::response_to(command, status).with_error_comment(why);
    if !command.has_dataset {
        let rsp = refuse(
            Status::DataSetDoesNotMatchSopClass,
            "request without an identifier".into(),
        );
        assoc.send_command(context_id, &rsp).await?;
        return Ok(None);
    }
    let bytes = assoc.read_data_set(context_id, MAX_IDENTIFIER).await?;
    let Some(context) = assoc.context(context_id).cloned() else {
        let rsp = refuse(
            Status::CannotUnderstand,
            "unknown presentation context".into(),
        );
        assoc.send_command(context_id, &rsp).await?;
        return Ok(None);
    };
    let root = if context.abstract_syntax == patient_root_uid {
        Root::Patient
    } else {
        Root::Study
    };
    match parse_identifier(&bytes, context.transfer_syntax.as_str(), root) {
        Ok(query) => Ok(Some((query, context))),
        Err(e) => {
            assoc
                .send_command(context_id, &refuse(Status::DataSetDoesNotMatchSopClass, e))
                .await?;
            Ok(None)
        }
    }
}

/// A text value of `obj`, padding trimmed; empty when absent.
pub fn text(obj: &dicom_object::InMemDicomObject, tag: dicom_core::Tag) -> String {
    obj.element(tag)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' ').to_owned())
        .unwrap_or_default()
}

/// The first item of the sequence `tag`, if any.
pub fn first_item(
    obj: &dicom_object::InMemDicomObject,
    tag: dicom_core::Tag,
) -> Option<&dicom_object::InMemDicomObject> {
    obj.element(tag)
        .ok()
        .and_then(|e| e.items())
        .and_then(|items| items.first())
}
