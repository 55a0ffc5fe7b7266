-- What DICOMweb serves without opening objects: the DICOM JSON metadata
-- document of each instance (built at ingest) and where its frames lie.

CREATE TABLE instance_documents (
    instance_fk     INTEGER PRIMARY KEY REFERENCES instances (id),
    -- NULL when the document could not be built; it is then built on request.
    metadata        TEXT,
    -- Native Pixel Data: value offset and length in the object, bytes per frame.
    pixel_offset    INTEGER,
    pixel_length    INTEGER,
    frame_length    INTEGER,
    encapsulated    INTEGER NOT NULL DEFAULT 0
);

-- Encapsulated Pixel Data: the byte range of each frame's fragment items.
CREATE TABLE instance_frames (
    instance_fk     INTEGER NOT NULL REFERENCES instances (id),
    frame_number    INTEGER NOT NULL,
    byte_offset     INTEGER NOT NULL,
    byte_length     INTEGER NOT NULL,
    PRIMARY KEY (instance_fk, frame_number)
);
CREATE INDEX instances_series_number ON instances (series_fk, instance_number);

-- Series date and time, which viewers show in series lists.
ALTER TABLE series ADD COLUMN series_date TEXT NOT NULL DEFAULT '';
ALTER TABLE series ADD COLUMN series_time TEXT NOT NULL DEFAULT '';
