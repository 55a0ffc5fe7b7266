-- Every inbound HL7 message, with its outcome and the acknowledgement
-- sent. A repeat of a control ID from the same sender finds its row and
-- gets the same acknowledgement. The text is stored decoded (UTF-8).
CREATE TABLE hl7_messages (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at     BIGINT NOT NULL,
    interface       TEXT NOT NULL DEFAULT '',
    sender          TEXT NOT NULL,
    control_id      TEXT,
    message_type    TEXT NOT NULL DEFAULT '',
    patient_id      TEXT NOT NULL DEFAULT '',
    charset         TEXT NOT NULL DEFAULT '',
    message         TEXT NOT NULL,
    outcome         TEXT NOT NULL,
    error           TEXT NOT NULL DEFAULT '',
    ack             TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 1,
    UNIQUE (sender, control_id)
);
CREATE INDEX hl7_messages_received ON hl7_messages (received_at);
CREATE INDEX hl7_messages_patient ON hl7_messages (patient_id);

-- Demographics an ADT message carries beyond what DICOM objects hold.
ALTER TABLE patients ADD COLUMN patient_address TEXT NOT NULL DEFAULT '';
ALTER TABLE patients ADD COLUMN patient_phone TEXT NOT NULL DEFAULT '';
ALTER TABLE patients ADD COLUMN other_patient_ids TEXT NOT NULL DEFAULT '';
ALTER TABLE patients ADD COLUMN hl7_updated_at BIGINT;

-- Admissions and visits (PV1), per patient and visit number.
CREATE TABLE patient_visits (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    patient_fk          BIGINT NOT NULL REFERENCES patients (id),
    visit_number        TEXT NOT NULL,
    patient_class       TEXT NOT NULL DEFAULT '',
    location            TEXT NOT NULL DEFAULT '',
    attending_doctor    TEXT NOT NULL DEFAULT '',
    admitted_at         TEXT NOT NULL DEFAULT '',
    discharged_at       TEXT NOT NULL DEFAULT '',
    status              TEXT NOT NULL DEFAULT '',
    updated_at          BIGINT NOT NULL,
    UNIQUE (patient_fk, visit_number)
);

-- Each merge or identifier change applied, for the record and for
-- telling a repeated merge from a new one.
CREATE TABLE patient_merges (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    prior_patient_id    TEXT NOT NULL,
    prior_issuer        TEXT NOT NULL,
    survivor_patient_id TEXT NOT NULL,
    survivor_issuer     TEXT NOT NULL,
    studies_moved       BIGINT NOT NULL,
    merged_at           BIGINT NOT NULL
);
CREATE INDEX patient_merges_prior ON patient_merges (prior_patient_id, prior_issuer);
