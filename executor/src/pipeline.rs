//! Change batches and the operators of a stream pipeline.
//!
//! Filters and projections are DataFusion physical expressions evaluated on
//! whole Arrow batches. The grouped aggregation walks its input row by row
//! (each input change is applied and its output emitted before the next,
//! which is ksqlDB's per-record emission) and keeps accumulators that
//! support retraction in the state store.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use brook_planner::catalog::{WindowSpec, WINDOWEND, WINDOWSTART};
use brook_planner::plan::{AggFunc, ByOffsetArgs, StreamOp, StreamPlan, TableFunc};
use brook_storage::{StateStore, WriteBatch};
use datafusion::arrow::array::{
    new_empty_array, new_null_array, Array, ArrayRef, BooleanArray, Int64Array, RecordBatch,
    RecordBatchOptions, UInt32Array,
};
use datafusion::arrow::compute::{filter_record_batch, take_arrays};
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::execution_props::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::Expr;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::{create_physical_expr, PhysicalExpr};
use serde::{Deserialize, Serialize};

use crate::datum::Datum;
use crate::error::{ExecError, Result};
use crate::processing_log::ProcessingError;
use brook_planner::functions::take_row_errors;

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

/// Builds a batch of the given schema from rows of scalars.
pub fn rows_to_batch(schema: &SchemaRef, rows: &[Vec<ScalarValue>]) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (i, field) in schema.fields().iter().enumerate() {
        let array = if rows.is_empty() {
            new_empty_array(field.data_type())
        } else {
            let values = rows.iter().map(|r| coerce(&r[i], field.data_type()));
            ScalarValue::iter_to_array(values.collect::<Result<Vec<_>>>()?)?
        };
        columns.push(array);
    }
    let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &options,
    )?)
}

fn coerce(v: &ScalarValue, ty: &DataType) -> Result<ScalarValue> {
    if v.data_type() == *ty {
        Ok(v.clone())
    } else {
        Ok(v.cast_to(ty)?)
    }
}

pub(crate) type PhysExpr = Arc<dyn PhysicalExpr>;

/// Simplifies an analyzed expression (some DataFusion functions, such as
/// `coalesce`, only run once rewritten) and makes it executable.
pub(crate) fn physical(e: &Expr, schema: &datafusion::common::DFSchema) -> Result<PhysExpr> {
    let context = SimplifyContext::builder()
        .with_schema(Arc::new(schema.clone()))
        .build();
    let e = ExprSimplifier::new(context).simplify(e.clone())?;
    Ok(create_physical_expr(
        &e,
        schema,
        &ExecutionProps::new(),
        &PhysicalPlanningContext::default(),
    )?)
}

enum Step {
    Filter(PhysExpr),
    Project {
        exprs: Vec<PhysExpr>,
        /// Whether each expression reads a value column of the source: on
        /// a record without a value it is NULL, as in ksqlDB.
        uses_value: Vec<bool>,
        schema: SchemaRef,
        /// `schema` with those columns nullable, for batches holding
        /// records without a value.
        valueless_schema: SchemaRef,
    },
    Aggregate(AggregateOp),
    Window(WindowOp),
    EmitFinal(EmitFinalOp),
    Explode {
        calls: Vec<(TableFunc, PhysExpr)>,
        schema: SchemaRef,
    },
}

/// A compiled stream pipeline.
pub struct Pipeline {
    steps: Vec<Step>,
    /// Rows an expression failed on since the last [`Pipeline::take_errors`].
    errors: Vec<ProcessingError>,
}

/// Evaluates an expression on a batch. If it fails, each row is evaluated
/// alone and a row it fails on gets NULL, recorded in `errors` (ksqlDB's
/// per-record error handling: one bad row does not stop a query).
fn evaluate_lenient(
    e: &PhysExpr,
    batch: &RecordBatch,
    errors: &mut Vec<ProcessingError>,
) -> Result<ArrayRef> {
    let n = batch.num_rows();
    take_row_errors();
    let whole = e.evaluate(batch).and_then(|v| v.into_array(n));
    errors.extend(
        take_row_errors()
            .into_iter()
            .map(|message| ProcessingError::Record {
                message,
                row: String::new(),
            }),
    );
    let Err(first) = whole else {
        return Ok(whole?);
    };
    if n == 0 {
        return Err(first.into());
    }
    let ty = e.data_type(&batch.schema())?;
    let mut parts: Vec<ArrayRef> = Vec::with_capacity(n);
    for i in 0..n {
        let row = batch.slice(i, 1);
        match e.evaluate(&row).and_then(|v| v.into_array(1)) {
            Ok(a) if a.data_type() == &ty => parts.push(a),
            Ok(a) => parts.push(datafusion::arrow::compute::cast(&a, &ty)?),
            Err(err) => {
                errors.push(ProcessingError::Record {
                    message: format!("Error computing expression {e}: {err}"),
                    row: row_text(&row),
                });
                parts.push(new_null_array(&ty, 1));
            }
        }
    }
    let refs: Vec<&dyn datafusion::arrow::array::Array> =
        parts.iter().map(|a| a.as_ref()).collect();
    Ok(datafusion::arrow::compute::concat(&refs)?)
}

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

/// A one-row batch as `[v1, v2, …]`, for the processing log.
fn row_text(row: &RecordBatch) -> String {
    let values: Vec<String> = row
        .columns()
        .iter()
        .map(|c| ScalarValue::try_from_array(c, 0).map_or_else(|_| "?".into(), |v| v.to_string()))
        .collect();
    format!("[{}]", values.join(", "))
}

impl Pipeline {
    /// Compiles a plan; `state_prefix` namespaces the aggregation state.
    pub fn new(plan: &StreamPlan, state_prefix: Vec<u8>) -> Result<Pipeline> {
        let mut steps = Vec::with_capacity(plan.ops.len());
        for op in &plan.ops {
            steps.push(match op {
                StreamOp::Filter {
                    predicate,
                    input_schema,
                } => Step::Filter(physical(predicate, input_schema)?),
                StreamOp::Project {
                    exprs,
                    input_schema,
                    output_schema,
                } => {
                    // ROWTIME and the other pseudo-columns come with the
                    // value in ksqlDB, too.
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
                        .map(|(f, u)| {
                            Arc::new(f.as_ref().clone().with_nullable(f.is_nullable() || *u))
                        })
                        .collect();
                    let valueless_schema =
                        Arc::new(datafusion::arrow::datatypes::Schema::new_with_metadata(
                            fields,
                            schema.metadata().clone(),
                        ));
                    Step::Project {
                        exprs: exprs
                            .iter()
                            .map(|e| physical(e, input_schema))
                            .collect::<Result<_>>()?,
                        uses_value,
                        schema,
                        valueless_schema,
                    }
                }
                StreamOp::Explode {
                    calls,
                    input_schema,
                    output_schema,
                } => Step::Explode {
                    calls: calls
                        .iter()
                        .map(|(f, e)| Ok((*f, physical(e, input_schema)?)))
                        .collect::<Result<_>>()?,
                    schema: Arc::new(output_schema.as_arrow().clone()),
                },
                StreamOp::Window { spec } => Step::Window(WindowOp {
                    spec: *spec,
                    stream_time: None,
                    key: [state_prefix.as_slice(), b"w/stream-time"].concat(),
                    dirty: false,
                }),
                StreamOp::Aggregate {
                    group,
                    aggs,
                    input_schema,
                    output_schema,
                } => Step::Aggregate(AggregateOp {
                    group: group
                        .iter()
                        .map(|e| physical(e, input_schema))
                        .collect::<Result<_>>()?,
                    funcs: aggs.iter().map(|a| a.func).collect(),
                    args: aggs
                        .iter()
                        .map(|a| {
                            a.arg
                                .as_ref()
                                .map(|e| physical(e, input_schema))
                                .transpose()
                        })
                        .collect::<Result<_>>()?,
                    schema: Arc::new(output_schema.as_arrow().clone()),
                    prefix: state_prefix.clone(),
                    cache: HashMap::new(),
                }),
            });
        }
        if let (true, Some((spec, start, end))) = (plan.emit_final, plan.window) {
            steps.push(Step::EmitFinal(EmitFinalOp {
                spec,
                start,
                end,
                keys: plan.key_columns.clone(),
                schema: Arc::clone(&plan.output_schema),
                prefix: [state_prefix.as_slice(), b"f/"].concat(),
                loaded: false,
                held: BTreeMap::new(),
                stream_time: i64::MIN,
                last_close: -1,
                writes: Vec::new(),
            }));
        }
        Ok(Pipeline {
            steps,
            errors: Vec::new(),
        })
    }

    /// The rows expressions failed on since the last call.
    pub fn take_errors(&mut self) -> Vec<ProcessingError> {
        std::mem::take(&mut self.errors)
    }

    /// Pushes a batch of changes through every step.
    pub fn process(
        &mut self,
        mut input: ChangeBatch,
        state: &dyn StateStore,
    ) -> Result<ChangeBatch> {
        // Every step runs even on an empty batch, so the result always has
        // the pipeline's output schema.
        for step in &mut self.steps {
            input = match step {
                Step::Filter(pred) => {
                    let mask = evaluate_lenient(pred, &input.batch, &mut self.errors)?;
                    let mask = mask
                        .as_any()
                        .downcast_ref::<BooleanArray>()
                        .ok_or_else(|| {
                            ExecError::Internal("filter predicate is not boolean".into())
                        })?;
                    // NULL counts as false; a row without a value never passes.
                    let mask: BooleanArray = mask
                        .iter()
                        .zip(&input.null_values)
                        .map(|(b, null)| Some(b == Some(true) && !null))
                        .collect();
                    let keep: Vec<bool> = mask.iter().map(|b| b == Some(true)).collect();
                    ChangeBatch {
                        batch: filter_record_batch(&input.batch, &mask)?,
                        weights: input
                            .weights
                            .iter()
                            .zip(&keep)
                            .filter(|(_, k)| **k)
                            .map(|(w, _)| *w)
                            .collect(),
                        rowtimes: input
                            .rowtimes
                            .iter()
                            .zip(&keep)
                            .filter(|(_, k)| **k)
                            .map(|(t, _)| *t)
                            .collect(),
                        null_values: vec![false; keep.iter().filter(|k| **k).count()],
                    }
                }
                Step::Project {
                    exprs,
                    uses_value,
                    schema,
                    valueless_schema,
                } => {
                    let n = input.len();
                    let valueless: Option<BooleanArray> = input
                        .null_values
                        .iter()
                        .any(|b| *b)
                        .then(|| input.null_values.iter().map(|b| Some(*b)).collect());
                    let columns = exprs
                        .iter()
                        .zip(uses_value.iter())
                        .map(|(e, uses_value)| {
                            let column = evaluate_lenient(e, &input.batch, &mut self.errors)?;
                            match (&valueless, uses_value) {
                                (Some(mask), true) => {
                                    let nulls = datafusion::arrow::array::new_null_array(
                                        column.data_type(),
                                        n,
                                    );
                                    Ok(datafusion::arrow::compute::kernels::zip::zip(
                                        mask, &nulls, &column,
                                    )?)
                                }
                                _ => Ok(column),
                            }
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let options = RecordBatchOptions::new().with_row_count(Some(n));
                    let schema = Arc::clone(if valueless.is_some() {
                        valueless_schema
                    } else {
                        schema
                    });
                    ChangeBatch {
                        batch: RecordBatch::try_new_with_options(schema, columns, &options)?,
                        weights: input.weights,
                        rowtimes: input.rowtimes,
                        null_values: input.null_values,
                    }
                }
                Step::Aggregate(agg) => agg.process(&input, state)?,
                Step::Window(w) => w.process(input, state)?,
                Step::EmitFinal(f) => f.process(&input, state)?,
                Step::Explode { calls, schema } => explode(calls, schema, input, &mut self.errors)?,
            };
        }
        Ok(input)
    }

    /// [`Pipeline::process`], turning a panic inside an expression (a bug in
    /// a function implementation) into an error instead of killing the task.
    pub fn process_guarded(
        &mut self,
        input: ChangeBatch,
        state: &dyn StateStore,
    ) -> Result<ChangeBatch> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.process(input, state)))
        {
            Ok(result) => result,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Err(ExecError::Internal(format!(
                    "expression evaluation panicked: {what}"
                )))
            }
        }
    }

    /// Adds the epoch's state changes to `batch` and forgets them.
    pub fn drain_state(&mut self, batch: &mut WriteBatch) -> Result<()> {
        for step in &mut self.steps {
            match step {
                Step::Aggregate(agg) => agg.drain(batch)?,
                Step::Window(w) => w.drain(batch),
                Step::EmitFinal(f) => f.drain(batch),
                _ => {}
            }
        }
        Ok(())
    }
}

/// `EMIT FINAL`: holds each window's latest result and emits it once,
/// when the window closes, as Kafka Streams' emit-on-window-close does.
/// Windows close in order of start as stream time passes their end plus the
/// grace period; a window that is already past the store's retention (size
/// plus grace) by then is never emitted, as in Kafka Streams.
struct EmitFinalOp {
    spec: WindowSpec,
    /// Output columns of the window's bounds, and the key columns.
    start: usize,
    end: usize,
    keys: Vec<usize>,
    schema: SchemaRef,
    prefix: Vec<u8>,
    loaded: bool,
    /// (window start, key) → the latest row and its time.
    held: BTreeMap<(i64, Vec<u8>), HeldRow>,
    stream_time: i64,
    last_close: i64,
    writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct HeldRow {
    start: i64,
    key: Vec<u8>,
    row: Vec<Datum>,
    ts: i64,
}

impl EmitFinalOp {
    fn state_key(&self, start: i64, key: &[u8]) -> Vec<u8> {
        [self.prefix.as_slice(), b"h/", &start.to_be_bytes(), key].concat()
    }

    fn load(&mut self, state: &dyn StateStore) -> Result<()> {
        if self.loaded {
            return Ok(());
        }
        self.loaded = true;
        let bad =
            |e: serde_json::Error| ExecError::Internal(format!("unreadable EMIT FINAL state: {e}"));
        for (_, v) in state.scan_prefix(&[self.prefix.as_slice(), b"h/"].concat())? {
            let h: HeldRow = serde_json::from_slice(&v).map_err(bad)?;
            self.held.insert((h.start, h.key.clone()), h);
        }
        if let Some(v) = state.get(&[self.prefix.as_slice(), b"meta"].concat())? {
            (self.stream_time, self.last_close) = serde_json::from_slice(&v).map_err(bad)?;
        }
        Ok(())
    }

    fn process(&mut self, input: &ChangeBatch, state: &dyn StateStore) -> Result<ChangeBatch> {
        self.load(state)?;
        let (mut rows, mut times) = (Vec::new(), Vec::new());
        let grace = self.spec.grace_ms;
        let size = self.spec.size_ms;
        for r in 0..input.len() {
            let row: Vec<Datum> = input
                .row(r)?
                .iter()
                .map(Datum::from_scalar)
                .collect::<std::result::Result<_, _>>()?;
            let Some(Datum::Int(start)) = row.get(self.start).cloned() else {
                continue;
            };
            if input.weights[r] > 0 {
                let key: Vec<Datum> = self
                    .keys
                    .iter()
                    .filter_map(|&k| row.get(k).cloned())
                    .collect();
                let key =
                    serde_json::to_vec(&key).map_err(|e| ExecError::Internal(e.to_string()))?;
                let ts = self
                    .held
                    .get(&(start, key.clone()))
                    .map_or(input.rowtimes[r], |h| h.ts.max(input.rowtimes[r]));
                let h = HeldRow {
                    start,
                    key: key.clone(),
                    row,
                    ts,
                };
                self.writes.push((
                    self.state_key(start, &key),
                    Some(serde_json::to_vec(&h).map_err(|e| ExecError::Internal(e.to_string()))?),
                ));
                self.held.insert((start, key), h);
            }
            let _ = self.end;
            self.stream_time = self.stream_time.max(input.rowtimes[r]);
            let close = self.stream_time.saturating_sub(grace);
            if close <= self.last_close {
                continue;
            }
            let upper = close.saturating_sub(size);
            let lower = (self.last_close.saturating_sub(size)).max(0);
            if upper < 0 || upper < lower {
                continue;
            }
            let expired_before = self.stream_time.saturating_sub(size.saturating_add(grace));
            let closed: Vec<(i64, Vec<u8>)> = self
                .held
                .range(..(upper.saturating_add(1), Vec::new()))
                .map(|(k, _)| k.clone())
                .collect();
            for k in closed {
                if let Some(h) = self.held.remove(&k) {
                    self.writes.push((self.state_key(h.start, &h.key), None));
                    if h.start >= lower && h.start >= expired_before {
                        let fields = self.schema.fields();
                        let scalars = h
                            .row
                            .iter()
                            .zip(fields.iter())
                            .map(|(d, f)| d.to_scalar(f.data_type()))
                            .collect::<std::result::Result<Vec<_>, _>>()?;
                        rows.push(scalars);
                        times.push(h.ts);
                    }
                }
            }
            self.last_close = close;
        }
        let meta = serde_json::to_vec(&(self.stream_time, self.last_close))
            .map_err(|e| ExecError::Internal(e.to_string()))?;
        self.writes
            .push(([self.prefix.as_slice(), b"meta"].concat(), Some(meta)));
        Ok(ChangeBatch {
            batch: rows_to_batch(&self.schema, &rows)?,
            weights: vec![1; times.len()],
            null_values: vec![false; times.len()],
            rowtimes: times,
        })
    }

    fn drain(&mut self, batch: &mut WriteBatch) {
        for (k, v) in self.writes.drain(..) {
            match v {
                Some(v) => batch.put(k, v),
                None => batch.delete(k),
            }
        }
    }
}

/// Assigns rows to their windows (see `StreamOp::Window`), tracking the
/// query's stream time (the latest event time seen) to drop late rows.
struct WindowOp {
    spec: WindowSpec,
    /// Loaded from the state store on first use.
    stream_time: Option<i64>,
    key: Vec<u8>,
    dirty: bool,
}

impl WindowOp {
    fn process(&mut self, input: ChangeBatch, state: &dyn StateStore) -> Result<ChangeBatch> {
        let mut stream_time = match self.stream_time {
            Some(t) => t,
            None => state
                .get(&self.key)?
                .and_then(|b| b.try_into().ok())
                .map_or(i64::MIN, i64::from_be_bytes),
        };
        let (mut rows, mut starts, mut ends) = (Vec::new(), Vec::new(), Vec::new());
        let (mut weights, mut rowtimes, mut null_values) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..input.len() {
            let ts = input.rowtimes[r];
            stream_time = stream_time.max(ts);
            for (start, end) in self.spec.windows_of(ts) {
                // Too late: the window closed (end + grace) before now.
                if end.saturating_add(self.spec.grace_ms) <= stream_time {
                    continue;
                }
                rows.push(r as u32);
                starts.push(start);
                ends.push(end);
                weights.push(input.weights[r]);
                rowtimes.push(ts);
                null_values.push(input.null_values[r]);
            }
        }
        if self.stream_time != Some(stream_time) {
            self.stream_time = Some(stream_time);
            self.dirty = true;
        }
        let indices = UInt32Array::from(rows);
        let taken = take_arrays(input.batch.columns(), &indices, None)?;
        let n = taken.len();
        let split = n.saturating_sub(3);
        let mut columns: Vec<ArrayRef> = taken[..split].to_vec();
        columns.push(Arc::new(Int64Array::from(starts)));
        columns.push(Arc::new(Int64Array::from(ends)));
        columns.extend_from_slice(&taken[split..]);
        let in_schema = input.batch.schema();
        let mut fields: Vec<Arc<Field>> = in_schema.fields()[..split].to_vec();
        fields.push(Arc::new(Field::new(WINDOWSTART, DataType::Int64, true)));
        fields.push(Arc::new(Field::new(WINDOWEND, DataType::Int64, true)));
        fields.extend_from_slice(&in_schema.fields()[split..]);
        let options = RecordBatchOptions::new().with_row_count(Some(indices.len()));
        Ok(ChangeBatch {
            batch: RecordBatch::try_new_with_options(
                Arc::new(datafusion::arrow::datatypes::Schema::new(fields)),
                columns,
                &options,
            )?,
            weights,
            rowtimes,
            null_values,
        })
    }

    fn drain(&mut self, batch: &mut WriteBatch) {
        if let (true, Some(t)) = (self.dirty, self.stream_time) {
            batch.put(self.key.clone(), t.to_be_bytes().to_vec());
            self.dirty = false;
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Acc {
    Count(i64),
    /// SUM starts at 0, as in ksqlDB (NULLs are skipped).
    Sum {
        int: i64,
        #[serde(with = "crate::datum::f64_bits")]
        float: f64,
    },
    Avg {
        #[serde(with = "crate::datum::f64_bits")]
        sum: f64,
        n: i64,
    },
    /// Multiset of values with their multiplicities, sorted.
    MinMax(Vec<(Datum, i64)>),
    /// The last (or first) non-NULL value seen.
    Pick(Datum),
    /// The non-NULL values in arrival order.
    List(Vec<Datum>),
    /// LATEST/EARLIEST_BY_OFFSET with a count or with NULLs kept: the
    /// values kept, oldest first.
    Offsets(Vec<Datum>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct GroupState {
    /// Sum of the weights of the group's rows.
    rows: i64,
    accs: Vec<Acc>,
}

struct AggregateOp {
    group: Vec<PhysExpr>,
    funcs: Vec<AggFunc>,
    args: Vec<Option<PhysExpr>>,
    schema: SchemaRef,
    prefix: Vec<u8>,
    /// Groups touched this epoch: key → (state, dirty). `None` = deleted.
    cache: HashMap<Vec<u8>, Option<GroupState>>,
}

impl AggregateOp {
    fn state_key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(key);
        k
    }

    fn load(&mut self, key: &[u8], state: &dyn StateStore) -> Result<Option<GroupState>> {
        if let Some(s) = self.cache.get(key) {
            return Ok(s.clone());
        }
        let stored = state.get(&self.state_key(key))?;
        stored
            .map(|b| {
                serde_json::from_slice(&b)
                    .map_err(|e| ExecError::Internal(format!("unreadable aggregate state: {e}")))
            })
            .transpose()
    }

    fn process(&mut self, input: &ChangeBatch, state: &dyn StateStore) -> Result<ChangeBatch> {
        let n = input.len();
        let group_cols = self
            .group
            .iter()
            .map(|e| Ok(e.evaluate(&input.batch)?.into_array(n)?))
            .collect::<Result<Vec<_>>>()?;
        let arg_cols = self
            .args
            .iter()
            .map(|a| {
                a.as_ref()
                    .map(|e| Ok::<_, ExecError>(e.evaluate(&input.batch)?.into_array(n)?))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        let mut out_rows = Vec::new();
        let mut out_weights = Vec::new();
        let mut out_times = Vec::new();
        for row in 0..n {
            if input.null_values[row] {
                continue; // a record without a value is not aggregated
            }
            let weight = input.weights[row];
            let group: Vec<ScalarValue> = group_cols
                .iter()
                .map(|c| ScalarValue::try_from_array(c, row))
                .collect::<Result<_, _>>()?;
            if group.iter().any(ScalarValue::is_null) {
                // ksqlDB drops rows whose grouping expressions give NULL.
                continue;
            }
            let group_datums = group
                .iter()
                .map(|v| Datum::from_scalar(v).map_err(ExecError::from))
                .collect::<Result<Vec<_>>>()?;
            let key = serde_json::to_vec(&group_datums)
                .map_err(|e| ExecError::Internal(e.to_string()))?;
            let old = self.load(&key, state)?;
            let mut new = old.clone().unwrap_or_else(|| GroupState {
                rows: 0,
                accs: self.funcs.iter().map(|f| new_acc(*f)).collect(),
            });
            new.rows += weight;
            for ((acc, col), f) in new.accs.iter_mut().zip(&arg_cols).zip(&self.funcs) {
                let arg = match col {
                    Some(col) => Some(Datum::from_scalar(&ScalarValue::try_from_array(col, row)?)?),
                    None => None,
                };
                update_acc(*f, acc, arg.as_ref(), weight);
            }
            if let Some(old) = &old {
                out_rows.push(self.output_row(&group, old)?);
                out_weights.push(-1);
                out_times.push(input.rowtimes[row]);
            }
            // A group whose rows were all retracted stays, with its
            // aggregates back at their initial values (ksqlDB emits COUNT 0).
            out_rows.push(self.output_row(&group, &new)?);
            out_weights.push(1);
            out_times.push(input.rowtimes[row]);
            self.cache.insert(key, Some(new));
        }
        Ok(ChangeBatch {
            batch: rows_to_batch(&self.schema, &out_rows)?,
            null_values: vec![false; out_weights.len()],
            weights: out_weights,
            rowtimes: out_times,
        })
    }

    fn output_row(&self, group: &[ScalarValue], s: &GroupState) -> Result<Vec<ScalarValue>> {
        let mut row = group.to_vec();
        for (i, acc) in s.accs.iter().enumerate() {
            let ty = self.schema.field(group.len() + i).data_type();
            let d = acc_output(self.funcs[i], acc, ty);
            row.push(d.to_scalar(ty)?);
        }
        Ok(row)
    }

    fn drain(&mut self, batch: &mut WriteBatch) -> Result<()> {
        for (key, s) in std::mem::take(&mut self.cache) {
            let k = self.state_key(&key);
            match s {
                Some(s) => batch.put(
                    k,
                    serde_json::to_vec(&s).map_err(|e| ExecError::Internal(e.to_string()))?,
                ),
                None => batch.delete(k),
            }
        }
        Ok(())
    }
}

fn new_acc(f: AggFunc) -> Acc {
    match f {
        AggFunc::Count => Acc::Count(0),
        AggFunc::Sum | AggFunc::SumList => Acc::Sum { int: 0, float: 0.0 },
        AggFunc::Avg => Acc::Avg { sum: 0.0, n: 0 },
        AggFunc::Min | AggFunc::Max | AggFunc::Multiset(_) => Acc::MinMax(Vec::new()),
        AggFunc::Latest(a) | AggFunc::Earliest(a) if a == ByOffsetArgs::DEFAULT => {
            Acc::Pick(Datum::Null)
        }
        AggFunc::Latest(_) | AggFunc::Earliest(_) => Acc::Offsets(Vec::new()),
        AggFunc::CollectList => Acc::List(Vec::new()),
    }
}

/// Applies one value with a weight; `arg` is `None` for `COUNT(*)`.
/// LATEST_BY_OFFSET and EARLIEST_BY_OFFSET ignore retractions (ksqlDB does
/// not support them on tables, where retractions come from).
fn update_acc(f: AggFunc, acc: &mut Acc, arg: Option<&Datum>, weight: i64) {
    if let (Acc::Offsets(kept), AggFunc::Latest(a) | AggFunc::Earliest(a)) = (&mut *acc, f) {
        if let Some(v) = arg.filter(|_| weight > 0) {
            a.offer(
                matches!(f, AggFunc::Latest(_)),
                kept,
                v.clone(),
                v.is_null(),
            );
        }
        return;
    }
    if let (AggFunc::SumList, Some(Datum::List(items))) = (f, arg) {
        for item in items {
            update_acc(AggFunc::Sum, acc, Some(item), weight);
        }
        return;
    }
    let value = match arg {
        None => None,
        Some(d) if d.is_null() => return, // aggregates skip NULLs
        Some(d) => Some(d),
    };
    match acc {
        Acc::Count(c) => *c += weight,
        Acc::Sum { int, float } => match value {
            Some(Datum::Int(i)) => *int = int.wrapping_add(i.wrapping_mul(weight)),
            Some(Datum::Float(x)) => *float += x * weight as f64,
            _ => {}
        },
        Acc::Avg { sum, n } => {
            match value {
                Some(Datum::Int(i)) => *sum += (*i as f64) * weight as f64,
                Some(Datum::Float(x)) => *sum += x * weight as f64,
                _ => {}
            }
            *n += weight;
        }
        Acc::MinMax(set) => {
            if let Some(v) = value {
                brook_planner::functions::agg::multiset_add(set, v, weight);
            }
        }
        Acc::Pick(cur) => {
            if let Some(v) = value {
                if weight > 0 && (matches!(f, AggFunc::Latest(_)) || cur.is_null()) {
                    *cur = v.clone();
                }
            }
        }
        Acc::Offsets(_) => {} // handled above
        Acc::List(items) => {
            if let Some(v) = value {
                if weight > 0 {
                    for _ in 0..weight {
                        items.push(v.clone());
                    }
                } else if let Some(i) = items.iter().position(|x| x == v) {
                    items.remove(i);
                }
            }
        }
    }
}

fn acc_output(f: AggFunc, acc: &Acc, ty: &DataType) -> Datum {
    match acc {
        Acc::Count(c) => Datum::Int(*c),
        Acc::Sum { int, float, .. } => match ty {
            DataType::Float32 | DataType::Float64 => Datum::Float(*float + *int as f64),
            _ => Datum::Int(*int),
        },
        Acc::Avg { n, .. } if *n <= 0 => Datum::Null,
        Acc::Avg { sum, n } => Datum::Float(sum / *n as f64),
        Acc::MinMax(set) if matches!(f, AggFunc::Multiset(_)) => match f {
            AggFunc::Multiset(m) => m.finish(set),
            _ => Datum::Null,
        },
        Acc::MinMax(set) => {
            let pick = if f == AggFunc::Min {
                set.first()
            } else {
                set.last()
            };
            pick.map_or(Datum::Null, |(d, _)| d.clone())
        }
        Acc::Pick(d) => d.clone(),
        Acc::Offsets(kept) => match f {
            AggFunc::Latest(ByOffsetArgs { n: Some(_), .. })
            | AggFunc::Earliest(ByOffsetArgs { n: Some(_), .. }) => Datum::List(kept.clone()),
            _ => kept.first().cloned().unwrap_or(Datum::Null),
        },
        Acc::List(items) => Datum::List(items.clone()),
    }
}

#[cfg(test)]
mod acc_tests {
    use super::*;

    #[test]
    fn accumulators_keep_non_finite_sums() {
        let mut state = GroupState {
            rows: 0,
            accs: vec![new_acc(AggFunc::Sum), new_acc(AggFunc::Avg)],
        };
        for acc in &mut state.accs {
            update_acc(AggFunc::Sum, acc, Some(&Datum::Float(f64::MAX)), 1);
            update_acc(AggFunc::Sum, acc, Some(&Datum::Float(f64::MAX)), 1);
        }
        let bytes = serde_json::to_vec(&state).expect("serializes");
        let back: GroupState = serde_json::from_slice(&bytes).expect("infinite sums read back");
        assert!(matches!(back.accs[0], Acc::Sum { float, .. } if float == f64::INFINITY));
        assert!(matches!(back.accs[1], Acc::Avg { sum, n: 2 } if sum == f64::INFINITY));
    }
}
