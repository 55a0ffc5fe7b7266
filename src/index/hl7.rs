//! The inbound HL7 message journal: every message with its outcome and the
//! acknowledgement sent, committed in the same transaction as its effects.

use std::collections::HashMap;

use sqlx::{Any, Row, Transaction};

use super::patients::{self, PatientChange};
use super::worklist::{self, WorklistChange};

/// One change a message asks for.
#[derive(Debug, Clone)]
pub enum Change {
    Patient(PatientChange),
    Worklist(WorklistChange),
    Report(super::reports::Report),
}
use super::{unix_now as now, Index, IndexError, Unsynced};

/// A received message, read and interpreted, waiting to be recorded.
#[derive(Debug, Clone)]
pub struct InboundMessage {
    pub interface: String,
    pub sender: String,
    /// MSH-10; `None` when the message could not be read that far.
    pub control_id: Option<String>,
    pub message_type: String,
    pub patient_id: String,
    pub charset: String,
    /// The message decoded to UTF-8.
    pub text: String,
    /// What it asks for, or why it cannot be applied.
    pub changes: Result<Vec<Change>, Refusal>,
}

/// Why a message is not applied: an error in its content (AE) or a
/// message Tessera does not take at all (AR).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Error(String),
    Reject(String),
}

/// What became of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Refused(Refusal),
}

/// What is answered for an outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// AA, AE or AR (CA, CE or CR in enhanced mode): what the log shows.
    pub code: String,
    /// The acknowledgement returned on the connection.
    pub text: String,
    /// An application acknowledgement (enhanced mode) to queue for the RIS.
    pub application: Option<String>,
}

/// A recorded message: its row and the acknowledgement to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub id: i64,
    pub ack: String,
    /// The control ID was seen before from this sender, and applied then.
    pub duplicate: bool,
}

/// A row of the message log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoggedMessage {
    pub id: i64,
    pub received_at: i64,
    pub interface: String,
    pub sender: String,
    pub control_id: Option<String>,
    pub message_type: String,
    pub patient_id: String,
    pub charset: String,
    pub outcome: String,
    pub error: String,
    pub ack: String,
    pub attempts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Filters of the message log.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    pub message_type: Option<String>,
    pub patient_id: Option<String>,
    pub outcome: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub limit: i64,
    pub offset: i64,
}

impl Index {
    /// Record a batch in arrival order, in one transaction: for each
    /// message, either the acknowledgement of an earlier identical control
    /// ID, or its changes (rolled back alone if they fail) and its row.
    /// `ack` writes the acknowledgement for message `i` and its outcome.
    /// The commit is deferred: acknowledge after [`Index::make_durable`].
    pub async fn record_hl7(
        &self,
        batch: &[InboundMessage],
        mut ack: impl FnMut(usize, &Outcome) -> Ack,
    ) -> Result<(Vec<Recorded>, Unsynced), IndexError> {
        // Changes almost never fail: first without a savepoint per
        // message, and only if one does, again with them.
        if let Some(recorded) = self.record_pass(batch, &mut ack, Guard::Optimistic).await? {
            return Ok(recorded);
        }
        tracing::debug!("an HL7 change failed; recording the batch again, guarded");
        self.record_pass(batch, &mut ack, Guard::Savepoint)
            .await?
            .ok_or(IndexError::Corrupt {
                column: "hl7_messages",
                value: "a guarded pass failed".into(),
            })
    }

    /// One attempt at [`Index::record_hl7`]; `None` when an optimistic
    /// pass met a failing change and was rolled back.
    async fn record_pass(
        &self,
        batch: &[InboundMessage],
        ack: &mut impl FnMut(usize, &Outcome) -> Ack,
        guard: Guard,
    ) -> Result<Option<(Vec<Recorded>, Unsynced)>, IndexError> {
        let mut tx = self.begin_deferred_write().await?;
        let mut earlier = earlier_messages(&mut tx, batch).await?;
        let mut recorded = Vec::with_capacity(batch.len());
        for (i, message) in batch.iter().enumerate() {
            let key = message
                .control_id
                .as_ref()
                .map(|c| (message.sender.clone(), c.clone()));
            let seen = key.as_ref().and_then(|k| earlier.get(k).cloned());
            if let Some((id, outcome, ack)) = &seen {
                if outcome == "AA" || outcome == "CA" {
                    recorded.push(Recorded {
                        id: *id,
                        ack: ack.clone(),
                        duplicate: true,
                    });
                    continue;
                }
            }
            let outcome =
                match apply_all(&mut tx, &message.changes, self.outbox.enabled(), guard).await? {
                    Applied::Outcome(outcome) => outcome,
                    Applied::Failed => return Ok(None),
                };
            let Ack {
                code,
                text,
                application,
            } = ack(i, &outcome);
            self.queue_application_ack(&mut tx, application).await?;
            let error = match &outcome {
                Outcome::Applied => String::new(),
                Outcome::Refused(Refusal::Error(e) | Refusal::Reject(e)) => e.clone(),
            };
            let id = match seen {
                // A message refused before and sent again is tried again.
                Some((id, _, _)) => {
                    sqlx::query(
                        "UPDATE hl7_messages SET received_at = $1, interface = $2, message = $3, \
                         outcome = $4, error = $5, ack = $6, attempts = attempts + 1, \
                         message_type = $7, patient_id = $8, charset = $9 WHERE id = $10",
                    )
                    .bind(now())
                    .bind(message.interface.as_str())
                    .bind(message.text.as_str())
                    .bind(code.as_str())
                    .bind(error.as_str())
                    .bind(text.as_str())
                    .bind(message.message_type.as_str())
                    .bind(message.patient_id.as_str())
                    .bind(message.charset.as_str())
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                    id
                }
                None => insert(&mut tx, message, &code, &error, &text).await?,
            };
            // A repeat later in this batch sees this one.
            if let Some(k) = key {
                earlier.insert(k, (id, code.clone(), text.clone()));
            }
            recorded.push(Recorded {
                id,
                ack: text,
                duplicate: false,
            });
        }
        tx.commit().await?;
        let ticket = self.committed();
        if ticket == Unsynced::SYNCED {
            self.outbox.ring();
        }
        Ok(Some((recorded, ticket)))
    }

    /// Queue an application acknowledgement, when there is a RIS to send
    /// it to.
    async fn queue_application_ack(
        &self,
        tx: &mut Transaction<'static, Any>,
        application: Option<String>,
    ) -> Result<(), IndexError> {
        match application {
            Some(text) if self.outbox.enabled() => {
                super::outbox::queue(tx, &super::outbox::Outbound::Ack { text }).await
            }
            Some(_) => {
                tracing::warn!(
                    "an application acknowledgement was asked for, but hl7.outbound is not set"
                );
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Apply a logged message again (after the cause of its failure was
    /// fixed), with the changes `changes` read from its text now.
    pub async fn replay_hl7(
        &self,
        id: i64,
        changes: &Result<Vec<Change>, Refusal>,
        ack: impl FnOnce(&Outcome) -> Ack,
    ) -> Result<Outcome, IndexError> {
        let mut tx = self.begin_write().await?;
        let outcome = apply_guarded(&mut tx, changes, self.outbox.enabled()).await?;
        let Ack {
            code,
            text,
            application,
        } = ack(&outcome);
        self.queue_application_ack(&mut tx, application).await?;
        let error = match &outcome {
            Outcome::Applied => String::new(),
            Outcome::Refused(Refusal::Error(e) | Refusal::Reject(e)) => e.clone(),
        };
        sqlx::query(
            "UPDATE hl7_messages SET outcome = $1, error = $2, ack = $3, attempts = attempts + 1 \
             WHERE id = $4",
        )
        .bind(code.as_str())
        .bind(error.as_str())
        .bind(text.as_str())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.outbox.ring();
        Ok(outcome)
    }

    /// Delete logged messages received before `before` (Unix seconds), in
    /// bounded batches. A repeat of a deleted message's control ID is
    /// applied again, so the retention outlasts any sender's resend window.
    pub async fn purge_hl7_messages(&self, before: i64) -> Result<u64, IndexError> {
        let mut purged = 0;
        loop {
            let done = sqlx::query(
                "DELETE FROM hl7_messages WHERE id IN (SELECT id FROM hl7_messages \
                 WHERE received_at < $1 LIMIT 5000)",
            )
            .bind(before)
            .execute(&self.writer)
            .await?
            .rows_affected();
            purged += done;
            if done < 5000 {
                return Ok(purged);
            }
        }
    }

    /// Apply changes that come from the API rather than a message, with
    /// the same rules, in one synced transaction.
    pub async fn apply_changes(&self, changes: &[Change]) -> Result<Outcome, IndexError> {
        let mut tx = self.begin_write().await?;
        let outcome = apply_guarded(&mut tx, &Ok(changes.to_vec()), self.outbox.enabled()).await?;
        tx.commit().await?;
        self.outbox.ring();
        Ok(outcome)
    }

    /// The message log, newest first.
    pub async fn hl7_messages(
        &self,
        filter: &MessageFilter,
    ) -> Result<Vec<LoggedMessage>, IndexError> {
        let mut sql = String::from(
            "SELECT id, received_at, interface, sender, control_id, message_type, patient_id, \
             charset, outcome, error, ack, attempts FROM hl7_messages WHERE 1 = 1",
        );
        let mut n = 0;
        let mut next = |column: &str, op: &str| {
            n += 1;
            format!(" AND {column} {op} ${n}")
        };
        let mut binds: Vec<either::Bind> = Vec::new();
        if let Some(t) = &filter.message_type {
            sql.push_str(&next("message_type", "LIKE"));
            binds.push(either::Bind::Text(format!("{t}%")));
        }
        if let Some(p) = &filter.patient_id {
            sql.push_str(&next("patient_id", "="));
            binds.push(either::Bind::Text(p.clone()));
        }
        if let Some(o) = &filter.outcome {
            sql.push_str(&next("outcome", "="));
            binds.push(either::Bind::Text(o.clone()));
        }
        if let Some(s) = filter.since {
            sql.push_str(&next("received_at", ">="));
            binds.push(either::Bind::Int(s));
        }
        if let Some(u) = filter.until {
            sql.push_str(&next("received_at", "<"));
            binds.push(either::Bind::Int(u));
        }
        sql.push_str(&format!(
            " ORDER BY id DESC LIMIT {} OFFSET {}",
            filter.limit, filter.offset
        ));
        let mut query = sqlx::query(&sql);
        for bind in binds {
            query = match bind {
                either::Bind::Text(t) => query.bind(t),
                either::Bind::Int(i) => query.bind(i),
            };
        }
        query
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| logged(row, false))
            .collect()
    }

    /// One logged message with its text.
    pub async fn hl7_message(&self, id: i64) -> Result<Option<LoggedMessage>, IndexError> {
        sqlx::query(
            "SELECT id, received_at, interface, sender, control_id, message_type, patient_id, \
             charset, outcome, error, ack, attempts, message FROM hl7_messages WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .map(|row| logged(&row, true))
        .transpose()
    }
}

mod either {
    pub enum Bind {
        Text(String),
        Int(i64),
    }
}

fn logged(row: &sqlx::any::AnyRow, with_text: bool) -> Result<LoggedMessage, IndexError> {
    Ok(LoggedMessage {
        id: row.try_get(0)?,
        received_at: row.try_get(1)?,
        interface: row.try_get(2)?,
        sender: row.try_get(3)?,
        control_id: row.try_get(4)?,
        message_type: row.try_get(5)?,
        patient_id: row.try_get(6)?,
        charset: row.try_get(7)?,
        outcome: row.try_get(8)?,
        error: row.try_get(9)?,
        ack: row.try_get(10)?,
        attempts: row.try_get(11)?,
        message: if with_text {
            Some(row.try_get(12)?)
        } else {
            None
        },
    })
}

/// Messages of the journal with a sender and control ID in `batch`, in one
/// statement: (sender, control ID) → (row, outcome, acknowledgement).
/// Both columns are constrained, so the lookup uses the (sender,
/// control_id) key instead of scanning the whole journal; a pair the batch
/// does not hold (one sender's control ID under another) is never asked
/// for by the caller.
async fn earlier_messages(
    tx: &mut Transaction<'static, Any>,
    batch: &[InboundMessage],
) -> Result<HashMap<(String, String), (i64, String, String)>, IndexError> {
    let keyed = || batch.iter().filter(|m| m.control_id.is_some());
    let mut senders: Vec<&str> = keyed().map(|m| m.sender.as_str()).collect();
    let mut controls: Vec<&str> = keyed().filter_map(|m| m.control_id.as_deref()).collect();
    for values in [&mut senders, &mut controls] {
        values.sort_unstable();
        values.dedup();
    }
    let mut found = HashMap::new();
    if controls.is_empty() {
        return Ok(found);
    }
    let sql = earlier_sql(senders.len(), controls.len());
    let mut q = sqlx::query(&sql);
    for value in senders.iter().chain(&controls) {
        q = q.bind(*value);
    }
    for row in q.fetch_all(&mut **tx).await? {
        found.insert(
            (row.try_get(0)?, row.try_get(1)?),
            (row.try_get(2)?, row.try_get(3)?, row.try_get(4)?),
        );
    }
    Ok(found)
}

/// The look-up of [`earlier_messages`] for so many senders and control IDs.
fn earlier_sql(senders: usize, controls: usize) -> String {
    let marks = |from: usize, n: usize| {
        (from..from + n)
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "SELECT sender, control_id, id, outcome, ack FROM hl7_messages \
         WHERE sender IN ({}) AND control_id IN ({})",
        marks(1, senders),
        marks(1 + senders, controls)
    )
}

/// How a message's changes are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guard {
    /// Inside a savepoint: a failure undoes this message's changes only,
    /// and becomes its outcome.
    Savepoint,
    /// Without one, two round trips fewer: a failure ends the pass
    /// ([`Applied::Failed`]), and the batch is recorded again guarded.
    Optimistic,
}

enum Applied {
    Outcome(Outcome),
    Failed,
}

async fn apply_all(
    tx: &mut Transaction<'static, Any>,
    changes: &Result<Vec<Change>, Refusal>,
    notify_ris: bool,
    guard: Guard,
) -> Result<Applied, IndexError> {
    let changes = match changes {
        Ok(changes) => changes,
        Err(refusal) => return Ok(Applied::Outcome(Outcome::Refused(refusal.clone()))),
    };
    if guard == Guard::Savepoint {
        sqlx::query("SAVEPOINT hl7_message")
            .execute(&mut **tx)
            .await?;
    }
    let mut refused = None;
    let mut ids = patients::PatientIds::new();
    for change in changes {
        let applied = match change {
            Change::Patient(change) => patients::apply(tx, change, &mut ids).await.map(|()| None),
            Change::Worklist(change) => worklist::apply(tx, change, notify_ris, &ids).await,
            Change::Report(report) => super::reports::apply(tx, report).await.map(|()| None),
        };
        match applied {
            Ok(None) => {}
            // Refused, but what it recorded (a conflict) stays.
            Ok(Some(reason)) => refused = Some(reason),
            Err(_) if guard == Guard::Optimistic => return Ok(Applied::Failed),
            Err(e) => {
                sqlx::query("ROLLBACK TO SAVEPOINT hl7_message")
                    .execute(&mut **tx)
                    .await?;
                tracing::warn!(error = %e, "HL7 message not applied");
                return Ok(Applied::Outcome(Outcome::Refused(Refusal::Error(format!(
                    "cannot apply: {e}"
                )))));
            }
        }
    }
    if guard == Guard::Savepoint {
        sqlx::query("RELEASE SAVEPOINT hl7_message")
            .execute(&mut **tx)
            .await?;
    }
    if let Some(reason) = refused {
        return Ok(Applied::Outcome(Outcome::Refused(Refusal::Error(reason))));
    }
    Ok(Applied::Outcome(Outcome::Applied))
}

/// A guarded apply, for paths that record one change set.
async fn apply_guarded(
    tx: &mut Transaction<'static, Any>,
    changes: &Result<Vec<Change>, Refusal>,
    notify_ris: bool,
) -> Result<Outcome, IndexError> {
    match apply_all(tx, changes, notify_ris, Guard::Savepoint).await? {
        Applied::Outcome(outcome) => Ok(outcome),
        // A savepoint turns every failure into an outcome.
        Applied::Failed => Ok(Outcome::Refused(Refusal::Error("cannot apply".into()))),
    }
}

async fn insert(
    tx: &mut Transaction<'static, Any>,
    m: &InboundMessage,
    code: &str,
    error: &str,
    ack: &str,
) -> Result<i64, IndexError> {
    let row = sqlx::query(
        "INSERT INTO hl7_messages (received_at, interface, sender, control_id, message_type, \
         patient_id, charset, message, outcome, error, ack) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
    )
    .bind(now())
    .bind(m.interface.as_str())
    .bind(m.sender.as_str())
    .bind(m.control_id.as_deref())
    .bind(m.message_type.as_str())
    .bind(m.patient_id.as_str())
    .bind(m.charset.as_str())
    .bind(m.text.as_str())
    .bind(code)
    .bind(error)
    .bind(ack)
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.try_get(0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The duplicate look-up runs for every group: a scan of the journal
    /// would make each message slower than the one before.
    #[tokio::test]
    async fn the_duplicate_lookup_uses_the_sender_and_control_id_key() {
        let (_dir, index) = Index::temporary().await;
        let sql = format!("EXPLAIN QUERY PLAN {}", earlier_sql(2, 3));
        let mut q = sqlx::query(&sql);
        for value in ["HIS", "LAB", "C1", "C2", "C3"] {
            q = q.bind(value);
        }
        let plan: Vec<String> = q
            .fetch_all(&index.pool)
            .await
            .expect("plan")
            .iter()
            .map(|row| row.try_get::<String, _>(3).expect("detail"))
            .collect();
        assert!(
            plan.iter().all(|step| step.contains("USING INDEX")),
            "{plan:?}"
        );
        index.close().await;
    }

    #[tokio::test]
    async fn the_log_forgets_messages_past_their_retention() {
        let (_dir, index) = Index::temporary().await;
        let message = InboundMessage {
            interface: "mllp".into(),
            sender: "HIS|GENERAL".into(),
            control_id: Some("C1".into()),
            message_type: "ADT^A08".into(),
            patient_id: String::new(),
            charset: String::new(),
            text: "MSH|^~\\&|HIS".into(),
            changes: Err(Refusal::Reject("test".into())),
        };
        let ack = |_: usize, _: &Outcome| Ack {
            code: "AR".into(),
            text: "MSA|AR|C1".into(),
            application: None,
        };
        let (_, ticket) = index.record_hl7(&[message], ack).await.expect("record");
        index.make_durable(ticket).await.expect("durable");
        let since = now() - 60;
        assert_eq!(index.purge_hl7_messages(since).await.expect("purge"), 0);
        assert_eq!(index.purge_hl7_messages(now() + 1).await.expect("purge"), 1);
        index.close().await;
    }

    fn message(control: &str, changes: Vec<Change>) -> InboundMessage {
        InboundMessage {
            interface: "mllp".into(),
            sender: "HIS|GENERAL".into(),
            control_id: Some(control.into()),
            message_type: "ADT^A08".into(),
            patient_id: String::new(),
            charset: String::new(),
            text: format!("MSH|^~\\&|HIS||||||ADT^A08|{control}"),
            changes: Ok(changes),
        }
    }

    fn code_of(_: usize, outcome: &Outcome) -> Ack {
        let code = match outcome {
            Outcome::Applied => "AA",
            Outcome::Refused(Refusal::Error(_)) => "AE",
            Outcome::Refused(Refusal::Reject(_)) => "AR",
        };
        Ack {
            code: code.into(),
            text: format!("MSA|{code}"),
            application: None,
        }
    }

    #[tokio::test]
    async fn a_failing_change_is_undone_alone_and_a_repeat_in_the_batch_is_a_duplicate() {
        use super::super::patients::{Demographics, PatientKey};
        use super::super::worklist::StepStatus;
        let (_dir, index) = Index::temporary().await;
        let known = PatientKey {
            id: "P1".into(),
            issuer: String::new(),
        };
        let admit = Change::Patient(PatientChange::Update {
            key: known.clone(),
            demographics: Demographics {
                name: Some("Nguyễn^Văn".into()),
                ..Default::default()
            },
        });
        // An order for a patient no message created: its change fails.
        let orphan = Change::Worklist(WorklistChange::Schedule {
            patient: PatientKey {
                id: "NOBODY".into(),
                issuer: String::new(),
            },
            step: Box::default(),
            status: StepStatus::Scheduled,
        });
        let batch = [
            message("C1", vec![admit.clone()]),
            message("C2", vec![orphan]),
            message("C1", vec![admit]),
        ];
        let (recorded, ticket) = index.record_hl7(&batch, code_of).await.expect("record");
        index.make_durable(ticket).await.expect("durable");
        assert_eq!(recorded[0].ack, "MSA|AA");
        assert_eq!(recorded[1].ack, "MSA|AE");
        assert!(recorded[2].duplicate, "the repeat in the same batch");
        assert_eq!(recorded[2].id, recorded[0].id);
        let patient = index.patient(&known).await.expect("read");
        assert_eq!(patient.map(|p| p.name).as_deref(), Some("Nguyễn^Văn"));
        index.close().await;
    }
}
