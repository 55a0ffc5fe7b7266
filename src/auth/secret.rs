//! Random secrets for session cookies, CSRF tokens and API tokens, and the
//! digest the index keeps in their place.

use sha2::{Digest, Sha256};

use super::AuthError;

/// `bytes` random bytes from the operating system, as lower-case hex.
pub fn random_hex(bytes: usize) -> Result<String, AuthError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(hex::encode(buf))
}

/// What the index stores for a secret. The secrets carry 256 random bits,
/// so a plain SHA-256 is enough; only passwords need a slow hash.
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compare secrets without leaking where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}
