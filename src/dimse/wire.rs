//! The transport under an accepted association: plain TCP or TLS. Both are
//! the same dicom-ul association over a different stream; [`Wire`] lets
//! the rest of the DIMSE layer stay ignorant of which.

use dicom_ul::association::server::AsyncTlsStream;
use dicom_ul::association::{
    Association as _, AsyncAssociation as _, AsyncServerAssociation, Error,
};
use dicom_ul::pdu::PresentationContextNegotiated;
use dicom_ul::Pdu;
use tokio::net::TcpStream;

/// Boxed: the associations are large and the two differ in size.
pub enum Wire {
    Plain(Box<AsyncServerAssociation<TcpStream>>),
    Tls(Box<AsyncServerAssociation<AsyncTlsStream>>),
}

/// Call the same method on whichever association this is.
macro_rules! either {
    ($wire:expr, $assoc:ident => $body:expr) => {
        match $wire {
            Wire::Plain($assoc) => $body,
            Wire::Tls($assoc) => $body,
        }
    };
}

impl Wire {
    pub async fn send(&mut self, pdu: &Pdu) -> Result<(), Error> {
        either!(self, a => a.send(pdu).await)
    }

    pub async fn receive(&mut self) -> Result<Pdu, Error> {
        either!(self, a => a.receive().await)
    }

    /// The stream and dicom-ul's read buffer, for reading P-DATA-TF
    /// ([`super::pdata`]); bytes left in the buffer are dicom-ul's again at
    /// the next PDU boundary.
    pub fn parts(&mut self) -> (super::pdata::Stream<'_>, &mut bytes::BytesMut) {
        match self {
            Wire::Plain(a) => {
                let (stream, buf) = a.get_mut();
                (stream, buf)
            }
            Wire::Tls(a) => {
                let (stream, buf) = a.get_mut();
                (stream, buf)
            }
        }
    }

    pub fn acceptor_max_pdu_length(&self) -> u32 {
        either!(self, a => a.acceptor_max_pdu_length())
    }

    pub async fn abort(self) -> Result<(), Error> {
        either!(self, a => a.abort().await)
    }

    pub fn requestor_max_pdu_length(&self) -> u32 {
        either!(self, a => a.requestor_max_pdu_length())
    }

    pub fn peer_ae_title(&self) -> &str {
        either!(self, a => a.peer_ae_title())
    }

    pub fn presentation_contexts(&self) -> &[PresentationContextNegotiated] {
        either!(self, a => a.presentation_contexts())
    }

    pub fn extended_negotiation_for(&self, sop_class_uid: &str) -> Option<&[u8]> {
        either!(self, a => a.extended_negotiation_for(sop_class_uid))
    }
}
