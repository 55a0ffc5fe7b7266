//! What Tessera tells the RIS: queued order events written as HL7 order
//! messages (ORM^O01, OMG^O19 or OMI^O23, as the site's RIS takes them)
//! with ORC-1/ORC-5 and the placer and filler numbers, and the reading of
//! the RIS's answer. The queue is [`crate::index::outbox`]; the MLLP client
//! that sends is [`crate::mllp`]'s.

use crate::hl7::{escape, Charset, Delimiters, Message};
use crate::index::outbox::{OrderEvent, OrderStatus, Outbound};

/// The order message the RIS takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderMessage {
    Orm,
    Omg,
    Omi,
}

impl OrderMessage {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_uppercase().as_str() {
            "ORM" | "ORM^O01" => OrderMessage::Orm,
            "OMG" | "OMG^O19" => OrderMessage::Omg,
            "OMI" | "OMI^O23" => OrderMessage::Omi,
            _ => return None,
        })
    }

    /// MSH-9 and the version it is written in.
    fn header(&self) -> (&'static str, &'static str) {
        match self {
            OrderMessage::Orm => ("ORM^O01^ORM_O01", "2.5.1"),
            OrderMessage::Omg => ("OMG^O19^OMG_O19", "2.5.1"),
            OrderMessage::Omi => ("OMI^O23^OMI_O23", "2.5.1"),
        }
    }
}

/// How messages to the RIS are addressed and written.
#[derive(Debug, Clone)]
pub struct Addressing {
    pub message: OrderMessage,
    pub sending_application: String,
    pub sending_facility: String,
    pub receiving_application: String,
    pub receiving_facility: String,
    pub charset: Charset,
}

/// A message ready to send: its control ID and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub control_id: String,
    pub bytes: Vec<u8>,
}

/// The control ID of queued row `id`: the same on every attempt, so a RIS
/// that saw a message before its acknowledgement was lost knows it again.
pub fn control_id(id: i64) -> String {
    format!("TESSERA{id}")
}

/// Queued row `id` as HL7, at `timestamp` (YYYYMMDDHHMMSS).
pub fn render(id: i64, message: &Outbound, to: &Addressing, timestamp: &str) -> Rendered {
    match message {
        Outbound::Order { event, order } => {
            let control_id = control_id(id);
            let text = order_message(*event, order, to, &control_id, timestamp);
            Rendered {
                control_id,
                bytes: to.charset.encode_lossy(&text),
            }
        }
        Outbound::Ack { text } => match Message::parse_decoded(text) {
            Ok(ack) => Rendered {
                control_id: ack.control_id(),
                bytes: crate::hl7::ack::to_wire(&ack, text),
            },
            Err(_) => Rendered {
                control_id: String::new(),
                bytes: text.as_bytes().to_vec(),
            },
        },
    }
}

fn order_message(
    event: OrderEvent,
    o: &OrderStatus,
    to: &Addressing,
    control_id: &str,
    timestamp: &str,
) -> String {
    let d = Delimiters::default();
    let e = |s: &str| escape::encode(s, &d);
    let (message_type, version) = to.message.header();
    let (order_control, order_status) = event.order_codes();
    let mut out = format!(
        "MSH|^~\\&|{}|{}|{}|{}|{timestamp}||{message_type}|{}|P|{version}||||||{}\r",
        e(&to.sending_application),
        e(&to.sending_facility),
        e(&to.receiving_application),
        e(&to.receiving_facility),
        e(control_id),
        to.charset.name(),
    );
    let patient_id = if o.issuer_of_patient_id.is_empty() {
        e(&o.patient_id)
    } else {
        format!("{}^^^{}", e(&o.patient_id), e(&o.issuer_of_patient_id))
    };
    out.push_str(&format!(
        "PID|1||{patient_id}||{}||{}|{}\r",
        person_name(&o.patient_name, &d),
        e(&o.patient_birth_date),
        e(&o.patient_sex),
    ));
    out.push_str(&format!(
        "ORC|{order_control}|{}|{}||{order_status}||||{}\r",
        e(&o.placer_order),
        e(&o.filler_order),
        hl7_time(o.at),
    ));
    out.push_str(&format!(
        "OBR|1|{}|{}|{}||||||||||||||{}|{}|{}||||{}\r",
        e(&o.placer_order),
        e(&o.filler_order),
        procedure_code(
            &o.requested_procedure_code,
            &o.requested_procedure_description,
            &d
        ),
        e(&o.accession_number),
        e(&o.requested_procedure_id),
        e(&o.scheduled_step_id),
        e(&o.modality),
    ));
    match to.message {
        OrderMessage::Omi => out.push_str(&format!(
            "IPC|{}|{}|{}^^Application^DICOM|{}|{}\r",
            e(&o.accession_number),
            e(&o.requested_procedure_id),
            e(&o.study_instance_uid),
            e(&o.scheduled_step_id),
            e(&o.modality),
        )),
        _ => out.push_str(&format!(
            "ZDS|{}^^Application^DICOM\r",
            e(&o.study_instance_uid)
        )),
    }
    out
}

/// A DICOM PN (`family^given^middle^prefix^suffix`, alphabetic group) as
/// an HL7 XPN (`family^given^middle^suffix^prefix`).
fn person_name(pn: &str, d: &Delimiters) -> String {
    let alphabetic = pn.split('=').next().unwrap_or_default();
    let parts: Vec<&str> = alphabetic.split('^').collect();
    let part = |n: usize| escape::encode(parts.get(n).copied().unwrap_or_default(), d);
    let xpn = [part(0), part(1), part(2), part(4), part(3)];
    xpn.join("^").trim_end_matches('^').to_owned()
}

/// OBR-4 from the stored `code^scheme^meaning`: HL7's `code^text^system`.
fn procedure_code(code: &str, description: &str, d: &Delimiters) -> String {
    let mut parts = code.split('^');
    let (value, scheme, meaning) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let text = if meaning.is_empty() {
        description
    } else {
        meaning
    };
    let e = |s: &str| escape::encode(s, d);
    format!("{}^{}^{}", e(value), e(text), e(scheme))
        .trim_end_matches('^')
        .to_owned()
}

/// Unix seconds as HL7 DTM (UTC).
fn hl7_time(unix: i64) -> String {
    super::timestamp_of(unix)
}

/// What the RIS answered to a message sent with `control_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// AA or CA.
    Accepted(String),
    /// AE, AR, CE or CR, with MSA-3 or ERR's text.
    Refused { code: String, error: String },
}

/// Read the RIS's acknowledgement; `Err` when it is no acknowledgement of
/// this message, which the sender treats like no answer at all.
pub fn read_answer(bytes: &[u8], control_id: &str) -> Result<Answer, String> {
    let ack = Message::parse(bytes).map_err(|e| format!("unreadable acknowledgement: {e}"))?;
    let code = ack.get("MSA", 1).text().to_ascii_uppercase();
    let acknowledged = ack.get("MSA", 2).text();
    if acknowledged != control_id {
        return Err(format!(
            "acknowledgement of {acknowledged:?}, not of {control_id:?}"
        ));
    }
    match code.as_str() {
        "AA" | "CA" => Ok(Answer::Accepted(code)),
        "AE" | "AR" | "CE" | "CR" => {
            let mut error = ack.get("MSA", 3).text();
            if error.is_empty() {
                error = ack.get("ERR", 3).comp(2).text();
            }
            if error.is_empty() {
                error = ack.get("ERR", 1).comp(4).sub(2).text();
            }
            Ok(Answer::Refused { code, error })
        }
        other => Err(format!("MSA-1 {other:?} is no acknowledgement code")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addressing(message: OrderMessage, charset: Charset) -> Addressing {
        Addressing {
            message,
            sending_application: "TESSERA".into(),
            sending_facility: "RAD".into(),
            receiving_application: "RIS".into(),
            receiving_facility: "HOSP".into(),
            charset,
        }
    }

    fn order() -> OrderStatus {
        OrderStatus {
            placer_order: "PL1".into(),
            filler_order: "FI1".into(),
            accession_number: "ACC|1".into(),
            requested_procedure_id: "RP1".into(),
            requested_procedure_code: "CTCHEST^LOCAL^CT chest".into(),
            scheduled_step_id: "SPS1".into(),
            modality: "CT".into(),
            study_instance_uid: "1.2.3".into(),
            patient_id: "P7".into(),
            issuer_of_patient_id: "HOSP".into(),
            patient_name: "Nguyễn^Văn^^Dr".into(),
            patient_birth_date: "19800101".into(),
            patient_sex: "M".into(),
            at: 86_400,
            ..Default::default()
        }
    }

    #[test]
    fn a_completed_step_becomes_an_order_status_message() {
        let to = addressing(OrderMessage::Orm, Charset::Utf8);
        let message = Outbound::Order {
            event: OrderEvent::Completed,
            order: Box::new(order()),
        };
        let rendered = render(42, &message, &to, "20260101120000");
        assert_eq!(rendered.control_id, "TESSERA42");
        let m = Message::parse(&rendered.bytes).expect("parses");
        assert_eq!(m.message_type().0, "ORM");
        assert_eq!(m.get("MSH", 5).text(), "RIS");
        assert_eq!(m.get("MSH", 18).text(), "UNICODE UTF-8");
        assert_eq!(m.get("ORC", 1).text(), "SC");
        assert_eq!(m.get("ORC", 5).text(), "CM");
        assert_eq!(m.get("ORC", 2).text(), "PL1");
        assert_eq!(m.get("ORC", 3).text(), "FI1");
        assert_eq!(m.get("ORC", 9).text(), "19700102000000");
        assert_eq!(m.get("OBR", 18).text(), "ACC|1", "escaped and read back");
        assert_eq!(m.get("OBR", 20).text(), "SPS1");
        assert_eq!(m.get("OBR", 24).text(), "CT");
        assert_eq!(m.get("OBR", 4).comp(2).text(), "CT chest");
        assert_eq!(m.get("PID", 3).comp(4).text(), "HOSP");
        assert_eq!(m.get("PID", 5).comp(1).text(), "Nguyễn");
        assert_eq!(m.get("PID", 5).comp(5).text(), "Dr", "prefix is XPN.5");
        assert_eq!(m.get("ZDS", 1).comp(1).text(), "1.2.3");
    }

    #[test]
    fn omi_carries_an_ipc_and_a_narrow_charset_keeps_the_message() {
        let to = addressing(OrderMessage::Omi, Charset::Latin1);
        let message = Outbound::Order {
            event: OrderEvent::CancelRefused,
            order: Box::new(order()),
        };
        let rendered = render(1, &message, &to, "20260101120000");
        let m = Message::parse(&rendered.bytes).expect("parses as 8859/1");
        assert_eq!(m.get("ORC", 1).text(), "UC");
        assert_eq!(m.get("IPC", 3).comp(1).text(), "1.2.3");
        assert_eq!(m.get("PID", 5).comp(1).text(), "Nguy?n");
    }

    #[test]
    fn answers_are_matched_to_their_message() {
        let ack = |code: &str, control: &str| {
            format!("MSH|^~\\&|RIS||T||1||ACK^O01^ACK|A1|P|2.5.1\rMSA|{code}|{control}|bad order\r")
        };
        assert_eq!(
            read_answer(ack("AA", "TESSERA1").as_bytes(), "TESSERA1"),
            Ok(Answer::Accepted("AA".into()))
        );
        assert_eq!(
            read_answer(ack("AR", "TESSERA1").as_bytes(), "TESSERA1"),
            Ok(Answer::Refused {
                code: "AR".into(),
                error: "bad order".into()
            })
        );
        assert!(read_answer(ack("AA", "TESSERA2").as_bytes(), "TESSERA1").is_err());
        assert!(read_answer(b"garbage", "TESSERA1").is_err());
    }
}
