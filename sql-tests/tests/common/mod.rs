//! Helpers the oracle tests (`join_oracle.rs`, `changelog_oracle.rs`)
//! share: input as SQL for DataFusion, cells as text, a runtime per case.

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::util::display::array_value_to_string;

/// A SQL query giving `rows` (each a parenthesised tuple of BIGINT
/// literals) with the column `names`; no rows gives an empty query of
/// BIGINT columns.
pub fn table_sql(names: &[&str], rows: Vec<String>) -> String {
    if rows.is_empty() {
        let cols: Vec<String> = names
            .iter()
            .map(|n| format!("CAST(NULL AS BIGINT) AS {n}"))
            .collect();
        return format!("SELECT {} WHERE false", cols.join(", "));
    }
    let cols: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("column{} AS {n}", i + 1))
        .collect();
    format!(
        "SELECT {} FROM (VALUES {})",
        cols.join(", "),
        rows.join(", ")
    )
}

/// A cell as text: `NULL`, or Arrow's display of the value.
pub fn cell(c: &ArrayRef, r: usize) -> String {
    if c.is_null(r) {
        "NULL".to_string()
    } else {
        array_value_to_string(c, r).unwrap_or_default()
    }
}

/// A runtime for one test case: Brook's tasks and the test share it.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}
