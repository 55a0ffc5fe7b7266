//! The `tessera` binary: parse the command line, load the configuration,
//! and run a subcommand. The only place errors become exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tessera::config::{Config, DuplicatePolicy, RawConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Parser)]
#[command(name = "tessera", version, about = "Tessera DICOM archive")]
struct Cli {
    #[command(flatten)]
    settings: Settings,
    #[command(subcommand)]
    command: Command,
}

/// Overrides shared by every subcommand: flag > TESSERA_* variable > file > default.
#[derive(Args)]
struct Settings {
    /// TOML configuration file.
    #[arg(long, global = true, env = "TESSERA_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for the SQLite index, objects and spool.
    #[arg(long, global = true, env = "TESSERA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Our AE title.
    #[arg(long, global = true, env = "TESSERA_AE_TITLE")]
    ae_title: Option<String>,
    /// DICOM listen address, e.g. 0.0.0.0:11112.
    #[arg(long, global = true, env = "TESSERA_DICOM_BIND")]
    dicom_bind: Option<std::net::SocketAddr>,
    /// HTTP listen address, e.g. 0.0.0.0:8042.
    #[arg(long, global = true, env = "TESSERA_HTTP_BIND")]
    http_bind: Option<std::net::SocketAddr>,
    /// HL7 (MLLP) listen address, e.g. 0.0.0.0:2575, or "off".
    #[arg(long, global = true, env = "TESSERA_HL7_BIND")]
    hl7_bind: Option<String>,
    /// Object storage: file:///path or s3://bucket/prefix.
    #[arg(long, global = true, env = "TESSERA_STORAGE_URL")]
    storage_url: Option<String>,
    /// Index database: sqlite://path or postgres://user@host/db.
    #[arg(long, global = true, env = "TESSERA_INDEX_URL")]
    index_url: Option<String>,
    /// What to do with a known SOP Instance UID and different content:
    /// keep-first, replace or reject.
    #[arg(long, global = true, env = "TESSERA_DUPLICATE_POLICY")]
    duplicate_policy: Option<DuplicatePolicy>,
    /// Folder of the prepared OHIF viewer served at /viewer.
    #[arg(long, global = true, env = "TESSERA_VIEWER_DIR")]
    viewer_dir: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long, global = true, env = "TESSERA_LOG_JSON")]
    log_json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the archive: DICOM and HTTP listeners.
    Serve,
    /// Import Part-10 files and DICOMDIR folders, recursively.
    Import {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Files imported at once.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
    },
    /// Re-hash every object and cross-check index and storage.
    Verify {
        /// Delete stored objects no index entry refers to (server stopped!).
        #[arg(long)]
        prune_unreferenced: bool,
        #[arg(long)]
        json: bool,
    },
    /// C-ECHO a peer: a registered AE title, or AE@host:port.
    Echo { peer: String },
    /// Print counts of patients, studies, series, instances and bytes.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the full-text search index from the index database
    /// (server stopped).
    Reindex,
    /// Manage the accounts that log in to the web pages and API.
    #[command(subcommand)]
    User(UserCommand),
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check every node's hash chain: exit code 1 when a record was
    /// changed or removed.
    Verify {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account. The first one is usually `--role admin`; later
    /// ones must choose a new password at first login.
    Add {
        name: String,
        /// admin, technologist, radiologist, referring or auditor; repeat
        /// for several.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// A referring user's name as studies carry it (DICOM PN, e.g.
        /// "Kowalski^Jan").
        #[arg(long, default_value = "")]
        physician_name: String,
        /// Read the password from standard input instead of asking.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a new password; the user must change it at next login unless
    /// --no-change.
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
        #[arg(long)]
        no_change: bool,
    },
    /// Lock an account out and end its sessions.
    Disable {
        name: String,
    },
    Enable {
        name: String,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    /// Create an API token and print its secret (shown only once).
    Token {
        user: String,
        /// The token's name, e.g. the script that uses it.
        #[arg(long)]
        name: String,
        /// Roles the token holds (default: all of the user's).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Days until it expires.
        #[arg(long, default_value_t = 90)]
        days: i64,
    },
    /// Revoke a user's token by name.
    Revoke {
        user: String,
        token: String,
    },
}

impl Settings {
    fn load(&self) -> anyhow::Result<Config> {
        let mut raw = match &self.config {
            Some(path) => RawConfig::from_file(path)?,
            None => RawConfig::default(),
        };
        if let Some(v) = &self.data_dir {
            raw.storage.data_dir = Some(v.clone());
        }
        if let Some(v) = &self.ae_title {
            raw.dicom.ae_title = Some(v.clone());
        }
        if let Some(v) = self.dicom_bind {
            raw.dicom.bind = Some(v);
        }
        if let Some(v) = self.http_bind {
            raw.http.bind = Some(v);
        }
        if let Some(v) = &self.hl7_bind {
            raw.hl7.bind = Some(v.clone());
        }
        if let Some(v) = &self.storage_url {
            raw.storage.url = Some(v.clone());
        }
        if let Some(v) = &self.index_url {
            raw.index.url = Some(v.clone());
        }
        if let Some(v) = self.viewer_dir.clone() {
            raw.viewer.dir = Some(v);
        }
        if let Some(v) = self.duplicate_policy {
            raw.dicom.duplicate_policy = Some(v);
        }
        Ok(Config::from_raw(raw)?)
    }
}

fn main() -> ExitCode {
    // dicom-rs meets the end of every data set and command set as an error
    // that captures a backtrace when RUST_BACKTRACE=1: a stack walk per
    // parse, several per stored instance. Panics keep their backtraces.
    // Set before any thread exists, so nothing reads the environment
    // meanwhile.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    let cli = Cli::parse();
    // The tools keep the terminal for their own output.
    let default_log = match cli.command {
        Command::Serve => "info,sqlx=warn",
        _ => "warn",
    };
    tessera::telemetry::init_logging(default_log, cli.settings.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = cli.settings.load()?;
    match cli.command {
        Command::Serve => serve(config).await,
        Command::Import { paths, parallel } => import(config, paths, parallel).await,
        Command::Verify {
            prune_unreferenced,
            json,
        } => verify(config, prune_unreferenced, json).await,
        Command::Stats { json } => stats(config, json).await,
        Command::Reindex => reindex(config).await,
        Command::Echo { peer } => echo(config, &peer).await,
        Command::User(command) => user(config, command).await,
        Command::Audit(AuditCommand::Verify { json }) => audit_verify(config, json).await,
    }
}

async fn reindex(config: Config) -> anyhow::Result<ExitCode> {
    let core = tessera::server::Core::open(&config).await?;
    let search = tessera::search::SearchIndex::open(&config.data_dir.join("search"))
        .context("cannot open the search index (is a server running on this data directory?)")?;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} studies, {per_sec}, eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let done = tessera::search::indexer::rebuild(&core.index, &search, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .await?;
    bar.finish_and_clear();
    core.index.close().await;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{done} studies indexed in {seconds:.1} s ({:.0} studies/s)",
        done as f64 / seconds.max(0.001)
    );
    Ok(ExitCode::SUCCESS)
}

async fn audit_verify(config: Config, json: bool) -> anyhow::Result<ExitCode> {
    let core = tessera::server::Core::open(&config).await?;
    let report = tessera::audit::chain::verify(&core.index).await;
    core.index.close().await;
    let report = report?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for problem in &report.problems {
            println!("BROKEN  {problem}");
        }
        println!(
            "{} audit records in {} chains checked: {}",
            report.rows,
            report.nodes,
            if report.problems.is_empty() {
                "intact".to_owned()
            } else {
                format!("{} problems", report.problems.len())
            }
        );
    }
    Ok(if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn user(config: Config, command: UserCommand) -> anyhow::Result<ExitCode> {
    use tessera::audit::{AuditEvent, Event};
    use tessera::model::Roles;
    let core = tessera::server::Core::open(&config).await?;
    let accounts = tessera::auth::Accounts::new(core.index.clone(), config.sessions);
    let audit = CliAudit::start(&config, &core)?;
    let auditor = audit.auditor.clone();
    let changed = |detail: String| {
        auditor.record(AuditEvent::new(Event::UserChanged, audit.actor(), "").detail(detail))
    };
    let result = async {
        match command {
            UserCommand::Add {
                name,
                roles,
                physician_name,
                password_stdin,
            } => {
                let roles = Roles::parse(&roles.join(","))?;
                let first = !accounts.users_exist().await?;
                let password = read_password(password_stdin)?;
                accounts
                    .add_user(&name, &roles, &password, !first, &physician_name)
                    .await?;
                println!("user {name} created with roles {roles}");
                changed(format!("{name} created with roles {roles}"));
            }
            UserCommand::Passwd {
                name,
                password_stdin,
                no_change,
            } => {
                let password = read_password(password_stdin)?;
                accounts
                    .set_password(&name, &password, !no_change, None)
                    .await?;
                println!("password of {name} set");
                changed(format!("{name} password reset"));
            }
            UserCommand::Disable { name } => {
                accounts.set_disabled(&name, true).await?;
                println!("user {name} disabled");
                changed(format!("{name} disabled"));
            }
            UserCommand::Enable { name } => {
                accounts.set_disabled(&name, false).await?;
                println!("user {name} enabled");
                changed(format!("{name} enabled"));
            }
            UserCommand::List { json } => {
                let users = accounts.users().await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&users)?);
                }
                for u in users.iter().filter(|_| !json) {
                    let state = if u.disabled { "disabled" } else { "active" };
                    println!("{:<24} {:<40} {state}", u.name, u.roles.to_string());
                }
            }
            UserCommand::Token {
                user,
                name,
                roles,
                days,
            } => {
                let roles = if roles.is_empty() {
                    None
                } else {
                    Some(Roles::parse(&roles.join(","))?)
                };
                let made = accounts
                    .create_token(&user, &name, roles.as_ref(), days)
                    .await?;
                eprintln!(
                    "token {name} of {user}: roles {}, expires in {days} days; \
                     the secret is shown only now:",
                    made.token.roles
                );
                println!("{}", made.secret);
                changed(format!("{user} token {name} created"));
            }
            UserCommand::Revoke { user, token } => {
                accounts.revoke_token(&user, &token).await?;
                println!("token {token} of {user} revoked");
                changed(format!("{user} token {token} revoked"));
            }
        }
        anyhow::Ok(())
    }
    .await;
    drop(auditor);
    audit.finish().await;
    core.index.close().await;
    result?;
    Ok(ExitCode::SUCCESS)
}

/// The audit trail for a command-line run: records name the operating
/// system user, and the run waits for them to be written.
struct CliAudit {
    auditor: tessera::audit::Auditor,
    who: String,
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl CliAudit {
    fn start(config: &Config, core: &tessera::server::Core) -> anyhow::Result<Self> {
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        let auditor =
            tessera::server::start_auditor(config, core, &tracker, stop.clone(), Some("cli"))?;
        let who = std::env::var("SUDO_USER")
            .or_else(|_| std::env::var("USER"))
            .unwrap_or_else(|_| "cli".to_owned());
        Ok(CliAudit {
            auditor,
            who,
            stop,
            tracker,
        })
    }

    fn actor(&self) -> tessera::audit::Actor {
        tessera::audit::Actor::User(format!("{} (command line)", self.who))
    }

    async fn finish(self) {
        drop(self.auditor);
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// A new password: asked twice on a terminal, or one line of stdin.
fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    use std::io::IsTerminal;
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    let first = rpassword::prompt_password("New password: ")?;
    let again = rpassword::prompt_password("Again: ")?;
    anyhow::ensure!(first == again, "the passwords differ");
    Ok(first)
}

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    let shutdown = CancellationToken::new();
    // Registered before the ready line: a supervisor may send SIGTERM as
    // soon as it reads it, and without a handler that signal kills us
    // before the shutdown drains.
    let signals = Signals::register();
    let running = tessera::server::start(config, shutdown.clone()).await?;
    // One line on stdout for supervisors and scripts that started us on
    // port 0 and need the real addresses.
    let hl7 = running
        .bound
        .hl7
        .map_or_else(|| "off".to_owned(), |a| a.to_string());
    let dicom_tls = running
        .bound
        .dicom_tls
        .map(|a| format!(" dicom-tls={a}"))
        .unwrap_or_default();
    println!(
        "tessera ready: dicom={} http={} hl7={hl7}{dicom_tls}",
        running.bound.dicom, running.bound.http
    );
    let token = shutdown.clone();
    tokio::spawn(async move {
        signals.wait().await;
        token.cancel();
    });
    if let Some(tls) = running.certificates() {
        tokio::spawn(reload_on_sighup(tls, shutdown.clone()));
    }
    running.wait().await;
    Ok(ExitCode::SUCCESS)
}

/// On SIGHUP read the TLS certificate and key files again; a bad file is
/// logged and the old pair kept.
async fn reload_on_sighup(tls: tessera::tls::ServerTls, shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; certificates reload only on restart");
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hup.recv() => match tls.reload() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                Err(e) => tracing::error!(error = %e, "SIGHUP: TLS certificate not reloaded; keeping the current one"),
            },
        }
    }
}

/// SIGTERM and SIGINT, both of which begin a graceful shutdown.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn register() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    async fn wait(self) {
        async fn recv(signal: Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(mut s) => {
                    s.recv().await;
                }
                // Without a handler the default action ends the process.
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = recv(self.term) => tracing::info!("SIGTERM received"),
            _ = recv(self.int) => tracing::info!("SIGINT received"),
        }
    }
}

async fn import(config: Config, paths: Vec<PathBuf>, parallel: usize) -> anyhow::Result<ExitCode> {
    let core = tessera::server::Core::open(&config).await?;
    let audit = CliAudit::start(&config, &core)?;
    let tracker = TaskTracker::new();
    let ingest = core.ingest(&config, &tracker);
    let files = tessera::import::collect_files(&paths)
        .await
        .context("cannot list the files to import")?;
    let bar = indicatif::ProgressBar::new(files.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} files, {per_sec}, eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let summary = tessera::import::import_files(&ingest, files, parallel, |path, result| {
        bar.inc(1);
        if let Err(e) = result {
            // suspend() also works when the bar is hidden (no terminal).
            bar.suspend(|| eprintln!("error: {}: {e}", path.display()));
        }
    })
    .await;
    bar.finish_and_clear();
    drop(ingest);
    tracker.close();
    tracker.wait().await;
    let outcome = if summary.failed.is_empty() {
        tessera::audit::Outcome::Success
    } else {
        tessera::audit::Outcome::MinorFailure
    };
    audit.auditor.record(
        tessera::audit::AuditEvent::new(tessera::audit::Event::Stored, audit.actor(), "")
            .outcome(outcome)
            .studies(summary.studies.iter().cloned())
            .detail(format!(
                "tessera import of {} files: {} stored, {} already stored, {} failed",
                summary.files,
                summary.stored,
                summary.already_stored,
                summary.failed.len()
            )),
    );
    audit.finish().await;
    core.index.close().await;
    println!(
        "{} files: {} stored, {} already stored, {} duplicates kept, {} replaced, {} DICOMDIR skipped, {} failed",
        summary.files,
        summary.stored,
        summary.already_stored,
        summary.kept_existing,
        summary.replaced,
        summary.directory_records,
        summary.failed.len()
    );
    Ok(if summary.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn verify(config: Config, prune: bool, json: bool) -> anyhow::Result<ExitCode> {
    let core = tessera::server::Core::open(&config).await?;
    let report =
        tessera::verify::verify(&core.index, &core.storage, prune, config.reclaim_grace).await?;
    core.index.close().await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for m in &report.missing {
            println!("MISSING  {m}");
        }
        for c in &report.corrupt {
            println!("CORRUPT  {c}");
        }
        for u in &report.unreferenced {
            println!("UNREFERENCED  {u}");
        }
        println!(
            "{} objects checked ({} bytes): {} missing, {} corrupt, {} unreferenced, \
             {} acknowledged and still in the ingest journal{}",
            report.checked,
            report.bytes,
            report.missing.len(),
            report.corrupt.len(),
            report.unreferenced.len(),
            report.in_journal,
            if prune {
                format!(" ({} pruned)", report.pruned)
            } else {
                String::new()
            }
        );
    }
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn echo(config: Config, target: &str) -> anyhow::Result<ExitCode> {
    let core = tessera::server::Core::open(&config).await?;
    let registry = core.peer_registry(&config);
    registry.seed(&config.peers).await?;
    let peer = match target.split_once('@') {
        Some((ae, addr)) => {
            let (host, port) = addr.rsplit_once(':').context("expected AE@host:port")?;
            tessera::model::Peer::from_raw(tessera::model::RawPeer {
                ae_title: ae.to_owned(),
                host: host.to_owned(),
                port: port.parse().context("port must be a number")?,
                tls: false,
                services: None,
                worklist_charset: None,
            })?
        }
        None => match registry.get(target).await {
            Ok(peer) => peer,
            Err(tessera::peers::RegistryError::NotFound(_)) => {
                core.index.close().await;
                eprintln!("error: no peer {target:?} is registered (use AE@host:port for an unregistered one)");
                return Ok(ExitCode::from(1));
            }
            Err(e) => return Err(e.into()),
        },
    };
    let result = registry.echo_peer(&peer).await;
    core.index.close().await;
    match &result.error {
        None => {
            println!(
                "C-ECHO {}@{}:{}: ok in {} ms",
                peer.ae_title, peer.host, peer.port, result.elapsed_ms
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(e) => {
            println!(
                "C-ECHO {}@{}:{}: failed: {e}",
                peer.ae_title, peer.host, peer.port
            );
            Ok(ExitCode::from(1))
        }
    }
}

async fn stats(config: Config, json: bool) -> anyhow::Result<ExitCode> {
    let core = tessera::server::Core::open(&config).await?;
    let stats = core.index.stats().await?;
    core.index.close().await;
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        println!("patients:  {}", stats.patients);
        println!("studies:   {}", stats.studies);
        println!("series:    {}", stats.series);
        println!("instances: {}", stats.instances);
        println!("bytes:     {}", stats.stored_bytes);
        println!("storage:   {}", core.storage.describe());
    }
    Ok(ExitCode::SUCCESS)
}
