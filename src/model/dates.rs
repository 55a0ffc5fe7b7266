//! Calendar checks and derived identifiers that HL7 input and the
//! worklist API share.

use sha2::{Digest, Sha256};

/// Whether `digits` (YYYY, YYYYMM or YYYYMMDD) names a real date from
/// 1800 on.
pub fn valid_date(digits: &str) -> bool {
    if ![4, 6, 8].contains(&digits.len()) || !digits.chars().all(|c| c.is_ascii_digit()) {
        return false;
    }
    let num = |r: std::ops::Range<usize>| digits.get(r).and_then(|s| s.parse::<u32>().ok());
    let (Some(year), month, day) = (num(0..4), num(4..6).unwrap_or(1), num(6..8).unwrap_or(1))
    else {
        return false;
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    year >= 1800 && day >= 1 && day <= days
}

/// A DICOM TM (HH, HHMM or HHMMSS, any fraction dropped) as six digits
/// for comparison: the earliest time it covers, or with `upper` the latest
/// (so "10" as an upper bound takes in 10:59:59). `None` when it is no time.
pub fn time_bound(tm: &str, upper: bool) -> Option<String> {
    let whole = tm.trim().split('.').next().unwrap_or_default();
    if ![2, 4, 6].contains(&whole.len()) || !whole.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let part = |r: std::ops::Range<usize>| whole.get(r).and_then(|s| s.parse::<u32>().ok());
    let in_range = part(0..2).is_some_and(|h| h < 24)
        && part(2..4).is_none_or(|m| m < 60)
        && part(4..6).is_none_or(|s| s < 60);
    if !in_range {
        return None;
    }
    let fill = if upper { "5959" } else { "0000" };
    Some(format!("{whole}{}", &fill[..6 - whole.len()]))
}

/// A UID under 2.25 derived from `parts`: the same parts always give the
/// same UID, so an order sent again keeps its study.
pub fn derived_uid(parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    format!("2.25.{}", u128::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_uids() {
        assert!(valid_date("20240229") && !valid_date("20230229"));
        assert!(valid_date("1980") && valid_date("198002") && !valid_date("19801301"));
        assert!(!valid_date("2024-01-05") && !valid_date("17991231"));
        let uid = derived_uid(&["A", "B"]);
        assert_eq!(uid, derived_uid(&["A", "B"]));
        assert_ne!(uid, derived_uid(&["AB", ""]));
        assert!(uid.len() <= 64 && uid.starts_with("2.25."));
    }

    #[test]
    fn time_bounds_cover_their_precision() {
        assert_eq!(time_bound("08", false).as_deref(), Some("080000"));
        assert_eq!(time_bound("10", true).as_deref(), Some("105959"));
        assert_eq!(time_bound("0930", true).as_deref(), Some("093059"));
        assert_eq!(time_bound("093015.123", false).as_deref(), Some("093015"));
        assert_eq!(time_bound("2500", false), None);
        assert_eq!(time_bound("9:30", false), None);
        assert_eq!(time_bound("", false), None);
    }
}
