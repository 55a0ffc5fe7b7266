//! Full-text study search: a tantivy index in the data directory, one
//! document per study, derived from the SQL index, which stays the source
//! of truth.
//!
//! - [`fields`]: the schema and the folding analyzers.
//! - [`document`]: a study's document and the result row it stores.
//! - [`query`]: the search box's language.
//! - [`highlight`]: report snippets with the matched words marked.
//! - [`indexer`]: the task that follows the search outbox. Each commit
//!   carries the outbox mark it covers as its payload, so a restart goes
//!   on from there and nothing is lost or indexed twice.

pub mod document;
pub mod fields;
pub mod highlight;
pub mod indexer;
pub mod query;

use std::path::Path;
use std::sync::{Arc, Mutex};

use tantivy::collector::{Count, TopDocs};
use tantivy::directory::MmapDirectory;
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument, Term};

pub use document::StudySummary;
pub use query::QueryError;

use crate::index::search::StudyDocument;
use fields::Fields;

/// The payload of a commit made in the middle of a rebuild.
const REBUILDING: &str = "rebuilding";
/// Memory for the writer's buffers.
const WRITER_BUDGET: usize = 32 * 1024 * 1024;
pub const MAX_LIMIT: usize = 200;
pub const MAX_OFFSET: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("search index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("search index directory: {0}")]
    Directory(String),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("the search index is busy elsewhere")]
    Poisoned,
}

/// How results are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// Best match first; newest first when there are no words.
    #[default]
    Relevance,
    Newest,
    Oldest,
}

/// Who may see what: a referring physician's own studies and those
/// shared with them.
#[derive(Debug, Clone, Default)]
pub struct Visibility {
    pub referrer_folded: String,
    pub shared: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    pub q: String,
    pub modalities: Vec<String>,
    /// YYYYMMDD bounds, inclusive.
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub statuses: Vec<String>,
    pub sort: Sort,
    pub limit: usize,
    pub offset: usize,
    /// `Some` for a referring physician.
    pub only: Option<Visibility>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Hit {
    #[serde(flatten)]
    pub study: StudySummary,
    /// The report around the matched words, HTML with `<mark>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_snippet: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SearchPage {
    pub total: usize,
    pub results: Vec<Hit>,
}

pub struct SearchIndex {
    index: tantivy::Index,
    fields: Fields,
    reader: IndexReader,
    /// `None` after a failure: the next change opens a new writer, so a
    /// full disk or a lost file stops indexing only until it is fixed.
    writer: Mutex<Option<IndexWriter>>,
}

impl SearchIndex {
    /// Open the index in `dir`, or make it. An index of another schema
    /// (an older Tessera) is dropped: it is rebuilt from SQL.
    pub fn open(dir: &Path) -> Result<Arc<Self>, SearchError> {
        let (schema, fields) = fields::schema();
        std::fs::create_dir_all(dir)
            .map_err(|e| SearchError::Directory(format!("{}: {e}", dir.display())))?;
        let open = || -> Result<tantivy::Index, SearchError> {
            let directory = MmapDirectory::open(dir)
                .map_err(|e| SearchError::Directory(format!("{}: {e}", dir.display())))?;
            Ok(tantivy::Index::open_or_create(directory, schema.clone())?)
        };
        let index = match open() {
            Ok(index) => index,
            Err(SearchError::Tantivy(tantivy::TantivyError::SchemaError(reason))) => {
                tracing::warn!(%reason, "search index of another layout; rebuilding it");
                std::fs::remove_dir_all(dir)
                    .and_then(|()| std::fs::create_dir_all(dir))
                    .map_err(|e| SearchError::Directory(format!("{}: {e}", dir.display())))?;
                open()?
            }
            Err(e) => return Err(e),
        };
        fields::register_analyzers(&index);
        let writer = index.writer_with_num_threads(1, WRITER_BUDGET)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Arc::new(SearchIndex {
            index,
            fields,
            reader,
            writer: Mutex::new(Some(writer)),
        }))
    }

    /// The outbox mark the last commit covered, and when (Unix seconds);
    /// `None` for a new index or an unfinished rebuild.
    pub fn mark(&self) -> Result<Option<(i64, i64)>, SearchError> {
        let metas = self.index.load_metas()?;
        Ok(metas.payload.as_deref().and_then(|p| {
            let (mark, at) = p.split_once(' ')?;
            Some((mark.parse().ok()?, at.parse().ok()?))
        }))
    }

    /// Run `change` on the writer and commit with `payload`; a failure
    /// drops the writer and its uncommitted changes.
    fn commit_with(
        &self,
        payload: &str,
        change: impl FnOnce(&mut IndexWriter) -> Result<(), SearchError>,
    ) -> Result<(), SearchError> {
        let mut slot = self.writer.lock().map_err(|_| SearchError::Poisoned)?;
        let writer = match slot.as_mut() {
            Some(writer) => writer,
            None => slot.insert(self.index.writer_with_num_threads(1, WRITER_BUDGET)?),
        };
        let result = change(writer).and_then(|()| {
            let mut commit = writer.prepare_commit()?;
            commit.set_payload(payload);
            commit.commit()?;
            Ok(())
        });
        if result.is_err() {
            *slot = None;
        }
        drop(slot);
        result?;
        self.reader.reload()?;
        Ok(())
    }

    /// Replace the documents of `docs`, drop those of `gone`, and commit
    /// with `mark` (`None`: a rebuild is under way).
    pub fn apply(
        &self,
        docs: &[StudyDocument],
        gone: &[String],
        mark: Option<i64>,
    ) -> Result<(), SearchError> {
        let payload = mark.map_or_else(
            || REBUILDING.to_owned(),
            |m| format!("{m} {}", crate::index::unix_now()),
        );
        let changes = !docs.is_empty() || !gone.is_empty();
        self.commit_with(&payload, |writer| {
            for uid in docs.iter().map(|d| &d.study_uid).chain(gone) {
                writer.delete_term(Term::from_field_text(self.fields.uid, uid));
            }
            for doc in docs {
                writer.add_document(document::to_document(&self.fields, doc))?;
            }
            if changes {
                crate::crash_points::reach("search-added");
            }
            Ok(())
        })?;
        if changes {
            crate::crash_points::reach("search-committed");
        }
        Ok(())
    }

    /// Drop every document, to rebuild.
    pub fn clear(&self) -> Result<(), SearchError> {
        self.commit_with(REBUILDING, |writer| {
            writer.delete_all_documents()?;
            Ok(())
        })
    }

    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Run a search. CPU work: call it on the blocking pool.
    pub fn search(&self, request: &SearchRequest) -> Result<SearchPage, SearchError> {
        let f = &self.fields;
        let parsed = query::parse(f, &request.q)?;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, parsed.query)];
        let any_of = |field, values: &[String]| -> Box<dyn Query> {
            Box::new(BooleanQuery::new(
                values
                    .iter()
                    .map(|v| {
                        let q: Box<dyn Query> = Box::new(TermQuery::new(
                            Term::from_field_text(field, v),
                            IndexRecordOption::Basic,
                        ));
                        (Occur::Should, q)
                    })
                    .collect(),
            ))
        };
        if !request.modalities.is_empty() {
            let upper: Vec<String> = request
                .modalities
                .iter()
                .map(|m| m.to_uppercase())
                .collect();
            clauses.push((Occur::Must, any_of(f.modality, &upper)));
        }
        if !request.statuses.is_empty() {
            clauses.push((Occur::Must, any_of(f.status, &request.statuses)));
        }
        if request.from.is_some() || request.to.is_some() {
            let bound = |v: Option<i64>| match v {
                Some(v) => std::ops::Bound::Included(Term::from_field_i64(f.date, v)),
                None => std::ops::Bound::Unbounded,
            };
            let lower = match request.from {
                // Studies without a date never fall in a range.
                None => std::ops::Bound::Included(Term::from_field_i64(f.date, 1)),
                from => bound(from),
            };
            clauses.push((
                Occur::Must,
                Box::new(RangeQuery::new(lower, bound(request.to))),
            ));
        }
        if let Some(only) = &request.only {
            let mut allowed: Vec<(Occur, Box<dyn Query>)> = Vec::new();
            if !only.referrer_folded.trim().is_empty() {
                allowed.push((
                    Occur::Should,
                    Box::new(TermQuery::new(
                        Term::from_field_text(f.referrer, only.referrer_folded.trim()),
                        IndexRecordOption::Basic,
                    )),
                ));
            }
            if !only.shared.is_empty() {
                allowed.push((Occur::Should, any_of(f.uid, &only.shared)));
            }
            clauses.push((Occur::Must, Box::new(BooleanQuery::new(allowed))));
        }
        let query = BooleanQuery::new(clauses);
        let limit = request.limit.clamp(1, MAX_LIMIT);
        let offset = request.offset.min(MAX_OFFSET);
        let searcher = self.reader.searcher();
        let top = TopDocs::with_limit(limit).and_offset(offset);
        let by_date = match request.sort {
            Sort::Relevance if request.q.trim().is_empty() => Some(Order::Desc),
            Sort::Relevance => None,
            Sort::Newest => Some(Order::Desc),
            Sort::Oldest => Some(Order::Asc),
        };
        let (addresses, total) = match by_date {
            None => {
                let (hits, total) = searcher.search(&query, &(top.order_by_score(), Count))?;
                (hits.into_iter().map(|(_, a)| a).collect::<Vec<_>>(), total)
            }
            Some(order) => {
                let (hits, total) = searcher.search(
                    &query,
                    &(top.order_by_fast_field::<i64>("date", order), Count),
                )?;
                (hits.into_iter().map(|(_, a)| a).collect(), total)
            }
        };
        let mut results = Vec::with_capacity(addresses.len());
        for address in addresses {
            let doc: TantivyDocument = searcher.doc(address)?;
            let text = |field| {
                doc.get_first(field)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            let Ok(study) = serde_json::from_str::<StudySummary>(&text(f.summary)) else {
                continue;
            };
            let report_snippet = highlight::snippet(&text(f.report), &parsed.terms);
            results.push(Hit {
                study,
                report_snippet,
            });
        }
        Ok(SearchPage { total, results })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn study(uid: &str, name: &str, description: &str, referring: &str) -> StudyDocument {
        StudyDocument {
            study_uid: uid.into(),
            patient_name: name.into(),
            patient_id: format!("ID-{uid}"),
            study_date: "20240610".into(),
            study_description: description.into(),
            referring_physician: referring.into(),
            modalities: vec!["MR".into()],
            status: "arrived".into(),
            ..Default::default()
        }
    }

    fn uids(index: &SearchIndex, q: &str) -> Vec<String> {
        let page = index
            .search(&SearchRequest {
                q: q.into(),
                limit: 10,
                ..Default::default()
            })
            .expect("search");
        page.results
            .into_iter()
            .map(|h| h.study.study_instance_uid)
            .collect()
    }

    #[test]
    fn words_meet_across_fields() {
        let dir = tempfile::tempdir().expect("tmp");
        let index = SearchIndex::open(dir.path()).expect("open");
        let docs = [
            study("1", "Müller^Hans", "MR BRAIN WITH CONTRAST", "KOWALSKI^JAN"),
            study("2", "Wójcik^Łukasz", "MR KNEE", "Other^Doc"),
        ];
        index.apply(&docs, &[], Some(7)).expect("apply");
        assert_eq!(index.mark().expect("mark").map(|(m, _)| m), Some(7));
        for q in [
            "brain",
            "mr brain",
            "kowalski",
            "contrast",
            "brain MR with contrast kowalski",
        ] {
            assert_eq!(uids(&index, q), ["1"], "{q}");
        }
        assert_eq!(uids(&index, "lukasz").len(), 1);
        index.apply(&[], &["1".into()], Some(8)).expect("remove");
        assert!(uids(&index, "brain").is_empty());
    }
}
