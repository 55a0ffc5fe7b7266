//! What is audited: the events of PS3.15 A.5.3 Tessera emits, with their
//! DCM codes, and who did it to whom.

use serde::Serialize;

/// One kind of audited event. [`Event::slug`] is the name the API filters
/// on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Event {
    /// Instances received (C-STORE, STOW-RS, import): DICOM Instances
    /// Transferred, action C.
    Stored,
    /// Instances or their metadata sent (C-MOVE, C-GET, WADO, the viewer):
    /// DICOM Instances Transferred, action R.
    Retrieved,
    /// C-FIND, QIDO-RS, worklist queries: Query, action E.
    Queried,
    /// Objects sent to another archive by a route: Export.
    Exported,
    /// HL7 ADT: Patient Record.
    PatientRecord,
    /// HL7 orders: Order Record.
    OrderRecord,
    /// HL7 results (reports): Procedure Record.
    ProcedureRecord,
    /// A login, successful or not: User Authentication / Login.
    Login,
    /// User Authentication / Logout.
    Logout,
    /// An account locked after failures: Security Alert / User Security
    /// Attributes Changed.
    Lockout,
    /// Accounts and tokens created, changed, disabled: Security Alert /
    /// User Security Attributes Changed.
    UserChanged,
    /// Peers registered, changed or removed: Security Alert / Network
    /// Configuration.
    PeerChanged,
    /// Tessera started, with its configuration: Application Activity /
    /// Application Start.
    ApplicationStart,
    /// Application Activity / Application Stop.
    ApplicationStop,
}

/// A coded value: (code, coding scheme, meaning).
pub type Code = (&'static str, &'static str, &'static str);

impl Event {
    pub const ALL: [Event; 14] = [
        Event::Stored,
        Event::Retrieved,
        Event::Queried,
        Event::Exported,
        Event::PatientRecord,
        Event::OrderRecord,
        Event::ProcedureRecord,
        Event::Login,
        Event::Logout,
        Event::Lockout,
        Event::UserChanged,
        Event::PeerChanged,
        Event::ApplicationStart,
        Event::ApplicationStop,
    ];

    pub fn slug(self) -> &'static str {
        match self {
            Event::Stored => "stored",
            Event::Retrieved => "retrieved",
            Event::Queried => "queried",
            Event::Exported => "exported",
            Event::PatientRecord => "patient-record",
            Event::OrderRecord => "order-record",
            Event::ProcedureRecord => "procedure-record",
            Event::Login => "login",
            Event::Logout => "logout",
            Event::Lockout => "lockout",
            Event::UserChanged => "user-changed",
            Event::PeerChanged => "peer-changed",
            Event::ApplicationStart => "application-start",
            Event::ApplicationStop => "application-stop",
        }
    }

    pub fn parse(slug: &str) -> Option<Self> {
        Event::ALL.into_iter().find(|e| e.slug() == slug)
    }

    /// EventID (PS3.15 A.5.1, CID 400).
    pub fn id(self) -> Code {
        match self {
            Event::Stored | Event::Retrieved => ("110104", "DCM", "DICOM Instances Transferred"),
            Event::Queried => ("110112", "DCM", "Query"),
            Event::Exported => ("110106", "DCM", "Export"),
            Event::PatientRecord => ("110110", "DCM", "Patient Record"),
            Event::OrderRecord => ("110109", "DCM", "Order Record"),
            Event::ProcedureRecord => ("110111", "DCM", "Procedure Record"),
            Event::Login | Event::Logout => ("110114", "DCM", "User Authentication"),
            Event::Lockout | Event::UserChanged | Event::PeerChanged => {
                ("110113", "DCM", "Security Alert")
            }
            Event::ApplicationStart | Event::ApplicationStop => {
                ("110100", "DCM", "Application Activity")
            }
        }
    }

    /// EventTypeCode, where the event has one.
    pub fn type_code(self) -> Option<Code> {
        match self {
            Event::Login => Some(("110122", "DCM", "Login")),
            Event::Logout => Some(("110123", "DCM", "Logout")),
            Event::Lockout | Event::UserChanged => {
                Some(("110137", "DCM", "User Security Attributes Changed"))
            }
            Event::PeerChanged => Some(("110128", "DCM", "Network Configuration")),
            Event::ApplicationStart => Some(("110120", "DCM", "Application Start")),
            Event::ApplicationStop => Some(("110121", "DCM", "Application Stop")),
            _ => None,
        }
    }

    /// EventActionCode: Create, Read, Update, Delete or Execute.
    pub fn action(self) -> &'static str {
        match self {
            Event::Stored => "C",
            Event::Retrieved | Event::Exported => "R",
            Event::PatientRecord | Event::OrderRecord | Event::ProcedureRecord => "U",
            Event::UserChanged | Event::PeerChanged => "U",
            _ => "E",
        }
    }
}

/// EventOutcomeIndicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Outcome {
    Success = 0,
    MinorFailure = 4,
    SeriousFailure = 8,
    MajorFailure = 12,
}

/// Who acted: a person logged in on the HTTP port, a DICOM or HL7 node,
/// or Tessera itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Actor {
    User(String),
    AeTitle(String),
    Hl7Sender(String),
    Local,
}

impl Actor {
    pub fn name(&self) -> &str {
        match self {
            Actor::User(n) | Actor::AeTitle(n) | Actor::Hl7Sender(n) => n,
            Actor::Local => "tessera",
        }
    }
}

/// One audited event as the edges report it.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub event: Event,
    pub outcome: Outcome,
    pub actor: Actor,
    /// The actor's network address; empty when local.
    pub address: String,
    pub patients: Vec<String>,
    pub studies: Vec<String>,
    /// SOP Instance UIDs whose studies and patients the writer looks up
    /// (C-STORE, C-MOVE, C-GET); not kept themselves.
    pub instances: Vec<String>,
    /// What was asked or changed: a query, a peer's AE title, a user name,
    /// an HL7 message type; free text for the ParticipantObjectDetail.
    pub detail: String,
}

impl AuditEvent {
    pub fn new(event: Event, actor: Actor, address: impl Into<String>) -> Self {
        AuditEvent {
            event,
            outcome: Outcome::Success,
            actor,
            address: address.into(),
            patients: Vec::new(),
            studies: Vec::new(),
            instances: Vec::new(),
            detail: String::new(),
        }
    }

    /// The same actor and subject under another event.
    pub fn event_kind(mut self, event: Event) -> Self {
        self.event = event;
        self
    }

    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    pub fn patients(mut self, ids: impl IntoIterator<Item = String>) -> Self {
        self.add_patients(ids);
        self
    }

    pub fn add_patients(&mut self, ids: impl IntoIterator<Item = String>) {
        self.patients
            .extend(ids.into_iter().filter(|id| !id.is_empty()));
        self.patients.sort();
        self.patients.dedup();
    }

    pub fn studies(mut self, uids: impl IntoIterator<Item = String>) -> Self {
        self.add_studies(uids);
        self
    }

    pub fn add_studies(&mut self, uids: impl IntoIterator<Item = String>) {
        self.studies
            .extend(uids.into_iter().filter(|uid| !uid.is_empty()));
        self.studies.sort();
        self.studies.dedup();
    }

    pub fn instances(mut self, uids: impl IntoIterator<Item = String>) -> Self {
        self.instances.extend(uids);
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}
