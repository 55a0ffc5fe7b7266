//! The binary as operators run it: kill -9 during ingest, SIGTERM with a
//! store in flight, a multi-gigabyte instance in bounded memory.

mod common;

use std::path::Path;

use common::{dcmtk, python, run_peer, skip, tessera_cli, Backend, PgDatabase, ServerProcess};

/// Extra serve/CLI arguments selecting the backend's index.
fn index_args(pg: &Option<PgDatabase>) -> Vec<String> {
    match pg {
        Some(db) => vec!["--index-url".into(), db.url.clone()],
        None => vec![],
    }
}

async fn pg_for(backend: Backend) -> Option<PgDatabase> {
    match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(PgDatabase::create().await),
    }
}

/// Every instance acknowledged before a kill -9 is present after restart,
/// with a matching checksum, and `tessera verify` is clean.
async fn kill_9_during_ingest_loses_nothing_acknowledged(backend: Backend) {
    let Some(_) = python() else {
        return skip(
            "kill_9_during_ingest_loses_nothing_acknowledged",
            "pynetdicom missing",
        );
    };
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let corpus = dir.path().join("corpus");
    let pg = pg_for(backend).await;
    let idx = index_args(&pg);
    let idx: Vec<&str> = idx.iter().map(String::as_str).collect();
    let out = run_peer(
        "gen.py",
        &[
            corpus.to_str().expect("utf8"),
            "--count",
            "600",
            "--studies",
            "6",
            "--rows",
            "128",
            "--cols",
            "128",
            "--seed",
            "21",
        ],
    )
    .await;
    assert!(out.status.success());

    let server = ServerProcess::spawn(&data, &idx).await;
    let ack = dir.path().join("ack.txt");
    let port = server.dicom_port.to_string();
    let args = [
        "127.0.0.1".to_owned(),
        port,
        corpus.to_str().expect("utf8").to_owned(),
        "--assocs".into(),
        "10".into(),
        "--allow-failures".into(),
        "--ack-log".into(),
        ack.to_str().expect("utf8").to_owned(),
    ];
    let sender = tokio::spawn(async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_peer("send.py", &args).await
    });
    // Kill once a good share is acknowledged, with the rest in flight.
    let acked = common::kill_9_after_acks(server, &ack, 150, sender).await;
    assert!(acked.len() < 600, "the kill came too late to test anything");

    // Restart: clean start, every acknowledged instance present and whole.
    let server = ServerProcess::spawn(&data, &idx).await;
    let mut config_raw = tessera::config::RawConfig::default();
    config_raw.storage.data_dir = Some(data.clone());
    config_raw.index.url = pg.as_ref().map(|db| db.url.clone());
    let config = tessera::config::Config::from_raw(config_raw).expect("config");
    let index = tessera::index::Index::open(&config.index_url, 2)
        .await
        .expect("index");
    let uids = common::sop_uids(&acked);
    let mut pairs = Vec::new();
    for (file, uid) in acked.iter().zip(&uids) {
        let record = index
            .instance(uid)
            .await
            .expect("query")
            .unwrap_or_else(|| panic!("acknowledged {} lost", file.display()));
        pairs.push(file.to_str().expect("utf8").to_owned());
        pairs.push(
            data.join("objects")
                .join(&record.key)
                .to_str()
                .expect("utf8")
                .to_owned(),
        );
    }
    let args: Vec<&str> = pairs.iter().map(String::as_str).collect();
    let out = run_peer("same_dataset.py", &args).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Nothing half-written is visible: no spool debris survives startup.
    let spool_files = std::fs::read_dir(data.join("objects/.spool"))
        .expect("spool root")
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .filter(|e| e.file_name() != "journal")
        .count();
    assert_eq!(spool_files, 0, "spool not emptied at startup");
    let status = server.terminate().await;
    assert!(status.success());
    let out = tessera_cli(&data, &[&idx[..], &["verify"]].concat()).await;
    assert!(
        out.status.success(),
        "verify after crash: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// SIGTERM while a large store is in flight: the store completes and is
/// acknowledged, then the process exits 0.
async fn sigterm_finishes_in_flight_store(backend: Backend) {
    let (Some(storescu), Some(_)) = (dcmtk("storescu"), python()) else {
        return skip(
            "sigterm_finishes_in_flight_store",
            "DCMTK or pydicom missing",
        );
    };
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let file = dir.path().join("big.dcm");
    let out = run_peer(
        "make_large.py",
        &[file.to_str().expect("utf8"), "--frames", "60"],
    )
    .await;
    assert!(out.status.success());
    let pg = pg_for(backend).await;
    let idx = index_args(&pg);
    let idx: Vec<&str> = idx.iter().map(String::as_str).collect();
    let server = ServerProcess::spawn(&data, &idx).await;
    let send = tokio::process::Command::new(storescu)
        .args(server.ae_args())
        .args(["-R", "-xe"])
        .arg(&file)
        .spawn()
        .expect("storescu");
    // Let the association start, then ask the server to stop.
    wait_for_spool_file(&data).await;
    let status = server.terminate().await;
    assert!(status.success(), "clean exit");
    let out = send.wait_with_output().await.expect("storescu ends");
    assert!(out.status.success(), "in-flight store was acknowledged");
    let out = tessera_cli(&data, &[&idx[..], &["stats", "--json"]].concat()).await;
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(stats["instances"], 1);
}

async fn wait_for_spool_file(data: &Path) {
    for _ in 0..400 {
        let any = std::fs::read_dir(data.join("objects/.spool"))
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
            .any(|f| f.metadata().map(|m| m.len() > 1_000_000).unwrap_or(false));
        if any {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("no store started");
}

/// A 2.4 GB whole-slide instance is stored with the server's peak RSS far
/// below the instance size (target: under 300 MB).
async fn multi_gigabyte_instance_in_bounded_memory(backend: Backend) {
    let (Some(storescu), Some(_)) = (dcmtk("storescu"), python()) else {
        return skip(
            "multi_gigabyte_instance_in_bounded_memory",
            "DCMTK or pydicom missing",
        );
    };
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let file = dir.path().join("wsi.dcm");
    let out = run_peer(
        "make_large.py",
        &[file.to_str().expect("utf8"), "--frames", "580"],
    )
    .await;
    assert!(out.status.success());
    let size = std::fs::metadata(&file).expect("size").len();
    assert!(size > 2_400_000_000, "instance is {size} bytes");
    let pg = pg_for(backend).await;
    let idx = index_args(&pg);
    let idx: Vec<&str> = idx.iter().map(String::as_str).collect();
    let server = ServerProcess::spawn(&data, &idx).await;
    let out = tokio::process::Command::new(storescu)
        .args(server.ae_args())
        .args(["-R", "-xe"])
        .arg(&file)
        .output()
        .await
        .expect("storescu");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peak_mib = server.peak_rss_kib() / 1024;
    eprintln!(
        "peak RSS while storing a {} MB instance: {peak_mib} MiB",
        size / 1_000_000
    );
    assert!(peak_mib < 300, "peak RSS {peak_mib} MiB");

    // `Range: bytes=0-` on its 2.4 GB Pixel Data is streamed, not read into
    // memory first.
    let (status, body) = common::http_get(server.http_port, "/dicom-web/instances", &[]).await;
    assert_eq!(status, 200, "{body}");
    let found: serde_json::Value = serde_json::from_str(&body).expect("json");
    let uid = |tag: &str| found[0][tag]["Value"][0].as_str().expect("uid").to_owned();
    let path = format!(
        "/dicom-web/studies/{}/series/{}/instances/{}/bulk/7FE00010",
        uid("0020000D"),
        uid("0020000E"),
        uid("00080018")
    );
    let received = count_response_bytes(
        server.http_port,
        &path,
        "Accept: application/octet-stream\r\nRange: bytes=0-\r\n",
    )
    .await;
    assert!(received > 2_400_000_000, "received {received} bytes");
    let peak_mib = server.peak_rss_kib() / 1024;
    assert!(
        peak_mib < 300,
        "peak RSS {peak_mib} MiB after the ranged read"
    );
    assert!(server.terminate().await.success());
    let out = tessera_cli(&data, &[&idx[..], &["verify", "--json"]].concat()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["checked"], 1);
    assert!(report["bytes"].as_u64().expect("bytes") > size - 1000);
}

/// GET `path` with extra header lines; the number of bytes after the
/// response head, counted without keeping them.
async fn count_response_bytes(port: u16, path: &str, headers: &str) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut buf = vec![0u8; 1 << 20];
    let mut head = Vec::new();
    let mut body = 0u64;
    loop {
        let n = stream.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        if body == 0 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            head.extend_from_slice(&buf[..n]);
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&head[..end]).into_owned();
                assert!(text.starts_with("HTTP/1.1 206"), "{text}");
                body = (head.len() - end - 4) as u64;
            }
        } else {
            body += n as u64;
        }
    }
    body
}

on_both_backends!(
    kill_9_during_ingest_loses_nothing_acknowledged,
    sigterm_finishes_in_flight_store,
    multi_gigabyte_instance_in_bounded_memory,
);
