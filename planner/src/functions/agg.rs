//! Brook's own aggregate functions: ksqlDB aggregates whose argument forms
//! DataFusion has no match for.
//!
//! Continuous queries never run these accumulators: the executor maintains
//! the same aggregates incrementally from the planned call. They exist so
//! that planning type-checks the call and so that a pull query (plain
//! DataFusion over materialized state) computes the same value.

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion::physical_expr::expressions::Literal;

use super::udf::no_variant;

/// The options of a `LATEST_BY_OFFSET` / `EARLIEST_BY_OFFSET` call, read
/// from its constant arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByOffsetArgs {
    /// `Some(n)`: the result is an array of (up to) n values.
    pub n: Option<usize>,
    /// Whether NULL values are skipped (the default).
    pub ignore_nulls: bool,
}

impl ByOffsetArgs {
    /// One value, NULLs skipped: the one-argument form.
    pub const DEFAULT: ByOffsetArgs = ByOffsetArgs {
        n: None,
        ignore_nulls: true,
    };

    /// Offers the next value (by offset) to the values kept so far, oldest
    /// first: LATEST keeps the last n (or 1), EARLIEST the first n; NULLs
    /// are skipped when `ignore_nulls`. Shared by the pull-query
    /// accumulator and the executor's incremental state.
    pub fn offer<T>(self, latest: bool, kept: &mut Vec<T>, value: T, is_null: bool) {
        if is_null && self.ignore_nulls {
            return;
        }
        let keep = self.n.unwrap_or(1);
        if latest {
            kept.push(value);
            if kept.len() > keep {
                kept.remove(0);
            }
        } else if kept.len() < keep {
            kept.push(value);
        }
    }

    /// Reads the options from the constant arguments after the first
    /// (`None` when they are not constants of the accepted types).
    pub fn from_constants(rest: &[Option<&ScalarValue>]) -> Option<Self> {
        let count = |v: &ScalarValue| -> Option<usize> {
            match v {
                ScalarValue::Int8(Some(n)) => usize::try_from(*n).ok(),
                ScalarValue::Int16(Some(n)) => usize::try_from(*n).ok(),
                ScalarValue::Int32(Some(n)) => usize::try_from(*n).ok(),
                ScalarValue::Int64(Some(n)) => usize::try_from(*n).ok(),
                _ => None,
            }
        };
        let flag = |v: &ScalarValue| match v {
            ScalarValue::Boolean(Some(b)) => Some(*b),
            _ => None,
        };
        match rest {
            [] => Some(Self::DEFAULT),
            [Some(v)] => match (count(v), flag(v)) {
                (Some(n), _) if n > 0 => Some(ByOffsetArgs {
                    n: Some(n),
                    ignore_nulls: true,
                }),
                (_, Some(b)) => Some(ByOffsetArgs {
                    n: None,
                    ignore_nulls: b,
                }),
                _ => None,
            },
            [Some(n), Some(b)] => Some(ByOffsetArgs {
                n: Some(count(n).filter(|n| *n > 0)?),
                ignore_nulls: flag(b)?,
            }),
            _ => None,
        }
    }
}

/// `LATEST_BY_OFFSET` (`latest` true) or `EARLIEST_BY_OFFSET`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ByOffset {
    name: String,
    latest: bool,
    signature: Signature,
}

/// `LATEST_BY_OFFSET` or `EARLIEST_BY_OFFSET` as a DataFusion aggregate.
pub fn by_offset(latest: bool) -> AggregateUDF {
    let name = if latest {
        "latest_by_offset"
    } else {
        "earliest_by_offset"
    };
    AggregateUDF::new_from_impl(ByOffset {
        name: name.into(),
        latest,
        signature: Signature::one_of(
            vec![
                TypeSignature::Any(1),
                TypeSignature::Any(2),
                TypeSignature::Any(3),
            ],
            Volatility::Immutable,
        ),
    })
}

fn is_integer(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64
    )
}

impl AggregateUDFImpl for ByOffset {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let list = |t: &DataType| DataType::List(Arc::new(Field::new("item", t.clone(), true)));
        match arg_types {
            [t] => Ok(t.clone()),
            [t, DataType::Boolean] => Ok(t.clone()),
            [t, n] if is_integer(n) => Ok(list(t)),
            [t, n, DataType::Boolean] if is_integer(n) => Ok(list(t)),
            _ => Err(no_variant(&self.name, arg_types)),
        }
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let constants: Vec<Option<&ScalarValue>> = args.exprs[1..]
            .iter()
            .map(|e| e.downcast_ref::<Literal>().map(Literal::value))
            .collect();
        let opts = ByOffsetArgs::from_constants(&constants).ok_or_else(|| {
            datafusion::common::DataFusionError::Plan(format!(
                "{}: the count must be a positive integer constant and ignoreNulls a boolean constant",
                self.name.to_uppercase()
            ))
        })?;
        Ok(Box::new(ByOffsetAcc {
            latest: self.latest,
            opts,
            item: args
                .expr_fields
                .first()
                .map_or(DataType::Null, |f| f.data_type().clone()),
            values: Vec::new(),
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let item = args
            .input_fields
            .first()
            .map_or(DataType::Null, |f| f.data_type().clone());
        Ok(vec![Arc::new(Field::new(
            format!("{}[values]", args.name),
            DataType::List(Arc::new(Field::new("item", item, true))),
            true,
        ))])
    }
}

/// The values kept so far, in offset order.
#[derive(Debug)]
struct ByOffsetAcc {
    latest: bool,
    opts: ByOffsetArgs,
    item: DataType,
    values: Vec<ScalarValue>,
}

impl ByOffsetAcc {
    fn push(&mut self, v: ScalarValue) {
        let is_null = v.is_null();
        self.opts.offer(self.latest, &mut self.values, v, is_null);
    }

    fn list(&self) -> ScalarValue {
        ScalarValue::List(ScalarValue::new_list_nullable(&self.values, &self.item))
    }
}

impl Accumulator for ByOffsetAcc {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let Some(col) = values.first() else {
            return Ok(());
        };
        for i in 0..col.len() {
            self.push(ScalarValue::try_from_array(col, i)?);
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let Some(col) = states.first() else {
            return Ok(());
        };
        for i in 0..col.len() {
            if let ScalarValue::List(list) = ScalarValue::try_from_array(col, i)? {
                let inner = list.value(0);
                for j in 0..inner.len() {
                    self.push(ScalarValue::try_from_array(&inner, j)?);
                }
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.list()])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        if self.opts.n.is_some() {
            return Ok(self.list());
        }
        match self.values.first() {
            Some(v) => Ok(v.clone()),
            None => ScalarValue::try_from(&self.item),
        }
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.values.iter().map(ScalarValue::size).sum::<usize>()
    }
}

/// `SUM_LIST(array)`: the sum of every non-NULL element of every array.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SumList {
    signature: Signature,
}

/// `SUM_LIST` as a DataFusion aggregate.
pub fn sum_list() -> AggregateUDF {
    AggregateUDF::new_from_impl(SumList {
        signature: Signature::any(1, Volatility::Immutable),
    })
}

fn list_item(t: &DataType) -> Option<&DataType> {
    match t {
        DataType::List(f) | DataType::LargeList(f) => Some(f.data_type()),
        _ => None,
    }
}

impl AggregateUDFImpl for SumList {
    fn name(&self) -> &str {
        "sum_list"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [t] => match list_item(t) {
                Some(DataType::Int32) => Ok(DataType::Int32),
                Some(DataType::Int64) => Ok(DataType::Int64),
                Some(DataType::Float64) => Ok(DataType::Float64),
                _ => Err(no_variant("sum_list", arg_types)),
            },
            _ => Err(no_variant("sum_list", arg_types)),
        }
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(SumListAcc {
            ty: args.return_field.data_type().clone(),
            int: 0,
            float: 0.0,
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(
                format!("{}[int]", args.name),
                DataType::Int64,
                true,
            )),
            Arc::new(Field::new(
                format!("{}[float]", args.name),
                DataType::Float64,
                true,
            )),
        ])
    }
}

/// Integer elements add with Java's wrap-around; DOUBLE elements as floats.
#[derive(Debug)]
struct SumListAcc {
    ty: DataType,
    int: i64,
    float: f64,
}

impl SumListAcc {
    fn add(&mut self, v: &ScalarValue) {
        match v {
            ScalarValue::Int32(Some(i)) => self.int = self.int.wrapping_add(i64::from(*i)),
            ScalarValue::Int64(Some(i)) => self.int = self.int.wrapping_add(*i),
            ScalarValue::Float64(Some(x)) => self.float += x,
            _ => {}
        }
    }
}

impl Accumulator for SumListAcc {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let Some(col) = values.first() else {
            return Ok(());
        };
        for i in 0..col.len() {
            if let ScalarValue::List(list) = ScalarValue::try_from_array(col, i)? {
                if datafusion::arrow::array::Array::is_null(list.as_ref(), 0) {
                    continue;
                }
                let inner = list.value(0);
                for j in 0..inner.len() {
                    self.add(&ScalarValue::try_from_array(&inner, j)?);
                }
            }
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let [ints, floats, ..] = states else {
            return Ok(());
        };
        for i in 0..ints.len() {
            if let ScalarValue::Int64(Some(n)) = ScalarValue::try_from_array(ints, i)? {
                self.int = self.int.wrapping_add(n);
            }
            if let ScalarValue::Float64(Some(x)) = ScalarValue::try_from_array(floats, i)? {
                self.float += x;
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![
            ScalarValue::Int64(Some(self.int)),
            ScalarValue::Float64(Some(self.float)),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(match self.ty {
            DataType::Int32 => ScalarValue::Int32(Some(self.int as i32)),
            DataType::Float64 => ScalarValue::Float64(Some(self.float)),
            _ => ScalarValue::Int64(Some(self.int)),
        })
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }
}

/// Every Brook aggregate.
pub fn all() -> Vec<AggregateUDF> {
    vec![by_offset(true), by_offset(false), sum_list()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_come_from_constant_arguments() {
        let two = ScalarValue::Int32(Some(2));
        let no = ScalarValue::Boolean(Some(false));
        assert_eq!(
            ByOffsetArgs::from_constants(&[Some(&two), Some(&no)]),
            Some(ByOffsetArgs {
                n: Some(2),
                ignore_nulls: false
            })
        );
        assert_eq!(
            ByOffsetArgs::from_constants(&[Some(&no)]),
            Some(ByOffsetArgs {
                n: None,
                ignore_nulls: false
            })
        );
        let zero = ScalarValue::Int32(Some(0));
        assert_eq!(ByOffsetArgs::from_constants(&[Some(&zero)]), None);
        assert_eq!(ByOffsetArgs::from_constants(&[None]), None);
    }

    #[test]
    fn latest_keeps_the_last_n_and_earliest_the_first_n() {
        let opts = ByOffsetArgs {
            n: Some(2),
            ignore_nulls: false,
        };
        let mut latest = ByOffsetAcc {
            latest: true,
            opts,
            item: DataType::Int32,
            values: Vec::new(),
        };
        let mut earliest = ByOffsetAcc {
            latest: false,
            opts,
            item: DataType::Int32,
            values: Vec::new(),
        };
        for v in [Some(1), None, Some(3)] {
            latest.push(ScalarValue::Int32(v));
            earliest.push(ScalarValue::Int32(v));
        }
        assert_eq!(
            latest.values,
            vec![ScalarValue::Int32(None), ScalarValue::Int32(Some(3))]
        );
        assert_eq!(
            earliest.values,
            vec![ScalarValue::Int32(Some(1)), ScalarValue::Int32(None)]
        );
    }
}
