//! A parsed message: segments of raw fields, read through [`Field`], which
//! splits repetitions, components and subcomponents on demand and decodes
//! escapes only for the value asked for.

use super::{escape, Charset, Hl7Error};

/// The separators MSH-1 and MSH-2 declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    pub field: char,
    pub component: char,
    pub repetition: char,
    pub escape: char,
    pub subcomponent: char,
    /// v2.7's truncation character, when MSH-2 has five characters.
    pub truncation: Option<char>,
}

impl Default for Delimiters {
    fn default() -> Self {
        Delimiters {
            field: '|',
            component: '^',
            repetition: '~',
            escape: '\\',
            subcomponent: '&',
            truncation: None,
        }
    }
}

impl Delimiters {
    /// MSH-2 as written.
    pub fn encoding_characters(&self) -> String {
        let mut s: String = [
            self.component,
            self.repetition,
            self.escape,
            self.subcomponent,
        ]
        .into_iter()
        .collect();
        s.extend(self.truncation);
        s
    }

    fn from_header(bytes: &[u8]) -> Result<Self, Hl7Error> {
        let field = *bytes.get(3).ok_or(Hl7Error::BadDelimiters)?;
        let encoding: Vec<u8> = bytes[4..]
            .iter()
            .take_while(|&&b| b != field && b != b'\r' && b != b'\n')
            .copied()
            .collect();
        let usable = |b: u8| b.is_ascii_punctuation();
        if !usable(field)
            || !(4..=5).contains(&encoding.len())
            || !encoding.iter().all(|&b| usable(b))
        {
            return Err(Hl7Error::BadDelimiters);
        }
        let mut all = encoding.clone();
        all.push(field);
        all.sort_unstable();
        all.dedup();
        if all.len() != encoding.len() + 1 {
            return Err(Hl7Error::BadDelimiters);
        }
        Ok(Delimiters {
            field: char::from(field),
            component: char::from(encoding[0]),
            repetition: char::from(encoding[1]),
            escape: char::from(encoding[2]),
            subcomponent: char::from(encoding[3]),
            truncation: encoding.get(4).map(|&b| char::from(b)),
        })
    }
}

/// One segment: its raw fields, numbered as HL7 numbers them (MSH-1 is
/// the field separator itself).
#[derive(Debug, Clone)]
pub struct Segment {
    fields: Vec<String>,
}

impl Segment {
    pub fn name(&self) -> &str {
        self.fields.first().map_or("", String::as_str)
    }

    /// Fields present, counting the name as field 0.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.len() <= 1
    }
}

/// A parsed message, text decoded to UTF-8.
#[derive(Debug, Clone)]
pub struct Message {
    segments: Vec<Segment>,
    delimiters: Delimiters,
    charset: Charset,
}

/// A field, repetition, component or subcomponent, still escaped.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    raw: &'a str,
    d: &'a Delimiters,
    charset: Charset,
}

impl<'a> Field<'a> {
    /// Every repetition of the field.
    pub fn reps(&self) -> Vec<Field<'a>> {
        if self.raw.is_empty() {
            return Vec::new();
        }
        self.raw
            .split(self.d.repetition)
            .map(|r| self.with(r))
            .collect()
    }

    /// Repetition `n`, counted from 1.
    pub fn rep(&self, n: usize) -> Field<'a> {
        self.with(nth(self.raw, self.d.repetition, n))
    }

    /// Component `n` of the first repetition, counted from 1.
    pub fn comp(&self, n: usize) -> Field<'a> {
        let first = nth(self.raw, self.d.repetition, 1);
        self.with(nth(first, self.d.component, n))
    }

    /// Subcomponent `n`, counted from 1.
    pub fn sub(&self, n: usize) -> Field<'a> {
        self.with(nth(self.raw, self.d.subcomponent, n))
    }

    /// The value with escapes decoded; `""` (HL7's explicit null) is empty.
    pub fn text(&self) -> String {
        if self.is_null() {
            return String::new();
        }
        escape::decode(self.raw, self.d, self.charset)
            .trim()
            .to_owned()
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// `""`: the sender asks for the value to be deleted.
    pub fn is_null(&self) -> bool {
        self.raw == "\"\""
    }

    pub fn raw(&self) -> &'a str {
        self.raw
    }

    fn with(&self, raw: &'a str) -> Field<'a> {
        Field { raw, ..*self }
    }
}

fn nth(raw: &str, separator: char, n: usize) -> &str {
    n.checked_sub(1)
        .and_then(|i| raw.split(separator).nth(i))
        .unwrap_or("")
}

impl Message {
    /// Read a message: delimiters and MSH-18 from the header in ASCII,
    /// then the whole message decoded from that character set.
    pub fn parse(bytes: &[u8]) -> Result<Message, Hl7Error> {
        let bytes = trim_start(bytes);
        if !bytes.starts_with(b"MSH") {
            return Err(Hl7Error::NoHeader);
        }
        let delimiters = Delimiters::from_header(bytes)?;
        let charset = Charset::from_msh18(&header_field(bytes, delimiters, 18))?;
        let text = charset.decode(bytes)?;
        Ok(Self::from_text(&text, delimiters, charset))
    }

    /// Read a message already decoded to text (as the message log keeps
    /// it); MSH-18 still tells how `\X..\` escapes are meant.
    pub fn parse_decoded(text: &str) -> Result<Message, Hl7Error> {
        let bytes = trim_start(text.as_bytes());
        if !bytes.starts_with(b"MSH") {
            return Err(Hl7Error::NoHeader);
        }
        let delimiters = Delimiters::from_header(bytes)?;
        let charset = Charset::from_msh18(&header_field(bytes, delimiters, 18))?;
        Ok(Self::from_text(text.trim_start(), delimiters, charset))
    }

    /// A header with nothing in it, to answer bytes with no MSH at all.
    pub fn anonymous() -> Message {
        Self::from_text("MSH|^~\\&", Delimiters::default(), Charset::Ascii)
    }

    /// Only the MSH, with anything outside ASCII replaced: enough to
    /// address a negative acknowledgement to a message that cannot be read.
    pub fn parse_header(bytes: &[u8]) -> Option<Message> {
        let bytes = trim_start(bytes);
        if !bytes.starts_with(b"MSH") {
            return None;
        }
        let delimiters = Delimiters::from_header(bytes).ok()?;
        let end = bytes
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .unwrap_or(bytes.len());
        let text: String = bytes[..end]
            .iter()
            .map(|&b| if b.is_ascii() { char::from(b) } else { '?' })
            .collect();
        let charset =
            Charset::from_msh18(&header_field(bytes, delimiters, 18)).unwrap_or(Charset::Ascii);
        Some(Self::from_text(&text, delimiters, charset))
    }

    fn from_text(text: &str, delimiters: Delimiters, charset: Charset) -> Message {
        let segments = text
            .split(['\r', '\n'])
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                let mut fields: Vec<String> =
                    line.split(delimiters.field).map(str::to_owned).collect();
                if fields.first().is_some_and(|name| name == "MSH") {
                    fields.insert(1, delimiters.field.to_string());
                }
                Segment { fields }
            })
            .collect();
        Message {
            segments,
            delimiters,
            charset,
        }
    }

    pub fn delimiters(&self) -> &Delimiters {
        &self.delimiters
    }

    pub fn charset(&self) -> Charset {
        self.charset
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The first segment named `name`.
    pub fn segment(&self, name: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.name() == name)
    }

    /// Field `n` of `segment` (empty when absent).
    pub fn field<'a>(&'a self, segment: &'a Segment, n: usize) -> Field<'a> {
        Field {
            raw: segment.fields.get(n).map_or("", String::as_str),
            d: &self.delimiters,
            charset: self.charset,
        }
    }

    /// Field `n` of the first segment named `name`.
    pub fn get(&self, name: &str, n: usize) -> Field<'_> {
        match self.segment(name) {
            Some(segment) => self.field(segment, n),
            None => Field {
                raw: "",
                d: &self.delimiters,
                charset: self.charset,
            },
        }
    }

    /// MSH-9: message code, trigger event and structure.
    pub fn message_type(&self) -> (String, String, String) {
        let f = self.get("MSH", 9);
        (f.comp(1).text(), f.comp(2).text(), f.comp(3).text())
    }

    /// MSH-10.
    pub fn control_id(&self) -> String {
        self.get("MSH", 10).text()
    }

    /// MSH-12, the version's first component.
    pub fn version(&self) -> String {
        self.get("MSH", 12).comp(1).text()
    }

    /// Who sent it: MSH-3 and MSH-4, the key for duplicate control IDs.
    pub fn sender(&self) -> String {
        format!(
            "{}|{}",
            self.get("MSH", 3).comp(1).text(),
            self.get("MSH", 4).comp(1).text()
        )
    }
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    &bytes[start..]
}

/// MSH-`n` read as ASCII, first repetition.
fn header_field(bytes: &[u8], d: Delimiters, n: usize) -> String {
    let end = bytes
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(bytes.len());
    let line = String::from_utf8_lossy(&bytes[..end]);
    // Split index n - 1 is MSH-n: MSH-1 is the separator itself.
    line.split(d.field)
        .nth(n - 1)
        .and_then(|f| f.split(d.repetition).next())
        .unwrap_or("")
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADT: &str = "MSH|^~\\&|RIS|HOSP|TESSERA|PACS|20240105123000||ADT^A01^ADT_A01|MSG0001|P|2.5||||||UNICODE UTF-8\r\
        PID|1||12345^^^HOSP^MR~998877^^^NATIONAL^NI||Nguyễn^Văn An^^^Mr||19800214|M|||12 Rue d\\E\\Ecole^^Hà Nội^^10000^VN\r\
        PV1|1|I|WARD^101^A\r";

    #[test]
    fn reads_fields_components_and_repetitions() {
        let m = Message::parse(ADT.as_bytes()).expect("parses");
        assert_eq!(
            m.message_type(),
            ("ADT".into(), "A01".into(), "ADT_A01".into())
        );
        assert_eq!(m.control_id(), "MSG0001");
        assert_eq!(m.version(), "2.5");
        assert_eq!(m.charset(), Charset::Utf8);
        assert_eq!(m.sender(), "RIS|HOSP");
        let pid3 = m.get("PID", 3);
        assert_eq!(pid3.reps().len(), 2);
        assert_eq!(pid3.rep(2).comp(1).text(), "998877");
        assert_eq!(pid3.comp(4).comp(1).text(), "HOSP");
        assert_eq!(m.get("PID", 5).comp(1).text(), "Nguyễn");
        assert_eq!(m.get("PID", 5).comp(2).text(), "Văn An");
        assert_eq!(m.get("PID", 11).comp(1).text(), "12 Rue d\\Ecole");
        assert_eq!(m.get("MSH", 1).raw(), "|");
        assert_eq!(m.get("MSH", 2).raw(), "^~\\&");
        assert!(m.get("ZZZ", 1).is_empty());
    }

    #[test]
    fn custom_delimiters_and_declared_latin1() {
        let raw = b"MSH#!@$%#A#B#C#D#20240101##ADT!A08#1#P#2.3######8859/1\rPID#1##7##M\xfcller!J\xfcrgen\r";
        let m = Message::parse(raw).expect("parses");
        assert_eq!(m.get("PID", 5).comp(1).text(), "Müller");
        assert_eq!(m.get("PID", 5).comp(2).text(), "Jürgen");
        assert_eq!(m.message_type().1, "A08");
    }

    /// Mutations of a real message: reading, every accessor and an ACK
    /// must never panic, whatever the bytes.
    #[test]
    fn hostile_bytes_never_panic() {
        let seed = ADT.as_bytes();
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let specials = b"|^~\\&\r\n\x0b\x1cX\xc3\xff".to_vec();
        for _ in 0..3000 {
            let mut bytes = seed.to_vec();
            for _ in 0..(next() % 12) {
                let at = (next() as usize) % (bytes.len() + 1);
                match next() % 4 {
                    0 => bytes.truncate(at),
                    1 if at < bytes.len() => {
                        bytes[at] = specials[(next() as usize) % specials.len()];
                    }
                    2 => bytes.insert(
                        at.min(bytes.len()),
                        specials[(next() as usize) % specials.len()],
                    ),
                    _ if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => {}
                }
            }
            let message = Message::parse(&bytes)
                .ok()
                .or_else(|| Message::parse_header(&bytes))
                .unwrap_or_else(Message::anonymous);
            for segment in message.segments() {
                for n in 0..segment.len() + 2 {
                    let f = message.field(segment, n);
                    for r in f.reps() {
                        let _ = (r.comp(1).sub(2).text(), r.comp(9).text());
                    }
                }
            }
            let _ = (
                message.message_type(),
                message.control_id(),
                message.sender(),
            );
            let error = super::super::ErrorCondition::new(100, "x").at("PID", 3);
            let ack = super::super::ack::build(
                &message,
                super::super::AckCode::Ae,
                Some(&error),
                "1",
                "2",
            );
            let _ = super::super::ack::to_wire(&message, &ack);
        }
    }

    #[test]
    fn bad_headers_and_bytes_are_errors() {
        assert_eq!(Message::parse(b"PID|1").unwrap_err(), Hl7Error::NoHeader);
        assert_eq!(
            Message::parse(b"MSH|^~").unwrap_err(),
            Hl7Error::BadDelimiters
        );
        assert_eq!(
            Message::parse(b"MSH|^^\\&|").unwrap_err(),
            Hl7Error::BadDelimiters
        );
        let latin_in_ascii = b"MSH|^~\\&|A|B|C|D|||ADT^A01|1|P|2.5\rPID|||1||M\xfcller\r";
        assert!(matches!(
            Message::parse(latin_in_ascii),
            Err(Hl7Error::BadByte { byte: 0xfc, .. })
        ));
        let header = Message::parse_header(latin_in_ascii).expect("header");
        assert_eq!(header.control_id(), "1");
    }
}
