//! `[oidc]`: which identity provider, which client, and how its claims
//! become a Tessera user name and roles.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::ConfigError;
use crate::model::Roles;

/// `[oidc]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidc {
    /// The provider's issuer URL (its discovery document lives under it).
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    /// A file holding the client secret, instead of `client_secret`.
    pub client_secret_file: Option<PathBuf>,
    /// The address the provider sends the browser back to; by default
    /// `/login/oidc/callback` on the host the browser used.
    pub redirect_url: Option<String>,
    /// Scopes besides `openid` (default `profile email`).
    pub scopes: Option<Vec<String>>,
    /// The claim that names the user (default `preferred_username`,
    /// falling back to `email`).
    pub username_claim: Option<String>,
    /// The claim whose values `roles` maps (default `groups`); dots walk
    /// into objects, so Keycloak's realm roles are `realm_access.roles`.
    pub roles_claim: Option<String>,
    /// Claim value → Tessera roles.
    pub roles: Option<BTreeMap<String, Vec<String>>>,
    /// Roles every user of the provider gets (default none).
    pub default_roles: Option<Vec<String>>,
    /// The claim holding a referring physician's DICOM name; by default
    /// `family_name^given_name`.
    pub physician_name_claim: Option<String>,
    /// The login page's button (default "Log in with single sign-on").
    pub label: Option<String>,
    /// A CA (PEM) for a provider whose certificate the system does not
    /// trust.
    pub ca_file: Option<PathBuf>,
}

/// Validated `[oidc]`.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    pub redirect_url: Option<String>,
    pub scopes: Vec<String>,
    pub username_claim: Option<String>,
    pub roles_claim: String,
    pub roles: BTreeMap<String, Roles>,
    pub default_roles: Roles,
    pub physician_name_claim: Option<String>,
    pub label: String,
    pub ca_file: Option<PathBuf>,
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// Plain HTTP only to this machine, where nothing crosses a network.
fn check_url(key: &'static str, url: &str) -> Result<(), ConfigError> {
    let rest = if let Some(rest) = url.strip_prefix("https://") {
        rest
    } else if let Some(rest) = url.strip_prefix("http://") {
        let host = rest.split(['/', '?']).next().unwrap_or_default();
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
            return Err(invalid(key, format!("{url:?} must use https")));
        }
        rest
    } else {
        return Err(invalid(key, format!("{url:?} is not an http(s) URL")));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Err(invalid(key, format!("{url:?} has no plain host")));
    }
    Ok(())
}

fn roles_of(key: &'static str, list: &[String]) -> Result<Roles, ConfigError> {
    Roles::parse(&list.join(",")).map_err(|e| invalid(key, e.to_string()))
}

impl OidcSettings {
    /// `None` when no issuer is set: single sign-on is off.
    pub fn from_raw(raw: RawOidc) -> Result<Option<Self>, ConfigError> {
        let Some(issuer) = raw.issuer.filter(|i| !i.trim().is_empty()) else {
            return Ok(None);
        };
        let issuer = issuer.trim().to_owned();
        check_url("oidc.issuer", &issuer)?;
        let client_id = raw
            .client_id
            .filter(|c| !c.is_empty())
            .ok_or_else(|| invalid("oidc.client_id", "needed with oidc.issuer"))?;
        let client_secret = match (raw.client_secret, raw.client_secret_file) {
            (Some(secret), None) => secret,
            (None, Some(path)) => std::fs::read_to_string(&path)
                .map_err(|e| invalid("oidc.client_secret_file", format!("{path:?}: {e}")))?
                .trim()
                .to_owned(),
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "oidc.client_secret",
                    "set client_secret or client_secret_file, not both",
                ))
            }
            (None, None) => {
                return Err(invalid(
                    "oidc.client_secret",
                    "needed with oidc.issuer (or client_secret_file)",
                ))
            }
        };
        if client_secret.is_empty() {
            return Err(invalid("oidc.client_secret", "is empty"));
        }
        if let Some(url) = &raw.redirect_url {
            check_url("oidc.redirect_url", url)?;
        }
        let mut roles = BTreeMap::new();
        for (value, list) in raw.roles.unwrap_or_default() {
            roles.insert(value, roles_of("oidc.roles", &list)?);
        }
        let default_roles = roles_of("oidc.default_roles", &raw.default_roles.unwrap_or_default())?;
        if roles.is_empty() && default_roles.is_empty() {
            return Err(invalid(
                "oidc.roles",
                "map at least one claim value to roles (or set default_roles)",
            ));
        }
        Ok(Some(OidcSettings {
            issuer,
            client_id,
            client_secret,
            redirect_url: raw.redirect_url,
            scopes: raw
                .scopes
                .unwrap_or_else(|| vec!["profile".into(), "email".into()]),
            username_claim: raw.username_claim,
            roles_claim: raw.roles_claim.unwrap_or_else(|| "groups".into()),
            roles,
            default_roles,
            physician_name_claim: raw.physician_name_claim,
            label: raw
                .label
                .unwrap_or_else(|| "Log in with single sign-on".into()),
            ca_file: raw.ca_file,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_must_be_https_off_this_machine() {
        assert!(check_url("k", "https://idp.example/realms/h").is_ok());
        assert!(check_url("k", "http://127.0.0.1:8080").is_ok());
        assert!(check_url("k", "http://localhost/x").is_ok());
        assert!(check_url("k", "http://idp.example").is_err());
        assert!(check_url("k", "http://127.0.0.1.evil.example").is_err());
        assert!(check_url("k", "ftp://idp").is_err());
        assert!(check_url("k", "https:///x").is_err());
        assert!(check_url("k", "http://localhost:1@evil.example/").is_err());
    }
}
