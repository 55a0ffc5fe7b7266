//! Modality Performed Procedure Steps: what a modality reports it did.
//! Creating one starts the worklist step it names; completing or
//! discontinuing it ends that step. A final step is never changed again.

use sqlx::Row;

use super::outbox::{self, OrderEvent};
use super::worklist::StepStatus;
use super::{unix_now as now, Index, IndexError};

/// A performed step as N-CREATE describes it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PerformedStep {
    pub sop_instance_uid: String,
    pub patient_id: String,
    pub study_instance_uid: String,
    pub accession_number: String,
    pub scheduled_step_id: String,
    pub performed_step_id: String,
    pub modality: String,
    pub station_ae_title: String,
    /// DA and TM run together.
    pub started_at: String,
}

/// What N-SET changes.
#[derive(Debug, Clone, Default)]
pub struct PerformedUpdate {
    /// `IN PROGRESS`, `COMPLETED` or `DISCONTINUED`; `None` keeps it.
    pub status: Option<String>,
    pub ended_at: Option<String>,
    pub discontinue_reason: Option<String>,
    pub performed_series: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// Linked to the worklist item it names, if one matched.
    Created {
        scheduled: bool,
    },
    Duplicate,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Updated {
    Updated,
    NotFound,
    /// Already COMPLETED or DISCONTINUED.
    Final(String),
}

/// A performed step as the API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PerformedRecord {
    #[serde(flatten)]
    pub step: PerformedStep,
    pub status: String,
    pub scheduled: bool,
    pub ended_at: String,
    pub discontinue_reason: String,
    pub performed_series: Vec<String>,
}

impl Index {
    /// Record an N-CREATE: the step, IN PROGRESS, linked to the scheduled
    /// step with the same step ID (and accession number, when given), or
    /// else to the only step of its study.
    pub async fn create_performed_step(&self, step: &PerformedStep) -> Result<Created, IndexError> {
        let mut tx = self.begin_write().await?;
        let exists = sqlx::query("SELECT 1 FROM performed_steps WHERE sop_instance_uid = $1")
            .bind(step.sop_instance_uid.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            return Ok(Created::Duplicate);
        }
        let item: Option<i64> = sqlx::query(
            "SELECT id FROM worklist_items WHERE \
             ($1 <> '' AND scheduled_step_id = $1 AND ($2 = '' OR accession_number = $2)) \
             OR ($1 = '' AND $3 <> '' AND study_instance_uid = $3) \
             ORDER BY id LIMIT 1",
        )
        .bind(step.scheduled_step_id.as_str())
        .bind(step.accession_number.as_str())
        .bind(step.study_instance_uid.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
        let ts = now();
        sqlx::query(
            "INSERT INTO performed_steps (sop_instance_uid, status, worklist_item_fk, patient_id, \
             study_instance_uid, accession_number, scheduled_step_id, performed_step_id, modality, \
             station_ae_title, started_at, created_at, updated_at) \
             VALUES ($1, 'IN PROGRESS', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)",
        )
        .bind(step.sop_instance_uid.as_str())
        .bind(item)
        .bind(step.patient_id.as_str())
        .bind(step.study_instance_uid.as_str())
        .bind(step.accession_number.as_str())
        .bind(step.scheduled_step_id.as_str())
        .bind(step.performed_step_id.as_str())
        .bind(step.modality.as_str())
        .bind(step.station_ae_title.as_str())
        .bind(step.started_at.as_str())
        .bind(ts)
        .execute(&mut *tx)
        .await?;
        if let Some(id) = item {
            set_item_status(&mut tx, id, StepStatus::Started).await?;
            if self.outbox.enabled() {
                outbox::queue_order(&mut tx, id, OrderEvent::Started).await?;
            }
        }
        tx.commit().await?;
        self.outbox.ring();
        Ok(Created::Created {
            scheduled: item.is_some(),
        })
    }

    /// Record an N-SET. A final step is refused; a step that becomes final
    /// ends its worklist item the same way.
    pub async fn update_performed_step(
        &self,
        sop_instance_uid: &str,
        update: &PerformedUpdate,
    ) -> Result<Updated, IndexError> {
        let mut tx = self.begin_write().await?;
        let Some(row) = sqlx::query(
            "SELECT id, status, worklist_item_fk FROM performed_steps WHERE sop_instance_uid = $1",
        )
        .bind(sop_instance_uid)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(Updated::NotFound);
        };
        let id: i64 = row.try_get(0)?;
        let status: String = row.try_get(1)?;
        let item: Option<i64> = row.try_get(2)?;
        if status == "COMPLETED" || status == "DISCONTINUED" {
            return Ok(Updated::Final(status));
        }
        let new_status = update.status.clone().unwrap_or(status);
        let series = update.performed_series.join("\\");
        sqlx::query(
            "UPDATE performed_steps SET status = $1, ended_at = COALESCE($2, ended_at), \
             discontinue_reason = COALESCE($3, discontinue_reason), \
             performed_series = CASE WHEN $4 = '' THEN performed_series ELSE $4 END, \
             updated_at = $5 WHERE id = $6",
        )
        .bind(new_status.as_str())
        .bind(update.ended_at.as_deref())
        .bind(update.discontinue_reason.as_deref())
        .bind(series.as_str())
        .bind(now())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let item_status = match new_status.as_str() {
            "COMPLETED" => Some((StepStatus::Completed, OrderEvent::Completed)),
            "DISCONTINUED" => Some((StepStatus::Discontinued, OrderEvent::Discontinued)),
            _ => None,
        };
        if let (Some(item), Some((s, event))) = (item, item_status) {
            set_item_status(&mut tx, item, s).await?;
            if self.outbox.enabled() {
                outbox::queue_order(&mut tx, item, event).await?;
            }
        }
        tx.commit().await?;
        self.outbox.ring();
        Ok(Updated::Updated)
    }

    /// Performed steps, newest first; of one study when `study` is given.
    pub async fn performed_steps(
        &self,
        study: Option<&str>,
        limit: i64,
    ) -> Result<Vec<PerformedRecord>, IndexError> {
        sqlx::query(
            "SELECT sop_instance_uid, patient_id, study_instance_uid, accession_number, \
             scheduled_step_id, performed_step_id, modality, station_ae_title, started_at, status, \
             worklist_item_fk, ended_at, discontinue_reason, performed_series FROM performed_steps \
             WHERE ($1 = '' OR study_instance_uid = $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(study.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            let item: Option<i64> = r.try_get(10)?;
            let series: String = r.try_get(13)?;
            Ok(PerformedRecord {
                step: PerformedStep {
                    sop_instance_uid: r.try_get(0)?,
                    patient_id: r.try_get(1)?,
                    study_instance_uid: r.try_get(2)?,
                    accession_number: r.try_get(3)?,
                    scheduled_step_id: r.try_get(4)?,
                    performed_step_id: r.try_get(5)?,
                    modality: r.try_get(6)?,
                    station_ae_title: r.try_get(7)?,
                    started_at: r.try_get(8)?,
                },
                status: r.try_get(9)?,
                scheduled: item.is_some(),
                ended_at: r.try_get(11)?,
                discontinue_reason: r.try_get(12)?,
                performed_series: series
                    .split('\\')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            })
        })
        .collect()
    }
}

async fn set_item_status(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    item: i64,
    status: StepStatus,
) -> Result<(), IndexError> {
    sqlx::query("UPDATE worklist_items SET status = $1, updated_at = $2 WHERE id = $3")
        .bind(status.as_str())
        .bind(now())
        .bind(item)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
