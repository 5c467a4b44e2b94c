/// Errors of parsing, binding and planning.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The SQL text does not parse; the message carries line and column.
    #[error("{0}")]
    Syntax(String),
    /// A stream, table, column or query does not exist.
    #[error("{kind} \"{name}\" does not exist")]
    NotFound {
        /// `stream`, `table`, `source`, `column`, `query`, …
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// A stream, table or query exists already.
    #[error("{kind} \"{name}\" already exists")]
    AlreadyExists {
        /// `stream`, `table`, …
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// A value or expression has the wrong type.
    #[error("{0}")]
    Type(String),
    /// The statement is valid SQL but not meaningful here.
    #[error("{0}")]
    Invalid(String),
    /// The statement or feature is not supported (yet).
    #[error("{0}")]
    Unsupported(String),
    /// The object is in use and cannot be dropped.
    #[error("{0}")]
    InUse(String),
    /// The statement nests deeper than Brook's limits ("statement too
    /// complex", SQLSTATE 54001).
    #[error("{0}")]
    TooComplex(String),
    /// DataFusion failed while planning.
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// A broken invariant: this is a bug.
    #[error("internal error: {0} (this is a bug)")]
    Internal(String),
}

impl From<datafusion::arrow::error::ArrowError> for PlanError {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        PlanError::DataFusion(e.into())
    }
}

/// Result alias of the planner.
pub type Result<T, E = PlanError> = std::result::Result<T, E>;
