//! ksqlDB expression syntax that DataFusion's SQL planner does not know,
//! rewritten on the parsed tree before planning:
//!
//! - `STRUCT(F1 := e1, …)` → `named_struct('F1', e1, …)`
//! - `MAP(k1 := v1, …)` → `make_map(k1, v1, …)`
//! - `s->f` → `get_field(s, 'F')` (struct field access)
//! - `SUBSTRING(s, p, n)` → Brook's `substring` (not DataFusion's `substr`)
//! - `TIMESTAMPADD(SECONDS, …)`: the unit word becomes a string
//! - `'a' + s`: `+` next to a string literal concatenates
//! - `TRANSFORM(arr, x => e)` / `FILTER(arr, x => p)` → DataFusion's
//!   `array_transform` / `array_filter` with a lambda; over maps
//!   (`(k, v) => …`) and `REDUCE`, Brook's higher-order functions in
//!   [`crate::functions::lambda`]

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    self, visit_expressions_mut, BinaryOperator, Expr, FunctionArg, FunctionArgExpr,
    FunctionArgOperator, FunctionArgumentList, FunctionArguments, Ident, ObjectName, Value,
};

use crate::error::{PlanError, Result};

fn call(name: &str, args: Vec<Expr>) -> Expr {
    Expr::Function(ast::Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e)))
                .collect(),
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

fn string(s: &str) -> Expr {
    Expr::Value(Value::SingleQuotedString(s.to_string()).into())
}

/// The key of `name := value` as an expression: `'a'` is a string,
/// `NULL` is NULL, anything else a column.
fn named_key(name: &Ident) -> Expr {
    match name.quote_style {
        Some('\'') => string(&name.value),
        None if name.value.eq_ignore_ascii_case("NULL") => Expr::Value(Value::Null.into()),
        _ => Expr::Identifier(name.clone()),
    }
}

/// The `name := value` pairs of a constructor's arguments.
fn assignments(args: &[FunctionArg], what: &str) -> Result<Vec<(Expr, Expr)>> {
    args.iter()
        .map(|a| match a {
            FunctionArg::Named {
                name,
                arg: FunctionArgExpr::Expr(v),
                operator: FunctionArgOperator::Assignment,
            } => Ok((named_key(name), v.clone())),
            FunctionArg::ExprNamed {
                name,
                arg: FunctionArgExpr::Expr(v),
                operator: FunctionArgOperator::Assignment,
            } => Ok((name.clone(), v.clone())),
            FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::BinaryOp {
                left,
                op: BinaryOperator::Assignment,
                right,
            })) => Ok((*left.clone(), *right.clone())),
            other => Err(PlanError::Syntax(format!(
                "syntax error: {what} expects name := value pairs, found {other}"
            ))),
        })
        .collect()
}

fn struct_call(pairs: Vec<(Expr, Expr)>) -> Result<Expr> {
    let mut args = Vec::with_capacity(pairs.len() * 2);
    let mut names: Vec<String> = Vec::new();
    for (name, value) in pairs {
        let Expr::Identifier(id) = name else {
            return Err(PlanError::Syntax(format!(
                "syntax error: a STRUCT field name must be an identifier, found {name}"
            )));
        };
        if names.contains(&id.value) {
            return Err(PlanError::Invalid(format!(
                "Duplicate field names found in STRUCT: '{}'",
                id.value
            )));
        }
        names.push(id.value.clone());
        args.push(string(&id.value));
        args.push(value);
    }
    Ok(call("named_struct", args))
}

fn rewrite(e: &mut Expr) -> Result<()> {
    match e {
        Expr::Struct { values, fields } if fields.is_empty() => {
            let pairs = values
                .iter()
                .map(|v| match v {
                    Expr::BinaryOp {
                        left,
                        op: BinaryOperator::Assignment,
                        right,
                    } => Ok((*left.clone(), *right.clone())),
                    other => Err(PlanError::Syntax(format!(
                        "syntax error: STRUCT expects name := value pairs, found {other}"
                    ))),
                })
                .collect::<Result<Vec<_>>>()?;
            *e = struct_call(pairs)?;
        }
        Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("MAP") => {
            let FunctionArguments::List(l) = &f.args else {
                return Ok(());
            };
            let pairs = assignments(&l.args, "MAP")?;
            if pairs.is_empty() {
                return Err(PlanError::Invalid(
                    "Map constructor cannot be empty. Please supply at least one key value pair (see https://github.com/confluentinc/ksql/issues/4239).".into(),
                ));
            }
            let is_null = |e: &Expr| matches!(e, Expr::Value(v) if v.value == Value::Null);
            if pairs.iter().all(|(k, _)| is_null(k)) {
                return Err(PlanError::Invalid(
                    "Cannot construct a map with all NULL keys".into(),
                ));
            }
            if pairs.iter().all(|(_, v)| is_null(v)) {
                return Err(PlanError::Invalid(
                    "Cannot construct a map with all NULL values".into(),
                ));
            }
            // Literal keys (values) take the type of the first key (value)
            // that is not a literal, as in ksqlDB.
            let is_literal = |e: &Expr| literal_type(e).is_some();
            let key_like = pairs
                .iter()
                .map(|(k, _)| k)
                .find(|k| !is_literal(k) && !is_null(k))
                .cloned();
            let value_like = pairs
                .iter()
                .map(|(_, v)| v)
                .find(|v| !is_literal(v) && !is_null(v))
                .cloned();
            let coerce = |e: Expr, like: &Option<Expr>| match like {
                Some(like) if is_literal(&e) => {
                    call(crate::functions::cast::COERCE_NAME, vec![e, like.clone()])
                }
                _ => e,
            };
            *e = call(
                "make_map",
                pairs
                    .into_iter()
                    .flat_map(|(k, v)| [coerce(k, &key_like), coerce(v, &value_like)])
                    .collect(),
            );
        }
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Arrow,
            right,
        } => {
            // `->` binds tightest (see `crate::dialect`): the right side is
            // the field's name.
            let Expr::Identifier(id) = right.as_ref() else {
                return Err(PlanError::Syntax(format!(
                    "syntax error: expected a field name after ->, found {right}"
                )));
            };
            let field = id.value.clone();
            *e = call("get_field", vec![*left.clone(), string(&field)]);
        }
        Expr::BinaryOp {
            left,
            op: op @ BinaryOperator::Plus,
            right,
        } if is_text(left) || is_text(right) => {
            // ksqlDB concatenates strings with `+`.
            *op = BinaryOperator::StringConcat;
        }
        Expr::Substring {
            expr,
            substring_from,
            substring_for,
            ..
        } => {
            // ksqlDB's SUBSTRING (negative positions count from the end).
            let mut args = vec![*expr.clone()];
            args.extend(substring_from.as_deref().cloned());
            args.extend(substring_for.as_deref().cloned());
            *e = call("substring", args);
        }
        Expr::Function(f)
            if !f.name.to_string().eq_ignore_ascii_case("COUNT")
                && matches!(&f.args, FunctionArguments::List(l)
                    if matches!(l.args.as_slice(), [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)])) =>
        {
            // ksqlDB reads `f(*)` as a call without arguments.
            return Err(PlanError::Type(format!(
                "Function '{}' does not accept parameters ().",
                f.name.to_string().to_ascii_lowercase()
            )));
        }
        Expr::Function(f)
            if f.name.to_string().eq_ignore_ascii_case("COALESCE")
                && matches!(&f.args, FunctionArguments::List(l) if l.args.is_empty()) =>
        {
            return Err(PlanError::Type(
                "Function 'COALESCE' does not accept parameters ().".into(),
            ));
        }
        Expr::Like {
            pattern,
            escape_char,
            ..
        } if escape_char
            .as_ref()
            .is_some_and(|c| !matches!(&c.value, Value::SingleQuotedString(s) if s == "\\")) =>
        {
            // DataFusion escapes with `\` only: translate the pattern.
            let Some(Value::SingleQuotedString(c)) = escape_char.take().map(|c| c.value) else {
                return Err(PlanError::Syntax(
                    "syntax error: ESCAPE takes a one-character string".into(),
                ));
            };
            if c.chars().count() != 1 {
                return Err(PlanError::Invalid(format!(
                    "Escape string must be a single character: '{c}'"
                )));
            }
            **pattern = call("__brook_like_escape", vec![(**pattern).clone(), string(&c)]);
        }
        Expr::Function(f) if is_lambda_function(&f.name.to_string()) => {
            let name = f.name.to_string().to_ascii_uppercase();
            let FunctionArguments::List(l) = &mut f.args else {
                return Ok(());
            };
            // The number of parameters of each lambda, in order.
            let mut lambdas = Vec::new();
            for arg in &mut l.args {
                if let Some((params, body)) = lambda_parts(arg)? {
                    lambdas.push(params.len());
                    *arg = FunctionArg::Unnamed(FunctionArgExpr::Expr(lambda(params, body)));
                }
            }
            let target = match (name.as_str(), lambdas.as_slice(), l.args.len()) {
                ("TRANSFORM", [1], 2) => "array_transform",
                ("TRANSFORM", [2, 2], 3) => "__brook_map_transform",
                ("FILTER", [1], 2) => "array_filter",
                ("FILTER", [2], 2) => "__brook_map_filter",
                ("REDUCE", [2 | 3], 3) => "__brook_reduce",
                // FILTER without a lambda is the SQL aggregate clause's word.
                ("FILTER", [], _) => return Ok(()),
                _ => {
                    return Err(PlanError::Invalid(format!(
                        "{name} takes {}",
                        match name.as_str() {
                            "TRANSFORM" => "an array and a lambda x => …, or a map and two lambdas (k, v) => …",
                            "FILTER" => "an array and a lambda x => …, or a map and a lambda (k, v) => …",
                            _ => "an array, an initial state and a lambda (s, x) => …, or a map, an initial state and a lambda (s, k, v) => …",
                        }
                    )))
                }
            };
            f.name = ObjectName::from(vec![Ident::new(target)]);
            if let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(init))) =
                l.args.get_mut(1).filter(|_| target == "__brook_reduce")
            {
                // An integer literal is an INT in ksqlDB, and the state's
                // type must be known when the lambda is planned (Brook
                // narrows literals only after planning).
                if literal_type(init) == Some("INTEGER") {
                    *init = Expr::Cast {
                        kind: ast::CastKind::Cast,
                        expr: Box::new(init.clone()),
                        data_type: ast::DataType::Int(None),
                        array: false,
                        format: None,
                    };
                }
            }
        }
        Expr::Function(f) if is_time_arithmetic(&f.name.to_string()) => {
            // TIMESTAMPADD(SECONDS, 5, ts): the unit is a word, not a column.
            if let FunctionArguments::List(l) = &mut f.args {
                if let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(first))) = l.args.first_mut()
                {
                    if let Expr::Identifier(unit) = first {
                        // Only a time unit word; a column stays a column
                        // (and fails the function's type check).
                        if is_time_unit(&unit.value) && unit.quote_style.is_none() {
                            *first = string(&unit.value);
                        }
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// An expression as ksqlDB prints it in messages: operations in
/// parentheses, function names in upper case, booleans in lower case.
pub fn ksql_display(e: &Expr) -> String {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => format!("'{s}'"),
            Value::Boolean(b) => b.to_string(),
            Value::Null => "null".into(),
            other => other.to_string(),
        },
        Expr::Identifier(i) => i.value.clone(),
        Expr::CompoundIdentifier(parts) => parts
            .iter()
            .map(|i| i.value.as_str())
            .collect::<Vec<_>>()
            .join("."),
        Expr::BinaryOp { left, op, right } => {
            format!("({} {op} {})", ksql_display(left), ksql_display(right))
        }
        Expr::Nested(inner) => ksql_display(inner),
        Expr::UnaryOp { op, expr } => format!("{op}{}", ksql_display(expr)),
        Expr::Function(f) => {
            let args = match &f.args {
                FunctionArguments::List(l) => l
                    .args
                    .iter()
                    .map(|a| match a {
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => ksql_display(e),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                _ => String::new(),
            };
            format!("{}({args})", f.name.to_string().to_ascii_uppercase())
        }
        other => other.to_string(),
    }
}

/// The ksqlDB type name of a literal, as its syntax types it.
pub fn literal_type(e: &Expr) -> Option<&'static str> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(_) => Some("STRING"),
            Value::Boolean(_) => Some("BOOLEAN"),
            Value::Number(n, _) if n.contains(['.', 'e', 'E']) => Some("DECIMAL"),
            Value::Number(n, _) if n.parse::<i32>().is_ok() => Some("INTEGER"),
            Value::Number(..) => Some("BIGINT"),
            _ => None,
        },
        Expr::Nested(inner) => literal_type(inner),
        _ => None,
    }
}

/// A string literal or a concatenation: `+` next to it concatenates.
fn is_text(e: &Expr) -> bool {
    match e {
        Expr::Value(v) => matches!(v.value, Value::SingleQuotedString(_)),
        Expr::BinaryOp {
            op: BinaryOperator::StringConcat,
            ..
        } => true,
        Expr::Nested(inner) => is_text(inner),
        _ => false,
    }
}

/// ksqlDB's functions that take lambdas.
fn is_lambda_function(name: &str) -> bool {
    ["TRANSFORM", "FILTER", "REDUCE"]
        .iter()
        .any(|n| n.eq_ignore_ascii_case(name))
}

/// A lambda argument's parameter names and body: `x => e` (a named
/// argument) or `(s, x) => e` (an argument named by a tuple).
fn lambda_parts(arg: &FunctionArg) -> Result<Option<(Vec<Ident>, Expr)>> {
    let (params, body) = match arg {
        FunctionArg::Named {
            name,
            arg: FunctionArgExpr::Expr(body),
            operator: FunctionArgOperator::RightArrow,
        } => (vec![name.clone()], body),
        FunctionArg::ExprNamed {
            name,
            arg: FunctionArgExpr::Expr(body),
            operator: FunctionArgOperator::RightArrow,
        } => {
            let names = match name {
                Expr::Identifier(i) => vec![Some(i.clone())],
                Expr::Nested(inner) => match inner.as_ref() {
                    Expr::Identifier(i) => vec![Some(i.clone())],
                    _ => vec![None],
                },
                Expr::Tuple(items) => items
                    .iter()
                    .map(|e| match e {
                        Expr::Identifier(i) => Some(i.clone()),
                        _ => None,
                    })
                    .collect(),
                _ => vec![None],
            };
            let Some(names) = names.into_iter().collect::<Option<Vec<_>>>() else {
                return Err(PlanError::Syntax(format!(
                    "syntax error: a lambda's parameters must be names, found {name}"
                )));
            };
            (names, body)
        }
        _ => return Ok(None),
    };
    Ok(Some((params, body.clone())))
}

/// `(a, b) => body` as a DataFusion lambda. The parameters are quoted, so
/// that DataFusion keeps their case as it does the body's column names.
fn lambda(params: Vec<Ident>, mut body: Expr) -> Expr {
    let names: Vec<String> = params
        .iter()
        .map(|p| {
            if p.quote_style.is_none() {
                p.value.to_ascii_uppercase()
            } else {
                p.value.clone()
            }
        })
        .collect();
    let _ = visit_expressions_mut(&mut body, |e| {
        if let Expr::Identifier(i) = e {
            if names.contains(&i.value) {
                *i = Ident::with_quote('"', i.value.clone());
            }
        }
        ControlFlow::<()>::Continue(())
    });
    let mut params: Vec<ast::LambdaFunctionParameter> = names
        .into_iter()
        .map(|n| ast::LambdaFunctionParameter {
            name: Ident::with_quote('"', n),
            data_type: None,
        })
        .collect();
    Expr::Lambda(ast::LambdaFunction {
        params: if params.len() == 1 {
            ast::OneOrManyWithParens::One(params.remove(0))
        } else {
            ast::OneOrManyWithParens::Many(params)
        },
        body: Box::new(body),
        syntax: ast::LambdaSyntax::Arrow,
    })
}

/// A time unit word the time functions read (`SECONDS`, `DAY`, …).
fn is_time_unit(word: &str) -> bool {
    crate::functions::scalar::unit_ms(word).is_ok()
}

fn is_time_arithmetic(name: &str) -> bool {
    [
        "TIMESTAMPADD",
        "TIMESTAMPSUB",
        "DATEADD",
        "DATESUB",
        "TIMEADD",
        "TIMESUB",
    ]
    .iter()
    .any(|n| n.eq_ignore_ascii_case(name))
}

/// Rewrites ksqlDB-only syntax in every expression of `node`.
pub fn rewrite_ksql<V: ast::VisitMut>(node: &mut V) -> Result<()> {
    let mut error = None;
    let _ = visit_expressions_mut(node, |e| match rewrite(e) {
        Ok(()) => ControlFlow::Continue(()),
        Err(err) => {
            error = Some(err);
            ControlFlow::Break(())
        }
    });
    error.map_or(Ok(()), Err)
}
