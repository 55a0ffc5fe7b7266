//! Messages to the RIS, queued in the transaction of the change they
//! report: a worklist step started, completed or discontinued by MPPS, a
//! study received for an order, a cancel refused because images arrived,
//! and enhanced-mode application acknowledgements. One node at a time
//! sends them, oldest first, under a lease; a row is done only once the RIS
//! acknowledged it, so delivery survives restarts and node failures.
//!
//! Nothing is queued unless this node has a RIS to tell
//! ([`Index::enable_outbox`]), so a site without one collects no rows.

use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::AnyConnection;
use sqlx::Row;
use tokio::sync::Notify;

use super::{unix_now as now, Index, IndexError};

/// Whether changes queue messages for the RIS, and the sender's doorbell.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    enabled: AtomicBool,
    wake: Notify,
}

impl Outbox {
    pub(crate) fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Tell the sender that rows may be waiting.
    pub(crate) fn ring(&self) {
        if self.enabled() {
            self.wake.notify_one();
        }
    }
}

/// Why the RIS is told about an order: ORC-1 and ORC-5 follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OrderEvent {
    /// MPPS N-CREATE (IN PROGRESS).
    Started,
    /// The first images of the order's study were stored.
    Received,
    /// MPPS COMPLETED.
    Completed,
    /// MPPS DISCONTINUED.
    Discontinued,
    /// A cancel or discontinue came after images; they are kept.
    CancelRefused,
}

impl OrderEvent {
    /// ORC-1 (order control) and ORC-5 (order status).
    pub fn order_codes(&self) -> (&'static str, &'static str) {
        match self {
            OrderEvent::Started | OrderEvent::Received => ("SC", "IP"),
            OrderEvent::Completed => ("SC", "CM"),
            OrderEvent::Discontinued => ("SC", "DC"),
            OrderEvent::CancelRefused => ("UC", "IP"),
        }
    }
}

/// The order a status message is about, as the worklist holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct OrderStatus {
    pub placer_order: String,
    pub filler_order: String,
    pub accession_number: String,
    pub requested_procedure_id: String,
    pub requested_procedure_code: String,
    pub requested_procedure_description: String,
    pub scheduled_step_id: String,
    pub modality: String,
    pub study_instance_uid: String,
    pub patient_id: String,
    pub issuer_of_patient_id: String,
    pub patient_name: String,
    pub patient_birth_date: String,
    pub patient_sex: String,
    /// Unix seconds of the change.
    pub at: i64,
}

/// One queued message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Outbound {
    /// An order-status message, written in the configured message type
    /// when it is sent.
    Order {
        event: OrderEvent,
        #[serde(flatten)]
        order: Box<OrderStatus>,
    },
    /// An application acknowledgement, complete, with its own control ID.
    Ack { text: String },
}

impl Outbound {
    fn kind(&self) -> &'static str {
        match self {
            Outbound::Order { .. } => "order",
            Outbound::Ack { .. } => "ack",
        }
    }
}

/// A queued row as the sender and the API see it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OutboundRow {
    pub id: i64,
    pub message: Outbound,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: String,
    pub ack_code: String,
    pub control_id: String,
    pub created_at: i64,
}

/// How a send ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Acknowledged with AA or CA.
    Done { ack_code: String },
    /// Refused by the RIS (AE, AR, CE, CR): kept as failed for an operator.
    Refused { ack_code: String, error: String },
    /// Not answered: tried again at `retry_at`.
    Retry { error: String, retry_at: i64 },
}

/// Queue `message` in the transaction open on `conn`.
pub(super) async fn queue(conn: &mut AnyConnection, message: &Outbound) -> Result<(), IndexError> {
    let payload = serde_json::to_string(message).map_err(|e| IndexError::Corrupt {
        column: "hl7_outbox.payload",
        value: e.to_string(),
    })?;
    let ts = now();
    sqlx::query(
        "INSERT INTO hl7_outbox (kind, payload, next_attempt_at, created_at) VALUES ($1, $2, $3, $3)",
    )
    .bind(message.kind())
    .bind(payload)
    .bind(ts)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Queue `event` for worklist item `item`.
pub(super) async fn queue_order(
    conn: &mut AnyConnection,
    item: i64,
    event: OrderEvent,
) -> Result<(), IndexError> {
    let row = sqlx::query(
        "SELECT w.placer_order, w.filler_order, w.accession_number, w.requested_procedure_id, \
         w.requested_procedure_code, w.requested_procedure_description, w.scheduled_step_id, \
         w.modality, w.study_instance_uid, p.patient_id, p.issuer_of_patient_id, p.patient_name, \
         p.patient_birth_date, p.patient_sex \
         FROM worklist_items w JOIN patients p ON p.id = w.patient_fk WHERE w.id = $1",
    )
    .bind(item)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(r) = row else {
        return Ok(());
    };
    let order = OrderStatus {
        placer_order: r.try_get(0)?,
        filler_order: r.try_get(1)?,
        accession_number: r.try_get(2)?,
        requested_procedure_id: r.try_get(3)?,
        requested_procedure_code: r.try_get(4)?,
        requested_procedure_description: r.try_get(5)?,
        scheduled_step_id: r.try_get(6)?,
        modality: r.try_get(7)?,
        study_instance_uid: r.try_get(8)?,
        patient_id: r.try_get(9)?,
        issuer_of_patient_id: r.try_get(10)?,
        patient_name: r.try_get(11)?,
        patient_birth_date: r.try_get(12)?,
        patient_sex: r.try_get(13)?,
        at: now(),
    };
    queue(
        conn,
        &Outbound::Order {
            event,
            order: Box::new(order),
        },
    )
    .await
}

/// Queue "received" once for each order of a study seen for the first
/// time, matched by Study Instance UID or accession number, unless the
/// order's steps are over (a completed order has told the RIS already).
pub(super) async fn queue_study_received(
    conn: &mut AnyConnection,
    study_uid: &str,
    accession_number: &str,
) -> Result<(), IndexError> {
    let items = sqlx::query(
        "SELECT MIN(id) FROM worklist_items WHERE (study_instance_uid = $1 \
         OR ($2 <> '' AND accession_number = $2)) \
         AND status IN ('SCHEDULED', 'STARTED') \
         GROUP BY placer_order, filler_order ORDER BY 1",
    )
    .bind(study_uid)
    .bind(accession_number)
    .fetch_all(&mut *conn)
    .await?;
    for row in items {
        queue_order(conn, row.try_get(0)?, OrderEvent::Received).await?;
    }
    Ok(())
}

const COLUMNS: &str = "id, payload, state, attempts, next_attempt_at, last_error, ack_code, \
                       control_id, created_at";

fn row_of(r: &sqlx::any::AnyRow) -> Result<OutboundRow, IndexError> {
    let payload: String = r.try_get(1)?;
    let message = serde_json::from_str(&payload).map_err(|_| IndexError::Corrupt {
        column: "hl7_outbox.payload",
        value: payload.chars().take(200).collect(),
    })?;
    Ok(OutboundRow {
        id: r.try_get(0)?,
        message,
        state: r.try_get(2)?,
        attempts: r.try_get(3)?,
        next_attempt_at: r.try_get(4)?,
        last_error: r.try_get(5)?,
        ack_code: r.try_get(6)?,
        control_id: r.try_get(7)?,
        created_at: r.try_get(8)?,
    })
}

impl Index {
    /// Queue messages for the RIS from now on.
    pub fn enable_outbox(&self) {
        self.outbox.enabled.store(true, Ordering::Relaxed);
    }

    /// Wait until a change may have queued a message.
    pub async fn outbox_rung(&self) {
        self.outbox.wake.notified().await;
    }

    /// Take or keep the sending lease for `secs`; false while another
    /// node holds it.
    pub async fn hold_outbound_lease(&self, holder: &str, secs: i64) -> Result<bool, IndexError> {
        let ts = now();
        let mut tx = self.begin_write().await?;
        let held = sqlx::query(
            "INSERT INTO hl7_outbound_lease (name, holder, expires_at) VALUES ('ris', $1, $2) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
             expires_at = excluded.expires_at \
             WHERE hl7_outbound_lease.holder = excluded.holder \
             OR hl7_outbound_lease.expires_at < $3 RETURNING holder",
        )
        .bind(holder)
        .bind(ts + secs)
        .bind(ts)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
        tx.commit().await?;
        Ok(held)
    }

    /// Give the lease up (at shutdown), so another node goes on at once.
    pub async fn release_outbound_lease(&self, holder: &str) -> Result<(), IndexError> {
        sqlx::query("DELETE FROM hl7_outbound_lease WHERE holder = $1")
            .bind(holder)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// The oldest pending messages, in the order they are to be sent.
    pub async fn outbound_pending(&self, limit: i64) -> Result<Vec<OutboundRow>, IndexError> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM hl7_outbox WHERE state = 'pending' ORDER BY id LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(row_of)
        .collect()
    }

    /// Record the outcome of one send of message `id` under `control_id`.
    pub async fn outbound_sent(
        &self,
        id: i64,
        control_id: &str,
        delivery: &Delivery,
    ) -> Result<(), IndexError> {
        let ts = now();
        let (state, ack, error, next) = match delivery {
            Delivery::Done { ack_code } => ("done", ack_code.as_str(), "", ts),
            Delivery::Refused { ack_code, error } => {
                ("failed", ack_code.as_str(), error.as_str(), ts)
            }
            Delivery::Retry { error, retry_at } => ("pending", "", error.as_str(), *retry_at),
        };
        let finished = (state != "pending").then_some(ts);
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE hl7_outbox SET state = $1, ack_code = $2, last_error = $3, \
             next_attempt_at = $4, finished_at = $5, control_id = $6, attempts = attempts + 1 \
             WHERE id = $7",
        )
        .bind(state)
        .bind(ack)
        .bind(error)
        .bind(next)
        .bind(finished)
        .bind(control_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The queue for the API: newest first, of one state when given.
    pub async fn outbound_messages(
        &self,
        state: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<OutboundRow>, IndexError> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM hl7_outbox WHERE ($1 = '' OR state = $1) \
             ORDER BY id DESC LIMIT $2 OFFSET $3"
        ))
        .bind(state.unwrap_or(""))
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(row_of)
        .collect()
    }

    /// Send a failed message again; false when `id` is not a failed one.
    pub async fn retry_outbound(&self, id: i64) -> Result<bool, IndexError> {
        let mut tx = self.begin_write().await?;
        let changed = sqlx::query(
            "UPDATE hl7_outbox SET state = 'pending', next_attempt_at = $1, finished_at = NULL \
             WHERE id = $2 AND state = 'failed'",
        )
        .bind(now())
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        self.outbox.ring();
        Ok(changed > 0)
    }

    /// Messages waiting to be sent, and messages the RIS refused.
    pub async fn outbound_counts(&self) -> Result<(i64, i64), IndexError> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END), 0) AS BIGINT) \
             FROM hl7_outbox WHERE state IN ('pending', 'failed')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    /// Delete delivered messages older than `retention_secs`.
    pub async fn purge_outbound(&self, retention_secs: i64) -> Result<u64, IndexError> {
        Ok(sqlx::query(
            "DELETE FROM hl7_outbox WHERE id IN (SELECT id FROM hl7_outbox \
             WHERE state = 'done' AND finished_at < $1 LIMIT 5000)",
        )
        .bind(now() - retention_secs)
        .execute(&self.writer)
        .await?
        .rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_node_holds_the_sending_lease_until_it_expires() {
        let (_dir, index) = Index::temporary().await;
        assert!(index.hold_outbound_lease("a", 60).await.expect("lease"));
        assert!(index.hold_outbound_lease("a", 60).await.expect("renew"));
        assert!(!index.hold_outbound_lease("b", 60).await.expect("lease"));
        // A holder that died: its lease runs out and the other node takes it.
        assert!(index.hold_outbound_lease("a", -5).await.expect("renew"));
        assert!(index.hold_outbound_lease("b", 60).await.expect("lease"));
        assert!(!index.hold_outbound_lease("a", 60).await.expect("lease"));
        index.release_outbound_lease("b").await.expect("release");
        assert!(index.hold_outbound_lease("a", 60).await.expect("lease"));
        index.close().await;
    }

    #[test]
    fn a_queued_message_reads_back_as_written() {
        let message = Outbound::Order {
            event: OrderEvent::Completed,
            order: Box::new(OrderStatus {
                placer_order: "P1".into(),
                patient_name: "Nguyễn^Văn".into(),
                at: 5,
                ..Default::default()
            }),
        };
        let json = serde_json::to_string(&message).expect("json");
        assert_eq!(
            serde_json::from_str::<Outbound>(&json).expect("read"),
            message
        );
        assert_eq!(OrderEvent::Completed.order_codes(), ("SC", "CM"));
    }
}
