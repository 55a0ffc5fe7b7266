//! Accounts in use: log in with lockout, resolve a session cookie or an
//! API token to a [`Principal`], create and manage users and tokens.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::{password, secret, AuthError, Principal, Via};
use crate::index::users::{ExternalUpsert, NewUser};
use crate::index::Index;
use crate::model::{ApiToken, Roles, Session, User};

/// Failed logins in a row before an account locks.
pub const LOCK_AFTER: i64 = 5;
/// The first lockout; each further failure doubles it, up to [`MAX_LOCK`].
const FIRST_LOCK_SECS: i64 = 30;
const MAX_LOCK_SECS: i64 = 15 * 60;
/// A session's `last_seen` is written at most this often.
const TOUCH_EVERY_SECS: i64 = 60;
/// Prefix of API token secrets, so a leaked one is recognisable.
pub const TOKEN_PREFIX: &str = "tsk_";
/// The longest a token may live.
pub const MAX_TOKEN_DAYS: i64 = 3650;

/// Session lifetimes.
#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    pub idle: Duration,
    pub absolute: Duration,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy {
            idle: Duration::from_secs(30 * 60),
            absolute: Duration::from_secs(12 * 3600),
        }
    }
}

/// A session just started: the cookie value goes to the browser, and only
/// its digest stays here.
pub struct NewSession {
    pub cookie: String,
    pub session: Session,
    pub user: User,
}

/// A token just created; `secret` is shown once.
pub struct NewToken {
    pub secret: String,
    pub token: ApiToken,
}

/// Handle on accounts; cheap to clone.
#[derive(Clone)]
pub struct Accounts {
    index: Index,
    policy: SessionPolicy,
    users_exist: Arc<AtomicBool>,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// How long an account stays locked after `failures` failures in a row.
pub fn lock_secs(failures: i64) -> i64 {
    if failures < LOCK_AFTER {
        return 0;
    }
    let doublings = (failures - LOCK_AFTER).min(10) as u32;
    (FIRST_LOCK_SECS << doublings).min(MAX_LOCK_SECS)
}

/// A hash to verify against when the name is unknown, so a wrong name
/// costs as much time as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| password::hash("Decoy-Passw0rd!").unwrap_or_default())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AuthError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AuthError::Random(e.to_string()))
}

impl Accounts {
    pub fn new(index: Index, policy: SessionPolicy) -> Self {
        Accounts {
            index,
            policy,
            users_exist: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether any account exists. Once true it stays true: accounts are
    /// disabled, never deleted. Until then the index is asked every time,
    /// so an account made by `tessera user add` or on another node counts
    /// at once.
    pub async fn users_exist(&self) -> Result<bool, AuthError> {
        if self.users_exist.load(Ordering::Acquire) {
            return Ok(true);
        }
        let exist = self.index.users_exist().await?;
        if exist {
            self.users_exist.store(true, Ordering::Release);
        }
        Ok(exist)
    }

    /// Create an account. `must_change` is set for accounts an admin
    /// creates for someone else.
    pub async fn add_user(
        &self,
        name: &str,
        roles: &Roles,
        password: &str,
        must_change: bool,
        physician_name: &str,
    ) -> Result<(), AuthError> {
        check_name(name)?;
        if roles.is_empty() {
            return Err(AuthError::NoRoles);
        }
        password::check_rules(password)?;
        let owned = password.to_owned();
        let hash = blocking(move || password::hash(&owned)).await??;
        let created = self
            .index
            .insert_user(&NewUser {
                name,
                roles,
                password_hash: &hash,
                must_change,
                physician_name,
            })
            .await?;
        if !created {
            return Err(AuthError::UserExists(name.to_owned()));
        }
        self.users_exist.store(true, Ordering::Release);
        Ok(())
    }

    /// Set a password. `must_change` is true when an admin resets someone
    /// else's. Other sessions of the user end.
    pub async fn set_password(
        &self,
        name: &str,
        password: &str,
        must_change: bool,
        keep_session: Option<&str>,
    ) -> Result<(), AuthError> {
        if self
            .index
            .user(name)
            .await?
            .is_some_and(|u| u.is_external())
        {
            return Err(AuthError::External(name.to_owned()));
        }
        password::check_rules(password)?;
        let owned = password.to_owned();
        let hash = blocking(move || password::hash(&owned)).await??;
        if !self
            .index
            .set_password(name, &hash, must_change, keep_session)
            .await?
        {
            return Err(AuthError::NoSuchUser(name.to_owned()));
        }
        Ok(())
    }

    /// Change one's own password: the current one must be given.
    pub async fn change_own_password(
        &self,
        principal: &Principal,
        current: &str,
        new: &str,
    ) -> Result<(), AuthError> {
        let user = self
            .index
            .user(&principal.user)
            .await?
            .ok_or_else(|| AuthError::NoSuchUser(principal.user.clone()))?;
        let stored = user.password_hash.clone();
        let given = current.to_owned();
        if !blocking(move || password::verify(&stored, &given)).await? {
            return Err(AuthError::WrongPassword);
        }
        if current == new {
            return Err(AuthError::SamePassword);
        }
        self.set_password(&principal.user, new, false, principal.session.as_deref())
            .await
    }

    pub async fn set_disabled(&self, name: &str, disabled: bool) -> Result<(), AuthError> {
        if !self.index.set_user_disabled(name, disabled).await? {
            return Err(AuthError::NoSuchUser(name.to_owned()));
        }
        Ok(())
    }

    pub async fn set_roles(&self, name: &str, roles: &Roles) -> Result<(), AuthError> {
        if roles.is_empty() {
            return Err(AuthError::NoRoles);
        }
        if !self.index.set_user_roles(name, roles).await? {
            return Err(AuthError::NoSuchUser(name.to_owned()));
        }
        Ok(())
    }

    pub async fn users(&self) -> Result<Vec<User>, AuthError> {
        Ok(self.index.users().await?)
    }

    pub async fn user(&self, name: &str) -> Result<User, AuthError> {
        self.index
            .user(name)
            .await?
            .ok_or_else(|| AuthError::NoSuchUser(name.to_owned()))
    }

    /// Check a name and password, counting failures towards a lockout.
    /// Every refusal but a lockout reads the same, so the answer does not
    /// tell which names exist.
    pub async fn check_password(&self, name: &str, password: &str) -> Result<User, AuthError> {
        let now = now();
        // An identity provider's account has no password here; it reads
        // like an unknown name and never locks.
        let user = self.index.user(name).await?.filter(|u| !u.is_external());
        if let Some(user) = &user {
            if user.locked_until > now {
                return Err(AuthError::Locked {
                    seconds: user.locked_until - now,
                });
            }
        }
        let stored = user
            .as_ref()
            .map_or_else(|| decoy_hash().to_owned(), |u| u.password_hash.clone());
        let given = password.to_owned();
        let good = blocking(move || password::verify(&stored, &given)).await?;
        match user {
            Some(user) if good && !user.disabled => {
                if user.failed_logins > 0 {
                    self.index.record_login_failure(&user.name, 0, 0).await?;
                }
                Ok(user)
            }
            Some(user) if !good => {
                let failures = user.failed_logins + 1;
                let lock = lock_secs(failures);
                let until = if lock > 0 { now + lock } else { 0 };
                self.index
                    .record_login_failure(&user.name, failures, until)
                    .await?;
                if lock > 0 {
                    tracing::warn!(user = %user.name, failures, lock, "account locked");
                    return Err(AuthError::LockedNow);
                }
                Err(AuthError::BadCredentials)
            }
            _ => Err(AuthError::BadCredentials),
        }
    }

    /// Check a name and password and start a session.
    pub async fn login(&self, name: &str, password: &str) -> Result<NewSession, AuthError> {
        let user = self.check_password(name, password).await?;
        self.start_session(user).await
    }

    /// Start a session for someone an identity provider vouched for,
    /// creating or refreshing the account from its claims.
    pub async fn login_external(
        &self,
        name: &str,
        roles: &Roles,
        physician_name: &str,
    ) -> Result<NewSession, AuthError> {
        check_name(name)?;
        if roles.is_empty() {
            return Err(AuthError::NoRoles);
        }
        match self
            .index
            .upsert_external_user(name, roles, physician_name)
            .await?
        {
            ExternalUpsert::LocalExists => return Err(AuthError::LocalAccount(name.to_owned())),
            ExternalUpsert::Disabled => return Err(AuthError::Disabled(name.to_owned())),
            ExternalUpsert::Created => {
                self.users_exist.store(true, Ordering::Release);
            }
            ExternalUpsert::Updated => {}
        }
        let user = self.user(name).await?;
        self.start_session(user).await
    }

    async fn start_session(&self, user: User) -> Result<NewSession, AuthError> {
        let now = now();
        let cookie = secret::random_hex(32)?;
        let session = Session {
            id_hash: secret::digest(&cookie),
            user: user.name.clone(),
            csrf: secret::random_hex(16)?,
            created_at: now,
            last_seen: now,
            expires_at: now + self.policy.absolute.as_secs() as i64,
        };
        self.index.start_session(&session).await?;
        Ok(NewSession {
            cookie,
            session,
            user,
        })
    }

    pub async fn logout(&self, principal: &Principal) -> Result<(), AuthError> {
        if let Some(id_hash) = &principal.session {
            self.index.end_session(id_hash).await?;
        }
        Ok(())
    }

    /// The user behind a session cookie, if the session is alive.
    pub async fn from_cookie(&self, cookie: &str) -> Result<Option<Principal>, AuthError> {
        let id_hash = secret::digest(cookie);
        let Some((session, user)) = self.index.session(&id_hash).await? else {
            return Ok(None);
        };
        let now = now();
        let idle_limit = self.policy.idle.as_secs() as i64;
        if user.disabled || session.expires_at <= now || now - session.last_seen > idle_limit {
            self.index.end_session(&id_hash).await?;
            return Ok(None);
        }
        if now - session.last_seen >= TOUCH_EVERY_SECS {
            self.index.touch_session(&id_hash, now).await?;
        }
        Ok(Some(Principal {
            user: user.name,
            roles: user.roles,
            via: Via::Session,
            must_change: user.must_change,
            csrf: Some(session.csrf),
            session: Some(id_hash),
            physician_name: user.physician_name,
        }))
    }

    /// The user behind an API token, limited to the token's roles.
    pub async fn from_token(&self, given: &str) -> Result<Option<Principal>, AuthError> {
        if !given.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        let Some((token, user)) = self.index.token(&secret::digest(given)).await? else {
            return Ok(None);
        };
        let now = now();
        if user.disabled || token.revoked_at.is_some() || token.expires_at <= now {
            return Ok(None);
        }
        if now - token.last_used_at >= TOUCH_EVERY_SECS {
            self.index.touch_token(token.id, now).await?;
        }
        // A token never holds more than its user holds today.
        let roles = Roles(token.roles.0.intersection(&user.roles.0).copied().collect());
        Ok(Some(Principal {
            user: user.name,
            roles,
            via: Via::Token,
            must_change: false,
            csrf: None,
            session: None,
            physician_name: user.physician_name,
        }))
    }

    /// A new token for `user` holding `roles` (a subset of the user's) for
    /// `days` days.
    pub async fn create_token(
        &self,
        user: &str,
        name: &str,
        roles: Option<&Roles>,
        days: i64,
    ) -> Result<NewToken, AuthError> {
        check_name(name)?;
        if !(1..=MAX_TOKEN_DAYS).contains(&days) {
            return Err(AuthError::TokenLifetime);
        }
        let owner = self.user(user).await?;
        let roles = roles.cloned().unwrap_or_else(|| owner.roles.clone());
        if roles.is_empty() || !roles.is_subset(&owner.roles) {
            return Err(AuthError::TokenRoles);
        }
        let secret = format!("{TOKEN_PREFIX}{}", secret::random_hex(32)?);
        let expires_at = now() + days * 86_400;
        if !self
            .index
            .insert_token(user, name, &secret::digest(&secret), &roles, expires_at)
            .await?
        {
            return Err(AuthError::TokenExists(name.to_owned()));
        }
        let token = self
            .index
            .tokens(user)
            .await?
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| AuthError::TokenExists(name.to_owned()))?;
        Ok(NewToken { secret, token })
    }

    pub async fn tokens(&self, user: &str) -> Result<Vec<ApiToken>, AuthError> {
        Ok(self.index.tokens(user).await?)
    }

    pub async fn revoke_token(&self, user: &str, name: &str) -> Result<(), AuthError> {
        if !self.index.revoke_token(user, name).await? {
            return Err(AuthError::NoSuchToken(name.to_owned()));
        }
        Ok(())
    }

    /// Drop ended sessions; run now and then.
    pub async fn purge_sessions(&self) -> Result<u64, AuthError> {
        let now = now();
        let idle = self.policy.idle.as_secs() as i64;
        Ok(self.index.purge_sessions(now, now - idle).await?)
    }
}

/// User and token names: 1–64 letters, digits, `.`, `_`, `-` or `@`, so
/// they fit in paths, logs and audit records unescaped.
fn check_name(name: &str) -> Result<(), AuthError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(AuthError::BadName(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockout_backs_off() {
        assert_eq!(lock_secs(4), 0);
        assert_eq!(lock_secs(5), 30);
        assert_eq!(lock_secs(6), 60);
        assert_eq!(lock_secs(9), 480);
        assert_eq!(lock_secs(10), 900);
        assert_eq!(lock_secs(1000), 900);
    }

    #[test]
    fn names() {
        assert!(check_name("dr.kowalski@radiology").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name(&"x".repeat(65)).is_err());
    }
}
