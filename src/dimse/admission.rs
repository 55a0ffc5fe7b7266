//! Admission to the DICOM port: what happens between a connection's
//! accept and its first request. A plain connection's A-ASSOCIATE-RQ is
//! screened (AE title rules, certificate-bound titles, the peer registry,
//! the user identity) and refused with A-ASSOCIATE-RJ; on a TLS connection
//! the certificate-bound titles are refused the same way, and the registry
//! and user checks abort it right after establishment. A user
//! identity (PS3.7 D.3.3.7) that proves an account comes back with the
//! association.

use tokio::net::TcpStream;

use super::association::{AePolicy, Claim, ClaimedUser, RolePolicy};
use super::service::ServiceContext;
use super::wire::Wire;
use crate::config::DicomConfig;
use crate::model::User;

pub(super) type Options =
    dicom_ul::association::server::ServerAssociationOptions<'static, AePolicy, RolePolicy>;

/// Check the user identity a request claimed (PS3.7 D.3.3.7) against the
/// accounts: the account it proves, `None` when it claims none (or one
/// that cannot be checked) and none is required, `Err` when it must be
/// refused. Logins are audited either way.
async fn prove(
    claim: Option<Claim>,
    ctx: &ServiceContext,
    config: &DicomConfig,
    address: &str,
    calling: &str,
) -> Result<Option<User>, ()> {
    use crate::audit::{Actor, AuditEvent, Event, Outcome};
    let attempt = |user: &str, outcome| {
        AuditEvent::new(Event::Login, Actor::User(user.to_owned()), address)
            .outcome(outcome)
            .detail(format!("DICOM association from {calling}"))
    };
    match claim {
        Some(Claim::UserAndPassword(user, password)) => {
            match ctx.accounts.check_password(&user, &password).await {
                Ok(account) => {
                    ctx.auditor.record(attempt(&account.name, Outcome::Success));
                    tracing::info!(user = %account.name, "association logged in");
                    Ok(Some(account))
                }
                Err(e) => {
                    ctx.auditor.record(attempt(&user, Outcome::MinorFailure));
                    if matches!(e, crate::auth::AuthError::LockedNow) {
                        ctx.auditor
                            .record(attempt(&user, Outcome::Success).event_kind(Event::Lockout));
                    }
                    tracing::warn!(%user, error = %e, "association refused: user identity refused");
                    Err(())
                }
            }
        }
        // A bare user name, Kerberos, SAML or JWT proves nothing here.
        Some(Claim::Unverifiable) | None if config.require_user_identity => {
            tracing::info!("association refused: no user identity Tessera can check");
            Err(())
        }
        Some(Claim::Unverifiable) | None => Ok(None),
    }
}

/// A plain connection: screen its A-ASSOCIATE-RQ, then establish. With
/// the association, the account its user identity proved, if it was read
/// in the screen.
pub(super) async fn accept_plain(
    socket: TcpStream,
    options: &Options,
    claimed: &ClaimedUser,
    ctx: &ServiceContext,
    config: &DicomConfig,
) -> Option<(Wire, Option<User>)> {
    let peer = socket
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let artim = config.artim_timeout;
    let mut proved = None;
    let mut read_by_screen = false;
    match tokio::time::timeout(artim, super::screen::check(&socket)).await {
        Ok(Ok(screened)) => {
            let calling = screened.as_ref().map(|s| s.calling.clone());
            let refusal = if calling
                .as_deref()
                .is_some_and(|ae| config.ae_certificates.contains_key(ae.trim()))
            {
                tracing::info!(
                    ?calling,
                    "A-ASSOCIATE-RQ refused: this AE title must call over TLS with its certificate"
                );
                true
            } else if config.refuse_unknown_peers && !registered(ctx, calling.as_deref()).await {
                tracing::info!(
                    ?calling,
                    "A-ASSOCIATE-RQ refused: calling AE title not registered"
                );
                true
            } else {
                false
            };
            if refusal {
                super::screen::refuse(socket, super::screen::Refusal::CallingAeTitle).await;
                return None;
            }
            // A user identity is checked here, before the association is
            // accepted, so a wrong one is answered with A-ASSOCIATE-RJ.
            if let Some(screened) = screened {
                read_by_screen = true;
                match prove(screened.claim, ctx, config, &peer, &screened.calling).await {
                    Ok(user) => proved = user,
                    Err(()) => {
                        super::screen::refuse(socket, super::screen::Refusal::User).await;
                        return None;
                    }
                }
            }
        }
        Ok(Err(refusal)) => {
            tracing::info!(?refusal, "A-ASSOCIATE-RQ refused");
            super::screen::refuse(socket, refusal).await;
            return None;
        }
        Err(_) => {
            tracing::info!("no A-ASSOCIATE-RQ within the ARTIM timeout");
            return None;
        }
    }
    match tokio::time::timeout(artim, options.establish_async(socket)).await {
        Ok(Ok(inner)) if read_by_screen => Some((Wire::Plain(Box::new(inner)), proved)),
        // Too long to screen: its identity is checked now instead.
        Ok(Ok(inner)) => {
            prove_established(Wire::Plain(Box::new(inner)), claimed, ctx, config, &peer).await
        }
        Ok(Err(e)) => {
            tracing::info!(error = %e, "association not established");
            None
        }
        Err(_) => {
            tracing::info!("no A-ASSOCIATE-RQ within the ARTIM timeout");
            None
        }
    }
}

/// A TLS connection: the handshake, then the association inside it. A
/// certificate-bound AE title is checked against the handshake's client
/// certificate before the association is accepted (A-ASSOCIATE-RJ); the
/// request cannot be screened before the handshake, so the registry check
/// aborts right after establishment instead.
pub(super) async fn accept_tls(
    socket: TcpStream,
    options: Options,
    claimed: &ClaimedUser,
    ctx: &ServiceContext,
    config: &DicomConfig,
) -> Option<(Wire, Option<User>)> {
    let address = socket
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let wire = match tokio::time::timeout(config.artim_timeout, options.establish_tls_async(socket))
        .await
    {
        Ok(Ok(inner)) => Wire::Tls(Box::new(inner)),
        Ok(Err(e)) => {
            tracing::info!(error = %e, "TLS association not established");
            return None;
        }
        Err(_) => {
            tracing::info!("no TLS handshake and A-ASSOCIATE-RQ within the ARTIM timeout");
            return None;
        }
    };
    let calling = wire.peer_ae_title().trim().to_owned();
    if config.refuse_unknown_peers && !registered(ctx, Some(&calling)).await {
        tracing::warn!(%calling, "TLS association aborted: calling AE title not registered");
        let _ = wire.abort().await;
        return None;
    }
    prove_established(wire, claimed, ctx, config, &address).await
}

/// Check the user identity of an association accepted without a look at
/// its request; abort it when the identity is refused.
async fn prove_established(
    wire: Wire,
    claimed: &ClaimedUser,
    ctx: &ServiceContext,
    config: &DicomConfig,
    address: &str,
) -> Option<(Wire, Option<User>)> {
    let calling = wire.peer_ae_title().trim().to_owned();
    match prove(claimed.take(), ctx, config, address, &calling).await {
        Ok(user) => Some((wire, user)),
        Err(()) => {
            let _ = wire.abort().await;
            None
        }
    }
}

/// Whether `calling` is in the peer registry; a failed look-up counts as
/// not registered.
async fn registered(ctx: &ServiceContext, calling: Option<&str>) -> bool {
    match calling {
        Some(ae) => ctx.peers.get(ae).await.is_ok(),
        None => false,
    }
}
