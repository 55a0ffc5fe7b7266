//! The study browser's page at `/`, sent with the first page of results
//! of the search its address names when the caller may search. A new tab
//! then paints results without waiting for its script to ask for them.
//! The script uses them only if they answer exactly the request it would
//! have sent (`query`), and asks the server otherwise.

use actix_web::http::header::CONTENT_TYPE;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use url::form_urlencoded;

use super::search::{answer, Params};
use super::AppState;
use crate::auth::access;
use crate::auth::Principal;

/// Results per page, as the script asks for them.
const PAGE: usize = 50;

/// The parts of the study browser's address the script searches by.
#[derive(Default)]
struct Address {
    q: Option<String>,
    preset: Option<String>,
    from: Option<String>,
    to: Option<String>,
    modality: Option<String>,
    status: Option<String>,
    sort: Option<String>,
    offset: Option<String>,
}

impl Address {
    /// The first value of each key, as `URLSearchParams.get` takes it.
    fn parse(query: &str) -> Self {
        let mut address = Address::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match key.as_ref() {
                "q" => &mut address.q,
                "preset" => &mut address.preset,
                "from" => &mut address.from,
                "to" => &mut address.to,
                "modality" => &mut address.modality,
                "status" => &mut address.status,
                "sort" => &mut address.sort,
                "offset" => &mut address.offset,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(value.into_owned());
            }
        }
        address
    }

    /// The search the script sends for this address, and the query string
    /// it sends it as; `None` when that depends on the browser (date
    /// presets relative to its clock) or the address is not one the script
    /// makes.
    fn search(&self) -> Option<(Params, String)> {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let (from, to) = match text(&self.preset).as_str() {
            "" => (String::new(), String::new()),
            "range" => (text(&self.from), text(&self.to)),
            _ => return None,
        };
        let offset = match self.offset.as_deref() {
            None | Some("") => 0,
            Some(digits) if digits.bytes().all(|b| b.is_ascii_digit()) && digits.len() < 10 => {
                digits.parse().ok()?
            }
            Some(_) => return None,
        };
        let modality = text(&self.modality)
            .split(',')
            .filter(|m| !m.is_empty())
            .collect::<Vec<_>>()
            .join(",");
        let sort = Some(text(&self.sort)).filter(|s| !s.is_empty());
        let sort = sort.unwrap_or_else(|| "relevance".to_owned());
        let status = text(&self.status);

        let mut query = form_urlencoded::Serializer::new(String::new());
        query
            .append_pair("q", &text(&self.q))
            .append_pair("sort", &sort)
            .append_pair("limit", &PAGE.to_string())
            .append_pair("offset", &offset.to_string());
        let present = |v: &String| Some(v.clone()).filter(|v| !v.is_empty());
        for (key, value) in [
            ("from", &from),
            ("to", &to),
            ("modality", &modality),
            ("status", &status),
        ] {
            if !value.is_empty() {
                query.append_pair(key, value);
            }
        }
        let params = Params {
            q: text(&self.q),
            modality: present(&modality),
            from: present(&from),
            to: present(&to),
            status: present(&status),
            sort: Some(sort),
            limit: Some(PAGE),
            offset: Some(offset),
        };
        Some((params, query.finish()))
    }
}

/// The page, with the results when there are any to give.
pub async fn front_page(
    req: HttpRequest,
    state: web::Data<AppState>,
    page: &'static (String, String),
) -> HttpResponse {
    let (before, after) = page;
    let (cache, body) = match first_results(&req, &state).await {
        // Patient data: kept by no cache.
        Some(first) => (
            "no-store",
            format!(
                r#"{before}<script type="application/json" id="first">{first}</script>{after}"#
            ),
        ),
        None => ("no-cache", format!("{before}{after}")),
    };
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header(("Cache-Control", cache))
        .insert_header(("X-Frame-Options", "DENY"))
        .body(body)
}

/// The first results as JSON safe inside a script element, if the caller's
/// roles allow searching and the search succeeds. Errors are left for the
/// script's own request to report.
async fn first_results(req: &HttpRequest, state: &AppState) -> Option<String> {
    let may_search = req
        .extensions()
        .get::<Principal>()
        .is_some_and(|p| access::allows(access::required("GET", "/api/v1/search"), p.roles.iter()));
    if !may_search {
        return None;
    }
    let (params, query) = Address::parse(req.query_string()).search()?;
    let page = answer(req, state, params).await.ok()?;
    let json = serde_json::to_string(&serde_json::json!({ "query": query, "page": page })).ok()?;
    Some(script_safe(&json))
}

/// JSON that no text in it can end the script element holding it: `<`,
/// `>` and `&` only occur inside JSON strings, where escapes mean the same.
fn script_safe(json: &str) -> String {
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(address: &str) -> Option<String> {
        Address::parse(address).search().map(|(_, q)| q)
    }

    #[test]
    fn the_query_is_the_one_the_script_sends() {
        // As `new URLSearchParams({q, sort, limit, offset})` and the
        // optional keys serialise in app.js.
        assert_eq!(
            query("").as_deref(),
            Some("q=&sort=relevance&limit=50&offset=0")
        );
        assert_eq!(
            query("q=m%C3%BCller+chest&modality=CT,,MR&status=final&offset=50&sort=date")
                .as_deref(),
            Some("q=m%C3%BCller+chest&sort=date&limit=50&offset=50&modality=CT%2CMR&status=final")
        );
        assert_eq!(
            query("preset=range&from=2024-01-01&to=2024-12-31&q=a&q=b").as_deref(),
            Some("q=a&sort=relevance&limit=50&offset=0&from=2024-01-01&to=2024-12-31")
        );
        // Dates outside a range preset are not searched by, as in app.js.
        assert_eq!(
            query("from=2024-01-01").as_deref(),
            Some("q=&sort=relevance&limit=50&offset=0")
        );
    }

    #[test]
    fn addresses_that_depend_on_the_browser_are_left_to_it() {
        assert_eq!(query("preset=7"), None);
        assert_eq!(query("preset=today"), None);
        assert_eq!(query("offset=-1"), None);
        assert_eq!(query("offset=1e3"), None);
    }

    #[test]
    fn nothing_in_the_results_ends_the_script() {
        let safe = script_safe(r#"{"name":"</script><script>alert(1)</script>&amp;"}"#);
        assert!(!safe.contains('<') && !safe.contains('>') && !safe.contains('&'));
        let back: serde_json::Value = serde_json::from_str(&safe).expect("still JSON");
        assert_eq!(back["name"], "</script><script>alert(1)</script>&amp;");
    }
}
