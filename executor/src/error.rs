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

/// `v` as JSON bytes, the encoding of operator state in the state store
/// (but for aggregation state: [`binary`]).
pub(crate) fn json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| ExecError::Internal(e.to_string()))
}

/// The first byte of state in the binary encoding. No JSON text starts
/// with it, so state written as JSON by earlier versions still reads.
const BINARY_STATE: u8 = 0x01;

/// `v` in the binary encoding of hot operator state (aggregation groups,
/// sessions, rows held for EMIT FINAL, table rows): a version byte, then postcard
/// (varints, no field names). Only for types whose serde form has no
/// skipped or defaulted fields: postcard does not describe itself.
pub(crate) fn binary<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    let out = vec![BINARY_STATE];
    postcard::to_extend(v, out).map_err(|e| ExecError::Internal(e.to_string()))
}

/// Reads state written by [`binary`], or as JSON by an earlier version;
/// `what` names it in the error.
pub(crate) fn from_binary<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    let result = match bytes.split_first() {
        Some((&BINARY_STATE, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
        _ => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
    };
    result.map_err(|e| ExecError::Internal(format!("unreadable {what}: {e}")))
}
