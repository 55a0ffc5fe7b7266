//! The index: every SQL statement Tessera runs lives under this module.
//!
//! [`Index`] wraps one sqlx `Any` pool so the same code serves SQLite (the
//! embedded default) and PostgreSQL (selected by a `postgres://` URL). Schema
//! changes are the numbered files in `migrations/sqlite` and
//! `migrations/postgres`, embedded at build time and applied at startup by
//! sqlx's migrator. Writes arrive in batches from the ingest group committer
//! ([`Index::record_batch`]); reads are typed functions, never raw SQL in
//! callers.

pub mod audit;
mod commitments;
mod documents;
mod find;
mod forwarding;
mod frame_blocks;
pub mod hl7;
mod journal;
pub mod mpps;
pub mod outbox;
pub mod patients;
mod peers;
#[cfg(test)]
mod query_plans;
mod queue;
mod read;
mod reclaim;
pub mod reports;
mod schema;
pub mod search;
pub mod shares;
pub mod users;
mod wal_sync;
pub mod worklist;
mod write;
mod write_tx;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};

pub use commitments::PendingCommitment;
pub use documents::{FrameLocation, JoinedDocuments, Scope, ScopedInstance};
pub use find::{FindPlan, FindRow, RetrieveItem};
pub use forwarding::{CommitmentOutcome, DeadLetter, DueForward, ForwardingStats, NewForward};
pub use peers::PeerSource;
pub use queue::Lease;
pub use read::{IndexStats, IndexedObject, InstanceRecord, StudySummary};
pub use reclaim::Reclaimed;
pub use wal_sync::Unsynced;
pub use write::{Durability, JournalMark, PreparedBatch, Recorded, StoreRequest};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("cannot open index at {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("index migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("index query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("index holds an invalid value in {column}: {value:?}")]
    Corrupt { column: &'static str, value: String },
    #[error("cannot sync the index's write-ahead log: {0}")]
    Sync(std::io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A handle on the index database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Index {
    pool: AnyPool,
    /// Connections only write transactions take ([`Index::begin_write`]):
    /// readers that hold every pooled connection (a slow C-FIND requester,
    /// a burst of QIDO) can never make a store wait for one.
    writer: AnyPool,
    backend: Backend,
    /// Whether changes queue messages for the RIS; shared by every clone.
    outbox: std::sync::Arc<outbox::Outbox>,
    /// Whether retrieves carry the patient as it is now (the default) or
    /// as stored; shared by every clone.
    keep_stored_demographics: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// SQLite in a file: deferred commits and their group sync.
    wal: Option<std::sync::Arc<wal_sync::WalSync>>,
}

impl Index {
    /// A migrated SQLite index in a temporary folder of its own, which
    /// lives as long as the returned guard.
    #[cfg(test)]
    pub(crate) async fn temporary() -> (tempfile::TempDir, Index) {
        let dir = tempfile::tempdir().expect("tmp");
        let url = format!("sqlite://{}", dir.path().join("i.sqlite").display());
        let index = Index::open(&url, 2).await.expect("index");
        (dir, index)
    }

    /// Connect, creating the SQLite file if needed, and apply migrations.
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, IndexError> {
        sqlx::any::install_default_drivers();
        let connect_err = |source| IndexError::Connect {
            url: redact(url),
            source,
        };
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_owned(),
        };
        if backend == Backend::Sqlite {
            create_sqlite_parent(&url).await;
        }
        let options = AnyConnectOptions::from_str(&url)
            .map_err(connect_err)?
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500));
        let pool_of = |size: u32| {
            AnyPoolOptions::new()
                .max_connections(size)
                .acquire_timeout(Duration::from_secs(30))
                // A ping before each use is a round trip to the connection's
                // thread (a tenth of a millisecond, as much as a statement)
                // and cannot find a local file gone stale.
                .test_before_acquire(backend == Backend::Postgres)
                .after_connect(move |conn, _meta| {
                    Box::pin(async move {
                        if backend == Backend::Sqlite {
                            // synchronous=FULL: a commit is on disk before we
                            // acknowledge; only journaled writes relax it.
                            conn.execute(
                                "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; \
                                 PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON; \
                                 PRAGMA case_sensitive_like=ON;",
                            )
                            .await?;
                        }
                        Ok(())
                    })
                })
        };
        let (readers, writers) = match backend {
            // One writer at a time is all SQLite allows; the other
            // connections serve concurrent readers under WAL.
            Backend::Sqlite => (max_connections.max(2), 1),
            Backend::Postgres => (max_connections, 2),
        };
        let pool = pool_of(readers)
            .connect_with(options.clone())
            .await
            .map_err(connect_err)?;
        schema::migrator(backend).run(&pool).await?;
        let writer = pool_of(writers)
            .connect_with(options)
            .await
            .map_err(connect_err)?;
        let wal = match backend {
            Backend::Sqlite => sqlite_file(&writer)
                .await?
                .map(|file| std::sync::Arc::new(wal_sync::WalSync::new(file))),
            Backend::Postgres => None,
        };
        Ok(Index {
            pool,
            writer,
            backend,
            outbox: Default::default(),
            keep_stored_demographics: Default::default(),
            wal,
        })
    }

    /// Leave deferred commits unsynced (`storage.fsync = false`): only
    /// for benchmarks that measure what fsync costs.
    pub fn skip_wal_sync(&self) {
        if let Some(wal) = &self.wal {
            wal.disable();
        }
    }

    /// Send objects with the patient as stored, even after the RIS changed
    /// it (`hl7.coerce_on_retrieve = false`).
    pub fn keep_stored_demographics(&self) {
        self.keep_stored_demographics
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether retrieves are coerced to the current demographics.
    pub(crate) fn coerces(&self) -> bool {
        !self
            .keep_stored_demographics
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A write transaction. SQLite's must take the write lock at BEGIN
    /// (IMMEDIATE): a deferred one that reads before it writes fails with
    /// SQLITE_BUSY_SNAPSHOT when another connection commits in between, an
    /// error busy_timeout never retries.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, IndexError> {
        // synchronous=FULL: a commit is on disk before we acknowledge.
        // Set on every write, since a journaled write relaxes it.
        Ok(match self.backend {
            Backend::Sqlite => {
                self.writer
                    .begin_with("PRAGMA synchronous=FULL; BEGIN IMMEDIATE")
                    .await?
            }
            Backend::Postgres => self.writer.begin().await?,
        })
    }

    /// A write transaction whose commit returns before it is on disk;
    /// take [`Index::committed`] after the commit and acknowledge only
    /// after [`Index::make_durable`]. Many commits then share one sync,
    /// which overlaps the next transaction. A synced write where there is
    /// no WAL file to sync (PostgreSQL, in-memory SQLite).
    pub(crate) async fn begin_deferred_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, IndexError> {
        match self.wal {
            Some(_) => Ok(self
                .writer
                .begin_with("PRAGMA synchronous=NORMAL; BEGIN IMMEDIATE")
                .await?),
            None => self.begin_write().await,
        }
    }

    /// The ticket of a deferred commit that has just returned.
    pub(crate) fn committed(&self) -> Unsynced {
        match &self.wal {
            Some(wal) => wal.committed(),
            None => Unsynced::SYNCED,
        }
    }

    /// Wait until the deferred commit `ticket` is on disk. Only then is
    /// the outbox rung: what it feeds (the search index, the RIS) must
    /// never run ahead of what a power cut would keep.
    pub async fn make_durable(&self, ticket: Unsynced) -> Result<(), IndexError> {
        if let Some(wal) = &self.wal {
            wal.sync_through(ticket).await.map_err(IndexError::Sync)?;
            if ticket != Unsynced::SYNCED {
                self.outbox.ring();
            }
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// True when the database answers; used by `/readyz`.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}

/// Seconds since the Unix epoch, the timestamp every table stores.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Hide a password in a database URL before it reaches a log line.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &url[scheme_end + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// The main database file of a SQLite pool; `None` in memory.
async fn sqlite_file(pool: &AnyPool) -> Result<Option<std::path::PathBuf>, IndexError> {
    let rows = sqlx::query("SELECT name, file FROM pragma_database_list")
        .fetch_all(pool)
        .await?;
    for row in rows {
        let name: String = sqlx::Row::try_get(&row, 0)?;
        let file: Option<String> = sqlx::Row::try_get(&row, 1)?;
        if name == "main" {
            return Ok(file.filter(|f| !f.is_empty()).map(Into::into));
        }
    }
    Ok(None)
}

async fn create_sqlite_parent(url: &str) {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if let Some(parent) = std::path::Path::new(path).parent() {
        if !parent.as_os_str().is_empty() {
            // A failure here resurfaces as a clear connect error.
            let _ = tokio::fs::create_dir_all(parent).await;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact("postgres://user:secret@host/db"),
            "postgres://user:***@host/db"
        );
        assert_eq!(super::redact("sqlite://x.db"), "sqlite://x.db");
    }
}
