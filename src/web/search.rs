//! `GET /api/v1/search`: the study browser's search, over the full-text
//! index. A referring physician finds only their own studies and those
//! shared with them, as everywhere else. Each search is audited as a
//! query.

use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::audit::by;
use super::error::{parsed, ApiError};
use super::AppState;
use crate::audit::Event;
use crate::auth::Principal;
use crate::search::{SearchError, SearchPage, SearchRequest, Sort, Visibility, MAX_LIMIT};

/// The longest query text taken.
const MAX_QUERY: usize = 1000;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/search", web::get().to(search));
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    #[serde(default)]
    pub q: String,
    /// Comma-separated, any of.
    pub modality: Option<String>,
    /// YYYYMMDD or YYYY-MM-DD, inclusive.
    pub from: Option<String>,
    pub to: Option<String>,
    /// Comma-separated, any of: scheduled, arrived, performed, reported,
    /// final.
    pub status: Option<String>,
    /// relevance (default), date (newest first), date_asc.
    pub sort: Option<String>,
    pub limit: Option<usize>,
    pub offset: Option<usize>,
}

fn list(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn date(key: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let digits: String = value.chars().filter(|c| *c != '-').collect();
    let n = crate::search::document::date_number(&digits);
    if n == 0 {
        return Err(ApiError::BadRequest(format!(
            "{key} must be a date as YYYYMMDD or YYYY-MM-DD: {value:?}"
        )));
    }
    Ok(Some(n))
}

async fn search(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: Result<web::Query<Params>, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let page = answer(&req, &state, parsed(query)?).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// Run and audit one search for the caller of `req`, under their roles.
pub(super) async fn answer(
    req: &HttpRequest,
    state: &AppState,
    params: Params,
) -> Result<SearchPage, ApiError> {
    if params.q.len() > MAX_QUERY {
        return Err(ApiError::BadRequest(format!(
            "the query is longer than {MAX_QUERY} bytes"
        )));
    }
    let sort = match params.sort.as_deref().unwrap_or("relevance") {
        "relevance" => Sort::Relevance,
        "date" => Sort::Newest,
        "date_asc" => Sort::Oldest,
        other => {
            return Err(ApiError::BadRequest(format!(
                "sort must be relevance, date or date_asc, not {other:?}"
            )))
        }
    };
    let statuses = list(params.status.as_deref());
    const STATUSES: [&str; 5] = ["scheduled", "arrived", "performed", "reported", "final"];
    if let Some(bad) = statuses.iter().find(|s| !STATUSES.contains(&s.as_str())) {
        return Err(ApiError::BadRequest(format!(
            "unknown status {bad:?} ({})",
            STATUSES.join(", ")
        )));
    }
    let limit = params.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    let referrer = req.extensions().get::<Principal>().and_then(|p| {
        p.only_referred_by()
            .map(|name| (p.user.clone(), name.to_owned()))
    });
    let only = match referrer {
        None => None,
        Some((user, name)) => Some(Visibility {
            referrer_folded: crate::model::fold_for_matching(&name),
            shared: state
                .index
                .shared_studies(&user)
                .await
                .map_err(|e| ApiError::Unavailable(e.to_string()))?,
        }),
    };
    let request = SearchRequest {
        q: params.q.clone(),
        modalities: list(params.modality.as_deref()),
        from: date("from", params.from.as_deref())?,
        to: date("to", params.to.as_deref())?,
        statuses,
        sort,
        limit,
        offset: params.offset.unwrap_or(0),
        only,
    };
    let search = state.search.clone();
    let page = web::block(move || search.search(&request))
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .map_err(|e| match e {
            SearchError::Query(q) => ApiError::BadRequest(format!("invalid query: {q}")),
            other => ApiError::Unavailable(other.to_string()),
        })?;
    state.auditor.record(
        by(req, Event::Queried)
            .studies(
                page.results
                    .iter()
                    .map(|h| h.study.study_instance_uid.clone()),
            )
            .detail(format!("search {:?}", req.query_string())),
    );
    Ok(page)
}
