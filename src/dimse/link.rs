//! One outbound association over plain TCP or TLS, so the SCU code above
//! it is written once. dicom-ul types the association by its stream.

use dicom_ul::association::client::AsyncTlsStream;
use dicom_ul::association::AsyncClientAssociation;
use dicom_ul::pdu::PresentationContextNegotiated;
use dicom_ul::{ClientAssociationOptions, Pdu};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::model::Peer;

/// Boxed: the associations are large and the two differ in size.
pub enum Link {
    Plain(Box<AsyncClientAssociation<TcpStream>>),
    Tls(Box<AsyncClientAssociation<AsyncTlsStream>>),
}

/// Run the same expression on whichever association a [`Link`] holds.
macro_rules! either {
    ($link:expr, $a:ident => $body:expr) => {
        match $link {
            Link::Plain($a) => $body,
            Link::Tls($a) => $body,
        }
    };
}

impl Link {
    /// Associate with `peer`, over TLS when it is marked so. Nagle's
    /// algorithm is turned off: with it a short last PDV waits for the
    /// peer's delayed ACK, about 40 ms per message.
    /// With `networks`, the peer's name is resolved here and only an
    /// address inside them is called, so a name that resolves somewhere
    /// else (cloud metadata, an internal service) is never reached.
    pub async fn establish(
        options: ClientAssociationOptions<'_>,
        peer: &Peer,
        tls: Option<&std::sync::Arc<rustls::ClientConfig>>,
        networks: &[ipnet::IpNet],
    ) -> Result<Link, LinkError> {
        let address = if networks.is_empty() {
            None
        } else {
            let resolved = tokio::net::lookup_host((peer.host.as_str(), peer.port))
                .await
                .map_err(|_| LinkError::Unresolved(peer.host.clone()))?;
            let allowed = resolved
                .into_iter()
                .find(|a| networks.iter().any(|n| n.contains(&a.ip())));
            Some(allowed.ok_or_else(|| LinkError::OutsideNetworks(peer.host.clone()))?)
        };
        let address: std::net::SocketAddr = match address {
            Some(a) => a,
            None => tokio::net::lookup_host((peer.host.as_str(), peer.port))
                .await
                .ok()
                .and_then(|mut all| all.next())
                .ok_or_else(|| LinkError::Unresolved(peer.host.clone()))?,
        };
        if !peer.tls {
            let mut assoc = options.establish_async(address).await?;
            let _ = assoc.inner_stream().set_nodelay(true);
            return Ok(Link::Plain(Box::new(assoc)));
        }
        let config = tls.ok_or(LinkError::NoTlsConfig)?;
        let mut assoc = options
            .tls_config(config.clone())
            .server_name(&peer.host)
            .establish_tls_async(address)
            .await?;
        let _ = assoc.inner_stream().get_ref().0.set_nodelay(true);
        Ok(Link::Tls(Box::new(assoc)))
    }

    pub fn presentation_contexts(&self) -> &[PresentationContextNegotiated] {
        either!(self, a => a.presentation_contexts())
    }

    pub fn acceptor_max_pdu_length(&self) -> u32 {
        either!(self, a => a.acceptor_max_pdu_length())
    }

    pub async fn send(&mut self, pdu: &Pdu) -> Result<(), dicom_ul::association::Error> {
        either!(self, a => a.send(pdu).await)
    }

    pub async fn receive(&mut self) -> Result<Pdu, dicom_ul::association::Error> {
        either!(self, a => a.receive().await)
    }

    /// Write already encoded PDUs. dicom-ul's own `send` writes each PDU at
    /// once, so nothing of its own is waiting on the stream.
    pub async fn write_encoded(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Link::Plain(a) => a.inner_stream().write_all(bytes).await,
            Link::Tls(a) => {
                let stream = a.inner_stream();
                stream.write_all(bytes).await?;
                // TLS buffers records; the peer must see them now.
                stream.flush().await
            }
        }
    }

    pub async fn release(self) -> Result<(), dicom_ul::association::Error> {
        match self {
            Link::Plain(a) => a.release().await,
            Link::Tls(a) => a.release().await,
        }
    }

    pub async fn abort(self) -> Result<(), dicom_ul::association::Error> {
        match self {
            Link::Plain(a) => a.abort().await,
            Link::Tls(a) => a.abort().await,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("the peer needs TLS, but no [tls] ca_file is configured")]
    NoTlsConfig,
    #[error("cannot resolve {0}")]
    Unresolved(String),
    #[error("{0} is outside dicom.peer_networks")]
    OutsideNetworks(String),
    #[error(transparent)]
    Associate(#[from] dicom_ul::association::Error),
}
