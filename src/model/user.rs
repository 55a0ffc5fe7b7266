//! Who may log in and what they may do: roles, user and token records as
//! the index keeps them. Checking passwords and deciding access is
//! [`crate::auth`]'s job.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

/// A role from the security model. A user holds one or more; an API
/// token holds some of its user's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including users, peers, routes and configuration.
    Admin,
    /// Store, edit study attributes, manage the worklist, see everything.
    Technologist,
    /// Search, view, download, read and write reports.
    Radiologist,
    /// Only studies that name them as referring physician.
    Referring,
    /// The audit trail and nothing else.
    Auditor,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Technologist,
        Role::Radiologist,
        Role::Referring,
        Role::Auditor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Technologist => "technologist",
            Role::Radiologist => "radiologist",
            Role::Referring => "referring",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown role {0:?} (admin, technologist, radiologist, referring, auditor)")]
pub struct UnknownRole(pub String);

/// A set of roles; stored as a comma-separated list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Roles(pub BTreeSet<Role>);

impl Roles {
    /// Parse `admin,radiologist`.
    pub fn parse(list: &str) -> Result<Self, UnknownRole> {
        let mut roles = BTreeSet::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            roles.insert(Role::parse(name).ok_or_else(|| UnknownRole(name.to_owned()))?);
        }
        Ok(Roles(roles))
    }

    pub fn all() -> Self {
        Roles(Role::ALL.into_iter().collect())
    }

    pub fn contains(&self, role: Role) -> bool {
        self.0.contains(&role)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether these roles see every study, not only a referring
    /// physician's own.
    pub fn see_every_study(&self) -> bool {
        [Role::Admin, Role::Technologist, Role::Radiologist]
            .into_iter()
            .any(|r| self.contains(r))
    }

    pub fn is_subset(&self, of: &Roles) -> bool {
        self.0.is_subset(&of.0)
    }

    pub fn iter(&self) -> impl Iterator<Item = Role> + '_ {
        self.0.iter().copied()
    }
}

impl fmt::Display for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|r| r.as_str()).collect();
        f.write_str(&names.join(","))
    }
}

/// A user as the index keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub name: String,
    pub roles: Roles,
    #[serde(skip)]
    pub password_hash: String,
    /// Set for accounts an admin created or reset: the next login must
    /// choose a new password before anything else.
    pub must_change: bool,
    pub disabled: bool,
    #[serde(skip)]
    pub failed_logins: i64,
    /// Unix seconds; 0 when not locked.
    pub locked_until: i64,
    /// The Referring Physician's Name (DICOM PN) a referring user's
    /// studies carry.
    pub physician_name: String,
    pub created_at: i64,
    /// `local` (a password kept here) or `oidc` (an identity provider's).
    pub source: String,
}

impl User {
    /// Whether an identity provider, not a password here, proves it.
    pub fn is_external(&self) -> bool {
        self.source != "local"
    }
}

/// An API token as the index keeps it; the secret itself is never stored.
#[derive(Debug, Clone, Serialize)]
pub struct ApiToken {
    pub id: i64,
    pub user: String,
    pub name: String,
    pub roles: Roles,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub last_used_at: i64,
}

/// A browser session as the index keeps it, keyed by the cookie's hash.
#[derive(Debug, Clone)]
pub struct Session {
    pub id_hash: String,
    pub user: String,
    /// Sent back in `X-CSRF-Token` on every state-changing request.
    pub csrf: String,
    pub created_at: i64,
    pub last_seen: i64,
    pub expires_at: i64,
}

/// A study shared with a user outside the referring-physician rule.
#[derive(Debug, Clone, Serialize)]
pub struct StudyShare {
    pub study_uid: String,
    pub user: String,
    pub shared_by: String,
    pub created_at: i64,
    /// Unix seconds; 0 when it never expires.
    pub expires_at: i64,
}
