//! Read-side queries used by the CLI and the HTTP status endpoints.

use futures::{Stream, TryStreamExt};
use serde::Serialize;
use sqlx::Row;

use super::{Index, IndexError};

/// Counts shown by `tessera stats` and `/api/v1/stats`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct IndexStats {
    pub patients: i64,
    pub studies: i64,
    pub series: i64,
    pub instances: i64,
    pub stored_bytes: i64,
}

/// An instance as `tessera verify` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedObject {
    pub sop_instance_uid: String,
    pub key: String,
    pub size: u64,
    pub sha256: String,
}

impl Index {
    pub async fn stats(&self) -> Result<IndexStats, IndexError> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM patients), (SELECT COUNT(*) FROM studies), \
             (SELECT COUNT(*) FROM series), (SELECT COUNT(*) FROM instances), \
             CAST(COALESCE((SELECT SUM(size_bytes) FROM instances), 0) AS BIGINT)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(IndexStats {
            patients: row.try_get(0)?,
            studies: row.try_get(1)?,
            series: row.try_get(2)?,
            instances: row.try_get(3)?,
            stored_bytes: row.try_get(4)?,
        })
    }

    /// Every instance's stored object, streamed in key order so the caller
    /// never holds the whole archive in memory.
    pub fn objects(&self) -> impl Stream<Item = Result<IndexedObject, IndexError>> + '_ {
        sqlx::query(
            "SELECT sop_instance_uid, object_key, size_bytes, sha256 FROM instances ORDER BY object_key",
        )
        .fetch(&self.pool)
        .map_err(IndexError::from)
        .and_then(|row| async move {
            let size: i64 = row.try_get(2)?;
            Ok(IndexedObject {
                sop_instance_uid: row.try_get(0)?,
                key: row.try_get(1)?,
                size: u64::try_from(size).map_err(|_| IndexError::Corrupt {
                    column: "instances.size_bytes",
                    value: size.to_string(),
                })?,
                sha256: row.try_get(3)?,
            })
        })
    }

    /// One instance with its place in the hierarchy, by SOP Instance UID.
    pub async fn instance(
        &self,
        sop_instance_uid: &str,
    ) -> Result<Option<InstanceRecord>, IndexError> {
        let row = sqlx::query(
            "SELECT i.sop_class_uid, i.transfer_syntax_uid, i.object_key, i.size_bytes, i.sha256, \
             se.series_instance_uid, st.study_instance_uid, p.patient_name, p.patient_id, \
             se.requested_procedure_id, se.scheduled_procedure_step_id, i.bits_allocated \
             FROM instances i JOIN series se ON se.id = i.series_fk \
             JOIN studies st ON st.id = se.study_fk JOIN patients p ON p.id = st.patient_fk \
             WHERE i.sop_instance_uid = $1",
        )
        .bind(sop_instance_uid)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(InstanceRecord {
                sop_class_uid: r.try_get(0)?,
                transfer_syntax_uid: r.try_get(1)?,
                key: r.try_get(2)?,
                size: r.try_get(3)?,
                sha256: r.try_get(4)?,
                series_instance_uid: r.try_get(5)?,
                study_instance_uid: r.try_get(6)?,
                patient_name: r.try_get(7)?,
                patient_id: r.try_get(8)?,
                requested_procedure_id: r.try_get(9)?,
                scheduled_procedure_step_id: r.try_get(10)?,
                bits_allocated: r.try_get(11)?,
            })
        })
        .transpose()
    }

    /// The study-level record of one study, for tests and the API.
    pub async fn study_summary(
        &self,
        study_instance_uid: &str,
    ) -> Result<Option<StudySummary>, IndexError> {
        let row = sqlx::query(
            "SELECT s.num_series, s.num_instances, s.modalities_in_study, p.patient_name, p.patient_id \
             FROM studies s JOIN patients p ON p.id = s.patient_fk WHERE s.study_instance_uid = $1",
        )
        .bind(study_instance_uid)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(StudySummary {
                num_series: r.try_get(0)?,
                num_instances: r.try_get(1)?,
                modalities_in_study: r.try_get(2)?,
                patient_name: r.try_get(3)?,
                patient_id: r.try_get(4)?,
            })
        })
        .transpose()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StudySummary {
    pub num_series: i64,
    pub num_instances: i64,
    pub modalities_in_study: String,
    pub patient_name: String,
    pub patient_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceRecord {
    pub sop_class_uid: String,
    pub transfer_syntax_uid: String,
    pub key: String,
    pub size: i64,
    pub sha256: String,
    pub series_instance_uid: String,
    pub study_instance_uid: String,
    pub patient_name: String,
    pub patient_id: String,
    pub requested_procedure_id: String,
    pub scheduled_procedure_step_id: String,
    pub bits_allocated: Option<i64>,
}
