-- The DICOM information model (PS3.4 C.6): patient > study > series > instance.
-- Every attribute C-FIND and QIDO-RS match on or return at each level has a
-- column. Text is UTF-8; *_folded columns hold the case- and
-- diacritic-folded form used for fuzzy person-name matching.

CREATE TABLE patients (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    patient_id          TEXT NOT NULL,
    issuer_of_patient_id TEXT NOT NULL DEFAULT '',
    patient_name        TEXT NOT NULL DEFAULT '',
    patient_name_folded TEXT NOT NULL DEFAULT '',
    patient_birth_date  TEXT NOT NULL DEFAULT '',
    patient_sex         TEXT NOT NULL DEFAULT '',
    num_studies         INTEGER NOT NULL DEFAULT 0,
    num_series          INTEGER NOT NULL DEFAULT 0,
    num_instances       INTEGER NOT NULL DEFAULT 0,
    UNIQUE (patient_id, issuer_of_patient_id)
);
CREATE INDEX patients_name_folded ON patients (patient_name_folded);

CREATE TABLE studies (
    id                      INTEGER PRIMARY KEY AUTOINCREMENT,
    patient_fk              INTEGER NOT NULL REFERENCES patients (id),
    study_instance_uid      TEXT NOT NULL UNIQUE,
    study_date              TEXT NOT NULL DEFAULT '',
    study_time              TEXT NOT NULL DEFAULT '',
    accession_number        TEXT NOT NULL DEFAULT '',
    study_id                TEXT NOT NULL DEFAULT '',
    study_description       TEXT NOT NULL DEFAULT '',
    referring_physician_name TEXT NOT NULL DEFAULT '',
    referring_physician_name_folded TEXT NOT NULL DEFAULT '',
    modalities_in_study     TEXT NOT NULL DEFAULT '',
    timezone_offset_from_utc TEXT NOT NULL DEFAULT '',
    num_series              INTEGER NOT NULL DEFAULT 0,
    num_instances           INTEGER NOT NULL DEFAULT 0,
    size_bytes              INTEGER NOT NULL DEFAULT 0,
    created_at              INTEGER NOT NULL,
    updated_at              INTEGER NOT NULL
);
CREATE INDEX studies_patient ON studies (patient_fk);
CREATE INDEX studies_date ON studies (study_date, study_time);
CREATE INDEX studies_accession ON studies (accession_number);

CREATE TABLE series (
    id                      INTEGER PRIMARY KEY AUTOINCREMENT,
    study_fk                INTEGER NOT NULL REFERENCES studies (id),
    series_instance_uid     TEXT NOT NULL UNIQUE,
    modality                TEXT NOT NULL DEFAULT '',
    series_number           INTEGER,
    series_description      TEXT NOT NULL DEFAULT '',
    body_part_examined      TEXT NOT NULL DEFAULT '',
    pps_start_date          TEXT NOT NULL DEFAULT '',
    pps_start_time          TEXT NOT NULL DEFAULT '',
    -- First item of the Request Attributes Sequence (0040,0275).
    scheduled_procedure_step_id TEXT NOT NULL DEFAULT '',
    requested_procedure_id  TEXT NOT NULL DEFAULT '',
    num_instances           INTEGER NOT NULL DEFAULT 0,
    created_at              INTEGER NOT NULL,
    updated_at              INTEGER NOT NULL
);
CREATE INDEX series_study ON series (study_fk);
CREATE INDEX series_modality ON series (modality);

CREATE TABLE instances (
    id                      INTEGER PRIMARY KEY AUTOINCREMENT,
    series_fk               INTEGER NOT NULL REFERENCES series (id),
    sop_instance_uid        TEXT NOT NULL UNIQUE,
    sop_class_uid           TEXT NOT NULL,
    instance_number         INTEGER,
    number_of_frames        INTEGER,
    pixel_rows              INTEGER,
    pixel_columns           INTEGER,
    bits_allocated          INTEGER,
    transfer_syntax_uid     TEXT NOT NULL,
    specific_character_set  TEXT NOT NULL DEFAULT '',
    content_date            TEXT NOT NULL DEFAULT '',
    content_time            TEXT NOT NULL DEFAULT '',
    object_key              TEXT NOT NULL,
    size_bytes              INTEGER NOT NULL,
    sha256                  TEXT NOT NULL,
    source_ae_title         TEXT NOT NULL DEFAULT '',
    received_at             INTEGER NOT NULL
);
CREATE INDEX instances_series ON instances (series_fk);
CREATE INDEX instances_sop_class ON instances (sop_class_uid);
