//! Local-directory backend: RAID/DAS disks, NAS mounts (NFS, SMB) and iSCSI
//! volumes all look like a directory here. Durability comes from
//! fsync(file) → rename → fsync(directory); the spool lives inside the root
//! so the rename never crosses file systems.

use std::path::{Path, PathBuf};
use std::pin::Pin;

use futures::Stream;

use super::{ObjectReader, Spooled, StorageError};

#[derive(Debug, Clone)]
pub(super) struct LocalStore {
    root: PathBuf,
    fsync: bool,
}

impl LocalStore {
    pub(super) fn new(root: PathBuf, fsync: bool) -> Self {
        LocalStore { root, fsync }
    }

    pub(super) fn root(&self) -> &Path {
        &self.root
    }

    pub(super) async fn create_root(&self) -> Result<(), StorageError> {
        tokio::fs::create_dir_all(&self.root)
            .await
            .map_err(|e| StorageError::io(&self.root, e))
    }

    pub(super) async fn commit(&self, spooled: Spooled, key: &str) -> Result<(), StorageError> {
        let target = self.root.join(key);
        if tokio::fs::try_exists(&target).await.unwrap_or(false) {
            // Same hash, same bytes: already durable. Dropping the spool
            // file deletes it.
            return Ok(());
        }
        let parent = target.parent().unwrap_or(&self.root).to_owned();
        self.ensure_dir(&parent).await?;
        let source = spooled.into_path();
        if let Err(e) = tokio::fs::rename(&source, &target).await {
            let _ = tokio::fs::remove_file(&source).await;
            return Err(StorageError::io(&target, e));
        }
        if self.fsync {
            sync_dir(&parent).await?;
        }
        Ok(())
    }

    /// Create the fan-out directories, fsyncing each new entry's parent so
    /// the directory itself survives a crash.
    async fn ensure_dir(&self, dir: &Path) -> Result<(), StorageError> {
        if tokio::fs::try_exists(dir).await.unwrap_or(false) {
            return Ok(());
        }
        let mut missing = Vec::new();
        let mut cur = dir;
        while cur != self.root && !tokio::fs::try_exists(cur).await.unwrap_or(false) {
            missing.push(cur.to_owned());
            match cur.parent() {
                Some(p) => cur = p,
                None => break,
            }
        }
        for d in missing.iter().rev() {
            match tokio::fs::create_dir(d).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(StorageError::io(d, e)),
            }
            if self.fsync {
                sync_dir(d.parent().unwrap_or(&self.root)).await?;
            }
        }
        Ok(())
    }

    pub(super) async fn open_read(&self, key: &str) -> Result<ObjectReader, StorageError> {
        let path = self.root.join(key);
        match tokio::fs::File::open(&path).await {
            Ok(f) => Ok(Box::pin(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StorageError::NotFound(key.to_owned()))
            }
            Err(e) => Err(StorageError::io(&path, e)),
        }
    }

    pub(super) async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.root.join(key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io(&path, e)),
        }
    }

    pub(super) fn keys(
        &self,
    ) -> Pin<Box<dyn Stream<Item = Result<String, StorageError>> + Send + '_>> {
        let root = self.root.clone();
        Box::pin(async_walk(root))
    }
}

/// Walk `root/aa/bb/*.dcm` lazily, one directory at a time.
fn async_walk(root: PathBuf) -> impl Stream<Item = Result<String, StorageError>> + Send {
    futures::stream::unfold(
        (vec![(root.clone(), 0usize)], Vec::<String>::new()),
        move |(mut dirs, mut ready)| {
            let root = root.clone();
            async move {
                loop {
                    if let Some(key) = ready.pop() {
                        return Some((Ok(key), (dirs, ready)));
                    }
                    let (dir, depth) = dirs.pop()?;
                    let mut entries = match tokio::fs::read_dir(&dir).await {
                        Ok(e) => e,
                        Err(e) => return Some((Err(StorageError::io(&dir, e)), (dirs, ready))),
                    };
                    loop {
                        match entries.next_entry().await {
                            Ok(Some(entry)) => {
                                let name = entry.file_name().to_string_lossy().into_owned();
                                if depth < 2 && name.len() == 2 {
                                    dirs.push((entry.path(), depth + 1));
                                } else if depth == 2 && name.ends_with(".dcm") {
                                    if let Ok(rel) = entry.path().strip_prefix(&root) {
                                        let key = rel.to_string_lossy().into_owned();
                                        // Only our own objects; foreign files are left alone.
                                        if super::check_key(&key).is_ok() {
                                            ready.push(key);
                                        }
                                    }
                                }
                            }
                            Ok(None) => break,
                            Err(e) => return Some((Err(StorageError::io(&dir, e)), (dirs, ready))),
                        }
                    }
                }
            }
        },
    )
}

async fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    let f = tokio::fs::File::open(dir)
        .await
        .map_err(|e| StorageError::io(dir, e))?;
    f.sync_all().await.map_err(|e| StorageError::io(dir, e))
}
