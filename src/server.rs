//! Startup and shutdown in order. Start: storage (spool recovery) → index
//! (migrations) → group committer → HTTP → DICOM. Stop: DICOM stops
//! accepting and lets in-flight messages finish, HTTP drains, then the
//! committer flushes its last batch and the index closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::dimse::forwarder::Forwarder;
use crate::dimse::listener;
use crate::dimse::scu::Scu;
use crate::dimse::service::commitment::worker::CommitmentWorker;
use crate::dimse::service::ServiceContext;
use crate::index::{Index, IndexError};
use crate::ingest::{GroupCommitter, Ingest, JournalSetup};
use crate::peers::PeerRegistry;
use crate::routing::Router;
use crate::storage::{Storage, StorageError};
use crate::telemetry::Metrics;
use crate::web::{self, AppState, AuthPolicy};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("cannot register the configured peers: {0}")]
    Peers(String),
    #[error("cannot recover the ingest journal: {0}")]
    Journal(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Oidc(#[from] crate::auth::oidc::OidcError),
    #[error(transparent)]
    Search(#[from] crate::search::SearchError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The opened core of a node: what the CLI subcommands and the server share.
pub struct Core {
    pub storage: Storage,
    pub index: Index,
    pub metrics: Arc<Metrics>,
    /// Client TLS for peers marked `tls`, loaded once at startup.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Core {
    pub async fn open(config: &Config) -> Result<Self, ServerError> {
        let tls = match &config.tls {
            Some(files) => Some(crate::tls::client_config(files)?),
            None => None,
        };
        let storage = Storage::open(config).await?;
        tracing::info!(storage = %storage.describe(), "storage ready");
        let index = Index::open(&config.index_url, config.index_max_connections).await?;
        tracing::info!(backend = ?index.backend(), "index ready");
        Ok(Core {
            storage,
            index,
            metrics: Arc::new(Metrics::new()),
            tls,
        })
    }

    /// The peer registry, verifying peers with C-ECHO as our AE title.
    pub fn peer_registry(&self, config: &Config) -> PeerRegistry {
        PeerRegistry::new(
            self.index.clone(),
            Arc::new(self.scu(config)),
            crate::peers::Rules {
                own_ae_title: config.dicom.ae_title.clone(),
                networks: config.dicom.peer_networks.clone(),
            },
        )
    }

    /// Our SCU identity for outbound associations.
    pub fn scu(&self, config: &Config) -> Scu {
        Scu {
            ae_title: config.dicom.ae_title.clone(),
            timeout: config.dicom.artim_timeout,
            tls: self.tls.clone(),
            networks: config.dicom.peer_networks.clone().into(),
        }
    }

    /// The write path, with its group committer tracked by `tracker`.
    /// Every object is in its place before it is acknowledged: for tools
    /// that run beside a server, which owns the journal.
    pub fn ingest(&self, config: &Config, tracker: &TaskTracker) -> Ingest {
        self.ingest_with(config, None, tracker)
    }

    /// The server's write path: this node's ingest journal is recovered
    /// first, unless the configuration wants objects placed before the
    /// acknowledgement.
    pub async fn journaled_ingest(
        &self,
        config: &Config,
        tracker: &TaskTracker,
    ) -> Result<Ingest, ServerError> {
        if config.place_before_ack {
            return Ok(self.ingest(config, tracker));
        }
        let router = Router::new(config.routes.clone());
        let setup = crate::ingest::open_journal(
            &self.storage,
            &self.index,
            &router,
            config.dicom.duplicate_policy,
            config.fsync,
        )
        .await
        .map_err(|e| ServerError::Journal(e.to_string()))?;
        Ok(self.ingest_with(config, Some(setup), tracker))
    }

    fn ingest_with(
        &self,
        config: &Config,
        journal: Option<JournalSetup>,
        tracker: &TaskTracker,
    ) -> Ingest {
        let policy = config.dicom.duplicate_policy;
        let committer = GroupCommitter::start(
            self.index.clone(),
            policy,
            journal,
            self.metrics.clone(),
            tracker,
        );
        Ingest::new(
            self.storage.clone(),
            committer,
            Arc::new(Router::new(config.routes.clone())),
            self.metrics.clone(),
        )
    }
}

/// Addresses actually bound (useful when the config asks for port 0).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub dicom: SocketAddr,
    pub http: SocketAddr,
    /// The MLLP port, unless `hl7.bind` is off.
    pub hl7: Option<SocketAddr>,
    /// The DICOM TLS port, when `dicom.tls` is on.
    pub dicom_tls: Option<SocketAddr>,
}

/// A running server; [`Running::wait`] resolves after an ordered shutdown.
pub struct Running {
    pub bound: Bound,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    tls: Option<crate::tls::ServerTls>,
}

impl Running {
    /// The TLS listeners' certificate, for reloading it (SIGHUP): open
    /// connections keep theirs, new handshakes get the new pair.
    pub fn certificates(&self) -> Option<crate::tls::ServerTls> {
        self.tls.clone()
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Open everything, bind both ports, and serve until `shutdown` fires.
/// How long a claim on a queue item lasts without renewal: how long the
/// work of a node that died waits before another node takes it.
const QUEUE_LEASE: std::time::Duration = std::time::Duration::from_secs(60);

/// Delete HL7 messages older than `retention` from the log, hourly.
async fn purge_hl7_log(index: Index, retention: Duration, shutdown: CancellationToken) {
    loop {
        let before = crate::index::unix_now() - retention.as_secs() as i64;
        match index.purge_hl7_messages(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(messages = n, "HL7 messages past their retention deleted"),
            Err(e) => tracing::warn!(error = %e, "cannot purge the HL7 message log"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

/// The audit trail's writer, and its syslog sender when one is set. A
/// tool (`tessera user`) passes its name as `tool`, so it appends to a
/// chain of its own beside the running server's.
pub fn start_auditor(
    config: &Config,
    core: &Core,
    tracker: &TaskTracker,
    stop: CancellationToken,
    tool: Option<&str>,
) -> Result<crate::audit::Auditor, ServerError> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    let data_dir =
        std::fs::canonicalize(&config.data_dir).unwrap_or_else(|_| config.data_dir.clone());
    let syslog = match &config.audit.syslog {
        Some((host, port, files)) => Some(crate::audit::SyslogTarget {
            host: host.clone(),
            port: *port,
            tls: crate::tls::client_config(files)?,
        }),
        None => None,
    };
    let settings = crate::audit::Settings {
        node: match tool {
            None => format!("{host}:{}", data_dir.display()),
            Some(tool) => format!("{host}:{}:{tool}", data_dir.display()),
        },
        source: crate::audit::Source {
            id: format!("{}@{host}", config.dicom.ae_title),
            ae_title: config.dicom.ae_title.as_str().to_owned(),
            host,
        },
        syslog,
    };
    Ok(crate::audit::Auditor::start(
        core.index.clone(),
        settings,
        core.metrics.clone(),
        tracker,
        stop,
    ))
}

/// A digest of the settings in force, so the trail shows when they
/// changed between runs without holding any secret.
fn config_digest(config: &Config) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(format!("{config:?}").as_bytes()))
}

/// Delete audit records past their retention, hourly.
async fn purge_audit(index: Index, retention: Duration, shutdown: CancellationToken) {
    loop {
        let before = (crate::index::unix_now() - retention.as_secs() as i64) * 1_000_000;
        match index.purge_audit(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(records = n, "audit records past their retention deleted"),
            Err(e) => tracing::warn!(error = %e, "cannot purge the audit trail"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

/// Delete ended sessions, hourly.
async fn purge_sessions(accounts: crate::auth::Accounts, shutdown: CancellationToken) {
    loop {
        if let Err(e) = accounts.purge_sessions().await {
            tracing::warn!(error = %e, "cannot purge ended sessions");
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

/// Renew this node's queue leases every third of a lease while it runs.
async fn renew_queue_leases(index: Index, lease: crate::index::Lease, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(QUEUE_LEASE / 3) => {}
        }
        if let Err(e) = index.renew_leases(&lease).await {
            tracing::warn!(error = %e, "cannot renew queue leases");
        }
    }
}

pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, ServerError> {
    let core = Core::open(&config).await?;
    core.storage.recover_spool().await?;
    let dicom_listener = TcpListener::bind(config.dicom.bind)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.dicom.bind,
            source,
        })?;
    let http_listener =
        std::net::TcpListener::bind(config.http_bind).map_err(|source| ServerError::Bind {
            addr: config.http_bind,
            source,
        })?;
    let server_tls = config
        .server_tls
        .as_ref()
        .map(crate::tls::ServerTls::load)
        .transpose()?;
    let dicom_tls_listener = match config.dicom.tls_bind {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind { addr, source })?,
        ),
        None => None,
    };
    let hl7_listener = match config.hl7.bind {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind { addr, source })?,
        ),
        None => None,
    };
    let bound = Bound {
        hl7: hl7_listener.as_ref().and_then(|l| l.local_addr().ok()),
        dicom_tls: dicom_tls_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok()),
        dicom: dicom_listener
            .local_addr()
            .map_err(|source| ServerError::Bind {
                addr: config.dicom.bind,
                source,
            })?,
        http: http_listener
            .local_addr()
            .map_err(|source| ServerError::Bind {
                addr: config.http_bind,
                source,
            })?,
    };

    if config.hl7.outbound.is_some() {
        // Before anything is written, the journal's replay included.
        core.index.enable_outbox();
    }
    if !config.hl7.coerce_on_retrieve {
        core.index.keep_stored_demographics();
    }
    if !config.fsync {
        core.index.skip_wal_sync();
    }
    let audit_tracker = TaskTracker::new();
    let audit_stop = CancellationToken::new();
    let auditor = start_auditor(&config, &core, &audit_tracker, audit_stop.clone(), None)?;
    auditor.record(
        crate::audit::AuditEvent::new(
            crate::audit::Event::ApplicationStart,
            crate::audit::Actor::Local,
            "",
        )
        .detail(format!("configuration sha256 {}", config_digest(&config))),
    );
    let committer_tracker = TaskTracker::new();
    let ingest = core.journaled_ingest(&config, &committer_tracker).await?;
    let ris = crate::ris::Ris::start(
        core.index.clone(),
        crate::ris::Settings {
            use_issuer: config.hl7.use_issuer,
        },
        core.metrics.clone(),
        &committer_tracker,
    );
    let peers = core.peer_registry(&config);
    peers
        .seed(&config.peers)
        .await
        .map_err(|e| ServerError::Peers(e.to_string()))?;
    let accounts = crate::auth::Accounts::new(core.index.clone(), config.sessions);
    if config.http_api_token.is_some() {
        tracing::warn!(
            "http.api_token is deprecated: create users and per-user tokens \
             (tessera user add, tessera user token) and remove it"
        );
    }
    let search = crate::search::SearchIndex::open(&config.data_dir.join("search"))?;
    let state = AppState {
        search: search.clone(),
        index: core.index.clone(),
        storage: core.storage.clone(),
        metrics: core.metrics.clone(),
        started: Instant::now(),
        auth: AuthPolicy {
            accounts: accounts.clone(),
            shared_token: config.http_api_token.clone(),
            public_metrics: config.public_metrics,
            oidc: config
                .oidc
                .clone()
                .map(crate::auth::oidc::Oidc::new)
                .transpose()?
                .map(Arc::new),
        },
        peers: peers.clone(),
        ingest: ingest.clone(),
        ris: ris.clone(),
        dicomweb: config.dicomweb.clone(),
        clients: Arc::new(crate::limits::PerClient::new(
            config.http_max_requests_per_ip,
        )),
        hsts: config.hsts,
        auditor: auditor.clone(),
        recent_retrieves: Default::default(),
    };
    let https = if config.http_tls {
        server_tls.as_ref().map(|t| t.config())
    } else {
        None
    };
    let http = web::start(http_listener, state, https).map_err(|source| ServerError::Bind {
        addr: config.http_bind,
        source,
    })?;
    let http_handle = http.handle();
    let http_task = tokio::spawn(http);
    if !config.dicomweb.viewer_dir.join("index.html").is_file() {
        tracing::warn!(
            dir = %config.dicomweb.viewer_dir.display(),
            "the OHIF viewer is not installed; /viewer explains how (scripts/install-viewer)"
        );
    }
    tracing::info!(addr = %bound.http, "HTTP listener ready");

    let associations = TaskTracker::new();
    let commitments = Arc::new(tokio::sync::Notify::new());
    // Queue items are claimed with this node's lease. Nothing is reset at
    // startup: what a crashed run held comes back when its leases expire,
    // and other nodes' claims are never touched.
    let lease = crate::index::Lease {
        owner: crate::reclaim::lease_holder(),
        secs: QUEUE_LEASE.as_secs() as i64,
    };
    let worker = CommitmentWorker {
        index: core.index.clone(),
        storage: core.storage.clone(),
        peers: peers.clone(),
        scu: core.scu(&config),
        wake: commitments.clone(),
        max_attempts: config.forward_max_attempts,
        lease: lease.clone(),
    };
    let worker_tracker = TaskTracker::new();
    worker_tracker.spawn(renew_queue_leases(
        core.index.clone(),
        lease.clone(),
        shutdown.clone(),
    ));
    worker_tracker.spawn(worker.run(shutdown.clone()));
    let forwarder = Forwarder {
        index: core.index.clone(),
        storage: core.storage.clone(),
        peers: peers.clone(),
        scu: core.scu(&config),
        metrics: core.metrics.clone(),
        wake: Arc::new(tokio::sync::Notify::new()),
        max_attempts: config.forward_max_attempts,
        commitment_timeout_secs: config.forward_commitment_timeout_secs,
        report_wait: config.forward_report_wait,
        reports_elsewhere: Default::default(),
        lease,
        max_parallel: config.forward_parallel_destinations,
        retention_secs: config.queue_retention_secs,
        busy: Default::default(),
        auditor: auditor.clone(),
    };
    worker_tracker.spawn(forwarder.run(shutdown.clone()));
    worker_tracker.spawn(purge_sessions(accounts.clone(), shutdown.clone()));
    worker_tracker.spawn(crate::search::indexer::run(
        core.index.clone(),
        search,
        shutdown.clone(),
    ));
    if let Some(retention) = config.audit.retention {
        worker_tracker.spawn(purge_audit(core.index.clone(), retention, shutdown.clone()));
    }
    if let Some(retention) = config.hl7.message_retention {
        worker_tracker.spawn(purge_hl7_log(
            core.index.clone(),
            retention,
            shutdown.clone(),
        ));
    }
    if let Some(outbound) = config.hl7.outbound.clone() {
        let sender = crate::mllp::sender::Sender {
            index: core.index.clone(),
            metrics: core.metrics.clone(),
            config: outbound,
            holder: crate::reclaim::lease_holder(),
        };
        worker_tracker.spawn(sender.run(shutdown.clone()));
    }
    let collector = crate::reclaim::Collector {
        index: core.index.clone(),
        storage: core.storage.clone(),
        grace: config.reclaim_grace,
        interval: config.reclaim_interval,
        holder: crate::reclaim::lease_holder(),
    };
    // The lease is taken before any association is accepted, so a prune
    // started after this point refuses.
    collector.renew_lease().await?;
    worker_tracker.spawn(collector.run(shutdown.clone()));
    worker_tracker.close();
    let ctx = ServiceContext {
        ingest,
        index: core.index.clone(),
        metrics: core.metrics.clone(),
        ae_title: config.dicom.ae_title.clone(),
        max_find_results: config.dicom.max_find_results,
        fuzzy_person_names: config.dicom.fuzzy_person_names,
        storage: core.storage.clone(),
        peers: peers.clone(),
        scu: core.scu(&config),
        commitments,
        forward_max_attempts: config.forward_max_attempts,
        auditor: auditor.clone(),
        accounts: accounts.clone(),
    };
    let dicom_tls_task = match (dicom_tls_listener, &server_tls) {
        (Some(listener), Some(tls)) => Some(tokio::spawn(listener::run(
            listener,
            Some(tls.clone()),
            config.dicom.clone(),
            ctx.clone(),
            shutdown.clone(),
            associations.clone(),
        ))),
        _ => None,
    };
    let dicom_task = tokio::spawn(listener::run(
        dicom_listener,
        None,
        config.dicom.clone(),
        ctx,
        shutdown.clone(),
        associations.clone(),
    ));

    let hl7_connections = TaskTracker::new();
    let hl7_task = hl7_listener.map(|listener| {
        tracing::info!(addr = ?bound.hl7, "MLLP listener ready");
        tokio::spawn(crate::mllp::run(
            listener,
            config.hl7.tls.then(|| server_tls.clone()).flatten(),
            config.hl7.clone(),
            ris,
            auditor.clone(),
            shutdown.clone(),
            hl7_connections.clone(),
        ))
    });

    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        token.cancelled().await;
        tracing::info!("shutting down: refusing new associations");
        let _ = dicom_task.await;
        if let Some(task) = dicom_tls_task {
            let _ = task.await;
        }
        if let Some(task) = hl7_task {
            let _ = task.await;
        }
        associations.close();
        hl7_connections.close();
        associations.wait().await;
        hl7_connections.wait().await;
        tracing::info!("associations finished");
        http_handle.stop(true).await;
        let _ = http_task.await;
        worker_tracker.wait().await;
        // The last Ingest handle went with the DICOM listener; the committer
        // drains what is queued and exits.
        committer_tracker.close();
        committer_tracker.wait().await;
        auditor.record(crate::audit::AuditEvent::new(
            crate::audit::Event::ApplicationStop,
            crate::audit::Actor::Local,
            "",
        ));
        drop(auditor);
        audit_stop.cancel();
        audit_tracker.close();
        audit_tracker.wait().await;
        core.index.close().await;
        tracing::info!("shutdown complete");
    });
    Ok(Running {
        bound,
        shutdown,
        task,
        tls: server_tls,
    })
}
