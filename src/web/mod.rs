//! The HTTP edge: health, readiness, Prometheus metrics, the JSON API
//! (status, remote AE registry, forwarding), DICOMweb ([`crate::dicomweb`])
//! and the OHIF viewer ([`viewer`]).
//!
//! [`auth`] is the single place requests are authenticated and authorised;
//! every request goes through it, and [`crate::auth::access`] says what
//! each route needs. [`account`] holds the login page and the caller's own
//! account; [`users`] lets admins manage everyone's.

mod account;
mod audit;
mod auth;
mod browser;
mod error;
mod forwarding;
mod front_page;
mod hl7;
mod oidc;
mod peers;
mod referring;
mod reports;
mod search;
mod shares;
mod status;
mod users;
mod viewer;
mod worklist;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Instant;

use actix_web::http::header::{ContentEncoding, CONTENT_ENCODING, CONTENT_TYPE};
use actix_web::middleware::{from_fn, Compress, Next};
use actix_web::{
    body::EitherBody, body::MessageBody, dev::ServiceRequest, dev::ServiceResponse, web, App,
    HttpServer,
};

use crate::config::DicomWebConfig;
use crate::index::Index;
use crate::ingest::Ingest;
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
    pub ingest: Ingest,
    pub ris: crate::ris::Ris,
    pub dicomweb: DicomWebConfig,
    /// Requests in progress per client address.
    pub clients: Arc<crate::limits::PerClient>,
    /// Send Strict-Transport-Security (on HTTPS only).
    pub hsts: bool,
    pub auditor: crate::audit::Auditor,
    pub recent_retrieves: Arc<audit::RecentRetrieves>,
    pub search: Arc<crate::search::SearchIndex>,
}

/// Build and start the HTTP server on an already-bound listener, speaking
/// HTTPS when `tls` is given. The caller stops it through the returned
/// handle.
pub fn start(
    listener: TcpListener,
    state: AppState,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<actix_web::dev::Server> {
    let hsts = tls.is_some() && state.hsts;
    let server = HttpServer::new(move || {
        let viewer_dir = state.dicomweb.viewer_dir.clone();
        App::new()
            .app_data(web::Data::new(state.clone()))
            .wrap(from_fn(auth::authenticate))
            .wrap(actix_web::middleware::Condition::new(
                hsts,
                actix_web::middleware::DefaultHeaders::new().add((
                    "Strict-Transport-Security",
                    "max-age=31536000; includeSubDomains",
                )),
            ))
            .wrap(from_fn(limit_per_client))
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
            // Before the /api/v1 scope, which would otherwise claim it.
            .service(
                web::scope("/api/v1/studies/{study}/archive")
                    .wrap(from_fn(referring::own_studies_only))
                    .wrap(from_fn(audit::dicomweb))
                    .configure(crate::dicomweb::archive_routes),
            )
            .service(
                web::scope("/api/v1")
                    .configure(account::routes)
                    .configure(users::routes)
                    .configure(audit::routes)
                    .route("/stats", web::get().to(status::stats))
                    .route("/forwarding", web::get().to(forwarding::forwarding))
                    .configure(peers::routes)
                    .configure(hl7::routes)
                    .configure(worklist::routes)
                    .configure(reports::routes)
                    .configure(shares::routes)
                    .configure(search::routes),
            )
            .service(
                web::scope("/dicom-web")
                    .wrap(from_fn(referring::own_studies_only))
                    .wrap(from_fn(audit::dicomweb))
                    .wrap(from_fn(identity_unless_json))
                    .wrap(Compress::default())
                    .wrap(cors(&state.dicomweb.cors_allowed_origins))
                    .configure(crate::dicomweb::routes),
            )
            .service(
                web::scope("/wado")
                    .wrap(from_fn(referring::own_studies_only))
                    .wrap(from_fn(audit::dicomweb))
                    .wrap(cors(&state.dicomweb.cors_allowed_origins))
                    .configure(crate::dicomweb::wado_uri_routes),
            )
            .configure(account::pages)
            .configure(browser::pages)
            .configure(oidc::pages)
            .configure(|cfg| viewer::routes(cfg, &viewer_dir))
    })
    // Responses go out in several writes (headers, chunks); with Nagle's
    // algorithm each exchange would wait for the client's delayed ACK.
    .on_connect(|connection, _| {
        if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
            let _ = tcp.set_nodelay(true);
        }
    })
    .workers(4)
    .disable_signals()
    .shutdown_timeout(10);
    let server = match tls {
        Some(config) => server.listen_rustls_0_23(listener, (*config).clone())?,
        None => server.listen(listener)?,
    };
    Ok(server.run())
}

/// At most `http.max_requests_per_ip` requests from one address in
/// progress at once; past that 503 with Retry-After, before any handler
/// runs. Behind a reverse proxy every client shares its address, which is
/// why the default is generous.
async fn limit_per_client(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let clients = req
        .app_data::<web::Data<AppState>>()
        .map(|state| state.clients.clone());
    let slot = match (req.peer_addr(), clients) {
        (Some(peer), Some(clients)) => match clients.take(peer.ip()) {
            Some(slot) => Some(slot),
            None => {
                let busy = actix_web::HttpResponse::ServiceUnavailable()
                    .insert_header(("Retry-After", "1"))
                    .body("too many requests from this address at once");
                return Ok(req.into_response(busy).map_into_right_body());
            }
        },
        _ => None,
    };
    let response = next.call(req).await?;
    drop(slot);
    Ok(response.map_into_left_body())
}

/// Only JSON is worth compressing: images, frames and DICOM objects are
/// compressed already or too large to spend CPU on, so they are marked
/// `identity` before the compressor sees them.
async fn identity_unless_json(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let mut response = next.call(req).await?;
    let json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if !json && !response.headers().contains_key(CONTENT_ENCODING) {
        response.headers_mut().insert(
            CONTENT_ENCODING,
            ContentEncoding::Identity.to_header_value(),
        );
    }
    Ok(response)
}

/// CORS for browsers on other origins, when configured.
fn cors(origins: &[String]) -> actix_cors::Cors {
    let mut cors = actix_cors::Cors::default()
        .allowed_methods(["GET", "POST", "OPTIONS"])
        .allow_any_header()
        .expose_headers(["Warning", "ETag", "Content-Location", "Content-Range"])
        .max_age(3600);
    for origin in origins {
        cors = if origin == "*" {
            cors.allow_any_origin()
        } else {
            cors.allowed_origin(origin)
        };
    }
    cors
}
