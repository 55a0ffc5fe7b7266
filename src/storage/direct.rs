//! Writing around the page cache (`O_DIRECT`), for files that are written
//! once and seldom read soon after: placed objects and the ingest journal.
//! Filling a fresh page-cache page costs more than the copy into it: on a
//! virtual machine whose host reclaims free guest memory, the first touch
//! of each page is a fault to the host (measured here: 6–12 µs per 4 KiB
//! page, some 1 ms for a 0.5 MB CT slice), and the kernel's writeback of
//! the page is more CPU again. A direct write sends the bytes to the disk
//! from one reused, block-aligned buffer instead.
//!
//! File systems that refuse direct I/O (tmpfs on older kernels, some
//! network mounts) answer `EINVAL`; writes then go through the page cache,
//! with the same results on disk.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Direct I/O wants the buffer, the offset and the length aligned to the
/// device's logical block; 4 KiB covers every block size in use.
pub(crate) const BLOCK: usize = 4096;

/// A reusable buffer whose slices start on a block boundary. It grows to
/// the largest length asked for and stays mapped: memory touched once
/// costs no more page faults.
#[derive(Debug, Default)]
pub(crate) struct AlignedBuf(Vec<u8>);

impl AlignedBuf {
    /// A block-aligned slice of `len` bytes. Its start holds what the last
    /// slice held, as far as that reached; growing keeps it.
    pub(crate) fn slice(&mut self, len: usize) -> &mut [u8] {
        let held = self.0.len().saturating_sub(BLOCK);
        if self.0.len() < len + BLOCK {
            let mut grown = vec![0; len.max(2 * held) + BLOCK];
            let from = self.0.as_ptr().align_offset(BLOCK);
            let to = grown.as_ptr().align_offset(BLOCK);
            if held > 0 {
                grown[to..to + held].copy_from_slice(&self.0[from..from + held]);
            }
            self.0 = grown;
        }
        let start = self.0.as_ptr().align_offset(BLOCK);
        &mut self.0[start..start + len]
    }

    /// Give the memory back, where it was only needed once.
    pub(crate) fn clear(&mut self) {
        self.0 = Vec::new();
    }
}

/// Make room for `additional` more bytes at the end of `buf`, whose bytes
/// from `start` on are an object being received. When `buf` must grow, the
/// object moves to a new allocation where it starts on a block boundary,
/// so that the journal and placement can write it from there without a
/// copy. Returns where the object now starts.
pub(crate) fn reserve_aligned(buf: &mut Vec<u8>, start: usize, additional: usize) -> usize {
    if buf.capacity() - buf.len() >= additional {
        return start;
    }
    let held = buf.len() - start;
    let mut grown: Vec<u8> = Vec::with_capacity((held + additional).max(2 * held) + BLOCK);
    let pad = grown.as_ptr().align_offset(BLOCK);
    grown.resize(pad, 0);
    grown.extend_from_slice(&buf[start..]);
    *buf = grown;
    pad
}

/// Open `path` with `options` for direct I/O where the file system takes
/// it, else as usual; the flag says which.
pub(crate) fn open(options: &OpenOptions, path: &Path) -> io::Result<(File, bool)> {
    let mut direct = options.clone();
    direct.custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32);
    match direct.open(path) {
        Ok(file) => Ok((file, true)),
        Err(e) if refuses_direct(&e) => match options.open(path) {
            // The refused open made the file before it refused the flag
            // (ramfs, FUSE): a `create_new` then finds it. It is ours,
            // since a file that was there already fails that open first.
            Err(again) if again.kind() == io::ErrorKind::AlreadyExists => {
                std::fs::remove_file(path)?;
                Ok((options.open(path)?, false))
            }
            opened => Ok((opened?, false)),
        },
        Err(e) => Err(e),
    }
}

pub(super) fn refuses_direct(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error())
}

/// Writes new object files: the whole blocks around the page cache, the
/// last partial block through it.
#[derive(Debug, Default)]
pub(super) struct DirectWriter {
    buf: AlignedBuf,
    refused: bool,
}

impl DirectWriter {
    /// Write `bytes` to a new file at `path`, replacing any file there.
    /// `Ok(false)` when the file system refuses direct I/O: nothing is left
    /// at `path`, and the caller writes it the usual way.
    pub(super) fn write_new(&mut self, path: &Path, bytes: &[u8]) -> io::Result<bool> {
        if self.refused {
            return Ok(false);
        }
        // Padding the last block and truncating the file would make ext4
        // read that block back from the disk.
        let whole = bytes.len() - bytes.len() % BLOCK;
        // An object received into a block-aligned buffer is written from
        // there; any other is copied into one first.
        let block: &[u8] = if bytes.as_ptr().align_offset(BLOCK) == 0 {
            &bytes[..whole]
        } else {
            let block = self.buf.slice(whole);
            block.copy_from_slice(&bytes[..whole]);
            block
        };

        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        let (mut file, direct) = open(&options, path)?;
        if !direct {
            drop(file);
            return self.refuse(path);
        }
        match file.write_all(block) {
            Ok(()) => {}
            Err(e) if refuses_direct(&e) => {
                drop(file);
                return self.refuse(path);
            }
            Err(e) => return Err(e),
        }
        if whole < bytes.len() {
            rustix::fs::fcntl_setfl(&file, rustix::fs::OFlags::empty())?;
            file.write_all(&bytes[whole..])?;
        }
        Ok(true)
    }

    fn refuse(&mut self, path: &Path) -> io::Result<bool> {
        tracing::info!(
            path = %path.display(),
            "the object store refuses direct I/O; objects are written through the page cache"
        );
        self.refused = true;
        self.buf.clear();
        match std::fs::remove_file(path) {
            Ok(()) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_of_every_length_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = DirectWriter::default();
        for len in [0, 1, 4095, 4096, 4097, 100_000, 525_262] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let path = dir.path().join(format!("{len}.dcm"));
            if writer.write_new(&path, &bytes).unwrap() {
                assert_eq!(std::fs::read(&path).unwrap(), bytes, "length {len}");
            } else {
                // Refused: the caller writes the file, so none may be left.
                assert!(writer.refused && !path.exists(), "length {len}");
            }
        }
    }

    #[test]
    fn objects_in_aligned_buffers_are_written_from_there() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = DirectWriter::default();
        for len in [1, 4096, 4097, 525_262] {
            let mut buf = Vec::new();
            let start = reserve_aligned(&mut buf, 0, len);
            buf.extend((0..len).map(|i| (i * 3 + len) as u8));
            let object = &buf[start..];
            assert_eq!(object.as_ptr().align_offset(BLOCK), 0);
            let path = dir.path().join(format!("{len}.dcm"));
            if writer.write_new(&path, object).unwrap() {
                assert_eq!(std::fs::read(&path).unwrap(), object, "length {len}");
            }
            // Nothing was copied into the writer's own buffer.
            assert!(writer.buf.0.is_empty(), "length {len}");
        }
    }

    #[test]
    fn growing_keeps_the_object_and_its_alignment() {
        let mut buf = b"abc".to_vec();
        let mut start = reserve_aligned(&mut buf, 1, 10_000);
        assert_eq!(&buf[start..], b"bc");
        buf.extend_from_slice(&[9; 10_000]);
        start = reserve_aligned(&mut buf, start, 100_000);
        assert_eq!(buf[start..].as_ptr().align_offset(BLOCK), 0);
        assert_eq!(buf.len() - start, 10_002);
        assert_eq!(&buf[start..start + 3], b"bc\x09");
        // Room that is there already moves nothing.
        let before = buf.as_ptr();
        assert_eq!(reserve_aligned(&mut buf, start, 10), start);
        assert_eq!(buf.as_ptr(), before);
    }

    #[test]
    fn slices_are_aligned_whatever_their_length() {
        let mut buf = AlignedBuf::default();
        for len in [0, 1, 5000, 3, 1 << 20] {
            let slice = buf.slice(len);
            assert_eq!(slice.len(), len);
            assert_eq!(slice.as_ptr().align_offset(BLOCK), 0);
        }
    }

    #[test]
    fn growing_keeps_what_the_slice_held() {
        let mut buf = AlignedBuf::default();
        let first: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        buf.slice(5000).copy_from_slice(&first);
        let grown = buf.slice(3 << 20);
        assert_eq!(&grown[..5000], &first[..]);
        assert_eq!(grown.as_ptr().align_offset(BLOCK), 0);
    }
}
