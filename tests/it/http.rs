//! HTTP basics: probes, Prometheus metrics after real stores, JSON stats;
//! DICOMweb's CORS, upload limit, authentication and the viewer fallback.

use crate::common;

use common::{dcmtk, skip, Archive, Backend};

async fn probes_metrics_and_stats(backend: Backend) {
    let archive = Archive::start(backend).await;
    let (status, body) = archive.http_get("/healthz", &[]).await;
    assert_eq!((status, body.contains("ok")), (200, true));
    let (status, body) = archive.http_get("/readyz", &[]).await;
    assert_eq!((status, body.contains("ready")), (200, true));
    let (status, _) = archive.http_get("/no/such/path", &[]).await;
    assert_eq!(status, 404);

    let Some(storescu) = dcmtk("storescu") else {
        return skip("probes_metrics_and_stats", "DCMTK storescu not installed");
    };
    let Some((data, _)) = common::sample_dirs() else {
        return skip("probes_metrics_and_stats", "pydicom samples missing");
    };
    let file = data.join("test_files/CT_small.dcm");
    let out = tokio::process::Command::new(storescu)
        .args(archive.ae_args())
        .arg(&file)
        .output()
        .await
        .expect("storescu");
    assert!(out.status.success());

    // The peer has its A-RELEASE-RP before the association task has ended
    // and lowered the gauge: allow it a moment.
    let mut metrics = String::new();
    for _ in 0..100 {
        let (status, body) = archive.http_get("/metrics", &[]).await;
        assert_eq!(status, 200);
        metrics = body;
        if metrics.contains("tessera_dicom_associations_active 0") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for line in [
        "tessera_instances_received_total 1",
        "tessera_dicom_associations_total 1",
        "tessera_dicom_associations_active 0",
        "tessera_store_latency_seconds_count 1",
        // The store's group: its journal write and sync, its index commit.
        "tessera_journal_append_seconds_count 1",
        "tessera_index_commit_seconds_count 1",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in:\n{metrics}");
    }
    let size = std::fs::metadata(&file).expect("size").len();
    assert!(
        metrics.contains("tessera_received_bytes_total"),
        "{metrics}"
    );

    let (status, body) = archive.http_get("/api/v1/stats", &[]).await;
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(stats["instances"], 1);
    assert_eq!(stats["studies"], 1);
    assert!(stats["stored_bytes"].as_u64().expect("bytes") > size / 2);
}

/// Send raw bytes, return the whole response (head and body) as text.
/// What the server sent on `stream` within `millis`, if anything.
async fn answer_within(stream: &mut tokio::net::TcpStream, millis: u64) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(
        std::time::Duration::from_millis(millis),
        stream.read(&mut buf),
    )
    .await
    {
        Ok(Ok(n)) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => None,
    }
}

async fn raw_http(port: u16, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.write_all(request).await.expect("send");
    let mut response = Vec::new();
    // The server may answer and close before reading an oversized body.
    let _ = stream.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).to_lowercase()
}

async fn dicomweb_cors_limits_and_auth(backend: Backend) {
    let viewer = tempfile::tempdir().expect("tmp");
    let archive = Archive::start_with(backend, |raw| {
        raw.dicomweb.cors_allowed_origins = Some(vec!["https://viewer.example".into()]);
        raw.dicomweb.max_upload_bytes = Some(4096);
        raw.viewer.dir = Some(viewer.path().to_owned());
        raw.http.api_token = Some("secret".into());
    })
    .await;
    let port = archive.http_port;

    // CORS preflight and response headers for the configured origin only.
    let preflight = raw_http(
        port,
        b"OPTIONS /dicom-web/studies HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
          Origin: https://viewer.example\r\nAccess-Control-Request-Method: GET\r\n\
          Access-Control-Request-Headers: authorization\r\n\r\n",
    )
    .await;
    assert!(preflight.starts_with("http/1.1 200"), "{preflight}");
    assert!(
        preflight.contains("access-control-allow-origin: https://viewer.example"),
        "{preflight}"
    );
    let other = raw_http(
        port,
        b"OPTIONS /dicom-web/studies HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
          Origin: https://elsewhere.example\r\nAccess-Control-Request-Method: GET\r\n\r\n",
    )
    .await;
    assert!(!other.contains("access-control-allow-origin"), "{other}");

    // The API token guards DICOMweb too.
    let (status, _) = archive.http_get("/dicom-web/studies", &[]).await;
    assert_eq!(status, 401);
    let auth = [("Authorization", "Bearer secret")];
    let (status, body) = archive.http_get("/dicom-web/studies", &auth).await;
    assert_eq!((status, body.as_str()), (200, "[]"));
    let (status, body) = archive
        .http_get("/dicom-web/studies?limit=many", &auth)
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("limit"), "{body}");

    // A body over dicomweb.max_upload_bytes is refused with 413, whether
    // announced by Content-Length or sent chunked.
    let big = vec![b'x'; 8192];
    let mut request = format!(
        "POST /dicom-web/studies HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Authorization: Bearer secret\r\n\
         Content-Type: multipart/related; type=\"application/dicom\"; boundary=b\r\n\
         Content-Length: {}\r\n\r\n",
        big.len()
    )
    .into_bytes();
    request.extend_from_slice(&big);
    let response = raw_http(port, &request).await;
    assert!(response.starts_with("http/1.1 413"), "{response}");
    let mut chunked = b"POST /dicom-web/studies HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
        Authorization: Bearer secret\r\n\
        Content-Type: multipart/related; type=\"application/dicom\"; boundary=b\r\n\
        Transfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    let mut body = b"--b\r\nContent-Type: application/dicom\r\n\r\n".to_vec();
    body.extend_from_slice(&big);
    chunked.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
    chunked.extend_from_slice(&body);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let response = raw_http(port, &chunked).await;
    assert!(response.starts_with("http/1.1 413"), "{response}");

    // The viewer is behind the same credentials; without an installed
    // viewer, /viewer says how to install it.
    let (status, _) = archive.http_get("/viewer/", &[]).await;
    assert_eq!(status, 401);
    let (status, body) = archive.http_get("/viewer/", &auth).await;
    assert_eq!(status, 503);
    assert!(body.contains("scripts/install-viewer"), "{body}");
    let data_dir = archive.config.data_dir.to_string_lossy().into_owned();
    assert!(
        !body.contains(&data_dir),
        "the page names a server path: {body}"
    );
    assert!(
        !body.contains("index.html"),
        "the page names a server path: {body}"
    );
}

/// STOW-RS bodies that would hold a connection or memory: one that
/// announces 100 MB and then goes quiet, an endless part header, an
/// endless preamble. Each gets its answer promptly, and the server goes on
/// serving.
async fn hostile_stow_bodies(backend: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let archive = Archive::start_with(backend, |raw| {
        raw.dicomweb.body_idle_timeout_secs = Some(1);
    })
    .await;
    let port = archive.http_port;
    let head = |length: usize| {
        format!(
            "POST /dicom-web/studies HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Content-Type: multipart/related; type=\"application/dicom\"; boundary=b\r\n\
             Content-Length: {length}\r\n\r\n"
        )
    };

    // Announced, then silent: answered within a few seconds, not held.
    let mut quiet = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    quiet
        .write_all(
            format!(
                "{}--b\r\nContent-Type: application/dicom\r\n\r\nDICM",
                head(100 << 20)
            )
            .as_bytes(),
        )
        .await
        .expect("send");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(15),
        quiet.read_to_end(&mut answer),
    )
    .await;
    assert!(read.is_ok(), "a silent body held its connection for 15 s");
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(answer.starts_with("http/1.1 400"), "{answer}");
    assert!(answer.contains("no body data"), "{answer}");

    // A 100 KB header line, and a 100 KB preamble.
    let long_header = format!(
        "--b\r\nContent-Type: application/dicom\r\nX-Pad: {}\r\n\r\nDICM\r\n--b--\r\n",
        "a".repeat(100_000)
    );
    let long_preamble = format!("{}\r\n--b\r\n\r\nDICM\r\n--b--\r\n", "p".repeat(100_000));
    for (what, body) in [("headers", long_header), ("boundary", long_preamble)] {
        let request = format!("{}{body}", head(body.len()));
        let started = std::time::Instant::now();
        let answer = raw_http(port, request.as_bytes()).await;
        assert!(answer.starts_with("http/1.1 400"), "{what}: {answer}");
        assert!(answer.contains(what), "{what}: {answer}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{what}"
        );
    }
    let (status, _) = archive.http_get("/dicom-web/studies", &[]).await;
    assert_eq!(status, 200, "still serving");
}

/// With `http.max_requests_per_ip = 1`, a second request from the address
/// while one is in progress gets 503 with Retry-After; once the first ends
/// the address is served again.
async fn per_client_request_limit(backend: Backend) {
    use tokio::io::AsyncWriteExt;
    let archive = Archive::start_with(backend, |raw| {
        raw.http.max_requests_per_ip = Some(1);
    })
    .await;
    let port = archive.http_port;
    let mut refused = None;
    let mut seen = Vec::new();
    let mut held = None;
    for _ in 0..20 {
        // A STOW-RS that has sent part of its body is in progress, once the
        // server has taken it up: a probe sent at the same moment may take
        // the slot first, and then this one is the request refused.
        let mut stow = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        stow.write_all(
            b"POST /dicom-web/studies HTTP/1.1\r\nHost: x\r\n\
              Content-Type: multipart/related; type=\"application/dicom\"; boundary=b\r\n\
              Content-Length: 100000\r\n\r\n--b\r\nContent-Type: application/dicom\r\n\r\nDICM",
        )
        .await
        .expect("send");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        if let Some(early) = answer_within(&mut stow, 10).await {
            seen.push(format!("the STOW got {early:?}"));
            continue;
        }
        let answer = raw_http(
            port,
            b"GET /dicom-web/studies HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        if answer.starts_with("http/1.1 503") {
            refused = Some(answer);
            held = Some(stow);
            break;
        }
        seen.push(format!("the probe got {answer:?}"));
    }
    let refused = refused.unwrap_or_else(|| {
        panic!("a second request from the address was never refused: {seen:#?}")
    });
    assert!(refused.contains("retry-after: 1"), "{refused}");
    drop(held);
    let mut served = false;
    for _ in 0..100 {
        let (status, _) = archive.http_get("/dicom-web/studies", &[]).await;
        if status == 200 {
            served = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        served,
        "the address is served again once the first request ended"
    );
}

on_both_backends!(
    per_client_request_limit,
    probes_metrics_and_stats,
    dicomweb_cors_limits_and_auth,
    hostile_stow_bodies
);
