//! Configuration: raw TOML and overrides become one validated [`Config`].
//!
//! Precedence, lowest first: built-in defaults, the TOML file given with
//! `--config`, `TESSERA_*` environment variables, command-line flags. The
//! binary merges the last two through clap; this module owns the first two and
//! the validation, so no handler ever re-parses a setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::model::{AeTitle, Peer, RawPeer};
use crate::routing::{RawRoute, Route};

/// What to do when an instance arrives whose SOP Instance UID is already
/// stored with different content. Identical content is always accepted once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DuplicatePolicy {
    /// Keep the stored object and answer success; the new copy is discarded.
    #[default]
    KeepFirst,
    /// Store the new object and make it the current version of the instance.
    Replace,
    /// Refuse the new object with status 0111H (Duplicate SOP Instance).
    Reject,
}

impl std::str::FromStr for DuplicatePolicy {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "keep-first" => Ok(Self::KeepFirst),
            "replace" => Ok(Self::Replace),
            "reject" => Ok(Self::Reject),
            other => Err(ConfigError::Invalid {
                key: "dicom.duplicate_policy",
                reason: format!("unknown policy {other:?} (keep-first, replace, reject)"),
            }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid setting {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// The TOML file as written. Every field is optional so a file only names
/// what it changes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub dicom: RawDicom,
    #[serde(default)]
    pub http: RawHttp,
    #[serde(default)]
    pub storage: RawStorage,
    #[serde(default)]
    pub index: RawIndex,
    /// Remote AEs: `[[peers]]` tables.
    #[serde(default)]
    pub peers: Vec<RawPeer>,
    /// Store-and-forward rules: `[[routes]]` tables.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub forwarding: RawForwarding,
    #[serde(default)]
    pub dicomweb: RawDicomWeb,
    #[serde(default)]
    pub viewer: RawViewer,
    #[serde(default)]
    pub tls: RawTls,
    #[serde(default)]
    pub hl7: RawHl7,
    #[serde(default)]
    pub audit: RawAudit,
    #[serde(default)]
    pub oidc: crate::auth::oidc::RawOidc,
}

/// The HL7 v2 (MLLP) interface to the RIS/HIS.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHl7 {
    /// Where the MLLP listener binds (default 0.0.0.0:2575); "off" for none.
    pub bind: Option<String>,
    /// MLLP over TLS on that port, with `[tls]`'s certificate.
    pub tls: Option<bool>,
    /// Open MLLP connections at once (default 32).
    pub max_connections: Option<usize>,
    /// The largest message taken, in bytes (default 4 MiB).
    pub max_message_bytes: Option<usize>,
    /// Seconds a connection may stay silent before it is closed (default 600).
    pub idle_timeout_secs: Option<u64>,
    /// Key patients by PID-3's ID and its assigning authority. Off by
    /// default: most DICOM objects carry no Issuer of Patient ID, and the
    /// same patient must not become two.
    pub use_issuer: Option<bool>,
    /// Send objects stored before an ADT update, merge or identifier
    /// change with the patient as it is now (default true), or as stored.
    pub coerce_on_retrieve: Option<bool>,
    /// Days the message log keeps a message (default 365; 0 keeps all).
    pub message_retention_days: Option<u64>,
    /// Where order status and application acknowledgements go.
    pub outbound: Option<RawHl7Outbound>,
}

/// The RIS Tessera tells what happened: `[hl7.outbound]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHl7Outbound {
    /// The RIS's MLLP listener, `host:port`; absent or "off" for none.
    pub address: Option<String>,
    /// `ORM^O01` (default), `OMG^O19` or `OMI^O23`.
    pub message: Option<String>,
    /// MSH-3 (default TESSERA) and MSH-4.
    pub sending_application: Option<String>,
    pub sending_facility: Option<String>,
    /// MSH-5 (default RIS) and MSH-6.
    pub receiving_application: Option<String>,
    pub receiving_facility: Option<String>,
    /// MSH-18 of what is sent (default `UNICODE UTF-8`).
    pub charset: Option<String>,
    /// Seconds to wait for the connection and for each acknowledgement
    /// (default 30).
    pub ack_timeout_secs: Option<u64>,
    /// The longest wait between attempts, in seconds (default 300).
    pub max_backoff_secs: Option<i64>,
}

/// Validated HL7 settings.
#[derive(Debug, Clone)]
pub struct Hl7Config {
    pub bind: Option<SocketAddr>,
    pub tls: bool,
    pub max_connections: usize,
    pub max_message_bytes: usize,
    pub idle_timeout: Duration,
    pub use_issuer: bool,
    pub coerce_on_retrieve: bool,
    /// `None`: messages are kept for good.
    pub message_retention: Option<Duration>,
    pub outbound: Option<Hl7OutboundConfig>,
}

/// Validated `[hl7.outbound]`.
#[derive(Debug, Clone)]
pub struct Hl7OutboundConfig {
    pub address: String,
    pub addressing: crate::ris::outbound::Addressing,
    pub ack_timeout: Duration,
    pub max_backoff_secs: i64,
}

impl Hl7OutboundConfig {
    fn from_raw(raw: &RawHl7Outbound) -> Result<Option<Self>, ConfigError> {
        let address = match raw.address.as_deref().map(str::trim) {
            None | Some("") | Some("off") => return Ok(None),
            Some(a) => a.to_owned(),
        };
        let invalid = |key, reason: String| ConfigError::Invalid { key, reason };
        if !address.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        }) {
            return Err(invalid(
                "hl7.outbound.address",
                format!("{address:?} is not host:port"),
            ));
        }
        let message_name = raw.message.as_deref().unwrap_or("ORM^O01");
        let message = crate::ris::outbound::OrderMessage::parse(message_name).ok_or_else(|| {
            invalid(
                "hl7.outbound.message",
                format!("{message_name:?} is not ORM^O01, OMG^O19 or OMI^O23"),
            )
        })?;
        let charset_name = raw.charset.as_deref().unwrap_or("UNICODE UTF-8");
        let charset = crate::hl7::Charset::from_msh18(charset_name)
            .map_err(|e| invalid("hl7.outbound.charset", e.to_string()))?;
        let text = |v: &Option<String>, default: &str| v.clone().unwrap_or_else(|| default.into());
        Ok(Some(Hl7OutboundConfig {
            address,
            addressing: crate::ris::outbound::Addressing {
                message,
                sending_application: text(&raw.sending_application, "TESSERA"),
                sending_facility: text(&raw.sending_facility, ""),
                receiving_application: text(&raw.receiving_application, "RIS"),
                receiving_facility: text(&raw.receiving_facility, ""),
                charset,
            },
            ack_timeout: Duration::from_secs(raw.ack_timeout_secs.unwrap_or(30).clamp(1, 3600)),
            max_backoff_secs: raw.max_backoff_secs.unwrap_or(300).clamp(1, 86_400),
        }))
    }
}

/// The audit trail: `[audit]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// Days a record is kept (default 2190, six years; 0 keeps all).
    pub retention_days: Option<u64>,
    /// A syslog collector (`host:port`) that also gets every record, as
    /// RFC 5424 over TLS (RFC 5425).
    pub syslog: Option<String>,
    /// The CA the collector's certificate chains to (default tls.ca_file).
    pub syslog_ca_file: Option<PathBuf>,
}

/// Validated `[audit]` settings.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// `None`: records are kept for good.
    pub retention: Option<Duration>,
    /// Host, port and CA file of the syslog collector.
    pub syslog: Option<(String, u16, crate::tls::TlsFiles)>,
}

impl AuditConfig {
    fn from_raw(raw: RawAudit, tls: &RawTls) -> Result<Self, ConfigError> {
        let syslog = match raw.syslog.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(address) => {
                let invalid = |reason: String| ConfigError::Invalid {
                    key: "audit.syslog",
                    reason,
                };
                let (host, port) = address
                    .rsplit_once(':')
                    .ok_or_else(|| invalid(format!("{address:?} is not host:port")))?;
                let port: u16 = port
                    .parse()
                    .map_err(|_| invalid(format!("{address:?} has no valid port")))?;
                let ca_file = raw
                    .syslog_ca_file
                    .clone()
                    .or_else(|| tls.ca_file.clone())
                    .ok_or_else(|| invalid("needs audit.syslog_ca_file or tls.ca_file".into()))?;
                let client = tls.cert_file.clone().zip(tls.key_file.clone());
                let host = host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned();
                Some((host, port, crate::tls::TlsFiles { ca_file, client }))
            }
        };
        Ok(AuditConfig {
            retention: match raw.retention_days.unwrap_or(2190) {
                0 => None,
                days => Some(Duration::from_secs(days.min(100 * 365) * 86_400)),
            },
            syslog,
        })
    }
}

/// Certificates (PEM files) for associations to peers marked `tls = true`
/// and for the TLS listeners.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// CA certificates a peer's or a client's certificate must chain to.
    pub ca_file: Option<PathBuf>,
    /// Tessera's certificate chain: presented by the TLS listeners and to
    /// peers that ask for a client certificate.
    pub cert_file: Option<PathBuf>,
    /// The key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// TLS listeners refuse a client without a certificate from `ca_file`.
    pub require_client_cert: Option<bool>,
    /// AE titles that may call only over TLS with a certificate for the
    /// given name (its DNS subjectAltName or IP address).
    pub ae_certificates: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForwarding {
    /// Failed attempts before a forward becomes a dead letter (default 20).
    pub max_attempts: Option<i64>,
    /// On routes with `confirm_commitment`: seconds to wait for the
    /// destination's storage commitment report before sending the
    /// instances again (default 3600).
    pub commitment_timeout_secs: Option<i64>,
    /// Seconds the forwarding association stays open for the report
    /// before it is expected on a new association (default 5).
    pub commitment_report_wait_secs: Option<u64>,
    /// Destinations delivered to at once, each by its own worker, so one
    /// slow destination never holds up the others (default 4).
    pub max_parallel_destinations: Option<usize>,
    /// Seconds a finished forward or commitment report is kept before it
    /// is purged from the queue (default 604800, a week). Dead letters stay.
    pub retention_secs: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDicom {
    pub ae_title: Option<String>,
    pub bind: Option<SocketAddr>,
    /// A second DICOM port that speaks only TLS (PS3.15 B.1).
    pub tls: Option<bool>,
    /// Its address (default 0.0.0.0:2762).
    pub tls_bind: Option<SocketAddr>,
    pub max_associations: Option<usize>,
    /// Open associations from one client address at once.
    pub max_associations_per_ip: Option<usize>,
    pub max_pdu_length: Option<u32>,
    pub idle_timeout_secs: Option<u64>,
    pub artim_timeout_secs: Option<u64>,
    /// Seconds one PDU may take to be sent before the association is given
    /// up: a peer that stops reading must not hold a task and its resources.
    pub write_timeout_secs: Option<u64>,
    pub shutdown_grace_secs: Option<u64>,
    pub max_find_results: Option<usize>,
    pub fuzzy_person_names: Option<bool>,
    pub allowed_calling_ae_titles: Option<Vec<String>>,
    pub require_called_ae_title: Option<bool>,
    pub duplicate_policy: Option<DuplicatePolicy>,
    /// Calling AE titles not in the peer registry: "accept" (default) or
    /// "refuse" (A-ASSOCIATE-RJ, calling AE title not recognized).
    pub unknown_peers: Option<String>,
    /// Networks peers may be in (`10.0.0.0/8`, `fd00::/8`); empty for any.
    /// Checked when a peer is registered and on every connection to one.
    pub peer_networks: Option<Vec<String>>,
    /// User identity negotiation (PS3.7 D.3.3.7): "optional" (default: a
    /// user name and password, when sent, must be an account's and its
    /// roles limit the services) or "required" (associations without one
    /// are rejected).
    pub user_identity: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDicomWeb {
    /// QIDO-RS answers at most this many matches per request.
    pub max_results: Option<usize>,
    /// Largest STOW-RS request body accepted.
    pub max_upload_bytes: Option<u64>,
    /// Seconds a request body may send nothing before it is given up.
    pub body_idle_timeout_secs: Option<u64>,
    /// Origins allowed to call DICOMweb from a browser ("*" for any).
    pub cors_allowed_origins: Option<Vec<String>>,
    /// The DICOMweb root clients reach us at, for RetrieveURL and
    /// BulkDataURI values (e.g. behind a reverse proxy).
    pub public_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawViewer {
    /// Folder holding the prepared OHIF viewer (see `scripts/install-viewer`).
    pub dir: Option<PathBuf>,
}

/// DICOMweb settings.
#[derive(Debug, Clone)]
pub struct DicomWebConfig {
    pub max_results: usize,
    pub max_upload_bytes: u64,
    pub body_idle_timeout: Duration,
    pub cors_allowed_origins: Vec<String>,
    /// Without a trailing slash; `None`: from each request's Host header.
    pub public_url: Option<String>,
    pub viewer_dir: PathBuf,
    /// The same name matching as C-FIND when `fuzzymatching` is not given.
    pub fuzzy_person_names: bool,
}

pub const DEFAULT_VIEWER_DIR: &str = "web/dist-viewer";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub bind: Option<SocketAddr>,
    /// Deprecated: one shared `Authorization: Bearer <token>` with every
    /// right. Per-user tokens (`tessera user token`) replace it.
    pub api_token: Option<String>,
    /// Requests one client address may have in progress at once.
    pub max_requests_per_ip: Option<usize>,
    /// A session ends after this many minutes without a request.
    pub session_idle_minutes: Option<u64>,
    /// A session ends this many hours after login, however busy.
    pub session_hours: Option<u64>,
    /// Serve `/metrics` to anyone who can reach the port.
    pub public_metrics: Option<bool>,
    /// HTTPS instead of HTTP on `bind`, with `[tls]`'s certificate.
    pub tls: Option<bool>,
    /// Send Strict-Transport-Security on HTTPS answers.
    pub hsts: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    pub data_dir: Option<PathBuf>,
    /// `file:///abs/path` or `s3://bucket/prefix`; default: `<data_dir>/objects`.
    pub url: Option<String>,
    pub fsync: Option<bool>,
    /// Write each object to its place (file or S3) before acknowledging it,
    /// instead of acknowledging from the ingest journal.
    pub place_before_ack: Option<bool>,
    /// Seconds an unreferenced object is kept before the collector deletes it.
    pub reclaim_grace_secs: Option<u64>,
    /// Seconds between the collector's passes.
    pub reclaim_interval_secs: Option<u64>,
    #[serde(default)]
    pub s3: RawS3,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawS3 {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub allow_http: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIndex {
    /// `sqlite://path` or `postgres://…`; default: `<data_dir>/index.sqlite`.
    pub url: Option<String>,
    pub max_connections: Option<u32>,
}

impl RawConfig {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }
}

/// Where objects live.
#[derive(Debug, Clone)]
pub enum StorageLocation {
    /// A local directory: RAID/DAS, NAS (NFS/SMB) or iSCSI mount.
    Local { root: PathBuf },
    /// An S3-compatible bucket.
    S3 {
        bucket: String,
        prefix: String,
        settings: RawS3,
    },
}

#[derive(Debug, Clone)]
pub struct DicomConfig {
    pub ae_title: AeTitle,
    pub bind: SocketAddr,
    /// The TLS port, when `dicom.tls` is on.
    pub tls_bind: Option<SocketAddr>,
    /// AE titles that must prove themselves with a client certificate
    /// valid for the given name; refused on the plain port.
    pub ae_certificates: std::collections::BTreeMap<String, String>,
    pub max_associations: usize,
    pub max_associations_per_ip: usize,
    pub max_pdu_length: u32,
    pub idle_timeout: Duration,
    pub artim_timeout: Duration,
    pub write_timeout: Duration,
    /// How long open associations may keep working after SIGTERM.
    pub shutdown_grace: Duration,
    /// A C-FIND with more matches ends with A700 after this many.
    pub max_find_results: usize,
    /// C-FIND person names: case- and diacritic-insensitive (default), or
    /// exact as stored.
    pub fuzzy_person_names: bool,
    /// Empty means any calling AE title is accepted.
    pub allowed_calling_ae_titles: Vec<AeTitle>,
    pub require_called_ae_title: bool,
    pub duplicate_policy: DuplicatePolicy,
    pub refuse_unknown_peers: bool,
    pub peer_networks: Vec<ipnet::IpNet>,
    /// Associations without a user identity are rejected.
    pub require_user_identity: bool,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub dicom: DicomConfig,
    pub http_bind: SocketAddr,
    pub http_api_token: Option<String>,
    pub http_max_requests_per_ip: usize,
    pub sessions: crate::auth::SessionPolicy,
    pub public_metrics: bool,
    pub http_tls: bool,
    pub hsts: bool,
    /// The certificate of the TLS listeners; set when one is on.
    pub server_tls: Option<crate::tls::ServerFiles>,
    pub data_dir: PathBuf,
    pub storage: StorageLocation,
    /// fsync files, directories and the HL7 journal before acknowledging.
    /// Only for benchmarks that want to see the cost; never turn it off in
    /// production.
    pub fsync: bool,
    /// Objects go to their place before the acknowledgement, not after it
    /// from the ingest journal (for sites that want the S3 copy first).
    pub place_before_ack: bool,
    /// How long an object no row references is kept before it is deleted:
    /// longer than any store takes from writing its object to committing
    /// its row.
    pub reclaim_grace: Duration,
    pub reclaim_interval: Duration,
    pub index_url: String,
    pub index_max_connections: u32,
    /// Peers from the config file; written to the registry at startup.
    pub peers: Vec<Peer>,
    pub routes: Vec<Route>,
    /// Failed attempts before a forward becomes a dead letter.
    pub forward_max_attempts: i64,
    /// Seconds a forward waits for its storage commitment report.
    pub forward_commitment_timeout_secs: i64,
    /// How long the forwarding association stays open for that report.
    pub forward_report_wait: Duration,
    pub forward_parallel_destinations: usize,
    /// Seconds finished queue rows are kept.
    pub queue_retention_secs: i64,
    pub dicomweb: DicomWebConfig,
    /// TLS to peers; `None` when `[tls]` names no CA file.
    pub tls: Option<crate::tls::TlsFiles>,
    pub hl7: Hl7Config,
    pub audit: AuditConfig,
    /// Single sign-on; `None` when `[oidc]` names no issuer.
    pub oidc: Option<crate::auth::oidc::OidcSettings>,
}

pub const DEFAULT_AE_TITLE: &str = "TESSERA";
pub const DEFAULT_DICOM_BIND: &str = "0.0.0.0:11112";
pub const DEFAULT_HTTP_BIND: &str = "0.0.0.0:8042";
pub const DEFAULT_HL7_BIND: &str = "0.0.0.0:2575";
/// The port PS3.15 registers for DICOM over TLS.
pub const DEFAULT_DICOM_TLS_BIND: &str = "0.0.0.0:2762";
pub const DEFAULT_DATA_DIR: &str = "./tessera-data";

/// `tls.ae_certificates`: AE title → the name its certificate must be
/// valid for.
fn ae_certificates(
    raw: Option<std::collections::BTreeMap<String, String>>,
) -> Result<std::collections::BTreeMap<String, String>, ConfigError> {
    let mut map = std::collections::BTreeMap::new();
    for (ae, name) in raw.unwrap_or_default() {
        let ae = AeTitle::new(&ae).map_err(|e| ConfigError::Invalid {
            key: "tls.ae_certificates",
            reason: format!("{ae:?}: {e}"),
        })?;
        let name = name.trim();
        if rustls::pki_types::ServerName::try_from(name).is_err() {
            return Err(ConfigError::Invalid {
                key: "tls.ae_certificates",
                reason: format!("{name:?} is not a DNS name or IP address"),
            });
        }
        map.insert(ae.as_str().to_owned(), name.to_owned());
    }
    Ok(map)
}

impl Config {
    /// Validate raw settings, filling in defaults.
    pub fn from_raw(mut raw: RawConfig) -> Result<Self, ConfigError> {
        let d = raw.dicom;
        let ae_title =
            AeTitle::new(d.ae_title.as_deref().unwrap_or(DEFAULT_AE_TITLE)).map_err(|e| {
                ConfigError::Invalid {
                    key: "dicom.ae_title",
                    reason: e.to_string(),
                }
            })?;
        let allowed = d
            .allowed_calling_ae_titles
            .unwrap_or_default()
            .iter()
            .map(|t| AeTitle::new(t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::Invalid {
                key: "dicom.allowed_calling_ae_titles",
                reason: e.to_string(),
            })?;
        let max_pdu_length = d.max_pdu_length.unwrap_or(262_144);
        if !(4_096..=16_777_216).contains(&max_pdu_length) {
            return Err(ConfigError::Invalid {
                key: "dicom.max_pdu_length",
                reason: format!("{max_pdu_length} is outside 4096..=16777216"),
            });
        }
        let max_associations = d.max_associations.unwrap_or(64);
        if max_associations == 0 {
            return Err(ConfigError::Invalid {
                key: "dicom.max_associations",
                reason: "must be at least 1".into(),
            });
        }
        let dicom = DicomConfig {
            ae_title,
            bind: d.bind.unwrap_or_else(|| parse_addr(DEFAULT_DICOM_BIND)),
            tls_bind: d.tls.unwrap_or(false).then(|| {
                d.tls_bind
                    .unwrap_or_else(|| parse_addr(DEFAULT_DICOM_TLS_BIND))
            }),
            ae_certificates: ae_certificates(raw.tls.ae_certificates.take())?,
            max_associations,
            max_associations_per_ip: d
                .max_associations_per_ip
                .unwrap_or(32)
                .clamp(1, max_associations),
            max_pdu_length,
            idle_timeout: Duration::from_secs(d.idle_timeout_secs.unwrap_or(300)),
            artim_timeout: Duration::from_secs(d.artim_timeout_secs.unwrap_or(30)),
            write_timeout: Duration::from_secs(d.write_timeout_secs.unwrap_or(30).max(1)),
            shutdown_grace: Duration::from_secs(d.shutdown_grace_secs.unwrap_or(30)),
            max_find_results: d.max_find_results.unwrap_or(10_000).max(1),
            fuzzy_person_names: d.fuzzy_person_names.unwrap_or(true),
            allowed_calling_ae_titles: allowed,
            require_called_ae_title: d.require_called_ae_title.unwrap_or(false),
            duplicate_policy: d.duplicate_policy.unwrap_or_default(),
            refuse_unknown_peers: match d.unknown_peers.as_deref().map(str::trim) {
                None | Some("accept") => false,
                Some("refuse") => true,
                Some(other) => {
                    return Err(ConfigError::Invalid {
                        key: "dicom.unknown_peers",
                        reason: format!("{other:?} is not \"accept\" or \"refuse\""),
                    })
                }
            },
            require_user_identity: match d.user_identity.as_deref().map(str::trim) {
                None | Some("optional") => false,
                Some("required") => true,
                Some(other) => {
                    return Err(ConfigError::Invalid {
                        key: "dicom.user_identity",
                        reason: format!("{other:?} is not \"optional\" or \"required\""),
                    })
                }
            },
            peer_networks: d
                .peer_networks
                .unwrap_or_default()
                .iter()
                .map(|n| {
                    n.trim()
                        .parse::<ipnet::IpNet>()
                        .or_else(|_| n.trim().parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| ConfigError::Invalid {
                            key: "dicom.peer_networks",
                            reason: format!("{n:?} is not a network (10.0.0.0/8) or an address"),
                        })
                })
                .collect::<Result<_, _>>()?,
        };

        let data_dir = raw
            .storage
            .data_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let storage = match raw.storage.url.as_deref() {
            None => StorageLocation::Local {
                root: data_dir.join("objects"),
            },
            Some(url) => parse_storage_url(url, raw.storage.s3)?,
        };
        let index_url = raw
            .index
            .url
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("index.sqlite").display()));
        if !(index_url.starts_with("sqlite:")
            || index_url.starts_with("postgres://")
            || index_url.starts_with("postgresql://"))
        {
            return Err(ConfigError::Invalid {
                key: "index.url",
                reason: format!("{index_url:?} is neither sqlite:… nor postgres://…"),
            });
        }
        let peers = raw
            .peers
            .into_iter()
            .map(Peer::from_raw)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::Invalid {
                key: "peers",
                reason: e.to_string(),
            })?;
        let routes = raw
            .routes
            .into_iter()
            .map(Route::from_raw)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::Invalid {
                key: "routes",
                reason: e.to_string(),
            })?;
        let dicomweb = DicomWebConfig {
            fuzzy_person_names: dicom.fuzzy_person_names,
            max_results: raw.dicomweb.max_results.unwrap_or(1000).max(1),
            max_upload_bytes: raw.dicomweb.max_upload_bytes.unwrap_or(4 << 30),
            body_idle_timeout: Duration::from_secs(
                raw.dicomweb.body_idle_timeout_secs.unwrap_or(60).max(1),
            ),
            cors_allowed_origins: raw.dicomweb.cors_allowed_origins.unwrap_or_default(),
            public_url: match raw.dicomweb.public_url {
                Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                    Some(url.trim_end_matches('/').to_owned())
                }
                Some(url) => {
                    return Err(ConfigError::Invalid {
                        key: "dicomweb.public_url",
                        reason: format!("{url:?} is not an http:// or https:// URL"),
                    })
                }
                None => None,
            },
            viewer_dir: raw
                .viewer
                .dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_VIEWER_DIR)),
        };
        let audit = AuditConfig::from_raw(std::mem::take(&mut raw.audit), &raw.tls)?;
        let oidc = crate::auth::oidc::OidcSettings::from_raw(std::mem::take(&mut raw.oidc))?;
        let http_tls = raw.http.tls.unwrap_or(false);
        let require_client_cert = raw.tls.require_client_cert.unwrap_or(false);
        let server_tls = if http_tls || dicom.tls_bind.is_some() || raw.hl7.tls.unwrap_or(false) {
            match (&raw.tls.cert_file, &raw.tls.key_file) {
                (Some(cert), Some(key)) => Some(crate::tls::ServerFiles {
                    cert_file: cert.clone(),
                    key_file: key.clone(),
                    client_ca: raw.tls.ca_file.clone(),
                    require_client_cert,
                }),
                _ => {
                    return Err(ConfigError::Invalid {
                        key: "tls.cert_file",
                        reason: "a TLS listener (dicom.tls, http.tls, hl7.tls) needs \
                                 tls.cert_file and tls.key_file"
                            .into(),
                    })
                }
            }
        } else {
            None
        };
        if require_client_cert && raw.tls.ca_file.is_none() {
            return Err(ConfigError::Invalid {
                key: "tls.require_client_cert",
                reason: "needs tls.ca_file, the CA client certificates chain to".into(),
            });
        }
        if !dicom.ae_certificates.is_empty()
            && (dicom.tls_bind.is_none() || raw.tls.ca_file.is_none())
        {
            return Err(ConfigError::Invalid {
                key: "tls.ae_certificates",
                reason: "needs dicom.tls and tls.ca_file".into(),
            });
        }
        let tls = match (raw.tls.ca_file, raw.tls.cert_file, raw.tls.key_file) {
            (None, None, None) => None,
            (Some(ca_file), None, None) => Some(crate::tls::TlsFiles {
                ca_file,
                client: None,
            }),
            (Some(ca_file), Some(cert), Some(key)) => Some(crate::tls::TlsFiles {
                ca_file,
                client: Some((cert, key)),
            }),
            (None, _, _) => {
                return Err(ConfigError::Invalid {
                    key: "tls.ca_file",
                    reason: "needed when a client certificate is set".into(),
                })
            }
            _ => {
                return Err(ConfigError::Invalid {
                    key: "tls.cert_file",
                    reason: "cert_file and key_file go together".into(),
                })
            }
        };
        let hl7 = Hl7Config {
            bind: match raw.hl7.bind.as_deref() {
                None => Some(parse_addr(DEFAULT_HL7_BIND)),
                Some("off") | Some("") => None,
                Some(addr) => Some(addr.parse().map_err(|e| ConfigError::Invalid {
                    key: "hl7.bind",
                    reason: format!("{addr:?}: {e}"),
                })?),
            },
            tls: raw.hl7.tls.unwrap_or(false),
            max_connections: raw.hl7.max_connections.unwrap_or(32).clamp(1, 4096),
            max_message_bytes: raw
                .hl7
                .max_message_bytes
                .unwrap_or(4 << 20)
                .clamp(1024, 256 << 20),
            idle_timeout: Duration::from_secs(raw.hl7.idle_timeout_secs.unwrap_or(600).max(1)),
            use_issuer: raw.hl7.use_issuer.unwrap_or(false),
            coerce_on_retrieve: raw.hl7.coerce_on_retrieve.unwrap_or(true),
            message_retention: match raw.hl7.message_retention_days.unwrap_or(365) {
                0 => None,
                days => Some(Duration::from_secs(days.min(100 * 365) * 86_400)),
            },
            outbound: Hl7OutboundConfig::from_raw(&raw.hl7.outbound.clone().unwrap_or_default())?,
        };
        Ok(Config {
            hl7,
            audit,
            oidc,
            tls,
            dicomweb,
            forward_max_attempts: raw.forwarding.max_attempts.unwrap_or(20).max(1),
            forward_commitment_timeout_secs: raw
                .forwarding
                .commitment_timeout_secs
                .unwrap_or(3600)
                .max(1),
            forward_report_wait: Duration::from_secs(
                raw.forwarding.commitment_report_wait_secs.unwrap_or(5),
            ),
            forward_parallel_destinations: raw
                .forwarding
                .max_parallel_destinations
                .unwrap_or(4)
                .clamp(1, 256),
            queue_retention_secs: raw.forwarding.retention_secs.unwrap_or(604_800).max(0),
            routes,
            peers,
            dicom,
            http_bind: raw
                .http
                .bind
                .unwrap_or_else(|| parse_addr(DEFAULT_HTTP_BIND)),
            http_api_token: raw.http.api_token.filter(|t| !t.is_empty()),
            http_max_requests_per_ip: raw.http.max_requests_per_ip.unwrap_or(256).max(1),
            sessions: crate::auth::SessionPolicy {
                idle: Duration::from_secs(
                    raw.http
                        .session_idle_minutes
                        .unwrap_or(30)
                        .clamp(1, 24 * 60)
                        * 60,
                ),
                absolute: Duration::from_secs(
                    raw.http.session_hours.unwrap_or(12).clamp(1, 24 * 30) * 3600,
                ),
            },
            public_metrics: raw.http.public_metrics.unwrap_or(false),
            http_tls,
            hsts: raw.http.hsts.unwrap_or(false),
            server_tls,
            data_dir,
            storage,
            fsync: raw.storage.fsync.unwrap_or(true),
            place_before_ack: raw.storage.place_before_ack.unwrap_or(false),
            reclaim_grace: Duration::from_secs(raw.storage.reclaim_grace_secs.unwrap_or(3600)),
            reclaim_interval: Duration::from_secs(
                raw.storage.reclaim_interval_secs.unwrap_or(60).max(1),
            ),
            index_url,
            index_max_connections: raw.index.max_connections.unwrap_or(8).max(1),
        })
    }

    /// Spool for objects being received when they go to S3. Local backends
    /// spool inside the object root instead (see `storage`), so a commit is
    /// a rename; either way a crash leaves debris only in a spool.
    pub fn spool_dir(&self) -> PathBuf {
        self.data_dir.join("spool")
    }
}

fn parse_addr(s: &str) -> SocketAddr {
    s.parse().expect("built-in default address is valid")
}

fn parse_storage_url(url: &str, s3: RawS3) -> Result<StorageLocation, ConfigError> {
    if let Some(path) = url.strip_prefix("file://") {
        if path.is_empty() {
            return Err(ConfigError::Invalid {
                key: "storage.url",
                reason: "file:// URL has no path".into(),
            });
        }
        return Ok(StorageLocation::Local {
            root: PathBuf::from(path),
        });
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(ConfigError::Invalid {
                key: "storage.url",
                reason: "s3:// URL has no bucket".into(),
            });
        }
        return Ok(StorageLocation::S3 {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
            settings: s3,
        });
    }
    Err(ConfigError::Invalid {
        key: "storage.url",
        reason: format!("{url:?}: expected file:///path or s3://bucket/prefix"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_file() {
        let c = Config::from_raw(RawConfig::default()).expect("defaults are valid");
        assert_eq!(c.dicom.ae_title.as_str(), "TESSERA");
        assert_eq!(c.dicom.bind.port(), 11112);
        assert_eq!(c.http_bind.port(), 8042);
        assert!(c.index_url.starts_with("sqlite://"));
        assert!(matches!(c.storage, StorageLocation::Local { .. }));
        assert!(c.fsync);
    }

    #[test]
    fn toml_overrides_and_validation() {
        let raw: RawConfig = toml::from_str(
            r#"
            [dicom]
            ae_title = "ARCHIVE1"
            duplicate_policy = "reject"
            [storage]
            url = "s3://bucket/some/prefix/"
            "#,
        )
        .expect("valid toml");
        let c = Config::from_raw(raw).expect("valid config");
        assert_eq!(c.dicom.ae_title.as_str(), "ARCHIVE1");
        assert_eq!(c.dicom.duplicate_policy, DuplicatePolicy::Reject);
        match c.storage {
            StorageLocation::S3 { bucket, prefix, .. } => {
                assert_eq!(bucket, "bucket");
                assert_eq!(prefix, "some/prefix");
            }
            other => panic!("expected S3, got {other:?}"),
        }
        let bad: RawConfig = toml::from_str("[dicom]\nae_title = \"THIS TITLE IS FAR TOO LONG\"")
            .expect("valid toml");
        assert!(Config::from_raw(bad).is_err());
        assert!(toml::from_str::<RawConfig>("[dicom]\nunknown = 1").is_err());
    }
}
