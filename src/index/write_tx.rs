//! The transaction a batch of stores is recorded in. On PostgreSQL it is
//! sqlx's own. On SQLite it is opened and closed with plain statements:
//! sqlx's `BEGIN` and `COMMIT` hand their result to the caller in a
//! rendezvous that parks SQLite's connection thread until it is taken, and
//! `BEGIN` costs a round trip of its own. Here `BEGIN` travels with the
//! batch's first look-up, and `COMMIT` is one ordinary request.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};

use sqlx::any::AnyRow;
use sqlx::pool::PoolConnection;
use sqlx::AnyConnection;
use sqlx::{Any, Row, Transaction};

use super::IndexError;
use crate::index::StoreRequest;

/// A write transaction: dereferences to its connection.
pub(super) enum WriteTx {
    Sqlx(Transaction<'static, Any>),
    Sqlite(SqliteTx),
}

/// A SQLite transaction begun by a plain `BEGIN IMMEDIATE`. Dropped before
/// [`WriteTx::commit`], its connection is closed rather than pooled, which
/// rolls the transaction back.
pub(super) struct SqliteTx {
    conn: PoolConnection<Any>,
    open: bool,
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        if self.open {
            self.conn.close_on_drop();
        }
    }
}

impl WriteTx {
    pub(super) async fn commit(self) -> Result<(), IndexError> {
        match self {
            WriteTx::Sqlx(tx) => tx.commit().await?,
            WriteTx::Sqlite(mut tx) => {
                sqlx::query("COMMIT").execute(&mut *tx.conn).await?;
                tx.open = false;
            }
        }
        Ok(())
    }
}

impl Deref for WriteTx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        match self {
            WriteTx::Sqlx(tx) => tx,
            WriteTx::Sqlite(tx) => &tx.conn,
        }
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            WriteTx::Sqlx(tx) => &mut *tx,
            WriteTx::Sqlite(tx) => &mut tx.conn,
        }
    }
}

/// What the batch's look-up found of a request's series, by the request's
/// place in the batch.
pub(super) struct KnownSeries {
    pub series: i64,
    pub study: i64,
    pub patient: i64,
    pub study_instance_uid: String,
    pub sop_instance_known: bool,
}

impl KnownSeries {
    /// Read from `row`, whose columns from `first` on are the series' id,
    /// its study's id, the patient's id, the Study Instance UID and whether
    /// the SOP Instance UID is stored (0 or 1).
    pub(super) fn from_row(row: &AnyRow, first: usize) -> Result<Self, IndexError> {
        Ok(KnownSeries {
            series: row.try_get(first)?,
            study: row.try_get(first + 1)?,
            patient: row.try_get(first + 2)?,
            study_instance_uid: row.try_get(first + 3)?,
            sop_instance_known: row.try_get::<i64, _>(first + 4)? != 0,
        })
    }
}

/// Every request's series (when it is stored) and whether its SOP
/// Instance UID is, in one statement whatever the batch's size: `$1` is a
/// JSON array of `[series UID, SOP Instance UID]` pairs.
const KNOWN_SERIES: &str = "SELECT CAST(j.key AS INTEGER), se.id, se.study_fk, st.patient_fk, \
     st.study_instance_uid, EXISTS (SELECT 1 FROM instances \
     WHERE sop_instance_uid = json_extract(j.value, '$[1]')) \
     FROM json_each($1) j \
     JOIN series se ON se.series_instance_uid = json_extract(j.value, '$[0]') \
     JOIN studies st ON st.id = se.study_fk";

/// Begin an IMMEDIATE transaction on `conn` after `pragma`, and look up
/// the series of every request in the same request.
pub(super) async fn begin_sqlite(
    mut conn: PoolConnection<Any>,
    pragma: &str,
    batch: &[StoreRequest],
) -> Result<(WriteTx, HashMap<usize, KnownSeries>), IndexError> {
    let pairs: Vec<[&str; 2]> = batch
        .iter()
        .map(|r| {
            [
                r.meta.series.series_instance_uid.as_str(),
                r.meta.sop_instance_uid.as_str(),
            ]
        })
        .collect();
    let pairs = serde_json::to_string(&pairs)
        .map_err(|e| IndexError::Query(sqlx::Error::Encode(e.into())))?;
    let sql = format!("{pragma}; BEGIN IMMEDIATE; {KNOWN_SERIES}");
    let rows = sqlx::query(&sql).bind(pairs).fetch_all(&mut *conn).await;
    // From here on a failure must roll back whatever began.
    let tx = SqliteTx { conn, open: true };
    let mut known = HashMap::with_capacity(batch.len());
    for row in rows? {
        let at: i64 = row.try_get(0)?;
        known.insert(at as usize, KnownSeries::from_row(&row, 1)?);
    }
    Ok((WriteTx::Sqlite(tx), known))
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use crate::index::Index;

    /// The look-up must find each series through its unique index, not by
    /// walking the table.
    #[tokio::test]
    async fn known_series_are_found_by_index() {
        let (_dir, index) = Index::temporary().await;
        let rows = sqlx::query(&format!("EXPLAIN QUERY PLAN {}", super::KNOWN_SERIES))
            .bind("[]")
            .fetch_all(&index.pool)
            .await
            .expect("plan");
        let plan: Vec<String> = rows
            .iter()
            .map(|r| r.try_get::<String, _>(3).expect("detail"))
            .collect();
        for table in ["se", "st", "instances"] {
            assert!(
                plan.iter()
                    .any(|d| d.starts_with(&format!("SEARCH {table} USING"))),
                "{table} not searched by index: {plan:?}"
            );
        }
        index.close().await;
    }
}
