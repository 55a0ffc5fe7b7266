//! RIS/HIS integration: what inbound HL7 v2 messages mean and the order
//! they take effect in. Every message is read ([`crate::hl7`]), interpreted
//! into index changes, and handed to one applier task that records each in
//! the message journal together with its effects, in arrival order across
//! all connections, a group per synced commit. The acknowledgement is
//! returned only after that commit.
//!
//! The MLLP listener ([`crate::mllp`]) and the HTTP message log both come
//! here; neither knows what an ADT message does.

mod adt;
mod orders;
pub mod outbound;
mod reports;

use std::time::{Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

use crate::hl7::{ack, AckCode, ErrorCondition, Hl7Error, Message};
use crate::index::hl7::{Ack, Change, InboundMessage, Outcome, Refusal};
use crate::index::{Index, IndexError, Unsynced};
use crate::telemetry::Metrics;

/// Versions taken: 2.3 to 2.8 and their point releases.
const VERSIONS: &[&str] = &[
    "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2",
];
/// Messages recorded per synced commit at most.
const MAX_BATCH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum RisError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("the HL7 applier has stopped")]
    ShuttingDown,
    #[error("no logged HL7 message {0}")]
    NotFound(i64),
    #[error("the HL7 journal could not be synced: {0}")]
    NotDurable(String),
}

/// How messages are read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Settings {
    /// Key patients by PID-3's assigning authority too.
    pub use_issuer: bool,
}

/// Why a message is not applied, with what its ERR segment says.
#[derive(Debug, Clone)]
pub(crate) struct Problem {
    reject: bool,
    condition: ErrorCondition,
}

impl Problem {
    fn error(condition: ErrorCondition) -> Self {
        Problem {
            reject: false,
            condition,
        }
    }

    fn reject(condition: ErrorCondition) -> Self {
        Problem {
            reject: true,
            condition,
        }
    }

    fn refusal(&self) -> Refusal {
        if self.reject {
            Refusal::Reject(self.condition.text.clone())
        } else {
            Refusal::Error(self.condition.text.clone())
        }
    }
}

/// The answer to one message.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The acknowledgement as bytes in the sender's character set; `None`
    /// when the sender asked for none (enhanced mode, MSH-15).
    pub bytes: Option<Vec<u8>>,
    /// MSA-1 as sent.
    pub code: String,
    /// The control ID was seen before and the earlier answer is repeated.
    pub duplicate: bool,
    /// MSH-9, MSH-3 and PID-3 as read, for the audit trail.
    pub message_type: String,
    pub sender: String,
    pub patient_id: String,
}

struct Job {
    inbound: InboundMessage,
    /// What the acknowledgement is built from.
    header: Message,
    problem: Option<Problem>,
    reply: oneshot::Sender<Result<Reply, RisError>>,
}

/// Handle on the HL7 applier; cheap to clone.
#[derive(Clone)]
pub struct Ris {
    tx: mpsc::Sender<Job>,
    index: Index,
    settings: Settings,
    metrics: std::sync::Arc<Metrics>,
}

impl Ris {
    pub fn start(
        index: Index,
        settings: Settings,
        metrics: std::sync::Arc<Metrics>,
        tracker: &TaskTracker,
    ) -> Self {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        tracker.spawn(apply(index.clone(), rx));
        Ris {
            tx,
            index,
            settings,
            metrics,
        }
    }

    /// Read, apply and acknowledge one message received on `interface`.
    pub async fn receive(&self, bytes: &[u8], interface: &str) -> Result<Reply, RisError> {
        let started = Instant::now();
        let (inbound, header, problem) = read(bytes, interface, self.settings);
        let (reply, wait) = oneshot::channel();
        self.tx
            .send(Job {
                inbound,
                header,
                problem,
                reply,
            })
            .await
            .map_err(|_| RisError::ShuttingDown)?;
        let reply = wait.await.unwrap_or(Err(RisError::ShuttingDown))?;
        self.metrics
            .hl7_answered(interface, &reply.code, started.elapsed());
        Ok(reply)
    }

    /// Apply a logged message again; returns its new outcome code.
    pub async fn replay(&self, id: i64) -> Result<String, RisError> {
        let logged = self
            .index
            .hl7_message(id)
            .await?
            .ok_or(RisError::NotFound(id))?;
        let text = logged.message.unwrap_or_default();
        let (inbound, header, problem) = read_text(&text, &logged.interface, self.settings);
        let outcome = self
            .index
            .replay_hl7(id, &inbound.changes, |outcome| {
                acknowledge(&header, problem.as_ref(), outcome).0
            })
            .await?;
        Ok(match outcome {
            Outcome::Applied => "AA",
            Outcome::Refused(Refusal::Error(_)) => "AE",
            Outcome::Refused(Refusal::Reject(_)) => "AR",
        }
        .to_owned())
    }
}

/// Groups committed and waiting for their sync, at most.
const GROUPS_IN_FLIGHT: usize = 64;

/// Answers of one committed group, sent once its commit is on disk.
type Answers = Vec<(oneshot::Sender<Result<Reply, RisError>>, Reply)>;

/// The applier: messages in arrival order, a group per commit. A group's
/// commit is synced while the next group is applied ([`send_when_durable`]).
async fn apply(index: Index, mut rx: mpsc::Receiver<Job>) {
    let (durable_tx, durable_rx) = mpsc::channel(GROUPS_IN_FLIGHT);
    let acknowledger = tokio::spawn(send_when_durable(index.clone(), durable_rx));
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let batch: Vec<Job> = std::mem::take(&mut jobs);
        let messages: Vec<InboundMessage> = batch.iter().map(|j| j.inbound.clone()).collect();
        let mut codes = vec![String::new(); batch.len()];
        let recorded = index
            .record_hl7(&messages, |i, outcome| {
                let (ack, sent) = acknowledge(&batch[i].header, batch[i].problem.as_ref(), outcome);
                codes[i] = sent;
                ack
            })
            .await;
        match recorded {
            Ok((recorded, ticket)) => {
                let mut answers = Answers::with_capacity(batch.len());
                for ((job, recorded), code) in batch.into_iter().zip(recorded).zip(codes) {
                    let code = if recorded.duplicate {
                        msa_code(&recorded.ack)
                    } else {
                        code
                    };
                    let bytes = wanted(&job.header, 15, &code)
                        .then(|| ack::to_wire(&job.header, &recorded.ack));
                    let reply = Reply {
                        bytes,
                        code,
                        duplicate: recorded.duplicate,
                        message_type: job.inbound.message_type,
                        sender: job.inbound.sender,
                        patient_id: job.inbound.patient_id,
                    };
                    answers.push((job.reply, reply));
                }
                if durable_tx.send((ticket, answers)).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                // Nothing of the batch is committed: no acknowledgement, so
                // the senders send again.
                tracing::error!(error = %e, messages = batch.len(), "cannot record HL7 messages");
                let message = e.to_string();
                for job in batch {
                    let _ = job.reply.send(Err(RisError::Index(IndexError::Corrupt {
                        column: "hl7_messages",
                        value: message.clone(),
                    })));
                }
            }
        }
    }
    drop(durable_tx);
    let _ = acknowledger.await;
    tracing::debug!("HL7 applier stopped");
}

/// Send each group's answers once its commit is on disk, in commit order;
/// one sync usually covers several groups.
async fn send_when_durable(index: Index, mut rx: mpsc::Receiver<(Unsynced, Answers)>) {
    while let Some((ticket, answers)) = rx.recv().await {
        match index.make_durable(ticket).await {
            Ok(()) => {
                for (reply, answer) in answers {
                    let _ = reply.send(Ok(answer));
                }
            }
            Err(e) => {
                // Committed but perhaps not on disk: no acknowledgement, so
                // the senders send again and get the recorded answer.
                tracing::error!(error = %e, messages = answers.len(), "HL7 commit not synced");
                for (reply, _) in answers {
                    let _ = reply.send(Err(RisError::NotDurable(e.to_string())));
                }
            }
        }
    }
}

/// MSA-1 of a stored acknowledgement.
fn msa_code(ack: &str) -> String {
    Message::parse(ack.as_bytes())
        .map(|m| m.get("MSA", 1).text())
        .unwrap_or_default()
}

/// Enhanced mode: whether the sender wants an answer with `code`, as
/// MSH-15 (accept) or MSH-16 (application) asks; empty means always.
fn wanted(header: &Message, field: usize, code: &str) -> bool {
    let asked = header.get("MSH", field).text().to_ascii_uppercase();
    let success = code == "AA" || code == "CA";
    match asked.as_str() {
        "NE" => false,
        "ER" => !success,
        "SU" => success,
        _ => true,
    }
}

/// What is answered for `outcome`, and the code sent on the connection.
///
/// Original mode (MSH-15 empty): AA, AE or AR. Enhanced mode: the accept
/// acknowledgement is CA once the message is committed, whatever its
/// outcome, or CR when it is not taken at all; the application
/// acknowledgement (AA, AE or AR) is queued for the RIS as MSH-16 asks.
fn acknowledge(header: &Message, problem: Option<&Problem>, outcome: &Outcome) -> (Ack, String) {
    let enhanced = !header.get("MSH", 15).is_empty();
    let (code, condition) = match outcome {
        Outcome::Applied => (AckCode::Aa, None),
        Outcome::Refused(refusal) => {
            let condition = problem.map(|p| p.condition.clone()).unwrap_or_else(|| {
                let text = match refusal {
                    Refusal::Error(t) | Refusal::Reject(t) => t.clone(),
                };
                ErrorCondition::new(207, text)
            });
            let code = match refusal {
                Refusal::Reject(_) => AckCode::Ar,
                Refusal::Error(_) => AckCode::Ae,
            };
            (code, Some(condition))
        }
    };
    let build = |code: AckCode, condition: Option<&ErrorCondition>| {
        ack::build(header, code, condition, &unique_control_id(), &timestamp())
    };
    if !enhanced {
        let text = build(code, condition.as_ref());
        let ack = Ack {
            code: code.as_str().to_owned(),
            text,
            application: None,
        };
        let sent = ack.code.clone();
        return (ack, sent);
    }
    let accept = if code == AckCode::Ar {
        AckCode::Cr
    } else {
        AckCode::Ca
    };
    let accept_text = build(accept, condition.as_ref().filter(|_| accept == AckCode::Cr));
    let application = (accept == AckCode::Ca && wanted(header, 16, code.as_str()))
        .then(|| build(code, condition.as_ref()));
    let ack = Ack {
        code: code.as_str().to_owned(),
        text: accept_text,
        application,
    };
    (ack, accept.as_str().to_owned())
}

/// A control ID of 20 digits (MSH-10's length before v2.7): the time in
/// microseconds and a counter.
fn unique_control_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let micros = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros() % 10_u128.pow(16))
        .unwrap_or(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 10_000;
    format!("{micros:016}{n:04}")
}

/// Now as YYYYMMDDHHMMSS in UTC.
pub fn timestamp() -> String {
    timestamp_of(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    )
}

/// Unix seconds as YYYYMMDDHHMMSS in UTC.
fn timestamp_of(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A message as received: read, checked and interpreted.
fn read(
    bytes: &[u8],
    interface: &str,
    settings: Settings,
) -> (InboundMessage, Message, Option<Problem>) {
    match Message::parse(bytes) {
        Ok(message) => {
            let text = match message.charset() {
                crate::hl7::Charset::Utf8 | crate::hl7::Charset::Ascii => {
                    String::from_utf8_lossy(bytes).into_owned()
                }
                charset => charset
                    .decode(bytes)
                    .unwrap_or_else(|_| String::from_utf8_lossy(bytes).into_owned()),
            };
            interpret(message, text, interface, settings)
        }
        Err(e) => unreadable(bytes, e, interface),
    }
}

/// A logged message read again from its stored (UTF-8) text.
fn read_text(
    text: &str,
    interface: &str,
    settings: Settings,
) -> (InboundMessage, Message, Option<Problem>) {
    match Message::parse_decoded(text) {
        Ok(message) => interpret(message, text.to_owned(), interface, settings),
        Err(e) => unreadable(text.as_bytes(), e, interface),
    }
}

fn unreadable(
    bytes: &[u8],
    e: Hl7Error,
    interface: &str,
) -> (InboundMessage, Message, Option<Problem>) {
    let header = Message::parse_header(bytes).unwrap_or_else(Message::anonymous);
    let problem = match e {
        // The characters are wrong, not the message: an application error.
        Hl7Error::BadByte { .. } => {
            Problem::error(ErrorCondition::new(e.code(), e.to_string()).at("MSH", 18))
        }
        _ => Problem::reject(ErrorCondition::new(e.code(), e.to_string())),
    };
    let control = header.control_id();
    let inbound = InboundMessage {
        interface: interface.to_owned(),
        sender: header.sender(),
        control_id: (!control.is_empty()).then_some(control),
        message_type: type_name(&header),
        patient_id: String::new(),
        charset: header.get("MSH", 18).text(),
        text: String::from_utf8_lossy(bytes).into_owned(),
        changes: Err(problem.refusal()),
    };
    (inbound, header, Some(problem))
}

fn type_name(m: &Message) -> String {
    let (code, trigger, _) = m.message_type();
    if trigger.is_empty() {
        code
    } else {
        format!("{code}^{trigger}")
    }
}

fn interpret(
    message: Message,
    text: String,
    interface: &str,
    settings: Settings,
) -> (InboundMessage, Message, Option<Problem>) {
    let changes: Result<Vec<Change>, Problem> = check_header(&message).and_then(|()| {
        let (code, trigger, _) = message.message_type();
        match code.as_str() {
            "ADT" => adt::interpret(&message, &trigger, settings)
                .map(|changes| changes.into_iter().map(Change::Patient).collect()),
            "ORM" | "OMI" | "OMG" => orders::interpret(&message, settings),
            "ORU" => reports::interpret(&message, settings),
            _ => Err(Problem::reject(
                ErrorCondition::new(200, format!("message type {code} is not supported"))
                    .at("MSH", 9),
            )),
        }
    });
    let patient_id = message
        .segment("PID")
        .and_then(|pid| adt::patient_key(message.field(pid, 3), settings))
        .map(|k| k.id)
        .unwrap_or_default();
    let control = message.control_id();
    let (changes, problem) = match changes {
        Ok(changes) => (Ok(changes), None),
        Err(p) => (Err(p.refusal()), Some(p)),
    };
    let inbound = InboundMessage {
        interface: interface.to_owned(),
        sender: message.sender(),
        control_id: (!control.is_empty()).then_some(control),
        message_type: type_name(&message),
        patient_id,
        charset: message.charset().name().to_owned(),
        text,
        changes,
    };
    (inbound, message, problem)
}

fn check_header(m: &Message) -> Result<(), Problem> {
    let (code, _, _) = m.message_type();
    if code.is_empty() {
        return Err(Problem::reject(
            ErrorCondition::new(101, "MSH-9 (message type) is empty").at("MSH", 9),
        ));
    }
    if m.control_id().is_empty() {
        return Err(Problem::reject(
            ErrorCondition::new(101, "MSH-10 (control ID) is empty").at("MSH", 10),
        ));
    }
    let version = m.version();
    if !VERSIONS.contains(&version.as_str()) {
        return Err(Problem::reject(
            ErrorCondition::new(
                203,
                format!("version {version:?} is not supported (2.3 to 2.8)"),
            )
            .at("MSH", 12),
        ));
    }
    let processing = m.get("MSH", 11).comp(1).text();
    if !["P", "D", "T", ""].contains(&processing.as_str()) {
        return Err(Problem::reject(
            ErrorCondition::new(
                202,
                format!("processing ID {processing:?} is not P, D or T"),
            )
            .at("MSH", 11),
        ));
    }
    Ok(())
}
