//! ksqlDB's lambda functions over maps, and `REDUCE`, as DataFusion
//! higher-order functions. (Over arrays, `TRANSFORM` and `FILTER` are
//! DataFusion's `array_transform` and `array_filter`.)
//!
//! - `__brook_map_transform(m, (k, v) => k2, (k, v) => v2)`: ksqlDB's
//!   `TRANSFORM` of a map.
//! - `__brook_map_filter(m, (k, v) => bool)`: `FILTER` of a map; an entry
//!   stays when the predicate is TRUE.
//! - `__brook_reduce(c, init, (s, x) => …)` over an array, or
//!   `(s, k, v) => …` over a map: a left fold in element (or entry) order.
//!   A NULL or empty collection gives the initial state; the result has the
//!   initial state's type.
//!
//! The planner (`ksql_ast`) rewrites ksqlDB's names to these by
//! the number of lambda parameters. Each lambda is evaluated once per call
//! over all entries of the batch (once per element position for
//! `REDUCE`), with the columns it captures repeated to match.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, MapArray, StructArray, UInt32Array,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::{cast, filter, interleave, take, take_arrays};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::common::{exec_err, plan_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, HigherOrderFunctionArgs, HigherOrderReturnFieldArgs, HigherOrderSignature,
    HigherOrderUDF, HigherOrderUDFImpl, LambdaArgument, LambdaParametersProgress, ValueOrLambda,
    Volatility,
};

/// Every higher-order function of this module.
pub fn all() -> Vec<Arc<HigherOrderUDF>> {
    vec![
        Arc::new(HigherOrderUDF::new_from_impl(Hof::new(Kind::MapTransform))),
        Arc::new(HigherOrderUDF::new_from_impl(Hof::new(Kind::MapFilter))),
        Arc::new(HigherOrderUDF::new_from_impl(Hof::new(Kind::Reduce))),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    MapTransform,
    MapFilter,
    Reduce,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Hof {
    kind: Kind,
    signature: HigherOrderSignature,
}

impl Hof {
    fn new(kind: Kind) -> Self {
        use ValueOrLambda::{Lambda as L, Value as V};
        let args = match kind {
            Kind::MapTransform => vec![V(()), L(()), L(())],
            Kind::MapFilter => vec![V(()), L(())],
            Kind::Reduce => vec![V(()), V(()), L(())],
        };
        Hof {
            kind,
            signature: HigherOrderSignature::exact(args, Volatility::Immutable),
        }
    }
}

/// The key and value fields of a map type.
fn map_fields(t: &DataType) -> Option<(FieldRef, FieldRef)> {
    match t {
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(f) if f.len() == 2 => Some((Arc::clone(&f[0]), Arc::clone(&f[1]))),
            _ => None,
        },
        _ => None,
    }
}

fn map_type(key: &DataType, value: &DataType) -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            "entries",
            DataType::Struct(Fields::from(vec![
                Field::new("key", key.clone(), false),
                Field::new("value", value.clone(), true),
            ])),
            false,
        )),
        false,
    )
}

/// A collection flattened: its entries' columns (the element, or the key
/// and the value), the outer row of each entry, and each row's range.
struct Flat {
    columns: Vec<ArrayRef>,
    rows: UInt32Array,
    offsets: Vec<usize>,
}

fn flatten(array: &ArrayRef) -> Result<Flat> {
    let (offsets, columns): (Vec<usize>, Vec<ArrayRef>) = match array.data_type() {
        DataType::List(_) => {
            let l = array.as_list::<i32>();
            let o: Vec<usize> = l.value_offsets().iter().map(|&o| o as usize).collect();
            (o, vec![Arc::clone(l.values())])
        }
        DataType::LargeList(_) => {
            let l = array.as_list::<i64>();
            let o: Vec<usize> = l.value_offsets().iter().map(|&o| o as usize).collect();
            (o, vec![Arc::clone(l.values())])
        }
        DataType::Map(..) => {
            let m = array.as_map();
            let o: Vec<usize> = m.value_offsets().iter().map(|&o| o as usize).collect();
            (o, vec![Arc::clone(m.keys()), Arc::clone(m.values())])
        }
        other => return exec_err!("expected an array or a map, got {other}"),
    };
    let (first, last) = (offsets[0], offsets[offsets.len() - 1]);
    let columns = columns
        .iter()
        .map(|c| c.slice(first, last - first))
        .collect();
    let offsets: Vec<usize> = offsets.iter().map(|o| o - first).collect();
    let mut rows = Vec::with_capacity(offsets[offsets.len() - 1]);
    for (row, w) in offsets.windows(2).enumerate() {
        rows.extend(std::iter::repeat_n(row as u32, w[1] - w[0]));
    }
    Ok(Flat {
        columns,
        rows: UInt32Array::from(rows),
        offsets,
    })
}

/// Evaluates a lambda over `params` (one array per parameter, all of one
/// length), its captured columns taken at `rows`.
fn apply(lambda: &LambdaArgument, params: &[ArrayRef], rows: &UInt32Array) -> Result<ArrayRef> {
    let len = params.first().map_or(rows.len(), |p| p.len());
    let closures: Vec<Box<dyn Fn() -> Result<ArrayRef>>> = params
        .iter()
        .map(|p| {
            let p = Arc::clone(p);
            Box::new(move || Ok(Arc::clone(&p))) as Box<dyn Fn() -> Result<ArrayRef>>
        })
        .collect();
    let refs: Vec<&dyn Fn() -> Result<ArrayRef>> = closures.iter().map(|c| c.as_ref()).collect();
    lambda
        .evaluate(&refs, |captured| Ok(take_arrays(captured, rows, None)?))?
        .into_array(len)
}

fn lambda_arg(arg: &ValueOrLambda<ColumnarValue, LambdaArgument>) -> Result<&LambdaArgument> {
    match arg {
        ValueOrLambda::Lambda(l) => Ok(l),
        ValueOrLambda::Value(_) => exec_err!("expected a lambda"),
    }
}

fn value_arg(arg: &ValueOrLambda<ColumnarValue, LambdaArgument>, n: usize) -> Result<ArrayRef> {
    match arg {
        ValueOrLambda::Value(v) => v.to_array(n),
        ValueOrLambda::Lambda(_) => exec_err!("expected a value"),
    }
}

fn rebuild_map(
    map: &MapArray,
    key: ArrayRef,
    value: ArrayRef,
    offsets: &[usize],
) -> Result<ArrayRef> {
    if key.null_count() > 0 {
        return exec_err!("a map key is NULL");
    }
    let fields = Fields::from(vec![
        Field::new("key", key.data_type().clone(), false),
        Field::new("value", value.data_type().clone(), true),
    ]);
    let entries = StructArray::try_new(fields.clone(), vec![key, value], None)?;
    let offsets = OffsetBuffer::new(offsets.iter().map(|&o| o as i32).collect::<Vec<_>>().into());
    Ok(Arc::new(MapArray::try_new(
        Arc::new(Field::new("entries", DataType::Struct(fields), false)),
        offsets,
        entries,
        map.nulls().cloned(),
        false,
    )?))
}

impl HigherOrderUDFImpl for Hof {
    fn name(&self) -> &str {
        match self.kind {
            Kind::MapTransform => "__brook_map_transform",
            Kind::MapFilter => "__brook_map_filter",
            Kind::Reduce => "__brook_reduce",
        }
    }

    fn signature(&self) -> &HigherOrderSignature {
        &self.signature
    }

    fn coerce_value_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        Ok(arg_types.to_vec())
    }

    fn lambda_parameters(
        &self,
        _step: usize,
        fields: &[ValueOrLambda<FieldRef, Option<FieldRef>>],
    ) -> Result<LambdaParametersProgress> {
        let Some(ValueOrLambda::Value(collection)) = fields.first() else {
            return plan_err!("{} expects a collection first", self.name());
        };
        let what = if self.kind == Kind::Reduce {
            "an array or a map"
        } else {
            "a map"
        };
        let entry: Vec<FieldRef> =
            match (collection.data_type(), map_fields(collection.data_type())) {
                (_, Some((k, v))) => vec![k, v],
                (DataType::List(e) | DataType::LargeList(e), None) if self.kind == Kind::Reduce => {
                    vec![Arc::clone(e)]
                }
                (other, None) => {
                    return plan_err!("{} expects {what}, got {other}", self.name());
                }
            };
        Ok(LambdaParametersProgress::Complete(match self.kind {
            Kind::MapTransform => vec![entry.clone(), entry],
            Kind::MapFilter => vec![entry],
            Kind::Reduce => {
                let Some(ValueOrLambda::Value(init)) = fields.get(1) else {
                    return plan_err!("REDUCE expects an initial state");
                };
                let mut params = vec![Arc::clone(init)];
                params.extend(entry);
                vec![params]
            }
        }))
    }

    fn return_field_from_args(&self, args: HigherOrderReturnFieldArgs) -> Result<FieldRef> {
        let field = |i: usize| match args.arg_fields.get(i) {
            Some(ValueOrLambda::Value(f) | ValueOrLambda::Lambda(f)) => Ok(Arc::clone(f)),
            None => plan_err!("{} expects more arguments", self.name()),
        };
        let t = match self.kind {
            Kind::MapTransform => map_type(field(1)?.data_type(), field(2)?.data_type()),
            Kind::MapFilter => field(0)?.data_type().clone(),
            Kind::Reduce => field(1)?.data_type().clone(),
        };
        Ok(Arc::new(Field::new("", t, true)))
    }

    fn invoke_with_args(&self, args: HigherOrderFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let collection = value_arg(&args.args[0], n)?;
        let flat = flatten(&collection)?;
        match self.kind {
            Kind::MapTransform => {
                let keys = apply(lambda_arg(&args.args[1])?, &flat.columns, &flat.rows)?;
                let values = apply(lambda_arg(&args.args[2])?, &flat.columns, &flat.rows)?;
                Ok(ColumnarValue::Array(rebuild_map(
                    collection.as_map(),
                    keys,
                    values,
                    &flat.offsets,
                )?))
            }
            Kind::MapFilter => {
                let keep = apply(lambda_arg(&args.args[1])?, &flat.columns, &flat.rows)?;
                let Some(keep) = keep.as_boolean_opt() else {
                    return exec_err!("FILTER's lambda must return a BOOLEAN");
                };
                // NULL counts as false.
                let keep = BooleanArray::from_iter(keep.iter().map(|b| Some(b == Some(true))));
                let mut offsets = Vec::with_capacity(flat.offsets.len());
                offsets.push(0);
                for w in flat.offsets.windows(2) {
                    let kept = (w[0]..w[1]).filter(|&i| keep.value(i)).count();
                    offsets.push(offsets[offsets.len() - 1] + kept);
                }
                let keys = filter(&flat.columns[0], &keep)?;
                let values = filter(&flat.columns[1], &keep)?;
                Ok(ColumnarValue::Array(rebuild_map(
                    collection.as_map(),
                    keys,
                    values,
                    &offsets,
                )?))
            }
            Kind::Reduce => {
                let lambda = lambda_arg(&args.args[2])?;
                let state_type = args.return_type().clone();
                let mut state = value_arg(&args.args[1], n)?;
                let lens: Vec<usize> = (0..n)
                    .map(|r| {
                        if collection.is_null(r) {
                            0
                        } else {
                            flat.offsets[r + 1] - flat.offsets[r]
                        }
                    })
                    .collect();
                let longest = lens.iter().copied().max().unwrap_or(0);
                for step in 0..longest {
                    let rows: Vec<u32> = (0..n)
                        .filter(|&r| lens[r] > step)
                        .map(|r| r as u32)
                        .collect();
                    let rows = UInt32Array::from(rows);
                    let at = UInt32Array::from_iter_values(
                        rows.values()
                            .iter()
                            .map(|&r| (flat.offsets[r as usize] + step) as u32),
                    );
                    let mut params = vec![take(&state, &rows, None)?];
                    for c in &flat.columns {
                        params.push(take(c, &at, None)?);
                    }
                    let mut next = apply(lambda, &params, &rows)?;
                    if next.data_type() != &state_type {
                        next = cast(&next, &state_type)?;
                    }
                    // Rows with an entry at this step take the lambda's
                    // result; the others keep their state.
                    let mut taken = 0;
                    let picks: Vec<(usize, usize)> = (0..n)
                        .map(|r| {
                            if lens[r] > step {
                                taken += 1;
                                (1, taken - 1)
                            } else {
                                (0, r)
                            }
                        })
                        .collect();
                    state = interleave(&[state.as_ref(), next.as_ref()], &picks)?;
                }
                Ok(ColumnarValue::Array(state))
            }
        }
    }
}
