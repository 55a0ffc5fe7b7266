//! The inbound HL7 message journal: every message with its outcome and the
//! acknowledgement sent, committed in the same transaction as its effects.

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
use super::{unix_now as now, Index, IndexError};

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
    /// Record a batch in arrival order, in one synced transaction: for each
    /// message, either the acknowledgement of an earlier identical control
    /// ID, or its changes (rolled back alone if they fail) and its row.
    /// `ack` writes the acknowledgement for message `i` and its outcome.
    pub async fn record_hl7(
        &self,
        batch: &[InboundMessage],
        mut ack: impl FnMut(usize, &Outcome) -> Ack,
    ) -> Result<Vec<Recorded>, IndexError> {
        let mut tx = self.begin_write().await?;
        let mut recorded = Vec::with_capacity(batch.len());
        for (i, message) in batch.iter().enumerate() {
            let earlier = match &message.control_id {
                Some(control) => sqlx::query(
                    "SELECT id, outcome, ack FROM hl7_messages WHERE sender = $1 AND control_id = $2",
                )
                .bind(message.sender.as_str())
                .bind(control.as_str())
                .fetch_optional(&mut *tx)
                .await?
                .map(|row| -> Result<(i64, String, String), sqlx::Error> {
                    Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
                })
                .transpose()?,
                None => None,
            };
            if let Some((id, outcome, ack)) = &earlier {
                if outcome == "AA" || outcome == "CA" {
                    recorded.push(Recorded {
                        id: *id,
                        ack: ack.clone(),
                        duplicate: true,
                    });
                    continue;
                }
            }
            let outcome = apply_all(&mut tx, &message.changes, self.outbox.enabled()).await?;
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
            let id = match earlier {
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
            recorded.push(Recorded {
                id,
                ack: text,
                duplicate: false,
            });
        }
        tx.commit().await?;
        self.outbox.ring();
        Ok(recorded)
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
        let outcome = apply_all(&mut tx, changes, self.outbox.enabled()).await?;
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
        let outcome = apply_all(&mut tx, &Ok(changes.to_vec()), self.outbox.enabled()).await?;
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

/// Apply `changes` inside a savepoint: a failure undoes this message's
/// changes only, and becomes its outcome.
async fn apply_all(
    tx: &mut Transaction<'static, Any>,
    changes: &Result<Vec<Change>, Refusal>,
    notify_ris: bool,
) -> Result<Outcome, IndexError> {
    let changes = match changes {
        Ok(changes) => changes,
        Err(refusal) => return Ok(Outcome::Refused(refusal.clone())),
    };
    sqlx::query("SAVEPOINT hl7_message")
        .execute(&mut **tx)
        .await?;
    let mut refused = None;
    for change in changes {
        let applied = match change {
            Change::Patient(change) => patients::apply(tx, change).await.map(|()| None),
            Change::Worklist(change) => worklist::apply(tx, change, notify_ris).await,
            Change::Report(report) => super::reports::apply(tx, report).await.map(|()| None),
        };
        match applied {
            Ok(None) => {}
            // Refused, but what it recorded (a conflict) stays.
            Ok(Some(reason)) => refused = Some(reason),
            Err(e) => {
                sqlx::query("ROLLBACK TO SAVEPOINT hl7_message")
                    .execute(&mut **tx)
                    .await?;
                tracing::warn!(error = %e, "HL7 message not applied");
                return Ok(Outcome::Refused(Refusal::Error(format!(
                    "cannot apply: {e}"
                ))));
            }
        }
    }
    sqlx::query("RELEASE SAVEPOINT hl7_message")
        .execute(&mut **tx)
        .await?;
    if let Some(reason) = refused {
        return Ok(Outcome::Refused(Refusal::Error(reason)));
    }
    Ok(Outcome::Applied)
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

    #[tokio::test]
    async fn the_log_forgets_messages_past_their_retention() {
        let dir = tempfile::tempdir().expect("tmp");
        let url = format!("sqlite://{}", dir.path().join("i.sqlite").display());
        let index = Index::open(&url, 2).await.expect("index");
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
        index.record_hl7(&[message], ack).await.expect("record");
        let since = now() - 60;
        assert_eq!(index.purge_hl7_messages(since).await.expect("purge"), 0);
        assert_eq!(index.purge_hl7_messages(now() + 1).await.expect("purge"), 1);
        index.close().await;
    }
}
