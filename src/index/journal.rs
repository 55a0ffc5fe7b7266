//! How far each node's ingest journal is known to be in the index, durably:
//! recovery redoes the index rows of later records only.

use sqlx::AnyConnection;
use sqlx::Row;

use super::{Index, IndexError, JournalMark};

pub(super) async fn set_mark(
    conn: &mut AnyConnection,
    node: &str,
    mark: JournalMark,
) -> Result<(), IndexError> {
    sqlx::query(
        "INSERT INTO ingest_journal (node, sequence, position) VALUES ($1, $2, $3) \
         ON CONFLICT (node) DO UPDATE SET sequence = excluded.sequence, \
         position = excluded.position \
         WHERE excluded.sequence > ingest_journal.sequence \
         OR (excluded.sequence = ingest_journal.sequence \
         AND excluded.position > ingest_journal.position)",
    )
    .bind(node)
    .bind(mark.0 as i64)
    .bind(mark.1 as i64)
    .execute(conn)
    .await?;
    Ok(())
}

impl Index {
    /// Make every earlier journaled commit durable, and record `mark`.
    /// The sync runs after the writer is free again: stores commit
    /// meanwhile instead of waiting for the disk.
    pub async fn mark_journal(&self, node: &str, mark: JournalMark) -> Result<(), IndexError> {
        let mut tx = self.begin_deferred_write().await?;
        set_mark(&mut tx, node, mark).await?;
        tx.commit().await?;
        let ticket = self.committed();
        self.make_durable(ticket).await
    }

    /// The journal position of `node` the index holds durably.
    pub async fn journal_mark(&self, node: &str) -> Result<JournalMark, IndexError> {
        let row = sqlx::query("SELECT sequence, position FROM ingest_journal WHERE node = $1")
            .bind(node)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => (
                row.try_get::<i64, _>(0)? as u64,
                row.try_get::<i64, _>(1)? as u64,
            ),
            None => (0, 0),
        })
    }

    /// Whether any instance refers to the object stored under `key`.
    pub async fn references_object(&self, key: &str) -> Result<bool, IndexError> {
        Ok(
            sqlx::query("SELECT 1 FROM instances WHERE object_key = $1 LIMIT 1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }
}
