//! `tessera verify`: re-hash every indexed object and cross-check the index
//! against storage. Missing or corrupt objects are failures. Unreferenced
//! objects are stores interrupted before they were acknowledged; they are
//! reported and can be pruned, but are not failures.

use std::collections::HashSet;

use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::index::{Index, IndexError, IndexedObject};
use crate::storage::{Storage, StorageError};

#[derive(Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    pub checked: u64,
    pub bytes: u64,
    pub missing: Vec<String>,
    pub corrupt: Vec<String>,
    pub unreferenced: Vec<String>,
    pub pruned: usize,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.corrupt.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What re-hashing one object found.
pub enum Check {
    Ok(u64),
    Missing,
    Corrupt(String),
}

/// Re-hash one indexed object and compare size and SHA-256.
pub async fn check(storage: &Storage, obj: &IndexedObject) -> Result<Check, StorageError> {
    let mut reader = match storage.open_read(&obj.key).await {
        Ok(r) => r,
        Err(StorageError::NotFound(_)) => return Ok(Check::Missing),
        Err(e) => return Err(e),
    };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = reader
            .read(&mut buf)
            .await
            .map_err(|e| StorageError::io(std::path::Path::new(&obj.key), e))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    let sha = hex::encode(hasher.finalize());
    if size != obj.size || sha != obj.sha256 {
        return Ok(Check::Corrupt(format!(
            "{} ({}): expected {} bytes sha256 {}, found {} bytes sha256 {}",
            obj.sop_instance_uid, obj.key, obj.size, obj.sha256, size, sha
        )));
    }
    Ok(Check::Ok(size))
}

pub async fn verify(
    index: &Index,
    storage: &Storage,
    prune: bool,
) -> Result<VerifyReport, VerifyError> {
    let mut report = VerifyReport::default();
    let mut referenced = HashSet::new();
    let mut checks = std::pin::pin!(index
        .objects()
        .map_ok(|obj| async move {
            let result = check(storage, &obj).await;
            Ok::<_, IndexError>((obj, result))
        })
        .try_buffer_unordered(4));
    while let Some((obj, result)) = checks.try_next().await? {
        report.checked += 1;
        match result? {
            Check::Ok(size) => report.bytes += size,
            Check::Missing => report
                .missing
                .push(format!("{} ({})", obj.sop_instance_uid, obj.key)),
            Check::Corrupt(detail) => report.corrupt.push(detail),
        }
        referenced.insert(obj.key);
    }
    let mut keys = storage.keys();
    while let Some(key) = keys.next().await {
        let key = key?;
        if !referenced.contains(&key) {
            report.unreferenced.push(key);
        }
    }
    drop(keys);
    if prune {
        for key in &report.unreferenced {
            storage.delete(key).await?;
            report.pruned += 1;
        }
    }
    Ok(report)
}
