//! HTTP basics: probes, Prometheus metrics after real stores, JSON stats.

mod common;

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

on_both_backends!(probes_metrics_and_stats);
