//! Limits on the structure of a STOW-RS body, checked as the bytes stream
//! past and before the multipart parser buffers them: the preamble before
//! the first boundary, each part's header block, and the number of parts.
//! The parser keeps a header block (and a preamble) in memory and rescans
//! it as it grows, so without these a single endless header line costs
//! memory and quadratic time.

use memchr::memmem::Finder;

/// Bytes before the first boundary.
pub const MAX_PREAMBLE: usize = 16 * 1024;
/// Bytes of one part's headers, up to the blank line.
pub const MAX_PART_HEADERS: usize = 16 * 1024;
/// Parts in one request (each failed one is listed in the answer).
pub const MAX_PARTS: usize = 10_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitError {
    #[error("more than {MAX_PREAMBLE} bytes before the first multipart boundary")]
    Preamble,
    #[error("a part's headers are longer than {MAX_PART_HEADERS} bytes")]
    PartHeaders,
    #[error("more than {MAX_PARTS} parts in one request")]
    Parts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Preamble,
    Headers,
    Body,
}

/// Follows the body's structure chunk by chunk in linear time.
pub struct Guard {
    delimiter: Finder<'static>,
    header_end: Finder<'static>,
    stage: Stage,
    /// Bytes seen in the current stage.
    in_stage: usize,
    parts: usize,
    /// The end of the previous chunk, so a pattern split across chunks is
    /// still found.
    carry: Vec<u8>,
}

impl Guard {
    pub fn new(boundary: &str) -> Self {
        Guard {
            delimiter: Finder::new(format!("--{boundary}").as_bytes()).into_owned(),
            header_end: Finder::new(b"\r\n\r\n").into_owned(),
            stage: Stage::Preamble,
            in_stage: 0,
            parts: 0,
            carry: Vec::new(),
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), LimitError> {
        // The carry is never longer than the delimiter, so joining it costs
        // at most that much per chunk.
        let mut data = std::mem::take(&mut self.carry);
        let carried = data.len();
        data.extend_from_slice(chunk);
        let mut at = 0;
        loop {
            let finder = match self.stage {
                Stage::Preamble | Stage::Body => &self.delimiter,
                Stage::Headers => &self.header_end,
            };
            let Some(found) = finder.find(&data[at..]) else {
                break;
            };
            let end = at + found + finder.needle().len();
            self.in_stage += end.saturating_sub(at.max(carried));
            self.check()?;
            self.stage = match self.stage {
                Stage::Preamble | Stage::Body => Stage::Headers,
                Stage::Headers => {
                    // Counted at the end of its headers (the closing
                    // delimiter has none), before its data streams.
                    self.parts += 1;
                    if self.parts > MAX_PARTS {
                        return Err(LimitError::Parts);
                    }
                    Stage::Body
                }
            };
            self.in_stage = 0;
            at = end;
        }
        self.in_stage += data.len().saturating_sub(at.max(carried));
        self.check()?;
        let keep = self.delimiter.needle().len().max(4).min(data.len() - at);
        self.carry = data[data.len() - keep..].to_vec();
        Ok(())
    }

    fn check(&self) -> Result<(), LimitError> {
        match self.stage {
            Stage::Preamble if self.in_stage > MAX_PREAMBLE => Err(LimitError::Preamble),
            Stage::Headers if self.in_stage > MAX_PART_HEADERS => Err(LimitError::PartHeaders),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(guard: &mut Guard, body: &[u8], chunk: usize) -> Result<(), LimitError> {
        body.chunks(chunk).try_for_each(|c| guard.feed(c))
    }

    fn body(parts: usize, header_pad: usize, preamble: usize) -> Vec<u8> {
        let mut out = vec![b'p'; preamble];
        for _ in 0..parts {
            out.extend_from_slice(b"--xyz\r\nContent-Type: application/dicom\r\n");
            out.extend_from_slice(format!("X-Pad: {}\r\n\r\n", "a".repeat(header_pad)).as_bytes());
            out.extend_from_slice(&[0u8; 300]);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"--xyz--\r\n");
        out
    }

    #[test]
    fn ordinary_bodies_pass_in_any_chunking() {
        for chunk in [1, 3, 7, 64, 100_000] {
            let mut g = Guard::new("xyz");
            assert_eq!(feed_all(&mut g, &body(3, 10, 10), chunk), Ok(()), "{chunk}");
        }
    }

    #[test]
    fn oversized_structure_is_refused_in_any_chunking() {
        for chunk in [1, 5, 4096, 1 << 20] {
            let mut g = Guard::new("xyz");
            let long_headers = body(2, MAX_PART_HEADERS, 0);
            assert_eq!(
                feed_all(&mut g, &long_headers, chunk),
                Err(LimitError::PartHeaders)
            );
            let mut g = Guard::new("xyz");
            let long_preamble = body(1, 0, MAX_PREAMBLE + 1);
            assert_eq!(
                feed_all(&mut g, &long_preamble, chunk),
                Err(LimitError::Preamble)
            );
        }
        let mut g = Guard::new("xyz");
        assert_eq!(feed_all(&mut g, &body(MAX_PARTS, 0, 0), 1 << 16), Ok(()));
        let mut g = Guard::new("xyz");
        assert_eq!(
            feed_all(&mut g, &body(MAX_PARTS + 1, 0, 0), 1 << 16),
            Err(LimitError::Parts)
        );
    }
}
