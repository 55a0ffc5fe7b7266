//! ADT messages: patients, their identifiers and visits. Each trigger
//! becomes [`PatientChange`]s; HL7 values become DICOM ones here (names as
//! PN, dates as DA, sex as M/F/O).

use crate::hl7::{ErrorCondition, Field, Message, Segment};
use crate::index::patients::{Demographics, PatientChange, PatientKey, Visit};

use super::{Problem, Settings};

/// Triggers that create or update a patient (and a visit when PV1 has a
/// visit number), with the visit status each implies.
const UPDATES: &[(&str, &str)] = &[
    ("A01", "admitted"),
    ("A02", "transferred"),
    ("A03", "discharged"),
    ("A04", "registered"),
    ("A05", "pre-admitted"),
    ("A06", "admitted"),
    ("A07", "registered"),
    ("A08", ""),
    ("A11", "cancelled"),
    ("A12", "admitted"),
    ("A13", "admitted"),
    ("A28", ""),
    ("A31", ""),
];
const MERGES: &[&str] = &["A18", "A34", "A40"];
const ID_CHANGES: &[&str] = &["A46", "A47"];

pub(super) fn interpret(
    m: &Message,
    trigger: &str,
    settings: Settings,
) -> Result<Vec<PatientChange>, Problem> {
    if let Some((_, status)) = UPDATES.iter().find(|(t, _)| *t == trigger) {
        let pid = required(m, "PID")?;
        let key = patient_key(m.field(pid, 3), settings).ok_or_else(|| {
            Problem::error(ErrorCondition::new(101, "PID-3 holds no patient ID").at("PID", 3))
        })?;
        let demographics = demographics(m, pid)?;
        let mut changes = vec![PatientChange::Update {
            key: key.clone(),
            demographics,
        }];
        if let Some(visit) = m.segment("PV1").and_then(|pv1| visit(m, pv1, status)) {
            changes.push(PatientChange::Visit { key, visit });
        }
        return Ok(changes);
    }
    let merge = MERGES.contains(&trigger);
    if merge || ID_CHANGES.contains(&trigger) {
        return pairs(m, settings, merge);
    }
    Err(Problem::reject(
        ErrorCondition::new(201, format!("ADT^{trigger} is not supported")).at("MSH", 9),
    ))
}

/// Each PID with the MRG that follows it (A40 may carry several pairs).
fn pairs(m: &Message, settings: Settings, merge: bool) -> Result<Vec<PatientChange>, Problem> {
    let mut changes = Vec::new();
    let mut pid: Option<&Segment> = None;
    for segment in m.segments() {
        match segment.name() {
            "PID" => pid = Some(segment),
            "MRG" => {
                let Some(p) = pid.take() else {
                    return Err(Problem::error(
                        ErrorCondition::new(100, "MRG without a PID before it").at("MRG", 1),
                    ));
                };
                let survivor = patient_key(m.field(p, 3), settings).ok_or_else(|| {
                    Problem::error(
                        ErrorCondition::new(101, "PID-3 holds no patient ID").at("PID", 3),
                    )
                })?;
                let prior = patient_key(m.field(segment, 1), settings).ok_or_else(|| {
                    Problem::error(
                        ErrorCondition::new(101, "MRG-1 holds no prior patient ID").at("MRG", 1),
                    )
                })?;
                let demographics = demographics(m, p)?;
                changes.push(if merge {
                    PatientChange::Merge {
                        survivor,
                        demographics,
                        prior,
                    }
                } else {
                    PatientChange::ChangeId {
                        new: survivor,
                        demographics,
                        old: prior,
                    }
                });
            }
            _ => {}
        }
    }
    if changes.is_empty() {
        return Err(Problem::error(
            ErrorCondition::new(100, "no PID/MRG pair").at("MRG", 1),
        ));
    }
    Ok(changes)
}

fn required<'a>(m: &'a Message, name: &str) -> Result<&'a Segment, Problem> {
    m.segment(name).ok_or_else(|| {
        Problem::error(
            ErrorCondition::new(100, format!("the {name} segment is missing")).at(name, 1),
        )
    })
}

/// The patient a CX list names: the repetition typed MR if any, else the
/// first.
pub(super) fn patient_key(list: Field<'_>, settings: Settings) -> Option<PatientKey> {
    let reps = list.reps();
    let chosen = reps
        .iter()
        .find(|r| r.comp(5).text().eq_ignore_ascii_case("MR"))
        .or_else(|| reps.first())?;
    let id = chosen.comp(1).text();
    if id.is_empty() {
        return None;
    }
    let issuer = if settings.use_issuer {
        chosen.comp(4).sub(1).text()
    } else {
        String::new()
    };
    Some(PatientKey { id, issuer })
}

pub(super) fn demographics(m: &Message, pid: &Segment) -> Result<Demographics, Problem> {
    let sent = |n: usize| {
        let f = m.field(pid, n);
        (!f.is_empty()).then_some(f)
    };
    let birth_date = match sent(7) {
        Some(f) => Some(dicom_date(&f.text()).ok_or_else(|| {
            Problem::error(
                ErrorCondition::new(102, format!("PID-7: {:?} is not a date", f.text()))
                    .at("PID", 7),
            )
        })?),
        None => None,
    };
    let sex = match sent(8) {
        Some(f) => Some(dicom_sex(&f.text()).ok_or_else(|| {
            Problem::error(
                ErrorCondition::new(103, format!("PID-8: {:?} is not in table 0001", f.text()))
                    .at("PID", 8),
            )
        })?),
        None => None,
    };
    let other_ids = {
        let mut ids: Vec<String> = Vec::new();
        for n in [2, 3, 4] {
            for rep in m.field(pid, n).reps() {
                let id = rep.comp(1).text();
                let issuer = rep.comp(4).sub(1).text();
                if !id.is_empty() {
                    ids.push(if issuer.is_empty() {
                        id
                    } else {
                        format!("{id}^{issuer}")
                    });
                }
            }
        }
        // The first of PID-3 is the patient's own ID.
        let own = m.field(pid, 3);
        let own = patient_key(own, Settings { use_issuer: false }).map(|k| k.id);
        ids.retain(|id| Some(id.split('^').next().unwrap_or("")) != own.as_deref());
        (!ids.is_empty()).then(|| ids.join("\\"))
    };
    Ok(Demographics {
        name: sent(5).map(|f| person_name(&f)),
        birth_date,
        sex,
        address: sent(11).map(|f| {
            let a = f.rep(1);
            join(&[1, 2, 3, 4, 5, 6].map(|n| a.comp(n).text()), ", ")
        }),
        phone: sent(13).map(|f| {
            let t = f.rep(1);
            let plain = t.comp(1).text();
            if !plain.is_empty() {
                plain
            } else if !t.comp(12).text().is_empty() {
                t.comp(12).text()
            } else {
                join(&[t.comp(6).text(), t.comp(7).text()], " ")
            }
        }),
        other_ids,
    })
}

fn join(parts: &[String], separator: &str) -> String {
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join(separator)
}

/// XPN repetitions as a DICOM PN: the alphabetic, ideographic and phonetic
/// groups (XPN-8 A, I, P), each family^given^middle^prefix^suffix.
pub(super) fn person_name(field: &Field<'_>) -> String {
    let mut groups: [Option<String>; 3] = [None, None, None];
    for rep in field.reps() {
        let slot = match rep.comp(8).text().as_str() {
            "I" => 1,
            "P" => 2,
            _ => 0,
        };
        if groups[slot].is_some() {
            continue;
        }
        let parts = [
            rep.comp(1).sub(1).text(),
            rep.comp(2).text(),
            rep.comp(3).text(),
            rep.comp(5).text(),
            rep.comp(4).text(),
        ];
        let mut pn = parts.join("^");
        while pn.ends_with('^') {
            pn.pop();
        }
        groups[slot] = Some(pn);
    }
    let mut pn = groups
        .iter()
        .map(|g| g.clone().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("=");
    while pn.ends_with('=') {
        pn.pop();
    }
    pn
}

/// An HL7 date or date-time as DICOM DA; `None` when it is not a date.
pub(super) fn dicom_date(value: &str) -> Option<String> {
    if value.is_empty() {
        return Some(String::new());
    }
    let digits: String = value.chars().take_while(char::is_ascii_digit).collect();
    let rest = &value[digits.len()..];
    // Fractions of a second after the seconds, then an optional +/-ZZZZ.
    let rest = match rest.strip_prefix('.') {
        Some(fraction) if digits.len() == 14 => {
            fraction.trim_start_matches(|c: char| c.is_ascii_digit())
        }
        Some(_) => return None,
        None => rest,
    };
    let zone_ok = rest.is_empty()
        || (rest.len() == 5
            && rest.starts_with(['+', '-'])
            && rest[1..].chars().all(|c| c.is_ascii_digit()));
    if !zone_ok {
        return None;
    }
    if ![4, 6, 8, 10, 12, 14].contains(&digits.len()) {
        return None;
    }
    let date: String = digits.chars().take(8).collect();
    if !crate::model::valid_date(&date) {
        return None;
    }
    if digits.len() >= 10 && digits.get(8..10).and_then(|h| h.parse::<u32>().ok())? > 23 {
        return None;
    }
    Some(digits.chars().take(8).collect())
}

/// HL7 table 0001 as DICOM Patient's Sex.
fn dicom_sex(value: &str) -> Option<String> {
    Some(
        match value.to_ascii_uppercase().as_str() {
            "M" => "M",
            "F" => "F",
            "O" | "A" | "N" | "X" => "O",
            "U" | "" => "",
            _ => return None,
        }
        .to_owned(),
    )
}

fn visit(m: &Message, pv1: &Segment, status: &str) -> Option<Visit> {
    let number = m.field(pv1, 19).comp(1).text();
    if number.is_empty() {
        return None;
    }
    let location = m.field(pv1, 3);
    let attending = m.field(pv1, 7).rep(1);
    Some(Visit {
        number,
        class: m.field(pv1, 2).text(),
        location: join(&[1, 2, 3, 4].map(|n| location.comp(n).text()), " "),
        attending: {
            let mut pn = [2, 3, 4].map(|n| attending.comp(n).text()).join("^");
            while pn.ends_with('^') {
                pn.pop();
            }
            pn
        },
        admitted_at: m.field(pv1, 44).comp(1).text(),
        discharged_at: m.field(pv1, 45).comp(1).text(),
        status: status.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(dicom_date("19800214").as_deref(), Some("19800214"));
        assert_eq!(dicom_date("198002141230+0100").as_deref(), Some("19800214"));
        assert_eq!(dicom_date("1980").as_deref(), Some("1980"));
        assert_eq!(dicom_date("20230229"), None);
        assert_eq!(dicom_date("20240229").as_deref(), Some("20240229"));
        assert_eq!(dicom_date("2024-01-05"), None);
        assert_eq!(dicom_date("20241345"), None);
    }

    #[test]
    fn names_become_pn_groups() {
        let m = Message::parse(
            "MSH|^~\\&|A|B|C|D|||ADT^A01|1|P|2.5||||||UNICODE UTF-8\rPID|1||1||Yamada^Tarou^^^Dr^^L^A~山田^太郎^^^^^L^I~やまだ^たろう^^^^^L^P\r"
                .as_bytes(),
        )
        .expect("parses");
        assert_eq!(
            person_name(&m.get("PID", 5)),
            "Yamada^Tarou^^Dr=山田^太郎=やまだ^たろう"
        );
    }
}
