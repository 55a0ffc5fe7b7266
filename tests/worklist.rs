//! Modality Worklist C-FIND against items scheduled by HL7 orders: DCMTK
//! `findscu -W` with query files made by `dump2dcm` (a date range, an empty
//! sequence, a station AE title) and pynetdicom as a second client. Names
//! come back in UTF-8 under ISO_IR 192.

mod common;

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
    let out = run_peer("mwl_find.py", &[&port, "--date", "20270101-"]).await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(
        report["matches"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );
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
}

on_both_backends!(worklist_queries, performed_steps_follow_the_worklist);
