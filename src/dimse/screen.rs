//! A first look at an A-ASSOCIATE-RQ before the upper layer negotiates it,
//! for what that layer would accept and then fail on: AE titles with
//! control characters or only spaces, a maximum PDU length too small to
//! carry a PDV, even presentation context IDs (PS3.8 9.3.2 and 9.3.2.2).
//! Such a request is answered with an A-ASSOCIATE-RJ instead of a dropped
//! connection or a later abort. The bytes are peeked, not consumed.

use std::time::Duration;

use dicom_ul::pdu::{
    AssociationRJ, AssociationRJResult, AssociationRJServiceUserReason, AssociationRJSource,
    UserVariableItem,
};
use dicom_ul::Pdu;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// An A-ASSOCIATE-RQ is small; a longer one is left to the upper layer.
const MAX_SCREENED: usize = 64 * 1024;
/// Smallest useful maximum PDU length: a P-DATA-TF PDU with one PDV header.
const MIN_MAX_PDU: u32 = 13;

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    CallingAeTitle,
    CalledAeTitle,
    /// A user identity that is not an account's (PS3.7 D.3.3.7: no
    /// reason given).
    User,
    /// Malformed in a way only the requestor can fix.
    Request,
}

/// What a screened request says about its sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screened {
    pub calling: String,
    /// The User Identity sub-item (PS3.7 D.3.3.7), if any.
    pub claim: Option<super::association::Claim>,
}

/// Check the request waiting on `socket`; what it says of its sender when
/// it was read. `Ok(None)` when the bytes are not an A-ASSOCIATE-RQ or too
/// long to screen: the upper layer decides.
pub async fn check(socket: &TcpStream) -> Result<Option<Screened>, Refusal> {
    let mut buf = vec![0u8; MAX_SCREENED];
    let mut wanted = 6usize;
    loop {
        let got = socket.peek(&mut buf).await.map_err(|_| Refusal::Request)?;
        if got == 0 {
            return Ok(None);
        }
        if got >= 6 {
            if buf[0] != 0x01 {
                return Ok(None);
            }
            let length = u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]) as usize;
            wanted = 6 + length;
            if wanted > MAX_SCREENED {
                return Ok(None);
            }
        }
        if got >= wanted && wanted > 6 {
            return screen(&buf[..wanted]).map(Some);
        }
        // peek returns at once while any byte is queued: wait a little for
        // the rest (the caller bounds the whole by the ARTIM timeout).
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Whether an A-ASSOCIATE-RQ PDU would be let through to dicom-ul; its
/// calling AE title if so.
pub fn judge(pdu: &[u8]) -> Result<String, Refusal> {
    screen(pdu).map(|s| s.calling)
}

fn screen(pdu: &[u8]) -> Result<Screened, Refusal> {
    // Called AE title at bytes 10–25, calling at 26–41 (PS3.8 9.3.2).
    let title_ok = |raw: &[u8]| {
        raw.iter().all(|b| (0x20..0x7f).contains(b) && *b != b'\\')
            && raw.iter().any(|b| *b != b' ')
    };
    if pdu.len() < 74 {
        return Err(Refusal::Request);
    }
    if !title_ok(&pdu[10..26]) {
        return Err(Refusal::CalledAeTitle);
    }
    if !title_ok(&pdu[26..42]) {
        return Err(Refusal::CallingAeTitle);
    }
    let rq = match dicom_ul::read_pdu(pdu, dicom_ul::pdu::MAXIMUM_PDU_SIZE, false) {
        Ok(Some(Pdu::AssociationRQ(rq))) => rq,
        _ => return Err(Refusal::Request),
    };
    let max_pdu_ok = rq.user_variables.iter().all(|v| match v {
        UserVariableItem::MaxLength(n) => *n == 0 || *n >= MIN_MAX_PDU,
        _ => true,
    });
    let ids_ok = rq.presentation_contexts.iter().all(|pc| pc.id % 2 == 1);
    if !max_pdu_ok || !ids_ok {
        return Err(Refusal::Request);
    }
    let claim = rq.user_variables.iter().find_map(|v| match v {
        UserVariableItem::UserIdentityItem(identity) => Some(super::association::claim(identity)),
        _ => None,
    });
    Ok(Screened {
        calling: rq.calling_ae_title.trim().to_owned(),
        claim,
    })
}

/// Answer a refused request and close.
pub async fn refuse(mut socket: TcpStream, refusal: Refusal) {
    let reason = match refusal {
        Refusal::CallingAeTitle => AssociationRJServiceUserReason::CallingAETitleNotRecognized,
        Refusal::CalledAeTitle => AssociationRJServiceUserReason::CalledAETitleNotRecognized,
        Refusal::Request | Refusal::User => AssociationRJServiceUserReason::NoReasonGiven,
    };
    let rj = Pdu::AssociationRJ(AssociationRJ {
        result: AssociationRJResult::Permanent,
        source: AssociationRJSource::ServiceUser(reason),
    });
    let mut bytes = Vec::new();
    if dicom_ul::write_pdu(&mut bytes, &rj).is_ok() {
        let _ = socket.write_all(&bytes).await;
        let _ = socket.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_ul::pdu::{AssociationRQ, PresentationContextProposed};

    fn rq(calling: &str, called: &str, max_pdu: u32, id: u8) -> Vec<u8> {
        let pdu = Pdu::AssociationRQ(AssociationRQ {
            protocol_version: 1,
            calling_ae_title: calling.into(),
            called_ae_title: called.into(),
            application_context_name: "1.2.840.10008.3.1.1.1".into(),
            presentation_contexts: vec![PresentationContextProposed {
                id,
                abstract_syntax: "1.2.840.10008.1.1".into(),
                transfer_syntaxes: vec!["1.2.840.10008.1.2".into()],
            }],
            user_variables: vec![UserVariableItem::MaxLength(max_pdu)],
        });
        let mut out = Vec::new();
        dicom_ul::write_pdu(&mut out, &pdu).expect("encode");
        out
    }

    #[test]
    fn requests_are_judged() {
        assert_eq!(
            judge(&rq("MODALITY", "TESSERA", 16384, 1)),
            Ok("MODALITY".to_owned())
        );
        assert_eq!(
            judge(&rq("MODALITY", "TESSERA", 0, 1)),
            Ok("MODALITY".to_owned())
        );
        assert_eq!(
            judge(&rq("MOD\u{7}ALITY", "TESSERA", 16384, 1)),
            Err(Refusal::CallingAeTitle)
        );
        assert_eq!(
            judge(&rq("MODALITY", "TES\nSERA", 16384, 1)),
            Err(Refusal::CalledAeTitle)
        );
        // The encoder refuses a blank title, so the bytes are patched.
        let mut blank = rq("PLACEHOLDER", "TESSERA", 16384, 1);
        blank[26..42].fill(b' ');
        assert_eq!(judge(&blank), Err(Refusal::CallingAeTitle));
        assert_eq!(
            judge(&rq("MODALITY", "TESSERA", 12, 1)),
            Err(Refusal::Request)
        );
        assert_eq!(
            judge(&rq("MODALITY", "TESSERA", 16384, 2)),
            Err(Refusal::Request)
        );
    }
}
