//! The attributes Tessera can match and return, with their level and how
//! their values compare.

use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;

use super::Level;

/// How values of an attribute are matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Uid,
    Date,
    Time,
    DateTime,
    /// Person names: case- and diacritic-insensitive.
    Name,
    /// Free text (LO, SH): exact or wildcard, case-sensitive.
    Text,
    /// Code strings (CS).
    Code,
    /// IS/US numbers: exact match.
    Number,
    /// Multi-valued code lists matched by "any of" (ModalitiesInStudy).
    List,
    /// Counters computed by the archive: return keys only.
    Count,
}

macro_rules! attributes {
    ($($name:ident => $tag:expr, $vr:ident, $level:ident, $kind:ident;)*) => {
        /// An attribute held in the index.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Attribute { $($name),* }

        impl Attribute {
            pub const ALL: &'static [Attribute] = &[$(Attribute::$name),*];

            pub fn tag(self) -> Tag {
                match self { $(Attribute::$name => $tag),* }
            }

            pub fn vr(self) -> VR {
                match self { $(Attribute::$name => VR::$vr),* }
            }

            /// The level whose entity holds the value.
            pub fn level(self) -> Level {
                match self { $(Attribute::$name => Level::$level),* }
            }

            /// The variant's name, for messages (close to the DICOM keyword).
            pub fn keyword(self) -> &'static str {
                match self { $(Attribute::$name => stringify!($name)),* }
            }

            pub fn kind(self) -> ValueKind {
                match self { $(Attribute::$name => ValueKind::$kind),* }
            }

            fn from_any_tag(tag: Tag) -> Option<Self> {
                match tag {
                    $(t if t == $tag => Some(Attribute::$name),)*
                    _ => None,
                }
            }
        }
    };
}

attributes! {
    PatientName => tags::PATIENT_NAME, PN, Patient, Name;
    PatientId => tags::PATIENT_ID, LO, Patient, Text;
    IssuerOfPatientId => tags::ISSUER_OF_PATIENT_ID, LO, Patient, Text;
    PatientBirthDate => tags::PATIENT_BIRTH_DATE, DA, Patient, Date;
    PatientSex => tags::PATIENT_SEX, CS, Patient, Code;
    NumberOfPatientRelatedStudies => tags::NUMBER_OF_PATIENT_RELATED_STUDIES, IS, Patient, Count;
    NumberOfPatientRelatedSeries => tags::NUMBER_OF_PATIENT_RELATED_SERIES, IS, Patient, Count;
    NumberOfPatientRelatedInstances => tags::NUMBER_OF_PATIENT_RELATED_INSTANCES, IS, Patient, Count;
    StudyInstanceUid => tags::STUDY_INSTANCE_UID, UI, Study, Uid;
    StudyDate => tags::STUDY_DATE, DA, Study, Date;
    StudyTime => tags::STUDY_TIME, TM, Study, Time;
    AccessionNumber => tags::ACCESSION_NUMBER, SH, Study, Text;
    StudyId => tags::STUDY_ID, SH, Study, Text;
    StudyDescription => tags::STUDY_DESCRIPTION, LO, Study, Text;
    ReferringPhysicianName => tags::REFERRING_PHYSICIAN_NAME, PN, Study, Name;
    ModalitiesInStudy => tags::MODALITIES_IN_STUDY, CS, Study, List;
    TimezoneOffsetFromUtc => tags::TIMEZONE_OFFSET_FROM_UTC, SH, Study, Text;
    NumberOfStudyRelatedSeries => tags::NUMBER_OF_STUDY_RELATED_SERIES, IS, Study, Count;
    NumberOfStudyRelatedInstances => tags::NUMBER_OF_STUDY_RELATED_INSTANCES, IS, Study, Count;
    SeriesInstanceUid => tags::SERIES_INSTANCE_UID, UI, Series, Uid;
    Modality => tags::MODALITY, CS, Series, Code;
    SeriesNumber => tags::SERIES_NUMBER, IS, Series, Number;
    SeriesDescription => tags::SERIES_DESCRIPTION, LO, Series, Text;
    SeriesDate => tags::SERIES_DATE, DA, Series, Date;
    SeriesTime => tags::SERIES_TIME, TM, Series, Time;
    BodyPartExamined => tags::BODY_PART_EXAMINED, CS, Series, Code;
    PerformedProcedureStepStartDate => tags::PERFORMED_PROCEDURE_STEP_START_DATE, DA, Series, Date;
    PerformedProcedureStepStartTime => tags::PERFORMED_PROCEDURE_STEP_START_TIME, TM, Series, Time;
    NumberOfSeriesRelatedInstances => tags::NUMBER_OF_SERIES_RELATED_INSTANCES, IS, Series, Count;
    ScheduledProcedureStepId => tags::SCHEDULED_PROCEDURE_STEP_ID, SH, Series, Text;
    RequestedProcedureId => tags::REQUESTED_PROCEDURE_ID, SH, Series, Text;
    SopInstanceUid => tags::SOP_INSTANCE_UID, UI, Image, Uid;
    SopClassUid => tags::SOP_CLASS_UID, UI, Image, Uid;
    InstanceNumber => tags::INSTANCE_NUMBER, IS, Image, Number;
    Rows => tags::ROWS, US, Image, Number;
    Columns => tags::COLUMNS, US, Image, Number;
    NumberOfFrames => tags::NUMBER_OF_FRAMES, IS, Image, Number;
    BitsAllocated => tags::BITS_ALLOCATED, US, Image, Number;
    ContentDate => tags::CONTENT_DATE, DA, Image, Date;
    ContentTime => tags::CONTENT_TIME, TM, Image, Time;
    AvailableTransferSyntaxUid => tags::AVAILABLE_TRANSFER_SYNTAX_UID, UI, Image, Uid;
}

/// Sequences whose (first) item the index holds, with the attributes kept
/// from it.
const SEQUENCES: &[(Tag, &[Attribute])] = &[(
    tags::REQUEST_ATTRIBUTES_SEQUENCE,
    &[
        Attribute::ScheduledProcedureStepId,
        Attribute::RequestedProcedureId,
    ],
)];

impl Attribute {
    /// A top-level attribute by tag.
    pub fn from_tag(tag: Tag) -> Option<Self> {
        Self::from_any_tag(tag).filter(|a| a.sequence().is_none())
    }

    /// An attribute inside the item of sequence `sequence`.
    pub fn in_sequence(sequence: Tag, tag: Tag) -> Option<Self> {
        Self::from_any_tag(tag).filter(|a| a.sequence() == Some(sequence))
    }

    /// The sequence this attribute sits in, for item attributes.
    pub fn sequence(self) -> Option<Tag> {
        SEQUENCES
            .iter()
            .find(|(_, members)| members.contains(&self))
            .map(|(seq, _)| *seq)
    }

    /// The item attributes the index holds for `sequence` (empty when it
    /// holds none).
    pub fn members_of(sequence: Tag) -> &'static [Attribute] {
        SEQUENCES
            .iter()
            .find(|(seq, _)| *seq == sequence)
            .map_or(&[], |(_, members)| members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        for a in Attribute::ALL {
            match a.sequence() {
                None => assert_eq!(Attribute::from_tag(a.tag()), Some(*a)),
                Some(seq) => {
                    assert_eq!(Attribute::from_tag(a.tag()), None);
                    assert_eq!(Attribute::in_sequence(seq, a.tag()), Some(*a));
                    assert!(Attribute::members_of(seq).contains(a));
                }
            }
        }
        assert_eq!(Attribute::from_tag(Tag(0x0009, 0x0010)), None);
    }
}
