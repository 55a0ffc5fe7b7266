//! Storage Commitment Push Model SCP against a pynetdicom SCU: the report on
//! the same association and on a new one, real verification (a corrupted
//! object and an unknown one are reported failed), and a pending report
//! delivered after a restart.

use crate::common;

use std::path::PathBuf;

use common::{free_port, local_peer, python, run_peer, skip, Archive, Backend};

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";

fn sop_uid(file: &PathBuf) -> String {
    dicom_object::open_file(file)
        .expect("dicom")
        .meta()
        .media_storage_sop_instance_uid()
        .to_owned()
}

async fn commit(
    archive: &Archive,
    mode: &str,
    listen: u16,
    refs: &[String],
    extra: &[&str],
) -> serde_json::Value {
    let port = archive.dicom_port.to_string();
    let listen = listen.to_string();
    let mut args = vec!["127.0.0.1", &port, "--mode", mode, "--listen-port", &listen];
    for r in refs {
        args.push("--ref");
        args.push(r);
    }
    args.extend_from_slice(extra);
    let out = run_peer("commit.py", &args).await;
    assert!(
        out.status.success(),
        "commit.py failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

async fn commitment_reports(backend: Backend) {
    let Some(_) = python() else {
        return skip("commitment_reports", "pynetdicom missing");
    };
    let listen = free_port();
    let mut archive = Archive::start_with(backend, |raw| {
        raw.peers = vec![local_peer("COMMITSCU", listen)];
    })
    .await;
    let dir = archive.dir.path().join("corpus");
    assert!(run_peer(
        "gen.py",
        &[dir.to_str().expect("utf8"), "--count", "3", "--seed", "51"]
    )
    .await
    .status
    .success());
    let port = archive.dicom_port.to_string();
    assert!(run_peer(
        "send.py",
        &["127.0.0.1", &port, dir.to_str().expect("utf8")]
    )
    .await
    .status
    .success());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let uids: Vec<String> = files.iter().map(sop_uid).collect();

    // Corrupt the third object on disk: still indexed, no longer intact.
    archive.wait_placed().await;
    let index = archive.index().await;
    let record = index
        .instance(&uids[2])
        .await
        .expect("query")
        .expect("indexed");
    let path = archive.config.data_dir.join("objects").join(&record.key);
    let mut bytes = std::fs::read(&path).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x5a;
    std::fs::write(&path, bytes).expect("corrupt");

    let unknown = "1.2.3.4.5.6.7.8.9";
    let mut refs: Vec<String> = uids.iter().map(|u| format!("{CT}:{u}")).collect();
    refs.push(format!("{CT}:{unknown}"));
    let mut committed = vec![uids[0].clone(), uids[1].clone()];
    committed.sort();
    let mut failed = vec![
        serde_json::json!([uids[2], 0x0110]),
        serde_json::json!([unknown, 0x0112]),
    ];
    failed.sort_by_key(|v| v[0].as_str().unwrap_or_default().to_owned());

    for mode in ["same", "new"] {
        let report = commit(&archive, mode, listen, &refs, &[]).await;
        assert_eq!(report["action_status"], "0x0000", "{mode}: {report}");
        assert_eq!(report["event_type"], 2, "{mode}: failures exist: {report}");
        assert_eq!(
            report["committed"],
            serde_json::json!(committed),
            "{mode}: {report}"
        );
        assert_eq!(
            report["failed"],
            serde_json::json!(failed),
            "{mode}: {report}"
        );
    }
    // The worker marks a report delivered after the requester answered it,
    // which can be just after commit.py has exited.
    let mut counts = (0, 0);
    for _ in 0..100 {
        counts = index.commitment_counts().await.expect("counts");
        if counts == (0, 2) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(counts, (0, 2));

    // A report that cannot be delivered (nobody listening) survives a
    // restart and is delivered once the requester listens again.
    let good = vec![refs[0].clone()];
    let report = commit(&archive, "new", listen, &good, &["--no-wait"]).await;
    assert_eq!(report["action_status"], "0x0000");
    archive.restart().await;
    let (pending, _) = index.commitment_counts().await.expect("counts");
    assert_eq!(pending, 1, "still pending after the restart");
    // Listen and wait for the retry (backoff is a few seconds at most).
    let out = run_peer("commit_listen.py", &[&listen.to_string(), "60"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(got["event_type"], 1);
    assert_eq!(got["committed"], serde_json::json!([uids[0]]));
    for _ in 0..100 {
        counts = index.commitment_counts().await.expect("counts");
        if counts == (0, 3) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(counts, (0, 3));
}

/// Requests from anyone are bounded: too many references are refused with
/// 0213 before anything is stored, and a report nobody takes is given up
/// after `forwarding.max_attempts` deliveries.
async fn hostile_commitment_requests(backend: Backend) {
    let Some(_) = python() else {
        return skip("hostile_commitment_requests", "pynetdicom missing");
    };
    let archive = Archive::start_with(backend, |raw| {
        raw.forwarding.max_attempts = Some(2);
    })
    .await;
    let listen = free_port();
    let bulk = (tessera::dimse::service::commitment::MAX_REFERENCES + 1).to_string();
    let report = commit(
        &archive,
        "new",
        listen,
        &[],
        &["--no-wait", "--bulk", &bulk],
    )
    .await;
    assert_eq!(report["action_status"], "0x0213", "{report}");
    let index = archive.index().await;
    let transaction = report["transaction_uid"].as_str().expect("uid");
    assert_eq!(
        index.commitment_state(transaction).await.expect("query"),
        None
    );

    // COMMITSCU is no registered peer: its report cannot be delivered.
    let one = vec![format!("{CT}:1.2.3.4")];
    let report = commit(&archive, "new", listen, &one, &["--no-wait"]).await;
    assert_eq!(report["action_status"], "0x0000", "{report}");
    let transaction = report["transaction_uid"].as_str().expect("uid");
    let mut state = None;
    for _ in 0..150 {
        state = index.commitment_state(transaction).await.expect("query");
        if state.as_deref() == Some("failed") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        state.as_deref(),
        Some("failed"),
        "given up after two attempts"
    );
}

on_both_backends!(commitment_reports, hostile_commitment_requests);
