//! Validated identifiers. A raw `String` UID never crosses a module boundary.

use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("UID {0:?} is empty, longer than 64 characters or not digits and dots")]
    BadUid(String),
    #[error("AE title {0:?} must be 1 to 16 printable characters without backslash")]
    BadAeTitle(String),
}

/// A DICOM UID (PS3.5 9.1): digits and dots, at most 64 characters.
/// Trailing NUL padding and spaces are removed on construction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uid(String);

impl Uid {
    pub fn new(raw: &str) -> Result<Self, IdError> {
        let s = raw.trim_end_matches(['\0', ' ']).trim_start();
        let valid = !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && !s.starts_with('.')
            && !s.ends_with('.')
            && !s.contains("..");
        if valid {
            Ok(Uid(s.to_owned()))
        } else {
            Err(IdError::BadUid(raw.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A new UID under the `2.25` root (PS3.5 B.2): a 128-bit value from
    /// the clock, the process and a counter, hashed so that UIDs made on
    /// different nodes at the same instant still differ.
    pub fn generate() -> Self {
        use sha2::{Digest, Sha256};
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut hash = Sha256::new();
        hash.update(nanos.to_le_bytes());
        hash.update(std::process::id().to_le_bytes());
        hash.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        if let Ok(host) = std::env::var("HOSTNAME") {
            hash.update(host.as_bytes());
        }
        let digest = hash.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Uid(format!("2.25.{}", u128::from_le_bytes(bytes)))
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An application entity title: 1..=16 characters of the default repertoire,
/// no backslash or control characters, spaces trimmed at both ends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AeTitle(String);

impl AeTitle {
    pub fn new(raw: &str) -> Result<Self, IdError> {
        let s = raw.trim_matches(['\0', ' ']);
        let valid = !s.is_empty()
            && s.len() <= 16
            && s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'\\');
        if valid {
            Ok(AeTitle(s.to_owned()))
        } else {
            Err(IdError::BadAeTitle(raw.chars().take(40).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Stands in for a peer title that is not a valid AE title.
    pub fn placeholder() -> Self {
        AeTitle("UNKNOWN".to_owned())
    }
}

impl fmt::Display for AeTitle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_rules() {
        assert_eq!(
            Uid::new("1.2.840.10008.1.1\0").map(|u| u.0),
            Ok("1.2.840.10008.1.1".into())
        );
        for bad in ["", "1..2", ".1", "1.", "1.2.a", &"1".repeat(65)] {
            assert!(Uid::new(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn generated_uids_are_valid_and_distinct() {
        let a = Uid::generate();
        let b = Uid::generate();
        assert_ne!(a, b);
        for uid in [a, b] {
            assert!(uid.as_str().starts_with("2.25."));
            assert_eq!(Uid::new(uid.as_str()), Ok(uid.clone()));
        }
    }

    #[test]
    fn ae_title_rules() {
        assert_eq!(
            AeTitle::new(" STORESCU  ").map(|a| a.0),
            Ok("STORESCU".into())
        );
        for bad in ["", "   ", "A\\B", "SEVENTEEN_CHARS_X", "A\nB"] {
            assert!(AeTitle::new(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
