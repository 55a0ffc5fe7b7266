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
        }
    }

    /// Add a key from its DICOM string form (wildcards, ranges, lists).
    /// A key given twice keeps the last value.
    pub fn add_key(&mut self, attribute: Attribute, raw: &str) -> Result<(), QueryError> {
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
        })
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

/// A DA value: YYYYMMDD.
fn is_date(value: &str) -> bool {
    value.len() == 8 && value.bytes().all(|b| b.is_ascii_digit())
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
            if attribute.kind() == ValueKind::Date
                && ![&from, &to]
                    .iter()
                    .all(|e| e.as_deref().is_none_or(is_date))
            {
                return Err(QueryError::BadRange(raw.into()));
            }
            Ok(Matcher::Range { from, to })
        }
        ValueKind::Date if !is_date(raw) => Err(QueryError::BadDate(raw.into())),
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
