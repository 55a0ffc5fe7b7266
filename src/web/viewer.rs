//! The OHIF viewer at `/viewer`: static files from the folder
//! `scripts/install-viewer` prepares, with every unknown path answered by
//! `index.html` so the viewer's own routes (e.g. `/viewer/viewer?…`) load.

use std::path::{Path, PathBuf};

use actix_files::{Files, NamedFile};
use actix_web::dev::{fn_service, ServiceRequest, ServiceResponse};
use actix_web::{web, HttpResponse};

/// Mount the viewer, or a page saying how to install it when the folder
/// is missing.
pub fn routes(cfg: &mut web::ServiceConfig, dir: &Path) {
    let index = dir.join("index.html");
    if !index.is_file() {
        // The log has the folder; a page anyone can open names no server path.
        tracing::warn!(dir = %dir.display(), "the OHIF viewer folder has no index.html");
        let message = "The OHIF viewer is not installed on this server. Its administrator \
             can run scripts/install-viewer, or set [viewer] dir in the configuration."
            .to_owned();
        cfg.route(
            "/viewer{tail:.*}",
            web::get().to(move || {
                let message = message.clone();
                async move {
                    HttpResponse::ServiceUnavailable()
                        .content_type("text/plain; charset=utf-8")
                        .body(message)
                }
            }),
        );
        return;
    }
    let fallback: PathBuf = index;
    cfg.route(
        "/viewer",
        web::get().to(|| async {
            HttpResponse::PermanentRedirect()
                .insert_header(("Location", "/viewer/"))
                .finish()
        }),
    );
    cfg.service(
        Files::new("/viewer", dir)
            .index_file("index.html")
            .default_handler(fn_service(move |req: ServiceRequest| {
                let fallback = fallback.clone();
                async move {
                    let (req, _) = req.into_parts();
                    let file = NamedFile::open_async(&fallback).await?;
                    let response = file.into_response(&req);
                    Ok(ServiceResponse::new(req, response))
                }
            })),
    );
}
