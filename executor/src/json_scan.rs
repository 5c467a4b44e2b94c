//! A JSON scanner for the decode fast path (`decode.rs`): reads a record's
//! top-level object field by field straight from its bytes, without a serde
//! visitor, and without an allocation for a string that holds no escape.
//!
//! It only takes what it reads exactly as serde_json would, and gives up
//! ([`GiveUp`]) on anything else: bytes that are not JSON, nesting deeper
//! than [`MAX_DEPTH`], `-0`, integers beyond `i64`, decimals whose value
//! serde_json computes differently from a correctly rounded parse (more
//! than 15 digits, or a power of ten beyond 10^22), lone surrogates. The
//! serde visitor, then the general path, read such records, so this
//! scanner changes how fast a record is read, never what it becomes.

use std::borrow::Cow;

/// The scanner cannot read these bytes the way serde_json would.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct GiveUp;

type Scan<T> = Result<T, GiveUp>;

/// Containers nested deeper than this inside a skipped value make the
/// scanner give up (serde_json's own limit is 128).
const MAX_DEPTH: usize = 64;

/// A value read from the record.
#[derive(Debug, PartialEq)]
pub(crate) enum Value<'a> {
    Null,
    Bool(bool),
    /// An integer literal within `i64`.
    Int(i64),
    /// A literal with a fraction or an exponent.
    Float(f64),
    Str(Cow<'a, str>),
    /// An object or an array, checked and skipped.
    Nested,
}

/// A cursor over one JSON document whose top level is an object.
pub(crate) struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
    /// A field of the top-level object was read.
    started: bool,
}

impl<'a> Scanner<'a> {
    /// Opens the document's top-level object.
    pub(crate) fn object(bytes: &'a [u8]) -> Scan<Scanner<'a>> {
        let mut s = Scanner {
            bytes,
            at: 0,
            started: false,
        };
        s.whitespace();
        s.expect(b'{')?;
        Ok(s)
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Scan<()> {
        if self.peek() != Some(byte) {
            return Err(GiveUp);
        }
        self.at += 1;
        Ok(())
    }

    /// The name of the top-level object's next field, positioned at its
    /// value; `None` at the object's end, when only whitespace follows it.
    pub(crate) fn next_key(&mut self) -> Scan<Option<Cow<'a, str>>> {
        self.whitespace();
        match self.peek() {
            Some(b'}') => return self.end(),
            Some(b',') if self.started => {
                self.at += 1;
                self.whitespace();
            }
            _ if !self.started => {}
            _ => return Err(GiveUp),
        }
        if self.peek() != Some(b'"') {
            return Err(GiveUp);
        }
        self.started = true;
        let key = self.string()?;
        self.whitespace();
        self.expect(b':')?;
        self.whitespace();
        Ok(Some(key))
    }

    fn end(&mut self) -> Scan<Option<Cow<'a, str>>> {
        self.at += 1;
        self.whitespace();
        if self.at != self.bytes.len() {
            return Err(GiveUp);
        }
        Ok(None)
    }

    /// The value at the cursor (a field's, after [`Scanner::next_key`]).
    pub(crate) fn value(&mut self) -> Scan<Value<'a>> {
        match self.peek().ok_or(GiveUp)? {
            b'"' => Ok(Value::Str(self.string()?)),
            b'n' => self.literal(b"null", Value::Null),
            b't' => self.literal(b"true", Value::Bool(true)),
            b'f' => self.literal(b"false", Value::Bool(false)),
            b'-' | b'0'..=b'9' => self.number(),
            b'{' | b'[' => {
                self.skip_nested(0)?;
                Ok(Value::Nested)
            }
            _ => Err(GiveUp),
        }
    }

    /// Checks and skips the value at the cursor.
    pub(crate) fn skip_value(&mut self) -> Scan<()> {
        match self.peek().ok_or(GiveUp)? {
            b'{' | b'[' => self.skip_nested(0),
            b'-' | b'0'..=b'9' => {
                // serde_json rejects a number beyond f64's range.
                let (_, shape) = self.number_text()?;
                let huge = shape.int_digits + shape.frac_digits > 300
                    || shape.exponent.is_some_and(|e| !(-300..=300).contains(&e));
                if huge {
                    return Err(GiveUp);
                }
                Ok(())
            }
            _ => self.value().map(|_| ()),
        }
    }

    fn literal(&mut self, word: &[u8], value: Value<'a>) -> Scan<Value<'a>> {
        if !self.bytes[self.at..].starts_with(word) {
            return Err(GiveUp);
        }
        self.at += word.len();
        Ok(value)
    }

    /// An object or array at the cursor, `depth` containers deep.
    fn skip_nested(&mut self, depth: usize) -> Scan<()> {
        if depth == MAX_DEPTH {
            return Err(GiveUp);
        }
        let close = match self.peek() {
            Some(b'{') => b'}',
            Some(b'[') => b']',
            _ => return Err(GiveUp),
        };
        self.at += 1;
        self.whitespace();
        if self.peek() == Some(close) {
            self.at += 1;
            return Ok(());
        }
        loop {
            if close == b'}' {
                if self.peek() != Some(b'"') {
                    return Err(GiveUp);
                }
                self.string()?;
                self.whitespace();
                self.expect(b':')?;
                self.whitespace();
            }
            match self.peek().ok_or(GiveUp)? {
                b'{' | b'[' => self.skip_nested(depth + 1)?,
                _ => self.skip_value()?,
            }
            self.whitespace();
            match self.peek() {
                Some(b',') => {
                    self.at += 1;
                    self.whitespace();
                }
                Some(b) if b == close => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(GiveUp),
            }
        }
    }

    /// A string at the cursor (on its opening quote), borrowed from the
    /// bytes unless it holds an escape.
    fn string(&mut self) -> Scan<Cow<'a, str>> {
        self.at += 1;
        let rest = &self.bytes[self.at..];
        let end = memchr::memchr2(b'"', b'\\', rest).ok_or(GiveUp)?;
        let run = &rest[..end];
        // Not an early exit: the loop vectorizes.
        if run.iter().fold(false, |control, b| control | (*b < 0x20)) {
            return Err(GiveUp);
        }
        let s = std::str::from_utf8(run).map_err(|_| GiveUp)?;
        self.at += end;
        if rest[end] == b'"' {
            self.at += 1;
            return Ok(Cow::Borrowed(s));
        }
        let mut owned = String::from(s);
        self.escaped(&mut owned).map(|()| Cow::Owned(owned))
    }

    /// The rest of a string from its first escape, appended to `out`.
    fn escaped(&mut self, out: &mut String) -> Scan<()> {
        let bytes = self.bytes;
        let mut run = self.at;
        while let Some(&b) = bytes.get(self.at) {
            match b {
                b'"' => {
                    out.push_str(std::str::from_utf8(&bytes[run..self.at]).map_err(|_| GiveUp)?);
                    self.at += 1;
                    return Ok(());
                }
                b'\\' => {
                    out.push_str(std::str::from_utf8(&bytes[run..self.at]).map_err(|_| GiveUp)?);
                    self.at += 1;
                    let c = match self.peek().ok_or(GiveUp)? {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            self.at += 1;
                            let high = self.hex4()?;
                            let c = match high {
                                0xD800..=0xDBFF => {
                                    if !bytes[self.at..].starts_with(b"\\u") {
                                        return Err(GiveUp);
                                    }
                                    self.at += 2;
                                    let low = self.hex4()?;
                                    if !(0xDC00..=0xDFFF).contains(&low) {
                                        return Err(GiveUp);
                                    }
                                    0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                                }
                                0xDC00..=0xDFFF => return Err(GiveUp),
                                c => c,
                            };
                            out.push(char::from_u32(c).ok_or(GiveUp)?);
                            run = self.at;
                            continue;
                        }
                        _ => return Err(GiveUp),
                    };
                    out.push(c);
                    self.at += 1;
                    run = self.at;
                }
                0..=0x1f => return Err(GiveUp),
                _ => self.at += 1,
            }
        }
        Err(GiveUp)
    }

    fn hex4(&mut self) -> Scan<u32> {
        let digits = self.bytes.get(self.at..self.at + 4).ok_or(GiveUp)?;
        let mut v = 0;
        for d in digits {
            v = v * 16 + (*d as char).to_digit(16).ok_or(GiveUp)?;
        }
        self.at += 4;
        Ok(v)
    }

    /// A number's text at the cursor, by JSON's grammar, and whether it
    /// has a fraction or an exponent.
    fn number_text(&mut self) -> Scan<(&'a str, NumberShape)> {
        let bytes = self.bytes;
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        let digits = |s: &mut Scanner| {
            let from = s.at;
            while let Some(b'0'..=b'9') = s.peek() {
                s.at += 1;
            }
            s.at - from
        };
        let int_start = self.at;
        match self.peek() {
            Some(b'0') => {
                self.at += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(GiveUp);
                }
            }
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return Err(GiveUp),
        }
        let mut shape = NumberShape {
            int_digits: self.at - int_start,
            frac_digits: 0,
            exponent: None,
        };
        if self.peek() == Some(b'.') {
            self.at += 1;
            shape.frac_digits = digits(self);
            if shape.frac_digits == 0 {
                return Err(GiveUp);
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            let negative = match self.peek() {
                Some(b'-') => {
                    self.at += 1;
                    true
                }
                Some(b'+') => {
                    self.at += 1;
                    false
                }
                _ => false,
            };
            let from = self.at;
            if digits(self) == 0 {
                return Err(GiveUp);
            }
            // Beyond 4 digits the value is out of any exact range anyway.
            let e: i32 = std::str::from_utf8(&bytes[from..self.at])
                .ok()
                .filter(|d| d.len() <= 4)
                .and_then(|d| d.parse().ok())
                .unwrap_or(i32::MAX);
            shape.exponent = Some(if negative { -e } else { e });
        }
        // Only ASCII was consumed.
        let text = std::str::from_utf8(&bytes[start..self.at]).map_err(|_| GiveUp)?;
        Ok((text, shape))
    }

    fn number(&mut self) -> Scan<Value<'a>> {
        let (text, shape) = self.number_text()?;
        if shape.frac_digits == 0 && shape.exponent.is_none() {
            // serde_json reads `-0` as a float, and integers beyond `i64`
            // as `u64` or floats: the serde visitor takes those.
            let v: i64 = text.parse().map_err(|_| GiveUp)?;
            if v == 0 && text.starts_with('-') {
                return Err(GiveUp);
            }
            return Ok(Value::Int(v));
        }
        // serde_json (without `float_roundtrip`) multiplies or divides the
        // digits as an integer by a power of ten: exact, hence the same as
        // a correctly rounded parse, while both are exact in an f64.
        let power = shape
            .exponent
            .unwrap_or(0)
            .saturating_sub(shape.frac_digits as i32);
        if shape.int_digits + shape.frac_digits > 15 || !(-22..=22).contains(&power) {
            return Err(GiveUp);
        }
        text.parse().map(Value::Float).map_err(|_| GiveUp)
    }
}

/// What a number literal is made of.
struct NumberShape {
    int_digits: usize,
    frac_digits: usize,
    exponent: Option<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field of `json`'s object, read as values.
    fn fields(json: &str) -> Scan<Vec<(String, Value<'_>)>> {
        let mut s = Scanner::object(json.as_bytes())?;
        let mut out = Vec::new();
        while let Some(k) = s.next_key()? {
            out.push((k.into_owned(), s.value()?));
        }
        Ok(out)
    }

    #[test]
    fn reads_each_kind_of_value() {
        let got = fields(
            r#" { "a": 1, "b" : -2.5e1, "c":"x\"y\u00e9\ud83d\ude00", "d": null, "e": true,
                 "f": [1, {"g": [false]}], "h": {} } "#,
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                ("a".into(), Value::Int(1)),
                ("b".into(), Value::Float(-25.0)),
                ("c".into(), Value::Str("x\"yé😀".into())),
                ("d".into(), Value::Null),
                ("e".into(), Value::Bool(true)),
                ("f".into(), Value::Nested),
                ("h".into(), Value::Nested),
            ]
        );
        assert_eq!(fields("{}").unwrap(), vec![]);
    }

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let got = fields(r#"{"k": "plain"}"#).unwrap();
        assert!(matches!(got[0].1, Value::Str(Cow::Borrowed("plain"))));
    }

    #[test]
    fn gives_up_on_what_serde_json_reads_otherwise_or_rejects() {
        for bad in [
            "",
            "[]",
            "{",
            r#"{"a": 1,}"#,
            r#"{"a" 1}"#,
            r#"{"a": 1} x"#,
            r#"{"a": 01}"#,
            r#"{"a": -0}"#,
            r#"{"a": 1.}"#,
            r#"{"a": .5}"#,
            r#"{"a": 1e}"#,
            r#"{"a": 9223372036854775808}"#,
            r#"{"a": 1.2345678901234567}"#,
            r#"{"a": 1e23}"#,
            r#"{"a": "\ud800"}"#,
            r#"{"a": "\x"}"#,
            "{\"a\": \"tab\there\"}",
            r#"{"a": tru}"#,
            r#"{"a": [1,]}"#,
            r#"{"a": {"b"}}"#,
            r#"{,"a": 1}"#,
        ] {
            assert_eq!(fields(bad).err(), Some(GiveUp), "{bad}");
        }
        let deep = format!("{{\"a\": {}{}}}", "[".repeat(100), "]".repeat(100));
        assert_eq!(fields(&deep).err(), Some(GiveUp));
        assert_eq!(
            fields("{\"a\": \"\u{e9}\"}").unwrap()[0].1,
            Value::Str("é".into())
        );
        let invalid_utf8 = b"{\"a\": \"\xff\"}";
        let mut s = Scanner::object(invalid_utf8).unwrap();
        s.next_key().unwrap();
        assert_eq!(s.value().err(), Some(GiveUp));
    }

    #[test]
    fn numbers_are_what_serde_json_makes_of_them() {
        for text in [
            "0",
            "-1",
            "9223372036854775807",
            "-9223372036854775808",
            "0.908",
            "-12.5",
            "1e3",
            "1E-3",
            "123456789012345",
            "12345678901.2345",
            "0.000001",
            "-0.0",
            "5e22",
        ] {
            let doc = format!("{{\"n\": {text}}}");
            let want: serde_json::Value = serde_json::from_str(&doc).unwrap();
            let got = fields(&doc).unwrap().remove(0).1;
            match got {
                Value::Int(v) => assert_eq!(want["n"].as_i64(), Some(v), "{text}"),
                Value::Float(v) => {
                    let w = want["n"].as_f64().unwrap();
                    assert_eq!(w.to_bits(), v.to_bits(), "{text}");
                    assert!(!want["n"].is_i64() && !want["n"].is_u64(), "{text}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
