//! The ingest journal: received objects are appended to a ring of
//! preallocated, zero-filled segment files, and one `fdatasync` makes a
//! whole group durable, whatever the number of associations it came from.
//! Overwriting blocks that are already allocated changes no file-system
//! metadata, so that sync writes the data and nothing else: no inode, no
//! directory entry, no ext4 journal commit.
//!
//! Segments are written around the page cache (`O_DIRECT`, see
//! [`crate::storage::direct`]) from one reused buffer: no page-cache page
//! is filled, and none is left for the kernel to write back. Every record
//! starts on a 4 KiB block and is padded to the next, so every write covers
//! whole blocks. The fdatasync is still what makes a group durable: it
//! empties the disk's write cache.
//!
//! A segment starts with a 4 KiB header holding its sequence number; every
//! record repeats it. Reusing a segment writes a new number into its header,
//! so what an earlier use left behind never matches and reading stops there.
//! A record is `[magic, sequence, lengths, SHA-256 of the object, header
//! CRC]`, then the source (calling AE title or client) and the object.
//! Recovery checks the CRC and the object's hash; the first record that
//! fails is the torn tail of a write that was never acknowledged.
//!
//! A segment is handed back with [`Journal::release`] once every object in
//! it is in its place and the index rows are durable. Blocking; callers run
//! it on the blocking pool.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::storage::direct::{self, AlignedBuf, BLOCK};

/// Size of each segment file.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// Objects above this go to their place directly (fsync'd file) instead:
/// a journal sized for a multi-gigabyte object would sit mostly idle.
pub const MAX_RECORD: usize = 16 << 20;
/// Segments created at startup; more are added while every one holds
/// records not yet placed. Each is zero-filled once, when created.
const INITIAL_SEGMENTS: usize = 1;
const HEADER_BYTES: u64 = 4096;
const SEGMENT_MAGIC: &[u8; 8] = b"TSRJSEG2";
/// Segments written before records were aligned to blocks; still read at
/// recovery after an upgrade.
const SEGMENT_MAGIC_UNALIGNED: &[u8; 8] = b"TSRJSEG1";
/// Bytes copied into the staging buffer (record headers, last partial
/// blocks, objects not received into an aligned buffer) before a group's
/// records are written.
const STAGING_BYTES: usize = 8 << 20;
const RECORD_MAGIC: &[u8; 4] = b"TSR1";
/// Set in a record header's flags when the object starts on the block
/// after the header and source, so it can be written from an aligned
/// buffer as it is; records without it hold the object right after the
/// source.
const OBJECT_ON_BLOCK: u8 = 0x01;
/// Pieces of one vectored write, well under the kernel's IOV_MAX of 1024.
const MAX_PARTS: usize = 768;
/// magic 4, sequence 8, object length 4, source length 2, flags 1,
/// reserved 1, SHA-256 32, CRC32 of the preceding 52 bytes 4.
const RECORD_HEADER: usize = 56;

/// Where a record was written: the segment's sequence number and the end
/// of the record in it. Positions grow monotonically across segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub sequence: u64,
    pub end: u64,
}

/// One object to append.
pub struct Entry<'a> {
    pub source: &'a str,
    pub sha256: [u8; 32],
    pub bytes: &'a [u8],
}

/// A record read back at recovery.
#[derive(Debug)]
pub struct Recovered {
    pub position: Position,
    pub source: String,
    pub sha256: [u8; 32],
    pub bytes: Vec<u8>,
}

/// A piece of the records being written: a range of the staging buffer,
/// or whole blocks of an object, written from where the object is.
enum Part<'a> {
    Staged(std::ops::Range<usize>),
    Object(&'a [u8]),
}

struct Segment {
    file: File,
    sequence: u64,
    /// Records not yet released: placed and indexed durably.
    outstanding: usize,
}

/// Counts of outstanding records per segment sequence, shared with the
/// task that releases them so that a release never waits on a sync.
type Outstanding = Arc<Mutex<HashMap<u64, usize>>>;

/// The writer side of the journal.
pub struct Journal {
    dir: PathBuf,
    /// Records of the current group not yet written, from `staged_at` in
    /// the current segment; block-aligned for direct I/O.
    staging: AlignedBuf,
    staged: usize,
    staged_at: u64,
    segments: Vec<Segment>,
    current: usize,
    /// Write offset in the current segment.
    offset: u64,
    next_sequence: u64,
    fsync: bool,
    released: Outstanding,
}

/// Hands records back from any thread.
#[derive(Clone)]
pub struct Releaser(Outstanding);

impl Releaser {
    pub fn release(&self, position: Position) {
        if let Ok(mut map) = self.0.lock() {
            *map.entry(position.sequence).or_default() += 1;
        }
    }
}

impl Journal {
    /// Open (creating) the journal in `dir` and return what it holds, in
    /// the order it was written. The caller replays those records, then
    /// calls [`Journal::reset`] before appending.
    pub fn open(dir: &Path, fsync: bool) -> io::Result<(Journal, Vec<Recovered>)> {
        std::fs::create_dir_all(dir)?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let is_segment = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("segment-") && n.ends_with(".log"));
            if is_segment {
                found.push(path);
            }
        }
        found.sort();
        let mut segments = Vec::new();
        let mut recovered = Vec::new();
        for path in &found {
            let mut file = File::open(path)?;
            if file.metadata()?.len() < SEGMENT_BYTES {
                // Creation never finished, so nothing was ever written to it.
                drop(file);
                std::fs::remove_file(path)?;
                continue;
            }
            let header = read_segment_header(&mut file)?;
            if let Some((sequence, align)) = header {
                recovered.extend(read_records(&mut file, sequence, align)?);
            }
            let (file, _) = direct::open(OpenOptions::new().read(true).write(true), path)?;
            segments.push(Segment {
                file,
                sequence: header.map_or(0, |(sequence, _)| sequence),
                outstanding: 0,
            });
        }
        recovered.sort_by_key(|r| r.position);
        let next_sequence = segments.iter().map(|s| s.sequence).max().unwrap_or(0) + 1;
        let mut journal = Journal {
            dir: dir.to_owned(),
            staging: AlignedBuf::default(),
            staged: 0,
            staged_at: HEADER_BYTES,
            segments,
            current: 0,
            offset: HEADER_BYTES,
            next_sequence,
            fsync,
            released: Arc::default(),
        };
        while journal.segments.len() < INITIAL_SEGMENTS {
            journal.create_segment()?;
        }
        Ok((journal, recovered))
    }

    /// Forget every record: after recovery has replayed them all. New
    /// records are numbered above `after`, the last position the index
    /// knows, even if no segment header remembers it.
    pub fn reset(&mut self, after: u64) -> io::Result<()> {
        self.next_sequence = self.next_sequence.max(after + 1);
        for segment in &mut self.segments {
            segment.outstanding = 0;
            // Replayed already: a later recovery must not see them again.
            let block = self.staging.slice(BLOCK);
            block.fill(0);
            segment.file.write_all_at(block, 0)?;
            if self.fsync {
                segment.file.sync_data()?;
            }
        }
        if let Ok(mut map) = self.released.lock() {
            map.clear();
        }
        self.current = 0;
        self.start_segment(0)
    }

    pub fn releaser(&self) -> Releaser {
        Releaser(self.released.clone())
    }

    /// Append `entries` and make them durable with one sync. Returns each
    /// record's position.
    pub fn append(&mut self, entries: &[Entry<'_>]) -> io::Result<Vec<Position>> {
        self.collect_releases();
        let mut positions = Vec::with_capacity(entries.len());
        let written = self.write_entries(entries, &mut positions);
        if written.is_err() {
            // The next group writes over what was staged and not written,
            // so that no gap ends a later recovery early.
            self.offset = self.staged_at;
            self.staged = 0;
        }
        crate::crash_points::reach("journal-written");
        let written = written.and_then(|()| self.sync_current());
        if written.is_err() {
            // None of these is acknowledged: they hold no segment.
            for position in &positions {
                if let Some(s) = self
                    .segments
                    .iter_mut()
                    .find(|s| s.sequence == position.sequence)
                {
                    s.outstanding = s.outstanding.saturating_sub(1);
                }
            }
        }
        written.map(|()| positions)
    }

    fn write_entries(
        &mut self,
        entries: &[Entry<'_>],
        positions: &mut Vec<Position>,
    ) -> io::Result<()> {
        self.staged = 0;
        self.staged_at = self.offset;
        let mut parts = Vec::new();
        for entry in entries {
            if entry.bytes.len() > MAX_RECORD || entry.source.len() > u16::MAX as usize {
                return Err(io::Error::other("record too large for the journal"));
            }
            let head = (RECORD_HEADER + entry.source.len()).next_multiple_of(BLOCK);
            let size = head + entry.bytes.len().next_multiple_of(BLOCK);
            if self.offset + size as u64 > SEGMENT_BYTES {
                // The records written so far must be durable before the
                // next segment's header could make them look stale.
                self.write_parts(&mut parts)?;
                self.sync_current()?;
                self.advance()?;
                self.staged_at = self.offset;
            } else if !parts.is_empty()
                && (self.staged + size > STAGING_BYTES || parts.len() + 3 > MAX_PARTS)
            {
                self.write_parts(&mut parts)?;
            }
            let sequence = self.segments[self.current].sequence;
            let header = record_header(sequence, entry);
            let range = self.stage(head);
            let block = &mut self.staging.slice(self.staged)[range.clone()];
            block.fill(0);
            block[..RECORD_HEADER].copy_from_slice(&header);
            block[RECORD_HEADER..RECORD_HEADER + entry.source.len()]
                .copy_from_slice(entry.source.as_bytes());
            parts.push(Part::Staged(range));
            // An object received into a block-aligned buffer is written from
            // there; only its last partial block is copied, to be padded.
            let whole = if entry.bytes.as_ptr().align_offset(BLOCK) == 0 {
                entry.bytes.len() - entry.bytes.len() % BLOCK
            } else {
                0
            };
            if whole > 0 {
                parts.push(Part::Object(&entry.bytes[..whole]));
            }
            let rest = &entry.bytes[whole..];
            if !rest.is_empty() {
                let range = self.stage(rest.len().next_multiple_of(BLOCK));
                let block = &mut self.staging.slice(self.staged)[range.clone()];
                let (object, padding) = block.split_at_mut(rest.len());
                object.copy_from_slice(rest);
                padding.fill(0);
                parts.push(Part::Staged(range));
            }
            self.offset += size as u64;
            self.segments[self.current].outstanding += 1;
            positions.push(Position {
                sequence,
                end: self.offset,
            });
        }
        self.write_parts(&mut parts)
    }

    /// Room for `len` more bytes in the staging buffer.
    fn stage(&mut self, len: usize) -> std::ops::Range<usize> {
        let start = self.staged;
        self.staged += len;
        start..self.staged
    }

    /// Write `parts` to the current segment in one vectored write.
    fn write_parts(&mut self, parts: &mut Vec<Part<'_>>) -> io::Result<()> {
        if parts.is_empty() {
            return Ok(());
        }
        let staging: &[u8] = self.staging.slice(self.staged);
        let mut slices: Vec<IoSlice<'_>> = parts
            .iter()
            .map(|part| match part {
                Part::Staged(range) => IoSlice::new(&staging[range.clone()]),
                Part::Object(bytes) => IoSlice::new(bytes),
            })
            .collect();
        let mut remaining = &mut slices[..];
        let file = &self.segments[self.current].file;
        // On an error the next group writes again from `staged_at`.
        let mut at = self.staged_at;
        while !remaining.is_empty() {
            let n = rustix::io::pwritev(file, remaining, at)?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            at += n as u64;
            IoSlice::advance_slices(&mut remaining, n);
        }
        self.staged_at = at;
        self.staged = 0;
        parts.clear();
        Ok(())
    }

    fn sync_current(&self) -> io::Result<()> {
        if self.fsync {
            self.segments[self.current].file.sync_data()?;
        }
        Ok(())
    }

    /// Apply the releases reported since the last append.
    fn collect_releases(&mut self) {
        let Ok(mut map) = self.released.lock() else {
            return;
        };
        for segment in &mut self.segments {
            if let Some(n) = map.remove(&segment.sequence) {
                segment.outstanding = segment.outstanding.saturating_sub(n);
            }
        }
        map.clear();
    }

    /// Move to a segment with nothing outstanding, creating one when every
    /// segment still holds records that are not yet in place.
    fn advance(&mut self) -> io::Result<()> {
        self.collect_releases();
        let n = self.segments.len();
        let free = (1..n)
            .map(|k| (self.current + k) % n)
            .find(|&i| self.segments[i].outstanding == 0);
        let next = match free {
            Some(i) => i,
            None => {
                // Steady state is two or three; more means placement lags.
                tracing::info!(segments = n + 1, "adding a journal segment");
                self.create_segment()?
            }
        };
        self.current = next;
        self.start_segment(next)?;
        crate::crash_points::reach("segment-advanced");
        Ok(())
    }

    /// Give segment `i` a new sequence number; its old records turn stale.
    fn start_segment(&mut self, i: usize) -> io::Result<()> {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let segment = &mut self.segments[i];
        segment.sequence = sequence;
        segment.outstanding = 0;
        let block = self.staging.slice(BLOCK);
        block.fill(0);
        block[..20].copy_from_slice(&segment_header(sequence));
        segment.file.write_all_at(block, 0)?;
        // Durable with the first append's sync: until then no record in it
        // is acknowledged.
        self.offset = HEADER_BYTES;
        Ok(())
    }

    /// A zero-filled segment, synced with its directory entry, so later
    /// writes overwrite allocated blocks.
    fn create_segment(&mut self) -> io::Result<usize> {
        let index = self.segments.len();
        let name = format!("segment-{:04}.log", index);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.new"));
        let (file, _) = direct::open(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true),
            &tmp,
        )?;
        let zeros = self.staging.slice(1 << 20);
        zeros.fill(0);
        for k in 0..SEGMENT_BYTES / zeros.len() as u64 {
            file.write_all_at(zeros, k * zeros.len() as u64)?;
        }
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        File::open(&self.dir)?.sync_all()?;
        self.segments.push(Segment {
            file,
            sequence: 0,
            outstanding: 0,
        });
        Ok(index)
    }
}

fn segment_header(sequence: u64) -> Vec<u8> {
    let mut header = Vec::with_capacity(20);
    header.extend_from_slice(SEGMENT_MAGIC);
    header.extend_from_slice(&sequence.to_le_bytes());
    let crc = crc32fast::hash(&header);
    header.extend_from_slice(&crc.to_le_bytes());
    header
}

/// The segment's sequence number and the alignment of its records.
fn read_segment_header(file: &mut File) -> io::Result<Option<(u64, u64)>> {
    let mut header = [0u8; 20];
    file.read_exact_at(&mut header, 0)?;
    let align = match &header[..8] {
        magic if magic == SEGMENT_MAGIC => BLOCK as u64,
        magic if magic == SEGMENT_MAGIC_UNALIGNED => 1,
        _ => return Ok(None),
    };
    let crc = u32::from_le_bytes(header[16..20].try_into().unwrap_or_default());
    if crc != crc32fast::hash(&header[..16]) {
        return Ok(None);
    }
    let sequence = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
    Ok(Some((sequence, align)))
}

fn record_header(sequence: u64, entry: &Entry<'_>) -> [u8; RECORD_HEADER] {
    let mut h = [0u8; RECORD_HEADER];
    h[0..4].copy_from_slice(RECORD_MAGIC);
    h[4..12].copy_from_slice(&sequence.to_le_bytes());
    h[12..16].copy_from_slice(&(entry.bytes.len() as u32).to_le_bytes());
    h[16..18].copy_from_slice(&(entry.source.len() as u16).to_le_bytes());
    h[18] = OBJECT_ON_BLOCK;
    h[20..52].copy_from_slice(&entry.sha256);
    let crc = crc32fast::hash(&h[..52]);
    h[52..56].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The records of segment `sequence`, each starting on a multiple of
/// `align`, up to the first that is stale, torn or corrupt.
fn read_records(file: &mut File, sequence: u64, align: u64) -> io::Result<Vec<Recovered>> {
    let mut records = Vec::new();
    let mut offset = HEADER_BYTES;
    file.seek(SeekFrom::Start(offset))?;
    let mut reader = io::BufReader::with_capacity(1 << 20, file);
    loop {
        let mut h = [0u8; RECORD_HEADER];
        if offset + RECORD_HEADER as u64 > SEGMENT_BYTES || reader.read_exact(&mut h).is_err() {
            break;
        }
        let field = |range: std::ops::Range<usize>| h[range].to_vec();
        let crc = u32::from_le_bytes(h[52..56].try_into().unwrap_or_default());
        if &h[0..4] != RECORD_MAGIC
            || crc != crc32fast::hash(&h[..52])
            || field(4..12) != sequence.to_le_bytes()
        {
            break;
        }
        let len = u32::from_le_bytes(h[12..16].try_into().unwrap_or_default()) as usize;
        let source_len = u16::from_le_bytes(h[16..18].try_into().unwrap_or_default()) as usize;
        let after_source = (RECORD_HEADER + source_len) as u64;
        let gap = if h[18] & OBJECT_ON_BLOCK != 0 {
            after_source.next_multiple_of(BLOCK as u64) - after_source
        } else {
            0
        };
        let unpadded = offset + after_source + gap + len as u64;
        let end = unpadded.next_multiple_of(align);
        if len > MAX_RECORD || end > SEGMENT_BYTES {
            break;
        }
        let mut source = vec![0u8; source_len];
        let mut bytes = vec![0u8; len];
        if reader.read_exact(&mut source).is_err()
            || reader.seek_relative(gap as i64).is_err()
            || reader.read_exact(&mut bytes).is_err()
        {
            break;
        }
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(&h[20..52]);
        if Sha256::digest(&bytes).as_slice() != sha256
            || reader.seek_relative((end - unpadded) as i64).is_err()
        {
            break;
        }
        records.push(Recovered {
            position: Position { sequence, end },
            source: String::from_utf8_lossy(&source).into_owned(),
            sha256,
            bytes,
        });
        offset = end;
    }
    Ok(records)
}

/// The hashes of every object the journal in `dir` holds, read without
/// taking it over: for `tessera verify` beside a running server.
pub fn held_hashes(dir: &Path) -> io::Result<Vec<[u8; 32]>> {
    let mut hashes = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(hashes),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("log") {
            continue;
        }
        let mut file = File::open(&path)?;
        if file.metadata()?.len() < SEGMENT_BYTES {
            continue;
        }
        if let Some((sequence, align)) = read_segment_header(&mut file)? {
            hashes.extend(
                read_records(&mut file, sequence, align)?
                    .into_iter()
                    .map(|r| r.sha256),
            );
        }
    }
    Ok(hashes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(source: &'a str, bytes: &'a [u8]) -> Entry<'a> {
        Entry {
            source,
            sha256: Sha256::digest(bytes).into(),
            bytes,
        }
    }

    #[test]
    fn records_come_back_in_order_until_the_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut journal, recovered) = Journal::open(dir.path(), false).expect("open");
        assert!(recovered.is_empty());
        journal.reset(0).expect("reset");
        let a = vec![1u8; 1000];
        let b = vec![2u8; 3000];
        let positions = journal
            .append(&[entry("AE1", &a), entry("AE2", &b)])
            .expect("append");
        assert!(positions[0] < positions[1]);
        // A torn third record: its header is written, its object is not.
        let c = vec![3u8; 500];
        let header = record_header(positions[1].sequence, &entry("AE3", &c));
        OpenOptions::new()
            .write(true)
            .open(dir.path().join("segment-0000.log"))
            .and_then(|file| file.write_all_at(&header, positions[1].end))
            .expect("write");
        drop(journal);

        let (mut journal, recovered) = Journal::open(dir.path(), false).expect("reopen");
        let got: Vec<_> = recovered
            .iter()
            .map(|r| (r.source.as_str(), r.bytes.len()))
            .collect();
        assert_eq!(got, vec![("AE1", 1000), ("AE2", 3000)]);
        assert_eq!(held_hashes(dir.path()).expect("held").len(), 2);

        // After a reset the old records are stale, even where new records
        // have not overwritten them.
        journal.reset(0).expect("reset");
        journal.append(&[entry("AE4", &c)]).expect("append");
        drop(journal);
        let (_, recovered) = Journal::open(dir.path(), false).expect("reopen");
        let got: Vec<_> = recovered.iter().map(|r| r.source.as_str()).collect();
        assert_eq!(got, vec!["AE4"]);
    }

    /// A record header as written before objects started on a block.
    fn object_after_source(mut h: [u8; RECORD_HEADER]) -> [u8; RECORD_HEADER] {
        h[18] = 0;
        let crc = crc32fast::hash(&h[..52]);
        h[52..56].copy_from_slice(&crc.to_le_bytes());
        h
    }

    #[test]
    fn objects_in_aligned_buffers_come_back_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut journal, _) = Journal::open(dir.path(), false).expect("open");
        journal.reset(0).expect("reset");
        let objects: Vec<(Vec<u8>, usize)> = [4096, 5000, 3, 2 * 4096 + 1]
            .into_iter()
            .map(|len| {
                let mut buf = Vec::new();
                let start = direct::reserve_aligned(&mut buf, 0, len);
                buf.extend((0..len).map(|i| (i % 253) as u8));
                (buf, start)
            })
            .collect();
        let unaligned = vec![7u8; 6000];
        let mut entries: Vec<Entry<'_>> = objects
            .iter()
            .map(|(buf, start)| entry("ALIGNED", &buf[*start..]))
            .collect();
        entries.insert(2, entry("COPIED", &unaligned[1..]));
        assert!(entries
            .iter()
            .all(|e| e.bytes.as_ptr().align_offset(BLOCK) == 0 || e.source == "COPIED"));
        let positions = journal.append(&entries).expect("append");
        drop(journal);

        let (_, recovered) = Journal::open(dir.path(), false).expect("reopen");
        assert_eq!(recovered.len(), entries.len());
        for ((got, wrote), position) in recovered.iter().zip(&entries).zip(&positions) {
            assert_eq!(got.source, wrote.source);
            assert_eq!(got.bytes, wrote.bytes);
            assert_eq!(got.position, *position);
        }
    }

    #[test]
    fn records_written_before_objects_started_on_a_block_are_recovered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("segment-0000.log");
        let file = File::create(&path).expect("create");
        file.set_len(SEGMENT_BYTES).expect("size");
        file.write_all_at(&segment_header(9), 0).expect("header");
        let mut offset = HEADER_BYTES;
        for (source, bytes) in [("AE1", vec![1u8; 5000]), ("AE2", vec![2u8; 300])] {
            let record = entry(source, &bytes);
            let mut written = object_after_source(record_header(9, &record)).to_vec();
            written.extend_from_slice(source.as_bytes());
            written.extend_from_slice(&bytes);
            written.resize(written.len().next_multiple_of(BLOCK), 0);
            file.write_all_at(&written, offset).expect("record");
            offset += written.len() as u64;
        }
        drop(file);
        let (_, recovered) = Journal::open(dir.path(), false).expect("open");
        let got: Vec<_> = recovered
            .iter()
            .map(|r| (r.source.as_str(), r.bytes.clone(), r.position.end))
            .collect();
        assert_eq!(
            got,
            vec![
                ("AE1", vec![1u8; 5000], HEADER_BYTES + 8192),
                ("AE2", vec![2u8; 300], offset)
            ]
        );
    }

    #[test]
    fn records_of_a_segment_from_before_alignment_are_recovered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("segment-0000.log");
        let file = File::create(&path).expect("create");
        file.set_len(SEGMENT_BYTES).expect("size");
        let mut header = SEGMENT_MAGIC_UNALIGNED.to_vec();
        header.extend_from_slice(&7u64.to_le_bytes());
        header.extend_from_slice(&crc32fast::hash(&header).to_le_bytes());
        file.write_all_at(&header, 0).expect("header");
        let mut offset = HEADER_BYTES;
        for (source, bytes) in [("AE1", vec![1u8; 1000]), ("AE2", vec![2u8; 3000])] {
            let record = entry(source, &bytes);
            let mut written = object_after_source(record_header(7, &record)).to_vec();
            written.extend_from_slice(source.as_bytes());
            written.extend_from_slice(&bytes);
            file.write_all_at(&written, offset).expect("record");
            offset += written.len() as u64;
        }
        drop(file);

        let (mut journal, recovered) = Journal::open(dir.path(), false).expect("open");
        let got: Vec<_> = recovered
            .iter()
            .map(|r| (r.source.as_str(), r.bytes.len(), r.position.end))
            .collect();
        let first_end = HEADER_BYTES + (RECORD_HEADER + 3 + 1000) as u64;
        assert_eq!(got, vec![("AE1", 1000, first_end), ("AE2", 3000, offset)]);

        // Written again, the segment holds aligned records.
        journal.reset(7).expect("reset");
        let c = vec![3u8; 500];
        let positions = journal.append(&[entry("AE3", &c)]).expect("append");
        assert_eq!(positions[0].end % BLOCK as u64, 0);
        drop(journal);
        let (_, recovered) = Journal::open(dir.path(), false).expect("reopen");
        let got: Vec<_> = recovered.iter().map(|r| r.source.as_str()).collect();
        assert_eq!(got, vec!["AE3"]);
    }

    #[test]
    fn a_segment_is_reused_only_once_released() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut journal, _) = Journal::open(dir.path(), false).expect("open");
        journal.reset(0).expect("reset");
        let big = vec![7u8; MAX_RECORD];
        let mut held = Vec::new();
        // Fill three segments' worth without releasing anything.
        for _ in 0..(3 * SEGMENT_BYTES / MAX_RECORD as u64) {
            held.extend(journal.append(&[entry("AE", &big)]).expect("append"));
        }
        assert!(
            journal.segments.len() >= 3,
            "held segments are never overwritten"
        );
        let (_, recovered) = Journal::open(dir.path(), false).expect("reopen");
        assert_eq!(recovered.len(), held.len());

        let releaser = journal.releaser();
        for position in &held {
            releaser.release(*position);
        }
        let before = journal.segments.len();
        for _ in 0..8 {
            journal.append(&[entry("AE", &big)]).expect("append");
        }
        assert_eq!(
            journal.segments.len(),
            before,
            "released segments are reused"
        );
    }
}
