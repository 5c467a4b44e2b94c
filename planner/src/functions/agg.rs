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
use crate::datum::Datum;

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
        Ok(vec![values_state_field(&args)])
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
        for_each_listed(states, |v| self.push(v))
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

/// The state of an aggregate that keeps its values: a list of them.
fn values_state_field(args: &StateFieldsArgs) -> FieldRef {
    let item = args
        .input_fields
        .first()
        .map_or(DataType::Null, |f| f.data_type().clone());
    Arc::new(Field::new(
        format!("{}[values]", args.name),
        DataType::List(Arc::new(Field::new_list_field(item, true))),
        true,
    ))
}

/// Each value of the lists in a state column of such aggregates.
fn for_each_listed(states: &[ArrayRef], mut f: impl FnMut(ScalarValue)) -> Result<()> {
    let Some(col) = states.first() else {
        return Ok(());
    };
    for i in 0..col.len() {
        if let ScalarValue::List(list) = ScalarValue::try_from_array(col, i)? {
            if datafusion::arrow::array::Array::is_null(list.as_ref(), 0) {
                continue;
            }
            let inner = list.value(0);
            for j in 0..inner.len() {
                f(ScalarValue::try_from_array(&inner, j)?);
            }
        }
    }
    Ok(())
}

/// Adds `weight` occurrences of `v` (negative: removes) to a multiset kept
/// sorted, each value once with its multiplicity; a value whose count
/// reaches zero leaves.
pub fn multiset_add(set: &mut Vec<(Datum, i64)>, v: &Datum, weight: i64) {
    match set.binary_search_by(|(d, _)| d.cmp(v)) {
        Ok(i) => {
            set[i].1 += weight;
            if set[i].1 <= 0 {
                set.remove(i);
            }
        }
        Err(i) if weight > 0 => set.insert(i, (v.clone(), weight)),
        Err(_) => {}
    }
}

/// An aggregate computed from the multiset of a group's non-NULL values
/// (so it supports retraction: a value leaves the multiset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MultisetFunc {
    /// `TOPK(x, k)`: the k largest values, largest first.
    TopK(usize),
    /// `TOPKDISTINCT(x, k)`: the k largest distinct values, largest first.
    TopKDistinct(usize),
    /// `COLLECT_SET(x)`: the distinct values (in ascending order).
    CollectSet,
    /// `HISTOGRAM(x)`: each distinct value and how often it occurs.
    Histogram,
    /// `COUNT_DISTINCT(x)`: the number of distinct values.
    CountDistinct,
    /// `ATTR(x)`: the value if every value is the same, else NULL.
    Attr,
    /// `STDDEV_SAMP(x)`: the sample standard deviation.
    StddevSamp,
}

impl MultisetFunc {
    /// The function by its planning name (lower case); `k` is TOPK's count.
    pub fn from_name(name: &str, k: Option<usize>) -> Option<MultisetFunc> {
        Some(match (name, k) {
            ("topk", Some(k)) => MultisetFunc::TopK(k),
            ("topkdistinct", Some(k)) => MultisetFunc::TopKDistinct(k),
            ("collect_set", _) => MultisetFunc::CollectSet,
            ("histogram", _) => MultisetFunc::Histogram,
            ("count_distinct", _) => MultisetFunc::CountDistinct,
            ("attr", _) => MultisetFunc::Attr,
            ("stddev_samp", _) => MultisetFunc::StddevSamp,
            _ => return None,
        })
    }

    /// The result type for the value type `t`.
    fn return_type(self, name: &str, t: &DataType) -> Result<DataType> {
        let list = || DataType::List(Arc::new(Field::new_list_field(t.clone(), true)));
        let numeric = matches!(t, DataType::Int32 | DataType::Int64 | DataType::Float64);
        Ok(match self {
            MultisetFunc::TopK(_) | MultisetFunc::TopKDistinct(_) | MultisetFunc::CollectSet => {
                list()
            }
            MultisetFunc::Histogram if matches!(t, DataType::Utf8) => crate::types::SqlType::Map(
                Box::new(crate::types::SqlType::String),
                Box::new(crate::types::SqlType::Bigint),
            )
            .arrow(),
            MultisetFunc::CountDistinct => DataType::Int64,
            MultisetFunc::Attr => t.clone(),
            MultisetFunc::StddevSamp if numeric => DataType::Float64,
            _ => return Err(no_variant(name, std::slice::from_ref(t))),
        })
    }

    /// The result for a multiset of values (ascending, each with its
    /// multiplicity, which is positive: see [`multiset_add`]).
    pub fn finish(self, values: &[(Datum, i64)]) -> Datum {
        let live = || values.iter().filter(|(_, n)| *n > 0);
        match self {
            MultisetFunc::TopK(k) => Datum::List(
                live()
                    .rev()
                    .flat_map(|(d, n)| std::iter::repeat_n(d.clone(), *n as usize))
                    .take(k)
                    .collect(),
            ),
            MultisetFunc::TopKDistinct(k) => {
                Datum::List(live().rev().take(k).map(|(d, _)| d.clone()).collect())
            }
            MultisetFunc::CollectSet => Datum::List(live().map(|(d, _)| d.clone()).collect()),
            MultisetFunc::Histogram => {
                Datum::Map(live().map(|(d, n)| (d.clone(), Datum::Int(*n))).collect())
            }
            // `multiset_add` keeps only positive counts: no scan needed.
            MultisetFunc::CountDistinct => Datum::Int(values.len() as i64),
            MultisetFunc::Attr => {
                let mut it = live();
                match (it.next(), it.next()) {
                    (Some((d, _)), None) => d.clone(),
                    _ => Datum::Null,
                }
            }
            MultisetFunc::StddevSamp => {
                let xs: Vec<(f64, f64)> = live()
                    .filter_map(|(d, n)| {
                        let x = match d {
                            Datum::Int(i) => *i as f64,
                            Datum::Float(f) => *f,
                            _ => return None,
                        };
                        Some((x, *n as f64))
                    })
                    .collect();
                let count: f64 = xs.iter().map(|(_, n)| n).sum();
                if count < 2.0 {
                    return Datum::Float(0.0);
                }
                let mean = xs.iter().map(|(x, n)| x * n).sum::<f64>() / count;
                let var =
                    xs.iter().map(|(x, n)| (x - mean).powi(2) * n).sum::<f64>() / (count - 1.0);
                Datum::Float(var.sqrt())
            }
        }
    }
}

/// A [`MultisetFunc`] as a DataFusion aggregate (for planning and pull
/// queries; continuous queries keep the multiset incrementally).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Multiset {
    name: &'static str,
    with_k: bool,
    signature: Signature,
}

fn multiset(name: &'static str, with_k: bool) -> AggregateUDF {
    AggregateUDF::new_from_impl(Multiset {
        name,
        with_k,
        signature: Signature::any(if with_k { 2 } else { 1 }, Volatility::Immutable),
    })
}

impl AggregateUDFImpl for Multiset {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let Some(t) = arg_types.first() else {
            return Err(no_variant(self.name, arg_types));
        };
        if self.with_k && !matches!(arg_types.get(1), Some(DataType::Int32 | DataType::Int64)) {
            return Err(no_variant(self.name, arg_types));
        }
        // Any k will do for the type.
        MultisetFunc::from_name(self.name, Some(1))
            .ok_or_else(|| no_variant(self.name, arg_types))?
            .return_type(self.name, t)
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let k = args.exprs.get(1).and_then(|e| {
            e.downcast_ref::<Literal>().and_then(|l| match l.value() {
                ScalarValue::Int32(Some(k)) => usize::try_from(*k).ok(),
                ScalarValue::Int64(Some(k)) => usize::try_from(*k).ok(),
                _ => None,
            })
        });
        let func = MultisetFunc::from_name(self.name, k.or(Some(1))).ok_or_else(|| {
            datafusion::common::DataFusionError::Plan(format!(
                "{} needs a constant count",
                self.name
            ))
        })?;
        Ok(Box::new(MultisetAcc {
            func,
            ret: args.return_field.data_type().clone(),
            item: args
                .expr_fields
                .first()
                .map_or(DataType::Null, |f| f.data_type().clone()),
            values: Vec::new(),
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![values_state_field(&args)])
    }
}

#[derive(Debug)]
struct MultisetAcc {
    func: MultisetFunc,
    ret: DataType,
    /// The values' type (the state is a list of them).
    item: DataType,
    values: Vec<ScalarValue>,
}

impl Accumulator for MultisetAcc {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let Some(col) = values.first() else {
            return Ok(());
        };
        for i in 0..col.len() {
            let v = ScalarValue::try_from_array(col, i)?;
            if !v.is_null() {
                self.values.push(v);
            }
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        for_each_listed(states, |v| {
            if !v.is_null() {
                self.values.push(v);
            }
        })
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::List(ScalarValue::new_list_nullable(
            &self.values,
            &self.item,
        ))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let mut set: Vec<(Datum, i64)> = Vec::new();
        for v in &self.values {
            let d = Datum::from_scalar(v)
                .map_err(|e| datafusion::common::DataFusionError::Plan(e.to_string()))?;
            multiset_add(&mut set, &d, 1);
        }
        self.func
            .finish(&set)
            .to_scalar(&self.ret)
            .map_err(|e| datafusion::common::DataFusionError::Plan(e.to_string()))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.values.len() * 32
    }
}

/// The running sums behind `CORRELATION(x, y)`: ksqlDB's single-pass
/// Pearson formula over the pairs where neither value is NULL. A pair can
/// be taken back (a table row changing), so tables can be aggregated.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CorrSums {
    /// How many pairs.
    pub n: i64,
    /// Σx
    #[serde(with = "crate::datum::f64_bits")]
    pub sx: f64,
    /// Σy
    #[serde(with = "crate::datum::f64_bits")]
    pub sy: f64,
    /// Σx²
    #[serde(with = "crate::datum::f64_bits")]
    pub sxx: f64,
    /// Σy²
    #[serde(with = "crate::datum::f64_bits")]
    pub syy: f64,
    /// Σxy
    #[serde(with = "crate::datum::f64_bits")]
    pub sxy: f64,
}

impl CorrSums {
    /// Adds the pair `weight` times (a negative weight takes it back), one
    /// pair at a time as ksqlDB's `aggregate` and `undo` do, so the sums
    /// round the same way.
    pub fn add(&mut self, x: f64, y: f64, weight: i64) {
        for _ in 0..weight.unsigned_abs() {
            if weight > 0 {
                self.sx += x;
                self.sy += y;
                self.sxx += x * x;
                self.syy += y * y;
                self.sxy += x * y;
                self.n += 1;
            } else {
                self.sx -= x;
                self.sy -= y;
                self.sxx -= x * x;
                self.syy -= y * y;
                self.sxy -= x * y;
                self.n -= 1;
            }
        }
    }

    /// Adds another group's sums (sessions merging).
    pub fn merge(&mut self, other: &CorrSums) {
        self.sx += other.sx;
        self.sy += other.sy;
        self.sxx += other.sxx;
        self.syy += other.syy;
        self.sxy += other.sxy;
        self.n += other.n;
    }

    /// The coefficient: NaN with fewer than two pairs or when either side
    /// does not vary, as in ksqlDB.
    pub fn value(&self) -> f64 {
        let n = self.n as f64;
        let numerator = n * self.sxy - self.sx * self.sy;
        let dx = n * self.sxx - self.sx * self.sx;
        let dy = n * self.syy - self.sy * self.sy;
        numerator / (dx * dy).sqrt()
    }
}

/// `CORRELATION(x, y)` for planning and pull queries.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Correlation {
    signature: Signature,
}

fn correlation() -> AggregateUDF {
    AggregateUDF::new_from_impl(Correlation {
        signature: Signature::user_defined(Volatility::Immutable),
    })
}

impl AggregateUDFImpl for Correlation {
    fn name(&self) -> &str {
        "correlation"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    /// Two numbers, each taken as a DOUBLE; anything else is refused with
    /// ksqlDB's message.
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let number = |t: &DataType| t.is_numeric() || *t == DataType::Null;
        match arg_types {
            [x, y] if number(x) && number(y) => Ok(vec![DataType::Float64; 2]),
            _ => Err(no_variant("correlation", arg_types)),
        }
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(CorrAcc(CorrSums::default())))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let field = |part: &str, t: DataType| {
            Arc::new(Field::new(format!("{}[{part}]", args.name), t, true))
        };
        Ok(vec![
            field("n", DataType::Int64),
            field("sx", DataType::Float64),
            field("sy", DataType::Float64),
            field("sxx", DataType::Float64),
            field("syy", DataType::Float64),
            field("sxy", DataType::Float64),
        ])
    }
}

#[derive(Debug)]
struct CorrAcc(CorrSums);

fn float_at(col: &ArrayRef, i: usize) -> Result<Option<f64>> {
    Ok(match ScalarValue::try_from_array(col, i)? {
        ScalarValue::Float64(x) => x,
        _ => None,
    })
}

impl Accumulator for CorrAcc {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let [xs, ys, ..] = values else {
            return Ok(());
        };
        for i in 0..xs.len() {
            if let (Some(x), Some(y)) = (float_at(xs, i)?, float_at(ys, i)?) {
                self.0.add(x, y, 1);
            }
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let [n, sx, sy, sxx, syy, sxy, ..] = states else {
            return Ok(());
        };
        for i in 0..n.len() {
            let ScalarValue::Int64(Some(count)) = ScalarValue::try_from_array(n, i)? else {
                continue;
            };
            let f = |c: &ArrayRef| float_at(c, i).map(|v| v.unwrap_or(0.0));
            self.0.merge(&CorrSums {
                n: count,
                sx: f(sx)?,
                sy: f(sy)?,
                sxx: f(sxx)?,
                syy: f(syy)?,
                sxy: f(sxy)?,
            });
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let s = self.0;
        Ok(vec![
            ScalarValue::Int64(Some(s.n)),
            ScalarValue::Float64(Some(s.sx)),
            ScalarValue::Float64(Some(s.sy)),
            ScalarValue::Float64(Some(s.sxx)),
            ScalarValue::Float64(Some(s.syy)),
            ScalarValue::Float64(Some(s.sxy)),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Float64(Some(self.0.value())))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }
}

/// Every Brook aggregate.
pub fn all() -> Vec<AggregateUDF> {
    vec![
        by_offset(true),
        by_offset(false),
        sum_list(),
        multiset("topk", true),
        multiset("topkdistinct", true),
        multiset("collect_set", false),
        multiset("histogram", false),
        multiset("count_distinct", false),
        multiset("attr", false),
        multiset("stddev_samp", false),
        correlation(),
    ]
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
