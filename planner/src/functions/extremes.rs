//! GREATEST and LEAST with ksqlDB's argument rules in front of
//! DataFusion's implementations.
//!
//! ksqlDB resolves these as Java overloads of one type each (INT, BIGINT,
//! DOUBLE, DECIMAL, STRING, BYTES, DATE, TIME, TIMESTAMP). So numbers and
//! text do not mix, and integers with DECIMAL are ambiguous unless a DOUBLE
//! is among the arguments. (ksqlDB also finds INT with BIGINT ambiguous;
//! Brook widens to BIGINT, because integer literals are typed only after
//! functions resolve and `GREATEST(int_col, 5)` must work.)

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use super::udf::no_variant;

/// GREATEST or LEAST (`df` is DataFusion's function of that name).
pub fn wrap(df: Arc<ScalarUDF>) -> ScalarUDF {
    ScalarUDF::new_from_impl(Extreme {
        name: df.name().to_string(),
        signature: Signature::user_defined(Volatility::Immutable),
        inner: df,
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Extreme {
    name: String,
    signature: Signature,
    inner: Arc<ScalarUDF>,
}

fn type_text(t: &DataType) -> String {
    match t {
        DataType::Null => "null".into(),
        t => crate::types::SqlType::from_arrow(t).map_or_else(|_| t.to_string(), |t| t.to_string()),
    }
}

/// ksqlDB's refusal of these argument types, if any.
fn check(name: &str, args: &[DataType]) -> Result<()> {
    if args.is_empty() {
        return Err(no_variant(name, args));
    }
    let typed: Vec<&DataType> = args.iter().filter(|t| **t != DataType::Null).collect();
    let ambiguous = || {
        let list: Vec<String> = args.iter().map(type_text).collect();
        DataFusionError::Plan(format!(
            "Function '{name}' cannot be resolved due to ambiguous method parameters ({}).",
            list.join(", ")
        ))
    };
    if typed.is_empty() {
        return Err(ambiguous());
    }
    let numeric = |t: &DataType| t.is_numeric();
    // A string literal may stand for a DATE, TIME or TIMESTAMP.
    let temporal = |t: &DataType| t.is_temporal();
    let textual =
        |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    if typed.iter().any(|t| numeric(t)) && typed.iter().any(|t| !numeric(t)) {
        return Err(no_variant(name, args));
    }
    if typed.iter().any(|t| temporal(t)) && typed.iter().any(|t| !temporal(t) && !textual(t)) {
        return Err(no_variant(name, args));
    }
    if typed.iter().all(|t| numeric(t)) && !typed.iter().any(|t| t.is_floating()) {
        let mut kinds: Vec<&str> = typed
            .iter()
            .map(|t| match t {
                DataType::Decimal128(..) | DataType::Decimal256(..) => "decimal",
                _ => "integer",
            })
            .collect();
        kinds.sort_unstable();
        kinds.dedup();
        if kinds.len() > 1 {
            return Err(ambiguous());
        }
    }
    Ok(())
}

impl ScalarUDFImpl for Extreme {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        check(&self.name, arg_types)?;
        self.inner.coerce_types(arg_types)
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.inner.invoke_with_args(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_ksqldb_overload_rules() {
        use DataType::*;
        assert!(check("greatest", &[Int32, Int32, Null]).is_ok());
        assert!(check("greatest", &[Int32, Int64, Decimal128(30, 18), Float64]).is_ok());
        assert!(check("greatest", &[Decimal128(9, 2), Decimal128(7, 6)]).is_ok());
        assert!(check("greatest", &[Date32, Utf8]).is_ok());
        let msg = |r: Result<()>| r.unwrap_err().to_string();
        assert!(check("greatest", &[Int32, Int64]).is_ok());
        assert!(msg(check("greatest", &[Int32, Decimal128(9, 2)]))
            .contains("ambiguous method parameters (INTEGER, DECIMAL(9, 2))"));
        assert!(msg(check("greatest", &[Null, Null])).contains("(null, null)"));
        assert!(msg(check("greatest", &[Utf8, Int32]))
            .contains("does not accept parameters (STRING, INTEGER)"));
        assert!(msg(check("greatest", &[])).contains("does not accept parameters ()"));
    }
}
