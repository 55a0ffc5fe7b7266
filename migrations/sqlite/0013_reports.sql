-- Reports from the RIS (ORU^R01), one row per order: a corrected or final
-- report replaces the preliminary one. Linked to a study by its UID or
-- accession number, which need not be stored yet.
CREATE TABLE reports (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    study_instance_uid  TEXT NOT NULL DEFAULT '',
    accession_number    TEXT NOT NULL DEFAULT '',
    placer_order        TEXT NOT NULL DEFAULT '',
    filler_order        TEXT NOT NULL DEFAULT '',
    patient_id          TEXT NOT NULL DEFAULT '',
    status              TEXT NOT NULL,
    observed_at         TEXT NOT NULL DEFAULT '',
    author              TEXT NOT NULL DEFAULT '',
    body                TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    UNIQUE (placer_order, filler_order, accession_number)
);
CREATE INDEX reports_study ON reports (study_instance_uid);
CREATE INDEX reports_accession ON reports (accession_number);
