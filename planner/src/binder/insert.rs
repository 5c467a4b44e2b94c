//! `INSERT INTO … VALUES` and `INSERT INTO … SELECT`.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::{self, Query, UnaryOperator, Value};

use super::query::logical_plan;
use super::select::plan_stream;
use super::source::reserved;
use crate::catalog::{Catalog, SourceDef, SourceKind, ROWTIME};
use crate::error::{PlanError, Result};
use crate::plan::{InsertRow, StreamPlan};
use crate::types::SqlType;

/// `INSERT INTO target SELECT …`: the plan, checked against the target
/// stream's schema.
pub fn plan_insert_select(
    catalog: &Catalog,
    target: &str,
    query: &Query,
    partition_by: Option<&[ast::Expr]>,
) -> Result<(SourceDef, StreamPlan)> {
    let sink = catalog.source(target)?.clone();
    if sink.read_only {
        return Err(PlanError::Invalid(format!(
            "Cannot insert into read-only {}: {target}",
            sink.kind.noun()
        )));
    }
    if sink.kind != SourceKind::Stream {
        return Err(PlanError::Invalid(format!(
            "INSERT INTO can only be used to insert into a stream. {target} is a table."
        )));
    }
    if sink.header_columns().next().is_some() {
        return Err(PlanError::Invalid(format!(
            "Cannot insert into {target} because it has header columns"
        )));
    }
    let plan = plan_stream(catalog, query, partition_by, Some(target))?;
    if let Some(f) = plan
        .output_schema
        .fields()
        .iter()
        .find(|f| reserved(f.name()))
    {
        return Err(PlanError::Invalid(format!(
            "Reserved column name in select: `{}`. Please remove or alias the column.",
            f.name()
        )));
    }
    if plan.is_table || plan.source.kind == SourceKind::Table {
        return Err(PlanError::Invalid(
            "INSERT INTO can only be used to insert from a stream into a stream. The query produces a table, not a stream.".into(),
        ));
    }
    if plan.limit.is_some() {
        return Err(PlanError::Invalid(
            "LIMIT is not supported in persistent queries".into(),
        ));
    }
    if sink.topic == plan.source.topic {
        return Err(PlanError::Invalid(format!(
            "Cannot insert into {target} from itself: a query cannot read its own output."
        )));
    }
    let describe = |cols: &mut Vec<String>| {
        cols.sort();
        cols.join(", ")
    };
    let mut result: Vec<String> = plan
        .output_schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let ty = SqlType::from_arrow(f.data_type())
                .map_or_else(|_| f.data_type().to_string(), |t| t.to_string());
            format!(
                "`{}` {ty}{}",
                f.name(),
                if plan.key_columns.contains(&i) {
                    " KEY"
                } else {
                    ""
                }
            )
        })
        .collect();
    let mut expected: Vec<String> = sink
        .columns
        .iter()
        .map(|c| format!("`{}` {}{}", c.name, c.ty, if c.key { " KEY" } else { "" }))
        .collect();
    if describe(&mut result) != describe(&mut expected) {
        return Err(PlanError::Invalid(format!(
            "Incompatible schema between results and sink.\nResult schema is {}\nSink schema is {}",
            result.join(", "),
            expected.join(", ")
        )));
    }
    Ok((sink, plan))
}

/// `INSERT INTO target [(cols)] VALUES …`.
pub fn plan_insert(
    catalog: &Catalog,
    target: &str,
    columns: &[String],
    rows: &[Vec<ast::Expr>],
) -> Result<(SourceDef, Vec<InsertRow>)> {
    let def = match catalog.source(target) {
        Ok(def) => def.clone(),
        Err(e) => {
            // The name differs only in case from an existing one: say how
            // to write it, as ksqlDB does.
            let similar = catalog
                .sources
                .keys()
                .find(|n| n.eq_ignore_ascii_case(target) && n.as_str() != target);
            return Err(match similar {
                Some(n) if *n != n.to_ascii_uppercase() => PlanError::Invalid(format!(
                    "Cannot insert values into an unknown stream/table: `{target}`\nDid you mean \"{n}\"? Hint: wrap the source name in double quotes to make it case-sensitive."
                )),
                Some(n) => PlanError::Invalid(format!(
                    "Cannot insert values into an unknown stream/table: `{target}`\nDid you mean {n}? Hint: try removing double quotes from the source name."
                )),
                None => e,
            });
        }
    };
    if def.read_only {
        return Err(PlanError::Invalid(format!(
            "Cannot insert values into read-only {}: {}",
            def.kind.noun(),
            def.name
        )));
    }
    if let Some(q) = &def.query_id {
        return Err(PlanError::Invalid(format!(
            "cannot insert into {} \"{}\": it is written by persistent query {q}",
            def.kind.noun(),
            def.name
        )));
    }
    let names: Vec<String> = if columns.is_empty() {
        def.columns.iter().map(|c| c.name.clone()).collect()
    } else {
        columns.to_vec()
    };
    // Position of each named column in the target (None = ROWTIME).
    let mut slots = Vec::with_capacity(names.len());
    for n in &names {
        if n == ROWTIME {
            slots.push(None);
        } else {
            let i = def
                .columns
                .iter()
                .position(|c| c.name == *n)
                .ok_or_else(|| PlanError::NotFound {
                    kind: "column",
                    name: format!("{n}\" of {} \"{}", def.kind.noun(), def.name),
                })?;
            if slots.contains(&Some(i)) {
                return Err(PlanError::Invalid(format!(
                    "column \"{n}\" specified more than once"
                )));
            }
            slots.push(Some(i));
        }
    }
    let headers: Vec<&str> = slots
        .iter()
        .flatten()
        .filter(|i| def.columns[**i].header.is_some())
        .map(|i| def.columns[*i].name.as_str())
        .collect();
    if !headers.is_empty() {
        return Err(PlanError::Invalid(format!(
            "Cannot insert into HEADER columns: {}",
            headers.join(", ")
        )));
    }
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        if row.len() != slots.len() {
            return Err(PlanError::Invalid(format!(
                "INSERT has {} expressions but {} target columns",
                row.len(),
                slots.len()
            )));
        }
        let mut values: Vec<ScalarValue> = def
            .columns
            .iter()
            .map(|c| ScalarValue::try_from(&c.ty.arrow()))
            .collect::<std::result::Result<_, _>>()?;
        let mut rowtime = None;
        for (slot, expr) in slots.iter().zip(row) {
            match slot {
                None => {
                    let v = literal(expr, &SqlType::Bigint, ROWTIME)?;
                    rowtime = match v {
                        ScalarValue::Int64(v) => v,
                        _ => None,
                    };
                }
                Some(i) => values[*i] = literal(expr, &def.columns[*i].ty, &def.columns[*i].name)?,
            }
        }
        if def.kind == SourceKind::Table {
            let missing: Vec<&str> = def
                .columns
                .iter()
                .zip(&values)
                .filter(|(c, v)| c.key && v.is_null())
                .map(|(c, _)| c.name.as_str())
                .collect();
            if !missing.is_empty() {
                return Err(PlanError::Invalid(format!(
                    "Failed to insert values into '{}'. Value for primary key column(s) {} is required for tables",
                    def.name,
                    missing.join(", ")
                )));
            }
        }
        out.push(InsertRow { rowtime, values });
    }
    Ok((def, out))
}

/// Evaluates a constant expression (`ARRAY[1, 2]`, `STRUCT(A := 1)`,
/// `1.5 * 2`, a function call) with DataFusion and casts it to the
/// column's type.
fn constant(expr: &ast::Expr, ty: &SqlType, column: &str) -> Result<ScalarValue> {
    let query = match crate::parser::parse_statement(&format!("SELECT {expr}"))?.statement {
        crate::parser::Statement::Select { query, .. } => query,
        _ => {
            return Err(PlanError::Internal(
                "SELECT did not parse as a query".into(),
            ))
        }
    };
    let plan = logical_plan(&query, &[])?;
    let LogicalPlan::Projection(p) = &plan else {
        return Err(PlanError::Unsupported(format!(
            "unsupported value {expr} in INSERT VALUES"
        )));
    };
    let [value] = p.expr.as_slice() else {
        return Err(PlanError::Internal("expected one expression".into()));
    };
    let physical = datafusion::physical_expr::create_physical_expr(
        value,
        p.input.schema(),
        &datafusion::logical_expr::execution_props::ExecutionProps::new(),
        &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext::default(),
    )?;
    let batch = datafusion::arrow::array::RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        vec![],
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(1)),
    )?;
    crate::functions::take_row_errors();
    let v = physical.evaluate(&batch)?.into_array(1)?;
    if let Some(e) = crate::functions::take_row_errors().into_iter().next() {
        return Err(PlanError::Invalid(e));
    }
    let v = ScalarValue::try_from_array(&v, 0)?;
    let target = ty.arrow();
    if v.data_type() == target {
        return Ok(v);
    }
    v.cast_to(&target).map_err(|_| {
        PlanError::Type(format!(
            "column \"{column}\" is of type {ty} but expression is of type {}",
            SqlType::from_arrow(&v.data_type())
                .map_or_else(|_| v.data_type().to_string(), |t| t.to_string())
        ))
    })
}

/// Converts a literal expression to a value of the column's type.
fn literal(expr: &ast::Expr, ty: &SqlType, column: &str) -> Result<ScalarValue> {
    let simple_type = matches!(
        ty,
        SqlType::Boolean
            | SqlType::Int
            | SqlType::Bigint
            | SqlType::Double
            | SqlType::String
            | SqlType::Timestamp
    );
    let is_literal = match expr {
        ast::Expr::Value(_) => true,
        ast::Expr::UnaryOp { expr, .. } => matches!(expr.as_ref(), ast::Expr::Value(_)),
        _ => false,
    };
    if !simple_type || !is_literal {
        return constant(expr, ty, column);
    }
    let mismatch = |found: &str| {
        PlanError::Type(format!(
            "column \"{column}\" is of type {ty} but expression is of type {found}"
        ))
    };
    let (negative, inner) = match expr {
        ast::Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => (true, expr.as_ref()),
        ast::Expr::UnaryOp {
            op: UnaryOperator::Plus,
            expr,
        } => (false, expr.as_ref()),
        other => (false, other),
    };
    let ast::Expr::Value(v) = inner else {
        return Err(PlanError::Unsupported(format!(
            "only literal values are supported in INSERT VALUES, found {expr}"
        )));
    };
    let out_of_range = |n: &str| {
        PlanError::Type(format!(
            "value {n} is out of range for column \"{column}\" of type {ty}"
        ))
    };
    match &v.value {
        Value::Null if !negative => ScalarValue::try_from(&ty.arrow()).map_err(PlanError::from),
        Value::Number(n, _) => {
            let text = if negative { format!("-{n}") } else { n.clone() };
            let is_integer = !text.contains(['.', 'e', 'E']);
            match ty {
                SqlType::Int if is_integer => text
                    .parse::<i32>()
                    .map(|i| ScalarValue::Int32(Some(i)))
                    .map_err(|_| out_of_range(&text)),
                SqlType::Bigint if is_integer => text
                    .parse::<i64>()
                    .map(|i| ScalarValue::Int64(Some(i)))
                    .map_err(|_| out_of_range(&text)),
                SqlType::Timestamp if is_integer => text
                    .parse::<i64>()
                    .map(|i| ScalarValue::TimestampMillisecond(Some(i), None))
                    .map_err(|_| out_of_range(&text)),
                SqlType::Double => text
                    .parse::<f64>()
                    .map(|f| ScalarValue::Float64(Some(f)))
                    .map_err(|_| out_of_range(&text)),
                SqlType::Int | SqlType::Bigint | SqlType::Timestamp => Err(mismatch("DOUBLE")),
                _ => Err(mismatch(if is_integer { "INTEGER" } else { "DOUBLE" })),
            }
        }
        Value::SingleQuotedString(s) if !negative => match ty {
            SqlType::String => Ok(ScalarValue::Utf8(Some(s.clone()))),
            SqlType::Timestamp => ScalarValue::Utf8(Some(s.clone()))
                .cast_to(&DataType::Timestamp(TimeUnit::Millisecond, None))
                .map_err(|_| {
                    PlanError::Type(format!(
                        "invalid TIMESTAMP value '{s}' for column \"{column}\""
                    ))
                }),
            _ => Err(mismatch("STRING")),
        },
        Value::Boolean(b) if !negative => match ty {
            SqlType::Boolean => Ok(ScalarValue::Boolean(Some(*b))),
            _ => Err(mismatch("BOOLEAN")),
        },
        _ => Err(PlanError::Unsupported(format!(
            "unsupported value {expr} in INSERT VALUES"
        ))),
    }
}
