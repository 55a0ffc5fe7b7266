//! A real S3-compatible server for tests: `moto_server` (PyPI
//! `moto[server]`) on a free port, and a bucket made with boto3.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A moto_server child process, killed when dropped.
pub struct Moto {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Moto {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `moto_server` next to the python3 interpreter (where pip puts scripts).
pub fn moto_server_path() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, os; print(os.path.dirname(sys.executable))",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let path = Path::new(&dir).join("moto_server");
    path.is_file().then_some(path)
}

/// python3 with what the helpers below and make_large_ct.py import.
pub fn python_with_boto3() -> bool {
    Command::new("python3")
        .args(["-c", "import boto3, pydicom, numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Start moto_server on a free port and wait (bounded) until it accepts
/// connections. Retries with another port if the process exits early, e.g.
/// because someone else took the port between our probe and its bind.
pub fn start_moto(binary: &Path, dir: &Path) -> Moto {
    let mut last_log = String::new();
    for attempt in 0..3 {
        let port = super::free_port();
        let log = dir.join(format!("moto-{attempt}.log"));
        let out = std::fs::File::create(&log).expect("moto log file");
        let err = out.try_clone().expect("moto log file");
        let child = Command::new(binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn moto_server");
        let mut moto = Moto { child, port, log };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = moto.child.try_wait() {
                break;
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return moto;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        last_log = moto.log_text();
        drop(moto);
    }
    panic!("moto_server did not start; last log:\n{last_log}");
}

/// Create `bucket` on the moto server at `endpoint` (credentials "testing").
pub async fn create_bucket(endpoint: &str, bucket: &str) {
    let script = format!(
        "import boto3\n\
         boto3.client('s3', endpoint_url={endpoint:?}, aws_access_key_id='testing',\n\
         \x20   aws_secret_access_key='testing', region_name='us-east-1').create_bucket(Bucket={bucket:?})\n"
    );
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .await
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "create bucket: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
