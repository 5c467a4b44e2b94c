//! The one place where errors become SQLSTATEs, HTTP statuses and stable codes.

use axum::http::StatusCode;
use brook_executor::ExecError;
use brook_planner::PlanError;
use brook_storage::StorageError;

/// Errors of the server layer.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Parsing, binding or planning failed.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Execution failed.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A catalog record cannot be replayed: Brook does not start.
    #[error(
        "the catalog record at offset {offset}{} cannot be replayed: {reason}; Brook will not start with a damaged catalog (see `brook catalog --help`: `brook catalog list` shows the records, `brook catalog truncate --at {offset}` keeps those before it, after a backup)",
        seq.map(|s| format!(" (command {s})")).unwrap_or_default()
    )]
    Catalog {
        /// Its offset in the catalog topic.
        offset: u64,
        /// Its sequence number, when it could be read.
        seq: Option<u64>,
        /// What is wrong.
        reason: String,
    },
    /// The statement would touch a topic it may not (an internal topic, or
    /// a write to a read-only one).
    #[error("{0}")]
    Forbidden(String),
    /// The statement was cancelled (timeout, or the client asked).
    #[error("{0}")]
    Canceled(String),
    /// A statement or request over a size limit (SQLSTATE 54000).
    #[error("{0}")]
    TooLarge(String),
    /// An HTTP request body of a type the API does not take.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The request is malformed (HTTP body, property, …).
    #[error("{0}")]
    BadRequest(String),
    /// A listener could not be bound.
    #[error("could not listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias of the server.
pub type Result<T, E = ServerError> = std::result::Result<T, E>;

impl ServerError {
    /// The SQLSTATE reported over pgwire.
    pub fn sqlstate(&self) -> &'static str {
        if self.resources_exhausted() {
            return "54000";
        }
        match self {
            ServerError::Plan(e) => match e {
                PlanError::Syntax(_) => "42601",
                PlanError::NotFound { kind, .. } if kind.contains("column") => "42703",
                PlanError::NotFound { kind, .. } if kind.contains("query") => "42704",
                PlanError::NotFound { .. } => "42P01",
                PlanError::AlreadyExists { .. } => "42P07",
                PlanError::Type(_) => "42804",
                PlanError::Invalid(_) => "42P16",
                PlanError::Unsupported(_) => "0A000",
                PlanError::InUse(_) => "2BP01",
                PlanError::TooComplex(_) => "54001",
                PlanError::DataFusion(_) => "42000",
                PlanError::Internal(_) => "XX000",
            },
            ServerError::Exec(e) => match e {
                ExecError::Storage(s) => storage_state(s),
                ExecError::Plan(_) => "42000",
                ExecError::DataFusion(_) | ExecError::Arrow(_) => "22000",
                ExecError::Serialization(_) => "22P02",
                ExecError::QueryFailed { .. } => "XX000",
                ExecError::QueryNotFound(_) => "42704",
                ExecError::ShuttingDown => "57P01",
                ExecError::NotReady { .. } => "55000",
                ExecError::Internal(_) => "XX000",
            },
            ServerError::Storage(s) => storage_state(s),
            ServerError::Catalog { .. } => "XX001",
            ServerError::Forbidden(_) => "42501",
            ServerError::UnsupportedMediaType(_) => "08P01",
            ServerError::TooLarge(_) => "54000",
            ServerError::Canceled(_) => "57014",
            ServerError::BadRequest(_) => "08P01",
            ServerError::Listen { .. } => "58000",
        }
    }

    /// Whether a limit on what one statement may use was hit (a value too
    /// large for a function to build, …).
    fn resources_exhausted(&self) -> bool {
        use datafusion::error::DataFusionError;
        let df = match self {
            ServerError::Plan(PlanError::DataFusion(e)) => e,
            ServerError::Exec(ExecError::DataFusion(e)) => e,
            ServerError::Exec(ExecError::Plan(PlanError::DataFusion(e))) => e,
            _ => return false,
        };
        matches!(df.find_root(), DataFusionError::ResourcesExhausted(_))
    }

    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ServerError::Plan(PlanError::Syntax(_)) => "syntax_error",
            ServerError::Plan(PlanError::NotFound { .. }) => "not_found",
            ServerError::Plan(PlanError::AlreadyExists { .. }) => "already_exists",
            ServerError::Plan(PlanError::Type(_)) => "type_mismatch",
            ServerError::Plan(PlanError::Unsupported(_)) => "unsupported",
            ServerError::Plan(PlanError::TooComplex(_)) => "too_complex",
            _ if self.resources_exhausted() => "limit_exceeded",
            ServerError::Plan(_) => "invalid_statement",
            ServerError::Exec(ExecError::QueryNotFound(_)) => "not_found",
            ServerError::Exec(ExecError::NotReady { .. }) => "not_ready",
            ServerError::Exec(_) => "execution_error",
            ServerError::Storage(_) => "storage_error",
            ServerError::Catalog { .. } => "catalog_corrupt",
            ServerError::Forbidden(_) => "forbidden",
            ServerError::UnsupportedMediaType(_) => "unsupported_media_type",
            ServerError::TooLarge(_) => "too_large",
            ServerError::Canceled(_) => "canceled",
            ServerError::BadRequest(_) => "bad_request",
            ServerError::Listen { .. } => "listen_failed",
        }
    }

    /// The HTTP status of the error.
    pub fn http_status(&self) -> StatusCode {
        match self {
            ServerError::Forbidden(_) => return StatusCode::FORBIDDEN,
            ServerError::UnsupportedMediaType(_) => return StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ServerError::TooLarge(_) => return StatusCode::PAYLOAD_TOO_LARGE,
            _ => {}
        }
        match &self.sqlstate()[..2] {
            "42" | "0A" | "22" | "2B" | "08" | "54" => StatusCode::BAD_REQUEST,
            "57" | "55" | "53" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// ksqlDB's numeric `error_code` for the HTTP API.
    pub fn ksql_error_code(&self) -> u32 {
        match self.http_status() {
            StatusCode::BAD_REQUEST => 40001,
            StatusCode::FORBIDDEN => 40300,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => 41500,
            StatusCode::PAYLOAD_TOO_LARGE => 41300,
            _ => 50000,
        }
    }
}

/// Class 53 (insufficient resources) for a full disk, 58 (system error)
/// for other I/O failures, XX001 for corruption.
fn storage_state(e: &StorageError) -> &'static str {
    if e.is_disk_full() {
        return "53100";
    }
    match e {
        StorageError::Io { .. } => "58030",
        StorageError::Corrupt { .. } => "XX001",
        StorageError::TopicNotFound(_) => "42P01",
        StorageError::TopicExists(_) => "42P07",
        StorageError::PartitionNotFound { .. } => "42P01",
        StorageError::PartitionFailed { .. } => "58030",
        StorageError::TooLarge(_) => "54000",
        StorageError::Sled(_) | StorageError::State(_) => "58030",
        StorageError::Metadata { .. } => "42602",
        StorageError::CatalogRecord { .. } => "XX001",
        StorageError::Locked(_) => "55006",
    }
}
