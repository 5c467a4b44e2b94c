//! `Datum`: a serializable value used for group keys, accumulator state and
//! materialized rows, convertible to and from DataFusion's `ScalarValue`.
//!
//! A datum does not carry its SQL type: DATE is days and TIME milliseconds
//! in [`Datum::Int`], a STRUCT is its field values in order. Conversions
//! back to scalars take the Arrow type.

use std::cmp::Ordering;
use std::sync::Arc;

use base64::Engine as _;
use datafusion::arrow::array::{new_empty_array, Array, ArrayRef, MapArray, StructArray};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::types::SqlType;

use crate::error::{PlanError, Result};

/// A value with a total order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Datum {
    /// SQL NULL.
    Null,
    /// BOOLEAN
    Bool(bool),
    /// Any integer type, TIMESTAMP (ms), DATE (days), TIME (ms).
    Int(i64),
    /// DOUBLE (serialized by its bits, so NaN and infinities survive JSON)
    Float(#[serde(with = "f64_bits")] f64),
    /// STRING
    Str(String),
    /// DECIMAL: the unscaled value and the scale.
    Decimal(#[serde(with = "i128_text")] i128, u8),
    /// BYTES
    Bytes(Vec<u8>),
    /// ARRAY
    List(Vec<Datum>),
    /// MAP, entries in order.
    Map(Vec<(Datum, Datum)>),
    /// STRUCT: the field values in the type's order.
    Struct(Vec<Datum>),
}

fn unsupported(v: &ScalarValue) -> PlanError {
    PlanError::Unsupported(format!(
        "values of type {} are not supported yet",
        v.data_type()
    ))
}

/// The values of one row of a nested array.
fn array_values(a: &ArrayRef) -> Result<Vec<Datum>> {
    (0..a.len())
        .map(|i| Datum::from_scalar(&ScalarValue::try_from_array(a, i)?))
        .collect()
}

/// 10^n as i128 (n ≤ 38).
pub fn pow10(n: u32) -> i128 {
    10i128.pow(n.min(38))
}

/// Rescales an unscaled decimal, rounding half away from zero.
pub fn rescale(v: i128, from: u8, to: u8) -> Option<i128> {
    match to.cmp(&from) {
        Ordering::Equal => Some(v),
        Ordering::Greater => v.checked_mul(pow10(u32::from(to - from))),
        Ordering::Less => {
            let d = pow10(u32::from(from - to));
            let (q, r) = (v / d, v % d);
            Some(if r.abs() * 2 >= d { q + v.signum() } else { q })
        }
    }
}

impl Datum {
    /// Converts from a scalar.
    pub fn from_scalar(v: &ScalarValue) -> Result<Datum> {
        Ok(match v {
            v if v.is_null() => Datum::Null,
            ScalarValue::Boolean(Some(b)) => Datum::Bool(*b),
            ScalarValue::Int8(Some(i)) => Datum::Int(i64::from(*i)),
            ScalarValue::Int16(Some(i)) => Datum::Int(i64::from(*i)),
            ScalarValue::Int32(Some(i)) => Datum::Int(i64::from(*i)),
            ScalarValue::Int64(Some(i)) => Datum::Int(*i),
            ScalarValue::UInt8(Some(i)) => Datum::Int(i64::from(*i)),
            ScalarValue::UInt16(Some(i)) => Datum::Int(i64::from(*i)),
            ScalarValue::UInt32(Some(i)) => Datum::Int(i64::from(*i)),
            ScalarValue::UInt64(Some(i)) => Datum::Int(i64::try_from(*i).unwrap_or(i64::MAX)),
            ScalarValue::Float16(Some(f)) => Datum::Float(f64::from(*f)),
            ScalarValue::Float32(Some(f)) => Datum::Float(f64::from(*f)),
            ScalarValue::Float64(Some(f)) => Datum::Float(*f),
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)) => Datum::Str(s.clone()),
            ScalarValue::Binary(Some(b))
            | ScalarValue::LargeBinary(Some(b))
            | ScalarValue::BinaryView(Some(b))
            | ScalarValue::FixedSizeBinary(_, Some(b)) => Datum::Bytes(b.clone()),
            ScalarValue::Decimal128(Some(d), _, s) => {
                if *s >= 0 {
                    Datum::Decimal(*d, *s as u8)
                } else {
                    Datum::Decimal(d.saturating_mul(pow10(s.unsigned_abs().into())), 0)
                }
            }
            ScalarValue::TimestampMillisecond(Some(t), _) => Datum::Int(*t),
            ScalarValue::TimestampSecond(Some(t), _) => Datum::Int(t.saturating_mul(1000)),
            ScalarValue::TimestampMicrosecond(Some(t), _) => Datum::Int(t.div_euclid(1000)),
            ScalarValue::TimestampNanosecond(Some(t), _) => Datum::Int(t.div_euclid(1_000_000)),
            ScalarValue::Date32(Some(d)) => Datum::Int(i64::from(*d)),
            ScalarValue::Date64(Some(ms)) => Datum::Int(*ms),
            ScalarValue::Time32Millisecond(Some(t)) => Datum::Int(i64::from(*t)),
            ScalarValue::Time32Second(Some(t)) => Datum::Int(i64::from(*t) * 1000),
            ScalarValue::Time64Microsecond(Some(t)) => Datum::Int(t / 1000),
            ScalarValue::Time64Nanosecond(Some(t)) => Datum::Int(t / 1_000_000),
            ScalarValue::List(a) => Datum::List(array_values(&a.value(0))?),
            ScalarValue::LargeList(a) => Datum::List(array_values(&a.value(0))?),
            ScalarValue::FixedSizeList(a) => Datum::List(array_values(&a.value(0))?),
            ScalarValue::Map(m) => {
                let entries = m.value(0);
                let keys = array_values(entries.column(0))?;
                let values = array_values(entries.column(1))?;
                Datum::Map(keys.into_iter().zip(values).collect())
            }
            ScalarValue::Struct(s) => Datum::Struct(
                s.columns()
                    .iter()
                    .map(|c| Datum::from_scalar(&ScalarValue::try_from_array(c, 0)?))
                    .collect::<Result<_>>()?,
            ),
            ScalarValue::Dictionary(_, inner) => Datum::from_scalar(inner)?,
            other => return Err(unsupported(other)),
        })
    }

    /// The scalar this datum is most naturally (Int → BIGINT, …); nested
    /// values have no natural type.
    fn natural(&self) -> Option<ScalarValue> {
        Some(match self {
            Datum::Null => ScalarValue::Null,
            Datum::Bool(b) => ScalarValue::Boolean(Some(*b)),
            Datum::Int(i) => ScalarValue::Int64(Some(*i)),
            Datum::Float(f) => ScalarValue::Float64(Some(*f)),
            Datum::Str(s) => ScalarValue::Utf8(Some(s.clone())),
            Datum::Decimal(v, s) => ScalarValue::Decimal128(Some(*v), 38, *s as i8),
            Datum::Bytes(b) => ScalarValue::Binary(Some(b.clone())),
            Datum::List(_) | Datum::Map(_) | Datum::Struct(_) => return None,
        })
    }

    /// Converts to a scalar of the given type.
    pub fn to_scalar(&self, ty: &DataType) -> Result<ScalarValue> {
        let bad = || PlanError::Internal(format!("cannot convert {self:?} to {ty}"));
        Ok(match (self, ty) {
            (Datum::Null, ty) => ScalarValue::try_from(ty)?,
            (Datum::Bool(b), DataType::Boolean) => ScalarValue::Boolean(Some(*b)),
            (Datum::Int(i), DataType::Int32) => {
                ScalarValue::Int32(Some(i32::try_from(*i).map_err(|_| bad())?))
            }
            (Datum::Int(i), DataType::Int64) => ScalarValue::Int64(Some(*i)),
            (Datum::Int(i), DataType::Float64) => ScalarValue::Float64(Some(*i as f64)),
            (Datum::Float(f), DataType::Float64) => ScalarValue::Float64(Some(*f)),
            (Datum::Int(i), DataType::Timestamp(TimeUnit::Millisecond, tz)) => {
                ScalarValue::TimestampMillisecond(Some(*i), tz.clone())
            }
            (Datum::Int(d), DataType::Date32) => {
                ScalarValue::Date32(Some(i32::try_from(*d).map_err(|_| bad())?))
            }
            (Datum::Int(t), DataType::Time32(TimeUnit::Millisecond)) => {
                ScalarValue::Time32Millisecond(Some(i32::try_from(*t).map_err(|_| bad())?))
            }
            (Datum::Str(s), DataType::Utf8) => ScalarValue::Utf8(Some(s.clone())),
            (Datum::Str(s), DataType::LargeUtf8) => ScalarValue::LargeUtf8(Some(s.clone())),
            (Datum::Str(s), DataType::Utf8View) => ScalarValue::Utf8View(Some(s.clone())),
            (Datum::Bytes(b), DataType::Binary) => ScalarValue::Binary(Some(b.clone())),
            (Datum::Decimal(v, s), DataType::Decimal128(p, s2)) => {
                let v = rescale(*v, *s, (*s2).max(0) as u8).ok_or_else(bad)?;
                ScalarValue::Decimal128(Some(v), *p, *s2)
            }
            (Datum::Int(i), DataType::Decimal128(p, s)) => {
                let v = i128::from(*i)
                    .checked_mul(pow10((*s).max(0) as u32))
                    .ok_or_else(bad)?;
                ScalarValue::Decimal128(Some(v), *p, *s)
            }
            (Datum::List(items), DataType::List(field)) => {
                let scalars = items
                    .iter()
                    .map(|d| d.to_scalar(field.data_type()))
                    .collect::<Result<Vec<_>>>()?;
                ScalarValue::List(ScalarValue::new_list_nullable(&scalars, field.data_type()))
            }
            (Datum::Map(entries), DataType::Map(field, sorted)) => {
                let DataType::Struct(kv) = field.data_type() else {
                    return Err(bad());
                };
                if kv.len() != 2 {
                    return Err(bad());
                }
                let column = |ty: &DataType, pick: &dyn Fn(&(Datum, Datum)) -> &Datum| {
                    if entries.is_empty() {
                        return Ok(new_empty_array(ty));
                    }
                    let scalars = entries
                        .iter()
                        .map(|e| pick(e).to_scalar(ty))
                        .collect::<Result<Vec<_>>>()?;
                    Ok::<_, PlanError>(ScalarValue::iter_to_array(scalars)?)
                };
                let keys = column(kv[0].data_type(), &|e| &e.0)?;
                let values = column(kv[1].data_type(), &|e| &e.1)?;
                let entries_array = StructArray::try_new(kv.clone(), vec![keys, values], None)?;
                let offsets = OffsetBuffer::new(vec![0i32, entries.len() as i32].into());
                let map =
                    MapArray::try_new(Arc::clone(field), offsets, entries_array, None, *sorted)?;
                ScalarValue::Map(Arc::new(map))
            }
            (Datum::Struct(values), DataType::Struct(fields)) => {
                if values.len() != fields.len() {
                    return Err(bad());
                }
                let arrays = values
                    .iter()
                    .zip(fields.iter())
                    .map(|(d, f)| Ok(d.to_scalar(f.data_type())?.to_array()?))
                    .collect::<Result<Vec<ArrayRef>>>()?;
                // One row, also when there are no fields.
                ScalarValue::Struct(Arc::new(StructArray::try_new_with_length(
                    fields.clone(),
                    arrays,
                    None,
                    1,
                )?))
            }
            (d, ty) => d
                .natural()
                .ok_or_else(bad)
                .and_then(|v| Ok(v.cast_to(ty)?))
                .map_err(|_| bad())?,
        })
    }

    /// Whether this is NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Datum::Null)
    }

    /// The value as a double, for numbers.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Datum::Int(i) => Some(*i as f64),
            Datum::Float(f) => Some(*f),
            Datum::Decimal(v, s) => Some(*v as f64 / pow10(u32::from(*s)) as f64),
            _ => None,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Datum::Null => 0,
            Datum::Bool(_) => 1,
            Datum::Int(_) | Datum::Float(_) | Datum::Decimal(..) => 2,
            Datum::Str(_) => 3,
            Datum::Bytes(_) => 4,
            Datum::List(_) => 5,
            Datum::Map(_) => 6,
            Datum::Struct(_) => 7,
        }
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

/// A DOUBLE in JSON; NaN and the infinities, which JSON numbers cannot
/// hold, are written as Jackson writes them: `"NaN"`, `"Infinity"`,
/// `"-Infinity"`.
fn float_json(f: f64) -> Json {
    serde_json::Number::from_f64(f).map_or_else(
        || {
            Json::String(
                if f.is_nan() {
                    "NaN"
                } else if f > 0.0 {
                    "Infinity"
                } else {
                    "-Infinity"
                }
                .into(),
            )
        },
        Json::Number,
    )
}

/// Base64 as ksqlDB writes BYTES in JSON and DELIMITED.
pub const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Orders a map read from JSON as ksqlDB holds it: in a `java.util.HashMap`
/// sized for its entries, iterated by hash bucket, then in insertion
/// order. `REDUCE` and `MAP_KEYS` see the entries in this order.
fn java_hash_order(entries: &mut [(Datum, Datum)]) {
    let n = entries.len();
    if n < 2 || !entries.iter().all(|(k, _)| matches!(k, Datum::Str(_))) {
        return;
    }
    // `new HashMap<>(n)`: a power-of-two table, doubled past 3/4 full.
    let mut capacity = n.next_power_of_two();
    while n * 4 > capacity * 3 {
        capacity *= 2;
    }
    let bucket = |k: &Datum| {
        let Datum::Str(s) = k else { return 0 };
        // String.hashCode, spread as HashMap.hash does.
        let h = s
            .encode_utf16()
            .fold(0u32, |h, c| h.wrapping_mul(31).wrapping_add(u32::from(c)));
        ((h ^ (h >> 16)) as usize) & (capacity - 1)
    };
    entries.sort_by_key(|(k, _)| bucket(k));
}

/// Reads a JSON value as a value of type `ty` (for column `name`), with
/// ksqlDB's leniency: numbers from strings, strings from anything.
pub fn json_to_datum(v: &Json, ty: &SqlType, name: &str) -> Result<Datum> {
    let bad = || PlanError::Invalid(format!("cannot read {v} as {ty} for column {name}"));
    Ok(match (v, ty) {
        (Json::Null, _) => Datum::Null,
        (Json::Bool(b), SqlType::Boolean) => Datum::Bool(*b),
        (
            Json::Number(n),
            SqlType::Int | SqlType::Bigint | SqlType::Timestamp | SqlType::Date | SqlType::Time,
        ) => {
            let i = n
                .as_i64()
                .or_else(|| {
                    // Jackson's intValue()/longValue(): INT and BIGINT
                    // truncate a fractional number.
                    n.as_f64()
                        .filter(|f| {
                            f.fract() == 0.0
                                || matches!(ty, SqlType::Int | SqlType::Bigint) && f.abs() < 9.2e18
                        })
                        .map(|f| f.trunc() as i64)
                })
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
        (Json::Object(map), SqlType::Map(k, val)) => {
            let mut entries = map
                .iter()
                .map(|(key, value)| {
                    Ok((parse_text(key, k, name)?, json_to_datum(value, val, name)?))
                })
                .collect::<Result<Vec<_>>>()?;
            java_hash_order(&mut entries);
            Datum::Map(entries)
        }
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
        rescale(unscaled, u8::try_from(cur_scale.min(76)).ok()?, scale)?
    } else {
        unscaled
            .checked_mul(pow10(u32::try_from(-cur_scale).ok()?))?
            .checked_mul(pow10(u32::from(scale)))?
    };
    if v.unsigned_abs() >= pow10(u32::from(precision)) as u128 {
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
    let bad = || PlanError::Invalid(format!("cannot read '{s}' as {ty} for column {name}"));
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

impl Ord for Datum {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Datum::Bool(a), Datum::Bool(b)) => a.cmp(b),
            (Datum::Int(a), Datum::Int(b)) => a.cmp(b),
            (Datum::Float(a), Datum::Float(b)) => a.total_cmp(b),
            (Datum::Decimal(a, sa), Datum::Decimal(b, sb)) => {
                let s = (*sa).max(*sb);
                match (rescale(*a, *sa, s), rescale(*b, *sb, s)) {
                    (Some(a), Some(b)) => a.cmp(&b),
                    _ => self
                        .as_f64()
                        .unwrap_or(0.0)
                        .total_cmp(&other.as_f64().unwrap_or(0.0)),
                }
            }
            (Datum::Int(a), Datum::Decimal(..)) => Datum::Decimal(i128::from(*a), 0).cmp(other),
            (Datum::Decimal(..), Datum::Int(b)) => self.cmp(&Datum::Decimal(i128::from(*b), 0)),
            (Datum::Str(a), Datum::Str(b)) => a.cmp(b),
            (Datum::Bytes(a), Datum::Bytes(b)) => a.cmp(b),
            (Datum::List(a), Datum::List(b)) => a.cmp(b),
            (Datum::Map(a), Datum::Map(b)) => a.cmp(b),
            (Datum::Struct(a), Datum::Struct(b)) => a.cmp(b),
            (a, b) if a.rank() == 2 && b.rank() == 2 => a
                .as_f64()
                .unwrap_or(0.0)
                .total_cmp(&b.as_f64().unwrap_or(0.0)),
            (a, b) => a.rank().cmp(&b.rank()),
        }
    }
}

impl PartialOrd for Datum {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Datum {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Datum {}

/// Serializes an `f64` as its IEEE bits: JSON has no NaN or infinity.
pub mod f64_bits {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the bits.
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(v.to_bits())
    }

    /// Reads the bits.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        u64::deserialize(d).map(f64::from_bits)
    }
}

/// Serializes an `i128` as decimal text: JSON numbers lose precision.
pub mod i128_text {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the text.
    pub fn serialize<S: Serializer>(v: &i128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    /// Reads the text.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i128, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::SqlType;

    #[test]
    fn non_finite_doubles_round_trip_through_state() {
        for f in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 1.5] {
            let json = serde_json::to_vec(&Datum::Float(f)).expect("serializes");
            let Datum::Float(back) = serde_json::from_slice(&json).expect("deserializes") else {
                panic!()
            };
            assert_eq!(back.to_bits(), f.to_bits());
        }
    }

    #[test]
    fn nested_values_round_trip_through_scalars_and_state() {
        let ty = SqlType::Struct(vec![
            ("A".into(), SqlType::Array(Box::new(SqlType::Int))),
            (
                "M".into(),
                SqlType::Map(
                    Box::new(SqlType::String),
                    Box::new(SqlType::Decimal {
                        precision: 10,
                        scale: 2,
                    }),
                ),
            ),
            ("B".into(), SqlType::Bytes),
            ("D".into(), SqlType::Date),
        ]);
        let d = Datum::Struct(vec![
            Datum::List(vec![Datum::Int(1), Datum::Null, Datum::Int(-3)]),
            Datum::Map(vec![
                (Datum::Str("x".into()), Datum::Decimal(1234, 2)),
                (Datum::Str("y".into()), Datum::Null),
            ]),
            Datum::Bytes(vec![0, 255]),
            Datum::Int(19_000),
        ]);
        let scalar = d.to_scalar(&ty.arrow()).expect("to scalar");
        assert_eq!(scalar.data_type(), ty.arrow());
        assert_eq!(Datum::from_scalar(&scalar).expect("from scalar"), d);
        let json = serde_json::to_vec(&d).expect("serializes");
        let back: Datum = serde_json::from_slice(&json).expect("deserializes");
        assert_eq!(back, d);
        let empty = Datum::Map(vec![]);
        let t = SqlType::Map(Box::new(SqlType::String), Box::new(SqlType::Int)).arrow();
        assert_eq!(
            Datum::from_scalar(&empty.to_scalar(&t).expect("empty map")).expect("back"),
            empty
        );
    }

    #[test]
    fn decimals_rescale_and_compare_exactly() {
        assert_eq!(rescale(12345, 3, 1), Some(123));
        assert_eq!(rescale(-12355, 3, 1), Some(-124));
        assert_eq!(rescale(12, 0, 2), Some(1200));
        assert_eq!(Datum::Decimal(100, 2), Datum::Int(1));
        assert!(Datum::Decimal(101, 2) > Datum::Decimal(1, 0));
    }
}
