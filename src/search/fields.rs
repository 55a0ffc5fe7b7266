//! The search index's schema: one document per study, and the analyzers
//! its text goes through.

use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions, STORED,
    STRING,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RawTokenizer, RemoveLongFilter, SimpleTokenizer, TextAnalyzer,
};

/// Lower-cased and folded to ASCII: "Nguyễn" and "nguyen" meet, as do
/// "Müller" and "muller", "Łódź" and "lodz", "đ" and "d".
pub const FOLDED: &str = "tessera_folded";
/// Lower-cased only, so a query with the right diacritics ranks its exact
/// match first.
pub const EXACT: &str = "tessera_exact";
/// One lower-cased token per value: identifiers.
pub const IDENTIFIER: &str = "tessera_identifier";

/// The fields, by role.
#[derive(Debug, Clone, Copy)]
pub struct Fields {
    pub uid: Field,
    /// Patient names in every form (alphabetic, ideographic, phonetic).
    pub name: Field,
    pub name_exact: Field,
    /// Patient ID, other IDs, accession number.
    pub id: Field,
    /// Descriptions (study, series, procedure), body parts, modalities,
    /// the study's year and date.
    pub text: Field,
    /// Referring and performing physicians.
    pub physician: Field,
    pub report: Field,
    pub modality: Field,
    pub status: Field,
    /// YYYYMMDD, 0 when unknown: range filters and sorting.
    pub date: Field,
    /// The folded Referring Physician's Name, for the referring rule.
    pub referrer: Field,
    /// The result row, as JSON, so a search needs no SQL.
    pub summary: Field,
}

fn text(tokenizer: &str, stored: bool) -> TextOptions {
    let options = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(tokenizer)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    if stored {
        options.set_stored()
    } else {
        options
    }
}

pub fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let fields = Fields {
        uid: b.add_text_field("uid", STRING | STORED),
        name: b.add_text_field("name", text(FOLDED, false)),
        name_exact: b.add_text_field("name_exact", text(EXACT, false)),
        id: b.add_text_field(
            "id",
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(IDENTIFIER)
                    .set_index_option(IndexRecordOption::Basic),
            ),
        ),
        text: b.add_text_field("text", text(FOLDED, false)),
        physician: b.add_text_field("physician", text(FOLDED, false)),
        report: b.add_text_field("report", text(FOLDED, true)),
        modality: b.add_text_field("modality", STRING),
        status: b.add_text_field("status", STRING),
        date: b.add_i64_field("date", NumericOptions::default().set_indexed().set_fast()),
        referrer: b.add_text_field("referrer", STRING),
        summary: b.add_text_field("summary", STORED),
    };
    (b.build(), fields)
}

/// Register the analyzers the schema names on `index`.
pub fn register_analyzers(index: &tantivy::Index) {
    let tokenizers = index.tokenizers();
    tokenizers.register(FOLDED, folded());
    tokenizers.register(
        EXACT,
        TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(64))
            .filter(LowerCaser)
            .build(),
    );
    tokenizers.register(
        IDENTIFIER,
        TextAnalyzer::builder(RawTokenizer::default())
            .filter(RemoveLongFilter::limit(128))
            .filter(LowerCaser)
            .build(),
    );
}

/// The folding analyzer, also for queries and highlights.
pub fn folded() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(64))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

/// The exact analyzer's tokens of `s`.
pub fn exact_tokens(s: &str) -> Vec<String> {
    let mut analyzer = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(64))
        .filter(LowerCaser)
        .build();
    tokens(&mut analyzer, s)
}

pub fn folded_tokens(s: &str) -> Vec<String> {
    tokens(&mut folded(), s)
}

fn tokens(analyzer: &mut TextAnalyzer, s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stream = analyzer.token_stream(s);
    while let Some(token) = stream.next() {
        out.push(token.text.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding() {
        assert_eq!(folded_tokens("Nguyễn^Văn Đức"), ["nguyen", "van", "duc"]);
        assert_eq!(
            folded_tokens("MÜLLER Łódź Françoise"),
            ["muller", "lodz", "francoise"]
        );
        assert_eq!(exact_tokens("Nguyễn"), ["nguyễn"]);
    }
}
