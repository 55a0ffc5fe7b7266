//! C-MOVE and C-GET SCP against DCMTK movescu/getscu, with DCMTK storescp as
//! the move destination: counts, received data sets, an unknown or
//! unreachable destination, and sub-operations the destination refuses.
//! A study downloaded as one ZIP file, as stored and uncompressed.

use crate::common;

use std::path::{Path, PathBuf};

use common::{
    dcmtk, files_in, free_port, local_peer, python, run_peer, skip, Archive, Backend, StoreScp,
};

fn study_uid(file: &Path) -> String {
    let obj = dicom_object::open_file(file).expect("dicom");
    obj.element(dicom_dictionary_std::tags::STUDY_INSTANCE_UID)
        .expect("uid")
        .to_str()
        .expect("text")
        .trim_end_matches('\0')
        .to_owned()
}

/// Received files match the originals (by SOP Instance UID).
async fn same_as_sent(sent: &[PathBuf], received: &[PathBuf]) {
    let by_uid = |files: &[PathBuf]| -> std::collections::BTreeMap<String, PathBuf> {
        files
            .iter()
            .map(|f| {
                let obj = dicom_object::open_file(f).expect("dicom");
                let uid = obj.meta().media_storage_sop_instance_uid().to_owned();
                (uid, f.clone())
            })
            .collect()
    };
    let (a, b) = (by_uid(sent), by_uid(received));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let mut args = Vec::new();
    for (uid, file) in &a {
        args.push(file.to_str().expect("utf8").to_owned());
        args.push(b[uid].to_str().expect("utf8").to_owned());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_peer("same_dataset.py", &args).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Received files hold the originals' pixels (by SOP Instance UID), in
/// whatever transfer syntax they arrived.
async fn same_pixels(originals: &[PathBuf], received: &[PathBuf]) {
    let uid_of = |f: &PathBuf| {
        dicom_object::open_file(f)
            .expect("dicom")
            .meta()
            .media_storage_sop_instance_uid()
            .to_owned()
    };
    let mut pairs = Vec::new();
    for original in originals {
        let uid = uid_of(original);
        let got = received
            .iter()
            .find(|r| uid_of(r) == uid)
            .expect("received");
        pairs.push(original.to_str().expect("utf8").to_owned());
        pairs.push(got.to_str().expect("utf8").to_owned());
    }
    let pairs: Vec<&str> = pairs.iter().map(String::as_str).collect();
    let same = run_peer("same_pixels.py", &pairs).await;
    assert!(
        same.status.success(),
        "{}",
        String::from_utf8_lossy(&same.stdout)
    );
}

async fn move_and_get(backend: Backend) {
    let (Some(movescu), Some(getscu), Some(_), Some(_)) = (
        dcmtk("movescu"),
        dcmtk("getscu"),
        dcmtk("storescp"),
        python(),
    ) else {
        return skip(
            "move_and_get",
            "DCMTK movescu/getscu/storescp or pynetdicom missing",
        );
    };
    let work = tempfile::tempdir().expect("tmp");
    let dest = StoreScp::start("DEST", &work.path().join("dest"), &["+xa"]).await;
    let strict = StoreScp::start("DEST", &work.path().join("strict"), &[]).await;
    let down_port = free_port();
    let (dest_port, strict_port) = (dest.port, strict.port);
    let archive = Archive::start_with(backend, |raw| {
        raw.peers = vec![
            local_peer("DEST", dest_port),
            local_peer("STRICT", strict_port),
            local_peer("DOWN", down_port),
        ];
    })
    .await;
    // One uncompressed study of 5 and one RLE study of 3.
    let plain = work.path().join("plain");
    let rle = work.path().join("rle");
    assert!(run_peer(
        "gen.py",
        &[
            plain.to_str().expect("utf8"),
            "--count",
            "5",
            "--seed",
            "41"
        ]
    )
    .await
    .status
    .success());
    assert!(run_peer(
        "gen.py",
        &[
            rle.to_str().expect("utf8"),
            "--count",
            "3",
            "--seed",
            "42",
            "--ts",
            "1.2.840.10008.1.2.5"
        ]
    )
    .await
    .status
    .success());
    let port = archive.dicom_port.to_string();
    for dir in [&plain, &rle] {
        assert!(run_peer(
            "send.py",
            &["127.0.0.1", &port, dir.to_str().expect("utf8")]
        )
        .await
        .status
        .success());
    }
    let plain_files = files_in(&plain);
    let rle_files = files_in(&rle);
    let plain_study = format!("StudyInstanceUID={}", study_uid(&plain_files[0]));
    let rle_study = format!("StudyInstanceUID={}", study_uid(&rle_files[0]));

    // -d prints response identifiers (the Failed SOP Instance UID List).
    let movescu_run = |dest: &'static str, key: String| {
        let movescu = movescu.clone();
        let args = archive.ae_args();
        async move {
            let out = tokio::process::Command::new(movescu)
                .args([
                    "-d",
                    "-S",
                    "-aem",
                    dest,
                    "-k",
                    "QueryRetrieveLevel=STUDY",
                    "-k",
                    &key,
                ])
                .args(args)
                .output()
                .await
                .expect("movescu");
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        }
    };

    // C-MOVE of both studies to a destination accepting everything.
    let success = "0x0000: Success: Sub-operations complete";
    let out = movescu_run("DEST", plain_study.clone()).await;
    assert!(out.contains(success), "{out}");
    assert_eq!(
        out.matches("0xff00: Pending").count(),
        5,
        "a pending response per sub-operation: {out}"
    );
    let out = movescu_run("DEST", rle_study.clone()).await;
    assert!(out.contains(success), "{out}");
    let received = files_in(&work.path().join("dest"));
    assert_eq!(received.len(), 8);
    let sent: Vec<PathBuf> = plain_files.iter().chain(&rle_files).cloned().collect();
    same_as_sent(&sent, &received).await;

    // A destination that accepts only uncompressed syntaxes: the RLE study
    // is decoded on the way, pixel for pixel.
    let out = movescu_run("STRICT", rle_study.clone()).await;
    assert!(out.contains(success), "{out}");
    assert!(out.contains("Failed Suboperations          : 0"), "{out}");
    let strict_files = files_in(&work.path().join("strict"));
    assert_eq!(strict_files.len(), 3, "{out}");
    same_pixels(&rle_files, &strict_files).await;

    // A STUDY-level move that names no study (empty or wildcard) would send
    // the whole archive: refused with A900, nothing sent.
    for key in ["StudyInstanceUID=", "StudyInstanceUID=*"] {
        let out = movescu_run("DEST", key.into()).await;
        assert!(out.to_lowercase().contains("0xa900"), "{key}: {out}");
    }
    assert_eq!(files_in(&work.path().join("dest")).len(), 8);

    // Unknown and unreachable destinations.
    let out = movescu_run("NOWHERE", plain_study.clone()).await;
    assert!(out.contains("MoveDestinationUnknown"), "{out}");
    let out = movescu_run("DOWN", plain_study.clone()).await;
    assert!(out.contains("OutOfResourcesSubOperations"), "{out}");

    // C-GET back over the same association.
    let get_dir = work.path().join("get");
    std::fs::create_dir_all(&get_dir).expect("dir");
    let out = tokio::process::Command::new(getscu)
        .args(["-v", "-S", "-od"])
        .arg(&get_dir)
        .args(["-k", "QueryRetrieveLevel=STUDY", "-k", &plain_study])
        .args(archive.ae_args())
        .output()
        .await
        .expect("getscu");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Received C-GET Response (Success)"), "{text}");
    same_as_sent(&plain_files, &files_in(&get_dir)).await;

    // getscu proposes uncompressed syntaxes only: the RLE study is decoded.
    let get_rle = work.path().join("get-rle");
    std::fs::create_dir_all(&get_rle).expect("dir");
    let getscu = dcmtk("getscu").expect("getscu");
    let out = tokio::process::Command::new(getscu)
        .args(["-S", "-od"])
        .arg(&get_rle)
        .args(["-k", "QueryRetrieveLevel=STUDY", "-k", &rle_study])
        .args(archive.ae_args())
        .output()
        .await
        .expect("getscu");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = files_in(&get_rle);
    assert_eq!(got.len(), 3);
    same_pixels(&rle_files, &got).await;
}

/// Destinations that refuse the association, abort in the middle, or are
/// slow enough for a C-CANCEL to land between sub-operations.
async fn troublesome_destinations(backend: Backend) {
    let (Some(movescu), Some(_), Some(_)) = (dcmtk("movescu"), dcmtk("storescp"), python()) else {
        return skip(
            "troublesome_destinations",
            "DCMTK movescu/storescp or pynetdicom missing",
        );
    };
    let work = tempfile::tempdir().expect("tmp");
    let refuse = StoreScp::start("DEST", &work.path().join("refuse"), &["--refuse"]).await;
    let abort = StoreScp::start("DEST", &work.path().join("abort"), &["--abort-after"]).await;
    let slow = StoreScp::start("DEST", &work.path().join("slow"), &["--sleep-after", "1"]).await;
    let (r, a, s) = (refuse.port, abort.port, slow.port);
    let archive = Archive::start_with(backend, |raw| {
        raw.peers = vec![
            local_peer("REFUSE", r),
            local_peer("ABORT", a),
            local_peer("SLOW", s),
        ];
    })
    .await;
    let corpus = work.path().join("corpus");
    assert!(run_peer(
        "gen.py",
        &[
            corpus.to_str().expect("utf8"),
            "--count",
            "4",
            "--seed",
            "44"
        ]
    )
    .await
    .status
    .success());
    let port = archive.dicom_port.to_string();
    assert!(run_peer(
        "send.py",
        &["127.0.0.1", &port, corpus.to_str().expect("utf8")]
    )
    .await
    .status
    .success());
    let study = format!("StudyInstanceUID={}", study_uid(&files_in(&corpus)[0]));
    let run = |dest: &'static str, extra: &'static [&'static str]| {
        let movescu = movescu.clone();
        let args = archive.ae_args();
        let study = study.clone();
        async move {
            let out = tokio::process::Command::new(movescu)
                .args([
                    "-d",
                    "-S",
                    "-aem",
                    dest,
                    "-k",
                    "QueryRetrieveLevel=STUDY",
                    "-k",
                    &study,
                ])
                .args(extra)
                .args(args)
                .output()
                .await
                .expect("movescu");
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        }
    };
    // Refused association: every sub-operation fails and is listed.
    let out = run("REFUSE", &[]).await;
    assert!(
        out.contains("Refused: OutOfResourcesSubOperations"),
        "{out}"
    );
    assert!(out.contains("Failed Suboperations          : 4"), "{out}");
    // Aborted after the first C-STORE-RQ: that and the rest fail; Tessera
    // stays up and answers the next request.
    let out = run("ABORT", &[]).await;
    assert!(out.contains("Failed Suboperations          : 4"), "{out}");
    assert!(out.contains("(0008,0058)"), "{out}");
    // Slow destination: C-CANCEL after the first pending response ends the
    // move with FE00 before all four are sent.
    let out = run("SLOW", &["--cancel", "1"]).await;
    assert!(out.contains("0xfe00: Cancel"), "{out}");
    let completed = out
        .lines()
        .rfind(|l| l.contains("Completed Suboperations"))
        .and_then(|l| l.rsplit(':').next())
        .and_then(|n| n.trim().parse::<u32>().ok())
        .expect("completed count");
    assert!(completed < 4, "cancelled before the end: {out}");
    let out = run("SLOW", &[]).await;
    assert!(
        out.contains("0x0000: Success"),
        "still serving after all that: {out}"
    );
}

/// Every file under a directory, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for path in files_in(dir) {
        out.push(path);
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.path().is_dir() {
                out.extend(files_under(&entry.path()));
            }
        }
    }
    out
}

/// `tests/peers/unzip.py`: the answer, and the files extracted.
async fn download_zip(
    archive: &Archive,
    path: &str,
    out_dir: &Path,
) -> (serde_json::Value, Vec<PathBuf>) {
    let url = format!("http://127.0.0.1:{}{path}", archive.http_port);
    let out = run_peer("unzip.py", &[&url, out_dir.to_str().expect("utf8")]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|_| panic!("unzip.py: {stdout}{}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "damaged archive: {report}");
    (report, files_under(out_dir))
}

async fn study_downloads_as_zip(backend: Backend) {
    if python().is_none() {
        return skip("study_downloads_as_zip", "python with pydicom missing");
    }
    let archive = Archive::start(backend).await;
    let study = "1.2.826.0.1.3680043.10.8.77";
    let dir = tempfile::tempdir().expect("tmp");
    let mut sent = Vec::new();
    for (seed, ts, count) in [
        ("1", "1.2.840.10008.1.2.5", "2"),
        ("2", "1.2.840.10008.1.2.1", "1"),
    ] {
        let out_dir = dir.path().join(seed);
        let out = run_peer(
            "gen.py",
            &[
                out_dir.to_str().expect("utf8"),
                "--count",
                count,
                "--seed",
                seed,
                "--ts",
                ts,
                "--study-uid",
                study,
                "--patient-id",
                "ZIP-1",
            ],
        )
        .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for file in files_in(&out_dir) {
            let bytes = std::fs::read(&file).expect("generated");
            assert_eq!(common::stow(archive.http_port, &bytes, &[]).await, 200);
            sent.push(file);
        }
    }

    let (report, files) = download_zip(
        &archive,
        &format!("/api/v1/studies/{study}/archive"),
        &dir.path().join("stored"),
    )
    .await;
    assert_eq!(report["status"], 200, "{report}");
    assert_eq!(report["content_type"], "application/zip", "{report}");
    assert!(
        report["disposition"]
            .as_str()
            .is_some_and(|d| d.contains(&format!("{study}.zip"))),
        "{report}"
    );
    let names = report["names"].as_array().cloned().unwrap_or_default();
    assert_eq!(names.len(), 3, "{report}");
    for name in &names {
        let parts: Vec<&str> = name.as_str().unwrap_or_default().split('/').collect();
        assert_eq!(parts.len(), 3, "STUDY/SERIES/SOP.dcm: {name}");
        assert_eq!(parts[0], study);
        assert!(parts[2].ends_with(".dcm"), "{name}");
    }
    same_as_sent(&sent, &files).await;

    let (report, files) = download_zip(
        &archive,
        &format!("/api/v1/studies/{study}/archive?transfer=uncompressed"),
        &dir.path().join("uncompressed"),
    )
    .await;
    assert_eq!(report["status"], 200, "{report}");
    assert_eq!(files.len(), 3);
    for file in &files {
        let obj = dicom_object::open_file(file).expect("dicom");
        assert_eq!(
            obj.meta().transfer_syntax().trim_end_matches('\0'),
            "1.2.840.10008.1.2.1",
            "{file:?}"
        );
    }
    same_pixels(&sent, &files).await;

    let (status, body) = archive
        .http_get(
            &format!("/api/v1/studies/{study}/archive?transfer=jpeg"),
            &[],
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = archive
        .http_get("/api/v1/studies/1.2.3.4.5.6/archive", &[])
        .await;
    assert_eq!(status, 404);
    let (status, _) = archive
        .http_get("/api/v1/studies/not-a-uid/archive", &[])
        .await;
    assert_eq!(status, 400);
}

/// An H.264 clip (High profile, with B-frames, split over two fragments)
/// rendered for `<video>`: an MP4 that ffprobe reads as 50 frames of
/// 320×240 H.264 over 2 s, whose frames come out in display order with
/// rising timestamps (the B-frames' composition offsets are right); a byte
/// range is 206 with its Content-Range.
async fn video_renders_as_mp4(backend: Backend) {
    if python().is_none() || !common::has_ffmpeg() {
        return skip("video_renders_as_mp4", "pydicom or ffmpeg missing");
    }
    let archive = Archive::start(backend).await;
    let study = "1.2.826.0.1.3680043.10.9.1";
    common::stow_h264_clip(archive.http_port, study).await;
    let (_, listing) = archive
        .http_get(&format!("/dicom-web/studies/{study}/instances"), &[])
        .await;
    let listing: serde_json::Value = serde_json::from_str(&listing).expect("QIDO");
    let uid = |tag: &str| {
        listing[0][tag]["Value"][0]
            .as_str()
            .expect("uid")
            .to_owned()
    };
    let (series, sop) = (uid("0020000E"), uid("00080018"));
    let url = format!(
        "http://127.0.0.1:{}/dicom-web/studies/{study}/series/{series}/instances/{sop}/rendered",
        archive.http_port
    );
    let client = reqwest::Client::new();
    let whole = client
        .get(&url)
        .header("Accept", "video/mp4")
        .send()
        .await
        .expect("rendered");
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["content-type"], "video/mp4");
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    let mp4 = whole.bytes().await.expect("body");
    let file = archive.dir.path().join("clip.mp4");
    std::fs::write(&file, &mp4).expect("write");

    let probe = |args: &[&str]| {
        let out = std::process::Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0"])
            .args(args)
            .arg(&file)
            .output()
            .expect("ffprobe");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let stream: serde_json::Value = serde_json::from_str(&probe(&[
        "-count_frames",
        "-show_entries",
        "stream=codec_name,width,height,nb_read_frames:format=duration",
        "-of",
        "json",
    ]))
    .expect("json");
    let s = &stream["streams"][0];
    assert_eq!(s["codec_name"], "h264", "{stream}");
    assert_eq!(
        (s["width"].as_u64(), s["height"].as_u64()),
        (Some(320), Some(240))
    );
    assert_eq!(s["nb_read_frames"], "50", "{stream}");
    let duration: f64 = stream["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .expect("duration");
    assert!((duration - 2.0).abs() < 0.05, "{stream}");
    // A frame's line may carry side data after a comma.
    let times: Vec<i64> = probe(&["-show_entries", "frame=pts", "-of", "csv=p=0"])
        .lines()
        .filter_map(|l| l.split(',').next()?.trim().parse().ok())
        .collect();
    assert_eq!(times.len(), 50, "{times:?}");
    assert!(
        times.windows(2).all(|w| w[1] > w[0]),
        "frames in display order carry rising timestamps: {times:?}"
    );

    let part = client
        .get(&url)
        .header("Range", "bytes=0-99")
        .send()
        .await
        .expect("range");
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 0-99/{}", mp4.len()).as_str()
    );
    assert_eq!(part.bytes().await.expect("body"), mp4.slice(0..100));
}

on_both_backends!(
    move_and_get,
    troublesome_destinations,
    study_downloads_as_zip,
    video_renders_as_mp4
);
