//! The study browser at `/`, the study page at `/study/{uid}` and the slide
//! page at `/slide/{study}/{series}`: static
//! pages, their scripts and style, built into the binary so the run
//! command needs no other files. They search through `/api/v1/search` and
//! read studies through DICOMweb and the JSON API in the caller's session,
//! so each shows only what the caller's roles allow.

use actix_web::http::header::CONTENT_TYPE;
use actix_web::{web, HttpResponse};

const PAGE: &str = include_str!("../../web/browser/index.html");
const SCRIPT: &str = include_str!("../../web/browser/app.js");
const STYLE: &str = include_str!("../../web/browser/app.css");
const STUDY_PAGE: &str = include_str!("../../web/browser/study.html");
const STUDY_SCRIPT: &str = include_str!("../../web/browser/study.js");
const CINE_SCRIPT: &str = include_str!("../../web/browser/cine.js");
const SLIDE_PAGE: &str = include_str!("../../web/browser/slide.html");
const SLIDE_SCRIPT: &str = include_str!("../../web/browser/slide.js");

pub fn pages(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(page))
        .route("/ui/app.js", web::get().to(script))
        .route("/ui/app.css", web::get().to(style))
        .route("/study/{uid}", web::get().to(study_page))
        .route("/ui/study.js", web::get().to(study_script))
        .route("/ui/cine.js", web::get().to(cine_script))
        .route("/slide/{study}/{series}", web::get().to(slide_page))
        .route("/ui/slide.js", web::get().to(slide_script))
        .route("/favicon.ico", web::get().to(no_icon));
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

async fn study_page() -> HttpResponse {
    file("text/html; charset=utf-8", STUDY_PAGE)
}

async fn study_script() -> HttpResponse {
    file("text/javascript; charset=utf-8", STUDY_SCRIPT)
}

async fn cine_script() -> HttpResponse {
    file("text/javascript; charset=utf-8", CINE_SCRIPT)
}

async fn slide_page() -> HttpResponse {
    file("text/html; charset=utf-8", SLIDE_PAGE)
}

async fn slide_script() -> HttpResponse {
    file("text/javascript; charset=utf-8", SLIDE_SCRIPT)
}

/// Browsers ask every page for it; without an answer each page logs an
/// error.
async fn no_icon() -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header(("Cache-Control", "max-age=86400"))
        .finish()
}
