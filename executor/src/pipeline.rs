//! Change batches and the operators of a stream pipeline.
//!
//! Filters and projections are DataFusion physical expressions evaluated on
//! whole Arrow batches. The grouped aggregation walks its input row by row
//! (each input change is applied and its output emitted before the next,
//! which is ksqlDB's per-record emission) and keeps accumulators that
//! support retraction in the state store.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use brook_planner::catalog::{WindowKind, WindowSpec, WINDOWEND, WINDOWSTART};
use brook_planner::plan::{AggFunc, ByOffsetArgs, StreamOp, StreamPlan, TableFunc};
use brook_storage::{StateStore, WriteBatch};
use datafusion::arrow::array::{
    new_empty_array, new_null_array, Array, ArrayRef, BooleanArray, Int64Array, RecordBatch,
    RecordBatchOptions, UInt32Array,
};
use datafusion::arrow::compute::{filter_record_batch, take_arrays};
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef, TimeUnit};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::execution_props::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::Expr;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::{create_physical_expr, PhysicalExpr};
use serde::{Deserialize, Serialize};

use crate::datum::Datum;
use crate::error::{binary, from_binary, json, ExecError, Result};
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
    Aggregate(Box<AggregateOp>),
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
pub(crate) fn evaluate_lenient(
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
                    late: 0,
                }),
                StreamOp::Aggregate {
                    group,
                    aggs,
                    input_schema,
                    output_schema,
                } => Step::Aggregate(Box::new(AggregateOp {
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
                    kept: HashMap::new(),
                    kept_bytes: 0,
                    sessions: session_spec(plan)
                        .map(|spec| Sessions::new(spec, group, &state_prefix))
                        .transpose()?,
                    windows: match plan.window {
                        Some((spec, _, _)) if spec.kind != WindowKind::Session => {
                            let start = group
                                .iter()
                                .position(|e| {
                                    matches!(e.clone().unalias(), Expr::Column(c) if c.name == WINDOWSTART)
                                })
                                .ok_or_else(|| {
                                    ExecError::Internal("a windowed aggregation without WINDOWSTART".into())
                                })?;
                            Some((start, Expiry::new(&spec, [state_prefix.as_slice(), b"x/"].concat())))
                        }
                        _ => None,
                    },
                    consolidate: plan.consolidate,
                    append_only: plan.source.kind == brook_planner::catalog::SourceKind::Stream,
                })),
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

    /// How many window assignments were dropped as late (a record too
    /// late for its window, or its session) since the last call.
    pub fn take_late(&mut self) -> u64 {
        let mut late = 0;
        for step in &mut self.steps {
            match step {
                Step::Window(w) => late += std::mem::take(&mut w.late),
                Step::Aggregate(agg) => {
                    if let Some(s) = &mut agg.sessions {
                        late += std::mem::take(&mut s.late);
                    }
                }
                _ => {}
            }
        }
        late
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
            Err(panic) => Err(ExecError::Internal(format!(
                "expression evaluation panicked: {}",
                crate::panic_guard::panic_message(panic.as_ref())
            ))),
        }
    }

    /// Adds the epoch's state changes to `batch` and forgets them.
    /// Windows past their retention leave the store (`state` is read to
    /// find them).
    pub fn drain_state(&mut self, batch: &mut WriteBatch, state: &dyn StateStore) -> Result<()> {
        for step in &mut self.steps {
            match step {
                Step::Aggregate(agg) => agg.drain(batch, state)?,
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
            let h: HeldRow = from_binary(&v, "EMIT FINAL state")?;
            self.held.insert((h.start, h.key.clone()), h);
        }
        if let Some(v) = state.get(&[self.prefix.as_slice(), b"meta"].concat())? {
            (self.stream_time, self.last_close) = serde_json::from_slice(&v).map_err(bad)?;
        }
        Ok(())
    }

    fn process(&mut self, input: &ChangeBatch, state: &dyn StateStore) -> Result<ChangeBatch> {
        self.load(state)?;
        if self.spec.kind == WindowKind::Session {
            return self.process_sessions(input);
        }
        let (mut rows, mut times) = (Vec::new(), Vec::new());
        let grace = self.spec.grace_ms;
        let size = self.spec.size_ms;
        for r in 0..input.len() {
            let (row, key) = self.row_and_key(input, r)?;
            let Some(Datum::Int(start)) = row.get(self.start).cloned() else {
                continue;
            };
            if input.weights[r] > 0 {
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
                self.writes
                    .push((self.state_key(start, &key), Some(binary(&h)?)));
                self.held.insert((start, key), h);
            }
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
                        rows.push(self.scalars(&h.row)?);
                        times.push(h.ts);
                    }
                }
            }
            self.last_close = close;
        }
        self.emitted(rows, times)
    }

    /// Sessions are held by their end (and key and start) and emitted
    /// once stream time passes their end by the gap plus the grace period,
    /// as Kafka Streams' suppression does; a merged-away session's tombstone only
    /// drops it.
    fn process_sessions(&mut self, input: &ChangeBatch) -> Result<ChangeBatch> {
        let (mut rows, mut times) = (Vec::new(), Vec::new());
        for r in 0..input.len() {
            let (row, mut key) = self.row_and_key(input, r)?;
            let (Some(Datum::Int(start)), Some(Datum::Int(end))) =
                (row.get(self.start).cloned(), row.get(self.end).cloned())
            else {
                continue;
            };
            key.extend_from_slice(&start.to_be_bytes());
            let state_key = self.state_key(end, &key);
            if input.weights[r] > 0 {
                let h = HeldRow {
                    start: end,
                    key: key.clone(),
                    row,
                    ts: input.rowtimes[r],
                };
                self.writes.push((state_key, Some(binary(&h)?)));
                self.held.insert((end, key), h);
            } else {
                self.writes.push((state_key, None));
                self.held.remove(&(end, key));
            }
            self.stream_time = self.stream_time.max(input.rowtimes[r]);
            // A session can grow until stream time passes its end by the
            // gap; Kafka Streams adds the gap to the grace period here.
            let close = self
                .stream_time
                .saturating_sub(self.spec.grace_ms.saturating_add(self.spec.size_ms));
            while let Some(entry) = self.held.first_entry() {
                if entry.key().0 > close {
                    break;
                }
                let h = entry.remove();
                self.writes.push((self.state_key(h.start, &h.key), None));
                rows.push(self.scalars(&h.row)?);
                times.push(h.ts);
            }
        }
        self.emitted(rows, times)
    }

    /// Input row `r` as datums, and its key columns as JSON.
    fn row_and_key(&self, input: &ChangeBatch, r: usize) -> Result<(Vec<Datum>, Vec<u8>)> {
        let row: Vec<Datum> = input
            .row(r)?
            .iter()
            .map(Datum::from_scalar)
            .collect::<std::result::Result<_, _>>()?;
        let key: Vec<&Datum> = self.keys.iter().filter_map(|&k| row.get(k)).collect();
        let key = json(&key)?;
        Ok((row, key))
    }

    /// Records stream time and the close time, and batches the rows
    /// emitted (each at its time).
    fn emitted(&mut self, rows: Vec<Vec<ScalarValue>>, times: Vec<i64>) -> Result<ChangeBatch> {
        let meta = json(&(self.stream_time, self.last_close))?;
        self.writes
            .push(([self.prefix.as_slice(), b"meta"].concat(), Some(meta)));
        Ok(ChangeBatch {
            batch: rows_to_batch(&self.schema, rows)?,
            weights: vec![1; times.len()],
            null_values: vec![false; times.len()],
            rowtimes: times,
        })
    }

    fn scalars(&self, row: &[Datum]) -> Result<Vec<ScalarValue>> {
        row.iter()
            .zip(self.schema.fields().iter())
            .map(|(d, f)| Ok(d.to_scalar(f.data_type())?))
            .collect()
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
    /// Rows dropped as too late for their window, since the last
    /// [`Pipeline::take_late`].
    late: u64,
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
            let session = self.spec.kind == WindowKind::Session;
            // The aggregation finds a row's session (and whether it is
            // late); until then the row is a session of its own.
            let windows = if session {
                vec![(ts, ts)]
            } else {
                self.spec.windows_of(ts)
            };
            for (start, end) in windows {
                // Too late: the window closed (end + grace) before now.
                if !session && end.saturating_add(self.spec.grace_ms) <= stream_time {
                    self.late += 1;
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
    /// MIN or MAX of an input without retractions (a stream): the extreme
    /// value alone.
    Extreme(Datum),
    /// The last (or first) non-NULL value seen.
    Pick(Datum),
    /// The non-NULL values in arrival order.
    List(Vec<Datum>),
    /// LATEST/EARLIEST_BY_OFFSET with a count or with NULLs kept: the
    /// values kept, oldest first.
    Offsets(Vec<Datum>),
    /// CORRELATION's running sums.
    Corr(brook_planner::functions::agg::CorrSums),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct GroupState {
    /// Sum of the weights of the group's rows.
    rows: i64,
    accs: Vec<Acc>,
}

/// Drops the state of windows past their retention, as Kafka Streams'
/// window stores drop their old segments. An index under the step's
/// prefix orders each window's state key by the time it expires (a time
/// window's start, a session's end, plus the retention); each epoch the
/// entries that expired before stream time are deleted with their state.
/// The retention is at least the window's size plus its grace period, so
/// a window is closed (no record can change it) before it expires.
pub(crate) struct Expiry {
    index: Vec<u8>,
    retention: i64,
    /// Session windows expire by their end, the others by their start.
    by_end: bool,
    stream_time: i64,
    /// Index entries of the windows created this epoch (a window updated
    /// many times is indexed once).
    created: std::collections::BTreeSet<Vec<u8>>,
}

/// A time as bytes that sort as the time does (negative times too).
fn ordered(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

impl Expiry {
    /// For windows of `spec`, indexed under `index`.
    pub(crate) fn new(spec: &WindowSpec, index: Vec<u8>) -> Expiry {
        let retention = spec
            .retention_ms
            .unwrap_or(0)
            .max(spec.size_ms.saturating_add(spec.grace_ms));
        Expiry {
            index,
            retention,
            by_end: spec.kind == WindowKind::Session,
            stream_time: i64::MIN,
            created: Default::default(),
        }
    }

    /// A record's time: stream time moves on.
    pub(crate) fn observe(&mut self, ts: i64) {
        self.stream_time = self.stream_time.max(ts);
    }

    /// A window created at `key` in the state store, keeping it until
    /// `at` (its start, or a session's end) plus the retention.
    pub(crate) fn track(&mut self, at: i64, key: &[u8]) {
        self.created.insert(
            [
                self.index.as_slice(),
                &ordered(at.saturating_add(self.retention)),
                key,
            ]
            .concat(),
        );
    }

    /// A window `(start, end)` stored at `key`: [`Expiry::track`] by the
    /// bound its kind expires by.
    pub(crate) fn track_window(&mut self, (start, end): (i64, i64), key: &[u8]) {
        self.track(if self.by_end { end } else { start }, key);
    }

    /// Writes the index entries of this epoch and deletes the windows that
    /// expired before stream time; their keys.
    pub(crate) fn drain(
        &mut self,
        state: &dyn StateStore,
        batch: &mut WriteBatch,
    ) -> Result<Vec<Vec<u8>>> {
        for k in std::mem::take(&mut self.created) {
            batch.put(k, Vec::new());
        }
        if self.stream_time == i64::MIN {
            return Ok(Vec::new());
        }
        let from = [self.index.as_slice(), &ordered(i64::MIN)].concat();
        let to = [self.index.as_slice(), &ordered(self.stream_time)].concat();
        let mut expired = Vec::new();
        for (k, _) in state.scan_range(&from, &to)? {
            let key = k[self.index.len() + 8..].to_vec();
            batch.delete(key.clone());
            batch.delete(k);
            expired.push(key);
        }
        Ok(expired)
    }
}

/// An aggregation's output rows, gathered with their weights and times.
#[derive(Default)]
struct Emitted {
    rows: Vec<Vec<ScalarValue>>,
    weights: Vec<i64>,
    times: Vec<i64>,
}

impl Emitted {
    fn push(&mut self, row: Vec<ScalarValue>, weight: i64, time: i64) {
        self.rows.push(row);
        self.weights.push(weight);
        self.times.push(time);
    }

    /// A group's row changed: its old row (if it had one) retracted, the
    /// new one inserted.
    fn change(&mut self, before: Option<Vec<ScalarValue>>, after: Vec<ScalarValue>, time: i64) {
        if let Some(before) = before {
            self.push(before, -1, time);
        }
        self.push(after, 1, time);
    }

    fn into_batch(self, schema: &SchemaRef) -> Result<ChangeBatch> {
        Ok(ChangeBatch {
            batch: rows_to_batch(schema, self.rows)?,
            null_values: vec![false; self.weights.len()],
            weights: self.weights,
            rowtimes: self.times,
        })
    }
}

/// A group met in the batch an aggregation is processing.
struct Slot {
    /// Its key in the state store (after the step's prefix).
    key: Vec<u8>,
    /// Its grouping values.
    group: Vec<ScalarValue>,
    state: GroupState,
    /// Its output row before the batch (consolidating), or before the
    /// row being applied; `None` if it had none.
    before: Option<Vec<ScalarValue>>,
    /// The time of its last row.
    time: i64,
}

/// TOPK and TOPKDISTINCT over an input without retractions: a value below
/// the k largest can never rise again, so the multiset keeps only those.
fn trim_top(f: AggFunc, acc: &mut Acc) {
    use brook_planner::functions::agg::MultisetFunc;
    let (Acc::MinMax(set), AggFunc::Multiset(m)) = (acc, f) else {
        return;
    };
    // The set is in ascending order: drop from the front.
    let drop = match m {
        MultisetFunc::TopK(k) => {
            let mut kept = 0i64;
            let mut keep_from = set.len();
            while keep_from > 0 && kept < k as i64 {
                keep_from -= 1;
                kept += set[keep_from].1;
            }
            keep_from
        }
        MultisetFunc::TopKDistinct(k) => set.len().saturating_sub(k),
        _ => 0,
    };
    if drop > 0 {
        set.drain(..drop);
    }
}

/// The value at `row` of an array, as a datum; the common types without a
/// scalar in between.
fn datum_at(a: &ArrayRef, row: usize) -> Result<Datum> {
    use datafusion::arrow::array::AsArray;
    if a.is_null(row) {
        return Ok(Datum::Null);
    }
    Ok(match a.data_type() {
        DataType::Int64 => Datum::Int(
            a.as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .value(row),
        ),
        DataType::Int32 => Datum::Int(i64::from(
            a.as_primitive::<datafusion::arrow::datatypes::Int32Type>()
                .value(row),
        )),
        DataType::Float64 => Datum::Float(
            a.as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                .value(row),
        ),
        DataType::Utf8 => Datum::Str(a.as_string::<i32>().value(row).to_string()),
        DataType::Boolean => Datum::Bool(a.as_boolean().value(row)),
        _ => Datum::from_scalar(&ScalarValue::try_from_array(a, row)?)?,
    })
}

struct AggregateOp {
    group: Vec<PhysExpr>,
    funcs: Vec<AggFunc>,
    args: Vec<Option<PhysExpr>>,
    schema: SchemaRef,
    prefix: Vec<u8>,
    /// Groups touched this epoch: key → (state, dirty). `None` = deleted.
    cache: HashMap<Vec<u8>, Option<GroupState>>,
    /// Groups as committed by earlier epochs, decoded, with their
    /// estimated sizes: a group met again is not read and decoded again.
    /// At most [`KEPT_STATE_BYTES`]; past it, all are let go.
    kept: HashMap<Vec<u8>, (GroupState, usize)>,
    kept_bytes: usize,
    /// Set for a session-windowed aggregation.
    sessions: Option<Sessions>,
    /// A tumbling or hopping aggregation: the position of the window's
    /// start among the grouping columns, and the expiry of its windows.
    windows: Option<(usize, Expiry)>,
    /// Emit one change per group per batch (ksqlDB's record cache).
    consolidate: bool,
    /// The input never retracts (a stream): MIN and MAX keep their
    /// extreme value alone.
    append_only: bool,
}

/// The session window of a plan's aggregation, if it has one.
fn session_spec(plan: &StreamPlan) -> Option<WindowSpec> {
    plan.ops.iter().find_map(|op| match op {
        StreamOp::Window { spec } if spec.kind == WindowKind::Session => Some(*spec),
        _ => None,
    })
}

/// The sessions of a session-windowed aggregation, as Kafka Streams keeps
/// them: per grouping key, disjoint `[start, end]` ranges of record times
/// with an aggregate each. A record joins every session that ends at most
/// the gap before it or starts at most the gap after it; those sessions
/// are merged into one (their accumulators merged, oldest first) and
/// deleted, which the sink writes as tombstones. A record whose merged
/// session ends before stream time minus the grace period is dropped as
/// late.
struct Sessions {
    gap: i64,
    grace: i64,
    /// Positions of `WINDOWSTART` and `WINDOWEND` among the grouping
    /// expressions; the others make the session's key.
    start_at: usize,
    end_at: usize,
    prefix: Vec<u8>,
    time_key: Vec<u8>,
    /// Loaded from the state store on first use.
    stream_time: Option<i64>,
    time_dirty: bool,
    /// Keys touched this epoch → their sessions.
    cache: HashMap<Vec<u8>, SessionSet>,
    /// Records dropped as late since the last [`Pipeline::take_late`].
    late: u64,
    /// Sessions past their retention leave the store.
    expiry: Expiry,
}

/// A session emitted by [`Sessions::add`].
struct SessionChange {
    /// The grouping columns, the bounds set.
    group: Vec<ScalarValue>,
    state: GroupState,
    /// −1: the session was merged away; +1: the session now.
    weight: i64,
    /// The session's end.
    time: i64,
}

/// One key's sessions: as stored at the start of the epoch, and now;
/// `changed`: those of `now` made or merged this epoch (only they are
/// written back).
#[derive(Default)]
struct SessionSet {
    stored: Vec<(i64, i64)>,
    now: BTreeMap<(i64, i64), GroupState>,
    changed: BTreeSet<(i64, i64)>,
}

impl Sessions {
    fn new(spec: WindowSpec, group: &[Expr], prefix: &[u8]) -> Result<Sessions> {
        let at = |name: &str| {
            group
                .iter()
                .position(|e| matches!(e.clone().unalias(), Expr::Column(c) if c.name == name))
                .ok_or_else(|| ExecError::Internal(format!("a session window without {name}")))
        };
        Ok(Sessions {
            gap: spec.size_ms,
            grace: spec.grace_ms,
            start_at: at(WINDOWSTART)?,
            end_at: at(WINDOWEND)?,
            prefix: [prefix, b"s/"].concat(),
            time_key: [prefix, b"s-time"].concat(),
            stream_time: None,
            time_dirty: false,
            cache: HashMap::new(),
            late: 0,
            expiry: Expiry::new(&spec, [prefix, b"sx/"].concat()),
        })
    }

    fn set_key(&self, key: &[u8], window: (i64, i64)) -> Vec<u8> {
        [
            self.prefix.as_slice(),
            key,
            &window.0.to_be_bytes(),
            &window.1.to_be_bytes(),
        ]
        .concat()
    }

    /// The sessions of `key` (a JSON array, so no key's bytes start with
    /// another's).
    fn load(&mut self, key: &[u8], state: &dyn StateStore) -> Result<&mut SessionSet> {
        if !self.cache.contains_key(key) {
            let mut set = SessionSet::default();
            let scan = [self.prefix.as_slice(), key].concat();
            for (k, v) in state.scan_prefix(&scan)? {
                let bounds = k
                    .get(scan.len()..)
                    .filter(|b| b.len() == 16)
                    .ok_or_else(|| ExecError::Internal("a malformed session key".into()))?;
                let be = |b: &[u8]| i64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
                let window = (be(&bounds[..8]), be(&bounds[8..]));
                let group: GroupState = from_binary(&v, "session state")?;
                set.stored.push(window);
                set.now.insert(window, group);
            }
            self.cache.insert(key.to_vec(), set);
        }
        self.cache
            .get_mut(key)
            .ok_or_else(|| ExecError::Internal("session cache".into()))
    }

    fn stream_time(&mut self, state: &dyn StateStore) -> Result<i64> {
        if let Some(t) = self.stream_time {
            return Ok(t);
        }
        let t = state
            .get(&self.time_key)?
            .and_then(|b| b.try_into().ok())
            .map_or(i64::MIN, i64::from_be_bytes);
        self.stream_time = Some(t);
        Ok(t)
    }

    /// Adds one record of the grouping key `group` (with its placeholder
    /// bounds) to its session; the sessions to emit.
    fn add(
        &mut self,
        group: &[ScalarValue],
        args: &[Option<Datum>],
        ts: i64,
        funcs: &[AggFunc],
        state: &dyn StateStore,
    ) -> Result<Vec<SessionChange>> {
        let time = self.stream_time(state)?;
        if ts > time {
            self.stream_time = Some(ts);
            self.time_dirty = true;
        }
        self.expiry.observe(ts);
        let time = time.max(ts);
        let (start_at, end_at) = (self.start_at, self.end_at);
        let base = group
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != start_at && *i != end_at)
            .map(|(_, v)| Datum::from_scalar(v).map_err(ExecError::from))
            .collect::<Result<Vec<_>>>()?;
        let key = json(&base)?;
        let (gap, grace) = (self.gap, self.grace);
        let set = self.load(&key, state)?;
        let touching: Vec<(i64, i64)> = set
            .now
            .keys()
            .filter(|(s, e)| *e >= ts.saturating_sub(gap) && *s <= ts.saturating_add(gap))
            .copied()
            .collect();
        let start = touching.iter().map(|w| w.0).fold(ts, i64::min);
        let end = touching.iter().map(|w| w.1).fold(ts, i64::max);
        if end < time.saturating_sub(grace) {
            self.late += 1; // the merged session has closed
            return Ok(Vec::new());
        }
        let with_bounds = |(s, e): (i64, i64)| {
            let mut g = group.to_vec();
            g[start_at] = ScalarValue::Int64(Some(s));
            g[end_at] = ScalarValue::Int64(Some(e));
            g
        };
        let mut merged = GroupState {
            rows: 0,
            accs: funcs.iter().map(|f| new_acc(*f)).collect(),
        };
        let mut out = Vec::with_capacity(touching.len() + 1);
        for w in touching {
            let Some(old) = set.now.remove(&w) else {
                continue;
            };
            merged.rows += old.rows;
            for ((acc, other), f) in merged.accs.iter_mut().zip(&old.accs).zip(funcs) {
                merge_acc(*f, acc, other);
            }
            out.push(SessionChange {
                group: with_bounds(w),
                state: old,
                weight: -1,
                time: w.1,
            });
        }
        merged.rows += 1;
        for ((acc, arg), f) in merged.accs.iter_mut().zip(args).zip(funcs) {
            update_acc(*f, acc, arg.as_ref(), 1);
        }
        set.now.insert((start, end), merged.clone());
        set.changed.insert((start, end));
        out.push(SessionChange {
            group: with_bounds((start, end)),
            state: merged,
            weight: 1,
            time: end,
        });
        Ok(out)
    }

    fn drain(&mut self, batch: &mut WriteBatch, state: &dyn StateStore) -> Result<()> {
        for (key, set) in std::mem::take(&mut self.cache) {
            for w in &set.stored {
                if !set.now.contains_key(w) {
                    batch.delete(self.set_key(&key, *w));
                }
            }
            for (w, group) in set.now.iter().filter(|(w, _)| set.changed.contains(w)) {
                if !set.stored.contains(w) {
                    let k = self.set_key(&key, *w);
                    self.expiry.track_window(*w, &k);
                }
                batch.put(self.set_key(&key, *w), binary(group)?);
            }
        }
        self.expiry.drain(state, batch)?;
        if let (true, Some(t)) = (self.time_dirty, self.stream_time) {
            batch.put(self.time_key.clone(), t.to_be_bytes().to_vec());
            self.time_dirty = false;
        }
        Ok(())
    }
}

impl AggregateOp {
    fn state_key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(key);
        k
    }

    /// A group's state, taken out of the epoch's cache (or read from the
    /// store); the caller puts it back.
    fn take(&mut self, key: &[u8], state: &dyn StateStore) -> Result<Option<GroupState>> {
        if let Some(s) = self.cache.remove(key) {
            return Ok(s);
        }
        if let Some((s, bytes)) = self.kept.remove(key) {
            self.kept_bytes -= bytes;
            return Ok(Some(s));
        }
        let stored = state.get(&self.state_key(key))?;
        stored
            .map(|b| from_binary(&b, "aggregate state"))
            .transpose()
    }

    fn new_state(&self) -> GroupState {
        GroupState {
            rows: 0,
            accs: self
                .funcs
                .iter()
                .map(|f| match f {
                    AggFunc::Min | AggFunc::Max if self.append_only => Acc::Extreme(Datum::Null),
                    f => new_acc(*f),
                })
                .collect(),
        }
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
        if self.sessions.is_some() {
            return self.process_sessions(input, &group_cols, &arg_cols, state);
        }
        let mut out = Emitted::default();
        // The groups of this batch, each looked up once: rows are matched
        // to them by their grouping values in Arrow's row format.
        let converter = RowConverter::new(
            group_cols
                .iter()
                .map(|c| SortField::new(c.data_type().clone()))
                .collect(),
        )?;
        // (No grouping columns: every row is in the one group.)
        let group_rows = (!group_cols.is_empty())
            .then(|| converter.convert_columns(&group_cols))
            .transpose()?;
        let row_key =
            |row: usize| -> &[u8] { group_rows.as_ref().map_or(&[], |r| r.row(row).data()) };
        let mut slot_of: HashMap<&[u8], usize> = HashMap::new();
        let mut slots: Vec<Slot> = Vec::new();
        for row in 0..n {
            if input.null_values[row] {
                continue; // a record without a value is not aggregated
            }
            if group_cols.iter().any(|c| c.is_null(row)) {
                // ksqlDB drops rows whose grouping expressions give NULL.
                continue;
            }
            let weight = input.weights[row];
            if weight <= 0 && self.append_only {
                return Err(ExecError::Internal(
                    "a retraction reached an aggregation of a stream".into(),
                ));
            }
            let time = input.rowtimes[row];
            let (i, first_touch) = match slot_of.get(row_key(row)) {
                Some(i) => (*i, false),
                None => {
                    let slot = self.open_slot(&group_cols, row, time, state)?;
                    slot_of.insert(row_key(row), slots.len());
                    slots.push(slot);
                    (slots.len() - 1, true)
                }
            };
            let slot = &mut slots[i];
            if !self.consolidate && !first_touch {
                slot.before = Some(output_row(
                    &self.schema,
                    &self.funcs,
                    &slot.group,
                    &slot.state,
                )?);
            }
            slot.state.rows += weight;
            for ((acc, col), f) in slot.state.accs.iter_mut().zip(&arg_cols).zip(&self.funcs) {
                let arg = match col {
                    Some(col) => Some(datum_at(col, row)?),
                    None => None,
                };
                update_acc(*f, acc, arg.as_ref(), weight);
                if self.append_only {
                    trim_top(*f, acc);
                }
            }
            slot.time = time;
            if !self.consolidate {
                // A group whose rows were all retracted stays, with its
                // aggregates back at their initial values (ksqlDB emits COUNT 0).
                let before = slot.before.take();
                out.change(before, self.row_of(slot)?, time);
            }
        }
        drop(slot_of);
        for slot in slots {
            if self.consolidate {
                let after = self.row_of(&slot)?;
                out.change(slot.before, after, slot.time);
            }
            self.cache.insert(slot.key, Some(slot.state));
        }
        out.into_batch(&self.schema)
    }

    /// A group's output row now.
    fn row_of(&self, slot: &Slot) -> Result<Vec<ScalarValue>> {
        output_row(&self.schema, &self.funcs, &slot.group, &slot.state)
    }

    /// The group of row `row`, first met in this batch: its key and state
    /// (a new one if it has none), and its output row before the batch.
    fn open_slot(
        &mut self,
        group_cols: &[ArrayRef],
        row: usize,
        time: i64,
        state: &dyn StateStore,
    ) -> Result<Slot> {
        let group: Vec<ScalarValue> = group_cols
            .iter()
            .map(|c| ScalarValue::try_from_array(c, row))
            .collect::<Result<_, _>>()?;
        let group_datums = group
            .iter()
            .map(|v| Datum::from_scalar(v).map_err(ExecError::from))
            .collect::<Result<Vec<_>>>()?;
        let key = json(&group_datums)?;
        let old = self.take(&key, state)?;
        if let Some((start_at, expiry)) = &mut self.windows {
            expiry.observe(time);
            if old.is_none() {
                if let Some(Datum::Int(start)) = group_datums.get(*start_at) {
                    let k = [self.prefix.as_slice(), &key].concat();
                    expiry.track(*start, &k);
                }
            }
        }
        let before = match &old {
            Some(old) => Some(output_row(&self.schema, &self.funcs, &group, old)?),
            None => None,
        };
        Ok(Slot {
            state: old.unwrap_or_else(|| self.new_state()),
            key,
            group,
            before,
            time,
        })
    }

    /// A session-windowed aggregation: each row goes to its sessions.
    fn process_sessions(
        &mut self,
        input: &ChangeBatch,
        group_cols: &[ArrayRef],
        arg_cols: &[Option<ArrayRef>],
        state: &dyn StateStore,
    ) -> Result<ChangeBatch> {
        let mut out = Emitted::default();
        let Some(sessions) = &mut self.sessions else {
            return Err(ExecError::Internal("not a session aggregation".into()));
        };
        for row in 0..input.len() {
            if input.null_values[row] || input.weights[row] <= 0 {
                // Not aggregated: a record without a value; sessions
                // aggregate streams, nothing retracts.
                continue;
            }
            let group: Vec<ScalarValue> = group_cols
                .iter()
                .map(|c| ScalarValue::try_from_array(c, row))
                .collect::<Result<_, _>>()?;
            if group.iter().any(ScalarValue::is_null) {
                continue;
            }
            let args = arg_cols
                .iter()
                .map(|col| col.as_ref().map(|c| datum_at(c, row)).transpose())
                .collect::<Result<Vec<_>>>()?;
            let ts = input.rowtimes[row];
            for c in sessions.add(&group, &args, ts, &self.funcs, state)? {
                let row = output_row(&self.schema, &self.funcs, &c.group, &c.state)?;
                out.push(row, c.weight, c.time);
            }
        }
        out.into_batch(&self.schema)
    }

    fn drain(&mut self, batch: &mut WriteBatch, state: &dyn StateStore) -> Result<()> {
        if let Some(sessions) = &mut self.sessions {
            sessions.drain(batch, state)?;
        }
        for (key, s) in std::mem::take(&mut self.cache) {
            let k = self.state_key(&key);
            match s {
                Some(s) => {
                    batch.put(k, binary(&s)?);
                    let bytes = key.len() + state_bytes(&s);
                    self.kept_bytes += bytes;
                    self.kept.insert(key, (s, bytes));
                }
                None => batch.delete(k),
            }
        }
        // After the puts: a window expiring now is deleted.
        if let Some((_, expiry)) = &mut self.windows {
            for k in expiry.drain(state, batch)? {
                if let Some((_, bytes)) = k
                    .strip_prefix(self.prefix.as_slice())
                    .and_then(|key| self.kept.remove(key))
                {
                    self.kept_bytes -= bytes;
                }
            }
        }
        if self.kept_bytes > KEPT_STATE_BYTES {
            self.kept.clear();
            self.kept_bytes = 0;
        }
        Ok(())
    }
}

/// How many bytes of committed group states an aggregation keeps decoded
/// across epochs (estimated, [`state_bytes`]).
const KEPT_STATE_BYTES: usize = 64 << 20;

/// A group state's size in memory, roughly.
fn state_bytes(s: &GroupState) -> usize {
    fn datum(d: &Datum) -> usize {
        std::mem::size_of::<Datum>()
            + match d {
                Datum::Str(s) => s.len(),
                Datum::Bytes(b) => b.len(),
                Datum::List(v) | Datum::Struct(v) => v.iter().map(datum).sum(),
                Datum::Map(m) => m.iter().map(|(k, v)| datum(k) + datum(v)).sum(),
                _ => 0,
            }
    }
    let accs: usize = s
        .accs
        .iter()
        .map(|a| {
            std::mem::size_of::<Acc>()
                + match a {
                    Acc::MinMax(v) => v.iter().map(|(d, _)| datum(d) + 8).sum(),
                    Acc::List(v) | Acc::Offsets(v) => v.iter().map(datum).sum(),
                    Acc::Extreme(d) | Acc::Pick(d) => datum(d),
                    _ => 0,
                }
        })
        .sum();
    64 + accs
}

/// A group's output row: its grouping columns, then each aggregate.
fn output_row(
    schema: &SchemaRef,
    funcs: &[AggFunc],
    group: &[ScalarValue],
    s: &GroupState,
) -> Result<Vec<ScalarValue>> {
    let mut row = group.to_vec();
    for (i, acc) in s.accs.iter().enumerate() {
        let ty = schema.field(group.len() + i).data_type();
        let d = acc_output(funcs[i], acc, ty);
        row.push(d.to_scalar(ty)?);
    }
    Ok(row)
}

/// Merges `other`, the accumulator of a later session, into `acc` (ksqlDB's
/// UDAF `merge`, used when a record joins sessions together).
fn merge_acc(f: AggFunc, acc: &mut Acc, other: &Acc) {
    match (acc, other) {
        (Acc::Count(a), Acc::Count(b)) => *a += b,
        (Acc::Sum { int, float }, Acc::Sum { int: i, float: x }) => {
            *int = int.wrapping_add(*i);
            *float += x;
        }
        (Acc::Avg { sum, n }, Acc::Avg { sum: s, n: m }) => {
            *sum += s;
            *n += m;
        }
        (Acc::MinMax(set), Acc::MinMax(more)) => {
            for (v, count) in more {
                brook_planner::functions::agg::multiset_add(set, v, *count);
            }
        }
        (Acc::Pick(cur), Acc::Pick(later)) => {
            // LATEST takes the later session's value, EARLIEST keeps the
            // earlier one; a NULL (nothing seen) never wins.
            let latest = matches!(f, AggFunc::Latest(_));
            if !later.is_null() && (latest || cur.is_null()) {
                *cur = later.clone();
            }
        }
        (Acc::Offsets(kept), Acc::Offsets(more)) => {
            if let AggFunc::Latest(a) | AggFunc::Earliest(a) = f {
                for v in more {
                    a.offer(matches!(f, AggFunc::Latest(_)), kept, v.clone(), false);
                }
            }
        }
        (Acc::List(items), Acc::List(more)) => items.extend(more.iter().cloned()),
        (Acc::Extreme(cur), Acc::Extreme(other)) => offer_extreme(f, cur, other),
        (Acc::Corr(sums), Acc::Corr(more)) => sums.merge(more),
        _ => {}
    }
}

/// MIN or MAX without retractions: `v` replaces `cur` if it is further
/// out (NULL is never an extreme).
fn offer_extreme(f: AggFunc, cur: &mut Datum, v: &Datum) {
    let further = match f {
        AggFunc::Min => *v < *cur,
        _ => *v > *cur,
    };
    if !v.is_null() && (cur.is_null() || further) {
        *cur = v.clone();
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
        AggFunc::Correlation => Acc::Corr(Default::default()),
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
        Acc::Extreme(cur) => {
            if let Some(v) = value {
                offer_extreme(f, cur, v);
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
        Acc::Corr(sums) => {
            // A pair with a NULL side is skipped.
            if let Some(Datum::List(pair)) = value {
                if let [Datum::Float(x), Datum::Float(y)] = pair.as_slice() {
                    sums.add(*x, *y, weight);
                }
            }
        }
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
        Acc::Pick(d) | Acc::Extreme(d) => d.clone(),
        Acc::Offsets(kept) => match f {
            AggFunc::Latest(ByOffsetArgs { n: Some(_), .. })
            | AggFunc::Earliest(ByOffsetArgs { n: Some(_), .. }) => Datum::List(kept.clone()),
            _ => kept.first().cloned().unwrap_or(Datum::Null),
        },
        Acc::List(items) => Datum::List(items.clone()),
        Acc::Corr(sums) => Datum::Float(sums.value()),
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
        // In the binary encoding, and as JSON (state of earlier versions).
        let encodings = [binary(&state).unwrap(), serde_json::to_vec(&state).unwrap()];
        for bytes in encodings {
            let back: GroupState = from_binary(&bytes, "test").expect("infinite sums read back");
            assert!(matches!(back.accs[0], Acc::Sum { float, .. } if float == f64::INFINITY));
            assert!(matches!(back.accs[1], Acc::Avg { sum, n: 2 } if sum == f64::INFINITY));
        }
    }

    #[test]
    fn group_states_read_back_from_both_encodings() {
        let values = [
            Datum::Null,
            Datum::Bool(true),
            Datum::Int(-7),
            Datum::Float(f64::NAN),
            Datum::Str("zß".into()),
            Datum::Decimal(-12_345_678_901_234_567_890_123, 4),
            Datum::Bytes(vec![0, 1, 255]),
            Datum::List(vec![Datum::Int(1), Datum::Null]),
            Datum::Map(vec![(Datum::Str("k".into()), Datum::Int(2))]),
            Datum::Struct(vec![Datum::Str("a".into()), Datum::Float(0.5)]),
        ];
        let state = GroupState {
            rows: 3,
            accs: vec![
                Acc::Count(3),
                Acc::MinMax(values.iter().cloned().zip(1..).collect()),
                Acc::List(values.to_vec()),
                Acc::Pick(Datum::Int(9)),
            ],
        };
        let expected = format!("{:?}", state.accs).replace("NaN", "nan");
        for bytes in [binary(&state).unwrap(), serde_json::to_vec(&state).unwrap()] {
            let back: GroupState = from_binary(&bytes, "test").unwrap();
            assert_eq!(back.rows, 3);
            assert_eq!(format!("{:?}", back.accs).replace("NaN", "nan"), expected);
        }
        // Damaged bytes are an error, not a panic.
        let mut bad = binary(&state).unwrap();
        bad.truncate(bad.len() / 2);
        assert!(from_binary::<GroupState>(&bad, "test").is_err());
        assert!(from_binary::<GroupState>(&[], "test").is_err());
    }
}

#[cfg(test)]
mod expiry_tests {
    use super::*;
    use brook_storage::MemoryStateStore;

    fn spec(retention_ms: Option<i64>) -> WindowSpec {
        WindowSpec {
            kind: WindowKind::Tumbling,
            size_ms: 1000,
            advance_ms: 1000,
            grace_ms: 500,
            retention_ms,
            grace_given: true,
        }
    }

    fn commit(state: &MemoryStateStore, expiry: &mut Expiry) -> Vec<Vec<u8>> {
        let mut batch = WriteBatch::default();
        let gone = expiry.drain(state, &mut batch).expect("drains");
        state.commit(batch).expect("commits");
        gone
    }

    #[test]
    fn windows_leave_once_stream_time_passes_start_plus_retention() {
        let state = MemoryStateStore::default();
        let mut batch = WriteBatch::default();
        for k in [b"a/w-2000".as_slice(), b"a/w0", b"a/w3000"] {
            batch.put(k.to_vec(), b"state".to_vec());
        }
        state.commit(batch).expect("commits");
        // Retention below size + grace is raised to it (1500 ms).
        let mut expiry = Expiry::new(&spec(Some(100)), b"a/x/".to_vec());
        expiry.track(-2000, b"a/w-2000");
        expiry.track(0, b"a/w0");
        expiry.track(3000, b"a/w3000");
        assert!(commit(&state, &mut expiry).is_empty(), "no stream time yet");
        expiry.observe(1500);
        // -2000 + 1500 < 1500; 0 + 1500 is not before 1500.
        assert_eq!(commit(&state, &mut expiry), vec![b"a/w-2000".to_vec()]);
        expiry.observe(1501);
        assert_eq!(commit(&state, &mut expiry), vec![b"a/w0".to_vec()]);
        assert_eq!(state.get(b"a/w0").expect("reads"), None);
        assert!(state.get(b"a/w3000").expect("reads").is_some());
        // The index keeps only the window still retained.
        assert_eq!(state.scan_prefix(b"a/x/").expect("scans").len(), 1);
    }

    #[test]
    fn a_longer_retention_keeps_windows_longer() {
        let state = MemoryStateStore::default();
        let mut expiry = Expiry::new(&spec(Some(10_000)), b"x/".to_vec());
        expiry.track(0, b"w0");
        commit(&state, &mut expiry);
        expiry.observe(9_999);
        assert!(commit(&state, &mut expiry).is_empty());
        expiry.observe(10_001);
        assert_eq!(commit(&state, &mut expiry), vec![b"w0".to_vec()]);
    }
}
