//! The attributes an instance contributes to the index, grouped by the level
//! of the DICOM information model (PS3.4 C.6) they belong to.

use super::Uid;

/// Patient-level attributes. Text is already decoded to UTF-8.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatientMeta {
    pub patient_id: String,
    pub issuer_of_patient_id: String,
    pub patient_name: String,
    pub patient_birth_date: String,
    pub patient_sex: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StudyMeta {
    pub study_instance_uid: Uid,
    pub study_date: String,
    pub study_time: String,
    pub accession_number: String,
    pub study_id: String,
    pub study_description: String,
    pub referring_physician_name: String,
    pub timezone_offset_from_utc: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SeriesMeta {
    pub series_instance_uid: Uid,
    pub modality: String,
    pub series_number: Option<i64>,
    pub series_description: String,
    pub series_date: String,
    pub series_time: String,
    pub body_part_examined: String,
    pub performed_procedure_step_start_date: String,
    pub performed_procedure_step_start_time: String,
    /// From the first item of the Request Attributes Sequence.
    pub scheduled_procedure_step_id: String,
    pub requested_procedure_id: String,
    pub institution_name: String,
    pub station_name: String,
}

/// Everything the index needs about one received instance.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceMeta {
    pub patient: PatientMeta,
    pub study: StudyMeta,
    pub series: SeriesMeta,
    pub sop_instance_uid: Uid,
    pub sop_class_uid: Uid,
    pub instance_number: Option<i64>,
    pub number_of_frames: Option<i64>,
    pub rows: Option<i64>,
    pub columns: Option<i64>,
    pub bits_allocated: Option<i64>,
    /// The original Specific Character Set (0008,0005), kept for answering
    /// queries in the character set the data arrived in.
    pub specific_character_set: String,
    pub content_date: String,
    pub content_time: String,
}

/// Where and how an instance's bytes are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// Storage key; derived from the content hash, never from patient data.
    pub key: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the stored object's bytes.
    pub sha256: String,
    pub transfer_syntax_uid: Uid,
}

/// Where an instance's frames lie in its stored object, found by the header
/// walk so a single frame of a multi-gigabyte slide is one ranged read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PixelLayout {
    /// Native pixel data: frames are consecutive, `frame_len` bytes each,
    /// starting at `offset`.
    Native {
        offset: u64,
        length: u64,
        frame_len: u64,
    },
    /// Encapsulated pixel data: per frame, the byte range in the object that
    /// holds that frame's fragment items (headers included).
    Encapsulated { frames: Vec<(u64, u64)> },
}
