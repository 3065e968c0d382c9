//! Records as `spate produce` reads them and `spate consume` writes them, one per line.
//!
//! Keys, values and header values are bytes. In JSON they are a string when the bytes are UTF-8,
//! else `{"base64": "..."}`, and `null` when absent, so `consume --format json` output can be fed
//! back to `produce --format json` unchanged. In text, bytes that are not UTF-8 are written as
//! `\xNN`. Headers are a JSON object in record order; a repeated header name is written (and read)
//! as a repeated key.

use std::borrow::Cow;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How records are written, one per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Headers as a record carries them: name and value, in order, names may repeat.
pub type Headers = Vec<(String, Option<Vec<u8>>)>;

/// A record to produce.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Headers,
    pub partition: Option<i32>,
    /// Milliseconds since the epoch; `None` lets the client stamp it.
    pub timestamp: Option<i64>,
}

/// A text line as a record: the key is what comes before the first `separator`, the value what
/// follows; a line without it (or with no separator given) is all value, with no key.
pub fn parse_text(line: &[u8], separator: Option<&[u8]>) -> Record {
    let split = separator.and_then(|sep| {
        let at = line.windows(sep.len()).position(|w| w == sep)?;
        Some((line[..at].to_vec(), line[at + sep.len()..].to_vec()))
    });
    match split {
        Some((key, value)) => Record { key: Some(key), value: Some(value), ..Record::default() },
        None => Record { value: Some(line.to_vec()), ..Record::default() },
    }
}

/// A JSON line as a record: `{"key": .., "value": .., "headers": {..}, "partition": .., "timestamp": ..}`,
/// every field optional; other fields (`topic`, `offset` from `consume` output) are ignored.
pub fn parse_json(line: &[u8]) -> Result<Record, String> {
    let r: JsonIn = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    let bytes = |b: Option<BytesIn>| b.map(BytesIn::into_bytes).transpose();
    let mut headers = Vec::with_capacity(r.headers.0.len());
    for (k, v) in r.headers.0 {
        headers.push((k, bytes(v)?));
    }
    if let Some(p) = r.partition {
        if p < 0 {
            return Err(format!("partition {p} is negative"));
        }
    }
    Ok(Record { key: bytes(r.key)?, value: bytes(r.value)?, headers, partition: r.partition, timestamp: r.timestamp })
}

#[derive(Deserialize)]
struct JsonIn {
    #[serde(default)]
    key: Option<BytesIn>,
    #[serde(default)]
    value: Option<BytesIn>,
    #[serde(default)]
    headers: HeadersIn,
    #[serde(default)]
    partition: Option<i32>,
    #[serde(default)]
    timestamp: Option<i64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum BytesIn {
    Text(String),
    Base64 { base64: String },
}

impl BytesIn {
    fn into_bytes(self) -> Result<Vec<u8>, String> {
        match self {
            BytesIn::Text(s) => Ok(s.into_bytes()),
            BytesIn::Base64 { base64 } => base64_decode(&base64).ok_or_else(|| format!("bad base64: {base64:?}")),
        }
    }
}

/// A JSON object read in order, repeated keys kept (a map type would drop both).
#[derive(Default)]
struct HeadersIn(Vec<(String, Option<BytesIn>)>);

impl<'de> Deserialize<'de> for HeadersIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HeadersIn;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of header names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<HeadersIn, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = m.next_entry::<String, Option<BytesIn>>()? {
                    out.push(entry);
                }
                Ok(HeadersIn(out))
            }
            fn visit_unit<E>(self) -> Result<HeadersIn, E> {
                Ok(HeadersIn::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// Bytes for JSON output: a string if UTF-8, else `{"base64": ".."}`; `null` if absent.
pub struct JsonBytes<'a>(pub Option<&'a [u8]>);

impl Serialize for JsonBytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            None => s.serialize_none(),
            Some(b) => match std::str::from_utf8(b) {
                Ok(text) => s.serialize_str(text),
                Err(_) => {
                    let mut m = s.serialize_map(Some(1))?;
                    m.serialize_entry("base64", &base64_encode(b))?;
                    m.end()
                }
            },
        }
    }
}

/// Headers for JSON output: an object in record order, repeated names repeated.
pub struct JsonHeaders<'a>(pub &'a [(String, Option<Vec<u8>>)]);

impl Serialize for JsonHeaders<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, &JsonBytes(v.as_deref()))?;
        }
        m.end()
    }
}

/// One line of `spate consume --format json`.
#[derive(Serialize)]
pub struct ConsumedJson<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch, `None` if the record has none.
    pub timestamp: Option<i64>,
    pub key: JsonBytes<'a>,
    pub value: JsonBytes<'a>,
    pub headers: JsonHeaders<'a>,
}

/// Bytes as text: unchanged when UTF-8, else with each invalid byte as `\xNN`.
pub fn text(b: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(b) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(b.len() + 8);
    for chunk in b.utf8_chunks() {
        out.push_str(chunk.valid());
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    Cow::Owned(out)
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648, section 4).
pub fn base64_encode(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for chunk in b.chunks(3) {
        let n = (chunk[0] as u32) << 16 | (*chunk.get(1).unwrap_or(&0) as u32) << 8 | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding optional); `None` if `s` is not base64.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = BASE64.iter().position(|&x| x == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // A lone trailing character carries fewer than 8 bits: not base64.
    if bits >= 6 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for (plain, coded) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64_encode(plain.as_bytes()), coded);
            assert_eq!(base64_decode(coded).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64_decode(&base64_encode(&all)).unwrap(), all);
        assert_eq!(base64_decode("Zm9"), Some(b"fo".to_vec()));
        assert!(base64_decode("Z").is_none());
        assert!(base64_decode("Zm9v!").is_none());
    }

    #[test]
    fn text_lines_split_at_the_first_separator() {
        let r = parse_text(b"k1:v:1", Some(b":"));
        assert_eq!((r.key.as_deref(), r.value.as_deref()), (Some(&b"k1"[..]), Some(&b"v:1"[..])));
        let r = parse_text(b"no key", Some(b"::"));
        assert_eq!((r.key, r.value.as_deref()), (None, Some(&b"no key"[..])));
        let r = parse_text(b"a::b", Some(b"::"));
        assert_eq!((r.key.as_deref(), r.value.as_deref()), (Some(&b"a"[..]), Some(&b"b"[..])));
        assert_eq!(parse_text(b"", None).value, Some(Vec::new()));
    }

    #[test]
    fn json_lines_read_text_base64_and_ordered_headers() {
        let r = parse_json(br#"{"key":"k","value":{"base64":"/w=="},"headers":{"b":"1","a":null,"b":"2"},"partition":2,"topic":"ignored"}"#)
            .unwrap();
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.value.as_deref(), Some(&[0xff][..]));
        assert_eq!(r.headers, vec![("b".into(), Some(b"1".to_vec())), ("a".into(), None), ("b".into(), Some(b"2".to_vec()))]);
        assert_eq!(r.partition, Some(2));
        let r = parse_json(br#"{"value":null}"#).unwrap();
        assert_eq!(r, Record::default());
        assert!(parse_json(b"{\"value\":").is_err());
        assert!(parse_json(br#"{"value":{"base64":"!"}}"#).is_err());
        assert!(parse_json(br#"{"partition":-1}"#).is_err());
    }

    #[test]
    fn json_output_reads_back() {
        let headers: Headers = vec![("h".into(), Some(vec![0xc3])), ("h".into(), Some(b"x".to_vec()))];
        let line = serde_json::to_string(&ConsumedJson {
            topic: "t",
            partition: 1,
            offset: 7,
            timestamp: Some(5),
            key: JsonBytes(None),
            value: JsonBytes(Some(&[0xff, b'a'])),
            headers: JsonHeaders(&headers),
        })
        .unwrap();
        assert_eq!(
            line,
            r#"{"topic":"t","partition":1,"offset":7,"timestamp":5,"key":null,"value":{"base64":"/2E="},"headers":{"h":{"base64":"ww=="},"h":"x"}}"#
        );
        let back = parse_json(line.as_bytes()).unwrap();
        assert_eq!((back.key, back.value, back.headers, back.partition), (None, Some(vec![0xff, b'a']), headers, Some(1)));
    }

    #[test]
    fn text_escapes_only_invalid_bytes() {
        assert_eq!(text("héllo".as_bytes()), "héllo");
        assert_eq!(text(&[b'a', 0xff, b'b']), "a\\xffb");
    }
}
