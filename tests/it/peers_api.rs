//! The remote AE registry: peers from the config file, the REST API
//! (`/api/v1/peers`), C-ECHO against a real DCMTK storescp from the API
//! and from `tessera echo`, and each peer's services enforced on the DICOM
//! port.

use crate::common;

use common::{
    dcmtk, free_port, http_request, python, run_peer, skip, tessera_cli, Archive, Backend, StoreScp,
};
use tessera::model::{PeerService, RawPeer};

async fn storescp(dir: &std::path::Path) -> Option<StoreScp> {
    dcmtk("storescp")?;
    Some(StoreScp::start("STORESCP", dir, &[]).await)
}

async fn registry_api_and_echo(backend: Backend) {
    let dir = tempfile::tempdir().expect("tmp");
    let Some(scp) = storescp(dir.path()).await else {
        return skip("registry_api_and_echo", "DCMTK storescp not installed");
    };
    let scp_port = scp.port;
    let archive = Archive::start_with(backend, |raw| {
        raw.peers = vec![RawPeer {
            ae_title: "STORESCP".into(),
            host: "127.0.0.1".into(),
            port: scp_port,
            tls: false,
            services: None,
            worklist_charset: None,
        }];
    })
    .await;
    let port = archive.http_port;
    let call = |method: &'static str, path: String, body: Option<String>| async move {
        http_request(port, method, &path, body.as_deref(), &[]).await
    };

    // From the config file, and verified with C-ECHO.
    let (status, body) = call("GET", "/api/v1/peers".into(), None).await;
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(list[0]["ae_title"], "STORESCP", "{body}");
    assert_eq!(list[0]["services"].as_array().map(Vec::len), Some(6));
    let (status, body) = call("POST", "/api/v1/peers/STORESCP/echo".into(), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""ok":true"#), "{body}");

    // Created at runtime; a peer that is down answers 502 with the reason.
    let down = free_port();
    let peer = format!(
        r#"{{"ae_title":"DOWN","host":"127.0.0.1","port":{down},"services":["store","move"]}}"#
    );
    let (status, body) = call("PUT", "/api/v1/peers/DOWN".into(), Some(peer.clone())).await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = call("PUT", "/api/v1/peers/DOWN".into(), Some(peer)).await;
    assert_eq!(status, 200, "replacing is not creating");
    let (status, body) = call("GET", "/api/v1/peers/DOWN".into(), None).await;
    assert_eq!(status, 200);
    let got: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(got["port"], down);
    assert_eq!(got["services"], serde_json::json!(["store", "move"]));
    let (status, body) = call("POST", "/api/v1/peers/DOWN/echo".into(), None).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains(r#""ok":false"#) && body.contains("DOWN"),
        "{body}"
    );

    // Bad input: clear 400s.
    let bad_port = r#"{"ae_title":"X","host":"h","port":0}"#.to_owned();
    let (status, body) = call("PUT", "/api/v1/peers/X".into(), Some(bad_port)).await;
    assert_eq!(status, 400, "{body}");
    let mismatch = r#"{"ae_title":"Y","host":"h","port":104}"#.to_owned();
    let (status, body) = call("PUT", "/api/v1/peers/X".into(), Some(mismatch)).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = call("PUT", "/api/v1/peers/X".into(), Some("{not json".into())).await;
    assert_eq!(status, 400);
    assert!(body.contains("invalid JSON"), "{body}");

    // Delete.
    let (status, _) = call("DELETE", "/api/v1/peers/DOWN".into(), None).await;
    assert_eq!(status, 204);
    let (status, _) = call("GET", "/api/v1/peers/DOWN".into(), None).await;
    assert_eq!(status, 404);
    let (status, _) = call("DELETE", "/api/v1/peers/DOWN".into(), None).await;
    assert_eq!(status, 404);
    let (status, _) = call("POST", "/api/v1/peers/NOPE/echo".into(), None).await;
    assert_eq!(status, 404);
}

/// A DCMTK tool's output (stdout and stderr) against the archive, verbose.
async fn dcmtk_output(tool: &str, archive: &Archive, args: &[&str]) -> String {
    let out = tokio::process::Command::new(dcmtk(tool).expect("checked by caller"))
        .arg("-v")
        .args(args)
        .args([
            "-aec",
            "TESSERA",
            "127.0.0.1",
            &archive.dicom_port.to_string(),
        ])
        .output()
        .await
        .expect("DCMTK tool runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn peer_services_are_enforced(backend: Backend) {
    let (Some(_), Some(_), Some(_)) = (dcmtk("findscu"), dcmtk("movescu"), python()) else {
        return skip(
            "peer_services_are_enforced",
            "DCMTK findscu/movescu or pynetdicom missing",
        );
    };
    let archive = Archive::start_with(backend, |raw| {
        raw.peers = vec![RawPeer {
            ae_title: "FINDONLY".into(),
            host: "127.0.0.1".into(),
            port: free_port(),
            tls: false,
            services: Some(vec![PeerService::Find]),
            worklist_charset: None,
        }];
    })
    .await;
    let dir = archive.dir.path().join("c");
    let d = dir.to_str().expect("utf8");
    assert!(run_peer("gen.py", &[d, "--count", "1", "--seed", "81"])
        .await
        .status
        .success());
    let port = archive.dicom_port.to_string();
    let send = |calling: &'static str| {
        let port = port.clone();
        let d = d.to_owned();
        async move {
            let out = run_peer(
                "send.py",
                &[
                    "127.0.0.1",
                    &port,
                    &d,
                    "--calling-aet",
                    calling,
                    "--allow-failures",
                ],
            )
            .await;
            serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("send.py summary")
        }
    };

    // A registered peer without "store" is refused; any other AE may store.
    let refused = send("FINDONLY").await;
    assert_eq!(refused["success"], 0, "{refused}");
    assert_eq!(
        refused["statuses"]["0x0124"], 1,
        "Not Authorized: {refused}"
    );
    let stored = send("MODALITY").await;
    assert_eq!(stored["success"], 1, "{stored}");

    // It may query, but not retrieve.
    let found = dcmtk_output(
        "findscu",
        &archive,
        &[
            "-S",
            "-aet",
            "FINDONLY",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "StudyInstanceUID",
        ],
    )
    .await;
    assert!(
        found.contains("Received Final Find Response (Success)")
            && found.contains("Find Response: 1"),
        "{found}"
    );
    let moved = dcmtk_output(
        "movescu",
        &archive,
        &[
            "-S",
            "-aet",
            "FINDONLY",
            "-aem",
            "FINDONLY",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "StudyInstanceUID=*",
        ],
    )
    .await;
    // DCMTK names 0124H (Refused: Not Authorized) only by its code.
    assert!(
        moved.contains("Final Move Response (Unknown Status: 0x124)"),
        "{moved}"
    );
}

/// Peers marked `tls`: C-ECHO and a C-MOVE to a DCMTK storescp that only
/// speaks TLS and requires a client certificate; a clear error without
/// `[tls]`.
async fn tls_to_peers(backend: Backend) {
    let (Some(movescu), Some(_), Some(_)) = (dcmtk("movescu"), dcmtk("storescp"), python()) else {
        return skip(
            "tls_to_peers",
            "DCMTK movescu/storescp or pynetdicom missing",
        );
    };
    let certs = tempfile::tempdir().expect("tmp");
    if !common::certs::make_certificates(certs.path()) {
        return skip("tls_to_peers", "openssl could not make test certificates");
    }
    let pem = |name: &str| certs.path().join(name);
    let received = certs.path().join("received");
    let scp = StoreScp::start(
        "TLSSCP",
        &received,
        &[
            "+tls",
            pem("server.key").to_str().expect("utf8"),
            pem("server.pem").to_str().expect("utf8"),
            "+cf",
            pem("ca.pem").to_str().expect("utf8"),
        ],
    )
    .await;
    let tls_peer = |port| RawPeer {
        ae_title: "TLSSCP".into(),
        host: "127.0.0.1".into(),
        port,
        tls: true,
        services: None,
        worklist_charset: None,
    };
    let archive = Archive::start_with(backend, |raw| {
        raw.peers = vec![tls_peer(scp.port)];
        raw.tls.ca_file = Some(pem("ca.pem"));
        raw.tls.cert_file = Some(pem("client.pem"));
        raw.tls.key_file = Some(pem("client.key"));
    })
    .await;
    let (status, body) = http_request(
        archive.http_port,
        "POST",
        "/api/v1/peers/TLSSCP/echo",
        None,
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""ok":true"#), "{body}");

    let dir = archive.dir.path().join("c");
    let d = dir.to_str().expect("utf8");
    assert!(run_peer("gen.py", &[d, "--count", "2", "--seed", "82"])
        .await
        .status
        .success());
    let port = archive.dicom_port.to_string();
    assert!(run_peer("send.py", &["127.0.0.1", &port, d])
        .await
        .status
        .success());
    let first = std::fs::read_dir(&dir)
        .expect("dir")
        .next()
        .expect("a file")
        .expect("entry")
        .path();
    let study = dicom_object::open_file(&first)
        .expect("dicom")
        .element(dicom_dictionary_std::tags::STUDY_INSTANCE_UID)
        .expect("study uid")
        .to_str()
        .expect("text")
        .trim_end_matches('\0')
        .to_owned();
    let out = tokio::process::Command::new(movescu)
        .args(["-S", "-aet", "MOVESCU", "-aec", "TESSERA", "-aem", "TLSSCP"])
        .args([
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            &format!("StudyInstanceUID={study}"),
        ])
        .args(["127.0.0.1", &port])
        .output()
        .await
        .expect("movescu runs");
    assert!(out.status.success(), "{out:?}");
    let files = std::fs::read_dir(&received).expect("dir").count();
    assert_eq!(files, 2, "both instances arrived over TLS");

    // A TLS peer without [tls]: refused with a clear reason.
    let plain = Archive::start_with(backend, |raw| raw.peers = vec![tls_peer(scp.port)]).await;
    let (status, body) = http_request(
        plain.http_port,
        "POST",
        "/api/v1/peers/TLSSCP/echo",
        None,
        &[],
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("no [tls] ca_file"), "{body}");
}

/// `echoscu` calling Tessera as `calling`; whether the association was
/// accepted.
async fn echo_as(archive: &Archive, calling: &str) -> bool {
    let out = tokio::process::Command::new(dcmtk("echoscu").expect("checked"))
        .args(["-aet", calling])
        .args(archive.ae_args())
        .env("TCP_NODELAY", "1")
        .output()
        .await
        .expect("echoscu runs");
    out.status.success()
}

/// With `dicom.unknown_peers = "refuse"` an unregistered calling AE gets an
/// A-ASSOCIATE-RJ; Tessera never takes its own AE title as a peer; with
/// `dicom.peer_networks` an address outside them is refused at
/// registration, and a name resolving outside them is never called.
async fn peer_rules(backend: Backend) {
    if dcmtk("echoscu").is_none() {
        return skip("peer_rules", "DCMTK echoscu not installed");
    }
    let archive = Archive::start_with(backend, |raw| {
        raw.dicom.unknown_peers = Some("refuse".into());
        raw.dicom.peer_networks = Some(vec!["127.0.0.0/8".into(), "fd00::/8".into()]);
        raw.peers = vec![common::local_peer("KNOWN", 104)];
    })
    .await;
    assert!(
        echo_as(&archive, "KNOWN").await,
        "a registered AE is served"
    );
    assert!(
        !echo_as(&archive, "STRANGER").await,
        "an unknown AE is refused"
    );

    let put = |ae: &'static str, body: String| {
        let port = archive.http_port;
        async move {
            http_request(
                port,
                "PUT",
                &format!("/api/v1/peers/{ae}"),
                Some(&body),
                &[("Content-Type", "application/json")],
            )
            .await
        }
    };
    let (status, body) = put(
        "TESSERA",
        r#"{"ae_title":"TESSERA","host":"127.0.0.1","port":104}"#.into(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("own AE title"), "{body}");
    let (status, body) = put(
        "METADATA",
        r#"{"ae_title":"METADATA","host":"169.254.169.254","port":80}"#.into(),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = put(
        "V6PEER",
        r#"{"ae_title":"V6PEER","host":"[fd00::5]","port":104}"#.into(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert!(body.contains(r#""host":"fd00::5""#), "{body}");
    // A name is checked where it resolves: "localhost" is 127.0.0.1 (in),
    // so it is called (nobody listens there: refused, not "outside").
    let port = free_port();
    let (status, _) = put(
        "BYNAME",
        format!(r#"{{"ae_title":"BYNAME","host":"localhost","port":{port}}}"#),
    )
    .await;
    assert_eq!(status, 201);
    let (_, body) = http_request(
        archive.http_port,
        "POST",
        "/api/v1/peers/BYNAME/echo",
        None,
        &[],
    )
    .await;
    assert!(!body.contains("outside"), "{body}");
    assert!(body.contains(r#""ok":false"#), "{body}");
}

/// A name that resolves outside `dicom.peer_networks` is never called.
async fn names_resolving_outside_the_networks_are_not_called(backend: Backend) {
    let archive = Archive::start_with(backend, |raw| {
        raw.dicom.peer_networks = Some(vec!["10.0.0.0/8".into()]);
    })
    .await;
    let (status, body) = http_request(
        archive.http_port,
        "PUT",
        "/api/v1/peers/LOCALNAME",
        Some(r#"{"ae_title":"LOCALNAME","host":"localhost","port":104}"#),
        &[("Content-Type", "application/json")],
    )
    .await;
    assert_eq!(status, 201, "a name is taken: {body}");
    let (_, body) = http_request(
        archive.http_port,
        "POST",
        "/api/v1/peers/LOCALNAME/echo",
        None,
        &[],
    )
    .await;
    assert!(body.contains("outside dicom.peer_networks"), "{body}");
}

on_both_backends!(
    registry_api_and_echo,
    peer_services_are_enforced,
    tls_to_peers,
    peer_rules,
    names_resolving_outside_the_networks_are_not_called
);

#[tokio::test]
async fn echo_command() {
    let dir = tempfile::tempdir().expect("tmp");
    let Some(scp) = storescp(dir.path()).await else {
        return skip("echo_command", "DCMTK storescp not installed");
    };
    let config = dir.path().join("tessera.toml");
    std::fs::write(
        &config,
        format!(
            "[[peers]]\nae_title = \"STORESCP\"\nhost = \"127.0.0.1\"\nport = {}\n",
            scp.port
        ),
    )
    .expect("config");
    let data = dir.path().join("data");
    let cfg = config.to_str().expect("utf8");
    let out = tessera_cli(&data, &["--config", cfg, "echo", "STORESCP"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok in"));
    let direct = format!("STORESCP@127.0.0.1:{}", scp.port);
    let out = tessera_cli(&data, &["echo", &direct]).await;
    assert!(out.status.success());
    let out = tessera_cli(&data, &["echo", "NOPE"]).await;
    assert_eq!(out.status.code(), Some(1));
    let down = format!("DOWN@127.0.0.1:{}", free_port());
    let out = tessera_cli(&data, &["echo", &down]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("failed"));
}
