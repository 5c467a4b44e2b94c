//! The processing log: records a query could not deserialize, and
//! expressions that failed on a row, as ksqlDB's `KSQL_PROCESSING_LOG`.
//!
//! A failing record never stops a query: an undecodable record is skipped,
//! a failing expression yields NULL for that row (a failing filter drops
//! it), and each failure is appended here as a JSON record. The stream
//! `KSQL_PROCESSING_LOG` reads the topic like any other source.

use brook_planner::catalog::{Column, Format, SourceDef, SourceKind};
use brook_planner::types::SqlType;
use brook_storage::Record;
use serde_json::json;

use crate::datum::B64;
use base64::Engine as _;

/// The stream over the processing log.
pub const STREAM: &str = "KSQL_PROCESSING_LOG";
/// Its topic (ksqlDB's default name).
pub const TOPIC: &str = "default_ksql_processing_log";

/// One failure.
#[derive(Debug, Clone, PartialEq)]
pub enum ProcessingError {
    /// A record's key or value did not decode into its source's columns.
    Deserialization {
        /// The source topic.
        topic: String,
        /// What failed.
        message: String,
        /// The undecodable bytes (the value, or the key if the value decoded).
        bytes: Option<Vec<u8>>,
    },
    /// An expression failed on a row.
    Record {
        /// What failed.
        message: String,
        /// The input row, as text.
        row: String,
    },
}

impl ProcessingError {
    /// The log record for this failure, written by `logger` (the query id).
    pub fn to_record(&self, logger: &str, now_ms: i64) -> Record {
        let message = match self {
            ProcessingError::Deserialization {
                topic,
                message,
                bytes,
            } => json!({
                "TYPE": 0,
                "DESERIALIZATIONERROR": {
                    "TARGET": "value",
                    "ERRORMESSAGE": message,
                    "RECORDB64": bytes.as_ref().map(|b| B64.encode(b)),
                    "CAUSE": [],
                    "topic": topic,
                },
                "RECORDPROCESSINGERROR": null,
            }),
            ProcessingError::Record { message, row } => json!({
                "TYPE": 1,
                "DESERIALIZATIONERROR": null,
                "RECORDPROCESSINGERROR": {
                    "ERRORMESSAGE": message,
                    "RECORD": row,
                    "CAUSE": [],
                },
            }),
        };
        let value = json!({
            "LOGGER": format!("processing.{logger}"),
            "LEVEL": "ERROR",
            "TIME": now_ms,
            "MESSAGE": message,
        });
        Record {
            timestamp: now_ms,
            key: None,
            value: Some(value.to_string().into_bytes()),
            headers: vec![],
        }
    }
}

/// The definition of `KSQL_PROCESSING_LOG`.
pub fn source_def() -> SourceDef {
    let s = |n: &str, t: SqlType| (n.to_string(), t);
    let message = SqlType::Struct(vec![
        s("TYPE", SqlType::Int),
        s(
            "DESERIALIZATIONERROR",
            SqlType::Struct(vec![
                s("TARGET", SqlType::String),
                s("ERRORMESSAGE", SqlType::String),
                s("RECORDB64", SqlType::String),
                s("CAUSE", SqlType::Array(Box::new(SqlType::String))),
                s("topic", SqlType::String),
            ]),
        ),
        s(
            "RECORDPROCESSINGERROR",
            SqlType::Struct(vec![
                s("ERRORMESSAGE", SqlType::String),
                s("RECORD", SqlType::String),
                s("CAUSE", SqlType::Array(Box::new(SqlType::String))),
            ]),
        ),
    ]);
    let col = |name: &str, ty: SqlType| Column::new(name, ty, false);
    SourceDef {
        name: STREAM.into(),
        kind: SourceKind::Stream,
        columns: vec![
            col("LOGGER", SqlType::String),
            col("LEVEL", SqlType::String),
            col("TIME", SqlType::Bigint),
            col("MESSAGE", message),
        ],
        topic: TOPIC.into(),
        partitions: 1,
        key_format: Format::None,
        value_format: Format::Json,
        timestamp_column: None,
        timestamp_format: None,
        query_id: None,
        retention_ms: None,
        retention_bytes: None,
        keyless_format: None,
        unwrapped: false,
        read_only: true,
        window: None,
    }
}
