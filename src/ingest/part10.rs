//! The Part-10 preamble and file meta group written in front of a data set
//! received over the network (PS3.10 7.1).

use dicom_object::meta::FileMetaTableBuilder;

use super::HeaderError;
use crate::model::{AeTitle, Uid};

/// Tessera's implementation class UID (UUID-derived 2.25 root).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.190748385416352795183411367203981126941";
pub const IMPLEMENTATION_VERSION_NAME: &str = concat!("TESSERA_", env!("CARGO_PKG_VERSION"));

pub fn header(
    sop_class: &Uid,
    sop_instance: &Uid,
    transfer_syntax: &Uid,
    source: &AeTitle,
) -> Result<Vec<u8>, HeaderError> {
    let table = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(sop_class.as_str())
        .media_storage_sop_instance_uid(sop_instance.as_str())
        .transfer_syntax(transfer_syntax.as_str())
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
        .source_application_entity_title(source.as_str())
        .build()
        .map_err(|e| HeaderError::Meta(e.to_string()))?;
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    table
        .write(&mut out)
        .map_err(|e| HeaderError::Meta(e.to_string()))?;
    Ok(out)
}
