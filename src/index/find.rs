//! Query matching in SQL: a [`crate::query::Query`] becomes one SELECT over
//! the level's table joined to its parents, with every matching key a bound
//! parameter. Rows stream back; nothing collects the whole result.

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Index, IndexError};
use crate::model::{fold_for_matching, PatientMeta};
use crate::query::{Attribute, Level, Matcher, Query, ValueKind};

/// A value bound into the statement.
#[derive(Debug, Clone, PartialEq)]
enum Bind {
    Text(String),
    Int(i64),
}

/// One matching entity: the value of every attribute at or above the
/// query level, as text (empty when the entity has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindRow {
    pub values: Vec<(Attribute, String)>,
}

impl FindRow {
    pub fn get(&self, attribute: Attribute) -> &str {
        self.values
            .iter()
            .find(|(a, _)| *a == attribute)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// A prepared statement for a query; it owns its SQL and parameters so the
/// row stream can borrow them.
#[derive(Debug, Clone)]
pub struct FindPlan {
    sql: String,
    binds: Vec<Bind>,
    selected: Vec<(Attribute, bool)>,
}

/// Column expression and whether it holds an integer.
fn column(attribute: Attribute) -> (&'static str, bool) {
    use Attribute::*;
    match attribute {
        PatientName => ("p.patient_name", false),
        PatientId => ("p.patient_id", false),
        IssuerOfPatientId => ("p.issuer_of_patient_id", false),
        PatientBirthDate => ("p.patient_birth_date", false),
        PatientSex => ("p.patient_sex", false),
        NumberOfPatientRelatedStudies => ("p.num_studies", true),
        NumberOfPatientRelatedSeries => ("p.num_series", true),
        NumberOfPatientRelatedInstances => ("p.num_instances", true),
        StudyInstanceUid => ("st.study_instance_uid", false),
        StudyDate => ("st.study_date", false),
        StudyTime => ("st.study_time", false),
        AccessionNumber => ("st.accession_number", false),
        StudyId => ("st.study_id", false),
        StudyDescription => ("st.study_description", false),
        ReferringPhysicianName => ("st.referring_physician_name", false),
        ModalitiesInStudy => ("st.modalities_in_study", false),
        TimezoneOffsetFromUtc => ("st.timezone_offset_from_utc", false),
        NumberOfStudyRelatedSeries => ("st.num_series", true),
        NumberOfStudyRelatedInstances => ("st.num_instances", true),
        SeriesInstanceUid => ("se.series_instance_uid", false),
        Modality => ("se.modality", false),
        SeriesNumber => ("se.series_number", true),
        SeriesDescription => ("se.series_description", false),
        SeriesDate => ("se.series_date", false),
        SeriesTime => ("se.series_time", false),
        BodyPartExamined => ("se.body_part_examined", false),
        PerformedProcedureStepStartDate => ("se.pps_start_date", false),
        PerformedProcedureStepStartTime => ("se.pps_start_time", false),
        NumberOfSeriesRelatedInstances => ("se.num_instances", true),
        ScheduledProcedureStepId => ("se.scheduled_procedure_step_id", false),
        RequestedProcedureId => ("se.requested_procedure_id", false),
        SopInstanceUid => ("i.sop_instance_uid", false),
        SopClassUid => ("i.sop_class_uid", false),
        InstanceNumber => ("i.instance_number", true),
        Rows => ("i.pixel_rows", true),
        Columns => ("i.pixel_columns", true),
        NumberOfFrames => ("i.number_of_frames", true),
        BitsAllocated => ("i.bits_allocated", true),
        ContentDate => ("i.content_date", false),
        ContentTime => ("i.content_time", false),
        // The syntax it is stored in, the one every retrieve can give.
        AvailableTransferSyntaxUid => ("i.transfer_syntax_uid", false),
    }
}

/// The folded column used for case- and diacritic-insensitive names.
fn folded_column(attribute: Attribute) -> Option<&'static str> {
    match attribute {
        Attribute::PatientName => Some("p.patient_name_folded"),
        Attribute::ReferringPhysicianName => Some("st.referring_physician_name_folded"),
        _ => None,
    }
}

fn from_clause(level: Level) -> (&'static str, &'static str) {
    match level {
        Level::Patient => ("patients p", "p.id"),
        Level::Study => ("studies st JOIN patients p ON p.id = st.patient_fk", "st.id"),
        Level::Series => (
            "series se JOIN studies st ON st.id = se.study_fk JOIN patients p ON p.id = st.patient_fk",
            "se.id",
        ),
        Level::Image => (
            "instances i JOIN series se ON se.id = i.series_fk JOIN studies st ON st.id = se.study_fk \
             JOIN patients p ON p.id = st.patient_fk",
            "i.id",
        ),
    }
}

/// DICOM wildcards to a LIKE pattern with `\` as the escape character.
fn like_pattern(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 4);
    for c in pattern.chars() {
        match c {
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '*' => out.push('%'),
            '?' => out.push('_'),
            other => out.push(other),
        }
    }
    out
}

/// WHERE conditions and their parameters for a query's keys.
fn conditions(query: &Query) -> (Vec<String>, Vec<Bind>) {
    let mut binds = Vec::new();
    let mut conditions = Vec::new();
    let param = |binds: &mut Vec<Bind>, b: Bind| {
        binds.push(b);
        format!("${}", binds.len())
    };
    let range_of = |attribute: Attribute| {
        query
            .keys
            .iter()
            .find_map(|k| match (&k.matcher, k.attribute == attribute) {
                (Matcher::Range { from, to }, true) => Some((from.clone(), to.clone())),
                _ => None,
            })
    };
    let combined = match (
        range_of(Attribute::StudyDate),
        range_of(Attribute::StudyTime),
    ) {
        (Some(date), Some(time)) if query.combined_date_time => Some((date, time)),
        _ => None,
    };
    if let Some(((date_from, date_to), (time_from, time_to))) = &combined {
        // One range over date and time together: 20200314 1300 to 20200315 1230.
        let column = "(st.study_date || st.study_time)";
        conditions.push("st.study_date <> ''".to_owned());
        if let Some(d) = date_from {
            let t = time_from.clone().unwrap_or_default();
            conditions.push(format!(
                "{column} >= {}",
                param(&mut binds, Bind::Text(format!("{d}{t}")))
            ));
        }
        if let Some(d) = date_to {
            let t = time_to.clone().unwrap_or_else(|| "~".into());
            conditions.push(format!(
                "{column} <= {}",
                param(&mut binds, Bind::Text(format!("{d}{t}~")))
            ));
        }
    }
    for key in &query.keys {
        let attribute = key.attribute;
        if combined.is_some() && matches!(attribute, Attribute::StudyDate | Attribute::StudyTime) {
            continue;
        }
        let (col, integer) = column(attribute);
        let name_col = folded_column(attribute).filter(|_| query.fuzzy_names);
        match &key.matcher {
            // Counters are return keys only (the query model never
            // builds another matcher for them).
            Matcher::Universal => {}
            _ if attribute.kind() == ValueKind::Count => {}
            Matcher::Single(v) if integer => match v.trim().parse::<i64>() {
                Ok(n) => conditions.push(format!("{col} = {}", param(&mut binds, Bind::Int(n)))),
                Err(_) => conditions.push("1 = 0".to_owned()),
            },
            Matcher::Single(v) => match name_col {
                Some(folded) => conditions.push(format!(
                    "{folded} = {}",
                    param(&mut binds, Bind::Text(fold_for_matching(v)))
                )),
                None => conditions.push(format!(
                    "{col} = {}",
                    param(&mut binds, Bind::Text(v.clone()))
                )),
            },
            Matcher::Wildcard(v) => {
                let (target, value) = match name_col {
                    Some(folded) => (folded, fold_for_matching(v)),
                    None => (col, v.clone()),
                };
                conditions.push(format!(
                    "{target} LIKE {} ESCAPE '\\'",
                    param(&mut binds, Bind::Text(like_pattern(&value)))
                ));
            }
            Matcher::Range { from, to } => {
                conditions.push(format!("{col} <> ''"));
                if let Some(from) = from {
                    conditions.push(format!(
                        "{col} >= {}",
                        param(&mut binds, Bind::Text(from.clone()))
                    ));
                }
                if let Some(to) = to {
                    // '~' sorts after digits and '.', so "1200" also
                    // admits "120059.5".
                    conditions.push(format!(
                        "{col} <= {}",
                        param(&mut binds, Bind::Text(format!("{to}~")))
                    ));
                }
            }
            Matcher::AnyOf(values) if attribute == Attribute::ModalitiesInStudy => {
                let list: Vec<String> = values
                    .iter()
                    .map(|v| param(&mut binds, Bind::Text(v.clone())))
                    .collect();
                conditions.push(format!(
                    "st.id IN (SELECT study_fk FROM series WHERE modality IN ({}))",
                    list.join(", ")
                ));
            }
            Matcher::AnyOf(values) => {
                let list: Vec<String> = values
                    .iter()
                    .map(|v| param(&mut binds, Bind::Text(v.clone())))
                    .collect();
                conditions.push(format!("{col} IN ({})", list.join(", ")));
            }
        }
    }
    if let Some(referrer) = &query.referrer {
        let physician = param(
            &mut binds,
            Bind::Text(referrer.physician_folded.trim().to_owned()),
        );
        let user = param(&mut binds, Bind::Text(referrer.user.clone()));
        let now = param(&mut binds, Bind::Int(super::unix_now()));
        conditions.push(super::shares::visible_condition(&physician, &user, &now));
    }
    (conditions, binds)
}

/// One instance to send for a C-MOVE or C-GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrieveItem {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax_uid: String,
    pub key: String,
    /// The patient to send it with, when the RIS changed it after the
    /// instance was received ([`crate::coerce`]).
    pub coerce: Option<PatientMeta>,
}

/// Columns that say whether, and to what, an instance is coerced; `i` and
/// `p` are the instance and its patient.
pub(super) const COERCE_COLUMNS: &str = "CASE WHEN p.demographics_changed_at >= i.received_at \
     THEN 1 ELSE 0 END, p.patient_id, p.issuer_of_patient_id, p.patient_name, \
     p.patient_birth_date, p.patient_sex";

/// The patient of [`COERCE_COLUMNS`] starting at column `at`, when coerced.
pub(super) fn coerce_of(
    row: &sqlx::any::AnyRow,
    at: usize,
    enabled: bool,
) -> Result<Option<PatientMeta>, IndexError> {
    let changed: i64 = row.try_get(at)?;
    if !enabled || changed == 0 {
        return Ok(None);
    }
    Ok(Some(PatientMeta {
        patient_id: row.try_get(at + 1)?,
        issuer_of_patient_id: row.try_get(at + 2)?,
        patient_name: row.try_get(at + 3)?,
        patient_birth_date: row.try_get(at + 4)?,
        patient_sex: row.try_get(at + 5)?,
    }))
}

impl Index {
    /// Plan a query returning at most `limit` rows.
    pub fn plan_find(&self, query: &Query, limit: usize) -> FindPlan {
        self.plan_find_page(query, limit, 0)
    }

    /// Plan a query returning at most `limit` rows after skipping `offset`.
    pub fn plan_find_page(&self, query: &Query, limit: usize, offset: usize) -> FindPlan {
        self.plan_find_columns(query, limit, offset, Attribute::ALL)
    }

    /// As [`Index::plan_find_page`], reading only `wanted` (those at or
    /// above the query level): fewer columns cost less per row.
    pub fn plan_find_columns(
        &self,
        query: &Query,
        limit: usize,
        offset: usize,
        wanted: &[Attribute],
    ) -> FindPlan {
        let selected: Vec<(Attribute, bool)> = Attribute::ALL
            .iter()
            .filter(|a| a.level() <= query.level && wanted.contains(a))
            .map(|a| (*a, column(*a).1))
            .collect();
        let (from, order) = from_clause(query.level);
        let (conditions, binds) = conditions(query);
        let columns: Vec<&str> = selected.iter().map(|(a, _)| column(*a).0).collect();
        let mut sql = format!("SELECT {} FROM {from}", columns.join(", "));
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        sql.push_str(&format!(" ORDER BY {order} LIMIT {}", limit.max(1)));
        if offset > 0 {
            sql.push_str(&format!(" OFFSET {offset}"));
        }
        FindPlan {
            sql,
            binds,
            selected,
        }
    }

    /// The instances a retrieve identifier selects, in series and instance
    /// order. Holds only keys, never object data.
    pub async fn retrieve_items(&self, query: &Query) -> Result<Vec<RetrieveItem>, IndexError> {
        let (from, _) = from_clause(Level::Image);
        let (conditions, binds) = conditions(query);
        let mut sql = format!(
            "SELECT i.sop_class_uid, i.sop_instance_uid, i.transfer_syntax_uid, i.object_key, \
             {COERCE_COLUMNS} FROM {from}"
        );
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        sql.push_str(" ORDER BY se.id, i.instance_number, i.id");
        let mut q = sqlx::query(&sql);
        for b in &binds {
            q = match b {
                Bind::Text(s) => q.bind(s.as_str()),
                Bind::Int(n) => q.bind(*n),
            };
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(RetrieveItem {
                    sop_class_uid: r.try_get(0)?,
                    sop_instance_uid: r.try_get(1)?,
                    transfer_syntax_uid: r.try_get(2)?,
                    key: r.try_get(3)?,
                    coerce: coerce_of(r, 4, self.coerces())?,
                })
            })
            .collect()
    }

    /// Run a plan and return all its rows: the connection is released
    /// before the caller does anything with them. Plans are bounded pages.
    pub async fn find_page(&self, plan: &FindPlan) -> Result<Vec<FindRow>, IndexError> {
        let mut q = sqlx::query(&plan.sql);
        for b in &plan.binds {
            q = match b {
                Bind::Text(s) => q.bind(s.as_str()),
                Bind::Int(n) => q.bind(*n),
            };
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(|r| decode(r, &plan.selected)).collect()
    }

    /// Run a plan, streaming matches.
    pub fn find<'a>(&'a self, plan: &'a FindPlan) -> BoxStream<'a, Result<FindRow, IndexError>> {
        let mut q = sqlx::query(&plan.sql);
        for b in &plan.binds {
            q = match b {
                Bind::Text(s) => q.bind(s.as_str()),
                Bind::Int(n) => q.bind(*n),
            };
        }
        q.fetch(&self.pool)
            .map_err(IndexError::from)
            .and_then(move |row| async move { decode(&row, &plan.selected) })
            .boxed()
    }
}

fn decode(row: &AnyRow, selected: &[(Attribute, bool)]) -> Result<FindRow, IndexError> {
    let mut values = Vec::with_capacity(selected.len());
    for (i, (attribute, integer)) in selected.iter().enumerate() {
        let value = if *integer {
            row.try_get::<Option<i64>, _>(i)?
                .map(|n| n.to_string())
                .unwrap_or_default()
        } else {
            row.try_get::<String, _>(i)?
        };
        values.push((*attribute, value));
    }
    Ok(FindRow { values })
}

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn wildcards_become_like_patterns() {
        assert_eq!(like_pattern("ngu*"), "ngu%");
        assert_eq!(like_pattern("a?c"), "a_c");
        assert_eq!(like_pattern("100%_x\\"), "100\\%\\_x\\\\");
    }
}
