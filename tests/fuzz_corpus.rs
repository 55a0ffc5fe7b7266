//! Replays the saved fuzzing corpora (`fuzz/corpus/<target>/`: the seeds,
//! and the inputs AFL++ found that reach new code or once crashed) through
//! the same entry points the fuzzer drives. Each must return without a
//! panic. Long fuzzing runs outside the suite; see docs/fuzzing.md.

use std::path::Path;

use tessera::fuzzing::TARGETS;

#[test]
fn every_saved_input_is_handled() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (name, run) in TARGETS {
        let dir = root.join(name);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
            .map(|e| e.expect("corpus entry").path())
            .filter(|p| p.is_file())
            .collect();
        inputs.sort();
        assert!(
            inputs.len() >= 4,
            "corpus {name} holds only {} inputs",
            inputs.len()
        );
        for input in &inputs {
            let data = std::fs::read(input).expect("read input");
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{name}: {} panicked", input.display());
        }
        eprintln!("{name}: {} inputs replayed", inputs.len());
    }
}
