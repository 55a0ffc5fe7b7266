//! A study's search document, and the result row it stores.

use serde::{Deserialize, Serialize};
use tantivy::TantivyDocument;

use super::fields::Fields;
use crate::index::search::StudyDocument;

/// One search result: what the study browser shows in a row.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StudySummary {
    pub study_instance_uid: String,
    pub patient_name: String,
    pub patient_id: String,
    pub birth_date: String,
    pub sex: String,
    pub accession_number: String,
    pub study_date: String,
    pub description: String,
    pub referring_physician: String,
    pub modalities: Vec<String>,
    pub series_count: i64,
    pub instance_count: i64,
    pub status: String,
    pub has_report: bool,
}

/// YYYYMMDD as a number; 0 when the date is missing or malformed.
pub fn date_number(date: &str) -> i64 {
    let date = date.trim();
    if date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()) {
        date.parse().unwrap_or(0)
    } else {
        0
    }
}

pub fn to_document(f: &Fields, s: &StudyDocument) -> TantivyDocument {
    let mut doc = TantivyDocument::default();
    doc.add_text(f.uid, &s.study_uid);
    // "Yamada^Tarou=山田^太郎=やまだ^たろう": every group is a name form.
    doc.add_text(f.name, &s.patient_name);
    doc.add_text(f.name_exact, &s.patient_name);
    for id in [&s.patient_id, &s.accession_number] {
        if !id.trim().is_empty() {
            doc.add_text(f.id, id.trim());
        }
    }
    for other in s.other_patient_ids.split(['\\', ',']) {
        if !other.trim().is_empty() {
            doc.add_text(f.id, other.trim());
        }
    }
    let mut text = vec![s.study_description.clone()];
    text.extend(s.series_descriptions.iter().cloned());
    text.extend(s.procedures.iter().cloned());
    text.extend(s.body_parts.iter().cloned());
    text.extend(s.sites.iter().cloned());
    text.extend(s.modalities.iter().cloned());
    let date = date_number(&s.study_date);
    if date > 0 {
        text.push(format!("{} {}", date / 10_000, date));
    }
    doc.add_text(f.text, text.join("\n"));
    let mut physicians = vec![s.referring_physician.clone()];
    physicians.extend(s.performing_physicians.iter().cloned());
    doc.add_text(f.physician, physicians.join("\n"));
    doc.add_text(f.report, s.reports.join("\n\n"));
    for modality in &s.modalities {
        doc.add_text(f.modality, modality.to_uppercase());
    }
    doc.add_text(f.status, &s.status);
    doc.add_i64(f.date, date);
    doc.add_text(f.referrer, s.referring_folded.trim());
    let summary = StudySummary {
        study_instance_uid: s.study_uid.clone(),
        patient_name: s.patient_name.clone(),
        patient_id: s.patient_id.clone(),
        birth_date: s.birth_date.clone(),
        sex: s.sex.clone(),
        accession_number: s.accession_number.clone(),
        study_date: s.study_date.clone(),
        description: s.study_description.clone(),
        referring_physician: s.referring_physician.clone(),
        modalities: s.modalities.clone(),
        series_count: s.num_series,
        instance_count: s.num_instances,
        status: s.status.clone(),
        has_report: !s.reports.is_empty(),
    };
    doc.add_text(
        f.summary,
        serde_json::to_string(&summary).unwrap_or_default(),
    );
    doc
}
