//! The remote AE registry: peers from the config file and from the REST
//! API, stored in the index, and verified with C-ECHO.
//!
//! The registry is core; the C-ECHO itself is done by the DICOM edge through
//! the [`Verifier`] trait, so the HTTP edge can trigger one without
//! importing the DICOM edge.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;

use crate::index::{Index, IndexError, PeerSource};
use crate::model::{Peer, PeerError, RawPeer};

/// Something that can C-ECHO a peer.
pub trait Verifier: Send + Sync {
    fn verify<'a>(&'a self, peer: &'a Peer) -> BoxFuture<'a, Result<Duration, String>>;
}

/// What a peer may be.
#[derive(Debug, Clone)]
pub struct Rules {
    /// A peer under Tessera's own AE title would route to itself.
    pub own_ae_title: crate::model::AeTitle,
    /// `dicom.peer_networks`: an address given as a peer's host must be in
    /// one; names are checked when called ([`crate::dimse`]'s link).
    pub networks: Vec<ipnet::IpNet>,
}

impl Rules {
    fn check(&self, peer: &Peer) -> Result<(), RegistryError> {
        if peer.ae_title.as_str() == self.own_ae_title.as_str() {
            return Err(RegistryError::OwnTitle(peer.ae_title.to_string()));
        }
        if let Ok(ip) = peer.host.parse::<std::net::IpAddr>() {
            if !self.networks.is_empty() && !self.networks.iter().any(|n| n.contains(&ip)) {
                return Err(RegistryError::OutsideNetworks(peer.host.clone()));
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("invalid peer: {0}")]
    Invalid(#[from] PeerError),
    #[error("the AE title in the path ({path}) differs from the body ({body})")]
    TitleMismatch { path: String, body: String },
    #[error("no peer with AE title {0}")]
    NotFound(String),
    #[error("{0} is Tessera's own AE title")]
    OwnTitle(String),
    #[error("{0} is outside dicom.peer_networks")]
    OutsideNetworks(String),
}

/// Outcome of a C-ECHO to a peer.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EchoResult {
    pub ae_title: String,
    pub ok: bool,
    pub elapsed_ms: u64,
    pub error: Option<String>,
}

#[derive(Clone)]
pub struct PeerRegistry {
    index: Index,
    verifier: Arc<dyn Verifier>,
    rules: Arc<Rules>,
}

impl PeerRegistry {
    pub fn new(index: Index, verifier: Arc<dyn Verifier>, rules: Rules) -> Self {
        PeerRegistry {
            index,
            verifier,
            rules: Arc::new(rules),
        }
    }

    /// Write the config file's peers, replacing earlier config entries of
    /// the same title.
    pub async fn seed(&self, peers: &[Peer]) -> Result<(), RegistryError> {
        for peer in peers {
            self.rules.check(peer)?;
            self.index.put_peer(peer, PeerSource::Config).await?;
        }
        Ok(())
    }

    pub async fn list(&self) -> Result<Vec<Peer>, RegistryError> {
        Ok(self.index.peers().await?)
    }

    pub async fn get(&self, ae_title: &str) -> Result<Peer, RegistryError> {
        self.index
            .peer(ae_title)
            .await?
            .ok_or_else(|| RegistryError::NotFound(ae_title.to_owned()))
    }

    /// Create or replace a peer from the API; returns it and whether it is new.
    pub async fn put(&self, path_title: &str, raw: RawPeer) -> Result<(Peer, bool), RegistryError> {
        if raw.ae_title.trim() != path_title.trim() {
            return Err(RegistryError::TitleMismatch {
                path: path_title.to_owned(),
                body: raw.ae_title,
            });
        }
        let peer = Peer::from_raw(raw)?;
        self.rules.check(&peer)?;
        let created = self.index.put_peer(&peer, PeerSource::Api).await?;
        Ok((peer, created))
    }

    pub async fn delete(&self, ae_title: &str) -> Result<(), RegistryError> {
        if self.index.delete_peer(ae_title).await? {
            Ok(())
        } else {
            Err(RegistryError::NotFound(ae_title.to_owned()))
        }
    }

    /// C-ECHO a registered peer.
    pub async fn echo(&self, ae_title: &str) -> Result<EchoResult, RegistryError> {
        let peer = self.get(ae_title).await?;
        Ok(self.echo_peer(&peer).await)
    }

    pub async fn echo_peer(&self, peer: &Peer) -> EchoResult {
        let started = std::time::Instant::now();
        let result = self.verifier.verify(peer).await;
        EchoResult {
            ae_title: peer.ae_title.to_string(),
            ok: result.is_ok(),
            elapsed_ms: started.elapsed().as_millis() as u64,
            error: result.err(),
        }
    }
}
