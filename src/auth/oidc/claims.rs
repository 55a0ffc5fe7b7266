//! From a provider's claims to a Tessera account: the user name, the
//! roles the configured claim maps to, and a referring physician's name.

use serde_json::Value;

use super::settings::OidcSettings;
use super::OidcError;
use crate::model::Roles;

/// Who the provider says logged in, in Tessera's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub roles: Roles,
    pub physician_name: String,
    /// The provider's subject identifier, for the audit trail.
    pub subject: String,
}

/// The value at a dotted path: `realm_access.roles`.
fn at<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(claims, |v, key| v.get(key))
}

fn text<'a>(claims: &'a Value, path: &str) -> Option<&'a str> {
    at(claims, path)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// A claim's values: one string, or an array of strings.
fn values(claims: &Value, path: &str) -> Vec<String> {
    match at(claims, path) {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

pub fn identity(settings: &OidcSettings, claims: &Value) -> Result<Identity, OidcError> {
    let subject = text(claims, "sub")
        .ok_or(OidcError::Claims("no sub".into()))?
        .to_owned();
    let name = match &settings.username_claim {
        Some(claim) => text(claims, claim),
        None => text(claims, "preferred_username").or_else(|| text(claims, "email")),
    }
    .ok_or_else(|| {
        OidcError::Claims(format!(
            "no {} claim names the user",
            settings
                .username_claim
                .as_deref()
                .unwrap_or("preferred_username or email")
        ))
    })?
    .to_owned();
    let mut roles = settings.default_roles.clone();
    for value in values(claims, &settings.roles_claim) {
        if let Some(mapped) = settings.roles.get(&value) {
            roles.0.extend(mapped.iter());
        }
    }
    if roles.is_empty() {
        return Err(OidcError::NoRoles(name));
    }
    let physician_name = match &settings.physician_name_claim {
        Some(claim) => text(claims, claim).unwrap_or_default().to_owned(),
        None => match (text(claims, "family_name"), text(claims, "given_name")) {
            (Some(family), Some(given)) => format!("{family}^{given}"),
            (Some(family), None) => family.to_owned(),
            _ => String::new(),
        },
    };
    Ok(Identity {
        name,
        roles,
        physician_name,
        subject,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::oidc::settings::RawOidc;
    use crate::model::Role;

    fn settings(roles_claim: &str) -> OidcSettings {
        let raw = RawOidc {
            issuer: Some("https://idp.example".into()),
            client_id: Some("tessera".into()),
            client_secret: Some("s".into()),
            roles_claim: Some(roles_claim.into()),
            roles: Some(
                [
                    ("pacs-admins".to_owned(), vec!["admin".to_owned()]),
                    ("radiology".to_owned(), vec!["radiologist".to_owned()]),
                    ("referrers".to_owned(), vec!["referring".to_owned()]),
                ]
                .into(),
            ),
            ..Default::default()
        };
        OidcSettings::from_raw(raw).expect("valid").expect("on")
    }

    #[test]
    fn groups_map_to_roles() {
        let claims = serde_json::json!({
            "sub": "f81d4fae", "preferred_username": "anna",
            "groups": ["radiology", "staff", "pacs-admins"],
            "family_name": "Nguyễn", "given_name": "Anh"
        });
        let who = identity(&settings("groups"), &claims).expect("identity");
        assert_eq!(who.name, "anna");
        assert_eq!(who.roles, Roles([Role::Admin, Role::Radiologist].into()));
        assert_eq!(who.physician_name, "Nguyễn^Anh");
    }

    #[test]
    fn nested_claims_and_fallbacks() {
        let claims = serde_json::json!({
            "sub": "1", "email": "dr.k@hospital.example",
            "realm_access": {"roles": ["referrers"]}
        });
        let who = identity(&settings("realm_access.roles"), &claims).expect("identity");
        assert_eq!(who.name, "dr.k@hospital.example");
        assert_eq!(who.roles, Roles([Role::Referring].into()));
    }

    #[test]
    fn no_mapped_role_is_refused() {
        let claims = serde_json::json!({"sub": "1", "preferred_username": "x", "groups": "staff"});
        assert!(matches!(
            identity(&settings("groups"), &claims),
            Err(OidcError::NoRoles(_))
        ));
        let claims = serde_json::json!({"preferred_username": "x", "groups": "radiology"});
        assert!(matches!(
            identity(&settings("groups"), &claims),
            Err(OidcError::Claims(_))
        ));
    }
}
