//! `SELECT` expressions: computes each output column over whole batches.

use std::sync::Arc;

use brook_planner::plan::StreamPlan;
use datafusion::arrow::array::{new_null_array, BooleanArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::kernels::zip::zip;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::logical_expr::Expr;

use super::{evaluate_lenient, physical, Context, Operator, PhysExpr};
use crate::change::ChangeBatch;
use crate::error::Result;

/// A projection. On a record without a value (a stream's null-value
/// record), the columns computed from its value are NULL, as in ksqlDB.
pub(crate) struct ProjectOperator {
    exprs: Vec<PhysExpr>,
    /// Whether each expression reads a value column of the source.
    uses_value: Vec<bool>,
    schema: SchemaRef,
    /// `schema` with those columns nullable, for batches holding records
    /// without a value.
    valueless_schema: SchemaRef,
}

impl ProjectOperator {
    pub(crate) fn new(
        plan: &StreamPlan,
        exprs: &[Expr],
        input_schema: &DFSchema,
        output_schema: &DFSchema,
    ) -> Result<ProjectOperator> {
        // ROWTIME and the other pseudo-columns come with the value in
        // ksqlDB, too.
        let uses_value: Vec<bool> = exprs
            .iter()
            .map(|e| {
                e.column_refs().iter().any(|c| {
                    ["ROWTIME", "ROWPARTITION", "ROWOFFSET"].contains(&c.name.as_str())
                        || plan
                            .source
                            .columns
                            .iter()
                            .any(|col| col.is_value() && col.name == c.name)
                })
            })
            .collect();
        let schema = Arc::new(output_schema.as_arrow().clone());
        let fields: Vec<_> = schema
            .fields()
            .iter()
            .zip(&uses_value)
            .map(|(f, u)| Arc::new(f.as_ref().clone().with_nullable(f.is_nullable() || *u)))
            .collect();
        let valueless_schema =
            Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
        Ok(ProjectOperator {
            exprs: exprs
                .iter()
                .map(|e| physical(e, input_schema))
                .collect::<Result<_>>()?,
            uses_value,
            schema,
            valueless_schema,
        })
    }
}

impl Operator for ProjectOperator {
    fn process(&mut self, input: ChangeBatch, cx: &mut Context<'_>) -> Result<ChangeBatch> {
        let n = input.len();
        let valueless: Option<BooleanArray> = input
            .null_values
            .iter()
            .any(|b| *b)
            .then(|| input.null_values.iter().map(|b| Some(*b)).collect());
        let columns = self
            .exprs
            .iter()
            .zip(&self.uses_value)
            .map(|(e, uses_value)| {
                let column = evaluate_lenient(e, &input.batch, cx.errors)?;
                match (&valueless, uses_value) {
                    (Some(mask), true) => {
                        let nulls = new_null_array(column.data_type(), n);
                        Ok(zip(mask, &nulls, &column)?)
                    }
                    _ => Ok(column),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(n));
        let schema = Arc::clone(if valueless.is_some() {
            &self.valueless_schema
        } else {
            &self.schema
        });
        Ok(ChangeBatch {
            batch: RecordBatch::try_new_with_options(schema, columns, &options)?,
            weights: input.weights,
            rowtimes: input.rowtimes,
            null_values: input.null_values,
        })
    }
}
