//! One AFL++ harness for every target in `tessera::fuzzing::TARGETS`; the
//! first argument names the target: `tessera-fuzz pdu`.

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some((_, run)) = tessera::fuzzing::TARGETS.iter().find(|(n, _)| *n == name) else {
        let names: Vec<_> = tessera::fuzzing::TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!("usage: tessera-fuzz <{}>", names.join("|"));
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| run(data));
}
