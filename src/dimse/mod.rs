//! The DIMSE service layer on dicom-ul (async): what dicom-rs leaves out.
//!
//! - [`listener`]: accept loop, association caps, shutdown.
//! - [`admission`]: from accept to an established association: the
//!   screen's rules, TLS, certificate-bound AE titles, user identity.
//! - [`screen`]: a first look at each A-ASSOCIATE-RQ, refusing what the
//!   upper layer would accept and then fail on.
//! - [`association`]: negotiation policy and P-DATA ↔ commands and data-set
//!   fragments, over plain TCP or TLS ([`wire`]). Framing never decides
//!   what a command means. [`pdata`] reads P-DATA-TF off the stream
//!   itself, so data sets reach ingest without a copy.
//! - [`command`]: typed command sets and status codes.
//! - [`service`]: one module per DIMSE service (C-ECHO, C-STORE, C-FIND,
//!   C-MOVE, C-GET, storage commitment).
//! - [`scu`]: outbound associations (C-ECHO, C-STORE, N-ACTION,
//!   N-EVENT-REPORT), each a [`link::Link`] over TCP or TLS
//!   ([`crate::tls`]).
//! - [`forwarder`]: the store-and-forward worker.
//!
//! An instance arrives here, is streamed to [`crate::ingest`], and is
//! answered only once ingest reports it durable.

pub mod admission;
pub mod association;
pub mod command;
pub mod forwarder;
pub mod link;
pub mod listener;
pub mod pdata;
pub mod screen;
pub mod scu;
pub mod service;
pub mod storage_classes;
pub mod wire;
