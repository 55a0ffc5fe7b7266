//! Full-text study search (`GET /api/v1/search`) on both databases:
//! names in Vietnamese, German, Polish and French found without their
//! diacritics and with one typo, the exact spelling ranked first, words
//! from descriptions, dates and reports together, report snippets,
//! filters and sorting, bad queries answered 400, a referring physician
//! limited to their studies, also in the results the study browser's page
//! arrives with (and an auditor's page without any); and the index following SQL: an HL7 update
//! and a report show at once, the index survives a restart and is rebuilt
//! when lost.

use crate::common;

use std::time::Duration;

use common::{http_exchange, skip, Archive, Backend};
use serde_json::Value;
use tessera::model::Role;

/// Study UID, patient name, patient ID, date, modality, description,
/// referring physician, accession.
type Study = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

const STUDIES: [Study; 5] = [
    (
        "1.2.826.0.1.3680043.10.9.1",
        "Nguyễn^Văn An",
        "VN-1",
        "20240315",
        "CT",
        "CT CHEST WITH CONTRAST",
        "Kowalski^Jan",
        "ACC-VN1",
    ),
    (
        "1.2.826.0.1.3680043.10.9.2",
        "Nguyen^Van Binh",
        "VN-2",
        "20230101",
        "CT",
        "CT ABDOMEN",
        "Other^Doc",
        "ACC-VN2",
    ),
    (
        "1.2.826.0.1.3680043.10.9.3",
        "Müller^Hans",
        "DE-1",
        "20240610",
        "MR",
        "MR BRAIN WITH CONTRAST",
        "KOWALSKI^JAN",
        "ACC-DE1",
    ),
    (
        "1.2.826.0.1.3680043.10.9.4",
        "Wójcik^Łukasz",
        "PL-1",
        "20220202",
        "MR",
        "MR KNEE",
        "Other^Doc",
        "ACC-PL1",
    ),
    (
        "1.2.826.0.1.3680043.10.9.5",
        "Lefèvre^François",
        "FR-1",
        "20240101",
        "CR",
        "CHEST PA",
        "Other^Doc",
        "ACC-FR1",
    ),
];

const PASSWORD: &str = "Corr3ct-horse";

/// Where each of [`STUDIES`] was made.
const SITES: [(&str, &str); 5] = [
    ("Bệnh viện Bạch Mai", "CT-HN-2"),
    ("Bệnh viện Chợ Rẫy", "MR-HCM-1"),
    ("Charité Berlin", "MRT-3"),
    ("Szpital Bródnowski", "MR-WAW"),
    ("Hôpital Necker", "RADIO-1"),
];

async fn store(archive: &Archive, seed: usize) {
    let (uid, name, id, date, modality, description, referring, accession) = STUDIES[seed];
    let (institution, station) = SITES[seed];
    let seed = (100 + seed).to_string();
    common::stow_generated(
        archive.http_port,
        &[
            "--seed",
            &seed,
            "--study-uid",
            uid,
            "--patient-name",
            name,
            "--patient-id",
            id,
            "--study-date",
            date,
            "--modality",
            modality,
            "--description",
            description,
            "--referring",
            referring,
            "--accession",
            accession,
            "--institution",
            institution,
            "--station",
            station,
        ],
    )
    .await;
}

/// GET `path`, with the API token `auth` if given.
async fn get(archive: &Archive, path: &str, auth: Option<&str>) -> common::Exchange {
    let header = auth.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = header
        .as_deref()
        .map(|h| vec![("Authorization", h)])
        .unwrap_or_default();
    http_exchange("127.0.0.1", archive.http_port, "GET", path, None, &headers).await
}

async fn search(archive: &Archive, query: &str, auth: Option<&str>) -> (u16, Value) {
    let rsp = get(archive, &format!("/api/v1/search?{query}"), auth).await;
    (rsp.status, rsp.json())
}

/// The results the study browser's page at `/?{query}` arrives with, if
/// any, and the page's status.
async fn front_page(archive: &Archive, query: &str, auth: Option<&str>) -> (u16, Option<Value>) {
    let rsp = get(archive, &format!("/?{query}"), auth).await;
    let embedded = rsp
        .body
        .split_once(r#"<script type="application/json" id="first">"#)
        .and_then(|(_, rest)| rest.split_once("</script>"))
        .map(|(json, _)| serde_json::from_str::<Value>(json).expect("embedded results are JSON"));
    (rsp.status, embedded)
}

/// The patient IDs of the results, in order.
fn ids(page: &Value) -> Vec<String> {
    page["results"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|h| h["patient_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Search until `check` holds: the index follows SQL within about a
/// second; ten are allowed.
async fn eventually(archive: &Archive, query: &str, check: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        let (status, page) = search(archive, query, None).await;
        assert_eq!(status, 200, "{page}");
        if check(&page) {
            return page;
        }
        last = page;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{query}: never as expected: {last:#}");
}

async fn search_finds_studies(backend: Backend) {
    if common::python().is_none() {
        return skip("search_finds_studies", "python with pydicom missing");
    }
    let archive = Archive::start(backend).await;
    for seed in 0..STUDIES.len() {
        store(&archive, seed).await;
    }
    eventually(&archive, "q=", |p| p["total"] == 5).await;

    let found = |q: &'static str| {
        let archive = &archive;
        async move {
            let (status, page) = search(archive, q, None).await;
            assert_eq!(status, 200, "{q}: {page}");
            ids(&page)
        }
    };
    // Folding and ranking.
    let mut both = found("q=nguyen").await;
    both.sort();
    assert_eq!(both, ["VN-1", "VN-2"]);
    assert_eq!(
        found("q=Nguy%E1%BB%85n").await[0],
        "VN-1",
        "Nguyễn: exact first"
    );
    assert_eq!(found("q=Nguyen%20Binh").await, ["VN-2"]);
    assert_eq!(found("q=muller").await, ["DE-1"]);
    assert_eq!(found("q=wojcik%20lukasz").await, ["PL-1"]);
    assert_eq!(found("q=lefevre").await, ["FR-1"]);
    assert_eq!(found("q=francois").await, ["FR-1"]);
    // One typo in a word of five letters or more.
    assert_eq!(found("q=mueller").await, ["DE-1"]);
    assert_eq!(found("q=lefevr").await, ["FR-1"]);
    assert_eq!(
        found("q=hnas").await,
        Vec::<String>::new(),
        "short words match exactly"
    );
    // Names, descriptions, modalities, dates and physicians together.
    assert_eq!(found("q=nguyen%20chest%202024").await, ["VN-1"]);
    assert_eq!(
        found("q=brain%20MR%20with%20contrast%20kowalski").await,
        ["DE-1"]
    );
    // Identifiers match whole.
    // Institutions and stations, folded like names.
    assert_eq!(found("q=bach%20mai").await, ["VN-1"]);
    assert_eq!(found("q=charite").await, ["DE-1"]);
    assert_eq!(found("q=brodnowski").await, ["PL-1"]);
    assert_eq!(found("q=mr-hcm-1").await, ["VN-2"]);
    assert_eq!(found("q=id:DE-1").await, ["DE-1"]);
    assert_eq!(found("q=ACC-PL1").await, ["PL-1"]);
    assert_eq!(found("q=id:DE").await, Vec::<String>::new());
    // Filters and sorting.
    let mut mr = found("q=&modality=MR").await;
    mr.sort();
    assert_eq!(mr, ["DE-1", "PL-1"]);
    let mut recent = found("q=&from=2024-01-01").await;
    recent.sort();
    assert_eq!(recent, ["DE-1", "FR-1", "VN-1"]);
    assert_eq!(
        found("q=&from=20240101&to=20240331&modality=CT,CR&sort=date_asc").await,
        ["FR-1", "VN-1"]
    );
    assert_eq!(
        found("q=&sort=date").await,
        ["DE-1", "VN-1", "FR-1", "VN-2", "PL-1"]
    );
    assert_eq!(
        found("q=&limit=2&offset=1&sort=date").await,
        ["VN-1", "FR-1"]
    );
    let (_, page) = search(&archive, "q=nguyen&limit=1", None).await;
    assert_eq!(page["total"], 2, "the total counts every hit: {page}");
    let first = &page["results"][0];
    assert_eq!(first["series_count"], 1, "{page}");
    assert_eq!(first["status"], "arrived", "{page}");
    assert_eq!(first["has_report"], false, "{page}");

    // Bad queries are refused with a reason.
    for (query, reason) in [
        ("q=%22open", "quote"),
        ("q=foo:bar", "unknown field"),
        ("q=name:", "nothing after"),
        ("q=x&sort=sideways", "sort"),
        ("q=x&limit=0", "limit"),
        ("q=x&limit=100000", "limit"),
        ("q=x&from=yesterday", "date"),
        ("q=x&status=lost", "status"),
        ("q=x&frobnicate=1", "invalid query"),
    ] {
        let (status, page) = search(&archive, query, None).await;
        assert_eq!(status, 400, "{query}: {page}");
        let error = page["error"].as_str().unwrap_or_default();
        assert!(error.contains(reason), "{query}: {error}");
    }
    let long = format!("q={}", "a".repeat(2000));
    assert_eq!(search(&archive, &long, None).await.0, 400);

    // A report and an HL7 update show in the index at once.
    let mut obr = vec![""; 26];
    obr[0] = "OBR";
    obr[1] = "1";
    obr[2] = "PL9";
    obr[3] = "FL9";
    obr[4] = "MR^MR Brain";
    obr[7] = "20261205100000";
    obr[18] = "ACC-DE1";
    obr[25] = "F";
    let report = format!(
        "MSH|^~\\&|RIS|H|TESSERA|R|20261205100000||ORU^R01^ORU_R01|S-ORU-1|P|2.5||||||UNICODE UTF-8\r\
         PID|1||DE-1||Müller^Hans\r\
         {}\r\
         OBX|1|TX|IMP^Impression||Kleiner Rundherd im Oberlappen links, sonst unauffällig.||||||F\r",
        obr.join("|")
    );
    common::send_hl7(archive.hl7_port, &report).await;
    let page = eventually(&archive, "q=report:rundherd", |p| p["total"] == 1).await;
    assert_eq!(ids(&page), ["DE-1"]);
    let snippet = page["results"][0]["report_snippet"]
        .as_str()
        .unwrap_or_default();
    assert!(snippet.contains("<mark>Rundherd</mark>"), "{page}");
    assert_eq!(page["results"][0]["has_report"], true);
    assert_eq!(page["results"][0]["status"], "final");
    let page = eventually(&archive, "q=oberlapen", |p| p["total"] == 1).await;
    let snippet = page["results"][0]["report_snippet"]
        .as_str()
        .unwrap_or_default();
    assert!(
        snippet.contains("<mark>Oberlappen</mark>"),
        "a typo still marks: {page}"
    );
    let (_, page) = search(&archive, "q=%22rundherd%20im%20oberlappen%22", None).await;
    assert_eq!(ids(&page), ["DE-1"], "a phrase: {page}");
    let (_, page) = search(&archive, "q=%22oberlappen%20im%20rundherd%22", None).await;
    assert_eq!(
        ids(&page),
        Vec::<String>::new(),
        "the phrase in another order: {page}"
    );
    let (_, page) = search(&archive, "q=&status=final", None).await;
    assert_eq!(ids(&page), ["DE-1"], "{page}");

    let update =
        "MSH|^~\\&|HIS|H|TESSERA|R|20261205110000||ADT^A08|S-ADT-1|P|2.5||||||UNICODE UTF-8\r\
        EVN|A08|20261205110000\r\
        PID|1||DE-1||Schmidt^Hans||19700101|M\r\
        PV1|1|O\r";
    common::send_hl7(archive.hl7_port, update).await;
    eventually(&archive, "q=schmidt", |p| ids(p) == ["DE-1"]).await;
    eventually(&archive, "q=muller", |p| p["total"] == 0).await;

    // A referring physician finds only their studies.
    let accounts = archive
        .add_user("jan", Role::Referring, PASSWORD, "Kowalski^Jan")
        .await;
    let token = accounts
        .create_token("jan", "t", None, 1)
        .await
        .expect("token")
        .secret;
    let (status, page) = search(&archive, "q=", Some(&token)).await;
    assert_eq!(status, 200, "{page}");
    let mut own = ids(&page);
    own.sort();
    assert_eq!(own, ["DE-1", "VN-1"]);
    let (_, page) = search(&archive, "q=nguyen", Some(&token)).await;
    assert_eq!(ids(&page), ["VN-1"]);
    // The page arrives with the same results, under the same rule.
    let (status, first) = front_page(&archive, "q=", Some(&token)).await;
    assert_eq!(status, 200);
    let first = first.expect("the front page carries the first results");
    assert_eq!(first["query"], "q=&sort=relevance&limit=50&offset=0");
    let mut own = ids(&first["page"]);
    own.sort();
    assert_eq!(own, ["DE-1", "VN-1"], "{first}");
    let (_, first) = front_page(&archive, "q=nguyen&modality=CT,MR", Some(&token)).await;
    let first = first.expect("results");
    assert_eq!(
        first["query"],
        "q=nguyen&sort=relevance&limit=50&offset=0&modality=CT%2CMR"
    );
    assert_eq!(ids(&first["page"]), ["VN-1"]);
    let accounts = archive.add_user("eve", Role::Auditor, PASSWORD, "").await;
    let auditor = accounts
        .create_token("eve", "t", None, 1)
        .await
        .expect("token")
        .secret;
    let (status, first) = front_page(&archive, "q=", Some(&auditor)).await;
    assert_eq!(status, 200, "an auditor may open the page");
    assert!(first.is_none(), "but gets no results with it: {first:?}");
    archive
        .index()
        .await
        .share_study(STUDIES[4].0, "jan", "admin", 0)
        .await
        .expect("share");
    let (_, page) = search(&archive, "q=lefevre", Some(&token)).await;
    assert_eq!(ids(&page), ["FR-1"], "a shared study: {page}");
    let (status, _) = search(&archive, "q=", None).await;
    assert_eq!(status, 401, "with accounts, searching needs a login");
    let (status, first) = front_page(&archive, "q=", None).await;
    assert!(first.is_none() && status != 200, "{status} {first:?}");
}

/// The index outlives a restart, follows changes made while it was down,
/// and is rebuilt from SQL when its folder is lost.
async fn search_index_survives_restart(backend: Backend) {
    if common::python().is_none() {
        return skip(
            "search_index_survives_restart",
            "python with pydicom missing",
        );
    }
    let mut archive = Archive::start(backend).await;
    store(&archive, 0).await;
    store(&archive, 1).await;
    eventually(&archive, "q=nguyen", |p| p["total"] == 2).await;
    archive.restart().await;
    let (_, page) = search(&archive, "q=nguyen", None).await;
    assert_eq!(page["total"], 2, "kept across a restart: {page}");
    store(&archive, 2).await;
    eventually(&archive, "q=muller", |p| p["total"] == 1).await;

    let search_dir = archive.dir.path().join("data/search");
    assert!(search_dir.is_dir(), "{}", search_dir.display());
    archive.stop().await;
    std::fs::remove_dir_all(&search_dir).expect("remove the index");
    archive.restart().await;
    eventually(&archive, "q=", |p| p["total"] == 3).await;
}

on_both_backends!(search_finds_studies, search_index_survives_restart);
