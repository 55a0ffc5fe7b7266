//! What the search index is fed from: the search outbox the triggers of
//! migration 21 fill, and each study's document, gathered from the study,
//! its patient, series, reports and scheduled and performed steps.

use std::collections::BTreeMap;

use sqlx::Row;

use super::{Backend, Index, IndexError};

/// Everything a study's search document holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StudyDocument {
    pub study_uid: String,
    pub patient_name: String,
    pub patient_id: String,
    pub other_patient_ids: String,
    pub birth_date: String,
    pub sex: String,
    pub accession_number: String,
    pub study_date: String,
    pub study_description: String,
    pub referring_physician: String,
    pub referring_folded: String,
    pub modalities: Vec<String>,
    pub series_descriptions: Vec<String>,
    pub body_parts: Vec<String>,
    /// Institution and station names of its series.
    pub sites: Vec<String>,
    pub procedures: Vec<String>,
    pub performing_physicians: Vec<String>,
    pub reports: Vec<String>,
    pub num_series: i64,
    pub num_instances: i64,
    /// scheduled, arrived, performed, reported or final.
    pub status: String,
}

/// UIDs per statement.
const CHUNK: usize = 400;

fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Index {
    /// Outbox rows after `mark`, oldest first: (id, study UID). On
    /// PostgreSQL, where identities can commit out of order, the rows of
    /// the last `lookback` seconds come again (documents are idempotent).
    pub async fn search_outbox_after(
        &self,
        mark: i64,
        limit: i64,
        lookback: i64,
    ) -> Result<Vec<(i64, String)>, IndexError> {
        let rows =
            match self.backend {
                Backend::Sqlite => sqlx::query(
                    "SELECT id, study_uid FROM search_outbox WHERE id > $1 ORDER BY id LIMIT $2",
                )
                .bind(mark)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
                Backend::Postgres => sqlx::query(
                    "SELECT id, study_uid FROM search_outbox WHERE id > $1 OR created_at >= $2 \
                     ORDER BY id LIMIT $3",
                )
                .bind(mark)
                .bind(super::unix_now() - lookback)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
            };
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// The outbox's newest and oldest row ids (0 when empty).
    pub async fn search_outbox_bounds(&self) -> Result<(i64, i64), IndexError> {
        let row =
            sqlx::query("SELECT COALESCE(MAX(id), 0), COALESCE(MIN(id), 0) FROM search_outbox")
                .fetch_one(&self.pool)
                .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    /// Drop outbox rows older than `before` (Unix seconds).
    pub async fn purge_search_outbox(&self, before: i64) -> Result<u64, IndexError> {
        let done = sqlx::query("DELETE FROM search_outbox WHERE created_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Study UIDs after the study row `after_id`, in row order, for a
    /// rebuild: (row id, UID).
    pub async fn study_uids_page(
        &self,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String)>, IndexError> {
        let rows = sqlx::query(
            "SELECT id, study_instance_uid FROM studies WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    pub async fn count_studies(&self) -> Result<i64, IndexError> {
        let row = sqlx::query("SELECT COUNT(*) FROM studies")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// The documents of the studies that exist among `uids`.
    pub async fn search_documents(
        &self,
        uids: &[String],
    ) -> Result<Vec<StudyDocument>, IndexError> {
        let mut docs = BTreeMap::new();
        for chunk in uids.chunks(CHUNK) {
            self.gather_documents(chunk, &mut docs).await?;
        }
        Ok(docs.into_values().collect())
    }

    async fn gather_documents(
        &self,
        uids: &[String],
        docs: &mut BTreeMap<String, StudyDocument>,
    ) -> Result<(), IndexError> {
        let list = placeholders(uids.len());
        let sql = format!(
            "SELECT st.study_instance_uid, p.patient_name, p.patient_id, p.other_patient_ids, \
             p.patient_birth_date, p.patient_sex, st.accession_number, st.study_date, \
             st.study_description, st.referring_physician_name, \
             st.referring_physician_name_folded, st.num_series, st.num_instances \
             FROM studies st JOIN patients p ON p.id = st.patient_fk \
             WHERE st.study_instance_uid IN ({list})"
        );
        for row in self.rows_for(&sql, uids).await? {
            let doc = StudyDocument {
                study_uid: row.try_get(0)?,
                patient_name: row.try_get(1)?,
                patient_id: row.try_get(2)?,
                other_patient_ids: row.try_get(3)?,
                birth_date: row.try_get(4)?,
                sex: row.try_get(5)?,
                accession_number: row.try_get(6)?,
                study_date: row.try_get(7)?,
                study_description: row.try_get(8)?,
                referring_physician: row.try_get(9)?,
                referring_folded: row.try_get(10)?,
                num_series: row.try_get(11)?,
                num_instances: row.try_get(12)?,
                status: "arrived".into(),
                ..Default::default()
            };
            docs.insert(doc.study_uid.clone(), doc);
        }
        let sql = format!(
            "SELECT st.study_instance_uid, se.modality, se.series_description, \
             se.body_part_examined, se.institution_name, se.station_name \
             FROM series se JOIN studies st ON st.id = se.study_fk \
             WHERE st.study_instance_uid IN ({list}) ORDER BY se.id"
        );
        for row in self.rows_for(&sql, uids).await? {
            let uid: String = row.try_get(0)?;
            let Some(doc) = docs.get_mut(&uid) else {
                continue;
            };
            push_distinct(&mut doc.modalities, row.try_get(1)?);
            push_distinct(&mut doc.series_descriptions, row.try_get(2)?);
            push_distinct(&mut doc.body_parts, row.try_get(3)?);
            push_distinct(&mut doc.sites, row.try_get(4)?);
            push_distinct(&mut doc.sites, row.try_get(5)?);
        }
        // A report names its study by UID or by accession number; two
        // look-ups, each on its own index, then once per report.
        let sql = format!(
            "SELECT r.id, r.study_instance_uid, r.body, r.status FROM reports r \
             WHERE r.study_instance_uid IN ({list}) \
             UNION SELECT r.id, st.study_instance_uid, r.body, r.status FROM reports r \
             JOIN studies st ON r.accession_number = st.accession_number \
             WHERE r.accession_number <> '' AND st.study_instance_uid IN ({list}) \
             ORDER BY 1"
        );
        let mut seen = std::collections::BTreeSet::new();
        for row in self.rows_for(&sql, uids).await? {
            let id: i64 = row.try_get(0)?;
            let uid: String = row.try_get(1)?;
            if !seen.insert((id, uid.clone())) {
                continue;
            }
            let status: String = row.try_get(3)?;
            let Some(doc) = docs.get_mut(&uid) else {
                continue;
            };
            if status == "cancelled" {
                continue;
            }
            doc.reports.push(row.try_get(2)?);
            if status == "final" || status == "corrected" {
                doc.status = "final".into();
            } else if doc.status != "final" {
                doc.status = "reported".into();
            }
        }
        let sql = format!(
            "SELECT study_instance_uid, requested_procedure_description, performing_physician \
             FROM worklist_items WHERE study_instance_uid IN ({list}) ORDER BY id"
        );
        for row in self.rows_for(&sql, uids).await? {
            let uid: String = row.try_get(0)?;
            if let Some(doc) = docs.get_mut(&uid) {
                push_distinct(&mut doc.procedures, row.try_get(1)?);
                push_distinct(&mut doc.performing_physicians, row.try_get(2)?);
            }
        }
        let sql = format!(
            "SELECT DISTINCT study_instance_uid FROM performed_steps \
             WHERE status = 'COMPLETED' AND study_instance_uid IN ({list})"
        );
        for row in self.rows_for(&sql, uids).await? {
            let uid: String = row.try_get(0)?;
            if let Some(doc) = docs.get_mut(&uid) {
                if doc.status == "arrived" {
                    doc.status = "performed".into();
                }
            }
        }
        Ok(())
    }

    /// The rows of `sql` with `uids` bound to its placeholders in order.
    async fn rows_for(
        &self,
        sql: &str,
        uids: &[String],
    ) -> Result<Vec<sqlx::any::AnyRow>, IndexError> {
        let mut query = sqlx::query(sql);
        for uid in uids {
            query = query.bind(uid);
        }
        Ok(query.fetch_all(&self.pool).await?)
    }

    /// Studies shared with `user` and not expired.
    pub async fn shared_studies(&self, user: &str) -> Result<Vec<String>, IndexError> {
        let rows = sqlx::query(
            "SELECT study_uid FROM study_shares WHERE user_name = $1 \
             AND (expires_at = 0 OR expires_at > $2)",
        )
        .bind(user)
        .bind(super::unix_now())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| r.try_get(0).map_err(IndexError::from))
            .collect()
    }
}

fn push_distinct(list: &mut Vec<String>, value: String) {
    let value = value.trim().to_owned();
    if !value.is_empty() && !list.contains(&value) {
        list.push(value);
    }
}
