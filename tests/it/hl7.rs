//! HL7 v2 over MLLP against the Python `hl7` package's client: ADT
//! messages create, update, merge and re-identify patients, C-FIND and
//! QIDO follow at once, duplicates are answered from the journal, bad
//! messages are refused with the reason, bad framing closes only its own
//! connection, and an acknowledged message survives kill -9.

use crate::common;

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
    ok && dcmtk("findscu").is_some() && dcmtk("getscu").is_some()
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

/// Every instance of `study`, fetched with DCMTK `getscu` and read back.
async fn c_get(archive: &Archive, study: &str) -> Vec<dicom_object::DefaultDicomObject> {
    let dir = tempfile::tempdir().expect("tmp");
    let out = tokio::process::Command::new(dcmtk("getscu").expect("checked"))
        .args(["-S", "-k", "QueryRetrieveLevel=STUDY"])
        .args(["-k", &format!("StudyInstanceUID={study}")])
        .arg("-od")
        .arg(dir.path())
        .args(archive.ae_args())
        .env("TCP_NODELAY", "1")
        .output()
        .await
        .expect("getscu runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let objects: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| dicom_object::open_file(e.expect("entry").path()).expect("a DICOM file"))
        .collect();
    assert_eq!(objects.len(), 2, "both instances retrieved");
    objects
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
    // Images that come after the RIS named the patient do not rename it.
    store_study(&archive, 7).await;
    let (_, nguyen) = json(&archive, "/api/v1/patients/PID7-0").await;
    assert_eq!(nguyen["name"], "Nguyễn^Thị Minh Khai^^Mrs");
    assert_eq!(nguyen["num_studies"], 1);
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
    // Retrieved copies carry the surviving patient (coercion on retrieve):
    // C-GET with DCMTK, and the WADO-RS metadata.
    for study in &qido {
        let uid = study["0020000D"]["Value"][0].as_str().expect("study UID");
        for object in c_get(&archive, uid).await {
            let text = |tag| {
                object
                    .element(tag)
                    .ok()
                    .and_then(|e| e.to_str().ok())
                    .map(|s| s.trim_end().to_owned())
                    .unwrap_or_default()
            };
            assert_eq!(text(dicom_dictionary_std::tags::PATIENT_ID), "PID8-0");
            assert_eq!(
                text(dicom_dictionary_std::tags::PATIENT_NAME),
                "Trần^Quốc Tuấn"
            );
        }
        let (status, metadata) =
            json(&archive, &format!("/dicom-web/studies/{uid}/metadata")).await;
        assert_eq!(status, 200);
        let documents = metadata.as_array().cloned().unwrap_or_default();
        assert_eq!(documents.len(), 2);
        for doc in &documents {
            assert_eq!(doc["00100020"]["Value"][0], "PID8-0");
            assert_eq!(patient_name(doc), "Trần^Quốc Tuấn");
        }
    }
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

async fn worklist(archive: &Archive, query: &str) -> Vec<Value> {
    let (status, body) = json(archive, &format!("/api/v1/worklist{query}")).await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().cloned().unwrap_or_default()
}

async fn orders_schedule_the_worklist(backend: Backend) {
    if !hl7_available("orders_schedule_the_worklist") {
        return;
    }
    let archive = Archive::start(backend).await;
    let acks = send(
        archive.hl7_port,
        &["orm_o01_new.hl7", "omi_o23_two_ipc.hl7"],
        &[],
    )
    .await;
    assert_eq!(acks.iter().map(code).collect::<Vec<_>>(), [("AA", ""); 2]);
    // Every ORC/OBR group of the ORM, every IPC of the OMI.
    let items = worklist(&archive, "").await;
    assert_eq!(items.len(), 4, "{items:?}");
    let ct = &worklist(&archive, "?accession=ACC1001").await[0];
    assert_eq!(ct["patient_id"], "PID20-0");
    assert_eq!(ct["patient_name"], "Hoàng^Văn Thái");
    assert_eq!(ct["placer_order"], "PL1001");
    assert_eq!(ct["filler_order"], "FL1001");
    assert_eq!(ct["requested_procedure_id"], "RP1001");
    assert_eq!(ct["scheduled_step_id"], "SPS1001");
    assert_eq!(
        ct["requested_procedure_code"],
        "CTCHEST^LOCAL^CT Chest with contrast"
    );
    assert_eq!(
        ct["requested_procedure_description"],
        "CT Chest with contrast"
    );
    assert_eq!(ct["modality"], "CT");
    assert_eq!(ct["station_ae_titles"], serde_json::json!(["CT01", "CT02"]));
    assert_eq!(
        (ct["start_date"].as_str(), ct["start_time"].as_str()),
        (Some("20261205"), Some("093000"))
    );
    assert_eq!(ct["priority"], "ROUTINE");
    assert_eq!(ct["requesting_physician"], "Lê^Thị Hồng");
    assert_eq!(ct["performing_physician"], "Phan^Minh");
    assert_eq!(ct["reason"], "Suspected nodule");
    assert_eq!(ct["status"], "SCHEDULED");
    let uid = ct["study_instance_uid"].as_str().unwrap_or("").to_owned();
    assert!(
        uid.starts_with("2.25."),
        "a UID is made for an order without one: {uid}"
    );
    let pet = worklist(&archive, "?station=PETCT2").await;
    assert_eq!(pet.len(), 1);
    assert_eq!(pet[0]["modality"], "PT");
    assert_eq!(
        pet[0]["study_instance_uid"],
        "1.2.826.0.1.3680043.10.1.3001"
    );
    assert_eq!(pet[0]["start_date"], "20261206");
    assert_eq!(
        worklist(&archive, "?modality=CT&from=20261206&to=20261206")
            .await
            .len(),
        1
    );

    // A change moves the time and keeps the study; a cancel ends a step.
    let acks = send(
        archive.hl7_port,
        &["orm_o01_change.hl7", "orm_o01_cancel.hl7"],
        &[],
    )
    .await;
    assert_eq!(
        acks.iter().map(code).collect::<Vec<_>>(),
        [("AA", ""); 2],
        "{acks:?}"
    );
    let ct = &worklist(&archive, "?accession=ACC1001").await[0];
    assert_eq!(ct["start_time"], "140000");
    assert_eq!(ct["study_instance_uid"].as_str(), Some(uid.as_str()));
    assert_eq!(
        worklist(&archive, "?accession=ACC1002").await[0]["status"],
        "CANCELED"
    );
    assert_eq!(worklist(&archive, "?status=SCHEDULED").await.len(), 3);

    // An order for a study whose images came first: the study takes its
    // accession number. Its cancel then conflicts and deletes nothing.
    store_study(&archive, 21).await;
    let (_, studies) = json(&archive, "/dicom-web/studies?PatientID=PID21-0").await;
    let study_uid = studies[0]["0020000D"]["Value"][0]
        .as_str()
        .expect("study")
        .to_owned();
    let dir = tempfile::tempdir().expect("tmp");
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.to_string_lossy().into_owned()
    };
    let header = "MSH|^~\\&|RIS|GENERAL HOSPITAL|TESSERA|RADIOLOGY|20261204180000||ORM^O01|";
    let late = write(
        "late.hl7",
        format!(
            "{header}LATE-1|P|2.5\nPID|1||PID21-0^^^GENERAL^MR||Nguyen^Van\n\
             ORC|NW|PL4001|FL4001||SC\nOBR|1|PL4001|FL4001|XR^Chest X-ray||||||||||||||ACC4001\n\
             ZDS|{study_uid}^^Application^DICOM\n"
        ),
    );
    let cancel = write(
        "late-cancel.hl7",
        format!("{header}LATE-2|P|2.5\nPID|1||PID21-0^^^GENERAL^MR\nORC|CA|PL4001|FL4001||CA\n"),
    );
    let acks = send(archive.hl7_port, &[late.as_str(), cancel.as_str()], &[]).await;
    assert_eq!(code(&acks[0]), ("AA", ""));
    let (_, studies) = json(&archive, "/dicom-web/studies?PatientID=PID21-0").await;
    assert_eq!(studies[0]["00080050"]["Value"][0], "ACC4001");
    assert_eq!(code(&acks[1]).0, "AE", "{}", acks[1]);
    assert!(acks[1]["ack"].as_str().unwrap_or("").contains("kept"));
    let (_, conflicts) = json(&archive, "/api/v1/worklist/conflicts").await;
    assert_eq!(
        conflicts["conflicts"][0]["placer_order"], "PL4001",
        "{conflicts}"
    );
    assert_eq!(
        studies_of(&archive, "PID21-0").await.0,
        1,
        "the images stay"
    );
    assert_eq!(
        worklist(&archive, "?accession=ACC4001").await[0]["status"],
        "SCHEDULED"
    );

    // A site without a RIS schedules through the API, with the same checks.
    let item = serde_json::json!({
        "patient": {"id": "WALKIN-1", "name": "Bùi^Thị Thu", "birth_date": "19900101", "sex": "F"},
        "step": {"accession_number": "ACC9001", "modality": "US", "start_date": "20261207",
                 "start_time": "0900", "station_ae_titles": ["US01"]}
    });
    let post = |path: &'static str, body: String| {
        let port = archive.http_port;
        async move { common::http_request(port, "POST", path, Some(&body), &[]).await }
    };
    let (status, body) = post("/api/v1/worklist", item.to_string()).await;
    assert_eq!(status, 201, "{body}");
    let mut bad = item.clone();
    bad["step"]["start_date"] = "20261345".into();
    assert_eq!(post("/api/v1/worklist", bad.to_string()).await.0, 400);
    let walk_in = &worklist(&archive, "?patient=WALKIN-1").await[0];
    assert_eq!(walk_in["patient_name"], "Bùi^Thị Thu");
    let id = walk_in["id"].as_i64().expect("id");
    let (status, _) = common::http_request(
        archive.http_port,
        "POST",
        &format!("/api/v1/worklist/{id}/status"),
        Some(r#"{"status":"CANCELED"}"#),
        &[],
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(
        worklist(&archive, "?patient=WALKIN-1").await[0]["status"],
        "CANCELED"
    );

    // A merge takes the prior patient's scheduled steps along.
    let merge = write(
        "merge.hl7",
        "MSH|^~\\&|HIS|H|TESSERA|R|20261204190000||ADT^A40^ADT_A39|MERGE-1|P|2.5\n\
         PID|1||PID22-0^^^GENERAL^MR||Vu^Thi Mai\nMRG|PID20-0^^^GENERAL^MR\n"
            .into(),
    );
    assert_eq!(
        code(&send(archive.hl7_port, &[merge.as_str()], &[]).await[0]),
        ("AA", "")
    );
    let moved = worklist(&archive, "?patient=PID22-0").await;
    assert_eq!(
        moved.len(),
        4,
        "the OMI's two steps and the ORM's two: {moved:?}"
    );
    assert!(worklist(&archive, "?patient=PID20-0").await.is_empty());
}

/// An ORU^R01 report for `accession`: one OBR (status `status`) and two
/// text OBX, the first with escapes.
fn report(control: &str, accession: &str, status: &str, impression: &str) -> String {
    let mut obr = vec![""; 33];
    obr[0] = "OBR";
    obr[1] = "1";
    obr[2] = "PL5001";
    obr[3] = "FL5001";
    obr[4] = "CT^CT Chest^LOCAL";
    obr[7] = "20261205100000";
    obr[18] = accession;
    obr[25] = status;
    obr[32] = "&Nguyễn&An";
    format!(
        "MSH|^~\\&|RIS|GENERAL HOSPITAL|TESSERA|RADIOLOGY|20261205100000||ORU^R01^ORU_R01|{control}|P|2.5||||||UNICODE UTF-8\n\
         PID|1||PID30-0^^^GENERAL^MR||Nguyen^Van||19700101|M\n\
         {}\n\
         OBX|1|TX|FIND^Findings^LOCAL||Lungs clear.\\.br\\No nodule \\T\\ no effusion.||||||{status}\n\
         OBX|2|TX|IMP^Impression^LOCAL||{impression}||||||{status}\n",
        obr.join("|")
    )
}

async fn reports_and_study_status(backend: Backend) {
    if !hl7_available("reports_and_study_status") {
        return;
    }
    let archive = Archive::start(backend).await;
    store_study(&archive, 30).await;
    let (_, studies) = json(&archive, "/dicom-web/studies?PatientID=PID30-0").await;
    let uid = studies[0]["0020000D"]["Value"][0]
        .as_str()
        .expect("uid")
        .to_owned();
    let accession = studies[0]["00080050"]["Value"][0]
        .as_str()
        .expect("accession")
        .to_owned();
    let status = |archive: &Archive, uid: String| {
        let port = archive.http_port;
        async move {
            let (code, body) =
                common::http_get(port, &format!("/api/v1/studies/{uid}/status"), &[]).await;
            let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            (code, body["status"].as_str().unwrap_or("").to_owned())
        }
    };
    assert_eq!(
        status(&archive, uid.clone()).await,
        (200, "arrived".to_owned())
    );

    let dir = tempfile::tempdir().expect("tmp");
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.to_string_lossy().into_owned()
    };
    let preliminary = write("p.hl7", report("ORU-1", &accession, "P", "Normal."));
    let acks = send(archive.hl7_port, &[preliminary.as_str()], &[]).await;
    assert_eq!(code(&acks[0]), ("AA", ""), "{}", acks[0]);
    let (_, got) = json(&archive, &format!("/api/v1/studies/{uid}/reports")).await;
    let reports = got["reports"].as_array().cloned().unwrap_or_default();
    assert_eq!(reports.len(), 1, "{got}");
    assert_eq!(reports[0]["status"], "preliminary");
    assert_eq!(
        reports[0]["body"],
        "Lungs clear.\nNo nodule & no effusion.\nNormal."
    );
    assert_eq!(reports[0]["author"], "Nguyễn^An");
    assert_eq!(status(&archive, uid.clone()).await.1, "reported");

    // The final report of the same order replaces the preliminary one.
    let final_report = write(
        "f.hl7",
        report("ORU-2", &accession, "F", "Normal chest CT."),
    );
    assert_eq!(
        code(&send(archive.hl7_port, &[final_report.as_str()], &[]).await[0]),
        ("AA", "")
    );
    let (_, got) = json(&archive, &format!("/api/v1/studies/{uid}/reports")).await;
    let reports = got["reports"].as_array().cloned().unwrap_or_default();
    assert_eq!(reports.len(), 1, "{got}");
    assert_eq!(reports[0]["status"], "final");
    assert!(reports[0]["body"]
        .as_str()
        .unwrap_or("")
        .ends_with("Normal chest CT."));
    assert_eq!(status(&archive, uid.clone()).await.1, "final");

    // A report for images not here yet is kept; a report with no OBR is not.
    assert_eq!(
        code(&send(archive.hl7_port, &["oru_r01_unlinked.hl7"], &[]).await[0]),
        ("AA", "")
    );
    assert_eq!(status(&archive, "1.2.3.999".into()).await.0, 404);
    let empty = write(
        "e.hl7",
        "MSH|^~\\&|RIS|H|T|R|20261205||ORU^R01|ORU-3|P|2.5\nPID|1||PID30-0\n".into(),
    );
    assert_eq!(
        code(&send(archive.hl7_port, &[empty.as_str()], &[]).await[0]),
        ("AE", "100")
    );
}

on_both_backends!(
    adt_updates_merges_and_repeats,
    refusals_say_why,
    orders_schedule_the_worklist,
    reports_and_study_status
);

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
