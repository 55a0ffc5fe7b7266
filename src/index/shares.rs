//! Studies shared with users: the second way, beside Referring
//! Physician's Name, that a referring physician comes to see a study.

use sqlx::Row;

use super::{Index, IndexError};
use crate::model::StudyShare;

/// What one user may see of a study under the referring rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StudyVisibility {
    NoSuchStudy,
    Hidden,
    Visible,
}

/// The SQL condition, over `st`, that admits the studies a referring user
/// sees: `physician` (a bind placeholder for the folded name) names them,
/// or an unexpired share with `user` (a placeholder) at `now` (one too).
pub(super) fn visible_condition(physician: &str, user: &str, now: &str) -> String {
    format!(
        "(({physician} <> '' AND st.referring_physician_name_folded = {physician}) \
         OR st.study_instance_uid IN (SELECT sh.study_uid FROM study_shares sh \
         WHERE sh.user_name = {user} AND (sh.expires_at = 0 OR sh.expires_at > {now})))"
    )
}

impl Index {
    /// Share `study` with `user` until `expires_at` (0: no end), replacing
    /// an earlier share of the same study with the same user.
    pub async fn share_study(
        &self,
        study: &str,
        user: &str,
        shared_by: &str,
        expires_at: i64,
    ) -> Result<StudyShare, IndexError> {
        let created_at = super::unix_now();
        sqlx::query(
            "INSERT INTO study_shares (study_uid, user_name, shared_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (study_uid, user_name) DO UPDATE SET \
             shared_by = excluded.shared_by, created_at = excluded.created_at, \
             expires_at = excluded.expires_at",
        )
        .bind(study)
        .bind(user)
        .bind(shared_by)
        .bind(created_at)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(StudyShare {
            study_uid: study.to_owned(),
            user: user.to_owned(),
            shared_by: shared_by.to_owned(),
            created_at,
            expires_at,
        })
    }

    /// Whether the index holds a study with this UID.
    pub async fn study_exists(&self, study: &str) -> Result<bool, IndexError> {
        let row = sqlx::query("SELECT COUNT(*) FROM studies WHERE study_instance_uid = $1")
            .bind(study)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>(0)? > 0)
    }

    /// End a share; false when there was none.
    pub async fn unshare_study(&self, study: &str, user: &str) -> Result<bool, IndexError> {
        let done = sqlx::query("DELETE FROM study_shares WHERE study_uid = $1 AND user_name = $2")
            .bind(study)
            .bind(user)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// A study's shares, expired ones included, oldest first.
    pub async fn study_shares(&self, study: &str) -> Result<Vec<StudyShare>, IndexError> {
        let rows = sqlx::query(
            "SELECT study_uid, user_name, shared_by, created_at, expires_at FROM study_shares \
             WHERE study_uid = $1 ORDER BY created_at, user_name",
        )
        .bind(study)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(StudyShare {
                    study_uid: row.try_get(0)?,
                    user: row.try_get(1)?,
                    shared_by: row.try_get(2)?,
                    created_at: row.try_get(3)?,
                    expires_at: row.try_get(4)?,
                })
            })
            .collect()
    }

    /// Whether `user`, whose studies carry the folded Referring
    /// Physician's Name `physician`, may see `study`.
    pub async fn study_visibility(
        &self,
        study: &str,
        physician: &str,
        user: &str,
    ) -> Result<StudyVisibility, IndexError> {
        let sql = format!(
            "SELECT (SELECT COUNT(*) FROM studies st WHERE st.study_instance_uid = $1), \
             (SELECT COUNT(*) FROM studies st WHERE st.study_instance_uid = $1 AND {})",
            visible_condition("$2", "$3", "$4")
        );
        let row = sqlx::query(&sql)
            .bind(study)
            .bind(physician)
            .bind(user)
            .bind(super::unix_now())
            .fetch_one(&self.pool)
            .await?;
        Ok(
            match (row.try_get::<i64, _>(0)?, row.try_get::<i64, _>(1)?) {
                (0, _) => StudyVisibility::NoSuchStudy,
                (_, 0) => StudyVisibility::Hidden,
                _ => StudyVisibility::Visible,
            },
        )
    }
}
