//! Single sign-on with an OpenID Connect provider (Keycloak, Entra ID,
//! Google Workspace): the authorization code flow with PKCE (OpenID
//! Connect Core 3.1, RFC 7636), the ID token checked against the keys the
//! provider publishes, and its claims mapped to a Tessera account
//! ([`claims`]).
//!
//! A login in progress lives in the browser, in a cookie signed with a key
//! derived from the client secret, so any node of a cluster can finish a
//! login another began.

pub mod claims;
pub mod settings;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::RwLock;

pub use claims::Identity;
pub use settings::{OidcSettings, RawOidc};

/// How long a login may take at the provider.
const LOGIN_WINDOW_SECS: i64 = 600;
/// The provider's metadata and keys are fetched again after this long.
const METADATA_TTL: Duration = Duration::from_secs(3600);
/// Unknown key IDs refetch the keys at most this often.
const KEY_REFRESH_GAP: Duration = Duration::from_secs(30);
/// The largest answer read from the provider.
const MAX_RESPONSE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the identity provider cannot be reached or answered wrongly: {0}")]
    Provider(String),
    #[error("the identity provider's ID token is not valid: {0}")]
    Token(String),
    #[error("the identity provider's claims do not name a user: {0}")]
    Claims(String),
    #[error("{0} has no Tessera role at the identity provider")]
    NoRoles(String),
    #[error("this login has expired or did not start here; start again")]
    State,
    #[error("the identity provider refused the login: {0}")]
    Refused(String),
    #[error("invalid [oidc] setting: {0}")]
    Setup(String),
}

/// The provider's discovery document (the parts used) and its keys.
struct Provider {
    authorization_endpoint: String,
    token_endpoint: String,
    userinfo_endpoint: Option<String>,
    jwks_uri: String,
    keys: JwkSet,
    fetched: Instant,
    keys_fetched: Instant,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    userinfo_endpoint: Option<String>,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
    access_token: Option<String>,
}

/// A login begun, carried by the browser until the provider sends it back.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    state: String,
    nonce: String,
    verifier: String,
    redirect: String,
    next: String,
    issued: i64,
}

/// Where to send the browser, and the cookie that must come back with it.
pub struct Begun {
    pub authorize_url: String,
    pub cookie: String,
}

/// A finished login: who, and where they were going.
pub struct Finished {
    pub identity: Identity,
    pub next: String,
}

pub struct Oidc {
    settings: OidcSettings,
    http: reqwest::Client,
    provider: RwLock<Option<Provider>>,
    signing: ring::hmac::Key,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn random() -> Result<String, OidcError> {
    super::secret::random_hex(32).map_err(|e| OidcError::Setup(e.to_string()))
}

fn provider_error(e: impl std::fmt::Display) -> OidcError {
    OidcError::Provider(e.to_string())
}

/// Signature algorithms with a public key; `none` and shared-secret HMAC
/// are never taken from a token's header.
const ASYMMETRIC: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

impl Oidc {
    pub fn new(settings: OidcSettings) -> Result<Self, OidcError> {
        let mut http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("Tessera/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &settings.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| OidcError::Setup(format!("oidc.ca_file {path:?}: {e}")))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| OidcError::Setup(format!("oidc.ca_file {path:?}: {e}")))?
            {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http
            .build()
            .map_err(|e| OidcError::Setup(format!("HTTP client: {e}")))?;
        let key = Sha256::new()
            .chain_update(b"tessera oidc login state\0")
            .chain_update(settings.client_secret.as_bytes())
            .finalize();
        Ok(Oidc {
            signing: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
            settings,
            http,
            provider: RwLock::new(None),
        })
    }

    /// The login page's button.
    pub fn label(&self) -> &str {
        &self.settings.label
    }

    /// The configured redirect URL, when it is not derived per request.
    pub fn redirect_url(&self) -> Option<&str> {
        self.settings.redirect_url.as_deref()
    }

    /// Start a login: where to send the browser, and the signed cookie
    /// that keeps the state, nonce and PKCE verifier until it returns.
    pub async fn begin(&self, redirect: &str, next: &str) -> Result<Begun, OidcError> {
        let pending = Pending {
            state: random()?,
            nonce: random()?,
            verifier: random()?,
            redirect: redirect.to_owned(),
            next: next.to_owned(),
            issued: now(),
        };
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(pending.verifier.as_bytes()));
        let endpoint = self
            .with_provider(|p| p.authorization_endpoint.clone())
            .await?;
        let mut scope = vec!["openid".to_owned()];
        scope.extend(
            self.settings
                .scopes
                .iter()
                .filter(|s| *s != "openid")
                .cloned(),
        );
        let url = url::Url::parse_with_params(
            &endpoint,
            [
                ("response_type", "code"),
                ("client_id", self.settings.client_id.as_str()),
                ("redirect_uri", redirect),
                ("scope", scope.join(" ").as_str()),
                ("state", pending.state.as_str()),
                ("nonce", pending.nonce.as_str()),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
            ],
        )
        .map_err(|e| OidcError::Provider(format!("authorization endpoint {endpoint:?}: {e}")))?;
        Ok(Begun {
            authorize_url: url.into(),
            cookie: self.seal(&pending)?,
        })
    }

    /// Finish a login the provider sent back with `code` and `state`:
    /// exchange the code, check the ID token, map its claims.
    pub async fn finish(
        &self,
        cookie: &str,
        state: &str,
        code: &str,
    ) -> Result<Finished, OidcError> {
        let pending = self.open(cookie)?;
        if !super::same_secret(&pending.state, state) {
            return Err(OidcError::State);
        }
        let token_endpoint = self.with_provider(|p| p.token_endpoint.clone()).await?;
        let rsp = self
            .http
            .post(&token_endpoint)
            .basic_auth(
                form_encode(&self.settings.client_id),
                Some(form_encode(&self.settings.client_secret)),
            )
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", pending.redirect.as_str()),
                ("code_verifier", pending.verifier.as_str()),
            ])
            .send()
            .await
            .map_err(provider_error)?;
        let status = rsp.status();
        let body = read_capped(rsp).await?;
        if !status.is_success() {
            let reason = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| status.to_string());
            return Err(OidcError::Refused(format!("token endpoint: {reason}")));
        }
        let tokens: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| OidcError::Provider(format!("token endpoint answer: {e}")))?;
        let id_token = tokens
            .id_token
            .ok_or_else(|| OidcError::Token("the token endpoint sent no id_token".into()))?;
        let mut claims = self.verify(&id_token).await?;
        if claims.get("nonce").and_then(Value::as_str) != Some(pending.nonce.as_str()) {
            return Err(OidcError::Token("nonce does not match this login".into()));
        }
        if let Some(access) = tokens.access_token {
            self.add_userinfo(&mut claims, &access).await;
        }
        let identity = claims::identity(&self.settings, &claims)?;
        Ok(Finished {
            identity,
            next: pending.next,
        })
    }

    /// The ID token's claims, once its signature, issuer, audience and
    /// lifetime are right.
    async fn verify(&self, token: &str) -> Result<Value, OidcError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| OidcError::Token(e.to_string()))?;
        if !ASYMMETRIC.contains(&header.alg) {
            return Err(OidcError::Token(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let key = match self.key(header.kid.as_deref()).await? {
            Some(key) => key,
            None => {
                self.refresh_keys().await?;
                self.key(header.kid.as_deref())
                    .await?
                    .ok_or_else(|| OidcError::Token(format!("no published key {:?}", header.kid)))?
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[self.settings.issuer.as_str()]);
        validation.set_audience(&[self.settings.client_id.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 60;
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|e| OidcError::Token(e.to_string()))?;
        Ok(data.claims)
    }

    async fn key(&self, kid: Option<&str>) -> Result<Option<DecodingKey>, OidcError> {
        self.with_provider(|p| {
            let jwk = match kid {
                Some(kid) => p.keys.find(kid),
                None if p.keys.keys.len() == 1 => p.keys.keys.first(),
                None => None,
            };
            jwk.map(DecodingKey::from_jwk)
        })
        .await?
        .transpose()
        .map_err(|e| OidcError::Token(format!("published key: {e}")))
    }

    /// Claims the ID token left out (some providers put groups only in
    /// the UserInfo answer); the ID token's own always win.
    async fn add_userinfo(&self, claims: &mut Value, access_token: &str) {
        let Ok(Some(endpoint)) = self.with_provider(|p| p.userinfo_endpoint.clone()).await else {
            return;
        };
        let info = async {
            let rsp = self
                .http
                .get(&endpoint)
                .bearer_auth(access_token)
                .send()
                .await
                .map_err(provider_error)?
                .error_for_status()
                .map_err(provider_error)?;
            serde_json::from_slice::<Value>(&read_capped(rsp).await?).map_err(provider_error)
        };
        match info.await {
            Ok(Value::Object(info)) if info.get("sub") == claims.get("sub") => {
                if let Value::Object(claims) = claims {
                    for (k, v) in info {
                        claims.entry(k).or_insert(v);
                    }
                }
            }
            Ok(_) => tracing::warn!("UserInfo answered for another subject; ignored"),
            Err(e) => tracing::warn!(error = %e, "UserInfo unavailable; using the ID token alone"),
        }
    }

    /// Run `f` on the provider's metadata, fetching it first when missing
    /// or stale.
    async fn with_provider<T>(&self, f: impl FnOnce(&Provider) -> T) -> Result<T, OidcError> {
        {
            let cached = self.provider.read().await;
            if let Some(p) = cached
                .as_ref()
                .filter(|p| p.fetched.elapsed() < METADATA_TTL)
            {
                return Ok(f(p));
            }
        }
        let fresh = self.discover().await?;
        let mut cached = self.provider.write().await;
        Ok(f(cached.insert(fresh)))
    }

    async fn refresh_keys(&self) -> Result<(), OidcError> {
        let uri = {
            let cached = self.provider.read().await;
            match cached.as_ref() {
                Some(p) if p.keys_fetched.elapsed() < KEY_REFRESH_GAP => return Ok(()),
                Some(p) => p.jwks_uri.clone(),
                None => return Ok(()),
            }
        };
        let keys = self.fetch_json::<JwkSet>(&uri).await?;
        if let Some(p) = self.provider.write().await.as_mut() {
            p.keys = keys;
            p.keys_fetched = Instant::now();
        }
        Ok(())
    }

    async fn discover(&self) -> Result<Provider, OidcError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.settings.issuer.trim_end_matches('/')
        );
        let found: Discovery = self.fetch_json(&url).await?;
        // OpenID Connect Discovery 4.3: the document speaks for this issuer.
        if found.issuer.trim_end_matches('/') != self.settings.issuer.trim_end_matches('/') {
            return Err(OidcError::Provider(format!(
                "the discovery document names issuer {:?}, not {:?}",
                found.issuer, self.settings.issuer
            )));
        }
        let keys = self.fetch_json::<JwkSet>(&found.jwks_uri).await?;
        tracing::info!(issuer = %found.issuer, keys = keys.keys.len(), "identity provider metadata loaded");
        Ok(Provider {
            authorization_endpoint: found.authorization_endpoint,
            token_endpoint: found.token_endpoint,
            userinfo_endpoint: found.userinfo_endpoint,
            jwks_uri: found.jwks_uri,
            keys,
            fetched: Instant::now(),
            keys_fetched: Instant::now(),
        })
    }

    async fn fetch_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, OidcError> {
        let rsp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(provider_error)?
            .error_for_status()
            .map_err(provider_error)?;
        serde_json::from_slice(&read_capped(rsp).await?)
            .map_err(|e| OidcError::Provider(format!("{url}: {e}")))
    }

    fn seal(&self, pending: &Pending) -> Result<String, OidcError> {
        let body = serde_json::to_vec(pending).map_err(|e| OidcError::Setup(e.to_string()))?;
        let tag = ring::hmac::sign(&self.signing, &body);
        Ok(format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&body),
            URL_SAFE_NO_PAD.encode(tag.as_ref())
        ))
    }

    fn open(&self, cookie: &str) -> Result<Pending, OidcError> {
        let (body, tag) = cookie.split_once('.').ok_or(OidcError::State)?;
        let body = URL_SAFE_NO_PAD.decode(body).map_err(|_| OidcError::State)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| OidcError::State)?;
        ring::hmac::verify(&self.signing, &body, &tag).map_err(|_| OidcError::State)?;
        let pending: Pending = serde_json::from_slice(&body).map_err(|_| OidcError::State)?;
        let age = now() - pending.issued;
        if !(0..=LOGIN_WINDOW_SECS).contains(&age) {
            return Err(OidcError::State);
        }
        Ok(pending)
    }
}

/// RFC 6749 2.3.1: client credentials are form-encoded before Basic.
fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn read_capped(mut rsp: reqwest::Response) -> Result<Vec<u8>, OidcError> {
    let mut body = Vec::new();
    while let Some(chunk) = rsp.chunk().await.map_err(provider_error)? {
        if body.len() + chunk.len() > MAX_RESPONSE {
            return Err(OidcError::Provider(format!(
                "an answer larger than {MAX_RESPONSE} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oidc(secret: &str) -> Oidc {
        let raw = RawOidc {
            issuer: Some("https://idp.example".into()),
            client_id: Some("tessera".into()),
            client_secret: Some(secret.into()),
            default_roles: Some(vec!["radiologist".into()]),
            ..Default::default()
        };
        Oidc::new(OidcSettings::from_raw(raw).expect("valid").expect("on")).expect("client")
    }

    #[test]
    fn the_login_cookie_is_signed_and_expires() {
        let a = oidc("one");
        let pending = Pending {
            state: "s".into(),
            nonce: "n".into(),
            verifier: "v".into(),
            redirect: "https://pacs/login/oidc/callback".into(),
            next: "/".into(),
            issued: now(),
        };
        let cookie = a.seal(&pending).expect("sealed");
        assert_eq!(a.open(&cookie).expect("opens").nonce, "n");
        assert!(matches!(oidc("two").open(&cookie), Err(OidcError::State)));
        let (body, tag) = cookie.split_once('.').expect("two parts");
        let mut forged: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).expect("b64")).expect("json");
        forged["next"] = "/elsewhere".into();
        let forged = format!(
            "{}.{tag}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).expect("json"))
        );
        assert!(matches!(a.open(&forged), Err(OidcError::State)));
        let old = a
            .seal(&Pending {
                issued: now() - LOGIN_WINDOW_SECS - 1,
                ..pending
            })
            .expect("sealed");
        assert!(matches!(a.open(&old), Err(OidcError::State)));
    }
}
