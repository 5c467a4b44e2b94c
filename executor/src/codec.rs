//! Between log records and change batches: decoding a source's records,
//! encoding a query's output for its sink.

use brook_planner::catalog::{
    Column, Format, HeaderSource, SourceDef, SourceKind, WINDOWEND, WINDOWSTART,
};
use brook_storage::{Record, StoredRecord};
use datafusion::common::ScalarValue;
use serde::{Deserialize, Serialize};

use crate::change::ChangeBatch;
use crate::datum::Datum;
use crate::error::{binary, from_binary, ExecError, Result};
use crate::format::{decode, encode, partition_for};
use crate::processing_log::ProcessingError;

/// A record decoded into the declared columns of its source.
pub struct DecodedRow<'r> {
    /// One datum per declared column, in order.
    pub values: Vec<Datum>,
    /// Event time: the timestamp column's value if set, else the record's.
    pub rowtime: i64,
    /// The record it came from.
    pub record: &'r StoredRecord,
    /// The record had no value: only the key columns are set.
    pub null_value: bool,
    /// A windowed source: the record's window, from its key.
    pub window: Option<(i64, i64)>,
}

/// A windowed key's key bytes and window: Kafka Streams writes a time
/// window as the key then its start (8 bytes, big-endian), a session as
/// the key then its end and its start.
pub fn split_window(def: &SourceDef, key: Option<&[u8]>) -> (Option<Vec<u8>>, Option<(i64, i64)>) {
    let Some(w) = def.window else {
        return (key.map(<[u8]>::to_vec), None);
    };
    let Some(k) = key else {
        return (None, None);
    };
    let be = |b: &[u8]| i64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
    match w.kind {
        brook_planner::catalog::WindowKind::Session if k.len() >= 16 => {
            let (k, rest) = k.split_at(k.len() - 16);
            let (end, start) = rest.split_at(8);
            (Some(k.to_vec()), Some((be(start), be(end))))
        }
        brook_planner::catalog::WindowKind::Tumbling
        | brook_planner::catalog::WindowKind::Hopping
            if k.len() >= 8 =>
        {
            let (k, start) = k.split_at(k.len() - 8);
            let start = be(start);
            (
                Some(k.to_vec()),
                Some((start, start.saturating_add(w.size_ms))),
            )
        }
        _ => (Some(k.to_vec()), None),
    }
}

/// Decodes records into rows of the source's declared columns; also returns
/// the records skipped as undecodable, as processing-log entries. A stream record without a
/// value is skipped too unless `keep_null_values` (then it is a row with
/// `null_value` set).
pub fn decode_rows<'r>(
    def: &SourceDef,
    records: &'r [StoredRecord],
    keep_null_values: bool,
) -> (Vec<DecodedRow<'r>>, Vec<ProcessingError>) {
    let keys: Vec<&Column> = def.key_columns().collect();
    let values: Vec<&Column> = def.value_columns().collect();
    let mut out = Vec::with_capacity(records.len());
    let mut skipped = Vec::new();
    for r in records {
        let null_value = r.record.value.is_none() && !values.is_empty();
        if null_value && (def.kind == SourceKind::Table || !keep_null_values) {
            // A table's tombstone is no row.
            continue;
        }
        let (key_bytes, window) = split_window(def, r.record.key.as_deref());
        let decoded = decode(def.key_format, &keys, key_bytes.as_deref(), false).and_then(|k| {
            Ok((
                k,
                decode(
                    def.value_format,
                    &values,
                    r.record.value.as_deref(),
                    def.unwrapped,
                )?,
            ))
        });
        match decoded {
            Ok((k, v)) => {
                let mut k = k.into_iter();
                let mut v = v.into_iter();
                let row: Vec<Datum> = def
                    .columns
                    .iter()
                    .map(|c| match &c.header {
                        Some(h) => header_datum(h, &r.record.headers),
                        None if c.key => k.next().unwrap_or(Datum::Null),
                        None => v.next().unwrap_or(Datum::Null),
                    })
                    .collect();
                let rowtime = match def.event_time(&row) {
                    Ok(t) => t.unwrap_or(r.record.timestamp),
                    Err(message) => {
                        tracing::warn!(source = %def.name, partition = r.partition, offset = r.offset, error = %message, "skipped record without a valid timestamp");
                        skipped.push(ProcessingError::Record {
                            message,
                            row: format!("{row:?}"),
                        });
                        continue;
                    }
                };
                out.push(DecodedRow {
                    values: row,
                    rowtime,
                    record: r,
                    null_value,
                    window,
                });
            }
            Err(e) => {
                skipped.push(ProcessingError::Deserialization {
                    topic: def.topic.clone(),
                    message: e.to_string(),
                    bytes: r.record.value.clone(),
                });
                tracing::warn!(source = %def.name, partition = r.partition, offset = r.offset, error = %e, "skipped undecodable record");
            }
        }
    }
    (out, skipped)
}

/// A header column's value: every header as `{KEY, VALUE}` structs, or
/// the value of the last header with the column's key (NULL if none).
fn header_datum(h: &HeaderSource, headers: &[(String, Option<Vec<u8>>)]) -> Datum {
    let bytes = |v: &Option<Vec<u8>>| v.clone().map_or(Datum::Null, Datum::Bytes);
    match h {
        HeaderSource::All => Datum::List(
            headers
                .iter()
                .map(|(k, v)| Datum::Struct(vec![Datum::Str(k.clone()), bytes(v)]))
                .collect(),
        ),
        HeaderSource::Key(key) => headers
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map_or(Datum::Null, |(_, v)| bytes(v)),
    }
}

/// A row in a source's batch schema: its declared columns, then ROWTIME,
/// ROWPARTITION and ROWOFFSET.
pub fn batch_row(
    def: &SourceDef,
    values: &[Datum],
    window: Option<(i64, i64)>,
    rowtime: i64,
    partition: i32,
    offset: i64,
) -> Result<Vec<ScalarValue>> {
    let mut row = Vec::with_capacity(values.len() + 5);
    for (d, c) in values.iter().zip(&def.columns) {
        row.push(d.to_scalar(&c.ty.arrow())?);
    }
    if def.window.is_some() {
        row.push(ScalarValue::Int64(window.map(|w| w.0)));
        row.push(ScalarValue::Int64(window.map(|w| w.1)));
    }
    row.extend([
        ScalarValue::Int64(Some(rowtime)),
        ScalarValue::Int32(Some(partition)),
        ScalarValue::Int64(Some(offset)),
    ]);
    Ok(row)
}

/// Decodes records into a change batch row by row, through `Datum`s and
/// scalars: the reference `decode::decode_batch`'s tests compare it with.
#[cfg(test)]
pub fn decode_batch_by_rows(
    def: &SourceDef,
    schema: &datafusion::arrow::datatypes::SchemaRef,
    records: &[StoredRecord],
) -> Result<(ChangeBatch, Vec<ProcessingError>)> {
    let (rows, skipped) = decode_rows(def, records, true);
    let mut scalars = Vec::with_capacity(rows.len());
    let mut rowtimes = Vec::with_capacity(rows.len());
    for row in &rows {
        let (partition, offset) = (row.record.partition as i32, row.record.offset as i64);
        scalars.push(batch_row(
            def,
            &row.values,
            row.window,
            row.rowtime,
            partition,
            offset,
        )?);
        rowtimes.push(row.rowtime);
    }
    let batch = ChangeBatch {
        batch: crate::change::rows_to_batch(schema, scalars)?,
        weights: vec![1; rows.len()],
        rowtimes,
        null_values: rows.iter().map(|r| r.null_value).collect(),
    };
    Ok((batch, skipped))
}

/// A row of a materialized table, as kept in the state store (in binary,
/// [`MvRow::to_bytes`]; its serde form is the JSON of earlier versions).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MvRow {
    /// Declared columns of the table, in order.
    pub values: Vec<Datum>,
    /// Event time of the last change.
    pub rowtime: i64,
    /// ROWPARTITION of the record behind the last change.
    #[serde(default)]
    pub partition: i32,
    /// ROWOFFSET of the record behind the last change (-1: not known, as
    /// for rows a query computed).
    #[serde(default = "unknown_offset")]
    pub offset: i64,
    /// A windowed table: the row's window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<(i64, i64)>,
}

fn unknown_offset() -> i64 {
    -1
}

/// [`MvRow`]'s binary form: every field, in order (postcard writes no
/// field names and cannot skip one).
#[derive(Serialize)]
struct MvRowOut<'a> {
    values: &'a [Datum],
    rowtime: i64,
    partition: i32,
    offset: i64,
    window: Option<(i64, i64)>,
}

/// [`MvRowOut`], read back.
#[derive(Deserialize)]
struct MvRowIn {
    values: Vec<Datum>,
    rowtime: i64,
    partition: i32,
    offset: i64,
    window: Option<(i64, i64)>,
}

impl MvRow {
    /// The row as the state store keeps it: binary (see
    /// [`crate::error::binary`]).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        binary(&MvRowOut {
            values: &self.values,
            rowtime: self.rowtime,
            partition: self.partition,
            offset: self.offset,
            window: self.window,
        })
    }

    /// A row written by [`MvRow::to_bytes`], or as JSON by an earlier
    /// version.
    pub fn from_bytes(bytes: &[u8]) -> Result<MvRow> {
        if bytes.first() == Some(&b'{') {
            return serde_json::from_slice(bytes)
                .map_err(|e| ExecError::Internal(format!("unreadable table row: {e}")));
        }
        let r: MvRowIn = from_binary(bytes, "table row")?;
        Ok(MvRow {
            values: r.values,
            rowtime: r.rowtime,
            partition: r.partition,
            offset: r.offset,
            window: r.window,
        })
    }
}

/// One record for a sink, with the materialized-view change it implies.
pub struct SinkRecord {
    /// Partition of the sink topic.
    pub partition: u32,
    /// The record.
    pub record: Record,
    /// For table sinks: the new row (`None` = deleted).
    pub mv: Option<Option<MvRow>>,
    /// A table sink's upsert that replaces the row the change before it
    /// retracted: the key had a row already (its window is known).
    pub replaces: bool,
}

/// Encodes a query's output changes for its sink. A table sink turns a
/// retraction followed by an insertion of the same key into one upsert and
/// a lone retraction into a tombstone; a stream sink writes insertions.
/// `computed_keys`: keys were computed by `PARTITION BY`, so a key whose
/// columns are all NULL is written as such rather than as no key.
pub fn encode_sink(
    sink: &SourceDef,
    out: &ChangeBatch,
    computed_keys: bool,
) -> Result<Vec<SinkRecord>> {
    let schema = out.batch.schema();
    let index: Vec<usize> = sink
        .columns
        .iter()
        .map(|c| {
            schema.index_of(&c.name).map_err(|_| {
                ExecError::Internal(format!("sink column {} missing from output", c.name))
            })
        })
        .collect::<Result<_>>()?;
    let keys: Vec<&Column> = sink.key_columns().collect();
    let values: Vec<&Column> = sink.value_columns().collect();
    let datum = |c: usize, i: usize| -> Result<Datum> {
        Ok(Datum::from_scalar(&ScalarValue::try_from_array(
            out.batch.column(index[c]),
            i,
        )?)?)
    };
    let key_positions: Vec<usize> = (0..sink.columns.len())
        .filter(|c| sink.columns[*c].key)
        .collect();
    let value_positions: Vec<usize> = (0..sink.columns.len())
        .filter(|c| sink.columns[*c].is_value())
        .collect();
    // JSON values are written from the arrays directly (a table's rows are
    // materialized from datums besides); other formats go through datums.
    let value_arrays: Vec<datafusion::arrow::array::ArrayRef> = value_positions
        .iter()
        .map(|c| std::sync::Arc::clone(out.batch.column(index[*c])))
        .collect();
    let json_values = (sink.value_format == Format::Json && !values.is_empty())
        .then(|| crate::encode::JsonColumns::new(&values, &value_arrays, sink.unwrapped));
    let ts_index = sink.timestamp_index();
    // A windowed sink's keys carry each row's window bounds.
    let bounds_column = |name: &str| {
        schema.index_of(name).ok().and_then(|c| {
            out.batch
                .column(c)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .cloned()
        })
    };
    let bounds = sink
        .window
        .and_then(|_| Some((bounds_column(WINDOWSTART)?, bounds_column(WINDOWEND)?)));
    // Per row: its key, window and unwindowed key.
    type Keyed = (Option<Vec<u8>>, Option<(i64, i64)>, Option<Vec<u8>>);
    let mut keyed: Vec<Keyed> = Vec::with_capacity(out.len());
    for i in 0..out.len() {
        let key_d: Vec<Datum> = key_positions
            .iter()
            .map(|c| datum(*c, i))
            .collect::<Result<_>>()?;
        let key_refs: Vec<&Datum> = key_d.iter().collect();
        let mut key = if !computed_keys && key_d.iter().all(|d| d.is_null()) {
            None
        } else {
            encode(sink.key_format, &keys, &key_refs, false)?
        };
        let mut window = None;
        // Windowed keys are partitioned by the key alone, as Kafka Streams
        // does: every window of a key is in one partition.
        let base_key = key.clone();
        if let Some(spec) = sink.window {
            // A windowed key: the key, then the window's start as 8
            // big-endian bytes (Kafka Streams' time-windowed keys); a
            // session's end, then its start.
            let bound = |a: &datafusion::arrow::array::Int64Array| {
                (!datafusion::arrow::array::Array::is_null(a, i)).then(|| a.value(i))
            };
            let Some((Some(start), Some(end))) = bounds.as_ref().map(|(s, e)| (bound(s), bound(e)))
            else {
                return Err(ExecError::Internal(
                    "a windowed row without its window".into(),
                ));
            };
            let mut bytes = key.unwrap_or_default();
            if spec.kind == brook_planner::catalog::WindowKind::Session {
                bytes.extend_from_slice(&end.to_be_bytes());
            }
            bytes.extend_from_slice(&start.to_be_bytes());
            key = Some(bytes);
            window = Some((start, end));
        }
        keyed.push((key, window, base_key));
    }
    let full_row =
        |i: usize| -> Result<Vec<Datum>> { (0..sink.columns.len()).map(|c| datum(c, i)).collect() };
    // Each value is allocated once, at about the size of the last one.
    let last_len = std::cell::Cell::new(64);
    let value_of = |i: usize, row: Option<&[Datum]>| -> Result<Option<Vec<u8>>> {
        if let Some(json) = &json_values {
            let mut bytes = Vec::with_capacity(last_len.get() + last_len.get() / 4);
            json.write(i, &mut bytes)?;
            last_len.set(bytes.len());
            return Ok(Some(bytes));
        }
        let owned;
        let row = match row {
            Some(r) => r,
            None => {
                owned = full_row(i)?;
                &owned
            }
        };
        let val_d: Vec<&Datum> = value_positions.iter().map(|c| &row[*c]).collect();
        encode(sink.value_format, &values, &val_d, sink.unwrapped)
    };
    let mut records = Vec::with_capacity(out.len());
    for i in 0..out.len() {
        let (key, window, base_key) = &keyed[i];
        let weight = out.weights[i];
        if sink.kind == SourceKind::Stream && weight <= 0 {
            continue;
        }
        let row = match sink.kind {
            SourceKind::Table => Some(full_row(i)?),
            SourceKind::Stream => None,
        };
        // `WITH (TIMESTAMP=…)` on the sink: the column's value is the
        // record's timestamp; records without a valid one are skipped,
        // as ksqlDB does.
        let event_time = match (ts_index, &row) {
            (None, _) => Ok(None),
            (Some(t), Some(row)) => sink.event_time_of(t, row.get(t)),
            (Some(t), None) => sink.event_time_of(t, Some(&datum(t, i)?)),
        };
        let rowtime = match event_time {
            Ok(t) => t.unwrap_or(out.rowtimes[i]),
            Err(error) => {
                tracing::warn!(sink = %sink.name, %error, "skipped output record without a valid timestamp");
                continue;
            }
        };
        let partition = partition_for(base_key.as_deref(), sink.partitions);
        match (sink.kind, weight > 0) {
            (SourceKind::Stream, _) => {
                let value = if out.null_values[i] {
                    None
                } else {
                    value_of(i, None)?
                };
                for _ in 0..weight {
                    let record = Record {
                        timestamp: rowtime,
                        key: key.clone(),
                        value: value.clone(),
                        headers: vec![],
                    };
                    records.push(SinkRecord {
                        partition,
                        record,
                        mv: None,
                        replaces: false,
                    });
                }
            }
            (SourceKind::Table, true) => {
                let row = row.unwrap_or_default();
                let record = Record {
                    timestamp: rowtime,
                    key: key.clone(),
                    value: value_of(i, Some(&row))?,
                    headers: vec![],
                };
                let mv = Some(Some(MvRow {
                    values: row,
                    rowtime,
                    partition: partition as i32,
                    offset: -1,
                    window: *window,
                }));
                let replaces = i > 0 && out.weights[i - 1] < 0 && keyed[i - 1].0 == *key;
                records.push(SinkRecord {
                    partition,
                    record,
                    mv,
                    replaces,
                });
            }
            (SourceKind::Table, false) => {
                let replaced =
                    i + 1 < out.len() && out.weights[i + 1] > 0 && keyed[i + 1].0 == *key;
                if !replaced {
                    let record = Record {
                        timestamp: rowtime,
                        key: key.clone(),
                        value: None,
                        headers: vec![],
                    };
                    records.push(SinkRecord {
                        partition,
                        record,
                        mv: Some(None),
                        replaces: false,
                    });
                }
            }
        }
    }
    Ok(records)
}

/// Encodes typed rows for appending to a source's topic.
pub fn encode_rows(
    def: &SourceDef,
    rows: &[(Option<i64>, Vec<ScalarValue>)],
    now_ms: i64,
) -> Result<Vec<(u32, Record)>> {
    let keys: Vec<&Column> = def.key_columns().collect();
    let values: Vec<&Column> = def.value_columns().collect();
    let mut out = Vec::with_capacity(rows.len());
    for (rowtime, row) in rows {
        let datums: Vec<Datum> = row
            .iter()
            .map(|v| Datum::from_scalar(v).map_err(ExecError::from))
            .collect::<Result<_>>()?;
        let key_d: Vec<&Datum> = def
            .columns
            .iter()
            .zip(&datums)
            .filter(|(c, _)| c.key)
            .map(|(_, d)| d)
            .collect();
        let val_d: Vec<&Datum> = def
            .columns
            .iter()
            .zip(&datums)
            .filter(|(c, _)| c.is_value())
            .map(|(_, d)| d)
            .collect();
        let key = encode(def.key_format, &keys, &key_d, false)?;
        let value = encode(def.value_format, &values, &val_d, def.unwrapped)?;
        let timestamp = match rowtime {
            Some(t) => *t,
            None => def
                .event_time(&datums)
                .map_err(ExecError::Serialization)?
                .unwrap_or(now_ms),
        };
        let partition = partition_for(key.as_deref(), def.partitions);
        out.push((
            partition,
            Record {
                timestamp,
                key,
                value,
                headers: vec![],
            },
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod mv_row_tests {
    use super::*;

    fn row(window: Option<(i64, i64)>) -> MvRow {
        MvRow {
            values: vec![
                Datum::Int(7),
                Datum::Str("a\"b".into()),
                Datum::Null,
                Datum::Float(0.5),
            ],
            rowtime: 1_700_000_000_000,
            partition: 3,
            offset: -1,
            window,
        }
    }

    #[test]
    fn rows_round_trip_in_binary_and_earlier_json_still_reads() {
        for window in [None, Some((1000, 2000))] {
            let r = row(window);
            let bytes = r.to_bytes().unwrap();
            let back = MvRow::from_bytes(&bytes).unwrap();
            assert_eq!(format!("{back:?}"), format!("{r:?}"));
            let json = serde_json::to_vec(&r).unwrap();
            assert!(bytes.len() < json.len());
            let legacy = MvRow::from_bytes(&json).unwrap();
            assert_eq!(format!("{legacy:?}"), format!("{r:?}"));
        }
        // Earlier versions' rows without the fields they defaulted.
        let one = serde_json::to_string(&Datum::Int(1)).unwrap();
        let old =
            MvRow::from_bytes(format!(r#"{{"values":[{one}],"rowtime":5}}"#).as_bytes()).unwrap();
        assert_eq!((old.partition, old.offset, old.window), (0, -1, None));
    }

    #[test]
    fn damaged_rows_are_an_error() {
        let bytes = row(Some((1, 2))).to_bytes().unwrap();
        for bad in [
            &bytes[..bytes.len() / 2],
            &[][..],
            b"{\"values\":",
            &[0x01, 0xff],
        ] {
            assert!(MvRow::from_bytes(bad).is_err(), "{bad:?}");
        }
    }
}
