-- Where a series was made: the institution and the station, for the
-- full-text search ("Bach Mai", "CT2"). Series stored before are left
-- empty.
ALTER TABLE series ADD COLUMN institution_name TEXT NOT NULL DEFAULT '';
ALTER TABLE series ADD COLUMN station_name TEXT NOT NULL DEFAULT '';
