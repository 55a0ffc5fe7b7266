//! The hash chain that makes a changed or removed audit row show: each
//! row's hash covers the previous row's hash and every field of its own.

use sha2::{Digest, Sha256};

use crate::index::audit::AuditRow;
use crate::index::{Index, IndexError};

/// The `prev_hash` of a node's first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash of `row` given the one before it. Fields are length-prefixed,
/// so no two different rows hash the same bytes.
pub fn hash(prev_hash: &str, row: &AuditRow) -> String {
    let mut h = Sha256::new();
    let at = row.at.to_string();
    let seq = row.seq.to_string();
    let outcome = row.outcome.to_string();
    for field in [
        prev_hash,
        &row.node,
        &seq,
        &at,
        &row.event,
        &outcome,
        &row.user,
        &row.address,
        &row.patients,
        &row.studies,
        &row.message,
    ] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    hex::encode(h.finalize())
}

/// What `tessera audit verify` found.
#[derive(Debug, Default, serde::Serialize)]
pub struct Verification {
    pub nodes: usize,
    pub rows: u64,
    /// One line per break: which node, which row, what is wrong.
    pub problems: Vec<String>,
}

/// Rows read per query while walking a chain.
const PAGE: i64 = 5000;

/// Walk every node's chain from its oldest kept row. The first kept row
/// is trusted to link to what retention removed.
pub async fn verify(index: &Index) -> Result<Verification, IndexError> {
    let mut report = Verification::default();
    for node in index.audit_nodes().await? {
        report.nodes += 1;
        let mut prev: Option<(i64, String)> = None;
        let mut after = i64::MIN;
        loop {
            let rows = index.audit_chain(&node, after, PAGE).await?;
            let Some(last) = rows.last() else { break };
            after = last.seq;
            for row in rows {
                report.rows += 1;
                if let Some((seq, hash)) = &prev {
                    if row.seq != seq + 1 {
                        report.problems.push(format!(
                            "{node}: rows {} to {} are missing",
                            seq + 1,
                            row.seq - 1
                        ));
                    } else if &row.prev_hash != hash {
                        report.problems.push(format!(
                            "{node}: row {} does not link to row {seq}",
                            row.seq
                        ));
                    }
                }
                let expected = hash(&row.prev_hash, &row);
                if expected != row.hash {
                    report.problems.push(format!(
                        "{node}: row {} (id {}) was changed after it was written",
                        row.seq, row.id
                    ));
                }
                prev = Some((row.seq, row.hash.clone()));
            }
        }
    }
    Ok(report)
}
