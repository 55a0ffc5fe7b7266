-- Object reclamation and exact metadata versions.
--
-- Objects are content-addressed and may be shared by several instance rows.
-- A write that leaves an object unreferenced records a tombstone in the same
-- transaction; only the collector deletes objects, after a grace period and
-- after re-checking, under the write lock, that nothing references them.
CREATE INDEX instances_object_key ON instances (object_key);
CREATE TABLE object_tombstones (
    object_key      TEXT PRIMARY KEY,
    unreferenced_at INTEGER NOT NULL
);
-- A running server holds a lease on the storage it writes to, renewed while
-- it runs; `tessera verify --prune-unreferenced` refuses to run under one.
CREATE TABLE storage_leases (
    holder      TEXT PRIMARY KEY,
    storage     TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
);
-- Bumped on every change to a series or study, so metadata ETags change even
-- when two changes fall in the same second.
ALTER TABLE series ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE studies ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
