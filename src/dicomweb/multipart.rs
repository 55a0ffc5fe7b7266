//! Streaming `multipart/related` responses (PS3.18 8.7.1): a producer task
//! writes parts into a bounded channel the response body drains, so a study
//! is sent object by object and a slow client slows the producer, not
//! memory.

use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::HttpResponse;
use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;

/// Parts in flight between producer and client.
const CHANNEL_DEPTH: usize = 8;
/// A client that reads nothing for this long is given up: the producer
/// stops and lets go of what it holds (objects, decoded frames).
const STALLED_CLIENT: std::time::Duration = std::time::Duration::from_secs(60);

type Chunk = Result<Bytes, std::io::Error>;

/// The producer side of a multipart body.
pub struct PartSender {
    tx: mpsc::Sender<Chunk>,
    boundary: String,
    started: bool,
}

/// A fresh boundary that cannot occur in a DICOM part by chance.
pub fn boundary() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "tessera-{nanos:x}-{:x}",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Start a multipart response whose parts are `part_type`; the sender is
/// handed to the producer.
pub fn response(part_type: &str) -> (HttpResponse, PartSender) {
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let boundary = boundary();
    let content_type = format!("multipart/related; type=\"{part_type}\"; boundary={boundary}");
    let body = receiver_stream(rx);
    let response = HttpResponse::Ok()
        .insert_header(("Content-Type", content_type))
        .streaming(body);
    (
        response,
        PartSender {
            tx,
            boundary,
            started: false,
        },
    )
}

fn receiver_stream(rx: mpsc::Receiver<Chunk>) -> impl Stream<Item = Chunk> {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    })
}

/// The client went away; the producer should stop.
#[derive(Debug)]
pub struct Disconnected;

impl PartSender {
    /// Begin a part with its Content-Type (and optional Content-Location).
    pub async fn begin_part(
        &mut self,
        content_type: &str,
        location: Option<&str>,
    ) -> Result<(), Disconnected> {
        let lead = if self.started { "\r\n" } else { "" };
        self.started = true;
        let mut head = format!(
            "{lead}--{}\r\nContent-Type: {content_type}\r\n",
            self.boundary
        );
        if let Some(location) = location {
            head.push_str(&format!("Content-Location: {location}\r\n"));
        }
        head.push_str("\r\n");
        self.send(Bytes::from(head)).await
    }

    pub async fn send(&mut self, bytes: Bytes) -> Result<(), Disconnected> {
        match tokio::time::timeout(STALLED_CLIENT, self.tx.send(Ok(bytes))).await {
            Ok(sent) => sent.map_err(|_| Disconnected),
            Err(_) => {
                tracing::info!("client stopped reading a multipart response; giving up");
                Err(Disconnected)
            }
        }
    }

    /// End the body properly.
    pub async fn finish(mut self) {
        let lead = if self.started { "\r\n" } else { "" };
        let close = format!("{lead}--{}--\r\n", self.boundary);
        let _ = self.send(Bytes::from(close)).await;
    }

    /// Cut the body short: the client sees a broken transfer, not a
    /// complete-looking response missing parts.
    pub async fn fail(self, reason: String) {
        let _ = self.tx.send(Err(std::io::Error::other(reason))).await;
    }
}
