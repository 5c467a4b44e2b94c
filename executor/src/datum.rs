//! `Datum`: a serializable value used for group keys, accumulator state and
//! materialized rows, convertible to and from DataFusion's `ScalarValue`.
//!
//! A datum does not carry its SQL type: DATE is days and TIME milliseconds
//! in [`Datum::Int`], a STRUCT is its field values in order. Conversions
//! back to scalars take the Arrow type.

use std::cmp::Ordering;
use std::sync::Arc;

use datafusion::arrow::array::{
    new_empty_array, Array, ArrayRef, MapArray, StructArray,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;
use serde::{Deserialize, Serialize};

use crate::error::{ExecError, Result};

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

fn unsupported(v: &ScalarValue) -> ExecError {
    ExecError::Serialization(format!(
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
        let bad = || ExecError::Internal(format!("cannot convert {self:?} to {ty}"));
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
                ScalarValue::List(ScalarValue::new_list_nullable(
                    &scalars,
                    field.data_type(),
                ))
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
                    Ok::<_, ExecError>(ScalarValue::iter_to_array(scalars)?)
                };
                let keys = column(kv[0].data_type(), &|e| &e.0)?;
                let values = column(kv[1].data_type(), &|e| &e.1)?;
                let entries_array = StructArray::try_new(kv.clone(), vec![keys, values], None)?;
                let offsets = OffsetBuffer::new(vec![0i32, entries.len() as i32].into());
                let map = MapArray::try_new(
                    Arc::clone(field),
                    offsets,
                    entries_array,
                    None,
                    *sorted,
                )?;
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
                ScalarValue::Struct(Arc::new(StructArray::try_new(
                    fields.clone(),
                    arrays,
                    None,
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
                    _ => self.as_f64().unwrap_or(0.0).total_cmp(&other.as_f64().unwrap_or(0.0)),
                }
            }
            (Datum::Int(a), Datum::Decimal(..)) => {
                Datum::Decimal(i128::from(*a), 0).cmp(other)
            }
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
pub(crate) mod f64_bits {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(v.to_bits())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        u64::deserialize(d).map(f64::from_bits)
    }
}

/// Serializes an `i128` as decimal text: JSON numbers lose precision.
pub(crate) mod i128_text {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &i128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i128, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brook_planner::types::SqlType;

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
