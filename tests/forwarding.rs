//! Store-and-forward: routing rules, a destination that is down and comes
//! back (nothing lost, nothing sent twice, across a restart), and dead
//! letters for a destination that never answers.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{dcmtk, free_port, http_get, local_peer, python, run_peer, skip, Archive, Backend};
use tessera::routing::RawRoute;

fn route(name: &str, destination: &str, modality: &[&str]) -> RawRoute {
    RawRoute {
        name: name.into(),
        destination: destination.into(),
        calling_ae: vec![],
        modality: modality.iter().map(|m| (*m).to_owned()).collect(),
        sop_class_uid: vec![],
        study_description: vec![],
        body_part_examined: vec![],
        patient_id: vec![],
    }
}

async fn queue(archive: &Archive) -> serde_json::Value {
    let (status, body) = http_get(archive.http_port, "/api/v1/forwarding", &[]).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("json")
}

/// Wait (bounded) until the queue satisfies `done`.
async fn wait_for(
    archive: &Archive,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    for _ in 0..600 {
        let q = queue(archive).await;
        if done(&q) {
            return q;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}: {}", queue(archive).await);
}

async fn store(archive: &Archive, dir: &Path, args: &[&str]) {
    let d = dir.to_str().expect("utf8");
    let mut all = vec![d];
    all.extend_from_slice(args);
    assert!(run_peer("gen.py", &all).await.status.success());
    let port = archive.dicom_port.to_string();
    assert!(run_peer("send.py", &["127.0.0.1", &port, d])
        .await
        .status
        .success());
}

async fn forwards_survive_outage_and_restart(backend: Backend) {
    let (Some(storescp), Some(_)) = (dcmtk("storescp"), python()) else {
        return skip(
            "forwards_survive_outage_and_restart",
            "DCMTK storescp or pynetdicom missing",
        );
    };
    let dest_port = free_port();
    let mut archive = Archive::start_with(backend, |raw| {
        raw.peers = vec![local_peer("DEST", dest_port)];
        raw.routes = vec![route("ct-to-dest", "DEST", &["CT"]), {
            let mut r = route("never", "DEST", &[]);
            r.calling_ae = vec!["NOMATCH*".into()];
            r
        }];
    })
    .await;
    let work = archive.dir.path().to_owned();
    store(
        &archive,
        &work.join("ct"),
        &["--count", "4", "--seed", "61"],
    )
    .await;
    store(
        &archive,
        &work.join("mr"),
        &["--count", "2", "--seed", "62", "--modality", "MR"],
    )
    .await;
    let q = queue(&archive).await;
    assert_eq!(
        q["pending"].as_i64().expect("pending") + q["done"].as_i64().expect("done"),
        4,
        "only CT is routed: {q}"
    );
    assert_eq!(q["done"], 0, "destination is down: {q}");

    // Restart with the destination still down: the queue is kept.
    archive.restart().await;
    assert_eq!(queue(&archive).await["pending"], 4);

    // The destination comes back: everything arrives exactly once.
    let received = work.join("received");
    std::fs::create_dir_all(&received).expect("dir");
    let mut scp = tokio::process::Command::new(storescp)
        .args(["--aetitle", "DEST", "+xa", "-od"])
        .arg(&received)
        .arg(dest_port.to_string())
        .kill_on_drop(true)
        .spawn()
        .expect("storescp");
    let q = wait_for(&archive, "the queue to drain", |q| {
        q["done"] == 4 && q["pending"] == 0
    })
    .await;
    assert_eq!(q["dead"], 0);
    let files: Vec<_> = std::fs::read_dir(&received)
        .expect("dir")
        .flatten()
        .collect();
    assert_eq!(files.len(), 4, "each instance once");
    let (_, metrics) = http_get(archive.http_port, "/metrics", &[]).await;
    assert!(metrics.contains("tessera_forwarded_total 4"), "{metrics}");
    let _ = scp.kill().await;
}

async fn dead_letters_after_max_attempts(backend: Backend) {
    let Some(_) = python() else {
        return skip("dead_letters_after_max_attempts", "pynetdicom missing");
    };
    let archive = Archive::start_with(backend, |raw| {
        raw.routes = vec![route("to-ghost", "GHOST", &[])];
        raw.forwarding.max_attempts = Some(2);
    })
    .await;
    store(
        &archive,
        &archive.dir.path().join("c"),
        &["--count", "2", "--seed", "63"],
    )
    .await;
    let q = wait_for(&archive, "dead letters", |q| q["dead"] == 2).await;
    assert_eq!(q["pending"], 0);
    let letters = q["dead_letters"].as_array().expect("list");
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0]["destination_ae"], "GHOST");
    assert_eq!(letters[0]["attempts"], 2);
    assert!(
        letters[0]["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("not registered"),
        "{q}"
    );
}

on_both_backends!(
    forwards_survive_outage_and_restart,
    dead_letters_after_max_attempts
);
