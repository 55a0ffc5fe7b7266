-- The audit trail: one row per access to patient data or security event,
-- with its DICOM audit message (PS3.15 A.5). Each node appends its own
-- chain: hash = SHA-256 of the previous row's hash and this row's fields,
-- so a changed or removed row shows (tessera audit verify). Rows are only
-- ever appended, and deleted from the oldest end by retention.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    node        TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    event       TEXT NOT NULL,
    outcome     BIGINT NOT NULL,
    user_name   TEXT NOT NULL,
    address     TEXT NOT NULL,
    patients    TEXT NOT NULL,
    studies     TEXT NOT NULL,
    message     TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL,
    UNIQUE (node, seq)
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_user ON audit_log (user_name, at);
