//! HL7 v2 over MLLP against the Python `hl7` package's client: ADT
//! messages create, update, merge and re-identify patients, C-FIND and
//! QIDO follow at once, duplicates are answered from the journal, bad
//! messages are refused with the reason, bad framing closes only its own
//! connection, and an acknowledged message survives kill -9.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{dcmtk, python, run_peer, skip, Archive, Backend, ServerProcess};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn hl7_available(test: &str) -> bool {
    let ok = python().is_some()
        && std::process::Command::new("python3")
            .args(["-c", "import hl7"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
    if !ok {
        skip(test, "python3 with the hl7 package is missing");
    }
    ok && dcmtk("findscu").is_some()
}

fn corpus(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/hl7")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// Send `files` in order over one connection; the acknowledgements.
async fn send(port: u16, files: &[&str], extra: &[&str]) -> Vec<Value> {
    let port = port.to_string();
    let paths: Vec<String> = files.iter().map(|f| corpus(f)).collect();
    let mut args: Vec<&str> = vec![&port];
    args.extend(paths.iter().map(String::as_str));
    args.extend_from_slice(extra);
    let out = run_peer("mllp_send.py", &args).await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(out.status.success(), "mllp_send.py failed: {report}");
    report["results"].as_array().cloned().unwrap_or_default()
}

fn code(ack: &Value) -> (&str, &str) {
    (
        ack["code"].as_str().unwrap_or(""),
        ack["error_code"].as_str().unwrap_or(""),
    )
}

async fn json(archive: &Archive, path: &str) -> (u16, Value) {
    let (status, body) = archive.http_get(path, &[]).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Store two instances of one study for patient `PID{seed}-0`.
async fn store_study(archive: &Archive, seed: u32) {
    let dir = archive.dir.path().join(format!("study-{seed}"));
    let dir_s = dir.to_str().expect("utf-8").to_owned();
    let seed_s = seed.to_string();
    let out = run_peer("gen.py", &[&dir_s, "--count", "2", "--seed", &seed_s]).await;
    assert!(out.status.success());
    let port = archive.dicom_port.to_string();
    assert!(run_peer("send.py", &["127.0.0.1", &port, &dir_s])
        .await
        .status
        .success());
}

/// Studies C-FIND (study root) finds for a patient ID, and QIDO's.
async fn studies_of(archive: &Archive, patient: &str) -> (usize, Vec<Value>) {
    let findscu = dcmtk("findscu").expect("checked");
    let out = tokio::process::Command::new(findscu)
        .args(["-v", "-S", "-k", "QueryRetrieveLevel=STUDY"])
        .args(["-k", &format!("PatientID={patient}"), "-k", "PatientName"])
        .args(archive.ae_args())
        .output()
        .await
        .expect("findscu runs");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let found = log.matches("(Pending)").count();
    let (status, qido) = json(archive, &format!("/dicom-web/studies?PatientID={patient}")).await;
    let qido = if status == 204 {
        Vec::new()
    } else {
        qido.as_array().cloned().unwrap_or_default()
    };
    (found, qido)
}

fn patient_name(study: &Value) -> String {
    study["00100010"]["Value"][0]["Alphabetic"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

async fn adt_updates_merges_and_repeats(backend: Backend) {
    if !hl7_available("adt_updates_merges_and_repeats") {
        return;
    }
    let archive = Archive::start(backend).await;
    // Studies that arrived before the RIS said anything of their patients.
    store_study(&archive, 8).await;
    store_study(&archive, 9).await;
    let acks = send(
        archive.hl7_port,
        &[
            "a01_nguyen.hl7",
            "a04_tran.hl7",
            "a31_pham.hl7",
            "a08_nguyen_update.hl7",
            "a01_mueller_latin1.hl7",
        ],
        &[],
    )
    .await;
    assert_eq!(acks.len(), 5);
    for ack in &acks {
        assert_eq!(code(ack), ("AA", ""), "{ack}");
    }

    let (status, nguyen) = json(&archive, "/api/v1/patients/PID7-0").await;
    assert_eq!(status, 200);
    assert_eq!(nguyen["name"], "Nguyễn^Thị Minh Khai^^Mrs");
    // A08 moved the birth date; escapes came through as characters.
    assert_eq!(nguyen["birth_date"], "19800215");
    assert_eq!(nguyen["sex"], "F");
    assert_eq!(
        nguyen["address"],
        "12 Lý Thường Kiệt|B^2&3\\4, Hà Nội, 100000, VN"
    );
    assert_eq!(nguyen["other_ids"], "800123456^NATIONAL");
    assert_eq!(nguyen["visits"][0]["number"], "V0001");
    assert_eq!(nguyen["visits"][0]["status"], "admitted");
    assert_eq!(nguyen["visits"][0]["attending"], "Trần^Văn Bình");
    let (_, mueller) = json(&archive, "/api/v1/patients/PID10-0").await;
    assert_eq!(mueller["name"], "Müller^Jürgen^^Dr.");
    assert_eq!(mueller["address"], "Königstraße 5, Düsseldorf, 40212, DE");

    // A31 renamed a patient known only from DICOM: queries show it at once.
    let (found, qido) = studies_of(&archive, "PID9-0").await;
    assert_eq!((found, qido.len()), (1, 1));
    assert_eq!(patient_name(&qido[0]), "Phạm^Thị Lan");

    // A40: PID9-0 merges into PID8-0. Sent twice: applied once, and the
    // second answer is the first one.
    let merges = send(archive.hl7_port, &["a40_merge.hl7"], &["--repeat", "2"]).await;
    assert_eq!(code(&merges[0]), ("AA", ""));
    assert_eq!(
        merges[0]["ack"], merges[1]["ack"],
        "a repeat gets the cached ACK"
    );
    let (found, qido) = studies_of(&archive, "PID8-0").await;
    assert_eq!(
        (found, qido.len()),
        (2, 2),
        "both studies under the survivor"
    );
    assert!(qido.iter().all(|s| patient_name(s) == "Trần^Quốc Tuấn"));
    assert_eq!(studies_of(&archive, "PID9-0").await, (0, Vec::new()));
    let (status, _) = json(&archive, "/api/v1/patients/PID9-0").await;
    assert_eq!(status, 404);
    let (_, log) = json(&archive, "/api/v1/hl7/messages?type=ADT%5EA40").await;
    let rows = log["messages"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 1, "{log}");
    assert_eq!(rows[0]["attempts"], 1);
    assert_eq!(rows[0]["outcome"], "AA");

    // A47: PID7-0 is now PID11-0, visits and all.
    let changed = send(archive.hl7_port, &["a47_change_id.hl7"], &[]).await;
    assert_eq!(code(&changed[0]), ("AA", ""));
    let (status, _) = json(&archive, "/api/v1/patients/PID7-0").await;
    assert_eq!(status, 404);
    let (_, renamed) = json(&archive, "/api/v1/patients/PID11-0").await;
    assert_eq!(renamed["visits"][0]["number"], "V0001");
}

async fn refusals_say_why(backend: Backend) {
    if !hl7_available("refusals_say_why") {
        return;
    }
    let archive = Archive::start_with(backend, |raw| {
        raw.hl7.max_message_bytes = Some(2048);
    })
    .await;
    let acks = send(
        archive.hl7_port,
        &[
            "bad_date.hl7",
            "bad_trigger.hl7",
            "bad_version.hl7",
            "bad_no_type.hl7",
            "bad_type.hl7",
        ],
        &[],
    )
    .await;
    let got: Vec<(&str, &str)> = acks.iter().map(code).collect();
    // 2.1 predates ERR-3: its ERR carries the code in ERR-1 only.
    assert_eq!(
        got,
        [
            ("AE", "102"),
            ("AR", "201"),
            ("AR", ""),
            ("AR", "101"),
            ("AR", "200")
        ]
    );
    assert!(acks[2]["ack"]
        .as_str()
        .unwrap_or("")
        .contains("ERR|MSH^1^12^203&"));
    let latin = send(
        archive.hl7_port,
        &["bad_charset.hl7"],
        &["--force-encoding", "latin-1"],
    )
    .await;
    assert_eq!(code(&latin[0]), ("AE", "102"));
    let (status, _) = json(&archive, "/api/v1/patients/PID13-0").await;
    assert_eq!(status, 404, "no garbled patient was created");

    // The log shows each refusal; a replay is tried again and counted.
    let (_, log) = json(&archive, "/api/v1/hl7/messages?outcome=AE").await;
    let rows = log["messages"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 2, "{log}");
    let bad_date = rows
        .iter()
        .find(|r| r["control_id"] == "BAD-0001")
        .expect("BAD-0001 logged");
    assert!(bad_date["error"].as_str().unwrap_or("").contains("PID-7"));
    let id = bad_date["id"].as_i64().expect("id");
    let (status, body) = common::http_request(
        archive.http_port,
        "POST",
        &format!("/api/v1/hl7/messages/{id}/replay"),
        None,
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"AE\""));
    let (_, again) = json(&archive, &format!("/api/v1/hl7/messages/{id}")).await;
    assert_eq!(again["attempts"], 2);
    assert!(again["message"]
        .as_str()
        .unwrap_or("")
        .contains("Lê^Văn Hưu"));
    let (status, _) = common::http_request(
        archive.http_port,
        "POST",
        "/api/v1/hl7/messages/999999/replay",
        None,
        &[],
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = archive
        .http_get("/api/v1/hl7/messages?outcome=XX", &[])
        .await;
    assert_eq!(status, 400);

    // Bytes outside a frame: that connection is closed, nothing answered.
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", archive.hl7_port))
        .await
        .expect("connect");
    raw.write_all(b"MSH|^~\\&|no|frame\r").await.expect("write");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), raw.read(&mut buf))
        .await
        .expect("closed, not left hanging")
        .unwrap_or(0);
    assert_eq!(n, 0);

    // An oversized message is refused, and the connection goes on.
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", archive.hl7_port))
        .await
        .expect("connect");
    let big = format!(
        "\x0bMSH|^~\\&|RIS|H|T|R|20260101||ADT^A08|BIG-1|P|2.5\rNTE|1||{}\r\x1c\r",
        "x".repeat(10_000)
    );
    raw.write_all(big.as_bytes()).await.expect("write");
    let nak = read_frame(&mut raw).await;
    assert!(nak.contains("MSA|AR|BIG-1|"), "{nak}");
    assert!(nak.contains("10"), "{nak}");
    let good = std::fs::read_to_string(corpus("a31_pham.hl7"))
        .expect("corpus")
        .replace('\n', "\r");
    raw.write_all(format!("\x0b{good}\x1c\r").as_bytes())
        .await
        .expect("write");
    assert!(read_frame(&mut raw).await.contains("MSA|AA|A31-0001|"));
}

async fn read_frame(stream: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.ends_with(b"\x1c\r") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(
            n > 0,
            "closed before answering: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

on_both_backends!(adt_updates_merges_and_repeats, refusals_say_why);

/// Write `count` admit messages, patient `DUR{n}`, control ID `DUR-{n}`.
fn admits(dir: &Path, count: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).expect("dir");
    (0..count)
        .map(|n| {
            let path = dir.join(format!("{n:04}.hl7"));
            let text = format!(
                "MSH|^~\\&|HIS|H|TESSERA|R|20261201000000||ADT^A01^ADT_A01|DUR-{n}|P|2.5||||||UNICODE UTF-8\n\
                 PID|1||DUR{n}^^^H^MR||Đặng^Văn {n}||19700101|M\n"
            );
            std::fs::write(&path, text).expect("write");
            path
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_message_survives_kill_9() {
    if !hl7_available("an_acknowledged_message_survives_kill_9") {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let files = admits(&dir.path().join("msgs"), 400);
    let server = ServerProcess::spawn(&data, &[]).await;
    let acked_log = dir.path().join("acked.txt");
    let port = server.hl7_port.to_string();
    let mut args: Vec<String> = vec![
        common::peers_dir()
            .join("mllp_send.py")
            .to_string_lossy()
            .into_owned(),
        port,
        "--connections".into(),
        "4".into(),
        "--ack-log".into(),
        acked_log.to_string_lossy().into_owned(),
    ];
    args.extend(files.iter().map(|f| f.to_string_lossy().into_owned()));
    let sender = tokio::process::Command::new("python3")
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("sender starts");
    let mut acked = 0;
    for _ in 0..600 {
        acked = std::fs::read_to_string(&acked_log).map_or(0, |s| s.lines().count());
        if acked >= 60 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(acked >= 60, "only {acked} messages acknowledged");
    server.kill9().await;
    let _ = sender.wait_with_output().await;
    let acked: Vec<String> = std::fs::read_to_string(&acked_log)
        .expect("ack log")
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(acked.len() < 400, "the kill came too late to test anything");

    let server = ServerProcess::spawn(&data, &[]).await;
    for control in &acked {
        let n = control.trim_start_matches("DUR-");
        let (status, body) =
            common::http_get(server.http_port, &format!("/api/v1/patients/DUR{n}"), &[]).await;
        assert_eq!(
            status, 200,
            "{control} was acknowledged but is missing: {body}"
        );
        assert!(body.contains(&format!("Đặng^Văn {n}")), "{body}");
    }
    assert!(server.terminate().await.success());
}
