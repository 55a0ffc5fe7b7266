//! The task that keeps the search index in step with SQL: it reads the
//! search outbox past its mark every half second, rebuilds the documents
//! of the studies named there, and commits them with the new mark. A new
//! index, one left mid-rebuild, or one whose mark fell behind the
//! outbox's retention is rebuilt from the studies table first.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{SearchError, SearchIndex};
use crate::index::{Backend, Index, IndexError};

const POLL: Duration = Duration::from_millis(500);
const BATCH: i64 = 5_000;
/// PostgreSQL identities can commit out of order: rows this young are
/// read again.
const LOOKBACK_SECS: i64 = 5;
/// Outbox rows are kept this long, for nodes that were down.
const RETENTION_SECS: i64 = 24 * 3600;
const PURGE_EVERY: Duration = Duration::from_secs(600);
const REBUILD_PAGE: i64 = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum IndexerError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Search(#[from] SearchError),
    #[error("the indexing task stopped: {0}")]
    Join(String),
}

async fn apply(
    search: &Arc<SearchIndex>,
    docs: Vec<crate::index::search::StudyDocument>,
    gone: Vec<String>,
    mark: Option<i64>,
) -> Result<(), IndexerError> {
    let search = search.clone();
    tokio::task::spawn_blocking(move || search.apply(&docs, &gone, mark))
        .await
        .map_err(|e| IndexerError::Join(e.to_string()))??;
    Ok(())
}

/// Index every study from scratch; `progress` hears (done, total).
pub async fn rebuild(
    index: &Index,
    search: &Arc<SearchIndex>,
    progress: impl Fn(u64, u64),
) -> Result<u64, IndexerError> {
    // Changes made during the rebuild are in the outbox past this mark.
    let (mark, _) = index.search_outbox_bounds().await?;
    let total = index.count_studies().await?.max(0) as u64;
    {
        let search = search.clone();
        tokio::task::spawn_blocking(move || search.clear())
            .await
            .map_err(|e| IndexerError::Join(e.to_string()))??;
    }
    let (mut after, mut done) = (0, 0u64);
    loop {
        let page = index.study_uids_page(after, REBUILD_PAGE).await?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = *last;
        let uids: Vec<String> = page.into_iter().map(|(_, uid)| uid).collect();
        let docs = index.search_documents(&uids).await?;
        done += docs.len() as u64;
        apply(search, docs, Vec::new(), None).await?;
        progress(done, total);
    }
    apply(search, Vec::new(), Vec::new(), Some(mark)).await?;
    Ok(done)
}

/// Bring the index up to the outbox once: documents of the studies named
/// after the mark. Returns how many outbox rows were read.
pub async fn catch_up(
    index: &Index,
    search: &Arc<SearchIndex>,
    mark: &mut i64,
) -> Result<usize, IndexerError> {
    let lookback = match index.backend() {
        Backend::Sqlite => 0,
        Backend::Postgres => LOOKBACK_SECS,
    };
    let rows = index.search_outbox_after(*mark, BATCH, lookback).await?;
    let Some(newest) = rows.iter().map(|(id, _)| *id).max() else {
        return Ok(0);
    };
    let uids: Vec<String> = rows
        .iter()
        .map(|(_, uid)| uid.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let docs = index.search_documents(&uids).await?;
    let present: BTreeSet<&str> = docs.iter().map(|d| d.study_uid.as_str()).collect();
    let gone: Vec<String> = uids
        .iter()
        .filter(|u| !present.contains(u.as_str()))
        .cloned()
        .collect();
    let next = newest.max(*mark);
    apply(search, docs, gone, Some(next)).await?;
    *mark = next;
    Ok(rows.len())
}

/// Follow the outbox until `shutdown`.
pub async fn run(index: Index, search: Arc<SearchIndex>, shutdown: CancellationToken) {
    let mut mark = loop {
        match start_mark(&index, &search).await {
            Ok(mark) => break mark,
            Err(e) => {
                tracing::error!(error = %e, "search index cannot start; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    };
    let mut last_purge = tokio::time::Instant::now();
    loop {
        match catch_up(&index, &search, &mut mark).await {
            // A full batch: more is waiting.
            Ok(n) if n as i64 >= BATCH => continue,
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "search index update failed; retrying"),
        }
        if last_purge.elapsed() >= PURGE_EVERY {
            last_purge = tokio::time::Instant::now();
            let before = crate::index::unix_now() - RETENTION_SECS;
            if let Err(e) = index.purge_search_outbox(before).await {
                tracing::warn!(error = %e, "cannot purge the search outbox");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// The mark to go on from, after a rebuild when the index cannot go on.
async fn start_mark(index: &Index, search: &Arc<SearchIndex>) -> Result<i64, IndexerError> {
    let (_, oldest) = index.search_outbox_bounds().await?;
    match search.mark()? {
        // Rows past the mark may have been purged only when the mark is
        // older than the outbox keeps rows.
        Some((mark, at))
            if oldest <= mark + 1 || crate::index::unix_now() - at < RETENTION_SECS - 3600 =>
        {
            return Ok(mark)
        }
        Some((mark, _)) => tracing::warn!(mark, oldest, "search index fell behind; rebuilding it"),
        None => tracing::info!("building the search index"),
    }
    let started = std::time::Instant::now();
    let done = rebuild(index, search, |_, _| {}).await?;
    tracing::info!(
        studies = done,
        seconds = started.elapsed().as_secs_f64(),
        "search index built"
    );
    Ok(search.mark()?.map_or(0, |(mark, _)| mark))
}
