//! Entry points for coverage-guided fuzzing (the `fuzz/` crate, run with
//! AFL++) and for the replay of the saved corpora in the test suite. Each
//! takes arbitrary bytes and drives one parser that network input reaches.
//! None may panic, hang or allocate without bound; an error is an answer.

use crate::dimse::command::Command;

/// A target: its name (the corpus folder under `fuzz/corpus/`) and the
/// function that runs one input.
pub type Target = (&'static str, fn(&[u8]));

pub const TARGETS: &[Target] = &[
    ("pdu", pdu),
    ("command", command),
    ("header", header),
    ("multipart", multipart),
    ("qido", qido),
    ("identifier", identifier),
];

/// A PDU as an association reads it: the A-ASSOCIATE-RQ screen, then
/// dicom-ul's decoder with Tessera's settings, then the P-DATA-TF framing
/// the association reads data with, PDV by PDV.
pub fn pdu(data: &[u8]) {
    let _ = crate::dimse::screen::judge(data);
    let _ = dicom_ul::pdu::read_pdu(data, 16_384, true);
    pdata(data);
}

fn pdata(data: &[u8]) {
    use crate::dimse::pdata::{Framing, Next};
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    else {
        return;
    };
    runtime.block_on(async {
        let mut framing = Framing::new(16_384, std::time::Duration::from_secs(1));
        let mut stream = data;
        let mut buf = bytes::BytesMut::new();
        let mut value = Vec::new();
        while let Ok(Next::Pdv(pdv)) = framing.next(&mut stream, &mut buf).await {
            assert!(pdv.left < 16_384, "a PDV longer than its PDU");
            value.clear();
            if framing
                .read_value(&mut stream, &mut buf, &mut value, usize::MAX)
                .await
                .is_err()
            {
                return;
            }
            assert_eq!(value.len(), pdv.left, "a PDV value read short");
        }
    });
}

/// A DIMSE command set; one that decodes must encode and decode again to
/// the same command.
pub fn command(data: &[u8]) {
    if let Ok(decoded) = Command::decode(data) {
        if let Ok(encoded) = decoded.encode() {
            let again = Command::decode(&encoded);
            assert!(again.is_ok(), "a re-encoded command set does not decode");
        }
    }
}

/// The header walk ingest runs on every received object.
pub fn header(data: &[u8]) {
    let _ = crate::ingest::fuzz_header(data);
}

/// A STOW-RS body through the structure limits and the multipart parser.
pub fn multipart(data: &[u8]) {
    let _ = crate::dicomweb::fuzz::stow_body(data);
}

/// A C-FIND/C-MOVE/C-GET identifier; the first byte picks the transfer
/// syntax it is read in.
pub fn identifier(data: &[u8]) {
    const SYNTAXES: [&str; 4] = [
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.1.99",
    ];
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let ts = SYNTAXES[usize::from(*first) % SYNTAXES.len()];
    let _ =
        crate::dimse::service::identifier::parse_identifier(rest, ts, crate::query::Root::Study);
}

/// A QIDO-RS query string (taken as UTF-8, lossily).
pub fn qido(data: &[u8]) {
    let _ = crate::dicomweb::fuzz::query_string(&String::from_utf8_lossy(data));
}
