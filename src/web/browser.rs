//! The study browser at `/`, the study page at `/study/{uid}` and the slide
//! page at `/slide/{study}/{series}`: static pages, their scripts and style,
//! built into the binary so the run command needs no other files. They
//! search through `/api/v1/search` and read studies through DICOMweb and
//! the JSON API in the caller's session, so each shows only what the
//! caller's roles allow.

use actix_web::http::header::CONTENT_TYPE;
use actix_web::{web, HttpResponse};

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Route, media type, content.
const FILES: &[(&str, &str, &str)] = &[
    ("/", HTML, include_str!("../../web/browser/index.html")),
    ("/ui/app.js", JS, include_str!("../../web/browser/app.js")),
    (
        "/ui/app.css",
        CSS,
        include_str!("../../web/browser/app.css"),
    ),
    (
        "/study/{uid}",
        HTML,
        include_str!("../../web/browser/study.html"),
    ),
    (
        "/ui/study.js",
        JS,
        include_str!("../../web/browser/study.js"),
    ),
    ("/ui/cine.js", JS, include_str!("../../web/browser/cine.js")),
    (
        "/slide/{study}/{series}",
        HTML,
        include_str!("../../web/browser/slide.html"),
    ),
    (
        "/ui/slide.js",
        JS,
        include_str!("../../web/browser/slide.js"),
    ),
];

pub fn pages(cfg: &mut web::ServiceConfig) {
    for &(path, content_type, body) in FILES {
        cfg.route(
            path,
            web::get().to(move || async move { file(content_type, body) }),
        );
    }
    cfg.route("/favicon.ico", web::get().to(no_icon));
}

fn file(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, content_type))
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Frame-Options", "DENY"))
        .body(body)
}

/// Browsers ask every page for it; without an answer each page logs an
/// error.
async fn no_icon() -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header(("Cache-Control", "max-age=86400"))
        .finish()
}
