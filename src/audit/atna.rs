//! The DICOM audit message (PS3.15 A.5.1, the format IHE ATNA uses) for
//! one event, as XML, and its RFC 5424 syslog frame.

use base64::Engine;

use super::event::{Actor, AuditEvent, Code, Event};

/// Text for an XML attribute or element.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Not allowed in XML 1.0 at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

fn code(element: &str, (code, scheme, meaning): Code) -> String {
    format!(
        "<{element} csd-code=\"{code}\" codeSystemName=\"{scheme}\" originalText=\"{meaning}\"/>"
    )
}

/// Unix microseconds as xs:dateTime in UTC.
pub fn date_time(micros: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Who Tessera is in the messages.
#[derive(Debug, Clone)]
pub struct Source {
    /// AuditSourceID: the AE title and host.
    pub id: String,
    pub ae_title: String,
    pub host: String,
}

/// The message for `event` recorded at `micros`.
pub fn message(event: &AuditEvent, micros: i64, source: &Source) -> String {
    let e = event.event;
    let mut xml = String::with_capacity(1024);
    xml.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?><AuditMessage>");
    xml.push_str(&format!(
        "<EventIdentification EventActionCode=\"{}\" EventDateTime=\"{}\" EventOutcomeIndicator=\"{}\">",
        e.action(),
        date_time(micros),
        event.outcome as u8
    ));
    xml.push_str(&code("EventID", e.id()));
    if let Some(t) = e.type_code() {
        xml.push_str(&code("EventTypeCode", t));
    }
    xml.push_str("</EventIdentification>");

    // Who asked, and Tessera; for transfers, which end sent and which
    // received.
    let (requestor_role, tessera_role) = match e {
        Event::Stored => (Some(SOURCE_ROLE), Some(DESTINATION_ROLE)),
        Event::Retrieved | Event::Exported => (Some(DESTINATION_ROLE), Some(SOURCE_ROLE)),
        _ => (None, None),
    };
    let access_point = if event.address.is_empty() {
        String::new()
    } else {
        let kind = if event.address.parse::<std::net::IpAddr>().is_ok() {
            2
        } else {
            1
        };
        format!(
            " NetworkAccessPointID=\"{}\" NetworkAccessPointTypeCode=\"{kind}\"",
            escape(&event.address)
        )
    };
    if event.actor != Actor::Local {
        xml.push_str(&format!(
            "<ActiveParticipant UserID=\"{}\" UserIsRequestor=\"true\"{access_point}>",
            escape(event.actor.name())
        ));
        if let Some(role) = requestor_role {
            xml.push_str(&code("RoleIDCode", role));
        }
        xml.push_str("</ActiveParticipant>");
    }
    xml.push_str(&format!(
        "<ActiveParticipant UserID=\"{}\" AlternativeUserID=\"{}\" UserIsRequestor=\"{}\" \
         NetworkAccessPointID=\"{}\" NetworkAccessPointTypeCode=\"1\">",
        escape(&source.ae_title),
        std::process::id(),
        event.actor == Actor::Local,
        escape(&source.host)
    ));
    if let Some(role) = tessera_role {
        xml.push_str(&code("RoleIDCode", role));
    }
    xml.push_str("</ActiveParticipant>");
    xml.push_str(&format!(
        "<AuditSourceIdentification AuditSourceID=\"{}\">{}</AuditSourceIdentification>",
        escape(&source.id),
        code(
            "AuditSourceTypeCode",
            ("4", "DCM", "Application Server Process")
        )
    ));

    for patient in &event.patients {
        xml.push_str(&participant(patient, 1, 1, PATIENT_NUMBER, ""));
    }
    for study in &event.studies {
        xml.push_str(&participant(study, 2, 3, STUDY_UID, ""));
    }
    if !event.detail.is_empty() {
        xml.push_str(&detail_object(e, &event.detail));
    }
    xml.push_str("</AuditMessage>");
    xml
}

const SOURCE_ROLE: Code = ("110153", "DCM", "Source Role ID");
const DESTINATION_ROLE: Code = ("110152", "DCM", "Destination Role ID");

const PATIENT_NUMBER: Code = ("2", "RFC-3881", "Patient Number");
const STUDY_UID: Code = ("110180", "DCM", "Study Instance UID");
const SOP_CLASS_UID: Code = ("110181", "DCM", "SOP Class UID");
const USER_IDENTIFIER: Code = ("11", "RFC-3881", "User Identifier");
const URI: Code = ("12", "RFC-3881", "URI");

/// One ParticipantObjectIdentification: its ID, type and role codes, ID
/// type, and any inner elements (`inner`, already XML).
fn participant(id: &str, type_code: u8, role: u8, id_type: Code, inner: &str) -> String {
    format!(
        "<ParticipantObjectIdentification ParticipantObjectID=\"{}\" \
         ParticipantObjectTypeCode=\"{type_code}\" ParticipantObjectTypeCodeRole=\"{role}\">{}{inner}\
         </ParticipantObjectIdentification>",
        escape(id),
        code("ParticipantObjectIDTypeCode", id_type)
    )
}

/// What the event was about beyond patients and studies: the query of a
/// Query, the account of a login or account change, and otherwise a
/// description (peer, HL7 message type, destination).
fn detail_object(e: Event, detail: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(detail.as_bytes());
    match e {
        Event::Queried => participant(
            "query",
            2,
            3,
            SOP_CLASS_UID,
            &format!("<ParticipantObjectQuery>{b64}</ParticipantObjectQuery>"),
        ),
        Event::UserChanged | Event::Lockout | Event::Login | Event::Logout => {
            participant(detail, 2, 13, USER_IDENTIFIER, "")
        }
        _ => participant(
            &detail.chars().take(64).collect::<String>(),
            2,
            13,
            URI,
            &format!("<ParticipantObjectDetail type=\"Description\" value=\"{b64}\"/>"),
        ),
    }
}

/// The message as an RFC 5424 syslog message in RFC 5425 (TLS) framing:
/// `LEN SP MSG`. Facility authpriv (10); severity notice, or warning for
/// a failure.
pub fn syslog_frame(xml: &str, micros: i64, host: &str, failure: bool) -> Vec<u8> {
    let pri = 10 * 8 + if failure { 4 } else { 5 };
    let msg = format!(
        "<{pri}>1 {} {} tessera {} IHE+RFC-3881 - \u{feff}{xml}",
        date_time(micros),
        if host.is_empty() { "-" } else { host },
        std::process::id()
    );
    let mut frame = format!("{} ", msg.len()).into_bytes();
    frame.extend_from_slice(msg.as_bytes());
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::Outcome;

    #[test]
    fn message_names_who_what_and_outcome() {
        let event = AuditEvent::new(Event::Retrieved, Actor::User("dr<x>".into()), "10.0.0.5")
            .outcome(Outcome::MinorFailure)
            .patients(["P&1".to_owned()])
            .studies(["1.2.3".to_owned()]);
        let source = Source {
            id: "TESSERA@pacs".into(),
            ae_title: "TESSERA".into(),
            host: "pacs".into(),
        };
        let xml = message(&event, 1_764_752_400_123_456, &source);
        assert!(xml.contains("EventActionCode=\"R\""), "{xml}");
        assert!(
            xml.contains("EventDateTime=\"2025-12-03T09:00:00.123456Z\""),
            "{xml}"
        );
        assert!(xml.contains("EventOutcomeIndicator=\"4\""), "{xml}");
        assert!(xml.contains("csd-code=\"110104\""), "{xml}");
        assert!(xml.contains("UserID=\"dr&lt;x&gt;\""), "{xml}");
        assert!(xml.contains("NetworkAccessPointID=\"10.0.0.5\" NetworkAccessPointTypeCode=\"2\""));
        assert!(xml.contains("ParticipantObjectID=\"P&amp;1\""), "{xml}");
        assert!(xml.contains("ParticipantObjectID=\"1.2.3\""), "{xml}");
        let frame = syslog_frame(&xml, 0, "pacs", true);
        let text = String::from_utf8(frame).expect("utf8");
        let (len, rest) = text.split_once(' ').expect("length");
        assert_eq!(len.parse::<usize>().expect("number"), rest.len());
        assert!(
            rest.starts_with("<84>1 1970-01-01T00:00:00Z pacs tessera "),
            "{rest}"
        );
    }
}
