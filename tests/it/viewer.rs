//! The OHIF viewer at `/viewer`, in a real browser: Debian's Chromium driven
//! by playwright-core (`tests/viewer/viewer.mjs`) is sent to the login page,
//! logs in as a radiologist, finds a CT study stored through STOW-RS in the
//! study list, opens it, and checks the image canvas shows pixels. The screenshot is kept under `target/test-artifacts/`.

use crate::common;

use std::path::Path;

use common::{ct_sample, skip, stow, Archive, Backend};

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Why the browser test cannot run here, if it cannot.
fn missing_tool() -> Option<&'static str> {
    if !manifest().join("web/dist-viewer/index.html").is_file() {
        return Some("the viewer is not installed (scripts/install-viewer)");
    }
    if !manifest().join("web/node_modules/playwright-core").is_dir() {
        return Some("playwright-core is not installed (scripts/install-viewer)");
    }
    if !Path::new("/usr/bin/chromium").exists() {
        return Some("/usr/bin/chromium is not installed (scripts/install-viewer --with-browser)");
    }
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Some("node is not installed");
    }
    None
}

async fn viewer_shows_a_ct_study(backend: Backend) {
    if let Some(reason) = missing_tool() {
        return skip("viewer_shows_a_ct_study", reason);
    }
    let Some(sample) = ct_sample() else {
        return skip(
            "viewer_shows_a_ct_study",
            "pydicom's CT_small.dcm is not installed",
        );
    };
    let viewer_dir = manifest().join("web/dist-viewer");
    let archive = Archive::start_with(backend, |raw| raw.viewer.dir = Some(viewer_dir)).await;
    let bytes = std::fs::read(&sample).expect("read sample");
    assert_eq!(
        stow(archive.http_port, &bytes, &[]).await,
        200,
        "STOW-RS of CT_small.dcm"
    );

    // From now on every page and DICOMweb call needs a login.
    let accounts = tessera::auth::Accounts::new(archive.index().await, Default::default());
    let radiologist = tessera::model::Roles([tessera::model::Role::Radiologist].into());
    accounts
        .add_user("reader", &radiologist, "Rad-i0logist!", false, "")
        .await
        .expect("user");
    let token = accounts
        .create_token("reader", "viewer-test", None, 1)
        .await
        .expect("token");

    let artifacts = manifest().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifact dir");
    let screenshot = artifacts.join(format!("viewer-{backend:?}.png").to_lowercase());
    let out = tokio::process::Command::new("node")
        .arg(manifest().join("tests/viewer/viewer.mjs"))
        .args([
            "--base",
            &format!("http://127.0.0.1:{}", archive.http_port),
            "--study",
            "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322",
            "--user",
            "reader",
            "--password",
            "Rad-i0logist!",
            "--token",
            &token.secret,
            "--screenshot",
        ])
        .arg(&screenshot)
        .output()
        .await
        .expect("node runs");
    assert!(
        out.status.success(),
        "the viewer did not show the study (screenshot: {}):\n{}{}",
        screenshot.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        screenshot.is_file(),
        "no screenshot at {}",
        screenshot.display()
    );
}

on_both_backends!(viewer_shows_a_ct_study);
