//! Leased claims on the index's work queues (forwards, commitment reports)
//! and their housekeeping. Several nodes may share one index: a node takes
//! a row only by claiming it with a lease (`FOR UPDATE SKIP LOCKED` on
//! PostgreSQL, the write lock on SQLite), renews its leases while it works,
//! and clears the lease when it records the outcome. A node that dies
//! leaves leases that expire; nothing else is reset at startup, so a
//! restarting node never takes work another node is doing.

use sqlx::Row;

use super::{unix_now as now, Backend, Index, IndexError};

/// A claim on queue rows: the holder, unique per running server, and how
/// long a claim lasts unless renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub owner: String,
    pub secs: i64,
}

/// The queues that are claimed with leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queue {
    Forwards,
    Commitments,
}

impl Queue {
    fn table(self) -> &'static str {
        match self {
            Queue::Forwards => "forward_queue",
            Queue::Commitments => "commitments",
        }
    }
}

/// Rows claimable now: pending, due, and not under a live lease.
const CLAIMABLE: &str =
    "q.state = 'pending' AND q.next_attempt_at <= $3 AND (q.lease_until IS NULL OR q.lease_until < $3)";

impl Index {
    /// Claim up to `limit` due rows of `queue`, oldest first, that also
    /// match `filter`: SQL over alias `q` and its one parameter, `$5`.
    /// Returns the claimed ids.
    pub(crate) async fn claim(
        &self,
        queue: Queue,
        filter: Option<(&str, &str)>,
        lease: &Lease,
        limit: i64,
    ) -> Result<Vec<i64>, IndexError> {
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let table = queue.table();
        let condition = filter.map_or("", |(sql, _)| sql);
        let sql = format!(
            "UPDATE {table} SET lease_owner = $1, lease_until = $2 WHERE id IN \
             (SELECT q.id FROM {table} q WHERE {CLAIMABLE} {condition} ORDER BY q.id LIMIT $4{lock}) \
             RETURNING id"
        );
        let now = now();
        let mut tx = self.begin_write().await?;
        let mut query = sqlx::query(&sql)
            .bind(&lease.owner)
            .bind(now + lease.secs)
            .bind(now)
            .bind(limit);
        if let Some((_, value)) = filter {
            query = query.bind(value);
        }
        let rows = query.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let mut ids = rows
            .iter()
            .map(|r| r.try_get::<i64, _>(0))
            .collect::<Result<Vec<_>, _>>()?;
        ids.sort_unstable();
        Ok(ids)
    }

    /// Extend every lease `lease.owner` holds, on every queue. A holder
    /// renews well within `lease.secs` while it is alive, so work that
    /// outlasts one lease (a large batch to a slow destination) stays its.
    pub async fn renew_leases(&self, lease: &Lease) -> Result<u64, IndexError> {
        let mut renewed = 0;
        for queue in [Queue::Forwards, Queue::Commitments] {
            let sql = format!(
                "UPDATE {} SET lease_until = $1 WHERE lease_owner = $2 AND state = 'pending'",
                queue.table()
            );
            renewed += sqlx::query(&sql)
                .bind(now() + lease.secs)
                .bind(&lease.owner)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(renewed)
    }

    /// Delete finished rows older than `retention_secs`: forwards done,
    /// reports delivered or given up. Dead letters stay for an operator.
    /// Deletes in bounded batches so no pass holds a long lock.
    pub async fn purge_finished(&self, retention_secs: i64) -> Result<u64, IndexError> {
        const BATCH: i64 = 5_000;
        let cutoff = now() - retention_secs;
        let statements = [
            "DELETE FROM forward_queue WHERE id IN (SELECT id FROM forward_queue \
             WHERE state = 'done' AND done_at < $1 LIMIT $2)",
            "DELETE FROM commitments WHERE id IN (SELECT id FROM commitments \
             WHERE state IN ('delivered', 'failed') AND finished_at < $1 LIMIT $2)",
        ];
        let mut purged = 0;
        for sql in statements {
            loop {
                let done = sqlx::query(sql)
                    .bind(cutoff)
                    .bind(BATCH)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                purged += done;
                if done < BATCH as u64 {
                    break;
                }
            }
        }
        Ok(purged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(owner: &str, secs: i64) -> Lease {
        Lease {
            owner: owner.into(),
            secs,
        }
    }

    #[tokio::test]
    async fn a_claimed_row_is_nobody_elses_until_its_lease_expires() {
        let (_dir, index) = Index::temporary().await;
        let refs = vec![("1.2".to_owned(), "1.2.3".to_owned())];
        for uid in ["1.9.1", "1.9.2"] {
            index
                .add_commitment(uid, "MODALITY", &refs, 0)
                .await
                .expect("add");
        }
        let a = lease("node-a", 60);
        let b = lease("node-b", 60);
        let claimed = index.claim_commitments(&a, 1).await.expect("claim");
        assert_eq!(claimed.len(), 1);
        let rest = index.claim_commitments(&b, 10).await.expect("claim");
        assert_eq!(rest.len(), 1, "B gets only the row A did not claim");
        assert_ne!(claimed[0].id, rest[0].id);
        assert!(index
            .claim_commitments(&b, 10)
            .await
            .expect("claim")
            .is_empty());
        // A renews with a lease already over, as if it had died: B takes
        // its row back.
        index
            .renew_leases(&lease("node-a", -1))
            .await
            .expect("renew");
        let taken = index.claim_commitments(&b, 10).await.expect("claim");
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].id, claimed[0].id);
        // Recording the outcome releases the claim; finished rows are
        // purged after the retention period.
        index.commitment_delivered(taken[0].id).await.expect("done");
        assert_eq!(index.purge_finished(3600).await.expect("purge"), 0);
        assert_eq!(index.purge_finished(-1).await.expect("purge"), 1);
        index.close().await;
    }
}
