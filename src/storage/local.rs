//! Local-directory backend: RAID/DAS disks, NAS mounts (NFS, SMB) and iSCSI
//! volumes all look like a directory here. Durability comes from
//! fsync(file) → rename → fsync(directory); the spool lives inside the root
//! so the rename never crosses file systems.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::Stream;

use super::direct::DirectWriter;
use super::{Found, ObjectReader, Spooled, StorageError};

#[derive(Debug, Clone)]
pub(super) struct LocalStore {
    root: PathBuf,
    fsync: bool,
    /// Shared by every placement; placements run one group at a time.
    direct: Arc<Mutex<DirectWriter>>,
}

impl LocalStore {
    pub(super) fn new(root: PathBuf, fsync: bool) -> Self {
        LocalStore {
            root,
            fsync,
            direct: Arc::default(),
        }
    }

    pub(super) fn root(&self) -> &Path {
        &self.root
    }

    pub(super) fn syncs(&self) -> bool {
        self.fsync
    }

    pub(super) async fn create_root(&self) -> Result<(), StorageError> {
        tokio::fs::create_dir_all(&self.root)
            .await
            .map_err(|e| StorageError::io(&self.root, e))
    }

    /// fsync(file) → create fan-out dirs → rename → fsync(dir), all in one
    /// blocking task: one thread hop per object instead of one per call.
    /// When the object is already there it is synced as it stands and the
    /// spool handed back (see [`super::Storage::commit`]).
    pub(super) async fn commit(
        &self,
        spooled: Spooled,
        key: &str,
    ) -> Result<Option<Spooled>, StorageError> {
        let target = self.root.join(key);
        let root = self.root.clone();
        let fsync = self.fsync;
        tokio::task::spawn_blocking(move || {
            if sync_existing(&target, fsync)? {
                return Ok(Some(spooled));
            }
            let (source, file) = spooled.into_std();
            let written = (|| {
                if fsync {
                    file.sync_data().map_err(|e| StorageError::io(&source, e))?;
                }
                drop(file);
                let parent = target.parent().unwrap_or(&root).to_owned();
                ensure_dir(&root, &parent, fsync)?;
                // A concurrent writer of the same content may rename first;
                // the second rename replaces identical bytes, and each writer
                // syncs the directory before it acknowledges.
                std::fs::rename(&source, &target).map_err(|e| StorageError::io(&target, e))?;
                if fsync {
                    sync_dir(&parent)?;
                }
                Ok(None)
            })();
            if written.is_err() {
                let _ = std::fs::remove_file(&source);
            }
            written
        })
        .await
        .unwrap_or_else(|e| Err(StorageError::io(&self.root, std::io::Error::other(e))))
    }

    /// Write each object not yet whole in its place through a spool file
    /// and a rename, then sync the whole file system once: one journal
    /// commit covers every file, every new directory entry and every rename.
    pub(super) async fn place(
        &self,
        objects: Vec<(String, bytes::Bytes)>,
        spool_dir: PathBuf,
        found: Found,
    ) -> Result<(), StorageError> {
        let root = self.root.clone();
        let fsync = self.fsync;
        let direct = self.direct.clone();
        tokio::task::spawn_blocking(move || {
            let mut direct = direct
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for (n, (key, bytes)) in objects.iter().enumerate() {
                let target = root.join(key);
                if already_placed(&target, bytes, found)? {
                    continue;
                }
                let tmp = spool_dir.join(format!("{}-place-{n}.part", std::process::id()));
                let written = (|| {
                    if !direct.write_new(&tmp, bytes)? {
                        std::fs::write(&tmp, bytes)?;
                    }
                    let parent = target.parent().unwrap_or(&root);
                    std::fs::create_dir_all(parent)?;
                    std::fs::rename(&tmp, &target)
                })();
                if let Err(e) = written {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(StorageError::io(&target, e));
                }
            }
            drop(direct);
            if fsync {
                let dir = std::fs::File::open(&root).map_err(|e| StorageError::io(&root, e))?;
                rustix::fs::syncfs(&dir).map_err(|e| StorageError::io(&root, e.into()))?;
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|e| Err(StorageError::io(&self.root, std::io::Error::other(e))))
    }

    pub(super) async fn modified(
        &self,
        key: &str,
    ) -> Result<Option<std::time::SystemTime>, StorageError> {
        let path = self.root.join(key);
        match tokio::fs::metadata(&path).await {
            Ok(m) => Ok(Some(m.modified().map_err(|e| StorageError::io(&path, e))?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io(&path, e)),
        }
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

    pub(super) async fn open_range(
        &self,
        key: &str,
        offset: u64,
        length: u64,
    ) -> Result<ObjectReader, StorageError> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let path = self.root.join(key);
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StorageError::NotFound(key.to_owned()))
            }
            Err(e) => return Err(StorageError::io(&path, e)),
        };
        file.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|e| StorageError::io(&path, e))?;
        Ok(Box::pin(file.take(length)))
    }

    pub(super) async fn read_range(
        &self,
        key: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, StorageError> {
        let path = self.root.join(key);
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Seek, SeekFrom};
            let mut file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(StorageError::NotFound(key))
                }
                Err(e) => return Err(StorageError::io(&path, e)),
            };
            file.seek(SeekFrom::Start(offset))
                .map_err(|e| StorageError::io(&path, e))?;
            let mut bytes = Vec::with_capacity(length as usize);
            file.take(length)
                .read_to_end(&mut bytes)
                .map_err(|e| StorageError::io(&path, e))?;
            if (bytes.len() as u64) < length {
                return Err(StorageError::io(
                    &path,
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "object is shorter than indexed",
                    ),
                ));
            }
            Ok(bytes)
        })
        .await
        .map_err(|e| {
            StorageError::io(std::path::Path::new("read_range"), std::io::Error::other(e))
        })?
    }

    pub(super) async fn read_small(
        &self,
        key: &str,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let path = self.root.join(key);
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(StorageError::NotFound(key))
                }
                Err(e) => return Err(StorageError::io(&path, e)),
            };
            let len = file
                .metadata()
                .map_err(|e| StorageError::io(&path, e))?
                .len();
            if len > limit {
                return Ok(None);
            }
            let mut bytes = Vec::with_capacity(len as usize);
            file.take(limit)
                .read_to_end(&mut bytes)
                .map_err(|e| StorageError::io(&path, e))?;
            Ok(Some(bytes))
        })
        .await
        .map_err(|e| StorageError::io(&self.root, std::io::Error::other(e)))?
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

/// Create the fan-out directories, fsyncing each new entry's parent so the
/// directory itself survives a crash.
fn ensure_dir(root: &Path, dir: &Path, fsync: bool) -> Result<(), StorageError> {
    if dir.exists() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut cur = dir;
    while cur != root && !cur.exists() {
        missing.push(cur.to_owned());
        match cur.parent() {
            Some(p) => cur = p,
            None => break,
        }
    }
    for d in missing.iter().rev() {
        match std::fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(StorageError::io(d, e)),
        }
        if fsync {
            sync_dir(d.parent().unwrap_or(root))?;
        }
    }
    Ok(())
}

/// Whether `target` exists; if so, fsync it and its directory, since the
/// writer that created it may not have reached its own fsyncs yet and an
/// acknowledgement must not rest on bytes still in the page cache.
/// Whether `target` already holds `bytes`, as far as `found` checks.
fn already_placed(target: &Path, bytes: &[u8], found: Found) -> Result<bool, StorageError> {
    let len = match std::fs::metadata(target) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(StorageError::io(target, e)),
    };
    if len != bytes.len() as u64 {
        return Ok(false);
    }
    Ok(match found {
        Found::SameLength => true,
        Found::SameBytes => {
            std::fs::read(target).map_err(|e| StorageError::io(target, e))? == bytes
        }
    })
}

fn sync_existing(target: &Path, fsync: bool) -> Result<bool, StorageError> {
    let file = match std::fs::File::open(target) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(StorageError::io(target, e)),
    };
    if fsync {
        file.sync_data().map_err(|e| StorageError::io(target, e))?;
        if let Some(parent) = target.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(true)
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    let f = std::fs::File::open(dir).map_err(|e| StorageError::io(dir, e))?;
    f.sync_all().map_err(|e| StorageError::io(dir, e))
}
