//! A data folder on a file system that refuses direct I/O, as some network
//! and FUSE mounts do: every `O_DIRECT` open fails with `EINVAL`. ramfs is
//! one such. The ingest journal, the spool files of large objects and
//! placement then write through the page cache, and every instance is kept
//! whole, before and after a restart's recovery.

use crate::common;

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use common::{dcmtk, generated, python, skip, store_all, Archive, Backend};
use sha2::{Digest, Sha256};

/// A ramfs mounted on a temporary folder, unmounted when dropped.
struct Ramfs {
    dir: tempfile::TempDir,
}

impl Ramfs {
    /// `None` where mounting is not allowed (not root).
    fn mount() -> Option<Ramfs> {
        let dir = tempfile::tempdir().expect("tmp");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "ramfs", "tessera-test"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(Ramfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Ramfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_system_without_direct_io_keeps_every_instance() {
    let (Some(_), Some(_)) = (dcmtk("storescu"), python()) else {
        return skip(
            "a_file_system_without_direct_io_keeps_every_instance",
            "DCMTK or pydicom missing",
        );
    };
    let Some(ramfs) = Ramfs::mount() else {
        return skip(
            "a_file_system_without_direct_io_keeps_every_instance",
            "cannot mount a ramfs (needs root)",
        );
    };
    let refused = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .custom_flags(libc::O_DIRECT)
        .open(ramfs.path().join("probe"));
    assert_eq!(
        refused.err().and_then(|e| e.raw_os_error()),
        Some(libc::EINVAL),
        "ramfs takes direct I/O here; the test would prove nothing"
    );

    let data = ramfs.path().join("data");
    let mut archive = Archive::start_with(Backend::Sqlite, |raw| {
        raw.storage.data_dir = Some(data.clone());
    })
    .await;
    let corpus = archive.dir.path().join("corpus");
    // CT slices go through the journal; a 2048² one, over its 4 MiB, is
    // spooled and put in place before its answer.
    let mut files = generated(
        &corpus.join("ct"),
        &[
            "--count", "3", "--rows", "512", "--cols", "512", "--seed", "8",
        ],
    )
    .await;
    files.extend(
        generated(
            &corpus.join("large"),
            &[
                "--count", "1", "--rows", "2048", "--cols", "2048", "--seed", "9",
            ],
        )
        .await,
    );
    store_all(&archive, &[], &files).await;
    archive.wait_placed().await;

    for round in ["before a restart", "after a restart"] {
        let index = archive.index().await;
        for (file, uid) in files.iter().zip(common::sop_uids(&files)) {
            let record = index
                .instance(&uid)
                .await
                .expect("query")
                .unwrap_or_else(|| panic!("{round}: {} not indexed", file.display()));
            let stored = std::fs::read(data.join("objects").join(&record.key)).expect("stored");
            assert_eq!(
                record.key,
                tessera::storage::key_for(&hex::encode(Sha256::digest(&stored))),
                "{round}: {} is not what was hashed",
                file.display()
            );
            // The data set as sent, after a meta group of its own.
            let sent = std::fs::read(file).expect("sent");
            let tail = sent.len() - 1024;
            assert!(
                stored[stored.len() - tail..] == sent[sent.len() - tail..],
                "{round}: {} changed",
                file.display()
            );
        }
        let storage = tessera::storage::Storage::open(&archive.config)
            .await
            .expect("storage");
        let report = tessera::verify::verify(&index, &storage, false, Duration::ZERO)
            .await
            .expect("verify");
        assert!(
            report.is_clean() && report.unreferenced.is_empty(),
            "{round}: {report:?}"
        );
        index.close().await;
        if round == "before a restart" {
            archive.restart().await;
        }
    }
    drop(archive);
    drop(ramfs);
}
