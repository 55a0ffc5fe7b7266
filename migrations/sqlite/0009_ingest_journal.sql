-- How far each node's ingest journal is durably reflected in the index.
CREATE TABLE ingest_journal (
    node TEXT PRIMARY KEY,
    sequence BIGINT NOT NULL,
    position BIGINT NOT NULL
);
