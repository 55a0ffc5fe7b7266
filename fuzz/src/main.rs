//! One AFL++ harness for every target in `tessera::fuzzing::TARGETS`; the
//! first argument names the target: `tessera-fuzz pdu`.

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some((_, run)) = tessera::fuzzing::TARGETS.iter().find(|(n, _)| *n == name) else {
        let names: Vec<_> = tessera::fuzzing::TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!("usage: tessera-fuzz <{}>", names.join("|"));
        std::process::exit(2);
    };
    // Without afl's abort-on-panic hook: Tessera catches the panics dicom-rs
    // raises on some malformed input and refuses the input, which is the
    // behaviour to fuzz. A panic that escapes still aborts (a crash).
    afl::fuzz_nohook!(|data: &[u8]| run(data));
}
