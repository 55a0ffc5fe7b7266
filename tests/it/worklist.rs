//! Modality Worklist C-FIND against items scheduled by HL7 orders: DCMTK
//! `findscu -W` with query files made by `dump2dcm` (a date range, an empty
//! sequence, a station AE title) and pynetdicom as a second client. Names
//! come back in UTF-8 under ISO_IR 192.

use crate::common;

use std::path::{Path, PathBuf};

use common::{dcmtk, python, run_peer, skip, Archive, Backend};
use dicom_dictionary_std::tags;
use dicom_object::{open_file, DefaultDicomObject};
use serde_json::Value;

fn tools(test: &str) -> bool {
    let hl7 = std::process::Command::new("python3")
        .args(["-c", "import hl7"])
        .output()
        .is_ok_and(|o| o.status.success());
    let ok = python().is_some() && hl7 && dcmtk("findscu").is_some() && dcmtk("dump2dcm").is_some();
    if !ok {
        skip(test, "pynetdicom, hl7, findscu or dump2dcm missing");
    }
    ok
}

async fn schedule(archive: &Archive) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hl7");
    let port = archive.hl7_port.to_string();
    let files: Vec<String> = ["orm_o01_new.hl7", "omi_o23_two_ipc.hl7"]
        .iter()
        .map(|f| dir.join(f).to_string_lossy().into_owned())
        .collect();
    let out = run_peer("mllp_send.py", &[&port, &files[0], &files[1]]).await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(out.status.success(), "{report}");
    for r in report["results"].as_array().cloned().unwrap_or_default() {
        assert_eq!(r["code"], "AA", "{r}");
    }
}

/// `findscu -W` with the query `dump`; every response read back.
async fn findscu(archive: &Archive, dump: &str) -> (Vec<DefaultDicomObject>, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let query_dump = dir.path().join("query.dump");
    let query = dir.path().join("query.wl");
    std::fs::write(&query_dump, dump).expect("write dump");
    let made = tokio::process::Command::new(dcmtk("dump2dcm").expect("checked"))
        .arg(&query_dump)
        .arg(&query)
        .output()
        .await
        .expect("dump2dcm runs");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let out_dir = dir.path().join("out");
    std::fs::create_dir_all(&out_dir).expect("dir");
    let out = tokio::process::Command::new(dcmtk("findscu").expect("checked"))
        .args(["-v", "-W", "-X", "-od"])
        .arg(&out_dir)
        .args(archive.ae_args())
        .arg(&query)
        .env("TCP_NODELAY", "1")
        .output()
        .await
        .expect("findscu runs");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{log}");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&out_dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let responses = files
        .iter()
        .map(|f| open_file(f).expect("response parses"))
        .collect();
    (responses, log)
}

fn text(obj: &dicom_object::InMemDicomObject, tag: dicom_core::Tag) -> String {
    obj.element(tag)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_owned())
        .unwrap_or_default()
}

fn step(obj: &DefaultDicomObject) -> dicom_object::InMemDicomObject {
    obj.element(tags::SCHEDULED_PROCEDURE_STEP_SEQUENCE)
        .ok()
        .and_then(|e| e.items())
        .and_then(|items| items.first().cloned())
        .expect("a Scheduled Procedure Step item")
}

const HEADER: &str = "(0008,0005) CS [ISO_IR 192]\n(0010,0010) PN []\n(0010,0020) LO []\n\
    (0008,0050) SH []\n(0020,000d) UI []\n(0040,1001) SH []\n";

async fn worklist_queries(backend: Backend) {
    if !tools("worklist_queries") {
        return;
    }
    let archive = Archive::start(backend).await;
    schedule(&archive).await;

    // CT steps on two days: the ORM's CT and the OMI's CT.
    let (found, log) = findscu(
        &archive,
        &format!(
            "{HEADER}(0040,0100) SQ\n(fffe,e000) -\n(0008,0060) CS [CT]\n(0040,0001) AE []\n\
             (0040,0002) DA [20261205-20261206]\n(0040,0003) TM []\n(0040,0009) SH []\n\
             (0040,0020) CS []\n(fffe,e00d) -\n(fffe,e0dd) -\n"
        ),
    )
    .await;
    assert_eq!(found.len(), 2, "{log}");
    let mut accessions: Vec<String> = found
        .iter()
        .map(|r| text(r, tags::ACCESSION_NUMBER))
        .collect();
    accessions.sort();
    assert_eq!(accessions, ["ACC1001", "ACC3001"]);
    let ct = found
        .iter()
        .find(|r| text(r, tags::ACCESSION_NUMBER) == "ACC1001")
        .expect("ACC1001");
    assert_eq!(text(ct, tags::SPECIFIC_CHARACTER_SET), "ISO_IR 192");
    assert_eq!(text(ct, tags::PATIENT_NAME), "Hoàng^Văn Thái");
    assert_eq!(text(ct, tags::REQUESTED_PROCEDURE_ID), "RP1001");
    let sps = step(ct);
    assert_eq!(text(&sps, tags::MODALITY), "CT");
    assert_eq!(text(&sps, tags::SCHEDULED_STATION_AE_TITLE), "CT01\\CT02");
    assert_eq!(
        text(&sps, tags::SCHEDULED_PROCEDURE_STEP_START_DATE),
        "20261205"
    );
    assert_eq!(
        text(&sps, tags::SCHEDULED_PROCEDURE_STEP_START_TIME),
        "093000"
    );
    assert_eq!(text(&sps, tags::SCHEDULED_PROCEDURE_STEP_ID), "SPS1001");
    assert_eq!(
        text(&sps, tags::SCHEDULED_PROCEDURE_STEP_STATUS),
        "SCHEDULED"
    );
    // Only what was asked: no description in this item.
    assert!(sps
        .element(tags::SCHEDULED_PROCEDURE_STEP_DESCRIPTION)
        .is_err());

    // An empty sequence and a name with a wildcard, as many modalities ask.
    let (found, log) = findscu(
        &archive,
        "(0008,0005) CS [ISO_IR 192]\n(0010,0010) PN [vu*]\n(0010,0020) LO []\n\
         (0040,0100) SQ\n(fffe,e0dd) -\n",
    )
    .await;
    assert_eq!(found.len(), 2, "{log}");
    for r in &found {
        assert_eq!(text(r, tags::PATIENT_NAME), "Vũ^Thị Mai");
        let sps = step(r);
        assert!(["CT", "PT"].contains(&text(&sps, tags::MODALITY).as_str()));
        assert_eq!(
            text(&sps, tags::SCHEDULED_PROCEDURE_STEP_DESCRIPTION),
            "PET-CT whole body"
        );
    }

    // One station AE title among several.
    let (found, log) = findscu(
        &archive,
        &format!("{HEADER}(0040,0100) SQ\n(fffe,e000) -\n(0040,0001) AE [PETCT2]\n(0008,0060) CS []\n(fffe,e00d) -\n(fffe,e0dd) -\n"),
    )
    .await;
    assert_eq!(found.len(), 1, "{log}");
    assert_eq!(text(&step(&found[0]), tags::MODALITY), "PT");

    // pynetdicom as a second client.
    let port = archive.dicom_port.to_string();
    let out = run_peer("mwl_find.py", &[&port, "--modality", "MR"]).await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(out.status.success(), "{report}");
    assert_eq!(report["final"], 0, "{report}");
    let matches = report["matches"].as_array().cloned().unwrap_or_default();
    assert_eq!(matches.len(), 1, "{report}");
    assert_eq!(matches[0]["AccessionNumber"], "ACC1002");
    assert_eq!(matches[0]["PatientName"], "Hoàng^Văn Thái");
    assert_eq!(matches[0]["Status"], "SCHEDULED");
    // Date and time combine into one span: 5 Dec 10:00 to 6 Dec 09:00
    // holds the MR step (5 Dec 11:00) and both PET-CT steps (6 Dec 08:00),
    // not the CT step (5 Dec 09:30). Separate ranges would match nothing.
    let accessions = |report: &Value| {
        let mut found: Vec<String> = report["matches"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|m| m["AccessionNumber"].as_str().unwrap_or("").to_owned())
            .collect();
        found.sort();
        found
    };
    let out = run_peer(
        "mwl_find.py",
        &[&port, "--date", "20261205-20261206", "--time", "1000-0900"],
    )
    .await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(
        accessions(&report),
        ["ACC1002", "ACC3001", "ACC3001"],
        "{report}"
    );
    // A modality registered for ISO_IR 100 gets Latin-1: "ă" loses its
    // breve, "à" and "á" stay.
    register_modality(&archive, r#""worklist_charset":"ISO_IR 100""#).await;
    let out = run_peer("mwl_find.py", &[&port, "--modality", "MR"]).await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(
        report["matches"][0]["CharacterSet"], "ISO_IR 100",
        "{report}"
    );
    assert_eq!(
        report["matches"][0]["PatientName"], "Hoàng^Van Thái",
        "{report}"
    );
    let (status, _) = common::http_request(
        archive.http_port,
        "DELETE",
        "/api/v1/peers/MODALITY1",
        None,
        &[],
    )
    .await;
    assert!(status < 300);
    // A time with no date bounds the time of day.
    let out = run_peer("mwl_find.py", &[&port, "--time", "-0900"]).await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(accessions(&report), ["ACC3001", "ACC3001"], "{report}");
    let out = run_peer("mwl_find.py", &[&port, "--date", "20270101-"]).await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(
        report["matches"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );
}

/// Register MODALITY1 (the calling AE of the Python peers) with the extra
/// JSON fields `fields`.
async fn register_modality(archive: &Archive, fields: &str) {
    let peer = format!(r#"{{"ae_title":"MODALITY1","host":"127.0.0.1","port":104,{fields}}}"#);
    let (status, body) = common::http_request(
        archive.http_port,
        "PUT",
        "/api/v1/peers/MODALITY1",
        Some(&peer),
        &[("Content-Type", "application/json")],
    )
    .await;
    assert!(status == 200 || status == 201, "{status} {body}");
}

async fn mpps(port: u16, args: &[&str]) -> i64 {
    let port = port.to_string();
    let mut all = vec![port.as_str()];
    all.extend_from_slice(args);
    let out = run_peer("mpps.py", &all).await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(out.status.success(), "mpps.py {args:?}: {report}");
    report["status"].as_i64().unwrap_or(-1)
}

async fn step_status(archive: &Archive, query: &str) -> String {
    let (_, body) = archive
        .http_get(&format!("/api/v1/worklist{query}"), &[])
        .await;
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    body["items"][0]["status"].as_str().unwrap_or("").to_owned()
}

/// N-CREATE and N-SET, each on its own association, move the worklist
/// step they name; a final step refuses another N-SET with 0110.
async fn performed_steps_follow_the_worklist(backend: Backend) {
    if !tools("performed_steps_follow_the_worklist") {
        return;
    }
    let archive = Archive::start(backend).await;
    schedule(&archive).await;
    let port = archive.dicom_port;
    let ct = "?accession=ACC3001&modality=CT";
    assert_eq!(step_status(&archive, ct).await, "SCHEDULED");
    let uid = "1.2.826.0.1.3680043.10.1.9001";
    let create = [
        "create",
        uid,
        "--step",
        "SPS3001-CT",
        "--accession",
        "ACC3001",
        "--study",
        "1.2.826.0.1.3680043.10.1.3001",
    ];
    assert_eq!(mpps(port, &create).await, 0);
    assert_eq!(step_status(&archive, ct).await, "STARTED");
    assert_eq!(
        mpps(port, &create).await,
        0x0111,
        "a second N-CREATE is a duplicate"
    );
    let done = ["set", uid, "--status", "COMPLETED", "--series", "1.2.3.4.5"];
    assert_eq!(mpps(port, &done).await, 0);
    assert_eq!(step_status(&archive, ct).await, "COMPLETED");
    assert_eq!(mpps(port, &done).await, 0x0110, "no change after COMPLETED");
    assert_eq!(
        mpps(
            port,
            &[
                "set",
                "1.2.826.0.1.3680043.10.1.9999",
                "--status",
                "COMPLETED"
            ]
        )
        .await,
        0x0112
    );
    // Unscheduled: no worklist step matches; kept, and discontinued.
    let lone = "1.2.826.0.1.3680043.10.1.9002";
    assert_eq!(mpps(port, &["create", lone, "--step", "NOPE"]).await, 0);
    assert_eq!(
        mpps(port, &["set", lone, "--status", "DISCONTINUED"]).await,
        0
    );
    let (_, body) = archive.http_get("/api/v1/mpps", &[]).await;
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let steps = body["performed_steps"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(steps.len(), 2, "{body}");
    let lone = steps
        .iter()
        .find(|s| s["sop_instance_uid"] == lone)
        .expect("unscheduled kept");
    assert_eq!(lone["scheduled"], false);
    assert_eq!(lone["status"], "DISCONTINUED");
    assert_eq!(
        lone["discontinue_reason"],
        "110514^DCM^Incorrect worklist entry selected"
    );
    let done = steps
        .iter()
        .find(|s| s["sop_instance_uid"] == uid)
        .expect("scheduled one");
    assert_eq!(done["performed_series"], serde_json::json!(["1.2.3.4.5"]));
    // The PET step of the same order was not touched.
    assert_eq!(
        step_status(&archive, "?accession=ACC3001&modality=PT").await,
        "SCHEDULED"
    );
    // A step performed before its order: matched when the order comes.
    let late = "1.2.826.0.1.3680043.10.1.9003";
    assert_eq!(mpps(port, &["create", late, "--step", "SPS-LATE"]).await, 0);
    assert_eq!(mpps(port, &["set", late, "--status", "COMPLETED"]).await, 0);
    let order = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hl7/orm_o01_after_mpps.hl7");
    let hl7 = archive.hl7_port.to_string();
    let out = run_peer("mllp_send.py", &[&hl7, order.to_str().expect("utf-8")]).await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(report["results"][0]["code"], "AA", "{report}");
    assert_eq!(
        step_status(&archive, "?accession=ACC4001").await,
        "COMPLETED"
    );
    let (_, body) = archive.http_get("/api/v1/mpps", &[]).await;
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let matched = body["performed_steps"]
        .as_array()
        .and_then(|steps| {
            steps
                .iter()
                .find(|s| s["sop_instance_uid"] == late)
                .cloned()
        })
        .expect("late step listed");
    assert_eq!(matched["scheduled"], true, "{matched}");
    // A registered modality without the mpps service is refused.
    register_modality(&archive, r#""services":["store","find"]"#).await;
    let refused = "1.2.826.0.1.3680043.10.1.9004";
    assert_eq!(
        mpps(port, &["create", refused, "--step", "SPS3001-PT"]).await,
        0x0124
    );
}

/// The test's RIS: `mllp_listen.py`, logging each message it acknowledges.
struct RisListener {
    child: tokio::process::Child,
    port: u16,
    log: PathBuf,
}

impl RisListener {
    /// Listen on `port` (0 for any), answering every message with `answer`.
    async fn start(dir: &Path, port: u16, answer: &str) -> Self {
        let port_file = dir.join(format!("port-{port}-{answer}"));
        let log = dir.join("received.jsonl");
        let child = tokio::process::Command::new("python3")
            .arg(common::peers_dir().join("mllp_listen.py"))
            .arg(&port_file)
            .arg(&log)
            .args(["--port", &port.to_string(), "--answer", answer])
            .kill_on_drop(true)
            .spawn()
            .expect("mllp_listen.py starts");
        for _ in 0..200 {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                if let Ok(port) = text.trim().parse() {
                    return RisListener { child, port, log };
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("mllp_listen.py did not start listening");
    }

    async fn stop(mut self) {
        self.child.kill().await.expect("kill listener");
    }
}

/// Every message the RIS has logged.
fn received(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("log line is JSON"))
        .collect()
}

/// The outbound queue as the API shows it, in `state`.
async fn outbound(archive: &Archive, state: &str) -> Vec<Value> {
    let (status, body) = archive
        .http_get(&format!("/api/v1/hl7/outbound?state={state}"), &[])
        .await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON");
    body["messages"].as_array().cloned().unwrap_or_default()
}

/// Wait (bounded) until the RIS has logged `n` messages and nothing is
/// left to send.
async fn wait_delivered(archive: &Archive, log: &Path, n: usize) -> Vec<Value> {
    for _ in 0..300 {
        let got = received(log);
        if got.len() >= n && outbound(archive, "pending").await.is_empty() {
            return got;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "the RIS got {:?}, pending {:?}",
        received(log),
        outbound(archive, "pending").await
    );
}

/// Store one instance of the PET-CT order's study with storescu.
async fn store_order_study(archive: &Archive, dir: &Path) {
    let files = dir.join("study3001");
    let out = run_peer(
        "gen.py",
        &[
            files.to_str().expect("utf-8"),
            "--count",
            "1",
            "--study-uid",
            "1.2.826.0.1.3680043.10.1.3001",
            "--accession",
            "ACC3001",
            "--patient-id",
            "PID22-0",
            "--patient-name",
            "Vũ^Thị Mai",
        ],
    )
    .await;
    assert!(out.status.success());
    let port = archive.dicom_port.to_string();
    let out = run_peer(
        "send.py",
        &["127.0.0.1", &port, files.to_str().expect("utf-8")],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The RIS is told, in order: the application acknowledgement it asked
/// for, the study's arrival, and each MPPS state. With the RIS down, the
/// messages wait in the queue across a restart and arrive exactly once.
async fn the_ris_hears_of_each_step_exactly_once(backend: Backend) {
    if !tools("the_ris_hears_of_each_step_exactly_once") {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let ris = RisListener::start(dir.path(), 0, "AA").await;
    let (ris_port, log) = (ris.port, ris.log.clone());
    let mut archive = Archive::start_with(backend, |raw| {
        raw.hl7.outbound = Some(tessera::config::RawHl7Outbound {
            address: Some(format!("127.0.0.1:{ris_port}")),
            message: Some("OMI^O23".into()),
            ack_timeout_secs: Some(5),
            max_backoff_secs: Some(1),
            ..Default::default()
        });
    })
    .await;
    schedule(&archive).await;
    // Enhanced mode: CA on the connection, AA to the RIS.
    let adt = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hl7/adt_a08_enhanced.hl7");
    let port = archive.hl7_port.to_string();
    let out = run_peer("mllp_send.py", &[&port, adt.to_str().expect("utf-8")]).await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(report["results"][0]["code"], "CA", "{report}");
    store_order_study(&archive, dir.path()).await;
    let ct = "1.2.826.0.1.3680043.10.1.9101";
    let create = |uid: &'static str, step: &'static str| {
        [
            "create",
            uid,
            "--step",
            step,
            "--accession",
            "ACC3001",
            "--study",
            "1.2.826.0.1.3680043.10.1.3001",
        ]
    };
    let dicom = archive.dicom_port;
    assert_eq!(mpps(dicom, &create(ct, "SPS3001-CT")).await, 0);
    assert_eq!(mpps(dicom, &["set", ct, "--status", "COMPLETED"]).await, 0);
    let got = wait_delivered(&archive, &log, 4).await;
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got[0]["type"], "ACK");
    assert_eq!(got[0]["msa1"], "AA");
    assert_eq!(got[0]["msa2"], "ENH-0001");
    let states: Vec<(&str, &str)> = got[1..]
        .iter()
        .map(|m| {
            (
                m["orc1"].as_str().unwrap_or(""),
                m["orc5"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        states,
        [("SC", "IP"), ("SC", "IP"), ("SC", "CM")],
        "{got:?}"
    );
    for m in &got[1..] {
        assert_eq!(m["type"], "OMI");
        assert_eq!(m["placer"], "PL3001");
        assert_eq!(m["filler"], "FL3001");
        assert_eq!(m["accession"], "ACC3001");
        assert_eq!(m["patient_id"], "PID22-0");
        assert_eq!(m["patient_name"], "Vũ", "UTF-8 names reach the RIS");
    }

    // The RIS goes down; the PET step starts and is discontinued.
    ris.stop().await;
    let pt = "1.2.826.0.1.3680043.10.1.9102";
    assert_eq!(mpps(dicom, &create(pt, "SPS3001-PT")).await, 0);
    assert_eq!(
        mpps(dicom, &["set", pt, "--status", "DISCONTINUED"]).await,
        0
    );
    let mut tried = false;
    for _ in 0..100 {
        let pending = outbound(&archive, "pending").await;
        if pending.len() == 2 && pending.iter().any(|m| m["attempts"].as_i64() > Some(0)) {
            tried = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(tried, "{:?}", outbound(&archive, "pending").await);
    archive.restart().await;
    let ris = RisListener::start(dir.path(), ris_port, "AA").await;
    let got = wait_delivered(&archive, &log, 6).await;
    let orc5: Vec<&str> = got
        .iter()
        .map(|m| m["orc5"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(orc5, ["", "IP", "IP", "CM", "IP", "DC"], "{got:?}");
    let mut ids: Vec<&str> = got
        .iter()
        .map(|m| m["control_id"].as_str().unwrap_or(""))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 6, "each message once: {got:?}");
    assert_eq!(outbound(&archive, "done").await.len(), 6);
    ris.stop().await;
}

/// A message the RIS refuses is kept as failed, the ones after it still
/// go, and an operator can send it again.
async fn a_refused_message_waits_for_an_operator(backend: Backend) {
    if !tools("a_refused_message_waits_for_an_operator") {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let ris = RisListener::start(dir.path(), 0, "AR").await;
    let ris_port = ris.port;
    let archive = Archive::start_with(backend, |raw| {
        raw.hl7.outbound = Some(tessera::config::RawHl7Outbound {
            address: Some(format!("127.0.0.1:{ris_port}")),
            max_backoff_secs: Some(1),
            ..Default::default()
        });
    })
    .await;
    schedule(&archive).await;
    let uid = "1.2.826.0.1.3680043.10.1.9201";
    let create = [
        "create",
        uid,
        "--step",
        "SPS3001-CT",
        "--accession",
        "ACC3001",
    ];
    assert_eq!(mpps(archive.dicom_port, &create).await, 0);
    assert_eq!(
        mpps(archive.dicom_port, &["set", uid, "--status", "COMPLETED"]).await,
        0
    );
    let got = wait_delivered(&archive, &ris.log, 2).await;
    assert_eq!(got.len(), 2, "the second message is not held up: {got:?}");
    assert_eq!(got[0]["type"], "ORM", "ORM^O01 is the default");
    let failed = outbound(&archive, "failed").await;
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(failed.iter().all(|m| m["ack_code"] == "AR"));
    ris.stop().await;
    let ris = RisListener::start(dir.path(), ris_port, "AA").await;
    let id = failed[0]["id"].as_i64().expect("id");
    let (status, body) = common::http_request(
        archive.http_port,
        "POST",
        &format!("/api/v1/hl7/outbound/{id}/retry"),
        None,
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let got = wait_delivered(&archive, &ris.log, 3).await;
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(outbound(&archive, "failed").await.len(), 1);
    let (_, metrics) = archive.http_get("/metrics", &[]).await;
    assert!(
        metrics.contains(r#"tessera_hl7_outbound_total{code="AR"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"tessera_hl7_outbound_total{code="AA"} 1"#),
        "{metrics}"
    );
    ris.stop().await;
}

on_both_backends!(
    worklist_queries,
    performed_steps_follow_the_worklist,
    the_ris_hears_of_each_step_exactly_once,
    a_refused_message_waits_for_an_operator
);
