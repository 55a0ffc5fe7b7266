//! Audit records to a syslog collector: RFC 5424 messages over TLS
//! (RFC 5425), one connection, reconnected with backoff. The index keeps
//! every record whatever happens here; this is the copy off the machine.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A collector: `host:port` and the TLS client settings to reach it.
#[derive(Debug, Clone)]
pub struct SyslogTarget {
    pub host: String,
    pub port: u16,
    pub tls: Arc<rustls::ClientConfig>,
}

/// Frames waiting for the collector; past this, new ones are skipped.
const QUEUE: usize = 16_384;

pub(super) fn start(
    target: SyslogTarget,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> mpsc::Sender<Vec<u8>> {
    let (tx, rx) = mpsc::channel(QUEUE);
    tracker.spawn(send(target, rx, shutdown));
    tx
}

async fn send(target: SyslogTarget, mut rx: mpsc::Receiver<Vec<u8>>, shutdown: CancellationToken) {
    let connector = tokio_rustls::TlsConnector::from(target.tls.clone());
    let mut pending: Option<Vec<u8>> = None;
    let mut delay = Duration::from_millis(500);
    'connect: loop {
        let connection = async {
            let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port)).await?;
            let _ = tcp.set_nodelay(true);
            let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                .map_err(std::io::Error::other)?;
            connector.connect(name, tcp).await
        };
        let mut stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = connection => match c {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, host = %target.host, port = target.port, "cannot reach the syslog collector; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(60));
                    continue 'connect;
                }
            },
        };
        delay = Duration::from_millis(500);
        loop {
            let frame = match pending.take() {
                Some(frame) => frame,
                None => tokio::select! {
                    next = rx.recv() => match next {
                        Some(frame) => frame,
                        None => return,
                    },
                    _ = shutdown.cancelled() => {
                        // What is queued still goes, briefly.
                        match rx.try_recv() {
                            Ok(frame) => frame,
                            Err(_) => return,
                        }
                    }
                },
            };
            let written = async {
                stream.write_all(&frame).await?;
                stream.flush().await
            };
            if let Err(e) = written.await {
                tracing::warn!(error = %e, "syslog collector connection lost; reconnecting");
                pending = Some(frame);
                continue 'connect;
            }
        }
    }
}
