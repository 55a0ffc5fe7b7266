//! Two Tessera nodes sharing one PostgreSQL index and one S3 bucket (moto),
//! as a site that outgrows one machine runs them. Both receive C-STOREs and
//! both run a route to a DCMTK storescp: every instance must arrive there
//! exactly once, each node must answer C-FIND and QIDO for the other's
//! instances, and a node killed with -9 during ingest must lose nothing it
//! acknowledged while the other keeps serving.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::moto::{create_bucket, moto_server_path, python_with_boto3, start_moto};
use common::{dcmtk, python, run_peer, skip, tessera_cli, PgDatabase, ServerProcess, StoreScp};

const NAME: &str = "two_nodes_share_index_and_bucket";

fn config(data: &Path, pg_url: &str, s3: &str, storescp_port: u16) -> PathBuf {
    let text = format!(
        r#"[storage]
data_dir = "{data}"
url = "s3://nodes/archive"

[storage.s3]
endpoint = "{s3}"
region = "us-east-1"
access_key_id = "testing"
secret_access_key = "testing"
allow_http = true

[index]
url = "{pg_url}"

[[peers]]
ae_title = "DEST"
host = "127.0.0.1"
port = {storescp_port}

[[routes]]
name = "everything"
destination = "DEST"
"#,
        data = data.display()
    );
    std::fs::create_dir_all(data).expect("data dir");
    let path = data.with_extension("toml");
    std::fs::write(&path, text).expect("config file");
    path
}

async fn start(config: &Path, data: &Path) -> ServerProcess {
    ServerProcess::spawn(data, &["--config", config.to_str().expect("utf-8")]).await
}

/// (study, SOP Instance UID) of every file under `paths`.
async fn uids(paths: &[&Path]) -> Vec<(String, String)> {
    let args: Vec<&str> = paths.iter().map(|p| p.to_str().expect("utf-8")).collect();
    let out = run_peer("uids.py", &args).await;
    assert!(out.status.success(), "uids.py failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect()
}

async fn generate(dir: &Path, count: usize, studies: usize, seed: u32) {
    let out = run_peer(
        "gen.py",
        &[
            dir.to_str().expect("utf-8"),
            "--count",
            &count.to_string(),
            "--studies",
            &studies.to_string(),
            "--seed",
            &seed.to_string(),
        ],
    )
    .await;
    assert!(out.status.success(), "gen.py failed");
}

async fn send(port: u16, dir: &Path, extra: &[&str]) -> std::process::Output {
    let port = port.to_string();
    let mut args = vec!["127.0.0.1", &port, dir.to_str().expect("utf-8")];
    args.extend_from_slice(extra);
    run_peer("send.py", &args).await
}

/// Number of instances QIDO-RS on `http_port` lists for `study`.
async fn qido_count(http_port: u16, study: &str) -> usize {
    let (status, body) = common::http_get(
        http_port,
        &format!("/dicom-web/studies/{study}/instances"),
        &[("Accept", "application/dicom+json")],
    )
    .await;
    if status == 204 {
        return 0;
    }
    assert_eq!(status, 200, "QIDO for study {study}: {body}");
    serde_json::from_str::<Vec<serde_json::Value>>(&body)
        .expect("QIDO JSON")
        .len()
}

/// Matches DCMTK findscu reports for an IMAGE-level query on `study`.
async fn findscu_count(dicom_port: u16, study: &str) -> usize {
    let tool = dcmtk("findscu").expect("findscu");
    let out = tokio::process::Command::new(tool)
        .env("TCP_NODELAY", "1")
        .args([
            "-S",
            "-aec",
            "TESSERA",
            "127.0.0.1",
            &dicom_port.to_string(),
        ])
        .args(["-k", "QueryRetrieveLevel=IMAGE"])
        .args(["-k", &format!("StudyInstanceUID={study}")])
        .args(["-k", "SOPInstanceUID"])
        .output()
        .await
        .expect("findscu runs");
    assert!(out.status.success(), "findscu: {out:?}");
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .chain(String::from_utf8_lossy(&out.stdout).lines())
        .filter(|l| l.contains("Find Response:") && l.contains("(Pending)"))
        .count()
}

/// What storescp received: SOP Instance UID → how many times.
async fn received(dir: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    if std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0) == 0 {
        return counts;
    }
    for (_, sop) in uids(&[dir]).await {
        *counts.entry(sop).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_share_index_and_bucket() {
    if !common::postgres_available().await {
        return skip(NAME, "PostgreSQL is not reachable on 127.0.0.1:5432");
    }
    let Some(moto_bin) = moto_server_path() else {
        return skip(NAME, "moto_server not found (pip install 'moto[server]')");
    };
    if python().is_none() || !python_with_boto3() {
        return skip(NAME, "python3 with pynetdicom and boto3 is missing");
    }
    if dcmtk("storescp").is_none() || dcmtk("findscu").is_none() {
        return skip(NAME, "DCMTK storescp/findscu not found");
    }
    let work = tempfile::tempdir().expect("temp dir");
    let moto = start_moto(&moto_bin, work.path());
    create_bucket(&moto.endpoint(), "nodes").await;
    let pg = PgDatabase::create().await;
    let dest_dir = work.path().join("dest");
    // Unique file names: a second delivery of an instance is a second file.
    let dest = StoreScp::start("DEST", &dest_dir, &["+uf"]).await;

    let (data_a, data_b) = (work.path().join("node-a"), work.path().join("node-b"));
    let config_a = config(&data_a, &pg.url, &moto.endpoint(), dest.port);
    let config_b = config(&data_b, &pg.url, &moto.endpoint(), dest.port);
    let node_a = start(&config_a, &data_a).await;
    let node_b = start(&config_b, &data_b).await;

    // Both nodes receive at once, and both forwarders see the whole queue.
    let (corpus_a, corpus_b) = (work.path().join("corpus-a"), work.path().join("corpus-b"));
    generate(&corpus_a, 150, 3, 31).await;
    generate(&corpus_b, 150, 3, 32).await;
    let (out_a, out_b) = tokio::join!(
        send(node_a.dicom_port, &corpus_a, &["--assocs", "2"]),
        send(node_b.dicom_port, &corpus_b, &["--assocs", "2"])
    );
    assert!(
        out_a.status.success() && out_b.status.success(),
        "sends failed"
    );
    let sent_a = uids(&[&corpus_a]).await;
    let sent_b = uids(&[&corpus_b]).await;
    let expected: BTreeSet<String> = sent_a
        .iter()
        .chain(&sent_b)
        .map(|(_, s)| s.clone())
        .collect();
    assert_eq!(expected.len(), 300);

    // Every instance reaches the destination, and exactly once: wait until
    // all arrived, then a while longer for any second delivery.
    for _ in 0..240 {
        if received(&dest_dir).await.len() >= expected.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let got = received(&dest_dir).await;
    let keys: BTreeSet<String> = got.keys().cloned().collect();
    assert_eq!(keys, expected, "destination did not get every instance");
    let twice: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "forwarded more than once: {twice:?}");

    // Each node answers for the other's instances, over DIMSE and QIDO.
    for (study, n) in per_study(&sent_a) {
        assert_eq!(
            findscu_count(node_b.dicom_port, &study).await,
            n,
            "C-FIND on B"
        );
        assert_eq!(qido_count(node_b.http_port, &study).await, n, "QIDO on B");
    }
    for (study, n) in per_study(&sent_b) {
        assert_eq!(
            findscu_count(node_a.dicom_port, &study).await,
            n,
            "C-FIND on A"
        );
        assert_eq!(qido_count(node_a.http_port, &study).await, n, "QIDO on A");
    }

    // Kill -9 node A during ingest; B keeps serving meanwhile.
    let corpus_c = work.path().join("corpus-c");
    generate(&corpus_c, 400, 2, 33).await;
    let ack = work.path().join("ack-c.txt");
    let ack_arg = ack.to_str().expect("utf-8").to_owned();
    let port_a = node_a.dicom_port;
    let corpus = corpus_c.clone();
    let sender = tokio::spawn(async move {
        let extra = ["--assocs", "4", "--allow-failures", "--ack-log", &ack_arg];
        send(port_a, &corpus, &extra).await
    });
    let acked = common::kill_9_after_acks(node_a, &ack, 60, sender).await;
    assert!(acked.len() < 400, "the kill came too late to test anything");

    let after_kill = work.path().join("corpus-d");
    generate(&after_kill, 20, 1, 34).await;
    let out = send(node_b.dicom_port, &after_kill, &[]).await;
    assert!(out.status.success(), "node B refused stores after A died");
    for (study, n) in per_study(&uids(&[&after_kill]).await) {
        assert_eq!(
            qido_count(node_b.http_port, &study).await,
            n,
            "QIDO on B after A died"
        );
    }

    // Restart A: everything acknowledged before the kill is there, on
    // either node, and `tessera verify` (which re-hashes every object in
    // the bucket) is clean.
    let node_a = start(&config_a, &data_a).await;
    let acked_refs: Vec<&Path> = acked.iter().map(PathBuf::as_path).collect();
    let acked_uids = uids(&acked_refs).await;
    for (study, n) in per_study(&acked_uids) {
        let listed = qido_count(node_a.http_port, &study).await;
        assert!(
            listed >= n,
            "study {study}: {n} acknowledged, {listed} found on A"
        );
        assert_eq!(listed, qido_count(node_b.http_port, &study).await);
    }
    let index = tessera::index::Index::open(&pg.url, 2)
        .await
        .expect("index");
    for (_, sop) in &acked_uids {
        assert!(
            index.instance(sop).await.expect("query").is_some(),
            "acknowledged instance {sop} lost"
        );
    }
    index.close().await;
    assert!(node_a.terminate().await.success());
    assert!(node_b.terminate().await.success());
    let out = tessera_cli(
        &data_a,
        &["--config", config_a.to_str().expect("utf-8"), "verify"],
    )
    .await;
    assert!(
        out.status.success(),
        "verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(dest);
    drop(moto);
}

fn per_study(uids: &[(String, String)]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (study, _) in uids {
        *counts.entry(study.clone()).or_insert(0) += 1;
    }
    counts
}
