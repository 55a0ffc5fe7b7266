//! The DICOM port: accept loop, association caps (in all and per client
//! address), and one task and span per association. On shutdown it stops accepting at once; open associations
//! get a grace period to finish and release, then are aborted.

use std::sync::Arc;
use std::time::Duration;

use dicom_ul::pdu::{
    AssociationRJ, AssociationRJResult, AssociationRJServiceProviderPresentationReason,
    AssociationRJSource,
};
use dicom_ul::Pdu;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::admission::{accept_plain, accept_tls};
use super::association::{acceptor_options, Association, ClaimedUser};
use super::service::{dispatch, ServiceContext};
use crate::config::DicomConfig;

/// Refusals answered with an A-ASSOCIATE-RJ at once; past this, a refused
/// connection is simply closed, so a flood costs no task.
const MAX_REFUSING: usize = 64;

/// Decrements the active-association gauge however the task ends.
struct ActiveGuard(Arc<crate::telemetry::Metrics>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.associations_active.dec();
    }
}

/// Serve associations until `shutdown` is cancelled; with `tls`, every
/// connection speaks TLS first (the DICOM TLS port).
pub async fn run(
    listener: TcpListener,
    tls: Option<crate::tls::ServerTls>,
    config: DicomConfig,
    ctx: ServiceContext,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let limit = Arc::new(Semaphore::new(config.max_associations));
    let per_client = Arc::new(crate::limits::PerClient::new(
        config.max_associations_per_ip,
    ));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    tracing::info!(
        ae_title = %config.ae_title,
        addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        tls = tls.is_some(),
        "DICOM listener ready"
    );
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Usually EMFILE: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let slots = limit
            .clone()
            .try_acquire_owned()
            .ok()
            .and_then(|permit| per_client.take(peer.ip()).map(|slot| (permit, slot)));
        let Some(permit) = slots else {
            ctx.metrics.associations_rejected.inc();
            tracing::warn!(
                %peer,
                max = config.max_associations,
                max_per_client = config.max_associations_per_ip,
                "association limit reached"
            );
            // A TLS client would not understand a plain A-ASSOCIATE-RJ.
            if tls.is_some() {
                continue;
            }
            if let Ok(refusal) = refusing.clone().try_acquire_owned() {
                tracker.spawn(async move {
                    reject_busy(socket).await;
                    drop(refusal);
                });
            }
            continue;
        };
        let tls = tls.clone();
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        let idle = config.idle_timeout;
        let grace = config.shutdown_grace;
        let config = config.clone();
        let span = tracing::info_span!("association", %peer, calling_ae = tracing::field::Empty);
        tracker.spawn(
            async move {
                let _permit = permit;
                // Built per connection: the policy keeps what this request
                // claims as its user.
                let claimed = ClaimedUser::default();
                let accepted = match tls {
                    Some(tls) => {
                        let caught = crate::tls::PeerCertificate::default();
                        let options =
                            acceptor_options(&config, claimed.clone(), Some(caught.clone()));
                        match tls.config_catching(&caught) {
                            Ok(tls) => {
                                accept_tls(socket, options.tls_config(tls), &claimed, &ctx, &config)
                                    .await
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "cannot set up TLS for a connection");
                                None
                            }
                        }
                    }
                    None => {
                        let options = acceptor_options(&config, claimed.clone(), None);
                        accept_plain(socket, &options, &claimed, &ctx, &config).await
                    }
                };
                let Some((wire, user)) = accepted else {
                    ctx.metrics.associations_rejected.inc();
                    return;
                };
                ctx.metrics.associations_total.inc();
                ctx.metrics.associations_active.inc();
                let _active = ActiveGuard(ctx.metrics.clone());
                let mut assoc = Association::new(wire, idle);
                assoc.set_peer(peer.ip().to_string());
                tracing::Span::current().record("calling_ae", assoc.calling_ae().as_str());
                if let Some(user) = user {
                    assoc.log_in(user.name, user.roles);
                }
                tracing::debug!("association established");
                // A registered peer may use only its services; other calling
                // AEs are limited by `dicom.allowed_calling_ae_titles` alone.
                match ctx.peers.get(assoc.calling_ae().as_str()).await {
                    Ok(peer) => {
                        assoc.restrict_to(peer.services);
                        assoc.set_worklist_charset(peer.worklist_charset);
                    }
                    Err(crate::peers::RegistryError::NotFound(_)) => {}
                    // Not knowing what the peer may do allows it nothing.
                    Err(e) => {
                        tracing::warn!(error = %e, "peer registry unavailable; no service allowed");
                        assoc.restrict_to(Default::default());
                    }
                }
                let end = serve(&mut assoc, &ctx, &shutdown, grace).await;
                audit_stores(&mut assoc, &ctx);
                end.finish(assoc).await;
            }
            .instrument(span),
        );
    }
    tracing::info!("DICOM listener stopped accepting");
}

/// One record for everything an association stored: its studies and
/// patients, and how many stores failed.
fn audit_stores(assoc: &mut Association, ctx: &ServiceContext) {
    use crate::audit::{Event, Outcome};
    let (stored, failed) = assoc.take_stores();
    if stored.is_empty() && failed == 0 {
        return;
    }
    let outcome = match (stored.is_empty(), failed) {
        (_, 0) => Outcome::Success,
        (false, _) => Outcome::MinorFailure,
        (true, _) => Outcome::SeriousFailure,
    };
    let detail = format!("C-STORE: {} stored, {failed} failed", stored.len());
    ctx.auditor.record(
        super::service::audit_event(assoc, Event::Stored)
            .outcome(outcome)
            .instances(stored)
            .detail(detail),
    );
}

/// How an association's message loop ended.
enum End {
    Released,
    Abort,
}

impl End {
    async fn finish(self, assoc: Association) {
        match self {
            End::Released => {
                tracing::debug!("association released");
                assoc.close();
            }
            End::Abort => assoc.abort().await,
        }
    }
}

/// Serve messages until release or error. On shutdown the association
/// may finish its work and release within the grace period; after that it
/// is aborted at the next message boundary.
async fn serve(
    assoc: &mut Association,
    ctx: &ServiceContext,
    shutdown: &CancellationToken,
    grace: Duration,
) -> End {
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let next = match deadline {
            None => tokio::select! {
                _ = shutdown.cancelled() => {
                    deadline = Some(tokio::time::Instant::now() + grace);
                    continue;
                }
                // next_request is cancel-safe, so losing this race is harmless.
                next = assoc.next_request() => next,
            },
            Some(at) => match tokio::time::timeout_at(at, assoc.next_request()).await {
                Ok(next) => next,
                Err(_) => {
                    tracing::info!("shutdown grace period over; aborting association");
                    return End::Abort;
                }
            },
        };
        let request = match next {
            Ok(Some(request)) => request,
            Ok(None) => return End::Released,
            Err(e) => {
                ctx.metrics.error("association");
                tracing::warn!(error = %e, "association ended");
                return End::Abort;
            }
        };
        // A message in progress is always finished.
        if let Err(e) = dispatch(assoc, request, ctx).await {
            ctx.metrics.error("association");
            tracing::warn!(error = %e, "association ended during a request");
            return End::Abort;
        }
        if assoc.is_released() {
            return End::Released;
        }
    }
}

/// Refuse a connection over the limit with a transient A-ASSOCIATE-RJ
/// (local limit exceeded), after reading the request so the peer sees it.
async fn reject_busy(mut socket: TcpStream) {
    let mut header = [0u8; 6];
    let read = async {
        socket.read_exact(&mut header).await?;
        let len = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as u64;
        let mut sink = tokio::io::sink();
        tokio::io::copy(&mut (&mut socket).take(len.min(256 * 1024)), &mut sink).await?;
        Ok::<_, std::io::Error>(())
    };
    if tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .is_err()
    {
        return;
    }
    let rj = Pdu::AssociationRJ(AssociationRJ {
        result: AssociationRJResult::Transient,
        source: AssociationRJSource::ServiceProviderPresentation(
            AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
        ),
    });
    let mut bytes = Vec::new();
    if dicom_ul::write_pdu(&mut bytes, &rj).is_ok() {
        let _ = socket.write_all(&bytes).await;
        let _ = socket.shutdown().await;
    }
}
