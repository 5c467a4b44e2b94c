//! Serialization of keys and values: JSON, DELIMITED, KAFKA, NONE.
//!
//! Columns travel as [`Datum`]s; TIMESTAMP is milliseconds since the epoch.

use brook_planner::catalog::{Column, Format};
use brook_planner::types::SqlType;
use serde_json::Value as Json;

use crate::datum::Datum;
use crate::error::{ExecError, Result};

fn ser(msg: impl Into<String>) -> ExecError {
    ExecError::Serialization(msg.into())
}

/// Encodes the given columns (all key columns or all value columns) in a format.
/// Returns `None` when there is nothing to write (no columns, format NONE).
pub fn encode(format: Format, columns: &[&Column], values: &[&Datum]) -> Result<Option<Vec<u8>>> {
    if columns.is_empty() || format == Format::None {
        return Ok(None);
    }
    // A key whose columns are all NULL is written as no key at all.
    if is_key_like(columns) && values.iter().all(|v| v.is_null()) {
        return Ok(None);
    }
    match format {
        Format::Json => {
            let json = if columns.len() == 1 && is_key_like(columns) {
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
                .map(|v| delimited_field(v, delimiter))
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

/// Decodes bytes into one datum per column.
pub fn decode(format: Format, columns: &[&Column], bytes: Option<&[u8]>) -> Result<Vec<Datum>> {
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
                Json::Object(map) if !(columns.len() == 1 && is_key_like(columns)) => columns
                    .iter()
                    .map(|c| {
                        let v = map.get(&c.name).or_else(|| {
                            map.iter()
                                .find(|(k, _)| k.eq_ignore_ascii_case(&c.name))
                                .map(|(_, v)| v)
                        });
                        v.map_or(Ok(Datum::Null), |v| json_to_datum(v, &c.ty, &c.name))
                    })
                    .collect(),
                other if columns.len() == 1 => {
                    Ok(vec![json_to_datum(&other, &columns[0].ty, &columns[0].name)?])
                }
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

/// A value as JSON, as ksqlDB writes it: DECIMAL as a number, BYTES as
/// base64, DATE as days and TIME and TIMESTAMP as milliseconds, STRUCT as an
/// object of its fields, MAP as an object keyed by the keys' text.
pub fn datum_to_json(d: &Datum, ty: &SqlType) -> Json {
    match (d, ty) {
        (Datum::Null, _) => Json::Null,
        (Datum::Bool(b), _) => Json::Bool(*b),
        (Datum::Int(i), SqlType::Double) => float_json(*i as f64),
        (Datum::Int(i), _) => Json::from(*i),
        (Datum::Float(f), _) => float_json(*f),
        (Datum::Str(s), _) => Json::String(s.clone()),
        (Datum::Decimal(..), _) => float_json(d.as_f64().unwrap_or(0.0)),
        (Datum::Bytes(b), _) => Json::String(B64.encode(b)),
        (Datum::List(items), SqlType::Array(e)) => {
            Json::Array(items.iter().map(|i| datum_to_json(i, e)).collect())
        }
        (Datum::List(items), _) => Json::Array(
            items
                .iter()
                .map(|i| datum_to_json(i, &SqlType::String))
                .collect(),
        ),
        (Datum::Map(entries), ty) => {
            let (kt, vt) = match ty {
                SqlType::Map(k, v) => (k.as_ref(), v.as_ref()),
                _ => (&SqlType::String, &SqlType::String),
            };
            let mut map = serde_json::Map::with_capacity(entries.len());
            for (k, v) in entries {
                let key = match datum_to_json(k, kt) {
                    Json::String(s) => s,
                    Json::Null => "null".to_string(),
                    other => other.to_string(),
                };
                map.insert(key, datum_to_json(v, vt));
            }
            Json::Object(map)
        }
        (Datum::Struct(values), SqlType::Struct(fields)) => {
            let mut map = serde_json::Map::with_capacity(fields.len());
            for ((name, t), v) in fields.iter().zip(values) {
                map.insert(name.clone(), datum_to_json(v, t));
            }
            Json::Object(map)
        }
        (Datum::Struct(values), _) => Json::Array(
            values
                .iter()
                .map(|v| datum_to_json(v, &SqlType::String))
                .collect(),
        ),
    }
}

fn float_json(f: f64) -> Json {
    serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number)
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// Reads a JSON value as a value of type `ty` (for column `name`), with
/// ksqlDB's leniency: numbers from strings, strings from anything.
pub fn json_to_datum(v: &Json, ty: &SqlType, name: &str) -> Result<Datum> {
    let bad = || ser(format!("cannot read {v} as {ty} for column {name}"));
    Ok(match (v, ty) {
        (Json::Null, _) => Datum::Null,
        (Json::Bool(b), SqlType::Boolean) => Datum::Bool(*b),
        (
            Json::Number(n),
            SqlType::Int | SqlType::Bigint | SqlType::Timestamp | SqlType::Date | SqlType::Time,
        ) => {
            let i = n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
                .ok_or_else(bad)?;
            if matches!(ty, SqlType::Int | SqlType::Date | SqlType::Time)
                && i32::try_from(i).is_err()
            {
                return Err(bad());
            }
            Datum::Int(i)
        }
        (Json::Number(n), SqlType::Double) => Datum::Float(n.as_f64().ok_or_else(bad)?),
        (Json::Number(n), SqlType::Decimal { precision, scale }) => {
            parse_decimal(&n.to_string(), *precision, *scale).ok_or_else(bad)?
        }
        (Json::String(s), SqlType::String) => Datum::Str(s.clone()),
        (Json::Array(items), SqlType::Array(e)) => Datum::List(
            items
                .iter()
                .map(|i| json_to_datum(i, e, name))
                .collect::<Result<_>>()?,
        ),
        (Json::Object(map), SqlType::Map(k, val)) => Datum::Map(
            map.iter()
                .map(|(key, value)| {
                    Ok((
                        parse_text(key, k, name)?,
                        json_to_datum(value, val, name)?,
                    ))
                })
                .collect::<Result<_>>()?,
        ),
        (Json::Object(map), SqlType::Struct(fields)) => Datum::Struct(
            fields
                .iter()
                .map(|(f, t)| {
                    let v = map.get(f).or_else(|| {
                        map.iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case(f))
                            .map(|(_, v)| v)
                    });
                    v.map_or(Ok(Datum::Null), |v| json_to_datum(v, t, name))
                })
                .collect::<Result<_>>()?,
        ),
        (Json::String(s), t) if t.is_primitive() => parse_text(s, t, name)?,
        (other, SqlType::String) => Datum::Str(other.to_string()),
        _ => return Err(bad()),
    })
}

/// Parses decimal text (`-12.345`, `1E+3`) to an unscaled value at `scale`,
/// rounding half away from zero; `None` if it is not a number or needs more
/// than `precision` digits.
pub fn parse_decimal(text: &str, precision: u8, scale: u8) -> Option<Datum> {
    let t = text.trim();
    let (neg, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (mantissa, exp) = match digits.find(['e', 'E']) {
        Some(i) => (&digits[..i], digits[i + 1..].parse::<i32>().ok()?),
        None => (digits, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int_part.is_empty() && frac_part.is_empty()
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let all: String = format!("{int_part}{frac_part}");
    let all = all.trim_start_matches('0');
    let unscaled: i128 = if all.is_empty() { 0 } else { all.parse().ok()? };
    // value = unscaled * 10^(exp - frac_len)
    let cur_scale = frac_part.len() as i32 - exp;
    let v = if cur_scale >= 0 {
        crate::datum::rescale(unscaled, u8::try_from(cur_scale.min(76)).ok()?, scale)?
    } else {
        unscaled
            .checked_mul(crate::datum::pow10(u32::try_from(-cur_scale).ok()?))?
            .checked_mul(crate::datum::pow10(u32::from(scale)))?
    };
    if v.unsigned_abs() >= crate::datum::pow10(u32::from(precision)) as u128 {
        return None;
    }
    Some(Datum::Decimal(if neg { -v } else { v }, scale))
}

/// Days since the epoch of a `yyyy-MM-dd` date.
fn parse_date(s: &str) -> Option<i64> {
    let v = datafusion::common::ScalarValue::Utf8(Some(s.to_string()))
        .cast_to(&datafusion::arrow::datatypes::DataType::Date32)
        .ok()?;
    match v {
        datafusion::common::ScalarValue::Date32(Some(d)) => Some(i64::from(d)),
        _ => None,
    }
}

/// Milliseconds since midnight of a `HH:mm[:ss[.SSS]]` time.
fn parse_time(s: &str) -> Option<i64> {
    let mut parts = s.split(':');
    let h: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let sec: f64 = parts.next().map_or(Some(0.0), |p| p.parse().ok())?;
    if parts.next().is_some() || !(0..24).contains(&h) || !(0..60).contains(&m) || sec >= 60.0 {
        return None;
    }
    Some(h * 3_600_000 + m * 60_000 + (sec * 1000.0).round() as i64)
}

/// Parses a textual field as a value of type `ty` (for column `name`).
pub fn parse_text(s: &str, ty: &SqlType, name: &str) -> Result<Datum> {
    let bad = || ser(format!("cannot read '{s}' as {ty} for column {name}"));
    let t = s.trim();
    Ok(match ty {
        SqlType::String | SqlType::Custom(_) => Datum::Str(s.to_string()),
        SqlType::Boolean => match t.to_ascii_lowercase().as_str() {
            "true" => Datum::Bool(true),
            "false" => Datum::Bool(false),
            _ => return Err(bad()),
        },
        SqlType::Int => Datum::Int(i64::from(t.parse::<i32>().map_err(|_| bad())?)),
        SqlType::Bigint => Datum::Int(t.parse::<i64>().map_err(|_| bad())?),
        SqlType::Double => Datum::Float(t.parse::<f64>().map_err(|_| bad())?),
        SqlType::Decimal { precision, scale } => {
            parse_decimal(t, *precision, *scale).ok_or_else(bad)?
        }
        SqlType::Bytes => Datum::Bytes(B64.decode(t).map_err(|_| bad())?),
        SqlType::Date => match t.parse::<i64>() {
            Ok(days) => Datum::Int(days),
            Err(_) => Datum::Int(parse_date(t).ok_or_else(bad)?),
        },
        SqlType::Time => match t.parse::<i64>() {
            Ok(ms) => Datum::Int(ms),
            Err(_) => Datum::Int(parse_time(t).ok_or_else(bad)?),
        },
        SqlType::Timestamp => match t.parse::<i64>() {
            Ok(ms) => Datum::Int(ms),
            Err(_) => {
                let v = datafusion::common::ScalarValue::Utf8(Some(t.to_string()))
                    .cast_to(&SqlType::Timestamp.arrow())
                    .map_err(|_| bad())?;
                Datum::from_scalar(&v)?
            }
        },
        SqlType::Array(_) | SqlType::Map(..) | SqlType::Struct(_) => {
            let json: Json = serde_json::from_str(t).map_err(|_| bad())?;
            json_to_datum(&json, ty, name)?
        }
    })
}

fn delimited_field(d: &Datum, delimiter: char) -> Result<String> {
    Ok(match d {
        Datum::Null => String::new(),
        Datum::Bool(b) => b.to_string(),
        Datum::Int(i) => i.to_string(),
        // Doubles keep a fractional part, as Java prints them (0.0, not 0).
        Datum::Float(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.1}"),
        Datum::Float(f) => f.to_string(),
        Datum::Decimal(v, s) => decimal_text(*v, *s),
        Datum::Bytes(b) => B64.encode(b),
        Datum::Str(s) if s.contains([delimiter, '"', '\n']) || s.is_empty() => {
            format!("\"{}\"", s.replace('"', "\"\""))
        }
        Datum::Str(s) => s.clone(),
        Datum::List(_) | Datum::Map(_) | Datum::Struct(_) => {
            return Err(ser(
                "The 'DELIMITED' format does not support types ARRAY, MAP or STRUCT",
            ))
        }
    })
}

/// A decimal as text with exactly `scale` fractional digits.
pub fn decimal_text(v: i128, scale: u8) -> String {
    let digits = v.unsigned_abs().to_string();
    let sign = if v < 0 { "-" } else { "" };
    let scale = usize::from(scale);
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
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
        Column {
            name: name.into(),
            ty,
            key,
        }
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
            let bytes = encode(f, &refs, &vrefs).unwrap();
            assert_eq!(decode(f, &refs, bytes.as_deref()).unwrap(), vals, "{f:?}");
        }
        let key = [col("K", SqlType::Bigint, true)];
        let krefs: Vec<&Column> = key.iter().collect();
        let bytes = encode(Format::Kafka, &krefs, &[&Datum::Int(-7)]).unwrap();
        assert_eq!(bytes.as_deref(), Some(&(-7i64).to_be_bytes()[..]));
        assert_eq!(
            decode(Format::Kafka, &krefs, bytes.as_deref()).unwrap(),
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
        )
        .unwrap();
        assert_eq!(got, vec![Datum::Int(5), Datum::Str("12".into())]);
        assert!(decode(Format::Json, &refs, Some(b"{not json")).is_err());
        assert!(decode(Format::Json, &refs, Some(br#"{"USER_ID": 1e20}"#)).is_err());
    }
}
