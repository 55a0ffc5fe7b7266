//! DICOM JSON (PS3.18 F.2) for values held in the index.

use dicom_core::{Tag, VR};
use serde_json::{json, Map, Value};

use crate::query::{Attribute, ValueKind};

pub fn tag_key(tag: Tag) -> String {
    format!("{:04X}{:04X}", tag.group(), tag.element())
}

/// One attribute's JSON element from its index text form.
pub fn element(attribute: Attribute, text: &str) -> Value {
    let vr = attribute.vr();
    value_element(vr, attribute.kind(), text)
}

/// An element of `vr` from text, multi-valued on backslashes.
pub fn value_element(vr: VR, kind: ValueKind, text: &str) -> Value {
    let mut element = Map::new();
    element.insert("vr".into(), Value::from(vr.to_string()));
    if text.is_empty() {
        return Value::Object(element);
    }
    let values: Vec<Value> = match vr {
        VR::PN => vec![person_name(text)],
        VR::IS | VR::US | VR::UL | VR::SL | VR::SS => text
            .split('\\')
            .filter_map(|v| v.trim().parse::<i64>().ok())
            .map(Value::from)
            .collect(),
        _ if kind == ValueKind::List => text.split('\\').map(Value::from).collect(),
        _ => vec![Value::from(text)],
    };
    if !values.is_empty() {
        element.insert("Value".into(), Value::Array(values));
    }
    Value::Object(element)
}

/// `Alphabetic=Ideographic=Phonetic` groups as a PN object.
fn person_name(text: &str) -> Value {
    let mut name = Map::new();
    for (group, key) in text
        .split('=')
        .zip(["Alphabetic", "Ideographic", "Phonetic"])
    {
        if !group.is_empty() {
            name.insert(key.into(), Value::from(group));
        }
    }
    Value::Object(name)
}

/// A UR or CS element with one value.
pub fn single(vr: &str, value: &str) -> Value {
    json!({ "vr": vr, "Value": [value] })
}
