//! What DICOMweb reads from the index: instances in a study, series or
//! instance scope with their metadata documents, the version of a scope
//! (for ETags), and where one frame lies in its object.

use std::sync::{LazyLock, OnceLock};

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{frame_blocks, Index, IndexError};

/// A study, one of its series, or one instance of that series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub study: String,
    pub series: Option<String>,
    pub instance: Option<String>,
}

/// One instance in a scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopedInstance {
    pub series_instance_uid: String,
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax_uid: String,
    pub key: String,
    pub size: i64,
    pub number_of_frames: Option<i64>,
    /// The DICOM JSON document; `None` for instances stored before documents
    /// existed or whose document could not be built.
    pub metadata: Option<String>,
    /// The patient to send it with ([`crate::coerce`]).
    pub coerce: Option<crate::model::PatientMeta>,
}

/// Where a frame's bytes are in the stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameLocation {
    /// Raw pixel bytes.
    Native { offset: u64, length: u64 },
    /// Fragment items (headers included) of an encapsulated frame.
    Encapsulated { offset: u64, length: u64 },
    /// The frame number is beyond the instance's frames.
    OutOfRange,
    /// The layout is unknown: the object must be decoded.
    Unknown,
}

static SCOPED_SELECT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT se.series_instance_uid, i.sop_instance_uid, i.sop_class_uid, \
         i.transfer_syntax_uid, i.object_key, i.size_bytes, i.number_of_frames, d.metadata, \
         {} FROM instances i JOIN series se ON se.id = i.series_fk \
         JOIN studies st ON st.id = se.study_fk JOIN patients p ON p.id = st.patient_fk \
         LEFT JOIN instance_documents d ON d.instance_fk = i.id WHERE st.study_instance_uid = $1",
        super::find::COERCE_COLUMNS
    )
});

/// The statement for a scope's depth, built once: `query` borrows its SQL
/// for as long as the row stream lives.
fn scoped_sql(scope: &Scope, with_documents: bool) -> &'static str {
    static STATEMENTS: OnceLock<[String; 6]> = OnceLock::new();
    let all = STATEMENTS.get_or_init(|| {
        let build = |depth: usize, documents: bool| {
            let mut sql = if documents {
                SCOPED_SELECT.to_owned()
            } else {
                SCOPED_SELECT.replace("d.metadata", "NULL")
            };
            if depth >= 1 {
                sql.push_str(" AND se.series_instance_uid = $2");
            }
            if depth >= 2 {
                sql.push_str(" AND i.sop_instance_uid = $3");
            }
            sql.push_str(" ORDER BY se.series_number, se.id, i.instance_number, i.id");
            sql
        };
        [
            build(0, false),
            build(1, false),
            build(2, false),
            build(0, true),
            build(1, true),
            build(2, true),
        ]
    });
    let depth = if scope.instance.is_some() {
        2
    } else {
        usize::from(scope.series.is_some())
    };
    &all[depth + if with_documents { 3 } else { 0 }]
}

const JOINED_SELECT: &str = "SELECT string_agg(d.metadata, ',' \
     ORDER BY se.series_number, se.id, i.instance_number, i.id), COUNT(*), COUNT(d.metadata), \
     MAX(CASE WHEN p.demographics_changed_at >= i.received_at THEN 1 ELSE 0 END) \
     FROM instances i JOIN series se ON se.id = i.series_fk JOIN studies st ON st.id = se.study_fk \
     JOIN patients p ON p.id = st.patient_fk \
     LEFT JOIN instance_documents d ON d.instance_fk = i.id WHERE st.study_instance_uid = $1";

/// The documents of a scope joined in SQL, for a scope's depth.
fn joined_sql(scope: &Scope) -> &'static str {
    static STATEMENTS: OnceLock<[String; 3]> = OnceLock::new();
    let all = STATEMENTS.get_or_init(|| {
        [
            JOINED_SELECT.to_owned(),
            format!("{JOINED_SELECT} AND se.series_instance_uid = $2"),
            format!("{JOINED_SELECT} AND se.series_instance_uid = $2 AND i.sop_instance_uid = $3"),
        ]
    });
    let depth = if scope.instance.is_some() {
        2
    } else {
        usize::from(scope.series.is_some())
    };
    &all[depth]
}

/// The metadata documents of a scope, comma-joined by the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedDocuments {
    pub joined: Option<String>,
    pub instances: i64,
    /// Instances that have a document; fewer than `instances` means some
    /// must be built.
    pub documented: i64,
    /// Some documents name the patient as it was before the RIS changed
    /// it: they are to be read one by one and coerced.
    pub coerced: bool,
}

fn scoped(row: AnyRow, coerces: bool) -> Result<ScopedInstance, IndexError> {
    Ok(ScopedInstance {
        series_instance_uid: row.try_get(0)?,
        sop_instance_uid: row.try_get(1)?,
        sop_class_uid: row.try_get(2)?,
        transfer_syntax_uid: row.try_get(3)?,
        key: row.try_get(4)?,
        size: row.try_get(5)?,
        number_of_frames: row.try_get(6)?,
        metadata: row.try_get(7)?,
        coerce: super::find::coerce_of(&row, 8, coerces)?,
    })
}

impl Index {
    /// The instances of a scope in series and instance order, streamed.
    /// Documents are fetched only when asked for, since retrieve does not
    /// need them.
    pub fn scoped_instances<'a>(
        &'a self,
        scope: &'a Scope,
        with_documents: bool,
    ) -> BoxStream<'a, Result<ScopedInstance, IndexError>> {
        let mut q = sqlx::query(scoped_sql(scope, with_documents)).bind(scope.study.as_str());
        // Unused parameters are bound too: PostgreSQL wants $3 after $2.
        if scope.series.is_some() || scope.instance.is_some() {
            q = q.bind(scope.series.as_deref().unwrap_or_default());
        }
        if let Some(instance) = &scope.instance {
            q = q.bind(instance.as_str());
        }
        q.fetch(&self.pool)
            .map_err(IndexError::from)
            .and_then(move |row| async move { scoped(row, self.coerces()) })
            .boxed()
    }

    /// Every document of a scope in one row: the database concatenates
    /// them, so a 1,000-instance series costs one statement and one string.
    pub async fn joined_documents(&self, scope: &Scope) -> Result<JoinedDocuments, IndexError> {
        let mut q = sqlx::query(joined_sql(scope)).bind(scope.study.as_str());
        if scope.series.is_some() || scope.instance.is_some() {
            q = q.bind(scope.series.as_deref().unwrap_or_default());
        }
        if let Some(instance) = &scope.instance {
            q = q.bind(instance.as_str());
        }
        let row = q.fetch_one(&self.pool).await?;
        Ok(JoinedDocuments {
            joined: row.try_get(0)?,
            instances: row.try_get(1)?,
            documented: row.try_get(2)?,
            coerced: self.coerces() && row.try_get::<Option<i64>, _>(3)?.unwrap_or(0) > 0,
        })
    }

    /// A value that changes whenever the scope's content does, for ETags;
    /// `None` when the scope does not exist.
    pub async fn scope_version(&self, scope: &Scope) -> Result<Option<String>, IndexError> {
        let row = if let Some(instance) = &scope.instance {
            sqlx::query(
                "SELECT i.sha256, p.demographics_changed_at FROM instances i \
                 JOIN series se ON se.id = i.series_fk JOIN studies st ON st.id = se.study_fk \
                 JOIN patients p ON p.id = st.patient_fk \
                 WHERE i.sop_instance_uid = $1 AND se.series_instance_uid = $2 \
                 AND st.study_instance_uid = $3",
            )
            .bind(instance.as_str())
            .bind(scope.series.as_deref().unwrap_or_default())
            .bind(scope.study.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| -> Result<String, IndexError> {
                let sha: String = r.try_get(0)?;
                let changed: i64 = r.try_get(1)?;
                Ok(format!("{sha}-{changed}"))
            })
            .transpose()?
        } else if let Some(series) = &scope.series {
            sqlx::query(
                "SELECT se.id, se.num_instances, se.version, p.demographics_changed_at \
                 FROM series se JOIN studies st ON st.id = se.study_fk \
                 JOIN patients p ON p.id = st.patient_fk \
                 WHERE se.series_instance_uid = $1 AND st.study_instance_uid = $2",
            )
            .bind(series.as_str())
            .bind(scope.study.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| version_of(&r))
            .transpose()?
        } else {
            sqlx::query(
                "SELECT st.id, st.num_instances, st.version, p.demographics_changed_at \
                 FROM studies st JOIN patients p ON p.id = st.patient_fk \
                 WHERE st.study_instance_uid = $1",
            )
            .bind(scope.study.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| version_of(&r))
            .transpose()?
        };
        Ok(row)
    }

    /// Where frame `frame` (1-based) of an instance lies.
    pub async fn frame_location(
        &self,
        sop_instance_uid: &str,
        frame: u32,
    ) -> Result<FrameLocation, IndexError> {
        // The frame's block comes in the same request: a viewer asks for
        // tiles by the hundred.
        let row = sqlx::query(
            "SELECT i.number_of_frames, d.pixel_offset, d.frame_length, d.encapsulated, \
             b.locations FROM instances i LEFT JOIN instance_documents d ON d.instance_fk = i.id \
             LEFT JOIN instance_frame_blocks b ON b.instance_fk = i.id AND b.block_number = $2 \
             WHERE i.sop_instance_uid = $1",
        )
        .bind(sop_instance_uid)
        .bind(frame_blocks::block_of(frame))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(FrameLocation::OutOfRange);
        };
        let frames: Option<i64> = row.try_get(0)?;
        if frame == 0 || i64::from(frame) > frames.unwrap_or(1).max(1) {
            return Ok(FrameLocation::OutOfRange);
        }
        let offset: Option<i64> = row.try_get(1)?;
        let frame_len: Option<i64> = row.try_get(2)?;
        let encapsulated: Option<i64> = row.try_get(3)?;
        if let (Some(offset), Some(frame_len)) = (offset, frame_len) {
            return Ok(FrameLocation::Native {
                offset: (offset + frame_len * (i64::from(frame) - 1)) as u64,
                length: frame_len as u64,
            });
        }
        if encapsulated != Some(1) {
            return Ok(FrameLocation::Unknown);
        }
        let block: Option<Vec<u8>> = row.try_get(4)?;
        Ok(match block.and_then(|b| frame_blocks::locate(&b, frame)) {
            Some((offset, length)) => FrameLocation::Encapsulated { offset, length },
            None => FrameLocation::Unknown,
        })
    }

    /// Store a document built on request for an instance that had none.
    pub async fn save_document(
        &self,
        sop_instance_uid: &str,
        metadata: &str,
    ) -> Result<(), IndexError> {
        sqlx::query(
            "INSERT INTO instance_documents (instance_fk, metadata) \
             SELECT id, $1 FROM instances WHERE sop_instance_uid = $2 \
             ON CONFLICT (instance_fk) DO UPDATE SET metadata = excluded.metadata",
        )
        .bind(metadata)
        .bind(sop_instance_uid)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

fn version_of(row: &AnyRow) -> Result<String, IndexError> {
    let id: i64 = row.try_get(0)?;
    let count: i64 = row.try_get(1)?;
    // The version counter moves with every change, however close in time.
    let version: i64 = row.try_get(2)?;
    // A merge or an ADT update changes what is sent, not the study.
    let patient: i64 = row.try_get(3)?;
    Ok(format!("{id}-{count}-{version}-{patient}"))
}
