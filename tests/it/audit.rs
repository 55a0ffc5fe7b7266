//! The audit trail, end to end: DCMTK C-STORE, C-FIND and C-GET, QIDO,
//! WADO and STOW as logged-in users, logins, a lockout, user and peer
//! changes and an HL7 admission each leave one record with the right user
//! and patient; only auditors read `/api/v1/audit`; `tessera audit verify`
//! finds a changed and a removed record; a syslog collector over TLS gets
//! the records.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::{ct_sample, dcmtk, http_exchange, python, run_peer, skip, stow, Archive, Backend};
use serde_json::Value;
use tessera::auth::Accounts;
use tessera::model::{Role, Roles};

const PASSWORD: &str = "Corr3ct-horse";
const STUDY: &str = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322";
/// CT_small.dcm's patient.
const PATIENT: &str = "1CT1";

async fn dcmtk_ok(tool: &str, args: &[&str]) {
    let out = tokio::process::Command::new(dcmtk(tool).expect("checked"))
        .args(args)
        .env("TCP_NODELAY", "1")
        .output()
        .await
        .unwrap_or_else(|e| panic!("{tool} runs: {e}"));
    assert!(
        out.status.success(),
        "{tool}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A user with one role and an API token for it.
async fn user_with_token(accounts: &Accounts, name: &str, role: Role) -> String {
    accounts
        .add_user(name, &Roles([role].into()), PASSWORD, false, "")
        .await
        .expect("user");
    let token = accounts
        .create_token(name, "test", None, 1)
        .await
        .expect("token");
    format!("Bearer {}", token.secret)
}

async fn get(archive: &Archive, path: &str, auth: &str) -> (u16, String) {
    let rsp = http_exchange(
        "127.0.0.1",
        archive.http_port,
        "GET",
        path,
        None,
        &[("Authorization", auth)],
    )
    .await;
    (rsp.status, rsp.body)
}

async fn send(archive: &Archive, method: &str, path: &str, body: &str, auth: &str) -> u16 {
    http_exchange(
        "127.0.0.1",
        archive.http_port,
        method,
        path,
        Some(("application/json", body)),
        &[("Authorization", auth)],
    )
    .await
    .status
}

/// The records `query` selects, waiting (bounded) until at least `want`
/// are there: the trail is written a batch at a time.
async fn records(archive: &Archive, auditor: &str, query: &str, want: usize) -> Vec<Value> {
    let mut last = Vec::new();
    for _ in 0..100 {
        let (status, body) = get(archive, &format!("/api/v1/audit?{query}"), auditor).await;
        assert_eq!(status, 200, "{body}");
        let parsed: Value = serde_json::from_str(&body).expect("json");
        last = parsed["records"].as_array().cloned().unwrap_or_default();
        if last.len() >= want {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "wanted {want} records for {query}, have {}: {last:#?}",
        last.len()
    );
}

fn names(records: &[Value], field: &str) -> Vec<String> {
    records
        .iter()
        .map(|r| r[field].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn has_patient(record: &Value, patient: &str) -> bool {
    record["patients"]
        .as_array()
        .is_some_and(|p| p.iter().any(|v| v == patient))
}

/// Run `tessera audit verify` on the archive's index.
async fn verify(archive: &Archive) -> (bool, String) {
    let out = tokio::process::Command::new(common::tessera_bin())
        .arg("--data-dir")
        .arg(archive.dir.path().join("data"))
        .arg("--index-url")
        .arg(&archive.config.index_url)
        .args(["audit", "verify"])
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("tessera runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn tamper(archive: &Archive, sql: &str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&archive.config.index_url)
        .await
        .expect("index");
    sqlx::query(sql).execute(&pool).await.expect("tamper");
    pool.close().await;
}

/// Exactly `count` records of `event` by `user`, each naming `patient`.
async fn expect_records(
    archive: &Archive,
    auditor: &str,
    event: &str,
    user: &str,
    patient: Option<&str>,
    count: usize,
) -> Vec<Value> {
    let query = format!("event={event}&user={}", user.replace(' ', "%20"));
    let found = records(archive, auditor, &query, count).await;
    assert_eq!(found.len(), count, "{event} by {user}: {found:#?}");
    if let Some(patient) = patient {
        assert!(
            found.iter().all(|r| has_patient(r, patient)),
            "{event} by {user} names {patient}: {found:#?}"
        );
    }
    found
}

async fn every_access_is_recorded(backend: Backend) {
    let (Some(_), Some(_), Some(_), Some(_)) = (
        dcmtk("storescu"),
        dcmtk("findscu"),
        dcmtk("getscu"),
        python(),
    ) else {
        return skip(
            "every_access_is_recorded",
            "DCMTK storescu/findscu/getscu or python missing",
        );
    };
    let archive = Archive::start(backend).await;
    let accounts = Accounts::new(archive.index().await, Default::default());
    let admin = user_with_token(&accounts, "ada", Role::Admin).await;
    let reader = user_with_token(&accounts, "rad", Role::Radiologist).await;
    let auditor = user_with_token(&accounts, "aud", Role::Auditor).await;
    accounts
        .add_user(
            "tech",
            &Roles([Role::Technologist].into()),
            PASSWORD,
            false,
            "",
        )
        .await
        .expect("user");
    let port = archive.dicom_port.to_string();
    let sample = ct_sample().expect("pydicom's CT_small.dcm");
    let sample_arg = sample.to_str().expect("utf8");

    // DICOM: a modality stores, a workstation queries and retrieves.
    dcmtk_ok(
        "storescu",
        &[
            "-aet",
            "CT01",
            "-aec",
            "TESSERA",
            "127.0.0.1",
            &port,
            sample_arg,
        ],
    )
    .await;
    dcmtk_ok(
        "findscu",
        &[
            "-S",
            "-aet",
            "WS1",
            "-aec",
            "TESSERA",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "PatientID=1CT1",
            "-k",
            "StudyInstanceUID",
            "127.0.0.1",
            &port,
        ],
    )
    .await;
    let got = tempfile::tempdir().expect("tmp");
    dcmtk_ok(
        "getscu",
        &[
            "-S",
            "-aet",
            "WS1",
            "-aec",
            "TESSERA",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            &format!("StudyInstanceUID={STUDY}"),
            "-od",
            got.path().to_str().expect("utf8"),
            "127.0.0.1",
            &port,
        ],
    )
    .await;

    // DICOMweb as users: a search, a viewer's worth of reads (one record),
    // and a store.
    let (status, _) = get(&archive, "/dicom-web/studies?PatientID=1CT1", &reader).await;
    assert_eq!(status, 200);
    for _ in 0..3 {
        let (status, _) = get(
            &archive,
            &format!("/dicom-web/studies/{STUDY}/metadata"),
            &reader,
        )
        .await;
        assert_eq!(status, 200);
    }
    let bytes = std::fs::read(&sample).expect("sample");
    assert_eq!(
        stow(archive.http_port, &bytes, &[("Authorization", &admin)]).await,
        200
    );

    // Logins: one good, one bad, a lockout; a logout.
    let login = |name: &str, password: &str| {
        serde_json::json!({"name": name, "password": password}).to_string()
    };
    let rsp = http_exchange(
        "127.0.0.1",
        archive.http_port,
        "POST",
        "/login",
        Some(("application/json", &login("rad", PASSWORD))),
        &[],
    )
    .await;
    assert_eq!(rsp.status, 200);
    let cookie = format!(
        "tessera_session={}",
        rsp.cookie("tessera_session").expect("cookie")
    );
    let csrf = rsp.json()["csrf"].as_str().expect("csrf").to_owned();
    for _ in 0..tessera::auth::LOCK_AFTER {
        let rsp = http_exchange(
            "127.0.0.1",
            archive.http_port,
            "POST",
            "/login",
            Some(("application/json", &login("tech", "Wrong-passw0rd"))),
            &[],
        )
        .await;
        assert_eq!(rsp.status, 401);
    }
    let rsp = http_exchange(
        "127.0.0.1",
        archive.http_port,
        "POST",
        "/logout",
        None,
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
    )
    .await;
    assert_eq!(rsp.status, 303);

    // Account and peer changes by the admin; an HL7 admission.
    let new_user =
        serde_json::json!({"name": "newbie", "roles": ["radiologist"], "password": PASSWORD});
    assert_eq!(
        send(
            &archive,
            "POST",
            "/api/v1/users",
            &new_user.to_string(),
            &admin
        )
        .await,
        201
    );
    let peer = serde_json::json!({"ae_title": "ARCHIVE2", "host": "127.0.0.1", "port": 11113});
    assert_eq!(
        send(
            &archive,
            "PUT",
            "/api/v1/peers/ARCHIVE2",
            &peer.to_string(),
            &admin
        )
        .await,
        201
    );
    let message = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hl7/a01_nguyen.hl7");
    let out = run_peer(
        "mllp_send.py",
        &[
            &archive.hl7_port.to_string(),
            message.to_str().expect("utf8"),
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Only auditors (and admins) read the trail.
    let (status, _) = get(&archive, "/api/v1/audit", &reader).await;
    assert_eq!(status, 403);
    let (status, body) = get(&archive, "/api/v1/audit?event=nonsense", &auditor).await;
    assert_eq!(status, 400, "{body}");

    let stored = expect_records(&archive, &auditor, "stored", "CT01", Some(PATIENT), 1).await;
    let message = stored[0]["message"].as_str().expect("message");
    assert!(message.contains("csd-code=\"110104\""), "{message}");
    assert!(message.contains("EventActionCode=\"C\""), "{message}");
    assert!(
        message.contains(&format!("ParticipantObjectID=\"{PATIENT}\"")),
        "{message}"
    );
    assert!(
        message.contains(&format!("ParticipantObjectID=\"{STUDY}\"")),
        "{message}"
    );
    assert!(message.contains("UserID=\"CT01\""), "{message}");
    expect_records(&archive, &auditor, "queried", "WS1", None, 1).await;
    expect_records(&archive, &auditor, "retrieved", "WS1", Some(PATIENT), 1).await;
    expect_records(&archive, &auditor, "queried", "rad", None, 1).await;
    // Three metadata reads of one study: one record.
    expect_records(&archive, &auditor, "retrieved", "rad", Some(PATIENT), 1).await;
    expect_records(&archive, &auditor, "stored", "ada", Some(PATIENT), 1).await;
    let logins = expect_records(&archive, &auditor, "login", "rad", None, 1).await;
    assert_eq!(logins[0]["outcome"], 0);
    let failures = expect_records(
        &archive,
        &auditor,
        "login",
        "tech",
        None,
        tessera::auth::LOCK_AFTER as usize,
    )
    .await;
    assert!(failures.iter().all(|r| r["outcome"] == 4), "{failures:#?}");
    expect_records(&archive, &auditor, "lockout", "tech", None, 1).await;
    expect_records(&archive, &auditor, "logout", "rad", None, 1).await;
    expect_records(&archive, &auditor, "user-changed", "ada", None, 1).await;
    expect_records(&archive, &auditor, "peer-changed", "ada", None, 1).await;
    let admitted = records(&archive, &auditor, "event=patient-record", 1).await;
    assert!(has_patient(&admitted[0], "PID7-0"), "{admitted:#?}");
    records(&archive, &auditor, "event=application-start", 1).await;

    // "Who saw this patient": every record that names it, and only those.
    let seen = records(&archive, &auditor, &format!("patient={PATIENT}"), 4).await;
    assert!(seen.iter().all(|r| has_patient(r, PATIENT)));
    let users = names(&seen, "user");
    for who in ["CT01", "WS1", "rad", "ada"] {
        assert!(
            users.iter().any(|u| u == who),
            "{who} missing from {users:?}"
        );
    }

    // The chain holds; a changed record and a removed one are found.
    let (ok, out) = verify(&archive).await;
    assert!(ok, "{out}");
    assert!(out.contains("intact"), "{out}");
    tamper(
        &archive,
        "UPDATE audit_log SET user_name = 'nobody' WHERE event = 'stored' AND user_name = 'CT01'",
    )
    .await;
    let (ok, out) = verify(&archive).await;
    assert!(!ok, "a changed record must be found: {out}");
    assert!(out.contains("was changed"), "{out}");
    tamper(
        &archive,
        "UPDATE audit_log SET user_name = 'CT01' WHERE event = 'stored' AND user_name = 'nobody'",
    )
    .await;
    let (ok, out) = verify(&archive).await;
    assert!(ok, "{out}");
    tamper(
        &archive,
        "DELETE FROM audit_log WHERE event = 'queried' AND user_name = 'WS1'",
    )
    .await;
    let (ok, out) = verify(&archive).await;
    assert!(!ok, "a removed record must be found: {out}");
    assert!(out.contains("missing"), "{out}");
}

/// Every record also goes to a syslog collector over TLS (RFC 5425).
async fn records_reach_syslog(backend: Backend) {
    if python().is_none() {
        return skip("records_reach_syslog", "python missing");
    }
    let certs = tempfile::tempdir().expect("tmp");
    assert!(common::certs::make_certificates(certs.path()), "openssl");
    let port_file = certs.path().join("syslog-port");
    let out = certs.path().join("syslog.jsonl");
    let pem = |n: &str| certs.path().join(n);
    let _collector = tokio::process::Command::new("python3")
        .arg(common::peers_dir().join("syslog_listen.py"))
        .arg(&port_file)
        .arg(&out)
        .arg(pem("server.pem"))
        .arg(pem("server.key"))
        .kill_on_drop(true)
        .spawn()
        .expect("syslog_listen.py starts");
    let mut port = None;
    for _ in 0..200 {
        if let Some(p) = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|t| t.trim().parse::<u16>().ok())
        {
            port = Some(p);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let port = port.expect("the collector listens");
    let archive = Archive::start_with(backend, |raw| {
        raw.audit.syslog = Some(format!("127.0.0.1:{port}"));
        raw.audit.syslog_ca_file = Some(pem("ca.pem"));
    })
    .await;
    let body = serde_json::json!({"name": "ghost", "password": "Wrong-passw0rd"}).to_string();
    let rsp = http_exchange(
        "127.0.0.1",
        archive.http_port,
        "POST",
        "/login",
        Some(("application/json", &body)),
        &[],
    )
    .await;
    assert_eq!(rsp.status, 401);
    let mut messages = Vec::new();
    for _ in 0..100 {
        messages = std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<String>(l).ok())
            .collect::<Vec<_>>();
        if messages.iter().any(|m| m.contains("110114")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let login = messages
        .iter()
        .find(|m| m.contains("110114"))
        .unwrap_or_else(|| panic!("no login record reached syslog: {messages:#?}"));
    // RFC 5424 header: authpriv.warning for a failure, then the message.
    assert!(login.starts_with("<84>1 "), "{login}");
    assert!(login.contains(" tessera "), "{login}");
    assert!(login.contains("EventOutcomeIndicator=\"4\""), "{login}");
    assert!(login.contains("UserID=\"ghost\""), "{login}");
    assert!(
        messages.iter().any(|m| m.contains("110120")),
        "application start: {messages:#?}"
    );
}

/// Store-and-forward leaves an Export record naming the destination and
/// the patient.
async fn exports_are_recorded(backend: Backend) {
    let (Some(_), Some(_)) = (dcmtk("storescu"), dcmtk("storescp")) else {
        return skip("exports_are_recorded", "DCMTK storescu/storescp missing");
    };
    let received = tempfile::tempdir().expect("tmp");
    let dest = common::StoreScp::start("DEST", received.path(), &[]).await;
    let archive = Archive::start_with(backend, |raw| {
        raw.peers = vec![common::local_peer("DEST", dest.port)];
        raw.routes = vec![tessera::routing::RawRoute {
            name: "everything".into(),
            destination: "DEST".into(),
            calling_ae: vec![],
            modality: vec![],
            sop_class_uid: vec![],
            study_description: vec![],
            body_part_examined: vec![],
            patient_id: vec![],
            confirm_commitment: false,
        }];
    })
    .await;
    let accounts = Accounts::new(archive.index().await, Default::default());
    let auditor = user_with_token(&accounts, "aud", Role::Auditor).await;
    let sample = ct_sample().expect("pydicom's CT_small.dcm");
    let port = archive.dicom_port.to_string();
    dcmtk_ok(
        "storescu",
        &[
            "-aet",
            "CT01",
            "-aec",
            "TESSERA",
            "127.0.0.1",
            &port,
            sample.to_str().expect("utf8"),
        ],
    )
    .await;
    let exported = records(&archive, &auditor, "event=exported", 1).await;
    assert!(has_patient(&exported[0], PATIENT), "{exported:#?}");
    let message = exported[0]["message"].as_str().expect("message");
    assert!(message.contains("csd-code=\"110106\""), "{message}");
    assert!(message.contains("DEST"), "{message}");
}

on_both_backends!(
    every_access_is_recorded,
    records_reach_syslog,
    exports_are_recorded
);
