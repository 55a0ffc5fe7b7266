//! Reports from the RIS, and each study's status: scheduled → arrived →
//! performed → reported → final, derived from what the index holds.

use sqlx::{Any, Row, Transaction};

use super::{unix_now as now, Index, IndexError};

/// A report as ORU^R01 carries it (one OBR and its OBX segments).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub study_instance_uid: String,
    pub accession_number: String,
    pub placer_order: String,
    pub filler_order: String,
    pub patient_id: String,
    /// preliminary, final, corrected or cancelled.
    pub status: String,
    pub observed_at: String,
    pub author: String,
    pub body: String,
}

/// Record a report; a later one for the same order replaces it.
pub(super) async fn apply(
    tx: &mut Transaction<'static, Any>,
    r: &Report,
) -> Result<(), IndexError> {
    let ts = now();
    sqlx::query(
        "INSERT INTO reports (study_instance_uid, accession_number, placer_order, filler_order, \
         patient_id, status, observed_at, author, body, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) \
         ON CONFLICT (placer_order, filler_order, accession_number) DO UPDATE SET \
         study_instance_uid = CASE WHEN excluded.study_instance_uid = '' \
         THEN reports.study_instance_uid ELSE excluded.study_instance_uid END, \
         patient_id = excluded.patient_id, status = excluded.status, \
         observed_at = excluded.observed_at, author = excluded.author, body = excluded.body, \
         updated_at = excluded.updated_at",
    )
    .bind(r.study_instance_uid.as_str())
    .bind(r.accession_number.as_str())
    .bind(r.placer_order.as_str())
    .bind(r.filler_order.as_str())
    .bind(r.patient_id.as_str())
    .bind(r.status.as_str())
    .bind(r.observed_at.as_str())
    .bind(r.author.as_str())
    .bind(r.body.as_str())
    .bind(ts)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Index {
    /// The reports of a study: by its UID, or by its accession number.
    pub async fn study_reports(&self, study_uid: &str) -> Result<Vec<Report>, IndexError> {
        sqlx::query(
            "SELECT study_instance_uid, accession_number, placer_order, filler_order, patient_id, \
             status, observed_at, author, body FROM reports r WHERE r.study_instance_uid = $1 \
             OR (r.accession_number <> '' AND r.accession_number IN \
             (SELECT accession_number FROM studies WHERE study_instance_uid = $1)) ORDER BY r.id",
        )
        .bind(study_uid)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok(Report {
                study_instance_uid: row.try_get(0)?,
                accession_number: row.try_get(1)?,
                placer_order: row.try_get(2)?,
                filler_order: row.try_get(3)?,
                patient_id: row.try_get(4)?,
                status: row.try_get(5)?,
                observed_at: row.try_get(6)?,
                author: row.try_get(7)?,
                body: row.try_get(8)?,
            })
        })
        .collect()
    }

    /// The study's status, from the furthest thing known of it: a final
    /// (or corrected) report, any report, a completed performed step,
    /// stored instances, a scheduled step. `None` when nothing is known.
    pub async fn study_status(&self, study_uid: &str) -> Result<Option<&'static str>, IndexError> {
        let reports = self.study_reports(study_uid).await?;
        if reports
            .iter()
            .any(|r| r.status == "final" || r.status == "corrected")
        {
            return Ok(Some("final"));
        }
        if reports.iter().any(|r| r.status != "cancelled") {
            return Ok(Some("reported"));
        }
        let row = sqlx::query(
            "SELECT \
             (SELECT COUNT(*) FROM performed_steps WHERE study_instance_uid = $1 AND status = 'COMPLETED'), \
             (SELECT COUNT(*) FROM studies WHERE study_instance_uid = $1 AND num_instances > 0), \
             (SELECT COUNT(*) FROM worklist_items WHERE study_instance_uid = $1)",
        )
        .bind(study_uid)
        .fetch_one(&self.pool)
        .await?;
        let (performed, stored, scheduled): (i64, i64, i64) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        Ok(if performed > 0 {
            Some("performed")
        } else if stored > 0 {
            Some("arrived")
        } else if scheduled > 0 {
            Some("scheduled")
        } else {
            None
        })
    }
}
