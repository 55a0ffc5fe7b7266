//! The power-loss guarantee, proven from the system calls: a kill -9 test
//! cannot notice a missing fsync, because the page cache outlives the
//! process. Here `strace` follows a running server while DCMTK's storescu
//! sends instances one by one, and every C-STORE-RSP written to the socket
//! must come after the fsyncs that make its instance survive a power cut.
//! By default that is the ingest journal's fdatasync (the object and what
//! redoes its index rows). With `storage.place_before_ack` it is the object
//! file, its directory (after the rename) and the SQLite WAL (the index
//! commit), in that order. The same check must fail on a server run with
//! `storage.fsync = false`, or it would prove nothing.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::{dcmtk, python, run_peer, skip, ServerProcess};

const NAME: &str = "every_success_follows_its_fsyncs";

/// A C-STORE-RSP command field, (0000,0100) US 8001 in Implicit VR LE, as
/// strace -xx prints it.
const STORE_RSP: &str = r"\x00\x00\x00\x01\x02\x00\x00\x00\x01\x80";

/// One durable step seen in the trace, completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Journal,
    ObjectFile,
    ObjectDir,
    IndexCommit,
}

/// What the trace shows between two store responses.
#[derive(Debug, Default)]
struct Interval {
    steps: Vec<Step>,
}

/// The durable step an fsync of `path` is, if any.
fn step_of(path: &str, objects: &str) -> Option<Step> {
    if path.ends_with("index.sqlite-wal") || path.ends_with("index.sqlite") {
        Some(Step::IndexCommit)
    } else if path.contains("/journal/segment-") {
        Some(Step::Journal)
    } else if path.starts_with(objects) && (path.ends_with(".part") || path.ends_with(".dcm")) {
        Some(Step::ObjectFile)
    } else if path.starts_with(objects) {
        Some(Step::ObjectDir)
    } else {
        None
    }
}

/// The fd path in `fsync(12</a/b>` or `fdatasync(12</a/b>`, which strace
/// -xx prints as `\xHH` escapes.
fn fsync_path(call: &str) -> Option<String> {
    let rest = call
        .strip_prefix("fsync(")
        .or_else(|| call.strip_prefix("fdatasync("))?;
    let start = rest.find('<')? + 1;
    let end = rest[start..].find('>')? + start;
    let bytes = rest[start..end]
        .split("\\x")
        .filter(|h| !h.is_empty())
        .map(|h| u8::from_str_radix(h, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// Split the trace at each C-STORE-RSP sent, collecting the fsyncs that
/// completed before it. strace -f interleaves threads: a call may be
/// printed `<unfinished ...>` and finish later as `<... resumed>`.
fn intervals(trace: &str, objects: &str) -> Vec<Interval> {
    let mut out = Vec::new();
    let mut current = Interval::default();
    let mut pending: HashMap<&str, Step> = HashMap::new();
    for line in trace.lines() {
        let Some((pid, call)) = line.split_once(' ') else {
            continue;
        };
        let call = call.trim_start();
        if let Some(path) = fsync_path(call) {
            if let Some(step) = step_of(&path, objects) {
                if call.ends_with("<unfinished ...>") {
                    pending.insert(pid, step);
                } else if call.ends_with("= 0") {
                    current.steps.push(step);
                }
            }
        } else if call.starts_with("<... fsync resumed>")
            || call.starts_with("<... fdatasync resumed>")
        {
            if let Some(step) = pending.remove(pid) {
                if call.ends_with("= 0") {
                    current.steps.push(step);
                }
            }
        } else if call.contains(STORE_RSP)
            && ["write(", "writev(", "sendto(", "sendmsg("]
                .iter()
                .any(|c| call.starts_with(c))
        {
            out.push(std::mem::take(&mut current));
        }
    }
    out
}

/// A check of what a response must follow.
type Durable = fn(&Interval) -> bool;

/// Whether the interval holds a sync of the ingest journal.
fn journaled(interval: &Interval) -> bool {
    interval.steps.contains(&Step::Journal)
}

/// Whether the interval holds object file, then directory, then index
/// commit, in that order.
fn placed(interval: &Interval) -> bool {
    let file = interval.steps.iter().position(|s| *s == Step::ObjectFile);
    let dir = interval.steps.iter().rposition(|s| *s == Step::ObjectDir);
    let commit = interval.steps.iter().rposition(|s| *s == Step::IndexCommit);
    matches!((file, dir, commit), (Some(f), Some(d), Some(c)) if f < d && d < c)
}

/// Trace a server in `data` (with `config_text` as its config file) while
/// storescu sends each file of `corpus` on its own association; return the
/// intervals before each store response.
async fn traced_stores(data: &Path, config_text: &str, corpus: &Path) -> Vec<Interval> {
    std::fs::create_dir_all(data).expect("data dir");
    let config = data.join("tessera.toml");
    std::fs::write(&config, config_text).expect("config");
    let server = ServerProcess::spawn(data, &["--config", config.to_str().expect("utf-8")]).await;
    let trace = data.join("strace.txt");
    let mut strace = tokio::process::Command::new("strace")
        .args(["-f", "-y", "-xx", "-s", "200", "-o"])
        .arg(&trace)
        .args(["-e", "trace=fsync,fdatasync,write,writev,sendto,sendmsg"])
        .args(["-p", &server.pid().to_string()])
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("strace starts");
    // strace reports each thread it attached to; the server has several.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        strace.try_wait().expect("strace status").is_none(),
        "strace exited at once (ptrace not permitted?)"
    );
    let storescu = dcmtk("storescu").expect("storescu");
    let mut files: Vec<_> = std::fs::read_dir(corpus)
        .expect("corpus")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    for file in &files {
        let out = tokio::process::Command::new(&storescu)
            .env("TCP_NODELAY", "1")
            .args(server.ae_args())
            .arg(file)
            .output()
            .await
            .expect("storescu runs");
        assert!(out.status.success(), "storescu failed: {out:?}");
    }
    // Detach strace (SIGINT), then stop the server.
    let pid = strace.id().expect("strace pid").to_string();
    let _ = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(20), strace.wait()).await;
    assert!(server.terminate().await.success());
    let text = std::fs::read_to_string(&trace).expect("trace");
    let objects = data.join("objects").display().to_string();
    let found = intervals(&text, &objects);
    assert_eq!(
        found.len(),
        files.len(),
        "expected one C-STORE-RSP per file in the trace"
    );
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_success_follows_its_fsyncs() {
    if std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_err()
    {
        return skip(NAME, "strace not found");
    }
    if dcmtk("storescu").is_none() || python().is_none() {
        return skip(NAME, "DCMTK storescu or pynetdicom missing");
    }
    let work = tempfile::tempdir().expect("temp dir");
    let corpus = work.path().join("corpus");
    let out = run_peer(
        "gen.py",
        &[
            corpus.to_str().expect("utf-8"),
            "--count",
            "12",
            "--studies",
            "2",
            "--seed",
            "41",
        ],
    )
    .await;
    assert!(out.status.success(), "gen.py failed");

    // (name, extra [storage] settings, what a durable response follows)
    let checks: [(&str, &str, Durable); 2] = [
        ("journal", "", journaled),
        ("placed", "place_before_ack = true\n", placed),
    ];
    for (name, settings, durable) in checks {
        let config = format!("[storage]\n{settings}");
        let run = traced_stores(&work.path().join(name), &config, &corpus).await;
        let late: Vec<usize> = (0..run.len()).filter(|i| !durable(&run[*i])).collect();
        assert!(
            late.is_empty(),
            "{name}: store responses {late:?} were sent before their fsyncs: {:?}",
            late.iter().map(|i| &run[*i]).collect::<Vec<_>>()
        );
        // The check itself must be able to fail.
        let off = format!("{config}fsync = false\n");
        let unsynced = traced_stores(&work.path().join(format!("{name}-off")), &off, &corpus).await;
        assert!(
            unsynced.iter().all(|i| !durable(i)),
            "{name}: with storage.fsync = false the trace still looked durable: {unsynced:?}"
        );
    }
}
