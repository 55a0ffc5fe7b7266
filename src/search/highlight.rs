//! Report snippets with the query's words marked. Built from the words
//! themselves, not tantivy's snippet generator, which misses the matches
//! a typo or a diacritic made.

use super::fields::folded;

/// Characters of context on each side of the first match.
const CONTEXT: usize = 90;

fn within_one_edit(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().abs_diff(b.len()) > 1 {
        return false;
    }
    let (mut i, mut j, mut edits) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            i += 1;
            j += 1;
            continue;
        }
        edits += 1;
        if edits > 1 {
            return false;
        }
        // A swap of neighbours counts as one edit, as in the query.
        if i + 1 < a.len() && j + 1 < b.len() && a[i] == b[j + 1] && a[i + 1] == b[j] {
            i += 2;
            j += 2;
        } else if a.len() > b.len() {
            i += 1;
        } else if b.len() > a.len() {
            j += 1;
        } else {
            i += 1;
            j += 1;
        }
    }
    edits + (a.len() - i) + (b.len() - j) <= 1
}

fn matches(token: &str, terms: &[String]) -> bool {
    terms
        .iter()
        .any(|t| token == t || (t.chars().count() >= 5 && within_one_edit(token, t)))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn floor_boundary(s: &str, mut at: usize) -> usize {
    while at > 0 && !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn ceil_boundary(s: &str, mut at: usize) -> usize {
    while at < s.len() && !s.is_char_boundary(at) {
        at += 1;
    }
    at
}

/// A snippet of `text` around its first match, HTML-escaped, matches in
/// `<mark>`; `None` when nothing matches.
pub fn snippet(text: &str, terms: &[String]) -> Option<String> {
    if terms.is_empty() {
        return None;
    }
    let mut analyzer = folded();
    let mut stream = analyzer.token_stream(text);
    let mut hits = Vec::new();
    while let Some(token) = stream.next() {
        if matches(&token.text, terms) {
            hits.push((token.offset_from, token.offset_to));
        }
    }
    let (first, _) = *hits.first()?;
    let start = floor_boundary(text, first.saturating_sub(CONTEXT));
    let end = ceil_boundary(text, (first + 2 * CONTEXT).min(text.len()));
    let mut out = String::new();
    if start > 0 {
        out.push('…');
    }
    let mut at = start;
    for (from, to) in hits.into_iter().filter(|(f, t)| *f >= start && *t <= end) {
        out.push_str(&escape(&text[at..from]));
        out.push_str("<mark>");
        out.push_str(&escape(&text[from..to]));
        out.push_str("</mark>");
        at = to;
    }
    out.push_str(&escape(&text[at..end]));
    if end < text.len() {
        out.push('…');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_exact_folded_and_misspelt_words() {
        let report = "Kein Nachweis einer Lungenembolie. Kleiner Rundherd im Oberlappen <5 mm>.";
        let got = snippet(report, &["rundherd".into(), "oberlapen".into()]).expect("hit");
        assert_eq!(
            got,
            "Kein Nachweis einer Lungenembolie. Kleiner <mark>Rundherd</mark> im \
             <mark>Oberlappen</mark> &lt;5 mm&gt;."
        );
        let got = snippet("Tràn dịch màng phổi", &["phoi".into()]).expect("hit");
        assert_eq!(got, "Tràn dịch màng <mark>phổi</mark>");
        assert!(snippet("nothing here", &["lung".into()]).is_none());
        assert!(within_one_edit("nodule", "nodlue"));
        assert!(!within_one_edit("nodule", "module2"));
    }
}
