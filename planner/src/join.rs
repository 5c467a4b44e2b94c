//! Joins, planned as a single-source query over a synthetic source.
//!
//! `SELECT … FROM l [AS a] JOIN r [AS b] [WITHIN …] ON e1 = e2 …` is read
//! the way ksqlDB reads it: every column of the two sources is renamed
//! `<ALIAS>_<COLUMN>` (its pseudo-columns too), and the rest of the query
//! is planned, by the ordinary single-source path, over a synthetic source
//! holding those columns. The [`JoinSpec`] says how the executor builds
//! that source's rows from the two inputs.
//!
//! Naming follows ksqlDB: `a.x` in a projection is called `X` when no
//! other source has a column X, `A_X` otherwise; `*` is every column of
//! both sides (left first, each side's key columns first) under its
//! prefixed name. The result's key is the left join column when it is
//! projected, else the right one; a FULL join, or a join on expressions,
//! gets a synthetic `ROWKEY` key holding the join value. A foreign-key
//! table-table join (the left side on any expression, the right on its
//! primary key; INNER or LEFT) is keyed by the left table's primary key.

use std::ops::ControlFlow;

use datafusion::logical_expr::{ExprSchemable, LogicalPlan};
use datafusion::sql::sqlparser::ast::{
    self, visit_expressions_mut, Expr as AstExpr, Ident, JoinConstraint, JoinOperator, ObjectName,
    Query, SelectItem, SetExpr, TableFactor, TableWithJoins,
};

use crate::catalog::{Catalog, Column, SourceDef, SourceKind, ROWOFFSET, ROWPARTITION, ROWTIME};
use crate::error::{PlanError, Result};
use crate::ksql_ast::ksql_display;
use crate::parser::object_name;
use crate::plan::{JoinKind, JoinSide, JoinSpec, JoinWindow};
use crate::types::SqlType;

/// The name of the synthetic source a join query is planned over.
pub const JOINED: &str = "__JOINED";

/// The synthetic key column of FULL joins and joins on expressions.
pub const ROWKEY: &str = "ROWKEY";

/// A join query made single-source.
pub struct Prepared {
    /// How the executor joins.
    pub spec: JoinSpec,
    /// The synthetic source, with both sides' join columns marked as key
    /// candidates (the projection decides which one is the key).
    pub source: SourceDef,
    /// The query over [`JOINED`].
    pub query: Query,
    /// The columns that may become the result's key, in preference
    /// order, each as (column of the synthetic source, how ksqlDB names it
    /// in messages: `L.A`).
    pub key_candidates: Vec<(String, String)>,
    inputs: Vec<Input>,
}

impl Prepared {
    /// Rewrites expressions written against the joined sources (`l.a`,
    /// `a`) to the synthetic source's columns (PARTITION BY's).
    pub fn rename(&self, exprs: &mut [AstExpr]) -> Result<()> {
        for e in exprs {
            normalize_access(e, &self.inputs);
            prefix_columns(e, &self.inputs)?;
        }
        Ok(())
    }
}

/// `a.x[1]` arrives as `a` then `.x`, `[1]`: make it `a.x` then `[1]`
/// when `a` is a source's alias.
fn normalize_access<V: ast::VisitMut>(node: &mut V, inputs: &[Input]) {
    let _ = visit_expressions_mut(node, |x| {
        // `i.user` arrives as a call of the function USER.
        if let AstExpr::Function(f) = x {
            if let (ast::FunctionArguments::None, [q, c]) = (&f.args, f.name.0.as_slice()) {
                if let (Some(q), Some(c)) = (q.as_ident(), c.as_ident()) {
                    if inputs.iter().any(|i| i.alias == q.value) {
                        *x = AstExpr::CompoundIdentifier(vec![q.clone(), c.clone()]);
                        return ControlFlow::Continue(());
                    }
                }
            }
        }
        if let AstExpr::CompoundFieldAccess { root, access_chain } = x {
            if let (
                AstExpr::Identifier(alias),
                Some(ast::AccessExpr::Dot(AstExpr::Identifier(col))),
            ) = (root.as_ref(), access_chain.first())
            {
                if inputs.iter().any(|i| i.alias == alias.value) {
                    let column = AstExpr::CompoundIdentifier(vec![alias.clone(), col.clone()]);
                    let rest = access_chain[1..].to_vec();
                    *x = if rest.is_empty() {
                        column
                    } else {
                        AstExpr::CompoundFieldAccess {
                            root: Box::new(column),
                            access_chain: rest,
                        }
                    };
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

struct Input {
    def: SourceDef,
    alias: String,
}

impl Input {
    /// Declared columns then pseudo-columns, as (name, type, is key).
    fn columns(&self) -> Vec<(String, SqlType, bool)> {
        let mut cols: Vec<(String, SqlType, bool)> = self
            .def
            .key_columns()
            .chain(self.def.columns.iter().filter(|c| !c.key))
            .map(|c| (c.name.clone(), c.ty.clone(), c.key))
            .collect();
        cols.push((ROWTIME.into(), SqlType::Bigint, false));
        cols.push((ROWPARTITION.into(), SqlType::Int, false));
        cols.push((ROWOFFSET.into(), SqlType::Bigint, false));
        cols
    }

    fn has(&self, column: &str) -> bool {
        self.def.columns.iter().any(|c| c.name == column)
            || [ROWTIME, ROWPARTITION, ROWOFFSET].contains(&column)
    }

    fn prefixed(&self, column: &str) -> String {
        format!("{}_{column}", self.alias)
    }
}

fn input(catalog: &Catalog, factor: &TableFactor) -> Result<(Input, Option<JoinWindow>)> {
    let TableFactor::Table {
        name,
        alias,
        with_hints,
        ..
    } = factor
    else {
        return Err(PlanError::Unsupported(
            "only streams and tables can be joined".into(),
        ));
    };
    let def = catalog.source(&object_name(name)?)?.clone();
    let alias = alias
        .as_ref()
        .map_or_else(|| def.name.clone(), |a| a.name.value.clone());
    // A `WINDOW` clause (on the first source) belongs to the joined rows.
    let hints: Vec<&AstExpr> = with_hints.iter().filter(|h| !is_window(h)).collect();
    let window = match hints.as_slice() {
        [] => None,
        [AstExpr::Function(f)] if f.name.to_string() == crate::parser::WITHIN => {
            let ast::FunctionArguments::List(l) = &f.args else {
                return Err(PlanError::Internal(
                    "a join window without arguments".into(),
                ));
            };
            let ms: Vec<i64> = l
                .args
                .iter()
                .filter_map(|a| match a {
                    ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(AstExpr::Value(v))) => {
                        match &v.value {
                            ast::Value::Number(n, _) => n.parse().ok(),
                            _ => None,
                        }
                    }
                    _ => None,
                })
                .collect();
            match ms.as_slice() {
                [b, a] => Some(JoinWindow {
                    before_ms: *b,
                    after_ms: *a,
                    grace_ms: None,
                }),
                [b, a, g] => Some(JoinWindow {
                    before_ms: *b,
                    after_ms: *a,
                    grace_ms: Some(*g),
                }),
                _ => return Err(PlanError::Internal("a malformed join window".into())),
            }
        }
        _ => {
            return Err(PlanError::Unsupported(
                "table hints are not supported".into(),
            ))
        }
    };
    Ok((Input { def, alias }, window))
}

/// Whether a table hint is a `WINDOW` clause (see `parser::WINDOW`).
fn is_window(hint: &AstExpr) -> bool {
    matches!(hint, AstExpr::Function(f) if f.name.to_string() == crate::parser::WINDOW)
}

/// Which input an expression's columns come from: 0 left, 1 right; `None`
/// when it names none. Refuses unknown qualifiers and ambiguous names.
fn side_of(e: &AstExpr, inputs: &[Input]) -> Result<Option<usize>> {
    let mut sides = Vec::new();
    let mut err = None;
    let _ = ast::visit_expressions(e, |x| {
        let found = match x {
            AstExpr::CompoundIdentifier(parts) if parts.len() == 2 => {
                match inputs.iter().position(|i| i.alias == parts[0].value) {
                    Some(s) => Ok(Some(s)),
                    None => Err(PlanError::Invalid(format!(
                        "Failed to prepare statement: '{}' is not a valid stream/table name or alias.",
                        parts[0].value
                    ))),
                }
            }
            AstExpr::Identifier(i) => resolve(&i.value, inputs),
            _ => Ok(None),
        };
        match found {
            Ok(Some(s)) => sides.push(s),
            Ok(None) => {}
            Err(e) => {
                err = Some(e);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    if let Some(e) = err {
        return Err(e);
    }
    sides.sort_unstable();
    sides.dedup();
    Ok(match sides.as_slice() {
        [s] => Some(*s),
        [] => None,
        _ => Some(MANY),
    })
}

/// What [`side_of`] says of an expression naming several sources.
const MANY: usize = usize::MAX;

/// The input an unqualified column belongs to.
fn resolve(name: &str, inputs: &[Input]) -> Result<Option<usize>> {
    let having: Vec<usize> = (0..inputs.len()).filter(|&s| inputs[s].has(name)).collect();
    match having.as_slice() {
        [] => Ok(None),
        [s] => Ok(Some(*s)),
        _ if is_pseudo(name) => Ok(None),
        many => {
            let named: Vec<String> = many
                .iter()
                .map(|&s| format!("{}.{name}", inputs[s].alias))
                .collect();
            let (last, rest) = named.split_last().unwrap_or((&named[0], &[]));
            Err(PlanError::Invalid(format!(
                "Column '{name}' is ambiguous. Could be {} or {last}.",
                rest.join(", ")
            )))
        }
    }
}

/// Rewrites column references to the prefixed names of the synthetic
/// source.
fn prefix_columns<V: ast::VisitMut>(node: &mut V, inputs: &[Input]) -> Result<()> {
    let mut err = None;
    let _ = visit_expressions_mut(node, |x| {
        let renamed = match x {
            AstExpr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                match inputs.iter().find(|i| i.alias == parts[0].value) {
                    Some(i) => {
                        let column = Ident::with_quote('"', i.prefixed(&parts[1].value));
                        if parts.len() == 2 {
                            Ok(Some(AstExpr::Identifier(column)))
                        } else {
                            let mut rest = parts[1..].to_vec();
                            rest[0] = column;
                            Ok(Some(AstExpr::CompoundIdentifier(rest)))
                        }
                    }
                    None => Err(PlanError::Invalid(format!(
                        "'{}' is not a valid stream/table name or alias.",
                        parts[0].value
                    ))),
                }
            }
            AstExpr::Identifier(i)
                if ![ROWTIME, ROWPARTITION, ROWOFFSET].contains(&i.value.as_str()) =>
            {
                resolve(&i.value, inputs).map(|s| {
                    s.map(|s| {
                        AstExpr::Identifier(Ident::with_quote('"', inputs[s].prefixed(&i.value)))
                    })
                })
            }
            _ => Ok(None),
        };
        match renamed {
            Ok(Some(e)) => *x = e,
            Ok(None) => {}
            Err(e) => {
                err = Some(e);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    err.map_or(Ok(()), Err)
}

/// Plans one side's join expression against its source.
fn side_key(
    e: &AstExpr,
    input: &Input,
    plan_one: &dyn Fn(&Query, &SourceDef) -> Result<LogicalPlan>,
    on_text: &str,
) -> Result<(
    datafusion::logical_expr::Expr,
    datafusion::common::DFSchemaRef,
)> {
    let mut e = e.clone();
    // `a.x` → `x`: the expression is planned over the source alone.
    let _ = visit_expressions_mut(&mut e, |x| {
        if let AstExpr::CompoundIdentifier(parts) = x {
            if parts.len() >= 2 && parts[0].value == input.alias {
                *x = if parts.len() == 2 {
                    AstExpr::Identifier(parts[1].clone())
                } else {
                    AstExpr::CompoundIdentifier(parts[1..].to_vec())
                };
            }
        }
        ControlFlow::<()>::Continue(())
    });
    let sql = format!("SELECT {e} FROM \"{}\"", input.def.name);
    let query = match crate::parser::parse_statement(&sql)?.statement {
        crate::parser::Statement::Select { query, .. } => query,
        _ => return Err(PlanError::Internal("a join key did not parse".into())),
    };
    let plan = plan_one(&query, &input.def).map_err(|err| match err {
        PlanError::NotFound {
            kind: "column",
            name,
        } => PlanError::Invalid(format!(
            "JOIN ON column '{}.{name}' cannot be resolved.",
            input.alias
        )),
        other => PlanError::Invalid(format!("Invalid join condition {on_text}: {other}")),
    })?;
    let LogicalPlan::Projection(p) = plan else {
        return Err(PlanError::Internal(
            "a join key did not plan as a projection".into(),
        ));
    };
    let key = match p.expr.first() {
        Some(datafusion::logical_expr::Expr::Alias(a)) => a.expr.as_ref().clone(),
        Some(e) => e.clone(),
        None => return Err(PlanError::Internal("a join key without expression".into())),
    };
    Ok((key, std::sync::Arc::clone(p.input.schema())))
}

fn kind_of(op: &JoinOperator) -> Result<(JoinKind, &AstExpr)> {
    let (kind, constraint) = match op {
        JoinOperator::Join(c) | JoinOperator::Inner(c) => (JoinKind::Inner, c),
        JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => (JoinKind::Left, c),
        JoinOperator::Right(c) | JoinOperator::RightOuter(c) => (JoinKind::Right, c),
        JoinOperator::FullOuter(c) => (JoinKind::Full, c),
        _ => {
            return Err(PlanError::Unsupported(
                "only INNER, LEFT, RIGHT and FULL joins are supported".into(),
            ))
        }
    };
    match constraint {
        JoinConstraint::On(e) => Ok((kind, e)),
        _ => Err(PlanError::Invalid("a join needs an ON condition".into())),
    }
}

/// A refused outer join kind in ksqlDB's messages.
fn outer_words(kind: JoinKind) -> &'static str {
    if kind == JoinKind::Full {
        "full-outer"
    } else {
        "right"
    }
}

fn join_words(kind: JoinKind) -> &'static str {
    match kind {
        JoinKind::Inner => "[INNER] JOIN",
        JoinKind::Left => "LEFT [OUTER] JOIN",
        JoinKind::Right => "RIGHT [OUTER] JOIN",
        JoinKind::Full => "[FULL] OUTER JOIN",
    }
}

fn strip_nested(e: &AstExpr) -> &AstExpr {
    match e {
        AstExpr::Nested(inner) => strip_nested(inner),
        other => other,
    }
}

/// One step of a (left-deep) join: input `r` joined to the result of the
/// inputs before it.
struct Step {
    spec: JoinSpec,
    /// The rows the step produces, as a source (the synthetic source).
    source: SourceDef,
    /// Its key candidates, as [`Prepared::key_candidates`].
    key_candidates: Vec<(String, String)>,
    /// The expressions (as [`canonical`] writes them) known to hold the
    /// key: the join expressions of this step and, when it joined on the
    /// earlier steps' key, theirs.
    equivalent: Vec<String>,
}

/// An expression over the joined inputs in one form whatever its
/// qualifiers: columns by their prefixed names, upper case.
fn canonical(e: &AstExpr, inputs: &[Input]) -> String {
    let mut e = e.clone();
    normalize_access(&mut e, inputs);
    let _ = prefix_columns(&mut e, inputs);
    ksql_display(strip_nested(&e))
        .to_string()
        .replace('"', "")
        .to_uppercase()
}

/// The two sides of `ON a = b` of the join of input `r`, as (left, right,
/// the input the left names): the left names one of the inputs before
/// `r`, the right names input `r`.
fn join_sides<'a>(
    a: &'a AstExpr,
    b: &'a AstExpr,
    inputs: &[Input],
    r: usize,
    on_text: &str,
) -> Result<(&'a AstExpr, &'a AstExpr, usize)> {
    let scope = &inputs[..=r];
    let (sa, sb) = (side_of(a, scope)?, side_of(b, scope)?);
    let invalid = |e: &AstExpr| {
        PlanError::Invalid(format!(
            "Invalid comparison expression '{}' in join {on_text}. Each side of the join comparision must contain references from exactly one source.",
            ksql_display(e)
        ))
    };
    match (sa, sb) {
        (Some(x), Some(y)) if x < r && y == r => Ok((a, b, x)),
        (Some(y), Some(x)) if x < r && y == r => Ok((b, a, x)),
        (Some(x), Some(y)) if r > 1 && x == y && x != MANY => Err(PlanError::Invalid(format!(
            "Each side of the join must reference exactly one source and not the same source. Left side references `{0}` and right references `{0}`",
            inputs[x].alias
        ))),
        (Some(x), Some(y)) if r > 1 && x < r && y < r => Err(PlanError::Invalid(format!(
            "A join criteria is expected to reference the source (`{}`) in the FROM clause, instead the right source references `{}` and the left source references `{}`",
            inputs[r].alias, inputs[y].alias, inputs[x].alias
        ))),
        (Some(x), _) if x != MANY => Err(invalid(b)),
        _ => Err(invalid(a)),
    }
}

/// The hidden name an earlier step's column `name` (a synthetic key or a
/// pseudo-column) takes in a later step's source, so that names stay
/// unique; queries cannot name it.
fn hidden(step: usize, name: &str) -> String {
    format!("__J{step}_{name}")
}

/// A join expression of the n-way left side as ksqlDB shows it: the
/// column qualified by the source it comes from.
fn display_side(e: &AstExpr, inputs: &[Input]) -> String {
    match strip_nested(e) {
        AstExpr::Identifier(i) => match resolve(&i.value, inputs) {
            Ok(Some(s)) if s != MANY => format!("{}.{}", inputs[s].alias, i.value),
            _ => i.value.clone(),
        },
        AstExpr::CompoundIdentifier(parts) if parts.len() == 2 => {
            format!("{}.{}", parts[0].value, parts[1].value)
        }
        other => ksql_display(other).to_string(),
    }
}

/// A join query as a single-source query; `None` when `query` does not
/// join. `plan_one` plans a query over one source (the binder's).
///
/// `a JOIN b ON … JOIN c ON …` is joined left-deep, as ksqlDB does: `a`
/// and `b` first, then that result (an intermediate source) with `c`.
/// The final synthetic source has every input's columns, prefixed.
pub fn prepare(
    catalog: &Catalog,
    query: &Query,
    plan_one: &dyn Fn(&Query, &SourceDef) -> Result<LogicalPlan>,
) -> Result<Option<Prepared>> {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Ok(None);
    };
    let [from] = select.from.as_slice() else {
        return Ok(None);
    };
    if from.joins.is_empty() {
        return Ok(None);
    }
    let (first, first_window) = input(catalog, &from.relation)?;
    if first_window.is_some() {
        return Err(PlanError::Syntax(
            "syntax error: WITHIN belongs after the joined source".into(),
        ));
    }
    let mut inputs = vec![first];
    let mut windows = Vec::new();
    for join in &from.joins {
        let (next, window) = input(catalog, &join.relation)?;
        inputs.push(next);
        windows.push(window);
    }
    if inputs.len() > 2 {
        // Every join's sources before any is planned, as ksqlDB checks.
        for (r, i) in inputs.iter().enumerate() {
            if inputs[..r].iter().any(|x| x.def.name == i.def.name) {
                return Err(PlanError::Invalid(format!(
                    "N-way joins do not support multiple occurrences of the same source. Source: '{}'",
                    i.def.name
                )));
            }
        }
        for (r, join) in (1..).zip(&from.joins) {
            let (_, on) = kind_of(&join.join_operator)?;
            let (a, b, on_text) = on_equality(on, &inputs[..=r])?;
            join_sides(&a, &b, &inputs, r, &on_text)?;
        }
    }
    let mut step: Option<Step> = None;
    for (r, join) in (1..).zip(&from.joins) {
        let last = r == from.joins.len();
        step = Some(plan_step(
            &inputs,
            r,
            join,
            windows[r - 1],
            step.take(),
            last,
            plan_one,
        )?);
    }
    let Some(Step {
        spec,
        source,
        key_candidates,
        ..
    }) = step
    else {
        return Ok(None);
    };
    let synthetic_key = spec.synthetic_key;
    let mut query = query.clone();
    normalize_access(&mut query, &inputs);
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err(PlanError::Internal("a join query without SELECT".into()));
    };
    let window_hint: Vec<AstExpr> = match select.from.first().map(|f| &f.relation) {
        Some(TableFactor::Table { with_hints, .. }) => with_hints
            .iter()
            .filter(|h| is_window(h))
            .cloned()
            .collect(),
        _ => Vec::new(),
    };
    select.from = vec![TableWithJoins {
        relation: TableFactor::Table {
            name: ObjectName::from(vec![Ident::with_quote('"', JOINED)]),
            alias: None,
            args: None,
            with_hints: window_hint,
            version: None,
            with_ordinality: false,
            partitions: vec![],
            json_path: None,
            sample: None,
            index_hints: vec![],
        },
        joins: vec![],
    }];
    let unique = |column: &str| inputs.iter().filter(|i| i.has(column)).count() == 1;
    let mut items = Vec::new();
    for item in std::mem::take(&mut select.projection) {
        match item {
            SelectItem::Wildcard(_) => {
                if synthetic_key {
                    items.push(column_item(ROWKEY, ROWKEY));
                }
                for i in &inputs {
                    items.extend(declared_items(i));
                }
            }
            SelectItem::QualifiedWildcard(kind, _) => {
                let name = match &kind {
                    ast::SelectItemQualifiedWildcardKind::ObjectName(n) => object_name(n)?,
                    ast::SelectItemQualifiedWildcardKind::Expr(e) => e.to_string(),
                };
                let i = inputs.iter().find(|i| i.alias == name).ok_or_else(|| {
                    PlanError::Invalid(format!(
                        "'{name}' is not a valid stream/table name or alias."
                    ))
                })?;
                items.extend(declared_items(i));
            }
            SelectItem::UnnamedExpr(AstExpr::CompoundIdentifier(parts)) if parts.len() == 2 => {
                let column = &parts[1].value;
                let i = inputs
                    .iter()
                    .find(|i| i.alias == parts[0].value)
                    .ok_or_else(|| {
                        PlanError::Invalid(format!(
                            "'{}' is not a valid stream/table name or alias.",
                            parts[0].value
                        ))
                    })?;
                let is_key = key_candidates.iter().any(|(c, _)| *c == i.prefixed(column));
                let alias = if unique(column) && !is_pseudo(column) && !is_key {
                    column.clone()
                } else {
                    i.prefixed(column)
                };
                items.push(column_item(&i.prefixed(column), &alias));
            }
            SelectItem::UnnamedExpr(AstExpr::Identifier(id))
                if resolve(&id.value, &inputs)?.is_some() && !is_pseudo(&id.value) =>
            {
                let s = resolve(&id.value, &inputs)?.unwrap_or(0);
                items.push(column_item(&inputs[s].prefixed(&id.value), &id.value));
            }
            other => items.push(other),
        }
    }
    select.projection = items;
    prefix_columns(&mut query, &inputs)?;
    Ok(Some(Prepared {
        spec,
        source,
        query,
        inputs,
        key_candidates,
    }))
}

/// `ON e1 = e2`, its sides (aliases' accesses normalized) and its text
/// for messages; refuses other conditions and unknown qualifiers.
fn on_equality(on: &AstExpr, scope: &[Input]) -> Result<(AstExpr, AstExpr, String)> {
    let mut on = on.clone();
    normalize_access(&mut on, scope);
    let on = &on;
    // ON e1 = e2, each side naming exactly one source.
    let on_text = format!("'{}'", ksql_display(strip_nested(on)));
    let AstExpr::BinaryOp {
        left: a,
        op: ast::BinaryOperator::Eq,
        right: b,
    } = strip_nested(on)
    else {
        if let AstExpr::BinaryOp {
            op: ast::BinaryOperator::And,
            ..
        } = strip_nested(on)
        {
            return Err(PlanError::Invalid(format!(
                "Invalid join condition: joins on multiple conditions are not yet supported. Got {}.",
                ksql_display(strip_nested(on))
            )));
        }
        return Err(PlanError::Invalid(format!(
            "Unsupported join expression: {on}. Only equality joins are supported."
        )));
    };
    // Unknown qualifiers first, as ksqlDB reports them.
    let mut unknown = None;
    let _ = ast::visit_expressions(on, |x| {
        if let AstExpr::CompoundIdentifier(parts) = x {
            if parts.len() >= 2 && !scope.iter().any(|i| i.alias == parts[0].value) {
                unknown = Some(parts[0].value.clone());
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    if let Some(q) = unknown {
        return Err(PlanError::Invalid(format!(
            "Failed to prepare statement: '{q}' is not a valid stream/table name or alias."
        )));
    }
    Ok((a.as_ref().clone(), b.as_ref().clone(), on_text))
}

/// Plans joining input `r` to the inputs before it (`prev`: the step that
/// joined those, when there are more than one).
#[allow(clippy::too_many_arguments)]
fn plan_step(
    inputs: &[Input],
    r: usize,
    join: &ast::Join,
    window: Option<JoinWindow>,
    prev: Option<Step>,
    last: bool,
    plan_one: &dyn Fn(&Query, &SourceDef) -> Result<LogicalPlan>,
) -> Result<Step> {
    let (kind, on) = kind_of(&join.join_operator)?;
    if let Some(same) = inputs[..r]
        .iter()
        .find(|i| i.def.name == inputs[r].def.name)
    {
        return Err(PlanError::Invalid(format!(
            "Can not join '{}' to '{}': self joins are not yet supported.",
            same.def.name, inputs[r].def.name
        )));
    }
    let scope = &inputs[..=r];
    let (a, b, on_text) = on_equality(on, scope)?;
    let (left_expr, right_expr, left_input) = join_sides(&a, &b, inputs, r, &on_text)?;
    // The left side: the first input, or the earlier steps' result, whose
    // columns have their prefixed names.
    let intermediate;
    let (left, left_ast) = match &prev {
        None => (&inputs[0], left_expr.clone()),
        Some(p) => {
            intermediate = Input {
                def: p.source.clone(),
                alias: String::new(),
            };
            let mut e = left_expr.clone();
            prefix_columns(&mut e, &inputs[..r])?;
            (&intermediate, e)
        }
    };
    let right = &inputs[r];
    let (mut left_key, left_schema) = side_key(&left_ast, left, plan_one, &on_text)?;
    let (right_key, right_schema) = side_key(right_expr, right, plan_one, &on_text)?;
    let left_shown = match &prev {
        None => qualified(&left_key, left),
        Some(_) => display_side(left_expr, &inputs[..r]),
    };
    let right_shown = qualified(&right_key, right);
    let left_name = &inputs[left_input].def.name;
    if left.def.kind == SourceKind::Stream && right.def.kind == SourceKind::Table {
        // Stream-table joins look the table up by its primary key.
        if !on_primary_key(&right_key, right) {
            return Err(PlanError::Invalid(format!(
                "Invalid join condition: stream-table joins require to join on the table's primary key. Got {left_shown} = {right_shown}."
            )));
        }
    }
    // Whether the left side joins on its key; an earlier step's result is
    // keyed by its key candidates.
    let left_canonical = canonical(left_expr, &inputs[..r]);
    let left_on_key = match &prev {
        None => on_primary_key(&left_key, left),
        Some(p) => {
            matches!(&left_key, datafusion::logical_expr::Expr::Column(c)
                if p.key_candidates.iter().any(|(k, _)| *k == c.name))
                || p.equivalent.contains(&left_canonical)
        }
    };
    // The earlier steps' key holds this step's join value too.
    let inherits = prev
        .as_ref()
        .is_some_and(|p| left_on_key && !p.spec.synthetic_key);
    let mut foreign_key = false;
    let got = format!("Got {left_name} {} {}.", join_words(kind), right.def.name);
    match (left.def.kind, right.def.kind) {
        (SourceKind::Stream, SourceKind::Stream) => {
            if window.is_none() {
                return Err(PlanError::Invalid(
                    "Stream-Stream joins must have a WITHIN clause specified. None was provided. To learn about how to specify a WITHIN clause with a stream-stream join, please visit: https://docs.confluent.io/current/ksql/docs/syntax-reference.html#create-stream-as-select".into(),
                ));
            }
        }
        (SourceKind::Stream, SourceKind::Table) => {
            if window.is_some() {
                return Err(PlanError::Invalid(
                    "A window definition was provided for a Stream-Table join. These joins are not windowed. Please drop the window definition (ie. the WITHIN clause) and try to re-run your join.".into(),
                ));
            }
            if matches!(kind, JoinKind::Full | JoinKind::Right) {
                return Err(PlanError::Invalid(format!(
                    "Invalid join type: {} join not supported for stream-table join. {got}",
                    outer_words(kind)
                )));
            }
        }
        (SourceKind::Table, SourceKind::Stream) => {
            return Err(PlanError::Invalid(format!(
                "Invalid join order: table-stream joins are not supported; only stream-table joins. {got}"
            )))
        }
        (SourceKind::Table, SourceKind::Table) => {
            if window.is_some() {
                return Err(PlanError::Invalid(
                    "A window definition was provided for a Table-Table join. These joins are not windowed. Please drop the window definition (ie. the WITHIN clause) and try to re-run your join.".into(),
                ));
            }
            if !on_primary_key(&right_key, right) {
                return Err(PlanError::Invalid(format!(
                    "Invalid join condition: table-table joins require to join on the primary key of the right input table. Got {left_shown} = {right_shown}."
                )));
            }
            if !left_on_key {
                if prev.is_some() {
                    return Err(PlanError::Invalid(format!(
                        "Invalid join condition: foreign-key table-table joins are not supported as part of n-way joins. Got {left_shown} = {right_shown}."
                    )));
                }
                // A foreign-key join: the left side joins on any
                // expression, its rows keep their own primary key.
                if matches!(kind, JoinKind::Full | JoinKind::Right) {
                    return Err(PlanError::Invalid(format!(
                        "Invalid join type: {} join not supported for foreign-key table-table join. {got}",
                        outer_words(kind)
                    )));
                }
                if left.def.key_columns().next().is_none() {
                    return Err(PlanError::Invalid(format!(
                        "Invalid join condition: foreign-key table-table joins need a left table with a primary key. Got {}.",
                        left.def.name
                    )));
                }
                foreign_key = true;
            }
        }
    }
    // Windowed sources, in ksqlDB's words.
    let kind_name = |w: &crate::catalog::WindowSpec| match w.kind {
        crate::catalog::WindowKind::Tumbling => "TUMBLING",
        crate::catalog::WindowKind::Hopping => "HOPPING",
        crate::catalog::WindowKind::Session => "SESSION",
    };
    match (left.def.window, right.def.window) {
        (Some(w), None) | (None, Some(w)) => {
            let (windowed, other) = if left.def.window.is_some() {
                (left_name, &right.def.name)
            } else {
                (&right.def.name, left_name)
            };
            return Err(PlanError::Invalid(format!(
                "Can not join windowed source to non-windowed source.\n`{windowed}` is {} windowed\n`{other}` is not windowed",
                kind_name(&w)
            )));
        }
        (Some(l), Some(w)) => {
            let session =
                |w: &crate::catalog::WindowSpec| w.kind == crate::catalog::WindowKind::Session;
            if session(&l) != session(&w) {
                return Err(PlanError::Invalid(format!(
                    "Incompatible windowed sources.\nLeft source: {}\nRight source: {}\nSession windowed sources can only be joined to other session windowed sources, and may still not result in expected behaviour as session bounds must be an exact match for the join to work\nHopping and tumbling windowed sources can only be joined to other hopping and tumbling windowed sources",
                    kind_name(&l),
                    kind_name(&w)
                )));
            }
            if !left_on_key || !on_primary_key(&right_key, right) || l != w {
                return Err(PlanError::Invalid(
                    "Implicit repartitioning of windowed sources is not supported. See https://github.com/confluentinc/ksql/issues/4385.".into(),
                ));
            }
            return Err(PlanError::Unsupported(
                "joins of windowed sources are not supported yet".into(),
            ));
        }
        (None, None) => {}
    }
    let checked = if prev.is_none() {
        &inputs[..=1]
    } else {
        &inputs[r..=r]
    };
    let kafka: Vec<&str> = checked
        .iter()
        .filter(|i| i.def.value_format == crate::catalog::Format::Kafka)
        .map(|i| i.def.name.as_str())
        .collect();
    if !kafka.is_empty() {
        return Err(PlanError::Invalid(format!(
            "Source(s) {} are using the 'KAFKA' value format. This format does not yet support JOIN.",
            kafka.join(", ")
        )));
    }
    // The left side's column in this step's source: an earlier step's
    // synthetic key is renamed.
    let renamed = |name: &str| match &prev {
        Some(p) if name == ROWKEY && p.spec.synthetic_key => hidden(r - 1, ROWKEY),
        _ => name.to_string(),
    };
    let candidates = if foreign_key {
        // The result is keyed by the left table's primary key.
        let pk = left.def.key_columns().next().map(|c| c.name.clone());
        (pk.map(|c| left.prefixed(&c)), None)
    } else {
        let left_plain = match (&prev, &left_key) {
            (None, e) => match e {
                datafusion::logical_expr::Expr::Column(c) => Some(left.prefixed(&c.name)),
                _ => None,
            },
            (Some(_), datafusion::logical_expr::Expr::Column(c)) => Some(renamed(&c.name)),
            (Some(_), _) => None,
        };
        let right_plain = match &right_key {
            datafusion::logical_expr::Expr::Column(c) => Some(right.prefixed(&c.name)),
            _ => None,
        };
        (left_plain, right_plain)
    };
    let synthetic_key =
        kind == JoinKind::Full || (candidates.0.is_none() && candidates.1.is_none() && !inherits);
    let key_type = SqlType::from_arrow(&left_key.get_type(left_schema.as_ref())?)?;
    let right_type = SqlType::from_arrow(&right_key.get_type(right_schema.as_ref())?)?;
    if key_type != right_type {
        return Err(PlanError::Invalid(format!(
            "Invalid join condition: the join expressions have different types: {left_shown} is {key_type}, {right_shown} is {right_type}."
        )));
    }
    // An earlier table-table step's key candidates hold the same value,
    // but only the first is never NULL-padded (a RIGHT join fills it): the
    // left side joins on that one.
    if let (Some(p), true) = (&prev, left_on_key) {
        if let Some((first, _)) = p.key_candidates.first() {
            if let Ok((qualifier, _)) = left_schema.qualified_field_with_unqualified_name(first) {
                left_key = datafusion::logical_expr::Expr::Column(datafusion::common::Column::new(
                    qualifier.cloned(),
                    first,
                ));
            }
        }
    }

    let key_candidates = if synthetic_key {
        vec![(ROWKEY.into(), ROWKEY.into())]
    } else {
        // When the left side joins on the earlier steps' key, their key
        // candidates hold the join value too (ksqlDB's viable key columns).
        let mut all: Vec<(String, String)> = match &prev {
            Some(p) if inherits => p.key_candidates.clone(),
            _ => Vec::new(),
        };
        let own = [
            candidates.0.clone().map(|c| {
                let shown = if foreign_key {
                    format!("{}.{}", left.alias, &c[left.alias.len() + 1..])
                } else {
                    left_shown.clone()
                };
                (c, shown)
            }),
            candidates.1.clone().map(|c| (c, right_shown.clone())),
        ];
        for c in own.into_iter().flatten() {
            if !all.iter().any(|(name, _)| *name == c.0) {
                all.push(c);
            }
        }
        all
    };
    // The synthetic source: ROWKEY, then each side's columns, prefixed.
    let mut columns = Vec::new();
    if synthetic_key {
        columns.push(Column::new(ROWKEY, key_type.clone(), true));
    }
    let left_columns: Vec<(String, SqlType)> = match &prev {
        None => left
            .columns()
            .into_iter()
            .map(|(name, ty, _)| (left.prefixed(&name), ty))
            .collect(),
        Some(p) => p
            .source
            .columns
            .iter()
            .map(|c| (renamed(&c.name), c.ty.clone()))
            .chain([
                (hidden(r - 1, ROWTIME), SqlType::Bigint),
                (hidden(r - 1, ROWPARTITION), SqlType::Int),
                (hidden(r - 1, ROWOFFSET), SqlType::Bigint),
            ])
            .collect(),
    };
    let right_columns = right
        .columns()
        .into_iter()
        .map(|(name, ty, _)| (right.prefixed(&name), ty));
    for (name, ty) in left_columns.into_iter().chain(right_columns) {
        let key = !synthetic_key && key_candidates.iter().any(|(c, _)| *c == name);
        columns.push(Column::new(name, ty, key));
    }
    let mut source = left.def.clone();
    source.name = if last {
        JOINED.into()
    } else {
        format!("{JOINED}_{r}")
    };
    // A table-table join is a table; the others are streams.
    source.kind = if right.def.kind == SourceKind::Table && left.def.kind == SourceKind::Table {
        SourceKind::Table
    } else {
        SourceKind::Stream
    };
    let left_keyless = left.def.key_columns().next().is_none();
    source.columns = columns;
    source.timestamp_column = None;
    source.timestamp_format = None;
    source.query_id = None;
    if left_keyless {
        source.key_format = right.def.key_format;
    }
    let equivalent = if synthetic_key {
        Vec::new()
    } else if foreign_key {
        // Keyed by the left table's primary key, not the join value.
        key_candidates
            .iter()
            .map(|(c, _)| c.replace('"', "").to_uppercase())
            .collect()
    } else {
        let mut known = match &prev {
            Some(p) if inherits => p.equivalent.clone(),
            _ => Vec::new(),
        };
        known.push(left_canonical);
        known.push(canonical(right_expr, scope));
        known
    };
    Ok(Step {
        spec: JoinSpec {
            kind,
            left: JoinSide {
                source: left.def.clone(),
                alias: left.alias.clone(),
                key: left_key,
                key_schema: left_schema,
                join: prev.map(|p| Box::new(p.spec)),
            },
            right: JoinSide {
                source: right.def.clone(),
                alias: right.alias.clone(),
                key: right_key,
                key_schema: right_schema,
                join: None,
            },
            window,
            synthetic_key,
            foreign_key,
            key_column: None,
        },
        source,
        key_candidates,
        equivalent,
    })
}

/// Whether a side joins on its (single) key column.
fn on_primary_key(e: &datafusion::logical_expr::Expr, i: &Input) -> bool {
    matches!(e, datafusion::logical_expr::Expr::Column(c)
        if i.def.key_columns().map(|k| &k.name).collect::<Vec<_>>() == [&c.name])
}

/// A join expression as ksqlDB shows it: a column qualified by its source.
fn qualified(e: &datafusion::logical_expr::Expr, i: &Input) -> String {
    match e {
        datafusion::logical_expr::Expr::Column(c) => format!("{}.{}", i.alias, c.name),
        other => other.to_string(),
    }
}

fn is_pseudo(column: &str) -> bool {
    [ROWTIME, ROWPARTITION, ROWOFFSET].contains(&column)
}

/// `"column" AS "alias"`.
fn column_item(column: &str, alias: &str) -> SelectItem {
    let expr = AstExpr::Identifier(Ident::with_quote('"', column));
    if column == alias {
        SelectItem::UnnamedExpr(expr)
    } else {
        SelectItem::ExprWithAlias {
            expr,
            alias: Ident::with_quote('"', alias),
        }
    }
}

/// A side's declared columns (key columns first), prefixed: what `*`
/// and `a.*` stand for.
fn declared_items(i: &Input) -> Vec<SelectItem> {
    i.columns()
        .into_iter()
        .filter(|(name, _, _)| !is_pseudo(name))
        .map(|(name, _, _)| column_item(&i.prefixed(&name), &i.prefixed(&name)))
        .collect()
}
