use brook_planner::PlanError;
use brook_storage::StorageError;

/// Errors of the executor.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The storage layer failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Planning failed (while rebuilding a plan).
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// DataFusion failed evaluating an expression or a pull query.
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// Arrow failed building or slicing a batch.
    #[error("{0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// A value could not be serialized for its format.
    #[error("{0}")]
    Serialization(String),
    /// A persistent query failed and stopped.
    #[error("persistent query {id} failed: {reason}")]
    QueryFailed {
        /// The query id.
        id: String,
        /// Why.
        reason: String,
    },
    /// A persistent query does not exist.
    #[error("query \"{0}\" does not exist")]
    QueryNotFound(String),
    /// A table's state is being rebuilt from the log.
    #[error("table \"{table}\" is not ready: its state is being rebuilt from the log ({done} of {total} records)")]
    NotReady {
        /// The table.
        table: String,
        /// Source records processed so far.
        done: u64,
        /// Source records to process.
        total: u64,
    },
    /// The engine is shutting down.
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// A broken invariant: this is a bug.
    #[error("internal error: {0} (this is a bug)")]
    Internal(String),
}

/// Result alias of the executor.
pub type Result<T, E = ExecError> = std::result::Result<T, E>;

/// `v` as JSON bytes, the encoding of operator state in the state store.
pub(crate) fn json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| ExecError::Internal(e.to_string()))
}
