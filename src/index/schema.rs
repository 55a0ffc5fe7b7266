//! Embedded migrations, one set per backend, run through sqlx's migrator so
//! applied versions and checksums are tracked in `_sqlx_migrations`.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};

use super::Backend;

/// The numbered migrations, the same list for each backend's folder.
macro_rules! migrations {
    ($db:literal) => {
        &[
            (
                1,
                "information model",
                include_str!(concat!(
                    "../../migrations/",
                    $db,
                    "/0001_information_model.sql"
                )),
            ),
            (
                2,
                "peers",
                include_str!(concat!("../../migrations/", $db, "/0002_peers.sql")),
            ),
            (
                3,
                "commitments",
                include_str!(concat!("../../migrations/", $db, "/0003_commitments.sql")),
            ),
            (
                4,
                "forwarding",
                include_str!(concat!("../../migrations/", $db, "/0004_forwarding.sql")),
            ),
            (
                5,
                "dicomweb",
                include_str!(concat!("../../migrations/", $db, "/0005_dicomweb.sql")),
            ),
            (
                6,
                "forward commitment",
                include_str!(concat!(
                    "../../migrations/",
                    $db,
                    "/0006_forward_commitment.sql"
                )),
            ),
            (
                7,
                "reclamation",
                include_str!(concat!("../../migrations/", $db, "/0007_reclamation.sql")),
            ),
            (
                8,
                "queue leases",
                include_str!(concat!("../../migrations/", $db, "/0008_queue_leases.sql")),
            ),
            (
                9,
                "ingest journal",
                include_str!(concat!(
                    "../../migrations/",
                    $db,
                    "/0009_ingest_journal.sql"
                )),
            ),
            (
                10,
                "hl7",
                include_str!(concat!("../../migrations/", $db, "/0010_hl7.sql")),
            ),
            (
                11,
                "worklist",
                include_str!(concat!("../../migrations/", $db, "/0011_worklist.sql")),
            ),
            (
                12,
                "mpps",
                include_str!(concat!("../../migrations/", $db, "/0012_mpps.sql")),
            ),
            (
                13,
                "reports",
                include_str!(concat!("../../migrations/", $db, "/0013_reports.sql")),
            ),
            (
                14,
                "hl7 outbox",
                include_str!(concat!("../../migrations/", $db, "/0014_hl7_outbox.sql")),
            ),
            (
                15,
                "peer charset",
                include_str!(concat!("../../migrations/", $db, "/0015_peer_charset.sql")),
            ),
            (
                16,
                "demographics changed",
                include_str!(concat!(
                    "../../migrations/",
                    $db,
                    "/0016_demographics_changed.sql"
                )),
            ),
            (
                17,
                "users",
                include_str!(concat!("../../migrations/", $db, "/0017_users.sql")),
            ),
            (
                18,
                "audit",
                include_str!(concat!("../../migrations/", $db, "/0018_audit.sql")),
            ),
            (
                19,
                "study shares",
                include_str!(concat!("../../migrations/", $db, "/0019_study_shares.sql")),
            ),
            (
                20,
                "external users",
                include_str!(concat!(
                    "../../migrations/",
                    $db,
                    "/0020_external_users.sql"
                )),
            ),
            (
                21,
                "search outbox",
                include_str!(concat!("../../migrations/", $db, "/0021_search_outbox.sql")),
            ),
            (
                22,
                "series sites",
                include_str!(concat!("../../migrations/", $db, "/0022_series_sites.sql")),
            ),
            (
                23,
                "lookup indexes",
                include_str!(concat!(
                    "../../migrations/",
                    $db,
                    "/0023_lookup_indexes.sql"
                )),
            ),
            (
                24,
                "frame blocks",
                include_str!(concat!("../../migrations/", $db, "/0024_frame_blocks.sql")),
            ),
            (
                25,
                "redundant indexes",
                include_str!(concat!(
                    "../../migrations/",
                    $db,
                    "/0025_redundant_indexes.sql"
                )),
            ),
        ]
    };
}

const SQLITE: &[(i64, &str, &str)] = migrations!("sqlite");
const POSTGRES: &[(i64, &str, &str)] = migrations!("postgres");

pub(super) fn migrator(backend: Backend) -> Migrator {
    let set = match backend {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    };
    let migrations = set
        .iter()
        .map(|(version, description, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(*description),
                MigrationType::Simple,
                Cow::Borrowed(*sql),
                false,
            )
        })
        .collect::<Vec<_>>();
    Migrator {
        migrations: Cow::Owned(migrations),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    }
}
