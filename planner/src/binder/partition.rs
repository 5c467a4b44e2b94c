//! `PARTITION BY` and the key columns of a query's result.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::sql::sqlparser::ast::{self, Query, SelectItem, SetExpr};

use super::lower::strip_alias;
use super::query::{logical_plan, qualified_text, quoted};
use super::source::reserved;
use crate::catalog::SourceDef;
use crate::error::{PlanError, Result};

/// The PARTITION BY expressions planned against the source: PARTITION BY
/// applies to the input rows, before the projection.
pub(super) fn partition_expressions(
    query: &Query,
    source: &SourceDef,
    exprs: &[ast::Expr],
) -> Result<Vec<Expr>> {
    let mut probe = query.clone();
    probe.order_by = None;
    if let SetExpr::Select(select) = probe.body.as_mut() {
        select.projection = exprs
            .iter()
            .enumerate()
            .map(|(i, e)| SelectItem::ExprWithAlias {
                expr: e.clone(),
                alias: quoted(&format!("__partition_{i}")),
            })
            .collect();
        select.group_by = ast::GroupByExpr::Expressions(vec![], vec![]);
        select.having = None;
    }
    let plan = logical_plan(&probe, &[source]).map_err(|e| match e {
        PlanError::NotFound { kind: "column", name } => PlanError::Invalid(format!(
            "PARTITION BY column '{name}' cannot be resolved. '{name}' must be a column in the source schema since PARTITION BY is applied on the input."
        )),
        other => other,
    })?;
    let mut node = &plan;
    loop {
        match node {
            LogicalPlan::Projection(p) => {
                return Ok(p.expr.iter().map(|e| strip_alias(e).clone()).collect())
            }
            other => match other.inputs().first() {
                Some(input) => node = input,
                None => {
                    return Err(PlanError::Internal(
                        "PARTITION BY expressions did not plan as a projection".into(),
                    ))
                }
            },
        }
    }
}

/// The field name of `get_field(s, 'F')`, the rewritten `s->f`.
pub(super) fn struct_field(e: &ast::Expr) -> Option<String> {
    let ast::Expr::Function(f) = e else {
        return None;
    };
    let ast::FunctionArguments::List(l) = &f.args else {
        return None;
    };
    match (f.name.to_string().as_str(), l.args.get(1)) {
        (
            "get_field",
            Some(ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(ast::Expr::Value(v)))),
        ) => match &v.value {
            ast::Value::SingleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// The name ksqlDB gives a PARTITION BY key under `SELECT *`: a column's
/// name, a struct field's name, or `KSQL_COL_<n>`. A pseudo-column keeps
/// its name only when it is one of several keys.
fn partition_key_name(e: &Expr, several: bool, generated: &mut usize) -> String {
    match e {
        Expr::Column(c) if several || !reserved(&c.name) => return c.name.clone(),
        Expr::ScalarFunction(f) if f.func.name() == "get_field" => {
            if let Some(Expr::Literal(ScalarValue::Utf8(Some(name)), _)) = f.args.get(1) {
                return name.clone();
            }
        }
        _ => {}
    }
    *generated += 1;
    format!("KSQL_COL_{}", *generated - 1)
}

/// `A`, `A and B`, `A, B and C`, as ksqlDB lists names in messages.
pub(super) fn and_list(names: &[String]) -> String {
    match names {
        [init @ .., last] if !init.is_empty() => format!("{} and {last}", init.join(", ")),
        _ => names.join(", "),
    }
}

/// ksqlDB's refusal of a key column projected under several names.
pub(super) fn key_projected_twice(key: &str, aliases: &[&str]) -> PlanError {
    let mut aliases = aliases.to_vec();
    aliases.sort_unstable();
    PlanError::Invalid(format!(
        "The projection contains a key column (`{key}`) more than once, aliased as: {}.",
        aliases.join(" and ")
    ))
}

/// `SELECT * … PARTITION BY e…`: the projection becomes the keys, then the
/// source's value columns, then its old key columns, leaving out columns
/// that became keys. Returns the number of key columns.
pub(super) fn star_partition(
    query: &mut Query,
    source: &SourceDef,
    exprs: &[ast::Expr],
    planned: &[Expr],
) -> Result<usize> {
    let mut generated = 0usize;
    let mut items = Vec::new();
    let mut moved = Vec::new();
    for (ast_expr, e) in exprs.iter().zip(planned) {
        if let Expr::Column(c) = e {
            moved.push(c.name.clone());
        }
        items.push(SelectItem::ExprWithAlias {
            expr: ast_expr.clone(),
            alias: quoted(&partition_key_name(e, planned.len() > 1, &mut generated)),
        });
    }
    let rest = source
        .value_columns()
        .chain(source.key_columns())
        .filter(|c| !moved.contains(&c.name));
    items.extend(rest.map(|c| SelectItem::UnnamedExpr(ast::Expr::Identifier(quoted(&c.name)))));
    if let SetExpr::Select(select) = query.body.as_mut() {
        select.projection = items;
    }
    Ok(exprs.len())
}

/// The output columns that an explicit projection gives the PARTITION BY
/// expressions, in PARTITION BY order.
pub(super) fn projected_keys(
    plan: &LogicalPlan,
    source: &SourceDef,
    exprs: &[ast::Expr],
    planned: &[Expr],
    sink: &str,
) -> Result<Vec<usize>> {
    let projection: Vec<&Expr> = match plan {
        LogicalPlan::Projection(p) => p.expr.iter().collect(),
        _ => Vec::new(),
    };
    let names: Vec<String> = plan
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut keys = Vec::with_capacity(planned.len());
    for pk in planned {
        let found: Vec<usize> = projection
            .iter()
            .enumerate()
            .filter(|(_, e)| strip_alias(e) == pk)
            .map(|(i, _)| i)
            .collect();
        match found.as_slice() {
            [] => {
                let texts: Vec<String> = exprs
                    .iter()
                    .map(|e| qualified_text(e, &source.name))
                    .collect();
                let what = if texts.len() > 1 {
                    "expressions"
                } else {
                    "expression"
                };
                let listed = and_list(&texts);
                return Err(PlanError::Invalid(format!(
                    "Key missing from projection (ie, SELECT). The query used to build `{sink}` must include the partitioning {what} {listed} in its projection (eg, SELECT {}...).",
                    texts.join(", ")
                )));
            }
            [one] => {
                if keys.contains(one) {
                    return Err(PlanError::Invalid(format!(
                        "Duplicate PARTITION BY expression: {pk}"
                    )));
                }
                keys.push(*one)
            }
            several => {
                let key = match pk {
                    Expr::Column(c) => c.name.clone(),
                    _ => names[several[0]].clone(),
                };
                let aliases: Vec<&str> = several.iter().map(|i| names[*i].as_str()).collect();
                return Err(key_projected_twice(&key, &aliases));
            }
        }
    }
    Ok(keys)
}
