//! The catalog model: streams, tables and persistent queries.
//!
//! This is plain data. The server persists the DDL that built it as a
//! command log and replays it at start; the planner reads it to bind names.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::datum::Datum;
use crate::error::{PlanError, Result};
use crate::types::SqlType;

/// Pseudo-column: the record's event time in ms.
pub const ROWTIME: &str = "ROWTIME";
/// Pseudo-column: the record's partition.
pub const ROWPARTITION: &str = "ROWPARTITION";
/// Pseudo-column: the record's offset in its partition.
pub const ROWOFFSET: &str = "ROWOFFSET";
/// A windowed source's (or windowed aggregation's) window start, ms.
pub const WINDOWSTART: &str = "WINDOWSTART";
/// A windowed source's (or windowed aggregation's) window end, ms.
pub const WINDOWEND: &str = "WINDOWEND";
/// Number of pseudo-columns that follow the declared columns in a source's
/// batch schema.
pub const PSEUDO_COLUMNS: usize = 3;

/// Stream (append-only) or table (changelog keyed by its primary key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceKind {
    /// `CREATE STREAM`
    Stream,
    /// `CREATE TABLE`
    Table,
}

impl SourceKind {
    /// `stream` or `table`, as error messages say it.
    pub fn noun(self) -> &'static str {
        match self {
            SourceKind::Stream => "stream",
            SourceKind::Table => "table",
        }
    }
}

/// Serialization format of keys or values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Format {
    /// A JSON object of the columns (or a bare value for one unwrapped column).
    Json,
    /// Delimited text (comma-separated unless `VALUE_DELIMITER` /
    /// `KEY_DELIMITER` say otherwise).
    Delimited(char),
    /// Kafka's primitive serializers: big-endian integers and doubles, UTF-8 strings.
    Kafka,
    /// No bytes (no key columns).
    None,
}

impl Format {
    /// Parses a format name as given in `WITH (…)`.
    pub fn parse(s: &str) -> Result<Format> {
        Ok(match s.to_ascii_uppercase().as_str() {
            "JSON" => Format::Json,
            "DELIMITED" => Format::Delimited(','),
            "KAFKA" => Format::Kafka,
            "NONE" => Format::None,
            "AVRO" | "PROTOBUF" | "PROTOBUF_NOSR" | "JSON_SR" => {
                return Err(PlanError::Unsupported(format!(
                    "format {s} is not supported yet"
                )))
            }
            _ => return Err(PlanError::Invalid(format!("Unknown format: {s}"))),
        })
    }

    /// The format's name.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "JSON",
            Format::Delimited(_) => "DELIMITED",
            Format::Kafka => "KAFKA",
            Format::None => "NONE",
        }
    }
}

/// A declared column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// Name, as stored (unquoted names are upper-cased).
    pub name: String,
    /// Type.
    pub ty: SqlType,
    /// Part of the key (`KEY` for streams, `PRIMARY KEY` for tables).
    pub key: bool,
    /// `HEADERS` / `HEADER('k')`: read from the record's headers rather
    /// than from its key or value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderSource>,
}

/// Where a header column's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeaderSource {
    /// `HEADERS`: every header, as `ARRAY<STRUCT<KEY STRING, VALUE BYTES>>`.
    All,
    /// `HEADER('k')`: the last header named k, as BYTES.
    Key(String),
}

impl Column {
    /// A key or value column (no header).
    pub fn new(name: impl Into<String>, ty: SqlType, key: bool) -> Column {
        Column {
            name: name.into(),
            ty,
            key,
            header: None,
        }
    }

    /// Stored in the record's value (neither key nor header).
    pub fn is_value(&self) -> bool {
        !self.key && self.header.is_none()
    }

    /// ` KEY`, ` HEADERS` or ` HEADER('k')` after the type, as declared.
    pub fn suffix(&self, kind: SourceKind) -> String {
        match (&self.header, self.key, kind) {
            (Some(HeaderSource::All), ..) => " HEADERS".into(),
            (Some(HeaderSource::Key(k)), ..) => format!(" HEADER('{k}')"),
            (None, true, SourceKind::Table) => " PRIMARY KEY".into(),
            (None, true, _) => " KEY".into(),
            (None, false, _) => String::new(),
        }
    }
}

/// A stream or a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceDef {
    /// Name (upper-cased unless quoted).
    pub name: String,
    /// Stream or table.
    pub kind: SourceKind,
    /// Key columns first, then value columns, in declaration order.
    pub columns: Vec<Column>,
    /// The topic holding its records.
    pub topic: String,
    /// Partitions of the topic.
    pub partitions: u32,
    /// Format of record keys.
    pub key_format: Format,
    /// Format of record values.
    pub value_format: Format,
    /// A column whose value is the event time instead of the record's timestamp.
    pub timestamp_column: Option<String>,
    /// `TIMESTAMP_FORMAT`: the Java pattern a STRING timestamp column is
    /// parsed with.
    #[serde(default)]
    pub timestamp_format: Option<String>,
    /// The persistent query writing this source, if it was created `AS SELECT`.
    pub query_id: Option<String>,
    /// `WITH (RETENTION_MS=…)` for a topic Brook creates.
    #[serde(default)]
    pub retention_ms: Option<i64>,
    /// `WITH (RETENTION_BYTES=…)` for a topic Brook creates.
    #[serde(default)]
    pub retention_bytes: Option<u64>,
    /// The key format declared for a source without key columns (its
    /// `key_format` is NONE); a `PARTITION BY` of it writes keys in it.
    #[serde(default)]
    pub keyless_format: Option<Format>,
    /// `WRAP_SINGLE_VALUE=false`: the single value column is written as a
    /// bare value rather than an object of one field.
    #[serde(default)]
    pub unwrapped: bool,
    /// `CREATE SOURCE STREAM|TABLE`: read-only (no INSERT, ALTER or
    /// DELETE TOPIC).
    #[serde(default)]
    pub read_only: bool,
    /// A windowed aggregation's result: its keys carry the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowSpec>,
}

/// TUMBLING, HOPPING or SESSION.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WindowKind {
    /// Fixed windows, `SIZE` apart.
    Tumbling,
    /// Fixed windows `SIZE` long, `ADVANCE BY` apart.
    Hopping,
    /// Activity separated by gaps longer than `SIZE`.
    Session,
}

/// A `WINDOW …` clause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSpec {
    /// The kind.
    pub kind: WindowKind,
    /// `SIZE` (the gap of a session window), ms.
    pub size_ms: i64,
    /// `ADVANCE BY` (hopping), ms; `size_ms` otherwise.
    pub advance_ms: i64,
    /// `GRACE PERIOD`, ms: how late a record may be for its window (24
    /// hours when not given, as in ksqlDB).
    pub grace_ms: i64,
    /// `RETENTION`, ms, if given.
    pub retention_ms: Option<i64>,
    /// `GRACE PERIOD` was written (`EMIT FINAL` defaults it to zero).
    #[serde(default)]
    pub grace_given: bool,
}

impl WindowSpec {
    /// The windows `[start, end)` a record at `ts` falls in (tumbling and
    /// hopping), earliest first.
    pub fn windows_of(&self, ts: i64) -> Vec<(i64, i64)> {
        let advance = self.advance_ms.max(1);
        let last = ts.div_euclid(advance) * advance;
        let mut out = Vec::new();
        let mut start = last;
        while start > ts.saturating_sub(self.size_ms) && start >= 0 {
            out.push((start, start.saturating_add(self.size_ms)));
            start -= advance;
        }
        out.reverse();
        out
    }
}

impl SourceDef {
    /// Position in `columns` of the `TIMESTAMP` column, if any.
    pub fn timestamp_index(&self) -> Option<usize> {
        let t = self.timestamp_column.as_ref()?;
        self.columns.iter().position(|c| &c.name == t)
    }

    /// The event time a row of `columns` carries in its `TIMESTAMP`
    /// column: `Ok(None)` when there is no such column or it is NULL (the
    /// record's own timestamp applies), an error when the value cannot be
    /// parsed or is negative (ksqlDB skips such records).
    pub fn event_time(&self, row: &[Datum]) -> Result<Option<i64>, String> {
        let Some(i) = self.timestamp_index() else {
            return Ok(None);
        };
        self.event_time_of(i, row.get(i))
    }

    /// [`SourceDef::event_time`] given the value of the `TIMESTAMP` column
    /// (at position `i`).
    pub fn event_time_of(&self, i: usize, value: Option<&Datum>) -> Result<Option<i64>, String> {
        let t = match (value, &self.timestamp_format) {
            (Some(Datum::Int(t)), _) => *t,
            (Some(Datum::Str(s)), Some(pattern)) => {
                crate::functions::scalar::parse_timestamp_ms(s, pattern)?
            }
            _ => return Ok(None),
        };
        if t < 0 {
            return Err(format!(
                "Timestamp extracted from column {} is negative: {t}",
                self.columns[i].name
            ));
        }
        Ok(Some(t))
    }

    /// Key columns, in order.
    pub fn key_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| c.key)
    }

    /// The value columns.
    pub fn value_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| c.is_value())
    }

    /// The header columns.
    pub fn header_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| c.header.is_some())
    }

    /// A column by name.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The Arrow schema of the source's batches: declared columns, then
    /// `ROWTIME`, `ROWPARTITION`, `ROWOFFSET`.
    pub fn batch_schema(&self) -> SchemaRef {
        let mut fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| Field::new(&c.name, c.ty.arrow(), true))
            .collect();
        if self.window.is_some() {
            // A windowed source's rows carry their window's bounds.
            fields.push(Field::new(WINDOWSTART, DataType::Int64, true));
            fields.push(Field::new(WINDOWEND, DataType::Int64, true));
        }
        fields.push(Field::new(ROWTIME, DataType::Int64, false));
        fields.push(Field::new(ROWPARTITION, DataType::Int32, false));
        fields.push(Field::new(ROWOFFSET, DataType::Int64, false));
        Arc::new(Schema::new(fields))
    }

    /// The Arrow schema of the declared columns only (pull results, sinks).
    pub fn row_schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| Field::new(&c.name, c.ty.arrow(), true))
            .collect();
        Arc::new(Schema::new(fields))
    }
}

/// A persistent query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryDef {
    /// Id like `CTAS_TOTALS_3`.
    pub id: String,
    /// The statement text that created it.
    pub sql: String,
    /// The source it writes.
    pub sink: String,
    /// The sources it reads.
    pub sources: Vec<String>,
    /// `PAUSE`d: not running, its state and position kept for `RESUME`.
    #[serde(default)]
    pub paused: bool,
}

/// All streams, tables and persistent queries.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Catalog {
    /// Streams and tables by name.
    pub sources: BTreeMap<String, SourceDef>,
    /// Persistent queries by id.
    pub queries: BTreeMap<String, QueryDef>,
    /// Custom types (`CREATE TYPE`) by name.
    #[serde(default)]
    pub types: BTreeMap<String, crate::types::SqlType>,
}

impl Catalog {
    /// A source by name, or a "does not exist" error.
    pub fn source(&self, name: &str) -> Result<&SourceDef> {
        self.sources.get(name).ok_or_else(|| PlanError::NotFound {
            kind: "stream or table",
            name: name.to_string(),
        })
    }

    /// `ty` with every custom type name replaced by its definition.
    pub fn resolve_type(&self, ty: &crate::types::SqlType) -> Result<crate::types::SqlType> {
        ty.resolve(&|name| self.types.get(name).cloned())
    }

    /// Column specs with their custom types resolved.
    pub fn resolve_columns(
        &self,
        columns: &[crate::parser::ColumnSpec],
    ) -> Result<Vec<crate::parser::ColumnSpec>> {
        columns
            .iter()
            .map(|c| {
                Ok(crate::parser::ColumnSpec {
                    ty: self.resolve_type(&c.ty)?,
                    ..c.clone()
                })
            })
            .collect()
    }

    /// Queries reading `source`.
    pub fn readers_of(&self, source: &str) -> Vec<&QueryDef> {
        self.queries
            .values()
            .filter(|q| q.sources.iter().any(|s| s == source))
            .collect()
    }
}
