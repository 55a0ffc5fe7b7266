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

    /// Whether any instance references this storage key.
    pub async fn references_key(&self, key: &str) -> Result<bool, IndexError> {
        let row = sqlx::query("SELECT COUNT(*) FROM instances WHERE object_key = $1")
            .bind(key)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>(0)? > 0)
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
