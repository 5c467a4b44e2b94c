//! `WINDOW TUMBLING|HOPPING|SESSION (…)`: taken out of the query, and its
//! bounds projected.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{self, Ident, Query, SelectItem, SetExpr, Value};

use super::query::quoted;
use crate::catalog::{WindowKind, WindowSpec, WINDOWEND, WINDOWSTART};
use crate::error::{PlanError, Result};

/// The first window bound (`WINDOWSTART`, `WINDOWEND`) named in `node`.
fn window_bound_in<V: ast::Visit>(node: &V) -> Option<String> {
    let mut found = None;
    let _ = ast::visit_expressions(node, |x| {
        if let ast::Expr::Identifier(i) = x {
            let upper = i.value.to_ascii_uppercase();
            if upper == WINDOWSTART || upper == WINDOWEND {
                found = Some(upper);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    found
}

/// Removes a `WINDOW …` clause (kept by the parser as a table hint) from
/// the query.
pub(super) fn take_window(query: &mut Query) -> Result<Option<WindowSpec>> {
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Ok(None);
    };
    let Some(from) = select.from.first_mut() else {
        return Ok(None);
    };
    let ast::TableFactor::Table { with_hints, .. } = &mut from.relation else {
        return Ok(None);
    };
    let Some(at) = with_hints.iter().position(
        |h| matches!(h, ast::Expr::Function(f) if f.name.to_string() == crate::parser::WINDOW),
    ) else {
        return Ok(None);
    };
    let hint = with_hints.remove(at);
    let ast::Expr::Function(f) = hint else {
        return Ok(None);
    };
    let ast::FunctionArguments::List(l) = f.args else {
        return Err(PlanError::Internal("a window without arguments".into()));
    };
    let mut kind = String::new();
    let mut ms = Vec::new();
    for a in &l.args {
        match a {
            ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(ast::Expr::Value(v))) => {
                match &v.value {
                    Value::SingleQuotedString(k) => kind = k.clone(),
                    Value::Number(n, _) => ms.push(n.parse::<i64>().unwrap_or(-1)),
                    _ => {}
                }
            }
            ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(ast::Expr::UnaryOp {
                ..
            })) => ms.push(-1),
            _ => {}
        }
    }
    let [size, advance, grace, retention] = ms.as_slice() else {
        return Err(PlanError::Internal("a malformed window".into()));
    };
    let kind = match kind.as_str() {
        "TUMBLING" => WindowKind::Tumbling,
        "HOPPING" => WindowKind::Hopping,
        _ => WindowKind::Session,
    };
    if kind == WindowKind::Hopping && *advance > *size {
        return Err(PlanError::Invalid(format!(
            "Window advance must be no larger than the window size: ADVANCE BY {advance} ms, SIZE {size} ms"
        )));
    }
    Ok(Some(WindowSpec {
        kind,
        size_ms: *size,
        advance_ms: if kind == WindowKind::Hopping {
            *advance
        } else {
            *size
        },
        // ksqlDB's default grace period is 24 hours.
        grace_ms: if *grace >= 0 {
            *grace
        } else {
            24 * 60 * 60 * 1000
        },
        retention_ms: (*retention >= 0).then_some(*retention),
        grace_given: *grace >= 0,
    }))
}

/// Checks where a windowed aggregation names the window bounds (only in
/// the SELECT, outside aggregates), groups by them and projects them
/// (reusing an unaliased `WINDOWSTART` item); the names of the two output
/// columns holding the bounds.
pub(super) fn prepare_window(query: &mut Query, _spec: WindowSpec) -> Result<(String, String)> {
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err(PlanError::Unsupported("only SELECT can be windowed".into()));
    };
    let no_group_by = || {
        // ksqlDB's words: the SELECT's columns are not grouped.
        let items: Vec<String> = select
            .projection
            .iter()
            .filter_map(|item| match item {
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }
                    if !matches!(e, ast::Expr::Function(_)) =>
                {
                    Some(crate::ksql_ast::ksql_display(e))
                }
                _ => None,
            })
            .collect();
        PlanError::Invalid(format!(
            "Non-aggregate SELECT expression(s) not part of GROUP BY: {}\nEither add the column(s) to the GROUP BY or remove them from the SELECT.",
            items.join(", ")
        ))
    };
    let ast::GroupByExpr::Expressions(groups, _) = &select.group_by else {
        return Err(no_group_by());
    };
    if groups.is_empty() {
        return Err(no_group_by());
    }
    let ast::GroupByExpr::Expressions(groups, _) = &mut select.group_by else {
        return Err(PlanError::Internal("GROUP BY changed".into()));
    };
    let only_select = |name: String| {
        PlanError::Invalid(format!(
            "Window bounds column {name} can only be used in the SELECT clause of windowed aggregations"
        ))
    };
    for g in groups.iter() {
        if let Some(n) = window_bound_in(g) {
            return Err(only_select(n));
        }
    }
    if let Some(n) = select.having.as_ref().and_then(window_bound_in) {
        return Err(only_select(n));
    }
    if let Some(n) = select.selection.as_ref().and_then(window_bound_in) {
        return Err(PlanError::Invalid(format!(
            "Error in WHERE expression: Unknown column {n}."
        )));
    }
    // Inside an aggregate call.
    let mut inside = None;
    let _ = ast::visit_expressions(&select.projection, |x| {
        if let ast::Expr::Function(f) = x {
            if crate::functions::lookup(&f.name.to_string())
                .is_some_and(|i| i.kind == crate::functions::FunctionKind::Aggregate)
            {
                inside = inside.clone().or_else(|| window_bound_in(&f.args));
            }
        }
        ControlFlow::<()>::Continue(())
    });
    if let Some(n) = inside {
        return Err(only_select(n));
    }
    groups.push(ast::Expr::Identifier(Ident::new(WINDOWSTART)));
    groups.push(ast::Expr::Identifier(Ident::new(WINDOWEND)));
    Ok(project_window_bounds(select))
}

/// Adds `WINDOWSTART` and `WINDOWEND` to the projection (unless it has them
/// unaliased); the names of the two output columns.
pub(super) fn project_window_bounds(select: &mut ast::Select) -> (String, String) {
    for bound in [WINDOWSTART, WINDOWEND] {
        let projected = select.projection.iter().any(|item| {
            matches!(item, SelectItem::UnnamedExpr(ast::Expr::Identifier(i))
                if i.value.eq_ignore_ascii_case(bound))
        });
        if !projected {
            select.projection.push(SelectItem::ExprWithAlias {
                expr: ast::Expr::Identifier(Ident::new(bound)),
                alias: quoted(bound),
            });
        }
    }
    (WINDOWSTART.to_string(), WINDOWEND.to_string())
}
