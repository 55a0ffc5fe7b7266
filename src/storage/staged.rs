//! Objects acknowledged from the ingest journal but not yet written to
//! their places: reads are served from memory in the meantime. Identical
//! content staged twice is counted, so the first placement does not hide
//! it from the second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

#[derive(Debug, Clone, Default)]
pub(super) struct Staged(Arc<Mutex<HashMap<String, (Bytes, usize)>>>);

impl Staged {
    pub(super) fn insert(&self, key: &str, bytes: Bytes) {
        if let Ok(mut map) = self.0.lock() {
            map.entry(key.to_owned()).or_insert((bytes, 0)).1 += 1;
        }
    }

    pub(super) fn remove(&self, key: &str) {
        if let Ok(mut map) = self.0.lock() {
            if let Some(entry) = map.get_mut(key) {
                entry.1 -= 1;
                if entry.1 == 0 {
                    map.remove(key);
                }
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub(super) fn get(&self, key: &str) -> Option<Bytes> {
        self.0.lock().ok()?.get(key).map(|(b, _)| b.clone())
    }
}

/// `length` bytes from `offset`, cut short at the end of the object.
pub(super) fn slice(bytes: &Bytes, offset: u64, length: u64) -> Bytes {
    let start = (offset.min(bytes.len() as u64)) as usize;
    let end = (offset.saturating_add(length).min(bytes.len() as u64)) as usize;
    bytes.slice(start..end)
}
