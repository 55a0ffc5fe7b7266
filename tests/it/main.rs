//! Black-box tests of the running archive against real peers (DCMTK,
//! pynetdicom, moto, PostgreSQL, Chromium), one module per area.
//!
//! They build into one test executable so a build links once instead of
//! once per area. `tests/process.rs` stays apart: it moves gigabytes and
//! runs after these, not beside them.

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod audit;
mod browser;
mod buffered_io;
mod cli;
mod commitment;
mod dicom_store;
mod dicomweb;
mod docker;
mod docs;
mod durability;
mod find;
mod forwarding;
mod fuzz_corpus;
mod hl7;
mod http;
mod index_batches;
mod malformed;
mod nodes;
mod peers_api;
mod profiles;
mod recovery;
mod retrieve;
mod s3;
mod search;
mod security;
mod slides;
mod sso;
mod tls;
mod viewer;
mod worklist;
