-- When the RIS last changed a patient's name, ID, birth date or sex, or
-- merged another patient into it: instances received before then are sent
-- with the patient as it is now (coercion on retrieve).
ALTER TABLE patients ADD COLUMN demographics_changed_at BIGINT NOT NULL DEFAULT 0;
