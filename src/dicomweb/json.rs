//! DICOM JSON (PS3.18 F.2) for values held in the index, written straight
//! into a response buffer.

use dicom_core::{Tag, VR};

use crate::query::{Attribute, ValueKind};

pub fn tag_key(tag: Tag) -> String {
    format!("{:04X}{:04X}", tag.group(), tag.element())
}

/// A JSON string, escaped.
pub fn push_string(out: &mut Vec<u8>, text: &str) {
    // Writing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// `"GGGGEEEE":`
pub fn push_key(out: &mut Vec<u8>, tag: Tag) {
    out.push(b'"');
    out.extend_from_slice(tag_key(tag).as_bytes());
    out.extend_from_slice(b"\":");
}

/// One attribute's element from its index text form: `{"vr":…}` with a
/// `Value` array unless empty; numbers for IS/US, PN objects, lists split
/// on backslashes.
pub fn write_element(out: &mut Vec<u8>, attribute: Attribute, text: &str) {
    let vr = attribute.vr();
    out.extend_from_slice(b"{\"vr\":\"");
    out.extend_from_slice(vr.to_string().as_bytes());
    out.push(b'"');
    if text.is_empty() {
        out.push(b'}');
        return;
    }
    let start = out.len();
    out.extend_from_slice(b",\"Value\":[");
    let mut any = false;
    match vr {
        VR::PN => {
            write_person_name(out, text);
            any = true;
        }
        VR::IS | VR::US | VR::UL | VR::SL | VR::SS => {
            for n in text
                .split('\\')
                .filter_map(|v| v.trim().parse::<i64>().ok())
            {
                if any {
                    out.push(b',');
                }
                out.extend_from_slice(n.to_string().as_bytes());
                any = true;
            }
        }
        _ if attribute.kind() == ValueKind::List => {
            for value in text.split('\\') {
                if any {
                    out.push(b',');
                }
                push_string(out, value);
                any = true;
            }
        }
        _ => {
            push_string(out, text);
            any = true;
        }
    }
    if any {
        out.extend_from_slice(b"]}");
    } else {
        // No parsable value: an empty element rather than an empty array.
        out.truncate(start);
        out.push(b'}');
    }
}

/// `Alphabetic=Ideographic=Phonetic` groups as a PN object.
fn write_person_name(out: &mut Vec<u8>, text: &str) {
    out.push(b'{');
    let mut first = true;
    for (group, key) in text
        .split('=')
        .zip(["Alphabetic", "Ideographic", "Phonetic"])
    {
        if group.is_empty() {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        push_string(out, key);
        out.push(b':');
        push_string(out, group);
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(attribute: Attribute, text: &str) -> serde_json::Value {
        let mut out = Vec::new();
        write_element(&mut out, attribute, text);
        serde_json::from_slice(&out).expect("valid JSON")
    }

    #[test]
    fn elements_follow_dicom_json() {
        use serde_json::json;
        assert_eq!(
            written(Attribute::PatientName, "Wang^XiaoDong=王^小東"),
            json!({"vr":"PN","Value":[{"Alphabetic":"Wang^XiaoDong","Ideographic":"王^小東"}]})
        );
        assert_eq!(
            written(Attribute::NumberOfStudyRelatedInstances, "12"),
            json!({"vr":"IS","Value":[12]})
        );
        assert_eq!(
            written(Attribute::ModalitiesInStudy, "CT\\MR"),
            json!({"vr":"CS","Value":["CT","MR"]})
        );
        assert_eq!(written(Attribute::StudyDate, ""), json!({"vr":"DA"}));
        assert_eq!(
            written(Attribute::StudyDescription, "say \"hi\""),
            json!({"vr":"LO","Value":["say \"hi\""]})
        );
        assert_eq!(written(Attribute::SeriesNumber, "x"), json!({"vr":"IS"}));
    }
}
