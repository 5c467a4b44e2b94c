//! Lowering an analyzed DataFusion plan into a `StreamPlan`'s operators.

use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, LogicalPlan};

use super::query::ksql_casts;
use super::select::{refuse_table_functions, split_table_functions};
use crate::error::{PlanError, Result};
use crate::plan::{AggCall, AggFunc, ByOffsetArgs, StreamOp};

/// Lowers a logical plan into stream operators, tracking which columns of
/// each step's output are key columns.
pub(super) fn lower(
    plan: &LogicalPlan,
    ops: &mut Vec<StreamOp>,
    keys: &mut Vec<bool>,
) -> Result<()> {
    match plan {
        LogicalPlan::TableScan(_) => Ok(()),
        LogicalPlan::SubqueryAlias(a) => lower(&a.input, ops, keys),
        LogicalPlan::Filter(f) => {
            lower(&f.input, ops, keys)?;
            refuse_table_functions(std::slice::from_ref(&f.predicate))?;
            // Above an aggregation this is HAVING, evaluated on its output.
            ops.push(StreamOp::Filter {
                predicate: f.predicate.clone(),
                input_schema: Arc::clone(f.input.schema()),
            });
            Ok(())
        }
        LogicalPlan::Projection(p) => {
            lower(&p.input, ops, keys)?;
            let exprs = ksql_casts(p.expr.clone(), p.input.schema(), "Invalid Select: ")?;
            let (exprs, input_schema) = split_table_functions(&exprs, p.input.schema(), ops, keys)?;
            let input_schema = &input_schema;
            let new_keys = exprs
                .iter()
                .map(|e| match strip_alias(e) {
                    Expr::Column(c) => input_schema
                        .index_of_column(c)
                        .map(|i| keys.get(i).copied().unwrap_or(false))
                        .unwrap_or(false),
                    _ => false,
                })
                .collect();
            *keys = new_keys;
            ops.push(StreamOp::Project {
                exprs,
                input_schema: Arc::clone(input_schema),
                output_schema: Arc::clone(&p.schema),
            });
            Ok(())
        }
        LogicalPlan::Aggregate(a) => {
            lower(&a.input, ops, keys)?;
            if ops
                .iter()
                .any(|op| matches!(op, StreamOp::Aggregate { .. }))
            {
                return Err(PlanError::Unsupported(
                    "nested aggregations are not supported".into(),
                ));
            }
            if a.group_expr.is_empty() {
                return Err(PlanError::Unsupported(
                    "aggregations without GROUP BY are not supported in continuous queries".into(),
                ));
            }
            if a.aggr_expr.is_empty() {
                return Err(PlanError::Invalid(
                    "GROUP BY requires aggregate functions in either the SELECT or HAVING clause."
                        .into(),
                ));
            }
            refuse_table_functions(&a.group_expr)?;
            refuse_table_functions(&a.aggr_expr)?;
            let aggs = a
                .aggr_expr
                .iter()
                .map(agg_call)
                .collect::<Result<Vec<_>>>()?;
            *keys = (0..a.group_expr.len())
                .map(|_| true)
                .chain(aggs.iter().map(|_| false))
                .collect();
            ops.push(StreamOp::Aggregate {
                group: a.group_expr.clone(),
                aggs,
                input_schema: Arc::clone(a.input.schema()),
                output_schema: Arc::clone(&a.schema),
            });
            Ok(())
        }
        LogicalPlan::Sort(_) => Err(PlanError::Unsupported(
            "ORDER BY is not supported in continuous queries".into(),
        )),
        LogicalPlan::Join(_) => Err(PlanError::Unsupported("joins are not supported yet".into())),
        LogicalPlan::Limit(_) => Err(PlanError::Unsupported(
            "LIMIT is only allowed at the end of a push query".into(),
        )),
        LogicalPlan::Distinct(_) => Err(PlanError::Unsupported(
            "SELECT DISTINCT is not supported in continuous queries".into(),
        )),
        other => Err(PlanError::Unsupported(format!(
            "{} is not supported in continuous queries",
            other
                .display()
                .to_string()
                .split(':')
                .next()
                .unwrap_or("this plan")
        ))),
    }
}

pub(super) fn strip_alias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => strip_alias(&a.expr),
        other => other,
    }
}

fn agg_call(e: &Expr) -> Result<AggCall> {
    let Expr::AggregateFunction(f) = strip_alias(e) else {
        return Err(PlanError::Unsupported(format!(
            "aggregate {e} is not supported"
        )));
    };
    if f.params.distinct || f.params.filter.is_some() || !f.params.order_by.is_empty() {
        return Err(PlanError::Unsupported(format!(
            "aggregate {e} is not supported yet"
        )));
    }
    let func = match f.func.name() {
        "count" => AggFunc::Count,
        "sum" => AggFunc::Sum,
        "avg" => AggFunc::Avg,
        "min" => AggFunc::Min,
        "max" => AggFunc::Max,
        "latest_by_offset" | "earliest_by_offset" => {
            let constants: Vec<Option<&ScalarValue>> = f.params.args[1..]
                .iter()
                .map(|a| match a {
                    Expr::Literal(v, _) => Some(v),
                    _ => None,
                })
                .collect();
            let opts = ByOffsetArgs::from_constants(&constants).ok_or_else(|| {
                PlanError::Invalid(format!(
                    "{}: the number of values must be a positive integer literal and ignoreNulls a boolean literal",
                    f.func.name().to_uppercase()
                ))
            })?;
            let arg = f.params.args[0].clone();
            let func = if f.func.name() == "latest_by_offset" {
                AggFunc::Latest(opts)
            } else {
                AggFunc::Earliest(opts)
            };
            return Ok(AggCall {
                func,
                arg: Some(arg),
            });
        }
        "correlation" => {
            let [x, y] = f.params.args.as_slice() else {
                return Err(PlanError::Unsupported(format!(
                    "{e}: expected two arguments"
                )));
            };
            let pair =
                datafusion::functions_nested::expr_fn::make_array(vec![x.clone(), y.clone()]);
            return Ok(AggCall {
                func: AggFunc::Correlation,
                arg: Some(pair),
            });
        }
        "array_agg" => AggFunc::CollectList,
        "sum_list" => AggFunc::SumList,
        name @ ("topk" | "topkdistinct") => {
            let k = match f.params.args.get(1) {
                Some(Expr::Literal(ScalarValue::Int32(Some(k)), _)) => usize::try_from(*k).ok(),
                Some(Expr::Literal(ScalarValue::Int64(Some(k)), _)) => usize::try_from(*k).ok(),
                _ => None,
            }
            .filter(|k| *k > 0)
            .ok_or_else(|| {
                PlanError::Invalid(format!(
                    "{}: the number of values must be a positive integer literal",
                    name.to_uppercase()
                ))
            })?;
            let func =
                crate::functions::agg::MultisetFunc::from_name(name, Some(k)).ok_or_else(|| {
                    PlanError::Internal(format!("{name} is not a multiset aggregate"))
                })?;
            return Ok(AggCall {
                func: AggFunc::Multiset(func),
                arg: Some(f.params.args[0].clone()),
            });
        }
        name @ ("collect_set" | "histogram" | "count_distinct" | "attr" | "stddev_samp") => {
            AggFunc::Multiset(
                crate::functions::agg::MultisetFunc::from_name(name, None).ok_or_else(|| {
                    PlanError::Internal(format!("{name} is not a multiset aggregate"))
                })?,
            )
        }
        other => {
            return Err(PlanError::Unsupported(format!(
                "aggregate function {} is not supported yet",
                other.to_uppercase()
            )))
        }
    };
    let arg = match f.params.args.as_slice() {
        [Expr::Literal(v, _)] if func == AggFunc::Count && !v.is_null() => None,
        [arg] => Some(arg.clone()),
        _ => {
            return Err(PlanError::Unsupported(format!(
                "{e}: expected one argument"
            )))
        }
    };
    Ok(AggCall { func, arg })
}
