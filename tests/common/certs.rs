//! Test certificates made with the `openssl` command: a CA and the
//! certificates it signs, as PEM files in a directory.

use std::path::Path;

/// Run openssl in `dir`; false when it fails.
pub fn openssl(dir: &Path, args: &[&str]) -> bool {
    std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A CA: `{name}.pem` and `{name}.key`.
pub fn make_ca(dir: &Path, name: &str) -> bool {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN=Tessera test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    )
}

/// A certificate `{name}.pem`/`{name}.key` signed by CA `ca`, valid for
/// `san` (e.g. `IP:127.0.0.1` or `DNS:ct01.example`) and the extended key
/// usages `usage` (`serverAuth`, `clientAuth` or both, comma-separated).
pub fn make_cert(dir: &Path, ca: &str, name: &str, san: &str, usage: &str) -> bool {
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(
        &ext,
        format!("subjectAltName={san}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"),
    )
    .expect("ext file");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    ) && openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    )
}

/// A test CA `ca` and two certificates it signs: `server` for 127.0.0.1
/// and `client`.
pub fn make_certificates(dir: &Path) -> bool {
    make_ca(dir, "ca")
        && make_cert(dir, "ca", "server", "IP:127.0.0.1", "serverAuth")
        && make_cert(dir, "ca", "client", "IP:127.0.0.1", "clientAuth")
}
