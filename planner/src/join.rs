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
    inputs: [Input; 2],
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
fn normalize_access<V: ast::VisitMut>(node: &mut V, inputs: &[Input; 2]) {
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
    let window = match with_hints.as_slice() {
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

/// Which input an expression's columns come from: 0 left, 1 right; `None`
/// when it names none. Refuses unknown qualifiers and ambiguous names.
fn side_of(e: &AstExpr, inputs: &[Input; 2]) -> Result<Option<usize>> {
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
    sides.dedup();
    Ok(match sides.as_slice() {
        [s] => Some(*s),
        [] => None,
        _ => Some(2),
    })
}

/// The input an unqualified column belongs to.
fn resolve(name: &str, inputs: &[Input; 2]) -> Result<Option<usize>> {
    match (inputs[0].has(name), inputs[1].has(name)) {
        (true, true) if ![ROWTIME, ROWPARTITION, ROWOFFSET].contains(&name) => {
            Err(PlanError::Invalid(format!(
                "Column '{name}' is ambiguous. Could be {}.{name} or {}.{name}.",
                inputs[0].alias, inputs[1].alias
            )))
        }
        (true, false) => Ok(Some(0)),
        (false, true) => Ok(Some(1)),
        _ => Ok(None),
    }
}

/// Rewrites column references to the prefixed names of the synthetic
/// source.
fn prefix_columns<V: ast::VisitMut>(node: &mut V, inputs: &[Input; 2]) -> Result<()> {
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

/// A join query as a single-source query; `None` when `query` does not
/// join. `plan_one` plans a query over one source (the binder's).
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
    let join = match from.joins.as_slice() {
        [] => return Ok(None),
        [j] => j,
        _ => {
            return Err(PlanError::Unsupported(
                "joins of more than two sources are not supported yet".into(),
            ))
        }
    };
    let (left, left_window) = input(catalog, &from.relation)?;
    let (right, window) = input(catalog, &join.relation)?;
    if left_window.is_some() {
        return Err(PlanError::Syntax(
            "syntax error: WITHIN belongs after the joined source".into(),
        ));
    }
    let (kind, on) = kind_of(&join.join_operator)?;
    if left.def.name == right.def.name {
        return Err(PlanError::Invalid(format!(
            "Can not join '{}' to '{}': self joins are not yet supported.",
            left.def.name, right.def.name
        )));
    }
    let inputs = [left, right];
    let mut on = on.clone();
    normalize_access(&mut on, &inputs);
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
            if parts.len() >= 2 && !inputs.iter().any(|i| i.alias == parts[0].value) {
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
    let (sa, sb) = (side_of(a, &inputs)?, side_of(b, &inputs)?);
    let invalid = |e: &AstExpr| {
        PlanError::Invalid(format!(
            "Invalid comparison expression '{}' in join {on_text}. Each side of the join comparision must contain references from exactly one source.",
            ksql_display(e)
        ))
    };
    let (left_expr, right_expr) = match (sa, sb) {
        (Some(0), Some(1)) => (a.as_ref(), b.as_ref()),
        (Some(1), Some(0)) => (b.as_ref(), a.as_ref()),
        (Some(0 | 1), _) => return Err(invalid(b)),
        _ => return Err(invalid(a)),
    };
    let (left_key, left_schema) = side_key(left_expr, &inputs[0], plan_one, &on_text)?;
    let (right_key, right_schema) = side_key(right_expr, &inputs[1], plan_one, &on_text)?;
    if inputs[0].def.kind == SourceKind::Stream && inputs[1].def.kind == SourceKind::Table {
        // Stream-table joins look the table up by its primary key.
        if !on_primary_key(&right_key, &inputs[1]) {
            return Err(PlanError::Invalid(format!(
                "Invalid join condition: stream-table joins require to join on the table's primary key. Got {} = {}.",
                qualified(&left_key, &inputs[0]),
                qualified(&right_key, &inputs[1])
            )));
        }
    }
    let mut foreign_key = false;
    let got = format!(
        "Got {} {} {}.",
        inputs[0].def.name,
        join_words(kind),
        inputs[1].def.name
    );
    match (inputs[0].def.kind, inputs[1].def.kind) {
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
                    if kind == JoinKind::Full {
                        "full-outer"
                    } else {
                        "right"
                    }
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
            if !on_primary_key(&right_key, &inputs[1]) {
                return Err(PlanError::Invalid(format!(
                    "Invalid join condition: table-table joins require to join on the primary key of the right input table. Got {} = {}.",
                    qualified(&left_key, &inputs[0]),
                    qualified(&right_key, &inputs[1])
                )));
            }
            if !on_primary_key(&left_key, &inputs[0]) {
                // A foreign-key join: the left side joins on any
                // expression, its rows keep their own primary key.
                if matches!(kind, JoinKind::Full | JoinKind::Right) {
                    return Err(PlanError::Invalid(format!(
                        "Invalid join type: {} join not supported for foreign-key table-table join. {got}",
                        if kind == JoinKind::Full {
                            "full-outer"
                        } else {
                            "right"
                        }
                    )));
                }
                if inputs[0].def.key_columns().next().is_none() {
                    return Err(PlanError::Invalid(format!(
                        "Invalid join condition: foreign-key table-table joins need a left table with a primary key. Got {}.",
                        inputs[0].def.name
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
    match (inputs[0].def.window, inputs[1].def.window) {
        (Some(w), None) | (None, Some(w)) => {
            let (windowed, other) = if inputs[0].def.window.is_some() {
                (&inputs[0].def.name, &inputs[1].def.name)
            } else {
                (&inputs[1].def.name, &inputs[0].def.name)
            };
            return Err(PlanError::Invalid(format!(
                "Can not join windowed source to non-windowed source.\n`{windowed}` is {} windowed\n`{other}` is not windowed",
                kind_name(&w)
            )));
        }
        (Some(l), Some(r)) => {
            let session =
                |w: &crate::catalog::WindowSpec| w.kind == crate::catalog::WindowKind::Session;
            if session(&l) != session(&r) {
                return Err(PlanError::Invalid(format!(
                    "Incompatible windowed sources.\nLeft source: {}\nRight source: {}\nSession windowed sources can only be joined to other session windowed sources, and may still not result in expected behaviour as session bounds must be an exact match for the join to work\nHopping and tumbling windowed sources can only be joined to other hopping and tumbling windowed sources",
                    kind_name(&l),
                    kind_name(&r)
                )));
            }
            if !on_primary_key(&left_key, &inputs[0])
                || !on_primary_key(&right_key, &inputs[1])
                || l != r
            {
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
    let kafka: Vec<&str> = inputs
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
    let plain = |e: &datafusion::logical_expr::Expr, i: &Input| match e {
        datafusion::logical_expr::Expr::Column(c) => Some(i.prefixed(&c.name)),
        _ => None,
    };
    let candidates = if foreign_key {
        // The result is keyed by the left table's primary key.
        let pk = inputs[0].def.key_columns().next().map(|c| c.name.clone());
        (pk.map(|c| inputs[0].prefixed(&c)), None)
    } else {
        (plain(&left_key, &inputs[0]), plain(&right_key, &inputs[1]))
    };
    let synthetic_key =
        kind == JoinKind::Full || (candidates.0.is_none() && candidates.1.is_none());
    let key_type = SqlType::from_arrow(&left_key.get_type(left_schema.as_ref())?)?;
    let right_type = SqlType::from_arrow(&right_key.get_type(right_schema.as_ref())?)?;
    if key_type != right_type {
        return Err(PlanError::Invalid(format!(
            "Invalid join condition: the join expressions have different types: {} is {key_type}, {} is {right_type}.",
            qualified(&left_key, &inputs[0]),
            qualified(&right_key, &inputs[1])
        )));
    }

    // The synthetic source: ROWKEY, then each side's columns, prefixed.
    let mut columns = Vec::new();
    if synthetic_key {
        columns.push(Column::new(ROWKEY, key_type.clone(), true));
    }
    for i in &inputs {
        for (name, ty, _) in i.columns() {
            let prefixed = i.prefixed(&name);
            let key = !synthetic_key
                && (candidates.0.as_deref() == Some(prefixed.as_str())
                    || candidates.1.as_deref() == Some(prefixed.as_str()));
            columns.push(Column::new(prefixed, ty, key));
        }
    }
    let left_def = &inputs[0].def;
    let mut source = left_def.clone();
    source.name = JOINED.into();
    // A table-table join is a table; the others are streams.
    source.kind = if inputs[1].def.kind == SourceKind::Table && left_def.kind == SourceKind::Table {
        SourceKind::Table
    } else {
        SourceKind::Stream
    };
    source.columns = columns;
    source.timestamp_column = None;
    source.timestamp_format = None;
    source.query_id = None;
    if left_def.key_columns().next().is_none() {
        source.key_format = inputs[1].def.key_format;
    }

    // The query over the synthetic source.
    let key_candidates = if synthetic_key {
        vec![(ROWKEY.into(), ROWKEY.into())]
    } else {
        [
            candidates.0.clone().map(|c| {
                let shown = if foreign_key {
                    format!("{}.{}", inputs[0].alias, &c[inputs[0].alias.len() + 1..])
                } else {
                    qualified(&left_key, &inputs[0])
                };
                (c, shown)
            }),
            candidates
                .1
                .clone()
                .map(|c| (c, qualified(&right_key, &inputs[1]))),
        ]
        .into_iter()
        .flatten()
        .collect()
    };
    let mut query = query.clone();
    normalize_access(&mut query, &inputs);
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err(PlanError::Internal("a join query without SELECT".into()));
    };
    select.from = vec![TableWithJoins {
        relation: TableFactor::Table {
            name: ObjectName::from(vec![Ident::with_quote('"', JOINED)]),
            alias: None,
            args: None,
            with_hints: vec![],
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
        spec: JoinSpec {
            kind,
            left: JoinSide {
                source: inputs[0].def.clone(),
                alias: inputs[0].alias.clone(),
                key: left_key,
                key_schema: left_schema,
            },
            right: JoinSide {
                source: inputs[1].def.clone(),
                alias: inputs[1].alias.clone(),
                key: right_key,
                key_schema: right_schema,
            },
            window,
            synthetic_key,
            foreign_key,
        },
        source,
        query,
        inputs,
        key_candidates,
    }))
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
