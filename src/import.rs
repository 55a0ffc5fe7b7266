//! `tessera import`: recursive import of Part-10 files and DICOMDIR folders
//! through the same ingest path as C-STORE. DICOMDIR files (recognised by
//! their Media Storage SOP Class, not their name) index a file set and are
//! not archived; the files they reference are found by the walk.

use std::path::{Path, PathBuf};

use futures::StreamExt;

use crate::ingest::{Ingest, IngestOutcome};

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImportSummary {
    pub files: usize,
    pub stored: usize,
    pub already_stored: usize,
    pub kept_existing: usize,
    pub replaced: usize,
    pub directory_records: usize,
    pub failed: Vec<(PathBuf, String)>,
    /// The studies that got or already had an imported instance, for the
    /// audit trail.
    pub studies: std::collections::BTreeSet<String>,
}

/// Every regular file below the given paths, in a stable order.
pub async fn collect_files(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack: Vec<PathBuf> = paths.iter().rev().cloned().collect();
    while let Some(path) = stack.pop() {
        let meta = tokio::fs::metadata(&path).await?;
        if meta.is_dir() {
            let mut entries = tokio::fs::read_dir(&path).await?;
            let mut children = Vec::new();
            while let Some(entry) = entries.next_entry().await? {
                children.push(entry.path());
            }
            children.sort();
            stack.extend(children.into_iter().rev());
        } else if meta.is_file() {
            files.push(path);
        }
    }
    Ok(files)
}

const MEDIA_STORAGE_DIRECTORY: &str = "1.2.840.10008.1.3.10";

/// A DICOMDIR (Media Storage Directory) file, whatever its name: it indexes
/// a file set and is not an instance to archive.
async fn is_dicomdir(path: &Path) -> bool {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let Ok(file) = std::fs::File::open(&path) else {
            return false;
        };
        let mut reader = std::io::BufReader::new(file);
        let mut preamble = [0u8; 128];
        if std::io::Read::read_exact(&mut reader, &mut preamble).is_err() {
            return false;
        }
        crate::ingest::read_meta(reader)
            .is_ok_and(|meta| meta.media_storage_sop_class_uid == MEDIA_STORAGE_DIRECTORY)
    })
    .await
    .unwrap_or(false)
}

/// Import `files`, `parallel` at a time; `progress` is called after each.
pub async fn import_files(
    ingest: &Ingest,
    files: Vec<PathBuf>,
    parallel: usize,
    progress: impl Fn(&Path, &Result<IngestOutcome, String>),
) -> ImportSummary {
    let mut summary = ImportSummary {
        files: files.len(),
        ..Default::default()
    };
    let mut results = futures::stream::iter(files)
        .map(|path| async move {
            if is_dicomdir(&path).await {
                return (path, None);
            }
            let result = ingest
                .import_file(&path, "IMPORT")
                .await
                .map_err(|e| e.to_string());
            (path, Some(result))
        })
        .buffer_unordered(parallel.max(1));
    while let Some((path, result)) = results.next().await {
        let Some(result) = result else {
            summary.directory_records += 1;
            continue;
        };
        let result = result.map(|(outcome, ids)| {
            summary
                .studies
                .insert(ids.study_instance_uid.as_str().to_owned());
            outcome
        });
        progress(&path, &result);
        match result {
            Ok(IngestOutcome::Stored) => summary.stored += 1,
            Ok(IngestOutcome::AlreadyStored) => summary.already_stored += 1,
            Ok(IngestOutcome::KeptExisting) => summary.kept_existing += 1,
            Ok(IngestOutcome::Replaced) => summary.replaced += 1,
            Err(e) => summary.failed.push((path, e)),
        }
    }
    summary
}
