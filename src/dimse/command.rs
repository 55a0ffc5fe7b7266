//! DIMSE command sets (PS3.7 E.1) as typed values: the command field and
//! status codes are enums, the command set is a struct, and encoding adds
//! the Command Group Length. Command sets are always Implicit VR Little
//! Endian and small, so they are held in memory.

use dicom_core::dictionary::DataDictionary;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, StandardDataDictionary};
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

/// CommandDataSetType value meaning "no data set follows".
const NO_DATASET: u16 = 0x0101;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("command set is not valid implicit VR little endian: {0}")]
    Decode(String),
    #[error("command set lacks {0}")]
    Missing(&'static str),
    #[error("cannot encode command set: {0}")]
    Encode(String),
    #[error("command element {tag} declares {declared} bytes where {left} remain")]
    Overlong {
        tag: Tag,
        declared: u32,
        left: usize,
    },
}

/// The DIMSE operations (PS3.7 Table E.1-1). Responses set bit 15.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandField {
    CStoreRq,
    CStoreRsp,
    CGetRq,
    CGetRsp,
    CFindRq,
    CFindRsp,
    CMoveRq,
    CMoveRsp,
    CEchoRq,
    CEchoRsp,
    NEventReportRq,
    NEventReportRsp,
    NGetRq,
    NGetRsp,
    NSetRq,
    NSetRsp,
    NActionRq,
    NActionRsp,
    NCreateRq,
    NCreateRsp,
    NDeleteRq,
    NDeleteRsp,
    CCancelRq,
    Unknown(u16),
}

impl CommandField {
    pub fn from_code(code: u16) -> Self {
        use CommandField::*;
        match code {
            0x0001 => CStoreRq,
            0x8001 => CStoreRsp,
            0x0010 => CGetRq,
            0x8010 => CGetRsp,
            0x0020 => CFindRq,
            0x8020 => CFindRsp,
            0x0021 => CMoveRq,
            0x8021 => CMoveRsp,
            0x0030 => CEchoRq,
            0x8030 => CEchoRsp,
            0x0100 => NEventReportRq,
            0x8100 => NEventReportRsp,
            0x0110 => NGetRq,
            0x8110 => NGetRsp,
            0x0120 => NSetRq,
            0x8120 => NSetRsp,
            0x0130 => NActionRq,
            0x8130 => NActionRsp,
            0x0140 => NCreateRq,
            0x8140 => NCreateRsp,
            0x0150 => NDeleteRq,
            0x8150 => NDeleteRsp,
            0x0FFF => CCancelRq,
            other => Unknown(other),
        }
    }

    pub fn code(self) -> u16 {
        use CommandField::*;
        match self {
            CStoreRq => 0x0001,
            CStoreRsp => 0x8001,
            CGetRq => 0x0010,
            CGetRsp => 0x8010,
            CFindRq => 0x0020,
            CFindRsp => 0x8020,
            CMoveRq => 0x0021,
            CMoveRsp => 0x8021,
            CEchoRq => 0x0030,
            CEchoRsp => 0x8030,
            NEventReportRq => 0x0100,
            NEventReportRsp => 0x8100,
            NGetRq => 0x0110,
            NGetRsp => 0x8110,
            NSetRq => 0x0120,
            NSetRsp => 0x8120,
            NActionRq => 0x0130,
            NActionRsp => 0x8130,
            NCreateRq => 0x0140,
            NCreateRsp => 0x8140,
            NDeleteRq => 0x0150,
            NDeleteRsp => 0x8150,
            CCancelRq => 0x0FFF,
            Unknown(c) => c,
        }
    }

    /// The response to this request; unknown requests answer with bit 15 set.
    pub fn response(self) -> Self {
        Self::from_code(self.code() | 0x8000)
    }
}

/// DIMSE status codes Tessera sends (PS3.7 Annex C, PS3.4 B.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success,
    /// 0111H: the SOP Instance is already stored with other content.
    DuplicateSopInstance,
    /// 0122H: the SOP class is not supported.
    SopClassNotSupported,
    /// 0211H: the operation is not recognised.
    UnrecognizedOperation,
    /// A700H: out of resources (storage or index unavailable).
    OutOfResources,
    /// A900H: the data set does not match the SOP class.
    DataSetDoesNotMatchSopClass,
    /// C000H: cannot understand.
    CannotUnderstand,
    Other(u16),
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::Success => 0x0000,
            Status::DuplicateSopInstance => 0x0111,
            Status::SopClassNotSupported => 0x0122,
            Status::UnrecognizedOperation => 0x0211,
            Status::OutOfResources => 0xA700,
            Status::DataSetDoesNotMatchSopClass => 0xA900,
            Status::CannotUnderstand => 0xC000,
            Status::Other(c) => c,
        }
    }

    pub fn from_code(code: u16) -> Self {
        match code {
            0x0000 => Status::Success,
            0x0111 => Status::DuplicateSopInstance,
            0x0122 => Status::SopClassNotSupported,
            0x0211 => Status::UnrecognizedOperation,
            0xA700 => Status::OutOfResources,
            0xA900 => Status::DataSetDoesNotMatchSopClass,
            0xC000 => Status::CannotUnderstand,
            other => Status::Other(other),
        }
    }
}

/// One command set. Only the fields Tessera reads or writes are typed;
/// anything else in a received command set is ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub field: CommandField,
    pub message_id: Option<u16>,
    pub message_id_responded_to: Option<u16>,
    pub affected_sop_class_uid: Option<String>,
    pub requested_sop_class_uid: Option<String>,
    pub affected_sop_instance_uid: Option<String>,
    pub requested_sop_instance_uid: Option<String>,
    pub priority: Option<u16>,
    pub has_dataset: bool,
    pub status: Option<Status>,
    pub error_comment: Option<String>,
    pub move_destination: Option<String>,
    /// N-EVENT-REPORT Event Type ID.
    pub event_type_id: Option<u16>,
    /// N-ACTION Action Type ID.
    pub action_type_id: Option<u16>,
    /// C-GET/C-MOVE sub-operation counts: remaining, completed, failed, warning.
    pub sub_operations: Option<SubOperations>,
    /// Set on C-STOREs that are sub-operations of a C-MOVE.
    pub move_originator_ae_title: Option<String>,
    pub move_originator_message_id: Option<u16>,
}

/// Sub-operation counts carried by C-GET and C-MOVE responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubOperations {
    pub remaining: u16,
    pub completed: u16,
    pub failed: u16,
    pub warning: u16,
}

impl Command {
    fn empty(field: CommandField) -> Self {
        Command {
            field,
            message_id: None,
            message_id_responded_to: None,
            affected_sop_class_uid: None,
            requested_sop_class_uid: None,
            affected_sop_instance_uid: None,
            requested_sop_instance_uid: None,
            priority: None,
            has_dataset: false,
            status: None,
            error_comment: None,
            move_destination: None,
            event_type_id: None,
            action_type_id: None,
            sub_operations: None,
            move_originator_ae_title: None,
            move_originator_message_id: None,
        }
    }

    /// The response to `request` with the given status, echoing its message
    /// ID, SOP class and instance as PS3.7 requires.
    pub fn response_to(request: &Command, status: Status) -> Self {
        Command {
            message_id_responded_to: request.message_id,
            affected_sop_class_uid: request
                .affected_sop_class_uid
                .clone()
                .or_else(|| request.requested_sop_class_uid.clone()),
            affected_sop_instance_uid: request.affected_sop_instance_uid.clone(),
            status: Some(status),
            ..Command::empty(request.field.response())
        }
    }

    pub fn with_error_comment(mut self, comment: impl Into<String>) -> Self {
        // LO: at most 64 characters of the default repertoire.
        let text: String = comment
            .into()
            .chars()
            .filter(|c| c.is_ascii() && !c.is_ascii_control() && *c != '\\')
            .take(64)
            .collect();
        self.error_comment = Some(text);
        self
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CommandError> {
        let bytes = command_elements(bytes)?;
        let ts = IMPLICIT_VR_LITTLE_ENDIAN.erased();
        let obj = InMemDicomObject::read_dataset_with_ts(&bytes[..], &ts)
            .map_err(|e| CommandError::Decode(e.to_string()))?;
        let u16_of =
            |tag: Tag| -> Option<u16> { obj.get(tag).and_then(|e| e.to_int::<u16>().ok()) };
        let str_of = |tag: Tag| -> Option<String> {
            obj.get(tag)
                .and_then(|e| e.to_str().ok())
                .map(|s| s.trim_end_matches(['\0', ' ']).to_owned())
        };
        let field = u16_of(tags::COMMAND_FIELD).ok_or(CommandError::Missing("CommandField"))?;
        let dataset_type = u16_of(tags::COMMAND_DATA_SET_TYPE)
            .ok_or(CommandError::Missing("CommandDataSetType"))?;
        Ok(Command {
            field: CommandField::from_code(field),
            message_id: u16_of(tags::MESSAGE_ID),
            message_id_responded_to: u16_of(tags::MESSAGE_ID_BEING_RESPONDED_TO),
            affected_sop_class_uid: str_of(tags::AFFECTED_SOP_CLASS_UID),
            requested_sop_class_uid: str_of(tags::REQUESTED_SOP_CLASS_UID),
            affected_sop_instance_uid: str_of(tags::AFFECTED_SOP_INSTANCE_UID),
            requested_sop_instance_uid: str_of(tags::REQUESTED_SOP_INSTANCE_UID),
            priority: u16_of(tags::PRIORITY),
            has_dataset: dataset_type != NO_DATASET,
            status: u16_of(tags::STATUS).map(Status::from_code),
            error_comment: str_of(tags::ERROR_COMMENT),
            move_destination: str_of(tags::MOVE_DESTINATION),
            event_type_id: u16_of(tags::EVENT_TYPE_ID),
            action_type_id: u16_of(tags::ACTION_TYPE_ID),
            sub_operations: u16_of(tags::NUMBER_OF_REMAINING_SUBOPERATIONS)
                .or(u16_of(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS))
                .map(|_| SubOperations {
                    remaining: u16_of(tags::NUMBER_OF_REMAINING_SUBOPERATIONS).unwrap_or(0),
                    completed: u16_of(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS).unwrap_or(0),
                    failed: u16_of(tags::NUMBER_OF_FAILED_SUBOPERATIONS).unwrap_or(0),
                    warning: u16_of(tags::NUMBER_OF_WARNING_SUBOPERATIONS).unwrap_or(0),
                }),
            move_originator_ae_title: str_of(tags::MOVE_ORIGINATOR_APPLICATION_ENTITY_TITLE),
            move_originator_message_id: u16_of(tags::MOVE_ORIGINATOR_MESSAGE_ID),
        })
    }

    pub fn encode(&self) -> Result<Vec<u8>, CommandError> {
        let mut obj = InMemDicomObject::new_empty();
        let mut put_uid = |tag: Tag, v: &Option<String>, vr: VR| {
            if let Some(v) = v {
                obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v.as_str())));
            }
        };
        put_uid(
            tags::AFFECTED_SOP_CLASS_UID,
            &self.affected_sop_class_uid,
            VR::UI,
        );
        put_uid(
            tags::REQUESTED_SOP_CLASS_UID,
            &self.requested_sop_class_uid,
            VR::UI,
        );
        put_uid(
            tags::AFFECTED_SOP_INSTANCE_UID,
            &self.affected_sop_instance_uid,
            VR::UI,
        );
        put_uid(
            tags::REQUESTED_SOP_INSTANCE_UID,
            &self.requested_sop_instance_uid,
            VR::UI,
        );
        put_uid(tags::MOVE_DESTINATION, &self.move_destination, VR::AE);
        put_uid(tags::ERROR_COMMENT, &self.error_comment, VR::LO);
        put_uid(
            tags::MOVE_ORIGINATOR_APPLICATION_ENTITY_TITLE,
            &self.move_originator_ae_title,
            VR::AE,
        );
        let mut put_us = |tag: Tag, v: Option<u16>| {
            if let Some(v) = v {
                obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
            }
        };
        put_us(tags::COMMAND_FIELD, Some(self.field.code()));
        put_us(tags::MESSAGE_ID, self.message_id);
        put_us(
            tags::MESSAGE_ID_BEING_RESPONDED_TO,
            self.message_id_responded_to,
        );
        put_us(tags::PRIORITY, self.priority);
        put_us(
            tags::COMMAND_DATA_SET_TYPE,
            Some(if self.has_dataset { 0x0000 } else { NO_DATASET }),
        );
        put_us(tags::STATUS, self.status.map(Status::code));
        put_us(tags::EVENT_TYPE_ID, self.event_type_id);
        put_us(tags::ACTION_TYPE_ID, self.action_type_id);
        put_us(
            tags::MOVE_ORIGINATOR_MESSAGE_ID,
            self.move_originator_message_id,
        );
        if let Some(ops) = self.sub_operations {
            put_us(tags::NUMBER_OF_REMAINING_SUBOPERATIONS, Some(ops.remaining));
            put_us(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS, Some(ops.completed));
            put_us(tags::NUMBER_OF_FAILED_SUBOPERATIONS, Some(ops.failed));
            put_us(tags::NUMBER_OF_WARNING_SUBOPERATIONS, Some(ops.warning));
        }

        let ts = IMPLICIT_VR_LITTLE_ENDIAN.erased();
        let mut body = Vec::with_capacity(256);
        obj.write_dataset_with_ts(&mut body, &ts)
            .map_err(|e| CommandError::Encode(e.to_string()))?;
        // Command Group Length (0000,0000) UL, implicit VR: tag, length 4, value.
        let mut out = Vec::with_capacity(body.len() + 12);
        out.extend_from_slice(&[0, 0, 0, 0, 4, 0, 0, 0]);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }
}

/// A C-ECHO/C-STORE style request, for tests and outbound associations.
/// Walk the element headers (implicit VR LE: tag, 32-bit length) and refuse
/// a length that runs past the end. The decoder sizes its buffers from the
/// declared length, so a 4 GiB claim in a 100-byte command set would
/// otherwise be allocated before the short read is noticed.
/// The command elements of `bytes`, checked before anything is allocated:
/// every declared length must fit in what is left, and only group 0000 is
/// kept (PS3.7 6.3.1: a command set holds command elements only). Anything
/// else a peer puts there is dropped unparsed, since the dictionary would
/// read some such tags as sequences whose inner lengths are not checked.
fn command_elements(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, CommandError> {
    let mut at = 0usize;
    let mut other = false;
    let mut kept = Vec::new();
    while at < bytes.len() {
        let Some(head) = bytes.get(at..at + 8) else {
            return Err(CommandError::Decode(format!(
                "element header cut off at byte {at}"
            )));
        };
        let word = |i: usize| u16::from_le_bytes([head[i], head[i + 1]]);
        let tag = Tag(word(0), word(2));
        let declared = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let left = bytes.len() - at - 8;
        if declared as usize > left {
            return Err(CommandError::Overlong {
                tag,
                declared,
                left,
            });
        }
        let end = at + 8 + declared as usize;
        if tag.group() == 0x0000 {
            let vr = StandardDataDictionary.by_tag(tag).map(|e| e.vr);
            if let Some(dicom_core::dictionary::VirtualVr::Exact(vr)) = vr {
                if !crate::model::length_fits_vr(vr, declared) {
                    return Err(CommandError::Decode(format!(
                        "{tag} is {declared} bytes, not a whole number of {vr:?} values"
                    )));
                }
            }
            kept.extend_from_slice(&bytes[at..end]);
        } else {
            other = true;
        }
        at = end;
    }
    Ok(if other {
        std::borrow::Cow::Owned(kept)
    } else {
        std::borrow::Cow::Borrowed(bytes)
    })
}

pub fn request(field: CommandField, message_id: u16, sop_class: &str) -> Command {
    Command {
        message_id: Some(message_id),
        affected_sop_class_uid: Some(sop_class.to_owned()),
        ..Command::empty(field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_store_response() {
        let mut rq = request(CommandField::CStoreRq, 7, "1.2.840.10008.5.1.4.1.1.2");
        rq.affected_sop_instance_uid = Some("1.2.3.4".into());
        rq.has_dataset = true;
        let decoded = Command::decode(&rq.encode().expect("encodes")).expect("decodes");
        assert_eq!(decoded, rq);

        let rsp =
            Command::response_to(&rq, Status::CannotUnderstand).with_error_comment("bad\\data");
        let bytes = rsp.encode().expect("encodes");
        // Group length covers everything after itself.
        assert_eq!(
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            bytes.len() - 12
        );
        let decoded = Command::decode(&bytes).expect("decodes");
        assert_eq!(decoded.field, CommandField::CStoreRsp);
        assert_eq!(decoded.message_id_responded_to, Some(7));
        assert_eq!(decoded.status, Some(Status::CannotUnderstand));
        assert_eq!(decoded.error_comment.as_deref(), Some("baddata"));
        assert!(!decoded.has_dataset);
    }

    #[test]
    fn round_trip_retrieve_and_normalized_fields() {
        let mut rsp = request(CommandField::CMoveRsp, 9, "1.2.840.10008.5.1.4.1.2.2.2");
        rsp.status = Some(Status::Other(0xFF00));
        rsp.sub_operations = Some(SubOperations {
            remaining: 3,
            completed: 2,
            failed: 1,
            warning: 0,
        });
        rsp.move_originator_ae_title = Some("WORKSTATION".into());
        rsp.move_originator_message_id = Some(4);
        assert_eq!(
            Command::decode(&rsp.encode().expect("encodes")).expect("decodes"),
            rsp
        );

        let mut report = request(CommandField::NEventReportRq, 1, "1.2.840.10008.1.20.1");
        report.event_type_id = Some(1);
        report.affected_sop_instance_uid = Some("1.2.840.10008.1.20.1.1".into());
        report.has_dataset = true;
        assert_eq!(
            Command::decode(&report.encode().expect("encodes")).expect("decodes"),
            report
        );

        let mut action = request(CommandField::NActionRq, 2, "1.2.840.10008.1.20.1");
        action.action_type_id = Some(1);
        assert_eq!(
            Command::decode(&action.encode().expect("encodes")).expect("decodes"),
            action
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Command::decode(&[0xff; 7]).is_err());
        assert!(Command::decode(&[]).is_err());
    }

    #[test]
    fn declared_lengths_past_the_end_are_refused_before_allocating() {
        let mut bytes = request(CommandField::CEchoRq, 1, "1.2.840.10008.1.1")
            .encode()
            .expect("encode");
        // (0000,0902) Error Comment claiming 0xFFFFFFF0 bytes.
        bytes.extend_from_slice(&[0x00, 0x00, 0x02, 0x09, 0xF0, 0xFF, 0xFF, 0xFF, b'x']);
        match Command::decode(&bytes) {
            Err(CommandError::Overlong { declared, left, .. }) => {
                assert_eq!(declared, 0xFFFF_FFF0);
                assert_eq!(left, 1);
            }
            other => panic!("expected Overlong, got {other:?}"),
        }
    }
}
