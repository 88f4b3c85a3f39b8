//! Encoders the emulator needs: form decoding and RFC 3986 encoding (`percent-encoding`), base64
//! (`base64`), Python-style JSON, and random identifiers (`uuid` layout, `rand` bytes).

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode, percent_encode};
use rand::Rng;
use serde_json::Value;
use std::fmt::Write as _;

/// Bytes RFC 3986 leaves unencoded are the unreserved ones: ALPHA, DIGIT, `-`, `.`, `_`, `~`.
/// Everything else (and every non-ASCII byte) is `%XX` with uppercase hex.
pub const RFC3986_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Decode one form-encoded query component: `+` is a space, `%XX` a byte. An invalid `%` sequence
/// is kept literally (as Python's `unquote_plus` does). Bytes, not text: the caller decides what
/// invalid UTF-8 means (`InvalidParameter`), so `form_urlencoded`'s lossy decoding does not fit.
pub fn form_decode(s: &str) -> Vec<u8> {
    // `+` first, so that an encoded `%2B` still decodes to `+`.
    let spaced: Vec<u8> = s
        .bytes()
        .map(|b| if b == b'+' { b' ' } else { b })
        .collect();
    percent_decode(&spaced).collect()
}

/// Split a raw query into decoded (name, value) byte pairs, keeping blank values.
pub fn parse_form(query: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (form_decode(k), form_decode(v)),
            None => (form_decode(p), Vec::new()),
        })
        .collect()
}

/// RFC 3986 percent-encoding: unreserved bytes stay, everything else is `%XX` uppercase.
pub fn rfc3986(bytes: &[u8]) -> String {
    percent_encode(bytes, RFC3986_ENCODE).to_string()
}

/// Decoding accepts padded or unpadded input and ignores non-zero trailing bits, as the emulator
/// always has.
const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// Standard base64 with padding.
pub fn b64_encode(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Decode standard or URL-safe base64, padded or not. `None` on any invalid character.
pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    STANDARD_LENIENT
        .decode(s)
        .or_else(|_| URL_SAFE_LENIENT.decode(s))
        .ok()
}

/// Serialise like Python's `json.dumps(v)` with default arguments: `", "` / `": "` separators and
/// `ensure_ascii` (A12).
pub fn python_json(v: &Value) -> String {
    let mut s = String::new();
    write_py(&mut s, v);
    s
}

fn write_py(s: &mut String, v: &Value) {
    match v {
        Value::Null => s.push_str("null"),
        Value::Bool(b) => s.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let _ = write!(s, "{n}");
        }
        Value::String(t) => write_py_str(s, t),
        Value::Array(items) => {
            s.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                write_py(s, item);
            }
            s.push(']');
        }
        Value::Object(map) => {
            s.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                write_py_str(s, k);
                s.push_str(": ");
                write_py(s, item);
            }
            s.push('}');
        }
    }
}

fn write_py_str(s: &mut String, t: &str) {
    s.push('"');
    for c in t.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            '\u{08}' => s.push_str("\\b"),
            '\u{0C}' => s.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7E => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(s, "\\u{unit:04x}");
                }
            }
            c => s.push(c),
        }
    }
    s.push('"');
}

/// Uppercase UUID v4, the form of Alibaba's `RequestId`. The random bytes come from the thread
/// RNG (no syscall per request); `uuid` sets the version and variant bits and formats it.
pub fn request_id() -> String {
    let id = uuid::Builder::from_random_bytes(rand::rng().random()).into_uuid();
    let mut buf = uuid::Uuid::encode_buffer();
    id.hyphenated().encode_upper(&mut buf).to_owned()
}

/// `n` random ASCII letters and digits.
pub fn random_alnum(n: usize) -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut r = rand::rng();
    let bytes: Vec<u8> = (0..n).map(|_| r.random()).collect();
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn form_decoding_treats_plus_as_space_and_keeps_bad_escapes() {
        assert_eq!(form_decode("ding+abc%2A~%2F%2B"), b"ding abc*~/+");
        assert_eq!(form_decode("%E4%B8%AD"), "中".as_bytes());
        assert_eq!(form_decode("100%"), b"100%");
        assert_eq!(form_decode("%4"), b"%4");
        assert_eq!(form_decode("%zz1"), b"%zz1");
        assert_eq!(form_decode("a%41"), b"aA");
    }

    #[test]
    fn rfc3986_examples_from_reference() {
        assert_eq!(rfc3986(b"ding abc*~/+"), "ding%20abc%2A~%2F%2B");
        assert_eq!(rfc3986("中=:\"{".as_bytes()), "%E4%B8%AD%3D%3A%22%7B");
    }

    #[test]
    fn rfc3986_encodes_exactly_the_reserved_bytes() {
        for b in 0..=255u8 {
            let unreserved = b.is_ascii_alphanumeric() || b"-._~".contains(&b);
            let want = if unreserved {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            };
            assert_eq!(rfc3986(&[b]), want, "byte {b}");
            // What we encode, form decoding gives back.
            assert_eq!(form_decode(&rfc3986(&[b])), [b], "byte {b}");
        }
        // Bytes, not text: invalid UTF-8 survives decoding for the caller to reject.
        assert_eq!(form_decode("%FF%FE"), [0xFF, 0xFE]);
    }

    #[test]
    fn base64_round_trips_and_rejects_garbage() {
        for data in [&b""[..], b"f", b"fo", b"foo", b"foob", b"\xfb\xff\xbfv1:x"] {
            assert_eq!(b64_decode(&b64_encode(data)).unwrap(), data);
        }
        assert_eq!(b64_encode(b"foob"), "Zm9vYg==");
        assert_eq!(b64_encode(&[0xFB, 0xFF, 0xBF]), "+/+/");
        // Unpadded and URL-safe forms are accepted too (JWT payloads).
        assert_eq!(b64_decode("Zm9vYg").unwrap(), b"foob");
        assert_eq!(b64_decode("-_-_").unwrap(), [0xFB, 0xFF, 0xBF]);
        assert!(b64_decode("a b").is_none());
        assert!(b64_decode("Z").is_none());
    }

    #[test]
    fn python_json_matches_json_dumps() {
        // Expected strings were produced with CPython 3.11 json.dumps.
        let v = json!({"b": [1, true, null], "a": "x\"\\\n中😀", "c": {}});
        assert_eq!(
            python_json(&v),
            r#"{"a": "x\"\\\n\u4e2d\ud83d\ude00", "b": [1, true, null], "c": {}}"#
        );
    }

    #[test]
    fn request_id_is_uppercase_uuid() {
        let id = request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id, id.to_uppercase());
        assert_eq!(id.matches('-').count(), 4);
        // Version 4, RFC 4122 variant.
        assert_eq!(&id[14..15], "4");
        assert!("89AB".contains(&id[19..20]), "{id}");
        assert_ne!(id, request_id());
    }
}
