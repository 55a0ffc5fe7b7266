-- Storage commitment requests (PS3.4 J): recorded before N-ACTION-RSP so a
-- pending report survives a restart; delivered with N-EVENT-REPORT.
CREATE TABLE commitments (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    transaction_uid TEXT NOT NULL,
    requester_ae    TEXT NOT NULL,
    -- JSON: [[sop_class_uid, sop_instance_uid], ...]
    references_json TEXT NOT NULL,
    -- JSON verification result, once verified.
    result_json     TEXT,
    state           TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT NOT NULL DEFAULT '',
    created_at      INTEGER NOT NULL
);
CREATE INDEX commitments_due ON commitments (state, next_attempt_at);
