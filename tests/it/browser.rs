//! The study browser at `/` and the study page in headless Chromium
//! (playwright-core, `tests/viewer/browser.mjs`): sent to the login page
//! without a session, then searching as you type, filtering by modality,
//! sorting by date, the search kept in the URL and restored from it; a
//! study found by its report opened on its page with thumbnails, the
//! report's matched words marked, its order and the patient's other
//! study; the study downloaded as ZIP; a clip and a time-lapse played; and
//! the study opened in the viewer. Screenshots are kept under
//! `target/test-artifacts/`.

use crate::common;

use std::path::Path;

use common::{run_peer, send_hl7, skip, stow_generated, Archive, Backend};
use tessera::model::Role;

const PASSWORD: &str = "Rad-i0logist!";

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

async fn study_browser_searches_and_opens_studies(backend: Backend) {
    if !manifest().join("web/node_modules/playwright-core").is_dir()
        || !Path::new("/usr/bin/chromium").exists()
        || common::python().is_none()
    {
        return skip(
            "study_browser_searches_and_opens_studies",
            "playwright-core, /usr/bin/chromium or pydicom missing (scripts/install-test-tools)",
        );
    }
    let archive = Archive::start(backend).await;
    let studies = [
        (
            "1.2.826.0.1.3680043.10.8.1",
            "Nguyễn^Văn An",
            "VN-1",
            "20240315",
            "CT",
            "1",
        ),
        (
            "1.2.826.0.1.3680043.10.8.2",
            "Nguyen^Van Binh",
            "VN-2",
            "20230101",
            "MR",
            "2",
        ),
        (
            "1.2.826.0.1.3680043.10.8.3",
            "Müller^Hans",
            "DE-1",
            "20240610",
            "CR",
            "3",
        ),
        (
            "1.2.826.0.1.3680043.10.8.4",
            "Nguyen^Van Binh",
            "VN-2",
            "20220101",
            "CT",
            "4",
        ),
    ];
    for (uid, name, id, date, modality, seed) in studies {
        let mut args = vec![
            "--seed",
            seed,
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
        ];
        if uid == studies[1].0 {
            args.extend(["--accession", "ACC-VN2"]);
        }
        stow_generated(archive.http_port, &args).await;
    }
    // The MR study also holds an ultrasound clip of 8 frames at 100 ms,
    // and a time-lapse of 3 images 2 hours apart.
    let (uid, name, id, date, ..) = studies[1];
    let same_study = [
        "--study-uid",
        uid,
        "--patient-name",
        name,
        "--patient-id",
        id,
        "--study-date",
        date,
        "--accession",
        "ACC-VN2",
    ];
    let clip = [
        "--seed",
        "7",
        "--modality",
        "US",
        "--frames",
        "8",
        "--frame-time",
        "100",
        "--rows",
        "64",
        "--cols",
        "64",
    ];
    stow_generated(archive.http_port, &[&same_study[..], &clip[..]].concat()).await;
    let time_lapse = [
        "--seed",
        "8",
        "--modality",
        "XC",
        "--count",
        "3",
        "--hours-apart",
        "2",
        "--rows",
        "32",
        "--cols",
        "32",
    ];
    stow_generated(
        archive.http_port,
        &[&same_study[..], &time_lapse[..]].concat(),
    )
    .await;
    send_hl7(
        archive.hl7_port,
        "MSH|^~\\&|RIS|H|TESSERA|R|20261206090000||ORM^O01^ORM_O01|B-ORM-1|P|2.5.1||||||UNICODE UTF-8\r\
         PID|1||VN-2||Nguyen^Van Binh||19700101|O\r\
         ORC|NW|PL-VN2|FL-VN2||SC||^^^20230101080000^^R||20261206090000\r\
         OBR|1|PL-VN2|FL-VN2|MRBRAIN^MR Brain^LOCAL||||||||||||||ACC-VN2|RP-VN2|SPS-VN2||||MR\r",
    )
    .await;
    send_hl7(
        archive.hl7_port,
        "MSH|^~\\&|RIS|H|TESSERA|R|20261206100000||ORU^R01^ORU_R01|B-ORU-1|P|2.5||||||UNICODE UTF-8\r\
         PID|1||VN-2||Nguyen^Van Binh\r\
         OBR|1|PL-VN2|FL-VN2|MRBRAIN^MR Brain|||20261206100000|||||||||||ACC-VN2|||||||F\r\
         OBX|1|TX|IMP^Impression||Kleine Läsion im Oberlappen links, kein Erguss.||||||F\r",
    )
    .await;
    archive
        .add_user("reader", Role::Radiologist, PASSWORD, "")
        .await;
    let shot = common::artifacts().join(format!("study-browser-{backend:?}.png"));
    let zip = common::artifacts().join(format!("study-browser-{backend:?}.zip"));
    let base = format!("http://127.0.0.1:{}", archive.http_port);
    let (ran, seen) = common::browser_driver(
        "browser.mjs",
        &[
            "--base".as_ref(),
            base.as_ref(),
            "--user".as_ref(),
            "reader".as_ref(),
            "--password".as_ref(),
            PASSWORD.as_ref(),
            "--screenshot".as_ref(),
            shot.as_os_str(),
            "--download".as_ref(),
            zip.as_os_str(),
        ],
    )
    .await;
    assert!(ran, "{seen:#}");
    assert_eq!(seen["login_redirect"], "/login", "{seen:#}");
    assert_eq!(seen["typed"]["rows"], 3, "{seen:#}");
    assert!(
        seen["typed"]["url"]
            .as_str()
            .is_some_and(|u| u.contains("q=nguyen")),
        "{seen:#}"
    );
    assert_eq!(
        seen["filtered"]["rows"],
        serde_json::json!(["VN-2"]),
        "{seen:#}"
    );
    assert!(
        seen["filtered"]["url"]
            .as_str()
            .is_some_and(|u| u.contains("modality=MR")),
        "{seen:#}"
    );
    assert_eq!(
        seen["sorted_dates"],
        serde_json::json!(["2024-06-10", "2024-03-15", "2023-01-01", "2022-01-01"]),
        "{seen:#}"
    );
    assert_eq!(seen["reloaded"]["q"], "nguyen", "{seen:#}");
    assert_eq!(
        seen["reloaded"]["search_requests"], 0,
        "a page opened anew paints the results it arrived with: {seen:#}"
    );
    assert_eq!(seen["reloaded"]["mr_checked"], true, "{seen:#}");
    assert_eq!(
        seen["reloaded"]["rows"],
        serde_json::json!(["VN-2"]),
        "{seen:#}"
    );
    let study = &seen["study"];
    assert_eq!(
        study["path"],
        format!("/study/{}", studies[1].0),
        "{seen:#}"
    );
    assert_eq!(study["patient"], "Nguyen Van Binh · VN-2", "{seen:#}");
    assert_eq!(
        study["series"], 3,
        "MR, the clip and the time-lapse: {seen:#}"
    );
    assert_eq!(study["thumbnails_painted"], 3, "{seen:#}");
    assert_eq!(
        study["marks"],
        serde_json::json!(["Oberlappen"]),
        "{seen:#}"
    );
    assert!(
        study["workflow"].as_array().is_some_and(|rows| rows
            .iter()
            .any(|r| r.as_str().is_some_and(|r| r.contains("SPS-VN2")))),
        "the order's scheduled step: {seen:#}"
    );
    assert_eq!(
        study["others"],
        serde_json::json!(["2022-01-01"]),
        "the patient's other study: {seen:#}"
    );
    assert!(
        study["link"]
            .as_str()
            .is_some_and(|l| l.ends_with(&format!("/study/{}", studies[1].0))),
        "{seen:#}"
    );

    // The clip plays at its FrameTime, advances by itself and steps.
    let cine = &seen["cine"];
    assert_eq!(cine["frames"], "Frame 1 / 8", "{seen:#}");
    assert!(
        cine["rate"]
            .as_str()
            .is_some_and(|r| r.starts_with("10.0/s from FrameTime")),
        "{seen:#}"
    );
    assert!(
        cine["advanced_to"].as_u64().is_some_and(|i| i >= 4),
        "{seen:#}"
    );
    assert_eq!(
        cine["stepped"].as_u64(),
        cine["paused_at"].as_u64().map(|i| i % 8 + 1),
        "{seen:#}"
    );
    assert_eq!(
        cine["painted"], true,
        "the canvas holds the frame: {seen:#}"
    );
    // Time points in acquisition order, though numbered the other way.
    assert_eq!(
        seen["time_lapse"],
        serde_json::json!(["+0.0 h", "+2.0 h", "+4.0 h"]),
        "{seen:#}"
    );

    // The ZIP the browser saved holds every instance of the study.
    assert_eq!(
        seen["download"],
        format!("{}.zip", studies[1].0),
        "{seen:#}"
    );
    let unzipped = tempfile::tempdir().expect("tmp");
    let out = run_peer(
        "unzip.py",
        &[
            zip.to_str().expect("utf8"),
            unzipped.path().to_str().expect("utf8"),
        ],
    )
    .await;
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    assert!(out.status.success(), "{report}");
    assert_eq!(
        report["names"].as_array().map(Vec::len),
        Some(5),
        "MR, clip and 3 time points: {report}"
    );

    // A tablet, both ways round: touch-sized controls, nothing to scroll
    // sideways, and a tap opens the study.
    for orientation in ["portrait", "landscape"] {
        let tablet = &seen["tablet"][orientation];
        assert_eq!(
            tablet["tapped"],
            format!("/study/{}", studies[1].0),
            "{orientation}: {seen:#}"
        );
        for page in ["search", "study"] {
            let seen_on = &tablet[page];
            assert_eq!(seen_on["coarse"], true, "{orientation} {page}: {seen_on}");
            assert!(
                seen_on["overflow"].as_i64().is_some_and(|o| o <= 0),
                "{orientation} {page}: wider than the screen: {seen_on}"
            );
            assert_eq!(
                seen_on["small"],
                serde_json::json!([]),
                "{orientation} {page}: controls under 44 px: {seen_on}"
            );
        }
    }

    let opened = seen["opened"].as_str().unwrap_or_default();
    assert!(
        opened.ends_with(&format!(
            "/viewer/viewer?StudyInstanceUIDs={}",
            studies[1].0
        )),
        "{seen:#}"
    );
}

/// An H.264 ultrasound clip: the study page offers it to the browser's own
/// player, which gets it from `/rendered` as MP4 and plays it at its size
/// and length (50 frames at 40 ms: 2 s).
async fn study_page_plays_video(backend: Backend) {
    if !manifest().join("web/node_modules/playwright-core").is_dir()
        || !Path::new("/usr/bin/chromium").exists()
        || common::python().is_none()
        || !common::has_ffmpeg()
    {
        return skip(
            "study_page_plays_video",
            "playwright-core, /usr/bin/chromium, pydicom or ffmpeg missing (scripts/install-test-tools)",
        );
    }
    let archive = Archive::start(backend).await;
    let study = "1.2.826.0.1.3680043.10.8.50";
    common::stow_h264_clip(archive.http_port, study).await;
    archive
        .add_user("reader", Role::Radiologist, PASSWORD, "")
        .await;
    let shot = common::artifacts().join(format!("study-video-{backend:?}.png"));
    let base = format!("http://127.0.0.1:{}", archive.http_port);
    let (ran, seen) = common::browser_driver(
        "video.mjs",
        &[
            "--base".as_ref(),
            base.as_ref(),
            "--user".as_ref(),
            "reader".as_ref(),
            "--password".as_ref(),
            PASSWORD.as_ref(),
            "--study".as_ref(),
            study.as_ref(),
            "--screenshot".as_ref(),
            shot.as_os_str(),
        ],
    )
    .await;
    assert!(ran, "{seen:#}");
    assert_eq!(seen["placeholder"], true, "{seen:#}");
    assert_eq!(
        (seen["width"].as_u64(), seen["height"].as_u64()),
        (Some(320), Some(240)),
        "{seen:#}"
    );
    assert!(
        seen["duration"]
            .as_f64()
            .is_some_and(|d| (d - 2.0).abs() < 0.1),
        "{seen:#}"
    );
    assert!(seen["played"].as_f64().is_some_and(|t| t > 0.5), "{seen:#}");
    assert_eq!(seen["closed"], true, "{seen:#}");
}

on_both_backends!(
    study_browser_searches_and_opens_studies,
    study_page_plays_video
);
