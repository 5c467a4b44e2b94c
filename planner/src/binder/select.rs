//! Continuous `SELECT`s: `CREATE … AS SELECT`, push queries, and the
//! checks ksqlDB makes of their projection and `GROUP BY`.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, FetchType, LogicalPlan};
use datafusion::sql::sqlparser::ast::{self, Query, SelectItem, SetExpr, Value};

use super::lower::{lower, strip_alias};
use super::partition::{
    and_list, key_projected_twice, partition_expressions, projected_keys, star_partition,
};
use super::props::{
    check_formats, check_props, formats, partitions_prop, positive_prop, prop, timestamp_prop,
    unwrapped_prop,
};
use super::query::{ksql_text, logical_plan, referenced_sources};
use super::source::reserved;
use super::window::{prepare_window, project_window_bounds, take_window};
use crate::catalog::{Catalog, Column, Format, SourceDef, SourceKind, WINDOWEND, WINDOWSTART};
use crate::error::{PlanError, Result};
use crate::parser::{object_name, PropValue, Props};
use crate::plan::{StreamOp, StreamPlan, TableFunc};
use crate::types::SqlType;

/// ksqlDB refuses aggregate functions in GROUP BY.
pub(super) fn check_group_by(
    query: &Query,
    state: &datafusion::execution::SessionState,
) -> Result<()> {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Ok(());
    };
    let ast::GroupByExpr::Expressions(exprs, _) = &select.group_by else {
        return Ok(());
    };
    let mut found = None;
    let _ = ast::visit_expressions(exprs, |e| {
        if let ast::Expr::Function(f) = e {
            let name = f.name.to_string();
            if state
                .aggregate_functions()
                .contains_key(&name.to_ascii_lowercase())
            {
                found = Some(name.to_ascii_uppercase());
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    if let Some(name) = found {
        return Err(PlanError::Invalid(format!(
            "GROUP BY does not support aggregate functions: {name} is an aggregate function."
        )));
    }
    if exprs.is_empty() {
        return Ok(());
    }
    if let Some(condition) = exprs.iter().find(|e| crate::parser::is_condition(e)) {
        // ksqlDB's grammar takes value expressions here, not conditions.
        return Err(PlanError::Syntax(format!(
            "Syntax Error: GROUP BY takes value expressions, not the condition {condition}"
        )));
    }
    let source = select
        .from
        .first()
        .and_then(|f| match &f.relation {
            ast::TableFactor::Table { name, .. } => object_name(name).ok(),
            _ => None,
        })
        .unwrap_or_default();
    let qualified = |e: &ast::Expr| match e {
        ast::Expr::Identifier(i) if !source.is_empty() => format!("{source}.{}", i.value),
        other => crate::ksql_ast::ksql_display(other),
    };
    let mut seen: Vec<String> = Vec::new();
    for e in exprs {
        let text = qualified(e);
        if seen.contains(&text) {
            return Err(PlanError::Invalid(format!(
                "Duplicate GROUP BY expression: {text}"
            )));
        }
        seen.push(text);
    }
    // ksqlDB's check, in its words: every non-aggregate part of a SELECT
    // item must be a GROUP BY expression or built from them.
    let unqualified = |e: &ast::Expr| {
        let mut e = e.clone();
        let _ = ast::visit_expressions_mut(&mut e, |x| {
            if let ast::Expr::CompoundIdentifier(parts) = x {
                if let [_, column] = parts.as_slice() {
                    *x = ast::Expr::Identifier(column.clone());
                }
            }
            ControlFlow::<()>::Continue(())
        });
        e
    };
    let groups: Vec<String> = exprs
        .iter()
        .map(|e| crate::ksql_ast::ksql_display(&unqualified(e)))
        .collect();
    let is_aggregate = |f: &ast::Function| {
        state
            .aggregate_functions()
            .contains_key(&f.name.to_string().to_ascii_lowercase())
    };
    // Without any aggregate, the error is that one (reported later).
    let mut any_aggregate = false;
    let _ = ast::visit_expressions(&select.projection, |x| {
        any_aggregate |= matches!(x, ast::Expr::Function(f) if is_aggregate(f));
        ControlFlow::<()>::Continue(())
    });
    let _ = ast::visit_expressions(&select.having, |x| {
        any_aggregate |= matches!(x, ast::Expr::Function(f) if is_aggregate(f));
        ControlFlow::<()>::Continue(())
    });
    // An unknown function is reported by planning (it may be an aggregate).
    let mut unknown = false;
    let _ = ast::visit_expressions(&select.projection, |x| {
        if let ast::Expr::Function(f) = x {
            let name = f.name.to_string().to_ascii_lowercase();
            unknown |= !state.scalar_functions().contains_key(&name)
                && !state.aggregate_functions().contains_key(&name)
                && !state.higher_order_functions().contains_key(&name);
        }
        ControlFlow::<()>::Continue(())
    });
    if unknown {
        return Ok(());
    }
    if !any_aggregate {
        return Err(PlanError::Invalid(
            "GROUP BY requires aggregate functions in either the SELECT or HAVING clause.".into(),
        ));
    }
    // Aggregates of aggregates.
    let mut nested = None;
    let _ = ast::visit_expressions(&select.projection, |x| {
        if let ast::Expr::Function(f) = x {
            if is_aggregate(f) {
                let mut inner = false;
                let _ = ast::visit_expressions(&f.args, |y| {
                    inner |= !std::ptr::eq(x, y)
                        && matches!(y, ast::Expr::Function(g) if is_aggregate(g));
                    ControlFlow::<()>::Continue(())
                });
                if inner {
                    nested = Some(crate::ksql_ast::ksql_display(x));
                    return ControlFlow::Break(());
                }
            }
        }
        ControlFlow::Continue(())
    });
    if let Some(call) = nested {
        return Err(PlanError::Invalid(format!(
            "Aggregate functions can not be nested: {call}"
        )));
    }
    let mut offenders = Vec::new();
    for item in &select.projection {
        let e = match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
            _ => continue,
        };
        let e = unqualified(e);
        let text = crate::ksql_ast::ksql_display(&e);
        if groups.contains(&text) {
            continue;
        }
        if uncovered(&e, &groups, &is_aggregate) {
            offenders.push(text);
        }
    }
    if !offenders.is_empty() {
        return Err(PlanError::Invalid(format!(
            "Non-aggregate SELECT expression(s) not part of GROUP BY: {}\nEither add the column(s) to the GROUP BY or remove them from the SELECT.",
            offenders.join(", ")
        )));
    }
    Ok(())
}

/// Whether `e` uses a column outside the GROUP BY expressions (`groups`,
/// as ksqlDB prints them) and outside aggregate calls.
fn uncovered(
    e: &ast::Expr,
    groups: &[String],
    is_aggregate: &dyn Fn(&ast::Function) -> bool,
) -> bool {
    use ast::Expr as E;
    if groups.contains(&crate::ksql_ast::ksql_display(e)) {
        return false;
    }
    let any = |es: &[&ast::Expr]| es.iter().any(|x| uncovered(x, groups, is_aggregate));
    match e {
        E::Identifier(_) | E::CompoundIdentifier(_) => true,
        E::Function(f) if is_aggregate(f) => false,
        E::Function(f) => match &f.args {
            ast::FunctionArguments::List(l) => l.args.iter().any(|a| match a {
                ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(x))
                | ast::FunctionArg::Named {
                    arg: ast::FunctionArgExpr::Expr(x),
                    ..
                }
                | ast::FunctionArg::ExprNamed {
                    arg: ast::FunctionArgExpr::Expr(x),
                    ..
                } => uncovered(x, groups, is_aggregate),
                _ => false,
            }),
            _ => false,
        },
        // A lambda's parameters are not columns.
        E::Lambda(_) => false,
        E::BinaryOp { left, right, .. } => any(&[left, right]),
        E::UnaryOp { expr, .. }
        | E::Nested(expr)
        | E::Cast { expr, .. }
        | E::IsNull(expr)
        | E::IsNotNull(expr)
        | E::IsTrue(expr)
        | E::IsFalse(expr) => uncovered(expr, groups, is_aggregate),
        E::Between {
            expr, low, high, ..
        } => any(&[expr, low, high]),
        E::Like { expr, pattern, .. } | E::ILike { expr, pattern, .. } => any(&[expr, pattern]),
        E::InList { expr, list, .. } => {
            uncovered(expr, groups, is_aggregate)
                || list.iter().any(|x| uncovered(x, groups, is_aggregate))
        }
        E::Case {
            operand,
            conditions,
            else_result,
            ..
        } => {
            operand
                .as_deref()
                .is_some_and(|x| uncovered(x, groups, is_aggregate))
                || conditions.iter().any(|w| any(&[&w.condition, &w.result]))
                || else_result
                    .as_deref()
                    .is_some_and(|x| uncovered(x, groups, is_aggregate))
        }
        E::CompoundFieldAccess { root, .. } => uncovered(root, groups, is_aggregate),
        other => {
            // Anything else: any column that is not a GROUP BY expression.
            let mut columns = false;
            let _ = ast::visit_expressions(other, |x| {
                columns |= matches!(x, E::Identifier(_) | E::CompoundIdentifier(_))
                    && !groups.contains(&crate::ksql_ast::ksql_display(x));
                ControlFlow::<()>::Continue(())
            });
            columns
        }
    }
}

/// A continuous query (`CREATE … AS SELECT` or a push query).
/// `partition_by` gives the expressions that become the key of the result;
/// `sink` names the source being built, for messages.
pub fn plan_stream(
    catalog: &Catalog,
    query: &Query,
    partition_by: Option<&[ast::Expr]>,
    sink: Option<&str>,
) -> Result<StreamPlan> {
    // A join is planned as a query over a synthetic source of joined rows.
    let prepared = crate::join::prepare(catalog, query, &|q, s| logical_plan(q, &[s]))?;
    let Some(prepared) = prepared else {
        return plan_single(catalog, query, partition_by, sink);
    };
    let mut joined = catalog.clone();
    joined
        .sources
        .insert(prepared.source.name.clone(), prepared.source.clone());
    let partition_by = match partition_by {
        Some(exprs) => {
            let mut exprs = exprs.to_vec();
            prepared.rename(&mut exprs)?;
            Some(exprs)
        }
        None => None,
    };
    // The key: the left join column if the projection keeps it, else the
    // right one.
    let with_key = |key: &str| {
        let mut catalog = catalog.clone();
        let mut source = prepared.source.clone();
        for c in &mut source.columns {
            c.key = c.name == key;
        }
        catalog.sources.insert(source.name.clone(), source);
        catalog
    };
    let mut chosen = None;
    let mut plan = None;
    for (candidate, _) in &prepared.key_candidates {
        let p = plan_single(
            &with_key(candidate),
            &prepared.query,
            partition_by.as_deref(),
            sink,
        )?;
        let keeps_key = !p.key_columns.is_empty();
        if keeps_key || plan.is_none() {
            chosen = Some(candidate.clone());
            plan = Some(p);
        }
        if keeps_key {
            break;
        }
    }
    let mut plan = match plan {
        Some(p) => p,
        None => plan_single(&joined, &prepared.query, partition_by.as_deref(), sink)?,
    };
    if !plan.is_table && !plan.repartitioned {
        if plan.key_columns.is_empty() {
            let shown: Vec<&str> = prepared
                .key_candidates
                .iter()
                .map(|(_, d)| d.as_str())
                .collect();
            let target = sink.unwrap_or("the result");
            return Err(PlanError::Invalid(if prepared.spec.synthetic_key {
                format!("Key missing from projection (ie, SELECT). See https://cnfl.io/2LV7ouS.\nThe query used to build `{target}` must include the join expression ROWKEY in its projection (eg, SELECT ROWKEY...).\nROWKEY was added as a synthetic key column because the join criteria did not match any source column. This expression must be included in the projection and may be aliased.")
            } else {
                format!(
                        "Key missing from projection (ie, SELECT). See https://cnfl.io/2LV7ouS.\nThe query used to build `{target}` must include the join {} {} in its projection (eg, SELECT {}...).",
                        if shown.len() > 1 { "expressions" } else { "expression" },
                        match shown.split_last() {
                            Some((last, rest)) if !rest.is_empty() =>
                                format!("{} or {last}", rest.join(", ")),
                            _ => shown.join(""),
                        },
                        shown.first().copied().unwrap_or("ROWKEY")
                    )
            }));
        }
        plan.key_columns.truncate(1);
    }
    let mut source = prepared.source;
    let chosen = chosen.unwrap_or_default();
    for c in &mut source.columns {
        c.key = c.name == chosen;
    }
    let mut spec = prepared.spec;
    if !spec.synthetic_key && !spec.foreign_key {
        spec.key_column = source.columns.iter().position(|c| c.name == chosen);
    }
    plan.source = source;
    plan.join = Some(spec);
    Ok(plan)
}

fn plan_single(
    catalog: &Catalog,
    query: &Query,
    partition_by: Option<&[ast::Expr]>,
    sink: Option<&str>,
) -> Result<StreamPlan> {
    let sources = referenced_sources(catalog, query)?;
    let [real_source] = sources.as_slice() else {
        return Err(PlanError::Unsupported(if sources.is_empty() {
            "a continuous query needs a FROM clause".into()
        } else {
            "joins are not supported yet".into()
        }));
    };
    // A windowed aggregation is planned over the source plus the window
    // bounds, grouped by them too; they come out as two extra columns.
    let mut query = query.clone();
    let window = take_window(&mut query)?;
    let mut planning_source = (*real_source).clone();
    if window.is_some() || real_source.window.is_some() {
        if let SetExpr::Select(select) = query.body.as_ref() {
            for item in &select.projection {
                if let SelectItem::ExprWithAlias { alias, .. } = item {
                    let name = alias.value.to_ascii_uppercase();
                    if name == WINDOWSTART || name == WINDOWEND {
                        return Err(PlanError::Invalid(format!(
                            "`{name}` is a reserved column name. You cannot use it as an alias for a column."
                        )));
                    }
                }
            }
        }
    }
    let mut window_columns = None;
    // A windowed source: its rows carry their window, which passes through
    // to the result's keys.
    let window = match (window, real_source.window) {
        (Some(_), Some(_)) => {
            return Err(PlanError::Unsupported(
                "a WINDOW over a windowed source is not supported yet".into(),
            ))
        }
        (None, Some(spec)) => {
            let SetExpr::Select(select) = query.body.as_mut() else {
                return Err(PlanError::Unsupported(
                    "only SELECT is supported here".into(),
                ));
            };
            if !matches!(&select.group_by, ast::GroupByExpr::Expressions(g, _) if g.is_empty()) {
                return Err(PlanError::Unsupported(
                    "aggregating a windowed source is not supported yet".into(),
                ));
            }
            window_columns = Some(project_window_bounds(select));
            Some(spec)
        }
        (w, None) => w,
    };
    if let (Some(spec), None) = (window, real_source.window) {
        if real_source.kind == SourceKind::Table {
            return Err(PlanError::Invalid(
                "Windowing not supported for table aggregations.".into(),
            ));
        }
        window_columns = Some(prepare_window(&mut query, spec)?);
        planning_source
            .columns
            .push(Column::new(WINDOWSTART, SqlType::Bigint, false));
        planning_source
            .columns
            .push(Column::new(WINDOWEND, SqlType::Bigint, false));
    }
    let source = &&planning_source;
    let sources = vec![&planning_source];
    let partition = match partition_by {
        Some([ast::Expr::Value(v)]) if v.value == Value::Null => Some(None),
        Some(exprs) => {
            if exprs
                .iter()
                .any(|e| matches!(e, ast::Expr::Value(v) if v.value == Value::Null))
            {
                return Err(PlanError::Invalid(
                    "Cannot PARTITION BY multiple columns including NULL".into(),
                ));
            }
            Some(Some(exprs))
        }
        None => None,
    };
    let mut star_keys = None;
    let mut partition_exprs = Vec::new();
    if let Some(Some(exprs)) = partition {
        partition_exprs = partition_expressions(&query, source, exprs)?;
        if is_select_star(&query) {
            star_keys = Some(star_partition(&mut query, source, exprs, &partition_exprs)?);
        }
    }
    let plan = logical_plan(&query, &sources).map_err(|e| match e {
        PlanError::NotFound {
            kind: "column",
            name,
        } if mentions_column(&query, &name) => {
            PlanError::Invalid(format!("WHERE column '{name}' cannot be resolved."))
        }
        other => other,
    })?;
    let mut limit = None;
    let mut body = &plan;
    if let LogicalPlan::Limit(l) = &plan {
        match l.get_fetch_type()? {
            FetchType::Literal(n) => limit = n,
            FetchType::UnsupportedExpr => {
                return Err(PlanError::Unsupported("LIMIT must be a number".into()))
            }
        }
        body = l.input.as_ref();
    }
    let mut ops = Vec::new();
    let pseudo = source.batch_schema().fields().len() - source.columns.len();
    let mut keys: Vec<bool> = source
        .columns
        .iter()
        .map(|c| c.key)
        .chain(std::iter::repeat_n(false, pseudo))
        .collect();
    lower(body, &mut ops, &mut keys)?;
    let output_schema = Arc::new(Schema::new(body.schema().as_arrow().fields().clone()));
    let mut window_plan = None;
    if let (Some(spec), Some((start, end))) = (window, &window_columns) {
        if real_source.window.is_none() {
            ops.insert(0, StreamOp::Window { spec });
        }
        let start = output_schema.index_of(start)?;
        let end = output_schema.index_of(end)?;
        // The bounds are part of the key, not key columns (also where the
        // projection copies them into the value, `WINDOWSTART AS ws`).
        keys[start] = false;
        keys[end] = false;
        if let Some(StreamOp::Project { exprs, .. }) = ops
            .iter()
            .rev()
            .find(|op| matches!(op, StreamOp::Project { .. }))
        {
            for (i, e) in exprs.iter().enumerate() {
                if let Expr::Column(c) = strip_alias(e) {
                    if c.name == WINDOWSTART || c.name == WINDOWEND {
                        if let Some(k) = keys.get_mut(i) {
                            *k = false;
                        }
                    }
                }
            }
        }
        window_plan = Some((spec, start, end));
    }
    let mut key_columns: Vec<usize> = keys
        .iter()
        .enumerate()
        .filter(|(_, k)| **k)
        .map(|(i, _)| i)
        .collect();
    // An aggregation's key columns are in GROUP BY order, as ksqlDB writes
    // them, whatever the projection's order.
    if let Some(StreamOp::Project {
        exprs,
        input_schema,
        ..
    }) = ops
        .iter()
        .skip_while(|op| !matches!(op, StreamOp::Aggregate { .. }))
        .find(|op| matches!(op, StreamOp::Project { .. }))
    {
        key_columns.sort_by_key(|&i| match exprs.get(i).map(strip_alias) {
            Some(Expr::Column(c)) => input_schema.index_of_column(c).unwrap_or(usize::MAX),
            _ => usize::MAX,
        });
    }
    let is_table = ops
        .iter()
        .any(|op| matches!(op, StreamOp::Aggregate { .. }));
    if is_table && source.value_format == Format::Kafka {
        return Err(PlanError::Invalid(format!(
            "Source(s) {} are using the 'KAFKA' value format. This format does not yet support GROUP BY.",
            source.name
        )));
    }
    if ops.iter().any(|op| matches!(op, StreamOp::Explode { .. })) {
        if source.kind == SourceKind::Table {
            return Err(PlanError::Invalid(
                "Table source is not supported with table functions".into(),
            ));
        }
        if is_table {
            return Err(PlanError::Invalid(
                "Table functions cannot be used with aggregations.".into(),
            ));
        }
    }
    if partition.is_none() && !is_table {
        check_key_projected_once(body, source)?;
    }
    if let Some(exprs) = partition {
        if is_table || source.kind == SourceKind::Table {
            return Err(PlanError::Invalid(
                "PARTITION BY is only supported on streams, without GROUP BY".into(),
            ));
        }
        key_columns = match (exprs, star_keys) {
            (None, _) => Vec::new(),
            (Some(_), Some(n)) => (0..n).collect(),
            (Some(exprs), None) => projected_keys(
                body,
                source,
                exprs,
                &partition_exprs,
                sink.unwrap_or("the result"),
            )?,
        };
    }
    Ok(StreamPlan {
        source: (*real_source).clone(),
        ops,
        output_schema,
        key_columns,
        is_table,
        limit,
        repartitioned: matches!(partition, Some(Some(_))),
        join: None,
        window: window_plan,
        emit_final: false,
        consolidate: false,
    })
}

/// Whether the WHERE clause of `query` names the column `name`.
fn mentions_column(query: &Query, name: &str) -> bool {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return false;
    };
    let Some(selection) = &select.selection else {
        return false;
    };
    let mut found = false;
    let _ = ast::visit_expressions(selection, |e| {
        if let ast::Expr::Identifier(i) = e {
            found |= i.value == name;
        }
        ControlFlow::<()>::Continue(())
    });
    found
}

/// ksqlDB refuses a projection that copies a key column twice: the copy
/// would be a value column holding the key.
fn check_key_projected_once(plan: &LogicalPlan, source: &SourceDef) -> Result<()> {
    let LogicalPlan::Projection(p) = plan else {
        return Ok(());
    };
    for key in source.key_columns() {
        let aliases: Vec<&str> = p
            .expr
            .iter()
            .zip(p.schema.fields())
            .filter(|(e, _)| matches!(strip_alias(e), Expr::Column(c) if c.name == key.name))
            .map(|(_, f)| f.name().as_str())
            .collect();
        if aliases.len() > 1 {
            return Err(key_projected_twice(&key.name, &aliases));
        }
    }
    Ok(())
}

fn is_select_star(query: &Query) -> bool {
    matches!(query.body.as_ref(), SetExpr::Select(s)
        if matches!(s.projection.as_slice(), [SelectItem::Wildcard(_)]))
}

/// Table functions belong in the SELECT list only.
pub(super) fn refuse_table_functions(exprs: &[Expr]) -> Result<()> {
    for e in exprs {
        let mut found = None;
        e.apply(|n| {
            if let Expr::ScalarFunction(f) = n {
                if TableFunc::from_name(f.func.name()).is_some() {
                    found = Some(f.func.name().to_uppercase());
                    return Ok(TreeNodeRecursion::Stop);
                }
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        if let Some(name) = found {
            return Err(PlanError::Invalid(format!(
                "Table function {name} can only be used in the SELECT list"
            )));
        }
    }
    Ok(())
}

/// Moves the table-function calls of a projection (`EXPLODE(x)`) into a
/// [`StreamOp::Explode`] before it: each call becomes a column the
/// projection reads. Returns the projection's expressions and input schema.
pub(super) fn split_table_functions(
    exprs: &[Expr],
    input_schema: &datafusion::common::DFSchemaRef,
    ops: &mut Vec<StreamOp>,
    keys: &mut Vec<bool>,
) -> Result<(Vec<Expr>, datafusion::common::DFSchemaRef)> {
    use datafusion::common::tree_node::Transformed;
    let mut calls: Vec<(TableFunc, Expr)> = Vec::new();
    let mut fields = Vec::new();
    let mut out = Vec::with_capacity(exprs.len());
    for e in exprs {
        let rewritten = e
            .clone()
            .transform_up(|node| {
                let Expr::ScalarFunction(f) = &node else {
                    return Ok(Transformed::no(node));
                };
                let Some(func) = TableFunc::from_name(f.func.name()) else {
                    return Ok(Transformed::no(node));
                };
                let [arg] = f.args.as_slice() else {
                    return Ok(Transformed::no(node));
                };
                let name = format!("__brook_udtf_{}", calls.len());
                let ty = datafusion::logical_expr::ExprSchemable::get_type(
                    &node,
                    input_schema.as_ref(),
                )?;
                fields.push(datafusion::arrow::datatypes::Field::new(&name, ty, true));
                calls.push((func, arg.clone()));
                Ok(Transformed::yes(Expr::Column(
                    datafusion::common::Column::from_name(name),
                )))
            })
            .map_err(PlanError::from)?
            .data;
        out.push(rewritten);
    }
    if calls.is_empty() {
        return Ok((out, Arc::clone(input_schema)));
    }
    if calls.iter().any(|(_, arg)| {
        arg.exists(|n| {
            Ok(matches!(n, Expr::ScalarFunction(f) if TableFunc::from_name(f.func.name()).is_some()))
        })
        .unwrap_or(false)
    }) {
        return Err(PlanError::Invalid("Table functions cannot be nested.".into()));
    }
    let extra =
        datafusion::common::DFSchema::from_unqualified_fields(fields.into(), Default::default())?;
    let mut output_schema = input_schema.as_ref().clone();
    output_schema.merge(&extra);
    let output_schema = Arc::new(output_schema);
    keys.extend(calls.iter().map(|_| false));
    ops.push(StreamOp::Explode {
        calls,
        input_schema: Arc::clone(input_schema),
        output_schema: Arc::clone(&output_schema),
    });
    Ok((out, output_schema))
}

/// `EMIT FINAL`: a windowed aggregation emits each window's result once,
/// when it closes.
pub fn make_emit_final(plan: &mut StreamPlan) -> Result<()> {
    let Some((spec, _, _)) = &mut plan.window else {
        return Err(PlanError::Invalid(
            "EMIT FINAL is only supported for windowed aggregations.".into(),
        ));
    };
    // Without a GRACE PERIOD, a final result comes when the window ends.
    if !spec.grace_given {
        spec.grace_ms = 0;
        let spec = *spec;
        for op in &mut plan.ops {
            if let StreamOp::Window { spec: s } = op {
                *s = spec;
            }
        }
    }
    plan.emit_final = true;
    Ok(())
}

/// `CREATE STREAM|TABLE name WITH (…) AS SELECT …`: the sink's definition
/// and the plan that fills it.
#[allow(clippy::too_many_arguments)]
pub fn plan_create_as_select(
    catalog: &Catalog,
    kind: SourceKind,
    name: &str,
    props: &Props,
    query: &Query,
    partition_by: Option<&[ast::Expr]>,
    query_id: &str,
    emit_final: bool,
) -> Result<(SourceDef, StreamPlan)> {
    check_props(props)?;
    let mut plan = plan_stream(catalog, query, partition_by, Some(name))?;
    if emit_final {
        make_emit_final(&mut plan)?;
    }
    if plan.limit.is_some() {
        return Err(PlanError::Invalid(
            "LIMIT is not supported in persistent queries".into(),
        ));
    }
    match (kind, plan.is_table || plan.source.kind == SourceKind::Table) {
        (SourceKind::Table, false) => {
            return Err(PlanError::Invalid(
                "Invalid result type. Your SELECT query produces a STREAM. Please use CREATE STREAM AS SELECT statement instead.".into(),
            ))
        }
        (SourceKind::Stream, true) => {
            return Err(PlanError::Invalid(
                "Invalid result type. Your SELECT query produces a TABLE. Please use CREATE TABLE AS SELECT statement instead.".into(),
            ))
        }
        _ => {}
    }
    let mut columns = Vec::with_capacity(plan.output_schema.fields().len());
    // A windowed aggregation's bounds go into the key, not the columns.
    let hidden = |i: usize| plan.window.is_some_and(|(_, a, b)| i == a || i == b);
    for (i, f) in plan.output_schema.fields().iter().enumerate() {
        // `PARTITION BY a, ROWTIME` names a key ROWTIME, as ksqlDB does.
        let several_keys = partition_by.is_some() && plan.key_columns.len() > 1;
        if reserved(f.name()) && !(several_keys && plan.key_columns.contains(&i)) && !hidden(i) {
            return Err(PlanError::Invalid(if is_alias(query, f.name()) {
                format!(
                    "`{}` is a reserved column name. You cannot use it as an alias for a column.",
                    f.name()
                )
            } else {
                format!(
                    "Reserved column name in select: `{}`. Please remove or alias the column.",
                    f.name()
                )
            }));
        }
        if *f.data_type() == DataType::Null {
            return Err(PlanError::Type(
                "Can't infer a type of null. Please explicitly cast it to a required type, e.g. CAST(null AS VARCHAR).".into(),
            ));
        }
        columns.push(Column::new(
            f.name().clone(),
            SqlType::from_arrow(f.data_type())?,
            plan.key_columns.contains(&i),
        ));
    }
    let (timestamp_column, timestamp_format) = timestamp_prop(props, &columns)?;
    let source_keys: Vec<&str> = plan.source.key_columns().map(|c| c.name.as_str()).collect();
    let expected_keys = match plan.ops.iter().find_map(|op| match op {
        StreamOp::Aggregate { group, .. } => Some(group.len()),
        _ => None,
    }) {
        Some(n) if plan.window.is_some() => n.saturating_sub(2),
        Some(n) => n,
        None if partition_by.is_some() => plan.key_columns.len(),
        None => source_keys.len(),
    };
    if plan.key_columns.len() < expected_keys {
        let group: Vec<String> = plan
            .ops
            .iter()
            .find_map(|op| match op {
                StreamOp::Aggregate { group, .. } => Some(group.iter().map(ksql_text).collect()),
                _ => None,
            })
            .unwrap_or_default();
        // Only the grouping expressions the projection leaves out.
        let kept: Vec<usize> = plan
            .ops
            .iter()
            .skip_while(|op| !matches!(op, StreamOp::Aggregate { .. }))
            .find_map(|op| match op {
                StreamOp::Project {
                    exprs,
                    input_schema,
                    ..
                } => Some(
                    exprs
                        .iter()
                        .filter_map(|e| match strip_alias(e) {
                            Expr::Column(c) => input_schema.index_of_column(c).ok(),
                            _ => None,
                        })
                        .collect(),
                ),
                _ => None,
            })
            .unwrap_or_default();
        let missing: Vec<String> = group
            .iter()
            .enumerate()
            .filter(|(i, _)| !kept.contains(i))
            .map(|(_, g)| g.clone())
            .collect();
        let (what, names) = if plan.is_table {
            (
                "grouping expression",
                if missing.is_empty() { group } else { missing },
            )
        } else {
            (
                "key column",
                source_keys.iter().map(|s| s.to_string()).collect(),
            )
        };
        let plural = if names.len() > 1 { "s" } else { "" };
        let listed = and_list(&names);
        return Err(PlanError::Invalid(format!(
            "Key missing from projection (ie, SELECT). The query used to build `{name}` must include the {what}{plural} {listed} in its projection (eg, SELECT {}...).",
            names.join(", ")
        )));
    }
    // Key columns first (in key order), as in every Brook source; the sink
    // maps columns by name.
    let mut sorted: Vec<Column> = plan
        .key_columns
        .iter()
        .map(|i| columns[*i].clone())
        .collect();
    sorted.extend(
        columns
            .iter()
            .enumerate()
            .filter(|(i, c)| !c.key && !hidden(*i))
            .map(|(_, c)| c.clone()),
    );
    let source_key_format = match plan.source.key_format {
        Format::None => plan.source.keyless_format.unwrap_or(Format::None),
        other => other,
    };
    let (key_format, value_format) =
        formats(props, source_key_format, Some(plan.source.value_format))?;
    if plan.key_columns.is_empty() && prop(props, "KEY_FORMAT").is_some() {
        return Err(PlanError::Invalid(
            "Key format specified for stream without key columns.".into(),
        ));
    }
    let key_format = if plan.key_columns.is_empty() {
        Format::None
    } else if key_format == Format::None {
        Format::Kafka
    } else {
        key_format
    };
    check_formats(key_format, value_format, &sorted)?;
    if sorted.iter().all(|c| c.key) {
        return Err(PlanError::Invalid(
            "The projection contains no value columns.".into(),
        ));
    }
    let unwrapped = unwrapped_prop(props, &sorted)?;
    let def = SourceDef {
        name: name.to_string(),
        kind,
        columns: sorted,
        topic: prop(props, "KAFKA_TOPIC").map_or_else(|| name.to_string(), PropValue::as_text),
        partitions: partitions_prop(props)?.unwrap_or(plan.source.partitions),
        key_format,
        value_format,
        timestamp_column,
        timestamp_format,
        query_id: Some(query_id.to_string()),
        retention_ms: positive_prop(props, "RETENTION_MS")?.map(|n| n as i64),
        retention_bytes: positive_prop(props, "RETENTION_BYTES")?,
        keyless_format: None,
        unwrapped,
        read_only: false,
        window: plan.window.map(|(spec, _, _)| spec),
    };
    if def.topic == plan.source.topic {
        return Err(PlanError::Invalid(format!(
            "The sink topic '{}' of {name} is the topic of its source {}: a query cannot read its own output.",
            def.topic, plan.source.name
        )));
    }
    Ok((def, plan))
}

/// Whether the query's projection gives some expression the alias `name`.
fn is_alias(query: &Query, name: &str) -> bool {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return false;
    };
    select
        .projection
        .iter()
        .any(|item| matches!(item, SelectItem::ExprWithAlias { alias, .. } if alias.value == name))
}
