//! Serialization of keys and values: JSON, DELIMITED, KAFKA, NONE.
//!
//! Columns travel as [`Datum`]s; TIMESTAMP is milliseconds since the epoch.

use brook_planner::catalog::{Column, Format};
use brook_planner::types::SqlType;
use serde_json::Value as Json;

use crate::error::{ExecError, Result};
use base64::Engine as _;
pub use brook_planner::datum::datum_to_json;
use brook_planner::datum::{self, decimal_text, Datum, B64};

fn ser(msg: impl Into<String>) -> ExecError {
    ExecError::Serialization(msg.into())
}

/// Encodes the given columns (all key columns or all value columns) in a format.
/// Returns `None` when there is nothing to write (no columns, format NONE).
/// `unwrapped`: a single value column is written as a bare JSON value
/// (`WRAP_SINGLE_VALUE=false`); a single key column always is.
pub fn encode(
    format: Format,
    columns: &[&Column],
    values: &[&Datum],
    unwrapped: bool,
) -> Result<Option<Vec<u8>>> {
    if columns.is_empty() || format == Format::None {
        return Ok(None);
    }
    // A single key column that is NULL is written as no key at all.
    if is_key_like(columns) && columns.len() == 1 && values[0].is_null() {
        return Ok(None);
    }
    match format {
        Format::Json => {
            let json = if columns.len() == 1 && (unwrapped || is_key_like(columns)) {
                datum_to_json(values[0], &columns[0].ty)
            } else {
                let mut map = serde_json::Map::with_capacity(columns.len());
                for (c, v) in columns.iter().zip(values) {
                    map.insert(c.name.clone(), datum_to_json(v, &c.ty));
                }
                Json::Object(map)
            };
            Ok(Some(
                serde_json::to_vec(&json).map_err(|e| ser(e.to_string()))?,
            ))
        }
        Format::Delimited(delimiter) => {
            if values.len() == 1 && values[0].is_null() {
                return Ok(None); // a lone NULL is no value at all
            }
            let fields: Vec<String> = values
                .iter()
                .enumerate()
                .map(|(i, v)| delimited_field(v, delimiter, i == 0))
                .collect::<Result<_>>()?;
            Ok(Some(fields.join(&delimiter.to_string()).into_bytes()))
        }
        Format::Kafka => {
            let [c] = columns else {
                return Err(ser("the KAFKA format supports a single column only"));
            };
            kafka_encode(&c.ty, values[0])
        }
        Format::None => Ok(None),
    }
}

/// Key columns in JSON are written unwrapped when there is one (ksqlDB).
fn is_key_like(columns: &[&Column]) -> bool {
    columns.iter().all(|c| c.key)
}

/// Decodes bytes into one datum per column (`unwrapped` as in [`encode`]).
pub fn decode(
    format: Format,
    columns: &[&Column],
    bytes: Option<&[u8]>,
    unwrapped: bool,
) -> Result<Vec<Datum>> {
    if columns.is_empty() {
        return Ok(Vec::new());
    }
    let Some(bytes) = bytes else {
        return Ok(vec![Datum::Null; columns.len()]);
    };
    match format {
        Format::Json => {
            let json: Json =
                serde_json::from_slice(bytes).map_err(|e| ser(format!("invalid JSON: {e}")))?;
            match json {
                Json::Object(map)
                    if !(columns.len() == 1 && (unwrapped || is_key_like(columns))) =>
                {
                    columns
                        .iter()
                        .map(|c| {
                            let v = map.get(&c.name).or_else(|| {
                                map.iter()
                                    .find(|(k, _)| k.eq_ignore_ascii_case(&c.name))
                                    .map(|(_, v)| v)
                            });
                            v.map_or(Ok(Datum::Null), |v| json_to_datum(v, &c.ty, &c.name))
                        })
                        .collect()
                }
                other if columns.len() == 1 => Ok(vec![json_to_datum(
                    &other,
                    &columns[0].ty,
                    &columns[0].name,
                )?]),
                _ => Err(ser("expected a JSON object")),
            }
        }
        Format::Delimited(delimiter) => {
            let text =
                std::str::from_utf8(bytes).map_err(|_| ser("DELIMITED value is not UTF-8"))?;
            let fields = split_delimited(text, delimiter);
            if fields.len() != columns.len() {
                return Err(ser(format!(
                    "expected {} DELIMITED fields, found {}",
                    columns.len(),
                    fields.len()
                )));
            }
            columns
                .iter()
                .zip(fields)
                .map(|(c, f)| match f {
                    None => Ok(Datum::Null),
                    Some(s) => parse_text(&s, &c.ty, &c.name),
                })
                .collect()
        }
        Format::Kafka => {
            let [c] = columns else {
                return Err(ser("the KAFKA format supports a single column only"));
            };
            Ok(vec![kafka_decode(&c.ty, bytes)?])
        }
        Format::None => Ok(vec![Datum::Null; columns.len()]),
    }
}

/// [`datum::json_to_datum`], failing as a serialization error.
fn json_to_datum(v: &Json, ty: &SqlType, name: &str) -> Result<Datum> {
    datum::json_to_datum(v, ty, name).map_err(|e| ser(e.to_string()))
}

/// [`datum::parse_text`], failing as a serialization error.
fn parse_text(s: &str, ty: &SqlType, name: &str) -> Result<Datum> {
    datum::parse_text(s, ty, name).map_err(|e| ser(e.to_string()))
}

/// One DELIMITED field, quoted where Commons CSV's minimal quoting (which
/// ksqlDB writes with) quotes: text holding the delimiter, a quote or a
/// line break, empty text, a field starting with a character up to `#` or
/// ending with one up to a space, and a record's first field when it does
/// not start with a letter or digit.
fn delimited_field(d: &Datum, delimiter: char, first: bool) -> Result<String> {
    let text = delimited_text(d)?;
    if d.is_null() {
        return Ok(text);
    }
    let quote = match (text.chars().next(), text.chars().last()) {
        (Some(c), Some(last)) => {
            (first && !c.is_ascii_alphanumeric())
                || c <= '#'
                || last <= ' '
                || text.contains([delimiter, '"', '\n', '\r'])
        }
        _ => true, // empty text
    };
    Ok(if quote {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    })
}

fn delimited_text(d: &Datum) -> Result<String> {
    Ok(match d {
        Datum::Null => String::new(),
        Datum::Bool(b) => b.to_string(),
        Datum::Int(i) => i.to_string(),
        // Doubles keep a fractional part, as Java prints them (0.0, not 0).
        Datum::Float(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.1}"),
        Datum::Float(f) => f.to_string(),
        Datum::Decimal(v, s) => decimal_text(*v, *s),
        Datum::Bytes(b) => B64.encode(b),
        Datum::Str(s) => s.clone(),
        Datum::List(_) | Datum::Map(_) | Datum::Struct(_) => {
            return Err(ser(
                "The 'DELIMITED' format does not support types ARRAY, MAP or STRUCT",
            ))
        }
    })
}

/// Splits a CSV line; an empty unquoted field is NULL.
fn split_delimited(text: &str, delimiter: char) -> Vec<Option<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' if quoted => quoted = false,
            '"' if cur.is_empty() => {
                quoted = true;
                was_quoted = true;
            }
            c if c == delimiter && !quoted => {
                out.push(if cur.is_empty() && !was_quoted {
                    None
                } else {
                    Some(std::mem::take(&mut cur))
                });
                was_quoted = false;
            }
            c => cur.push(c),
        }
    }
    out.push(if cur.is_empty() && !was_quoted {
        None
    } else {
        Some(cur)
    });
    out
}

fn kafka_encode(ty: &SqlType, d: &Datum) -> Result<Option<Vec<u8>>> {
    Ok(match (ty, d) {
        (_, Datum::Null) => None,
        (SqlType::Int, Datum::Int(i)) => Some(
            i32::try_from(*i)
                .map_err(|_| ser("INT out of range"))?
                .to_be_bytes()
                .to_vec(),
        ),
        (SqlType::Bigint | SqlType::Timestamp, Datum::Int(i)) => Some(i.to_be_bytes().to_vec()),
        (SqlType::Double, Datum::Float(f)) => Some(f.to_be_bytes().to_vec()),
        (SqlType::Double, Datum::Int(i)) => Some((*i as f64).to_be_bytes().to_vec()),
        (SqlType::String, Datum::Str(s)) => Some(s.as_bytes().to_vec()),
        (SqlType::Bytes, Datum::Bytes(b)) => Some(b.clone()),
        (ty, _) => return Err(ser(format!("the KAFKA format does not support {ty}"))),
    })
}

fn kafka_decode(ty: &SqlType, b: &[u8]) -> Result<Datum> {
    let size = |n: usize| {
        if b.len() == n {
            Ok(())
        } else {
            Err(ser(format!(
                "expected {n} bytes for KAFKA {ty}, found {}",
                b.len()
            )))
        }
    };
    Ok(match ty {
        SqlType::Int => {
            size(4)?;
            Datum::Int(i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]])))
        }
        SqlType::Bigint | SqlType::Timestamp => {
            size(8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            Datum::Int(i64::from_be_bytes(a))
        }
        SqlType::Double => {
            size(8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            Datum::Float(f64::from_be_bytes(a))
        }
        SqlType::String => {
            Datum::Str(String::from_utf8(b.to_vec()).map_err(|_| ser("KAFKA STRING is not UTF-8"))?)
        }
        SqlType::Bytes => Datum::Bytes(b.to_vec()),
        other => return Err(ser(format!("the KAFKA format does not support {other}"))),
    })
}

/// Serializes a JSON value (as test data and HTTP clients give it) for
/// the given columns: a JSON value is written as is, a DELIMITED one as its
/// text, a KAFKA one with the column's primitive serializer.
pub fn json_to_bytes(format: Format, columns: &[&Column], v: &Json) -> Result<Option<Vec<u8>>> {
    if v.is_null() {
        return Ok(None);
    }
    match format {
        Format::None => Ok(None),
        Format::Json => Ok(Some(serde_json::to_vec(v).map_err(|e| ser(e.to_string()))?)),
        Format::Delimited(_) => Ok(Some(match v {
            Json::String(s) => s.clone().into_bytes(),
            other => other.to_string().into_bytes(),
        })),
        Format::Kafka => {
            let [c] = columns else {
                return Err(ser("the KAFKA format supports a single column only"));
            };
            let d = match v {
                Json::String(s) if c.ty != SqlType::String => parse_text(s, &c.ty, &c.name)?,
                other => json_to_datum(other, &c.ty, &c.name)?,
            };
            kafka_encode(&c.ty, &d)
        }
    }
}

/// Deserializes bytes into a JSON value: JSON as written, DELIMITED as its
/// text, KAFKA as the column's scalar; `null` for no bytes.
pub fn bytes_to_json(format: Format, columns: &[&Column], bytes: Option<&[u8]>) -> Result<Json> {
    let Some(bytes) = bytes else {
        return Ok(Json::Null);
    };
    match format {
        Format::None => Ok(Json::Null),
        Format::Json => {
            serde_json::from_slice(bytes).map_err(|e| ser(format!("invalid JSON: {e}")))
        }
        Format::Delimited(_) => Ok(Json::String(String::from_utf8_lossy(bytes).into_owned())),
        Format::Kafka => {
            let [c] = columns else {
                return Err(ser("the KAFKA format supports a single column only"));
            };
            Ok(datum_to_json(&kafka_decode(&c.ty, bytes)?, &c.ty))
        }
    }
}

/// Stable partitioner: FNV-1a of the key bytes; null keys go to partition 0.
pub fn partition_for(key: Option<&[u8]>, partitions: u32) -> u32 {
    let Some(key) = key else { return 0 };
    let mut h: u32 = 0x811c_9dc5;
    for b in key {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: SqlType, key: bool) -> Column {
        Column::new(name, ty, key)
    }

    #[test]
    fn delimited_quotes_as_commons_csv_minimal_mode() {
        let field = |d: Datum, first: bool| delimited_field(&d, ',', first).expect("encodes");
        assert_eq!(field(Datum::Int(-10), true), "\"-10\"");
        assert_eq!(field(Datum::Int(-10), false), "-10");
        assert_eq!(field(Datum::Str("#x".into()), false), "\"#x\"");
        assert_eq!(field(Datum::Str("a,b".into()), false), "\"a,b\"");
        assert_eq!(
            field(Datum::Str("say \"hi\"".into()), false),
            "\"say \"\"hi\"\"\""
        );
        assert_eq!(field(Datum::Str("tail ".into()), false), "\"tail \"");
        assert_eq!(field(Datum::Str(String::new()), false), "\"\"");
        assert_eq!(field(Datum::Null, true), "");
        assert_eq!(field(Datum::Str("plain".into()), true), "plain");
    }

    #[test]
    fn formats_round_trip() {
        let cols = [
            col("A", SqlType::Int, false),
            col("B", SqlType::String, false),
            col("C", SqlType::Double, false),
        ];
        let refs: Vec<&Column> = cols.iter().collect();
        let vals = [Datum::Int(3), Datum::Str("x,\"y\"".into()), Datum::Null];
        let vrefs: Vec<&Datum> = vals.iter().collect();
        for f in [Format::Json, Format::Delimited(','), Format::Delimited('|')] {
            let bytes = encode(f, &refs, &vrefs, false).unwrap();
            assert_eq!(
                decode(f, &refs, bytes.as_deref(), false).unwrap(),
                vals,
                "{f:?}"
            );
        }
        let key = [col("K", SqlType::Bigint, true)];
        let krefs: Vec<&Column> = key.iter().collect();
        let bytes = encode(Format::Kafka, &krefs, &[&Datum::Int(-7)], false).unwrap();
        assert_eq!(bytes.as_deref(), Some(&(-7i64).to_be_bytes()[..]));
        assert_eq!(
            decode(Format::Kafka, &krefs, bytes.as_deref(), false).unwrap(),
            vec![Datum::Int(-7)]
        );
    }

    #[test]
    fn json_is_lenient_like_ksqldb() {
        let cols = [
            col("USER_ID", SqlType::Int, false),
            col("NAME", SqlType::String, false),
        ];
        let refs: Vec<&Column> = cols.iter().collect();
        let got = decode(
            Format::Json,
            &refs,
            Some(br#"{"user_id": "5", "Name": 12}"#),
            false,
        )
        .unwrap();
        assert_eq!(got, vec![Datum::Int(5), Datum::Str("12".into())]);
        assert!(decode(Format::Json, &refs, Some(b"{not json"), false).is_err());
        assert!(decode(Format::Json, &refs, Some(br#"{"USER_ID": 1e20}"#), false).is_err());
    }

    /// Bytes from a record are untrusted: whatever they are, decoding (and
    /// encoding what it gave) returns a value or an error, never a panic.
    mod hostile_bytes {
        use proptest::prelude::*;

        fn check(bytes: &[u8]) {
            crate::fuzz::record_decoders(bytes);
        }

        /// Text that looks like what the formats read: JSON punctuation,
        /// digits, quotes, delimiters, escapes, big exponents.
        fn near_miss() -> impl Strategy<Value = Vec<u8>> {
            proptest::collection::vec(
                prop_oneof![
                    Just("{".to_string()),
                    Just("}".to_string()),
                    Just("[".to_string()),
                    Just("]".to_string()),
                    Just(",".to_string()),
                    Just(":".to_string()),
                    Just("\"".to_string()),
                    Just("\\u00".to_string()),
                    Just("\"X\"".to_string()),
                    Just("\"Y\"".to_string()),
                    Just("null".to_string()),
                    Just("true".to_string()),
                    Just("-".to_string()),
                    Just("1e999999".to_string()),
                    Just("99999999999999999999999999999999999999999".to_string()),
                    Just("0.000000000000000000000000000001".to_string()),
                    Just("|".to_string()),
                    Just("\u{feff}".to_string()),
                    "[0-9]{1,12}",
                    "[a-zA-Z ]{0,4}",
                ],
                0..40,
            )
            .prop_map(|parts| parts.concat().into_bytes())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
                check(&bytes);
            }

            #[test]
            fn near_miss_text_never_panics(bytes in near_miss()) {
                check(&bytes);
            }
        }
    }
}
