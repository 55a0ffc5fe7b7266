//! Replays the saved fuzzing corpora (`fuzz/corpus/<target>/`: the seeds,
//! and the inputs AFL++ found that reach new code or once crashed) through
//! the same entry points the fuzzer drives. Each must return without a
//! panic. Long fuzzing runs outside the suite; see docs/fuzzing.md.

use std::path::Path;

use tessera::fuzzing::TARGETS;

const HANG: std::time::Duration = std::time::Duration::from_secs(20);

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
            let run = *run;
            let (done, finished) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let outcome = std::panic::catch_unwind(|| run(&data));
                let _ = done.send(outcome.is_ok());
            });
            // Far beyond any real input (each takes microseconds): only a
            // hang, such as a huge allocation being zeroed, gets here.
            match finished.recv_timeout(HANG) {
                Ok(true) => {}
                Ok(false) => panic!("{name}: {} panicked", input.display()),
                Err(_) => panic!("{name}: {} hangs", input.display()),
            }
        }
        eprintln!("{name}: {} inputs replayed", inputs.len());
    }
}
