-- Studies whose search document is out of date. Triggers write a row in
-- the transaction of every change a study's document shows (its study,
-- series, patient, reports, worklist and performed steps), so the search
-- index can never miss one; each node's indexer reads the rows past its
-- own mark. Instance counts alone do not make a row.
CREATE TABLE search_outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    study_uid   TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TRIGGER search_study_added AFTER INSERT ON studies BEGIN
    INSERT INTO search_outbox (study_uid, created_at)
    VALUES (NEW.study_instance_uid, CAST(strftime('%s', 'now') AS INTEGER));
END;

CREATE TRIGGER search_study_changed AFTER UPDATE ON studies
WHEN OLD.patient_fk IS NOT NEW.patient_fk
  OR OLD.num_series IS NOT NEW.num_series
  OR OLD.study_date IS NOT NEW.study_date
  OR OLD.accession_number IS NOT NEW.accession_number
  OR OLD.study_description IS NOT NEW.study_description
  OR OLD.referring_physician_name IS NOT NEW.referring_physician_name
  OR OLD.modalities_in_study IS NOT NEW.modalities_in_study
BEGIN
    INSERT INTO search_outbox (study_uid, created_at)
    VALUES (NEW.study_instance_uid, CAST(strftime('%s', 'now') AS INTEGER));
END;

CREATE TRIGGER search_study_removed AFTER DELETE ON studies BEGIN
    INSERT INTO search_outbox (study_uid, created_at)
    VALUES (OLD.study_instance_uid, CAST(strftime('%s', 'now') AS INTEGER));
END;

CREATE TRIGGER search_series_added AFTER INSERT ON series BEGIN
    INSERT INTO search_outbox (study_uid, created_at)
    SELECT study_instance_uid, CAST(strftime('%s', 'now') AS INTEGER)
    FROM studies WHERE id = NEW.study_fk;
END;

CREATE TRIGGER search_patient_changed AFTER UPDATE ON patients
WHEN OLD.patient_id IS NOT NEW.patient_id
  OR OLD.patient_name IS NOT NEW.patient_name
  OR OLD.patient_birth_date IS NOT NEW.patient_birth_date
  OR OLD.patient_sex IS NOT NEW.patient_sex
  OR OLD.other_patient_ids IS NOT NEW.other_patient_ids
BEGIN
    INSERT INTO search_outbox (study_uid, created_at)
    SELECT study_instance_uid, CAST(strftime('%s', 'now') AS INTEGER)
    FROM studies WHERE patient_fk = NEW.id;
END;

CREATE TRIGGER search_report_added AFTER INSERT ON reports BEGIN
    INSERT INTO search_outbox (study_uid, created_at)
    SELECT study_instance_uid, CAST(strftime('%s', 'now') AS INTEGER) FROM studies
    WHERE study_instance_uid = NEW.study_instance_uid
       OR (NEW.accession_number <> '' AND accession_number = NEW.accession_number);
END;

CREATE TRIGGER search_report_changed AFTER UPDATE ON reports BEGIN
    INSERT INTO search_outbox (study_uid, created_at)
    SELECT study_instance_uid, CAST(strftime('%s', 'now') AS INTEGER) FROM studies
    WHERE study_instance_uid = NEW.study_instance_uid
       OR (NEW.accession_number <> '' AND accession_number = NEW.accession_number);
END;

CREATE TRIGGER search_worklist_added AFTER INSERT ON worklist_items BEGIN
    INSERT INTO search_outbox (study_uid, created_at)
    VALUES (NEW.study_instance_uid, CAST(strftime('%s', 'now') AS INTEGER));
END;

CREATE TRIGGER search_worklist_changed AFTER UPDATE ON worklist_items
WHEN OLD.status IS NOT NEW.status
BEGIN
    INSERT INTO search_outbox (study_uid, created_at)
    VALUES (NEW.study_instance_uid, CAST(strftime('%s', 'now') AS INTEGER));
END;

CREATE TRIGGER search_step_added AFTER INSERT ON performed_steps BEGIN
    INSERT INTO search_outbox (study_uid, created_at)
    VALUES (NEW.study_instance_uid, CAST(strftime('%s', 'now') AS INTEGER));
END;

CREATE TRIGGER search_step_changed AFTER UPDATE ON performed_steps
WHEN OLD.status IS NOT NEW.status
BEGIN
    INSERT INTO search_outbox (study_uid, created_at)
    VALUES (NEW.study_instance_uid, CAST(strftime('%s', 'now') AS INTEGER));
END;

-- Every study already stored gets its first document.
INSERT INTO search_outbox (study_uid, created_at)
SELECT study_instance_uid, CAST(strftime('%s', 'now') AS INTEGER) FROM studies;
