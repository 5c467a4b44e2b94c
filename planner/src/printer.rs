//! The statement printer: a parsed [`Statement`] back to ksqlDB text.
//!
//! Printing is the inverse of parsing: `parse(print(s)) == s` for every
//! statement the parser accepts (the round-trip tests check it over the
//! `.slt` files, the QTT statements and generated SQL). Names are quoted
//! only when they would not read back the same bare (lower case, odd
//! characters, keywords); queries and expressions use sqlparser's printer,
//! which keeps the quoting they were written with.

use std::fmt::{self, Write as _};

use datafusion::sql::sqlparser::ast::{Expr, Query};
use datafusion::sql::sqlparser::keywords::ALL_KEYWORDS;

use crate::catalog::{HeaderSource, SourceKind};
use crate::parser::{ColumnSpec, Emit, ExplainTarget, Props, ShowWhat, Statement};
use crate::types::SqlType;

/// A name as ksqlDB text: bare when it reads back as itself, `"quoted"`
/// otherwise.
pub fn ident(name: &str) -> String {
    let bare = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && ALL_KEYWORDS.binary_search(&name).is_err();
    if bare {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// A string literal: `'it''s'`.
fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A type as ksqlDB text, with struct field names quoted where needed.
pub fn type_text(ty: &SqlType) -> String {
    match ty {
        SqlType::Array(e) => format!("ARRAY<{}>", type_text(e)),
        SqlType::Map(k, v) => format!("MAP<{}, {}>", type_text(k), type_text(v)),
        SqlType::Struct(fields) => {
            let fields: Vec<String> = fields
                .iter()
                .map(|(n, t)| format!("{} {}", ident(n), type_text(t)))
                .collect();
            format!("STRUCT<{}>", fields.join(", "))
        }
        SqlType::Custom(name) => ident(name),
        other => other.to_string(),
    }
}

fn kind(k: SourceKind) -> &'static str {
    match k {
        SourceKind::Stream => "STREAM",
        SourceKind::Table => "TABLE",
    }
}

fn column(c: &ColumnSpec) -> String {
    let mut out = format!("{} {}", ident(&c.name), type_text(&c.ty));
    match &c.header {
        Some(HeaderSource::All) => out.push_str(" HEADERS"),
        Some(HeaderSource::Key(k)) => {
            let _ = write!(out, " HEADER({})", quoted(k));
        }
        None => {}
    }
    if c.primary {
        out.push_str(" PRIMARY KEY");
    } else if c.key {
        out.push_str(" KEY");
    }
    out
}

fn props(p: &Props) -> String {
    if p.is_empty() {
        return String::new();
    }
    let items: Vec<String> = p.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(" WITH ({})", items.join(", "))
}

fn exprs(es: &[Expr]) -> String {
    es.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn emit_text(e: Emit) -> &'static str {
    match e {
        Emit::Changes => "EMIT CHANGES",
        Emit::Final => "EMIT FINAL",
    }
}

/// A query with its ksqlDB tail: `PARTITION BY` and `EMIT` go before the
/// `LIMIT`, where ksqlDB's grammar has them.
fn query_text(query: &Query, partition_by: Option<&[Expr]>, emit: Option<Emit>) -> String {
    let mut q = query.clone();
    let limit = q.limit_clause.take();
    let mut out = windows(&join_windows(&q.to_string()));
    if let Some(p) = partition_by {
        let _ = write!(out, " PARTITION BY {}", exprs(p));
    }
    if let Some(e) = emit {
        let _ = write!(out, " {}", emit_text(e));
    }
    if let Some(l) = limit {
        let _ = write!(out, "{l}");
    }
    out
}

/// Writes back the clauses the parser keeps as table hints
/// (`WITH (NAME(args))`), each through `render`, which gets the hint's
/// arguments as printed (`None` keeps the hint as it is).
fn rewrite_hints(text: &str, name: &str, render: impl Fn(&[&str]) -> Option<String>) -> String {
    let marker = format!("WITH ({name}(");
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(&marker) {
        let args_start = at + marker.len();
        let Some(len) = rest[args_start..].find("))") else {
            break;
        };
        let args: Vec<&str> = rest[args_start..args_start + len].split(", ").collect();
        out.push_str(&rest[..at]);
        match render(&args) {
            Some(clause) => out.push_str(&clause),
            None => out.push_str(&rest[at..args_start + len + 2]),
        }
        rest = &rest[args_start + len + 2..];
    }
    out.push_str(rest);
    out
}

/// A join window (`WITH (__BROOK_WITHIN(b, a[, g]))`) in ksqlDB's words:
/// `WITHIN (b MILLISECONDS, a MILLISECONDS) [GRACE PERIOD g MILLISECONDS]`.
fn join_windows(text: &str) -> String {
    rewrite_hints(text, crate::parser::WITHIN, |args| match args {
        [b, a, g @ ..] => {
            let mut clause = format!("WITHIN ({b} MILLISECONDS, {a} MILLISECONDS)");
            if let [g] = g {
                let _ = write!(clause, " GRACE PERIOD {g} MILLISECONDS");
            }
            Some(clause)
        }
        _ => None,
    })
}

/// A `WINDOW` clause (`WITH (__BROOK_WINDOW('KIND', size, advance, grace,
/// retention))`, -1 for what was not given) in ksqlDB's words.
fn windows(text: &str) -> String {
    rewrite_hints(text, crate::parser::WINDOW, |args| {
        let [kind, size, advance, grace, retention] = args else {
            return None;
        };
        let kind = kind.trim_matches('\'');
        let given = |v: &str| !v.starts_with('-');
        let mut items = vec![if kind == "SESSION" {
            format!("{size} MILLISECONDS")
        } else {
            format!("SIZE {size} MILLISECONDS")
        }];
        if given(advance) {
            items.push(format!("ADVANCE BY {advance} MILLISECONDS"));
        }
        if given(retention) {
            items.push(format!("RETENTION {retention} MILLISECONDS"));
        }
        if given(grace) {
            items.push(format!("GRACE PERIOD {grace} MILLISECONDS"));
        }
        Some(format!("WINDOW {kind} ({})", items.join(", ")))
    })
}

impl fmt::Display for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Statement::CreateSource {
                kind: k,
                name,
                if_not_exists,
                or_replace,
                source,
                columns,
                props: p,
            } => {
                f.write_str("CREATE ")?;
                if *or_replace {
                    f.write_str("OR REPLACE ")?;
                }
                if *source {
                    f.write_str("SOURCE ")?;
                }
                write!(f, "{} ", kind(*k))?;
                if *if_not_exists {
                    f.write_str("IF NOT EXISTS ")?;
                }
                f.write_str(&ident(name))?;
                if !columns.is_empty() {
                    let cols: Vec<String> = columns.iter().map(column).collect();
                    write!(f, " ({})", cols.join(", "))?;
                }
                f.write_str(&props(p))
            }
            Statement::CreateAsSelect {
                kind: k,
                name,
                if_not_exists,
                or_replace,
                props: p,
                query,
                partition_by,
                emit,
            } => {
                f.write_str("CREATE ")?;
                if *or_replace {
                    f.write_str("OR REPLACE ")?;
                }
                write!(f, "{} ", kind(*k))?;
                if *if_not_exists {
                    f.write_str("IF NOT EXISTS ")?;
                }
                write!(
                    f,
                    "{}{} AS {}",
                    ident(name),
                    props(p),
                    query_text(query, partition_by.as_deref(), *emit)
                )
            }
            Statement::InsertValues {
                target,
                columns,
                rows,
            } => {
                write!(f, "INSERT INTO {}", ident(target))?;
                if !columns.is_empty() {
                    let cols: Vec<String> = columns.iter().map(|c| ident(c)).collect();
                    write!(f, " ({})", cols.join(", "))?;
                }
                let rows: Vec<String> = rows.iter().map(|r| format!("({})", exprs(r))).collect();
                write!(f, " VALUES {}", rows.join(", "))
            }
            Statement::InsertSelect {
                target,
                query,
                partition_by,
            } => write!(
                f,
                "INSERT INTO {} {}",
                ident(target),
                query_text(query, partition_by.as_deref(), None)
            ),
            Statement::Select {
                query,
                emit,
                partition_by,
            } => f.write_str(&query_text(query, partition_by.as_deref(), *emit)),
            Statement::CopyTo { query, emit } => {
                write!(f, "COPY ({}) TO STDOUT", query_text(query, None, *emit))
            }
            Statement::Show { what, extended } => {
                let what = match what {
                    ShowWhat::Streams => "STREAMS",
                    ShowWhat::Tables => "TABLES",
                    ShowWhat::Queries => "QUERIES",
                    ShowWhat::Topics => "TOPICS",
                    ShowWhat::Properties => "PROPERTIES",
                    ShowWhat::Functions => "FUNCTIONS",
                    ShowWhat::Types => "TYPES",
                    ShowWhat::Variables => "VARIABLES",
                };
                write!(f, "SHOW {what}")?;
                if *extended {
                    f.write_str(" EXTENDED")?;
                }
                Ok(())
            }
            Statement::DescribeFunction { name } => {
                write!(f, "DESCRIBE FUNCTION {}", ident(name))
            }
            Statement::Describe { name, extended } => {
                f.write_str("DESCRIBE ")?;
                if *extended {
                    f.write_str("EXTENDED ")?;
                }
                f.write_str(&ident(name))
            }
            Statement::Drop {
                kind: k,
                name,
                if_exists,
                delete_topic,
            } => {
                write!(f, "DROP {} ", kind(*k))?;
                if *if_exists {
                    f.write_str("IF EXISTS ")?;
                }
                f.write_str(&ident(name))?;
                if *delete_topic {
                    f.write_str(" DELETE TOPIC")?;
                }
                Ok(())
            }
            Statement::CreateType {
                name,
                ty,
                if_not_exists,
            } => {
                f.write_str("CREATE TYPE ")?;
                if *if_not_exists {
                    f.write_str("IF NOT EXISTS ")?;
                }
                write!(f, "{} AS {}", ident(name), type_text(ty))
            }
            Statement::DropType { name, if_exists } => {
                f.write_str("DROP TYPE ")?;
                if *if_exists {
                    f.write_str("IF EXISTS ")?;
                }
                f.write_str(&ident(name))
            }
            Statement::Alter {
                kind: k,
                name,
                columns,
            } => {
                let adds: Vec<String> = columns
                    .iter()
                    .map(|c| format!("ADD COLUMN {}", column(c)))
                    .collect();
                write!(f, "ALTER {} {} {}", kind(*k), ident(name), adds.join(", "))
            }
            Statement::Terminate { id } => {
                write!(f, "TERMINATE {}", id.as_deref().map_or("ALL".into(), ident))
            }
            Statement::Explain { target } => match target {
                ExplainTarget::Query(id) => write!(f, "EXPLAIN {}", ident(id)),
                ExplainTarget::Statement(s) => write!(f, "EXPLAIN {s}"),
            },
            Statement::PauseResume { id, pause } => write!(
                f,
                "{} {}",
                if *pause { "PAUSE" } else { "RESUME" },
                id.as_deref().map_or("ALL".into(), ident)
            ),
            Statement::Flush => f.write_str("FLUSH"),
            Statement::Set { name, value } => {
                write!(f, "SET {} = {}", quoted(name), quoted(value))
            }
            Statement::Unset { name } => write!(f, "UNSET {}", quoted(name)),
            Statement::Define { name, value } => {
                write!(f, "DEFINE {} = {}", ident(name), quoted(value))
            }
            Statement::Undefine { name } => write!(f, "UNDEFINE {}", ident(name)),
            Statement::Print {
                topic,
                from_beginning,
                interval,
                limit,
            } => {
                write!(f, "PRINT {}", quoted(topic))?;
                if *from_beginning {
                    f.write_str(" FROM BEGINNING")?;
                }
                if *interval != 1 {
                    write!(f, " INTERVAL {interval}")?;
                }
                if let Some(l) = limit {
                    write!(f, " LIMIT {l}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::parse_statement;

    fn round_trip(sql: &str) -> String {
        let first = parse_statement(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let printed = first.statement.to_string();
        let again = parse_statement(&printed).unwrap_or_else(|e| panic!("{printed}: {e}"));
        assert_eq!(
            first.statement, again.statement,
            "{sql}\nprinted as {printed}"
        );
        printed
    }

    #[test]
    fn every_statement_kind_round_trips() {
        for sql in [
            "CREATE OR REPLACE SOURCE STREAM IF NOT EXISTS s (id INT KEY, \"low\" STRING, \
             hs ARRAY<STRUCT<key STRING, value BYTES>> HEADERS, t BYTES HEADER('trace-id')) \
             WITH (kafka_topic='t', partitions=2, wrap_single_value=false)",
            "CREATE TABLE t (id BIGINT PRIMARY KEY, m MAP<STRING, STRUCT<\"a\" DECIMAL(4, 2)>>, c my_type)",
            "CREATE STREAM x WITH (kafka_topic='x') AS SELECT id, v * 2 AS w FROM s \
             WHERE v > 1 PARTITION BY w",
            "CREATE TABLE agg AS SELECT id, COUNT(*) AS n FROM s GROUP BY id HAVING COUNT(*) > 2",
            "INSERT INTO s (id, v) VALUES (1, 'a'), (2, NULL)",
            "INSERT INTO s VALUES (1, ARRAY[1, 2], STRUCT(a := 1), MAP('k' := 2))",
            "INSERT INTO s SELECT * FROM t PARTITION BY v",
            "SELECT * FROM s WHERE v LIKE 'a%' EMIT CHANGES LIMIT 3",
            "SELECT id, s->f, CAST(m AS MAP<STRING, INT>), TRANSFORM(xs, x => x + 1) FROM s EMIT FINAL",
            "SELECT * FROM t WHERE id = 3",
            "CREATE TABLE w AS SELECT id, COUNT(*) FROM s WINDOW TUMBLING (SIZE 30 SECONDS) GROUP BY id",
            "CREATE TABLE f AS SELECT id, COUNT(*) FROM s WINDOW TUMBLING (SIZE 30 SECONDS) GROUP BY id EMIT FINAL",
            "CREATE TABLE w AS SELECT id, COUNT(*) FROM s WINDOW HOPPING (SIZE 30 SECONDS, ADVANCE BY 5 SECONDS, GRACE PERIOD 1 MINUTE, RETENTION 2 DAYS) WHERE id > 1 GROUP BY id",
            "SELECT id, COUNT(*) FROM s WINDOW SESSION (30 SECONDS) GROUP BY id EMIT CHANGES",
            "SELECT * FROM l AS a JOIN r b WITHIN 10 SECONDS ON a.id = b.id EMIT CHANGES",
            "CREATE STREAM j AS SELECT * FROM l LEFT JOIN r WITHIN (1 MINUTE, 2 HOURS) GRACE PERIOD 5 SECONDS ON l.id = r.id",
            "SELECT * FROM s WHERE x BETWEEN s->a AND 3 AND s->f->g + 1 > 2 EMIT CHANGES",
            "SELECT REDUCE(m, 0, (s, k, v) => s + v), TRANSFORM(m, (k, v) => k, (k, v) => v) FROM s",
            "COPY (SELECT * FROM s EMIT CHANGES) TO STDOUT",
            "SHOW STREAMS EXTENDED",
            "LIST TYPES",
            "DESCRIBE FUNCTION substring",
            "DESCRIBE EXTENDED \"quoted name\"",
            "DROP TABLE IF EXISTS t DELETE TOPIC",
            "CREATE TYPE IF NOT EXISTS addr AS STRUCT<number INT, street STRING>",
            "DROP TYPE IF EXISTS addr",
            "ALTER STREAM s ADD COLUMN a INT, ADD b ARRAY<STRING>",
            "TERMINATE ALL",
            "TERMINATE CSAS_X_1",
            "EXPLAIN CSAS_X_1",
            "EXPLAIN SELECT * FROM s EMIT CHANGES",
            "PAUSE ALL",
            "RESUME q1",
            "FLUSH",
            "SET 'auto.offset.reset' = 'earliest'",
            "UNSET 'it''s'",
            "DEFINE suffix = 'ev''ents'",
            "UNDEFINE \"lower\"",
            "PRINT 'topic' FROM BEGINNING INTERVAL 2 LIMIT 10",
            "PRINT topic",
        ] {
            round_trip(sql);
        }
    }

    #[test]
    fn struct_access_binds_tightest() {
        let printed = round_trip("SELECT s->f + 1, x BETWEEN s->a AND 3 FROM t");
        assert_eq!(printed, "SELECT S -> F + 1, X BETWEEN S -> A AND 3 FROM T");
        let Statement::Select { query, .. } = parse_statement(&printed).unwrap().statement else {
            panic!("not a select");
        };
        let datafusion::sql::sqlparser::ast::SetExpr::Select(select) = query.body.as_ref() else {
            panic!("not a select body");
        };
        assert!(
            matches!(
                &select.projection[0],
                datafusion::sql::sqlparser::ast::SelectItem::UnnamedExpr(Expr::BinaryOp {
                    op: datafusion::sql::sqlparser::ast::BinaryOperator::Plus,
                    ..
                })
            ),
            "{:?}",
            select.projection[0]
        );
    }

    #[test]
    fn names_are_quoted_only_when_needed() {
        assert_eq!(ident("ABC_1"), "ABC_1");
        assert_eq!(ident("abc"), "\"abc\"");
        assert_eq!(ident("SELECT"), "\"SELECT\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(ident("1R"), "\"1R\"");
        assert_eq!(
            round_trip("select `Id`, v from s emit changes limit 2"),
            "SELECT \"Id\", V FROM S EMIT CHANGES LIMIT 2"
        );
    }
}
