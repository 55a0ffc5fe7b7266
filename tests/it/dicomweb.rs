//! DICOMweb against an independent client: every check of
//! `tests/peers/dicomweb_suite.py` (driven by the `dicomweb-client` package
//! and raw HTTP) runs as its own test, on SQLite and on PostgreSQL.

use crate::common;

use common::{python, run_peer, skip, Archive, Backend};

/// `import dicomweb_client` works (installed by scripts/install-test-tools).
fn dicomweb_client() -> bool {
    python().is_some()
        && std::process::Command::new("python3")
            .args(["-c", "import dicomweb_client, PIL, requests"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
}

async fn run_check(check: &str, backend: Backend) {
    if !dicomweb_client() {
        return skip(
            check,
            "python3 with dicomweb-client, Pillow and requests is not installed",
        );
    }
    let archive = Archive::start(backend).await;
    let root = format!("http://127.0.0.1:{}", archive.http_port);
    let out = run_peer(
        "dicomweb_suite.py",
        &[
            "--url",
            &format!("{root}/dicom-web"),
            "--wado-uri",
            &format!("{root}/wado"),
            "--check",
            check,
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "DICOMweb check {check} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One test per check and backend, named after the check.
macro_rules! checks {
    ($($name:ident),* $(,)?) => {
        $(
            async fn $name(backend: Backend) {
                run_check(stringify!($name), backend).await
            }
        )*
        on_both_backends!($($name),*);

        #[test]
        fn every_suite_check_has_a_test() {
            if !dicomweb_client() {
                return skip("every_suite_check_has_a_test", "python3 with dicomweb-client is not installed");
            }
            let out = std::process::Command::new("python3")
                .arg(common::peers_dir().join("dicomweb_suite.py"))
                .arg("--list")
                .output()
                .expect("python3 runs");
            let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.split('\t').next())
                .map(str::to_owned)
                .collect();
            let ours = [$(stringify!($name)),*];
            assert_eq!(listed, ours, "tests/it/dicomweb.rs must list the suite's checks in order");
        }
    };
}

checks!(
    store,
    stow_partial,
    stow_conflict_study_uid,
    stow_missing_uid,
    stow_bad_syntax,
    stow_broken_body,
    stow_unsupported_media_type,
    stow_quoted_boundary,
    search_studies,
    search_series,
    search_instances,
    search_includefield,
    search_paging,
    search_sequence,
    search_fuzzy,
    retrieve_instance,
    retrieve_default_ts,
    retrieve_series,
    retrieve_study,
    metadata_instance,
    metadata_series,
    metadata_study,
    bulkdata,
    frames_uncompressed,
    frames_jpeg,
    frames_rle,
    frames_jpeg2000,
    rendered_instance,
    rendered_frame,
    rendered_series_study,
    thumbnail,
    wado_uri_dicom,
    wado_uri_jpeg,
    wado_uri_errors,
    http_range,
    http_gzip,
    http_etag,
    http_bad_params,
    hostile_params,
    rendered_under_load,
);
