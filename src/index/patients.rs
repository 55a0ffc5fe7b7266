//! Patient demographics, visits, merges and identifier changes from the
//! RIS/HIS. Studies follow their patient row, so C-FIND and QIDO show a
//! change as soon as it commits.

use sqlx::{Any, Row, Transaction};

use super::{unix_now as now, IndexError};
use crate::model::fold_for_matching;

/// A patient's identity: the ID and its issuer ('' unless the site keys
/// patients by issuer).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct PatientKey {
    pub id: String,
    pub issuer: String,
}

/// Demographics as sent. `None` leaves a stored value alone; `Some("")`
/// clears it (HL7's `""`).
#[derive(Debug, Clone, Default)]
pub struct Demographics {
    pub name: Option<String>,
    pub birth_date: Option<String>,
    pub sex: Option<String>,
    pub address: Option<String>,
    pub phone: Option<String>,
    pub other_ids: Option<String>,
}

/// A visit (PV1), keyed by its visit number.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Visit {
    pub number: String,
    pub class: String,
    pub location: String,
    pub attending: String,
    pub admitted_at: String,
    pub discharged_at: String,
    pub status: String,
}

/// One change a message asks for.
#[derive(Debug, Clone)]
pub enum PatientChange {
    /// Create the patient or update what was sent.
    Update {
        key: PatientKey,
        demographics: Demographics,
    },
    /// Everything of `prior` moves under `survivor`; `prior` is gone.
    Merge {
        survivor: PatientKey,
        demographics: Demographics,
        prior: PatientKey,
    },
    /// `old` is now known as `new` (merged into `new` if both exist).
    ChangeId {
        new: PatientKey,
        demographics: Demographics,
        old: PatientKey,
    },
    Visit {
        key: PatientKey,
        visit: Visit,
    },
}

/// Patient rows one message has written, by key: its later changes (a
/// visit, an order) need the row, not another round trip for it.
pub(super) type PatientIds = std::collections::HashMap<PatientKey, i64>;

/// The row of `key`, from `ids` or the index.
pub(super) async fn id_of(
    tx: &mut Transaction<'static, Any>,
    key: &PatientKey,
    ids: &PatientIds,
) -> Result<Option<i64>, IndexError> {
    match ids.get(key) {
        Some(id) => Ok(Some(*id)),
        None => find(tx, key).await,
    }
}

pub(super) async fn apply(
    tx: &mut Transaction<'static, Any>,
    change: &PatientChange,
    ids: &mut PatientIds,
) -> Result<(), IndexError> {
    match change {
        PatientChange::Update { key, demographics } => {
            let id = upsert(tx, key, demographics).await?;
            ids.insert(key.clone(), id);
            return Ok(());
        }
        PatientChange::Merge {
            survivor,
            demographics,
            prior,
        } => {
            let into = upsert(tx, survivor, demographics).await?;
            merge(tx, prior, survivor, into).await?;
        }
        PatientChange::ChangeId {
            new,
            demographics,
            old,
        } => match (find(tx, new).await?, find(tx, old).await?) {
            (None, Some(row)) => {
                sqlx::query(
                    "UPDATE patients SET patient_id = $1, issuer_of_patient_id = $2, \
                         demographics_changed_at = $3 WHERE id = $4",
                )
                .bind(new.id.as_str())
                .bind(new.issuer.as_str())
                .bind(now())
                .bind(row)
                .execute(&mut **tx)
                .await?;
                record_merge(tx, old, new, -1).await?;
                rename_in_reports(tx, old, new).await?;
                upsert(tx, new, demographics).await?;
            }
            _ => {
                let into = upsert(tx, new, demographics).await?;
                merge(tx, old, new, into).await?;
            }
        },
        PatientChange::Visit { key, visit } => {
            let patient = match ids.get(key) {
                Some(id) => *id,
                None => upsert(tx, key, &Demographics::default()).await?,
            };
            ids.insert(key.clone(), patient);
            upsert_visit(tx, patient, visit).await?;
            return Ok(());
        }
    }
    // Merges and new IDs move and delete rows.
    ids.clear();
    Ok(())
}

async fn find(
    tx: &mut Transaction<'static, Any>,
    key: &PatientKey,
) -> Result<Option<i64>, IndexError> {
    let row =
        sqlx::query("SELECT id FROM patients WHERE patient_id = $1 AND issuer_of_patient_id = $2")
            .bind(key.id.as_str())
            .bind(key.issuer.as_str())
            .fetch_optional(&mut **tx)
            .await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

/// The patient's row, created if new, with every sent field written.
async fn upsert(
    tx: &mut Transaction<'static, Any>,
    key: &PatientKey,
    d: &Demographics,
) -> Result<i64, IndexError> {
    // One statement, new patient or not; COALESCE keeps what was not sent.
    // The old values on the right-hand side tell a real change.
    let row = sqlx::query(
        "INSERT INTO patients (patient_id, issuer_of_patient_id, patient_name, \
         patient_name_folded, patient_birth_date, patient_sex, patient_address, patient_phone, \
         other_patient_ids, hl7_updated_at, demographics_changed_at) \
         VALUES ($1, $2, COALESCE($3, ''), COALESCE($4, ''), COALESCE($5, ''), COALESCE($6, ''), \
         COALESCE($7, ''), COALESCE($8, ''), COALESCE($9, ''), $10, $10) \
         ON CONFLICT (patient_id, issuer_of_patient_id) DO UPDATE SET \
         patient_name = COALESCE($3, patients.patient_name), \
         patient_name_folded = COALESCE($4, patients.patient_name_folded), \
         patient_birth_date = COALESCE($5, patients.patient_birth_date), \
         patient_sex = COALESCE($6, patients.patient_sex), \
         patient_address = COALESCE($7, patients.patient_address), \
         patient_phone = COALESCE($8, patients.patient_phone), \
         other_patient_ids = COALESCE($9, patients.other_patient_ids), hl7_updated_at = $10, \
         demographics_changed_at = CASE \
         WHEN COALESCE($3, patients.patient_name) <> patients.patient_name \
         OR COALESCE($5, patients.patient_birth_date) <> patients.patient_birth_date \
         OR COALESCE($6, patients.patient_sex) <> patients.patient_sex \
         THEN $10 ELSE patients.demographics_changed_at END \
         RETURNING id",
    )
    .bind(key.id.as_str())
    .bind(key.issuer.as_str())
    .bind(d.name.as_deref())
    .bind(d.name.as_deref().map(fold_for_matching))
    .bind(d.birth_date.as_deref())
    .bind(d.sex.as_deref())
    .bind(d.address.as_deref())
    .bind(d.phone.as_deref())
    .bind(d.other_ids.as_deref())
    .bind(now())
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.try_get(0)?)
}

/// Move `prior`'s studies and visits to the patient row `into`, add its
/// counts, and delete it. A prior patient that is not there (already
/// merged, or never known) moves nothing: the merge is recorded and
/// succeeds, so a repeated message is harmless.
async fn merge(
    tx: &mut Transaction<'static, Any>,
    prior: &PatientKey,
    survivor: &PatientKey,
    into: i64,
) -> Result<(), IndexError> {
    let from = match find(tx, prior).await? {
        Some(from) if from != into => from,
        _ => {
            record_merge(tx, prior, survivor, 0).await?;
            return Ok(());
        }
    };
    let moved = sqlx::query("UPDATE studies SET patient_fk = $1 WHERE patient_fk = $2")
        .bind(into)
        .bind(from)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    // A visit number both patients have stays with the survivor.
    sqlx::query(
        "DELETE FROM patient_visits WHERE patient_fk = $1 AND visit_number IN \
         (SELECT visit_number FROM patient_visits WHERE patient_fk = $2)",
    )
    .bind(from)
    .bind(into)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE patient_visits SET patient_fk = $1 WHERE patient_fk = $2")
        .bind(into)
        .bind(from)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE worklist_items SET patient_fk = $1 WHERE patient_fk = $2")
        .bind(into)
        .bind(from)
        .execute(&mut **tx)
        .await?;
    rename_in_reports(tx, prior, survivor).await?;
    // A self-join under an alias: the same statement on both backends.
    let add_counts = "UPDATE patients SET num_studies = patients.num_studies + p.num_studies, \
         num_series = patients.num_series + p.num_series, \
         num_instances = patients.num_instances + p.num_instances \
         FROM patients AS p WHERE p.id = $2 AND patients.id = $1";
    sqlx::query(add_counts)
        .bind(into)
        .bind(from)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM patients WHERE id = $1")
        .bind(from)
        .execute(&mut **tx)
        .await?;
    // The moved studies' objects name the prior patient.
    sqlx::query("UPDATE patients SET demographics_changed_at = $1 WHERE id = $2")
        .bind(now())
        .bind(into)
        .execute(&mut **tx)
        .await?;
    record_merge(tx, prior, survivor, moved as i64).await
}

/// Reports name their patient by ID: they follow a merge or a new ID.
async fn rename_in_reports(
    tx: &mut Transaction<'static, Any>,
    from: &PatientKey,
    to: &PatientKey,
) -> Result<(), IndexError> {
    sqlx::query("UPDATE reports SET patient_id = $1 WHERE patient_id = $2")
        .bind(to.id.as_str())
        .bind(from.id.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// `studies_moved` -1 marks an identifier change made in place.
async fn record_merge(
    tx: &mut Transaction<'static, Any>,
    prior: &PatientKey,
    survivor: &PatientKey,
    studies_moved: i64,
) -> Result<(), IndexError> {
    sqlx::query(
        "INSERT INTO patient_merges (prior_patient_id, prior_issuer, survivor_patient_id, \
         survivor_issuer, studies_moved, merged_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(prior.id.as_str())
    .bind(prior.issuer.as_str())
    .bind(survivor.id.as_str())
    .bind(survivor.issuer.as_str())
    .bind(studies_moved)
    .bind(now())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn upsert_visit(
    tx: &mut Transaction<'static, Any>,
    patient: i64,
    v: &Visit,
) -> Result<(), IndexError> {
    sqlx::query(
        "INSERT INTO patient_visits (patient_fk, visit_number, patient_class, location, \
         attending_doctor, admitted_at, discharged_at, status, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (patient_fk, visit_number) DO UPDATE SET \
         patient_class = CASE WHEN excluded.patient_class = '' THEN patient_visits.patient_class ELSE excluded.patient_class END, \
         location = CASE WHEN excluded.location = '' THEN patient_visits.location ELSE excluded.location END, \
         attending_doctor = CASE WHEN excluded.attending_doctor = '' THEN patient_visits.attending_doctor ELSE excluded.attending_doctor END, \
         admitted_at = CASE WHEN excluded.admitted_at = '' THEN patient_visits.admitted_at ELSE excluded.admitted_at END, \
         discharged_at = CASE WHEN excluded.discharged_at = '' THEN patient_visits.discharged_at ELSE excluded.discharged_at END, \
         status = excluded.status, updated_at = excluded.updated_at",
    )
    .bind(patient)
    .bind(v.number.as_str())
    .bind(v.class.as_str())
    .bind(v.location.as_str())
    .bind(v.attending.as_str())
    .bind(v.admitted_at.as_str())
    .bind(v.discharged_at.as_str())
    .bind(v.status.as_str())
    .bind(now())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A patient as the API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PatientRecord {
    pub patient_id: String,
    pub issuer: String,
    pub name: String,
    pub birth_date: String,
    pub sex: String,
    pub address: String,
    pub phone: String,
    pub other_ids: String,
    pub num_studies: i64,
    pub visits: Vec<Visit>,
}

impl super::Index {
    /// A patient with their visits, for `/api/v1/patients/{id}`.
    pub async fn patient(&self, key: &PatientKey) -> Result<Option<PatientRecord>, IndexError> {
        let Some(row) = sqlx::query(
            "SELECT id, patient_name, patient_birth_date, patient_sex, patient_address, \
             patient_phone, other_patient_ids, num_studies FROM patients \
             WHERE patient_id = $1 AND issuer_of_patient_id = $2",
        )
        .bind(key.id.as_str())
        .bind(key.issuer.as_str())
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let id: i64 = row.try_get(0)?;
        let visits = sqlx::query(
            "SELECT visit_number, patient_class, location, attending_doctor, admitted_at, \
             discharged_at, status FROM patient_visits WHERE patient_fk = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|v| {
            Ok(Visit {
                number: v.try_get(0)?,
                class: v.try_get(1)?,
                location: v.try_get(2)?,
                attending: v.try_get(3)?,
                admitted_at: v.try_get(4)?,
                discharged_at: v.try_get(5)?,
                status: v.try_get(6)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(Some(PatientRecord {
            patient_id: key.id.clone(),
            issuer: key.issuer.clone(),
            name: row.try_get(1)?,
            birth_date: row.try_get(2)?,
            sex: row.try_get(3)?,
            address: row.try_get(4)?,
            phone: row.try_get(5)?,
            other_ids: row.try_get(6)?,
            num_studies: row.try_get(7)?,
            visits,
        }))
    }
}
