//! Recovery of the ingest path at every step. The server is made to crash
//! (abort, as kill -9: the page cache survives) at each named point of the
//! write path while pynetdicom stores instances; after a restart, every
//! acknowledged instance is indexed, its object is in place and whole, no
//! object is left unreferenced, and `tessera verify` is clean.
//!
//! A power cut loses more than a crash: whatever was not synced. Three runs
//! simulate one by putting back the index as it was before the stores (its
//! journaled commits were never synced) while keeping only what was synced
//! of the rest, and check that recovery redoes every acknowledged instance.
//! The third also empties, cuts short or zeroes the files just placed, as
//! a cut before the placement's sync leaves them.
//!
//! The search index is derived from the index database: a crash after the
//! SQL commit, with the study's document added to the search index but
//! not committed, or committed with its outbox mark, leaves a search index
//! that converges after a restart, nothing missing and nothing twice.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{http_get, python, run_peer, skip, stow_generated, tessera_cli, ServerProcess};

/// `count` CT slices of 0.5 MB.
async fn corpus(dir: &Path, count: usize) -> PathBuf {
    let corpus = dir.join(format!("corpus-{count}"));
    let out = run_peer(
        "gen.py",
        &[
            corpus.to_str().expect("utf8"),
            "--count",
            &count.to_string(),
            "--studies",
            "2",
            "--rows",
            "512",
            "--cols",
            "512",
            "--seed",
            "77",
        ],
    )
    .await;
    assert!(out.status.success(), "gen.py failed");
    corpus
}

/// Send files (or a folder) over two associations, logging acknowledged
/// files.
fn send(port: u16, paths: &[PathBuf], ack: &Path) -> tokio::task::JoinHandle<std::process::Output> {
    let mut args = vec!["127.0.0.1".to_owned(), port.to_string()];
    args.extend(paths.iter().map(|p| p.to_str().expect("utf8").to_owned()));
    args.extend([
        "--assocs".into(),
        "2".into(),
        "--allow-failures".into(),
        // A server that crashed is noticed soon, not after two minutes.
        "--timeout".into(),
        "10".into(),
        "--ack-log".into(),
        ack.to_str().expect("utf8").to_owned(),
    ]);
    tokio::spawn(async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_peer("send.py", &args).await
    })
}

fn acked_files(ack: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string(ack)
        .unwrap_or_default()
        .lines()
        .map(PathBuf::from)
        .collect()
}

/// Run a server that crashes at `point` (its n-th passage), sending the
/// corpus to it; return the files acknowledged before the crash.
async fn crash_during_ingest(data: &Path, corpus: &Path, point: &str) -> Vec<PathBuf> {
    let ack = data.with_extension("ack");
    let server = ServerProcess::spawn_with_env(data, &[], &[("TESSERA_CRASH_AT", point)]).await;
    let log = server.log.clone();
    let sender = send(server.dicom_port, &[corpus.to_owned()], &ack);
    let status = server.exited(Duration::from_secs(180)).await;
    let out = sender.await.expect("sender task");
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    let name = point.split(':').next().unwrap_or(point);
    assert!(
        log.contains(&format!("crash point {name} reached")),
        "{point}: the server did not crash there (exit {status:?}); sender: {}; log: {log}",
        String::from_utf8_lossy(&out.stdout)
    );
    acked_files(&ack)
}

/// After a restart: every file in `acked` is indexed and whole, nothing is
/// unreferenced, verify is clean, and the server takes the corpus again.
async fn check_after_restart(data: &Path, corpus: &Path, acked: &[PathBuf], what: &str) {
    let server = ServerProcess::spawn(data, &[]).await;
    let out = tessera_cli(data, &["verify", "--json"]).await;
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    assert!(
        out.status.success()
            && report["unreferenced"]
                .as_array()
                .is_some_and(|u| u.is_empty()),
        "{what}: verify after recovery: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        report["in_journal"], 0,
        "{what}: recovery placed every object"
    );
    let mut config_raw = tessera::config::RawConfig::default();
    config_raw.storage.data_dir = Some(data.to_owned());
    let config = tessera::config::Config::from_raw(config_raw).expect("config");
    let index = tessera::index::Index::open(&config.index_url, 2)
        .await
        .expect("index");
    let mut pairs = Vec::new();
    for (file, uid) in acked.iter().zip(common::sop_uids(acked)) {
        let record = index
            .instance(&uid)
            .await
            .expect("query")
            .unwrap_or_else(|| panic!("{what}: acknowledged {} lost", file.display()));
        pairs.push(file.to_str().expect("utf8").to_owned());
        let object = data.join("objects").join(&record.key);
        pairs.push(object.to_str().expect("utf8").to_owned());
    }
    index.close().await;
    if !pairs.is_empty() {
        let args: Vec<&str> = pairs.iter().map(String::as_str).collect();
        let out = run_peer("same_dataset.py", &args).await;
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // The restarted server is whole: it takes stores again.
    let ack = data.with_extension("again");
    let mut some: Vec<PathBuf> = std::fs::read_dir(corpus)
        .expect("corpus")
        .map(|e| e.expect("entry").path())
        .collect();
    some.sort();
    some.truncate(3);
    let out = send(server.dicom_port, &some, &ack).await.expect("sender");
    assert!(
        out.status.success(),
        "{what}: resend after recovery failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(server.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_step_loses_nothing_acknowledged() {
    if python().is_none() {
        return skip(
            "a_crash_at_every_step_loses_nothing_acknowledged",
            "pynetdicom missing",
        );
    }
    let dir = tempfile::tempdir().expect("tmp");
    let small = corpus(dir.path(), 30).await;
    // More than one 64 MiB journal segment holds.
    let large = corpus(dir.path(), 140).await;
    for point in tessera::crash_points::POINTS {
        // Mid-run for every point. The placer gathers objects for a
        // while, so it passes its points less often than the committer.
        let (corpus, at) = match *point {
            "segment-advanced" => (&large, 1),
            "placing" | "placed" | "marked" => (&small, 1),
            _ => (&small, 12),
        };
        let plan = format!("{point}:{at}");
        let data = dir.path().join(point);
        let acked = crash_during_ingest(&data, corpus, &plan).await;
        if ["placing", "placed", "marked", "segment-advanced"].contains(point) {
            assert!(!acked.is_empty(), "{plan}: nothing was acknowledged first");
        }
        check_after_restart(&data, corpus, &acked, &plan).await;
    }
}

/// The index files as they are now, to put back later.
fn snapshot_index(data: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("snapshot dir");
    for name in ["index.sqlite", "index.sqlite-wal", "index.sqlite-shm"] {
        let from = data.join(name);
        if from.exists() {
            std::fs::copy(&from, to.join(name)).expect("copy index");
        }
    }
}

fn restore_index(data: &Path, from: &Path) {
    for name in ["index.sqlite", "index.sqlite-wal", "index.sqlite-shm"] {
        let _ = std::fs::remove_file(data.join(name));
        if from.join(name).exists() {
            std::fs::copy(from.join(name), data.join(name)).expect("restore index");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_loses_no_acknowledged_instance() {
    if python().is_none() {
        return skip(
            "a_power_cut_loses_no_acknowledged_instance",
            "pynetdicom missing",
        );
    }
    let dir = tempfile::tempdir().expect("tmp");
    let corpus = corpus(dir.path(), 40).await;
    // Before placement: only the journal was synced. After placement but
    // before the index sync: the objects are in place too. Either way the
    // index commits since startup were never synced, and a power cut may
    // take all of them.
    // The placer waits before it crashes, so that stores are acknowledged
    // meanwhile and none of their index rows is synced by a placement.
    // The third run also loses the bytes of the files just placed, as a
    // power cut before the placement's sync may: its renames reached the
    // disk, their data did not.
    for (point, torn) in [
        ("placing:1:3000", false),
        ("placed:1:3000", false),
        ("placed:1:3000", true),
    ] {
        let name = format!(
            "{}{}",
            point.replace(':', "-"),
            if torn { "-torn" } else { "" }
        );
        let data = dir.path().join(&name);
        let before = dir.path().join(format!("{name}-index"));
        // The index as the server leaves it at startup, all of it synced.
        let server = ServerProcess::spawn(&data, &[]).await;
        assert!(server.terminate().await.success());
        snapshot_index(&data, &before);
        let acked = crash_during_ingest(&data, &corpus, point).await;
        assert!(!acked.is_empty(), "{point}: nothing was acknowledged first");
        restore_index(&data, &before);
        if torn {
            let torn = tear_objects(&data.join("objects"));
            assert!(torn > 0, "{name}: no object was placed before the crash");
        }
        check_after_restart(&data, &corpus, &acked, &name).await;
    }
}

/// Damage every placed object as a power cut can leave a file whose data
/// was never written: empty, cut short, or its length of zeros. Returns
/// how many were damaged.
fn tear_objects(root: &Path) -> usize {
    let files = common::object_files(root);
    for (n, path) in files.iter().enumerate() {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .expect("open object");
        let len = file.metadata().expect("metadata").len();
        match n % 3 {
            0 => file.set_len(0).expect("truncate"),
            1 => file.set_len(len / 2).expect("truncate"),
            _ => std::fs::write(path, vec![0u8; len as usize]).expect("zero"),
        }
    }
    files.len()
}

/// The search's answer once `check` holds, within 20 s.
async fn search_until(
    port: u16,
    query: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = http_get(port, &format!("/api/v1/search?{query}"), &[]).await;
        let page: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if status == 200 && check(&page) {
            return page;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{query}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn study_uids(page: &serde_json::Value) -> Vec<String> {
    page["results"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|r| r["study_instance_uid"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_index_converges_after_a_crash() {
    if python().is_none() {
        return skip(
            "the_search_index_converges_after_a_crash",
            "pydicom missing",
        );
    }
    let dir = tempfile::tempdir().expect("tmp");
    let first = "1.2.826.0.1.3680043.10.8.501";
    let second = "1.2.826.0.1.3680043.10.8.502";
    for point in tessera::crash_points::SEARCH_POINTS {
        let data = dir.path().join(point);
        let plan = format!("{point}:1");
        let server =
            ServerProcess::spawn_with_env(&data, &[], &[("TESSERA_CRASH_AT", &plan)]).await;
        let log = server.log.clone();
        // Acknowledged, so in SQL; the indexer crashes on its document.
        stow_generated(
            server.http_port,
            &[
                "--seed",
                "1",
                "--study-uid",
                first,
                "--patient-name",
                "Kowalski^Jan",
            ],
        )
        .await;
        let status = server.exited(Duration::from_secs(30)).await;
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            log.contains(&format!("crash point {point} reached")),
            "{plan}: no crash there (exit {status:?}): {log}"
        );

        let server = ServerProcess::spawn(&data, &[]).await;
        let page = search_until(server.http_port, "q=kowalski", |p| p["total"] == 1).await;
        assert_eq!(study_uids(&page), [first], "{plan}: {page}");
        stow_generated(
            server.http_port,
            &[
                "--seed",
                "2",
                "--study-uid",
                second,
                "--patient-name",
                "Kowalski^Anna",
            ],
        )
        .await;
        let page = search_until(server.http_port, "q=kowalski&sort=date", |p| {
            p["total"] == 2
        })
        .await;
        let mut found = study_uids(&page);
        found.sort();
        assert_eq!(found, [first, second], "{plan}: each study once: {page}");
        let page = search_until(server.http_port, "q=", |p| p["total"].is_u64()).await;
        assert_eq!(page["total"], 2, "{plan}: no document twice: {page}");
        assert!(server.terminate().await.success());
    }
}
