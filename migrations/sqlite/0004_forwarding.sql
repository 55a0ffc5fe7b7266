-- Store-and-forward: one row per instance and destination, written in the
-- same transaction as the instance itself, so nothing stored is ever left
-- out of forwarding. 'dead' rows are the dead letters.
CREATE TABLE forward_queue (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    route               TEXT NOT NULL,
    destination_ae      TEXT NOT NULL,
    sop_instance_uid    TEXT NOT NULL,
    state               TEXT NOT NULL DEFAULT 'pending',
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at     INTEGER NOT NULL,
    last_error          TEXT NOT NULL DEFAULT '',
    created_at          INTEGER NOT NULL,
    done_at             INTEGER
);
CREATE INDEX forward_queue_due ON forward_queue (state, next_attempt_at);
