//! Who is calling and what they may do.
//!
//! - [`Accounts`]: users, login with lockout, sessions and API tokens,
//!   kept in the index.
//! - [`access`]: the one table from route to the roles that may call it.
//! - [`password`]: the password rules and argon2id.
//! - [`oidc`]: single sign-on through an OpenID Connect provider.
//!
//! A request becomes a [`Principal`] (from a session cookie, an API
//! token, the deprecated shared token, or a loopback client while no
//! account exists); the HTTP edge asks [`access`] whether its roles allow
//! the route.

pub mod access;
mod accounts;
pub mod oidc;
pub mod password;
mod secret;

pub use accounts::{Accounts, NewSession, NewToken, SessionPolicy, LOCK_AFTER, TOKEN_PREFIX};
pub use secret::same as same_secret;

use crate::index::IndexError;
use crate::model::Roles;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid name or password")]
    BadCredentials,
    /// A wrong password that just locked the account; reads as
    /// [`AuthError::BadCredentials`] to the caller.
    #[error("invalid name or password")]
    LockedNow,
    #[error("the account is locked after repeated failures; try again in {seconds} s")]
    Locked { seconds: i64 },
    #[error("the current password is wrong")]
    WrongPassword,
    #[error("the new password must differ from the current one")]
    SamePassword,
    #[error(transparent)]
    Password(#[from] password::PasswordError),
    #[error("a user named {0:?} exists already")]
    UserExists(String),
    #[error("no user named {0:?}")]
    NoSuchUser(String),
    #[error("a user needs at least one role")]
    NoRoles,
    #[error("names are 1 to 64 letters, digits, '.', '_', '-' or '@': {0:?}")]
    BadName(String),
    #[error("a token's roles must be some of its user's roles")]
    TokenRoles,
    #[error("a token lives 1 to 3650 days")]
    TokenLifetime,
    #[error("a token named {0:?} exists already")]
    TokenExists(String),
    #[error("no active token named {0:?}")]
    NoSuchToken(String),
    #[error("{0:?} logs in through the identity provider; it has no password here")]
    External(String),
    #[error("a local account named {0:?} exists; single sign-on may not log in as it")]
    LocalAccount(String),
    #[error("the account {0:?} is disabled")]
    Disabled(String),
    #[error("no randomness from the operating system: {0}")]
    Random(String),
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// How a caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Session,
    Token,
    /// `http.api_token`, kept for existing scripts.
    SharedToken,
    /// A client on this machine while no account exists.
    Loopback,
}

/// The caller of one request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: String,
    pub roles: Roles,
    pub via: Via,
    /// The password must be changed before anything else.
    pub must_change: bool,
    /// The session's CSRF token; state-changing requests must echo it.
    pub csrf: Option<String>,
    /// The session's key in the index.
    pub session: Option<String>,
    pub physician_name: String,
}

impl Principal {
    /// The Referring Physician's Name this caller's studies must carry
    /// (or be shared with it), when the referring role is all it has;
    /// `None` when it sees everything.
    pub fn only_referred_by(&self) -> Option<&str> {
        let referring = self.roles.contains(crate::model::Role::Referring);
        (referring && !self.roles.see_every_study()).then_some(self.physician_name.as_str())
    }

    /// Everyone-may-do-everything callers: loopback before the first
    /// account, and the shared token.
    pub fn superuser(name: &str, via: Via) -> Self {
        Principal {
            user: name.to_owned(),
            roles: Roles::all(),
            via,
            must_change: false,
            csrf: None,
            session: None,
            physician_name: String::new(),
        }
    }
}
