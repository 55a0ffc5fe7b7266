//! End to end on the S3 backend against a real S3-compatible server:
//! `moto_server` (PyPI `moto[server]`) started by the test on a free port.
//! DCMTK's storescu sends two pydicom sample files and a generated ~10 MiB
//! multi-frame CT (so the multipart upload path runs); then the bucket
//! listing, `tessera verify` and a read-back through `Storage::open_read`
//! must all agree with the index.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use common::moto::{moto_server_path, python_with_boto3, start_moto};
use common::{Archive, Backend};
use futures::TryStreamExt;
use sha2::{Digest, Sha256};
use tessera::config::{RawS3, StorageLocation};
use tokio::io::AsyncReadExt;

const BUCKET: &str = "tessera-test";
const PREFIX: &str = "archive/objects";
const ACCESS_KEY: &str = "testing";
const SECRET_KEY: &str = "testing";
const REGION: &str = "us-east-1";
/// storage/s3.rs uploads objects above this size in parts.
const PART_SIZE: u64 = 8 * 1024 * 1024;

/// Run a boto3 snippet against the moto endpoint; `s3` is the client and
/// `bucket`/`prefix` are defined. Returns stdout.
async fn boto3(endpoint: &str, body: &str) -> String {
    let script = format!(
        "import boto3, json\n\
         s3 = boto3.client('s3', endpoint_url={endpoint:?}, aws_access_key_id={ACCESS_KEY:?},\n\
         \x20   aws_secret_access_key={SECRET_KEY:?}, region_name={REGION:?})\n\
         bucket = {BUCKET:?}\n\
         prefix = {PREFIX:?}\n\
         {body}\n"
    );
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("python3")
            .arg("-c")
            .arg(&script)
            .output(),
    )
    .await
    .expect("boto3 helper finishes within 60 s")
    .expect("python3 runs");
    assert!(
        out.status.success(),
        "boto3 helper failed:\n{script}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[derive(Debug)]
struct BucketObject {
    size: u64,
    etag: String,
}

/// Every object in the bucket (not only under the prefix), by key.
async fn list_bucket(endpoint: &str) -> BTreeMap<String, BucketObject> {
    let out = boto3(
        endpoint,
        "for page in s3.get_paginator('list_objects_v2').paginate(Bucket=bucket):\n\
         \x20   for o in page.get('Contents', []):\n\
         \x20       print(json.dumps({'key': o['Key'], 'size': o['Size'], 'etag': o['ETag']}))",
    )
    .await;
    out.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
            (
                v["key"].as_str().expect("key").to_owned(),
                BucketObject {
                    size: v["size"].as_u64().expect("size"),
                    etag: v["etag"]
                        .as_str()
                        .expect("etag")
                        .trim_matches('"')
                        .to_owned(),
                },
            )
        })
        .collect()
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `ab/cd/<sha256>.dcm`, with ab and cd the first four hex digits.
fn sha_of_key(key: &str) -> Option<&str> {
    let mut parts = key.split('/');
    let (a, b, name) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let sha = name.strip_suffix(".dcm")?;
    (is_hex(a, 2) && is_hex(b, 2) && is_hex(sha, 64) && sha.starts_with(&format!("{a}{b}")))
        .then_some(sha)
}

async fn s3_end_to_end(backend: Backend) {
    let name = "s3_end_to_end";
    let Some(moto_bin) = moto_server_path() else {
        common::skip(name, "moto_server not found (pip install 'moto[server]')");
        return;
    };
    if !python_with_boto3() {
        common::skip(name, "python3 cannot import boto3, pydicom and numpy");
        return;
    }
    let Some(storescu) = common::dcmtk("storescu") else {
        common::skip(name, "DCMTK storescu not found");
        return;
    };
    let Some((pydicom_data, _)) = common::sample_dirs() else {
        common::skip(name, "pydicom sample files not found");
        return;
    };
    let samples: Vec<PathBuf> = ["CT_small.dcm", "MR_small.dcm"]
        .iter()
        .map(|f| pydicom_data.join("test_files").join(f))
        .collect();
    for s in &samples {
        assert!(s.is_file(), "missing sample {}", s.display());
    }

    let work = tempfile::tempdir().expect("temp dir");
    let moto = start_moto(&moto_bin, work.path());
    let endpoint = moto.endpoint();
    boto3(&endpoint, "s3.create_bucket(Bucket=bucket)").await;

    let large = work.path().join("large_ct.dcm");
    let out = common::run_peer("make_large_ct.py", &[large.to_str().expect("utf-8 path")]).await;
    assert!(out.status.success(), "make_large_ct.py failed");
    let large_size = std::fs::metadata(&large).expect("large object").len();
    assert!(
        large_size > PART_SIZE + 1024 * 1024,
        "large object is only {large_size} bytes"
    );

    let s3_endpoint = endpoint.clone();
    let mut archive = Archive::start_with(backend, move |raw| {
        raw.storage.url = Some(format!("s3://{BUCKET}/{PREFIX}"));
        raw.storage.s3 = RawS3 {
            endpoint: Some(s3_endpoint),
            region: Some(REGION.into()),
            access_key_id: Some(ACCESS_KEY.into()),
            secret_access_key: Some(SECRET_KEY.into()),
            allow_http: Some(true),
        };
    })
    .await;
    assert!(
        matches!(archive.config.storage, StorageLocation::S3 { .. }),
        "archive is not on S3: {:?}",
        archive.config.storage
    );

    let mut args = vec!["-R".to_owned()];
    args.extend(archive.ae_args());
    args.extend(samples.iter().map(|p| p.display().to_string()));
    args.push(large.display().to_string());
    let out = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new(&storescu).args(&args).output(),
    )
    .await
    .expect("storescu finishes within 180 s")
    .expect("storescu runs");
    assert!(
        out.status.success(),
        "storescu exited with {}:\nstdout:\n{}\nstderr:\n{}\nmoto log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        moto.log_text()
    );
    archive.stop().await;

    // The bucket: exactly one object per instance, all under the prefix,
    // keyed by content hash only.
    let listed = list_bucket(&endpoint).await;
    let mut keys = BTreeSet::new();
    for (full, obj) in &listed {
        let key = full
            .strip_prefix(&format!("{PREFIX}/"))
            .unwrap_or_else(|| panic!("object {full:?} outside prefix {PREFIX}/"));
        assert!(
            sha_of_key(key).is_some(),
            "object key {key:?} is not ab/cd/<sha256>.dcm"
        );
        keys.insert((key.to_owned(), obj.size));
    }
    assert_eq!(
        listed.len(),
        3,
        "expected 3 objects, bucket holds {listed:#?}"
    );
    let multipart: Vec<_> = listed
        .iter()
        .filter(|(_, o)| o.size > PART_SIZE)
        .map(|(k, o)| (k, &o.etag))
        .collect();
    assert_eq!(
        multipart.len(),
        1,
        "exactly one object above 8 MiB: {listed:#?}"
    );
    // S3 gives a multipart upload the ETag "<md5 of part md5s>-<parts>".
    assert!(
        multipart[0].1.ends_with("-2"),
        "large object {} was not uploaded in 2 parts (ETag {})",
        multipart[0].0,
        multipart[0].1
    );
    for (_, o) in listed.iter().filter(|(_, o)| o.size <= PART_SIZE) {
        assert!(
            !o.etag.contains('-'),
            "small object uploaded in parts: {o:?}"
        );
    }

    // Nothing left in the local spool, and no local object root was made.
    let data_dir = archive.config.data_dir.clone();
    let node_spools: Vec<_> = std::fs::read_dir(archive.config.spool_dir())
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert_eq!(
        node_spools.len(),
        1,
        "one spool, this node's: {node_spools:?}"
    );
    // Nothing left but the ingest journal.
    let spool: Vec<_> = std::fs::read_dir(&node_spools[0])
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        spool.iter().all(|p| p.ends_with("journal")),
        "spool not empty: {spool:?}"
    );
    assert!(
        !data_dir.join("objects").exists(),
        "S3 backend created a local object root"
    );

    // Objects that are not Tessera's, under the prefix and beside it: the
    // storage layer must neither list them nor let verify prune them.
    let foreign = [
        format!("{PREFIX}/notes/readme.txt"),
        format!("{PREFIX}/ab/cd/not-a-hash.dcm"),
        "elsewhere/unrelated.dcm".to_owned(),
    ];
    boto3(
        &endpoint,
        &format!(
            "for key in {foreign:?}:\n    s3.put_object(Bucket=bucket, Key=key, Body=b'not ours')"
        ),
    )
    .await;

    // Index, storage and the bucket agree; verify is clean.
    let core = tessera::server::Core::open(&archive.config)
        .await
        .expect("core opens");
    let report =
        tessera::verify::verify(&core.index, &core.storage, false, std::time::Duration::ZERO)
            .await
            .expect("verify runs");
    assert!(report.is_clean(), "verify found problems: {report:?}");
    assert_eq!(report.checked, 3, "{report:?}");
    assert!(report.unreferenced.is_empty(), "{report:?}");

    let objects: Vec<_> = core
        .index
        .objects()
        .try_collect()
        .await
        .expect("index objects");
    assert_eq!(objects.len(), 3, "{objects:?}");
    let indexed: BTreeSet<_> = objects.iter().map(|o| (o.key.clone(), o.size)).collect();
    assert_eq!(indexed, keys, "index and bucket disagree");

    for obj in &objects {
        assert_eq!(sha_of_key(&obj.key), Some(obj.sha256.as_str()), "{obj:?}");
        let mut reader = core
            .storage
            .open_read(&obj.key)
            .await
            .unwrap_or_else(|e| panic!("open_read {}: {e}", obj.key));
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).await.expect("read object");
        assert_eq!(bytes.len() as u64, obj.size, "{obj:?}");
        assert_eq!(hex::encode(Sha256::digest(&bytes)), obj.sha256, "{obj:?}");
        assert_eq!(&bytes[128..132], b"DICM", "{} is not Part 10", obj.key);
    }
    let largest = objects.iter().map(|o| o.size).max().unwrap_or(0);
    assert!(
        largest > PART_SIZE,
        "largest stored object is {largest} bytes"
    );

    // Keys listed through the storage layer match, too.
    let mut stored: Vec<String> = core.storage.keys().try_collect().await.expect("list keys");
    stored.sort();
    let expected: Vec<String> = keys.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(stored, expected);

    // Hash-derived keys: no UID appears anywhere in the bucket.
    for obj in &objects {
        assert!(
            !listed
                .keys()
                .any(|k| k.contains(obj.sop_instance_uid.as_str())),
            "a key contains SOP Instance UID {}",
            obj.sop_instance_uid
        );
    }

    // With the server stopped, pruning finds nothing to delete and leaves
    // foreign objects alone.
    let report =
        tessera::verify::verify(&core.index, &core.storage, true, std::time::Duration::ZERO)
            .await
            .expect("verify --prune-unreferenced runs");
    assert!(report.is_clean() && report.pruned == 0, "{report:?}");
    let after = list_bucket(&endpoint).await;
    for key in foreign.iter().chain(listed.keys()) {
        assert!(after.contains_key(key), "{key} disappeared: {after:#?}");
    }
    assert_eq!(after.len(), listed.len() + foreign.len(), "{after:#?}");

    core.index.close().await;
    drop(moto);
}

on_both_backends!(s3_end_to_end);
