//! Orders (ORM^O01, OMI^O23, OMG^O19) become scheduled procedure steps.
//! Every ORC group of a message is read, and every IPC of an OMI group is
//! a step of its own. The order control (ORC-1) and order status (ORC-5)
//! decide what happens to the steps; see docs/hl7.md for the table.

use crate::hl7::{ErrorCondition, Field, Message, Segment};
use crate::index::hl7::Change;
use crate::index::patients::{Demographics, PatientChange};
use crate::index::worklist::{ScheduledStep, StepStatus, WorklistChange};

use super::adt::{dicom_date, patient_key};
use super::{Problem, Settings};

/// What ORC-1 and ORC-5 ask for.
enum Action {
    Schedule(StepStatus),
    SetStatus(StepStatus),
}

fn action(control: &str, status: &str) -> Option<Action> {
    let from_status = |status: &str| match status {
        "" | "SC" | "HD" | "A" => Some(StepStatus::Scheduled),
        "IP" => Some(StepStatus::Started),
        "CM" => Some(StepStatus::Completed),
        "CA" => Some(StepStatus::Canceled),
        "DC" => Some(StepStatus::Discontinued),
        _ => None,
    };
    Some(match control {
        "NW" | "XO" | "XX" => Action::Schedule(from_status(status)?),
        "SC" => match from_status(status)? {
            s @ (StepStatus::Canceled | StepStatus::Discontinued) => Action::SetStatus(s),
            s => Action::Schedule(s),
        },
        "CA" | "OC" | "CR" => Action::SetStatus(StepStatus::Canceled),
        "DC" | "OD" | "DR" => Action::SetStatus(StepStatus::Discontinued),
        _ => return None,
    })
}

/// One ORC with the segments that belong to it.
struct Group<'a> {
    orc: &'a Segment,
    obr: Option<&'a Segment>,
    tq1: Option<&'a Segment>,
    zds: Option<&'a Segment>,
    ipcs: Vec<&'a Segment>,
}

pub(super) fn interpret(m: &Message, settings: Settings) -> Result<Vec<Change>, Problem> {
    let pid = m.segment("PID").ok_or_else(|| {
        Problem::error(ErrorCondition::new(100, "the PID segment is missing").at("PID", 1))
    })?;
    let patient = patient_key(m.field(pid, 3), settings).ok_or_else(|| {
        Problem::error(ErrorCondition::new(101, "PID-3 holds no patient ID").at("PID", 3))
    })?;
    let demographics = super::adt::demographics(m, pid).unwrap_or_else(|_| Demographics::default());
    let mut changes = vec![Change::Patient(PatientChange::Update {
        key: patient.clone(),
        demographics,
    })];
    let groups = groups(m);
    if groups.is_empty() {
        return Err(Problem::error(
            ErrorCondition::new(100, "no ORC segment").at("ORC", 1),
        ));
    }
    for g in groups {
        let control = m.field(g.orc, 1).text().to_ascii_uppercase();
        let status = m.field(g.orc, 5).text().to_ascii_uppercase();
        let Some(act) = action(&control, &status) else {
            return Err(Problem::error(
                ErrorCondition::new(
                    103,
                    format!("order control {control:?} with status {status:?} is not supported"),
                )
                .at("ORC", 1),
            ));
        };
        let placer = first(m, g.orc, 2)
            .or_else(|| g.obr.and_then(|o| first(m, o, 2)))
            .unwrap_or_default();
        let filler = first(m, g.orc, 3)
            .or_else(|| g.obr.and_then(|o| first(m, o, 3)))
            .unwrap_or_default();
        if placer.is_empty() && filler.is_empty() {
            return Err(Problem::error(
                ErrorCondition::new(101, "neither ORC-2 nor ORC-3 names the order").at("ORC", 2),
            ));
        }
        match act {
            Action::SetStatus(status) => {
                changes.push(Change::Worklist(WorklistChange::SetStatus {
                    placer_order: placer,
                    filler_order: filler,
                    status,
                }))
            }
            Action::Schedule(status) => {
                for step in steps(m, &g, placer, filler)? {
                    changes.push(Change::Worklist(WorklistChange::Schedule {
                        patient: patient.clone(),
                        step: Box::new(step),
                        status,
                    }));
                }
            }
        }
    }
    Ok(changes)
}

fn groups(m: &Message) -> Vec<Group<'_>> {
    let mut groups: Vec<Group<'_>> = Vec::new();
    for segment in m.segments() {
        match (segment.name(), groups.last_mut()) {
            ("ORC", _) => groups.push(Group {
                orc: segment,
                obr: None,
                tq1: None,
                zds: None,
                ipcs: Vec::new(),
            }),
            ("OBR", Some(g)) if g.obr.is_none() => g.obr = Some(segment),
            ("TQ1", Some(g)) if g.tq1.is_none() => g.tq1 = Some(segment),
            ("ZDS", Some(g)) => g.zds = Some(segment),
            ("IPC", Some(g)) => g.ipcs.push(segment),
            _ => {}
        }
    }
    groups
}

/// Component 1 of a field, when not empty.
fn first(m: &Message, s: &Segment, n: usize) -> Option<String> {
    Some(m.field(s, n).comp(1).text()).filter(|v| !v.is_empty())
}

fn text_of(f: Field<'_>) -> String {
    f.comp(1).text()
}

fn steps(
    m: &Message,
    g: &Group<'_>,
    placer: String,
    filler: String,
) -> Result<Vec<ScheduledStep>, Problem> {
    let obr = |n: usize| g.obr.map(|o| m.field(o, n));
    let obr_text = |n: usize| obr(n).map(text_of).unwrap_or_default();
    let start = g
        .tq1
        .map(|t| m.field(t, 7).comp(1).text())
        .filter(|v| !v.is_empty())
        .or_else(|| Some(m.field(g.orc, 7).comp(4).comp(1).text()).filter(|v| !v.is_empty()))
        .or_else(|| obr(27).map(|f| f.comp(4).text()).filter(|v| !v.is_empty()))
        .unwrap_or_default();
    let start_date = dicom_date(&start).ok_or_else(|| {
        Problem::error(
            ErrorCondition::new(102, format!("{start:?} is not a date and time")).at("TQ1", 7),
        )
    })?;
    let start_time: String = start
        .chars()
        .skip(8)
        .take_while(char::is_ascii_digit)
        .take(6)
        .collect();
    let priority_code = g
        .tq1
        .map(|t| m.field(t, 9).comp(1).text())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| m.field(g.orc, 7).comp(6).text());
    let priority = match priority_code.to_ascii_uppercase().as_str() {
        "S" => "STAT",
        "A" | "P" => "HIGH",
        "R" => "ROUTINE",
        "C" | "T" => "MEDIUM",
        _ => "",
    }
    .to_owned();
    let code = obr(44)
        .filter(|f| !f.is_empty())
        .or_else(|| obr(4))
        .map(|f| {
            let parts = [f.comp(1).text(), f.comp(3).text(), f.comp(2).text()];
            if parts[0].is_empty() {
                String::new()
            } else {
                parts.join("^")
            }
        })
        .unwrap_or_default();
    let description = obr(4)
        .map(|f| f.comp(2).text())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| obr(44).map(|f| f.comp(2).text()).unwrap_or_default());
    let requesting = {
        let orc12 = m.field(g.orc, 12);
        let f = if orc12.is_empty() {
            obr(16)
        } else {
            Some(orc12)
        };
        f.map(|f| xcn_name(&f)).unwrap_or_default()
    };
    let performing = obr(34)
        .map(|f| {
            let n = f.rep(1).comp(1);
            let mut pn = [n.sub(2).text(), n.sub(3).text()].join("^");
            while pn.ends_with('^') {
                pn.pop();
            }
            pn
        })
        .unwrap_or_default();
    let reason = obr(31)
        .map(|f| {
            let text = f.comp(2).text();
            if text.is_empty() {
                f.comp(1).text()
            } else {
                text
            }
        })
        .unwrap_or_default();
    let stations: Vec<String> = m
        .field(g.orc, 18)
        .reps()
        .iter()
        .map(|r| r.comp(1).text())
        .filter(|s| !s.is_empty())
        .collect();
    let base = ScheduledStep {
        placer_order: placer,
        filler_order: filler,
        accession_number: obr_text(18),
        requested_procedure_id: obr_text(19),
        requested_procedure_code: code,
        requested_procedure_description: description,
        scheduled_step_id: obr_text(20),
        modality: obr_text(24),
        station_ae_titles: stations,
        start_date,
        start_time,
        priority,
        requesting_physician: requesting,
        performing_physician: performing,
        reason,
        study_instance_uid: g
            .zds
            .map(|z| m.field(z, 1).comp(1).text())
            .unwrap_or_default(),
    };
    let mut steps = if g.ipcs.is_empty() {
        vec![base]
    } else {
        g.ipcs
            .iter()
            .map(|ipc| {
                let f = |n: usize| m.field(ipc, n);
                let or = |value: String, fallback: &String| {
                    if value.is_empty() {
                        fallback.clone()
                    } else {
                        value
                    }
                };
                let stations: Vec<String> = f(9)
                    .reps()
                    .iter()
                    .map(|r| r.comp(1).text())
                    .filter(|s| !s.is_empty())
                    .collect();
                ScheduledStep {
                    accession_number: or(text_of(f(1)), &base.accession_number),
                    requested_procedure_id: or(text_of(f(2)), &base.requested_procedure_id),
                    study_instance_uid: or(text_of(f(3)), &base.study_instance_uid),
                    scheduled_step_id: or(text_of(f(4)), &base.scheduled_step_id),
                    modality: or(text_of(f(5)), &base.modality),
                    station_ae_titles: if stations.is_empty() {
                        base.station_ae_titles.clone()
                    } else {
                        stations
                    },
                    ..base.clone()
                }
            })
            .collect()
    };
    for step in &mut steps {
        if step.study_instance_uid.is_empty() {
            step.study_instance_uid = derived_uid(step);
        }
    }
    Ok(steps)
}

/// XCN (ID^family^given^middle^suffix^prefix) as a DICOM PN.
fn xcn_name(f: &Field<'_>) -> String {
    let r = f.rep(1);
    let mut pn = [
        r.comp(2).sub(1).text(),
        r.comp(3).text(),
        r.comp(4).text(),
        r.comp(6).text(),
        r.comp(5).text(),
    ]
    .join("^");
    while pn.ends_with('^') {
        pn.pop();
    }
    pn
}

/// A Study Instance UID for an order that brings none: derived from the
/// order's identity, so that every update of the order keeps it.
fn derived_uid(step: &ScheduledStep) -> String {
    crate::model::derived_uid(&[
        &step.placer_order,
        &step.filler_order,
        &step.accession_number,
        &step.requested_procedure_id,
    ])
}
