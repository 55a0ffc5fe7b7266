//! Scheduled procedure steps, the modality worklist: created and changed
//! by orders from the RIS (or the worklist API), read by the worklist
//! queries. A stored study an order names takes its accession number; a
//! cancel that comes after images is kept as a conflict, never applied to
//! them.

use sqlx::{Any, Row, Transaction};

use super::patients::PatientKey;
use super::{unix_now as now, Index, IndexError};

/// A step's status (Scheduled Procedure Step Status, 0040,0020).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StepStatus {
    Scheduled,
    Started,
    Completed,
    Discontinued,
    Canceled,
}

impl StepStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            StepStatus::Scheduled => "SCHEDULED",
            StepStatus::Started => "STARTED",
            StepStatus::Completed => "COMPLETED",
            StepStatus::Discontinued => "DISCONTINUED",
            StepStatus::Canceled => "CANCELED",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "SCHEDULED" => StepStatus::Scheduled,
            "STARTED" => StepStatus::Started,
            "COMPLETED" => StepStatus::Completed,
            "DISCONTINUED" => StepStatus::Discontinued,
            "CANCELED" => StepStatus::Canceled,
            _ => return None,
        })
    }

    /// Whether the step no longer waits for a modality.
    fn ends(&self) -> bool {
        matches!(self, StepStatus::Discontinued | StepStatus::Canceled)
    }
}

/// One scheduled procedure step as an order describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduledStep {
    pub placer_order: String,
    pub filler_order: String,
    pub accession_number: String,
    pub requested_procedure_id: String,
    /// `code^scheme^meaning`.
    pub requested_procedure_code: String,
    pub requested_procedure_description: String,
    pub scheduled_step_id: String,
    pub modality: String,
    pub station_ae_titles: Vec<String>,
    /// DICOM DA and TM.
    pub start_date: String,
    pub start_time: String,
    pub priority: String,
    pub requesting_physician: String,
    pub performing_physician: String,
    pub reason: String,
    pub study_instance_uid: String,
}

/// What an order asks of the worklist.
#[derive(Debug, Clone)]
pub enum WorklistChange {
    /// Create the step, or change it (same placer, filler and step ID).
    Schedule {
        patient: PatientKey,
        step: Box<ScheduledStep>,
        status: StepStatus,
    },
    /// Change the status of every step of an order.
    SetStatus {
        placer_order: String,
        filler_order: String,
        status: StepStatus,
    },
}

/// A worklist row as the API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorklistItem {
    pub id: i64,
    pub patient_id: String,
    pub patient_name: String,
    pub patient_birth_date: String,
    pub patient_sex: String,
    #[serde(flatten)]
    pub step: ScheduledStep,
    pub status: StepStatus,
    pub updated_at: i64,
}

/// Filters of the worklist listing; each is exact unless said otherwise.
#[derive(Debug, Clone, Default)]
pub struct WorklistFilter {
    pub modality: Option<String>,
    /// One of the step's station AE titles.
    pub station: Option<String>,
    /// DA, inclusive.
    pub from: Option<String>,
    pub to: Option<String>,
    /// TM bounds as six digits ([`crate::model::time_bound`]). With a full
    /// date bound on the same side they combine with it into one instant
    /// (PS3.4 C.2.2.2.5.1: 20261205 0800 to 20261206 1000 is one span);
    /// without one they bound the time of day.
    pub from_time: Option<String>,
    pub to_time: Option<String>,
    pub status: Option<StepStatus>,
    pub patient_id: Option<String>,
    /// A person name, with `*` and `?` wildcards; case and diacritics
    /// are ignored.
    pub patient_name: Option<String>,
    pub accession_number: Option<String>,
    pub step_id: Option<String>,
    /// Like `patient_name`.
    pub performing_physician: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

/// Apply one change. `Ok(Some(reason))` means the change was refused but
/// what it left (a conflict record) is kept.
/// A refused cancel is queued for the RIS when `notify_ris` is set.
pub(super) async fn apply(
    tx: &mut Transaction<'static, Any>,
    change: &WorklistChange,
    notify_ris: bool,
    ids: &super::patients::PatientIds,
) -> Result<Option<String>, IndexError> {
    match change {
        WorklistChange::Schedule {
            patient,
            step,
            status,
        } => {
            schedule(tx, patient, step, *status, ids).await?;
            adopt_performed(tx, step, notify_ris).await?;
            Ok(None)
        }
        WorklistChange::SetStatus {
            placer_order,
            filler_order,
            status,
        } => set_status(tx, placer_order, filler_order, *status, notify_ris).await,
    }
}

async fn schedule(
    tx: &mut Transaction<'static, Any>,
    patient: &PatientKey,
    step: &ScheduledStep,
    status: StepStatus,
    ids: &super::patients::PatientIds,
) -> Result<(), IndexError> {
    let patient_fk = super::patients::id_of(tx, patient, ids)
        .await?
        .ok_or_else(|| IndexError::Corrupt {
            column: "patients",
            value: format!("no patient {:?} for the order", patient.id),
        })?;
    let ts = now();
    sqlx::query(
        "INSERT INTO worklist_items (patient_fk, placer_order, filler_order, accession_number, \
         requested_procedure_id, requested_procedure_code, requested_procedure_description, \
         scheduled_step_id, modality, station_ae_titles, start_date, start_time, priority, \
         requesting_physician, performing_physician, reason, study_instance_uid, status, \
         created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $19) \
         ON CONFLICT (placer_order, filler_order, scheduled_step_id) DO UPDATE SET \
         patient_fk = excluded.patient_fk, accession_number = excluded.accession_number, \
         requested_procedure_id = excluded.requested_procedure_id, \
         requested_procedure_code = excluded.requested_procedure_code, \
         requested_procedure_description = excluded.requested_procedure_description, \
         modality = excluded.modality, station_ae_titles = excluded.station_ae_titles, \
         start_date = excluded.start_date, start_time = excluded.start_time, \
         priority = excluded.priority, requesting_physician = excluded.requesting_physician, \
         performing_physician = excluded.performing_physician, reason = excluded.reason, \
         study_instance_uid = excluded.study_instance_uid, status = excluded.status, \
         updated_at = excluded.updated_at",
    )
    .bind(patient_fk)
    .bind(step.placer_order.as_str())
    .bind(step.filler_order.as_str())
    .bind(step.accession_number.as_str())
    .bind(step.requested_procedure_id.as_str())
    .bind(step.requested_procedure_code.as_str())
    .bind(step.requested_procedure_description.as_str())
    .bind(step.scheduled_step_id.as_str())
    .bind(step.modality.as_str())
    .bind(step.station_ae_titles.join("\\"))
    .bind(step.start_date.as_str())
    .bind(step.start_time.as_str())
    .bind(step.priority.as_str())
    .bind(step.requesting_physician.as_str())
    .bind(step.performing_physician.as_str())
    .bind(step.reason.as_str())
    .bind(step.study_instance_uid.as_str())
    .bind(status.as_str())
    .bind(ts)
    .execute(&mut **tx)
    .await?;
    // An order that comes after its images: the study takes its number.
    if !step.accession_number.is_empty() {
        let changed = sqlx::query(
            "UPDATE studies SET accession_number = $1, updated_at = $2, version = version + 1 \
             WHERE study_instance_uid = $3 AND accession_number <> $1",
        )
        .bind(step.accession_number.as_str())
        .bind(ts)
        .bind(step.study_instance_uid.as_str())
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if changed > 0 {
            tracing::info!(
                study = %step.study_instance_uid,
                accession = %step.accession_number,
                "stored study given the accession number of its order"
            );
        }
    }
    Ok(())
}

/// Performed steps reported before their order (unscheduled MPPS) that
/// name this step, by its step ID (and accession number, when they carry
/// one) or, without a step ID, by its study: linked to it now, and the
/// step takes their progress.
async fn adopt_performed(
    tx: &mut Transaction<'static, Any>,
    step: &ScheduledStep,
    notify_ris: bool,
) -> Result<(), IndexError> {
    // Usually there are none: one statement finds that out.
    let performed = sqlx::query(
        "SELECT p.id, p.status, (SELECT w.id FROM worklist_items w WHERE w.placer_order = $4 \
         AND w.filler_order = $5 AND w.scheduled_step_id = $1) \
         FROM performed_steps p WHERE p.worklist_item_fk IS NULL AND \
         (($1 <> '' AND p.scheduled_step_id = $1 \
         AND (p.accession_number = '' OR p.accession_number = $2)) \
         OR (p.scheduled_step_id = '' AND $3 <> '' AND p.study_instance_uid = $3)) ORDER BY p.id",
    )
    .bind(step.scheduled_step_id.as_str())
    .bind(step.accession_number.as_str())
    .bind(step.study_instance_uid.as_str())
    .bind(step.placer_order.as_str())
    .bind(step.filler_order.as_str())
    .fetch_all(&mut **tx)
    .await?;
    for row in performed {
        let id: i64 = row.try_get(0)?;
        let status: String = row.try_get(1)?;
        let Some(item) = row.try_get::<Option<i64>, _>(2)? else {
            continue;
        };
        let (item_status, event) = match status.as_str() {
            "COMPLETED" => (StepStatus::Completed, super::outbox::OrderEvent::Completed),
            "DISCONTINUED" => (
                StepStatus::Discontinued,
                super::outbox::OrderEvent::Discontinued,
            ),
            _ => (StepStatus::Started, super::outbox::OrderEvent::Started),
        };
        sqlx::query(
            "UPDATE performed_steps SET worklist_item_fk = $1, updated_at = $2 WHERE id = $3",
        )
        .bind(item)
        .bind(now())
        .bind(id)
        .execute(&mut **tx)
        .await?;
        sqlx::query("UPDATE worklist_items SET status = $1, updated_at = $2 WHERE id = $3")
            .bind(item_status.as_str())
            .bind(now())
            .bind(item)
            .execute(&mut **tx)
            .await?;
        if notify_ris {
            super::outbox::queue_order(tx, item, event).await?;
        }
        tracing::info!(
            performed = id,
            item,
            "unscheduled performed step matched to its order"
        );
    }
    Ok(())
}

async fn set_status(
    tx: &mut Transaction<'static, Any>,
    placer_order: &str,
    filler_order: &str,
    status: StepStatus,
    notify_ris: bool,
) -> Result<Option<String>, IndexError> {
    let rows = sqlx::query(
        "SELECT w.id, w.study_instance_uid, w.accession_number, \
         (SELECT CAST(COALESCE(SUM(s.num_instances), 0) AS BIGINT) FROM studies s \
          WHERE s.study_instance_uid = w.study_instance_uid \
          OR (w.accession_number <> '' AND s.accession_number = w.accession_number)) \
         FROM worklist_items w \
         WHERE ($1 <> '' AND w.placer_order = $1) OR ($2 <> '' AND w.filler_order = $2)",
    )
    .bind(placer_order)
    .bind(filler_order)
    .fetch_all(&mut **tx)
    .await?;
    if rows.is_empty() {
        return Ok(Some(format!(
            "no scheduled step for placer order {placer_order:?} / filler order {filler_order:?}"
        )));
    }
    let mut conflicts = Vec::new();
    for row in &rows {
        let id: i64 = row.try_get(0)?;
        let study: String = row.try_get(1)?;
        let instances: i64 = row.try_get(3)?;
        if status.ends() && instances > 0 {
            let detail = format!(
                "{} instance(s) of study {study} were received before the {} arrived; they are kept",
                instances,
                status.as_str().to_lowercase()
            );
            sqlx::query(
                "INSERT INTO worklist_conflicts (worklist_item_fk, study_instance_uid, \
                 requested_status, detail, created_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id)
            .bind(study.as_str())
            .bind(status.as_str())
            .bind(detail.as_str())
            .bind(now())
            .execute(&mut **tx)
            .await?;
            if notify_ris {
                super::outbox::queue_order(tx, id, super::outbox::OrderEvent::CancelRefused)
                    .await?;
            }
            conflicts.push(detail);
            continue;
        }
        sqlx::query("UPDATE worklist_items SET status = $1, updated_at = $2 WHERE id = $3")
            .bind(status.as_str())
            .bind(now())
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    Ok((!conflicts.is_empty()).then(|| conflicts.join("; ")))
}

/// A LIKE pattern for a DICOM name match: `*` and `?` become `%` and `_`,
/// and a name without wildcards also matches longer names that start with
/// it (a family name alone finds the patient).
fn name_pattern(value: &str, fold: bool) -> String {
    let value = if fold {
        crate::model::fold_for_matching(value)
    } else {
        value.to_owned()
    };
    let mut out = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '!' | '%' | '_' => {
                out.push('!');
                out.push(c);
            }
            '*' => out.push('%'),
            '?' => out.push('_'),
            c => out.push(c),
        }
    }
    if !value.contains(['*', '?']) {
        out.push('%');
    }
    out
}

impl Index {
    /// Worklist items, soonest first.
    pub async fn worklist(&self, f: &WorklistFilter) -> Result<Vec<WorklistItem>, IndexError> {
        let mut sql = String::from(
            "SELECT w.id, p.patient_id, p.patient_name, p.patient_birth_date, p.patient_sex, \
             w.placer_order, w.filler_order, w.accession_number, w.requested_procedure_id, \
             w.requested_procedure_code, w.requested_procedure_description, w.scheduled_step_id, \
             w.modality, w.station_ae_titles, w.start_date, w.start_time, w.priority, \
             w.requesting_physician, w.performing_physician, w.reason, w.study_instance_uid, \
             w.status, w.updated_at FROM worklist_items w JOIN patients p ON p.id = w.patient_fk \
             WHERE 1 = 1",
        );
        let mut binds: Vec<String> = Vec::new();
        let mut add = |sql: &mut String, clause: &str, value: String| {
            binds.push(value);
            sql.push_str(&clause.replace("$?", &format!("${}", binds.len())));
        };
        if let Some(m) = &f.modality {
            add(&mut sql, " AND w.modality = $?", m.clone());
        }
        if let Some(s) = &f.station {
            // Backslash-separated list: match a whole value.
            let escaped: String = s
                .chars()
                .flat_map(|c| match c {
                    '!' | '%' | '_' => vec!['!', c],
                    c => vec![c],
                })
                .collect();
            add(
                &mut sql,
                " AND ('\\' || w.station_ae_titles || '\\') LIKE $? ESCAPE '!'",
                format!("%\\{escaped}\\%"),
            );
        }
        if let Some(d) = &f.from {
            add(&mut sql, " AND w.start_date >= $?", d.clone());
        }
        if let Some(d) = &f.to {
            add(&mut sql, " AND w.start_date <= $?", d.clone());
        }
        const INSTANT: &str = "(w.start_date || SUBSTR(w.start_time || '000000', 1, 6))";
        const TIME: &str = "SUBSTR(w.start_time || '000000', 1, 6)";
        for (date, time, op) in [(&f.from, &f.from_time, ">="), (&f.to, &f.to_time, "<=")] {
            match (date, time) {
                (Some(d), Some(t)) if d.len() == 8 => add(
                    &mut sql,
                    &format!(" AND {INSTANT} {op} $?"),
                    format!("{d}{t}"),
                ),
                (_, Some(t)) => add(&mut sql, &format!(" AND {TIME} {op} $?"), t.clone()),
                _ => {}
            }
        }
        if let Some(s) = f.status {
            add(&mut sql, " AND w.status = $?", s.as_str().to_owned());
        }
        if let Some(p) = &f.patient_id {
            add(&mut sql, " AND p.patient_id = $?", p.clone());
        }
        if let Some(a) = &f.accession_number {
            add(&mut sql, " AND w.accession_number = $?", a.clone());
        }
        if let Some(id) = &f.step_id {
            add(&mut sql, " AND w.scheduled_step_id = $?", id.clone());
        }
        if let Some(name) = &f.patient_name {
            add(
                &mut sql,
                " AND p.patient_name_folded LIKE $? ESCAPE '!'",
                name_pattern(name, true),
            );
        }
        if let Some(name) = &f.performing_physician {
            add(
                &mut sql,
                " AND LOWER(w.performing_physician) LIKE $? ESCAPE '!'",
                name_pattern(name, false).to_lowercase(),
            );
        }
        sql.push_str(&format!(
            " ORDER BY w.start_date, w.start_time, w.id LIMIT {} OFFSET {}",
            f.limit, f.offset
        ));
        let mut query = sqlx::query(&sql);
        for b in binds {
            query = query.bind(b);
        }
        query
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                let status: String = r.try_get(21)?;
                let stations: String = r.try_get(13)?;
                Ok(WorklistItem {
                    id: r.try_get(0)?,
                    patient_id: r.try_get(1)?,
                    patient_name: r.try_get(2)?,
                    patient_birth_date: r.try_get(3)?,
                    patient_sex: r.try_get(4)?,
                    step: ScheduledStep {
                        placer_order: r.try_get(5)?,
                        filler_order: r.try_get(6)?,
                        accession_number: r.try_get(7)?,
                        requested_procedure_id: r.try_get(8)?,
                        requested_procedure_code: r.try_get(9)?,
                        requested_procedure_description: r.try_get(10)?,
                        scheduled_step_id: r.try_get(11)?,
                        modality: r.try_get(12)?,
                        station_ae_titles: stations
                            .split('\\')
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect(),
                        start_date: r.try_get(14)?,
                        start_time: r.try_get(15)?,
                        priority: r.try_get(16)?,
                        requesting_physician: r.try_get(17)?,
                        performing_physician: r.try_get(18)?,
                        reason: r.try_get(19)?,
                        study_instance_uid: r.try_get(20)?,
                    },
                    status: StepStatus::parse(&status).ok_or(IndexError::Corrupt {
                        column: "worklist_items.status",
                        value: status.clone(),
                    })?,
                    updated_at: r.try_get(22)?,
                })
            })
            .collect()
    }

    /// The placer and filler order numbers of a worklist item.
    pub async fn worklist_order(&self, id: i64) -> Result<Option<(String, String)>, IndexError> {
        sqlx::query("SELECT placer_order, filler_order FROM worklist_items WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .transpose()
    }

    /// Orders cancelled after their images, newest first.
    pub async fn worklist_conflicts(
        &self,
        limit: i64,
    ) -> Result<Vec<serde_json::Value>, IndexError> {
        sqlx::query(
            "SELECT c.id, w.placer_order, w.filler_order, w.accession_number, c.study_instance_uid, \
             c.requested_status, c.detail, c.created_at FROM worklist_conflicts c \
             JOIN worklist_items w ON w.id = c.worklist_item_fk ORDER BY c.id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(serde_json::json!({
                "id": r.try_get::<i64, _>(0)?,
                "placer_order": r.try_get::<String, _>(1)?,
                "filler_order": r.try_get::<String, _>(2)?,
                "accession_number": r.try_get::<String, _>(3)?,
                "study_instance_uid": r.try_get::<String, _>(4)?,
                "requested_status": r.try_get::<String, _>(5)?,
                "detail": r.try_get::<String, _>(6)?,
                "created_at": r.try_get::<i64, _>(7)?,
            }))
        })
        .collect()
    }
}
