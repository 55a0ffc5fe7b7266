//! The storage commitment queue: requests recorded before they are
//! acknowledged, their verification results, and delivery attempts.

use sqlx::Row;

use super::queue::{Lease, Queue};
use super::{unix_now as now, Index, IndexError};

/// A commitment whose report is still to be delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCommitment {
    pub id: i64,
    pub transaction_uid: String,
    pub requester_ae: String,
    /// (SOP Class UID, SOP Instance UID) pairs, as requested.
    pub references: Vec<(String, String)>,
    /// The verification result (JSON), once computed.
    pub result_json: Option<String>,
    pub attempts: i64,
}

impl Index {
    /// Record a request; committed before the caller acknowledges it. It is
    /// not due before `hold_secs`: the association that received it tries
    /// to report first.
    pub async fn add_commitment(
        &self,
        transaction_uid: &str,
        requester_ae: &str,
        references: &[(String, String)],
        hold_secs: i64,
    ) -> Result<i64, IndexError> {
        let json = serde_json::to_string(references).unwrap_or_else(|_| "[]".into());
        let row = sqlx::query(
            "INSERT INTO commitments (transaction_uid, requester_ae, references_json, next_attempt_at, created_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(transaction_uid)
        .bind(requester_ae)
        .bind(json)
        .bind(now() + hold_secs)
        .bind(now())
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get(0)?)
    }

    pub async fn set_commitment_result(
        &self,
        id: i64,
        result_json: &str,
    ) -> Result<(), IndexError> {
        sqlx::query("UPDATE commitments SET result_json = $1 WHERE id = $2")
            .bind(result_json)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn commitment_delivered(&self, id: i64) -> Result<(), IndexError> {
        sqlx::query(
            "UPDATE commitments SET state = 'delivered', last_error = '', finished_at = $1, \
             lease_owner = NULL, lease_until = NULL WHERE id = $2",
        )
        .bind(now())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Give up delivering a report.
    pub async fn commitment_failed(&self, id: i64, error: &str) -> Result<(), IndexError> {
        sqlx::query(
            "UPDATE commitments SET state = 'failed', attempts = attempts + 1, last_error = $1, \
             finished_at = $2, lease_owner = NULL, lease_until = NULL WHERE id = $3",
        )
        .bind(error)
        .bind(now())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The delivery state of a request ('pending', 'delivered', 'failed').
    pub async fn commitment_state(
        &self,
        transaction_uid: &str,
    ) -> Result<Option<String>, IndexError> {
        let row = sqlx::query("SELECT state FROM commitments WHERE transaction_uid = $1")
            .bind(transaction_uid)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get::<String, _>(0)).transpose()?)
    }

    /// Schedule another attempt `delay_secs` from now.
    pub async fn commitment_retry(
        &self,
        id: i64,
        delay_secs: i64,
        error: &str,
    ) -> Result<(), IndexError> {
        sqlx::query(
            "UPDATE commitments SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2, \
             lease_owner = NULL, lease_until = NULL WHERE id = $3",
        )
        .bind(now() + delay_secs)
        .bind(error)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Claim up to `limit` commitments whose report is due now.
    pub async fn claim_commitments(
        &self,
        lease: &Lease,
        limit: i64,
    ) -> Result<Vec<PendingCommitment>, IndexError> {
        let ids = self.claim(Queue::Commitments, None, lease, limit).await?;
        let mut due = Vec::with_capacity(ids.len());
        for id in ids {
            let row = sqlx::query(
                "SELECT id, transaction_uid, requester_ae, references_json, result_json, attempts \
                 FROM commitments WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
            let Some(r) = row else { continue };
            let refs: String = r.try_get(3)?;
            due.push(PendingCommitment {
                id: r.try_get(0)?,
                transaction_uid: r.try_get(1)?,
                requester_ae: r.try_get(2)?,
                references: serde_json::from_str(&refs).map_err(|_| IndexError::Corrupt {
                    column: "commitments.references_json",
                    value: refs.clone(),
                })?,
                result_json: r.try_get(4)?,
                attempts: r.try_get(5)?,
            });
        }
        Ok(due)
    }

    /// (pending, delivered) counts, for metrics and tests.
    pub async fn commitment_counts(&self) -> Result<(i64, i64), IndexError> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM commitments WHERE state = 'pending'), \
             (SELECT COUNT(*) FROM commitments WHERE state = 'delivered')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }
}
