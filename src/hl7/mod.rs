//! HL7 v2 messages: the syntax, not the meaning. Bytes in the character set
//! MSH-18 names become a [`Message`] of segments whose fields are read
//! through typed accessors, with escape sequences decoded; an
//! acknowledgement is written back in the sender's character set.
//!
//! Pure and synchronous: the MLLP listener ([`crate::mllp`]) frames the
//! bytes and [`crate::ris`] decides what a message means.

pub mod ack;
mod charset;
pub mod escape;
mod message;

pub use ack::{AckCode, ErrorCondition};
pub use charset::Charset;
pub use message::{Delimiters, Field, Message, Segment};

/// Why a message cannot be read. Each maps to an HL7 error code for the
/// ERR segment of the negative acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Hl7Error {
    #[error("the message does not start with an MSH segment")]
    NoHeader,
    #[error("MSH-1/MSH-2 do not hold a field separator and encoding characters")]
    BadDelimiters,
    #[error("unknown character set {0:?} in MSH-18")]
    UnknownCharset(String),
    #[error("byte {byte:#04x} at offset {offset} is not valid {charset}")]
    BadByte {
        byte: u8,
        offset: usize,
        charset: &'static str,
    },
    #[error("{0:?} cannot be written in {1}")]
    Unencodable(char, &'static str),
}

impl Hl7Error {
    /// The HL7 table 0357 code for an ERR segment.
    pub fn code(&self) -> u16 {
        match self {
            Hl7Error::NoHeader | Hl7Error::BadDelimiters => 100,
            Hl7Error::UnknownCharset(_) => 203,
            Hl7Error::BadByte { .. } | Hl7Error::Unencodable(..) => 102,
        }
    }
}
