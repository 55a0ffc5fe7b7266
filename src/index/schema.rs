//! Embedded migrations, one set per backend, run through sqlx's migrator so
//! applied versions and checksums are tracked in `_sqlx_migrations`.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};

use super::Backend;

const SQLITE: &[(i64, &str, &str)] = &[
    (
        1,
        "information model",
        include_str!("../../migrations/sqlite/0001_information_model.sql"),
    ),
    (
        2,
        "peers",
        include_str!("../../migrations/sqlite/0002_peers.sql"),
    ),
];

const POSTGRES: &[(i64, &str, &str)] = &[
    (
        1,
        "information model",
        include_str!("../../migrations/postgres/0001_information_model.sql"),
    ),
    (
        2,
        "peers",
        include_str!("../../migrations/postgres/0002_peers.sql"),
    ),
];

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
