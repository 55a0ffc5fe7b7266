//! # Tessera
//!
//! A DICOM archive (PACS): one binary that receives, stores, indexes and
//! serves medical images.
//!
//! ## Module map, in the order an instance travels
//!
//! - [`dimse`]: the DICOM port. Associations, command sets, and one module
//!   per DIMSE service. C-STORE streams data sets into ingest.
//! - [`ingest`]: the single write path: spool → header walk → storage commit
//!   → index group commit. Success is reported only when durable.
//! - [`storage`]: object bytes, under hash-derived keys, on a local directory
//!   or S3-compatible storage.
//! - [`index`]: the SQL index (SQLite or PostgreSQL) of patients, studies,
//!   series and instances. All SQL lives there.
//! - [`auth`]: users, roles, sessions and API tokens, and the table of
//!   which roles may call which route.
//! - [`audit`]: the audit trail of every access to patient data and every
//!   security event, hash-chained in the index, optionally sent to syslog.
//! - [`web`]: the HTTP port: health, metrics, JSON API, the OHIF viewer.
//! - [`dicomweb`]: QIDO-RS, WADO-RS, STOW-RS and WADO-URI on the HTTP port.
//!   STOW-RS streams into ingest like C-STORE.
//! - [`query`]: the protocol-neutral query model shared by C-FIND and
//!   QIDO-RS; the index turns it into SQL.
//! - [`peers`]: the remote AE registry (config file and REST API).
//! - [`routing`]: store-and-forward rules; ingest queues matches.
//! - [`reclaim`]: deletes objects no instance references, after a grace
//!   period and a re-check under the index's write lock.
//! - [`transcode`]: decoding a stored object for a receiver that cannot take
//!   its transfer syntax (C-MOVE, C-GET).
//! - [`video`]: an H.264 stream from the pixel data rewrapped as MP4, for
//!   the browser's `<video>` (`/rendered`).
//! - [`coerce`]: the patient as the RIS last sent it, put into copies of
//!   objects stored before the change (retrieve and metadata).
//! - [`model`]: identifiers and metadata types shared by all of the above.
//! - [`limits`]: per-client connection and request limits both ports use.
//! - [`tls`]: TLS for outbound associations and for the DICOM, HTTPS and
//!   MLLP listeners, with certificates reloaded on SIGHUP.
//! - [`config`], [`telemetry`], [`server`]: settings, logs and metrics,
//!   ordered startup and shutdown.
//! - [`import`], [`verify`]: the `tessera import` and `tessera verify` tools.

pub mod audit;
pub mod auth;
pub mod coerce;
pub mod config;
pub mod crash_points;
pub mod dicomweb;
pub mod dimse;
pub mod fuzzing;
pub mod hl7;
pub mod import;
pub mod index;
pub mod ingest;
pub mod limits;
pub mod mllp;
pub mod model;
pub mod peers;
pub mod query;
pub mod reclaim;
pub mod ris;
pub mod routing;
pub mod search;
pub mod server;
pub mod storage;
pub mod telemetry;
pub mod tls;
pub mod transcode;
pub mod verify;
pub mod video;
pub mod web;
