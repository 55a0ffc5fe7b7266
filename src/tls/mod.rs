//! TLS, as PS3.15 B.1 and BCP 195 ask and rustls implements it (TLS 1.2
//! and 1.3, no legacy ciphers), for both directions:
//!
//! - [`client_config`]: associations Tessera opens to peers marked
//!   `tls = true`. The peer's certificate must chain to `tls.ca_file` and
//!   name the peer's host; with `tls.cert_file` and `tls.key_file` Tessera
//!   presents a client certificate, which most DICOM TLS nodes require.
//! - [`ServerTls`]: the TLS listeners (DICOM, HTTPS, MLLP). They present
//!   `tls.cert_file`, may ask for client certificates chaining to
//!   `tls.ca_file`, and pick up new certificate files on
//!   [`ServerTls::reload`] (SIGHUP) without dropping a connection.

mod peer_certificate;

pub use peer_certificate::PeerCertificate;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The files named by the `[tls]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca_file: PathBuf,
    /// Client certificate chain and key, both or neither.
    pub client: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {reason}")]
    Read {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{0} holds no certificate")]
    Empty(PathBuf),
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificates: {0}")]
    Verifier(String),
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |reason: String| TlsError::Read {
        what,
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Empty(path.to_owned()));
    }
    Ok(certs)
}

fn private_key(what: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Read {
        what,
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

fn roots(ca_file: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates("CA certificates", ca_file)? {
        roots.add(cert)?;
    }
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client configuration shared by every outbound TLS association.
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = roots(&files.ca_file)?;
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match &files.client {
        None => builder.with_no_client_auth(),
        Some((cert_file, key_file)) => {
            let chain = certificates("client certificate", cert_file)?;
            let key = private_key("client key", key_file)?;
            builder.with_client_auth_cert(chain, key)?
        }
    };
    Ok(Arc::new(config))
}

/// What the TLS listeners present and whom they ask for a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// CA that client certificates must chain to; without it none is asked.
    pub client_ca: Option<PathBuf>,
    /// Refuse a handshake without a valid client certificate.
    pub require_client_cert: bool,
}

/// The server side of every TLS listener; cheap to clone.
#[derive(Clone, Debug)]
pub struct ServerTls {
    key: Arc<CurrentKey>,
    config: Arc<ServerConfig>,
    /// The client certificate check, when a CA is set.
    verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
}

/// The certificate the listeners present, swapped whole on reload, so a
/// handshake sees either the old pair or the new one.
#[derive(Debug)]
struct CurrentKey {
    files: ServerFiles,
    key: RwLock<Arc<CertifiedKey>>,
}

impl CurrentKey {
    fn load(files: &ServerFiles) -> Result<Arc<CertifiedKey>, TlsError> {
        let chain = certificates("server certificate", &files.cert_file)?;
        let key = private_key("server key", &files.key_file)?;
        Ok(Arc::new(CertifiedKey::from_der(chain, key, &provider())?))
    }
}

impl ResolvesServerCert for CurrentKey {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.key.read().ok().map(|k| k.clone())
    }
}

impl ServerTls {
    pub fn load(files: &ServerFiles) -> Result<Self, TlsError> {
        let key = Arc::new(CurrentKey {
            files: files.clone(),
            key: RwLock::new(CurrentKey::load(files)?),
        });
        let verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>> = match &files
            .client_ca
        {
            None => None,
            Some(ca) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider());
                let verifier = if files.require_client_cert {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                Some(
                    verifier
                        .build()
                        .map_err(|e| TlsError::Verifier(e.to_string()))?,
                )
            }
        };
        let config = Arc::new(server_config(&key, verifier.clone())?);
        Ok(ServerTls {
            key,
            config,
            verifier,
        })
    }

    /// A configuration for one connection that leaves the client
    /// certificate it verifies in `slot`. Without a client CA there is
    /// none to catch, and the shared configuration serves.
    pub fn config_catching(&self, slot: &PeerCertificate) -> Result<Arc<ServerConfig>, TlsError> {
        match &self.verifier {
            None => Ok(self.config.clone()),
            Some(inner) => {
                let capturing = peer_certificate::Capturing {
                    inner: inner.clone(),
                    slot: slot.clone(),
                };
                Ok(Arc::new(server_config(
                    &self.key,
                    Some(Arc::new(capturing)),
                )?))
            }
        }
    }

    /// The rustls configuration; its certificate follows [`Self::reload`].
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// Read the certificate and key files again. On an error the current
    /// pair stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = CurrentKey::load(&self.key.files)?;
        if let Ok(mut current) = self.key.key.write() {
            *current = fresh;
        }
        Ok(())
    }
}

fn server_config(
    key: &Arc<CurrentKey>,
    verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
) -> Result<ServerConfig, TlsError> {
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match verifier {
        None => builder.with_no_client_auth(),
        Some(verifier) => builder.with_client_cert_verifier(verifier),
    };
    Ok(builder.with_cert_resolver(key.clone()))
}

/// Whether a client's end-entity certificate is valid for `name` (a DNS
/// subjectAltName, or an IP address). Its chain was checked in the
/// handshake.
pub fn certificate_names(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(end_entity) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    let Ok(name) = ServerName::try_from(name) else {
        return false;
    };
    end_entity.verify_is_valid_for_subject_name(&name).is_ok()
}
