//! Opening the ingest journal at server start, and finishing what a crash
//! interrupted: every record after the index's mark has its rows redone
//! (a power cut may have taken commits that were not synced), and every
//! record whose object the index references is put in place. Only then is
//! the journal emptied and the server allowed to accept stores.

use bytes::Bytes;

use super::journal::{Journal, Recovered};
use super::{examine, request_for, stored_object, IngestError, JournalSetup};
use crate::config::DuplicatePolicy;
use crate::index::{Durability, Index};
use crate::routing::Router;
use crate::storage::{Found, Storage, StorageError};

/// Open this node's journal, replay it, and hand it over ready to append.
pub async fn open_journal(
    storage: &Storage,
    index: &Index,
    router: &Router,
    policy: DuplicatePolicy,
    fsync: bool,
) -> Result<JournalSetup, IngestError> {
    let dir = journal_dir(storage);
    let io_err = |e: std::io::Error| IngestError::Storage(StorageError::io(&dir, e));
    let (mut journal, recovered) = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || Journal::open(&dir, fsync))
            .await
            .map_err(|e| io_err(std::io::Error::other(e)))?
            .map_err(io_err)?
    };
    let node = storage.node().to_owned();
    let mark = index.journal_mark(&node).await?;
    let last = recovered.last().map(|r| r.position);
    if !recovered.is_empty() {
        let (redone, placed) = replay(storage, index, router, policy, recovered, mark).await?;
        tracing::info!(redone, placed, "recovered the ingest journal");
    }
    let after = match last {
        Some(last) => {
            index.mark_journal(&node, (last.sequence, last.end)).await?;
            last.sequence.max(mark.0)
        }
        None => mark.0,
    };
    let journal = tokio::task::spawn_blocking(move || journal.reset(after).map(|()| journal))
        .await
        .map_err(|e| io_err(std::io::Error::other(e)))?
        .map_err(io_err)?;
    Ok(JournalSetup {
        journal,
        storage: storage.clone(),
        node,
    })
}

/// Where this node's journal lives: beside its spool, on the same disk.
pub fn journal_dir(storage: &Storage) -> std::path::PathBuf {
    storage.spool_dir().join("journal")
}

async fn replay(
    storage: &Storage,
    index: &Index,
    router: &Router,
    policy: DuplicatePolicy,
    recovered: Vec<Recovered>,
    mark: (u64, u64),
) -> Result<(usize, usize), IngestError> {
    let mut redone = 0;
    let mut referenced = Vec::new();
    for record in recovered {
        let bytes = Bytes::from(record.bytes);
        let position = (record.position.sequence, record.position.end);
        let sha256 = record.sha256;
        let (parsed, document) = match examine(bytes.clone(), super::Walked::Nothing).await {
            Ok(walked) => walked,
            Err(e) => {
                // It was walked once before it was journaled.
                tracing::error!(error = %e, "journal record no longer parses; skipped");
                continue;
            }
        };
        let object = stored_object(&sha256, bytes.len() as u64, &parsed);
        let key = object.key.clone();
        if position > mark {
            let request = request_for(router, parsed, document, object, record.source, true);
            index
                .record_batch(&[request], policy, Durability::Journaled)
                .await?;
            redone += 1;
        }
        if index.references_object(&key).await? {
            referenced.push((key, bytes));
        }
    }
    let placed = referenced.len();
    // The objects of the last placement may have been renamed into place
    // and lost their bytes with the power: only the same bytes will do.
    storage.place(referenced, Found::SameBytes).await?;
    Ok((redone, placed))
}
