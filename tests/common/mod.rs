//! Shared harness for black-box tests: start Tessera on port 0 with a temp
//! data directory and a fresh SQLite or PostgreSQL index, find the external
//! peers (DCMTK, pynetdicom), and skip by name when one is missing.
//!
//! Set `TESSERA_REQUIRE_ALL_TOOLS=1` (CI does) to turn every skip into a
//! failure, so nothing is skipped silently there.

#![allow(dead_code)]

pub mod certs;
pub mod moto;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use tessera::config::{Config, RawConfig};
use tessera::index::Index;
use tessera::server::{self, Running};
use tokio_util::sync::CancellationToken;

pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generate one `#[tokio::test]` per backend for each named async fn
/// taking a [`Backend`].
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    if !$crate::common::postgres_available().await {
                        $crate::common::skip(stringify!($name), "PostgreSQL is not reachable on 127.0.0.1:5432");
                        return;
                    }
                    super::$name($crate::common::Backend::Postgres).await
                }
            )*
        }
    };
}

/// Report a skipped test by name, or fail when every tool is required.
pub fn skip(test: &str, reason: &str) {
    if std::env::var_os("TESSERA_REQUIRE_ALL_TOOLS").is_some_and(|v| v == "1") {
        panic!("{test}: required tool missing: {reason}");
    }
    eprintln!("SKIPPED {test}: {reason}");
}

/// Server logs in tests: errors only, unless TESSERA_TEST_LOG says more.
pub fn init_logging() {
    let level = std::env::var("TESSERA_TEST_LOG").unwrap_or_else(|_| "error".into());
    tessera::telemetry::init_logging(&level, false);
}

/// STOW an H.264 ultrasound clip into `study`: 50 frames of 320×240 at
/// 40 ms, High profile with B-frames ([`has_ffmpeg`] first).
pub async fn stow_h264_clip(port: u16, study: &str) {
    let args = [
        "--study-uid",
        study,
        "--modality",
        "US",
        "--frames",
        "50",
        "--frame-time",
        "40",
        "--h264",
        "--rows",
        "240",
        "--cols",
        "320",
    ];
    stow_generated(port, &args).await;
}

/// Whether ffmpeg (and ffprobe) can run: the H.264 test clips need them.
pub fn has_ffmpeg() -> bool {
    ["ffmpeg", "ffprobe"].iter().all(|tool| {
        std::process::Command::new(tool)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// A DCMTK tool, looked up in /usr/bin first: pynetdicom installs
/// commands with the same names into Python's bin directory.
pub fn dcmtk(tool: &str) -> Option<PathBuf> {
    let candidates = [
        PathBuf::from("/usr/bin").join(tool),
        PathBuf::from("/usr/local/bin").join(tool),
    ];
    candidates.into_iter().find(|p| {
        std::process::Command::new(p)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("dcmtk"))
            .unwrap_or(false)
    })
}

/// `python3` if it can import pynetdicom and pydicom.
pub fn python() -> Option<&'static str> {
    static FOUND: OnceLock<bool> = OnceLock::new();
    let ok = *FOUND.get_or_init(|| {
        std::process::Command::new("python3")
            .args(["-c", "import pynetdicom, pydicom, numpy"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    });
    ok.then_some("python3")
}

pub fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers")
}

/// Run a peer script from tests/peers with python3.
pub async fn run_peer(script: &str, args: &[&str]) -> Output {
    let out = tokio::process::Command::new("python3")
        .arg(peers_dir().join(script))
        .args(args)
        .output()
        .await
        .expect("python3 runs");
    if !out.status.success() {
        eprintln!(
            "{script} failed:\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// A fresh PostgreSQL database, dropped when this goes away.
pub struct PgDatabase {
    pub name: String,
    pub url: String,
}

static DB_COUNTER: AtomicU32 = AtomicU32::new(0);

impl PgDatabase {
    pub async fn create() -> Self {
        use sqlx::Connection;
        let name = format!(
            "tessera_test_{}_{}",
            std::process::id(),
            DB_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut conn = sqlx::PgConnection::connect(PG_ADMIN_URL)
            .await
            .expect("connect to PostgreSQL");
        sqlx::Executor::execute(
            &mut conn,
            format!("DROP DATABASE IF EXISTS {name}").as_str(),
        )
        .await
        .expect("drop old test database");
        sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create test database");
        let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        PgDatabase { name, url }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside a runtime; use a thread with its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::PgConnection::connect(PG_ADMIN_URL).await {
                    let _ = sqlx::Executor::execute(
                        &mut conn,
                        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str(),
                    )
                    .await;
                }
            });
        })
        .join();
    }
}

pub async fn postgres_available() -> bool {
    use sqlx::Connection;
    static AVAILABLE: tokio::sync::OnceCell<bool> = tokio::sync::OnceCell::const_new();
    *AVAILABLE
        .get_or_init(|| async {
            tokio::time::timeout(
                std::time::Duration::from_secs(5),
                sqlx::PgConnection::connect(PG_ADMIN_URL),
            )
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false)
        })
        .await
}

/// A running in-process Tessera with its own data directory and index.
pub struct Archive {
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub dicom_port: u16,
    pub http_port: u16,
    /// The MLLP port (0 when `hl7.bind` is off).
    pub hl7_port: u16,
    /// The DICOM TLS port (0 when `dicom.tls` is off).
    pub dicom_tls_port: u16,
    running: Option<Running>,
    pub pg: Option<PgDatabase>,
}

impl Archive {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// Start with settings adjusted by `tweak` (applied to the raw config).
    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut RawConfig)) -> Self {
        init_logging();
        let dir = tempfile::tempdir().expect("temp dir");
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(PgDatabase::create().await),
        };
        let mut raw = RawConfig::default();
        raw.storage.data_dir = Some(dir.path().join("data"));
        raw.dicom.bind = Some("127.0.0.1:0".parse().expect("addr"));
        raw.http.bind = Some("127.0.0.1:0".parse().expect("addr"));
        raw.hl7.bind = Some("127.0.0.1:0".into());
        raw.dicom.idle_timeout_secs = Some(30);
        raw.index.url = pg.as_ref().map(|db| db.url.clone());
        tweak(&mut raw);
        let config = Config::from_raw(raw).expect("valid test config");
        let running = server::start(config.clone(), CancellationToken::new())
            .await
            .expect("server starts");
        Archive {
            dicom_port: running.bound.dicom.port(),
            http_port: running.bound.http.port(),
            hl7_port: running.bound.hl7.map_or(0, |a| a.port()),
            dicom_tls_port: running.bound.dicom_tls.map_or(0, |a| a.port()),
            dir,
            config,
            running: Some(running),
            pg,
        }
    }

    pub fn ae_args(&self) -> Vec<String> {
        vec![
            "-aec".into(),
            "TESSERA".into(),
            "127.0.0.1".into(),
            self.dicom_port.to_string(),
        ]
    }

    /// A second handle on the index, for assertions.
    pub async fn index(&self) -> Index {
        Index::open(&self.config.index_url, 2)
            .await
            .expect("index opens")
    }

    /// Add an account with one role (`referring_name` for a referring
    /// physician, else empty); the accounts, for tokens and more users.
    pub async fn add_user(
        &self,
        name: &str,
        role: tessera::model::Role,
        password: &str,
        referring_name: &str,
    ) -> tessera::auth::Accounts {
        let accounts = tessera::auth::Accounts::new(self.index().await, Default::default());
        accounts
            .add_user(
                name,
                &tessera::model::Roles([role].into()),
                password,
                false,
                referring_name,
            )
            .await
            .expect("user");
        accounts
    }

    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
    }

    /// Stop and start again on the same data, index and ports.
    pub async fn restart(&mut self) {
        self.stop().await;
        let mut config = self.config.clone();
        config.dicom.bind = format!("127.0.0.1:{}", self.dicom_port)
            .parse()
            .expect("addr");
        config.http_bind = format!("127.0.0.1:{}", self.http_port)
            .parse()
            .expect("addr");
        if self.hl7_port != 0 {
            config.hl7.bind = Some(
                format!("127.0.0.1:{}", self.hl7_port)
                    .parse()
                    .expect("addr"),
            );
        }
        let running = server::start(config, CancellationToken::new())
            .await
            .expect("server restarts");
        self.running = Some(running);
    }

    /// Wait (bounded) until every acknowledged object is in its place, for
    /// tests that read or change object files directly.
    pub async fn wait_placed(&self) {
        for _ in 0..300 {
            let (status, body) = self.http_get("/api/v1/stats", &[]).await;
            let stats: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if status == 200 && stats["awaiting_placement"] == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("objects were not placed within 30 s");
    }

    /// Plain HTTP GET on the archive's HTTP port; returns (status, body).
    pub async fn http_get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        http_get(self.http_port, path, headers).await
    }
}

impl Drop for Archive {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown_token().cancel();
        }
    }
}

/// A minimal HTTP/1.1 client, enough for status endpoints.
pub async fn http_get(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    http_request(port, "GET", path, None, headers).await
}

/// One HTTP/1.1 request with an optional JSON body; returns (status, body).
pub async fn http_request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let body = body.map(|b| ("application/json", b));
    let response = http_exchange("127.0.0.1", port, method, path, body, headers).await;
    (response.status, response.body)
}

/// A whole HTTP response, headers included (lower-case names).
pub struct Exchange {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Exchange {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value a `Set-Cookie` header gives `name`.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k == "set-cookie")
            .find_map(|(_, v)| {
                let first = v.split(';').next()?;
                let (k, v) = first.split_once('=')?;
                (k.trim() == name).then(|| v.trim().to_owned())
            })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_default()
    }
}

/// One HTTP/1.1 request to `host:port` with an optional body of the given
/// content type; returns the whole response.
pub async fn http_exchange(
    host: &str,
    port: u16,
    method: &str,
    path: &str,
    body: Option<(&str, &str)>,
    headers: &[(&str, &str)],
) -> Exchange {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect((host, port))
        .await
        .expect("connect HTTP");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    match body {
        Some((content_type, body)) => req.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )),
        None => req.push_str("Content-Length: 0\r\n\r\n"),
    }
    stream
        .write_all(req.as_bytes())
        .await
        .expect("send request");
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.expect("read response");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Exchange {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// CT_small.dcm from pydicom's test files (patient `1CT1`).
pub fn ct_sample() -> Option<PathBuf> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "from pydicom.data import get_testdata_file; print(get_testdata_file('CT_small.dcm'))",
        ])
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    path.is_file().then_some(path)
}

/// STOW-RS one Part-10 object to `/dicom-web/studies` with extra headers;
/// returns the HTTP status.
/// Make one small instance with `gen.py` (`args` beside `--count 1`) and
/// store it by STOW-RS; panics unless it is stored.
/// `target/test-artifacts/`, where browser tests leave screenshots.
pub fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir
}

/// Run a headless-browser driver `tests/viewer/{script}` with node: whether
/// it ran every step, and the JSON it printed last of what it saw.
pub async fn browser_driver(script: &str, args: &[&std::ffi::OsStr]) -> (bool, serde_json::Value) {
    let out = tokio::process::Command::new("node")
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/viewer")
                .join(script),
        )
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let seen = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "{script}: no JSON: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    (out.status.success(), seen)
}

/// Send one HL7 message over MLLP (`tests/peers/mllp_send.py`) and
/// insist on an AA.
pub async fn send_hl7(port: u16, message: &str) {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("m.hl7");
    std::fs::write(&path, message).expect("write");
    let port = port.to_string();
    let out = run_peer("mllp_send.py", &[&port, path.to_str().expect("utf8")]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let acks: serde_json::Value = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    assert!(
        out.status.success() && acks["results"][0]["code"] == "AA",
        "{stdout}"
    );
}

/// Generate instances with `tests/peers/gen.py` (one 16×16 image unless
/// `args` say otherwise) and STOW-RS each.
pub async fn stow_generated(port: u16, args: &[&str]) {
    let dir = tempfile::tempdir().expect("tmp");
    let mut all = vec![
        dir.path().to_str().expect("utf8"),
        "--count",
        "1",
        "--rows",
        "16",
        "--cols",
        "16",
    ];
    all.extend_from_slice(args);
    let out = run_peer("gen.py", &all).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files: Vec<_> = std::fs::read_dir(dir.path())
        .expect("generated")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for file in files {
        let bytes = std::fs::read(&file).expect("generated");
        assert_eq!(stow(port, &bytes, &[]).await, 200, "STOW-RS of {args:?}");
    }
}

pub async fn stow(port: u16, part10: &[u8], headers: &[(&str, &str)]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let boundary = "test-boundary";
    let mut body = format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").into_bytes();
    body.extend_from_slice(part10);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut head = format!(
        "POST /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: multipart/related; type=\"application/dicom\"; boundary={boundary}\r\n\
         Content-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.write_all(head.as_bytes()).await.expect("send");
    stream.write_all(&body).await.expect("send body");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    String::from_utf8_lossy(&response)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Where pydicom's and pydicom-data's sample files live.
pub fn sample_dirs() -> Option<(PathBuf, PathBuf)> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import os, pydicom, data_store; print(os.path.dirname(pydicom.__file__) + '/data'); print(os.path.dirname(data_store.__file__) + '/data')",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    Some((PathBuf::from(lines.next()?), PathBuf::from(lines.next()?)))
}

/// The `tessera` binary run as a separate process, for what an in-process
/// server cannot show: kill -9, SIGTERM, peak memory, the CLI.
pub struct ServerProcess {
    child: tokio::process::Child,
    pub dicom_port: u16,
    pub http_port: u16,
    pub hl7_port: u16,
    /// The DICOM TLS port, when the ready line names one.
    pub dicom_tls_port: Option<u16>,
    pub log: PathBuf,
}

pub fn tessera_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tessera")
}

impl ServerProcess {
    /// Start `tessera serve` on port 0 and wait for its ready line.
    pub async fn spawn(data_dir: &Path, extra: &[&str]) -> Self {
        Self::spawn_with_env(data_dir, extra, &[]).await
    }

    /// As [`ServerProcess::spawn`], with extra environment variables.
    pub async fn spawn_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        use tokio::io::AsyncBufReadExt;
        std::fs::create_dir_all(data_dir).expect("data dir");
        let log = data_dir.join("server.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut child = tokio::process::Command::new(tessera_bin())
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--dicom-bind", "127.0.0.1:0", "--http-bind", "127.0.0.1:0"])
            .args(["--hl7-bind", "127.0.0.1:0"])
            .args(extra)
            .arg("serve")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .expect("tessera starts");
        let stdout = child.stdout.take().expect("stdout piped");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.strip_prefix("tessera ready: ") {
                    return Some(rest.to_owned());
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| {
            panic!(
                "tessera did not become ready; log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        let port_of = |key: &str| -> u16 {
            ready
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(key))
                .and_then(|addr| addr.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .expect("port in ready line")
        };
        let tls_port = ready
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("dicom-tls="))
            .and_then(|addr| addr.rsplit(':').next())
            .and_then(|p| p.parse().ok());
        ServerProcess {
            dicom_tls_port: tls_port,
            dicom_port: port_of("dicom="),
            http_port: port_of("http="),
            hl7_port: port_of("hl7="),
            child,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Peak resident set size (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmHWM")
    }

    pub fn ae_args(&self) -> Vec<String> {
        vec![
            "-aec".into(),
            "TESSERA".into(),
            "127.0.0.1".into(),
            self.dicom_port.to_string(),
        ]
    }

    /// Wait (bounded) for the process to exit by itself.
    pub async fn exited(mut self, within: std::time::Duration) -> Option<std::process::ExitStatus> {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                None
            }
        }
    }

    /// SIGKILL: no chance to clean up.
    pub async fn kill9(mut self) {
        self.child.start_kill().expect("kill");
        let _ = self.child.wait().await;
    }

    /// SIGTERM, then wait for the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.pid().to_string();
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(ok.success());
        tokio::time::timeout(std::time::Duration::from_secs(60), self.child.wait())
            .await
            .expect("exits after SIGTERM")
            .expect("exit status")
    }
}

/// Wait (bounded) until `ack` (send.py's `--ack-log`) lists `at_least`
/// acknowledged files, kill -9 `server` with the rest in flight, let the
/// sender finish, and return every file acknowledged before the kill.
pub async fn kill_9_after_acks(
    server: ServerProcess,
    ack: &Path,
    at_least: usize,
    sender: tokio::task::JoinHandle<Output>,
) -> Vec<PathBuf> {
    let mut acked = 0;
    for _ in 0..1200 {
        acked = std::fs::read_to_string(ack)
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if acked >= at_least {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(acked >= at_least, "the sender made no progress");
    server.kill9().await;
    let _ = sender.await.expect("sender joins");
    std::fs::read_to_string(ack)
        .expect("ack log")
        .lines()
        .map(PathBuf::from)
        .collect()
}

/// Run a tessera CLI subcommand to completion.
pub async fn tessera_cli(data_dir: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(tessera_bin())
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("tessera runs")
}

/// A free TCP port on 127.0.0.1 for a peer to listen on later (the probe
/// socket is closed again). Taken below Linux's ephemeral range (32768 and
/// up), so no other test's bind to port 0 can be handed the same port in
/// the meantime; each call takes the next one.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = 20_000 + (std::process::id() % 400) * 25;
    for _ in 0..12_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (20_000 + (start - 20_000 + n) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000")
}

/// A registered peer on 127.0.0.1 with every service.
pub fn local_peer(ae: &str, port: u16) -> tessera::model::RawPeer {
    tessera::model::RawPeer {
        ae_title: ae.into(),
        host: "127.0.0.1".into(),
        port,
        tls: false,
        services: None,
        worklist_charset: None,
    }
}

/// A DCMTK storescp on a free port writing into `dir`, killed on drop.
/// Callers check `dcmtk("storescp")` first.
pub struct StoreScp {
    child: tokio::process::Child,
    pub port: u16,
}

impl StoreScp {
    /// Start as `ae` with extra options (+xa, --refuse, --sleep-after …) and
    /// wait, bounded, until it accepts connections.
    pub async fn start(ae: &str, dir: &Path, options: &[&str]) -> Self {
        let tool = dcmtk("storescp").expect("storescp installed");
        let port = free_port();
        std::fs::create_dir_all(dir).expect("dir");
        let child = tokio::process::Command::new(tool)
            .args(["--aetitle", ae, "-od"])
            .arg(dir)
            .args(options)
            .arg(port.to_string())
            .kill_on_drop(true)
            .spawn()
            .expect("storescp starts");
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return StoreScp { child, port };
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("storescp did not start");
    }
}

impl Drop for StoreScp {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The object files under an objects folder `root`, at any depth and
/// sorted, but for its hidden spool folder (which holds the ingest
/// journal).
pub fn object_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("objects folder") {
            let path = entry.expect("entry").path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Send `files` to `archive` with DCMTK `storescu` and `extra` options
/// (callers check that it is installed).
pub async fn storescu(archive: &Archive, extra: &[&str], files: &[PathBuf]) -> Output {
    let tool = dcmtk("storescu").expect("checked by caller");
    tokio::process::Command::new(tool)
        .args(archive.ae_args())
        .args(extra)
        .args(files)
        .output()
        .await
        .expect("storescu runs")
}

/// Send `files` with DCMTK `storescu` and fail the test unless every one
/// was stored.
pub async fn store_all(archive: &Archive, extra: &[&str], files: &[PathBuf]) {
    let out = storescu(archive, extra, files).await;
    assert!(
        out.status.success(),
        "storescu {extra:?} {files:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Instances made by `gen.py` with `args` in `dir`, in name order.
pub async fn generated(dir: &Path, args: &[&str]) -> Vec<PathBuf> {
    let out = run_peer(
        "gen.py",
        &[&[dir.to_str().expect("utf8")][..], args].concat(),
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    files_in(dir)
}

/// The SOP Instance UID of each Part-10 file, read with pydicom.
/// The files directly in `dir`, sorted by name; none when it cannot be read.
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

pub fn sop_uids(files: &[PathBuf]) -> Vec<String> {
    let script = "import sys, pydicom\nfor f in sys.argv[1:]:\n    print(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)";
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(files)
        .output()
        .expect("python3");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A store of one synthetic CT instance, for tests that record straight
/// through the index API: `n` numbers the instance and gives its object a
/// distinct key and hash.
pub fn ct_store_request(
    patient_id: &str,
    study: &str,
    series: &str,
    sop_instance_uid: &str,
    n: u64,
) -> tessera::index::StoreRequest {
    use tessera::model::{InstanceMeta, PatientMeta, SeriesMeta, StoredObject, StudyMeta, Uid};
    let uid = |s: &str| Uid::new(s).expect("uid");
    tessera::index::StoreRequest {
        meta: InstanceMeta {
            patient: PatientMeta {
                patient_id: patient_id.into(),
                patient_name: "Batch^Test".into(),
                ..Default::default()
            },
            study: StudyMeta {
                study_instance_uid: uid(study),
                study_date: "20240101".into(),
                study_time: "120000".into(),
                accession_number: format!("ACC{patient_id}"),
                study_id: "1".into(),
                study_description: "synthetic".into(),
                referring_physician_name: String::new(),
                timezone_offset_from_utc: String::new(),
            },
            series: SeriesMeta {
                series_instance_uid: uid(series),
                modality: "CT".into(),
                series_number: Some(1),
                series_description: String::new(),
                series_date: String::new(),
                series_time: String::new(),
                body_part_examined: String::new(),
                performed_procedure_step_start_date: String::new(),
                performed_procedure_step_start_time: String::new(),
                scheduled_procedure_step_id: String::new(),
                requested_procedure_id: String::new(),
                institution_name: String::new(),
                station_name: String::new(),
            },
            sop_instance_uid: uid(sop_instance_uid),
            sop_class_uid: uid("1.2.840.10008.5.1.4.1.1.2"),
            instance_number: Some(n as i64),
            number_of_frames: None,
            rows: Some(512),
            columns: Some(512),
            bits_allocated: Some(16),
            specific_character_set: String::new(),
            content_date: "20240101".into(),
            content_time: "120000".into(),
        },
        object: StoredObject {
            key: format!("ab/cd/{n:064x}.dcm"),
            size: 1,
            sha256: format!("{n:064x}"),
            transfer_syntax_uid: uid("1.2.840.10008.1.2.1"),
        },
        source_ae_title: "BATCH".into(),
        forward_to: vec![],
        document: None,
        pixels: None,
        object_existed: false,
    }
}
