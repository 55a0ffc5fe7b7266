//! Every statement written out in `src/index` is planned by SQLite against
//! the migrated schema, and none may scan a whole table unless it is named
//! below with the reason a scan is fine. A look-up that scans runs slower
//! with every row the archive gains; this keeps a new one from slipping in.
//! Nor may an index only repeat the leading columns of another: it would
//! cost every write and serve no look-up.

use sqlx::Row;

use super::Index;

/// (file, table) pairs whose scans are fine, and why.
const SCANS_ALLOWED: &[(&str, &str, &str)] = &[
    ("mod.rs", "pragma_database_list", "once at startup"),
    (
        "mpps.rs",
        "performed_steps",
        "the MPPS listing, newest first",
    ),
    ("outbox.rs", "hl7_outbound_lease", "one row per node"),
    ("read.rs", "instances", "archive totals for the status page"),
    ("reclaim.rs", "storage_leases", "one row per node"),
    (
        "search.rs",
        "search_outbox",
        "a short queue, read twice a second",
    ),
    (
        "users.rs",
        "sessions",
        "the periodic purge of expired sessions",
    ),
    ("worklist.rs", "c", "the conflict listing, newest first"),
];

/// The string literals passed to `query(`, `query_as(` or
/// `query_scalar(` in `source`, as SQL: Rust's escapes undone and `$N`
/// turned into SQLite's `?N`.
fn statements(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(at) = ["query(", "query_as(", "query_scalar("]
        .iter()
        .filter_map(|call| rest.find(call).map(|i| (i, call.len())))
        .min()
    {
        rest = &rest[at.0 + at.1..];
        let trimmed = rest.trim_start();
        let Some(body) = trimmed.strip_prefix('"') else {
            continue;
        };
        let mut sql = String::new();
        let mut chars = body.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('\n') => {
                        while chars.peek().is_some_and(|c| c.is_whitespace()) {
                            chars.next();
                        }
                    }
                    Some('n') => sql.push('\n'),
                    Some(other) => sql.push(other),
                    None => break,
                },
                c => sql.push(c),
            }
        }
        out.push(sql.replace('$', "?"));
    }
    out
}

/// The highest parameter number in `sql`.
fn parameters(sql: &str) -> usize {
    sql.split('?')
        .skip(1)
        .filter_map(|s| {
            let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn no_statement_scans_a_growing_table() {
    let (_dir, index) = Index::temporary().await;
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/index");
    let mut planned = 0;
    let mut scans = Vec::new();
    for entry in std::fs::read_dir(&folder).expect("src/index") {
        let path = entry.expect("entry").path();
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if file == "query_plans.rs" {
            continue;
        }
        let source = std::fs::read_to_string(&path).expect("source");
        for sql in statements(&source) {
            let explain = format!("EXPLAIN QUERY PLAN {sql}");
            let mut q = sqlx::query(&explain);
            for _ in 0..parameters(&sql) {
                q = q.bind("x");
            }
            // Statements that are not complete SQL (pieces put together
            // at run time) cannot be planned here.
            let Ok(rows) = q.fetch_all(&index.pool).await else {
                continue;
            };
            planned += 1;
            for row in rows {
                let detail: String = row.try_get(3).expect("detail");
                let Some(table) = detail.strip_prefix("SCAN ") else {
                    continue;
                };
                let table = table.split_whitespace().next().unwrap_or_default();
                let allowed = SCANS_ALLOWED
                    .iter()
                    .any(|(f, t, _)| *f == file && *t == table);
                if !detail.contains("USING") && table != "CONSTANT" && !allowed {
                    scans.push(format!("{file}: {detail}: {sql}"));
                }
            }
        }
    }
    assert!(planned > 100, "only {planned} statements planned");
    assert!(scans.is_empty(), "{}", scans.join("\n"));
    index.close().await;
}

/// An index whose columns lead another index on the same table serves no
/// look-up the longer one does not, and costs a b-tree insert for every
/// row written. A unique index is a constraint as well, and may.
#[tokio::test]
async fn no_index_leads_another() {
    let (_dir, index) = Index::temporary().await;
    let listed = sqlx::query(
        "SELECT m.name, il.name, il.\"unique\" FROM sqlite_master m, pragma_index_list(m.name) il \
         WHERE m.type = 'table'",
    )
    .fetch_all(&index.pool)
    .await
    .expect("index list");
    let mut indexes = Vec::new();
    for row in &listed {
        let (table, name, unique): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
        let columns: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_index_info($1) ORDER BY seqno")
                .bind(&name)
                .fetch_all(&index.pool)
                .await
                .expect("index columns");
        indexes.push((table, name, columns, unique != 0));
    }
    for (table, name, columns, unique) in &indexes {
        for (other_table, other, other_columns, _) in &indexes {
            assert!(
                *unique
                    || table != other_table
                    || other_columns.len() <= columns.len()
                    || !other_columns.starts_with(columns),
                "{table}: {name} {columns:?} leads {other} {other_columns:?}"
            );
        }
    }
    index.close().await;
}
