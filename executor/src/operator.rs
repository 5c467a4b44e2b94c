//! Runtime operators, and the trait they share.
//!
//! An operator takes one batch of changes (or, at a dataflow's input, one
//! epoch's records), returns the changes it emits, and keeps whatever it
//! remembers in memory until the epoch's checkpoint, where it writes what
//! changed into the epoch's atomic commit. One file per family:
//! `filter`, `project`, `explode` (table functions), `window` (assignment
//! and expiry), `aggregate` (grouped, with its accumulators and session
//! windows), `emit_final`, `join` (every join kind, as a chain of steps)
//! and `table_source` (a table's upserts as changes). [`Pipeline`] runs a
//! plan's operators in order; `crate::dataflow` puts an input in front of
//! it for persistent and push queries alike.

use std::sync::Arc;

use brook_planner::functions::take_row_errors;
use brook_planner::plan::{StreamOp, StreamPlan};
use brook_storage::{StateStore, WriteBatch};
use datafusion::arrow::array::{new_null_array, ArrayRef, RecordBatch};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::execution_props::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::Expr;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::{create_physical_expr, PhysicalExpr};

use crate::change::ChangeBatch;
use crate::error::Result;
use crate::processing_log::ProcessingError;

pub(crate) mod aggregate;
mod emit_final;
mod explode;
mod filter;
pub(crate) mod join;
mod project;
pub(crate) mod table_source;
pub(crate) mod window;

use aggregate::AggregateOperator;
use emit_final::EmitFinalOperator;
use explode::ExplodeOperator;
use filter::FilterOperator;
use project::ProjectOperator;
use window::WindowOperator;

/// What an operator is given besides its input.
pub(crate) struct Context<'a> {
    /// The store its state is read from. It writes nothing there itself:
    /// what it changed goes into the epoch's commit at
    /// [`Operator::checkpoint`].
    pub state: &'a dyn StateStore,
    /// Rows an expression failed on, or records that could not be read,
    /// for the processing log (ksqlDB's per-record error handling: one bad
    /// row does not stop a query).
    pub errors: &'a mut Vec<ProcessingError>,
}

/// A runtime operator. `In` is what it consumes: a change batch for all
/// but a dataflow's input, which consumes an epoch's records.
pub(crate) trait Operator<In = ChangeBatch>: Send {
    /// The changes `input` makes to the operator's output, in order.
    fn process(&mut self, input: In, cx: &mut Context<'_>) -> Result<ChangeBatch>;

    /// Adds what the operator changed in its state since the last
    /// checkpoint to `batch`, the epoch's atomic commit. `state` is the
    /// store as of the last commit (read to find expired windows).
    fn checkpoint(&mut self, _batch: &mut WriteBatch, _state: &dyn StateStore) -> Result<()> {
        Ok(())
    }

    /// Rows dropped as too late for their window since the last call.
    fn take_late(&mut self) -> u64 {
        0
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

/// A one-row batch as `[v1, v2, …]`, for the processing log.
pub(crate) fn row_text(row: &RecordBatch) -> String {
    let values: Vec<String> = row
        .columns()
        .iter()
        .map(|c| ScalarValue::try_from_array(c, 0).map_or_else(|_| "?".into(), |v| v.to_string()))
        .collect();
    format!("[{}]", values.join(", "))
}

/// A plan's operators, compiled, run in order.
pub struct Pipeline {
    ops: Vec<Box<dyn Operator>>,
    /// Rows an expression failed on since the last [`Pipeline::take_errors`].
    errors: Vec<ProcessingError>,
}

impl Pipeline {
    /// Compiles a plan's operators; `state_prefix` namespaces their state.
    pub fn new(plan: &StreamPlan, state_prefix: Vec<u8>) -> Result<Pipeline> {
        let mut ops: Vec<Box<dyn Operator>> = Vec::with_capacity(plan.ops.len() + 1);
        for op in &plan.ops {
            ops.push(match op {
                StreamOp::Filter {
                    predicate,
                    input_schema,
                } => Box::new(FilterOperator::new(predicate, input_schema)?),
                StreamOp::Project {
                    exprs,
                    input_schema,
                    output_schema,
                } => Box::new(ProjectOperator::new(
                    plan,
                    exprs,
                    input_schema,
                    output_schema,
                )?),
                StreamOp::Explode {
                    calls,
                    input_schema,
                    output_schema,
                } => Box::new(ExplodeOperator::new(calls, input_schema, output_schema)?),
                StreamOp::Window { spec } => Box::new(WindowOperator::new(
                    *spec,
                    [state_prefix.as_slice(), b"w/stream-time"].concat(),
                )),
                StreamOp::Aggregate {
                    group,
                    aggs,
                    input_schema,
                    output_schema,
                } => Box::new(AggregateOperator::new(
                    plan,
                    group,
                    aggs,
                    input_schema,
                    output_schema,
                    &state_prefix,
                )?),
            });
        }
        if let (true, Some(window)) = (plan.emit_final, plan.window) {
            ops.push(Box::new(EmitFinalOperator::new(
                window,
                plan,
                [state_prefix.as_slice(), b"f/"].concat(),
            )));
        }
        Ok(Pipeline {
            ops,
            errors: Vec::new(),
        })
    }

    /// Pushes a batch of changes through every operator; the rows an
    /// expression fails on are kept for [`Pipeline::take_errors`].
    pub fn process(&mut self, input: ChangeBatch, state: &dyn StateStore) -> Result<ChangeBatch> {
        let mut cx = Context {
            state,
            errors: &mut self.errors,
        };
        run(&mut self.ops, input, &mut cx)
    }

    /// The rows expressions failed on since the last call.
    pub fn take_errors(&mut self) -> Vec<ProcessingError> {
        std::mem::take(&mut self.errors)
    }

    /// Adds the epoch's state changes to `batch` and forgets them.
    /// Windows past their retention leave the store (`state` is read to
    /// find them).
    pub fn checkpoint(&mut self, batch: &mut WriteBatch, state: &dyn StateStore) -> Result<()> {
        Operator::checkpoint(self, batch, state)
    }
}

impl Operator for Pipeline {
    fn process(&mut self, input: ChangeBatch, cx: &mut Context<'_>) -> Result<ChangeBatch> {
        run(&mut self.ops, input, cx)
    }

    fn checkpoint(&mut self, batch: &mut WriteBatch, state: &dyn StateStore) -> Result<()> {
        for op in &mut self.ops {
            op.checkpoint(batch, state)?;
        }
        Ok(())
    }

    fn take_late(&mut self) -> u64 {
        self.ops.iter_mut().map(|op| op.take_late()).sum()
    }
}

/// Pushes `input` through `ops` in order. Every operator runs even on an
/// empty batch, so the result always has the last one's output schema.
fn run(
    ops: &mut [Box<dyn Operator>],
    mut input: ChangeBatch,
    cx: &mut Context<'_>,
) -> Result<ChangeBatch> {
    for op in ops {
        input = op.process(input, cx)?;
    }
    Ok(input)
}
