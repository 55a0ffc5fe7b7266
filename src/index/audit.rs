//! The audit trail's rows: appended a batch at a time by
//! [`crate::audit`], read back for the API and `tessera audit verify`,
//! and trimmed from the oldest end by retention.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Index, IndexError};

/// One row as stored. `patients` and `studies` are JSON arrays of strings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub node: String,
    pub seq: i64,
    /// Unix microseconds.
    pub at: i64,
    pub event: String,
    pub outcome: i64,
    pub user: String,
    pub address: String,
    pub patients: String,
    pub studies: String,
    pub message: String,
    pub prev_hash: String,
    pub hash: String,
}

/// What the API may filter on; every field narrows.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub patient: Option<String>,
    pub user: Option<String>,
    pub event: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub limit: i64,
    pub offset: i64,
}

const COLUMNS: &str = "id, node, seq, at, event, outcome, user_name, address, patients, \
     studies, message, prev_hash, hash";

fn decode(row: &AnyRow) -> Result<AuditRow, IndexError> {
    Ok(AuditRow {
        id: row.try_get(0)?,
        node: row.try_get(1)?,
        seq: row.try_get(2)?,
        at: row.try_get(3)?,
        event: row.try_get(4)?,
        outcome: row.try_get(5)?,
        user: row.try_get(6)?,
        address: row.try_get(7)?,
        patients: row.try_get(8)?,
        studies: row.try_get(9)?,
        message: row.try_get(10)?,
        prev_hash: row.try_get(11)?,
        hash: row.try_get(12)?,
    })
}

/// `%` and `_` are wildcards in LIKE; a patient ID may hold either.
fn like_escaped(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

impl Index {
    /// The last row of `node`'s chain: its sequence number and hash.
    pub async fn audit_tail(&self, node: &str) -> Result<Option<(i64, String)>, IndexError> {
        let row = sqlx::query(
            "SELECT seq, hash FROM audit_log WHERE node = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(node)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }

    /// Append rows (already chained) in one durable transaction.
    pub async fn append_audit(&self, rows: &[AuditRow]) -> Result<(), IndexError> {
        let mut tx = self.begin_write().await?;
        for r in rows {
            sqlx::query(
                "INSERT INTO audit_log (node, seq, at, event, outcome, user_name, address, \
                 patients, studies, message, prev_hash, hash) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(&r.node)
            .bind(r.seq)
            .bind(r.at)
            .bind(&r.event)
            .bind(r.outcome)
            .bind(&r.user)
            .bind(&r.address)
            .bind(&r.patients)
            .bind(&r.studies)
            .bind(&r.message)
            .bind(&r.prev_hash)
            .bind(&r.hash)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Rows matching `filter`, newest first.
    pub async fn audit_rows(&self, filter: &AuditFilter) -> Result<Vec<AuditRow>, IndexError> {
        let mut sql = format!("SELECT {COLUMNS} FROM audit_log WHERE 1 = 1");
        let mut texts: Vec<String> = Vec::new();
        if let Some(p) = &filter.patient {
            texts.push(format!(
                "%{}%",
                like_escaped(&serde_json::json!(p).to_string())
            ));
            sql.push_str(&format!(" AND patients LIKE ${} ESCAPE '\\'", texts.len()));
        }
        if let Some(u) = &filter.user {
            texts.push(u.clone());
            sql.push_str(&format!(" AND user_name = ${}", texts.len()));
        }
        if let Some(e) = &filter.event {
            texts.push(e.clone());
            sql.push_str(&format!(" AND event = ${}", texts.len()));
        }
        let mut numbers: Vec<i64> = Vec::new();
        for (column, bound) in [("at >=", filter.since), ("at <", filter.until)] {
            if let Some(v) = bound {
                numbers.push(v);
                sql.push_str(&format!(" AND {column} ${}", texts.len() + numbers.len()));
            }
        }
        let next = texts.len() + numbers.len();
        sql.push_str(&format!(
            " ORDER BY at DESC, id DESC LIMIT ${} OFFSET ${}",
            next + 1,
            next + 2
        ));
        let mut query = sqlx::query(&sql);
        for t in &texts {
            query = query.bind(t);
        }
        for v in &numbers {
            query = query.bind(*v);
        }
        let rows = query
            .bind(filter.limit)
            .bind(filter.offset)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode).collect()
    }

    /// The patient ID of each of `studies` the index knows, for records
    /// that name only studies.
    pub async fn patients_of_studies(
        &self,
        studies: &[String],
    ) -> Result<std::collections::HashMap<String, String>, IndexError> {
        let pairs = self
            .pairs_for(
                "SELECT studies.study_instance_uid, patients.patient_id FROM studies \
                 JOIN patients ON patients.id = studies.patient_fk \
                 WHERE studies.study_instance_uid",
                studies,
            )
            .await?;
        Ok(pairs.into_iter().collect())
    }

    /// The study and patient of each of `instances` the index knows.
    pub async fn studies_of_instances(
        &self,
        instances: &[String],
    ) -> Result<Vec<(String, String)>, IndexError> {
        self.pairs_for(
            "SELECT DISTINCT studies.study_instance_uid, patients.patient_id FROM instances \
             JOIN series ON series.id = instances.series_fk \
             JOIN studies ON studies.id = series.study_fk \
             JOIN patients ON patients.id = studies.patient_fk \
             WHERE instances.sop_instance_uid",
            instances,
        )
        .await
    }

    /// Two text columns of `select` (which ends with the column to match)
    /// for every value of `uids`, 500 at a time.
    async fn pairs_for(
        &self,
        select: &str,
        uids: &[String],
    ) -> Result<Vec<(String, String)>, IndexError> {
        let mut found = Vec::new();
        for chunk in uids.chunks(500) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!("{select} IN ({})", placeholders.join(", "));
            let mut query = sqlx::query(&sql);
            for uid in chunk {
                query = query.bind(uid);
            }
            for row in query.fetch_all(&self.pool).await? {
                found.push((row.try_get(0)?, row.try_get(1)?));
            }
        }
        Ok(found)
    }

    /// The chains' nodes.
    pub async fn audit_nodes(&self) -> Result<Vec<String>, IndexError> {
        let rows = sqlx::query("SELECT DISTINCT node FROM audit_log ORDER BY node")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get(0).map_err(IndexError::from))
            .collect()
    }

    /// Up to `limit` rows of `node`'s chain after sequence number `after`.
    pub async fn audit_chain(
        &self,
        node: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<AuditRow>, IndexError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_log WHERE node = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(node)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode).collect()
    }

    /// Delete rows older than `before` (unix microseconds).
    pub async fn purge_audit(&self, before: i64) -> Result<u64, IndexError> {
        let done = sqlx::query("DELETE FROM audit_log WHERE at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
