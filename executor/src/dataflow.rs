//! A query's dataflow: its input (an epoch's records, decoded; a table's
//! upserts turned into changes; or a join of several inputs) followed by
//! its plan's operators. Persistent queries (`crate::driver`) and push
//! queries (`crate::push`) run the same dataflow; they differ only in
//! where its state lives (the state store, or memory) and where its output
//! goes (a sink topic, or a client).

use brook_planner::catalog::{SourceDef, SourceKind};
use brook_planner::plan::StreamPlan;
use brook_storage::{StateStore, StoredRecord, WriteBatch};
use datafusion::arrow::datatypes::SchemaRef;

use crate::change::ChangeBatch;
use crate::decode::decode_batch;
use crate::error::Result;
use crate::operator::join::JoinChain;
use crate::operator::table_source::TableSourceOperator;
use crate::operator::{Context, Operator, Pipeline};
use crate::processing_log::ProcessingError;

/// One epoch's records: one list per input, in the order of
/// `JoinSpec::inputs` (one list when the query reads one source).
pub(crate) type EpochRecords<'r> = &'r [Vec<StoredRecord>];

/// A source's records decoded as a stream's: each a row inserted (a
/// table's tombstone is a row without a value).
struct Decoder {
    def: SourceDef,
    schema: SchemaRef,
}

impl Decoder {
    fn new(def: &SourceDef) -> Decoder {
        let mut as_stream = def.clone();
        as_stream.kind = SourceKind::Stream;
        Decoder {
            schema: def.batch_schema(),
            def: as_stream,
        }
    }

    fn decode(&self, records: &[StoredRecord], cx: &mut Context<'_>) -> Result<ChangeBatch> {
        let (batch, skipped) = decode_batch(&self.def, &self.schema, records)?;
        cx.errors.extend(skipped);
        Ok(batch)
    }
}

/// Where a dataflow's changes come from.
enum Input {
    /// A stream's records.
    Stream(Box<Decoder>),
    /// A table's records: upserts and tombstones, as changes.
    Table(Box<TableSourceOperator>),
    /// A join: each input decoded as a stream (a table's tombstones are
    /// rows without a value, which delete the joined row), then joined.
    Join {
        inputs: Vec<Decoder>,
        chain: Box<JoinChain>,
    },
}

impl Operator<EpochRecords<'_>> for Input {
    fn process(&mut self, records: EpochRecords<'_>, cx: &mut Context<'_>) -> Result<ChangeBatch> {
        let first = records.first().map_or(&[][..], Vec::as_slice);
        match self {
            Input::Stream(decoder) => decoder.decode(first, cx),
            Input::Table(table) => table.process(first, cx),
            Input::Join { inputs, chain } => {
                let decoded = inputs
                    .iter()
                    .zip(records)
                    .map(|(decoder, records)| decoder.decode(records, cx))
                    .collect::<Result<Vec<_>>>()?;
                chain.process(&decoded, cx)
            }
        }
    }

    fn checkpoint(&mut self, batch: &mut WriteBatch, state: &dyn StateStore) -> Result<()> {
        match self {
            Input::Stream(_) => Ok(()),
            Input::Table(table) => table.checkpoint(batch, state),
            Input::Join { chain, .. } => chain.checkpoint(batch, state),
        }
    }
}

/// A compiled query: input, then operators.
pub(crate) struct Dataflow {
    input: Input,
    pipeline: Pipeline,
}

/// What one epoch of a dataflow produced.
pub(crate) struct EpochOutput {
    /// The changes to its output.
    pub changes: ChangeBatch,
    /// Records that could not be read and rows an expression failed on.
    pub problems: Vec<ProcessingError>,
    /// Window assignments dropped as too late.
    pub late: u64,
}

impl Dataflow {
    /// The dataflow of `plan`, its state under `prefix` in `state` (a
    /// join's buffers are loaded from there now; the other operators read
    /// their state as they meet its keys).
    pub(crate) fn new(plan: &StreamPlan, prefix: &[u8], state: &dyn StateStore) -> Result<Self> {
        let input = match (&plan.join, plan.source.kind) {
            (Some(spec), _) => {
                let chain = JoinChain::new(
                    spec,
                    plan.source.batch_schema(),
                    [prefix, b"j/"].concat(),
                    state,
                )?;
                Input::Join {
                    inputs: chain.sources().into_iter().map(Decoder::new).collect(),
                    chain: Box::new(chain),
                }
            }
            (None, SourceKind::Table) => Input::Table(Box::new(TableSourceOperator::new(
                &plan.source,
                [prefix, b"t/"].concat(),
            ))),
            (None, SourceKind::Stream) => Input::Stream(Box::new(Decoder::new(&plan.source))),
        };
        Ok(Dataflow {
            input,
            pipeline: Pipeline::new(plan, [prefix, b"a/"].concat())?,
        })
    }

    /// Runs one epoch's records through the dataflow. (A panic inside it,
    /// a bug, fails the query's task: `panic_guard` wraps the task.)
    pub(crate) fn process(
        &mut self,
        records: EpochRecords<'_>,
        state: &dyn StateStore,
    ) -> Result<EpochOutput> {
        let mut problems = Vec::new();
        let mut cx = Context {
            state,
            errors: &mut problems,
        };
        let input = self.input.process(records, &mut cx)?;
        let changes = Operator::process(&mut self.pipeline, input, &mut cx)?;
        let late = self.pipeline.take_late();
        Ok(EpochOutput {
            changes,
            problems,
            late,
        })
    }

    /// Adds every operator's state changes of the epoch to `batch`, the
    /// epoch's commit.
    pub(crate) fn checkpoint(
        &mut self,
        batch: &mut WriteBatch,
        state: &dyn StateStore,
    ) -> Result<()> {
        self.pipeline.checkpoint(batch, state)?;
        self.input.checkpoint(batch, state)
    }
}
