//! A scalar function defined row by row on [`ScalarValue`]s: the shape of
//! Brook's own implementations of ksqlDB functions whose semantics differ
//! from DataFusion's (or that DataFusion lacks).
//!
//! Row-at-a-time evaluation is simple and exact. A hot function may also
//! have a batch kernel ([`BatchFn`]) for the common shape of its call (a
//! column with literal options): the kernel either computes the whole
//! batch exactly as the row path would, or declines and the row path runs,
//! so values, NULLs and the processing-log messages stay the row path's.

use std::fmt;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The largest value (string, bytes, array, map) a function may build.
/// A call past it fails with [`value_too_large`] before it allocates where
/// the size can be known first (`LPAD`, `GENERATE_SERIES`, `REPLACE`, …),
/// and after it otherwise; in a persistent query the row gets NULL and the
/// failure goes to the processing log, a pull query fails.
pub const MAX_VALUE_BYTES: usize = 16 << 20;

/// The failure of a call that would build a value over [`MAX_VALUE_BYTES`].
pub fn value_too_large(name: &str, bytes: u128) -> DataFusionError {
    DataFusionError::ResourcesExhausted(format!(
        "{} would build a value of {bytes} bytes, more than the limit of {MAX_VALUE_BYTES} bytes",
        name.to_ascii_uppercase()
    ))
}

thread_local! {
    static ROW_ERRORS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The failures of Brook functions on rows evaluated on this thread since
/// the last call (each made its call NULL). Evaluation is synchronous, so
/// a caller clears this, evaluates, and takes what its rows caused.
pub fn take_row_errors() -> Vec<String> {
    ROW_ERRORS.with(|errors| std::mem::take(&mut *errors.borrow_mut()))
}

/// Computes the return type from the argument types, or refuses them.
pub type ReturnFn = fn(&[DataType]) -> Result<DataType>;
/// Evaluates one row: the arguments and the return type.
pub type EvalFn = fn(&[ScalarValue], &DataType) -> Result<ScalarValue>;

/// Evaluates a whole batch (the arguments, the row count, the return
/// type): `Ok(Some(array))` with exactly what the row path would give, or
/// `Ok(None)` to leave the batch to the row path (an argument shape it does
/// not take, or any row on which the row path would fail or log).
pub type BatchFn = fn(&[ColumnarValue], usize, &DataType) -> Result<Option<ArrayRef>>;

/// A row-wise scalar function. Equal by name: names are unique.
pub struct RowFn {
    name: String,
    signature: Signature,
    ret: ReturnFn,
    eval: EvalFn,
    batch: Option<BatchFn>,
    /// NULL in any argument gives NULL without calling `eval`.
    strict: bool,
}

impl PartialEq for RowFn {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for RowFn {}

impl std::hash::Hash for RowFn {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl fmt::Debug for RowFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RowFn({})", self.name)
    }
}

impl RowFn {
    /// A function that returns NULL when any argument is NULL.
    pub fn strict(name: &str, ret: ReturnFn, eval: EvalFn) -> ScalarUDF {
        Self::build(name, ret, eval, None, true, Volatility::Immutable)
    }

    /// A strict function with a batch kernel for its common calls.
    pub fn strict_batched(name: &str, ret: ReturnFn, eval: EvalFn, batch: BatchFn) -> ScalarUDF {
        Self::build(name, ret, eval, Some(batch), true, Volatility::Immutable)
    }

    /// A function that sees NULL arguments itself.
    pub fn lenient(name: &str, ret: ReturnFn, eval: EvalFn) -> ScalarUDF {
        Self::build(name, ret, eval, None, false, Volatility::Immutable)
    }

    /// A function whose result changes between calls (clocks, random).
    pub fn volatile(name: &str, ret: ReturnFn, eval: EvalFn) -> ScalarUDF {
        Self::build(name, ret, eval, None, false, Volatility::Volatile)
    }

    fn build(
        name: &str,
        ret: ReturnFn,
        eval: EvalFn,
        batch: Option<BatchFn>,
        strict: bool,
        volatility: Volatility,
    ) -> ScalarUDF {
        ScalarUDF::new_from_impl(RowFn {
            name: name.to_ascii_lowercase(),
            signature: Signature::user_defined(volatility),
            ret,
            eval,
            batch,
            strict,
        })
    }
}

impl ScalarUDFImpl for RowFn {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        // Arguments keep their types; `ret` decides what it accepts.
        (self.ret)(arg_types)?;
        Ok(arg_types.to_vec())
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        (self.ret)(arg_types)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let ret = args.return_field.data_type().clone();
        let call = |row: &[ScalarValue]| -> Result<ScalarValue> {
            if self.strict && row.iter().any(ScalarValue::is_null) {
                return ScalarValue::try_from(&ret);
            }
            // ksqlDB: a function failing on a row gives NULL for that
            // call, and the failure goes to the processing log.
            let v = match (self.eval)(row, &ret) {
                Ok(v) if v.size() > MAX_VALUE_BYTES => {
                    return Err(value_too_large(&self.name, v.size() as u128));
                }
                Ok(v) => v,
                // A resource limit is not the row's fault alone: it fails
                // the call, and callers decide (the pipeline makes the row
                // NULL and logs it, a pull query fails).
                Err(e @ DataFusionError::ResourcesExhausted(_)) => return Err(e),
                Err(e) => {
                    ROW_ERRORS.with(|errors| {
                        errors.borrow_mut().push(format!(
                            "Error in function {}: {e}",
                            self.name.to_uppercase()
                        ))
                    });
                    return ScalarValue::try_from(&ret);
                }
            };
            if v.data_type() == ret {
                Ok(v)
            } else if v.is_null() {
                ScalarValue::try_from(&ret)
            } else {
                v.cast_to(&ret)
            }
        };
        let scalars: Option<Vec<ScalarValue>> = args
            .args
            .iter()
            .map(|a| match a {
                ColumnarValue::Scalar(s) => Some(s.clone()),
                ColumnarValue::Array(_) => None,
            })
            .collect();
        if let Some(row) = scalars.filter(|_| self.signature.volatility != Volatility::Volatile) {
            return Ok(ColumnarValue::Scalar(call(&row)?));
        }
        let n = args.number_rows;
        if let Some(batch) = self.batch {
            if let Some(array) = batch(&args.args, n, &ret)? {
                debug_assert_eq!(array.len(), n);
                debug_assert_eq!(array.data_type(), &ret);
                return Ok(ColumnarValue::Array(array));
            }
        }
        let mut out = Vec::with_capacity(n);
        let mut row = Vec::with_capacity(args.args.len());
        for i in 0..n {
            row.clear();
            for a in &args.args {
                row.push(match a {
                    ColumnarValue::Scalar(s) => s.clone(),
                    ColumnarValue::Array(arr) => ScalarValue::try_from_array(arr, i)?,
                });
            }
            out.push(call(&row)?);
        }
        if out.is_empty() {
            return Ok(ColumnarValue::Array(
                datafusion::arrow::array::new_empty_array(&ret),
            ));
        }
        Ok(ColumnarValue::Array(ScalarValue::iter_to_array(out)?))
    }
}

/// A planning error for a function call: ksqlDB's wording.
pub fn no_variant(name: &str, args: &[DataType]) -> DataFusionError {
    let types: Vec<String> = args
        .iter()
        .map(|t| match t {
            DataType::Null => "null".to_string(),
            t => crate::types::SqlType::from_arrow(t)
                .map_or_else(|_| t.to_string(), |t| t.to_string()),
        })
        .collect();
    DataFusionError::Plan(format!(
        "Function '{}' does not accept parameters ({}).",
        name.to_ascii_lowercase(),
        types.join(", ")
    ))
}
