//! The search box's language: words, "quoted phrases", and `name:`,
//! `id:`, `report:` prefixes. Every word must match somewhere (BM25 with
//! field boosts ranks them); a word of five letters or more also matches
//! with one typo; names typed with the right diacritics rank their exact
//! match first.

use tantivy::query::{
    BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, PhraseQuery, Query, TermQuery,
};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::Term;

use super::fields::{exact_tokens, folded_tokens, Fields};

/// Words that say nothing about a study.
const STOPWORDS: &[&str] = &[
    "a", "an", "and", "of", "the", "with", "for", "in", "on", "to",
];
/// Words of at least this many letters match with one typo.
const FUZZY_FROM: usize = 5;
/// The most words and phrases a query may have.
const MAX_CLAUSES: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("a quote is not closed")]
    UnclosedQuote,
    #[error("unknown field {0:?} (name, id, report)")]
    UnknownField(String),
    #[error("nothing after {0}:")]
    EmptyField(String),
    #[error("more than {MAX_CLAUSES} words or phrases")]
    TooLong,
}

/// Where a part of the query looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Everywhere,
    Name,
    Id,
    Report,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Part {
    scope: Scope,
    text: String,
    phrase: bool,
}

/// A parsed query: the tantivy query, and the folded terms to highlight.
pub struct Parsed {
    pub query: Box<dyn Query>,
    pub terms: Vec<String>,
}

fn split(input: &str) -> Result<Vec<Part>, QueryError> {
    let mut parts = Vec::new();
    let mut rest = input.trim();
    while !rest.is_empty() {
        let (scope, after) = match rest.split_once(':') {
            Some((field, after))
                if !field.is_empty()
                    && field.chars().all(|c| c.is_ascii_alphabetic())
                    && !field.contains(char::is_whitespace) =>
            {
                let scope = match field.to_ascii_lowercase().as_str() {
                    "name" => Scope::Name,
                    "id" => Scope::Id,
                    "report" => Scope::Report,
                    _ => return Err(QueryError::UnknownField(field.to_owned())),
                };
                if after.is_empty() || after.starts_with(char::is_whitespace) {
                    return Err(QueryError::EmptyField(field.to_owned()));
                }
                (scope, after)
            }
            _ => (Scope::Everywhere, rest),
        };
        let (part, remainder) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').ok_or(QueryError::UnclosedQuote)?;
            (
                Part {
                    scope,
                    text: quoted[..end].to_owned(),
                    phrase: true,
                },
                &quoted[end + 1..],
            )
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            let word = &after[..end];
            if word.contains('"') {
                return Err(QueryError::UnclosedQuote);
            }
            (
                Part {
                    scope,
                    text: word.to_owned(),
                    phrase: false,
                },
                &after[end..],
            )
        };
        parts.push(part);
        if parts.len() > MAX_CLAUSES {
            return Err(QueryError::TooLong);
        }
        rest = remainder.trim_start();
    }
    Ok(parts)
}

fn term_query(field: Field, text: &str) -> Box<dyn Query> {
    Box::new(TermQuery::new(
        Term::from_field_text(field, text),
        IndexRecordOption::WithFreqs,
    ))
}

fn boosted(query: Box<dyn Query>, boost: f32) -> Box<dyn Query> {
    Box::new(BoostQuery::new(query, boost))
}

/// One folded word in one field: exact, and with one typo when long.
fn word_in(field: Field, word: &str) -> Box<dyn Query> {
    let exact = term_query(field, word);
    if word.chars().count() < FUZZY_FROM || word.chars().all(|c| c.is_ascii_digit()) {
        return exact;
    }
    let fuzzy: Box<dyn Query> = Box::new(FuzzyTermQuery::new(
        Term::from_field_text(field, word),
        1,
        true,
    ));
    Box::new(BooleanQuery::new(vec![
        (Occur::Should, boosted(exact, 2.0)),
        (Occur::Should, fuzzy),
    ]))
}

fn phrase_in(field: Field, words: &[String]) -> Box<dyn Query> {
    match words {
        [one] => term_query(field, one),
        _ => Box::new(PhraseQuery::new(
            words
                .iter()
                .map(|w| Term::from_field_text(field, w))
                .collect(),
        )),
    }
}

/// The fields a scope looks in, with their boosts.
fn targets(f: &Fields, scope: Scope) -> Vec<(Field, f32)> {
    match scope {
        Scope::Everywhere => vec![
            (f.name, 3.0),
            (f.text, 1.5),
            (f.physician, 1.0),
            (f.report, 0.8),
        ],
        Scope::Name => vec![(f.name, 1.0)],
        Scope::Id => vec![],
        Scope::Report => vec![(f.report, 1.0)],
    }
}

pub fn parse(f: &Fields, input: &str) -> Result<Parsed, QueryError> {
    let mut must: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    let mut highlight = Vec::new();
    for part in split(input)? {
        let folded = folded_tokens(&part.text);
        if part.scope == Scope::Everywhere
            && !part.phrase
            && folded.iter().all(|w| STOPWORDS.contains(&w.as_str()))
        {
            continue;
        }
        let mut options: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if matches!(part.scope, Scope::Everywhere | Scope::Id) && !part.phrase {
            // IDs and accession numbers match whole and exactly.
            options.push((
                Occur::Should,
                boosted(term_query(f.id, &part.text.to_lowercase()), 5.0),
            ));
        }
        let words: Vec<String> = if part.phrase || part.scope != Scope::Everywhere {
            folded
        } else {
            folded
                .into_iter()
                .filter(|w| !STOPWORDS.contains(&w.as_str()))
                .collect()
        };
        if !words.is_empty() && part.scope != Scope::Id {
            for (field, boost) in targets(f, part.scope) {
                let query = if part.phrase {
                    phrase_in(field, &words)
                } else {
                    // One part may fold to several words ("O'Brien").
                    let each: Vec<(Occur, Box<dyn Query>)> = words
                        .iter()
                        .map(|w| (Occur::Must, word_in(field, w)))
                        .collect();
                    Box::new(BooleanQuery::new(each))
                };
                options.push((Occur::Should, boosted(query, boost)));
            }
            if matches!(part.scope, Scope::Everywhere | Scope::Name) && !part.phrase {
                let exact = exact_tokens(&part.text);
                if exact != words {
                    let each: Vec<(Occur, Box<dyn Query>)> = exact
                        .iter()
                        .map(|w| (Occur::Must, term_query(f.name_exact, w)))
                        .collect();
                    options.push((
                        Occur::Should,
                        boosted(Box::new(BooleanQuery::new(each)), 4.0),
                    ));
                }
            }
            if part.scope != Scope::Name {
                highlight.extend(words.iter().cloned());
            }
        }
        if options.is_empty() {
            continue;
        }
        must.push((Occur::Must, Box::new(BooleanQuery::new(options))));
    }
    highlight.sort();
    highlight.dedup();
    let query: Box<dyn Query> = if must.is_empty() {
        Box::new(tantivy::query::AllQuery)
    } else {
        Box::new(BooleanQuery::new(must))
    };
    Ok(Parsed {
        query,
        terms: highlight,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitting() {
        let parts = split(r#"Nguyen name:Müller "left lung" id:PID-7 report:nodule"#).expect("ok");
        let scopes: Vec<Scope> = parts.iter().map(|p| p.scope).collect();
        assert_eq!(
            scopes,
            [
                Scope::Everywhere,
                Scope::Name,
                Scope::Everywhere,
                Scope::Id,
                Scope::Report
            ]
        );
        assert!(parts[2].phrase);
        assert_eq!(parts[2].text, "left lung");
        assert_eq!(split(r#"a "open"#), Err(QueryError::UnclosedQuote));
        assert_eq!(
            split("foo:bar"),
            Err(QueryError::UnknownField("foo".into()))
        );
        assert_eq!(split("name: x"), Err(QueryError::EmptyField("name".into())));
        assert_eq!(split("12:30").expect("a time is a word")[0].text, "12:30");
        assert!(split(&"w ".repeat(40)).is_err());
    }
}
