//! Statements sqlparser does not know (`CREATE STREAM`, `SHOW`, `PRINT`,
//! `ALTER`, `DROP`, `INSERT … VALUES`, `COPY`), and the depth check of
//! every statement.

use datafusion::sql::sqlparser::ast::{
    self, CopySource, CopyTarget, Expr, ObjectName, SetExpr, TableObject, Value,
};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use super::tokens::{
    check_chains, is_word, normalize_tokens, rewrite_collection_casts, syntax, take_partition_by,
};
use super::tree::{ColumnSpec, Emit, ExplainTarget, PropValue, Props, ShowWhat, Statement};
use super::window::{rewrite_join_windows, rewrite_windows};
use super::{depth, RECURSION_LIMIT};
use crate::catalog::SourceKind;
use crate::dialect::KsqlDialect;
use crate::error::{PlanError, Result};

pub(super) fn parse_one(tokens: Vec<TokenWithSpan>) -> Result<Statement> {
    check_chains(&tokens)?;
    let meaningful: Vec<usize> = tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| !matches!(t.token, Token::Whitespace(_) | Token::EOF))
        .map(|(i, _)| i)
        .collect();
    if let Some(&first) = meaningful.first() {
        if is_word(&tokens[first].token, "EXPLAIN") {
            // `EXPLAIN query_id` or `EXPLAIN statement`.
            if let [_, id] = meaningful.as_slice() {
                if let Token::Word(w) = &tokens[*id].token {
                    let statement_word = ["SELECT", "CREATE", "INSERT", "WITH"]
                        .iter()
                        .any(|k| w.value.eq_ignore_ascii_case(k));
                    if !statement_word {
                        let id = if w.quote_style.is_some() {
                            w.value.clone()
                        } else {
                            w.value.to_ascii_uppercase()
                        };
                        return Ok(Statement::Explain {
                            target: ExplainTarget::Query(id),
                        });
                    }
                }
            }
            let inner = parse_one(tokens[first + 1..].to_vec())?;
            if !matches!(
                inner,
                Statement::Select { .. }
                    | Statement::CreateAsSelect { .. }
                    | Statement::InsertSelect { .. }
            ) {
                return Err(PlanError::Invalid(
                    "EXPLAIN takes a query id, a SELECT, a CREATE … AS SELECT or an INSERT … SELECT"
                        .into(),
                ));
            }
            return Ok(Statement::Explain {
                target: ExplainTarget::Statement(Box::new(inner)),
            });
        }
    }
    let (tokens, emit) = normalize_tokens(tokens);
    let tokens = rewrite_collection_casts(tokens);
    let tokens = rewrite_join_windows(tokens)?;
    let tokens = rewrite_windows(tokens)?;
    let (tokens, partition_by) = take_partition_by(tokens)?;
    let dialect = KsqlDialect;
    let mut p = Parser::new(&dialect)
        .with_recursion_limit(RECURSION_LIMIT)
        .with_tokens_with_locations(tokens);
    let first = p.peek_token().token;
    let mut stmt = if is_word(&first, "CREATE") {
        let mut stmt = parse_create(&mut p)?;
        if let Statement::CreateAsSelect {
            partition_by: p,
            emit: e,
            ..
        } = &mut stmt
        {
            *p = partition_by.clone();
            *e = emit.filter(|e| *e == Emit::Final);
        }
        stmt
    } else if is_word(&first, "SELECT") || is_word(&first, "WITH") || first == Token::LParen {
        let query = p.parse_query().map_err(syntax)?;
        Statement::Select {
            query,
            emit,
            partition_by: partition_by.clone(),
        }
    } else if is_word(&first, "INSERT") {
        let mut stmt = parse_insert(&mut p)?;
        if let Statement::InsertSelect {
            partition_by: p, ..
        } = &mut stmt
        {
            *p = partition_by.clone();
        }
        stmt
    } else if is_word(&first, "COPY") {
        parse_copy(&mut p, emit)?
    } else if is_word(&first, "SHOW") || is_word(&first, "LIST") {
        p.next_token();
        parse_show(&mut p)?
    } else if is_word(&first, "DESCRIBE") {
        p.next_token();
        if is_word(&p.peek_token().token, "FUNCTION") {
            p.next_token();
            let name = p.parse_identifier().map_err(syntax)?.value;
            Statement::DescribeFunction { name }
        } else {
            let extended = p.parse_keyword(Keyword::EXTENDED);
            Statement::Describe {
                name: parse_name(&mut p)?,
                extended,
            }
        }
    } else if is_word(&first, "DROP") {
        parse_drop(&mut p)?
    } else if is_word(&first, "ALTER") {
        parse_alter(&mut p)?
    } else if is_word(&first, "TERMINATE") {
        p.next_token();
        if p.parse_keyword(Keyword::ALL) {
            Statement::Terminate { id: None }
        } else {
            Statement::Terminate {
                id: Some(parse_name(&mut p)?),
            }
        }
    } else if is_word(&first, "PAUSE") || is_word(&first, "RESUME") {
        p.next_token();
        let id = if p.parse_keyword(Keyword::ALL) {
            None
        } else {
            Some(parse_name(&mut p)?)
        };
        Statement::PauseResume {
            id,
            pause: is_word(&first, "PAUSE"),
        }
    } else if is_word(&first, "PRINT") {
        p.next_token();
        parse_print(&mut p)?
    } else if is_word(&first, "FLUSH") {
        p.next_token();
        Statement::Flush
    } else if is_word(&first, "SET") {
        p.next_token();
        let name = p.parse_literal_string().map_err(syntax)?;
        p.expect_token(&Token::Eq).map_err(syntax)?;
        let value = p.parse_literal_string().map_err(syntax)?;
        Statement::Set { name, value }
    } else if is_word(&first, "UNSET") {
        p.next_token();
        Statement::Unset {
            name: p.parse_literal_string().map_err(syntax)?,
        }
    } else if is_word(&first, "DEFINE") {
        p.next_token();
        let name = p.parse_identifier().map_err(syntax)?.value;
        p.expect_token(&Token::Eq).map_err(syntax)?;
        let value = p.parse_literal_string().map_err(syntax)?;
        Statement::Define { name, value }
    } else if is_word(&first, "UNDEFINE") {
        p.next_token();
        Statement::Undefine {
            name: p.parse_identifier().map_err(syntax)?.value,
        }
    } else {
        return Err(syntax(
            p.expected::<()>("a statement", p.peek_token()).unwrap_err(),
        ));
    };
    check_depth(&mut stmt)?;
    if emit.is_some()
        && !matches!(
            stmt,
            Statement::Select { .. }
                | Statement::CopyTo { .. }
                | Statement::CreateAsSelect { .. }
                | Statement::InsertSelect { .. }
        )
    {
        return Err(PlanError::Syntax(
            "syntax error: EMIT is only allowed at the end of a SELECT".into(),
        ));
    }
    let next = p.peek_token();
    if next.token != Token::EOF {
        return Err(syntax(
            p.expected::<()>("end of statement", next).unwrap_err(),
        ));
    }
    Ok(stmt)
}

/// Refuses a statement whose expressions nest deeper than
/// [`MAX_EXPR_DEPTH`] (SQLSTATE 54001).
fn check_depth(stmt: &mut Statement) -> Result<()> {
    match stmt {
        Statement::CreateAsSelect {
            query,
            partition_by,
            ..
        }
        | Statement::InsertSelect {
            query,
            partition_by,
            ..
        }
        | Statement::Select {
            query,
            partition_by,
            ..
        } => {
            depth::check(query)?;
            depth::check(partition_by)
        }
        Statement::CopyTo { query, .. } => depth::check(query),
        Statement::InsertValues { rows, .. } => depth::check(rows),
        _ => Ok(()),
    }
}

fn parse_name(p: &mut Parser) -> Result<String> {
    let name = p.parse_object_name(false).map_err(syntax)?;
    object_name(&name)
}

/// The single-part name of an object.
pub fn object_name(name: &ObjectName) -> Result<String> {
    match name.0.as_slice() {
        [part] => part
            .as_ident()
            .map(|i| i.value.clone())
            .ok_or_else(|| PlanError::Syntax(format!("syntax error: invalid name {name}"))),
        _ => Err(PlanError::Unsupported(format!(
            "qualified names such as {name} are not supported"
        ))),
    }
}

fn parse_source_kind(p: &mut Parser) -> Result<SourceKind> {
    let t = p.next_token();
    if is_word(&t.token, "STREAM") {
        Ok(SourceKind::Stream)
    } else if is_word(&t.token, "TABLE") {
        Ok(SourceKind::Table)
    } else {
        Err(syntax(p.expected::<()>("STREAM or TABLE", t).unwrap_err()))
    }
}

fn parse_create(p: &mut Parser) -> Result<Statement> {
    p.next_token(); // CREATE
    if is_word(&p.peek_token().token, "TYPE") {
        p.next_token();
        let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
        let name = parse_name(p)?;
        p.expect_keyword(Keyword::AS).map_err(syntax)?;
        let ty = crate::types::parse_type(p).map_err(syntax)?;
        return Ok(Statement::CreateType {
            name,
            ty,
            if_not_exists,
        });
    }
    let or_replace = p.parse_keywords(&[Keyword::OR, Keyword::REPLACE]);
    let source = p.parse_keyword(Keyword::SOURCE);
    let kind = parse_source_kind(p)?;
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = parse_name(p)?;
    let mut columns = Vec::new();
    if p.consume_token(&Token::LParen) {
        columns = p.parse_comma_separated(parse_column_spec).map_err(syntax)?;
        p.expect_token(&Token::RParen).map_err(syntax)?;
    }
    let props = if p.parse_keyword(Keyword::WITH) {
        parse_props(p)?
    } else {
        Vec::new()
    };
    if p.parse_keyword(Keyword::AS) {
        if !columns.is_empty() {
            return Err(PlanError::Syntax(
                "syntax error: a column list is not allowed with AS SELECT".into(),
            ));
        }
        let query = p.parse_query().map_err(syntax)?;
        return Ok(Statement::CreateAsSelect {
            kind,
            name,
            if_not_exists,
            or_replace,
            props,
            query,
            partition_by: None,
            emit: None,
        });
    }
    Ok(Statement::CreateSource {
        kind,
        name,
        if_not_exists,
        or_replace,
        source,
        columns,
        props,
    })
}

fn parse_column_spec(p: &mut Parser) -> Result<ColumnSpec, ParserError> {
    let name = p.parse_identifier()?.value;
    let ty = crate::types::parse_type(p)?;
    let header = if is_word(&p.peek_token().token, "HEADERS") {
        p.next_token();
        Some(crate::catalog::HeaderSource::All)
    } else if is_word(&p.peek_token().token, "HEADER") {
        p.next_token();
        p.expect_token(&Token::LParen)?;
        let key = p.parse_literal_string()?;
        p.expect_token(&Token::RParen)?;
        Some(crate::catalog::HeaderSource::Key(key))
    } else {
        None
    };
    let (key, primary) = if p.parse_keywords(&[Keyword::PRIMARY, Keyword::KEY]) {
        (true, true)
    } else if p.parse_keyword(Keyword::KEY) {
        (true, false)
    } else {
        (false, false)
    };
    Ok(ColumnSpec {
        name,
        ty,
        key,
        primary,
        header,
    })
}

fn parse_props(p: &mut Parser) -> Result<Props> {
    p.expect_token(&Token::LParen).map_err(syntax)?;
    let props = p
        .parse_comma_separated(|p| {
            let name = p.parse_identifier()?.value.to_ascii_uppercase();
            p.expect_token(&Token::Eq)?;
            let t = p.next_token();
            let value = match t.token {
                Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => PropValue::String(s),
                Token::Number(n, _) => PropValue::Number(n),
                Token::Word(w) if w.value.eq_ignore_ascii_case("TRUE") => PropValue::Bool(true),
                Token::Word(w) if w.value.eq_ignore_ascii_case("FALSE") => PropValue::Bool(false),
                _ => return p.expected("a literal value", t),
            };
            Ok((name, value))
        })
        .map_err(syntax)?;
    p.expect_token(&Token::RParen).map_err(syntax)?;
    Ok(props)
}

fn parse_insert(p: &mut Parser) -> Result<Statement> {
    let stmt = p.parse_statement().map_err(syntax)?;
    let ast::Statement::Insert(insert) = stmt else {
        return Err(PlanError::Internal(
            "INSERT did not parse as an insert".into(),
        ));
    };
    let TableObject::TableName(table) = &insert.table else {
        return Err(PlanError::Unsupported(
            "INSERT into a table function is not supported".into(),
        ));
    };
    let target = object_name(table)?;
    let columns = insert
        .columns
        .iter()
        .map(object_name)
        .collect::<Result<Vec<_>>>()?;
    let Some(source) = insert.source else {
        return Err(PlanError::Syntax(
            "syntax error: INSERT needs VALUES".into(),
        ));
    };
    match *source.body {
        SetExpr::Values(values) => Ok(Statement::InsertValues {
            target,
            columns,
            rows: values.rows.into_iter().map(|r| r.content).collect(),
        }),
        _ if columns.is_empty() => Ok(Statement::InsertSelect {
            target,
            query: source,
            partition_by: None,
        }),
        _ => Err(PlanError::Unsupported(
            "INSERT INTO … SELECT with a column list is not supported".into(),
        )),
    }
}

fn parse_copy(p: &mut Parser, emit: Option<Emit>) -> Result<Statement> {
    let stmt = p.parse_statement().map_err(syntax)?;
    match stmt {
        ast::Statement::Copy {
            source: CopySource::Query(query),
            to: true,
            target: CopyTarget::Stdout,
            ..
        } => Ok(Statement::CopyTo { query, emit }),
        _ => Err(PlanError::Unsupported(
            "only COPY (SELECT …) TO STDOUT is supported".into(),
        )),
    }
}

fn parse_print(p: &mut Parser) -> Result<Statement> {
    let t = p.next_token();
    let topic = match &t.token {
        Token::SingleQuotedString(s) => s.clone(),
        Token::Word(w) => w.value.clone(),
        _ => return Err(syntax(p.expected::<()>("a topic name", t).unwrap_err())),
    };
    let from_beginning = if p.parse_keyword(Keyword::FROM) {
        let t = p.next_token();
        if !is_word(&t.token, "BEGINNING") {
            return Err(syntax(p.expected::<()>("BEGINNING", t).unwrap_err()));
        }
        true
    } else {
        false
    };
    let mut interval = 1;
    let mut limit = None;
    loop {
        let t = p.peek_token();
        if is_word(&t.token, "INTERVAL") || is_word(&t.token, "SAMPLE") {
            p.next_token();
            interval = parse_count(p)?.max(1);
        } else if p.parse_keyword(Keyword::LIMIT) {
            limit = Some(parse_count(p)?);
        } else {
            break;
        }
    }
    Ok(Statement::Print {
        topic,
        from_beginning,
        interval,
        limit,
    })
}

fn parse_count(p: &mut Parser) -> Result<u64> {
    let t = p.next_token();
    match &t.token {
        Token::Number(n, _) => n
            .parse()
            .map_err(|_| PlanError::Syntax(format!("syntax error: {n} is not a valid count"))),
        _ => Err(syntax(p.expected::<()>("a number", t).unwrap_err())),
    }
}

fn parse_show(p: &mut Parser) -> Result<Statement> {
    let t = p.next_token();
    let what =
        match &t.token {
            w if is_word(w, "STREAMS") => ShowWhat::Streams,
            w if is_word(w, "TABLES") => ShowWhat::Tables,
            w if is_word(w, "QUERIES") => ShowWhat::Queries,
            w if is_word(w, "TOPICS") => ShowWhat::Topics,
            w if is_word(w, "PROPERTIES") => ShowWhat::Properties,
            w if is_word(w, "FUNCTIONS") => ShowWhat::Functions,
            w if is_word(w, "TYPES") => ShowWhat::Types,
            w if is_word(w, "VARIABLES") => ShowWhat::Variables,
            _ => return Err(syntax(
                p.expected::<()>(
                    "STREAMS, TABLES, QUERIES, TOPICS, PROPERTIES, FUNCTIONS, TYPES or VARIABLES",
                    t,
                )
                .unwrap_err(),
            )),
        };
    let extended = p.parse_keyword(Keyword::EXTENDED);
    Ok(Statement::Show { what, extended })
}

fn parse_alter(p: &mut Parser) -> Result<Statement> {
    p.next_token(); // ALTER
    let kind = parse_source_kind(p)?;
    let name = parse_name(p)?;
    let mut columns = Vec::new();
    loop {
        let t = p.next_token();
        if !is_word(&t.token, "ADD") {
            return Err(syntax(p.expected::<()>("ADD", t).unwrap_err()));
        }
        let _ = p.parse_keyword(Keyword::COLUMN);
        let spec = parse_column_spec(p).map_err(syntax)?;
        if spec.key {
            return Err(PlanError::Syntax(
                "syntax error: ALTER can only add value columns".into(),
            ));
        }
        columns.push(spec);
        if !p.consume_token(&Token::Comma) {
            break;
        }
    }
    Ok(Statement::Alter {
        kind,
        name,
        columns,
    })
}

fn parse_drop(p: &mut Parser) -> Result<Statement> {
    p.next_token(); // DROP
    if is_word(&p.peek_token().token, "TYPE") {
        p.next_token();
        let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let name = parse_name(p)?;
        return Ok(Statement::DropType { name, if_exists });
    }
    let kind = parse_source_kind(p)?;
    let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
    let name = parse_name(p)?;
    let delete_topic = {
        let t = p.peek_token();
        if is_word(&t.token, "DELETE") {
            p.next_token();
            let t = p.next_token();
            if !is_word(&t.token, "TOPIC") {
                return Err(syntax(p.expected::<()>("TOPIC", t).unwrap_err()));
            }
            true
        } else {
            false
        }
    };
    Ok(Statement::Drop {
        kind,
        name,
        if_exists,
        delete_topic,
    })
}

/// Reads an integer literal, e.g. a `LIMIT`.
pub fn literal_u64(e: &Expr) -> Option<u64> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse().ok(),
            _ => None,
        },
        _ => None,
    }
}
