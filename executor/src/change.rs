//! The message operators exchange: a change batch, rows with a weight each
//! (+1 insert, −1 retraction) and an event time.

use std::sync::Arc;

use datafusion::arrow::array::{new_empty_array, ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::common::ScalarValue;

use crate::error::{ExecError, Result};

/// Rows with a weight each (+1 insert, −1 retraction) and an event time.
#[derive(Debug, Clone)]
pub struct ChangeBatch {
    /// The rows.
    pub batch: RecordBatch,
    /// One weight per row.
    pub weights: Vec<i64>,
    /// One event time (ms) per row.
    pub rowtimes: Vec<i64>,
    /// Per row: the record had no value (a stream record with a null
    /// value: only its key columns are set). ksqlDB passes such rows
    /// through projections and PARTITION BY as records with a null value,
    /// and drops them at filters and aggregations.
    pub null_values: Vec<bool>,
}

impl ChangeBatch {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// The row at `i` as scalars.
    pub fn row(&self, i: usize) -> Result<Vec<ScalarValue>> {
        self.batch
            .columns()
            .iter()
            .map(|c| Ok(ScalarValue::try_from_array(c, i)?))
            .collect()
    }
}

/// Builds a batch of the given schema from rows of scalars, each value
/// cast to its column's type where it differs.
pub fn rows_to_batch(schema: &SchemaRef, mut rows: Vec<Vec<ScalarValue>>) -> Result<RecordBatch> {
    let n = rows.len();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    let mut column = Vec::with_capacity(n);
    for (i, field) in schema.fields().iter().enumerate() {
        let ty = field.data_type();
        let array = if n == 0 {
            new_empty_array(ty)
        } else {
            // The values are moved out of the rows, not cloned.
            for row in &mut rows {
                let v = std::mem::replace(
                    row.get_mut(i).ok_or_else(|| {
                        ExecError::Internal(format!("a row without column {}", field.name()))
                    })?,
                    ScalarValue::Null,
                );
                column.push(if has_type(&v, ty) { v } else { v.cast_to(ty)? });
            }
            ScalarValue::iter_to_array(column.drain(..))?
        };
        columns.push(array);
    }
    let options = RecordBatchOptions::new().with_row_count(Some(n));
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &options,
    )?)
}

/// Whether `v` is of type `ty`, without building its type for the common
/// ones.
fn has_type(v: &ScalarValue, ty: &DataType) -> bool {
    match (v, ty) {
        (ScalarValue::Int64(_), DataType::Int64)
        | (ScalarValue::Int32(_), DataType::Int32)
        | (ScalarValue::Float64(_), DataType::Float64)
        | (ScalarValue::Utf8(_), DataType::Utf8)
        | (ScalarValue::Boolean(_), DataType::Boolean)
        | (
            ScalarValue::TimestampMillisecond(_, None),
            DataType::Timestamp(TimeUnit::Millisecond, None),
        ) => true,
        _ => v.data_type() == *ty,
    }
}
