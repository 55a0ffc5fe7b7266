//! P-DATA-TF framing (PS3.8 9.3.5) read off an association's stream, so
//! that a data set's bytes go from the socket straight into the buffer that
//! keeps them. dicom-ul's reader would copy every PDU twice on the way
//! (once out of its read buffer, once into each PDV's own vector), a
//! tenth of the server's work on a CT slice.
//!
//! Only P-DATA-TF is read here. At every PDU boundary the next PDU's type
//! is looked at first; any other PDU (release, abort, anything unexpected)
//! is left in dicom-ul's read buffer for dicom-ul to decode.

use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// PDU type of P-DATA-TF.
const P_DATA_TF: u8 = 0x04;
/// PDU header: type, reserved, length (u32).
const PDU_HEADER: usize = 6;
/// PDV item header: length (u32), presentation context, control header.
const PDV_HEADER: usize = 6;
/// What one read into the shared buffer asks for: a small PDU whole (a
/// command), or the headers ahead of a data set's bytes, with little of
/// those bytes that would then have to be copied out again.
const SMALL_READ: usize = 16 * 1024;
/// A value this much or more still to come is read straight into its
/// destination; the rest of a value, through the shared buffer.
const DIRECT_READ: usize = 8 * 1024;

/// The stream an association reads from, plain TCP or TLS.
pub type Stream<'a> = &'a mut (dyn AsyncRead + Unpin + Send);

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed inside a PDU")]
    Closed,
    #[error("reading from the connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("no data within the idle timeout of {0:?}")]
    IdleTimeout(Duration),
    #[error("P-DATA-TF of {length} bytes, above the maximum PDU length of {max}")]
    TooLarge { length: usize, max: usize },
    #[error("malformed P-DATA-TF: {0}")]
    Malformed(&'static str),
}

/// One presentation data value: its header, and how much of its value is
/// still to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pdv {
    pub context_id: u8,
    pub command: bool,
    pub last: bool,
    pub left: usize,
}

/// What comes next on the association.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Pdv(Pdv),
    /// A PDU other than P-DATA-TF starts here, whole or in part in the
    /// read buffer: dicom-ul's to decode.
    OtherPdu,
}

/// Where the reader is inside the P-DATA-TF PDUs. Every method is
/// cancel-safe: state changes only with bytes taken, so a read abandoned
/// half way resumes where it stopped.
#[derive(Debug)]
pub struct Framing {
    /// The acceptor's maximum PDU length, as negotiated.
    max_pdu: usize,
    idle: Duration,
    /// Bytes of the current P-DATA-TF PDU not yet taken.
    pdu_left: usize,
    /// The PDV whose value is being read.
    current: Option<Pdv>,
}

impl Framing {
    pub fn new(max_pdu: usize, idle: Duration) -> Self {
        Framing {
            max_pdu,
            idle,
            pdu_left: 0,
            current: None,
        }
    }

    /// The header of the next PDV (or of the one whose value is still being
    /// read), or word that another kind of PDU follows.
    pub async fn next(
        &mut self,
        stream: Stream<'_>,
        buf: &mut BytesMut,
    ) -> Result<Next, FrameError> {
        if let Some(pdv) = self.current {
            return Ok(Next::Pdv(pdv));
        }
        if self.pdu_left == 0 {
            self.fill(stream, buf, 1).await?;
            if buf[0] != P_DATA_TF {
                return Ok(Next::OtherPdu);
            }
            self.fill(stream, buf, PDU_HEADER).await?;
            let length = u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]) as usize;
            if length > self.max_pdu {
                return Err(FrameError::TooLarge {
                    length,
                    max: self.max_pdu,
                });
            }
            if length < PDV_HEADER {
                return Err(FrameError::Malformed("a PDU without a PDV item"));
            }
            buf.advance(PDU_HEADER);
            self.pdu_left = length;
        }
        if self.pdu_left < PDV_HEADER {
            return Err(FrameError::Malformed(
                "a PDV item header past the PDU's end",
            ));
        }
        self.fill(stream, buf, PDV_HEADER).await?;
        let item = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if item < 2 {
            return Err(FrameError::Malformed("a PDV item shorter than its header"));
        }
        if item > self.pdu_left - 4 {
            return Err(FrameError::Malformed("a PDV item longer than its PDU"));
        }
        let control = buf[5];
        let pdv = Pdv {
            context_id: buf[4],
            command: control & 0x01 != 0,
            last: control & 0x02 != 0,
            left: item - 2,
        };
        buf.advance(PDV_HEADER);
        self.pdu_left -= 4 + item;
        self.current = Some(pdv);
        Ok(Next::Pdv(pdv))
    }

    /// Append the rest of the current PDV's value to `dest`, or its next
    /// `limit` bytes: what the read buffer holds, then straight from the
    /// socket. True once the value has been read whole.
    pub async fn read_value(
        &mut self,
        stream: Stream<'_>,
        buf: &mut BytesMut,
        dest: &mut Vec<u8>,
        limit: usize,
    ) -> Result<bool, FrameError> {
        let mut taken = 0;
        while let Some(pdv) = self.current {
            if pdv.left == 0 {
                self.current = None;
                break;
            }
            if taken >= limit {
                return Ok(false);
            }
            let want = pdv.left.min(limit - taken);
            let n = if !buf.is_empty() {
                let n = want.min(buf.len());
                dest.extend_from_slice(&buf[..n]);
                buf.advance(n);
                n
            } else if pdv.left < DIRECT_READ {
                self.fill(stream, buf, 1).await?;
                continue;
            } else {
                dest.reserve(want);
                self.timed(stream.read_buf(&mut (&mut *dest).limit(want)))
                    .await?
            };
            self.took(n);
            taken += n;
        }
        Ok(true)
    }

    /// Read and drop the rest of the current PDV's value.
    pub async fn skip_value(
        &mut self,
        stream: Stream<'_>,
        buf: &mut BytesMut,
    ) -> Result<(), FrameError> {
        while let Some(pdv) = self.current {
            if pdv.left == 0 {
                self.current = None;
                break;
            }
            if buf.is_empty() {
                self.fill(stream, buf, 1).await?;
            }
            let n = pdv.left.min(buf.len());
            buf.advance(n);
            self.took(n);
        }
        Ok(())
    }

    fn took(&mut self, n: usize) {
        if let Some(pdv) = self.current.as_mut() {
            pdv.left -= n;
            if pdv.left == 0 {
                self.current = None;
            }
        }
    }

    /// Read until `buf` holds at least `n` bytes.
    async fn fill(
        &self,
        stream: Stream<'_>,
        buf: &mut BytesMut,
        n: usize,
    ) -> Result<(), FrameError> {
        while buf.len() < n {
            buf.reserve(SMALL_READ);
            let room = SMALL_READ.max(n - buf.len());
            self.timed(stream.read_buf(&mut (&mut *buf).limit(room)))
                .await?;
        }
        Ok(())
    }

    /// One read, within the idle timeout; a closed connection is an error,
    /// since every read here is inside a PDU or waits for one.
    async fn timed(
        &self,
        read: impl std::future::Future<Output = std::io::Result<usize>>,
    ) -> Result<usize, FrameError> {
        match tokio::time::timeout(self.idle, read).await {
            Err(_) => Err(FrameError::IdleTimeout(self.idle)),
            Ok(Err(e)) => Err(FrameError::Io(e)),
            Ok(Ok(0)) => Err(FrameError::Closed),
            Ok(Ok(n)) => Ok(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdu(pdvs: &[(u8, u8, &[u8])]) -> Vec<u8> {
        let body: usize = pdvs.iter().map(|(_, _, v)| 6 + v.len()).sum();
        let mut out = vec![P_DATA_TF, 0];
        out.extend_from_slice(&(body as u32).to_be_bytes());
        for (context, control, value) in pdvs {
            out.extend_from_slice(&(value.len() as u32 + 2).to_be_bytes());
            out.extend_from_slice(&[*context, *control]);
            out.extend_from_slice(value);
        }
        out
    }

    /// Every PDV of `wire`, read with `framing`, as (header, value).
    async fn read_all(wire: &[u8], max_pdu: usize) -> Result<Vec<(Pdv, Vec<u8>)>, FrameError> {
        let mut framing = Framing::new(max_pdu, Duration::from_secs(5));
        let mut stream: &[u8] = wire;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        loop {
            match framing.next(&mut stream, &mut buf).await {
                Ok(Next::Pdv(pdv)) => {
                    let mut value = Vec::new();
                    let whole = framing
                        .read_value(&mut stream, &mut buf, &mut value, usize::MAX)
                        .await?;
                    assert!(whole);
                    out.push((pdv, value));
                }
                Ok(Next::OtherPdu) => return Ok(out),
                Err(FrameError::Closed) if buf.is_empty() => return Ok(out),
                Err(e) => return Err(e),
            }
        }
    }

    #[tokio::test]
    async fn values_of_every_size_come_back_whole_and_in_order() {
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut wire = pdu(&[(1, 0x03, b"command"), (1, 0x00, &big[..70_000])]);
        wire.extend(pdu(&[(1, 0x02, &big[70_000..])]));
        wire.extend([0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0]);
        let read = read_all(&wire, 1 << 20).await.expect("frames");
        assert_eq!(read.len(), 3);
        assert!(read[0].0.command && read[0].0.last);
        assert_eq!(read[0].1, b"command");
        assert!(!read[1].0.command && !read[1].0.last);
        let whole: Vec<u8> = [read[1].1.clone(), read[2].1.clone()].concat();
        assert_eq!(whole, big);
        assert!(read[2].0.last);
    }

    #[tokio::test]
    async fn a_value_read_in_parts_stops_at_each_limit() {
        let value: Vec<u8> = (0..50_000u32).map(|i| (i % 249) as u8).collect();
        let wire = pdu(&[(3, 0x02, &value)]);
        let mut framing = Framing::new(1 << 20, Duration::from_secs(5));
        let mut stream: &[u8] = &wire;
        let mut buf = BytesMut::new();
        let next = framing.next(&mut stream, &mut buf).await.expect("header");
        assert!(matches!(next, Next::Pdv(Pdv { left: 50_000, .. })));
        let mut read = Vec::new();
        let mut parts = 0;
        loop {
            let before = read.len();
            let whole = framing
                .read_value(&mut stream, &mut buf, &mut read, 16_384)
                .await
                .expect("part");
            assert!(read.len() - before <= 16_384);
            parts += 1;
            if whole {
                break;
            }
        }
        assert_eq!(read, value);
        assert!(parts >= 4, "{parts} parts");
    }

    #[tokio::test]
    async fn a_pdu_above_the_maximum_is_refused_before_it_is_read() {
        let wire = pdu(&[(1, 0x02, &[0u8; 5000])]);
        assert!(matches!(
            read_all(&wire, 4096).await,
            Err(FrameError::TooLarge {
                length: 5006,
                max: 4096
            })
        ));
    }

    #[tokio::test]
    async fn an_item_longer_than_its_pdu_is_refused() {
        let mut wire = pdu(&[(1, 0x02, b"abcdef")]);
        wire[9] = 200;
        assert!(matches!(
            read_all(&wire, 4096).await,
            Err(FrameError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn a_value_cut_short_by_the_peer_is_an_error() {
        let wire = pdu(&[(1, 0x02, &[7u8; 30_000])]);
        assert!(matches!(
            read_all(&wire[..20_000], 1 << 20).await,
            Err(FrameError::Closed)
        ));
    }
}
