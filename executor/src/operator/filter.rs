//! `WHERE`: keeps the changes whose row satisfies a predicate.

use datafusion::arrow::array::BooleanArray;
use datafusion::arrow::compute::filter_record_batch;
use datafusion::common::DFSchema;
use datafusion::logical_expr::Expr;

use super::{evaluate_lenient, physical, Context, Operator, PhysExpr};
use crate::change::ChangeBatch;
use crate::error::{ExecError, Result};

/// A predicate over whole batches; NULL counts as false, and a row
/// without a value never passes.
pub(crate) struct FilterOperator {
    predicate: PhysExpr,
}

impl FilterOperator {
    pub(crate) fn new(predicate: &Expr, input_schema: &DFSchema) -> Result<FilterOperator> {
        Ok(FilterOperator {
            predicate: physical(predicate, input_schema)?,
        })
    }
}

impl Operator for FilterOperator {
    fn process(&mut self, input: ChangeBatch, cx: &mut Context<'_>) -> Result<ChangeBatch> {
        let mask = evaluate_lenient(&self.predicate, &input.batch, cx.errors)?;
        let mask = mask
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| ExecError::Internal("filter predicate is not boolean".into()))?;
        let mask: BooleanArray = mask
            .iter()
            .zip(&input.null_values)
            .map(|(b, null)| Some(b == Some(true) && !null))
            .collect();
        let keep: Vec<bool> = mask.iter().map(|b| b == Some(true)).collect();
        Ok(ChangeBatch {
            batch: filter_record_batch(&input.batch, &mask)?,
            weights: kept(&input.weights, &keep),
            rowtimes: kept(&input.rowtimes, &keep),
            null_values: vec![false; keep.iter().filter(|k| **k).count()],
        })
    }
}

/// The values whose `keep` is set, in order.
fn kept(values: &[i64], keep: &[bool]) -> Vec<i64> {
    values
        .iter()
        .zip(keep)
        .filter(|(_, k)| **k)
        .map(|(v, _)| *v)
        .collect()
}
