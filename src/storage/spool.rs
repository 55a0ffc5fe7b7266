//! Spool files: an object being received, hashed as it is written. A spool
//! file that is dropped before commit is deleted, so an aborted association
//! leaves nothing behind.
//!
//! A spool file that will be synced and renamed into place is written
//! around the page cache (see [`super::direct`]): its whole blocks reach
//! the disk while the object arrives, so the sync before the
//! acknowledgement has only the last batch left to wait for, not the whole
//! object's writeback, and no page-cache page is filled on the way.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::direct::{self, AlignedBuf, BLOCK};
use super::StorageError;

static NEXT_SPOOL_ID: AtomicU64 = AtomicU64::new(0);

/// Removes the spool file unless disarmed by a successful commit.
#[derive(Debug)]
struct DeleteOnDrop(Option<PathBuf>);

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            // Runs on error paths only; an unlink is cheap enough inline.
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Received chunks are queued without copying and handed to the blocking
/// pool in batches of about this size: one thread hop per batch instead of
/// one per network PDU.
const BATCH_BYTES: usize = 1024 * 1024;

/// What the writing side owns between batches.
#[derive(Debug)]
struct Sink {
    file: std::fs::File,
    /// Bytes written so far.
    offset: u64,
    /// Direct I/O: the batch is copied here, its whole blocks written, and
    /// the partial block at its end kept for the next batch.
    direct: Option<AlignedBuf>,
    carry: Vec<u8>,
}

impl Sink {
    /// Write `batch`; with direct I/O, all but the partial block at its end.
    fn write(&mut self, batch: &[Bytes]) -> std::io::Result<()> {
        let Some(buf) = self.direct.as_mut() else {
            for chunk in batch {
                self.file.write_all_at(chunk, self.offset)?;
                self.offset += chunk.len() as u64;
            }
            return Ok(());
        };
        let total = self.carry.len() + batch.iter().map(Bytes::len).sum::<usize>();
        let whole = total - total % BLOCK;
        let blocks = buf.slice(total);
        let mut at = self.carry.len();
        blocks[..at].copy_from_slice(&self.carry);
        for chunk in batch {
            blocks[at..at + chunk.len()].copy_from_slice(chunk);
            at += chunk.len();
        }
        match self.file.write_all_at(&blocks[..whole], self.offset) {
            Ok(()) => {
                self.offset += whole as u64;
                self.carry.clear();
                self.carry.extend_from_slice(&blocks[whole..total]);
                Ok(())
            }
            // Opened for direct I/O, refused at the first write (some
            // network file systems): the rest goes through the page cache.
            Err(e) if direct::refuses_direct(&e) && self.offset == 0 => {
                let all = blocks[..total].to_vec();
                self.buffered()?;
                self.file.write_all_at(&all, self.offset)?;
                self.offset += total as u64;
                self.carry.clear();
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Write the partial block left at the end, through the page cache:
    /// padding it and truncating the file would make the file system read
    /// that block back.
    fn close(&mut self) -> std::io::Result<()> {
        if self.direct.is_some() {
            self.buffered()?;
        }
        let carry = std::mem::take(&mut self.carry);
        self.file.write_all_at(&carry, self.offset)?;
        self.offset += carry.len() as u64;
        Ok(())
    }

    fn buffered(&mut self) -> std::io::Result<()> {
        rustix::fs::fcntl_setfl(&self.file, rustix::fs::OFlags::empty())?;
        self.direct = None;
        Ok(())
    }
}

fn hash(mut hasher: Sha256, batch: &[Bytes]) -> Sha256 {
    for chunk in batch {
        hasher.update(chunk);
    }
    hasher
}

/// A batch being written and, beside it, hashed; `hash` is `None` for
/// bytes the caller hashed already.
#[derive(Debug)]
struct InFlight {
    write: tokio::task::JoinHandle<(Sink, std::io::Result<()>)>,
    hash: Option<tokio::task::JoinHandle<Sha256>>,
}

/// Streams bytes to a spool file while hashing them. One batch is written
/// in the background while the next is received, and hashed on another
/// thread while it is written: SHA-256 and a direct write (which waits for
/// the disk) take about as long each, and in turn they held a whole-slide
/// image to half the rate of either.
#[derive(Debug)]
pub struct SpoolWriter {
    /// The sink and hasher when idle; while a batch is in flight they
    /// travel with it.
    sink: Option<Sink>,
    hasher: Option<Sha256>,
    in_flight: Option<InFlight>,
    queued: Vec<Bytes>,
    queued_bytes: usize,
    size: u64,
    guard: DeleteOnDrop,
}

impl SpoolWriter {
    /// A new spool file in `dir`; `direct` when it is to be synced into
    /// place (where the file system takes direct I/O).
    pub(super) async fn create(dir: &Path, direct: bool) -> Result<Self, StorageError> {
        let id = NEXT_SPOOL_ID.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{}-{id}.part", std::process::id()));
        let open_path = path.clone();
        let (file, direct) = tokio::task::spawn_blocking(move || {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            if direct {
                direct::open(&options, &open_path)
            } else {
                options.open(&open_path).map(|file| (file, false))
            }
        })
        .await
        .map_err(|e| StorageError::io(&path, std::io::Error::other(e)))?
        .map_err(|e| StorageError::io(&path, e))?;
        Ok(SpoolWriter {
            sink: Some(Sink {
                file,
                offset: 0,
                direct: direct.then(AlignedBuf::default),
                carry: Vec::new(),
            }),
            hasher: Some(Sha256::new()),
            in_flight: None,
            queued: Vec::new(),
            queued_bytes: 0,
            size: 0,
            guard: DeleteOnDrop(Some(path)),
        })
    }

    /// Queue a chunk; it is written once a batch is full or at
    /// [`Self::finish`].
    pub async fn write(&mut self, chunk: Vec<u8>) -> Result<(), StorageError> {
        self.size += chunk.len() as u64;
        self.queued_bytes += chunk.len();
        self.queued.push(Bytes::from(chunk));
        if self.queued_bytes >= BATCH_BYTES {
            self.start_batch().await?;
        }
        Ok(())
    }

    /// Begin the file with bytes the caller has hashed already (an object
    /// that outgrew memory): they are written, not hashed a second time,
    /// and `hasher`, which has seen exactly them, goes on with the rest.
    pub async fn write_hashed(&mut self, head: Bytes, hasher: Sha256) -> Result<(), StorageError> {
        if self.size != 0 || self.in_flight.is_some() {
            return Err(StorageError::io(
                self.path(),
                std::io::Error::other("hashed bytes must begin the spool file"),
            ));
        }
        let (mut sink, _) = self.take_sides()?;
        self.hasher = Some(hasher);
        self.size = head.len() as u64;
        self.in_flight = Some(InFlight {
            hash: None,
            write: tokio::task::spawn_blocking(move || {
                let result = sink.write(&[head]);
                (sink, result)
            }),
        });
        Ok(())
    }

    /// Wait for the batch in flight, if any, and take sink and hasher back.
    async fn settle(&mut self) -> Result<(), StorageError> {
        if let Some(InFlight { write, hash }) = self.in_flight.take() {
            let path = self.path().to_owned();
            let failed = |e| StorageError::io(&path, std::io::Error::other(e));
            if let Some(hash) = hash {
                self.hasher = Some(hash.await.map_err(failed)?);
            }
            let (sink, result) = write.await.map_err(failed)?;
            result.map_err(|e| StorageError::io(&path, e))?;
            self.sink = Some(sink);
        }
        Ok(())
    }

    /// The sink and hasher, unless an earlier batch failed.
    fn take_sides(&mut self) -> Result<(Sink, Sha256), StorageError> {
        match (self.sink.take(), self.hasher.take()) {
            (Some(sink), Some(hasher)) => Ok((sink, hasher)),
            _ => Err(StorageError::io(
                self.path(),
                std::io::Error::other("earlier write failed"),
            )),
        }
    }

    /// Write and hash the queued chunks, each on a blocking thread.
    async fn start_batch(&mut self) -> Result<(), StorageError> {
        self.settle().await?;
        let batch = Arc::new(std::mem::take(&mut self.queued));
        self.queued_bytes = 0;
        let (mut sink, hasher) = self.take_sides()?;
        let hashed = Arc::clone(&batch);
        self.in_flight = Some(InFlight {
            hash: Some(tokio::task::spawn_blocking(move || hash(hasher, &hashed))),
            write: tokio::task::spawn_blocking(move || {
                let result = sink.write(&batch);
                (sink, result)
            }),
        });
        Ok(())
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    fn path(&self) -> &Path {
        self.guard.0.as_deref().unwrap_or(Path::new(""))
    }

    /// Write what is queued; the file stays owned by the returned
    /// [`Spooled`] and is still deleted if that is dropped.
    pub async fn finish(mut self) -> Result<Spooled, StorageError> {
        self.settle().await?;
        let path = self.path().to_owned();
        let (mut sink, hasher) = self.take_sides()?;
        let batch = std::mem::take(&mut self.queued);
        // Under a batch: hashed and written in turn, one hop.
        let (sink, hasher) = tokio::task::spawn_blocking(move || {
            let hasher = hash(hasher, &batch);
            sink.write(&batch)?;
            sink.close().map(|()| (sink, hasher))
        })
        .await
        .map_err(|e| StorageError::io(&path, std::io::Error::other(e)))?
        .map_err(|e| StorageError::io(&path, e))?;
        Ok(Spooled {
            file: sink.file,
            size: self.size,
            sha256: hex::encode(hasher.finalize()),
            guard: self.guard,
        })
    }
}

/// A complete spool file with its size and hash, ready to be parsed and
/// committed.
#[derive(Debug)]
pub struct Spooled {
    file: std::fs::File,
    pub size: u64,
    pub sha256: String,
    guard: DeleteOnDrop,
}

impl Spooled {
    pub fn path(&self) -> &Path {
        self.guard.0.as_deref().unwrap_or(Path::new(""))
    }

    /// Hand path and file over to the backend, which now owns clean-up.
    pub(super) fn into_std(mut self) -> (PathBuf, std::fs::File) {
        let path = self.guard.0.take().unwrap_or_default();
        (path, self.file)
    }
}

/// This node's name for its spool folder: the host name, reduced to
/// characters safe in a path.
pub(super) fn node_name() -> String {
    let raw = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(64)
        .collect();
    if name.is_empty() || name.starts_with('.') {
        "node".to_owned()
    } else {
        name
    }
}

pub(super) async fn create_dir(dir: &Path) -> Result<(), StorageError> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| StorageError::io(dir, e))
}

/// Remove anything a crash left in the spool directory.
pub(super) async fn clear_dir(dir: &Path) -> Result<(), StorageError> {
    let mut entries = tokio::fs::read_dir(dir)
        .await
        .map_err(|e| StorageError::io(dir, e))?;
    let mut removed = 0usize;
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(|e| StorageError::io(dir, e))?
    {
        if entry.file_name().to_string_lossy().ends_with(".part") {
            tokio::fs::remove_file(entry.path())
                .await
                .map_err(|e| StorageError::io(&entry.path(), e))?;
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(removed, dir = %dir.display(), "removed incomplete objects from spool");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 4099) as u8).collect()
    }

    async fn spool(dir: &Path, direct: bool, bytes: &[u8], chunk: usize) -> Spooled {
        let mut writer = SpoolWriter::create(dir, direct).await.unwrap();
        for piece in bytes.chunks(chunk.max(1)) {
            writer.write(piece.to_vec()).await.unwrap();
        }
        writer.finish().await.unwrap()
    }

    /// `spooled` holds `bytes`, with their length and hash.
    fn assert_whole(spooled: &Spooled, bytes: &[u8], what: &str) {
        assert_eq!(spooled.size, bytes.len() as u64, "{what}");
        assert_eq!(spooled.sha256, hex::encode(Sha256::digest(bytes)), "{what}");
        assert!(std::fs::read(spooled.path()).unwrap() == bytes, "{what}");
    }

    #[tokio::test]
    async fn spooled_objects_come_back_whole_either_way() {
        let dir = tempfile::tempdir().unwrap();
        for direct in [false, true] {
            for len in [0, 1, 4095, 4096, 4097, (1 << 20) + 5, (3 << 20) + 4097] {
                for chunk in [1000, 65536, 300_001] {
                    let bytes = object(len);
                    let spooled = spool(dir.path(), direct, &bytes, chunk).await;
                    let what = format!("direct {direct}, length {len}, chunks of {chunk}");
                    assert_whole(&spooled, &bytes, &what);
                }
            }
        }
    }

    #[tokio::test]
    async fn an_object_begun_in_memory_comes_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        for direct in [false, true] {
            for (len, head) in [(5000, 4097), ((4 << 20) + 77, 4 << 20), (4097, 4097)] {
                let bytes = object(len);
                let mut writer = SpoolWriter::create(dir.path(), direct).await.unwrap();
                let hasher = Sha256::new_with_prefix(&bytes[..head]);
                writer
                    .write_hashed(Bytes::copy_from_slice(&bytes[..head]), hasher)
                    .await
                    .unwrap();
                for piece in bytes[head..].chunks(65536) {
                    writer.write(piece.to_vec()).await.unwrap();
                }
                let spooled = writer.finish().await.unwrap();
                let what = format!("direct {direct}, length {len}, head {head}");
                assert_whole(&spooled, &bytes, &what);
            }
        }
    }

    #[tokio::test]
    async fn bytes_hashed_in_memory_are_not_hashed_again() {
        // The hash is whatever the caller's hasher makes of the head: the
        // writer only carries it on. A writer that hashed the head again
        // would answer the hash of the head twice over.
        let dir = tempfile::tempdir().unwrap();
        let bytes = object(100_000);
        let mut writer = SpoolWriter::create(dir.path(), false).await.unwrap();
        let hasher = Sha256::new_with_prefix(&bytes[..60_000]);
        writer
            .write_hashed(Bytes::copy_from_slice(&bytes[..60_000]), hasher)
            .await
            .unwrap();
        writer.write(bytes[60_000..].to_vec()).await.unwrap();
        let spooled = writer.finish().await.unwrap();
        assert_eq!(spooled.sha256, hex::encode(Sha256::digest(&bytes)));
        // Only at the start of the file.
        let mut late = SpoolWriter::create(dir.path(), false).await.unwrap();
        late.write(vec![1, 2, 3]).await.unwrap();
        assert!(late
            .write_hashed(Bytes::from_static(b"x"), Sha256::new())
            .await
            .is_err());
    }

    /// Pages of `file` held in the page cache.
    fn resident_pages(file: &std::fs::File, len: usize) -> usize {
        use std::os::fd::AsRawFd;
        let page = 4096;
        let pages = len.div_ceil(page);
        let mut vec = vec![0u8; pages];
        // SAFETY: a fresh read-only shared mapping of `len` bytes of an open
        // file, only passed to mincore and unmapped before returning.
        unsafe {
            let map = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            assert_ne!(map, libc::MAP_FAILED);
            assert_eq!(libc::mincore(map, len, vec.as_mut_ptr()), 0);
            libc::munmap(map, len);
        }
        vec.iter().filter(|&&v| v & 1 == 1).count()
    }

    #[tokio::test]
    async fn a_spool_to_be_synced_reaches_the_disk_around_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let len = (3 << 20) + 100;
        let bytes = object(len);
        let writer = SpoolWriter::create(dir.path(), true).await.unwrap();
        assert!(
            writer.sink.as_ref().is_some_and(|s| s.direct.is_some()),
            "the test folder's file system refuses direct I/O"
        );
        drop(writer);
        let direct = spool(dir.path(), true, &bytes, 64 * 1024).await;
        // Only the partial block at the end went through the page cache.
        let file = std::fs::File::open(direct.path()).unwrap();
        assert!(resident_pages(&file, len) <= 1);
        // The same object spooled the usual way is all in the page cache:
        // what the assertion above would see without direct I/O.
        let buffered = spool(dir.path(), false, &bytes, 64 * 1024).await;
        let file = std::fs::File::open(buffered.path()).unwrap();
        assert_eq!(resident_pages(&file, len), len.div_ceil(4096));
    }
}
