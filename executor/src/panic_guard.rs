//! Panics stay inside the query that hit them. A bug that panics while a
//! persistent or push query decodes, joins, evaluates or encodes fails that
//! query with an internal error ("this is a bug") and an error log line;
//! the process and every other query go on.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

use crate::error::{ExecError, Result};

/// What a panic said, as text.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Runs `work`; a panic inside it becomes [`ExecError::Internal`] naming
/// `what`, and is logged.
pub(crate) async fn guarded<T>(what: &str, work: impl Future<Output = Result<T>>) -> Result<T> {
    match AssertUnwindSafe(work).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            let message = panic_message(panic.as_ref());
            tracing::error!(task = what, panic = %message, "a query task panicked: this is a bug");
            Err(ExecError::Internal(format!("{what} panicked: {message}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_an_internal_error_and_a_result_passes_through() {
        let e = guarded("query Q", async {
            if "x".len() == 1 {
                panic!("index out of bounds");
            }
            Ok(())
        })
        .await
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "internal error: query Q panicked: index out of bounds (this is a bug)"
        );
        assert_eq!(guarded("query Q", async { Ok(7) }).await.unwrap(), 7);
    }
}
