//! Arrow columns straight into JSON text: a sink's value for row `i` is
//! written from its arrays without a `ScalarValue`, a `Datum` or a
//! `serde_json::Value` per field where the column is BOOLEAN, an integer,
//! DOUBLE, DECIMAL, STRING or TIMESTAMP. Other types go through
//! `datum_to_json`, as `format::encode` writes them, so the bytes are the
//! same either way (a test compares them).

use brook_planner::catalog::Column;
use brook_planner::datum::datum_to_json;
use brook_planner::types::SqlType;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, Float64Array, Int32Array, Int64Array,
    StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;

use crate::datum::Datum;
use crate::error::Result;

/// How one column is written.
enum Writer<'a> {
    Bool(&'a BooleanArray),
    Int32(&'a Int32Array),
    Int64(&'a Int64Array),
    Timestamp(&'a TimestampMillisecondArray),
    Float64(&'a Float64Array),
    Decimal(&'a Decimal128Array, u8),
    Utf8(&'a StringArray),
    /// Through a datum and `datum_to_json`.
    General(&'a ArrayRef, &'a SqlType),
}

/// The JSON writer of a set of columns (all of a sink's value columns).
pub struct JsonColumns<'a> {
    names: Vec<Vec<u8>>,
    writers: Vec<Writer<'a>>,
    /// One column written bare, not in an object.
    bare: bool,
}

fn json_text(out: &mut Vec<u8>, s: &str) {
    // Most text needs no escape: copied as it is. The check is not an
    // early exit, so that it vectorizes.
    let plain = !s.bytes().fold(false, |esc, b| {
        esc | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if plain {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

fn json_float(out: &mut Vec<u8>, f: f64) {
    if f.is_finite() {
        let _ = serde_json::to_writer(&mut *out, &f);
    } else {
        let _ = serde_json::to_writer(
            &mut *out,
            &datum_to_json(&Datum::Float(f), &SqlType::Double),
        );
    }
}

impl<'a> JsonColumns<'a> {
    /// Writers for `columns`, whose values are `arrays`; `bare`: a single
    /// column is written as a bare JSON value (`WRAP_SINGLE_VALUE=false`).
    pub fn new(columns: &'a [&'a Column], arrays: &'a [ArrayRef], bare: bool) -> JsonColumns<'a> {
        let writers = columns
            .iter()
            .zip(arrays)
            .map(|(c, a)| {
                let matches = a.data_type() == &c.ty.arrow();
                match (a.data_type(), &c.ty) {
                    (DataType::Boolean, SqlType::Boolean) => Writer::Bool(a.as_boolean()),
                    (DataType::Int32, SqlType::Int) => Writer::Int32(a.as_primitive()),
                    (DataType::Int64, SqlType::Bigint) => Writer::Int64(a.as_primitive()),
                    (DataType::Timestamp(TimeUnit::Millisecond, None), SqlType::Timestamp) => {
                        Writer::Timestamp(a.as_primitive())
                    }
                    (DataType::Float64, SqlType::Double) => Writer::Float64(a.as_primitive()),
                    (DataType::Decimal128(_, s), SqlType::Decimal { .. }) if matches => {
                        Writer::Decimal(a.as_primitive(), (*s).max(0) as u8)
                    }
                    (DataType::Utf8, SqlType::String) => Writer::Utf8(a.as_string()),
                    _ => Writer::General(a, &c.ty),
                }
            })
            .collect();
        JsonColumns {
            names: columns
                .iter()
                .map(|c| serde_json::to_vec(&c.name).unwrap_or_default())
                .collect(),
            writers,
            bare: bare && columns.len() == 1,
        }
    }

    fn value(&self, w: &Writer<'_>, row: usize, out: &mut Vec<u8>) -> Result<()> {
        macro_rules! int {
            ($a:expr) => {
                if $a.is_null(row) {
                    out.extend_from_slice(b"null");
                } else {
                    out.extend_from_slice(itoa::Buffer::new().format($a.value(row)).as_bytes());
                }
            };
        }
        match w {
            Writer::Bool(a) => {
                if a.is_null(row) {
                    out.extend_from_slice(b"null");
                } else if a.value(row) {
                    out.extend_from_slice(b"true");
                } else {
                    out.extend_from_slice(b"false");
                }
            }
            Writer::Int32(a) => int!(a),
            Writer::Int64(a) => int!(a),
            Writer::Timestamp(a) => int!(a),
            Writer::Float64(a) => {
                if a.is_null(row) {
                    out.extend_from_slice(b"null");
                } else {
                    json_float(out, a.value(row));
                }
            }
            Writer::Decimal(a, scale) => {
                if a.is_null(row) {
                    out.extend_from_slice(b"null");
                } else {
                    let f = Datum::Decimal(a.value(row), *scale).as_f64().unwrap_or(0.0);
                    json_float(out, f);
                }
            }
            Writer::Utf8(a) => {
                if a.is_null(row) {
                    out.extend_from_slice(b"null");
                } else {
                    json_text(out, a.value(row));
                }
            }
            Writer::General(a, ty) => {
                let d = Datum::from_scalar(&ScalarValue::try_from_array(a, row)?)?;
                let _ = serde_json::to_writer(&mut *out, &datum_to_json(&d, ty));
            }
        }
        Ok(())
    }

    /// Writes row `row`'s JSON into `out` (cleared first).
    pub fn write(&self, row: usize, out: &mut Vec<u8>) -> Result<()> {
        out.clear();
        if self.bare {
            return self.value(&self.writers[0], row, out);
        }
        out.push(b'{');
        for (i, (name, w)) in self.names.iter().zip(&self.writers).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(name);
            out.push(b':');
            self.value(w, row, out)?;
        }
        out.push(b'}');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::encode;
    use brook_planner::catalog::Format;
    use datafusion::arrow::array::{ListArray, StringArray};
    use datafusion::arrow::datatypes::Int32Type;
    use std::sync::Arc;

    #[test]
    fn rows_are_written_as_the_general_encoder_writes_them() {
        let columns = [
            Column::new("B", SqlType::Boolean, false),
            Column::new("I", SqlType::Int, false),
            Column::new("L", SqlType::Bigint, false),
            Column::new("T", SqlType::Timestamp, false),
            Column::new("F", SqlType::Double, false),
            Column::new(
                "D",
                SqlType::Decimal {
                    precision: 10,
                    scale: 3,
                },
                false,
            ),
            Column::new("S\"q", SqlType::String, false),
            Column::new("A", SqlType::Array(Box::new(SqlType::Int)), false),
        ];
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)])),
            Arc::new(Int32Array::from(vec![Some(1), None, Some(-7)])),
            Arc::new(Int64Array::from(vec![Some(i64::MAX), Some(0), None])),
            Arc::new(TimestampMillisecondArray::from(vec![
                Some(5),
                None,
                Some(-1),
            ])),
            Arc::new(Float64Array::from(vec![
                Some(1.0),
                Some(f64::NAN),
                Some(f64::NEG_INFINITY),
            ])),
            Arc::new(
                Decimal128Array::from(vec![Some(123_456), Some(-5), None])
                    .with_precision_and_scale(10, 3)
                    .unwrap(),
            ),
            Arc::new(StringArray::from(vec![
                Some("a\"\\\n é"),
                None,
                Some("plain é/"),
            ])),
            Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
                Some(vec![Some(1), None]),
                None,
                Some(vec![]),
            ])),
        ];
        let refs: Vec<&Column> = columns.iter().collect();
        for bare in [false, true] {
            let n = if bare { 1 } else { refs.len() };
            let writer = JsonColumns::new(&refs[..n], &arrays[..n], bare);
            for row in 0..3 {
                let datums: Vec<Datum> = arrays[..n]
                    .iter()
                    .map(|a| Datum::from_scalar(&ScalarValue::try_from_array(a, row).unwrap()))
                    .collect::<std::result::Result<_, _>>()
                    .unwrap();
                let d: Vec<&Datum> = datums.iter().collect();
                let expected = encode(Format::Json, &refs[..n], &d, bare).unwrap().unwrap();
                let mut out = Vec::new();
                writer.write(row, &mut out).unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&expected),
                    "row {row}, bare {bare}"
                );
            }
        }
    }
}
