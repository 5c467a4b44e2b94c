//! ksqlDB's SQL types, their Arrow counterparts, and the type grammar
//! (`ARRAY<INT>`, `MAP<STRING, DOUBLE>`, `STRUCT<A INT, B STRING>`,
//! `DECIMAL(4, 2)`).

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;
use serde::{Deserialize, Serialize};

use crate::error::{PlanError, Result};

/// Largest DECIMAL precision (Arrow's Decimal128).
pub const MAX_DECIMAL_PRECISION: u8 = 38;

/// A column type as ksqlDB names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// `DECIMAL(precision, scale)`: exact.
    Decimal {
        /// Total digits, 1..=38.
        precision: u8,
        /// Digits after the point, 0..=precision.
        scale: u8,
    },
    /// `BYTES`
    Bytes,
    /// `DATE`: days since the epoch.
    Date,
    /// `TIME`: milliseconds since midnight.
    Time,
    /// `ARRAY<element>`
    Array(Box<SqlType>),
    /// `MAP<key, value>`
    Map(Box<SqlType>, Box<SqlType>),
    /// `STRUCT<name type, …>`
    Struct(Vec<(String, SqlType)>),
    /// A name given by `CREATE TYPE`, not yet resolved. Never stored in the
    /// catalog: the binder replaces it with the type it names.
    Custom(String),
}

impl SqlType {
    /// The Arrow type a column of this type has in batches.
    pub fn arrow(&self) -> DataType {
        match self {
            SqlType::Boolean => DataType::Boolean,
            SqlType::Int => DataType::Int32,
            SqlType::Bigint => DataType::Int64,
            SqlType::Double => DataType::Float64,
            SqlType::String | SqlType::Custom(_) => DataType::Utf8,
            SqlType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, None),
            SqlType::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale as i8),
            SqlType::Bytes => DataType::Binary,
            SqlType::Date => DataType::Date32,
            SqlType::Time => DataType::Time32(TimeUnit::Millisecond),
            SqlType::Array(e) => DataType::List(Arc::new(Field::new("item", e.arrow(), true))),
            SqlType::Map(k, v) => map_type(k.arrow(), v.arrow()),
            SqlType::Struct(fields) => DataType::Struct(
                fields
                    .iter()
                    .map(|(n, t)| Field::new(n, t.arrow(), true))
                    .collect::<Fields>(),
            ),
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
            DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => SqlType::Decimal {
                precision: (*p).min(MAX_DECIMAL_PRECISION),
                scale: (*s).max(0) as u8,
            },
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => SqlType::String,
            DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
            | DataType::FixedSizeBinary(_) => SqlType::Bytes,
            DataType::Timestamp(..) | DataType::Date64 => SqlType::Timestamp,
            DataType::Date32 => SqlType::Date,
            DataType::Time32(_) | DataType::Time64(_) => SqlType::Time,
            DataType::List(f)
            | DataType::LargeList(f)
            | DataType::FixedSizeList(f, _)
            | DataType::ListView(f)
            | DataType::LargeListView(f) => {
                SqlType::Array(Box::new(SqlType::from_arrow(f.data_type())?))
            }
            DataType::Map(entries, _) => match entries.data_type() {
                DataType::Struct(kv) if kv.len() == 2 => SqlType::Map(
                    Box::new(SqlType::from_arrow(kv[0].data_type())?),
                    Box::new(SqlType::from_arrow(kv[1].data_type())?),
                ),
                other => {
                    return Err(PlanError::Unsupported(format!(
                        "map entries of type {other} are not supported"
                    )))
                }
            },
            DataType::Struct(fields) => SqlType::Struct(
                fields
                    .iter()
                    .map(|f| Ok((f.name().clone(), SqlType::from_arrow(f.data_type())?)))
                    .collect::<Result<_>>()?,
            ),
            DataType::Null => SqlType::String,
            other => {
                return Err(PlanError::Unsupported(format!(
                    "type {other} is not supported yet"
                )))
            }
        })
    }

    /// Whether values of this type are numbers (ksqlDB's numeric family).
    pub fn is_numeric(&self) -> bool {
        matches!(
            self,
            SqlType::Int | SqlType::Bigint | SqlType::Double | SqlType::Decimal { .. }
        )
    }

    /// Whether this type has no parts (not ARRAY, MAP or STRUCT).
    pub fn is_primitive(&self) -> bool {
        !matches!(
            self,
            SqlType::Array(_) | SqlType::Map(..) | SqlType::Struct(_)
        )
    }

    /// Replaces every [`SqlType::Custom`] name with the type `lookup` gives.
    pub fn resolve(&self, lookup: &dyn Fn(&str) -> Option<SqlType>) -> Result<SqlType> {
        Ok(match self {
            SqlType::Custom(name) => {
                lookup(name).ok_or_else(|| PlanError::Invalid(format!("Unknown type: {name}")))?
            }
            SqlType::Array(e) => SqlType::Array(Box::new(e.resolve(lookup)?)),
            SqlType::Map(k, v) => {
                SqlType::Map(Box::new(k.resolve(lookup)?), Box::new(v.resolve(lookup)?))
            }
            SqlType::Struct(fields) => SqlType::Struct(
                fields
                    .iter()
                    .map(|(n, t)| Ok((n.clone(), t.resolve(lookup)?)))
                    .collect::<Result<_>>()?,
            ),
            other => other.clone(),
        })
    }
}

/// The Arrow map type with the given key and value types.
pub fn map_type(key: DataType, value: DataType) -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            "entries",
            DataType::Struct(Fields::from(vec![
                Field::new("key", key, false),
                Field::new("value", value, true),
            ])),
            false,
        )),
        false,
    )
}

impl SqlType {
    /// The type's name without parameters (`ARRAY`, `DECIMAL`), as
    /// ksqlDB's format errors say it.
    pub fn base_name(&self) -> &'static str {
        match self {
            SqlType::Boolean => "BOOLEAN",
            SqlType::Int => "INTEGER",
            SqlType::Bigint => "BIGINT",
            SqlType::Double => "DOUBLE",
            SqlType::String => "STRING",
            SqlType::Timestamp => "TIMESTAMP",
            SqlType::Decimal { .. } => "DECIMAL",
            SqlType::Bytes => "BYTES",
            SqlType::Date => "DATE",
            SqlType::Time => "TIME",
            SqlType::Array(_) => "ARRAY",
            SqlType::Map(..) => "MAP",
            SqlType::Struct(_) => "STRUCT",
            SqlType::Custom(_) => "CUSTOM",
        }
    }

    /// The type as ksqlDB prints it in schemas of error messages: struct
    /// field names in backticks.
    pub fn quoted(&self) -> String {
        match self {
            SqlType::Array(e) => format!("ARRAY<{}>", e.quoted()),
            SqlType::Map(k, v) => format!("MAP<{}, {}>", k.quoted(), v.quoted()),
            SqlType::Struct(fields) => format!(
                "STRUCT<{}>",
                fields
                    .iter()
                    .map(|(n, t)| format!("`{n}` {}", t.quoted()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            other => other.to_string(),
        }
    }

    /// Whether this is, or contains, a MAP.
    pub fn contains_map(&self) -> bool {
        match self {
            SqlType::Map(..) => true,
            SqlType::Array(e) => e.contains_map(),
            SqlType::Struct(fields) => fields.iter().any(|(_, t)| t.contains_map()),
            _ => false,
        }
    }
}

impl fmt::Display for SqlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqlType::Boolean => f.write_str("BOOLEAN"),
            SqlType::Int => f.write_str("INTEGER"),
            SqlType::Bigint => f.write_str("BIGINT"),
            SqlType::Double => f.write_str("DOUBLE"),
            SqlType::String => f.write_str("STRING"),
            SqlType::Timestamp => f.write_str("TIMESTAMP"),
            SqlType::Decimal { precision, scale } => write!(f, "DECIMAL({precision}, {scale})"),
            SqlType::Bytes => f.write_str("BYTES"),
            SqlType::Date => f.write_str("DATE"),
            SqlType::Time => f.write_str("TIME"),
            SqlType::Array(e) => write!(f, "ARRAY<{e}>"),
            SqlType::Map(k, v) => write!(f, "MAP<{k}, {v}>"),
            SqlType::Struct(fields) => {
                f.write_str("STRUCT<")?;
                for (i, (n, t)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{n} {t}")?;
                }
                f.write_str(">")
            }
            SqlType::Custom(name) => f.write_str(name),
        }
    }
}

/// Parses a ksqlDB type from its text (`MAP<STRING, ARRAY<INT>>`).
pub fn parse_type_text(text: &str) -> Result<SqlType> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    let dialect = GenericDialect {};
    let mut p = Parser::new(&dialect)
        .try_with_sql(text)
        .map_err(|e| PlanError::Syntax(format!("syntax error: {e}")))?;
    let t = parse_type(&mut p).map_err(|e| PlanError::Syntax(format!("syntax error: {e}")))?;
    if p.peek_token().token != Token::EOF {
        return Err(PlanError::Syntax(format!(
            "syntax error: unexpected text after type {t}"
        )));
    }
    Ok(t)
}

/// Parses a ksqlDB type from the parser's tokens. Nested `>>` closes two
/// levels. Unknown names are custom types (`CREATE TYPE`).
pub fn parse_type(p: &mut Parser) -> std::result::Result<SqlType, ParserError> {
    let mut pending_gt = 0usize;
    let t = parse_type_inner(p, &mut pending_gt, 0)?;
    if pending_gt > 0 {
        return Err(ParserError::ParserError("unexpected '>' in type".into()));
    }
    Ok(t)
}

const TYPE_DEPTH_LIMIT: usize = 32;

fn expect_gt(p: &mut Parser, pending: &mut usize) -> std::result::Result<(), ParserError> {
    if *pending > 0 {
        *pending -= 1;
        return Ok(());
    }
    let t = p.next_token();
    match t.token {
        Token::Gt => Ok(()),
        Token::ShiftRight => {
            *pending += 1;
            Ok(())
        }
        _ => p.expected("'>'", t),
    }
}

fn parse_type_inner(
    p: &mut Parser,
    pending_gt: &mut usize,
    depth: usize,
) -> std::result::Result<SqlType, ParserError> {
    if depth > TYPE_DEPTH_LIMIT {
        return Err(ParserError::RecursionLimitExceeded);
    }
    let t = p.next_token();
    let Token::Word(w) = &t.token else {
        return p.expected("a type", t);
    };
    if w.quote_style.is_some() {
        return Ok(SqlType::Custom(w.value.clone()));
    }
    let name = w.value.to_ascii_uppercase();
    Ok(match name.as_str() {
        "NULL" => {
            return Err(ParserError::ParserError(format!(
                "Syntax Error: NULL is not a type, at {}",
                t.span.start
            )))
        }
        "BOOLEAN" | "BOOL" => SqlType::Boolean,
        "INT" | "INTEGER" => SqlType::Int,
        "BIGINT" => SqlType::Bigint,
        "DOUBLE" => {
            // DOUBLE PRECISION
            let _ = p.parse_keyword(datafusion::sql::sqlparser::keywords::Keyword::PRECISION);
            SqlType::Double
        }
        "STRING" | "VARCHAR" | "TEXT" => {
            if p.consume_token(&Token::LParen) {
                // VARCHAR(n): the length is ignored, as ksqlDB does.
                p.parse_literal_uint()?;
                p.expect_token(&Token::RParen)?;
            }
            SqlType::String
        }
        "TIMESTAMP" => SqlType::Timestamp,
        "BYTES" => SqlType::Bytes,
        "DATE" => SqlType::Date,
        "TIME" => SqlType::Time,
        "DECIMAL" | "NUMERIC" => {
            p.expect_token(&Token::LParen)?;
            let precision = p.parse_literal_uint()?;
            let scale = if p.consume_token(&Token::Comma) {
                p.parse_literal_uint()?
            } else {
                0
            };
            p.expect_token(&Token::RParen)?;
            if precision == 0 || precision > u64::from(MAX_DECIMAL_PRECISION) {
                return Err(ParserError::ParserError(format!(
                    "DECIMAL precision must be between 1 and {MAX_DECIMAL_PRECISION}: {precision}"
                )));
            }
            if scale > precision {
                return Err(ParserError::ParserError(format!(
                    "DECIMAL scale must not exceed precision: DECIMAL({precision}, {scale})"
                )));
            }
            SqlType::Decimal {
                precision: precision as u8,
                scale: scale as u8,
            }
        }
        "ARRAY" => {
            p.expect_token(&Token::Lt)?;
            let e = parse_type_inner(p, pending_gt, depth + 1)?;
            expect_gt(p, pending_gt)?;
            SqlType::Array(Box::new(e))
        }
        "MAP" => {
            p.expect_token(&Token::Lt)?;
            let k = parse_type_inner(p, pending_gt, depth + 1)?;
            if *pending_gt > 0 {
                return p.expected("','", p.peek_token());
            }
            p.expect_token(&Token::Comma)?;
            let v = parse_type_inner(p, pending_gt, depth + 1)?;
            expect_gt(p, pending_gt)?;
            SqlType::Map(Box::new(k), Box::new(v))
        }
        "STRUCT" => {
            if p.consume_token(&Token::Neq) {
                return Ok(SqlType::Struct(Vec::new())); // STRUCT<>
            }
            p.expect_token(&Token::Lt)?;
            let mut fields: Vec<(String, SqlType)> = Vec::new();
            if p.consume_token(&Token::Gt) {
                return Ok(SqlType::Struct(fields));
            }
            loop {
                let field = p.parse_identifier()?;
                let ty = parse_type_inner(p, pending_gt, depth + 1)?;
                if fields.iter().any(|(n, _)| *n == field.value) {
                    return Err(ParserError::ParserError(format!(
                        "Duplicate field names found in STRUCT: '{}'",
                        field.value
                    )));
                }
                fields.push((field.value, ty));
                if *pending_gt > 0 || !p.consume_token(&Token::Comma) {
                    break;
                }
            }
            expect_gt(p, pending_gt)?;
            SqlType::Struct(fields)
        }
        _ => SqlType::Custom(w.value.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::GenericDialect;

    fn parse(s: &str) -> std::result::Result<SqlType, ParserError> {
        let dialect = GenericDialect {};
        let mut p = Parser::new(&dialect).try_with_sql(s)?;
        parse_type(&mut p)
    }

    #[test]
    fn nested_types_parse_and_print() {
        for (text, printed) in [
            ("ARRAY<INT>", "ARRAY<INTEGER>"),
            ("ARRAY<ARRAY<STRING>>", "ARRAY<ARRAY<STRING>>"),
            (
                "MAP<STRING, ARRAY<DECIMAL(4,2)>>",
                "MAP<STRING, ARRAY<DECIMAL(4, 2)>>",
            ),
            (
                "STRUCT<A INT, B MAP<STRING,STRUCT<C BYTES>>>",
                "STRUCT<A INTEGER, B MAP<STRING, STRUCT<C BYTES>>>",
            ),
            ("STRUCT<>", "STRUCT<>"),
            ("VARCHAR", "STRING"),
        ] {
            let t = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(t.to_string(), printed);
            // printing then parsing gives the same type
            assert_eq!(parse(&t.to_string()).expect("reparses"), t);
            assert_eq!(SqlType::from_arrow(&t.arrow()).expect("maps back"), t);
        }
        assert!(parse("ARRAY<INT").is_err());
        assert!(parse("DECIMAL(50, 2)").is_err());
        assert!(parse("DECIMAL(2, 5)").is_err());
        assert!(parse("STRUCT<A INT, A INT>").is_err());
    }
}
