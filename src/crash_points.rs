//! Deliberate crashes at named points of the ingest path and the search
//! indexer, for the recovery tests. `TESSERA_CRASH_AT=name:n` aborts the process the n-th time `name`
//! is reached: nothing is flushed or cleaned up, as with kill -9.
//! `name:n:ms` first holds the thread that reached it for `ms`
//! milliseconds, while the rest of the server goes on. Unset, a point costs
//! one check of a value read once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Point, passage, milliseconds to hold first.
static PLAN: OnceLock<Option<(String, u64, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

/// The points, in the order an instance passes them.
pub const POINTS: &[&str] = &[
    "journal-written",
    "journal-synced",
    "index-committed",
    "placing",
    "placed",
    "marked",
    "segment-advanced",
];

/// Points of the search indexer: documents added but not committed, and
/// committed with their outbox mark.
pub const SEARCH_POINTS: &[&str] = &["search-added", "search-committed"];

pub fn reach(name: &str) {
    let plan = PLAN.get_or_init(|| {
        let value = std::env::var("TESSERA_CRASH_AT").ok()?;
        let mut parts = value.split(':');
        let point = parts.next()?.to_owned();
        let at = parts.next().and_then(|n| n.parse().ok()).unwrap_or(1);
        let hold = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        Some((point, at, hold))
    });
    if let Some((point, at, hold)) = plan {
        if point == name && HITS.fetch_add(1, Ordering::Relaxed) + 1 >= *at {
            std::thread::sleep(std::time::Duration::from_millis(*hold));
            eprintln!("crash point {name} reached");
            std::process::abort();
        }
    }
}
