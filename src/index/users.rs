//! Users, browser sessions and API tokens: the rows behind
//! [`crate::auth`]. Secrets arrive here already hashed.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Index, IndexError};
use crate::model::{ApiToken, Roles, Session, User};

const USER_COLUMNS: &str = "users.name, users.roles, users.password_hash, users.must_change, \
     users.disabled, users.failed_logins, users.locked_until, users.physician_name, \
     users.created_at, users.source";

fn roles(column: &'static str, text: String) -> Result<Roles, IndexError> {
    Roles::parse(&text).map_err(|_| IndexError::Corrupt {
        column,
        value: text,
    })
}

/// A user row from [`USER_COLUMNS`] starting at column `at`.
fn decode_user(row: &AnyRow, at: usize) -> Result<User, IndexError> {
    Ok(User {
        name: row.try_get(at)?,
        roles: roles("users.roles", row.try_get(at + 1)?)?,
        password_hash: row.try_get(at + 2)?,
        must_change: row.try_get::<i64, _>(at + 3)? != 0,
        disabled: row.try_get::<i64, _>(at + 4)? != 0,
        failed_logins: row.try_get(at + 5)?,
        locked_until: row.try_get(at + 6)?,
        physician_name: row.try_get(at + 7)?,
        created_at: row.try_get(at + 8)?,
        source: row.try_get(at + 9)?,
    })
}

const TOKEN_COLUMNS: &str = "api_tokens.id, api_tokens.user_name, api_tokens.name, \
     api_tokens.roles, api_tokens.created_at, api_tokens.expires_at, api_tokens.revoked_at, \
     api_tokens.last_used_at";

fn decode_token(row: &AnyRow) -> Result<ApiToken, IndexError> {
    Ok(ApiToken {
        id: row.try_get(0)?,
        user: row.try_get(1)?,
        name: row.try_get(2)?,
        roles: roles("api_tokens.roles", row.try_get(3)?)?,
        created_at: row.try_get(4)?,
        expires_at: row.try_get(5)?,
        revoked_at: row.try_get(6)?,
        last_used_at: row.try_get(7)?,
    })
}

/// A new account as `tessera user add` or the API creates it.
pub struct NewUser<'a> {
    pub name: &'a str,
    pub roles: &'a Roles,
    pub password_hash: &'a str,
    pub must_change: bool,
    pub physician_name: &'a str,
}

/// What [`Index::upsert_external_user`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExternalUpsert {
    Created,
    Updated,
    /// A local account holds the name; the provider may not take it over.
    LocalExists,
    Disabled,
}

impl Index {
    /// Create or refresh an account an identity provider vouches for:
    /// its roles and physician name follow the provider at each login.
    pub async fn upsert_external_user(
        &self,
        name: &str,
        roles: &Roles,
        physician_name: &str,
    ) -> Result<ExternalUpsert, IndexError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("SELECT source, disabled FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        let outcome = match row {
            Some(row) if row.try_get::<String, _>(0)? == "local" => ExternalUpsert::LocalExists,
            Some(row) if row.try_get::<i64, _>(1)? != 0 => ExternalUpsert::Disabled,
            Some(_) => {
                sqlx::query("UPDATE users SET roles = $1, physician_name = $2 WHERE name = $3")
                    .bind(roles.to_string())
                    .bind(physician_name)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                ExternalUpsert::Updated
            }
            None => {
                let now = super::unix_now();
                // '!' is no PHC string, so no password ever matches it.
                sqlx::query(
                    "INSERT INTO users (name, roles, password_hash, must_change, physician_name, \
                     created_at, password_changed_at, source) \
                     VALUES ($1, $2, '!', 0, $3, $4, $4, 'oidc')",
                )
                .bind(name)
                .bind(roles.to_string())
                .bind(physician_name)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                ExternalUpsert::Created
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Whether any account exists; with none, only loopback clients are
    /// served.
    pub async fn users_exist(&self) -> Result<bool, IndexError> {
        let row = sqlx::query("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>(0)? > 0)
    }

    pub async fn user(&self, name: &str) -> Result<Option<User>, IndexError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1");
        let row = sqlx::query(&sql)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(|r| decode_user(r, 0)).transpose()
    }

    pub async fn users(&self) -> Result<Vec<User>, IndexError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY name");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(|r| decode_user(r, 0)).collect()
    }

    /// Create an account; false when the name is taken.
    pub async fn insert_user(&self, user: &NewUser<'_>) -> Result<bool, IndexError> {
        let now = super::unix_now();
        let done = sqlx::query(
            "INSERT INTO users (name, roles, password_hash, must_change, physician_name, \
             created_at, password_changed_at) VALUES ($1, $2, $3, $4, $5, $6, $6) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(user.name)
        .bind(user.roles.to_string())
        .bind(user.password_hash)
        .bind(i64::from(user.must_change))
        .bind(user.physician_name)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Set a new password and clear any lockout. Every session of the user
    /// ends except `keep_session` (the one that made the change).
    pub async fn set_password(
        &self,
        name: &str,
        password_hash: &str,
        must_change: bool,
        keep_session: Option<&str>,
    ) -> Result<bool, IndexError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE users SET password_hash = $1, must_change = $2, failed_logins = 0, \
             locked_until = 0, password_changed_at = $3 WHERE name = $4",
        )
        .bind(password_hash)
        .bind(i64::from(must_change))
        .bind(super::unix_now())
        .bind(name)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM sessions WHERE user_name = $1 AND id_hash <> $2")
            .bind(name)
            .bind(keep_session.unwrap_or(""))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Enable or disable an account; disabling ends its sessions.
    pub async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<bool, IndexError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("UPDATE users SET disabled = $1 WHERE name = $2")
            .bind(i64::from(disabled))
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if disabled {
            sqlx::query("DELETE FROM sessions WHERE user_name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn set_user_roles(&self, name: &str, roles: &Roles) -> Result<bool, IndexError> {
        let done = sqlx::query("UPDATE users SET roles = $1 WHERE name = $2")
            .bind(roles.to_string())
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Count a failed login; `locked_until` (unix seconds) is the lockout
    /// the caller derived from the new count.
    pub async fn record_login_failure(
        &self,
        name: &str,
        failed_logins: i64,
        locked_until: i64,
    ) -> Result<(), IndexError> {
        sqlx::query("UPDATE users SET failed_logins = $1, locked_until = $2 WHERE name = $3")
            .bind(failed_logins)
            .bind(locked_until)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Start a session after a good password; clears the failure count.
    pub async fn start_session(&self, session: &Session) -> Result<(), IndexError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE users SET failed_logins = 0, locked_until = 0 WHERE name = $1")
            .bind(&session.user)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO sessions (id_hash, user_name, csrf, created_at, last_seen, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&session.id_hash)
        .bind(&session.user)
        .bind(&session.csrf)
        .bind(session.created_at)
        .bind(session.last_seen)
        .bind(session.expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A session and its user, by the hash of the cookie.
    pub async fn session(&self, id_hash: &str) -> Result<Option<(Session, User)>, IndexError> {
        let sql = format!(
            "SELECT sessions.id_hash, sessions.user_name, sessions.csrf, sessions.created_at, \
             sessions.last_seen, sessions.expires_at, {USER_COLUMNS} FROM sessions \
             JOIN users ON users.name = sessions.user_name WHERE sessions.id_hash = $1"
        );
        let Some(row) = sqlx::query(&sql)
            .bind(id_hash)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let session = Session {
            id_hash: row.try_get(0)?,
            user: row.try_get(1)?,
            csrf: row.try_get(2)?,
            created_at: row.try_get(3)?,
            last_seen: row.try_get(4)?,
            expires_at: row.try_get(5)?,
        };
        Ok(Some((session, decode_user(&row, 6)?)))
    }

    pub async fn touch_session(&self, id_hash: &str, now: i64) -> Result<(), IndexError> {
        sqlx::query("UPDATE sessions SET last_seen = $1 WHERE id_hash = $2")
            .bind(now)
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn end_session(&self, id_hash: &str) -> Result<(), IndexError> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Drop sessions past their absolute end or idle since `idle_before`.
    pub async fn purge_sessions(&self, now: i64, idle_before: i64) -> Result<u64, IndexError> {
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at < $1 OR last_seen < $2")
            .bind(now)
            .bind(idle_before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Store a new token; false when the user already has one by that name.
    pub async fn insert_token(
        &self,
        user: &str,
        name: &str,
        secret_hash: &str,
        roles: &Roles,
        expires_at: i64,
    ) -> Result<bool, IndexError> {
        let done = sqlx::query(
            "INSERT INTO api_tokens (user_name, name, secret_hash, roles, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(user)
        .bind(name)
        .bind(secret_hash)
        .bind(roles.to_string())
        .bind(super::unix_now())
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// A token and its user, by the hash of the secret.
    pub async fn token(&self, secret_hash: &str) -> Result<Option<(ApiToken, User)>, IndexError> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS}, {USER_COLUMNS} FROM api_tokens \
             JOIN users ON users.name = api_tokens.user_name WHERE api_tokens.secret_hash = $1"
        );
        let Some(row) = sqlx::query(&sql)
            .bind(secret_hash)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some((decode_token(&row)?, decode_user(&row, 8)?)))
    }

    pub async fn tokens(&self, user: &str) -> Result<Vec<ApiToken>, IndexError> {
        let sql =
            format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE user_name = $1 ORDER BY name");
        let rows = sqlx::query(&sql).bind(user).fetch_all(&self.pool).await?;
        rows.iter().map(decode_token).collect()
    }

    /// Revoke a user's token by name; false when there is none to revoke.
    pub async fn revoke_token(&self, user: &str, name: &str) -> Result<bool, IndexError> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE user_name = $2 AND name = $3 \
             AND revoked_at IS NULL",
        )
        .bind(super::unix_now())
        .bind(user)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn touch_token(&self, id: i64, now: i64) -> Result<(), IndexError> {
        sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
