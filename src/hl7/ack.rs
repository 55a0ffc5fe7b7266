//! Acknowledgements: MSH, MSA and, for an error, ERR, addressed back to
//! the sender in its own delimiters, version and character set.

use super::{escape, Message};

/// MSA-1: original mode (AA/AE/AR) or enhanced-mode accept (CA/CE/CR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    Aa,
    Ae,
    Ar,
    Ca,
    Ce,
    Cr,
}

impl AckCode {
    pub fn as_str(&self) -> &'static str {
        match self {
            AckCode::Aa => "AA",
            AckCode::Ae => "AE",
            AckCode::Ar => "AR",
            AckCode::Ca => "CA",
            AckCode::Ce => "CE",
            AckCode::Cr => "CR",
        }
    }
}

/// What went wrong, for the ERR segment: an HL7 table 0357 code, a text,
/// and where (segment name and field number) when one field is to blame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorCondition {
    pub code: u16,
    pub text: String,
    pub location: Option<(String, usize)>,
}

impl ErrorCondition {
    pub fn new(code: u16, text: impl Into<String>) -> Self {
        ErrorCondition {
            code,
            text: text.into(),
            location: None,
        }
    }

    pub fn at(mut self, segment: &str, field: usize) -> Self {
        self.location = Some((segment.to_owned(), field));
        self
    }
}

/// The acknowledgement of `original` as text (UTF-8; [`to_wire`] encodes
/// it for the sender). `control_id` and `timestamp` are the ACK's own.
pub fn build(
    original: &Message,
    code: AckCode,
    error: Option<&ErrorCondition>,
    control_id: &str,
    timestamp: &str,
) -> String {
    let d = original.delimiters();
    let f = d.field;
    let msh = |n: usize| original.get("MSH", n).raw().to_owned();
    let processing = Some(msh(11))
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "P".into());
    let version = Some(msh(12))
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "2.5".into());
    let (_, trigger, _) = original.message_type();
    let esc = |text: &str| escape::encode(text, d);
    let c = d.component;
    let mut out = format!(
        "MSH{f}{enc}{f}{app}{f}{fac}{f}{to_app}{f}{to_fac}{f}{timestamp}{f}{f}ACK{c}{trigger}{c}ACK{f}{control}{f}{processing}{f}{version}{f}{f}{f}{f}{f}{f}{charset}\r",
        enc = d.encoding_characters(),
        app = msh(5),
        fac = msh(6),
        to_app = msh(3),
        to_fac = msh(4),
        trigger = esc(&trigger),
        control = esc(control_id),
        charset = msh(18),
    );
    let text = error.map_or("", |e| e.text.as_str());
    out.push_str(&format!(
        "MSA{f}{}{f}{}{f}{}\r",
        code.as_str(),
        msh(10),
        esc(text)
    ));
    if let Some(e) = error {
        let s = d.subcomponent;
        let (segment, field) = e.location.clone().unwrap_or_else(|| ("MSH".to_owned(), 0));
        let place = if field > 0 {
            format!("{segment}{c}1{c}{field}")
        } else {
            String::new()
        };
        let condition = format!("{}{c}{}{c}HL70357", e.code, esc(&e.text));
        let legacy = format!(
            "{place}{c}{}{s}{}{s}HL70357",
            e.code,
            esc(&e.text).replace(c, " ")
        );
        let modern = version.as_str() >= "2.5";
        if modern {
            out.push_str(&format!("ERR{f}{legacy}{f}{place}{f}{condition}{f}E\r"));
        } else {
            out.push_str(&format!("ERR{f}{legacy}\r"));
        }
    }
    out
}

/// `ack` encoded in `original`'s character set; a character the set lacks
/// (only possible in an error text) becomes `?`.
pub fn to_wire(original: &Message, ack: &str) -> Vec<u8> {
    original.charset().encode_lossy(ack)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_addresses_the_sender_and_reports_errors() {
        let m = Message::parse(
            b"MSH|^~\\&|RIS|HOSP|PACS|RAD|20240101||ADT^A08^ADT_A01|C42|P|2.5.1||||||8859/1\rPID|1\r",
        )
        .expect("parses");
        let ack = build(&m, AckCode::Aa, None, "ACK1", "20240101120000");
        let parsed = Message::parse(ack.as_bytes()).expect("ack parses");
        assert_eq!(parsed.get("MSH", 3).text(), "PACS");
        assert_eq!(parsed.get("MSH", 5).text(), "RIS");
        assert_eq!(parsed.message_type().0, "ACK");
        assert_eq!(parsed.message_type().1, "A08");
        assert_eq!(parsed.get("MSA", 1).text(), "AA");
        assert_eq!(parsed.get("MSA", 2).text(), "C42");
        assert_eq!(parsed.get("MSH", 18).text(), "8859/1");
        let error = ErrorCondition::new(102, "PID-7: 2024-13-45 is not a date").at("PID", 7);
        let nak = build(&m, AckCode::Ae, Some(&error), "ACK2", "20240101120000");
        let parsed = Message::parse(nak.as_bytes()).expect("nak parses");
        assert_eq!(parsed.get("MSA", 1).text(), "AE");
        assert_eq!(parsed.get("ERR", 3).comp(1).text(), "102");
        assert_eq!(parsed.get("ERR", 2).raw(), "PID^1^7");
        assert_eq!(parsed.get("ERR", 4).text(), "E");
    }
}
