//! TLS for the associations Tessera initiates to peers marked `tls = true`
//! (PS3.15 B.1, the BCP 195 profile as rustls implements it: TLS 1.2 and
//! 1.3). The peer's certificate must chain to a CA in `tls.ca_file` and name
//! the peer's host; with `tls.cert_file` and `tls.key_file` Tessera also
//! presents a client certificate, which most DICOM TLS nodes require.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

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

/// The client configuration shared by every outbound TLS association.
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates("CA certificates", &files.ca_file)? {
        roots.add(cert)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match &files.client {
        None => builder.with_no_client_auth(),
        Some((cert_file, key_file)) => {
            let chain = certificates("client certificate", cert_file)?;
            let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsError::Read {
                what: "client key",
                path: key_file.clone(),
                reason: e.to_string(),
            })?;
            builder.with_client_auth_cert(chain, key)?
        }
    };
    Ok(Arc::new(config))
}
