//! The protocol-neutral query model shared by C-FIND (and later QIDO-RS and
//! the worklist): which level is asked for, which attributes constrain the
//! match and how (PS3.4 C.2.2.2), and which are to be returned.
//!
//! [`Query::from_identifier`] turns a C-FIND identifier into a [`Query`];
//! [`crate::index`] turns a `Query` into SQL. Neither edge nor index sees the
//! other's representation.

mod attribute;

use dicom_core::header::Header;
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

pub use attribute::{Attribute, ValueKind};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("Query/Retrieve Level (0008,0052) is missing")]
    MissingLevel,
    #[error("unknown Query/Retrieve Level {0:?}")]
    BadLevel(String),
    #[error("level {level:?} is not part of the {root:?} root information model")]
    LevelNotInModel { level: Level, root: Root },
    #[error("invalid range {0:?}")]
    BadRange(String),
    #[error("invalid date {0:?}: dates are YYYYMMDD")]
    BadDate(String),
    #[error("invalid time {0:?}: times are HHMMSS.FFFFFF")]
    BadTime(String),
    #[error("invalid date-time {0:?}: date-times are YYYYMMDDHHMMSS.FFFFFF&ZZXX")]
    BadDateTime(String),
    #[error("the value of {0} contains a control character")]
    ControlCharacter(&'static str),
    #[error(
        "a {level} level retrieve needs {key} as one UID or a list of UIDs, without wildcards"
    )]
    MissingUniqueKey {
        level: &'static str,
        key: &'static str,
    },
}

/// The hierarchy level of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Patient,
    Study,
    Series,
    Image,
}

impl Level {
    pub fn keyword(self) -> &'static str {
        match self {
            Level::Patient => "PATIENT",
            Level::Study => "STUDY",
            Level::Series => "SERIES",
            Level::Image => "IMAGE",
        }
    }
}

/// The information model (Patient Root or Study Root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    Patient,
    Study,
}

/// How one attribute constrains the match (PS3.4 C.2.2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// Zero-length value: matches everything, value is returned.
    Universal,
    /// Exact match (case-insensitive and diacritic-insensitive for names).
    Single(String),
    /// `*` and `?` wildcards.
    Wildcard(String),
    /// Inclusive range of dates, times or date-times; either end may be open.
    Range {
        from: Option<String>,
        to: Option<String>,
    },
    /// Any of several values: a UID list, or codes for ModalitiesInStudy.
    AnyOf(Vec<String>),
}

/// A matching or return key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub attribute: Attribute,
    pub matcher: Matcher,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub level: Level,
    /// Keys Tessera can match and return.
    pub keys: Vec<Key>,
    /// Requested attributes the index does not hold: returned empty.
    pub unsupported: Vec<Tag>,
    /// StudyDate and StudyTime ranges form one date-time range (PS3.4
    /// C.2.2.2.5.1), when negotiated.
    pub combined_date_time: bool,
    /// Person names match case- and diacritic-insensitively.
    pub fuzzy_names: bool,
    /// Only studies this referring user may see.
    pub referrer: Option<Referrer>,
}

/// A referring user: the studies that name them (Referring Physician's
/// Name, folded for matching) and those shared with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    pub user: String,
    pub physician_folded: String,
}

impl Query {
    /// A query at `level` with no keys yet.
    pub fn new(level: Level) -> Self {
        Query {
            level,
            keys: Vec::new(),
            unsupported: Vec::new(),
            combined_date_time: false,
            fuzzy_names: true,
            referrer: None,
        }
    }

    /// Add a key from its DICOM string form (wildcards, ranges, lists).
    /// A key given twice keeps the last value.
    /// A value with a control character (a NUL, say) is refused rather than
    /// trimmed to nothing, which would match everything.
    pub fn add_key(&mut self, attribute: Attribute, raw: &str) -> Result<(), QueryError> {
        if raw.chars().any(|c| c.is_control() && c != '\x1b') {
            return Err(QueryError::ControlCharacter(attribute.keyword()));
        }
        let matcher = matcher_for(attribute, raw.trim_matches(['\0', ' ']))?;
        self.keys.retain(|k| k.attribute != attribute);
        self.keys.push(Key { attribute, matcher });
        Ok(())
    }

    /// Build a query from a C-FIND identifier. Text is expected as UTF-8 or
    /// the default repertoire (dicom-rs has already decoded it).
    pub fn from_identifier(identifier: &InMemDicomObject, root: Root) -> Result<Self, QueryError> {
        let level_text = identifier
            .get(tags::QUERY_RETRIEVE_LEVEL)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim().to_owned())
            .ok_or(QueryError::MissingLevel)?;
        let level = match level_text.as_str() {
            "PATIENT" => Level::Patient,
            "STUDY" => Level::Study,
            "SERIES" => Level::Series,
            "IMAGE" => Level::Image,
            other => return Err(QueryError::BadLevel(other.to_owned())),
        };
        if root == Root::Study && level == Level::Patient {
            return Err(QueryError::LevelNotInModel { level, root });
        }
        let mut keys = Vec::new();
        let mut unsupported = Vec::new();
        for element in identifier.iter() {
            let tag = element.tag();
            if tag == tags::QUERY_RETRIEVE_LEVEL
                || tag == tags::SPECIFIC_CHARACTER_SET
                || tag.group() == 0x0000
            {
                continue;
            }
            let members = Attribute::members_of(tag);
            if !members.is_empty() {
                sequence_keys(element, members, level, &mut keys)?;
                continue;
            }
            let Some(attribute) = Attribute::from_tag(tag) else {
                unsupported.push(tag);
                continue;
            };
            if attribute.level() > level {
                // Keys below the query level are not allowed; ignore them.
                continue;
            }
            let raw = element
                .to_str()
                .map(|s| s.trim_matches(['\0', ' ']).to_owned())
                .unwrap_or_default();
            let matcher = matcher_for(attribute, &raw)?;
            keys.push(Key { attribute, matcher });
        }
        Ok(Query {
            level,
            keys,
            unsupported,
            combined_date_time: false,
            fuzzy_names: true,
            referrer: None,
        })
    }

    /// PS3.4 C.4.2.2.1 (hierarchical retrieve): the unique key of the
    /// retrieve level names the objects, as one value or a UID list, and
    /// any unique key above it is a single value. This refuses a request
    /// that would otherwise select the whole archive.
    pub fn check_retrieve_keys(&self) -> Result<(), QueryError> {
        let unique = [
            (Level::Patient, Attribute::PatientId),
            (Level::Study, Attribute::StudyInstanceUid),
            (Level::Series, Attribute::SeriesInstanceUid),
            (Level::Image, Attribute::SopInstanceUid),
        ];
        for (level, attribute) in unique {
            if level > self.level {
                break;
            }
            let matcher = self
                .keys
                .iter()
                .find(|k| k.attribute == attribute)
                .map(|k| &k.matcher);
            let ok = match matcher {
                Some(Matcher::Single(_)) => true,
                Some(Matcher::AnyOf(_)) => level == self.level,
                // Above the retrieve level a unique key may be left out
                // (Study Root has no patient level; many SCUs send only
                // the level's own key), but never as a wildcard.
                None => level != self.level,
                _ => false,
            };
            if !ok {
                return Err(QueryError::MissingUniqueKey {
                    level: self.level.keyword(),
                    key: attribute.keyword(),
                });
            }
        }
        Ok(())
    }
}

/// Keys from a sequence key attribute (PS3.4 C.2.2.2.6): the attributes of
/// its single item match as top-level keys would (an item matches when all
/// do); an empty sequence or empty item asks for every attribute held.
fn sequence_keys(
    element: &dicom_object::mem::InMemElement,
    members: &[Attribute],
    level: Level,
    keys: &mut Vec<Key>,
) -> Result<(), QueryError> {
    if members.iter().any(|a| a.level() > level) {
        return Ok(());
    }
    let item = element.items().and_then(|items| items.first());
    let given: Vec<(Attribute, String)> = item
        .map(|item| {
            item.iter()
                .filter_map(|e| {
                    let attribute = Attribute::in_sequence(element.tag(), e.tag())?;
                    let raw = e
                        .to_str()
                        .map(|s| s.trim_matches(['\0', ' ']).to_owned())
                        .unwrap_or_default();
                    Some((attribute, raw))
                })
                .collect()
        })
        .unwrap_or_default();
    if given.is_empty() {
        keys.extend(members.iter().map(|a| Key {
            attribute: *a,
            matcher: Matcher::Universal,
        }));
        return Ok(());
    }
    for (attribute, raw) in given {
        keys.push(Key {
            attribute,
            matcher: matcher_for(attribute, &raw)?,
        });
    }
    Ok(())
}

/// A DA value: YYYYMMDD, a real calendar day.
fn is_date(value: &str) -> bool {
    if value.len() != 8 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let n = |r: std::ops::Range<usize>| value[r].parse::<u32>().unwrap_or(0);
    let (year, month, day) = (n(0..4), n(4..6), n(6..8));
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day)
}

/// A TM value (PS3.5 6.2): HH, HHMM, HHMMSS or HHMMSS.F to .FFFFFF.
fn is_time(value: &str) -> bool {
    let (whole, fraction) = match value.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (value, None),
    };
    let fraction_ok = fraction.is_none_or(|f| {
        whole.len() == 6 && (1..=6).contains(&f.len()) && f.bytes().all(|b| b.is_ascii_digit())
    });
    let limits = [24u32, 60, 60];
    fraction_ok
        && matches!(whole.len(), 2 | 4 | 6)
        && whole.bytes().all(|b| b.is_ascii_digit())
        && whole
            .as_bytes()
            .chunks(2)
            .zip(limits)
            .all(|(pair, limit)| u32::from(pair[0] - b'0') * 10 + u32::from(pair[1] - b'0') < limit)
}

/// A DT value: YYYY[MM[DD[HH[MM[SS[.F]]]]]] with an optional &ZZXX offset.
fn is_date_time(value: &str) -> bool {
    let (local, offset) = match value.find(['+', '-']) {
        Some(i) => (&value[..i], Some(&value[i + 1..])),
        None => (value, None),
    };
    let offset_ok = offset.is_none_or(|o| o.len() == 4 && o.bytes().all(|b| b.is_ascii_digit()));
    let date_len = local.len().min(8);
    let (date, time) = local.split_at(date_len);
    let date_ok = match date.len() {
        4 => date.bytes().all(|b| b.is_ascii_digit()),
        6 => date.bytes().all(|b| b.is_ascii_digit()) && is_date(&format!("{date}01")),
        8 => is_date(date),
        _ => false,
    };
    offset_ok && date_ok && (time.is_empty() || (date.len() == 8 && is_time(time)))
}

fn matcher_for(attribute: Attribute, raw: &str) -> Result<Matcher, QueryError> {
    if raw.is_empty() || raw == "*" {
        return Ok(Matcher::Universal);
    }
    match attribute.kind() {
        ValueKind::Uid => {
            let uids: Vec<String> = raw
                .split('\\')
                .map(|u| u.trim().to_owned())
                .filter(|u| !u.is_empty())
                .collect();
            Ok(if uids.len() > 1 {
                Matcher::AnyOf(uids)
            } else {
                Matcher::Single(raw.to_owned())
            })
        }
        ValueKind::Date | ValueKind::Time | ValueKind::DateTime if raw.contains('-') => {
            let (from, to) = raw
                .split_once('-')
                .ok_or_else(|| QueryError::BadRange(raw.into()))?;
            if raw.matches('-').count() != 1 {
                return Err(QueryError::BadRange(raw.into()));
            }
            let end = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
            let (from, to) = (end(from), end(to));
            let valid = match attribute.kind() {
                ValueKind::Date => is_date,
                ValueKind::Time => is_time,
                _ => is_date_time,
            };
            if ![&from, &to].iter().all(|e| e.as_deref().is_none_or(valid))
                || (from.is_none() && to.is_none())
            {
                return Err(QueryError::BadRange(raw.into()));
            }
            Ok(Matcher::Range { from, to })
        }
        ValueKind::Date if !is_date(raw) => Err(QueryError::BadDate(raw.into())),
        ValueKind::Time if !is_time(raw) => Err(QueryError::BadTime(raw.into())),
        ValueKind::DateTime if !is_date_time(raw) => Err(QueryError::BadDateTime(raw.into())),
        ValueKind::Number | ValueKind::Date | ValueKind::Time | ValueKind::DateTime => {
            Ok(Matcher::Single(raw.to_owned()))
        }
        ValueKind::Text | ValueKind::Name | ValueKind::Code => {
            if raw.contains(['*', '?']) {
                Ok(Matcher::Wildcard(raw.to_owned()))
            } else {
                Ok(Matcher::Single(raw.to_owned()))
            }
        }
        ValueKind::List => Ok(Matcher::AnyOf(
            raw.split('\\')
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .collect(),
        )),
        // Counters are return keys only.
        ValueKind::Count => Ok(Matcher::Universal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};

    fn identifier(level: &str, keys: &[(Tag, VR, &str)]) -> InMemDicomObject {
        let mut obj = InMemDicomObject::new_empty();
        obj.put(DataElement::new(
            tags::QUERY_RETRIEVE_LEVEL,
            VR::CS,
            PrimitiveValue::from(level),
        ));
        for (tag, vr, value) in keys {
            obj.put(DataElement::new(*tag, *vr, PrimitiveValue::from(*value)));
        }
        obj
    }

    #[test]
    fn matching_kinds() {
        let q = Query::from_identifier(
            &identifier(
                "STUDY",
                &[
                    (tags::PATIENT_NAME, VR::PN, "Ngu*"),
                    (tags::PATIENT_ID, VR::LO, "PID1"),
                    (tags::STUDY_DATE, VR::DA, "20200101-"),
                    (tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3\\1.2.4"),
                    (tags::ACCESSION_NUMBER, VR::SH, ""),
                    (tags::SERIES_INSTANCE_UID, VR::UI, "9.9"),
                    (Tag(0x0009, 0x0010), VR::LO, ""),
                ],
            ),
            Root::Study,
        )
        .expect("valid");
        assert_eq!(q.level, Level::Study);
        let m = |a: Attribute| {
            q.keys
                .iter()
                .find(|k| k.attribute == a)
                .map(|k| k.matcher.clone())
        };
        assert_eq!(
            m(Attribute::PatientName),
            Some(Matcher::Wildcard("Ngu*".into()))
        );
        assert_eq!(
            m(Attribute::PatientId),
            Some(Matcher::Single("PID1".into()))
        );
        assert_eq!(
            m(Attribute::StudyDate),
            Some(Matcher::Range {
                from: Some("20200101".into()),
                to: None
            })
        );
        assert_eq!(
            m(Attribute::StudyInstanceUid),
            Some(Matcher::AnyOf(vec!["1.2.3".into(), "1.2.4".into()]))
        );
        assert_eq!(m(Attribute::AccessionNumber), Some(Matcher::Universal));
        assert_eq!(m(Attribute::SeriesInstanceUid), None, "below the level");
        assert_eq!(q.unsupported, vec![Tag(0x0009, 0x0010)]);
    }

    #[test]
    fn dates_and_times_are_checked() {
        for bad in ["20201340", "20200230", "2020011", "abcdefgh"] {
            assert!(matcher_for(Attribute::StudyDate, bad).is_err(), "{bad}");
        }
        for bad in ["abc", "25", "1260", "126061", "1200.5", "120000.1234567"] {
            assert!(matcher_for(Attribute::StudyTime, bad).is_err(), "{bad}");
        }
        assert!(matcher_for(Attribute::StudyDate, "20240229").is_ok());
        assert!(matcher_for(Attribute::StudyTime, "235959.999999").is_ok());
        assert!(matcher_for(Attribute::StudyTime, "1200-1300").is_ok());
        assert!(matcher_for(Attribute::StudyTime, "1200-99").is_err());
        assert!(matcher_for(Attribute::StudyDate, "-").is_err());
    }

    #[test]
    fn control_characters_are_refused() {
        let mut q = Query::new(Level::Study);
        assert_eq!(
            q.add_key(Attribute::PatientName, "\0"),
            Err(QueryError::ControlCharacter("PatientName"))
        );
        assert!(q.add_key(Attribute::PatientName, "Doe^J*").is_ok());
    }

    #[test]
    fn retrieve_needs_unique_keys() {
        let q = |level: &str, keys: &[(Tag, VR, &str)]| {
            Query::from_identifier(&identifier(level, keys), Root::Study).expect("valid")
        };
        let study = (tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3");
        assert!(q("STUDY", &[study]).check_retrieve_keys().is_ok());
        assert!(
            q("STUDY", &[(tags::STUDY_INSTANCE_UID, VR::UI, "1.2\\1.3")])
                .check_retrieve_keys()
                .is_ok()
        );
        for empty in [
            &[][..],
            &[(tags::STUDY_INSTANCE_UID, VR::UI, "")],
            &[(tags::STUDY_INSTANCE_UID, VR::UI, "*")],
        ] {
            assert!(q("STUDY", empty).check_retrieve_keys().is_err());
        }
        assert!(q("SERIES", &[study]).check_retrieve_keys().is_err());
        assert!(q(
            "SERIES",
            &[study, (tags::SERIES_INSTANCE_UID, VR::UI, "4.5")]
        )
        .check_retrieve_keys()
        .is_ok());
        assert!(q(
            "SERIES",
            &[
                (tags::STUDY_INSTANCE_UID, VR::UI, "1.2\\1.3"),
                (tags::SERIES_INSTANCE_UID, VR::UI, "4.5")
            ]
        )
        .check_retrieve_keys()
        .is_err());
    }

    #[test]
    fn bad_identifiers() {
        let no_level = InMemDicomObject::new_empty();
        assert_eq!(
            Query::from_identifier(&no_level, Root::Study),
            Err(QueryError::MissingLevel)
        );
        assert!(Query::from_identifier(&identifier("PATIENT", &[]), Root::Study).is_err());
        assert!(Query::from_identifier(&identifier("FRAME", &[]), Root::Patient).is_err());
        assert!(Query::from_identifier(
            &identifier("STUDY", &[(tags::STUDY_DATE, VR::DA, "2020-2021-2022")]),
            Root::Study
        )
        .is_err());
    }
}
