//! The study browser at `/`, the study page at `/study/{uid}` and the slide
//! page at `/slide/{study}/{series}`: static pages, their scripts and style,
//! built into the binary so the run command needs no other files. They
//! search through `/api/v1/search` and read studies through DICOMweb and
//! the JSON API in the caller's session, so each shows only what the
//! caller's roles allow.

use std::sync::LazyLock;

use actix_web::http::header::CONTENT_TYPE;
use actix_web::{web, HttpResponse};

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

const APP_JS: &str = include_str!("../../web/browser/app.js");
const APP_CSS: &str = include_str!("../../web/browser/app.css");
const STYLE_LINK: &str = r#"<link rel="stylesheet" href="/ui/app.css">"#;
const SCRIPT_TAG: &str = r#"<script src="/ui/app.js"></script>"#;

/// The study browser, the first page a user opens, with its style and
/// script inline: in a new tab, fetching them took Chromium a third of the
/// time to the first results painted, though the server answers each in
/// under a millisecond.
static FRONT_PAGE: LazyLock<String> = LazyLock::new(|| {
    include_str!("../../web/browser/index.html")
        .replacen(STYLE_LINK, &format!("<style>{APP_CSS}</style>"), 1)
        .replacen(SCRIPT_TAG, &format!("<script>{APP_JS}</script>"), 1)
});

/// Route, media type, content.
const FILES: &[(&str, &str, &str)] = &[
    ("/ui/app.js", JS, APP_JS),
    ("/ui/app.css", CSS, APP_CSS),
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

/// The front page split where the first results go: before its script.
static FRONT_PAGE_PARTS: LazyLock<(String, String)> = LazyLock::new(|| {
    let at = FRONT_PAGE.find("<script>").unwrap_or(FRONT_PAGE.len());
    let (before, after) = FRONT_PAGE.split_at(at);
    (before.to_owned(), after.to_owned())
});

pub fn pages(cfg: &mut web::ServiceConfig) {
    let front: &'static (String, String) = &FRONT_PAGE_PARTS;
    cfg.route(
        "/",
        web::get().to(move |req, state| super::front_page::front_page(req, state, front)),
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_front_page_carries_its_style_and_script() {
        let page = FRONT_PAGE.as_str();
        assert!(!page.contains(STYLE_LINK) && !page.contains(SCRIPT_TAG));
        assert!(page.contains(APP_CSS) && page.contains(APP_JS));
        assert!(!APP_JS.contains("</script"), "would end the inline script");
        let (before, after) = &*FRONT_PAGE_PARTS;
        assert!(after.starts_with("<script>") && !before.contains("<script"));
    }
}
