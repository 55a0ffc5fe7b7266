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

use crate::common;

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
    /// A write to SQLite's WAL: a commit's frames, not yet synced.
    WalWrite,
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
    fd_path(rest)
}

/// Whether `call` writes to SQLite's WAL.
fn wal_write(call: &str) -> bool {
    call.strip_prefix("pwrite64(")
        .or_else(|| call.strip_prefix("write("))
        .and_then(fd_path)
        .is_some_and(|p| p.ends_with("index.sqlite-wal"))
}

/// The path of the fd that starts `args`: `12</a/b>, ...`.
fn fd_path(rest: &str) -> Option<String> {
    let start = rest.find('<')? + 1;
    let end = rest[start..].find('>')? + start;
    let bytes = rest[start..end]
        .split("\\x")
        .filter(|h| !h.is_empty())
        .map(|h| u8::from_str_radix(h, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// Split the trace at each response `marker` (bytes as strace -xx prints
/// them) sent, collecting the WAL writes and the fsyncs that completed
/// before it. strace -f interleaves threads: a call may be printed
/// `<unfinished ...>` and finish later as `<... resumed>`.
fn intervals(trace: &str, objects: &str, marker: &str) -> Vec<Interval> {
    let mut out = Vec::new();
    let mut current = Interval::default();
    let mut pending: HashMap<&str, Step> = HashMap::new();
    for line in trace.lines() {
        let Some((pid, call)) = line.split_once(' ') else {
            continue;
        };
        let call = call.trim_start();
        if wal_write(call) {
            current.steps.push(Step::WalWrite);
        } else if let Some(path) = fsync_path(call) {
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
        } else if call.contains(marker)
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

/// A server in `data` (with `config_text` as its config file) that
/// `strace` follows.
struct Traced {
    server: ServerProcess,
    strace: tokio::process::Child,
    trace: std::path::PathBuf,
    objects: String,
}

impl Traced {
    async fn start(data: &Path, config_text: &str) -> Self {
        std::fs::create_dir_all(data).expect("data dir");
        let config = data.join("tessera.toml");
        std::fs::write(&config, config_text).expect("config");
        let server =
            ServerProcess::spawn(data, &["--config", config.to_str().expect("utf-8")]).await;
        let trace = data.join("strace.txt");
        let mut strace = tokio::process::Command::new("strace")
            .args(["-f", "-y", "-xx", "-s", "400", "-o"])
            .arg(&trace)
            .args([
                "-e",
                "trace=fsync,fdatasync,write,pwrite64,writev,sendto,sendmsg",
            ])
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
        Traced {
            server,
            strace,
            trace,
            objects: data.join("objects").display().to_string(),
        }
    }

    /// Detach strace (SIGINT), stop the server, and split the trace at
    /// each response `marker`.
    async fn finish(mut self, marker: &str) -> Vec<Interval> {
        let pid = self.strace.id().expect("strace pid").to_string();
        let _ = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status();
        let _ = tokio::time::timeout(Duration::from_secs(20), self.strace.wait()).await;
        assert!(self.server.terminate().await.success());
        let text = std::fs::read_to_string(&self.trace).expect("trace");
        intervals(&text, &self.objects, marker)
    }
}

/// Trace a server while storescu sends each file of `corpus` on its own
/// association; return the intervals before each store response.
async fn traced_stores(data: &Path, config_text: &str, corpus: &Path) -> Vec<Interval> {
    let traced = Traced::start(data, config_text).await;
    let storescu = dcmtk("storescu").expect("storescu");
    let mut files: Vec<_> = std::fs::read_dir(corpus)
        .expect("corpus")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    for file in &files {
        let out = tokio::process::Command::new(&storescu)
            .env("TCP_NODELAY", "1")
            .args(traced.server.ae_args())
            .arg(file)
            .output()
            .await
            .expect("storescu runs");
        assert!(out.status.success(), "storescu failed: {out:?}");
    }
    let found = traced.finish(STORE_RSP).await;
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

/// An HL7 MSA segment accepting a message, `MSA|AA`, as strace -xx prints it.
const HL7_ACCEPTED: &str = r"\x4d\x53\x41\x7c\x41\x41";

/// Whether the WAL was synced after the interval's first write to it: the
/// commit a response stands for is on disk.
fn wal_synced(interval: &Interval) -> bool {
    let steps = &interval.steps;
    steps
        .iter()
        .position(|s| *s == Step::WalWrite)
        .is_some_and(|w| steps[w..].contains(&Step::IndexCommit))
}

/// HL7 commits are not synced one by one: the applier goes on while a
/// group's WAL is synced, and the acknowledgements wait for that sync.
/// From an strace, each AA written to the MLLP connection must follow a
/// sync of the WAL that came after its commit's write; with
/// `storage.fsync = false` some must not, or the check proves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hl7_acknowledgement_follows_its_wal_sync() {
    const NAME: &str = "every_hl7_acknowledgement_follows_its_wal_sync";
    if std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_err()
    {
        return skip(NAME, "strace not found");
    }
    if python().is_none() {
        return skip(NAME, "python hl7 missing");
    }
    let work = tempfile::tempdir().expect("temp dir");
    let messages = work.path().join("messages");
    std::fs::create_dir_all(&messages).expect("dir");
    let mut files = Vec::new();
    for n in 0..12 {
        let path = messages.join(format!("m{n:02}.hl7"));
        std::fs::write(
            &path,
            format!(
                "MSH|^~\\&|HIS|GENERAL|TESSERA|RAD|20261203120000||ADT^A01^ADT_A01|D{n}|P|2.5\n\
                 PID|1||DUR{n}^^^GENERAL^MR||Nowak^Anna {n}||19700101|F\n\
                 PV1|1|I|RAD^101\n"
            ),
        )
        .expect("message");
        files.push(path.display().to_string());
    }
    for (name, config, durable) in [
        ("synced", "", true),
        ("off", "[storage]\nfsync = false\n", false),
    ] {
        let traced = Traced::start(&work.path().join(name), config).await;
        let port = traced.server.hl7_port.to_string();
        let mut args = vec![port.as_str()];
        args.extend(files.iter().map(String::as_str));
        let out = run_peer("mllp_send.py", &args).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let acks: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let codes: Vec<&str> = acks["results"]
            .as_array()
            .expect("results")
            .iter()
            .filter_map(|r| r["code"].as_str())
            .collect();
        assert_eq!(codes, vec!["AA"; files.len()], "{acks}");
        let found = traced.finish(HL7_ACCEPTED).await;
        assert_eq!(found.len(), files.len(), "one AA per message in the trace");
        let late: Vec<usize> = (0..found.len())
            .filter(|i| !wal_synced(&found[*i]))
            .collect();
        if durable {
            assert!(
                late.is_empty(),
                "acknowledgements {late:?} were sent before their WAL sync: {:?}",
                late.iter().map(|i| &found[*i]).collect::<Vec<_>>()
            );
        } else {
            assert!(
                !late.is_empty(),
                "with storage.fsync = false every acknowledgement still followed a sync: {found:?}"
            );
        }
    }
}
