//! QIDO-RS (PS3.18 10.6): query parameters become a [`Query`], matched by
//! the same SQL as C-FIND; each match is answered as DICOM JSON with the
//! level's default attributes, the matching keys and any `includefield`.

use actix_web::{web, HttpRequest, HttpResponse};
use dicom_core::dictionary::DataDictionary;
use dicom_core::Tag;
use dicom_dictionary_std::StandardDataDictionary;
use futures::StreamExt;

use super::accept::percent_decode;
use super::json::{push_key, push_string, write_element};
use super::{base_url, path_uid, DicomWebError};
use crate::index::FindRow;
use crate::query::{Attribute, Level, Query};
use crate::web::AppState;

use Attribute::*;

/// PS3.18 table 10.6.3-3 (study), -4 (series), -5 (instance).
const STUDY_DEFAULTS: &[Attribute] = &[
    StudyDate,
    StudyTime,
    AccessionNumber,
    ModalitiesInStudy,
    ReferringPhysicianName,
    TimezoneOffsetFromUtc,
    PatientName,
    PatientId,
    PatientBirthDate,
    PatientSex,
    StudyInstanceUid,
    StudyId,
    StudyDescription,
    NumberOfStudyRelatedSeries,
    NumberOfStudyRelatedInstances,
];
const SERIES_DEFAULTS: &[Attribute] = &[
    Modality,
    TimezoneOffsetFromUtc,
    SeriesDescription,
    SeriesInstanceUid,
    PerformedProcedureStepStartDate,
    PerformedProcedureStepStartTime,
    SeriesNumber,
    NumberOfSeriesRelatedInstances,
    ScheduledProcedureStepId,
    RequestedProcedureId,
];
const INSTANCE_DEFAULTS: &[Attribute] = &[
    SopClassUid,
    SopInstanceUid,
    TimezoneOffsetFromUtc,
    InstanceNumber,
    Rows,
    Columns,
    BitsAllocated,
    NumberOfFrames,
];

const TRUNCATED_WARNING: &str = "299 tessera \"The number of results exceeded the maximum \
     supported by the server. Additional results can be requested.\"";

/// Parent UIDs fixed by the path.
#[derive(Default)]
struct Parents {
    study: Option<String>,
    series: Option<String>,
}

pub async fn studies(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, DicomWebError> {
    search(&req, &state, Level::Study, Parents::default()).await
}

pub async fn series(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, DicomWebError> {
    search(&req, &state, Level::Series, Parents::default()).await
}

pub async fn instances(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, DicomWebError> {
    search(&req, &state, Level::Image, Parents::default()).await
}

pub async fn series_in_study(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, DicomWebError> {
    in_study(&req, &state, &path, Level::Series).await
}

pub async fn instances_in_study(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, DicomWebError> {
    in_study(&req, &state, &path, Level::Image).await
}

async fn in_study(
    req: &HttpRequest,
    state: &AppState,
    study: &str,
    level: Level,
) -> Result<HttpResponse, DicomWebError> {
    let parents = Parents {
        study: Some(path_uid(study)?),
        series: None,
    };
    search(req, state, level, parents).await
}

pub async fn instances_in_series(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, DicomWebError> {
    let (study, series) = path.into_inner();
    let parents = Parents {
        study: Some(path_uid(&study)?),
        series: Some(path_uid(&series)?),
    };
    search(&req, &state, Level::Image, parents).await
}

/// A referring physician finds only studies that name them or were
/// shared with them; any Referring Physician's Name key the request gave
/// still narrows within those.
fn limit_to_referrer(req: &HttpRequest, query: &mut Query) {
    use actix_web::HttpMessage;
    let extensions = req.extensions();
    let Some(principal) = extensions.get::<crate::auth::Principal>() else {
        return;
    };
    if let Some(name) = principal.only_referred_by() {
        query.referrer = Some(crate::query::Referrer {
            user: principal.user.clone(),
            physician_folded: crate::model::fold_for_matching(name),
        });
    }
}

/// A parsed QIDO request.
struct Search {
    query: Query,
    /// Attributes answered for each match.
    returned: Vec<Attribute>,
    limit: Option<usize>,
    offset: usize,
    /// Requested attributes the index does not hold.
    unsupported: Vec<String>,
}

fn parse_tag(name: &str) -> Option<Tag> {
    if name.len() == 8 && name.chars().all(|c| c.is_ascii_hexdigit()) {
        let group = u16::from_str_radix(&name[..4], 16).ok()?;
        let element = u16::from_str_radix(&name[4..], 16).ok()?;
        return Some(Tag(group, element));
    }
    StandardDataDictionary.by_name(name).map(|e| e.tag.inner())
}

/// A matching attribute: a keyword or tag, or `sequence.attribute` for an
/// attribute of a sequence item (PS3.18 8.3.4.1). `None`: a valid attribute
/// the index does not hold.
fn parse_attribute(name: &str) -> Result<Option<Attribute>, DicomWebError> {
    let unknown =
        || DicomWebError::BadRequest(format!("unknown query parameter or attribute {name:?}"));
    match name.split_once('.') {
        Some((sequence, item)) => {
            let sequence = parse_tag(sequence).ok_or_else(unknown)?;
            let item = parse_tag(item).ok_or_else(unknown)?;
            Ok(Attribute::in_sequence(sequence, item))
        }
        None => Ok(Attribute::from_tag(parse_tag(name).ok_or_else(unknown)?)),
    }
}

fn defaults(level: Level, parents: &Parents) -> Vec<Attribute> {
    let mut out: Vec<Attribute> = match level {
        Level::Patient | Level::Study => STUDY_DEFAULTS.to_vec(),
        Level::Series => SERIES_DEFAULTS.to_vec(),
        Level::Image => INSTANCE_DEFAULTS.to_vec(),
    };
    // A level its path does not fix also returns its defaults (PS3.18
    // 10.6.3.3.2-3), so results can be placed: instances of a study name
    // their series.
    if level >= Level::Series && parents.study.is_none() {
        out.extend_from_slice(STUDY_DEFAULTS);
    }
    if level == Level::Image && parents.series.is_none() {
        out.extend_from_slice(SERIES_DEFAULTS);
    }
    out
}

fn parse_search(
    query_string: &str,
    level: Level,
    parents: &Parents,
    fuzzy_default: bool,
) -> Result<Search, DicomWebError> {
    let mut query = Query::new(level);
    query.fuzzy_names = fuzzy_default;
    let mut returned = defaults(level, parents);
    let mut limit = None;
    let mut offset = 0;
    let mut unsupported = Vec::new();
    let bad = |msg: String| DicomWebError::BadRequest(msg);
    for pair in query_string.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(name);
        let value = percent_decode(value);
        match name.as_str() {
            "limit" => {
                limit = Some(value.parse::<usize>().map_err(|_| {
                    bad(format!(
                        "limit must be a non-negative integer, not {value:?}"
                    ))
                })?)
            }
            "offset" => {
                offset = value.parse::<usize>().map_err(|_| {
                    bad(format!(
                        "offset must be a non-negative integer, not {value:?}"
                    ))
                })?
            }
            "fuzzymatching" => {
                query.fuzzy_names = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(bad(format!(
                            "fuzzymatching must be true or false, not {other:?}"
                        )))
                    }
                }
            }
            "includefield" => {
                for field in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                    if field == "all" {
                        returned.extend(Attribute::ALL.iter().filter(|a| a.level() <= level));
                        continue;
                    }
                    let tag = parse_tag(field).ok_or_else(|| {
                        bad(format!("unknown attribute {field:?} in includefield"))
                    })?;
                    let members = Attribute::members_of(tag);
                    if !members.is_empty() {
                        returned.extend(members.iter().filter(|a| a.level() <= level));
                        continue;
                    }
                    match Attribute::from_tag(tag) {
                        Some(a) if a.level() <= level => returned.push(a),
                        _ => unsupported.push(field.to_owned()),
                    }
                }
            }
            "accept" | "emptyvaluematching" | "multiplevaluematching" => {}
            _ => {
                let Some(attribute) = parse_attribute(&name)? else {
                    unsupported.push(name.clone());
                    continue;
                };
                if attribute.level() > level {
                    return Err(bad(format!(
                        "{name} is a {} level attribute and cannot be matched in a {} level search",
                        attribute.level().keyword().to_lowercase(),
                        level.keyword().to_lowercase()
                    )));
                }
                // QIDO separates list values by commas; the query model by
                // backslashes.
                let value = match attribute.kind() {
                    crate::query::ValueKind::Uid | crate::query::ValueKind::List => {
                        value.replace(',', "\\")
                    }
                    _ => value,
                };
                query
                    .add_key(attribute, &value)
                    .map_err(|e| bad(format!("{name}: {e}")))?;
                returned.push(attribute);
            }
        }
    }
    if let Some(study) = &parents.study {
        query
            .add_key(StudyInstanceUid, study)
            .map_err(|e| bad(e.to_string()))?;
    }
    if let Some(series) = &parents.series {
        query
            .add_key(SeriesInstanceUid, series)
            .map_err(|e| bad(e.to_string()))?;
    }
    let mut seen = std::collections::HashSet::new();
    returned.retain(|a| seen.insert(*a));
    Ok(Search {
        query,
        returned,
        limit,
        offset,
        unsupported,
    })
}

async fn search(
    req: &HttpRequest,
    state: &AppState,
    level: Level,
    parents: Parents,
) -> Result<HttpResponse, DicomWebError> {
    let accepts_json = super::accept::ranges(req).iter().any(|r| {
        matches!(
            r.mime.as_str(),
            "*/*" | "application/*" | "application/dicom+json" | "application/json"
        )
    });
    if !accepts_json {
        return Err(DicomWebError::NotAcceptable(
            "search results are available as application/dicom+json".into(),
        ));
    }
    let mut search = parse_search(
        req.query_string(),
        level,
        &parents,
        state.dicomweb.fuzzy_person_names,
    )?;
    limit_to_referrer(req, &mut search.query);
    let max = state.dicomweb.max_results;
    let wanted = search.limit.unwrap_or(max).min(max);
    // One extra row tells whether the cap cut the answer short.
    let mut columns = search.returned.clone();
    columns.extend([StudyInstanceUid, SeriesInstanceUid, SopInstanceUid]);
    let plan = state
        .index
        .plan_find_columns(&search.query, wanted + 1, search.offset, &columns);
    let base = base_url(req);
    let mut rows = state.index.find(&plan);
    let slots = layout(&search.returned);
    let mut body = Vec::with_capacity(4096);
    body.push(b'[');
    let mut count = 0;
    let mut truncated = false;
    while let Some(row) = rows.next().await {
        let row = row?;
        if count == wanted {
            truncated = search.limit.is_none_or(|l| l > max);
            break;
        }
        if count > 0 {
            body.push(b',');
        }
        write_match(&mut body, &row, level, &slots, &base);
        count += 1;
    }
    body.push(b']');
    let mut response = HttpResponse::Ok();
    response.content_type("application/dicom+json");
    if truncated {
        response.insert_header(("Warning", TRUNCATED_WARNING));
    }
    if !search.unsupported.is_empty() {
        response.append_header((
            "Warning",
            format!(
                "299 tessera \"The following attributes are not supported and were ignored: {}\"",
                search.unsupported.join(", ")
            ),
        ));
    }
    Ok(response.body(body))
}

/// What one match holds, in tag order (DICOM JSON objects list attributes
/// as data sets do). Built once per search, used for every row.
enum Slot {
    Attribute(Attribute),
    /// A sequence with one item of these attributes.
    Sequence(Tag, Vec<Attribute>),
    RetrieveUrl,
    Availability,
}

impl Slot {
    fn tag(&self) -> Tag {
        match self {
            Slot::Attribute(a) => a.tag(),
            Slot::Sequence(tag, _) => *tag,
            Slot::RetrieveUrl => dicom_dictionary_std::tags::RETRIEVE_URL,
            Slot::Availability => dicom_dictionary_std::tags::INSTANCE_AVAILABILITY,
        }
    }
}

fn layout(returned: &[Attribute]) -> Vec<Slot> {
    let mut slots = vec![Slot::RetrieveUrl, Slot::Availability];
    for attribute in returned {
        match attribute.sequence() {
            None => slots.push(Slot::Attribute(*attribute)),
            Some(seq) => {
                let existing = slots.iter_mut().find_map(|s| match s {
                    Slot::Sequence(t, members) if *t == seq => Some(members),
                    _ => None,
                });
                match existing {
                    Some(members) => members.push(*attribute),
                    None => slots.push(Slot::Sequence(seq, vec![*attribute])),
                }
            }
        }
    }
    slots.sort_by_key(Slot::tag);
    slots
}

/// Write one match as a DICOM JSON object. Written straight into the
/// response buffer: building a value tree per row cost more than the query.
fn write_match(out: &mut Vec<u8>, row: &FindRow, level: Level, slots: &[Slot], base: &str) {
    out.push(b'{');
    for (i, slot) in slots.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_key(out, slot.tag());
        match slot {
            Slot::Attribute(a) => write_element(out, *a, row.get(*a)),
            Slot::Sequence(_, members) => {
                out.extend_from_slice(br#"{"vr":"SQ","Value":["#);
                // An item with no values at all is an empty sequence.
                if members.iter().any(|a| !row.get(*a).is_empty()) {
                    out.push(b'{');
                    for (j, a) in members.iter().enumerate() {
                        if j > 0 {
                            out.push(b',');
                        }
                        push_key(out, a.tag());
                        write_element(out, *a, row.get(*a));
                    }
                    out.push(b'}');
                }
                out.extend_from_slice(b"]}");
            }
            Slot::RetrieveUrl => {
                let mut url = format!("{base}/studies/{}", row.get(StudyInstanceUid));
                if level >= Level::Series {
                    url.push_str("/series/");
                    url.push_str(row.get(SeriesInstanceUid));
                }
                if level == Level::Image {
                    url.push_str("/instances/");
                    url.push_str(row.get(SopInstanceUid));
                }
                out.extend_from_slice(br#"{"vr":"UR","Value":["#);
                push_string(out, &url);
                out.extend_from_slice(b"]}");
            }
            Slot::Availability => out.extend_from_slice(br#"{"vr":"CS","Value":["ONLINE"]}"#),
        }
    }
    out.push(b'}');
}

/// Parse a QIDO-RS query string as a search at every level would; for
/// fuzzing. Returns whether it was accepted.
pub fn fuzz_query_string(query_string: &str) -> bool {
    let nested = Parents {
        study: Some("1.2.3".into()),
        series: None,
    };
    let mut accepted = false;
    for (level, parents) in [
        (Level::Study, Parents::default()),
        (Level::Series, Parents::default()),
        (Level::Image, nested),
    ] {
        accepted |= parse_search(query_string, level, &parents, false).is_ok();
    }
    accepted
}
