//! MSH-18 character sets. The header is read as ASCII first, then the
//! whole message is decoded from the named set into UTF-8; a byte the set
//! does not define is an error, never a replacement character in a name.

use encoding_rs::Encoding;

use super::Hl7Error;

/// A character set a message may declare in MSH-18.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// No MSH-18, `ASCII` or `ISO IR6`: 7-bit only.
    Ascii,
    /// `8859/1`, `ISO IR100`: every byte is its own code point.
    Latin1,
    /// `UNICODE UTF-8`, `ISO IR192` (and the older `UNICODE`).
    Utf8,
    /// Another ISO 8859 part, or GB 18030, decoded by encoding_rs.
    Other(&'static Encoding, &'static str),
}

impl Charset {
    /// The set MSH-18 names; an empty value is ASCII, HL7's default.
    pub fn from_msh18(value: &str) -> Result<Self, Hl7Error> {
        let normal: String = value
            .trim()
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '_')
            .collect::<String>()
            .to_ascii_uppercase();
        let other = |label: &[u8], name| {
            Encoding::for_label(label)
                .map(|e| Charset::Other(e, name))
                .ok_or_else(|| Hl7Error::UnknownCharset(value.to_owned()))
        };
        match normal.as_str() {
            "" | "ASCII" | "ISOIR6" => Ok(Charset::Ascii),
            "8859/1" | "ISOIR100" => Ok(Charset::Latin1),
            "UNICODEUTF-8" | "UNICODE" | "ISOIR192" | "UTF-8" => Ok(Charset::Utf8),
            "8859/2" | "ISOIR101" => other(b"iso-8859-2", "8859/2"),
            "8859/3" | "ISOIR109" => other(b"iso-8859-3", "8859/3"),
            "8859/4" | "ISOIR110" => other(b"iso-8859-4", "8859/4"),
            "8859/5" | "ISOIR144" => other(b"iso-8859-5", "8859/5"),
            "8859/6" | "ISOIR127" => other(b"iso-8859-6", "8859/6"),
            "8859/7" | "ISOIR126" => other(b"iso-8859-7", "8859/7"),
            "8859/8" | "ISOIR138" => other(b"iso-8859-8", "8859/8"),
            "8859/15" => other(b"iso-8859-15", "8859/15"),
            "GB18030" => other(b"gb18030", "GB 18030"),
            _ => Err(Hl7Error::UnknownCharset(value.to_owned())),
        }
    }

    /// The MSH-18 value to write for this set.
    pub fn name(&self) -> &'static str {
        match self {
            Charset::Ascii => "ASCII",
            Charset::Latin1 => "8859/1",
            Charset::Utf8 => "UNICODE UTF-8",
            Charset::Other(_, name) => name,
        }
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<String, Hl7Error> {
        let bad = |offset: usize| Hl7Error::BadByte {
            byte: bytes.get(offset).copied().unwrap_or(0),
            offset,
            charset: self.name(),
        };
        match self {
            Charset::Ascii => match bytes.iter().position(|b| !b.is_ascii()) {
                Some(at) => Err(bad(at)),
                None => Ok(String::from_utf8_lossy(bytes).into_owned()),
            },
            Charset::Latin1 => Ok(bytes.iter().map(|&b| char::from(b)).collect()),
            Charset::Utf8 => {
                String::from_utf8(bytes.to_vec()).map_err(|e| bad(e.utf8_error().valid_up_to()))
            }
            Charset::Other(encoding, _) => {
                let mut decoder = encoding.new_decoder_without_bom_handling();
                let mut out = String::with_capacity(bytes.len() * 2);
                let mut read = 0;
                loop {
                    let (result, used) = decoder.decode_to_string_without_replacement(
                        &bytes[read..],
                        &mut out,
                        true,
                    );
                    read += used;
                    match result {
                        encoding_rs::DecoderResult::InputEmpty => return Ok(out),
                        encoding_rs::DecoderResult::OutputFull => {
                            out.reserve(bytes.len() - read + 16);
                        }
                        encoding_rs::DecoderResult::Malformed(len, _) => {
                            let at = read.saturating_sub(usize::from(len));
                            return Err(bad(at.min(bytes.len().saturating_sub(1))));
                        }
                    }
                }
            }
        }
    }

    /// `text` in this set, with `?` for each character the set lacks: for
    /// what Tessera writes, where a lost accent beats a lost message.
    pub fn encode_lossy(&self, text: &str) -> Vec<u8> {
        self.encode(text).unwrap_or_else(|_| {
            let fitted: String = text
                .chars()
                .map(|c| {
                    if self.encode(c.encode_utf8(&mut [0; 4])).is_ok() {
                        c
                    } else {
                        '?'
                    }
                })
                .collect();
            self.encode(&fitted).unwrap_or_else(|_| fitted.into_bytes())
        })
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u8>, Hl7Error> {
        match self {
            Charset::Utf8 => Ok(text.as_bytes().to_vec()),
            Charset::Ascii => text
                .chars()
                .map(|c| {
                    if c.is_ascii() {
                        Ok(c as u8)
                    } else {
                        Err(Hl7Error::Unencodable(c, "ASCII"))
                    }
                })
                .collect(),
            Charset::Latin1 => text
                .chars()
                .map(|c| u8::try_from(u32::from(c)).map_err(|_| Hl7Error::Unencodable(c, "8859/1")))
                .collect(),
            Charset::Other(encoding, name) => {
                let (bytes, _, unmappable) = encoding.encode(text);
                if unmappable {
                    // Name the first character that did not fit.
                    let c = text
                        .chars()
                        .find(|c| encoding.encode(&c.to_string()).2)
                        .unwrap_or('?');
                    return Err(Hl7Error::Unencodable(c, name));
                }
                Ok(bytes.into_owned())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_round_trips() {
        assert_eq!(Charset::from_msh18("").unwrap(), Charset::Ascii);
        assert_eq!(Charset::from_msh18("UNICODE UTF-8").unwrap(), Charset::Utf8);
        assert_eq!(Charset::from_msh18("ISO IR192").unwrap(), Charset::Utf8);
        assert_eq!(Charset::from_msh18("8859/1").unwrap(), Charset::Latin1);
        assert!(Charset::from_msh18("KLINGON").is_err());
        let latin2 = Charset::from_msh18("8859/2").unwrap();
        let text = "Łódź Wąsowicz";
        assert_eq!(latin2.decode(&latin2.encode(text).unwrap()).unwrap(), text);
        let gb = Charset::from_msh18("GB 18030").unwrap();
        assert_eq!(gb.decode(&gb.encode("王小明").unwrap()).unwrap(), "王小明");
        assert_eq!(Charset::Latin1.decode(b"M\xfcller").unwrap(), "Müller");
    }

    #[test]
    fn bytes_outside_the_set_are_errors() {
        assert!(matches!(
            Charset::Ascii.decode(b"M\xfcller"),
            Err(Hl7Error::BadByte { offset: 1, .. })
        ));
        assert!(matches!(
            Charset::Utf8.decode(b"Nguy\xe1\xbb"),
            Err(Hl7Error::BadByte { offset: 4, .. })
        ));
        assert!(Charset::Latin1.encode("Nguyễn").is_err());
    }
}
