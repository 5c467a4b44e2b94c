//! Push queries: a dataflow like a persistent query's, its state in
//! memory, streaming rows to one client.

use std::sync::Arc;

use brook_planner::plan::StreamPlan;
use brook_storage::{MemoryStateStore, StateStore, WriteBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use tokio::sync::mpsc;

use super::epoch::{input_topics, read_epoch, take_epoch};
use super::Engine;
use crate::dataflow::{Dataflow, EpochOutput};
use crate::error::Result;
use crate::panic_guard::guarded;

/// Rows streamed to a push-query client.
pub struct PushStream {
    /// Schema of the rows.
    pub schema: SchemaRef,
    /// Rows as they are produced; ends at LIMIT or on error.
    pub rows: mpsc::Receiver<Result<Vec<ScalarValue>>>,
}

impl Engine {
    /// Starts a push query: a transient dataflow streaming rows until LIMIT
    /// or until the receiver is dropped.
    pub fn push(self: &Arc<Self>, plan: StreamPlan, from_beginning: bool) -> Result<PushStream> {
        let parts = self.input_parts(&plan)?;
        let mut offsets: Vec<u64> = if from_beginning {
            vec![0; parts.len()]
        } else {
            self.end_offsets_of(&input_topics(&plan))?
        };
        let (tx, rx) = mpsc::channel(1024);
        let engine = Arc::clone(self);
        let out_schema = Arc::clone(&plan.output_schema);
        tokio::spawn(async move {
            let state = MemoryStateStore::default();
            let run = async {
                // The dataflow of a persistent query (a table's upserts
                // become changes, the key's previous row retracted), its
                // state in memory.
                let mut dataflow = Dataflow::new(&plan, b"", &state)?;
                let mut appended = engine.appended.subscribe();
                let mut sent = 0usize;
                if plan.limit == Some(0) {
                    return Ok(());
                }
                loop {
                    appended.borrow_and_update();
                    let mut reads = Vec::with_capacity(parts.len());
                    for (g, (_, topic, p)) in parts.iter().enumerate() {
                        reads.push(read_epoch(
                            &engine.log,
                            engine.config.epoch,
                            topic,
                            *p,
                            offsets[g],
                        )?);
                    }
                    let by_input = take_epoch(
                        &parts,
                        reads,
                        &mut offsets,
                        plan.join.is_some(),
                        engine.config.epoch,
                    );
                    if by_input.iter().all(Vec::is_empty) {
                        tokio::select! {
                            r = appended.changed() => if r.is_err() { return Ok(()) },
                            _ = tx.closed() => return Ok(()),
                        }
                        continue;
                    }
                    let EpochOutput {
                        changes: out,
                        problems,
                        ..
                    } = dataflow.process(&by_input, &state)?;
                    engine.log_processing_errors("transient", &problems);
                    let mut wb = WriteBatch::default();
                    dataflow.checkpoint(&mut wb, &state)?;
                    state.commit(wb)?;
                    for i in 0..out.len() {
                        if out.weights[i] <= 0 || out.null_values[i] {
                            continue;
                        }
                        if tx.send(Ok(out.row(i)?)).await.is_err() {
                            return Ok(());
                        }
                        sent += 1;
                        if plan.limit.is_some_and(|l| sent >= l) {
                            return Ok(());
                        }
                    }
                }
            };
            let result: Result<()> = guarded("push query", run).await;
            if let Err(e) = result {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(PushStream {
            schema: out_schema,
            rows: rx,
        })
    }
}
