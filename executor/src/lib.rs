//! Brook's executor: incremental dataflows over the log.
//!
//! It runs what the planner plans: persistent queries (tokio tasks that read
//! their sources in epochs, push change batches through a dataflow, and
//! commit state, source offsets and their sink output atomically), push
//! queries (the same dataflow, its state in memory, streaming rows to one
//! client), and pull queries (DataFusion over a source's current rows, read
//! as it polls them, `pull_scan`; a materialized table's rows are read by
//! key when the filter pins its key, `pull_keys`).
//!
//! Main types: [`Engine`] (start here), [`ChangeBatch`] (an Arrow batch
//! plus a weight and event time per row, what operators exchange),
//! `operator::Operator` (the trait every runtime operator implements),
//! [`Pipeline`] (a plan's operators, compiled), [`Datum`] (a serializable
//! scalar for state).
//!
//! Layers, lowest first: `datum` and `format` (values and bytes) →
//! `decode` and `encode` (a stream's JSON records straight into Arrow
//! columns, read by the scanner of `json_scan`, and sink values straight
//! out of them) and `codec` (records ↔ change batches, the general path)
//! → `change` (the change batch) → `operator` (one file per operator
//! family) → `dataflow` (a query's input, then its operators) → `engine`
//! (`driver` runs persistent queries epoch by epoch, `checkpoint` is what
//! an epoch commits and how a query resumes, `epoch` how inputs are read,
//! `push` and `pull` the two kinds of client query), and `print`, which
//! shows raw topic records. `fuzz` is the cargo-fuzz harness for the
//! record decoders; `bench` what the operator benchmarks
//! (`benches/operators.rs`) reach inside for.
//! A panic inside a query's task (a bug in decoding, a join, an
//! expression, encoding) fails that query as an internal error
//! (`panic_guard`), never the process.
//! It knows nothing of SQL text or wire protocols: it takes plans.
#![warn(missing_docs)]

#[doc(hidden)]
pub mod bench;
mod change;
mod codec;
mod dataflow;
mod decode;
mod encode;
mod engine;
mod error;
mod format;
#[doc(hidden)]
pub mod fuzz;
mod json_scan;
mod operator;
mod panic_guard;
mod print;
pub mod processing_log;
mod pull_keys;
mod pull_scan;

pub use brook_planner::datum::{self, Datum};
pub use change::ChangeBatch;
pub use codec::split_window;
pub use engine::{blocking, Engine, EngineConfig, EpochBounds, PushStream};
pub use error::{ExecError, Result};
pub use format::{bytes_to_json, datum_to_json, json_to_bytes, partition_for};
pub use operator::Pipeline;
