//! Recording received instances: patient/study/series/instance rows, the
//! related-series/instance counters and ModalitiesInStudy, the duplicate
//! policy, and the tombstones of objects a write leaves unreferenced, all
//! inside one transaction per batch.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use sqlx::any::AnyRow;
use sqlx::{Any, Row};

use super::frame_blocks::{self, FRAMES_PER_BLOCK};
use super::write_tx::{KnownSeries, WriteTx};
use super::{unix_now as now, Backend, Index, IndexError, NewForward};
use crate::config::DuplicatePolicy;
use crate::model::{fold_for_matching, InstanceMeta, PixelLayout, StoredObject};

/// One instance to record, with its stored object.
#[derive(Debug, Clone)]
pub struct StoreRequest {
    pub meta: InstanceMeta,
    pub object: StoredObject,
    pub source_ae_title: String,
    /// Forwards to queue, in the same transaction.
    pub forward_to: Vec<NewForward>,
    /// The DICOM JSON metadata document, when it could be built.
    pub document: Option<String>,
    pub pixels: Option<PixelLayout>,
    /// The object was already in storage before this store: it may carry a
    /// tombstone the collector is acting on.
    pub object_existed: bool,
}

/// What recording did. An object a write leaves unreferenced gets a
/// tombstone in the same transaction; the collector deletes it later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// A new instance.
    Inserted,
    /// The same SOP Instance UID with identical bytes was already stored.
    Identical,
    /// Different bytes under a known UID; the stored version was kept.
    KeptExisting,
    /// Different bytes under a known UID, refused by policy.
    Rejected,
    /// Different bytes under a known UID replaced the stored version.
    Replaced,
    /// Refused: the instance's series is already filed under another
    /// study (this one's UID), so one of the two Study Instance UIDs is
    /// wrong. Filing it there would hide it from its own study.
    SeriesInOtherStudy(String),
}

impl Recorded {
    /// Whether the stored instance's row now refers to the object just
    /// received: otherwise that object need not be kept.
    pub fn references_object(&self) -> bool {
        matches!(
            self,
            Recorded::Inserted | Recorded::Identical | Recorded::Replaced
        )
    }
}

/// Where an instance row hangs in the hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parents {
    patient: i64,
    study: i64,
    series: i64,
    new_study: bool,
    new_series: bool,
}

/// How a batch's commit must reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability<'a> {
    /// Synced before the commit returns, like every other write.
    Synced,
    /// Synced, and records that this node's ingest journal holds nothing
    /// the index lacks up to `mark`: a later replay starts after it.
    SyncedThrough { node: &'a str, mark: JournalMark },
    /// Not synced: every request's object is in the ingest journal, whose
    /// replay redoes the rows a power cut loses.
    Journaled,
}

/// A position in a node's ingest journal: segment sequence, then offset.
pub type JournalMark = (u64, u64);

/// A journaled batch recorded in a transaction not yet committed: its rows
/// are written while the ingest journal syncs the same objects, and the
/// commit waits for that sync.
pub struct PreparedBatch {
    tx: WriteTx,
    outcomes: Vec<Recorded>,
}

impl Index {
    /// Record a batch in one transaction (the group commit). Either every
    /// request is recorded or none is.
    pub async fn record_batch(
        &self,
        batch: &[StoreRequest],
        policy: DuplicatePolicy,
        durability: Durability<'_>,
    ) -> Result<Vec<Recorded>, IndexError> {
        let synced = durability != Durability::Journaled;
        let (mut tx, known) = self.begin_batch(synced, batch).await?;
        let outcomes = self.record_all(&mut tx, batch, policy, known).await?;
        if let Durability::SyncedThrough { node, mark } = durability {
            super::journal::set_mark(&mut tx, node, mark).await?;
        }
        tx.commit().await?;
        self.outbox.ring();
        Ok(outcomes)
    }

    /// Record a batch whose every object is being appended to the ingest
    /// journal, without committing: [`Index::commit_prepared`] once the
    /// journal is synced, or drop it to roll back.
    pub async fn prepare_journaled(
        &self,
        batch: &[StoreRequest],
        policy: DuplicatePolicy,
    ) -> Result<PreparedBatch, IndexError> {
        let (mut tx, known) = self.begin_batch(false, batch).await?;
        let outcomes = self.record_all(&mut tx, batch, policy, known).await?;
        Ok(PreparedBatch { tx, outcomes })
    }

    /// Commit a prepared batch, unsynced as [`Durability::Journaled`].
    pub async fn commit_prepared(
        &self,
        prepared: PreparedBatch,
    ) -> Result<Vec<Recorded>, IndexError> {
        prepared.tx.commit().await?;
        self.outbox.ring();
        Ok(prepared.outcomes)
    }

    /// A write transaction for `batch`, synced at commit or not, and what
    /// it already knows of the batch's series (SQLite: looked up in the
    /// same request as `BEGIN`).
    async fn begin_batch(
        &self,
        synced: bool,
        batch: &[StoreRequest],
    ) -> Result<(WriteTx, HashMap<usize, KnownSeries>), IndexError> {
        match self.backend {
            Backend::Sqlite => {
                let pragma = if synced {
                    "PRAGMA synchronous=FULL"
                } else {
                    "PRAGMA synchronous=NORMAL"
                };
                let conn = self.writer.acquire().await?;
                super::write_tx::begin_sqlite(conn, pragma, batch).await
            }
            Backend::Postgres => {
                let mut tx = self.begin_write().await?;
                if !synced {
                    // Only rows the ingest journal can redo. A later synced
                    // commit makes it durable too: the WAL is written in order.
                    sqlx::query("SET LOCAL synchronous_commit TO OFF")
                        .execute(&mut *tx)
                        .await?;
                }
                Ok((WriteTx::Sqlx(tx), HashMap::new()))
            }
        }
    }

    async fn record_all(
        &self,
        tx: &mut WriteTx,
        batch: &[StoreRequest],
        policy: DuplicatePolicy,
        mut known: HashMap<usize, KnownSeries>,
    ) -> Result<Vec<Recorded>, IndexError> {
        let mut outcomes = Vec::with_capacity(batch.len());
        let notify = self.outbox.enabled();
        let mut uids = HashSet::with_capacity(batch.len());
        // What was looked up before the batch holds while every earlier
        // request only added rows; a replacement may have deleted a
        // series, and a UID sent twice is no longer new the second time.
        let mut only_added = true;
        for (at, req) in batch.iter().enumerate() {
            let first = uids.insert(req.meta.sop_instance_uid.as_str());
            let prior = known.remove(&at).filter(|_| only_added && first);
            let outcome = record_one(tx, self.backend, req, policy, notify, prior).await?;
            only_added &= outcome == Recorded::Inserted;
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }
}

async fn record_one(
    tx: &mut WriteTx,
    backend: Backend,
    req: &StoreRequest,
    policy: DuplicatePolicy,
    notify_ris: bool,
    known: Option<KnownSeries>,
) -> Result<Recorded, IndexError> {
    let meta = &req.meta;
    let obj = &req.object;
    let resolved = match known {
        Some(known) => resolved_in(known, meta),
        None => resolve_parents(tx, meta).await?,
    };
    let resolved = match resolved {
        Ok(resolved) => resolved,
        Err(stored_study) => {
            // The object just written for this store is not kept.
            if !req.object_existed {
                tombstone(tx, &obj.key).await?;
            }
            return Ok(Recorded::SeriesInOtherStudy(stored_study));
        }
    };
    let parents = resolved.parents;
    let ts = now();
    // Row, document and counters in one request where that is safe: on
    // SQLite when the UID is known to be new (the transaction holds the
    // only write lock, so it stays new), on PostgreSQL always (the request
    // does nothing when another node holds the UID). Each request is a
    // round trip: to SQLite's connection thread, or over the network.
    let in_one = backend == Backend::Postgres || resolved.sop_instance_known == Some(false);
    let inserted = if in_one {
        insert_new(tx, backend, req, parents, ts).await?
    } else {
        let row = bind_instance(sqlx::query(&INSERT_INSTANCE), req, parents.series, ts)
            .bind(meta.sop_instance_uid.as_str())
            .fetch_optional(&mut **tx)
            .await?;
        if let Some(row) = &row {
            record_document(tx, id_of(row)?, req).await?;
            count_instance(tx, backend, parents, 1, obj.size as i64, ts).await?;
            if req.object_existed {
                keep_object(tx, &obj.key).await?;
            }
        }
        row.is_some()
    };
    if !inserted {
        return record_duplicate(tx, backend, req, policy, parents).await;
    }
    if parents.new_series && !meta.series.modality.is_empty() {
        add_modality(tx, parents.study, &meta.series.modality).await?;
    }
    if parents.new_study && notify_ris {
        super::outbox::queue_study_received(
            tx,
            meta.study.study_instance_uid.as_str(),
            meta.study.accession_number.as_str(),
        )
        .await?;
    }
    queue_forwards(tx, req).await?;
    Ok(Recorded::Inserted)
}

/// The instance columns a store sets, bound by [`bind_instance`] as $1–$16.
const INSTANCE_COLUMNS: [&str; 16] = [
    "series_fk",
    "sop_class_uid",
    "instance_number",
    "number_of_frames",
    "pixel_rows",
    "pixel_columns",
    "bits_allocated",
    "transfer_syntax_uid",
    "specific_character_set",
    "content_date",
    "content_time",
    "object_key",
    "size_bytes",
    "sha256",
    "source_ae_title",
    "received_at",
];

/// A new row; $17 is the SOP Instance UID.
static INSERT_INSTANCE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} ON CONFLICT (sop_instance_uid) DO NOTHING RETURNING id",
        insert_instance()
    )
});

fn insert_instance() -> String {
    let values: Vec<String> = (1..=17).map(|n| format!("${n}")).collect();
    format!(
        "INSERT INTO instances ({}, sop_instance_uid) VALUES ({})",
        INSTANCE_COLUMNS.join(", "),
        values.join(", ")
    )
}

/// A replaced version; $17 is the row id.
static UPDATE_INSTANCE: LazyLock<String> = LazyLock::new(|| {
    let set: Vec<String> = INSTANCE_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c} = ${}", i + 1))
        .collect();
    format!("UPDATE instances SET {} WHERE id = $17", set.join(", "))
});

fn bind_instance<'q>(
    q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    req: &'q StoreRequest,
    series: i64,
    ts: i64,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    let (meta, obj) = (&req.meta, &req.object);
    q.bind(series)
        .bind(meta.sop_class_uid.as_str())
        .bind(meta.instance_number)
        .bind(meta.number_of_frames)
        .bind(meta.rows)
        .bind(meta.columns)
        .bind(meta.bits_allocated)
        .bind(obj.transfer_syntax_uid.as_str())
        .bind(meta.specific_character_set.as_str())
        .bind(meta.content_date.as_str())
        .bind(meta.content_time.as_str())
        .bind(obj.key.as_str())
        .bind(obj.size as i64)
        .bind(obj.sha256.as_str())
        .bind(req.source_ae_title.as_str())
        .bind(ts)
}

/// Where an instance goes, and whether its SOP Instance UID is new.
struct Resolved {
    parents: Parents,
    /// Known only when the series was: the same look-up answers it.
    sop_instance_known: Option<bool>,
}

/// The patient, study and series of `meta`, created when new; `Err` with
/// the stored study's UID when the series is filed under another study.
async fn resolve_parents(
    tx: &mut WriteTx,
    meta: &InstanceMeta,
) -> Result<Result<Resolved, String>, IndexError> {
    // Fast path: the series is usually known already (every instance after
    // a series' first), which skips the patient and study upserts.
    let known = sqlx::query(
        "SELECT se.id, se.study_fk, st.patient_fk, st.study_instance_uid, \
         CASE WHEN EXISTS (SELECT 1 FROM instances WHERE sop_instance_uid = $2) THEN 1 ELSE 0 END \
         FROM series se \
         JOIN studies st ON st.id = se.study_fk WHERE se.series_instance_uid = $1",
    )
    .bind(meta.series.series_instance_uid.as_str())
    .bind(meta.sop_instance_uid.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(row) = known {
        return Ok(resolved_in(KnownSeries::from_row(&row, 0)?, meta));
    }
    let (patient, _) = upsert_patient(tx, meta).await?;
    let (study, new_study) = upsert_study(tx, meta, patient).await?;
    let (series, new_series) = upsert_series(tx, meta, study).await?;
    Ok(Ok(Resolved {
        parents: Parents {
            patient,
            study,
            series,
            new_study,
            new_series,
        },
        sop_instance_known: None,
    }))
}

/// Where `meta` goes in a series already stored; `Err` with the stored
/// study's UID when that is another study.
fn resolved_in(known: KnownSeries, meta: &InstanceMeta) -> Result<Resolved, String> {
    if known.study_instance_uid != meta.study.study_instance_uid.as_str() {
        return Err(known.study_instance_uid);
    }
    Ok(Resolved {
        parents: Parents {
            patient: known.patient,
            study: known.study,
            series: known.series,
            new_study: false,
            new_series: false,
        },
        sop_instance_known: Some(known.sop_instance_known),
    })
}

/// Add (`delta` 1) or remove (-1) one instance of `size` bytes from the
/// counters of its series, study and patient, with their versions bumped.
/// A new series or study counts once, with its first instance.
async fn count_instance(
    tx: &mut WriteTx,
    backend: Backend,
    parents: Parents,
    delta: i64,
    size: i64,
    ts: i64,
) -> Result<(), IndexError> {
    let sql = match backend {
        Backend::Sqlite => COUNT_INSTANCE_SQLITE,
        Backend::Postgres => COUNT_INSTANCE_POSTGRES,
    };
    bind_counts(sqlx::query(sql), parents, delta, size, ts)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Bind the counter updates' parameters, in their order ($1–$8).
fn bind_counts<'q>(
    q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    parents: Parents,
    delta: i64,
    size: i64,
    ts: i64,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    q.bind(delta)
        .bind(ts)
        .bind(parents.series)
        .bind(i64::from(parents.new_series))
        .bind(delta * size)
        .bind(parents.study)
        .bind(i64::from(parents.new_study))
        .bind(parents.patient)
}

// The three counter updates go to the database as one request: on SQLite
// each request is a round trip to the connection's thread, and a store
// makes few enough that these three were a fifth of them. SQLite binds
// `$n` by number in every statement of a multi-statement query;
// PostgreSQL runs data-modifying CTEs to completion whether read or not.
macro_rules! count_series {
    () => {
        "UPDATE series SET num_instances = num_instances + $1, updated_at = $2, \
         version = version + 1 WHERE id = $3"
    };
}
macro_rules! count_study {
    () => {
        "UPDATE studies SET num_instances = num_instances + $1, num_series = num_series + $4, \
         size_bytes = size_bytes + $5, updated_at = $2, version = version + 1 WHERE id = $6"
    };
}
macro_rules! count_patient {
    () => {
        "UPDATE patients SET num_instances = num_instances + $1, num_series = num_series + $4, \
         num_studies = num_studies + $7 WHERE id = $8"
    };
}
const COUNT_INSTANCE_SQLITE: &str = concat!(
    count_series!(),
    "; ",
    count_study!(),
    "; ",
    count_patient!()
);
const COUNT_INSTANCE_POSTGRES: &str = concat!(
    "WITH se AS (",
    count_series!(),
    " RETURNING 1), st AS (",
    count_study!(),
    " RETURNING 1) ",
    count_patient!()
);

/// The object under `key`, which may have been in storage already, is
/// referenced again: no longer a candidate for reclamation. On PostgreSQL
/// this waits for a collector holding the row, so the store sees (and
/// mends) a deletion that won the race; on SQLite the collector holds the
/// write lock throughout. A newly written object is younger than the grace
/// period, which the collector checks.
async fn keep_object(tx: &mut WriteTx, key: &str) -> Result<(), IndexError> {
    sqlx::query(KEEP_OBJECT)
        .bind(key)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

const KEEP_OBJECT: &str = "DELETE FROM object_tombstones WHERE object_key = $1";

/// Record that `key` may no longer be referenced; the collector re-checks.
async fn tombstone(tx: &mut WriteTx, key: &str) -> Result<(), IndexError> {
    sqlx::query(
        "INSERT INTO object_tombstones (object_key, unreferenced_at) VALUES ($1, $2) \
         ON CONFLICT (object_key) DO NOTHING",
    )
    .bind(key)
    .bind(now())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The SOP Instance UID is already indexed: same bytes, or the policy.
/// `parents` are where the new version belongs, resolved (and created when
/// new) before the duplicate was found.
async fn record_duplicate(
    tx: &mut WriteTx,
    backend: Backend,
    req: &StoreRequest,
    policy: DuplicatePolicy,
    parents: Parents,
) -> Result<Recorded, IndexError> {
    let obj = &req.object;
    let row = sqlx::query(
        "SELECT i.id, i.sha256, i.object_key, i.size_bytes, i.series_fk, se.study_fk, \
         st.patient_fk FROM instances i JOIN series se ON se.id = i.series_fk \
         JOIN studies st ON st.id = se.study_fk WHERE i.sop_instance_uid = $1",
    )
    .bind(req.meta.sop_instance_uid.as_str())
    .fetch_one(&mut **tx)
    .await?;
    let id: i64 = row.try_get(0)?;
    let sha: String = row.try_get(1)?;
    let old_key: String = row.try_get(2)?;
    let old_size: i64 = row.try_get(3)?;
    let old = Parents {
        series: row.try_get(4)?,
        study: row.try_get(5)?,
        patient: row.try_get(6)?,
        new_study: false,
        new_series: false,
    };
    if sha == obj.sha256 || policy != DuplicatePolicy::Replace {
        discard_unused(tx, parents).await?;
    }
    if sha == obj.sha256 {
        if req.object_existed {
            keep_object(tx, &obj.key).await?;
        }
        return Ok(Recorded::Identical);
    }
    if policy != DuplicatePolicy::Replace {
        // The object just written for this store is not kept.
        if obj.key != old_key {
            tombstone(tx, &obj.key).await?;
        }
        return Ok(match policy {
            DuplicatePolicy::KeepFirst => Recorded::KeptExisting,
            _ => Recorded::Rejected,
        });
    }
    let meta = &req.meta;
    let ts = now();
    bind_instance(sqlx::query(&UPDATE_INSTANCE), req, parents.series, ts)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    // Out of the old place, into the new one (possibly the same series).
    count_instance(tx, backend, old, -1, old_size, ts).await?;
    count_instance(tx, backend, parents, 1, obj.size as i64, ts).await?;
    if parents.new_series && !meta.series.modality.is_empty() {
        add_modality(tx, parents.study, &meta.series.modality).await?;
    }
    if old.series != parents.series {
        drop_if_empty(tx, old).await?;
    }
    sqlx::query("DELETE FROM instance_frame_blocks WHERE instance_fk = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM instance_documents WHERE instance_fk = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    record_document(tx, id, req).await?;
    queue_forwards(tx, req).await?;
    if req.object_existed {
        keep_object(tx, &obj.key).await?;
    }
    if old_key != obj.key {
        tombstone(tx, &old_key).await?;
    }
    Ok(Recorded::Replaced)
}

/// A series or study created for a version that was not kept holds
/// nothing and was never counted: remove it again.
async fn discard_unused(tx: &mut WriteTx, parents: Parents) -> Result<(), IndexError> {
    if parents.new_series {
        sqlx::query("DELETE FROM series WHERE id = $1")
            .bind(parents.series)
            .execute(&mut **tx)
            .await?;
    }
    if parents.new_study {
        sqlx::query("DELETE FROM studies WHERE id = $1")
            .bind(parents.study)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// A replaced instance moved to another series: remove the series it left
/// (and the study, when that was its last series) once nothing is in it,
/// and rebuild the study's ModalitiesInStudy.
async fn drop_if_empty(tx: &mut WriteTx, old: Parents) -> Result<(), IndexError> {
    let empty = sqlx::query("DELETE FROM series WHERE id = $1 AND num_instances <= 0")
        .bind(old.series)
        .execute(&mut **tx)
        .await?
        .rows_affected()
        > 0;
    if !empty {
        return Ok(());
    }
    sqlx::query("UPDATE studies SET num_series = num_series - 1 WHERE id = $1")
        .bind(old.study)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE patients SET num_series = num_series - 1 WHERE id = $1")
        .bind(old.patient)
        .execute(&mut **tx)
        .await?;
    let study_gone = sqlx::query("DELETE FROM studies WHERE id = $1 AND num_instances <= 0")
        .bind(old.study)
        .execute(&mut **tx)
        .await?
        .rows_affected()
        > 0;
    if study_gone {
        sqlx::query("UPDATE patients SET num_studies = num_studies - 1 WHERE id = $1")
            .bind(old.patient)
            .execute(&mut **tx)
            .await?;
        return Ok(());
    }
    let rows = sqlx::query("SELECT DISTINCT modality FROM series WHERE study_fk = $1")
        .bind(old.study)
        .fetch_all(&mut **tx)
        .await?;
    let mut all = rows
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<Vec<_>, _>>()?;
    all.retain(|m| !m.is_empty());
    all.sort_unstable();
    all.dedup();
    sqlx::query("UPDATE studies SET modalities_in_study = $1 WHERE id = $2")
        .bind(all.join("\\"))
        .bind(old.study)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Queue the instance for every matching route, atomically with recording it.
/// The metadata document and frame locations of an instance row.
async fn record_document(
    tx: &mut WriteTx,
    instance_id: i64,
    req: &StoreRequest,
) -> Result<(), IndexError> {
    let query = sqlx::query(
        "INSERT INTO instance_documents (instance_fk, metadata, pixel_offset, pixel_length, \
         frame_length, encapsulated) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(instance_id);
    bind_document(query, req).execute(&mut **tx).await?;
    if let Some(PixelLayout::Encapsulated { frames }) = &req.pixels {
        record_frame_blocks(tx, instance_id, frames).await?;
    }
    Ok(())
}

/// Bind an instance document's metadata, native pixel offset, length and
/// frame length, and whether its pixel data is encapsulated.
fn bind_document<'q>(
    q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    req: &'q StoreRequest,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    let (offset, length, frame_len) = match &req.pixels {
        Some(PixelLayout::Native {
            offset,
            length,
            frame_len,
        }) => (
            Some(*offset as i64),
            Some(*length as i64),
            Some(*frame_len as i64),
        ),
        _ => (None, None, None),
    };
    let encapsulated = matches!(req.pixels, Some(PixelLayout::Encapsulated { .. }));
    q.bind(req.document.as_deref())
        .bind(offset)
        .bind(length)
        .bind(frame_len)
        .bind(i64::from(encapsulated))
}

/// A new instance's row, document, counters, its object's release from
/// reclamation ([`keep_object`]) and (for up to
/// [`FRAMES_PER_BLOCK`] frames) frame locations as one request, for SQLite
/// and for PostgreSQL, without and with the frames. Parameters: $1–$17 the
/// instance, $18–$22 the document, $23–$30 the counters, $31 the one block
/// of frames; the release reads the object's key, $12. Answers the new
/// row's id, or (PostgreSQL, the UID already there) nothing.
static INSERT_NEW: LazyLock<[[String; 2]; 2]> = LazyLock::new(|| {
    // SQLite runs the statements in turn. The UID is known to be new, and
    // a conflict fails the request rather than being skipped.
    let id = "(SELECT id FROM instances WHERE sop_instance_uid = $17)";
    let sqlite = format!(
        "{} RETURNING id; INSERT INTO instance_documents (instance_fk, metadata, pixel_offset, \
         pixel_length, frame_length, encapsulated) VALUES ({id}, $18, $19, $20, $21, $22); {}; {}",
        insert_instance(),
        shift_parameters(COUNT_INSTANCE_SQLITE, 22),
        shift_parameters(KEEP_OBJECT, 11)
    );
    let sqlite_frame = format!(
        "{sqlite}; INSERT INTO instance_frame_blocks (instance_fk, block_number, locations) \
         VALUES ({id}, 0, $31)"
    );
    // PostgreSQL runs every data-modifying CTE; each acts only on the row
    // `ins` inserted, so a UID another node holds changes nothing.
    let counted = |sql: &str| {
        format!(
            "{} AND EXISTS (SELECT 1 FROM ins) RETURNING 1",
            shift_parameters(sql, 22)
        )
    };
    let postgres = format!(
        "WITH ins AS ({} ON CONFLICT (sop_instance_uid) DO NOTHING RETURNING id), \
         doc AS (INSERT INTO instance_documents (instance_fk, metadata, pixel_offset, \
         pixel_length, frame_length, encapsulated) SELECT id, $18, $19, $20, $21, $22 FROM ins), \
         se AS ({}), st AS ({}), pa AS ({}), tomb AS ({} AND EXISTS (SELECT 1 FROM ins))",
        insert_instance(),
        counted(count_series!()),
        counted(count_study!()),
        counted(count_patient!()),
        shift_parameters(KEEP_OBJECT, 11)
    );
    let postgres_frame = format!(
        "{postgres}, fr AS (INSERT INTO instance_frame_blocks (instance_fk, block_number, \
         locations) SELECT id, 0, $31 FROM ins) SELECT id FROM ins"
    );
    [
        [sqlite, sqlite_frame],
        [format!("{postgres} SELECT id FROM ins"), postgres_frame],
    ]
});

/// Record a new instance with [`INSERT_NEW`]; false when its UID was
/// already there (PostgreSQL only).
async fn insert_new(
    tx: &mut WriteTx,
    backend: Backend,
    req: &StoreRequest,
    parents: Parents,
    ts: i64,
) -> Result<bool, IndexError> {
    let frames = match &req.pixels {
        Some(PixelLayout::Encapsulated { frames }) => frames.as_slice(),
        _ => &[],
    };
    let [without, with_frame] = match backend {
        Backend::Sqlite => &INSERT_NEW[0],
        Backend::Postgres => &INSERT_NEW[1],
    };
    let one_block = (1..=FRAMES_PER_BLOCK).contains(&frames.len());
    let sql = if one_block { with_frame } else { without };
    let query = bind_instance(sqlx::query(sql), req, parents.series, ts)
        .bind(req.meta.sop_instance_uid.as_str());
    let mut query = bind_counts(
        bind_document(query, req),
        parents,
        1,
        req.object.size as i64,
        ts,
    );
    if one_block {
        if let Some((_, block)) = frame_blocks::encode(frames).next() {
            query = query.bind(block);
        }
    }
    let rows = query.fetch_all(&mut **tx).await?;
    let Some(inserted) = rows.first() else {
        return Ok(false);
    };
    if frames.len() > FRAMES_PER_BLOCK {
        record_frame_blocks(tx, id_of(inserted)?, frames).await?;
    }
    Ok(true)
}

/// `sql` with every `$n` renumbered `$(n + by)`, to follow other
/// parameters in one request.
fn shift_parameters(sql: &str, by: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + by).to_string()),
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

/// Blocks per statement: a 20-gigapixel slide of 80,000 tiles takes 79,
/// and 3 parameters a block stays far below both backends' limits.
const BLOCKS_PER_INSERT: usize = 100;

async fn record_frame_blocks(
    tx: &mut WriteTx,
    instance_id: i64,
    frames: &[(u64, u64)],
) -> Result<(), IndexError> {
    let blocks: Vec<(i64, Vec<u8>)> = frame_blocks::encode(frames).collect();
    for chunk in blocks.chunks(BLOCKS_PER_INSERT) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
            .collect();
        let sql = format!(
            "INSERT INTO instance_frame_blocks (instance_fk, block_number, locations) VALUES {}",
            rows.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for (number, block) in chunk {
            query = query.bind(instance_id).bind(*number).bind(block.as_slice());
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

async fn queue_forwards(tx: &mut WriteTx, req: &StoreRequest) -> Result<(), IndexError> {
    let ts = now();
    for forward in &req.forward_to {
        sqlx::query(
            "INSERT INTO forward_queue (route, destination_ae, sop_instance_uid, confirm_commitment, \
             next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(forward.route.as_str())
        .bind(forward.destination_ae.as_str())
        .bind(req.meta.sop_instance_uid.as_str())
        .bind(i64::from(forward.confirm_commitment))
        .bind(ts)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// INSERT … ON CONFLICT DO NOTHING RETURNING id, then SELECT when the row
/// existed; this tells "new" from "existing" on both backends and stays
/// correct when several nodes share one PostgreSQL.
async fn insert_or_get<'q>(
    tx: &mut WriteTx,
    insert: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    select: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
) -> Result<(i64, bool), IndexError> {
    if let Some(row) = insert.fetch_optional(&mut **tx).await? {
        return Ok((id_of(&row)?, true));
    }
    let row = select.fetch_one(&mut **tx).await?;
    Ok((id_of(&row)?, false))
}

fn id_of(row: &AnyRow) -> Result<i64, IndexError> {
    Ok(row.try_get::<i64, _>(0)?)
}

async fn upsert_patient(tx: &mut WriteTx, meta: &InstanceMeta) -> Result<(i64, bool), IndexError> {
    let p = &meta.patient;
    let (id, created) = insert_or_get(
        tx,
        sqlx::query(
            "INSERT INTO patients (patient_id, issuer_of_patient_id, patient_name, \
             patient_name_folded, patient_birth_date, patient_sex) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (patient_id, issuer_of_patient_id) DO NOTHING RETURNING id",
        )
        .bind(p.patient_id.as_str())
        .bind(p.issuer_of_patient_id.as_str())
        .bind(p.patient_name.as_str())
        .bind(fold_for_matching(&p.patient_name))
        .bind(p.patient_birth_date.as_str())
        .bind(p.patient_sex.as_str()),
        sqlx::query("SELECT id FROM patients WHERE patient_id = $1 AND issuer_of_patient_id = $2")
            .bind(p.patient_id.as_str())
            .bind(p.issuer_of_patient_id.as_str()),
    )
    .await?;
    if !created && !p.patient_name.is_empty() {
        // The newest instance carries the current demographics, unless the
        // RIS has spoken: then it is the source, and a name typed at a
        // modality does not overwrite it.
        sqlx::query(
            "UPDATE patients SET patient_name = $1, patient_name_folded = $2, \
             patient_birth_date = $3, patient_sex = $4 WHERE id = $5 AND hl7_updated_at IS NULL",
        )
        .bind(p.patient_name.as_str())
        .bind(fold_for_matching(&p.patient_name))
        .bind(p.patient_birth_date.as_str())
        .bind(p.patient_sex.as_str())
        .bind(id)
        .execute(&mut **tx)
        .await?;
    }
    Ok((id, created))
}

async fn upsert_study(
    tx: &mut WriteTx,
    meta: &InstanceMeta,
    patient_fk: i64,
) -> Result<(i64, bool), IndexError> {
    let s = &meta.study;
    let ts = now();
    insert_or_get(
        tx,
        sqlx::query(
            "INSERT INTO studies (patient_fk, study_instance_uid, study_date, study_time, \
             accession_number, study_id, study_description, referring_physician_name, \
             referring_physician_name_folded, timezone_offset_from_utc, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) \
             ON CONFLICT (study_instance_uid) DO NOTHING RETURNING id",
        )
        .bind(patient_fk)
        .bind(s.study_instance_uid.as_str())
        .bind(s.study_date.as_str())
        .bind(s.study_time.as_str())
        .bind(s.accession_number.as_str())
        .bind(s.study_id.as_str())
        .bind(s.study_description.as_str())
        .bind(s.referring_physician_name.as_str())
        .bind(fold_for_matching(&s.referring_physician_name))
        .bind(s.timezone_offset_from_utc.as_str())
        .bind(ts),
        sqlx::query("SELECT id FROM studies WHERE study_instance_uid = $1")
            .bind(s.study_instance_uid.as_str()),
    )
    .await
}

async fn upsert_series(
    tx: &mut WriteTx,
    meta: &InstanceMeta,
    study_fk: i64,
) -> Result<(i64, bool), IndexError> {
    let s = &meta.series;
    let ts = now();
    insert_or_get(
        tx,
        sqlx::query(
            "INSERT INTO series (study_fk, series_instance_uid, modality, series_number, \
             series_description, body_part_examined, pps_start_date, pps_start_time, \
             scheduled_procedure_step_id, requested_procedure_id, created_at, updated_at, \
             series_date, series_time, institution_name, station_name) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13, $14, $15) \
             ON CONFLICT (series_instance_uid) DO NOTHING RETURNING id",
        )
        .bind(study_fk)
        .bind(s.series_instance_uid.as_str())
        .bind(s.modality.as_str())
        .bind(s.series_number)
        .bind(s.series_description.as_str())
        .bind(s.body_part_examined.as_str())
        .bind(s.performed_procedure_step_start_date.as_str())
        .bind(s.performed_procedure_step_start_time.as_str())
        .bind(s.scheduled_procedure_step_id.as_str())
        .bind(s.requested_procedure_id.as_str())
        .bind(ts)
        .bind(s.series_date.as_str())
        .bind(s.series_time.as_str())
        .bind(s.institution_name.as_str())
        .bind(s.station_name.as_str()),
        sqlx::query("SELECT id FROM series WHERE series_instance_uid = $1")
            .bind(s.series_instance_uid.as_str()),
    )
    .await
}

/// ModalitiesInStudy is kept as a sorted, backslash-separated value.
async fn add_modality(tx: &mut WriteTx, study_id: i64, modality: &str) -> Result<(), IndexError> {
    let row = sqlx::query("SELECT modalities_in_study FROM studies WHERE id = $1")
        .bind(study_id)
        .fetch_one(&mut **tx)
        .await?;
    let current: String = row.try_get(0)?;
    let mut all: Vec<&str> = current.split('\\').filter(|m| !m.is_empty()).collect();
    if all.contains(&modality) {
        return Ok(());
    }
    all.push(modality);
    all.sort_unstable();
    sqlx::query("UPDATE studies SET modalities_in_study = $1 WHERE id = $2")
        .bind(all.join("\\"))
        .bind(study_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::shift_parameters;

    #[test]
    fn parameters_are_renumbered_past_others() {
        assert_eq!(
            shift_parameters("UPDATE t SET a = $1, b = $12 WHERE id = $3 AND c = '$'", 22),
            "UPDATE t SET a = $23, b = $34 WHERE id = $25 AND c = '$'"
        );
    }
}
