//! Bounds on what one client or one statement can make Brook do, so that
//! no request can exhaust memory, stack or the front ends' threads.

use std::time::Duration;

/// The limits in force; [`Limits::default`] are the embedded defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest SQL text one request may send (a pgwire Query message,
    /// an HTTP request's statements), checked before anything parses it.
    pub max_statement_bytes: usize,
    /// Open connections per front end (pgwire, HTTP); one more is refused.
    pub max_connections: usize,
    /// How long a pull query may run before it is cancelled.
    pub statement_timeout: Duration,
    /// How much a pull query's operators may keep (sorts, joins,
    /// aggregates), a table no query writes may hold while it is read, and
    /// the result may take, in bytes (each; SQLSTATE 54000 past it). Scans
    /// read as the query goes and keep nothing.
    pub max_pull_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_statement_bytes: 1 << 20,
            max_connections: 256,
            statement_timeout: Duration::from_secs(60),
            max_pull_bytes: 512 << 20,
        }
    }
}

impl Limits {
    /// The largest request body or protocol message a front end buffers:
    /// the statement limit plus room for the envelope (JSON, properties).
    pub fn max_request_bytes(&self) -> usize {
        self.max_statement_bytes.saturating_add(64 << 10)
    }
}
