//! Harnesses for `cargo fuzz` (the targets in `fuzz/` call these) and for
//! the tests that replay the committed corpus. Each takes untrusted bytes
//! and panics only on a bug.

use brook_planner::catalog::{Column, Format, SourceDef, SourceKind};
use brook_planner::types::SqlType;
use brook_storage::{Record, StoredRecord};

use crate::format::{decode, encode};
use crate::Datum;

fn types() -> Vec<SqlType> {
    let dec = SqlType::Decimal {
        precision: 10,
        scale: 2,
    };
    let strukt = SqlType::Struct(vec![
        ("A".into(), SqlType::Int),
        ("B".into(), SqlType::Array(Box::new(SqlType::String))),
    ]);
    vec![
        SqlType::Boolean,
        SqlType::Int,
        SqlType::Bigint,
        SqlType::Double,
        SqlType::String,
        SqlType::Timestamp,
        dec.clone(),
        SqlType::Bytes,
        SqlType::Date,
        SqlType::Time,
        SqlType::Array(Box::new(dec)),
        SqlType::Map(Box::new(SqlType::String), Box::new(SqlType::Bigint)),
        strukt,
    ]
}

fn formats() -> [Format; 4] {
    [
        Format::Json,
        Format::Delimited(','),
        Format::Delimited('|'),
        Format::Kafka,
    ]
}

/// Decodes `bytes` as a record key and value of every format, for one and
/// two columns of every type, wrapped and unwrapped; encodes back what
/// decodes. Each returns a value or an error, never a panic.
pub fn record_decoders(bytes: &[u8]) {
    for ty in types() {
        for key in [false, true] {
            let one = [Column::new("X", ty.clone(), key)];
            let two = [
                Column::new("X", ty.clone(), key),
                Column::new("Y", SqlType::String, key),
            ];
            let sets: [Vec<&Column>; 2] = [one.iter().collect(), two.iter().collect()];
            for columns in &sets {
                for format in formats() {
                    for unwrapped in [false, true] {
                        if let Ok(values) = decode(format, columns, Some(bytes), unwrapped) {
                            let refs: Vec<&Datum> = values.iter().collect();
                            let _ = encode(format, columns, &refs, unwrapped);
                        }
                    }
                }
            }
        }
    }
    columnar(bytes);
}

/// Decodes `bytes` as a stream's record value with the columnar decoder
/// (the JSON scanner and the serde visitor, DELIMITED split in place) for
/// a source of the types those read, with and without a column of another
/// type.
fn columnar(bytes: &[u8]) {
    // The types the fast paths read, and one (DECIMAL) they leave.
    let (fast, others): (Vec<SqlType>, Vec<SqlType>) =
        types().into_iter().partition(crate::decode::read_fast);
    let timestamp = fast
        .iter()
        .position(|t| *t == SqlType::Timestamp)
        .map(|i| format!("C{i}"));
    let mut columns: Vec<Column> = fast
        .into_iter()
        .enumerate()
        .map(|(i, ty)| Column::new(format!("C{i}"), ty, false))
        .collect();
    let records = [StoredRecord {
        partition: 0,
        offset: 0,
        record: Record {
            timestamp: 0,
            key: None,
            value: Some(bytes.to_vec()),
            headers: vec![],
        },
    }];
    for other in [false, true] {
        if other {
            columns.push(Column::new("D", others[0].clone(), false));
        }
        for format in formats() {
            let def = SourceDef {
                name: "S".into(),
                kind: SourceKind::Stream,
                columns: columns.clone(),
                topic: "s".into(),
                partitions: 1,
                key_format: Format::Kafka,
                value_format: format,
                timestamp_column: timestamp.clone(),
                timestamp_format: None,
                query_id: None,
                retention_ms: None,
                retention_bytes: None,
                keyless_format: None,
                unwrapped: false,
                read_only: false,
                window: None,
            };
            let _ = crate::decode::decode_batch(&def, &def.batch_schema(), &records);
        }
    }
}
