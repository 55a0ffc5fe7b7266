//! Escape sequences (HL7 v2 section 2.7): decoded when a value is read,
//! applied when one is written, so stored text never holds them.

use super::{Charset, Delimiters};

/// The text of one component or subcomponent, escapes decoded.
pub fn decode(raw: &str, d: &Delimiters, charset: Charset) -> String {
    if !raw.contains(d.escape) {
        return raw.to_owned();
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find(d.escape) {
        out.push_str(&rest[..start]);
        let after = &rest[start + d.escape.len_utf8()..];
        let Some(end) = after.find(d.escape) else {
            // An escape character with no closing one is taken literally.
            out.push_str(&rest[start..]);
            return out;
        };
        let sequence = &after[..end];
        match sequence {
            "F" => out.push(d.field),
            "S" => out.push(d.component),
            "T" => out.push(d.subcomponent),
            "R" => out.push(d.repetition),
            "E" => out.push(d.escape),
            "P" => out.push(d.truncation.unwrap_or('#')),
            ".br" => out.push('\n'),
            // Highlighting, formatting and character-set switches carry no text.
            "H" | "N" => {}
            s if s.starts_with(".sp") => out.push('\n'),
            s if s.starts_with('.') || s.starts_with('C') || s.starts_with('M') => {}
            s if s.starts_with('X') => out.push_str(&hex_text(&s[1..], charset)),
            other => {
                // Unknown: keep it as written rather than lose characters.
                out.push(d.escape);
                out.push_str(other);
                out.push(d.escape);
            }
        }
        rest = &after[end + d.escape.len_utf8()..];
    }
    out.push_str(rest);
    out
}

/// `\Xhh…\`: bytes in the message's character set.
fn hex_text(hex: &str, charset: Charset) -> String {
    let bytes: Option<Vec<u8>> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    match bytes {
        Some(bytes) if hex.len() % 2 == 0 => charset
            .decode(&bytes)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned()),
        _ => format!("\\X{hex}\\"),
    }
}

/// `text` as a field value: delimiters and line breaks escaped.
pub fn encode(text: &str, d: &Delimiters) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let sequence = match c {
            c if c == d.escape => "E",
            c if c == d.field => "F",
            c if c == d.component => "S",
            c if c == d.subcomponent => "T",
            c if c == d.repetition => "R",
            '\n' => ".br",
            '\r' => "X0D",
            c => {
                out.push(c);
                continue;
            }
        };
        out.push(d.escape);
        out.push_str(sequence);
        out.push(d.escape);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sequence_decodes() {
        let d = Delimiters::default();
        let raw = r"A\F\B\S\C\T\D\R\E\E\F\H\bold\N\ \X4D\\.br\x\Q\";
        assert_eq!(
            decode(raw, &d, Charset::Ascii),
            "A|B^C&D~E\\Fbold M\nx\\Q\\"
        );
        assert_eq!(decode(r"M\XFC\ller", &d, Charset::Latin1), "Müller");
        assert_eq!(decode(r"open\F", &d, Charset::Ascii), r"open\F");
    }

    #[test]
    fn encoding_round_trips() {
        let d = Delimiters::default();
        let text = "a|b^c&d~e\\f\nend";
        let written = encode(text, &d);
        assert!(!written.contains('|') && !written.contains('^'));
        assert_eq!(decode(&written, &d, Charset::Utf8), text);
    }
}
