//! C-ECHO and C-STORE against independent peers (DCMTK, pynetdicom), on
//! SQLite and PostgreSQL: every transfer syntax, parallel associations,
//! duplicates and character sets.

use crate::common;

use std::path::PathBuf;

use common::{dcmtk, generated, python, run_peer, skip, store_all, storescu, Archive, Backend};
use sha2::{Digest, Sha256};
use tessera::index::FrameLocation;

/// SOP Instance UID and transfer syntax of a file, via pydicom.
fn describe(files: &[PathBuf]) -> Vec<(String, String)> {
    let script = "import sys, pydicom\nfor f in sys.argv[1:]:\n    d = pydicom.dcmread(f, stop_before_pixels=True)\n    print(d.file_meta.MediaStorageSOPInstanceUID, d.file_meta.TransferSyntaxUID)";
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(files)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (a, b) = l.split_once(' ').expect("two fields");
            (a.to_owned(), b.to_owned())
        })
        .collect()
}

fn stored_path(archive: &Archive, key: &str) -> PathBuf {
    archive.config.data_dir.join("objects").join(key)
}

/// Send one file with pynetdicom's `send.py`, whose failures are expected:
/// its summary of the statuses it got back.
async fn send_expecting_failures(archive: &Archive, file: &std::path::Path) -> String {
    let port = archive.dicom_port.to_string();
    let out = run_peer(
        "send.py",
        &[
            "127.0.0.1",
            &port,
            file.to_str().expect("utf8"),
            "--allow-failures",
        ],
    )
    .await;
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn echo(backend: Backend) {
    let Some(echoscu) = dcmtk("echoscu") else {
        return skip("echo", "DCMTK echoscu not installed");
    };
    let archive = Archive::start(backend).await;
    let out = tokio::process::Command::new(echoscu)
        .args(archive.ae_args())
        .output()
        .await
        .expect("echoscu runs");
    assert!(
        out.status.success(),
        "echoscu: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if python().is_none() {
        return skip("echo (pynetdicom)", "pynetdicom not installed");
    }
    let port = archive.dicom_port.to_string();
    let out = run_peer("send.py", &["127.0.0.1", &port, "--echo"]).await;
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(r#""echo": "0x0000""#));
}

/// One sample file per transfer syntax from pydicom and pydicom-data, sent
/// with DCMTK storescu proposing exactly the file's transfer syntax. The
/// stored data set must be byte-identical to the file's.
async fn every_transfer_syntax_stored_as_received(backend: Backend) {
    let (Some(_), Some(_)) = (dcmtk("storescu"), python()) else {
        return skip(
            "every_transfer_syntax_stored_as_received",
            "DCMTK or pydicom missing",
        );
    };
    let Some((pydicom_data, store_data)) = common::sample_dirs() else {
        return skip(
            "every_transfer_syntax_stored_as_received",
            "pydicom-data not installed",
        );
    };
    let t = pydicom_data.join("test_files");
    let samples: Vec<PathBuf> = vec![
        t.join("MR_small_implicit.dcm"),
        t.join("CT_small.dcm"),
        t.join("MR_small_bigendian.dcm"),
        t.join("image_dfl.dcm"),
        t.join("SC_jpeg_no_color_transform.dcm"),
        t.join("JPGExtended.dcm"),
        store_data.join("JPEG-LL.dcm"),
        store_data.join("JPGLosslessP14SV1_1s_1f_8b.dcm"),
        t.join("MR_small_jpeg_ls_lossless.dcm"),
        t.join("JPEGLSNearLossless_16.dcm"),
        t.join("MR_small_jp2klossless.dcm"),
        t.join("JPEG2000.dcm"),
        t.join("MR_small_RLE.dcm"),
        store_data.join("emri_small_RLE.dcm"),
        store_data.join("gdcm-US-ALOKA-16.dcm"),
    ];
    let archive = Archive::start(backend).await;
    // Several samples share one SOP Instance UID; give each its own.
    let unique_dir = archive.dir.path().join("unique");
    let mut args = vec![unique_dir.to_str().expect("utf8").to_owned()];
    args.extend(samples.iter().map(|p| p.to_str().expect("utf8").to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_peer("unique_uids.py", &args).await;
    assert!(out.status.success());
    let samples: Vec<PathBuf> = samples
        .iter()
        .map(|p| unique_dir.join(p.file_name().expect("file name")))
        .collect();
    // Generated files for the syntaxes no wheel ships: HTJ2K, JPEG
    // process 14, JPEG 2000 Part 2, MPEG-2/4 and HEVC video.
    let gen_dir = archive.dir.path().join("generated");
    let out = run_peer(
        "relabel.py",
        &[
            gen_dir.to_str().expect("utf8"),
            t.join("JPEG2000.dcm").to_str().expect("utf8"),
        ],
    )
    .await;
    assert!(out.status.success());
    let mut files = samples;
    let mut generated: Vec<PathBuf> = std::fs::read_dir(&gen_dir)
        .expect("generated dir")
        .map(|e| e.expect("entry").path())
        .collect();
    generated.sort();
    files.extend(generated);

    let described = describe(&files);
    for (file, (_, ts)) in files.iter().zip(&described) {
        assert!(file.exists(), "sample {} is missing", file.display());
        // Propose only the file's own syntax (storescu otherwise converts
        // uncompressed data on the fly). DCMTK 3.6.7 has no option for
        // HTJ2K, JPEG 2000 Part 2 or JPEG process 14: pynetdicom sends those.
        let propose = match ts.as_str() {
            "1.2.840.10008.1.2" => Some("-xi"),
            "1.2.840.10008.1.2.1" => Some("-xe"),
            "1.2.840.10008.1.2.2" => Some("-xb"),
            "1.2.840.10008.1.2.1.99" => Some("-xd"),
            "1.2.840.10008.1.2.4.50" => Some("-xy"),
            "1.2.840.10008.1.2.4.51" => Some("-xx"),
            "1.2.840.10008.1.2.4.70" => Some("-xs"),
            "1.2.840.10008.1.2.4.80" => Some("-xt"),
            "1.2.840.10008.1.2.4.81" => Some("-xu"),
            "1.2.840.10008.1.2.4.90" => Some("-xv"),
            "1.2.840.10008.1.2.4.91" => Some("-xw"),
            "1.2.840.10008.1.2.5" => Some("-xr"),
            "1.2.840.10008.1.2.4.100" => Some("-xm"),
            "1.2.840.10008.1.2.4.102" => Some("-xn"),
            "1.2.840.10008.1.2.4.107" => Some("-x4"),
            _ => None,
        };
        let out = match propose {
            Some(option) => storescu(&archive, &["-R", option], std::slice::from_ref(file)).await,
            None => {
                let port = archive.dicom_port.to_string();
                run_peer(
                    "send.py",
                    &["127.0.0.1", &port, file.to_str().expect("utf8")],
                )
                .await
            }
        };
        assert!(
            out.status.success(),
            "sending {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    archive.wait_placed().await;
    let index = archive.index().await;
    let mut syntaxes = std::collections::BTreeSet::new();
    let mut pairs = Vec::new();
    for (file, (sop_uid, ts)) in files.iter().zip(&described) {
        let record = index
            .instance(sop_uid)
            .await
            .expect("query")
            .unwrap_or_else(|| panic!("{} ({sop_uid}) not indexed", file.display()));
        assert_eq!(
            &record.transfer_syntax_uid,
            ts,
            "{} stored in another syntax",
            file.display()
        );
        pairs.push(file.to_str().expect("utf8").to_owned());
        pairs.push(
            stored_path(&archive, &record.key)
                .to_str()
                .expect("utf8")
                .to_owned(),
        );
        syntaxes.insert(ts.clone());
    }
    // Senders re-encode data sets (group lengths, padding), so the check
    // is semantic: same syntax, same elements, identical pixel bytes.
    let args: Vec<&str> = pairs.iter().map(String::as_str).collect();
    let out = run_peer("same_dataset.py", &args).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for required in [
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.4.202",
        "1.2.840.10008.1.2.4.203",
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.4.100",
        "1.2.840.10008.1.2.4.102",
        "1.2.840.10008.1.2.4.107",
    ] {
        assert!(
            syntaxes.contains(required),
            "no sample was stored in {required}"
        );
    }
}

/// 10 parallel associations, with DCMTK and with pynetdicom.
async fn ten_parallel_associations(backend: Backend) {
    let (Some(_), Some(_)) = (dcmtk("storescu"), python()) else {
        return skip("ten_parallel_associations", "DCMTK or pynetdicom missing");
    };
    let archive = Archive::start(backend).await;
    let root = archive.dir.path().to_owned();
    let py_dir = root.join("py");
    let out = run_peer(
        "gen.py",
        &[
            py_dir.to_str().expect("utf8"),
            "--count",
            "200",
            "--studies",
            "4",
            "--seed",
            "7",
        ],
    )
    .await;
    assert!(out.status.success());
    let port = archive.dicom_port.to_string();
    let out = run_peer(
        "send.py",
        &[
            "127.0.0.1",
            &port,
            py_dir.to_str().expect("utf8"),
            "--assocs",
            "10",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "pynetdicom sends: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    let dcmtk_dir = root.join("dcmtk");
    let out = run_peer(
        "gen.py",
        &[
            dcmtk_dir.to_str().expect("utf8"),
            "--count",
            "100",
            "--studies",
            "10",
            "--seed",
            "8",
        ],
    )
    .await;
    assert!(out.status.success());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dcmtk_dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let mut senders = Vec::new();
    for chunk in files.chunks(10) {
        senders.push(storescu(&archive, &[], chunk));
    }
    for out in futures::future::join_all(senders).await {
        assert!(
            out.status.success(),
            "storescu: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let index = archive.index().await;
    let stats = index.stats().await.expect("stats");
    assert_eq!(stats.instances, 300);
    assert_eq!(stats.studies, 14);
    assert_eq!(stats.series, 14);
    let described = describe(&files[..1]);
    let record = index
        .instance(&described[0].0)
        .await
        .expect("query")
        .expect("indexed");
    assert_eq!(record.requested_procedure_id, "RP-1");
    assert_eq!(record.scheduled_procedure_step_id, "SPS-1");
    assert_eq!(record.bits_allocated, Some(16));
    let summary = index
        .study_summary(&record.study_instance_uid)
        .await
        .expect("query")
        .expect("study");
    assert_eq!(summary.num_instances, 10);
    assert_eq!(summary.num_series, 1);
    assert_eq!(summary.modalities_in_study, "CT");
    assert_eq!(summary.patient_name, "Nguyễn^Văn");
    let storage = tessera::storage::Storage::open(&archive.config)
        .await
        .expect("storage");
    let report = tessera::verify::verify(&index, &storage, false, std::time::Duration::ZERO)
        .await
        .expect("verify runs");
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.checked, 300);
    assert!(report.unreferenced.is_empty(), "{report:?}");
}

/// `replace` with an instance that moved to another series and SOP class:
/// the index row, the counters, both series, ModalitiesInStudy and the
/// metadata (with a new ETag) all follow.
async fn replaced_everywhere(archive: &Archive, dir: &std::path::Path, uid: &str) {
    let index = archive.index().await;
    let before = index.instance(uid).await.expect("query").expect("indexed");
    let study = before.study_instance_uid.clone();
    let metadata = format!("/dicom-web/studies/{study}/metadata");
    let (status, head, _) = get_with_head(archive.http_port, &metadata, "").await;
    assert_eq!(status, 200);
    let etag = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("etag"))
        })
        .map(|(_, v)| v.trim().to_owned())
        .expect("ETag");
    let port = archive.dicom_port.to_string();
    let moved = dir.join("moved.dcm");
    let out = run_peer(
        "send.py",
        &["127.0.0.1", &port, moved.to_str().expect("utf8")],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let after = index.instance(uid).await.expect("query").expect("indexed");
    assert_eq!(after.sop_class_uid, "1.2.840.10008.5.1.4.1.1.4");
    assert_ne!(after.series_instance_uid, before.series_instance_uid);
    let (status, body) = archive
        .http_get(&format!("/dicom-web/studies/{study}/series"), &[])
        .await;
    assert_eq!(status, 200, "{body}");
    let series: serde_json::Value = serde_json::from_str(&body).expect("json");
    let series = series.as_array().expect("list");
    assert_eq!(series.len(), 1, "the emptied series is gone: {body}");
    assert_eq!(
        series[0]["0008103E"]["Value"],
        serde_json::Value::Null,
        "{body}"
    );
    assert_eq!(series[0]["00080060"]["Value"][0], "MR", "{body}");
    assert_eq!(series[0]["00201209"]["Value"][0], 1, "{body}");
    let (_, body) = archive
        .http_get(&format!("/dicom-web/studies?StudyInstanceUID={study}"), &[])
        .await;
    let studies: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        studies[0]["00080061"]["Value"],
        serde_json::json!(["MR"]),
        "{body}"
    );
    assert_eq!(studies[0]["00201206"]["Value"][0], 1, "{body}");
    assert_eq!(studies[0]["00201208"]["Value"][0], 1, "{body}");
    let (status, _, body) = get_with_head(
        archive.http_port,
        &metadata,
        &format!("If-None-Match: {etag}\r\n"),
    )
    .await;
    assert_eq!(status, 200, "stale metadata must not get 304");
    assert!(body.contains("1.2.840.10008.5.1.4.1.1.4"), "{body}");
}

/// GET with extra header lines; (status, header block, body).
async fn get_with_head(port: u16, path: &str, extra: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra}\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    (status, head.to_owned(), body.to_owned())
}

/// Identical resend is stored once; different bytes follow the policy.
async fn duplicates_follow_policy(backend: Backend) {
    let (Some(_), Some(_)) = (dcmtk("storescu"), python()) else {
        return skip("duplicates_follow_policy", "DCMTK or pydicom missing");
    };
    for policy in ["keep-first", "replace", "reject"] {
        let archive = Archive::start_with(backend, |raw| {
            raw.dicom.duplicate_policy = Some(policy.parse().expect("policy"));
            raw.storage.reclaim_grace_secs = Some(0);
            raw.storage.reclaim_interval_secs = Some(1);
        })
        .await;
        let dir = archive.dir.path().join("dups");
        let out = run_peer("variant.py", &[dir.to_str().expect("utf8")]).await;
        assert!(out.status.success());
        let original = dir.join("original.dcm");
        let variant = dir.join("variant.dcm");
        for _ in 0..2 {
            store_all(&archive, &[], std::slice::from_ref(&original)).await;
        }
        let index = archive.index().await;
        let uid = describe(std::slice::from_ref(&original)).remove(0).0;
        let first = index.instance(&uid).await.expect("query").expect("indexed");
        let stats = index.stats().await.expect("stats");
        assert_eq!(stats.instances, 1, "identical resend stored once");

        // The same data set from another sender (a second modality, a
        // forwarding peer) is the same instance, whatever the policy.
        let port = archive.dicom_port.to_string();
        let out = run_peer(
            "send.py",
            &[
                "127.0.0.1",
                &port,
                original.to_str().expect("utf8"),
                "--calling-aet",
                "OTHER_SENDER",
            ],
        )
        .await;
        assert!(
            out.status.success(),
            "{policy}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let again = index.instance(&uid).await.expect("query").expect("indexed");
        assert_eq!(again.sha256, first.sha256, "{policy}");

        let summary = send_expecting_failures(&archive, &variant).await;
        let after = index.instance(&uid).await.expect("query").expect("indexed");
        match policy {
            "keep-first" => {
                assert!(summary.contains(r#""0x0000": 1"#), "{summary}");
                assert_eq!(after.sha256, first.sha256);
            }
            "replace" => {
                assert!(summary.contains(r#""0x0000": 1"#), "{summary}");
                assert_ne!(after.sha256, first.sha256);
                // The collector deletes the old version after the grace
                // period (0 here).
                let old = stored_path(&archive, &first.key);
                for _ in 0..100 {
                    if !old.exists() {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                assert!(!old.exists(), "old version removed");
                replaced_everywhere(&archive, &dir, &uid).await;
            }
            _ => {
                assert!(summary.contains(r#""0x0111": 1"#), "{summary}");
                assert_eq!(after.sha256, first.sha256);
            }
        }
        assert_eq!(index.stats().await.expect("stats").instances, 1);
        // What the policy discarded is tombstoned; the collector (no grace
        // period here) deletes it within a pass or two.
        for _ in 0..100 {
            if index.tombstone_count().await.expect("count") == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(index.tombstone_count().await.expect("count"), 0, "{policy}");
        let storage = tessera::storage::Storage::open(&archive.config)
            .await
            .expect("storage");
        let report = tessera::verify::verify(&index, &storage, false, std::time::Duration::ZERO)
            .await
            .expect("verify");
        assert!(
            report.is_clean() && report.unreferenced.is_empty(),
            "{policy}: {report:?}"
        );
    }
}

/// Names in every character set pydicom ships samples for are stored as
/// the same Unicode text pydicom decodes.
async fn character_sets_decoded_to_utf8(backend: Backend) {
    let (Some(_), Some(_)) = (dcmtk("storescu"), python()) else {
        return skip("character_sets_decoded_to_utf8", "DCMTK or pydicom missing");
    };
    let Some((pydicom_data, _)) = common::sample_dirs() else {
        return skip("character_sets_decoded_to_utf8", "pydicom data not found");
    };
    let dir = pydicom_data.join("charset_files");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("charset dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    files.sort();
    // pydicom is the oracle; samples without a SOP class cannot be sent.
    let script = "import sys, json, pydicom\nout = {}\nfor f in sys.argv[1:]:\n    d = pydicom.dcmread(f)\n    if 'SOPClassUID' in d and 'SOPInstanceUID' in d:\n        out[str(d.SOPInstanceUID)] = [f, str(d.get('PatientName', ''))]\nprint(json.dumps(out))";
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(&files)
        .output()
        .expect("python3");
    let expected: std::collections::BTreeMap<String, (String, String)> =
        serde_json::from_slice(&out.stdout).expect("json");
    // Samples share patient IDs, and a patient's name follows its newest
    // instance: check each right after it is stored.
    let archive = Archive::start(backend).await;
    let index = archive.index().await;
    let mut checked = 0;
    for (uid, (file, name)) in &expected {
        store_all(&archive, &["-R"], &[PathBuf::from(file)]).await;
        let record = index
            .instance(uid)
            .await
            .expect("query")
            .unwrap_or_else(|| panic!("{file} not indexed"));
        assert_eq!(&record.patient_name, name, "{file}");
        // C-FIND in the file's own character set finds it, and the
        // metadata document names the patient as the index does.
        let port = archive.dicom_port.to_string();
        let out = run_peer("charset_find.py", &["127.0.0.1", &port, file]).await;
        let found: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{file}: {}", String::from_utf8_lossy(&out.stderr)));
        if !name.is_empty() {
            assert_eq!(found["matches"], 1, "{file}: C-FIND by {name:?}");
        }
        let path = format!(
            "/dicom-web/studies/{}/series/{}/instances/{uid}/metadata",
            record.study_instance_uid, record.series_instance_uid
        );
        let (status, body) = archive.http_get(&path, &[]).await;
        assert_eq!(status, 200, "{file}: {body}");
        let doc: serde_json::Value = serde_json::from_str(&body).expect("json");
        let pn = &doc[0]["00100010"]["Value"][0];
        let groups: Vec<&str> = ["Alphabetic", "Ideographic", "Phonetic"]
            .iter()
            .map(|g| pn[*g].as_str().unwrap_or(""))
            .collect();
        let joined = groups.join("=");
        assert_eq!(joined.trim_end_matches('='), name, "{file}: metadata PN");
        checked += 1;
    }
    assert!(checked >= 12, "only {checked} charset samples");
}

/// SCP/SCU role selection is answered for storage SOP classes, so a
/// requestor may also act as a storage SCP on the association (for C-GET).
async fn role_selection_is_answered(backend: Backend) {
    let Some(_) = python() else {
        return skip("role_selection_is_answered", "pynetdicom missing");
    };
    let archive = Archive::start(backend).await;
    let port = archive.dicom_port.to_string();
    let out = run_peer("roles.py", &["127.0.0.1", &port]).await;
    assert!(out.status.success());
    let roles: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(roles["as_scu"], true, "{roles}");
    assert_eq!(roles["as_scp"], true, "{roles}");
}

/// Two versions of one instance stored again and again under `replace`,
/// on four associations, while the collector runs every second with no
/// grace period: each store unreferences the other version's object, and the next
/// one references it again. Every acknowledged store's object must exist
/// and verify at the end.
async fn replace_races_reclamation(backend: Backend) {
    let Some(_) = python() else {
        return skip("replace_races_reclamation", "pynetdicom missing");
    };
    let archive = Archive::start_with(backend, |raw| {
        raw.dicom.duplicate_policy = Some("replace".parse().expect("policy"));
        raw.storage.reclaim_grace_secs = Some(0);
        raw.storage.reclaim_interval_secs = Some(1);
    })
    .await;
    let dir = archive.dir.path().join("versions");
    assert!(run_peer("variant.py", &[dir.to_str().expect("utf8")])
        .await
        .status
        .success());
    let burst = archive.dir.path().join("burst");
    std::fs::create_dir_all(&burst).expect("dir");
    for n in 0..48 {
        let from = if n % 2 == 0 {
            "original.dcm"
        } else {
            "variant.dcm"
        };
        std::fs::copy(dir.join(from), burst.join(format!("{n:03}.dcm"))).expect("copy");
    }
    let collector = tessera::reclaim::Collector {
        index: archive.index().await,
        storage: tessera::storage::Storage::open(&archive.config)
            .await
            .expect("storage"),
        grace: std::time::Duration::ZERO,
        interval: std::time::Duration::from_millis(1),
        holder: "race-test".into(),
    };
    let port = archive.dicom_port.to_string();
    for _ in 0..3 {
        let out = run_peer(
            "send.py",
            &[
                "127.0.0.1",
                &port,
                burst.to_str().expect("utf8"),
                "--assocs",
                "4",
            ],
        )
        .await;
        assert!(
            out.status.success(),
            "every store acknowledged: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // The server's own collector ran every second throughout; one more
    // pass here, then everything must verify.
    collector.collect().await.expect("last pass");
    let report = tessera::verify::verify(
        &collector.index,
        &collector.storage,
        false,
        std::time::Duration::ZERO,
    )
    .await
    .expect("verify");
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.checked, 1, "{report:?}");
    assert!(report.unreferenced.is_empty(), "{report:?}");
}

/// A modality that reuses a Series Instance UID under another study: the
/// new instance is refused (A900, its comment naming the stored study) over
/// C-STORE and STOW-RS alike, where filing it into the first study would
/// hide it from its own. The first study is untouched.
async fn a_series_under_another_study_is_refused(backend: Backend) {
    let (Some(_), Some(_)) = (dcmtk("storescu"), python()) else {
        return skip(
            "a_series_under_another_study_is_refused",
            "DCMTK or pydicom missing",
        );
    };
    let archive = Archive::start(backend).await;
    let dir = archive.dir.path().join("misfiled");
    let out = run_peer("variant.py", &[dir.to_str().expect("utf8")]).await;
    assert!(out.status.success());
    let original = dir.join("original.dcm");
    store_all(&archive, &[], std::slice::from_ref(&original)).await;
    let misfiled = dir.join("misfiled.dcm");
    let summary = send_expecting_failures(&archive, &misfiled).await;
    assert!(summary.contains(r#""0xA900": 1"#), "{summary}");
    let stow = std::fs::read(dir.join("misfiled-stow.dcm")).expect("file");
    assert_eq!(common::stow(archive.http_port, &stow, &[]).await, 409);

    let index = archive.index().await;
    let stats = index.stats().await.expect("stats");
    assert_eq!(stats.instances, 1, "only the original is stored");
    assert_eq!(stats.studies, 1, "no study for the misfiled instances");
    for refused in [misfiled, dir.join("misfiled-stow.dcm")] {
        let uid = describe(std::slice::from_ref(&refused)).remove(0).0;
        assert!(
            index.instance(&uid).await.expect("query").is_none(),
            "{uid} was filed"
        );
    }
}

/// What a store refuses or does not keep (a different version under a
/// known UID, by the keep-first and reject policies; an instance whose
/// series is filed under another study) is never written to storage: the
/// only object left once placement is done is the original's.
async fn refused_versions_are_never_written(backend: Backend) {
    let (Some(_), Some(_)) = (dcmtk("storescu"), python()) else {
        return skip(
            "refused_versions_are_never_written",
            "DCMTK or pydicom missing",
        );
    };
    for (policy, status) in [("keep-first", "0x0000"), ("reject", "0x0111")] {
        let archive = Archive::start_with(backend, |raw| {
            raw.dicom.duplicate_policy = Some(policy.parse().expect("policy"));
        })
        .await;
        let dir = archive.dir.path().join("refused");
        let out = run_peer("variant.py", &[dir.to_str().expect("utf8")]).await;
        assert!(out.status.success());
        store_all(&archive, &[], &[dir.join("original.dcm")]).await;
        for (file, expected) in [("variant.dcm", status), ("misfiled.dcm", "0xA900")] {
            let summary = send_expecting_failures(&archive, &dir.join(file)).await;
            assert!(
                summary.contains(&format!(r#""{expected}": 1"#)),
                "{policy} {file}: {summary}"
            );
        }
        let stow = std::fs::read(dir.join("misfiled-stow.dcm")).expect("file");
        assert_eq!(common::stow(archive.http_port, &stow, &[]).await, 409);
        archive.wait_placed().await;
        let objects = common::object_files(&archive.config.data_dir.join("objects"));
        assert_eq!(objects.len(), 1, "{policy}: {objects:?}");
        let index = archive.index().await;
        assert_eq!(index.stats().await.expect("stats").instances, 1);
    }
}

/// Every instance of a series, the first and the ones after it, keeps the
/// location of each of its frames: single-frame and multi-frame RLE.
async fn frames_located_in_every_instance_of_a_series(backend: Backend) {
    let (Some(_), Some(_)) = (dcmtk("storescu"), python()) else {
        return skip(
            "frames_located_in_every_instance_of_a_series",
            "DCMTK or pydicom missing",
        );
    };
    let archive = Archive::start(backend).await;
    // The large clips (over 4 MiB each) go to spool files: their frames are
    // found from the item headers as the bytes pass on to the file.
    for (name, frames, side, seed) in [
        ("single", "1", "16", "11"),
        ("multi", "3", "16", "12"),
        ("large", "20", "512", "13"),
    ] {
        let dir = archive.dir.path().join(name);
        let study = format!("1.2.826.0.1.3680043.8.498.7710.{frames}");
        let out = run_peer(
            "gen.py",
            &[
                dir.to_str().expect("utf8"),
                "--count",
                "3",
                "--rows",
                side,
                "--cols",
                side,
                "--frames",
                frames,
                "--study-uid",
                &study,
                "--seed",
                seed,
                "--ts",
                "1.2.840.10008.1.2.5",
            ],
        )
        .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let files = common::files_in(&dir);
        assert_eq!(files.len(), 3, "generated");
        if name == "large" {
            for file in &files {
                let len = std::fs::metadata(file).expect("generated").len();
                assert!(len > 4 << 20, "{file:?} is {len} bytes, held in memory");
            }
        }
        // One association: every instance after the first finds its series.
        store_all(&archive, &["-R", "-xr"], &files).await;
        let index = archive.index().await;
        let count: u32 = frames.parse().expect("number");
        for uid in common::sop_uids(&files) {
            for frame in 1..=count {
                let at = index.frame_location(&uid, frame).await.expect("query");
                assert!(
                    matches!(at, FrameLocation::Encapsulated { length, .. } if length > 0),
                    "{name} {uid} frame {frame}: {at:?}"
                );
            }
            let beyond = index.frame_location(&uid, count + 1).await.expect("query");
            assert_eq!(beyond, FrameLocation::OutOfRange, "{name} {uid}");
        }
        let study = index.study_summary(&study).await.expect("query");
        let study = study.expect("study indexed");
        assert_eq!((study.num_series, study.num_instances), (1, 3), "{name}");
    }
}

/// An archive indexed before frame locations were kept in blocks (a row
/// per frame in `instance_frames`, migrations up to 23) finds every frame
/// where it was once migrated: a whole-slide-sized instance across block
/// edges and a single-frame one.
async fn frame_rows_of_an_older_index_become_blocks(backend: Backend) {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().expect("temp dir");
    let pg = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(common::PgDatabase::create().await),
    };
    let (url, folder) = match &pg {
        None => (
            format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display()),
            "sqlite",
        ),
        Some(db) => (db.url.clone(), "postgres"),
    };
    let old = dir.path().join("migrations");
    std::fs::create_dir(&old).expect("folder");
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(folder);
    for entry in std::fs::read_dir(&source).expect("migrations") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let version: u32 = name[..4].parse().expect("numbered");
        if version <= 23 {
            std::fs::copy(&path, old.join(&name)).expect("copy");
        }
    }
    let pool = sqlx::AnyPool::connect(&url).await.expect("connect");
    sqlx::migrate::Migrator::new(old.as_path())
        .await
        .expect("read migrations")
        .run(&pool)
        .await
        .expect("migrate to 23");
    const WSI: u64 = 2500;
    let location = |n: u64| (5_000_000_000 + n * 1000, 900 + n);
    let mut statements = vec![
        "INSERT INTO patients (id, patient_id) VALUES (1, 'P')".to_owned(),
        "INSERT INTO studies (id, patient_fk, study_instance_uid, created_at, updated_at) \
         VALUES (1, 1, '1.2.3', 0, 0)"
            .to_owned(),
        "INSERT INTO series (id, study_fk, series_instance_uid, created_at, updated_at) \
         VALUES (1, 1, '1.2.3.4', 0, 0)"
            .to_owned(),
    ];
    for (id, frames) in [(1, WSI), (2, 1)] {
        statements.push(format!(
            "INSERT INTO instances (id, series_fk, sop_instance_uid, sop_class_uid, \
             transfer_syntax_uid, object_key, size_bytes, sha256, received_at, \
             number_of_frames) VALUES ({id}, 1, '1.2.3.4.{id}', '1.2.840.10008.5.1.4.1.1.77.1.6', \
             '1.2.840.10008.1.2.4.50', 'k{id}', 1, 'x', 0, {frames})"
        ));
        statements.push(format!(
            "INSERT INTO instance_documents (instance_fk, encapsulated) VALUES ({id}, 1)"
        ));
        let numbers: Vec<u64> = (1..=frames).collect();
        for chunk in numbers.chunks(500) {
            let rows: Vec<String> = chunk
                .iter()
                .map(|&n| {
                    let (offset, length) = location(n + id - 1);
                    format!("({id}, {n}, {offset}, {length})")
                })
                .collect();
            statements.push(format!(
                "INSERT INTO instance_frames (instance_fk, frame_number, byte_offset, \
                 byte_length) VALUES {}",
                rows.join(", ")
            ));
        }
    }
    for sql in &statements {
        sqlx::query(sql).execute(&pool).await.expect(sql);
    }
    pool.close().await;

    let index = tessera::index::Index::open(&url, 2).await.expect("upgrade");
    // 2500 frames take three rows, one frame one; the old rows are gone.
    let pool = sqlx::AnyPool::connect(&url).await.expect("connect");
    let blocks: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT instance_fk, COUNT(*) FROM instance_frame_blocks GROUP BY instance_fk \
         ORDER BY instance_fk",
    )
    .fetch_all(&pool)
    .await
    .expect("blocks");
    assert_eq!(blocks, [(1, 3), (2, 1)]);
    let old_rows = sqlx::query("SELECT 1 FROM instance_frames")
        .fetch_all(&pool)
        .await;
    assert!(old_rows.is_err(), "instance_frames is still there");
    pool.close().await;
    for frame in [1, 2, 1023, 1024, 1025, 2048, 2049, 2499, 2500] {
        let (offset, length) = location(frame);
        assert_eq!(
            index
                .frame_location("1.2.3.4.1", frame as u32)
                .await
                .expect("query"),
            FrameLocation::Encapsulated { offset, length },
            "frame {frame}"
        );
    }
    let beyond = index
        .frame_location("1.2.3.4.1", 2501)
        .await
        .expect("query");
    assert_eq!(beyond, FrameLocation::OutOfRange);
    let (offset, length) = location(2);
    assert_eq!(
        index.frame_location("1.2.3.4.2", 1).await.expect("query"),
        FrameLocation::Encapsulated { offset, length }
    );
    drop(index);
    drop(pg);
}

/// Deflated CT slices, large enough to be walked while they arrive, and a
/// deflated image too large to be held in memory, walked as it passes on
/// to its spool file: each is indexed from that walk, with its metadata,
/// and kept byte for byte.
async fn deflated_slices_walked_while_they_arrive(backend: Backend) {
    let (Some(_), Some(_)) = (dcmtk("storescu"), python()) else {
        return skip(
            "deflated_slices_walked_while_they_arrive",
            "DCMTK or pydicom missing",
        );
    };
    const DEFLATED: &str = "1.2.840.10008.1.2.1.99";
    let archive = Archive::start(backend).await;
    let mut files = Vec::new();
    for (name, rows, count, seed) in [("slices", "512", "3", "1"), ("large", "2048", "1", "2")] {
        let args = [
            "--count", count, "--rows", rows, "--cols", rows, "--ts", DEFLATED, "--seed", seed,
        ];
        files.extend(generated(&archive.dir.path().join(name), &args).await);
    }
    for file in &files {
        // Past the point where the walk starts: more than 64 KiB deflated.
        let size = std::fs::metadata(file).expect("file").len();
        assert!(size > 128 * 1024, "{} is {size} bytes", file.display());
    }
    // Beyond what an object held in memory for the journal may be.
    let largest = std::fs::metadata(&files[3]).expect("file").len();
    assert!(largest > 4 << 20, "the large one is {largest} bytes");
    store_all(&archive, &["-xd"], &files).await;
    archive.wait_placed().await;
    let index = archive.index().await;
    for (n, (file, (sop_uid, ts))) in files.iter().zip(describe(&files)).enumerate() {
        assert_eq!(ts, DEFLATED);
        let record = index
            .instance(&sop_uid)
            .await
            .expect("query")
            .expect("indexed");
        assert_eq!(record.transfer_syntax_uid, DEFLATED);
        assert_eq!(record.bits_allocated, Some(16));
        assert!(!record.patient_name.is_empty());
        let stored = std::fs::read(stored_path(&archive, &record.key)).expect("stored");
        let sent = std::fs::read(file).expect("sent");
        // The data set after the meta group, as sent.
        let tail = 1024.min(sent.len());
        assert_eq!(&stored[stored.len() - tail..], &sent[sent.len() - tail..]);
        let path = format!(
            "/dicom-web/studies/{}/series/{}/instances/{sop_uid}/metadata",
            record.study_instance_uid, record.series_instance_uid
        );
        let (status, body) = archive.http_get(&path, &[]).await;
        assert_eq!(status, 200, "{body}");
        let metadata: serde_json::Value = serde_json::from_str(&body).expect("json");
        let rows = if n == 3 { 2048 } else { 512 };
        assert_eq!(metadata[0]["00280010"]["Value"][0], rows, "Rows: {body}");
        assert_eq!(metadata[0]["00080018"]["Value"][0], sop_uid.as_str());
    }
}

/// Large objects in a row on one association, then a small one: each
/// large one moves to a spool file once it outgrows memory, carrying the
/// hash of what it held; each object is indexed under the hash of its
/// bytes and kept byte for byte.
async fn large_objects_in_a_row_kept_whole(backend: Backend) {
    let (Some(_), Some(_)) = (dcmtk("storescu"), python()) else {
        return skip(
            "large_objects_in_a_row_kept_whole",
            "DCMTK or pydicom missing",
        );
    };
    let archive = Archive::start(backend).await;
    let mut files = Vec::new();
    for (name, rows, count, seed) in [("large", "2048", "2", "5"), ("small", "64", "1", "6")] {
        let args = [
            "--count", count, "--rows", rows, "--cols", rows, "--seed", seed,
        ];
        files.extend(generated(&archive.dir.path().join(name), &args).await);
    }
    let sizes: Vec<u64> = files
        .iter()
        .map(|f| std::fs::metadata(f).expect("file").len())
        .collect();
    // Over the 4 MiB an object may take through the journal.
    assert!(sizes[0] > 5 << 20 && sizes[1] > 5 << 20, "{sizes:?}");
    store_all(&archive, &[], &files).await;
    archive.wait_placed().await;
    let index = archive.index().await;
    for (file, (sop_uid, _)) in files.iter().zip(describe(&files)) {
        let record = index
            .instance(&sop_uid)
            .await
            .expect("query")
            .expect("indexed");
        let stored = std::fs::read(stored_path(&archive, &record.key)).expect("stored");
        let sent = std::fs::read(file).expect("sent");
        assert_eq!(
            record.key,
            tessera::storage::key_for(&hex::encode(Sha256::digest(&stored)))
        );
        // The data set as sent, after meta groups of their own.
        let tail = sent.len() - 1024;
        assert!(
            stored[stored.len() - tail..] == sent[sent.len() - tail..],
            "{} changed",
            file.display()
        );
    }
}

on_both_backends!(
    large_objects_in_a_row_kept_whole,
    deflated_slices_walked_while_they_arrive,
    frames_located_in_every_instance_of_a_series,
    frame_rows_of_an_older_index_become_blocks,
    a_series_under_another_study_is_refused,
    refused_versions_are_never_written,
    replace_races_reclamation,
    echo,
    role_selection_is_answered,
    every_transfer_syntax_stored_as_received,
    ten_parallel_associations,
    duplicates_follow_policy,
    character_sets_decoded_to_utf8,
);
