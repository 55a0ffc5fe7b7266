//! The HTTP edge: health, readiness, Prometheus metrics and the JSON API
//! (status, remote AE registry). Later DICOMweb and the viewer mount here too.
//!
//! [`auth`] is the single place requests are authenticated; every route
//! except the probes goes through it.

mod auth;
mod error;
mod forwarding;
mod peers;
mod status;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Instant;

use actix_web::{web, App, HttpServer};

use crate::index::Index;
use crate::peers::PeerRegistry;
use crate::storage::Storage;
use crate::telemetry::Metrics;

pub use auth::AuthPolicy;

/// Handles shared by every request.
#[derive(Clone)]
pub struct AppState {
    pub index: Index,
    pub storage: Storage,
    pub metrics: Arc<Metrics>,
    pub started: Instant,
    pub auth: AuthPolicy,
    pub peers: PeerRegistry,
}

/// Build and start the HTTP server on an already-bound listener. The caller
/// stops it through the returned handle.
pub fn start(listener: TcpListener, state: AppState) -> std::io::Result<actix_web::dev::Server> {
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .wrap(
                actix_web::middleware::Logger::new("%a \"%r\" %s %Dms").log_target("tessera::http"),
            )
            .route("/healthz", web::get().to(status::healthz))
            .route("/readyz", web::get().to(status::readyz))
            .route("/metrics", web::get().to(status::metrics))
            .app_data(
                web::JsonConfig::default()
                    .limit(64 * 1024)
                    .error_handler(|err, _req| {
                        error::ApiError::BadRequest(format!("invalid JSON body: {err}")).into()
                    }),
            )
            .service(
                web::scope("/api/v1")
                    .wrap(actix_web::middleware::from_fn(auth::authenticate))
                    .route("/stats", web::get().to(status::stats))
                    .route("/forwarding", web::get().to(forwarding::forwarding))
                    .configure(peers::routes),
            )
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(10)
    .listen(listener)?
    .run();
    Ok(server)
}
