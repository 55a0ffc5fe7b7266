//! ORU^R01: each OBR with the OBX segments after it is one report. Text
//! values (OBX-5, every repetition) become its lines, escapes decoded;
//! OBR-25 gives its status.

use crate::hl7::{ErrorCondition, Message, Segment};
use crate::index::hl7::Change;
use crate::index::patients::PatientChange;
use crate::index::reports::Report;

use super::adt::patient_key;
use super::{Problem, Settings};

/// OBR-25 (HL7 table 0123) as a report status.
fn status(code: &str) -> &'static str {
    match code {
        "F" => "final",
        "C" => "corrected",
        "X" => "cancelled",
        _ => "preliminary",
    }
}

pub(super) fn interpret(m: &Message, settings: Settings) -> Result<Vec<Change>, Problem> {
    let patient = m
        .segment("PID")
        .and_then(|pid| patient_key(m.field(pid, 3), settings));
    let mut changes = Vec::new();
    if let (Some(key), Some(pid)) = (&patient, m.segment("PID")) {
        changes.push(Change::Patient(PatientChange::Update {
            key: key.clone(),
            demographics: super::adt::demographics(m, pid)?,
        }));
    }
    let mut current: Option<(&Segment, Vec<String>, String)> = None;
    let mut reports = Vec::new();
    for segment in m.segments() {
        match segment.name() {
            "OBR" => {
                if let Some(done) = current.take() {
                    reports.push(done);
                }
                current = Some((segment, Vec::new(), String::new()));
            }
            "OBX" => {
                if let Some((_, lines, study)) = current.as_mut() {
                    let kind = m.field(segment, 2).text();
                    let value = m.field(segment, 5);
                    if kind == "RP" || m.field(segment, 3).comp(1).text() == "113014" {
                        // A reference to the study (DICOM Study, DCM 113014).
                        *study = value.comp(1).text();
                        continue;
                    }
                    for rep in value.reps() {
                        lines.push(rep.text());
                    }
                }
            }
            "ZDS" => {
                if let Some((_, _, study)) = current.as_mut() {
                    *study = m.field(segment, 1).comp(1).text();
                }
            }
            _ => {}
        }
    }
    reports.extend(current);
    if reports.is_empty() {
        return Err(Problem::error(
            ErrorCondition::new(100, "no OBR segment").at("OBR", 1),
        ));
    }
    for (obr, lines, study) in reports {
        let f = |n: usize| m.field(obr, n).comp(1).text();
        let accession = f(18);
        let (placer, filler) = (f(2), f(3));
        if accession.is_empty() && placer.is_empty() && filler.is_empty() && study.is_empty() {
            return Err(Problem::error(
                ErrorCondition::new(101, "the report names no order, accession number or study")
                    .at("OBR", 18),
            ));
        }
        let interpreter = m.field(obr, 32).rep(1).comp(1);
        let mut author = [interpreter.sub(2).text(), interpreter.sub(3).text()].join("^");
        while author.ends_with('^') {
            author.pop();
        }
        changes.push(Change::Report(Report {
            study_instance_uid: study,
            accession_number: accession,
            placer_order: placer,
            filler_order: filler,
            patient_id: patient.as_ref().map(|k| k.id.clone()).unwrap_or_default(),
            status: status(&f(25).to_ascii_uppercase()).to_owned(),
            observed_at: f(7),
            author,
            body: lines.join("\n"),
        }));
    }
    Ok(changes)
}
