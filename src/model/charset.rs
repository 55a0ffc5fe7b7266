//! Specific Character Set (0008,0005) decoding, including the ISO 2022 code
//! extensions (PS3.5 6.1.2.5) that dicom-rs does not switch on: Japanese
//! (ISO 2022 IR 13/87/159), Korean (IR 149) and Chinese (IR 58) text with
//! escape sequences. Every decoded value is stored as UTF-8.

use encoding_rs::{Encoding, EUC_JP, EUC_KR, GB18030, GBK, SHIFT_JIS, UTF_8, WINDOWS_1252};

const ESC: u8 = 0x1b;

/// What is designated to G0 (bytes 0x21..0x7E) or G1 (bytes 0xA1..0xFE).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Set {
    Ascii,
    /// A single-byte right half such as ISO-8859-x or JIS X 0201 katakana.
    Single(&'static Encoding),
    /// JIS X 0208 in G0, decoded as EUC-JP with the high bit set.
    Jis0208,
    /// JIS X 0212 in G0, decoded as EUC-JP's 0x8F plane.
    Jis0212,
    /// A two-byte set in G1 whose bytes already carry the high bit.
    Double(&'static Encoding),
}

/// The encoding for a single-valued, non-ISO-2022 Specific Character Set term.
fn single_term(term: &str) -> Option<&'static Encoding> {
    let enc = match term {
        "" | "ISO_IR 6" => UTF_8, // plain ASCII is valid UTF-8
        "ISO_IR 100" => WINDOWS_1252,
        "ISO_IR 101" => encoding_rs::ISO_8859_2,
        "ISO_IR 109" => encoding_rs::ISO_8859_3,
        "ISO_IR 110" => encoding_rs::ISO_8859_4,
        "ISO_IR 144" => encoding_rs::ISO_8859_5,
        "ISO_IR 127" => encoding_rs::ISO_8859_6,
        "ISO_IR 126" => encoding_rs::ISO_8859_7,
        "ISO_IR 138" => encoding_rs::ISO_8859_8,
        "ISO_IR 148" => encoding_rs::WINDOWS_1254,
        "ISO_IR 203" => encoding_rs::ISO_8859_15,
        "ISO_IR 166" => encoding_rs::WINDOWS_874,
        "ISO_IR 13" => SHIFT_JIS,
        "ISO_IR 192" => UTF_8,
        "GB18030" => GB18030,
        "GBK" => GBK,
        _ => return None,
    };
    Some(enc)
}

/// The G1 set an ISO 2022 term designates when it is the initial one.
fn g1_of_2022_term(term: &str) -> Option<Set> {
    let set = match term {
        "ISO 2022 IR 6" | "" => Set::Ascii,
        "ISO 2022 IR 100" => Set::Single(WINDOWS_1252),
        "ISO 2022 IR 101" => Set::Single(encoding_rs::ISO_8859_2),
        "ISO 2022 IR 109" => Set::Single(encoding_rs::ISO_8859_3),
        "ISO 2022 IR 110" => Set::Single(encoding_rs::ISO_8859_4),
        "ISO 2022 IR 144" => Set::Single(encoding_rs::ISO_8859_5),
        "ISO 2022 IR 127" => Set::Single(encoding_rs::ISO_8859_6),
        "ISO 2022 IR 126" => Set::Single(encoding_rs::ISO_8859_7),
        "ISO 2022 IR 138" => Set::Single(encoding_rs::ISO_8859_8),
        "ISO 2022 IR 148" => Set::Single(encoding_rs::WINDOWS_1254),
        "ISO 2022 IR 203" => Set::Single(encoding_rs::ISO_8859_15),
        "ISO 2022 IR 166" => Set::Single(encoding_rs::WINDOWS_874),
        "ISO 2022 IR 13" => Set::Single(SHIFT_JIS),
        "ISO 2022 IR 87" | "ISO 2022 IR 159" => Set::Ascii,
        "ISO 2022 IR 149" => Set::Double(EUC_KR),
        "ISO 2022 IR 58" => Set::Double(GBK),
        _ => return None,
    };
    Some(set)
}

/// Decode a text value given the raw Specific Character Set value.
/// Unknown character sets fall back to ISO-IR 100 (the most common
/// mislabelling in practice) rather than dropping the value.
pub fn decode_text(specific_character_set: &str, bytes: &[u8]) -> String {
    let terms: Vec<&str> = specific_character_set
        .split('\\')
        .map(|t| t.trim_matches([' ', '\0']))
        .collect();
    let uses_2022 = terms.len() > 1 || terms.iter().any(|t| t.starts_with("ISO 2022"));
    let text = if uses_2022 {
        let initial_g1 = g1_of_2022_term(terms[0]).unwrap_or(Set::Ascii);
        decode_iso2022(bytes, initial_g1)
    } else {
        let enc = single_term(terms[0]).unwrap_or(WINDOWS_1252);
        enc.decode_without_bom_handling(bytes).0.into_owned()
    };
    text.trim_end_matches(['\0', ' ']).to_owned()
}

/// Collects bytes that share one target encoding and decodes them in runs.
struct Runs {
    out: String,
    enc: &'static Encoding,
    buf: Vec<u8>,
}

impl Runs {
    fn push(&mut self, enc: &'static Encoding, bytes: &[u8]) {
        if enc != self.enc {
            self.flush();
            self.enc = enc;
        }
        self.buf.extend_from_slice(bytes);
    }

    fn flush(&mut self) {
        if !self.buf.is_empty() {
            let (s, _) = self.enc.decode_without_bom_handling(&self.buf);
            self.out.push_str(&s);
            self.buf.clear();
        }
    }
}

fn decode_iso2022(bytes: &[u8], initial_g1: Set) -> String {
    let mut runs = Runs {
        out: String::with_capacity(bytes.len()),
        enc: UTF_8,
        buf: Vec::new(),
    };
    let mut g0 = Set::Ascii;
    let mut g1 = initial_g1;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == ESC {
            let (consumed, designation) = parse_escape(&bytes[i..]);
            match designation {
                Some((true, set)) => g0 = set,
                Some((false, set)) => g1 = set,
                None => {}
            }
            i += consumed;
            continue;
        }
        // Delimiters reset G0 (PS3.5 6.1.2.5.3); controls are never part of a
        // two-byte character.
        if b < 0x21 || (0x80..0xa1).contains(&b) {
            if matches!(b, b'\r' | b'\n' | b'\t' | 0x0c) {
                g0 = Set::Ascii;
            }
            runs.push(UTF_8, if b < 0x80 { &bytes[i..=i] } else { b"?" });
            i += 1;
            continue;
        }
        if b < 0x80 {
            match g0 {
                Set::Jis0208 | Set::Jis0212 if i + 1 < bytes.len() && bytes[i + 1] >= 0x21 => {
                    let pair = [bytes[i] | 0x80, bytes[i + 1] | 0x80];
                    if g0 == Set::Jis0212 {
                        runs.push(EUC_JP, &[0x8f, pair[0], pair[1]]);
                    } else {
                        runs.push(EUC_JP, &pair);
                    }
                    i += 2;
                }
                _ => {
                    runs.push(UTF_8, &bytes[i..=i]);
                    i += 1;
                }
            }
            continue;
        }
        match g1 {
            Set::Double(enc) if i + 1 < bytes.len() => {
                runs.push(enc, &bytes[i..i + 2]);
                i += 2;
            }
            Set::Single(enc) => {
                runs.push(enc, &bytes[i..=i]);
                i += 1;
            }
            _ => {
                runs.push(WINDOWS_1252, &bytes[i..=i]);
                i += 1;
            }
        }
    }
    runs.flush();
    runs.out
}

/// Parse an escape sequence at the start of `s`. Returns the bytes consumed
/// and, when recognised, whether it designates G0 (true) or G1, and the set.
fn parse_escape(s: &[u8]) -> (usize, Option<(bool, Set)>) {
    let table: &[(&[u8], bool, Set)] = &[
        (b"\x1b(B", true, Set::Ascii),
        (b"\x1b(J", true, Set::Ascii), // JIS X 0201 romaji: ASCII but for two glyphs
        (b"\x1b$B", true, Set::Jis0208),
        (b"\x1b$(D", true, Set::Jis0212),
        (b"\x1b)I", false, Set::Single(SHIFT_JIS)),
        (b"\x1b$)C", false, Set::Double(EUC_KR)),
        (b"\x1b$)A", false, Set::Double(GBK)),
        (b"\x1b-A", false, Set::Single(WINDOWS_1252)),
        (b"\x1b-B", false, Set::Single(encoding_rs::ISO_8859_2)),
        (b"\x1b-C", false, Set::Single(encoding_rs::ISO_8859_3)),
        (b"\x1b-D", false, Set::Single(encoding_rs::ISO_8859_4)),
        (b"\x1b-L", false, Set::Single(encoding_rs::ISO_8859_5)),
        (b"\x1b-G", false, Set::Single(encoding_rs::ISO_8859_6)),
        (b"\x1b-F", false, Set::Single(encoding_rs::ISO_8859_7)),
        (b"\x1b-H", false, Set::Single(encoding_rs::ISO_8859_8)),
        (b"\x1b-M", false, Set::Single(encoding_rs::WINDOWS_1254)),
        (b"\x1b-T", false, Set::Single(encoding_rs::WINDOWS_874)),
        (b"\x1b-b", false, Set::Single(encoding_rs::ISO_8859_15)),
    ];
    for (seq, is_g0, set) in table {
        if s.starts_with(seq) {
            return (seq.len(), Some((*is_g0, *set)));
        }
    }
    // Unknown escape: skip ESC and its intermediate bytes and final byte.
    let len = s
        .iter()
        .skip(1)
        .position(|b| (0x30..0x7f).contains(b))
        .map_or(s.len(), |p| p + 2);
    (len, None)
}

/// Case- and diacritic-folded form of a text value, for fuzzy matching:
/// "Nguyễn^Văn" and "NGUYEN^VAN" fold to the same string.
pub fn fold_for_matching(text: &str) -> String {
    use unicode_normalization::char::is_combining_mark;
    use unicode_normalization::UnicodeNormalization;
    let mut out = String::with_capacity(text.len());
    for c in text.nfd() {
        if is_combining_mark(c) {
            continue;
        }
        match c {
            'đ' | 'Đ' => out.push('d'),
            'ø' | 'Ø' => out.push('o'),
            'ł' | 'Ł' => out.push('l'),
            'ß' => out.push_str("ss"),
            'æ' | 'Æ' => out.push_str("ae"),
            'œ' | 'Œ' => out.push_str("oe"),
            _ => out.extend(c.to_lowercase()),
        }
    }
    out
}

/// Single-byte Specific Character Sets Tessera can answer in, besides
/// UTF-8 (ISO_IR 192, the default) and ASCII (`ISO_IR 6`).
pub const ANSWER_CHARSETS: &[&str] = &[
    "ISO_IR 6",
    "ISO_IR 100",
    "ISO_IR 101",
    "ISO_IR 109",
    "ISO_IR 110",
    "ISO_IR 144",
    "ISO_IR 126",
    "ISO_IR 148",
    "ISO_IR 203",
    "ISO_IR 192",
];

/// `text` in the characters of the single-byte set `term` (one of
/// [`ANSWER_CHARSETS`]): a character the set has stays, one it lacks
/// loses its diacritics ("Nguyễn" becomes "Nguyen" in ISO_IR 100, "đ"
/// becomes "d", "ł" "l", "œ" "oe"), and what is still missing becomes `?`.
pub fn transliterate(text: &str, term: &str) -> String {
    use unicode_normalization::char::is_combining_mark;
    use unicode_normalization::UnicodeNormalization;
    let encoding = match term {
        "ISO_IR 192" => return text.to_owned(),
        "" | "ISO_IR 6" => None,
        // Latin-1 proper: windows-1252 would keep characters 8859-1 lacks.
        "ISO_IR 100" => None,
        other => single_term(other),
    };
    let fits = |c: char| match (term, encoding) {
        ("ISO_IR 100", _) => u32::from(c) < 0x80 || (0xA0..=0xFF).contains(&u32::from(c)),
        (_, None) => c.is_ascii(),
        (_, Some(enc)) => {
            let mut buf = [0u8; 4];
            let (_, _, unmappable) = enc.encode(c.encode_utf8(&mut buf));
            !unmappable
        }
    };
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if fits(c) {
            out.push(c);
            continue;
        }
        let replacement = match c {
            'đ' => "d",
            'Đ' => "D",
            'ł' => "l",
            'Ł' => "L",
            'ø' => "o",
            'Ø' => "O",
            'ß' => "ss",
            'æ' => "ae",
            'Æ' => "AE",
            'œ' => "oe",
            'Œ' => "OE",
            _ => "",
        };
        if !replacement.is_empty() {
            out.push_str(replacement);
            continue;
        }
        let base: String = std::iter::once(c)
            .nfd()
            .filter(|m| !is_combining_mark(*m))
            .collect();
        if !base.is_empty() && base.chars().all(fits) {
            out.push_str(&base);
        } else {
            out.push('?');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{decode_text, fold_for_matching, transliterate};

    #[test]
    fn answers_keep_what_the_set_has_and_fold_the_rest() {
        assert_eq!(
            transliterate("Nguyễn^Văn Thái", "ISO_IR 100"),
            "Nguyen^Van Thái"
        );
        assert_eq!(transliterate("Đỗ^Quang", "ISO_IR 100"), "Do^Quang");
        assert_eq!(
            transliterate("Müller^Jürgen", "ISO_IR 100"),
            "Müller^Jürgen"
        );
        assert_eq!(
            transliterate("Łukasz Wałęsa", "ISO_IR 101"),
            "Łukasz Wałęsa"
        );
        assert_eq!(
            transliterate("Łukasz Wałęsa", "ISO_IR 100"),
            "Lukasz Walesa"
        );
        assert_eq!(transliterate("Müller", "ISO_IR 6"), "Muller");
        assert_eq!(transliterate("山田^太郎", "ISO_IR 100"), "??^??");
        assert_eq!(transliterate("Nguyễn", "ISO_IR 192"), "Nguyễn");
    }

    #[test]
    fn latin1_and_utf8() {
        assert_eq!(
            decode_text("ISO_IR 100", b"Buc^J\xe9r\xf4me "),
            "Buc^Jérôme"
        );
        assert_eq!(
            decode_text("ISO_IR 192", "Nguyễn^Văn".as_bytes()),
            "Nguyễn^Văn"
        );
        assert_eq!(decode_text("", b"DOE^JOHN"), "DOE^JOHN");
    }

    #[test]
    fn folding_ignores_case_and_diacritics() {
        assert_eq!(
            fold_for_matching("Nguyễn^Văn"),
            fold_for_matching("NGUYEN^VAN")
        );
        assert_eq!(fold_for_matching("Đặng^Thị"), "dang^thi");
        assert_eq!(fold_for_matching("Müller^Jürgen"), "muller^jurgen");
    }

    #[test]
    fn gb18030() {
        let bytes = encoding_rs::GB18030.encode("王^小东").0;
        assert_eq!(decode_text("GB18030", &bytes), "王^小东");
    }

    #[test]
    fn japanese_iso2022_ir87() {
        // PS3.5 H.3.1
        let raw =
            b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B";
        assert_eq!(
            decode_text("\\ISO 2022 IR 87", raw),
            "Yamada^Tarou=山田^太郎=やまだ^たろう"
        );
    }

    #[test]
    fn japanese_iso2022_ir13_katakana() {
        // PS3.5 H.3.2: JIS X 0201 katakana in G1 plus JIS X 0208 in G0.
        let raw = b"\xd4\xcf\xc0\xde^\xc0\xdb\xb3=\x1b$B;3ED\x1b(J^\x1b$BB@O:\x1b(J=\x1b$B$d$^$@\x1b(J^\x1b$B$?$m$&\x1b(J";
        assert_eq!(
            decode_text("ISO 2022 IR 13\\ISO 2022 IR 87", raw),
            "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"
        );
    }

    #[test]
    fn japanese_iso2022_ir159() {
        // JIS X 0212 row 0x30 0x21 is U+4E02 (丂).
        let raw = b"\x1b$(D0!\x1b(B";
        assert_eq!(decode_text("\\ISO 2022 IR 159", raw), "丂");
    }

    #[test]
    fn korean_iso2022_ir149() {
        // PS3.5 I.2
        let raw = b"Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7=\x1b$)C\xc8\xab^\x1b$)C\xb1\xe6\xb5\xbf";
        assert_eq!(
            decode_text("\\ISO 2022 IR 149", raw),
            "Hong^Gildong=洪^吉洞=홍^길동"
        );
    }
}
