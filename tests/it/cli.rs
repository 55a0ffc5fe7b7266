//! The command line: import (with DICOMDIR file sets), verify, stats, and
//! configuration precedence (file < environment < flags).

use crate::common;

use std::path::PathBuf;

use common::{dcmtk, python, skip, tessera_bin, tessera_cli, ServerProcess};

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn import_file_sets_verify_and_stats() {
    let Some((pydicom_data, _)) = common::sample_dirs() else {
        return skip(
            "import_file_sets_verify_and_stats",
            "pydicom samples missing",
        );
    };
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    // A DICOMDIR file set plus a file that is not DICOM at all.
    let set = pydicom_data.join("test_files/dicomdirtests");
    let junk = dir.path().join("junk");
    std::fs::create_dir_all(&junk).expect("mkdir");
    std::fs::write(junk.join("notes.txt"), "not a DICOM file").expect("write");

    let out = tessera_cli(
        &data,
        &[
            "import",
            set.to_str().expect("utf8"),
            junk.to_str().expect("utf8"),
        ],
    )
    .await;
    let report = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a bad file makes import fail: {report}"
    );
    assert!(
        report.contains("notes.txt"),
        "the bad file is named: {report}"
    );
    assert!(report.contains("DICOMDIR skipped"), "{report}");
    let skipped: usize = report
        .split(" DICOMDIR skipped")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("count of DICOMDIR files");
    assert!(
        skipped >= 3,
        "all DICOMDIR variants are recognised: {report}"
    );

    let out = tessera_cli(&data, &["stats", "--json"]).await;
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let instances = stats["instances"].as_i64().expect("instances");
    assert!(instances >= 30, "{stats}");
    assert!(stats["studies"].as_i64().expect("studies") >= 2);

    // A second import finds everything already stored (the set's README
    // files are still reported as not DICOM).
    let out = tessera_cli(&data, &["import", set.to_str().expect("utf8")]).await;
    assert!(text(&out).contains(" 0 stored"), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{instances} already stored")),
        "{}",
        text(&out)
    );

    let out = tessera_cli(&data, &["verify"]).await;
    assert!(out.status.success(), "{}", text(&out));

    // Corrupt one object, delete another, add an unreferenced one.
    let objects = data.join("objects");
    let mut files: Vec<PathBuf> = walk(&objects)
        .into_iter()
        .filter(|p| !p.starts_with(objects.join(".spool")))
        .collect();
    files.sort();
    let corrupt = &files[0];
    let mut bytes = std::fs::read(corrupt).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(corrupt, bytes).expect("write");
    std::fs::remove_file(&files[1]).expect("remove");
    let orphan_key = format!("ff/ff/ffff{}.dcm", "0".repeat(60));
    std::fs::create_dir_all(objects.join("ff/ff")).expect("mkdir");
    std::fs::write(objects.join(&orphan_key), b"orphan").expect("write");

    let out = tessera_cli(&data, &["verify"]).await;
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("CORRUPT"), "{report}");
    assert!(report.contains("MISSING"), "{report}");
    assert!(
        report.contains(&format!("UNREFERENCED  {orphan_key}")),
        "{report}"
    );
    assert!(
        report.contains("1 missing, 1 corrupt, 1 unreferenced"),
        "{report}"
    );

    // Objects younger than the grace period (an hour) may be stores in
    // flight: reported, not pruned.
    let out = tessera_cli(&data, &["verify", "--prune-unreferenced", "--json"]).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["pruned"], 0, "{json}");
    assert!(objects.join(&orphan_key).exists());
    let aged = std::process::Command::new("touch")
        .args(["-d", "2 hours ago"])
        .arg(objects.join(&orphan_key))
        .status()
        .expect("touch");
    assert!(aged.success());
    let out = tessera_cli(&data, &["verify", "--prune-unreferenced", "--json"]).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["pruned"], 1);
    assert!(!objects.join(&orphan_key).exists());

    // While a server holds the storage, pruning refuses.
    let server = ServerProcess::spawn(&data, &[]).await;
    // Each import left one record of what it stored, naming its studies
    // and their patients.
    let (status, body) = common::http_request(
        server.http_port,
        "GET",
        "/api/v1/audit?event=stored",
        None,
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let trail: serde_json::Value = serde_json::from_str(&body).expect("json");
    let imports: Vec<&serde_json::Value> = trail["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| {
            r["message"]
                .as_str()
                .is_some_and(|m| m.contains("tessera import"))
        })
        .collect();
    assert_eq!(imports.len(), 2, "{trail:#}");
    for record in &imports {
        assert!(record["user"]
            .as_str()
            .is_some_and(|u| u.ends_with("(command line)")));
        assert!(
            record["studies"].as_array().is_some_and(|s| s.len() >= 2),
            "{record:#}"
        );
        assert!(
            record["patients"].as_array().is_some_and(|p| !p.is_empty()),
            "{record:#}"
        );
    }
    // Both runs met files that are not DICOM (the notes, the set's README).
    assert!(imports.iter().all(|r| r["outcome"] == 4), "{imports:#?}");
    let out = tessera_cli(&data, &["verify", "--prune-unreferenced"]).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("running server holds the storage"),
        "{}",
        text(&out)
    );
    server.terminate().await;
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Defaults < config file < TESSERA_* environment < command-line flags.
#[tokio::test]
async fn configuration_precedence() {
    let Some(echoscu) = dcmtk("echoscu") else {
        return skip("configuration_precedence", "DCMTK echoscu not installed");
    };
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("tessera.toml");
    std::fs::write(
        &config,
        "[dicom]\nae_title = \"FROMFILE\"\nrequire_called_ae_title = true\n[http]\napi_token = \"s3cret\"\n",
    )
    .expect("write config");
    let data = dir.path().join("data");
    let echo = |ae: &'static str, port: u16| {
        let echoscu = echoscu.clone();
        async move {
            tokio::process::Command::new(echoscu)
                .args(["-aec", ae, "127.0.0.1", &port.to_string()])
                .output()
                .await
                .expect("echoscu")
                .status
                .success()
        }
    };

    // File only.
    std::env::remove_var("TESSERA_AE_TITLE");
    let server = ServerProcess::spawn(&data, &["--config", config.to_str().expect("utf8")]).await;
    assert!(echo("FROMFILE", server.dicom_port).await);
    assert!(
        !echo("TESSERA", server.dicom_port).await,
        "called AE title is enforced"
    );
    let (status, _) = common::http_get(server.http_port, "/api/v1/stats", &[]).await;
    assert_eq!(status, 401, "API token from the file is enforced");
    let (status, body) = common::http_get(
        server.http_port,
        "/api/v1/stats",
        &[("Authorization", "Bearer s3cret")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = common::http_get(server.http_port, "/healthz", &[]).await;
    assert_eq!(status, 200, "probes stay open");
    assert!(server.terminate().await.success());

    // Environment beats the file; a flag beats the environment.
    let run = |extra: Vec<String>, env: Option<&'static str>| {
        let data = data.clone();
        let config = config.clone();
        async move {
            let mut cmd = tokio::process::Command::new(tessera_bin());
            cmd.arg("--config")
                .arg(&config)
                .arg("--data-dir")
                .arg(&data);
            cmd.args(["--dicom-bind", "127.0.0.1:0", "--http-bind", "127.0.0.1:0"]);
            cmd.args(["--hl7-bind", "127.0.0.1:0"]);
            cmd.args(extra);
            cmd.arg("serve")
                .env("RUST_LOG", "warn")
                .env_remove("TESSERA_AE_TITLE");
            if let Some(ae) = env {
                cmd.env("TESSERA_AE_TITLE", ae);
            }
            cmd.stdout(std::process::Stdio::piped()).kill_on_drop(true);
            let mut child = cmd.spawn().expect("spawn");
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
            let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
                .await
                .expect("ready in time")
                .expect("read")
                .expect("ready line");
            let port: u16 = line
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix("dicom="))
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .expect("port");
            (child, port)
        }
    };
    let (mut child, port) = run(vec![], Some("FROMENV")).await;
    assert!(echo("FROMENV", port).await);
    assert!(!echo("FROMFILE", port).await);
    child.kill().await.expect("kill");
    let (mut child, port) = run(
        vec!["--ae-title".into(), "FROMFLAG".into()],
        Some("FROMENV"),
    )
    .await;
    assert!(echo("FROMFLAG", port).await);
    assert!(!echo("FROMENV", port).await);
    child.kill().await.expect("kill");
}

/// A config file with an unknown key or bad value is refused with a clear
/// message and exit code 2, before anything starts.
#[tokio::test]
async fn invalid_configuration_is_reported() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[dicom]\nae_titel = \"TYPO\"\n").expect("write");
    let out = tessera_cli(
        dir.path(),
        &["--config", config.to_str().expect("utf8"), "stats"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("ae_titel"), "{}", text(&out));
    let out = tessera_cli(dir.path(), &["--index-url", "mysql://nope", "stats"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("index.url"), "{}", text(&out));
    let _ = python();
}
