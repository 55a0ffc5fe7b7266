//! C-FIND SCP against DCMTK findscu: Patient Root and Study Root at every
//! level, each matching type of PS3.4 C.2.2.2.2, diacritic-insensitive
//! names, counters, C-CANCEL and the result limit. Responses are extracted
//! with `-X` and checked attribute by attribute.

use crate::common;

use std::path::{Path, PathBuf};

use common::{dcmtk, python, run_peer, skip, Archive, Backend};
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{open_file, DefaultDicomObject};

/// Four studies for three patients.
async fn load(archive: &Archive) -> Vec<PathBuf> {
    let root = archive.dir.path().join("corpus");
    let sets: [(&str, &[&str]); 3] = [
        (
            "a",
            &[
                "--count",
                "4",
                "--seed",
                "31",
                "--patient-name",
                "Nguyễn^Văn",
                "--study-date",
                "20200315",
            ],
        ),
        (
            "b",
            &[
                "--count",
                "3",
                "--seed",
                "32",
                "--patient-name",
                "Müller^Hans",
                "--study-date",
                "20211120",
                "--modality",
                "MR",
                "--sps-id",
                "SPS-2",
            ],
        ),
        (
            "c",
            &[
                "--count",
                "2",
                "--studies",
                "2",
                "--seed",
                "33",
                "--patient-name",
                "DOE^JOHN",
                "--study-date",
                "20220101",
            ],
        ),
    ];
    let mut dirs = Vec::new();
    for (name, args) in sets {
        let dir = root.join(name);
        let mut all = vec![dir.to_str().expect("utf8")];
        all.extend_from_slice(args);
        assert!(run_peer("gen.py", &all).await.status.success());
        dirs.push(dir);
    }
    let port = archive.dicom_port.to_string();
    let mut args = vec!["127.0.0.1".to_owned(), port];
    args.extend(dirs.iter().map(|d| d.to_str().expect("utf8").to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(run_peer("send.py", &args).await.status.success());
    dirs
}

struct Found {
    responses: Vec<DefaultDicomObject>,
    output: String,
}

impl Found {
    fn values(&self, tag: Tag) -> Vec<String> {
        let mut v: Vec<String> = self
            .responses
            .iter()
            .map(|r| {
                r.element(tag)
                    .ok()
                    .and_then(|e| {
                        e.to_str()
                            .ok()
                            .map(|s| s.trim_end_matches(['\0', ' ']).to_owned())
                    })
                    .unwrap_or_default()
            })
            .collect();
        v.sort();
        v
    }
}

/// Run findscu with -X into a fresh directory and read every response.
async fn find(archive: &Archive, model: &str, keys: &[&str], extra: &[&str]) -> Found {
    let findscu = dcmtk("findscu").expect("checked by caller");
    let out_dir = tempfile::tempdir().expect("tmp");
    let mut cmd = tokio::process::Command::new(findscu);
    cmd.args(["-v", model, "-X", "-od"])
        .arg(out_dir.path())
        .args(extra);
    for k in keys {
        cmd.args(["-k", k]);
    }
    cmd.args(archive.ae_args());
    let out = cmd.output().await.expect("findscu runs");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(out_dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let responses = files
        .iter()
        .map(|f| open_file(f).expect("response parses"))
        .collect();
    Found { responses, output }
}

fn count(found: &Found) -> usize {
    found.responses.len()
}

fn study_uid_of(dir: &Path) -> String {
    let file = dir.join("img00000.dcm");
    let obj = open_file(&file).expect("sample");
    obj.element(tags::STUDY_INSTANCE_UID)
        .expect("uid")
        .to_str()
        .expect("text")
        .trim_end_matches('\0')
        .to_owned()
}

async fn study_root_matching(backend: Backend) {
    let (Some(_), Some(_)) = (dcmtk("findscu"), python()) else {
        return skip("study_root_matching", "DCMTK findscu or pynetdicom missing");
    };
    let archive = Archive::start(backend).await;
    let dirs = load(&archive).await;
    let s = "-S";

    // Universal: all studies, with counters and the character set.
    let all = find(
        &archive,
        s,
        &[
            "QueryRetrieveLevel=STUDY",
            "StudyInstanceUID",
            "PatientName",
            "NumberOfStudyRelatedInstances",
            "NumberOfStudyRelatedSeries",
            "ModalitiesInStudy",
        ],
        &[],
    )
    .await;
    assert_eq!(count(&all), 4, "{}", all.output);
    assert_eq!(
        all.values(tags::SPECIFIC_CHARACTER_SET),
        vec!["ISO_IR 192"; 4]
    );
    assert_eq!(
        all.values(tags::NUMBER_OF_STUDY_RELATED_INSTANCES),
        vec!["1", "1", "3", "4"]
    );
    assert_eq!(
        all.values(tags::NUMBER_OF_STUDY_RELATED_SERIES),
        vec!["1"; 4]
    );
    assert_eq!(
        all.values(tags::MODALITIES_IN_STUDY),
        vec!["CT", "CT", "CT", "MR"]
    );
    assert_eq!(all.values(tags::QUERY_RETRIEVE_LEVEL), vec!["STUDY"; 4]);

    // Wildcard and single value on names: case- and diacritic-insensitive.
    let f = find(
        &archive,
        s,
        &["QueryRetrieveLevel=STUDY", "PatientName=nguyen*"],
        &[],
    )
    .await;
    assert_eq!(
        f.values(tags::PATIENT_NAME),
        vec!["Nguyễn^Văn"],
        "{}",
        f.output
    );
    let f = find(
        &archive,
        s,
        &["QueryRetrieveLevel=STUDY", "PatientName=MULLER^HANS"],
        &[],
    )
    .await;
    assert_eq!(f.values(tags::PATIENT_NAME), vec!["Müller^Hans"]);
    let f = find(
        &archive,
        s,
        &["QueryRetrieveLevel=STUDY", "PatientName=D?E*"],
        &[],
    )
    .await;
    assert_eq!(count(&f), 2);

    // Single value on text is exact.
    let f = find(
        &archive,
        s,
        &["QueryRetrieveLevel=STUDY", "StudyDate=20220101"],
        &[],
    )
    .await;
    assert_eq!(count(&f), 2);
    let f = find(
        &archive,
        s,
        &[
            "QueryRetrieveLevel=STUDY",
            "AccessionNumber=ACC*",
            "StudyDate",
        ],
        &[],
    )
    .await;
    assert_eq!(count(&f), 4);

    // Date ranges: closed, open at either end.
    let f = find(
        &archive,
        s,
        &["QueryRetrieveLevel=STUDY", "StudyDate=20210101-20211231"],
        &[],
    )
    .await;
    assert_eq!(f.values(tags::STUDY_DATE), vec!["20211120"]);
    let f = find(
        &archive,
        s,
        &["QueryRetrieveLevel=STUDY", "StudyDate=-20201231"],
        &[],
    )
    .await;
    assert_eq!(f.values(tags::STUDY_DATE), vec!["20200315"]);
    let f = find(
        &archive,
        s,
        &["QueryRetrieveLevel=STUDY", "StudyDate=20211121-"],
        &[],
    )
    .await;
    assert_eq!(f.values(tags::STUDY_DATE), vec!["20220101", "20220101"]);
    let f = find(
        &archive,
        s,
        &[
            "QueryRetrieveLevel=STUDY",
            "StudyTime=1100-1300",
            "StudyDate",
        ],
        &[],
    )
    .await;
    assert_eq!(count(&f), 4, "time range includes 120000");

    // UID list, and multi-valued ModalitiesInStudy.
    let (a, b) = (study_uid_of(&dirs[0]), study_uid_of(&dirs[1]));
    let list = format!("StudyInstanceUID={a}\\{b}");
    let f = find(&archive, s, &["QueryRetrieveLevel=STUDY", &list], &[]).await;
    let mut expected = vec![a.clone(), b.clone()];
    expected.sort();
    assert_eq!(f.values(tags::STUDY_INSTANCE_UID), expected);
    let f = find(
        &archive,
        s,
        &["QueryRetrieveLevel=STUDY", "ModalitiesInStudy=MR"],
        &[],
    )
    .await;
    assert_eq!(count(&f), 1);

    // Series and image level below a study.
    let key = format!("StudyInstanceUID={a}");
    let f = find(
        &archive,
        s,
        &[
            "QueryRetrieveLevel=SERIES",
            &key,
            "SeriesInstanceUID",
            "Modality",
            "NumberOfSeriesRelatedInstances",
        ],
        &[],
    )
    .await;
    assert_eq!(
        f.values(tags::NUMBER_OF_SERIES_RELATED_INSTANCES),
        vec!["4"]
    );
    assert_eq!(
        f.values(tags::STUDY_INSTANCE_UID),
        vec![a.clone()],
        "unique keys above the level are returned"
    );
    let f = find(
        &archive,
        s,
        &[
            "QueryRetrieveLevel=IMAGE",
            &key,
            "SOPInstanceUID",
            "InstanceNumber",
            "Rows",
        ],
        &[],
    )
    .await;
    assert_eq!(f.values(tags::INSTANCE_NUMBER), vec!["1", "2", "3", "4"]);
    assert_eq!(count(&f), 4);
    let rows: Vec<u16> = f
        .responses
        .iter()
        .map(|r| r.element(tags::ROWS).expect("rows").to_int().expect("US"))
        .collect();
    assert_eq!(rows, vec![64; 4]);
    let f = find(
        &archive,
        s,
        &["QueryRetrieveLevel=IMAGE", &key, "InstanceNumber=3"],
        &[],
    )
    .await;
    assert_eq!(count(&f), 1);

    // A key the index does not hold is returned empty.
    let f = find(
        &archive,
        s,
        &[
            "QueryRetrieveLevel=STUDY",
            "PatientName=DOE*",
            "InstitutionName",
        ],
        &[],
    )
    .await;
    assert_eq!(f.values(tags::INSTITUTION_NAME), vec!["", ""]);
}

async fn patient_root_levels(backend: Backend) {
    let (Some(_), Some(_)) = (dcmtk("findscu"), python()) else {
        return skip("patient_root_levels", "DCMTK findscu or pynetdicom missing");
    };
    let archive = Archive::start(backend).await;
    load(&archive).await;
    let p = "-P";
    let f = find(
        &archive,
        p,
        &[
            "QueryRetrieveLevel=PATIENT",
            "PatientID",
            "PatientName",
            "NumberOfPatientRelatedStudies",
            "NumberOfPatientRelatedInstances",
        ],
        &[],
    )
    .await;
    // Set "c" has two patients (PID33-0, PID33-1) with a study each.
    assert_eq!(count(&f), 4, "{}", f.output);
    assert_eq!(
        f.values(tags::NUMBER_OF_PATIENT_RELATED_STUDIES),
        vec!["1"; 4]
    );
    assert_eq!(
        f.values(tags::NUMBER_OF_PATIENT_RELATED_INSTANCES),
        vec!["1", "1", "3", "4"]
    );
    let f = find(
        &archive,
        p,
        &[
            "QueryRetrieveLevel=STUDY",
            "PatientID=PID33-*",
            "StudyInstanceUID",
        ],
        &[],
    )
    .await;
    assert_eq!(count(&f), 2);
    assert_eq!(
        f.values(tags::PATIENT_ID).len(),
        2,
        "PatientID is returned at study level"
    );
    // PATIENT level does not exist in Study Root.
    let f = find(&archive, "-S", &["QueryRetrieveLevel=PATIENT"], &[]).await;
    assert_eq!(count(&f), 0);
    assert!(
        f.output
            .contains("Final Find Response (Error: DataSetDoesNotMatchSOPClass)"),
        "{}",
        f.output
    );
}

async fn cancel_and_limit(backend: Backend) {
    let (Some(_), Some(_)) = (dcmtk("findscu"), python()) else {
        return skip("cancel_and_limit", "DCMTK findscu or pynetdicom missing");
    };
    // C-CANCEL: many matches, cancelled after the first response.
    let archive = Archive::start(backend).await;
    let many = archive.dir.path().join("many");
    let dir = many.to_str().expect("utf8");
    assert!(run_peer(
        "gen.py",
        &[dir, "--count", "400", "--rows", "8", "--cols", "8", "--seed", "34"]
    )
    .await
    .status
    .success());
    let port = archive.dicom_port.to_string();
    assert!(
        run_peer("send.py", &["127.0.0.1", &port, dir, "--assocs", "4"])
            .await
            .status
            .success()
    );
    let f = find(
        &archive,
        "-S",
        &["QueryRetrieveLevel=IMAGE", "SOPInstanceUID"],
        &["--cancel", "1"],
    )
    .await;
    assert!(
        count(&f) < 400,
        "cancel stopped the responses: {}",
        count(&f)
    );
    assert!(
        f.output.contains("Final Find Response (Cancel"),
        "{}",
        f.output
    );

    // The result limit ends the query with A700 after the limit.
    let archive = Archive::start_with(backend, |raw| raw.dicom.max_find_results = Some(3)).await;
    load(&archive).await;
    let f = find(
        &archive,
        "-S",
        &["QueryRetrieveLevel=IMAGE", "SOPInstanceUID"],
        &[],
    )
    .await;
    assert_eq!(count(&f), 3, "{}", f.output);
    assert!(
        f.output
            .contains("Final Find Response (Refused: OutOfResources)"),
        "{}",
        f.output
    );
}

/// Extended negotiation: combined date-time matching applies the StudyDate
/// and StudyTime ranges as one range; without it they apply separately.
/// With `fuzzy_person_names = false` names match exactly as stored.
async fn combined_date_time_and_exact_names(backend: Backend) {
    let Some(_) = python() else {
        return skip("combined_date_time_and_exact_names", "pynetdicom missing");
    };
    let archive =
        Archive::start_with(backend, |raw| raw.dicom.fuzzy_person_names = Some(false)).await;
    let dirs = load(&archive).await;
    let study_a = study_uid_of(&dirs[0]); // 20200315 120000
    let port = archive.dicom_port.to_string();
    let find = |ext: &'static str, keys: Vec<&'static str>| {
        let port = port.clone();
        async move {
            let mut args = vec!["127.0.0.1", port.as_str(), "--ext", ext];
            for k in &keys {
                args.push("--key");
                args.push(k);
            }
            let out = run_peer("find_ext.py", &args).await;
            assert!(out.status.success());
            serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
        }
    };
    // 2020-03-14 13:00 to 2020-03-15 12:30 contains 2020-03-15 12:00 ...
    let keys = vec!["StudyDate=20200314-20200315", "StudyTime=1300-1230"];
    let combined = find("010101", keys.clone()).await;
    assert_eq!(combined["accepted"], "010101", "{combined}");
    assert_eq!(combined["matches"], serde_json::json!([study_a]));
    // ... but no time of day lies between 13:00 and 12:30.
    let separate = find("000000", keys).await;
    assert_eq!(separate["accepted"], "000000");
    assert_eq!(separate["matches"], serde_json::json!([]));
    // Exact names: the stored spelling matches, the folded one does not.
    let exact = find("00", vec!["PatientName=Müller*"]).await;
    assert_eq!(
        exact["matches"].as_array().map(Vec::len),
        Some(1),
        "{exact}"
    );
    let folded = find("00", vec!["PatientName=muller*"]).await;
    assert_eq!(folded["matches"], serde_json::json!([]), "{folded}");
}

/// Single-item sequence matching (PS3.4 C.2.2.2.6) on the Request
/// Attributes Sequence, and the sequence returned with its item.
async fn sequence_matching(backend: Backend) {
    let (Some(_), Some(_)) = (dcmtk("findscu"), python()) else {
        return skip("sequence_matching", "DCMTK findscu or pynetdicom missing");
    };
    let archive = Archive::start(backend).await;
    let dirs = load(&archive).await;
    let mr_study = format!("StudyInstanceUID={}", study_uid_of(&dirs[1]));
    let series = |sps: &'static str| {
        let study = mr_study.clone();
        let archive = &archive;
        async move {
            let mut keys = vec![
                "QueryRetrieveLevel=SERIES".to_owned(),
                study,
                "SeriesInstanceUID".to_owned(),
            ];
            keys.push(match sps {
                "" => "RequestAttributesSequence".to_owned(),
                sps => format!("RequestAttributesSequence[0].ScheduledProcedureStepID={sps}"),
            });
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            find(archive, "-S", &keys, &[]).await
        }
    };
    let item_value = |found: &Found, tag: Tag| -> Vec<String> {
        found
            .responses
            .iter()
            .map(|r| {
                r.element(tags::REQUEST_ATTRIBUTES_SEQUENCE)
                    .ok()
                    .and_then(|e| e.items().and_then(|i| i.first()))
                    .and_then(|item| item.element(tag).ok())
                    .and_then(|e| e.to_str().ok())
                    .map(|s| s.trim_end_matches(['\0', ' ']).to_owned())
                    .unwrap_or_default()
            })
            .collect()
    };

    let matching = series("SPS-2").await;
    assert_eq!(count(&matching), 1, "{}", matching.output);
    assert_eq!(
        item_value(&matching, tags::SCHEDULED_PROCEDURE_STEP_ID),
        vec!["SPS-2"]
    );
    let wildcard = series("SPS-*").await;
    assert_eq!(count(&wildcard), 1, "{}", wildcard.output);
    let other = series("SPS-1").await;
    assert_eq!(count(&other), 0, "{}", other.output);

    // An empty sequence asks for the item as stored.
    let universal = series("").await;
    assert_eq!(count(&universal), 1, "{}", universal.output);
    assert_eq!(
        item_value(&universal, tags::SCHEDULED_PROCEDURE_STEP_ID),
        vec!["SPS-2"]
    );
    assert_eq!(
        item_value(&universal, tags::REQUESTED_PROCEDURE_ID),
        vec!["RP-1"]
    );
}

/// The status of each response to a C-FIND until the final one, read off
/// the raw stream; `None` for the final one when the association ended
/// (A-ABORT or a closed socket) instead.
async fn responses(stream: &mut tokio::net::tcp::OwnedReadHalf) -> (usize, Option<u16>) {
    use tessera::dimse::command::Command;
    use tokio::io::AsyncReadExt;
    let mut pending = 0;
    loop {
        let mut head = [0u8; 6];
        if stream.read_exact(&mut head).await.is_err() || head[0] != 0x04 {
            return (pending, None);
        }
        let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
        let mut body = vec![0u8; len];
        if stream.read_exact(&mut body).await.is_err() {
            return (pending, None);
        }
        let mut at = 0;
        while at + 6 <= body.len() {
            let item = u32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
            let value = &body[at + 6..at + 4 + item as usize];
            if body[at + 5] & 0x01 != 0 {
                let status = Command::decode(value)
                    .expect("response command")
                    .status
                    .expect("status")
                    .code();
                if status == 0xFF00 || status == 0xFF01 {
                    pending += 1;
                } else {
                    return (pending, Some(status));
                }
            }
            at += 4 + item as usize;
        }
    }
}

/// A C-CANCEL whose PDU arrives in two pieces, a pause apart, while the
/// matches stream out is read whole: the query ends with Cancel (FE00)
/// and the association is then released normally. Reading a command is
/// polled between matches; a poll that gave up half way must keep the
/// half it had read.
async fn a_cancel_arriving_in_pieces_is_read_whole(backend: Backend) {
    use tessera::dimse::command::{request, CommandField};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let archive = Archive::start_with(backend, |raw| {
        raw.dicom.max_find_results = Some(100_000);
    })
    .await;
    let (study, series) = index_many(&archive, 10_000).await;
    let stream = finder(archive.dicom_port, &study, &series, None).await;
    let (mut read, mut write) = stream.into_split();
    let reader = tokio::spawn(async move {
        let outcome = responses(&mut read).await;
        (outcome, read)
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;

    let mut cancel = request(CommandField::CCancelRq, 2, "1.2.840.10008.5.1.4.1.2.2.1");
    cancel.message_id_responded_to = Some(1);
    let pdu = dicom_ul::Pdu::PData {
        data: vec![dicom_ul::pdu::PDataValue {
            presentation_context_id: 1,
            value_type: dicom_ul::pdu::PDataValueType::Command,
            is_last: true,
            data: cancel.encode().expect("encode"),
        }],
    };
    let mut bytes = Vec::new();
    dicom_ul::write_pdu(&mut bytes, &pdu).expect("encode");
    // The PDU and PDV headers and the start of the command set, then the rest.
    write.write_all(&bytes[..30]).await.expect("first piece");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    write.write_all(&bytes[30..]).await.expect("second piece");

    let ((pending, status), mut read) = reader.await.expect("reader");
    assert_eq!(status, Some(0xFE00), "after {pending} matches");
    assert!(pending < 10_000, "{pending} matches");
    let mut release = Vec::new();
    dicom_ul::write_pdu(&mut release, &dicom_ul::Pdu::ReleaseRQ).expect("encode");
    write.write_all(&release).await.expect("A-RELEASE-RQ");
    let mut head = [0u8; 6];
    read.read_exact(&mut head).await.expect("A-RELEASE-RP");
    assert_eq!(head[0], 0x06, "A-RELEASE-RP");
}

on_both_backends!(
    a_cancel_arriving_in_pieces_is_read_whole,
    stalled_finders_do_not_block_stores,
    sequence_matching,
    study_root_matching,
    patient_root_levels,
    cancel_and_limit,
    combined_date_time_and_exact_names
);

/// Index `count` synthetic instances in one series straight through the
/// index API (C-FIND needs rows, not objects); returns (study, series).
async fn index_many(archive: &Archive, count: usize) -> (String, String) {
    let study = "2.25.4242".to_owned();
    let series = "2.25.4242.1".to_owned();
    let index = archive.index().await;
    let requests: Vec<_> = (0..count)
        .map(|n| {
            let sop = format!("2.25.4242.1.{n}");
            common::ct_store_request("FLOOD", &study, &series, &sop, n as u64)
        })
        .collect();
    for batch in requests.chunks(500) {
        index
            .record_batch(
                batch,
                tessera::config::DuplicatePolicy::KeepFirst,
                tessera::index::Durability::Synced,
            )
            .await
            .expect("indexed");
    }
    (study, series)
}

/// Open an association with a tiny receive buffer, send an IMAGE-level
/// C-FIND for every instance of the series, and never read the answers.
async fn stalled_finder(port: u16, study: &str, series: &str) -> tokio::net::TcpStream {
    finder(port, study, series, Some(4096)).await
}

/// Open an association (with `rcvbuf` as its receive buffer size) and send
/// an IMAGE-level C-FIND, message ID 1, for every instance of the series.
async fn finder(
    port: u16,
    study: &str,
    series: &str,
    rcvbuf: Option<u32>,
) -> tokio::net::TcpStream {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_object::InMemDicomObject;
    use dicom_ul::pdu::{
        AssociationRQ, PDataValue, PDataValueType, PresentationContextProposed, UserVariableItem,
    };
    use dicom_ul::Pdu;
    use tessera::dimse::command::{request, CommandField};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
    const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    if let Some(size) = rcvbuf {
        socket.set_recv_buffer_size(size).expect("rcvbuf");
    }
    let mut stream = socket
        .connect(([127, 0, 0, 1], port).into())
        .await
        .expect("connect");
    let rq = Pdu::AssociationRQ(AssociationRQ {
        protocol_version: 1,
        calling_ae_title: "FINDER".into(),
        called_ae_title: "TESSERA".into(),
        application_context_name: "1.2.840.10008.3.1.1.1".into(),
        presentation_contexts: vec![PresentationContextProposed {
            id: 1,
            abstract_syntax: FIND.into(),
            transfer_syntaxes: vec![IMPLICIT_LE.into()],
        }],
        user_variables: vec![UserVariableItem::MaxLength(16384)],
    });
    let mut bytes = Vec::new();
    dicom_ul::write_pdu(&mut bytes, &rq).expect("encode");
    stream.write_all(&bytes).await.expect("send RQ");
    let mut head = [0u8; 6];
    stream.read_exact(&mut head).await.expect("AC header");
    assert_eq!(head[0], 0x02, "A-ASSOCIATE-AC");
    let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
    let mut rest = vec![0u8; len];
    stream.read_exact(&mut rest).await.expect("AC body");

    let mut command = request(CommandField::CFindRq, 1, FIND);
    command.priority = Some(0);
    command.has_dataset = true;
    let mut identifier = InMemDicomObject::new_empty();
    for (tag, vr, value) in [
        (tags::QUERY_RETRIEVE_LEVEL, VR::CS, "IMAGE"),
        (tags::STUDY_INSTANCE_UID, VR::UI, study),
        (tags::SERIES_INSTANCE_UID, VR::UI, series),
        (tags::SOP_INSTANCE_UID, VR::UI, ""),
        (tags::INSTANCE_NUMBER, VR::IS, ""),
    ] {
        identifier.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
    }
    let ts = dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN.erased();
    let mut data = Vec::new();
    identifier
        .write_dataset_with_ts(&mut data, &ts)
        .expect("identifier");
    for (kind, value) in [
        (PDataValueType::Command, command.encode().expect("command")),
        (PDataValueType::Data, data),
    ] {
        let pdu = Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: 1,
                value_type: kind,
                is_last: true,
                data: value,
            }],
        };
        let mut bytes = Vec::new();
        dicom_ul::write_pdu(&mut bytes, &pdu).expect("encode");
        stream.write_all(&bytes).await.expect("send");
    }
    stream
}

/// Twenty requesters that ask for thousands of matches and then stop
/// reading hold sockets, never the index: DCMTK stores 200 instances
/// meanwhile, every one successfully.
async fn stalled_finders_do_not_block_stores(backend: Backend) {
    let (Some(storescu), Some(_)) = (dcmtk("storescu"), python()) else {
        return skip(
            "stalled_finders_do_not_block_stores",
            "DCMTK or pydicom missing",
        );
    };
    let archive = Archive::start_with(backend, |raw| {
        raw.dicom.max_find_results = Some(100_000);
    })
    .await;
    let (study, series) = index_many(&archive, 3000).await;
    let mut stalled = Vec::new();
    for _ in 0..20 {
        stalled.push(stalled_finder(archive.dicom_port, &study, &series).await);
    }
    let corpus = archive.dir.path().join("stores");
    let out = run_peer(
        "gen.py",
        &[
            corpus.to_str().expect("utf8"),
            "--count",
            "200",
            "--seed",
            "91",
        ],
    )
    .await;
    assert!(out.status.success());
    let files: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .collect();
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        tokio::process::Command::new(storescu)
            .env("TCP_NODELAY", "1")
            .args(archive.ae_args())
            .args(&files)
            .output(),
    )
    .await
    .expect("storescu finished within 120 s")
    .expect("storescu runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats = archive.index().await.stats().await.expect("stats");
    assert_eq!(stats.instances, 3000 + 200);
    drop(stalled);
}
