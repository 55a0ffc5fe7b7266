//! Replays the saved fuzzing corpora (`fuzz/corpus/<target>/`: the seeds,
//! and the inputs AFL++ found that reach new code or once crashed or hung)
//! through the same entry points the fuzzer drives. Each must return
//! without a panic, and no input may make an allocation larger than
//! [`MAX_ALLOCATION`]: a parser that allocates what a header declares is
//! caught here even when the machine has the memory to spare. Long fuzzing
//! runs outside the suite; see docs/fuzzing.md.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use tessera::fuzzing::TARGETS;

const HANG: std::time::Duration = std::time::Duration::from_secs(20);

/// Far more than any saved input needs (they are at most a few KiB).
const MAX_ALLOCATION: usize = 64 * 1024 * 1024;

/// The system allocator, recording the largest single request.
struct Recording;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to `System` unchanged.
unsafe impl GlobalAlloc for Recording {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Recording = Recording;

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
            LARGEST.store(0, Ordering::Relaxed);
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
            let largest = LARGEST.load(Ordering::Relaxed);
            assert!(
                largest <= MAX_ALLOCATION,
                "{name}: {} made an allocation of {largest} bytes",
                input.display()
            );
        }
        eprintln!("{name}: {} inputs replayed", inputs.len());
    }
}
