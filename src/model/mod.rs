//! Leaf types shared by every layer: validated identifiers and the record an
//! instance leaves in the index. Nothing here does I/O.

mod bounded;
mod charset;
mod dates;
mod ids;
mod instance;
mod peer;
mod text;
mod user;

pub use bounded::{
    check_structure, length_fits_vr, read_dataset, without_panic, DEFLATED_SYNTAXES,
    MAX_DEPTH as MAX_SEQUENCE_DEPTH,
};
pub use charset::{decode_text, fold_for_matching, transliterate, ANSWER_CHARSETS};
pub use dates::{derived_uid, time_bound, valid_date};
pub use ids::{AeTitle, IdError, Uid};
pub use instance::{InstanceMeta, PatientMeta, PixelLayout, SeriesMeta, StoredObject, StudyMeta};
pub use peer::{Peer, PeerError, PeerService, RawPeer};
pub use text::{character_set_of, needs_redecoding, redecode_top_level};
pub use user::{ApiToken, Role, Roles, Session, StudyShare, UnknownRole, User};
