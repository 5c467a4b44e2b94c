//! Values as text (pgwire, REPL) and as JSON (HTTP API).

use brook_executor::Datum;
use brook_planner::types::SqlType;
use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::ScalarValue;

/// A cell as text; `None` for NULL.
pub fn cell_text(array: &dyn Array, row: usize) -> Option<String> {
    if array.is_null(row) {
        return None;
    }
    // NULLs inside arrays, maps and structs read `null`, as in ksqlDB.
    let options = FormatOptions::default().with_null("null");
    ArrayFormatter::try_new(array, &options)
        .map(|f| f.value(row).to_string())
        .ok()
}

/// A scalar as text; `None` for NULL.
pub fn scalar_text(v: &ScalarValue) -> Option<String> {
    if v.is_null() {
        return None;
    }
    v.to_array().ok().and_then(|a| cell_text(&a, 0))
}

/// A scalar as JSON, as ksqlDB writes values (see `brook_executor::datum_to_json`).
pub fn scalar_json(v: &ScalarValue) -> serde_json::Value {
    match (Datum::from_scalar(v), SqlType::from_arrow(&v.data_type())) {
        (Ok(d), Ok(ty)) => brook_executor::datum_to_json(&d, &ty),
        _ => scalar_text(v).map_or(serde_json::Value::Null, Into::into),
    }
}

/// ksqlDB's name of a column type.
pub fn type_name(t: &DataType) -> String {
    SqlType::from_arrow(t).map_or_else(|_| t.to_string(), |t| t.to_string())
}
