//! Tombstones of objects no row references any more, and the storage lease
//! a running server holds. The collector that acts on them lives in
//! [`crate::reclaim`]; here are only the statements, with the lock that
//! makes "still unreferenced" and the deletion one step.

use std::future::Future;

use sqlx::Row;

use super::{unix_now as now, Backend, Index, IndexError};

/// What became of one tombstone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reclaimed {
    /// The object was deleted.
    Deleted,
    /// A row references the object again; the tombstone is gone.
    Referenced,
    /// Not due, or the deletion declined (the object is too new); kept.
    Kept,
}

impl Index {
    /// Tombstones older than `cutoff` (Unix seconds), oldest first.
    pub async fn tombstones_due(&self, cutoff: i64, limit: i64) -> Result<Vec<String>, IndexError> {
        let rows = sqlx::query(
            "SELECT object_key FROM object_tombstones WHERE unreferenced_at <= $1 \
             ORDER BY unreferenced_at LIMIT $2",
        )
        .bind(cutoff)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(IndexError::from))
            .collect()
    }

    /// Re-check one tombstone under the write lock and, when the object is
    /// still unreferenced, run `delete` while holding it. `delete` answers
    /// whether it deleted (false keeps the tombstone for a later pass).
    ///
    /// A store that references the key deletes its tombstone in its own
    /// transaction, so it waits for this one (the row lock on PostgreSQL,
    /// the write lock on SQLite) and then finds the object gone.
    pub async fn reclaim<F, Fut, E>(
        &self,
        key: &str,
        cutoff: i64,
        delete: F,
    ) -> Result<Result<Reclaimed, E>, IndexError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<bool, E>>,
    {
        let mut tx = self.begin_write().await?;
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let due = sqlx::query(&format!(
            "SELECT 1 FROM object_tombstones WHERE object_key = $1 AND unreferenced_at <= $2{lock}"
        ))
        .bind(key)
        .bind(cutoff)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
        if !due {
            return Ok(Ok(Reclaimed::Kept));
        }
        let referenced = sqlx::query("SELECT 1 FROM instances WHERE object_key = $1 LIMIT 1")
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        let outcome = if referenced {
            Reclaimed::Referenced
        } else {
            match delete().await {
                Ok(true) => Reclaimed::Deleted,
                Ok(false) => return Ok(Ok(Reclaimed::Kept)),
                Err(e) => return Ok(Err(e)),
            }
        };
        sqlx::query("DELETE FROM object_tombstones WHERE object_key = $1")
            .bind(key)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Ok(outcome))
    }

    /// Number of tombstones, for `/metrics` and tests.
    pub async fn tombstone_count(&self) -> Result<i64, IndexError> {
        let row = sqlx::query("SELECT COUNT(*) FROM object_tombstones")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>(0)?)
    }

    /// Take or renew `holder`'s lease on `storage` for `ttl_secs`.
    pub async fn renew_storage_lease(
        &self,
        holder: &str,
        storage: &str,
        ttl_secs: i64,
    ) -> Result<(), IndexError> {
        sqlx::query(
            "INSERT INTO storage_leases (holder, storage, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (holder) DO UPDATE SET storage = excluded.storage, \
             expires_at = excluded.expires_at",
        )
        .bind(holder)
        .bind(storage)
        .bind(now() + ttl_secs)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn release_storage_lease(&self, holder: &str) -> Result<(), IndexError> {
        sqlx::query("DELETE FROM storage_leases WHERE holder = $1")
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Holders of unexpired leases on `storage`.
    pub async fn storage_lease_holders(&self, storage: &str) -> Result<Vec<String>, IndexError> {
        let rows =
            sqlx::query("SELECT holder FROM storage_leases WHERE storage = $1 AND expires_at > $2")
                .bind(storage)
                .bind(now())
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(IndexError::from))
            .collect()
    }
}
