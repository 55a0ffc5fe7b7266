//! Store-and-forward: routing rules, a destination that is down and comes
//! back (nothing lost, nothing sent twice, across a restart), dead letters
//! for a destination that never answers, and forwards confirmed by the
//! destination's storage commitment (a pynetdicom destination reporting on
//! the same or a new association, failing, refusing or never reporting; and
//! a second Tessera).

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    dcmtk, free_port, http_get, local_peer, peers_dir, python, run_peer, skip, Archive, Backend,
    StoreScp,
};
use tessera::routing::RawRoute;
use tokio::io::AsyncBufReadExt;

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
        confirm_commitment: false,
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

/// `tests/peers/commit_scp.py`: a storage SCP that is also a Storage
/// Commitment SCP, logging what it receives; killed on drop.
struct CommitScp {
    _child: tokio::process::Child,
    log: PathBuf,
}

impl CommitScp {
    async fn start_at(dir: &Path, archive_port: u16, options: &[String]) -> Self {
        std::fs::create_dir_all(dir).expect("dir");
        let log = dir.join("commit-scp.jsonl");
        let mut child = tokio::process::Command::new("python3")
            .arg(peers_dir().join("commit_scp.py"))
            .args(["--port", "0", "--ae", "DEST", "--log"])
            .arg(&log)
            .args(["--callback-port", &archive_port.to_string()])
            .args(options)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("commit_scp.py starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(30),
            tokio::io::BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .expect("commit_scp.py ready in time")
        .expect("reads");
        assert!(line.starts_with("ready "), "commit_scp.py said {line:?}");
        CommitScp { _child: child, log }
    }

    /// The logged reports, once they list `n` committed instances in all
    /// (the peer logs a report only after Tessera has answered it).
    async fn wait_committed(&self, n: usize) -> Vec<serde_json::Value> {
        for _ in 0..100 {
            let reports = self.events("report");
            let committed: usize = reports
                .iter()
                .map(|r| r["committed"].as_array().map_or(0, Vec::len))
                .sum();
            if committed >= n {
                return reports;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "reports never listed {n} committed: {:?}",
            self.events("report")
        );
    }

    /// The logged events of one kind.
    fn events(&self, kind: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["event"] == kind)
            .collect()
    }
}

/// An archive whose CT route to DEST asks for storage commitment, the
/// destination started once the archive's port is known.
async fn archive_with_commit_route(
    backend: Backend,
    options: &[&str],
    tweak: impl FnOnce(&mut tessera::config::RawConfig),
) -> (Archive, CommitScp) {
    let dest_port = free_port();
    let archive = Archive::start_with(backend, |raw| {
        raw.peers = vec![local_peer("DEST", dest_port)];
        let mut r = route("ct-confirmed", "DEST", &["CT"]);
        r.confirm_commitment = true;
        raw.routes = vec![r];
        raw.forwarding.commitment_report_wait_secs = Some(1);
        tweak(raw);
    })
    .await;
    let dir = archive.dir.path().join("dest");
    let mut args = vec!["--port".to_owned(), dest_port.to_string()];
    args.extend(options.iter().map(|o| (*o).to_owned()));
    let scp = CommitScp::start_at(&dir, archive.dicom_port, &args).await;
    (archive, scp)
}

async fn forwards_confirmed_by_commitment(backend: Backend) {
    let Some(_) = python() else {
        return skip("forwards_confirmed_by_commitment", "pynetdicom missing");
    };
    for mode in ["same", "new"] {
        let (archive, scp) = archive_with_commit_route(backend, &["--mode", mode], |_| {}).await;
        let work = archive.dir.path().to_owned();
        store(
            &archive,
            &work.join("ct"),
            &["--count", "3", "--seed", "71"],
        )
        .await;
        let q = wait_for(&archive, "commitment to confirm the forwards", |q| {
            q["done"] == 3
        })
        .await;
        assert_eq!(q["pending"], 0, "{q}");
        assert_eq!(q["committing"], 0, "{q}");
        assert_eq!(scp.events("store").len(), 3, "each instance sent once");
        // One request per forwarding batch; the instances may arrive in more
        // than one batch.
        let actions = scp.events("action");
        let asked: usize = actions
            .iter()
            .map(|a| a["refs"].as_array().map_or(0, Vec::len))
            .sum();
        assert_eq!(asked, 3, "each instance asked for once: {actions:?}");
        let reports = scp.wait_committed(3).await;
        for report in &reports {
            assert_eq!(report["mode"], mode);
            assert_eq!(report["status"], 0, "Tessera accepted the report");
            assert!(
                actions
                    .iter()
                    .any(|a| a["transaction_uid"] == report["transaction_uid"]),
                "{report} answers a request"
            );
        }
        // The gauge follows the queue within the forwarder's poll interval.
        let mut metrics = String::new();
        for _ in 0..50 {
            metrics = http_get(archive.http_port, "/metrics", &[]).await.1;
            if metrics.contains("tessera_forward_queue_committing 0") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            metrics.contains("tessera_forward_queue_committing 0"),
            "{metrics}"
        );
        if mode == "new" {
            // Known now to report on a new association: the next batch is
            // released without waiting and still confirmed.
            store(
                &archive,
                &work.join("ct2"),
                &["--count", "2", "--seed", "76"],
            )
            .await;
            let q = wait_for(&archive, "the second batch to be confirmed", |q| {
                q["done"] == 5
            })
            .await;
            assert_eq!(q["committing"], 0, "{q}");
            assert!(scp
                .wait_committed(5)
                .await
                .iter()
                .all(|r| r["mode"] == "new"));
        }
    }
}

async fn failed_commitment_sends_again(backend: Backend) {
    let Some(_) = python() else {
        return skip("failed_commitment_sends_again", "pynetdicom missing");
    };
    let (archive, scp) =
        archive_with_commit_route(backend, &["--mode", "same", "--fail-first", "1"], |_| {}).await;
    store(
        &archive,
        &archive.dir.path().join("ct"),
        &["--count", "2", "--seed", "72"],
    )
    .await;
    let q = wait_for(&archive, "the second, successful commitment", |q| {
        q["done"] == 2
    })
    .await;
    assert_eq!(q["dead"], 0, "{q}");
    // The first report fails what its request listed; those are sent and
    // asked for again, and then committed.
    let reports = scp.wait_committed(2).await;
    let failed_first = reports[0]["failed"].as_array().map_or(0, Vec::len);
    assert!(failed_first >= 1, "{reports:?}");
    assert_eq!(
        scp.events("store").len(),
        2 + failed_first,
        "the failed ones sent twice"
    );
    assert_eq!(scp.events("action").len(), reports.len());
}

async fn unconfirmed_forwards_end_as_dead_letters(backend: Backend) {
    let Some(_) = python() else {
        return skip(
            "unconfirmed_forwards_end_as_dead_letters",
            "pynetdicom missing",
        );
    };
    // No report in time: waiting, then sent again, then a dead letter.
    let (archive, scp) = archive_with_commit_route(backend, &["--mode", "never"], |raw| {
        raw.forwarding.commitment_timeout_secs = Some(3);
        raw.forwarding.max_attempts = Some(2);
    })
    .await;
    store(
        &archive,
        &archive.dir.path().join("ct"),
        &["--count", "2", "--seed", "73"],
    )
    .await;
    let q = wait_for(&archive, "forwards waiting for commitment", |q| {
        q["committing"] == 2
    })
    .await;
    assert_eq!(q["done"], 0, "not done without a report: {q}");
    let q = wait_for(&archive, "dead letters", |q| q["dead"] == 2).await;
    assert!(
        q["dead_letters"][0]["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("no storage commitment report"),
        "{q}"
    );
    assert_eq!(scp.events("store").len(), 4, "sent again after the timeout");

    // A destination that refuses the request.
    let (archive, scp) =
        archive_with_commit_route(backend, &["--mode", "same", "--refuse-action"], |raw| {
            raw.forwarding.max_attempts = Some(1)
        })
        .await;
    store(
        &archive,
        &archive.dir.path().join("ct"),
        &["--count", "1", "--seed", "74"],
    )
    .await;
    let q = wait_for(&archive, "a dead letter", |q| q["dead"] == 1).await;
    assert!(
        q["dead_letters"][0]["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("refused the commitment request (status 0110H)"),
        "{q}"
    );
    assert_eq!(scp.events("action").len(), 1);
}

/// Tessera forwarding to Tessera: the destination verifies each object
/// against its hash and reports on the forwarding association.
/// A second Tessera as DEST, and an archive that forwards everything to it,
/// confirmed by storage commitment. Returns (destination, archive).
async fn confirmed_by_another_tessera(backend: Backend) -> (Archive, Archive) {
    let destination = Archive::start_with(backend, |raw| {
        raw.dicom.ae_title = Some("DEST".into());
    })
    .await;
    let archive = Archive::start_with(backend, |raw| {
        raw.peers = vec![local_peer("DEST", destination.dicom_port)];
        let mut r = route("all-confirmed", "DEST", &[]);
        r.confirm_commitment = true;
        raw.routes = vec![r];
    })
    .await;
    (destination, archive)
}

async fn forwards_confirmed_by_another_tessera(backend: Backend) {
    let Some(_) = python() else {
        return skip(
            "forwards_confirmed_by_another_tessera",
            "pynetdicom missing",
        );
    };
    let (destination, archive) = confirmed_by_another_tessera(backend).await;
    store(
        &archive,
        &archive.dir.path().join("c"),
        &["--count", "3", "--seed", "75"],
    )
    .await;
    let q = wait_for(&archive, "the other Tessera to commit", |q| q["done"] == 3).await;
    assert_eq!(q["committing"], 0, "{q}");
    let stats = destination.index().await.stats().await.expect("stats");
    assert_eq!(stats.instances, 3);
}

/// Stores arrive on four associations while the forwarder and the
/// commitment workers write to the same index: not one store may fail
/// (on SQLite a deferred transaction used to lose such races with A700).
async fn stores_never_fail_beside_forwarding(backend: Backend) {
    let Some(_) = python() else {
        return skip("stores_never_fail_beside_forwarding", "pynetdicom missing");
    };
    let (_destination, archive) = confirmed_by_another_tessera(backend).await;
    let dir = archive.dir.path().join("burst");
    let d = dir.to_str().expect("utf8");
    assert!(run_peer("gen.py", &[d, "--count", "400", "--seed", "76"])
        .await
        .status
        .success());
    let port = archive.dicom_port.to_string();
    let out = run_peer("send.py", &["127.0.0.1", &port, d, "--assocs", "4"]).await;
    let summary: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("send.py prints a JSON summary");
    assert_eq!(summary["success"], 400, "{summary}");
    let q = wait_for(&archive, "every forward to be confirmed", |q| {
        q["done"] == 400
    })
    .await;
    assert_eq!(q["dead_letters"], serde_json::json!([]), "{q}");
}

/// A destination that accepts TCP connections and never answers holds up
/// only its own worker: another destination gets its instances at once.
async fn slow_destination_holds_up_no_other(backend: Backend) {
    let (Some(_), Some(_)) = (dcmtk("storescp"), python()) else {
        return skip(
            "slow_destination_holds_up_no_other",
            "DCMTK storescp or pynetdicom missing",
        );
    };
    // Accepts and holds every connection, reading nothing.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            sockets.push(socket);
        }
    });
    let work = tempfile::tempdir().expect("tmp");
    let received = work.path().join("fast");
    let fast = StoreScp::start("FAST", &received, &[]).await;
    let archive = Archive::start_with(backend, |raw| {
        raw.dicom.artim_timeout_secs = Some(60);
        // "ASLOW" sorts first: a single queue walk would reach it first.
        raw.peers = vec![
            local_peer("ASLOW", silent_port),
            local_peer("FAST", fast.port),
        ];
        raw.routes = vec![
            route("to-slow", "ASLOW", &[]),
            route("to-fast", "FAST", &[]),
        ];
    })
    .await;
    store(
        &archive,
        &work.path().join("in"),
        &["--count", "4", "--seed", "66"],
    )
    .await;
    let mut files = 0;
    for _ in 0..150 {
        files = std::fs::read_dir(&received).map(|d| d.count()).unwrap_or(0);
        if files == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(files, 4, "FAST waited behind the silent destination");
    held.abort();
}

on_both_backends!(
    slow_destination_holds_up_no_other,
    stores_never_fail_beside_forwarding,
    forwards_survive_outage_and_restart,
    dead_letters_after_max_attempts,
    forwards_confirmed_by_commitment,
    failed_commitment_sends_again,
    unconfirmed_forwards_end_as_dead_letters,
    forwards_confirmed_by_another_tessera
);
