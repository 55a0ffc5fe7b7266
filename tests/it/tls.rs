//! TLS on every listener, against real clients: DCMTK `echoscu`,
//! `storescu` and `findscu` with `+tls` on the DICOM TLS port (client
//! certificates required, an AE title bound to its certificate), curl over
//! HTTPS with HSTS and Secure cookies, the `hl7` package's MLLP client over
//! TLS, and a SIGHUP that swaps the certificate under an open association.

use crate::common;

use std::path::Path;

use common::certs::{make_ca, make_cert};
use common::{ct_sample, dcmtk, python, run_peer, skip, Archive, Backend};

/// The certificates every test uses, in a new directory:
/// - `ca`: the site CA; `tessera` (127.0.0.1, server and client use) and
///   `tessera2` (the same name, for the reload);
/// - `ct01`: a modality's client certificate for `ct01.example`;
///   `other`: a valid client certificate for `other.example`;
/// - `rogue` and `rogue-ct01`: another CA, and a `ct01.example`
///   certificate it signed.
fn certificates() -> tempfile::TempDir {
    let certs = tempfile::tempdir().expect("tmp");
    let dir = certs.path();
    let made = make_ca(dir, "ca")
        && make_cert(
            dir,
            "ca",
            "tessera",
            "IP:127.0.0.1",
            "serverAuth,clientAuth",
        )
        && make_cert(
            dir,
            "ca",
            "tessera2",
            "IP:127.0.0.1",
            "serverAuth,clientAuth",
        )
        && make_cert(dir, "ca", "ct01", "DNS:ct01.example", "clientAuth")
        && make_cert(dir, "ca", "other", "DNS:other.example", "clientAuth")
        && make_ca(dir, "rogue")
        && make_cert(dir, "rogue", "rogue-ct01", "DNS:ct01.example", "clientAuth");
    assert!(made, "openssl could not make the test certificates");
    certs
}

fn pem(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().expect("utf8 path").to_owned()
}

/// A DCMTK tool; its exit status and output. echoscu runs verbose: it
/// can exit 0 although the peer aborted before answering, so callers
/// look for its success line.
async fn dcmtk_run(tool: &str, args: &[String]) -> (bool, String) {
    let verbose: &[&str] = if tool == "echoscu" { &["-v"] } else { &[] };
    let out = tokio::process::Command::new(dcmtk(tool).expect("checked"))
        .args(verbose)
        .args(args)
        .env("TCP_NODELAY", "1")
        .output()
        .await
        .unwrap_or_else(|e| panic!("{tool} runs: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ok = out.status.success() && (tool != "echoscu" || text.contains(ECHO_SUCCESS));
    (ok, text)
}

const ECHO_SUCCESS: &str = "Received Echo Response (Success)";

/// `+tls` with a client certificate `cert` (none: anonymous TLS), trusting
/// the site CA.
fn tls_args(dir: &Path, cert: Option<&str>) -> Vec<String> {
    let mut args = match cert {
        Some(name) => vec![
            "+tls".into(),
            pem(dir, &format!("{name}.key")),
            pem(dir, &format!("{name}.pem")),
        ],
        None => vec!["+tla".into()],
    };
    args.extend(["+cf".into(), pem(dir, "ca.pem")]);
    args
}

fn call(calling: &str, port: u16) -> Vec<String> {
    vec![
        "-aet".into(),
        calling.into(),
        "-aec".into(),
        "TESSERA".into(),
        "127.0.0.1".into(),
        port.to_string(),
    ]
}

/// The DICOM TLS port with client certificates required and CT01 bound to
/// its certificate: DCMTK echo, store and find succeed with the right
/// certificate; no certificate and a certificate from another CA are
/// refused in the handshake, CT01 with someone else's certificate with
/// A-ASSOCIATE-RJ; CT01 may not call on the
/// plain port at all, while other AE titles still may.
async fn dicom_over_tls(backend: Backend) {
    if dcmtk("echoscu").is_none() || dcmtk("storescu").is_none() || dcmtk("findscu").is_none() {
        return skip("dicom_over_tls", "DCMTK echoscu/storescu/findscu missing");
    }
    let certs = certificates();
    let dir = certs.path();
    let archive = Archive::start_with(backend, |raw| {
        raw.dicom.tls = Some(true);
        raw.dicom.tls_bind = Some("127.0.0.1:0".parse().expect("addr"));
        raw.tls.cert_file = Some(dir.join("tessera.pem"));
        raw.tls.key_file = Some(dir.join("tessera.key"));
        raw.tls.ca_file = Some(dir.join("ca.pem"));
        raw.tls.require_client_cert = Some(true);
        raw.tls.ae_certificates = Some([("CT01".to_owned(), "ct01.example".to_owned())].into());
    })
    .await;
    let tls_port = archive.dicom_tls_port;
    assert_ne!(tls_port, 0, "no TLS port bound");
    let with = |cert: Option<&str>, calling: &str| {
        let mut args = tls_args(dir, cert);
        args.extend(call(calling, tls_port));
        args
    };

    let (ok, out) = dcmtk_run("echoscu", &with(Some("ct01"), "CT01")).await;
    assert!(ok, "C-ECHO over TLS with CT01's certificate: {out}");
    let mut store = with(Some("ct01"), "CT01");
    store.push(
        ct_sample()
            .expect("pydicom's CT_small.dcm")
            .to_str()
            .expect("utf8")
            .to_owned(),
    );
    let (ok, out) = dcmtk_run("storescu", &store).await;
    assert!(ok, "C-STORE over TLS: {out}");
    let mut find = with(Some("ct01"), "CT01");
    find.splice(
        0..0,
        [
            "-S",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "StudyInstanceUID",
        ]
        .map(String::from),
    );
    let (ok, out) = dcmtk_run("findscu", &find).await;
    assert!(ok, "C-FIND over TLS: {out}");
    assert!(
        out.contains("1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"),
        "the stored study is found over TLS: {out}"
    );

    // Refused: no client certificate, one from another CA, and CT01's
    // title with a certificate for another name.
    let (ok, out) = dcmtk_run("echoscu", &with(None, "CT01")).await;
    assert!(!ok, "anonymous TLS must be refused: {out}");
    let (ok, out) = dcmtk_run("echoscu", &with(Some("rogue-ct01"), "CT01")).await;
    assert!(!ok, "a certificate from another CA must be refused: {out}");
    let (ok, out) = dcmtk_run("echoscu", &with(Some("other"), "CT01")).await;
    assert!(
        !ok,
        "CT01 with other.example's certificate must be refused: {out}"
    );
    assert!(
        out.contains("Association Rejected"),
        "refused at association (A-ASSOCIATE-RJ), not aborted after: {out}"
    );
    // That certificate is good for a title not bound to a certificate.
    let (ok, out) = dcmtk_run("echoscu", &with(Some("other"), "WORKSTATION")).await;
    assert!(ok, "an unbound AE title with a valid certificate: {out}");

    // The plain port: CT01 is refused there, others are served.
    let (ok, out) = dcmtk_run("echoscu", &call("CT01", archive.dicom_port)).await;
    assert!(!ok, "CT01 must not call without TLS: {out}");
    assert!(out.contains("Association Rejected"), "{out}");
    let (ok, out) = dcmtk_run("echoscu", &call("WORKSTATION", archive.dicom_port)).await;
    assert!(ok, "plain C-ECHO from another AE title: {out}");
}

/// HTTPS with HSTS and a Secure session cookie, and MLLP over TLS, both
/// requiring a client certificate.
async fn https_and_mllp_over_tls(backend: Backend) {
    if python().is_none() {
        return skip(
            "https_and_mllp_over_tls",
            "python with the hl7 package missing",
        );
    }
    let certs = certificates();
    let dir = certs.path();
    let archive = Archive::start_with(backend, |raw| {
        raw.http.tls = Some(true);
        raw.http.hsts = Some(true);
        raw.hl7.tls = Some(true);
        raw.tls.cert_file = Some(dir.join("tessera.pem"));
        raw.tls.key_file = Some(dir.join("tessera.key"));
        raw.tls.ca_file = Some(dir.join("ca.pem"));
        raw.tls.require_client_cert = Some(true);
    })
    .await;
    tessera::auth::Accounts::new(archive.index().await, Default::default())
        .add_user(
            "ada",
            &tessera::model::Roles([tessera::model::Role::Admin].into()),
            "Corr3ct-horse",
            false,
            "",
        )
        .await
        .expect("user");
    let base = format!("https://127.0.0.1:{}", archive.http_port);
    let curl = |args: Vec<String>| async move {
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "-i", "--max-time", "20"])
            .args(&args)
            .output()
            .await
            .expect("curl runs");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let client_cert = vec![
        "--cacert".to_owned(),
        pem(dir, "ca.pem"),
        "--cert".into(),
        pem(dir, "other.pem"),
        "--key".into(),
        pem(dir, "other.key"),
    ];
    let mut healthz = client_cert.clone();
    healthz.push(format!("{base}/healthz"));
    let (ok, out) = curl(healthz).await;
    assert!(ok && out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.to_ascii_lowercase()
            .contains("strict-transport-security: max-age=31536000"),
        "HSTS header: {out}"
    );
    let mut login = client_cert.clone();
    login.extend([
        "-H".into(),
        "Content-Type: application/json".into(),
        "--data".into(),
        r#"{"name":"ada","password":"Corr3ct-horse"}"#.into(),
        format!("{base}/login"),
    ]);
    let (ok, out) = curl(login).await;
    assert!(ok && out.starts_with("HTTP/1.1 200"), "{out}");
    let cookie = out
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie: tessera_session=")
        })
        .unwrap_or_else(|| panic!("no session cookie: {out}"));
    assert!(cookie.contains("Secure"), "{cookie}");
    // No client certificate: the handshake fails.
    let (ok, out) = curl(vec![
        "--cacert".into(),
        pem(dir, "ca.pem"),
        format!("{base}/healthz"),
    ])
    .await;
    assert!(!ok, "HTTPS without a client certificate must fail: {out}");
    // Plain HTTP on the HTTPS port gets no answer.
    let (_, out) = curl(vec![format!(
        "http://127.0.0.1:{}/healthz",
        archive.http_port
    )])
    .await;
    assert!(!out.starts_with("HTTP/1.1 200"), "{out}");

    // MLLP over TLS with the hl7 package's client.
    let message = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hl7/a01_nguyen.hl7");
    let port = archive.hl7_port.to_string();
    let message = message.to_str().expect("utf8");
    let (ca, cert, key) = (
        pem(dir, "ca.pem"),
        pem(dir, "other.pem"),
        pem(dir, "other.key"),
    );
    let out = run_peer(
        "mllp_send.py",
        &[
            &port,
            message,
            "--tls-ca",
            &ca,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(answer["results"][0]["code"], "AA", "{text}");
    let out = run_peer("mllp_send.py", &[&port, message, "--tls-ca", &ca]).await;
    assert!(
        !out.status.success(),
        "MLLP over TLS without a client certificate must fail"
    );
    let out = run_peer("mllp_send.py", &[&port, message]).await;
    assert!(
        !out.status.success(),
        "plain MLLP on the TLS port must fail"
    );
}

on_both_backends!(dicom_over_tls, https_and_mllp_over_tls);

/// The binary reloads its certificate on SIGHUP: an association opened
/// before goes on working, and the next handshake shows the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate() {
    if python().is_none() {
        return skip("sighup_reloads_the_certificate", "pynetdicom missing");
    }
    let certs = certificates();
    let dir = certs.path();
    std::fs::copy(dir.join("tessera.pem"), dir.join("live.pem")).expect("copy");
    std::fs::copy(dir.join("tessera.key"), dir.join("live.key")).expect("copy");
    let config = dir.join("tessera.toml");
    std::fs::write(
        &config,
        format!(
            "[dicom]\ntls = true\ntls_bind = \"127.0.0.1:0\"\n\n[tls]\nca_file = {:?}\n\
             cert_file = {:?}\nkey_file = {:?}\nrequire_client_cert = true\n",
            pem(dir, "ca.pem"),
            pem(dir, "live.pem"),
            pem(dir, "live.key")
        ),
    )
    .expect("config");
    let data = tempfile::tempdir().expect("tmp");
    let server =
        common::ServerProcess::spawn(data.path(), &["--config", config.to_str().expect("utf8")])
            .await;
    let port = server.dicom_tls_port.expect("dicom-tls in the ready line");
    let out = run_peer(
        "tls_reload.py",
        &[
            &port.to_string(),
            &pem(dir, "ca.pem"),
            &pem(dir, "other.pem"),
            &pem(dir, "other.key"),
            &server.pid().to_string(),
            &pem(dir, "tessera2.pem"),
            &pem(dir, "tessera2.key"),
            &pem(dir, "live.pem"),
            &pem(dir, "live.key"),
        ],
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        seen["after"], seen["expected"],
        "new certificate after SIGHUP: {text}"
    );
    assert_ne!(seen["before"], seen["after"], "{text}");
    assert_eq!(seen["echo_before"], 0, "{text}");
    assert_eq!(
        seen["echo_after"], 0,
        "the old association survives the reload: {text}"
    );
    assert_eq!(seen["released"], true, "{text}");
    let status = server.terminate().await;
    assert!(status.success(), "clean exit after SIGHUP: {status:?}");
}
