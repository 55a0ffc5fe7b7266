-- Messages to the RIS: order status from MPPS, studies received, cancels
-- refused after images, application acknowledgements. A row is queued in
-- the transaction of the change it reports, sent in id order, and done
-- only when the RIS acknowledged it; 'failed' rows wait for an operator.
CREATE TABLE hl7_outbox (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    kind                TEXT NOT NULL,
    payload             TEXT NOT NULL,
    state               TEXT NOT NULL DEFAULT 'pending',
    attempts            BIGINT NOT NULL DEFAULT 0,
    next_attempt_at     BIGINT NOT NULL,
    last_error          TEXT NOT NULL DEFAULT '',
    ack_code            TEXT NOT NULL DEFAULT '',
    control_id          TEXT NOT NULL DEFAULT '',
    created_at          BIGINT NOT NULL,
    finished_at         BIGINT
);
CREATE INDEX hl7_outbox_state ON hl7_outbox (state, id);

-- One node at a time sends, so the RIS gets the messages in order.
CREATE TABLE hl7_outbound_lease (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);
