//! Bad input gets a clear error, never a crash: garbage and oversized PDUs,
//! truncated and mis-encoded data sets, missing attributes and aborted
//! transfers, all while a healthy association keeps storing.

use crate::common;

use std::time::Duration;

use common::{python, run_peer, skip, Archive, Backend};
use dicom_ul::pdu::{PDataValue, PDataValueType};
use dicom_ul::{ClientAssociationOptions, Pdu};
use tessera::dimse::command::{request, Command, CommandField, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";

/// CT_small.dcm's data set (explicit VR little endian) and SOP Instance UID.
fn ct_small() -> Option<(Vec<u8>, String)> {
    let (data, _) = common::sample_dirs()?;
    let bytes = std::fs::read(data.join("test_files/CT_small.dcm")).ok()?;
    let group_len = u32::from_le_bytes([bytes[140], bytes[141], bytes[142], bytes[143]]) as usize;
    Some((
        bytes[144 + group_len..].to_vec(),
        "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322".to_owned(),
    ))
}

type Client = dicom_ul::association::AsyncClientAssociation<tokio::net::TcpStream>;

async fn connect(archive: &Archive, ts: &str) -> Client {
    ClientAssociationOptions::new()
        .calling_ae_title("MALFORMED")
        .called_ae_title("TESSERA")
        .with_presentation_context(CT_IMAGE_STORAGE, vec![ts])
        .establish_async(("127.0.0.1", archive.dicom_port))
        .await
        .expect("association established")
}

/// Send a C-STORE-RQ with the given data set bytes; return the response status.
async fn store_raw(client: &mut Client, message_id: u16, sop_uid: &str, dataset: &[u8]) -> Status {
    let pc = client.presentation_contexts()[0].id;
    let mut rq = request(CommandField::CStoreRq, message_id, CT_IMAGE_STORAGE);
    rq.affected_sop_instance_uid = Some(sop_uid.to_owned());
    rq.has_dataset = true;
    rq.priority = Some(0);
    let command = PDataValue {
        presentation_context_id: pc,
        value_type: PDataValueType::Command,
        is_last: true,
        data: rq.encode().expect("encode"),
    };
    client
        .send(&Pdu::PData {
            data: vec![command],
        })
        .await
        .expect("send command");
    for (i, chunk) in dataset.chunks(16_000).enumerate() {
        let last = (i + 1) * 16_000 >= dataset.len();
        let pdv = PDataValue {
            presentation_context_id: pc,
            value_type: PDataValueType::Data,
            is_last: last,
            data: chunk.to_vec(),
        };
        client
            .send(&Pdu::PData { data: vec![pdv] })
            .await
            .expect("send data");
    }
    match client.receive().await.expect("response") {
        Pdu::PData { data } => {
            let rsp = Command::decode(&data[0].data).expect("decodes");
            assert_eq!(rsp.field, CommandField::CStoreRsp);
            assert_eq!(rsp.message_id_responded_to, Some(message_id));
            rsp.status.expect("status")
        }
        other => panic!("expected a response, got {other:?}"),
    }
}

/// Replace the SOP Instance UID inside CT_small's data set (same length).
fn with_uid(dataset: &[u8], old: &str, new: &str) -> Vec<u8> {
    assert_eq!(old.len(), new.len());
    let pos = dataset
        .windows(old.len())
        .position(|w| w == old.as_bytes())
        .expect("uid present");
    let mut out = dataset.to_vec();
    out[pos..pos + new.len()].copy_from_slice(new.as_bytes());
    out
}

async fn bad_input_is_refused_and_others_keep_storing(backend: Backend) {
    let Some(_) = python() else {
        return skip(
            "bad_input_is_refused_and_others_keep_storing",
            "pynetdicom missing",
        );
    };
    let Some((dataset, uid)) = ct_small() else {
        return skip(
            "bad_input_is_refused_and_others_keep_storing",
            "pydicom samples missing",
        );
    };
    let archive = Archive::start(backend).await;
    let healthy_dir = archive.dir.path().join("healthy");
    let out = run_peer(
        "gen.py",
        &[
            healthy_dir.to_str().expect("utf8"),
            "--count",
            "60",
            "--seed",
            "11",
        ],
    )
    .await;
    assert!(out.status.success());
    let port = archive.dicom_port.to_string();
    let dir = healthy_dir.to_str().expect("utf8").to_owned();
    let healthy = tokio::spawn(async move {
        run_peer("send.py", &["127.0.0.1", &port, &dir, "--assocs", "2"]).await
    });

    // 1. Garbage instead of an A-ASSOCIATE-RQ: the connection is closed.
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", archive.dicom_port))
        .await
        .expect("connect");
    raw.write_all(&[0x42; 600]).await.expect("write");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), raw.read(&mut buf)).await;
    assert!(
        matches!(n, Ok(Ok(_)) | Ok(Err(_))),
        "server answers or closes"
    );

    // 2. A PDU claiming to be 4 GB: refused before anything is allocated.
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", archive.dicom_port))
        .await
        .expect("connect");
    raw.write_all(&[0x01, 0x00, 0xff, 0xff, 0xff, 0xf0, 0x00, 0x01])
        .await
        .expect("write");
    let closed =
        tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut Vec::new())).await;
    assert!(closed.is_ok(), "oversized PDU must end the connection");

    // 3. A truncated data set: failure status, and the association lives on.
    let mut client = connect(&archive, EXPLICIT_LE).await;
    let truncated = &dataset[..dataset.len() / 2];
    let status = store_raw(&mut client, 1, &uid, truncated).await;
    assert_eq!(status, Status::CannotUnderstand);
    let status = store_raw(&mut client, 2, &uid, &dataset).await;
    assert_eq!(status, Status::Success, "same association still stores");

    // 4. Missing Study Instance UID: refused as not matching the SOP class.
    let tag = [0x20, 0x00, 0x0d, 0x00];
    let pos = dataset
        .windows(4)
        .position(|w| w == tag)
        .expect("study uid tag");
    let len = u16::from_le_bytes([dataset[pos + 6], dataset[pos + 7]]) as usize;
    let mut missing = dataset[..pos].to_vec();
    missing.extend_from_slice(&dataset[pos + 8 + len..]);
    let other_uid = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.99999";
    let missing = with_uid(&missing, &uid, other_uid);
    assert_eq!(
        store_raw(&mut client, 3, other_uid, &missing).await,
        Status::DataSetDoesNotMatchSopClass
    );

    // 5. Data set UID differs from the command's: refused.
    assert_eq!(
        store_raw(&mut client, 4, other_uid, &dataset).await,
        Status::DataSetDoesNotMatchSopClass
    );
    client.release().await.expect("release");

    // 6. Explicit VR bytes on an implicit VR context: cannot be understood.
    let mut client = connect(&archive, IMPLICIT_LE).await;
    let wrong_ts_uid = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.88888";
    let wrong = with_uid(&dataset, &uid, wrong_ts_uid);
    let status = store_raw(&mut client, 1, wrong_ts_uid, &wrong).await;
    assert_ne!(status, Status::Success);
    client.release().await.expect("release");

    // 7. Abort in the middle of a data set: nothing is kept.
    let mut client = connect(&archive, EXPLICIT_LE).await;
    let pc = client.presentation_contexts()[0].id;
    let aborted_uid = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.77777";
    let mut rq = request(CommandField::CStoreRq, 1, CT_IMAGE_STORAGE);
    rq.affected_sop_instance_uid = Some(aborted_uid.to_owned());
    rq.has_dataset = true;
    let pdvs = vec![
        PDataValue {
            presentation_context_id: pc,
            value_type: PDataValueType::Command,
            is_last: true,
            data: rq.encode().expect("encode"),
        },
        PDataValue {
            presentation_context_id: pc,
            value_type: PDataValueType::Data,
            is_last: false,
            data: dataset[..4000].to_vec(),
        },
    ];
    client.send(&Pdu::PData { data: pdvs }).await.expect("send");
    client.abort().await.expect("abort");

    let out = healthy.await.expect("join");
    assert!(
        out.status.success(),
        "healthy sender: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    let index = archive.index().await;
    assert!(index.instance(&uid).await.expect("query").is_some());
    for refused in [other_uid, wrong_ts_uid, aborted_uid] {
        assert!(
            index.instance(refused).await.expect("query").is_none(),
            "{refused} must not be stored"
        );
    }
    assert_eq!(index.stats().await.expect("stats").instances, 61);
    // The aborted transfer left nothing in the spool, and nothing waits
    // for placement.
    archive.wait_placed().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let spool = archive.config.data_dir.join("objects/.spool");
    let leftovers: Vec<_> = walk(&spool);
    assert!(leftovers.is_empty(), "spool debris: {leftovers:?}");
    let storage = tessera::storage::Storage::open(&archive.config)
        .await
        .expect("storage");
    let report = tessera::verify::verify(&index, &storage, false, std::time::Duration::ZERO)
        .await
        .expect("verify");
    assert!(
        report.is_clean() && report.unreferenced.is_empty(),
        "{report:?}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            // The ingest journal's preallocated segments are not debris.
            if p.ends_with("journal") {
                continue;
            }
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Associations over the limit are refused with A-ASSOCIATE-RJ (transient).
async fn association_limit_rejects_politely(backend: Backend) {
    let archive = Archive::start_with(backend, |raw| raw.dicom.max_associations = Some(1)).await;
    let first = connect(&archive, EXPLICIT_LE).await;
    let second = ClientAssociationOptions::new()
        .calling_ae_title("SECOND")
        .called_ae_title("TESSERA")
        .with_presentation_context(CT_IMAGE_STORAGE, vec![EXPLICIT_LE])
        .establish_async(("127.0.0.1", archive.dicom_port))
        .await;
    let err = match second {
        Ok(_) => panic!("second association must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(err.to_lowercase().contains("reject"), "{err}");
    first.release().await.expect("release");
}

/// One client address may hold only `dicom.max_associations_per_ip` of the
/// associations; the next is refused politely.
async fn per_client_association_limit(backend: Backend) {
    let archive = Archive::start_with(backend, |raw| {
        raw.dicom.max_associations = Some(10);
        raw.dicom.max_associations_per_ip = Some(2);
    })
    .await;
    let first = connect(&archive, EXPLICIT_LE).await;
    let second = connect(&archive, EXPLICIT_LE).await;
    let third = ClientAssociationOptions::new()
        .calling_ae_title("THIRD")
        .called_ae_title("TESSERA")
        .with_presentation_context(CT_IMAGE_STORAGE, vec![EXPLICIT_LE])
        .establish_async(("127.0.0.1", archive.dicom_port))
        .await;
    let err = match third {
        Ok(_) => panic!("a third association from one address must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(err.to_lowercase().contains("reject"), "{err}");
    first.release().await.expect("release");
    second.release().await.expect("release");
    let again = connect(&archive, EXPLICIT_LE).await;
    again.release().await.expect("slots are given back");
}

/// A-ASSOCIATE-RQs the upper layer would accept and then fail on get an
/// A-ASSOCIATE-RJ (PDU type 03H): AE titles with control characters or
/// only spaces, a maximum PDU length of 1–12, an even context ID.
async fn malformed_association_requests_are_rejected(backend: Backend) {
    use dicom_ul::pdu::{AssociationRQ, PresentationContextProposed, UserVariableItem};
    let archive = Archive::start(backend).await;
    let request = |calling: &str, called: &str, max_pdu: u32, id: u8| {
        let pdu = Pdu::AssociationRQ(AssociationRQ {
            protocol_version: 1,
            calling_ae_title: calling.into(),
            called_ae_title: called.into(),
            application_context_name: "1.2.840.10008.3.1.1.1".into(),
            presentation_contexts: vec![PresentationContextProposed {
                id,
                abstract_syntax: "1.2.840.10008.1.1".into(),
                transfer_syntaxes: vec![IMPLICIT_LE.into()],
            }],
            user_variables: vec![UserVariableItem::MaxLength(max_pdu)],
        });
        let mut bytes = Vec::new();
        dicom_ul::write_pdu(&mut bytes, &pdu).expect("encode");
        bytes
    };
    let cases = [
        (
            "control character in the calling AE",
            request("BAD\u{1}AE", "TESSERA", 16384, 1),
        ),
        (
            "control character in the called AE",
            request("GOOD", "TESS\u{7f}RA", 16384, 1),
        ),
        ("all-space calling AE", {
            // The encoder refuses a blank title, so the bytes are patched.
            let mut bytes = request("PLACEHOLDER", "TESSERA", 16384, 1);
            bytes[26..42].fill(b' ');
            bytes
        }),
        ("max PDU length 12", request("GOOD", "TESSERA", 12, 1)),
        (
            "even presentation context ID",
            request("GOOD", "TESSERA", 16384, 2),
        ),
    ];
    for (what, bytes) in cases {
        let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", archive.dicom_port))
            .await
            .expect("connect");
        raw.write_all(&bytes).await.expect("send");
        let mut answer = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "{what}: no answer");
        assert_eq!(
            answer.first(),
            Some(&0x03),
            "{what}: expected an A-ASSOCIATE-RJ, got {answer:?}"
        );
    }
    // A well-formed request is still accepted.
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", archive.dicom_port))
        .await
        .expect("connect");
    raw.write_all(&request("GOOD", "TESSERA", 16384, 1))
        .await
        .expect("send");
    let mut first = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(10), raw.read_exact(&mut first))
        .await
        .expect("answered")
        .expect("read");
    assert_eq!(first[0], 0x02, "A-ASSOCIATE-AC");
}

/// The calling AE allow-list is enforced when configured.
async fn calling_ae_allow_list(backend: Backend) {
    let archive = Archive::start_with(backend, |raw| {
        raw.dicom.allowed_calling_ae_titles = Some(vec!["GOODMODALITY".into()]);
    })
    .await;
    let refused = ClientAssociationOptions::new()
        .calling_ae_title("STRANGER")
        .called_ae_title("TESSERA")
        .with_presentation_context(CT_IMAGE_STORAGE, vec![EXPLICIT_LE])
        .establish_async(("127.0.0.1", archive.dicom_port))
        .await;
    assert!(refused.is_err(), "unknown calling AE must be rejected");
    let accepted = ClientAssociationOptions::new()
        .calling_ae_title("GOODMODALITY")
        .called_ae_title("TESSERA")
        .with_presentation_context(CT_IMAGE_STORAGE, vec![EXPLICIT_LE])
        .establish_async(("127.0.0.1", archive.dicom_port))
        .await
        .expect("allowed AE accepted");
    accepted.release().await.expect("release");
}

/// A connection that never sends A-ASSOCIATE-RQ is closed after the ARTIM
/// timeout; an established association that goes quiet is aborted after
/// the idle timeout, while a busy one is not.
async fn silent_peers_are_timed_out(backend: Backend) {
    let archive = Archive::start_with(backend, |raw| {
        raw.dicom.artim_timeout_secs = Some(1);
        raw.dicom.idle_timeout_secs = Some(2);
    })
    .await;
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", archive.dicom_port))
        .await
        .expect("connect");
    let started = std::time::Instant::now();
    let closed =
        tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut Vec::new())).await;
    assert!(closed.is_ok(), "silent connection closed");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before ARTIM"
    );

    let mut client = connect(&archive, EXPLICIT_LE).await;
    let started = std::time::Instant::now();
    let pdu = tokio::time::timeout(Duration::from_secs(10), client.receive())
        .await
        .expect("server acts");
    assert!(
        matches!(pdu, Ok(Pdu::AbortRQ { .. }) | Err(_)),
        "idle association aborted: {pdu:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "not before the idle timeout"
    );
}

on_both_backends!(
    silent_peers_are_timed_out,
    bad_input_is_refused_and_others_keep_storing,
    association_limit_rejects_politely,
    per_client_association_limit,
    malformed_association_requests_are_rejected,
    calling_ae_allow_list,
);
