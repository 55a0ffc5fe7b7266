//! The forwarding queue: instances waiting to be sent to a peer, those
//! sent and waiting for the peer's storage commitment, their attempts, and
//! the dead letters.

use serde::Serialize;
use sqlx::Row;

use super::queue::{Lease, Queue};
use super::{unix_now as now, Index, IndexError, RetrieveItem};

/// A forward to queue with a new instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewForward {
    pub route: String,
    pub destination_ae: String,
    /// Done only once the destination confirms it by storage commitment.
    pub confirm_commitment: bool,
}

/// A queued forward joined with the instance it sends.
#[derive(Debug, Clone)]
pub struct DueForward {
    pub id: i64,
    pub destination_ae: String,
    pub attempts: i64,
    pub confirm_commitment: bool,
    pub item: RetrieveItem,
}

/// A forward sent and waiting for the destination's commitment report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittingForward {
    pub id: i64,
    pub sop_instance_uid: String,
    pub attempts: i64,
}

/// What a commitment report did to the queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitmentOutcome {
    pub committed: usize,
    pub failed: usize,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ForwardingStats {
    pub pending: i64,
    /// Sent, waiting for the destination's storage commitment.
    pub committing: i64,
    pub done: i64,
    pub dead: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeadLetter {
    pub route: String,
    pub destination_ae: String,
    pub sop_instance_uid: String,
    pub attempts: i64,
    pub last_error: String,
}

impl Index {
    /// Destinations with forwards due now that no node has claimed.
    pub async fn due_destinations(&self, limit: i64) -> Result<Vec<String>, IndexError> {
        let rows = sqlx::query(
            "SELECT DISTINCT destination_ae FROM forward_queue WHERE state = 'pending' \
             AND next_attempt_at <= $1 AND (lease_until IS NULL OR lease_until < $1) LIMIT $2",
        )
        .bind(now())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?)
    }

    /// Claim up to `limit` due forwards to `destination`, oldest first,
    /// with what is needed to send them. Forwards of instances deleted
    /// since they were queued are not claimed.
    pub async fn claim_forwards(
        &self,
        destination: &str,
        lease: &Lease,
        limit: i64,
    ) -> Result<Vec<DueForward>, IndexError> {
        let ids = self
            .claim(
                Queue::Forwards,
                Some((
                    "AND q.destination_ae = $5 AND EXISTS (SELECT 1 FROM instances i \
                     WHERE i.sop_instance_uid = q.sop_instance_uid)",
                    destination,
                )),
                lease,
                limit,
            )
            .await?;
        let mut due = Vec::with_capacity(ids.len());
        for id in ids {
            let row = sqlx::query(
                "SELECT f.id, f.destination_ae, f.attempts, f.confirm_commitment, i.sop_class_uid, \
                 i.sop_instance_uid, i.transfer_syntax_uid, i.object_key FROM forward_queue f \
                 JOIN instances i ON i.sop_instance_uid = f.sop_instance_uid WHERE f.id = $1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
            let Some(r) = row else { continue };
            due.push(DueForward {
                id: r.try_get(0)?,
                destination_ae: r.try_get(1)?,
                attempts: r.try_get(2)?,
                confirm_commitment: r.try_get::<i64, _>(3)? != 0,
                item: RetrieveItem {
                    sop_class_uid: r.try_get(4)?,
                    sop_instance_uid: r.try_get(5)?,
                    transfer_syntax_uid: r.try_get(6)?,
                    key: r.try_get(7)?,
                    // Forwarded as received: routes pass data on.
                    coerce: None,
                },
            });
        }
        Ok(due)
    }

    pub async fn forward_done(&self, id: i64) -> Result<(), IndexError> {
        sqlx::query(
            "UPDATE forward_queue SET state = 'done', done_at = $1, last_error = '', \
             lease_owner = NULL, lease_until = NULL WHERE id = $2",
        )
        .bind(now())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Sent; now waiting for the destination's report on `transaction_uid`.
    /// Recorded before the N-ACTION goes out, so a report that comes at
    /// once on another association finds the rows.
    pub async fn forwards_committing(
        &self,
        ids: &[i64],
        transaction_uid: &str,
    ) -> Result<(), IndexError> {
        let mut tx = self.begin_write().await?;
        for id in ids {
            sqlx::query(
                "UPDATE forward_queue SET state = 'committing', commitment_transaction_uid = $1, \
                 stored_at = $2, last_error = '', lease_owner = NULL, lease_until = NULL \
                 WHERE id = $3",
            )
            .bind(transaction_uid)
            .bind(now())
            .bind(*id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The forwards still waiting for a report on `transaction_uid`.
    pub async fn committing_forwards(
        &self,
        transaction_uid: &str,
    ) -> Result<Vec<CommittingForward>, IndexError> {
        let rows = sqlx::query(
            "SELECT id, sop_instance_uid, attempts FROM forward_queue \
             WHERE commitment_transaction_uid = $1 AND state = 'committing'",
        )
        .bind(transaction_uid)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(CommittingForward {
                    id: r.try_get(0)?,
                    sop_instance_uid: r.try_get(1)?,
                    attempts: r.try_get(2)?,
                })
            })
            .collect()
    }

    /// Forwards whose report did not come within `timeout_secs` are sent
    /// again (or become dead letters). Returns how many.
    pub async fn expire_commitments(
        &self,
        timeout_secs: i64,
        max_attempts: i64,
    ) -> Result<u64, IndexError> {
        let done = sqlx::query(
            "UPDATE forward_queue SET attempts = attempts + 1, next_attempt_at = $1, \
             last_error = $2, commitment_transaction_uid = NULL, \
             state = CASE WHEN attempts + 1 >= $3 THEN 'dead' ELSE 'pending' END \
             WHERE state = 'committing' AND stored_at < $4",
        )
        .bind(now())
        .bind(format!(
            "no storage commitment report within {timeout_secs} s"
        ))
        .bind(max_attempts)
        .bind(now() - timeout_secs)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Another attempt after `delay_secs`, or a dead letter once
    /// `max_attempts` is reached.
    pub async fn forward_retry(
        &self,
        id: i64,
        delay_secs: i64,
        max_attempts: i64,
        error: &str,
    ) -> Result<(), IndexError> {
        sqlx::query(
            "UPDATE forward_queue SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2, \
             commitment_transaction_uid = NULL, lease_owner = NULL, lease_until = NULL, \
             state = CASE WHEN attempts + 1 >= $3 THEN 'dead' ELSE 'pending' END WHERE id = $4",
        )
        .bind(now() + delay_secs)
        .bind(error)
        .bind(max_attempts)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn forwarding_stats(&self) -> Result<ForwardingStats, IndexError> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM forward_queue WHERE state = 'pending'), \
             (SELECT COUNT(*) FROM forward_queue WHERE state = 'committing'), \
             (SELECT COUNT(*) FROM forward_queue WHERE state = 'done'), \
             (SELECT COUNT(*) FROM forward_queue WHERE state = 'dead')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(ForwardingStats {
            pending: row.try_get(0)?,
            committing: row.try_get(1)?,
            done: row.try_get(2)?,
            dead: row.try_get(3)?,
        })
    }

    pub async fn dead_letters(&self, limit: i64) -> Result<Vec<DeadLetter>, IndexError> {
        let rows = sqlx::query(
            "SELECT route, destination_ae, sop_instance_uid, attempts, last_error FROM forward_queue \
             WHERE state = 'dead' ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeadLetter {
                    route: r.try_get(0)?,
                    destination_ae: r.try_get(1)?,
                    sop_instance_uid: r.try_get(2)?,
                    attempts: r.try_get(3)?,
                    last_error: r.try_get(4)?,
                })
            })
            .collect()
    }
}
