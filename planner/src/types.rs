//! ksqlDB's SQL types and their Arrow counterparts.

use std::fmt;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::sql::sqlparser::ast::DataType as AstType;
use serde::{Deserialize, Serialize};

use crate::error::{PlanError, Result};

/// A column type as ksqlDB names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SqlType {
    /// `BOOLEAN`
    Boolean,
    /// `INT` / `INTEGER`: 32-bit signed.
    Int,
    /// `BIGINT`: 64-bit signed.
    Bigint,
    /// `DOUBLE`: 64-bit float.
    Double,
    /// `STRING` / `VARCHAR`.
    String,
    /// `TIMESTAMP`: milliseconds since the epoch, no zone.
    Timestamp,
}

impl SqlType {
    /// The Arrow type a column of this type has in batches.
    pub fn arrow(self) -> DataType {
        match self {
            SqlType::Boolean => DataType::Boolean,
            SqlType::Int => DataType::Int32,
            SqlType::Bigint => DataType::Int64,
            SqlType::Double => DataType::Float64,
            SqlType::String => DataType::Utf8,
            SqlType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, None),
        }
    }

    /// The SQL type of an Arrow type a query produced.
    pub fn from_arrow(t: &DataType) -> Result<SqlType> {
        Ok(match t {
            DataType::Boolean => SqlType::Boolean,
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::UInt8
            | DataType::UInt16 => SqlType::Int,
            DataType::Int64 | DataType::UInt32 | DataType::UInt64 => SqlType::Bigint,
            DataType::Float16 | DataType::Float32 | DataType::Float64 => SqlType::Double,
            DataType::Decimal128(..) | DataType::Decimal256(..) => SqlType::Double,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => SqlType::String,
            DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => SqlType::Timestamp,
            DataType::Null => SqlType::String,
            other => {
                return Err(PlanError::Unsupported(format!(
                    "type {other} is not supported yet"
                )))
            }
        })
    }

    /// The SQL type named by a parsed data type.
    pub fn from_ast(t: &AstType) -> Result<SqlType> {
        Ok(match t {
            AstType::Boolean | AstType::Bool => SqlType::Boolean,
            AstType::Int(_) | AstType::Integer(_) | AstType::Int4(_) | AstType::Int32 => {
                SqlType::Int
            }
            AstType::BigInt(_) | AstType::Int8(_) | AstType::Int64 => SqlType::Bigint,
            AstType::Double(_) | AstType::DoublePrecision | AstType::Float8 | AstType::Float64 => {
                SqlType::Double
            }
            AstType::String(_) | AstType::Varchar(_) | AstType::Text | AstType::CharVarying(_) => {
                SqlType::String
            }
            AstType::Timestamp(..) => SqlType::Timestamp,
            AstType::Custom(name, args)
                if args.is_empty() && name.to_string().eq_ignore_ascii_case("STRING") =>
            {
                SqlType::String
            }
            other => {
                return Err(PlanError::Unsupported(format!(
                    "type {other} is not supported yet"
                )))
            }
        })
    }
}

impl fmt::Display for SqlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SqlType::Boolean => "BOOLEAN",
            SqlType::Int => "INTEGER",
            SqlType::Bigint => "BIGINT",
            SqlType::Double => "DOUBLE",
            SqlType::String => "STRING",
            SqlType::Timestamp => "TIMESTAMP",
        })
    }
}
