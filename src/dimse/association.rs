//! Association handling on top of dicom-ul: the acceptor options built from
//! config (AE policy, abstract syntaxes, max PDU, timeouts), and
//! [`Association`], which turns P-DATA PDUs into whole commands and streamed
//! data-set fragments. Nothing here knows what a command means.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dicom_ul::association::server::{AccessControl, Negotiation, ServerAssociationOptions};
use dicom_ul::pdu::{
    AssociationRJServiceUserReason, PDataValue, PDataValueType, PresentationContextResultReason,
    RequestorRoles, UserIdentity, UserIdentityType,
};
use dicom_ul::Pdu;

use super::command::{Command, CommandError};
use super::pdata::{FrameError, Framing, Next, Pdv};
use super::storage_classes::STORAGE_SOP_CLASSES;
use super::wire::Wire;
use crate::config::DicomConfig;
use crate::model::{AeTitle, PeerService, Uid};

pub const VERIFICATION: &str = "1.2.840.10008.1.1";
/// Command sets are a few hundred bytes; anything near this is hostile.
const MAX_COMMAND_SET: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AssociationError {
    #[error("upper layer: {0}")]
    Ul(#[from] dicom_ul::association::Error),
    #[error("no PDU within the idle timeout of {0:?}")]
    IdleTimeout(Duration),
    #[error("peer aborted the association")]
    PeerAborted,
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// The user an A-ASSOCIATE-RQ named in its User Identity item (PS3.7
/// D.3.3.7): a user name and, for type 2, a passcode. Filled while the
/// request is negotiated, checked against the accounts once the
/// association is up, since that check is too slow for negotiation.
#[derive(Debug, Clone, Default)]
pub struct ClaimedUser(Arc<Mutex<Option<Claim>>>);

/// What the requestor claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    UserAndPassword(String, String),
    /// A user name alone, or Kerberos, SAML or JWT, none of which Tessera
    /// can check.
    Unverifiable,
}

impl ClaimedUser {
    pub fn take(&self) -> Option<Claim> {
        self.0.lock().ok().and_then(|mut c| c.take())
    }

    fn set(&self, claim: Claim) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(claim);
        }
    }
}

/// Called/calling AE title and user identity policy, from config.
#[derive(Debug, Clone)]
pub struct AePolicy {
    allowed_calling: Vec<AeTitle>,
    require_called: bool,
    require_user: bool,
    claimed: ClaimedUser,
    /// `tls.ae_certificates`: titles only their certificate may claim.
    ae_certificates: std::collections::BTreeMap<String, String>,
    /// The TLS handshake's client certificate; `None` on the plain port.
    peer_certificate: Option<crate::tls::PeerCertificate>,
}

impl AccessControl for AePolicy {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        match user_identity {
            Some(identity) => self.claimed.set(claim(identity)),
            // PS3.7 D.3.3.7: without the identity the policy requires.
            None if self.require_user => return Err(AssociationRJServiceUserReason::NoReasonGiven),
            None => {}
        }
        if let Some(name) = self.ae_certificates.get(calling_ae_title.trim()) {
            let proven = self
                .peer_certificate
                .as_ref()
                .and_then(crate::tls::PeerCertificate::get)
                .is_some_and(|cert| crate::tls::certificate_names(&cert, name));
            if !proven {
                tracing::warn!(
                    calling = calling_ae_title.trim(),
                    "A-ASSOCIATE-RQ refused: no certificate valid for this AE title"
                );
                return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
            }
        }
        if self.require_called && called_ae_title.trim() != this_ae_title {
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        if !self.allowed_calling.is_empty()
            && !self
                .allowed_calling
                .iter()
                .any(|a| a.as_str() == calling_ae_title.trim())
        {
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        Ok(())
    }
}

pub(super) fn claim(identity: &UserIdentity) -> Claim {
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).ok();
    match identity.identity_type() {
        UserIdentityType::UsernamePassword => match (
            text(identity.primary_field()),
            text(identity.secondary_field()),
        ) {
            (Some(user), Some(password)) => Claim::UserAndPassword(user, password),
            _ => Claim::Unverifiable,
        },
        _ => Claim::Unverifiable,
    }
}

/// SCP/SCU role selection (PS3.7 D.3.3.4): for storage SOP classes the
/// requestor may take either or both roles, which C-GET needs (the archive
/// sends C-STOREs back on the same association); for the Storage Commitment
/// Push Model too, so a destination can report on a new association.
#[derive(Debug, Clone, Copy, Default)]
pub struct RolePolicy;

impl Negotiation for RolePolicy {
    /// Query/Retrieve FIND extended negotiation (PS3.4 C.5.1.1): relational
    /// queries, combined date-time matching and fuzzy person-name matching
    /// are accepted as requested; later bytes are not supported.
    fn extended_negotiation(&self, sop_class_uid: &str, input: &[u8]) -> Option<Vec<u8>> {
        let uid = sop_class_uid.trim_end_matches('\0');
        let find = [
            super::service::find::PATIENT_ROOT_FIND,
            super::service::find::STUDY_ROOT_FIND,
        ];
        find.contains(&uid)
            .then(|| input.iter().take(3).map(|b| u8::from(*b == 1)).collect())
    }

    fn negotiate_roles(
        &self,
        sop_class_uid: &str,
        scu_role: bool,
        scp_role: bool,
    ) -> Option<RequestorRoles> {
        let uid = sop_class_uid.trim_end_matches('\0');
        // A storage commitment SCP reporting on a new association takes
        // the SCP role for the Push Model.
        let commitment = uid == super::service::commitment::STORAGE_COMMITMENT_PUSH;
        (commitment
            || STORAGE_SOP_CLASSES
                .iter()
                .any(|(storage, _)| *storage == uid))
        .then_some(RequestorRoles {
            scu: scu_role,
            scp: scp_role,
        })
    }
}

/// Acceptor options for every inbound association: Verification plus every
/// storage SOP class, any transfer syntax the registry knows (data sets are
/// stored as received), and the configured AE policy and limits. No read
/// timeout is set here: dicom-ul would apply it to every later PDU too, so
/// the listener bounds establishment (ARTIM) and [`Association`] the idle
/// time separately.
/// The acceptor for one connection; `claimed` receives the user identity
/// its request carries.
pub fn acceptor_options(
    config: &DicomConfig,
    claimed: ClaimedUser,
    peer_certificate: Option<crate::tls::PeerCertificate>,
) -> ServerAssociationOptions<'static, AePolicy, RolePolicy> {
    let policy = AePolicy {
        allowed_calling: config.allowed_calling_ae_titles.clone(),
        require_called: config.require_called_ae_title,
        require_user: config.require_user_identity,
        claimed,
        ae_certificates: config.ae_certificates.clone(),
        peer_certificate,
    };
    let mut options = ServerAssociationOptions::new()
        .ae_access_control(policy)
        .ae_title(config.ae_title.as_str().to_owned())
        .max_pdu_length(config.max_pdu_length)
        .write_timeout(config.write_timeout)
        .strict(true)
        .with_negotiation(RolePolicy)
        .with_abstract_syntax(VERIFICATION)
        .with_abstract_syntax(super::service::find::PATIENT_ROOT_FIND)
        .with_abstract_syntax(super::service::find::STUDY_ROOT_FIND)
        .with_abstract_syntax(super::service::worklist::WORKLIST_FIND)
        .with_abstract_syntax(super::service::mpps::MPPS)
        .with_abstract_syntax(super::service::c_move::PATIENT_ROOT_MOVE)
        .with_abstract_syntax(super::service::c_move::STUDY_ROOT_MOVE)
        .with_abstract_syntax(super::service::c_get::PATIENT_ROOT_GET)
        .with_abstract_syntax(super::service::c_get::STUDY_ROOT_GET)
        .with_abstract_syntax(super::service::commitment::STORAGE_COMMITMENT_PUSH);
    for (uid, _) in STORAGE_SOP_CLASSES {
        options = options.with_abstract_syntax(*uid);
    }
    options
}

/// An accepted presentation context.
#[derive(Debug, Clone)]
pub struct PresentationContext {
    pub abstract_syntax: String,
    pub transfer_syntax: Uid,
}

/// A data-set fragment about to be read.
#[derive(Debug, Clone, Copy)]
pub struct Fragment {
    pub len: usize,
    pub last: bool,
}

/// A command and the presentation context it arrived on.
#[derive(Debug)]
pub struct Request {
    pub context_id: u8,
    pub command: Command,
}

/// An established association, read one message at a time.
pub struct Association {
    inner: Wire,
    contexts: HashMap<u8, PresentationContext>,
    calling_ae: AeTitle,
    idle_timeout: Duration,
    framing: Framing,
    /// A command set being reassembled. Kept here, not in a local, so
    /// [`Association::next_request`] can be cancelled and resumed.
    partial_command: Vec<u8>,
    partial_context: Option<u8>,
    released: bool,
    /// The services a registered calling AE may use; `None` for no limit.
    permitted: Option<BTreeSet<PeerService>>,
    /// The account the requestor proved (user identity negotiation), and
    /// its roles, which limit the services further.
    user: Option<(String, crate::model::Roles)>,
    /// Specific Character Set of worklist answers; empty for UTF-8.
    worklist_charset: String,
    /// A request read early, served before anything else.
    deferred: Option<Request>,
    /// The client's address, for the audit trail.
    peer: String,
    /// Instances stored on this association, and stores that failed:
    /// audited once, when it ends.
    stored: Vec<String>,
    failed_stores: usize,
    /// The size of the last data set stored: the next is likely alike.
    last_store_bytes: u64,
}

impl Association {
    pub fn new(inner: Wire, idle_timeout: Duration) -> Self {
        let contexts = inner
            .presentation_contexts()
            .iter()
            .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
            .filter_map(|pc| {
                Some((
                    pc.id,
                    PresentationContext {
                        abstract_syntax: pc.abstract_syntax.trim_end_matches('\0').to_owned(),
                        transfer_syntax: Uid::new(&pc.transfer_syntax).ok()?,
                    },
                ))
            })
            .collect();
        // A title with odd characters is still served, under a placeholder.
        let calling_ae =
            AeTitle::new(inner.peer_ae_title()).unwrap_or_else(|_| AeTitle::placeholder());
        let framing = Framing::new(inner.acceptor_max_pdu_length() as usize, idle_timeout);
        Association {
            inner,
            contexts,
            calling_ae,
            idle_timeout,
            framing,
            partial_command: Vec::new(),
            partial_context: None,
            released: false,
            permitted: None,
            user: None,
            worklist_charset: String::new(),
            deferred: None,
            peer: String::new(),
            stored: Vec::new(),
            failed_stores: 0,
            last_store_bytes: 0,
        }
    }

    pub fn set_peer(&mut self, address: String) {
        self.peer = address;
    }

    /// The client's address.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Note a C-STORE's result for the association's audit record.
    pub fn note_store(&mut self, sop_instance_uid: &str, stored: bool) {
        if stored {
            self.stored.push(sop_instance_uid.to_owned());
        } else {
            self.failed_stores += 1;
        }
    }

    /// The size the next data set is likely to have: that of the last one.
    pub fn store_size_hint(&self) -> u64 {
        self.last_store_bytes
    }

    pub fn note_store_size(&mut self, bytes: u64) {
        self.last_store_bytes = bytes;
    }

    /// The instances stored and the count of failed stores, once.
    pub fn take_stores(&mut self) -> (Vec<String>, usize) {
        (
            std::mem::take(&mut self.stored),
            std::mem::take(&mut self.failed_stores),
        )
    }

    /// Hand a request back, to be returned by the next
    /// [`Association::next_request`] (one read while waiting for a response
    /// to something Tessera sent).
    pub fn defer(&mut self, request: Request) {
        self.deferred = Some(request);
    }

    pub fn calling_ae(&self) -> &AeTitle {
        &self.calling_ae
    }

    /// Limit this association to what the calling peer may use.
    pub fn restrict_to(&mut self, services: BTreeSet<PeerService>) {
        self.permitted = Some(services);
    }

    /// Answer worklist queries in `charset` (a registered peer's setting).
    pub fn set_worklist_charset(&mut self, charset: String) {
        self.worklist_charset = charset;
    }

    pub fn worklist_charset(&self) -> &str {
        &self.worklist_charset
    }

    /// Act as `user` with `roles` from now on.
    pub fn log_in(&mut self, user: String, roles: crate::model::Roles) {
        self.user = Some((user, roles));
    }

    /// The account the requestor proved, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_ref().map(|(name, _)| name.as_str())
    }

    /// Whether the proved account's roles allow `service`; true without
    /// one (the peer rules alone apply).
    pub fn user_permits(&self, service: PeerService) -> bool {
        self.user.as_ref().is_none_or(|(_, roles)| {
            crate::auth::access::allows(crate::auth::access::dimse(service), roles.iter())
        })
    }

    pub fn permits(&self, service: PeerService) -> bool {
        self.permitted
            .as_ref()
            .is_none_or(|allowed| allowed.contains(&service))
    }

    pub fn context(&self, id: u8) -> Option<&PresentationContext> {
        self.contexts.get(&id)
    }

    /// Whether the peer released the association.
    pub fn is_released(&self) -> bool {
        self.released
    }

    /// The header of the next PDV; `None` once the peer has released the
    /// association. Its value is read next, with [`Association::read_value`]
    /// or [`Association::skip_value`].
    async fn next_pdv(&mut self) -> Result<Option<Pdv>, AssociationError> {
        loop {
            if self.released {
                return Ok(None);
            }
            let (stream, buf) = self.inner.parts();
            match self.framing.next(stream, buf).await? {
                Next::Pdv(pdv) => return Ok(Some(pdv)),
                Next::OtherPdu => {}
            }
            let pdu = tokio::time::timeout(self.idle_timeout, self.inner.receive())
                .await
                .map_err(|_| AssociationError::IdleTimeout(self.idle_timeout))??;
            match pdu {
                Pdu::ReleaseRQ => {
                    self.inner.send(&Pdu::ReleaseRP).await?;
                    self.released = true;
                }
                Pdu::AbortRQ { .. } => return Err(AssociationError::PeerAborted),
                other => {
                    return Err(AssociationError::Protocol(format!(
                        "unexpected {} PDU",
                        pdu_name(&other)
                    )))
                }
            }
        }
    }

    /// Append the rest of the current PDV's value to `dest`.
    async fn read_value(&mut self, dest: &mut Vec<u8>) -> Result<(), AssociationError> {
        let (stream, buf) = self.inner.parts();
        self.framing
            .read_value(stream, buf, dest, usize::MAX)
            .await?;
        Ok(())
    }

    async fn skip_value(&mut self) -> Result<(), AssociationError> {
        let (stream, buf) = self.inner.parts();
        Ok(self.framing.skip_value(stream, buf).await?)
    }

    /// Wait for the next command. `None` means the peer released.
    /// Cancel-safe: a partly received command resumes on the next call.
    pub async fn next_request(&mut self) -> Result<Option<Request>, AssociationError> {
        if let Some(request) = self.deferred.take() {
            return Ok(Some(request));
        }
        loop {
            let Some(pdv) = self.next_pdv().await? else {
                if self.partial_command.is_empty() {
                    return Ok(None);
                }
                return Err(AssociationError::Protocol(
                    "release inside a command".into(),
                ));
            };
            if !pdv.command {
                return Err(AssociationError::Protocol(
                    "data set fragment where a command was expected".into(),
                ));
            }
            if *self.partial_context.get_or_insert(pdv.context_id) != pdv.context_id {
                return Err(AssociationError::Protocol(
                    "command fragments on different presentation contexts".into(),
                ));
            }
            if self.partial_command.len() + pdv.left > MAX_COMMAND_SET {
                return Err(AssociationError::Protocol("command set too large".into()));
            }
            // Read into the association's own buffer, not a local one: a
            // poll that gives up half way keeps what it has read.
            let (stream, buf) = self.inner.parts();
            self.framing
                .read_value(stream, buf, &mut self.partial_command, usize::MAX)
                .await?;
            if pdv.last {
                break;
            }
        }
        let bytes = std::mem::take(&mut self.partial_command);
        let context_id = self.partial_context.take().unwrap_or_default();
        if !self.contexts.contains_key(&context_id) {
            return Err(AssociationError::Protocol(format!(
                "command on presentation context {context_id}, which was not accepted"
            )));
        }
        Ok(Some(Request {
            context_id,
            command: Command::decode(&bytes)?,
        }))
    }

    /// The header of the next fragment of the data set that follows a
    /// command: its length and whether it is the last. Its bytes are read
    /// next, with [`Association::read_fragment_part`] or
    /// [`Association::read_fragment`].
    pub async fn next_data_fragment_header(
        &mut self,
        context_id: u8,
    ) -> Result<Fragment, AssociationError> {
        let pdv = self
            .next_pdv()
            .await?
            .ok_or_else(|| AssociationError::Protocol("release inside a data set".into()))?;
        if pdv.command {
            return Err(AssociationError::Protocol(
                "command fragment inside a data set".into(),
            ));
        }
        if pdv.context_id != context_id {
            return Err(AssociationError::Protocol(
                "data set fragments on different presentation contexts".into(),
            ));
        }
        Ok(Fragment {
            len: pdv.left,
            last: pdv.last,
        })
    }

    /// Append the next `limit` bytes of the fragment whose header was just
    /// read to `dest`, straight from the socket. True once it is read whole.
    pub async fn read_fragment_part(
        &mut self,
        dest: &mut Vec<u8>,
        limit: usize,
    ) -> Result<bool, AssociationError> {
        let (stream, buf) = self.inner.parts();
        Ok(self.framing.read_value(stream, buf, dest, limit).await?)
    }

    /// The rest of the fragment whose header was just read.
    pub async fn read_fragment(&mut self, len: usize) -> Result<Vec<u8>, AssociationError> {
        let mut bytes = Vec::with_capacity(len);
        self.read_value(&mut bytes).await?;
        Ok(bytes)
    }

    /// Read a whole data set into memory: only for small ones such as query
    /// identifiers, never for instances. Fails past `max` bytes.
    pub async fn read_data_set(
        &mut self,
        context_id: u8,
        max: usize,
    ) -> Result<Vec<u8>, AssociationError> {
        let mut out = Vec::new();
        loop {
            let fragment = self.next_data_fragment_header(context_id).await?;
            if out.len() + fragment.len > max {
                return Err(AssociationError::Protocol(format!(
                    "data set larger than {max} bytes where a small one was expected"
                )));
            }
            self.read_value(&mut out).await?;
            if fragment.last {
                return Ok(out);
            }
        }
    }

    /// A request that has already arrived, without waiting: how a long
    /// operation notices a C-CANCEL. Relies on `next_request` being
    /// cancel-safe.
    pub fn poll_request(&mut self) -> Option<Result<Option<Request>, AssociationError>> {
        futures::FutureExt::now_or_never(self.next_request())
    }

    /// Read and discard the rest of a data set, so the association stays in
    /// step after a request we refuse.
    pub async fn drain_data_set(&mut self, context_id: u8) -> Result<(), AssociationError> {
        loop {
            let fragment = self.next_data_fragment_header(context_id).await?;
            self.skip_value().await?;
            if fragment.last {
                return Ok(());
            }
        }
    }

    pub async fn send_command(
        &mut self,
        context_id: u8,
        command: &Command,
    ) -> Result<(), AssociationError> {
        let bytes = command.encode()?;
        self.send_fragments(context_id, PDataValueType::Command, bytes)
            .await
    }

    /// Whether combined date-time matching was negotiated for a SOP class.
    pub fn combined_date_time(&self, sop_class_uid: &str) -> bool {
        self.inner
            .extended_negotiation_for(sop_class_uid)
            .and_then(|bytes| bytes.get(1))
            .is_some_and(|b| *b == 1)
    }

    /// The accepted presentation context for a SOP class in a syntax.
    pub fn context_for_syntax(&self, abstract_syntax: &str, transfer_syntax: &str) -> Option<u8> {
        self.contexts
            .iter()
            .filter(|(_, pc)| {
                pc.abstract_syntax == abstract_syntax
                    && pc.transfer_syntax.as_str() == transfer_syntax
            })
            .map(|(id, _)| *id)
            .min()
    }

    /// Largest PDV payload the peer accepts from us.
    pub fn max_send_pdv(&self) -> usize {
        (self.inner.requestor_max_pdu_length() as usize)
            .saturating_sub(6)
            .clamp(1024, 1 << 20)
    }

    /// Send one PDV as it is (C-STORE sub-operations stream their own).
    pub async fn send_raw(&mut self, pdv: PDataValue) -> Result<(), AssociationError> {
        self.inner.send(&Pdu::PData { data: vec![pdv] }).await?;
        Ok(())
    }

    /// Send a command and its (small) data set in as few PDUs as possible:
    /// one when both fit, which halves the writes for each C-FIND match.
    pub async fn send_command_and_data_set(
        &mut self,
        context_id: u8,
        command: &Command,
        data: Vec<u8>,
    ) -> Result<(), AssociationError> {
        let command = command.encode()?;
        let max = (self.inner.requestor_max_pdu_length() as usize).saturating_sub(12);
        if command.len() + data.len() > max {
            self.send_fragments(context_id, PDataValueType::Command, command)
                .await?;
            return self
                .send_fragments(context_id, PDataValueType::Data, data)
                .await;
        }
        let pdv = |value_type, data| PDataValue {
            presentation_context_id: context_id,
            value_type,
            is_last: true,
            data,
        };
        self.inner
            .send(&Pdu::PData {
                data: vec![
                    pdv(PDataValueType::Command, command),
                    pdv(PDataValueType::Data, data),
                ],
            })
            .await?;
        Ok(())
    }

    /// Send an encoded data set after a command (C-FIND results,
    /// N-EVENT-REPORT information, C-STORE sub-operations).
    pub async fn send_data_set(
        &mut self,
        context_id: u8,
        bytes: Vec<u8>,
    ) -> Result<(), AssociationError> {
        self.send_fragments(context_id, PDataValueType::Data, bytes)
            .await
    }

    /// Send bytes as one or more PDVs within the peer's maximum PDU length.
    async fn send_fragments(
        &mut self,
        context_id: u8,
        value_type: PDataValueType,
        bytes: Vec<u8>,
    ) -> Result<(), AssociationError> {
        // PDU header (6) is outside the limit; each PDV item adds 6 bytes.
        let max = (self.inner.requestor_max_pdu_length() as usize)
            .saturating_sub(6)
            .max(1024);
        if bytes.len() <= max {
            let pdv = PDataValue {
                presentation_context_id: context_id,
                value_type,
                is_last: true,
                data: bytes,
            };
            self.inner.send(&Pdu::PData { data: vec![pdv] }).await?;
            return Ok(());
        }
        let count = bytes.len().div_ceil(max);
        for (i, chunk) in bytes.chunks(max).enumerate() {
            let pdv = PDataValue {
                presentation_context_id: context_id,
                value_type: value_type.clone(),
                is_last: i + 1 == count,
                data: chunk.to_vec(),
            };
            self.inner.send(&Pdu::PData { data: vec![pdv] }).await?;
        }
        Ok(())
    }

    /// Abort as service provider; used on protocol errors and shutdown.
    pub async fn abort(self) {
        let _ = self.inner.abort().await;
    }

    /// Close after a release (the socket closes on drop).
    pub fn close(self) {}
}

fn pdu_name(pdu: &Pdu) -> &'static str {
    match pdu {
        Pdu::AssociationRQ(_) => "A-ASSOCIATE-RQ",
        Pdu::AssociationAC(_) => "A-ASSOCIATE-AC",
        Pdu::AssociationRJ(_) => "A-ASSOCIATE-RJ",
        Pdu::ReleaseRP => "A-RELEASE-RP",
        Pdu::Unknown { .. } => "unknown",
        _ => "other",
    }
}
