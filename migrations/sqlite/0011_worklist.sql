-- Scheduled procedure steps: from HL7 orders, or from the worklist API at
-- a site without a RIS. One row per step; an order with several steps
-- (OMI with several IPC segments) has several rows.
CREATE TABLE worklist_items (
    id                              INTEGER PRIMARY KEY AUTOINCREMENT,
    patient_fk                      BIGINT NOT NULL REFERENCES patients (id),
    placer_order                    TEXT NOT NULL DEFAULT '',
    filler_order                    TEXT NOT NULL DEFAULT '',
    accession_number                TEXT NOT NULL DEFAULT '',
    requested_procedure_id          TEXT NOT NULL DEFAULT '',
    requested_procedure_code        TEXT NOT NULL DEFAULT '',
    requested_procedure_description TEXT NOT NULL DEFAULT '',
    scheduled_step_id               TEXT NOT NULL DEFAULT '',
    modality                        TEXT NOT NULL DEFAULT '',
    station_ae_titles               TEXT NOT NULL DEFAULT '',
    start_date                      TEXT NOT NULL DEFAULT '',
    start_time                      TEXT NOT NULL DEFAULT '',
    priority                        TEXT NOT NULL DEFAULT '',
    requesting_physician            TEXT NOT NULL DEFAULT '',
    performing_physician            TEXT NOT NULL DEFAULT '',
    reason                          TEXT NOT NULL DEFAULT '',
    study_instance_uid              TEXT NOT NULL,
    status                          TEXT NOT NULL,
    created_at                      BIGINT NOT NULL,
    updated_at                      BIGINT NOT NULL,
    UNIQUE (placer_order, filler_order, scheduled_step_id)
);
CREATE INDEX worklist_items_start ON worklist_items (start_date, modality);
CREATE INDEX worklist_items_accession ON worklist_items (accession_number);
CREATE INDEX worklist_items_patient ON worklist_items (patient_fk);

-- Orders cancelled after their images arrived: the images stay, the
-- conflict waits here for someone to resolve it.
CREATE TABLE worklist_conflicts (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    worklist_item_fk    BIGINT NOT NULL REFERENCES worklist_items (id),
    study_instance_uid  TEXT NOT NULL,
    requested_status    TEXT NOT NULL,
    detail              TEXT NOT NULL,
    created_at          BIGINT NOT NULL
);
