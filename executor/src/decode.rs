//! Records straight into Arrow columns: a stream's records become a change
//! batch without a `serde_json::Value`, a `Datum` or a `ScalarValue` per
//! field on the common path.
//!
//! A JSON object's fields are parsed by a serde visitor that appends
//! BOOLEAN, INT, BIGINT, DOUBLE, STRING and TIMESTAMP values as it meets
//! them (strings borrowed from the record's bytes where they hold no
//! escapes). Other types are read through `serde_json::Value` and ksqlDB's
//! leniency rules (`datum::json_to_datum`). Whatever the fast visitor does
//! not take as is — a number in a string, a fraction for an integer, a
//! value that is not an object, bytes that are not JSON — sends that
//! record down the general path (`codec::decode_rows`), so results and
//! error messages are the general path's exactly. Before the serde
//! visitor, the byte scanner of `json_scan` reads the object when every
//! value column is of those types. DELIMITED
//! records without quotes whose columns are all of those types are split
//! and parsed in place, the same way. Other records (KAFKA, DELIMITED with
//! quotes or other types) take the general path per record and are
//! appended the same way.

use std::borrow::Cow;
use std::sync::Arc;

use brook_planner::catalog::{Column, Format, SourceDef, SourceKind};
use brook_planner::datum::json_to_datum;
use brook_planner::types::SqlType;
use brook_storage::StoredRecord;
use datafusion::arrow::array::{
    new_empty_array, ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder,
    StringBuilder, TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::ScalarValue;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::Deserializer as _;

use crate::change::ChangeBatch;
use crate::codec::{decode_rows, DecodedRow};
use crate::datum::Datum;
use crate::error::Result;
use crate::format::decode;
use crate::processing_log::ProcessingError;

/// One field's value on its way into a column.
#[derive(Debug)]
enum Cell<'de> {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(Cow<'de, str>),
    Datum(Datum),
}

/// A column being built.
enum Builder {
    Bool(BooleanBuilder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Utf8(StringBuilder),
    Timestamp(TimestampMillisecondBuilder),
    /// Any other type, by scalars.
    Other(DataType, Vec<ScalarValue>),
}

impl Builder {
    fn new(ty: &DataType, capacity: usize) -> Builder {
        match ty {
            DataType::Boolean => Builder::Bool(BooleanBuilder::with_capacity(capacity)),
            DataType::Int32 => Builder::Int32(Int32Builder::with_capacity(capacity)),
            DataType::Int64 => Builder::Int64(Int64Builder::with_capacity(capacity)),
            DataType::Float64 => Builder::Float64(Float64Builder::with_capacity(capacity)),
            DataType::Utf8 => Builder::Utf8(StringBuilder::with_capacity(capacity, capacity * 16)),
            DataType::Timestamp(TimeUnit::Millisecond, None) => {
                Builder::Timestamp(TimestampMillisecondBuilder::with_capacity(capacity))
            }
            other => Builder::Other(other.clone(), Vec::with_capacity(capacity)),
        }
    }

    /// Appends a datum of the column's type.
    fn append_datum(&mut self, d: &Datum) -> Result<()> {
        match (self, d) {
            (b, Datum::Null) => b.append_null(),
            (Builder::Bool(b), Datum::Bool(v)) => b.append_value(*v),
            (Builder::Int64(b), Datum::Int(v)) => b.append_value(*v),
            (Builder::Timestamp(b), Datum::Int(v)) => b.append_value(*v),
            (Builder::Int32(b), Datum::Int(v)) => match i32::try_from(*v) {
                Ok(v) => b.append_value(v),
                Err(_) => {
                    return Err(crate::error::ExecError::Internal(format!(
                        "{v} does not fit an INT column"
                    )))
                }
            },
            (Builder::Float64(b), Datum::Float(v)) => b.append_value(*v),
            (Builder::Utf8(b), Datum::Str(v)) => b.append_value(v),
            (Builder::Other(ty, values), d) => {
                let v = d.to_scalar(ty)?;
                values.push(v);
            }
            (b, d) => {
                // A datum of another variant (an INT, say): convert it as
                // the general path does.
                let ty = b.data_type();
                let v = d.to_scalar(&ty)?;
                b.append_scalar(v)?;
            }
        }
        Ok(())
    }

    fn append_cell(&mut self, c: Cell<'_>) -> Result<()> {
        match (self, c) {
            (b, Cell::Null) => b.append_null(),
            (Builder::Bool(b), Cell::Bool(v)) => b.append_value(v),
            (Builder::Int64(b), Cell::Int(v)) => b.append_value(v),
            (Builder::Timestamp(b), Cell::Int(v)) => b.append_value(v),
            // The visitor checked the range.
            (Builder::Int32(b), Cell::Int(v)) => b.append_value(v as i32),
            (Builder::Float64(b), Cell::Float(v)) => b.append_value(v),
            (Builder::Utf8(b), Cell::Str(v)) => b.append_value(&v),
            (b, Cell::Datum(d)) => b.append_datum(&d)?,
            (b, other) => {
                let d = match other {
                    Cell::Int(v) => Datum::Int(v),
                    Cell::Float(v) => Datum::Float(v),
                    Cell::Bool(v) => Datum::Bool(v),
                    Cell::Str(v) => Datum::Str(v.into_owned()),
                    Cell::Null | Cell::Datum(_) => Datum::Null,
                };
                b.append_datum(&d)?;
            }
        }
        Ok(())
    }

    fn append_null(&mut self) {
        match self {
            Builder::Bool(b) => b.append_null(),
            Builder::Int32(b) => b.append_null(),
            Builder::Int64(b) => b.append_null(),
            Builder::Float64(b) => b.append_null(),
            Builder::Utf8(b) => b.append_null(),
            Builder::Timestamp(b) => b.append_null(),
            Builder::Other(ty, values) => {
                values.push(ScalarValue::try_from(&*ty).unwrap_or(ScalarValue::Null))
            }
        }
    }

    fn append_scalar(&mut self, v: ScalarValue) -> Result<()> {
        match (self, v) {
            (Builder::Bool(b), ScalarValue::Boolean(v)) => b.append_option(v),
            (Builder::Int32(b), ScalarValue::Int32(v)) => b.append_option(v),
            (Builder::Int64(b), ScalarValue::Int64(v)) => b.append_option(v),
            (Builder::Float64(b), ScalarValue::Float64(v)) => b.append_option(v),
            (Builder::Utf8(b), ScalarValue::Utf8(v)) => b.append_option(v),
            (Builder::Timestamp(b), ScalarValue::TimestampMillisecond(v, _)) => b.append_option(v),
            (Builder::Other(_, values), v) => values.push(v),
            (b, v) => {
                return Err(crate::error::ExecError::Internal(format!(
                    "a {} value for a column of type {}",
                    v.data_type(),
                    b.data_type()
                )))
            }
        }
        Ok(())
    }

    fn data_type(&self) -> DataType {
        match self {
            Builder::Bool(_) => DataType::Boolean,
            Builder::Int32(_) => DataType::Int32,
            Builder::Int64(_) => DataType::Int64,
            Builder::Float64(_) => DataType::Float64,
            Builder::Utf8(_) => DataType::Utf8,
            Builder::Timestamp(_) => DataType::Timestamp(TimeUnit::Millisecond, None),
            Builder::Other(ty, _) => ty.clone(),
        }
    }

    fn finish(self) -> Result<ArrayRef> {
        Ok(match self {
            Builder::Bool(mut b) => Arc::new(b.finish()),
            Builder::Int32(mut b) => Arc::new(b.finish()),
            Builder::Int64(mut b) => Arc::new(b.finish()),
            Builder::Float64(mut b) => Arc::new(b.finish()),
            Builder::Utf8(mut b) => Arc::new(b.finish()),
            Builder::Timestamp(mut b) => Arc::new(b.finish()),
            Builder::Other(ty, values) if values.is_empty() => new_empty_array(&ty),
            Builder::Other(ty, values) => {
                let values = values
                    .into_iter()
                    .map(|v| {
                        if v.data_type() == ty {
                            Ok(v)
                        } else {
                            v.cast_to(&ty)
                        }
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                ScalarValue::iter_to_array(values)?
            }
        })
    }
}

/// How the fast visitor reads one column.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fast {
    Bool,
    Int32,
    Int64,
    Double,
    Str,
    /// Through `serde_json::Value` and `json_to_datum`.
    General,
}

impl Fast {
    fn of(ty: &SqlType) -> Fast {
        match ty {
            SqlType::Boolean => Fast::Bool,
            SqlType::Int => Fast::Int32,
            SqlType::Bigint | SqlType::Timestamp => Fast::Int64,
            SqlType::Double => Fast::Double,
            SqlType::String => Fast::Str,
            _ => Fast::General,
        }
    }
}

/// Whether the fast paths (the JSON scanner, DELIMITED split in place)
/// read a column of type `ty` (for the fuzz harness, which feeds them).
pub(crate) fn read_fast(ty: &SqlType) -> bool {
    Fast::of(ty) != Fast::General
}

/// The fast visitor gave up on a record: the general path takes it.
struct GiveUp;

/// One value column's reading.
struct ValueColumn<'a> {
    column: &'a Column,
    fast: Fast,
    /// Position among the source's declared columns.
    position: usize,
}

/// A field's value, read for a column.
struct FieldSeed<'a> {
    column: &'a ValueColumn<'a>,
}

/// What a field's value became: a cell, or "give up on this record".
enum Read<'de> {
    Cell(Cell<'de>),
    GiveUp,
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = Read<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Read<'de>, D::Error> {
        match self.column.fast {
            Fast::General => {
                let v = <serde_json::Value as serde::Deserialize>::deserialize(d)?;
                Ok(
                    match json_to_datum(&v, &self.column.column.ty, &self.column.column.name) {
                        Ok(Datum::Null) => Read::Cell(Cell::Null),
                        Ok(datum) => Read::Cell(Cell::Datum(datum)),
                        Err(_) => Read::GiveUp,
                    },
                )
            }
            fast => d.deserialize_any(FastVisitor { fast }),
        }
    }
}

struct FastVisitor {
    fast: Fast,
}

impl<'de> Visitor<'de> for FastVisitor {
    type Value = Read<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> std::result::Result<Read<'de>, E> {
        Ok(match self.fast {
            Fast::Bool => Read::Cell(Cell::Bool(v)),
            _ => Read::GiveUp,
        })
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Read<'de>, E> {
        Ok(match self.fast {
            Fast::Int64 => Read::Cell(Cell::Int(v)),
            Fast::Int32 if i32::try_from(v).is_ok() => Read::Cell(Cell::Int(v)),
            Fast::Double => Read::Cell(Cell::Float(v as f64)),
            _ => Read::GiveUp,
        })
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Read<'de>, E> {
        match i64::try_from(v) {
            Ok(v) => self.visit_i64(v),
            Err(_) => Ok(match self.fast {
                Fast::Double => Read::Cell(Cell::Float(v as f64)),
                _ => Read::GiveUp,
            }),
        }
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<Read<'de>, E> {
        Ok(match self.fast {
            Fast::Double => Read::Cell(Cell::Float(v)),
            _ => Read::GiveUp,
        })
    }

    fn visit_borrowed_str<E: serde::de::Error>(
        self,
        v: &'de str,
    ) -> std::result::Result<Read<'de>, E> {
        Ok(match self.fast {
            Fast::Str => Read::Cell(Cell::Str(Cow::Borrowed(v))),
            _ => Read::GiveUp,
        })
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Read<'de>, E> {
        Ok(match self.fast {
            Fast::Str => Read::Cell(Cell::Str(Cow::Owned(v.to_owned()))),
            _ => Read::GiveUp,
        })
    }

    fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<Read<'de>, E> {
        Ok(Read::Cell(Cell::Null))
    }

    fn visit_none<E: serde::de::Error>(self) -> std::result::Result<Read<'de>, E> {
        Ok(Read::Cell(Cell::Null))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        seq: A,
    ) -> std::result::Result<Read<'de>, A::Error> {
        IgnoredAny.visit_seq(seq)?;
        Ok(Read::GiveUp)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<Read<'de>, A::Error> {
        IgnoredAny.visit_map(map)?;
        Ok(Read::GiveUp)
    }
}

/// A key of the top-level object, borrowed where it can be.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a field name")
    }

    fn visit_borrowed_str<E: serde::de::Error>(
        self,
        v: &'de str,
    ) -> std::result::Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// How a column got its value so far in one object: ksqlDB takes the
/// field named exactly as the column (the last such), else the first
/// field whose name matches ignoring case (its last value).
enum Matched<'de> {
    No,
    IgnoringCase(Cow<'de, str>),
    Exactly,
}

/// The top-level object: each value column's cell, and how it was
/// matched. No two value columns have names equal but for case (else the
/// general path reads the source), so a field feeds one column at most.
struct ObjectVisitor<'a, 'c> {
    columns: &'a [ValueColumn<'a>],
    cells: &'c mut Vec<(Cell<'a>, Matched<'a>)>,
}

impl<'de: 'a, 'a> Visitor<'de> for ObjectVisitor<'a, '_> {
    type Value = std::result::Result<(), GiveUp>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut gave_up = false;
        // Fields usually come in the order of the columns: try the column
        // after the last one matched first.
        let mut next = 0;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let Some((i, exact)) = match_field(self.columns, self.cells, &key, next) else {
                // Read as the general path reads it (which rejects, say, a
                // lone surrogate that `IgnoredAny` lets through).
                map.next_value::<serde_json::Value>()?;
                continue;
            };
            next = i + 1;
            match map.next_value_seed(FieldSeed {
                column: &self.columns[i],
            })? {
                Read::Cell(cell) => self.cells[i].0 = cell,
                Read::GiveUp => gave_up = true,
            }
            self.cells[i].1 = if exact {
                Matched::Exactly
            } else {
                Matched::IgnoringCase(key)
            };
        }
        Ok(if gave_up { Err(GiveUp) } else { Ok(()) })
    }
}

/// Reads a JSON object's fields into `cells` with the scanner of
/// `json_scan`, matching fields to columns as [`ObjectVisitor`] does;
/// `Err(GiveUp)` if it cannot, and [`read_json_object`] must.
fn scan_json_object<'a>(
    columns: &'a [ValueColumn<'a>],
    bytes: &'a [u8],
    cells: &mut Vec<(Cell<'a>, Matched<'a>)>,
) -> std::result::Result<(), GiveUp> {
    use crate::json_scan::{Scanner, Value};
    cells.clear();
    cells.extend(columns.iter().map(|_| (Cell::Null, Matched::No)));
    let mut scan = Scanner::object(bytes).map_err(|_| GiveUp)?;
    let mut next = 0;
    while let Some(key) = scan.next_key().map_err(|_| GiveUp)? {
        let Some((i, exact)) = match_field(columns, cells, &key, next) else {
            scan.skip_value().map_err(|_| GiveUp)?;
            continue;
        };
        next = i + 1;
        let fast = columns[i].fast;
        if fast == Fast::General {
            return Err(GiveUp);
        }
        cells[i].0 = match (fast, scan.value().map_err(|_| GiveUp)?) {
            (_, Value::Null) => Cell::Null,
            (Fast::Bool, Value::Bool(v)) => Cell::Bool(v),
            (Fast::Int64, Value::Int(v)) => Cell::Int(v),
            (Fast::Int32, Value::Int(v)) if i32::try_from(v).is_ok() => Cell::Int(v),
            (Fast::Double, Value::Int(v)) => Cell::Float(v as f64),
            (Fast::Double, Value::Float(v)) => Cell::Float(v),
            (Fast::Str, Value::Str(v)) => Cell::Str(v),
            _ => return Err(GiveUp),
        };
        cells[i].1 = if exact {
            Matched::Exactly
        } else {
            Matched::IgnoringCase(key)
        };
    }
    Ok(())
}

/// The column a field named `key` feeds, if any, and whether its name
/// matches exactly: ksqlDB takes the field named exactly as the column
/// (the last such), else the first field whose name matches ignoring case
/// (its last value). `next`: the column after the one matched last, tried
/// first (fields usually come in the order of the columns).
fn match_field(
    columns: &[ValueColumn<'_>],
    cells: &[(Cell<'_>, Matched<'_>)],
    key: &str,
    next: usize,
) -> Option<(usize, bool)> {
    let matches = |i: usize| {
        let name = columns[i].column.name.as_str();
        key.eq_ignore_ascii_case(name).then_some((i, key == name))
    };
    let found = (next < columns.len())
        .then(|| matches(next))
        .flatten()
        .or_else(|| (0..columns.len()).find_map(matches));
    found.filter(|(i, exact)| {
        *exact
            || match &cells[*i].1 {
                Matched::No => true,
                Matched::IgnoringCase(k) => k == key,
                Matched::Exactly => false,
            }
    })
}

/// Reads a JSON object's fields into `cells` (one per value column, set to
/// NULL first); `Err(GiveUp)` if the general path must read the record.
fn read_json_object<'a>(
    columns: &'a [ValueColumn<'a>],
    bytes: &'a [u8],
    cells: &mut Vec<(Cell<'a>, Matched<'a>)>,
) -> std::result::Result<(), GiveUp> {
    cells.clear();
    cells.extend(columns.iter().map(|_| (Cell::Null, Matched::No)));
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(GiveUp);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let read = de.deserialize_map(ObjectVisitor {
        columns,
        cells: &mut *cells,
    });
    match read {
        Ok(Ok(())) => de.end().map_err(|_| GiveUp),
        Ok(Err(GiveUp)) | Err(_) => Err(GiveUp),
    }
}

/// The columns of a source's batch schema, being built.
struct BatchBuilder {
    columns: Vec<Builder>,
    window: Option<(Int64Builder, Int64Builder)>,
    rowtime: Int64Builder,
    partition: Int32Builder,
    offset: Int64Builder,
    rowtimes: Vec<i64>,
    null_values: Vec<bool>,
}

impl BatchBuilder {
    fn new(def: &SourceDef, schema: &SchemaRef, capacity: usize) -> BatchBuilder {
        BatchBuilder {
            columns: schema
                .fields()
                .iter()
                .take(def.columns.len())
                .map(|f| Builder::new(f.data_type(), capacity))
                .collect(),
            window: def.window.map(|_| {
                (
                    Int64Builder::with_capacity(capacity),
                    Int64Builder::with_capacity(capacity),
                )
            }),
            rowtime: Int64Builder::with_capacity(capacity),
            partition: Int32Builder::with_capacity(capacity),
            offset: Int64Builder::with_capacity(capacity),
            rowtimes: Vec::with_capacity(capacity),
            null_values: Vec::with_capacity(capacity),
        }
    }

    fn finish_row(
        &mut self,
        record: &StoredRecord,
        window: Option<(i64, i64)>,
        rowtime: i64,
        null_value: bool,
    ) {
        if let Some((start, end)) = &mut self.window {
            start.append_option(window.map(|w| w.0));
            end.append_option(window.map(|w| w.1));
        }
        self.rowtime.append_value(rowtime);
        self.partition.append_value(record.partition as i32);
        self.offset.append_value(record.offset as i64);
        self.rowtimes.push(rowtime);
        self.null_values.push(null_value);
    }

    /// Appends a row the general path decoded.
    fn append_decoded(&mut self, row: &DecodedRow<'_>) -> Result<()> {
        for (b, d) in self.columns.iter_mut().zip(&row.values) {
            b.append_datum(d)?;
        }
        self.finish_row(row.record, row.window, row.rowtime, row.null_value);
        Ok(())
    }

    fn finish(self, schema: &SchemaRef) -> Result<ChangeBatch> {
        let n = self.rowtimes.len();
        let mut arrays = Vec::with_capacity(schema.fields().len());
        for b in self.columns {
            arrays.push(b.finish()?);
        }
        if let Some((mut start, mut end)) = self.window {
            arrays.push(Arc::new(start.finish()) as ArrayRef);
            arrays.push(Arc::new(end.finish()) as ArrayRef);
        }
        let (mut rowtime, mut partition, mut offset) = (self.rowtime, self.partition, self.offset);
        arrays.push(Arc::new(rowtime.finish()));
        arrays.push(Arc::new(partition.finish()));
        arrays.push(Arc::new(offset.finish()));
        let options = RecordBatchOptions::new().with_row_count(Some(n));
        Ok(ChangeBatch {
            batch: RecordBatch::try_new_with_options(Arc::clone(schema), arrays, &options)?,
            weights: vec![1; n],
            rowtimes: self.rowtimes,
            null_values: self.null_values,
        })
    }
}

/// How a source's records are read before the general path.
#[derive(Clone, Copy)]
enum FastFormat {
    /// The scanner of `json_scan` (if `scan`), then the serde visitor.
    Json { scan: bool },
    /// [`read_delimited`], with this delimiter.
    Delimited(char),
    /// Only the general path.
    None,
}

/// Reads a DELIMITED record's fields into `cells` as `format::decode` does
/// (an empty field is NULL, the others go through `datum::parse_text`'s
/// rules), for records without a quote; `Err(GiveUp)` otherwise (a quote,
/// a field count that differs from the columns', text that does not
/// parse), and the general path reads it.
fn read_delimited<'a>(
    columns: &'a [ValueColumn<'a>],
    bytes: &'a [u8],
    delimiter: char,
    cells: &mut Vec<(Cell<'a>, Matched<'a>)>,
) -> std::result::Result<(), GiveUp> {
    cells.clear();
    let text = std::str::from_utf8(bytes).map_err(|_| GiveUp)?;
    if text.contains('"') {
        return Err(GiveUp);
    }
    let mut fields = text.split(delimiter);
    for column in columns {
        let field = fields.next().ok_or(GiveUp)?;
        let t = field.trim();
        let cell = match column.fast {
            _ if field.is_empty() => Cell::Null,
            Fast::Str => Cell::Str(Cow::Borrowed(field)),
            Fast::Bool if t.eq_ignore_ascii_case("true") => Cell::Bool(true),
            Fast::Bool if t.eq_ignore_ascii_case("false") => Cell::Bool(false),
            Fast::Int32 => Cell::Int(i64::from(t.parse::<i32>().map_err(|_| GiveUp)?)),
            Fast::Int64 => Cell::Int(t.parse::<i64>().map_err(|_| GiveUp)?),
            Fast::Double => Cell::Float(t.parse::<f64>().map_err(|_| GiveUp)?),
            Fast::Bool | Fast::General => return Err(GiveUp),
        };
        cells.push((cell, Matched::Exactly));
    }
    if fields.next().is_some() {
        return Err(GiveUp);
    }
    Ok(())
}

/// How each value column of `def` is read, in declared order.
fn value_columns(def: &SourceDef) -> Vec<ValueColumn<'_>> {
    def.columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.is_value())
        .map(|(position, column)| ValueColumn {
            column,
            fast: Fast::of(&column.ty),
            position,
        })
        .collect()
}

/// Decodes a stream's records into a change batch with its batch schema
/// (declared columns, then ROWTIME, ROWPARTITION, ROWOFFSET), and the
/// records skipped as undecodable. A record without a value is a row with
/// only its key columns set (`null_values`).
pub fn decode_batch(
    def: &SourceDef,
    schema: &SchemaRef,
    records: &[StoredRecord],
) -> Result<(ChangeBatch, Vec<ProcessingError>)> {
    let mut out = BatchBuilder::new(def, schema, records.len());
    let mut skipped = Vec::new();
    let values = value_columns(def);
    let keys: Vec<&Column> = def.key_columns().collect();
    let plain = def.columns.iter().all(|c| c.header.is_none())
        && def.kind == SourceKind::Stream
        && !values.is_empty();
    let fast_format = match def.value_format {
        Format::Json
            if plain
                && !(values.len() == 1 && def.unwrapped)
                && !values.iter().enumerate().any(|(i, a)| {
                    values[i + 1..]
                        .iter()
                        .any(|b| a.column.name.eq_ignore_ascii_case(&b.column.name))
                }) =>
        {
            // A column the scanner does not read makes it give up on every
            // record holding that field: the serde visitor reads those.
            FastFormat::Json {
                scan: values.iter().all(|v| v.fast != Fast::General),
            }
        }
        Format::Delimited(delimiter) if plain && values.iter().all(|v| v.fast != Fast::General) => {
            FastFormat::Delimited(delimiter)
        }
        _ => FastFormat::None,
    };
    let ts_index = def.timestamp_index();
    // Where each declared column's value comes from: a key column's index
    // among the keys, or a value column's among `values`.
    let from: Vec<(bool, usize)> = {
        let (mut k, mut v) = (0, 0);
        def.columns
            .iter()
            .map(|c| {
                if c.key {
                    k += 1;
                    (true, k - 1)
                } else {
                    v += 1;
                    (false, v - 1)
                }
            })
            .collect()
    };
    let mut cells: Vec<(Cell, Matched)> = Vec::with_capacity(values.len());
    for r in records {
        let fast = r
            .record
            .value
            .as_deref()
            .and_then(|bytes| match fast_format {
                FastFormat::Json { scan: true } => scan_json_object(&values, bytes, &mut cells)
                    .or_else(|GiveUp| read_json_object(&values, bytes, &mut cells))
                    .ok(),
                FastFormat::Json { scan: false } => {
                    read_json_object(&values, bytes, &mut cells).ok()
                }
                FastFormat::Delimited(delimiter) => {
                    read_delimited(&values, bytes, delimiter, &mut cells).ok()
                }
                FastFormat::None => None,
            });
        // The key, the window and the event time; `None` if the general
        // path must read the record (it logs and skips what it cannot).
        let fast_row = fast.and_then(|()| {
            let (key_bytes, window) = crate::codec::split_window(def, r.record.key.as_deref());
            let key_values = decode(def.key_format, &keys, key_bytes.as_deref(), false).ok()?;
            let rowtime = match ts_index {
                None => None,
                Some(i) => {
                    let (is_key, j) = from[i];
                    let d = if is_key {
                        key_values.get(j).cloned()
                    } else {
                        match &cells[j].0 {
                            Cell::Int(t) => Some(Datum::Int(*t)),
                            Cell::Str(s) => Some(Datum::Str(s.to_string())),
                            Cell::Datum(d) => Some(d.clone()),
                            _ => None,
                        }
                    };
                    def.event_time_of(i, d.as_ref()).ok()?
                }
            };
            Some((key_values, window, rowtime))
        });
        let Some((key_values, window, rowtime)) = fast_row else {
            let (rows, problems) = decode_rows(def, std::slice::from_ref(r), true);
            for row in &rows {
                out.append_decoded(row)?;
            }
            skipped.extend(problems);
            continue;
        };
        let rowtime = rowtime.unwrap_or(r.record.timestamp);
        let mut key_values = key_values.into_iter();
        for (c, (is_key, _)) in out.columns.iter_mut().zip(&from) {
            if *is_key {
                c.append_datum(&key_values.next().unwrap_or(Datum::Null))?;
            }
        }
        for (vc, (cell, _)) in values.iter().zip(cells.drain(..)) {
            out.columns[vc.position].append_cell(cell)?;
        }
        out.finish_row(r, window, rowtime, false);
    }
    Ok((out.finish(schema)?, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode_batch_by_rows;
    use brook_planner::catalog::Column;
    use brook_storage::Record;
    use proptest::prelude::*;

    /// A source of every fast type and two others; with `twins`, also a
    /// column whose name differs from another's only by case (the general
    /// path reads such a source).
    fn def(timestamp: Option<&str>, twins: bool) -> SourceDef {
        let col = |name: &str, ty: SqlType, key: bool| Column::new(name, ty, key);
        let mut def = SourceDef {
            name: "S".into(),
            kind: SourceKind::Stream,
            columns: vec![
                col("K", SqlType::Bigint, true),
                col("ID", SqlType::Int, false),
                col("Name", SqlType::String, false),
                col("PRICE", SqlType::Double, false),
                col("OK", SqlType::Boolean, false),
                col("TS", SqlType::Bigint, false),
                col("AT", SqlType::Timestamp, false),
                col(
                    "D",
                    SqlType::Decimal {
                        precision: 6,
                        scale: 2,
                    },
                    false,
                ),
                col("TAGS", SqlType::Array(Box::new(SqlType::String)), false),
            ],
            topic: "s".into(),
            partitions: 1,
            key_format: Format::Kafka,
            value_format: Format::Json,
            timestamp_column: timestamp.map(str::to_string),
            timestamp_format: None,
            query_id: None,
            retention_ms: None,
            retention_bytes: None,
            keyless_format: None,
            unwrapped: false,
            read_only: false,
            window: None,
        };
        if twins {
            def.columns.push(col("name", SqlType::String, false));
        }
        def
    }

    /// A JSON value of one of many shapes, some of which the fast path
    /// gives up on.
    fn json_value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("null".to_string()),
            any::<i64>().prop_map(|v| v.to_string()),
            (-3i64..3).prop_map(|v| v.to_string()),
            any::<u64>().prop_map(|v| v.to_string()),
            any::<i32>().prop_map(|v| format!("{v}.5")),
            Just("1e3".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            "[a-z\\\\\"é]{0,6}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            (-99i64..99).prop_map(|v| format!("\"{v}\"")),
            Just("[\"x\", null]".to_string()),
            Just("{\"a\": 1}".to_string()),
            Just("12.345".to_string()),
            Just("-0".to_string()),
            Just("-0.0".to_string()),
            Just("2.5E-3".to_string()),
            Just("1.2345678901234567".to_string()),
            Just("18446744073709551616".to_string()),
            Just("\"a\\u00e9\\ud83d\\ude00\\n\"".to_string()),
            Just("\"\\ud800\"".to_string()),
            Just("[1, [2, {\"x\": [null, -0, 1e400]}]]".to_string()),
            "[\\x00-\\x1f\\u{7f}-\\u{3000}]{0,4}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        ]
    }

    fn field_name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("ID"),
            Just("id"),
            Just("Id"),
            Just("name"),
            Just("Name"),
            Just("NAME"),
            Just("price"),
            Just("ok"),
            Just("ts"),
            Just("TS"),
            Just("at"),
            Just("d"),
            Just("tags"),
            Just("other"),
        ]
        .prop_map(str::to_string)
    }

    fn record_value() -> impl Strategy<Value = Option<Vec<u8>>> {
        prop_oneof![
            8 => proptest::collection::vec((field_name(), json_value()), 0..10).prop_map(|fields| {
                let body: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap()))
                    .collect();
                Some(format!(" {{{}}}", body.join(" ,\n")).into_bytes())
            }),
            1 => json_value().prop_map(|v| Some(v.into_bytes())),
            1 => Just(Some(b"{\"id\": 1,".to_vec())),
            1 => Just(Some(b"{\"id\": 1} x".to_vec())),
            1 => Just(None),
        ]
    }

    fn record_key() -> impl Strategy<Value = Option<Vec<u8>>> {
        prop_oneof![
            Just(None),
            any::<i64>().prop_map(|k| Some(k.to_be_bytes().to_vec())),
            Just(Some(vec![1, 2, 3])),
        ]
    }

    /// A record's key and value.
    type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);

    fn stored(values: Vec<KeyValue>) -> Vec<StoredRecord> {
        values
            .into_iter()
            .enumerate()
            .map(|(i, (key, value))| StoredRecord {
                partition: 0,
                offset: i as u64,
                record: Record {
                    timestamp: 1000 + i as i64,
                    key,
                    value,
                    headers: vec![],
                },
            })
            .collect()
    }

    fn messages(problems: &[ProcessingError]) -> Vec<String> {
        problems.iter().map(|p| format!("{p:?}")).collect()
    }

    /// The columnar decoder and the row-by-row path read `records` of
    /// `def` alike: the same rows, values and event times, the same
    /// problems, or the same error.
    fn agree(def: &SourceDef, records: &[StoredRecord]) -> Result<(), TestCaseError> {
        let schema = def.batch_schema();
        match (
            decode_batch(def, &schema, records),
            decode_batch_by_rows(def, &schema, records),
        ) {
            (Ok((a, pa)), Ok((b, pb))) => {
                prop_assert_eq!(&a.batch, &b.batch);
                prop_assert_eq!(&a.rowtimes, &b.rowtimes);
                prop_assert_eq!(&a.weights, &b.weights);
                prop_assert_eq!(&a.null_values, &b.null_values);
                prop_assert_eq!(messages(&pa), messages(&pb));
            }
            (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
            (a, b) => prop_assert!(false, "one failed: {:?} / {:?}", a.err(), b.err()),
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// The columnar decoder reads every record as the row-by-row path
        /// does: the same rows, values and event times, the same problems.
        #[test]
        fn the_fast_path_agrees_with_the_general_path(
            values in proptest::collection::vec((record_key(), record_value()), 0..12),
            timestamp in prop_oneof![Just(None), Just(Some("TS")), Just(Some("AT"))],
            twins in proptest::bool::weighted(0.2),
            others in proptest::bool::ANY,
        ) {
            let mut def = def(timestamp, twins);
            if !others {
                // Only columns the scanner reads: it reads every record
                // (with them, the serde visitor does).
                def.columns
                    .retain(|c| !matches!(c.ty, SqlType::Decimal { .. } | SqlType::Array(_)));
            }
            let records = stored(values);
            agree(&def, &records)?;
        }
    }

    /// [`def`] without the columns DELIMITED cannot hold, in DELIMITED.
    fn delimited_def(timestamp: Option<&str>) -> SourceDef {
        let mut def = def(timestamp, false);
        def.columns
            .retain(|c| !matches!(c.ty, SqlType::Decimal { .. } | SqlType::Array(_)));
        def.value_format = Format::Delimited(',');
        def
    }

    fn delimited_field() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(""),
            Just(" "),
            Just("12"),
            Just(" -3 "),
            Just("2147483648"),
            Just("9223372036854775808"),
            Just("1.5"),
            Just("1e3"),
            Just("NaN"),
            Just("true"),
            Just(" TRUE"),
            Just("False"),
            Just("abc"),
            Just("é"),
            Just("\"q,r\""),
            Just("x\"y"),
            Just("1970-01-01T00:00:01"),
        ]
        .prop_map(str::to_string)
    }

    /// Fields that mostly fit [`delimited_def`]'s columns, in order.
    fn well_typed_delimited() -> impl Strategy<Value = Vec<String>> {
        let one = |options: &'static [&'static str]| {
            proptest::sample::select(options).prop_map(str::to_string)
        };
        (
            one(&["", "12", " -3 ", "x"]),
            one(&["abc", "é", "", " "]),
            one(&["1.5", "12", "NaN", "1e3", ""]),
            one(&["true", " TRUE", "False", ""]),
            one(&["1234", "-3", ""]),
            one(&["1234", "", "1970-01-01T00:00:01"]),
        )
            .prop_map(|(a, b, c, d, e, f)| vec![a, b, c, d, e, f])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// DELIMITED records too: the fast path reads what the general
        /// path reads, and leaves it what it cannot.
        #[test]
        fn delimited_records_agree_with_the_general_path(
            values in proptest::collection::vec(
                (record_key(), proptest::option::weighted(
                    0.9,
                    prop_oneof![
                        proptest::collection::vec(delimited_field(), 4..8),
                        well_typed_delimited(),
                    ],
                )),
                0..12,
            ),
            timestamp in prop_oneof![Just(None), Just(Some("TS")), Just(Some("AT"))],
        ) {
            let def = delimited_def(timestamp);
            let records = stored(
                values
                    .into_iter()
                    .map(|(k, v)| (k, v.map(|fields| fields.join(",").into_bytes())))
                    .collect(),
            );
            agree(&def, &records)?;
        }
    }

    #[test]
    fn a_delimited_record_is_read_by_the_fast_path() {
        let def = delimited_def(Some("TS"));
        let values = value_columns(&def);
        let mut cells = Vec::new();
        assert!(
            read_delimited(&values, b"5,a b, 2.5,true,1234,", ',', &mut cells).is_ok(),
            "the fast path gave up"
        );
        assert!(matches!(cells[1].0, Cell::Str(Cow::Borrowed("a b"))));
        assert!(matches!(cells[5].0, Cell::Null));
        assert!(read_delimited(&values, b"5,\"a\",2.5,true,1234,", ',', &mut cells).is_err());
    }

    #[test]
    fn a_bid_is_read_by_the_fast_path() {
        let def = def(Some("TS"), false);
        let schema = def.batch_schema();
        let records = stored(vec![(
            Some(7i64.to_be_bytes().to_vec()),
            Some(br#"{"id": 5, "name": "a\"b", "price": 2, "ok": true, "ts": 1234, "tags": ["x"], "d": 1.5}"#.to_vec()),
        )]);
        let values = value_columns(&def);
        let mut cells = Vec::new();
        let bytes = records[0].record.value.as_deref().unwrap();
        assert!(
            read_json_object(&values, bytes, &mut cells).is_ok(),
            "the fast path gave up"
        );
        let (batch, problems) = decode_batch(&def, &schema, &records).unwrap();
        assert!(problems.is_empty());
        assert_eq!(batch.rowtimes, vec![1234]);
        // Without columns of other types, the scanner reads it.
        let bid = br#"{"id": 5, "name": "a\"b", "price": 2.5, "ok": true, "ts": 1234, "x": [{}]}"#;
        assert!(
            scan_json_object(&values, bid, &mut cells).is_ok(),
            "the scanner gave up"
        );
        let (reference, _) = decode_batch_by_rows(&def, &schema, &records).unwrap();
        assert_eq!(batch.batch, reference.batch);
    }
}
