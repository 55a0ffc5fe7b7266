//! Where the frames of encapsulated Pixel Data lie, kept as blocks of
//! [`FRAMES_PER_BLOCK`] frames, one row each in `instance_frame_blocks`.
//!
//! A whole-slide image has tens of thousands of frames; a row per frame made
//! its index commit hold the shared writer for most of a second. Frame `n`
//! (1-based) is in block `(n - 1) / FRAMES_PER_BLOCK`, at byte
//! [`LOCATION_BYTES`] `* ((n - 1) % FRAMES_PER_BLOCK)`: its offset, then its
//! length, each a big-endian u64 (the encoding migration 24 writes from the
//! old rows with `printf('%016x')` and `to_hex`).

/// Frames per row: a block of 16 KiB, read whole for one tile.
pub(super) const FRAMES_PER_BLOCK: usize = 1024;

/// Bytes per frame in a block: offset and length.
const LOCATION_BYTES: usize = 16;

/// The blocks of `frames` (offset, length), numbered from 0.
pub(super) fn encode(frames: &[(u64, u64)]) -> impl Iterator<Item = (i64, Vec<u8>)> + '_ {
    frames
        .chunks(FRAMES_PER_BLOCK)
        .enumerate()
        .map(|(number, chunk)| {
            let mut block = Vec::with_capacity(chunk.len() * LOCATION_BYTES);
            for (offset, length) in chunk {
                block.extend_from_slice(&offset.to_be_bytes());
                block.extend_from_slice(&length.to_be_bytes());
            }
            (number as i64, block)
        })
}

/// The block holding frame `frame` (1-based, not 0).
pub(super) fn block_of(frame: u32) -> i64 {
    (frame.saturating_sub(1) as usize / FRAMES_PER_BLOCK) as i64
}

/// Frame `frame`'s offset and length in its block, if the block holds it.
pub(super) fn locate(block: &[u8], frame: u32) -> Option<(u64, u64)> {
    let at = (frame.checked_sub(1)? as usize % FRAMES_PER_BLOCK) * LOCATION_BYTES;
    let entry = block.get(at..at + LOCATION_BYTES)?;
    let (offset, length) = entry.split_at(8);
    Some((
        u64::from_be_bytes(offset.try_into().ok()?),
        u64::from_be_bytes(length.try_into().ok()?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_is_found_in_its_block() {
        let frames: Vec<(u64, u64)> = (0..2500u64)
            .map(|i| (i * 1_000_003 + (1 << 33), 900 + i))
            .collect();
        let blocks: Vec<(i64, Vec<u8>)> = encode(&frames).collect();
        assert_eq!(blocks.len(), 3);
        assert_eq!(blocks[2].1.len(), (2500 - 2048) * LOCATION_BYTES);
        for (i, want) in frames.iter().enumerate() {
            let frame = i as u32 + 1;
            let number = block_of(frame);
            let (at, block) = &blocks[number as usize];
            assert_eq!(*at, number);
            assert_eq!(locate(block, frame), Some(*want), "frame {frame}");
        }
        // Past the end of the last, shorter block; frame 0 is no frame.
        assert_eq!(locate(&blocks[2].1, 2501), None);
        assert_eq!(locate(&blocks[0].1, 0), None);
    }

    #[test]
    fn blocks_match_what_the_migration_writes() {
        // printf('%016x%016x', offset, length), unhexed.
        let (_, block) = encode(&[(0x0123_4567_89ab, 0x10)])
            .next()
            .expect("one block");
        assert_eq!(hex::encode(block), "00000123456789ab0000000000000010");
    }
}
