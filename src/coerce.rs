//! Demographics coercion on retrieve: a copy sent of an object stored
//! before the RIS changed its patient (an ADT update, a merge, a new
//! identifier) carries the patient as the index knows it now, as IHE's
//! Patient Information Reconciliation asks of an archive. Stored objects
//! never change; the copy is patched in memory, bounded like transcoding
//! ([`crate::transcode`]).
//!
//! The index says which instances need it ([`crate::index::RetrieveItem`]'s
//! `coerce`): those whose patient's demographics changed, by HL7, at or
//! after the instance was received.

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::text::{SpecificCharacterSet, TextCodec};
use dicom_object::InMemDicomObject;

use crate::model::PatientMeta;

/// The attributes replaced, with their VRs.
const REPLACED: [(Tag, VR); 5] = [
    (tags::PATIENT_NAME, VR::PN),
    (tags::PATIENT_ID, VR::LO),
    (tags::ISSUER_OF_PATIENT_ID, VR::LO),
    (tags::PATIENT_BIRTH_DATE, VR::DA),
    (tags::PATIENT_SEX, VR::CS),
];

fn values(p: &PatientMeta) -> [&str; 5] {
    [
        &p.patient_name,
        &p.patient_id,
        &p.issuer_of_patient_id,
        &p.patient_birth_date,
        &p.patient_sex,
    ]
}

/// Put `patient` into `obj`. When the object's character set cannot hold
/// the new name, the object switches to UTF-8 (ISO_IR 192): its other text
/// is held decoded and is written again in the new set.
pub fn apply(obj: &mut InMemDicomObject, patient: &PatientMeta) {
    let declared = obj
        .element(tags::SPECIFIC_CHARACTER_SET)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let fits = SpecificCharacterSet::from_code(&declared)
        .is_some_and(|cs| values(patient).iter().all(|v| cs.encode(v).is_ok()));
    if !fits {
        obj.put(DataElement::new(
            tags::SPECIFIC_CHARACTER_SET,
            VR::CS,
            PrimitiveValue::from("ISO_IR 192"),
        ));
    }
    for ((tag, vr), value) in REPLACED.into_iter().zip(values(patient)) {
        if value.is_empty() && obj.element(tag).is_err() {
            continue;
        }
        obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
    }
}

/// Put `patient` into a DICOM JSON document (an object keyed by tag).
pub fn apply_json(doc: &mut serde_json::Value, patient: &PatientMeta) {
    let Some(map) = doc.as_object_mut() else {
        return;
    };
    for ((tag, vr), value) in REPLACED.into_iter().zip(values(patient)) {
        let key = format!("{:04X}{:04X}", tag.group(), tag.element());
        let vr_name = vr.to_string();
        let element = if value.is_empty() {
            serde_json::json!({ "vr": vr_name })
        } else if vr == VR::PN {
            serde_json::json!({ "vr": vr_name, "Value": [{ "Alphabetic": value }] })
        } else {
            serde_json::json!({ "vr": vr_name, "Value": [value] })
        };
        if value.is_empty() && !map.contains_key(&key) {
            continue;
        }
        map.insert(key, element);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patient() -> PatientMeta {
        PatientMeta {
            patient_id: "PID9".into(),
            issuer_of_patient_id: String::new(),
            patient_name: "Nguyễn^Thị".into(),
            patient_birth_date: "19700101".into(),
            patient_sex: "F".into(),
        }
    }

    #[test]
    fn a_name_the_set_lacks_switches_the_object_to_utf8() {
        let mut obj = InMemDicomObject::from_element_iter([
            DataElement::new(
                tags::SPECIFIC_CHARACTER_SET,
                VR::CS,
                PrimitiveValue::from("ISO_IR 100"),
            ),
            DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from("Old^Name")),
            DataElement::new(
                tags::STUDY_DESCRIPTION,
                VR::LO,
                PrimitiveValue::from("Schädel"),
            ),
        ]);
        apply(&mut obj, &patient());
        let text = |tag| {
            obj.element(tag)
                .ok()
                .and_then(|e| e.to_str().ok())
                .map(|s| s.into_owned())
                .unwrap_or_default()
        };
        assert_eq!(text(tags::PATIENT_NAME), "Nguyễn^Thị");
        assert_eq!(text(tags::SPECIFIC_CHARACTER_SET), "ISO_IR 192");
        assert_eq!(text(tags::STUDY_DESCRIPTION), "Schädel");
        assert_eq!(text(tags::PATIENT_ID), "PID9");
        assert!(
            obj.element(tags::ISSUER_OF_PATIENT_ID).is_err(),
            "no empty issuer added"
        );
    }

    #[test]
    fn json_documents_take_the_patient_too() {
        let mut doc = serde_json::json!({
            "00100010": { "vr": "PN", "Value": [{ "Alphabetic": "Old^Name" }] },
            "00100020": { "vr": "LO", "Value": ["OLD"] },
            "0020000D": { "vr": "UI", "Value": ["1.2.3"] }
        });
        apply_json(&mut doc, &patient());
        assert_eq!(doc["00100010"]["Value"][0]["Alphabetic"], "Nguyễn^Thị");
        assert_eq!(doc["00100020"]["Value"][0], "PID9");
        assert_eq!(doc["00100040"]["Value"][0], "F");
        assert_eq!(doc["0020000D"]["Value"][0], "1.2.3");
        assert!(doc.get("00100021").is_none());
    }
}
