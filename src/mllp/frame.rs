//! MLLP framing: `<VT>` message `<FS><CR>`. Bytes become whole messages,
//! capped in size; nothing here reads what a message says.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

pub const START: u8 = 0x0b;
pub const END: u8 = 0x1c;
pub const CR: u8 = 0x0d;

/// Bytes of an oversized message kept to address its rejection.
const HEAD: usize = 4096;

#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Message(Vec<u8>),
    /// Longer than the limit: its first bytes, and its size as far as read.
    Oversized {
        head: Vec<u8>,
        size: usize,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("byte {0:#04x} outside a frame (expected <VT>)")]
    OutsideFrame(u8),
    #[error("connection closed inside a frame")]
    Truncated,
    #[error("an oversized frame ran past {0} bytes without its end")]
    Runaway(usize),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads frames from one connection.
pub struct FrameReader {
    buf: BytesMut,
    max: usize,
}

impl FrameReader {
    pub fn new(max: usize) -> Self {
        FrameReader {
            buf: BytesMut::with_capacity(8192),
            max,
        }
    }

    /// The next frame; `None` at a clean end of stream between frames.
    pub async fn next<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
    ) -> Result<Option<Frame>, FrameError> {
        // Line ends between frames are common and harmless.
        loop {
            while let Some(&b) = self.buf.first() {
                if b == CR || b == b'\n' {
                    self.buf.advance(1);
                } else {
                    break;
                }
            }
            if let Some(&b) = self.buf.first() {
                if b != START {
                    return Err(FrameError::OutsideFrame(b));
                }
                break;
            }
            if io.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
        self.buf.advance(1);
        let mut searched = 0;
        let mut oversized: Option<(Vec<u8>, usize)> = None;
        loop {
            if let Some(at) = memchr::memchr(END, &self.buf[searched..]).map(|i| i + searched) {
                let body = self.buf.split_to(at);
                self.buf.advance(1);
                if self.buf.first() == Some(&CR) {
                    self.buf.advance(1);
                }
                return Ok(Some(match oversized {
                    Some((head, size)) => Frame::Oversized {
                        head,
                        size: size + body.len(),
                    },
                    None if body.len() > self.max => Frame::Oversized {
                        head: body[..HEAD.min(body.len())].to_vec(),
                        size: body.len(),
                    },
                    None => Frame::Message(body.to_vec()),
                }));
            }
            searched = self.buf.len();
            if self.buf.len() > self.max || oversized.is_some() {
                // Keep the head, drop the rest as it comes.
                let (head, size) = oversized
                    .get_or_insert_with(|| (self.buf[..HEAD.min(self.buf.len())].to_vec(), 0));
                *size += self.buf.len();
                self.buf.clear();
                searched = 0;
                if *size > self.max.saturating_mul(16) {
                    let _ = head;
                    return Err(FrameError::Runaway(*size));
                }
            }
            if io.read_buf(&mut self.buf).await? == 0 {
                return Err(FrameError::Truncated);
            }
        }
    }
}

/// `message` framed for the wire.
pub fn encode(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 3);
    out.push(START);
    out.extend_from_slice(message);
    out.extend_from_slice(&[END, CR]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn frames(input: &[u8], max: usize) -> Vec<Result<Option<Frame>, String>> {
        let mut reader = FrameReader::new(max);
        let mut io = input;
        let mut out = Vec::new();
        loop {
            let next = reader.next(&mut io).await.map_err(|e| e.to_string());
            let stop = !matches!(next, Ok(Some(_)));
            out.push(next);
            if stop {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn splits_frames_and_caps_size() {
        let mut input = encode(b"MSH|one");
        input.extend_from_slice(b"\r\n");
        input.extend(encode(b"MSH|two"));
        input.extend(encode(&[b'x'; 5000]));
        input.extend(encode(b"MSH|three"));
        let got = frames(&input, 1024).await;
        assert_eq!(got[0], Ok(Some(Frame::Message(b"MSH|one".to_vec()))));
        assert_eq!(got[1], Ok(Some(Frame::Message(b"MSH|two".to_vec()))));
        assert!(matches!(
            &got[2],
            Ok(Some(Frame::Oversized { size: 5000, .. }))
        ));
        assert_eq!(got[3], Ok(Some(Frame::Message(b"MSH|three".to_vec()))));
        assert_eq!(got[4], Ok(None));
    }

    #[tokio::test]
    async fn broken_framing_is_an_error() {
        assert!(frames(b"MSH|no start block", 1024).await[0].is_err());
        assert!(frames(b"\x0bMSH|never ends", 1024).await[0].is_err());
    }
}
