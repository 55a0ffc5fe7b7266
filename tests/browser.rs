//! The study browser at `/` in headless Chromium (playwright-core,
//! `tests/viewer/browser.mjs`): sent to the login page without a session,
//! then searching as you type, filtering by modality, sorting by date, the
//! search kept in the URL and restored from it, and a study opened in the
//! viewer. The screenshot is kept under `target/test-artifacts/`.

mod common;

use std::path::Path;

use common::{skip, stow_generated, Archive, Backend};
use tessera::model::{Role, Roles};

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
    ];
    for (uid, name, id, date, modality, seed) in studies {
        stow_generated(
            archive.http_port,
            &[
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
            ],
        )
        .await;
    }
    let accounts = tessera::auth::Accounts::new(archive.index().await, Default::default());
    accounts
        .add_user(
            "reader",
            &Roles([Role::Radiologist].into()),
            PASSWORD,
            false,
            "",
        )
        .await
        .expect("user");
    let artifacts = manifest().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifact dir");
    let shot = artifacts.join(format!("study-browser-{backend:?}.png"));
    let out = tokio::process::Command::new("node")
        .arg(manifest().join("tests/viewer/browser.mjs"))
        .args(["--base", &format!("http://127.0.0.1:{}", archive.http_port)])
        .args(["--user", "reader", "--password", PASSWORD])
        .arg("--screenshot")
        .arg(&shot)
        .kill_on_drop(true)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let seen: serde_json::Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON: {stdout}{}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "{seen:#}");
    assert_eq!(seen["login_redirect"], "/login", "{seen:#}");
    assert_eq!(seen["typed"]["rows"], 2, "{seen:#}");
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
        serde_json::json!(["2024-06-10", "2024-03-15", "2023-01-01"]),
        "{seen:#}"
    );
    assert_eq!(seen["reloaded"]["q"], "nguyen", "{seen:#}");
    assert_eq!(seen["reloaded"]["mr_checked"], true, "{seen:#}");
    assert_eq!(
        seen["reloaded"]["rows"],
        serde_json::json!(["VN-2"]),
        "{seen:#}"
    );
    let opened = seen["opened"].as_str().unwrap_or_default();
    assert!(
        opened.ends_with(&format!(
            "/viewer/viewer?StudyInstanceUIDs={}",
            studies[1].0
        )),
        "{seen:#}"
    );
}

on_both_backends!(study_browser_searches_and_opens_studies);
