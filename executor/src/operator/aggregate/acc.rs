//! Accumulators: the state of one aggregate function of one group, and
//! how a change updates it.

use brook_planner::plan::{AggFunc, ByOffsetArgs};
use datafusion::arrow::datatypes::DataType;
use serde::{Deserialize, Serialize};

use crate::datum::Datum;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Acc {
    Count(i64),
    /// SUM starts at 0, as in ksqlDB (NULLs are skipped).
    Sum {
        int: i64,
        #[serde(with = "crate::datum::f64_bits")]
        float: f64,
    },
    Avg {
        #[serde(with = "crate::datum::f64_bits")]
        sum: f64,
        n: i64,
    },
    /// Multiset of values with their multiplicities, sorted.
    MinMax(Vec<(Datum, i64)>),
    /// MIN or MAX of an input without retractions (a stream): the extreme
    /// value alone.
    Extreme(Datum),
    /// The last (or first) non-NULL value seen.
    Pick(Datum),
    /// The non-NULL values in arrival order.
    List(Vec<Datum>),
    /// LATEST/EARLIEST_BY_OFFSET with a count or with NULLs kept: the
    /// values kept, oldest first.
    Offsets(Vec<Datum>),
    /// CORRELATION's running sums.
    Corr(brook_planner::functions::agg::CorrSums),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct GroupState {
    /// Sum of the weights of the group's rows.
    pub(crate) rows: i64,
    pub(crate) accs: Vec<Acc>,
}

/// TOPK and TOPKDISTINCT over an input without retractions: a value below
/// the k largest can never rise again, so the multiset keeps only those.
pub(crate) fn trim_top(f: AggFunc, acc: &mut Acc) {
    use brook_planner::functions::agg::MultisetFunc;
    let (Acc::MinMax(set), AggFunc::Multiset(m)) = (acc, f) else {
        return;
    };
    // The set is in ascending order: drop from the front.
    let drop = match m {
        MultisetFunc::TopK(k) => {
            let mut kept = 0i64;
            let mut keep_from = set.len();
            while keep_from > 0 && kept < k as i64 {
                keep_from -= 1;
                kept += set[keep_from].1;
            }
            keep_from
        }
        MultisetFunc::TopKDistinct(k) => set.len().saturating_sub(k),
        _ => 0,
    };
    if drop > 0 {
        set.drain(..drop);
    }
}

/// Merges `other`, the accumulator of a later session, into `acc` (ksqlDB's
/// UDAF `merge`, used when a record joins sessions together).
pub(crate) fn merge_acc(f: AggFunc, acc: &mut Acc, other: &Acc) {
    match (acc, other) {
        (Acc::Count(a), Acc::Count(b)) => *a += b,
        (Acc::Sum { int, float }, Acc::Sum { int: i, float: x }) => {
            *int = int.wrapping_add(*i);
            *float += x;
        }
        (Acc::Avg { sum, n }, Acc::Avg { sum: s, n: m }) => {
            *sum += s;
            *n += m;
        }
        (Acc::MinMax(set), Acc::MinMax(more)) => {
            for (v, count) in more {
                brook_planner::functions::agg::multiset_add(set, v, *count);
            }
        }
        (Acc::Pick(cur), Acc::Pick(later)) => {
            // LATEST takes the later session's value, EARLIEST keeps the
            // earlier one; a NULL (nothing seen) never wins.
            let latest = matches!(f, AggFunc::Latest(_));
            if !later.is_null() && (latest || cur.is_null()) {
                *cur = later.clone();
            }
        }
        (Acc::Offsets(kept), Acc::Offsets(more)) => {
            if let AggFunc::Latest(a) | AggFunc::Earliest(a) = f {
                for v in more {
                    a.offer(matches!(f, AggFunc::Latest(_)), kept, v.clone(), false);
                }
            }
        }
        (Acc::List(items), Acc::List(more)) => items.extend(more.iter().cloned()),
        (Acc::Extreme(cur), Acc::Extreme(other)) => offer_extreme(f, cur, other),
        (Acc::Corr(sums), Acc::Corr(more)) => sums.merge(more),
        _ => {}
    }
}

/// MIN or MAX without retractions: `v` replaces `cur` if it is further
/// out (NULL is never an extreme).
fn offer_extreme(f: AggFunc, cur: &mut Datum, v: &Datum) {
    let further = match f {
        AggFunc::Min => *v < *cur,
        _ => *v > *cur,
    };
    if !v.is_null() && (cur.is_null() || further) {
        *cur = v.clone();
    }
}

pub(crate) fn new_acc(f: AggFunc) -> Acc {
    match f {
        AggFunc::Count => Acc::Count(0),
        AggFunc::Sum | AggFunc::SumList => Acc::Sum { int: 0, float: 0.0 },
        AggFunc::Avg => Acc::Avg { sum: 0.0, n: 0 },
        AggFunc::Min | AggFunc::Max | AggFunc::Multiset(_) => Acc::MinMax(Vec::new()),
        AggFunc::Latest(a) | AggFunc::Earliest(a) if a == ByOffsetArgs::DEFAULT => {
            Acc::Pick(Datum::Null)
        }
        AggFunc::Latest(_) | AggFunc::Earliest(_) => Acc::Offsets(Vec::new()),
        AggFunc::CollectList => Acc::List(Vec::new()),
        AggFunc::Correlation => Acc::Corr(Default::default()),
    }
}

/// Applies one value with a weight; `arg` is `None` for `COUNT(*)`.
/// LATEST_BY_OFFSET and EARLIEST_BY_OFFSET ignore retractions (ksqlDB does
/// not support them on tables, where retractions come from).
pub(crate) fn update_acc(f: AggFunc, acc: &mut Acc, arg: Option<&Datum>, weight: i64) {
    if let (Acc::Offsets(kept), AggFunc::Latest(a) | AggFunc::Earliest(a)) = (&mut *acc, f) {
        if let Some(v) = arg.filter(|_| weight > 0) {
            a.offer(
                matches!(f, AggFunc::Latest(_)),
                kept,
                v.clone(),
                v.is_null(),
            );
        }
        return;
    }
    if let (AggFunc::SumList, Some(Datum::List(items))) = (f, arg) {
        for item in items {
            update_acc(AggFunc::Sum, acc, Some(item), weight);
        }
        return;
    }
    let value = match arg {
        None => None,
        Some(d) if d.is_null() => return, // aggregates skip NULLs
        Some(d) => Some(d),
    };
    match acc {
        Acc::Count(c) => *c += weight,
        Acc::Sum { int, float } => match value {
            Some(Datum::Int(i)) => *int = int.wrapping_add(i.wrapping_mul(weight)),
            Some(Datum::Float(x)) => *float += x * weight as f64,
            _ => {}
        },
        Acc::Avg { sum, n } => {
            match value {
                Some(Datum::Int(i)) => *sum += (*i as f64) * weight as f64,
                Some(Datum::Float(x)) => *sum += x * weight as f64,
                _ => {}
            }
            *n += weight;
        }
        Acc::MinMax(set) => {
            if let Some(v) = value {
                brook_planner::functions::agg::multiset_add(set, v, weight);
            }
        }
        Acc::Extreme(cur) => {
            if let Some(v) = value {
                offer_extreme(f, cur, v);
            }
        }
        Acc::Pick(cur) => {
            if let Some(v) = value {
                if weight > 0 && (matches!(f, AggFunc::Latest(_)) || cur.is_null()) {
                    *cur = v.clone();
                }
            }
        }
        Acc::Offsets(_) => {} // handled above
        Acc::Corr(sums) => {
            // A pair with a NULL side is skipped.
            if let Some(Datum::List(pair)) = value {
                if let [Datum::Float(x), Datum::Float(y)] = pair.as_slice() {
                    sums.add(*x, *y, weight);
                }
            }
        }
        Acc::List(items) => {
            if let Some(v) = value {
                if weight > 0 {
                    for _ in 0..weight {
                        items.push(v.clone());
                    }
                } else if let Some(i) = items.iter().position(|x| x == v) {
                    items.remove(i);
                }
            }
        }
    }
}

pub(crate) fn acc_output(f: AggFunc, acc: &Acc, ty: &DataType) -> Datum {
    match acc {
        Acc::Count(c) => Datum::Int(*c),
        Acc::Sum { int, float, .. } => match ty {
            DataType::Float32 | DataType::Float64 => Datum::Float(*float + *int as f64),
            _ => Datum::Int(*int),
        },
        Acc::Avg { n, .. } if *n <= 0 => Datum::Null,
        Acc::Avg { sum, n } => Datum::Float(sum / *n as f64),
        Acc::MinMax(set) if matches!(f, AggFunc::Multiset(_)) => match f {
            AggFunc::Multiset(m) => m.finish(set),
            _ => Datum::Null,
        },
        Acc::MinMax(set) => {
            let pick = if f == AggFunc::Min {
                set.first()
            } else {
                set.last()
            };
            pick.map_or(Datum::Null, |(d, _)| d.clone())
        }
        Acc::Pick(d) | Acc::Extreme(d) => d.clone(),
        Acc::Offsets(kept) => match f {
            AggFunc::Latest(ByOffsetArgs { n: Some(_), .. })
            | AggFunc::Earliest(ByOffsetArgs { n: Some(_), .. }) => Datum::List(kept.clone()),
            _ => kept.first().cloned().unwrap_or(Datum::Null),
        },
        Acc::List(items) => Datum::List(items.clone()),
        Acc::Corr(sums) => Datum::Float(sums.value()),
    }
}

#[cfg(test)]
mod acc_tests {
    use super::*;
    use crate::error::{binary, from_binary};

    #[test]
    fn accumulators_keep_non_finite_sums() {
        let mut state = GroupState {
            rows: 0,
            accs: vec![new_acc(AggFunc::Sum), new_acc(AggFunc::Avg)],
        };
        for acc in &mut state.accs {
            update_acc(AggFunc::Sum, acc, Some(&Datum::Float(f64::MAX)), 1);
            update_acc(AggFunc::Sum, acc, Some(&Datum::Float(f64::MAX)), 1);
        }
        // In the binary encoding, and as JSON (state of earlier versions).
        let encodings = [binary(&state).unwrap(), serde_json::to_vec(&state).unwrap()];
        for bytes in encodings {
            let back: GroupState = from_binary(&bytes, "test").expect("infinite sums read back");
            assert!(matches!(back.accs[0], Acc::Sum { float, .. } if float == f64::INFINITY));
            assert!(matches!(back.accs[1], Acc::Avg { sum, n: 2 } if sum == f64::INFINITY));
        }
    }

    #[test]
    fn group_states_read_back_from_both_encodings() {
        let values = [
            Datum::Null,
            Datum::Bool(true),
            Datum::Int(-7),
            Datum::Float(f64::NAN),
            Datum::Str("zß".into()),
            Datum::Decimal(-12_345_678_901_234_567_890_123, 4),
            Datum::Bytes(vec![0, 1, 255]),
            Datum::List(vec![Datum::Int(1), Datum::Null]),
            Datum::Map(vec![(Datum::Str("k".into()), Datum::Int(2))]),
            Datum::Struct(vec![Datum::Str("a".into()), Datum::Float(0.5)]),
        ];
        let state = GroupState {
            rows: 3,
            accs: vec![
                Acc::Count(3),
                Acc::MinMax(values.iter().cloned().zip(1..).collect()),
                Acc::List(values.to_vec()),
                Acc::Pick(Datum::Int(9)),
            ],
        };
        let expected = format!("{:?}", state.accs).replace("NaN", "nan");
        for bytes in [binary(&state).unwrap(), serde_json::to_vec(&state).unwrap()] {
            let back: GroupState = from_binary(&bytes, "test").unwrap();
            assert_eq!(back.rows, 3);
            assert_eq!(format!("{:?}", back.accs).replace("NaN", "nan"), expected);
        }
        // Damaged bytes are an error, not a panic.
        let mut bad = binary(&state).unwrap();
        bad.truncate(bad.len() / 2);
        assert!(from_binary::<GroupState>(&bad, "test").is_err());
        assert!(from_binary::<GroupState>(&[], "test").is_err());
    }
}
