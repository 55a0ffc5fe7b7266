//! The walk of an object's header that starts while the object is still
//! arriving, so that little is left to walk after its last fragment: the
//! header up to the Pixel Data from a copy of the first bytes, or, for a
//! deflated object, the whole inflated stream as its bytes come in.

use super::{document, header};

/// Once this much of an object held in memory has arrived, its header is
/// walked while the rest arrives: the Pixel Data of an image is most of
/// its bytes, so little is left to walk after the last fragment.
pub(super) const HEAD_WALK_AT: usize = 64 * 1024;
/// Pieces of a deflated object waiting for its walk: copies, outside the
/// ingest memory budget, so few.
const MAX_QUEUED: usize = 16;
/// The most of a deflated object one piece for its walk holds.
const PIECE: usize = 64 * 1024;

/// The walk of an object's header started while the object arrives.
pub(super) enum HeadWalk {
    /// A copy of the first bytes walked up to the Pixel Data, with the
    /// metadata document built from them; `None` when the whole object
    /// must be walked.
    Head(tokio::task::JoinHandle<Option<(header::Head, String)>>),
    /// A deflated object, walked whole (inflated) as its bytes arrive on
    /// `feed`, so that only the last of them are left when it is complete.
    /// A walk that lags (inflating is slower than a fast sender) is not
    /// given up: the bytes it has not had wait in the object's own buffer,
    /// and it gets them as it makes room, or when the object is complete.
    /// Giving it up meant inflating the object a second time.
    Deflated {
        /// `None` once the walk stopped reading: it failed, and the whole
        /// walk reports why.
        feed: Option<Feed>,
        /// How many of the object's bytes the walk has been sent.
        fed: usize,
        walk: DeflatedWalk,
    },
    /// An object that went on to a spool file after its head was walked:
    /// the items of its Pixel Data are read from its bytes as they pass,
    /// with the metadata document built from its head.
    Passing(Box<header::FragmentScan>, String),
    /// An object spooled before its head was walked (from its first
    /// bytes, where memory is spoken for, and by `tessera import`): its
    /// first bytes, kept until they are enough to walk.
    Collecting(Vec<u8>),
}

/// Pieces of a deflated object, on their way to its walk.
type Feed = tokio::sync::mpsc::Sender<Vec<u8>>;
type DeflatedWalk = tokio::task::JoinHandle<Option<header::ParsedHeader>>;

/// A walk of a deflated object that has been sent nothing yet.
fn spawn_deflated_walk() -> (Feed, DeflatedWalk) {
    let (feed, chunks) = tokio::sync::mpsc::channel(MAX_QUEUED);
    let walk =
        tokio::task::spawn_blocking(move || header::parse_deflated(ChunkReader::new(chunks)).ok());
    (feed, walk)
}

/// Send a deflated object's walk the next `bytes` of an object on its way
/// to a spool file, waiting while it has no room: they are kept nowhere
/// else. How many were sent; `None` once the walk has stopped (it failed,
/// and the walk of the file reports why).
async fn send_pieces(feed: &Feed, bytes: &[u8]) -> Option<usize> {
    for piece in bytes.chunks(PIECE) {
        feed.send(piece.to_vec()).await.ok()?;
    }
    Some(bytes.len())
}

/// Send a deflated object's walk its last `rest`, end its stream, and take
/// what it found.
async fn end_deflated(feed: Feed, rest: &[u8], walk: DeflatedWalk) -> Option<header::ParsedHeader> {
    // A walk that has stopped says why, or the whole walk will.
    let _ = send_pieces(&feed, rest).await;
    // The end of the stream, for the walk to check it ends there.
    drop(feed);
    walk.await.ok().flatten()
}

/// What the early walk found, once the object is whole.
pub(super) enum Walked {
    Nothing,
    Head(header::Head, String),
    Whole(header::ParsedHeader),
}

impl HeadWalk {
    /// Start on the first `object` bytes of an object.
    pub(super) fn start(object: &[u8]) -> HeadWalk {
        if header::is_deflated(object) != Some(true) {
            let prefix = object[..object.len().min(header::HEAD_MAX)].to_vec();
            return HeadWalk::Head(tokio::task::spawn_blocking(move || walk_head(&prefix)));
        }
        let (feed, walk) = spawn_deflated_walk();
        let mut walk = HeadWalk::deflated(feed, 0, walk);
        walk.feed(object);
        walk
    }

    /// The object goes on to a spool file, `held` being its bytes so far:
    /// the walk of its head, once done, goes on over the bytes as they
    /// pass, and a deflated object's walk goes on inflating them. `None`
    /// where nothing was walked.
    pub(super) async fn spooling(walk: Option<HeadWalk>, held: &[u8]) -> Option<HeadWalk> {
        let Some(walk) = walk else {
            return HeadWalk::Collecting(Vec::new()).pass(held).await;
        };
        if let HeadWalk::Deflated {
            feed: Some(feed),
            fed,
            walk,
        } = walk
        {
            let fed = fed + send_pieces(&feed, held.get(fed..)?).await?;
            return Some(HeadWalk::deflated(feed, fed, walk));
        }
        let Walked::Head(head, document) = walk.finish(held).await else {
            return None;
        };
        let mut scan = Box::new(header::FragmentScan::new(head));
        scan.feed(held);
        Some(HeadWalk::Passing(scan, document))
    }

    /// Bytes of a spooled object on their way to its file. `None` once
    /// they cannot settle its header: its file is then walked.
    pub(super) async fn pass(self, bytes: &[u8]) -> Option<HeadWalk> {
        match self {
            HeadWalk::Passing(mut scan, document) => {
                scan.feed(bytes);
                Some(HeadWalk::Passing(scan, document))
            }
            HeadWalk::Deflated {
                feed: Some(feed),
                fed,
                walk,
            } => {
                let fed = fed + send_pieces(&feed, bytes).await?;
                Some(HeadWalk::deflated(feed, fed, walk))
            }
            HeadWalk::Collecting(mut prefix) => {
                let take = (header::HEAD_MAX - prefix.len()).min(bytes.len());
                prefix.extend_from_slice(&bytes[..take]);
                if header::is_deflated(&prefix) == Some(true) {
                    let (feed, walk) = spawn_deflated_walk();
                    let fed = send_pieces(&feed, &prefix).await?
                        + send_pieces(&feed, &bytes[take..]).await?;
                    return Some(HeadWalk::deflated(feed, fed, walk));
                }
                if prefix.len() < header::HEAD_MAX {
                    return Some(HeadWalk::Collecting(prefix));
                }
                let (mut scan, document) = Self::walk_collected(prefix).await?;
                scan.feed(&bytes[take..]);
                Some(HeadWalk::Passing(scan, document))
            }
            HeadWalk::Head(_) | HeadWalk::Deflated { feed: None, .. } => None,
        }
    }

    fn deflated(feed: Feed, fed: usize, walk: DeflatedWalk) -> HeadWalk {
        HeadWalk::Deflated {
            feed: Some(feed),
            fed,
            walk,
        }
    }

    /// Walk the head of collected first bytes, and scan them for items.
    async fn walk_collected(prefix: Vec<u8>) -> Option<(Box<header::FragmentScan>, String)> {
        let (prefix, walked) = tokio::task::spawn_blocking(move || {
            let walked = walk_head(&prefix);
            (prefix, walked)
        })
        .await
        .ok()?;
        let (head, document) = walked?;
        let mut scan = Box::new(header::FragmentScan::new(head));
        scan.feed(&prefix);
        Some((scan, document))
    }

    /// What a spooled object of `total` bytes turned out to be, when the
    /// bytes that passed settle it, with its metadata document unless it
    /// is to be built from the file (a deflated object: the document needs
    /// only its head, read again); `None` for the walk of its file.
    pub(super) async fn spooled(
        self,
        total: u64,
    ) -> Option<(header::ParsedHeader, Option<String>)> {
        let (scan, document) = match self {
            HeadWalk::Passing(scan, document) => (scan, document),
            // All of a small object: its head is walked now.
            HeadWalk::Collecting(prefix) => Self::walk_collected(prefix).await?,
            HeadWalk::Deflated {
                feed: Some(feed),
                fed,
                walk,
            } if fed as u64 == total => {
                return end_deflated(feed, &[], walk)
                    .await
                    .map(|parsed| (parsed, None));
            }
            HeadWalk::Head(_) | HeadWalk::Deflated { .. } => return None,
        };
        Some((scan.finish(total)?, Some(document)))
    }

    /// The object has grown to `object`: send the walk what it has not
    /// had, as far as it has room.
    pub(super) fn feed(&mut self, object: &[u8]) {
        let HeadWalk::Deflated { feed, fed, .. } = self else {
            return;
        };
        while let (Some(sender), true) = (feed.as_ref(), *fed < object.len()) {
            let stopped = match sender.try_reserve() {
                Ok(permit) => {
                    let end = object.len().min(*fed + PIECE);
                    permit.send(object[*fed..end].to_vec());
                    *fed = end;
                    false
                }
                // Lagging: the rest waits in the object.
                Err(tokio::sync::mpsc::error::TrySendError::Full(())) => return,
                Err(tokio::sync::mpsc::error::TrySendError::Closed(())) => true,
            };
            if stopped {
                *feed = None;
            }
        }
    }

    /// The object is whole, `object` its bytes: what the walk made of it.
    pub(super) async fn finish(self, object: &[u8]) -> Walked {
        match self {
            HeadWalk::Head(walk) => match walk.await.ok().flatten() {
                Some((head, document)) => Walked::Head(head, document),
                None => Walked::Nothing,
            },
            // Stopped early: what it read is not the whole object.
            HeadWalk::Deflated { feed: None, .. }
            | HeadWalk::Passing(..)
            | HeadWalk::Collecting(_) => Walked::Nothing,
            HeadWalk::Deflated {
                feed: Some(feed),
                fed,
                walk,
            } => match end_deflated(feed, object.get(fed..).unwrap_or_default(), walk).await {
                Some(parsed) => Walked::Whole(parsed),
                None => Walked::Nothing,
            },
        }
    }
}

/// A reader over chunks sent while it reads; the stream ends once the
/// sender is dropped.
struct ChunkReader {
    chunks: tokio::sync::mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
}

impl ChunkReader {
    fn new(chunks: tokio::sync::mpsc::Receiver<Vec<u8>>) -> Self {
        ChunkReader {
            chunks,
            current: Vec::new(),
            at: 0,
        }
    }
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.current.len() {
            match self.chunks.blocking_recv() {
                Some(chunk) => {
                    self.current = chunk;
                    self.at = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len() - self.at);
        out[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Walk the header of an object's first bytes and build its metadata
/// document from them. Blocking.
fn walk_head(prefix: &[u8]) -> Option<(header::Head, String)> {
    let head = header::parse_head(prefix)?;
    // A document the prefix cannot complete is built from the whole object.
    let document = document::build(
        || Ok(std::io::Cursor::new(prefix)),
        &head.meta,
        head.provisional.as_ref(),
        true,
    )
    .ok()?;
    Some((head, document))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::header;

    /// An object moved to a spool file, whether its head was walked while
    /// it was in memory or it was spooled from its first byte, is settled
    /// by the bytes that pass on to the file as the whole walk settles it,
    /// with the same metadata document (a deflated object's is left to be
    /// built from the file's head); cut short, it is left to the walk of
    /// its file.
    #[tokio::test]
    async fn a_spooled_object_is_settled_by_the_bytes_that_pass() {
        const RLE: &str = "1.2.840.10008.1.2.5";
        const DEFLATED: &str = "1.2.840.10008.1.2.1.99";
        for (ts, encapsulated, side) in [
            (RLE, true, 2),
            (RLE, true, 400),
            ("1.2.840.10008.1.2.1", false, 400),
            (DEFLATED, false, 400),
        ] {
            let bytes = header::tests::object_of_side(ts, encapsulated, false, side);
            let total = bytes.len() as u64;
            let whole = header::parse_from(std::io::Cursor::new(&bytes[..]), total).expect("valid");
            let expected = document::build(
                || Ok(std::io::Cursor::new(&bytes[..])),
                &whole.meta,
                whole.pixels.as_ref(),
                true,
            )
            .expect("document");
            for walked_before in [false, true] {
                for cut in [0, 1, 12] {
                    let object = &bytes[..bytes.len() - cut];
                    // What the walk of the file makes of it; a byte short
                    // may cut only the padding after a deflated stream.
                    let of_file =
                        header::parse_from(std::io::Cursor::new(object), object.len() as u64);
                    assert_eq!(of_file.is_ok(), cut == 0 || (ts == DEFLATED && cut == 1));
                    let held = object.len().min(HEAD_WALK_AT);
                    let before = walked_before.then(|| HeadWalk::start(&object[..held]));
                    let mut walk = HeadWalk::spooling(before, &object[..held]).await;
                    for piece in object[held..].chunks(7919) {
                        walk = match walk {
                            Some(walk) => walk.pass(piece).await,
                            None => None,
                        };
                    }
                    let settled = match walk {
                        Some(walk) => walk.spooled(object.len() as u64).await,
                        None => None,
                    };
                    let what = format!("{ts} of side {side}, walked before {walked_before}");
                    match settled {
                        Some((parsed, document)) => {
                            let of_file = of_file.expect("settled where the file walk is not");
                            assert_eq!(format!("{parsed:?}"), format!("{of_file:?}"), "{what}");
                            assert_eq!(format!("{parsed:?}"), format!("{whole:?}"), "{what}");
                            assert_eq!(document.is_none(), ts == DEFLATED, "{what}");
                            if let Some(document) = document {
                                assert_eq!(document, expected, "{what}");
                            }
                        }
                        None => assert!(of_file.is_err(), "{what}: not settled"),
                    }
                }
            }
        }
    }

    /// Feed `bytes` to a walk started on their first `at`, as they arrive
    /// `piece` bytes at a time.
    async fn walk_arriving(bytes: &[u8], at: usize, piece: usize) -> Walked {
        let mut walk = HeadWalk::start(&bytes[..at]);
        for end in (at..bytes.len()).step_by(piece).skip(1) {
            walk.feed(&bytes[..end]);
        }
        walk.finish(bytes).await
    }

    /// A deflated object is walked whole while it arrives, which leaves
    /// nothing to inflate once it is complete; one cut short is left to the
    /// whole walk, to report. Other objects get the walk of their header.
    #[tokio::test]
    async fn a_deflated_object_is_walked_whole_while_it_arrives() {
        let bytes = header::tests::object_bytes("1.2.840.10008.1.2.1.99", false, false);
        // From the end of the meta group on, which says how to walk.
        let at = (0..bytes.len())
            .find(|&n| header::is_deflated(&bytes[..n]).is_some())
            .expect("a meta group");
        assert!(bytes.len() - at > 100, "most of the object arrives later");
        // As many pieces as the walk may have waiting.
        let piece = (bytes.len() - at).div_ceil(MAX_QUEUED - 1);
        match walk_arriving(&bytes, at, piece).await {
            Walked::Whole(parsed) => {
                assert_eq!(parsed.meta.sop_instance_uid.as_str(), "1.2.3.4");
                assert!(parsed.has_pixel_data);
            }
            _ => panic!("a deflated object walked whole"),
        }
        let cut = &bytes[..bytes.len() - 12];
        assert!(matches!(
            walk_arriving(cut, at, piece).await,
            Walked::Nothing
        ));
        let plain = header::tests::object_bytes("1.2.840.10008.1.2.1", false, false);
        assert!(matches!(
            walk_arriving(&plain, plain.len(), 1).await,
            Walked::Head(..)
        ));
    }

    /// A walk that lags, with more pieces than it may have waiting, is not
    /// given up (that meant inflating the object again once complete): it
    /// gets the rest as it makes room, or when the object is complete.
    #[tokio::test]
    async fn a_walk_that_falls_behind_catches_up() {
        let bytes = header::tests::object_of_side("1.2.840.10008.1.2.1.99", false, false, 400);
        let (feed, chunks) = tokio::sync::mpsc::channel(MAX_QUEUED);
        // A walk that reads nothing until the gate opens.
        let (open, gate) = std::sync::mpsc::channel::<()>();
        let walk = tokio::task::spawn_blocking(move || {
            gate.recv().ok()?;
            header::parse_deflated(ChunkReader::new(chunks)).ok()
        });
        let mut walk = HeadWalk::Deflated {
            feed: Some(feed),
            fed: 0,
            walk,
        };
        let step = bytes.len() / (4 * MAX_QUEUED);
        for end in (step..bytes.len()).step_by(step) {
            walk.feed(&bytes[..end]);
        }
        match &walk {
            HeadWalk::Deflated {
                feed: Some(_), fed, ..
            } => assert!(*fed < bytes.len() / 2, "{fed} of {} sent", bytes.len()),
            _ => panic!("the walk was given up"),
        }
        open.send(()).expect("gate");
        match walk.finish(&bytes).await {
            Walked::Whole(parsed) => assert!(parsed.has_pixel_data),
            _ => panic!("a lagging walk did not finish the object"),
        }
    }
}
