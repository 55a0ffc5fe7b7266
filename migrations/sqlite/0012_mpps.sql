-- Modality Performed Procedure Steps (N-CREATE, N-SET). A step with no
-- worklist item (unscheduled) is kept with worklist_item_fk NULL.
CREATE TABLE performed_steps (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    sop_instance_uid    TEXT NOT NULL UNIQUE,
    status              TEXT NOT NULL,
    worklist_item_fk    BIGINT REFERENCES worklist_items (id),
    patient_id          TEXT NOT NULL DEFAULT '',
    study_instance_uid  TEXT NOT NULL DEFAULT '',
    accession_number    TEXT NOT NULL DEFAULT '',
    scheduled_step_id   TEXT NOT NULL DEFAULT '',
    performed_step_id   TEXT NOT NULL DEFAULT '',
    modality            TEXT NOT NULL DEFAULT '',
    station_ae_title    TEXT NOT NULL DEFAULT '',
    started_at          TEXT NOT NULL DEFAULT '',
    ended_at            TEXT NOT NULL DEFAULT '',
    discontinue_reason  TEXT NOT NULL DEFAULT '',
    performed_series    TEXT NOT NULL DEFAULT '',
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);
CREATE INDEX performed_steps_study ON performed_steps (study_instance_uid);
