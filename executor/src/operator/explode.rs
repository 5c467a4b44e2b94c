//! `EXPLODE` and `CUBE_EXPLODE`: table functions that repeat a row once
//! per element of an array.

use std::sync::Arc;

use brook_planner::plan::TableFunc;
use datafusion::arrow::array::{new_empty_array, Array, ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::Expr;

use super::{evaluate_lenient, physical, Context, Operator, PhysExpr};
use crate::change::ChangeBatch;
use crate::error::{ExecError, Result};
use crate::processing_log::ProcessingError;

/// The values one table-function call yields for one row.
fn table_values(f: TableFunc, list: Option<ArrayRef>) -> Result<Vec<ScalarValue>> {
    let Some(list) = list else {
        return Ok(Vec::new()); // a NULL array yields no rows
    };
    let items = (0..list.len())
        .map(|i| ScalarValue::try_from_array(&list, i))
        .collect::<datafusion::common::Result<Vec<_>>>()?;
    match f {
        TableFunc::Explode => Ok(items),
        TableFunc::CubeExplode => {
            let n = items.len();
            if n > 20 {
                return Err(ExecError::Serialization(format!(
                    "CUBE_EXPLODE of {n} elements would yield more than a million rows"
                )));
            }
            let ty = list.data_type();
            let mut out = Vec::with_capacity(1 << n);
            // The first element is the most significant: all NULLs first,
            // every element last.
            for mask in 0..(1usize << n) {
                let combo: Vec<ScalarValue> = items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        if mask & (1 << (n - 1 - i)) != 0 {
                            Ok(v.clone())
                        } else {
                            ScalarValue::try_from(ty)
                        }
                    })
                    .collect::<datafusion::common::Result<_>>()?;
                out.push(ScalarValue::List(ScalarValue::new_list_nullable(
                    &combo, ty,
                )));
            }
            Ok(out)
        }
    }
}

/// Runs table functions: each row is repeated once per value of its
/// longest call, with the calls' values appended (NULL past a shorter one).
fn explode(
    calls: &[(TableFunc, PhysExpr)],
    schema: &SchemaRef,
    input: ChangeBatch,
    errors: &mut Vec<ProcessingError>,
) -> Result<ChangeBatch> {
    let lists = calls
        .iter()
        .map(|(_, e)| evaluate_lenient(e, &input.batch, errors))
        .collect::<Result<Vec<_>>>()?;
    let lists = lists
        .iter()
        .map(|l| {
            l.as_any()
                .downcast_ref::<datafusion::arrow::array::ListArray>()
                .ok_or_else(|| {
                    ExecError::Internal("table function argument is not an array".into())
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut take: Vec<u64> = Vec::new();
    let mut produced: Vec<Vec<ScalarValue>> = vec![Vec::new(); calls.len()];
    for row in 0..input.len() {
        let mut values = Vec::with_capacity(calls.len());
        for ((f, _), list) in calls.iter().zip(&lists) {
            let arr = (!list.is_null(row)).then(|| list.value(row));
            values.push(table_values(*f, arr)?);
        }
        let count = values.iter().map(Vec::len).max().unwrap_or(0);
        for j in 0..count {
            take.push(row as u64);
            for (k, vals) in values.iter().enumerate() {
                let ty = schema.field(input.batch.num_columns() + k).data_type();
                produced[k].push(match vals.get(j) {
                    Some(v) => v.clone(),
                    None => ScalarValue::try_from(ty)?,
                });
            }
        }
    }
    let pick = |i: &u64| *i as usize;
    let weights = take.iter().map(|i| input.weights[pick(i)]).collect();
    let rowtimes = take.iter().map(|i| input.rowtimes[pick(i)]).collect();
    let null_values = take.iter().map(|i| input.null_values[pick(i)]).collect();
    let rows = take.len();
    let indices = datafusion::arrow::array::UInt64Array::from(take);
    let mut columns = Vec::with_capacity(schema.fields().len());
    for c in input.batch.columns() {
        columns.push(datafusion::arrow::compute::take(c, &indices, None)?);
    }
    for (k, vals) in produced.into_iter().enumerate() {
        let ty = schema.field(input.batch.num_columns() + k).data_type();
        columns.push(if vals.is_empty() {
            new_empty_array(ty)
        } else {
            coerce_array(ScalarValue::iter_to_array(vals)?, ty)?
        });
    }
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(ChangeBatch {
        batch: RecordBatch::try_new_with_options(Arc::clone(schema), columns, &options)?,
        weights,
        rowtimes,
        null_values,
    })
}

/// `array` as `ty` (list fields built from scalars may differ in name or
/// nullability).
fn coerce_array(array: ArrayRef, ty: &DataType) -> Result<ArrayRef> {
    if array.data_type() == ty {
        Ok(array)
    } else {
        Ok(datafusion::arrow::compute::cast(&array, ty)?)
    }
}

/// Table functions in `SELECT` (see `StreamOp::Explode`).
pub(crate) struct ExplodeOperator {
    calls: Vec<(TableFunc, PhysExpr)>,
    schema: SchemaRef,
}

impl ExplodeOperator {
    pub(crate) fn new(
        calls: &[(TableFunc, Expr)],
        input_schema: &DFSchema,
        output_schema: &DFSchema,
    ) -> Result<ExplodeOperator> {
        Ok(ExplodeOperator {
            calls: calls
                .iter()
                .map(|(f, e)| Ok((*f, physical(e, input_schema)?)))
                .collect::<Result<_>>()?,
            schema: Arc::new(output_schema.as_arrow().clone()),
        })
    }
}

impl Operator for ExplodeOperator {
    fn process(&mut self, input: ChangeBatch, cx: &mut Context<'_>) -> Result<ChangeBatch> {
        explode(&self.calls, &self.schema, input, cx.errors)
    }
}
