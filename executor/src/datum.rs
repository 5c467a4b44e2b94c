//! `Datum`: a serializable scalar used for group keys, accumulator state and
//! materialized rows, convertible to and from DataFusion's `ScalarValue`.

use std::cmp::Ordering;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;
use serde::{Deserialize, Serialize};

use crate::error::{ExecError, Result};

/// A scalar value with a total order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Datum {
    /// SQL NULL.
    Null,
    /// BOOLEAN
    Bool(bool),
    /// Any integer type, and TIMESTAMP (ms).
    Int(i64),
    /// DOUBLE (serialized by its bits, so NaN and infinities survive JSON)
    Float(#[serde(with = "f64_bits")] f64),
    /// STRING
    Str(String),
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
            ScalarValue::Float32(Some(f)) => Datum::Float(f64::from(*f)),
            ScalarValue::Float64(Some(f)) => Datum::Float(*f),
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)) => Datum::Str(s.clone()),
            ScalarValue::TimestampMillisecond(Some(t), _) => Datum::Int(*t),
            ScalarValue::TimestampSecond(Some(t), _) => Datum::Int(t.saturating_mul(1000)),
            ScalarValue::TimestampMicrosecond(Some(t), _) => Datum::Int(t / 1000),
            ScalarValue::TimestampNanosecond(Some(t), _) => Datum::Int(t / 1_000_000),
            ScalarValue::Date32(Some(d)) => Datum::Int(i64::from(*d) * 86_400_000),
            other => {
                return Err(ExecError::Serialization(format!(
                    "values of type {} are not supported yet",
                    other.data_type()
                )))
            }
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
            (Datum::Str(s), DataType::Utf8) => ScalarValue::Utf8(Some(s.clone())),
            (Datum::Str(s), DataType::LargeUtf8) => ScalarValue::LargeUtf8(Some(s.clone())),
            (Datum::Str(s), DataType::Utf8View) => ScalarValue::Utf8View(Some(s.clone())),
            (d, ty) => d
                .to_scalar(&DataType::Float64)
                .and_then(|v| Ok(v.cast_to(ty)?))
                .map_err(|_| bad())?,
        })
    }

    /// Whether this is NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Datum::Null)
    }

    fn rank(&self) -> u8 {
        match self {
            Datum::Null => 0,
            Datum::Bool(_) => 1,
            Datum::Int(_) | Datum::Float(_) => 2,
            Datum::Str(_) => 3,
        }
    }
}

impl Ord for Datum {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Datum::Bool(a), Datum::Bool(b)) => a.cmp(b),
            (Datum::Int(a), Datum::Int(b)) => a.cmp(b),
            (Datum::Float(a), Datum::Float(b)) => a.total_cmp(b),
            (Datum::Int(a), Datum::Float(b)) => (*a as f64).total_cmp(b),
            (Datum::Float(a), Datum::Int(b)) => a.total_cmp(&(*b as f64)),
            (Datum::Str(a), Datum::Str(b)) => a.cmp(b),
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
