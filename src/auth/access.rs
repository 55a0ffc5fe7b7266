//! The one table of who may call what: every HTTP route, matched by method
//! and path, and every DIMSE service ([`DIMSE_RULES`]), to the class of
//! access it needs, and each class to the roles that hold it. A path the
//! table does not name needs the admin role, so a new route is closed
//! until someone places it here.

use crate::model::{PeerService, Role};

/// What a route does, in the terms of the security model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Probes, the login page and CORS preflights: no login.
    Public,
    /// A user's own session, password and tokens.
    Account,
    /// Search, view and download patient data, and the rest of the
    /// JSON API's reads.
    Read,
    /// DICOMweb reads and the viewer: [`Access::Read`] plus referring
    /// physicians, whom the HTTP edge limits to their own studies.
    View,
    /// Reports on a study.
    Reports,
    /// Share a study with a referring user.
    Share,
    /// Store objects (STOW-RS).
    Store,
    /// Worklist entries, HL7 message replay, study status.
    Operate,
    /// Users, peers, routes and configuration.
    Admin,
    /// The audit trail.
    Audit,
    /// Prometheus metrics, unless `http.public_metrics` opens them.
    Metrics,
}

impl Access {
    /// The roles that may do this. Empty for [`Access::Public`].
    pub fn roles(self) -> &'static [Role] {
        use Role::*;
        match self {
            Access::Public => &[],
            Access::Account => &[Admin, Technologist, Radiologist, Referring, Auditor],
            Access::Read | Access::Reports | Access::Share => &[Admin, Technologist, Radiologist],
            Access::View => &[Admin, Technologist, Radiologist, Referring],
            Access::Store | Access::Operate => &[Admin, Technologist],
            Access::Admin | Access::Metrics => &[Admin],
            Access::Audit => &[Admin, Auditor],
        }
    }
}

/// One line of the table. `path` is split on `/`: `*` matches one segment,
/// a final `**` matches any rest, including nothing.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
}

const fn rule(method: &'static str, path: &'static str, access: Access) -> Rule {
    Rule {
        method,
        path,
        access,
    }
}

/// First match wins.
pub const RULES: &[Rule] = &[
    rule("OPTIONS", "/**", Access::Public),
    rule("GET", "/healthz", Access::Public),
    rule("GET", "/readyz", Access::Public),
    rule("GET", "/login", Access::Public),
    rule("POST", "/login", Access::Public),
    rule("GET", "/login/oidc", Access::Public),
    rule("GET", "/login/oidc/callback", Access::Public),
    rule("GET", "/login.css", Access::Public),
    rule("GET", "/favicon.ico", Access::Public),
    rule("GET", "/", Access::Account),
    rule("GET", "/ui/**", Access::Account),
    rule("GET", "/study/*", Access::Account),
    rule("GET", "/slide/*/*", Access::Account),
    rule("GET", "/metrics", Access::Metrics),
    rule("POST", "/logout", Access::Account),
    rule("GET", "/account/password", Access::Account),
    rule("GET", "/api/v1/session", Access::Account),
    rule("POST", "/api/v1/account/password", Access::Account),
    rule("GET", "/api/v1/account/tokens", Access::Account),
    rule("POST", "/api/v1/account/tokens", Access::Account),
    rule("DELETE", "/api/v1/account/tokens/*", Access::Account),
    rule("GET", "/api/v1/users", Access::Admin),
    rule("POST", "/api/v1/users", Access::Admin),
    rule("GET", "/api/v1/users/*", Access::Admin),
    rule("PATCH", "/api/v1/users/*", Access::Admin),
    rule("POST", "/api/v1/users/*/password", Access::Admin),
    rule("GET", "/api/v1/users/*/tokens", Access::Admin),
    rule("POST", "/api/v1/users/*/tokens", Access::Admin),
    rule("DELETE", "/api/v1/users/*/tokens/*", Access::Admin),
    rule("GET", "/api/v1/audit", Access::Audit),
    rule("GET", "/api/v1/stats", Access::Read),
    rule("GET", "/api/v1/search", Access::View),
    rule("GET", "/api/v1/forwarding", Access::Operate),
    rule("GET", "/api/v1/peers", Access::Admin),
    rule("GET", "/api/v1/peers/*", Access::Admin),
    rule("PUT", "/api/v1/peers/*", Access::Admin),
    rule("DELETE", "/api/v1/peers/*", Access::Admin),
    rule("POST", "/api/v1/peers/*/echo", Access::Admin),
    rule("GET", "/api/v1/hl7/messages", Access::Operate),
    rule("GET", "/api/v1/hl7/messages/*", Access::Operate),
    rule("POST", "/api/v1/hl7/messages/*/replay", Access::Operate),
    rule("GET", "/api/v1/hl7/outbound", Access::Operate),
    rule("POST", "/api/v1/hl7/outbound/*/retry", Access::Operate),
    rule("GET", "/api/v1/patients/*", Access::Read),
    rule("GET", "/api/v1/worklist", Access::Read),
    rule("POST", "/api/v1/worklist", Access::Operate),
    rule("GET", "/api/v1/worklist/conflicts", Access::Operate),
    rule("POST", "/api/v1/worklist/*/status", Access::Operate),
    rule("GET", "/api/v1/mpps", Access::Read),
    rule("GET", "/api/v1/studies/*/reports", Access::Reports),
    rule("GET", "/api/v1/studies/*/archive", Access::View),
    rule("GET", "/api/v1/studies/*/status", Access::Read),
    rule("GET", "/api/v1/studies/*/shares", Access::Share),
    rule("PUT", "/api/v1/studies/*/shares/*", Access::Share),
    rule("DELETE", "/api/v1/studies/*/shares/*", Access::Share),
    rule("POST", "/dicom-web/studies", Access::Store),
    rule("POST", "/dicom-web/studies/*", Access::Store),
    rule("GET", "/dicom-web/**", Access::View),
    rule("GET", "/wado", Access::View),
    rule("GET", "/viewer", Access::View),
    rule("GET", "/viewer/**", Access::View),
];

/// DIMSE services, for associations whose requestor proved an account
/// (user identity negotiation): the access each needs. C-ECHO needs none.
/// Queries and retrieves are [`Access::Read`]: DIMSE has no referring
/// physician filter.
pub const DIMSE_RULES: &[(PeerService, Access)] = &[
    (PeerService::Store, Access::Store),
    (PeerService::Find, Access::Read),
    (PeerService::Move, Access::Read),
    (PeerService::Get, Access::Read),
    (PeerService::Commit, Access::Store),
    (PeerService::Mpps, Access::Operate),
];

/// The access a DIMSE service needs.
pub fn dimse(service: PeerService) -> Access {
    DIMSE_RULES
        .iter()
        .find(|(s, _)| *s == service)
        .map_or(Access::Admin, |(_, access)| *access)
}

/// The access a request needs. HEAD is checked as GET.
pub fn required(method: &str, path: &str) -> Access {
    let method = if method == "HEAD" { "GET" } else { method };
    RULES
        .iter()
        .find(|r| r.method == method && matches(r.path, path))
        .map_or(Access::Admin, |r| r.access)
}

/// Whether `roles` include one that `access` allows.
pub fn allows(access: Access, roles: impl IntoIterator<Item = Role>) -> bool {
    let allowed = access.roles();
    access == Access::Public || roles.into_iter().any(|r| allowed.contains(&r))
}

fn matches(pattern: &str, path: &str) -> bool {
    let mut want = pattern.trim_start_matches('/').split('/');
    let mut have = path.trim_start_matches('/').split('/');
    loop {
        match (want.next(), have.next()) {
            (Some("**"), _) => return true,
            (Some("*"), Some(seg)) if !seg.is_empty() => {}
            (Some(w), Some(seg)) if w == seg => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        assert_eq!(required("GET", "/healthz"), Access::Public);
        assert_eq!(
            required("GET", "/dicom-web/studies/1.2/series"),
            Access::View
        );
        assert_eq!(required("HEAD", "/dicom-web/studies"), Access::View);
        assert_eq!(required("POST", "/dicom-web/studies/1.2"), Access::Store);
        assert_eq!(
            required("POST", "/dicom-web/studies/1.2/series"),
            Access::Admin
        );
        assert_eq!(required("GET", "/viewer"), Access::View);
        assert_eq!(required("GET", "/viewer/assets/app.js"), Access::View);
        assert_eq!(required("GET", "/viewerx"), Access::Admin);
        assert_eq!(required("GET", "/api/v1/peers//echo"), Access::Admin);
        assert_eq!(required("GET", "/unknown"), Access::Admin);
        assert_eq!(required("OPTIONS", "/dicom-web/studies"), Access::Public);
        assert!(allows(Access::Read, [Role::Radiologist]));
        assert!(allows(Access::View, [Role::Referring]));
        assert!(!allows(Access::Read, [Role::Referring]));
        assert!(!allows(Access::Read, [Role::Auditor]));
        assert!(allows(Access::Audit, [Role::Auditor]));
        assert!(!allows(Access::Store, Vec::<Role>::new()));
    }
}
