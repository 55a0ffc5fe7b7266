//! Password rules and argon2id hashing. Hashing and verifying take tens of
//! milliseconds of CPU on purpose: callers run them on the blocking pool.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Why a password was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    #[error("a password needs at least {MIN_LEN} characters")]
    TooShort,
    #[error("a password is at most {MAX_LEN} bytes")]
    TooLong,
    #[error("a password needs an upper-case letter, a lower-case letter, a digit and a special character")]
    Weak,
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

pub const MIN_LEN: usize = 8;
/// argon2 takes any length; a cap keeps one request from buying seconds of
/// CPU.
pub const MAX_LEN: usize = 256;

/// At least eight characters with an upper-case letter, a lower-case
/// letter, a digit and a special character.
pub fn check_rules(password: &str) -> Result<(), PasswordError> {
    if password.len() > MAX_LEN {
        return Err(PasswordError::TooLong);
    }
    if password.chars().count() < MIN_LEN {
        return Err(PasswordError::TooShort);
    }
    let upper = password.chars().any(char::is_uppercase);
    let lower = password.chars().any(char::is_lowercase);
    let digit = password.chars().any(|c| c.is_ascii_digit());
    let special = password
        .chars()
        .any(|c| !c.is_alphanumeric() && !c.is_whitespace());
    if upper && lower && digit && special {
        Ok(())
    } else {
        Err(PasswordError::Weak)
    }
}

/// An argon2id PHC string (the crate's defaults: 19 MiB, 2 passes).
pub fn hash(password: &str) -> Result<String, PasswordError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches the stored PHC string. A malformed stored
/// hash matches nothing.
pub fn verify(stored: &str, password: &str) -> bool {
    if password.len() > MAX_LEN {
        return false;
    }
    PasswordHash::new(stored).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert_eq!(check_rules("Sh0rt!"), Err(PasswordError::TooShort));
        assert_eq!(check_rules("alllowercase1!"), Err(PasswordError::Weak));
        assert_eq!(check_rules("ALLUPPERCASE1!"), Err(PasswordError::Weak));
        assert_eq!(check_rules("NoDigitsHere!"), Err(PasswordError::Weak));
        assert_eq!(check_rules("NoSpecial123"), Err(PasswordError::Weak));
        assert_eq!(
            check_rules(&"Aa1!".repeat(100)),
            Err(PasswordError::TooLong)
        );
        assert_eq!(check_rules("Corr3ct-horse"), Ok(()));
        assert_eq!(check_rules("Łódź#2024x"), Ok(()));
    }

    #[test]
    fn hash_round_trip() {
        let stored = hash("Corr3ct-horse").expect("hash");
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(verify(&stored, "Corr3ct-horse"));
        assert!(!verify(&stored, "corr3ct-horse"));
        assert!(!verify("not a hash", "Corr3ct-horse"));
    }
}
