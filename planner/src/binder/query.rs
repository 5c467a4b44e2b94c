//! Planning a query with DataFusion: placeholder tables for the sources,
//! ksqlDB's rewrites of the projection, and its error messages.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::empty::EmptyTable;
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{DataFusionError, ScalarValue, SchemaError, TableReference};
use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    self, visit_relations, Ident, Query, SelectItem, SelectItemQualifiedWildcardKind, SetExpr,
};

use super::partition::struct_field;
use super::select::check_group_by;
use crate::catalog::{Catalog, SourceDef};
use crate::error::{PlanError, Result};
use crate::parser::object_name;
use crate::types::SqlType;

/// The sources a query reads, in order of appearance.
pub(super) fn referenced_sources<'c>(
    catalog: &'c Catalog,
    query: &Query,
) -> Result<Vec<&'c SourceDef>> {
    let mut names: Vec<String> = Vec::new();
    let mut err = None;
    let _ = visit_relations(query, |name| {
        match object_name(name) {
            Ok(n) => {
                if !names.contains(&n) {
                    names.push(n)
                }
            }
            Err(e) => err = Some(e),
        }
        ControlFlow::<()>::Continue(())
    });
    if let Some(e) = err {
        return Err(e);
    }
    names.iter().map(|n| catalog.source(n)).collect()
}

/// The planning session every statement starts from: its settings and
/// every function registered, built once (registering them all took most
/// of a pull query's time).
static PLANNING_STATE: std::sync::LazyLock<datafusion::execution::SessionState> =
    std::sync::LazyLock::new(|| {
        let mut cfg = SessionConfig::new();
        cfg.options_mut().sql_parser.enable_ident_normalization = false;
        cfg.options_mut().sql_parser.map_string_types_to_utf8view = false;
        let ctx = SessionContext::new_with_config(cfg);
        crate::functions::register(&ctx);
        ctx.state()
    });

fn planning_context(sources: &[&SourceDef]) -> Result<SessionContext> {
    use datafusion::catalog::{
        CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList,
        MemorySchemaProvider,
    };
    // A catalog of its own: a clone of the state shares the template's,
    // and with it every statement's tables.
    let mut state = PLANNING_STATE.clone();
    let names = &state.config().options().catalog;
    let schema = MemoryCatalogProvider::new();
    schema.register_schema(&names.default_schema, Arc::new(MemorySchemaProvider::new()))?;
    let catalogs = MemoryCatalogProviderList::new();
    catalogs.register_catalog(names.default_catalog.clone(), Arc::new(schema));
    state.register_catalog_list(Arc::new(catalogs));
    let ctx = SessionContext::new_with_state(state);
    for s in sources {
        ctx.register_table(
            TableReference::bare(s.name.as_str()),
            Arc::new(EmptyTable::new(s.batch_schema())),
        )?;
    }
    Ok(ctx)
}

/// ksqlDB's projection rules: `*` is the declared columns (no
/// pseudo-columns), and an unnamed expression is called `KSQL_COL_<n>`.
fn rewrite_projection(query: &mut Query, sources: &[&SourceDef]) -> Result<()> {
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err(PlanError::Unsupported(
            "only SELECT queries are supported here".into(),
        ));
    };
    let mut aliases: Vec<(String, String)> = Vec::new(); // alias → source name
    for twj in &select.from {
        if let ast::TableFactor::Table { name, alias, .. } = &twj.relation {
            let source = object_name(name)?;
            if let Some(a) = alias {
                aliases.push((a.name.value.clone(), source.clone()));
            }
            aliases.push((source.clone(), source));
        }
    }
    let mut generated = 0usize;
    let mut out = Vec::with_capacity(select.projection.len());
    for item in std::mem::take(&mut select.projection) {
        match item {
            SelectItem::Wildcard(_) => {
                for s in sources {
                    out.extend(
                        s.columns.iter().map(|c| {
                            SelectItem::UnnamedExpr(ast::Expr::Identifier(quoted(&c.name)))
                        }),
                    );
                }
            }
            SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(name), _) => {
                let qualifier = object_name(&name)?;
                let source = aliases
                    .iter()
                    .find(|(a, _)| *a == qualifier)
                    .and_then(|(_, s)| sources.iter().find(|d| d.name == *s))
                    .ok_or_else(|| PlanError::NotFound {
                        kind: "source",
                        name: qualifier.clone(),
                    })?;
                out.extend(source.columns.iter().map(|c| {
                    SelectItem::UnnamedExpr(ast::Expr::CompoundIdentifier(vec![
                        quoted(&qualifier),
                        quoted(&c.name),
                    ]))
                }));
            }
            SelectItem::UnnamedExpr(expr) => match expr {
                ast::Expr::Identifier(_) | ast::Expr::CompoundIdentifier(_) => {
                    out.push(SelectItem::UnnamedExpr(expr))
                }
                other => {
                    // `s->f` is named after the field, as in ksqlDB.
                    let alias = match struct_field(&other) {
                        Some(field) => field,
                        None => {
                            generated += 1;
                            format!("KSQL_COL_{}", generated - 1)
                        }
                    };
                    out.push(SelectItem::ExprWithAlias {
                        expr: other,
                        alias: quoted(&alias),
                    });
                }
            },
            other => out.push(other),
        }
    }
    select.projection = out;
    Ok(())
}

pub(super) fn quoted(name: &str) -> Ident {
    Ident::with_quote('"', name)
}

/// ksqlDB's literal typing: an integer literal that fits in 32 bits is an
/// INT (DataFusion makes every integer literal a BIGINT). Only filters and
/// projections are rewritten: other nodes' expressions are referred to by
/// their generated names.
fn int_literals(plan: LogicalPlan) -> Result<LogicalPlan> {
    use datafusion::common::tree_node::Transformed;
    use datafusion::logical_expr::Operator;
    let out = plan.transform_up(|node| {
        if !matches!(node, LogicalPlan::Projection(_) | LogicalPlan::Filter(_)) {
            return Ok(Transformed::no(node));
        }
        let node = node.map_expressions(|e| {
            e.transform_up(|e| match e {
                Expr::Literal(ScalarValue::Int64(Some(v)), meta) if i32::try_from(v).is_ok() => Ok(
                    Transformed::yes(Expr::Literal(ScalarValue::Int32(Some(v as i32)), meta)),
                ),
                // ksqlDB compares like Java: with a NULL side the result is
                // false, not NULL.
                Expr::BinaryExpr(b)
                    if matches!(
                        b.op,
                        Operator::Eq
                            | Operator::NotEq
                            | Operator::Lt
                            | Operator::LtEq
                            | Operator::Gt
                            | Operator::GtEq
                    ) =>
                {
                    let both_literal = matches!(*b.left, Expr::Literal(..))
                        && matches!(*b.right, Expr::Literal(..));
                    if both_literal {
                        Ok(Transformed::no(Expr::BinaryExpr(b)))
                    } else {
                        Ok(Transformed::yes(Expr::IsTrue(Box::new(Expr::BinaryExpr(
                            b,
                        )))))
                    }
                }
                other => Ok(Transformed::no(other)),
            })
        })?;
        if node.transformed {
            Ok(Transformed::yes(node.data.recompute_schema()?))
        } else {
            Ok(node)
        }
    })?;
    Ok(out.data)
}

/// Plans a query with DataFusion: logical plan, analyzed.
pub(super) fn logical_plan(query: &Query, sources: &[&SourceDef]) -> Result<LogicalPlan> {
    let mut query = query.clone();
    crate::ksql_ast::rewrite_ksql(&mut query)?;
    rewrite_projection(&mut query, sources)?;
    let ctx = planning_context(sources)?;
    let state = ctx.state();
    check_group_by(&query, &state)?;
    let stmt = DFStatement::Statement(Box::new(ast::Statement::Query(Box::new(query.clone()))));
    // Resolving placeholder tables does no I/O: the future completes at once.
    let plan = futures::executor::block_on(state.statement_to_plan(stmt))
        .map_err(|e| where_error(&query, &e).unwrap_or_else(|| plan_error(e)))?;
    let plan = int_literals(plan)?;
    check_comparisons(&plan)?;
    state
        .analyzer()
        .execute_and_check(plan, state.config_options(), |_, _| {})
        .map_err(|e| where_error(&query, &e).unwrap_or_else(|| plan_error(e)))
}

/// ksqlDB's words for a WHERE clause that is not a boolean, or whose
/// arithmetic mixes types that do not add up.
fn where_error(query: &Query, e: &DataFusionError) -> Option<PlanError> {
    use crate::ksql_ast::{ksql_display, literal_type};
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let predicate = select.selection.as_ref()?;
    let text = e.to_string();
    if text.contains("Cannot create filter with non-boolean predicate") {
        let df_type = text.rsplit("returning ").next()?.trim();
        let ty = literal_type(predicate).map(str::to_string).or_else(|| {
            df_type
                .parse::<DataType>()
                .ok()
                .and_then(|t| SqlType::from_arrow(&t).ok())
                .map(|t| t.to_string())
        })?;
        return Some(PlanError::Type(format!(
            "Type error in WHERE expression: Should evaluate to boolean but is {} ({ty}) instead.",
            ksql_display(predicate)
        )));
    }
    if text.contains("Cannot coerce arithmetic expression") {
        // The first arithmetic between two literals of unlike types.
        let mut found = None;
        let _ = ast::visit_expressions(predicate, |e| {
            if let ast::Expr::BinaryOp { left, op, right } = e {
                let arithmetic = matches!(
                    op,
                    ast::BinaryOperator::Plus
                        | ast::BinaryOperator::Minus
                        | ast::BinaryOperator::Multiply
                        | ast::BinaryOperator::Divide
                        | ast::BinaryOperator::Modulo
                );
                if let (true, Some(l), Some(r)) =
                    (arithmetic, literal_type(left), literal_type(right))
                {
                    found = Some((ksql_display(e), l, r));
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        });
        let (expr, l, r) = found?;
        return Some(PlanError::Type(format!(
            "Error in WHERE expression: Error processing expression: {expr}. Unsupported arithmetic types. {l} {r}"
        )));
    }
    None
}

/// ksqlDB refuses comparisons between unlike types (a number and a string)
/// and with a NULL literal, where DataFusion would coerce.
fn check_comparisons(plan: &LogicalPlan) -> Result<()> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::logical_expr::{BinaryExpr, ExprSchemable, Operator};
    let mut error = None;
    plan.apply(|node| {
        let Some(input) = node.inputs().first().map(|i| Arc::clone(i.schema())) else {
            return Ok(TreeNodeRecursion::Continue);
        };
        let context = match node {
            LogicalPlan::Filter(f) if matches!(f.input.as_ref(), LogicalPlan::Aggregate(_)) => {
                "Error in HAVING expression: "
            }
            LogicalPlan::Filter(_) => "Error in WHERE expression: ",
            _ => "",
        };
        for e in node.expressions() {
            e.apply(|e| {
                let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else {
                    return Ok(TreeNodeRecursion::Continue);
                };
                let (sym, name) = match op {
                    Operator::Eq => ("=", "EQUAL"),
                    Operator::NotEq => ("<>", "NOT_EQUAL"),
                    Operator::Lt => ("<", "LESS_THAN"),
                    Operator::LtEq => ("<=", "LESS_THAN_OR_EQUAL"),
                    Operator::Gt => (">", "GREATER_THAN"),
                    Operator::GtEq => (">=", "GREATER_THAN_OR_EQUAL"),
                    _ => return Ok(TreeNodeRecursion::Continue),
                };
                let is_null = |e: &Expr| matches!(e, Expr::Literal(v, _) if v.is_null());
                if is_null(left) || is_null(right) {
                    error = Some(PlanError::Invalid(format!(
                        "{context}Comparison with NULL not supported: {} {sym} {}",
                        ksql_text(left),
                        ksql_text(right)
                    )));
                    return Ok(TreeNodeRecursion::Stop);
                }
                let (Ok(l), Ok(r)) = (
                    left.get_type(input.as_ref()),
                    right.get_type(input.as_ref()),
                ) else {
                    return Ok(TreeNodeRecursion::Continue);
                };
                let class = |t: &DataType| {
                    if t.is_numeric() {
                        1
                    } else if matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
                    {
                        2
                    } else if *t == DataType::Boolean {
                        3
                    } else {
                        0
                    }
                };
                let (cl, cr) = (class(&l), class(&r));
                if cl != 0 && cr != 0 && cl != cr {
                    let ty = |t: &DataType| {
                        SqlType::from_arrow(t).map_or_else(|_| t.to_string(), |t| t.to_string())
                    };
                    error = Some(PlanError::Type(format!(
                        "{context}Cannot compare {} ({}) to {} ({}) with {name}.",
                        ksql_text(left),
                        ty(&l),
                        ksql_text(right),
                        ty(&r)
                    )));
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })?;
            if error.is_some() {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    error.map_or(Ok(()), Err)
}

/// An expression as ksqlDB prints it in messages.
pub(super) fn ksql_text(e: &Expr) -> String {
    match e {
        // An aggregate's output column, `sum(S.V)`: ksqlDB writes `SUM(V)`.
        Expr::Column(c) if c.name.contains('(') => {
            let (name, args) = c.name.split_at(c.name.find('(').unwrap_or(0));
            let mut out = name.to_ascii_uppercase();
            let mut word = String::new();
            for ch in args.chars() {
                if ch.is_ascii_alphanumeric() || ch == '_' {
                    word.push(ch);
                } else if ch == '.' {
                    word.clear(); // a qualifier
                } else {
                    out.push_str(&word);
                    word.clear();
                    out.push(ch);
                }
            }
            out.push_str(&word);
            out
        }
        Expr::Column(c) => c.name.clone(),
        Expr::Literal(v, _) if v.is_null() => "NULL".into(),
        Expr::Literal(ScalarValue::Utf8(Some(s)), _) => format!("'{s}'"),
        Expr::Literal(v, _) => v.to_string(),
        other => other.to_string(),
    }
}

/// DataFusion's planning errors in Brook's words where we know them.
fn plan_error(e: DataFusionError) -> PlanError {
    // A function's own refusal of its argument types arrives wrapped in
    // DataFusion's coercion message: keep just the function's words.
    let text = e.to_string();
    if let Some(inner) = text
        .split("user-defined coercion failed with: Error during planning: ")
        .nth(1)
    {
        let inner = inner.split(". No function matches").next().unwrap_or(inner);
        let inner = inner.strip_suffix('.').unwrap_or(inner);
        return PlanError::Invalid(format!("{inner}."));
    }
    match e.find_root() {
        DataFusionError::SchemaError(inner, _) => match inner.as_ref() {
            SchemaError::FieldNotFound { field, .. } => PlanError::NotFound {
                kind: "column",
                name: field.name.clone(),
            },
            SchemaError::AmbiguousReference { field } => {
                PlanError::Invalid(format!("column reference \"{}\" is ambiguous", field.name))
            }
            _ => PlanError::DataFusion(e),
        },
        DataFusionError::Plan(msg) => {
            if let Some(name) = msg
                .strip_prefix("Invalid function '")
                .and_then(|m| m.split('\'').next())
            {
                PlanError::Invalid(format!(
                    "Can't find any functions with the name '{}'",
                    name.to_uppercase()
                ))
            } else if let Some(column) = msg
                .split("column \"")
                .nth(1)
                .and_then(|m| m.split('"').next())
                .filter(|_| msg.contains("must appear in the GROUP BY clause"))
            {
                let column = column.rsplit('.').next().unwrap_or(column);
                PlanError::Invalid(format!(
                    "Non-aggregate SELECT expression(s) not part of GROUP BY: {column}\nEither add the column(s) to the GROUP BY or remove them from the SELECT."
                ))
            } else {
                PlanError::Invalid(msg.clone())
            }
        }
        _ => PlanError::DataFusion(e),
    }
}

/// An expression with its column names qualified by the source, as
/// ksqlDB prints PARTITION BY expressions in messages.
pub(super) fn qualified_text(e: &ast::Expr, source: &str) -> String {
    let mut e = e.clone();
    let _ = ast::visit_expressions_mut(&mut e, |e| {
        if let ast::Expr::Identifier(i) = e {
            *e = ast::Expr::CompoundIdentifier(vec![Ident::new(source), i.clone()]);
        }
        ControlFlow::<()>::Continue(())
    });
    e.to_string()
}

/// ksqlDB's casts: refuses collection casts ksqlDB refuses (`context`
/// prefixes the message, as ksqlDB's does), and routes casts of
/// collections to STRING through ksqlDB's text form.
pub(super) fn ksql_casts(
    exprs: Vec<Expr>,
    schema: &datafusion::common::DFSchemaRef,
    context: &str,
) -> Result<Vec<Expr>> {
    use crate::functions::cast;
    use datafusion::common::tree_node::Transformed;
    use datafusion::logical_expr::ExprSchemable;
    let is_collection = |t: &DataType| {
        matches!(
            t,
            DataType::List(_) | DataType::Map(..) | DataType::Struct(_)
        )
    };
    exprs
        .into_iter()
        .map(|e| {
            e.transform_up(|node| match &node {
                Expr::ScalarFunction(f) if f.func.name() == cast::NAME => {
                    let arg_type = f.args[0].get_type(schema.as_ref())?;
                    if arg_type == DataType::Null {
                        return Ok(Transformed::no(node));
                    }
                    let from = SqlType::from_arrow(&arg_type);
                    let to = SqlType::from_arrow(&node.get_type(schema.as_ref())?);
                    if let (Ok(from), Ok(to)) = (from, to) {
                        if let Some(why) = cast::refusal(&from, &to) {
                            return Err(DataFusionError::Plan(format!("{context}{why}")));
                        }
                    }
                    Ok(Transformed::no(node))
                }
                Expr::BinaryExpr(b) if is_ordering(b.op) => {
                    let lt = b.left.get_type(schema.as_ref())?;
                    let rt = b.right.get_type(schema.as_ref())?;
                    if is_collection(&lt) || is_collection(&rt) {
                        let name = |t: &DataType| {
                            SqlType::from_arrow(t).map_or_else(|_| t.to_string(), |t| t.quoted())
                        };
                        return Err(DataFusionError::Plan(format!(
                            "Cannot compare {} ({}) to {} ({}) with {}.",
                            ksql_text(&b.left),
                            name(&lt),
                            ksql_text(&b.right),
                            name(&rt),
                            comparison_name(b.op)
                        )));
                    }
                    Ok(Transformed::no(node))
                }
                Expr::Cast(c)
                    if c.field.data_type() == &DataType::Utf8
                        && is_collection(&c.expr.get_type(schema.as_ref())?) =>
                {
                    let call = Expr::ScalarFunction(
                        datafusion::logical_expr::expr::ScalarFunction::new_udf(
                            Arc::new(cast::udf()),
                            vec![
                                (*c.expr).clone(),
                                Expr::Literal(ScalarValue::Utf8(Some("STRING".into())), None),
                            ],
                        ),
                    );
                    Ok(Transformed::yes(call))
                }
                _ => Ok(Transformed::no(node)),
            })
            .map(|t| t.data)
            .map_err(plan_error)
        })
        .collect()
}

/// `<`, `<=`, `>`, `>=`: comparisons collections do not support.
fn is_ordering(op: datafusion::logical_expr::Operator) -> bool {
    use datafusion::logical_expr::Operator;
    matches!(
        op,
        Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq
    )
}

/// ksqlDB's name of a comparison operator.
fn comparison_name(op: datafusion::logical_expr::Operator) -> &'static str {
    use datafusion::logical_expr::Operator;
    match op {
        Operator::Lt => "LESS_THAN",
        Operator::LtEq => "LESS_THAN_OR_EQUAL",
        Operator::Gt => "GREATER_THAN",
        Operator::GtEq => "GREATER_THAN_OR_EQUAL",
        Operator::Eq => "EQUAL",
        Operator::NotEq => "NOT_EQUAL",
        _ => "COMPARISON",
    }
}
