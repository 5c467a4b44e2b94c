//! Batch kernels ([`BatchFn`](super::udf::BatchFn)) for the hot row-wise
//! functions, in the shape streaming queries call them: a column with
//! literal options (`SPLIT(url, '/')`, `REGEXP_EXTRACT('…', url, 2)`,
//! `FORMAT_TIMESTAMP(ts, 'yyyy-MM-dd')`). Each either computes the whole
//! batch exactly as its row path does or returns `None`: on any other
//! argument shape, and before any row on which the row path would fail
//! (and log), so errors stay the row path's.

use std::fmt::Write as _;
use std::sync::Arc;

use chrono::format::{Item, StrftimeItems};
use chrono::DateTime;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, GenericListBuilder, ListBuilder, StringArray, StringBuilder,
    TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, Int64Type, TimeUnit, TimestampMillisecondType};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::ColumnarValue;

use super::scalar::{java_format, regex, tz_of};
use super::udf::MAX_VALUE_BYTES;

/// A literal string argument: `Some(None)` for a NULL literal, `None` when
/// the argument is a column or not a string.
fn literal_str(v: &ColumnarValue) -> Option<Option<&str>> {
    match v {
        ColumnarValue::Scalar(ScalarValue::Utf8(s) | ScalarValue::Utf8View(s)) => {
            Some(s.as_deref())
        }
        ColumnarValue::Scalar(ScalarValue::Null) => Some(None),
        _ => None,
    }
}

/// A literal integer argument, as [`literal_str`].
fn literal_int(v: &ColumnarValue) -> Option<Option<i64>> {
    match v {
        ColumnarValue::Scalar(ScalarValue::Null) => Some(None),
        ColumnarValue::Scalar(s) if s.data_type().is_signed_integer() => {
            match s.cast_to(&DataType::Int64).ok()? {
                ScalarValue::Int64(i) => Some(i),
                _ => None,
            }
        }
        _ => None,
    }
}

/// A `Utf8` column argument.
fn string_column(v: &ColumnarValue) -> Option<&StringArray> {
    match v {
        ColumnarValue::Array(a) => a.as_string_opt::<i32>(),
        ColumnarValue::Scalar(_) => None,
    }
}

/// Strings longer than this go to the row path, which checks the size of
/// what it builds against [`MAX_VALUE_BYTES`].
const MAX_KERNEL_INPUT: usize = MAX_VALUE_BYTES / 16;

fn nulls(n: usize, ret: &DataType) -> Option<ArrayRef> {
    Some(datafusion::arrow::array::new_null_array(ret, n))
}

/// `FROM_UNIXTIME(ms)` over a column of signed integers.
pub(super) fn from_unixtime(
    args: &[ColumnarValue],
    _: usize,
    _: &DataType,
) -> Result<Option<ArrayRef>> {
    let [ColumnarValue::Array(a)] = args else {
        return Ok(None);
    };
    if !a.data_type().is_signed_integer() {
        return Ok(None);
    }
    let ints = datafusion::arrow::compute::cast(a, &DataType::Int64)?;
    let ints = ints.as_primitive::<Int64Type>();
    Ok(Some(Arc::new(TimestampMillisecondArray::new(
        ints.values().clone(),
        ints.nulls().cloned(),
    ))))
}

/// `FORMAT_TIMESTAMP(ts, pattern[, zone])` and `TIMESTAMPTOSTRING(ms,
/// pattern[, zone])` over a column, with a literal pattern and zone: the
/// pattern is translated and parsed once for the batch.
pub(super) fn format_timestamp(
    args: &[ColumnarValue],
    n: usize,
    ret: &DataType,
) -> Result<Option<ArrayRef>> {
    let (Some(ColumnarValue::Array(ts)), Some(Some(pattern))) =
        (args.first(), args.get(1).and_then(literal_str))
    else {
        return Ok(None);
    };
    let zone = match args.get(2) {
        None => None,
        Some(z) => match literal_str(z) {
            Some(Some(z)) => Some(z),
            Some(None) => return Ok(nulls(n, ret)),
            None => return Ok(None),
        },
    };
    let Ok(tz) = tz_of(
        zone.map(|z| ScalarValue::Utf8(Some(z.to_string())))
            .as_ref(),
    ) else {
        return Ok(None);
    };
    let millis = match ts.data_type() {
        DataType::Timestamp(TimeUnit::Millisecond, _) => ts
            .as_primitive::<TimestampMillisecondType>()
            .reinterpret_cast::<Int64Type>(),
        DataType::Int64 => ts.as_primitive::<Int64Type>().clone(),
        _ => return Ok(None),
    };
    let fmt = java_format(pattern);
    let items: Vec<Item<'_>> = StrftimeItems::new(&fmt).collect();
    if items.iter().any(|i| matches!(i, Item::Error)) {
        return Ok(None);
    }
    let mut out = StringBuilder::with_capacity(n, n * pattern.len());
    for v in millis.iter() {
        let Some(ms) = v else {
            out.append_null();
            continue;
        };
        let Some(utc) = DateTime::from_timestamp_millis(ms) else {
            return Ok(None);
        };
        if write!(
            out,
            "{}",
            utc.with_timezone(&tz).format_with_items(items.iter())
        )
        .is_err()
        {
            return Ok(None);
        }
        out.append_value("");
    }
    Ok(Some(Arc::new(out.finish())))
}

/// `REGEXP_EXTRACT(pattern, s[, group])` over a column of strings with a
/// literal pattern and group: the pattern is compiled once, and its capture
/// slots reused from row to row.
pub(super) fn regexp_extract(
    args: &[ColumnarValue],
    n: usize,
    ret: &DataType,
) -> Result<Option<ArrayRef>> {
    let (Some(pattern), Some(strings)) = (
        args.first().and_then(literal_str),
        args.get(1).and_then(string_column),
    ) else {
        return Ok(None);
    };
    let group = match args.get(2) {
        None => 0,
        Some(g) => match literal_int(g) {
            Some(Some(g)) => g,
            Some(None) => return Ok(nulls(n, ret)),
            None => return Ok(None),
        },
    };
    let Some(pattern) = pattern else {
        return Ok(nulls(n, ret));
    };
    let Ok(re) = regex(pattern) else {
        return Ok(None);
    };
    let group = usize::try_from(group).ok();
    let mut slots = re.capture_locations();
    let mut out = StringBuilder::with_capacity(n, 0);
    for s in strings.iter() {
        let found = match (s, group) {
            (Some(s), Some(g)) => re
                .captures_read(&mut slots, s)
                .and_then(|_| slots.get(g))
                .map(|(from, to)| &s[from..to]),
            _ => None,
        };
        out.append_option(found);
    }
    Ok(Some(Arc::new(out.finish())))
}

/// `REPLACE(s, from, to)` over a column of strings with literal `from` and
/// `to`.
pub(super) fn replace(
    args: &[ColumnarValue],
    n: usize,
    ret: &DataType,
) -> Result<Option<ArrayRef>> {
    let (Some(strings), Some(from), Some(to)) = (
        args.first().and_then(string_column),
        args.get(1).and_then(literal_str),
        args.get(2).and_then(literal_str),
    ) else {
        return Ok(None);
    };
    let (Some(from), Some(to)) = (from, to) else {
        return Ok(nulls(n, ret));
    };
    let mut out = StringBuilder::with_capacity(n, strings.value_data().len());
    for s in strings.iter() {
        match s {
            None => out.append_null(),
            Some(s) if s.len() > MAX_KERNEL_INPUT => return Ok(None),
            Some(s) if from.is_empty() || to.len() > from.len() => {
                let grown = s.len() + (s.len() + 1) * to.len();
                if grown > MAX_KERNEL_INPUT {
                    return Ok(None);
                }
                out.append_value(s.replace(from, to));
            }
            Some(s) => {
                // Never longer than `s`: written in place, piece by piece.
                let mut last = 0;
                for (at, _) in s.match_indices(from) {
                    out.write_str(&s[last..at]).ok();
                    out.write_str(to).ok();
                    last = at + from.len();
                }
                out.write_str(&s[last..]).ok();
                out.append_value("");
            }
        }
    }
    Ok(Some(Arc::new(out.finish())))
}

/// `SPLIT(s, delimiter)` over a column of strings with a literal delimiter:
/// the parts go straight into a list array.
pub(super) fn split(args: &[ColumnarValue], n: usize, ret: &DataType) -> Result<Option<ArrayRef>> {
    let (Some(strings), Some(delimiter)) = (
        args.first().and_then(string_column),
        args.get(1).and_then(literal_str),
    ) else {
        return Ok(None);
    };
    let DataType::List(field) = ret else {
        return Ok(None);
    };
    if field.data_type() != &DataType::Utf8 {
        return Ok(None);
    }
    let Some(d) = delimiter else {
        return Ok(nulls(n, ret));
    };
    let mut out: GenericListBuilder<i32, StringBuilder> = ListBuilder::with_capacity(
        StringBuilder::with_capacity(n * 4, strings.value_data().len()),
        n,
    )
    .with_field(Arc::clone(field));
    for s in strings.iter() {
        let Some(s) = s else {
            out.append_null();
            continue;
        };
        if s.len() > MAX_KERNEL_INPUT {
            return Ok(None);
        }
        let parts = out.values();
        if s.is_empty() {
            parts.append_value("");
        } else if d.is_empty() {
            let mut buf = [0u8; 4];
            for c in s.chars() {
                parts.append_value(c.encode_utf8(&mut buf));
            }
        } else {
            for p in s.split(d) {
                parts.append_value(p);
            }
        }
        out.append(true);
    }
    Ok(Some(Arc::new(out.finish())))
}

#[cfg(test)]
mod tests {
    //! Each kernel against its function's row path: the same call made
    //! with every argument a literal (one row at a time) must give what the
    //! batch gave at that row, NULLs included.

    use std::sync::Arc;

    use datafusion::arrow::array::{Array, ArrayRef, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field};
    use datafusion::common::config::ConfigOptions;
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF};
    use proptest::prelude::*;

    fn udf(name: &str) -> ScalarUDF {
        super::super::scalar::all()
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
            .expect("registered")
    }

    fn call(f: &ScalarUDF, args: Vec<ColumnarValue>, rows: usize) -> ColumnarValue {
        let types: Vec<DataType> = args.iter().map(ColumnarValue::data_type).collect();
        let ret = f.return_type(&types).expect("accepted");
        f.invoke_with_args(ScalarFunctionArgs {
            arg_fields: types
                .iter()
                .map(|t| Arc::new(Field::new("a", t.clone(), true)))
                .collect(),
            args,
            number_rows: rows,
            return_field: Arc::new(Field::new("r", ret, true)),
            config_options: Arc::new(ConfigOptions::default()),
        })
        .expect("evaluates")
    }

    /// Calls `name` over `column` (at `at` among the literals) as a batch,
    /// then row by row with literals only, and compares.
    fn same_as_rows(name: &str, column: ArrayRef, at: usize, literals: Vec<ScalarValue>) {
        let f = udf(name);
        let n = column.len();
        let mut args: Vec<ColumnarValue> = literals
            .iter()
            .cloned()
            .map(ColumnarValue::Scalar)
            .collect();
        args.insert(at, ColumnarValue::Array(Arc::clone(&column)));
        let ColumnarValue::Array(batch) = call(&f, args, n) else {
            panic!("{name}: a batch gives an array");
        };
        assert_eq!(batch.len(), n);
        for i in 0..n {
            let mut row: Vec<ColumnarValue> = literals
                .iter()
                .cloned()
                .map(ColumnarValue::Scalar)
                .collect();
            let v = ScalarValue::try_from_array(&column, i).expect("in range");
            row.insert(at, ColumnarValue::Scalar(v.clone()));
            let ColumnarValue::Scalar(expected) = call(&f, row, 1) else {
                panic!("{name}: literals give a literal");
            };
            let got = ScalarValue::try_from_array(&batch, i).expect("in range");
            assert_eq!(got, expected, "{name} at row {i} ({v:?}, {literals:?})");
        }
    }

    fn strings() -> impl Strategy<Value = Vec<Option<String>>> {
        prop::collection::vec(
            prop::option::weighted(0.9, "(/|a|b|é|&|=|channel_id|x1|\\.|)*"),
            0..12,
        )
    }

    fn text() -> impl Strategy<Value = Option<String>> {
        prop::option::weighted(0.9, "(/|a|é||&|=|\\.)*")
    }

    fn utf8(s: Option<String>) -> ScalarValue {
        ScalarValue::Utf8(s)
    }

    proptest! {
        #[test]
        fn split_matches_rows(s in strings(), d in text()) {
            same_as_rows("SPLIT", Arc::new(StringArray::from(s)), 0, vec![utf8(d)]);
        }

        #[test]
        fn replace_matches_rows(s in strings(), from in text(), to in text()) {
            same_as_rows("REPLACE", Arc::new(StringArray::from(s)), 0, vec![utf8(from), utf8(to)]);
        }

        #[test]
        fn regexp_extract_matches_rows(
            s in strings(),
            p in prop::sample::select(vec!["(&|^)channel_id=([^&]*)", "a(b)?", "é+", "(", "x(1)"]),
            g in prop::option::weighted(0.9, -1i64..4),
            with_group in any::<bool>(),
        ) {
            let mut literals = vec![utf8(Some(p.to_string()))];
            if with_group {
                literals.push(ScalarValue::Int64(g));
            }
            same_as_rows("REGEXP_EXTRACT", Arc::new(StringArray::from(s)), 1, literals);
        }

        #[test]
        fn format_timestamp_matches_rows(
            ms in prop::collection::vec(prop::option::weighted(0.9, any::<i64>().prop_map(|m| m % 400_000_000_000_000)), 0..12),
            pattern in prop::sample::select(vec!["yyyy-MM-dd", "HH:mm", "HH", "yyyy-MM-dd'T'HH:mm:ss.SSSZ", "EEE, d MMM yyyy", "''h a''", "%%"]),
            zone in prop::sample::select(vec![None, Some("UTC"), Some("America/New_York"), Some("Nowhere/City")]),
        ) {
            let mut literals = vec![utf8(Some(pattern.to_string()))];
            if let Some(z) = zone {
                literals.push(utf8(Some(z.to_string())));
            }
            let column: ArrayRef = Arc::new(Int64Array::from(ms.clone()));
            same_as_rows("TIMESTAMPTOSTRING", column, 0, literals.clone());
            let ts = datafusion::arrow::compute::cast(
                &(Arc::new(Int64Array::from(ms)) as ArrayRef),
                &DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Millisecond, None),
            ).expect("casts");
            same_as_rows("FORMAT_TIMESTAMP", ts, 0, literals);
        }

        #[test]
        fn from_unixtime_matches_rows(ms in prop::collection::vec(prop::option::of(any::<i64>()), 0..12)) {
            same_as_rows("FROM_UNIXTIME", Arc::new(Int64Array::from(ms)), 0, vec![]);
        }
    }

    #[test]
    fn null_literals_give_null_columns() {
        let column: ArrayRef = Arc::new(StringArray::from(vec![Some("a/b"), None]));
        same_as_rows(
            "SPLIT",
            Arc::clone(&column),
            0,
            vec![ScalarValue::Utf8(None)],
        );
        same_as_rows(
            "REGEXP_EXTRACT",
            Arc::clone(&column),
            1,
            vec![ScalarValue::Utf8(None)],
        );
        same_as_rows(
            "REGEXP_EXTRACT",
            column,
            1,
            vec![
                ScalarValue::Utf8(Some("a".into())),
                ScalarValue::Int64(None),
            ],
        );
    }
}

#[cfg(test)]
mod shapes {
    //! The kernels take the calls streaming queries make (a column with
    //! literal options) rather than leaving them to the row path.

    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::ColumnarValue;

    fn col(a: ArrayRef) -> ColumnarValue {
        ColumnarValue::Array(a)
    }

    fn lit(s: &str) -> ColumnarValue {
        ColumnarValue::Scalar(ScalarValue::Utf8(Some(s.into())))
    }

    #[test]
    fn common_calls_are_taken_by_the_kernels() {
        let urls: ArrayRef = Arc::new(StringArray::from(vec![
            Some("https://x/a/b?channel_id=7"),
            None,
        ]));
        let list = DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
        let split = super::split(&[col(Arc::clone(&urls)), lit("/")], 2, &list).unwrap();
        assert!(split.is_some());
        let extract = super::regexp_extract(
            &[
                lit("(&|^)channel_id=([^&]*)"),
                col(Arc::clone(&urls)),
                ColumnarValue::Scalar(ScalarValue::Int64(Some(2))),
            ],
            2,
            &DataType::Utf8,
        )
        .unwrap();
        assert!(extract.is_some());
        assert!(
            super::replace(&[col(urls), lit("a"), lit("")], 2, &DataType::Utf8)
                .unwrap()
                .is_some()
        );
        let ms: ArrayRef = Arc::new(Int64Array::from(vec![Some(0), None]));
        let ts = super::from_unixtime(&[col(ms)], 2, &DataType::Utf8)
            .unwrap()
            .expect("taken");
        assert_eq!(
            ts.data_type(),
            &DataType::Timestamp(TimeUnit::Millisecond, None)
        );
        let formatted =
            super::format_timestamp(&[col(ts), lit("yyyy-MM-dd")], 2, &DataType::Utf8).unwrap();
        assert!(formatted.is_some());
        // An invalid pattern is the row path's to report.
        let bad = super::regexp_extract(
            &[lit("("), col(Arc::new(StringArray::from(vec!["a"])))],
            1,
            &DataType::Utf8,
        )
        .unwrap();
        assert!(bad.is_none());
    }
}
