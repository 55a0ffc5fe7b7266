//! The study browser at `/`: a static page, its script and style, built
//! into the binary so the run command needs no other files. It searches
//! through `/api/v1/search` in the caller's session.

use actix_web::http::header::CONTENT_TYPE;
use actix_web::{web, HttpResponse};

const PAGE: &str = include_str!("../../web/browser/index.html");
const SCRIPT: &str = include_str!("../../web/browser/app.js");
const STYLE: &str = include_str!("../../web/browser/app.css");

pub fn pages(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(page))
        .route("/ui/app.js", web::get().to(script))
        .route("/ui/app.css", web::get().to(style));
}

fn file(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, content_type))
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Frame-Options", "DENY"))
        .body(body)
}

async fn page() -> HttpResponse {
    file("text/html; charset=utf-8", PAGE)
}

async fn script() -> HttpResponse {
    file("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> HttpResponse {
    file("text/css; charset=utf-8", STYLE)
}
