//! Every ready-made configuration in `storage-profiles/` parses (the schema
//! denies unknown keys) and validates, and selects the backend its name
//! promises.

use std::path::{Path, PathBuf};

use tessera::config::{Config, RawConfig, StorageLocation};

fn profiles() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("storage-profiles");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

fn load(path: &Path) -> Config {
    let raw = RawConfig::from_file(path).unwrap_or_else(|e| panic!("{e}"));
    Config::from_raw(raw).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_profile_is_valid_and_selects_its_backend() {
    let files = profiles();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "local-raid.toml",
        "nas-nfs.toml",
        "nas-smb.toml",
        "iscsi.toml",
        "s3.toml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "storage-profiles/{expected} is missing (found {names:?})"
        );
    }

    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy();
        let config = load(path);
        assert!(config.fsync, "{name}: fsync must stay on in a profile");
        match (&config.storage, name.as_ref()) {
            (
                StorageLocation::S3 {
                    bucket,
                    prefix,
                    settings,
                },
                "s3.toml",
            ) => {
                assert!(!bucket.is_empty(), "{name}: empty bucket");
                assert!(
                    !prefix.is_empty(),
                    "{name}: objects should go under a prefix"
                );
                assert!(
                    settings.allow_http != Some(true),
                    "{name}: plain http must not be the production default"
                );
            }
            (other, "s3.toml") => panic!("{name}: expected S3 storage, got {other:?}"),
            (StorageLocation::Local { root }, _) => {
                assert!(
                    root.is_absolute(),
                    "{name}: object root {root:?} is not absolute"
                );
            }
            (other, _) => panic!("{name}: expected local storage, got {other:?}"),
        }
        assert!(
            config.index_url.starts_with("sqlite:") || config.index_url.starts_with("postgres"),
            "{name}: unexpected index URL {}",
            config.index_url
        );
    }
}

#[test]
fn profiles_use_postgres_where_nodes_share_storage() {
    for (file, postgres) in [
        ("local-raid.toml", false),
        ("iscsi.toml", false),
        ("nas-nfs.toml", true),
        ("nas-smb.toml", true),
        ("s3.toml", true),
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("storage-profiles")
            .join(file);
        let config = load(&path);
        assert_eq!(
            config.index_url.starts_with("postgres"),
            postgres,
            "{file}: index {}",
            config.index_url
        );
    }
}
