//! The ksqlDB dialect: sqlparser's tokenizer and expression/query parser,
//! plus Brook's own parsing of the statements sqlparser does not know
//! (`CREATE STREAM`, `… EMIT CHANGES`, `SHOW STREAMS`, `TERMINATE`, …).
//!
//! Identifiers follow ksqlDB: unquoted names are upper-cased, quoted names
//! (`"x"` or `` `x` ``) keep their case. This is done once, on the tokens.

use std::fmt;

use datafusion::sql::sqlparser::ast::{
    self, CopySource, CopyTarget, Expr, ObjectName, Query, SetExpr, TableObject, Value,
};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{
    Location, Span, Token, TokenWithSpan, Tokenizer, Whitespace, Word,
};

use crate::catalog::SourceKind;
use crate::dialect::KsqlDialect;
use crate::error::{PlanError, Result};
use crate::types::SqlType;

/// How deep parentheses and sub-expressions may nest before parsing stops
/// with an error (instead of overflowing the stack).
const RECURSION_LIMIT: usize = 64;

mod depth;

pub use depth::MAX_EXPR_DEPTH;

/// How many operators one chain (operands joined at one nesting level,
/// between commas and clauses) may hold. Checked on the tokens, before
/// sqlparser builds the chain as a tree as deep as it is long; the exact
/// depth limit ([`MAX_EXPR_DEPTH`]) is checked on the tree afterwards.
const MAX_CHAIN_OPERATORS: usize = 4 * MAX_EXPR_DEPTH;

/// A parsed statement and the text it came from.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The statement.
    pub statement: Statement,
    /// Its source text, without the terminating `;`.
    pub sql: String,
}

impl Statement {
    /// Whether it changes the catalog (DDL, `INSERT INTO … SELECT`, and
    /// the statements that stop, pause or resume persistent queries).
    pub fn changes_catalog(&self) -> bool {
        matches!(
            self,
            Statement::CreateSource { .. }
                | Statement::CreateAsSelect { .. }
                | Statement::Drop { .. }
                | Statement::Alter { .. }
                | Statement::Terminate { .. }
                | Statement::PauseResume { .. }
                | Statement::CreateType { .. }
                | Statement::DropType { .. }
                | Statement::InsertSelect { .. }
        )
    }
}

impl Parsed {
    /// Whether it is a query (`SELECT`, `COPY (…) TO STDOUT`, `PRINT`):
    /// it only reads, so a client may abandon it at any point.
    pub fn is_query(&self) -> bool {
        matches!(
            self.statement,
            Statement::Select { .. } | Statement::CopyTo { .. } | Statement::Print { .. }
        )
    }
}

/// A literal value in a `WITH (…)` property list or `SET`.
#[derive(Debug, Clone, PartialEq)]
pub enum PropValue {
    /// `'text'`
    String(String),
    /// `42`
    Number(String),
    /// `true`
    Bool(bool),
}

impl fmt::Display for PropValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PropValue::String(s) => write!(f, "'{}'", s.replace('\'', "''")),
            PropValue::Number(n) => f.write_str(n),
            PropValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

impl PropValue {
    /// The value as text, without quotes.
    pub fn as_text(&self) -> String {
        match self {
            PropValue::String(s) | PropValue::Number(s) => s.clone(),
            PropValue::Bool(b) => b.to_string(),
        }
    }
}

/// `WITH (NAME=value, …)`, names upper-cased.
pub type Props = Vec<(String, PropValue)>;

/// A column in `CREATE STREAM|TABLE name (…)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSpec {
    /// Name (normalized).
    pub name: String,
    /// Declared type.
    pub ty: SqlType,
    /// `KEY` or `PRIMARY KEY`.
    pub key: bool,
    /// `PRIMARY KEY` was written (tables); `KEY` otherwise.
    pub primary: bool,
    /// `HEADERS` or `HEADER('k')`.
    pub header: Option<crate::catalog::HeaderSource>,
}

/// What `EMIT` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// `EMIT CHANGES`: a push query.
    Changes,
    /// `EMIT FINAL`: a push query emitting closed windows only.
    Final,
}

/// `SHOW …` / `LIST …`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShowWhat {
    /// `SHOW STREAMS`
    Streams,
    /// `SHOW TABLES`
    Tables,
    /// `SHOW QUERIES`
    Queries,
    /// `SHOW TOPICS`
    Topics,
    /// `SHOW PROPERTIES`
    Properties,
    /// `SHOW FUNCTIONS`
    Functions,
    /// `SHOW TYPES`
    Types,
    /// `SHOW VARIABLES`
    Variables,
}

/// A Brook statement. [`crate::printer`] prints it back as ksqlDB text.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    /// `CREATE [OR REPLACE] STREAM|TABLE [IF NOT EXISTS] name (cols) [WITH (…)]`
    CreateSource {
        /// Stream or table.
        kind: SourceKind,
        /// Name.
        name: String,
        /// `IF NOT EXISTS`
        if_not_exists: bool,
        /// `OR REPLACE`
        or_replace: bool,
        /// `SOURCE`: read-only (no INSERT, ALTER, DELETE TOPIC).
        source: bool,
        /// Declared columns.
        columns: Vec<ColumnSpec>,
        /// `WITH (…)`
        props: Props,
    },
    /// `CREATE STREAM|TABLE name [WITH (…)] AS SELECT …`
    CreateAsSelect {
        /// Stream or table.
        kind: SourceKind,
        /// Name.
        name: String,
        /// `IF NOT EXISTS`
        if_not_exists: bool,
        /// `OR REPLACE`
        or_replace: bool,
        /// `WITH (…)`
        props: Props,
        /// The query (its `EMIT CHANGES`, if written, is dropped).
        query: Box<Query>,
        /// `PARTITION BY` expressions: the key of the result.
        partition_by: Option<Vec<Expr>>,
        /// `EMIT FINAL` (a windowed aggregation's final results only).
        emit: Option<Emit>,
    },
    /// `INSERT INTO name [(cols)] VALUES (…), …`
    InsertValues {
        /// Target stream or table.
        target: String,
        /// Column list, empty for all columns in order.
        columns: Vec<String>,
        /// Rows of expressions.
        rows: Vec<Vec<Expr>>,
    },
    /// `INSERT INTO stream SELECT …`: a persistent query writing into an
    /// existing stream.
    InsertSelect {
        /// Target stream.
        target: String,
        /// The query.
        query: Box<Query>,
        /// `PARTITION BY` expressions.
        partition_by: Option<Vec<Expr>>,
    },
    /// `SELECT …`: push with `EMIT CHANGES`, pull otherwise.
    Select {
        /// The query, without `EMIT`.
        query: Box<Query>,
        /// `EMIT CHANGES` / `EMIT FINAL`.
        emit: Option<Emit>,
        /// `PARTITION BY` expressions.
        partition_by: Option<Vec<Expr>>,
    },
    /// `COPY (SELECT …) TO STDOUT`
    CopyTo {
        /// The query, without `EMIT`.
        query: Box<Query>,
        /// `EMIT CHANGES` / `EMIT FINAL`.
        emit: Option<Emit>,
    },
    /// `SHOW|LIST STREAMS|TABLES|QUERIES|TOPICS|PROPERTIES [EXTENDED]`
    Show {
        /// What to list.
        what: ShowWhat,
        /// `EXTENDED`
        extended: bool,
    },
    /// `DESCRIBE FUNCTION name`
    DescribeFunction {
        /// The function's name.
        name: String,
    },
    /// `DESCRIBE [EXTENDED] name`
    Describe {
        /// Name.
        name: String,
        /// `EXTENDED`
        extended: bool,
    },
    /// `DROP STREAM|TABLE [IF EXISTS] name [DELETE TOPIC]`
    Drop {
        /// Stream or table.
        kind: SourceKind,
        /// Name.
        name: String,
        /// `IF EXISTS`
        if_exists: bool,
        /// `DELETE TOPIC`
        delete_topic: bool,
    },
    /// `CREATE TYPE [IF NOT EXISTS] name AS type`
    CreateType {
        /// The type's name.
        name: String,
        /// What it stands for.
        ty: SqlType,
        /// `IF NOT EXISTS`
        if_not_exists: bool,
    },
    /// `DROP TYPE [IF EXISTS] name`
    DropType {
        /// The type's name.
        name: String,
        /// `IF EXISTS`
        if_exists: bool,
    },
    /// `ALTER STREAM|TABLE name ADD [COLUMN] col type, …`
    Alter {
        /// Stream or table.
        kind: SourceKind,
        /// Name.
        name: String,
        /// The value columns added.
        columns: Vec<ColumnSpec>,
    },
    /// `TERMINATE id` / `TERMINATE ALL`
    Terminate {
        /// The query id, or `None` for `ALL`.
        id: Option<String>,
    },
    /// `EXPLAIN query_id` / `EXPLAIN statement`
    Explain {
        /// What to explain.
        target: ExplainTarget,
    },
    /// `PAUSE id|ALL` / `RESUME id|ALL`
    PauseResume {
        /// The query id, or `None` for `ALL`.
        id: Option<String>,
        /// `PAUSE` (true) or `RESUME`.
        pause: bool,
    },
    /// `FLUSH`: wait until every persistent query has processed everything
    /// appended before.
    Flush,
    /// `SET 'name' = 'value'`
    Set {
        /// Property name.
        name: String,
        /// Value.
        value: String,
    },
    /// `UNSET 'name'`
    Unset {
        /// Property name.
        name: String,
    },
    /// `DEFINE name = 'value'`: a session variable, used as `${name}`.
    Define {
        /// Variable name (upper case unless quoted).
        name: String,
        /// Its text.
        value: String,
    },
    /// `UNDEFINE name`
    Undefine {
        /// Variable name.
        name: String,
    },
    /// `PRINT 'topic' [FROM BEGINNING] [INTERVAL|SAMPLE n] [LIMIT n]`
    Print {
        /// The topic (as written when quoted, upper-cased otherwise).
        topic: String,
        /// Start at the oldest record instead of the end.
        from_beginning: bool,
        /// Print every n-th record.
        interval: u64,
        /// Stop after this many records.
        limit: Option<u64>,
    },
}

/// Replaces each `${name}` with the variable's text; an undefined name is
/// an error.
pub fn substitute_variables(sql: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String> {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let Some(end) = after.find('}') else {
            return Err(PlanError::Syntax(format!(
                "syntax error: unterminated variable reference: {}",
                &rest[at..]
            )));
        };
        let name = &after[..end];
        let value = lookup(name)
            .or_else(|| lookup(&name.to_ascii_uppercase()))
            .ok_or_else(|| {
                PlanError::Invalid(format!("Can't find variable '{name}' to substitute"))
            })?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// What `EXPLAIN` explains.
#[derive(Debug, Clone, PartialEq)]
pub enum ExplainTarget {
    /// A persistent query, by id.
    Query(String),
    /// A query statement, planned but not run.
    Statement(Box<Statement>),
}

/// Parses a script of `;`-separated statements.
pub fn parse(sql: &str) -> Result<Vec<Parsed>> {
    statements(sql)?
        .into_iter()
        .map(|(text, tokens)| {
            Ok(Parsed {
                statement: parse_one(tokens)?,
                sql: text,
            })
        })
        .collect()
}

/// The statements of a script as text, without parsing them (so that
/// `${var}` references can be substituted first).
pub fn split_script(sql: &str) -> Result<Vec<String>> {
    Ok(statements(sql)?.into_iter().map(|(text, _)| text).collect())
}

/// Splits a script at its `;` tokens: each statement's text and tokens.
fn statements(sql: &str) -> Result<Vec<(String, Vec<TokenWithSpan>)>> {
    let dialect = KsqlDialect;
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| PlanError::Syntax(format!("syntax error: {e}")))?;
    let mut positions = Positions::new(sql);
    let mut out = Vec::new();
    let mut current: Vec<TokenWithSpan> = Vec::new();
    for t in tokens
        .into_iter()
        .chain(std::iter::once(TokenWithSpan::wrap(Token::SemiColon)))
    {
        if t.token == Token::SemiColon {
            let meaningful = current
                .iter()
                .any(|t| !matches!(t.token, Token::Whitespace(_)));
            if meaningful {
                let text = span_text(sql, &mut positions, &current);
                out.push((text, std::mem::take(&mut current)));
            }
            current.clear();
        } else if matches!(t.token, Token::Whitespace(_))
            && current
                .last()
                .is_some_and(|l| matches!(l.token, Token::Whitespace(_)))
        {
            // A run of whitespace and comments is one separator: every
            // rewrite that looks for the next meaningful token then skips
            // at most one, which keeps parsing linear in the text's length.
        } else {
            current.push(t);
        }
    }
    Ok(out)
}

/// Parses exactly one statement.
pub fn parse_statement(sql: &str) -> Result<Parsed> {
    let mut all = parse(sql)?;
    match all.len() {
        1 => Ok(all.remove(0)),
        0 => Err(PlanError::Syntax("syntax error: empty statement".into())),
        n => Err(PlanError::Syntax(format!(
            "syntax error: expected one statement, found {n}"
        ))),
    }
}

/// Byte positions of token locations (line and character column), found
/// by walking forward from the last one asked for: statements come in
/// order, so a whole script costs one pass over its text.
struct Positions<'a> {
    sql: &'a str,
    line_starts: Vec<usize>,
    /// The last location found: (line, column, byte).
    at: (u64, u64, usize),
}

impl<'a> Positions<'a> {
    fn new(sql: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Positions {
            sql,
            line_starts,
            at: (1, 1, 0),
        }
    }

    fn byte(&mut self, loc: Location) -> Option<usize> {
        let (line, col, byte) = self.at;
        let (from_col, from) = if loc.line == line && loc.column >= col {
            (col, byte)
        } else {
            let start = *self.line_starts.get((loc.line as usize).checked_sub(1)?)?;
            (1, start)
        };
        let rest = &self.sql[from..];
        let skip = usize::try_from(loc.column.checked_sub(from_col)?).ok()?;
        let pos = from + rest.char_indices().nth(skip).map_or(rest.len(), |(i, _)| i);
        self.at = (loc.line, loc.column, pos);
        Some(pos)
    }
}

fn span_text(sql: &str, positions: &mut Positions, tokens: &[TokenWithSpan]) -> String {
    let meaningful: Vec<&TokenWithSpan> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    let (Some(first), Some(last)) = (meaningful.first(), meaningful.last()) else {
        return String::new();
    };
    match (
        positions.byte(first.span.start),
        positions.byte(last.span.end),
    ) {
        (Some(a), Some(b)) if a <= b => sql[a..b].trim().to_string(),
        _ => tokens
            .iter()
            .map(|t| t.token.to_string())
            .collect::<String>()
            .trim()
            .to_string(),
    }
}

fn is_word(t: &Token, w: &str) -> bool {
    matches!(t, Token::Word(word) if word.quote_style.is_none() && word.value.eq_ignore_ascii_case(w))
}

fn syntax(e: ParserError) -> PlanError {
    let msg = e.to_string();
    let msg = msg
        .strip_prefix("sql parser error: ")
        .unwrap_or(&msg)
        .to_string();
    PlanError::Syntax(format!("syntax error: {msg}"))
}

/// What `STRUCT()` (a struct without fields) is read as: a function call.
pub const EMPTY_STRUCT: &str = "__BROOK_EMPTY_STRUCT";

/// Upper-cases unquoted words (ksqlDB identifiers), removes `EMIT CHANGES`
/// / `EMIT FINAL`, and returns what it removed.
fn normalize_tokens(tokens: Vec<TokenWithSpan>) -> (Vec<TokenWithSpan>, Option<Emit>) {
    let mut out: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len());
    let mut emit = None;
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        if is_word(&t.token, "EMIT") {
            if let Some(n) = next_meaningful(&tokens, i + 1) {
                if is_word(&tokens[n].token, "CHANGES") || is_word(&tokens[n].token, "FINAL") {
                    emit = Some(if is_word(&tokens[n].token, "CHANGES") {
                        Emit::Changes
                    } else {
                        Emit::Final
                    });
                    i = n + 1;
                    continue;
                }
            }
        }
        // ksqlDB reads `1R` (digits, then letters, no space) as an
        // identifier; sqlparser reads a number and a word.
        if let (
            Token::Number(n, false),
            Some(TokenWithSpan {
                token: Token::Word(w),
                span,
            }),
        ) = (&t.token, tokens.get(i + 1))
        {
            if w.quote_style.is_none() && n.bytes().all(|b| b.is_ascii_digit()) {
                out.push(TokenWithSpan {
                    token: Token::Word(Word {
                        value: format!("{n}{}", w.value).to_ascii_uppercase(),
                        quote_style: Some('"'),
                        keyword: Keyword::NoKeyword,
                    }),
                    span: Span::new(t.span.start, span.end),
                });
                i += 2;
                continue;
            }
        }
        // `STRUCT()`: sqlparser's struct literal needs a field.
        if is_word(&t.token, "STRUCT") {
            let open = next_meaningful(&tokens, i + 1);
            let close = open.and_then(|o| next_meaningful(&tokens, o + 1));
            if let (Some(open), Some(close)) = (open, close) {
                if tokens[open].token == Token::LParen && tokens[close].token == Token::RParen {
                    let wrap = |token: Token| TokenWithSpan {
                        token,
                        span: t.span,
                    };
                    out.push(wrap(Token::make_word(EMPTY_STRUCT, None)));
                    out.push(wrap(Token::LParen));
                    out.push(wrap(Token::RParen));
                    i = close + 1;
                    continue;
                }
            }
        }
        let mut t = t.clone();
        if let Token::Word(w) = &mut t.token {
            if w.quote_style.is_none() {
                w.value = w.value.to_ascii_uppercase();
            } else if w.quote_style == Some('`') {
                // ksqlDB quotes identifiers with backticks; treat them as "…".
                w.quote_style = Some('"');
            }
        }
        out.push(t);
        i += 1;
    }
    (out, emit)
}

/// Removes a top-level `PARTITION BY e, …` clause (it ends at `HAVING`,
/// `LIMIT` or the end) and parses its expressions.
fn take_partition_by(
    tokens: Vec<TokenWithSpan>,
) -> Result<(Vec<TokenWithSpan>, Option<Vec<Expr>>)> {
    let meaningful = |t: &TokenWithSpan| !matches!(t.token, Token::Whitespace(_));
    let mut depth = 0i32;
    let mut start = None;
    for (i, t) in tokens.iter().enumerate() {
        match &t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            w if depth == 0 && is_word(w, "PARTITION") => {
                let next = tokens[i + 1..]
                    .iter()
                    .position(meaningful)
                    .map(|n| n + i + 1);
                if next.is_some_and(|n| is_word(&tokens[n].token, "BY")) {
                    start = Some((i, next.unwrap_or(i) + 1));
                    break;
                }
            }
            _ => {}
        }
    }
    let Some((clause_start, exprs_start)) = start else {
        return Ok((tokens, None));
    };
    let mut depth = 0i32;
    let mut end = tokens.len();
    for (i, t) in tokens.iter().enumerate().skip(exprs_start) {
        match &t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            w if depth == 0 && (is_word(w, "HAVING") || is_word(w, "LIMIT")) => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    let clause: Vec<TokenWithSpan> = tokens[exprs_start..end].to_vec();
    let meaningful: Vec<&Token> = clause
        .iter()
        .map(|t| &t.token)
        .filter(|t| !matches!(t, Token::Whitespace(_) | Token::EOF | Token::SemiColon))
        .collect();
    if matches!(meaningful.as_slice(), [] | [Token::LParen, Token::RParen]) {
        return Err(PlanError::Syntax(
            "syntax error: PARTITION BY requires at least one expression".into(),
        ));
    }
    let dialect = KsqlDialect;
    let mut p = Parser::new(&dialect)
        .with_recursion_limit(RECURSION_LIMIT)
        .with_tokens_with_locations(clause);
    let mut exprs = p
        .parse_comma_separated(Parser::parse_expr)
        .map_err(syntax)?;
    depth::check(&mut exprs)?;
    let next = p.peek_token();
    if next.token != Token::EOF {
        return Err(syntax(
            p.expected::<()>("end of PARTITION BY", next).unwrap_err(),
        ));
    }
    if let Some(condition) = exprs.iter().find(|e| is_condition(e)) {
        // ksqlDB's grammar takes value expressions here, not conditions.
        return Err(PlanError::Syntax(format!(
            "Syntax Error: PARTITION BY takes value expressions, not the condition {condition}"
        )));
    }
    let mut rest = tokens[..clause_start].to_vec();
    rest.extend_from_slice(&tokens[end..]);
    Ok((rest, Some(exprs)))
}

/// A condition (logic, comparison, predicate) not in parentheses: what
/// ksqlDB's grammar reads as a boolean expression rather than a value.
pub(crate) fn is_condition(e: &Expr) -> bool {
    use ast::BinaryOperator as B;
    match e {
        Expr::BinaryOp { op, .. } => matches!(
            op,
            B::And | B::Or | B::Xor | B::Eq | B::NotEq | B::Lt | B::LtEq | B::Gt | B::GtEq
        ),
        Expr::UnaryOp {
            op: ast::UnaryOperator::Not,
            ..
        } => true,
        Expr::Like { .. }
        | Expr::ILike { .. }
        | Expr::Between { .. }
        | Expr::InList { .. }
        | Expr::IsNull(_)
        | Expr::IsNotNull(_)
        | Expr::IsTrue(_)
        | Expr::IsFalse(_)
        | Expr::IsDistinctFrom(..)
        | Expr::IsNotDistinctFrom(..) => true,
        _ => false,
    }
}

/// What a join's `WITHIN … [GRACE PERIOD …]` is read as: a table hint on
/// the joined source, `WITH (__BROOK_WITHIN(before_ms, after_ms[, grace_ms]))`,
/// which sqlparser keeps on the table factor.
pub const WITHIN: &str = "__BROOK_WITHIN";

/// The index of the first token at or after `from` that is not whitespace.
fn next_meaningful(tokens: &[TokenWithSpan], from: usize) -> Option<usize> {
    tokens
        .get(from..)?
        .iter()
        .position(|t| !matches!(t.token, Token::Whitespace(_)))
        .map(|n| n + from)
}

/// `WORD n UNIT` after a first keyword (`GRACE PERIOD …`, `ADVANCE BY …`):
/// `at` is the first keyword's index, `word` the second; the duration and
/// the index after it.
fn keyword_duration(
    tokens: &[TokenWithSpan],
    at: usize,
    first: &str,
    word: &str,
) -> Result<(i64, usize)> {
    match next_meaningful(tokens, at + 1).filter(|&w| is_word(&tokens[w].token, word)) {
        Some(w) => duration_at(tokens, w + 1),
        None => Err(PlanError::Syntax(format!(
            "syntax error: expected {word} after {first}"
        ))),
    }
}

/// A duration `n UNIT` at `tokens[i..]` (whitespace skipped): its
/// milliseconds and the index after it.
fn duration_at(tokens: &[TokenWithSpan], i: usize) -> Result<(i64, usize)> {
    let next = |from: usize| next_meaningful(tokens, from);
    let bad = |what: String| PlanError::Syntax(format!("syntax error: {what}"));
    let n_at = next(i).ok_or_else(|| bad("expected a duration, as in 30 SECONDS".into()))?;
    let Token::Number(n, _) = &tokens[n_at].token else {
        return Err(bad(format!(
            "expected a duration, as in 30 SECONDS, found {}",
            tokens[n_at].token
        )));
    };
    let n: i64 = n
        .parse()
        .map_err(|_| bad(format!("{n} is not a whole number")))?;
    let unit_at = next(n_at + 1).ok_or_else(|| bad("expected a time unit".into()))?;
    let Token::Word(w) = &tokens[unit_at].token else {
        return Err(bad(format!(
            "expected a time unit, found {}",
            tokens[unit_at].token
        )));
    };
    let unit = crate::functions::scalar::unit_ms(&w.value)
        .map_err(|_| bad(format!("unknown time unit {}", w.value)))?;
    Ok((n.saturating_mul(unit), unit_at + 1))
}

/// When the last top-level `FROM` in `tokens` joins: the index just after
/// its first source (and that source's alias).
fn first_joined_relation_end(tokens: &[TokenWithSpan]) -> Option<usize> {
    let mut depth = 0i32;
    let mut from = None;
    let mut joins = false;
    for (i, t) in tokens.iter().enumerate() {
        match &t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            tok if depth == 0 && is_word(tok, "FROM") => {
                from = Some(i);
                joins = false;
            }
            tok if depth == 0 && from.is_some() && is_word(tok, "JOIN") => joins = true,
            _ => {}
        }
    }
    let from = from.filter(|_| joins)?;
    let name = next_meaningful(tokens, from + 1)?;
    let mut end = name + 1;
    // A qualified name: `a.b`.
    while tokens.get(end).map(|t| &t.token) == Some(&Token::Period) {
        end += 2;
    }
    let Some(next) = next_meaningful(tokens, end) else {
        return Some(end);
    };
    let reserved = [
        "JOIN", "INNER", "LEFT", "RIGHT", "FULL", "OUTER", "CROSS", "WITH", "WHERE", "GROUP",
    ];
    match &tokens[next].token {
        tok if is_word(tok, "AS") => next_meaningful(tokens, next + 1).map(|a| a + 1),
        Token::Word(w) if !reserved.iter().any(|r| w.value.eq_ignore_ascii_case(r)) => {
            Some(next + 1)
        }
        _ => Some(end),
    }
}

/// What a `WINDOW TUMBLING|HOPPING|SESSION (…)` clause is read as: a table
/// hint on the source, `WITH (__BROOK_WINDOW('TUMBLING', size_ms,
/// advance_ms, grace_ms, retention_ms))`, -1 for what is not given.
pub const WINDOW: &str = "__BROOK_WINDOW";

/// `WINDOW TUMBLING (SIZE 1 MINUTE [, RETENTION …] [, GRACE PERIOD …])`,
/// `WINDOW HOPPING (SIZE …, ADVANCE BY …, …)` and `WINDOW SESSION (30
/// SECONDS, …)` become the [`WINDOW`] table hint.
fn rewrite_windows(tokens: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>> {
    let next = |from: usize| next_meaningful(&tokens, from);
    let bad = |what: &str| PlanError::Syntax(format!("syntax error: {what}"));
    let mut out: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        let kind_at = next(i + 1).filter(|_| is_word(&t.token, "WINDOW"));
        let kind = kind_at.and_then(|k| match &tokens[k].token {
            Token::Word(w) if w.quote_style.is_none() => {
                let upper = w.value.to_ascii_uppercase();
                ["TUMBLING", "HOPPING", "SESSION"]
                    .contains(&upper.as_str())
                    .then_some(upper)
            }
            _ => None,
        });
        let (Some(kind), Some(kind_at)) = (kind, kind_at) else {
            out.push(t.clone());
            i += 1;
            continue;
        };
        let Some(open) = next(kind_at + 1).filter(|&o| tokens[o].token == Token::LParen) else {
            return Err(bad(&format!("expected ( after WINDOW {kind}")));
        };
        let (mut size, mut advance, mut grace, mut retention) = (-1i64, -1i64, -1i64, -1i64);
        let mut j = open + 1;
        loop {
            let Some(w) = next(j) else {
                return Err(bad("unterminated WINDOW clause"));
            };
            let word = |n: usize, s: &str| is_word(&tokens[n].token, s);
            if word(w, "SIZE") {
                let (ms, e) = duration_at(&tokens, w + 1)?;
                size = ms;
                j = e;
            } else if word(w, "ADVANCE") {
                let (ms, e) = keyword_duration(&tokens, w, "ADVANCE", "BY")?;
                advance = ms;
                j = e;
            } else if word(w, "RETENTION") {
                let (ms, e) = duration_at(&tokens, w + 1)?;
                retention = ms;
                j = e;
            } else if word(w, "GRACE") {
                let (ms, e) = keyword_duration(&tokens, w, "GRACE", "PERIOD")?;
                grace = ms;
                j = e;
            } else if matches!(tokens[w].token, Token::Number(..)) && kind == "SESSION" {
                let (ms, e) = duration_at(&tokens, w)?;
                size = ms;
                j = e;
            } else {
                return Err(bad(&format!(
                    "unexpected {} in WINDOW {kind} (…)",
                    tokens[w].token
                )));
            }
            let Some(sep) = next(j) else {
                return Err(bad("unterminated WINDOW clause"));
            };
            match tokens[sep].token {
                Token::Comma => j = sep + 1,
                Token::RParen => {
                    j = sep + 1;
                    break;
                }
                _ => {
                    return Err(bad(&format!(
                        "expected , or ) in WINDOW {kind} (…), found {}",
                        tokens[sep].token
                    )))
                }
            }
        }
        if size <= 0 {
            let what = if kind == "SESSION" { "gap" } else { "size" };
            return Err(bad(&format!(
                "WINDOW {kind} needs a {what} larger than zero"
            )));
        }
        if kind == "HOPPING" && advance <= 0 {
            return Err(bad("WINDOW HOPPING needs ADVANCE BY"));
        }
        let span = t.span;
        let wrap = |token: Token| TokenWithSpan { token, span };
        let mut hint = vec![
            wrap(Token::Whitespace(Whitespace::Space)),
            wrap(Token::make_keyword("WITH")),
            wrap(Token::LParen),
            wrap(Token::make_word(WINDOW, None)),
            wrap(Token::LParen),
            wrap(Token::SingleQuotedString(kind)),
        ];
        for ms in [size, advance, grace, retention] {
            hint.push(wrap(Token::Comma));
            if ms < 0 {
                hint.push(wrap(Token::Minus));
                hint.push(wrap(Token::Number("1".into(), false)));
            } else {
                hint.push(wrap(Token::Number(ms.to_string(), false)));
            }
        }
        hint.push(wrap(Token::RParen));
        hint.push(wrap(Token::RParen));
        hint.push(wrap(Token::Whitespace(Whitespace::Space)));
        // After a join's ON condition a hint cannot be written: it goes on
        // the first source instead (the join planner moves it to the
        // joined rows).
        match first_joined_relation_end(&out) {
            Some(at) => {
                out.splice(at..at, hint);
            }
            None => out.extend(hint),
        }
        i = j;
    }
    Ok(out)
}

/// `JOIN r WITHIN 10 SECONDS [GRACE PERIOD 1 MINUTE]` and `WITHIN (b, a)`
/// become the [`WITHIN`] table hint.
fn rewrite_join_windows(tokens: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>> {
    let mut out: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len());
    let next = |from: usize| next_meaningful(&tokens, from);
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        if !is_word(&t.token, "WITHIN") {
            out.push(t.clone());
            i += 1;
            continue;
        }
        let open = next(i + 1);
        let (before, after, mut end) = match open.map(|o| &tokens[o].token) {
            Some(Token::LParen) => {
                let (b, j) = duration_at(&tokens, open.unwrap_or(i) + 1)?;
                let comma = next(j).filter(|&c| tokens[c].token == Token::Comma);
                let Some(comma) = comma else {
                    return Err(PlanError::Syntax(
                        "syntax error: WITHIN (before, after) needs two durations".into(),
                    ));
                };
                let (a, j) = duration_at(&tokens, comma + 1)?;
                let close = next(j).filter(|&c| tokens[c].token == Token::RParen);
                let Some(close) = close else {
                    return Err(PlanError::Syntax(
                        "syntax error: expected ) after WITHIN (before, after".into(),
                    ));
                };
                (b, a, close + 1)
            }
            _ => {
                let (w, j) = duration_at(&tokens, i + 1)?;
                (w, w, j)
            }
        };
        let mut grace = None;
        if let Some(g) = next(end).filter(|&g| is_word(&tokens[g].token, "GRACE")) {
            let (ms, j) = keyword_duration(&tokens, g, "GRACE", "PERIOD")?;
            grace = Some(ms);
            end = j;
        }
        let span = t.span;
        let wrap = |token: Token| TokenWithSpan { token, span };
        out.push(wrap(Token::make_keyword("WITH")));
        out.push(wrap(Token::LParen));
        out.push(wrap(Token::make_word(WITHIN, None)));
        out.push(wrap(Token::LParen));
        let mut args = vec![before, after];
        args.extend(grace);
        for (k, ms) in args.iter().enumerate() {
            if k > 0 {
                out.push(wrap(Token::Comma));
            }
            out.push(wrap(Token::Number(ms.to_string(), false)));
        }
        out.push(wrap(Token::RParen));
        out.push(wrap(Token::RParen));
        i = end;
    }
    Ok(out)
}

/// `CAST(e AS ARRAY<…>|MAP<…>|STRUCT<…>)` → `__BROOK_CAST(e, 'type')`:
/// sqlparser and DataFusion do not read every ksqlDB collection type, and
/// ksqlDB's collection casts differ from Arrow's (see
/// [`crate::functions::cast`]).
fn rewrite_collection_casts(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let mut out: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        let open = next_meaningful(&tokens, i + 1);
        let is_cast = matches!(&t.token, Token::Word(w) if w.quote_style.is_none() && w.value == "CAST")
            && open.is_some_and(|o| tokens[o].token == Token::LParen);
        if let (true, Some(open)) = (is_cast, open) {
            // The matching `)` and the last `AS` at the cast's own depth.
            let mut depth = 0i32;
            let mut close = None;
            let mut as_at = None;
            for (j, tok) in tokens.iter().enumerate().skip(open) {
                match &tok.token {
                    Token::LParen => depth += 1,
                    Token::RParen => {
                        depth -= 1;
                        if depth == 0 {
                            close = Some(j);
                            break;
                        }
                    }
                    Token::Word(w) if depth == 1 && w.quote_style.is_none() && w.value == "AS" => {
                        as_at = Some(j)
                    }
                    _ => {}
                }
            }
            if let (Some(close), Some(as_at)) = (close, as_at) {
                let type_text: String = tokens[as_at + 1..close]
                    .iter()
                    .map(|t| t.token.to_string())
                    .collect::<String>()
                    .trim()
                    .to_string();
                if type_text.contains('<') {
                    let span = t.span;
                    let wrap = |token: Token| TokenWithSpan { token, span };
                    out.push(wrap(Token::make_word("__BROOK_CAST", None)));
                    out.push(wrap(Token::LParen));
                    out.extend(rewrite_collection_casts(tokens[open + 1..as_at].to_vec()));
                    out.push(wrap(Token::Comma));
                    out.push(wrap(Token::SingleQuotedString(type_text)));
                    out.push(wrap(Token::RParen));
                    i = close + 1;
                    continue;
                }
            }
        }
        out.push(t.clone());
        i += 1;
    }
    out
}

fn parse_one(tokens: Vec<TokenWithSpan>) -> Result<Statement> {
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

/// Refuses, before sqlparser sees them, tokens with a chain of more than
/// [`MAX_CHAIN_OPERATORS`] operators at one nesting level: sqlparser builds
/// such a chain in a loop, as a tree as deep as the chain is long, which
/// nothing after it (not even dropping it) could take apart without
/// overflowing the stack. Linear in the number of tokens.
fn check_chains(tokens: &[TokenWithSpan]) -> Result<()> {
    // Operators counted per open parenthesis or bracket.
    let mut chains: Vec<usize> = vec![0];
    for t in tokens {
        let operator = match &t.token {
            Token::LParen | Token::LBracket => {
                chains.push(0);
                false
            }
            Token::RParen | Token::RBracket => {
                chains.pop();
                if chains.is_empty() {
                    chains.push(0);
                }
                false
            }
            Token::Comma => {
                if let Some(top) = chains.last_mut() {
                    *top = 0;
                }
                false
            }
            Token::Word(w) if w.quote_style.is_none() => {
                let is = |words: &[&str]| words.iter().any(|k| w.value.eq_ignore_ascii_case(k));
                if is(&[
                    "SELECT", "FROM", "WHERE", "GROUP", "HAVING", "ON", "WHEN", "THEN", "ELSE",
                    "WINDOW", "LIMIT", "VALUES", "ORDER", "JOIN", "WITHIN",
                ]) {
                    if let Some(top) = chains.last_mut() {
                        *top = 0;
                    }
                }
                is(&[
                    "AND", "OR", "IS", "IN", "BETWEEN", "LIKE", "NOT", "COLLATE", "AT",
                ])
            }
            Token::Whitespace(_) | Token::Word(_) | Token::Number(..) | Token::EOF => false,
            Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::NationalStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::Period
            | Token::SemiColon
            | Token::Colon
            | Token::LBrace
            | Token::RBrace
            | Token::Placeholder(_) => false,
            _ => true,
        };
        if operator {
            let Some(top) = chains.last_mut() else {
                continue;
            };
            *top += 1;
            if *top > MAX_CHAIN_OPERATORS {
                return Err(PlanError::TooComplex(format!(
                    "statement too complex: more than {MAX_CHAIN_OPERATORS} operators in one expression (expressions may nest {MAX_EXPR_DEPTH} levels deep)"
                )));
            }
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> Statement {
        parse_statement(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .statement
    }

    #[test]
    fn create_stream_with_props() {
        let s = one("create stream pageviews (user_id INT KEY, url STRING, `Ms` BIGINT) WITH (kafka_topic='pv', value_format='JSON', partitions=2);");
        let Statement::CreateSource {
            kind,
            name,
            columns,
            props,
            ..
        } = s
        else {
            panic!("{s:?}")
        };
        assert_eq!(kind, SourceKind::Stream);
        assert_eq!(name, "PAGEVIEWS");
        assert_eq!(
            columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["USER_ID", "URL", "Ms"]
        );
        assert!(columns[0].key && !columns[1].key);
        assert_eq!(
            props[0],
            ("KAFKA_TOPIC".into(), PropValue::String("pv".into()))
        );
        assert_eq!(
            props[2],
            ("PARTITIONS".into(), PropValue::Number("2".into()))
        );
    }

    #[test]
    fn create_table_as_select_and_push() {
        let s = one("CREATE TABLE t AS SELECT user_id, COUNT(*) AS n FROM pageviews GROUP BY user_id EMIT CHANGES");
        assert!(matches!(
            s,
            Statement::CreateAsSelect {
                kind: SourceKind::Table,
                ..
            }
        ));
        let s = one("SELECT * FROM t EMIT CHANGES LIMIT 3");
        let Statement::Select { query, emit, .. } = s else {
            panic!()
        };
        assert_eq!(emit, Some(Emit::Changes));
        assert_eq!(query.to_string(), "SELECT * FROM T LIMIT 3");
        let s = one("COPY (SELECT * FROM t EMIT CHANGES) TO STDOUT");
        assert!(matches!(
            s,
            Statement::CopyTo {
                emit: Some(Emit::Changes),
                ..
            }
        ));
    }

    #[test]
    fn print_statements() {
        assert!(matches!(
            one("PRINT 'my_topic' FROM BEGINNING INTERVAL 2 LIMIT 5"),
            Statement::Print {
                topic,
                from_beginning: true,
                interval: 2,
                limit: Some(5),
            } if topic == "my_topic"
        ));
        assert!(matches!(
            one("print pageviews"),
            Statement::Print {
                topic,
                from_beginning: false,
                interval: 1,
                limit: None,
            } if topic == "PAGEVIEWS"
        ));
        assert!(parse("PRINT 'x' FROM NOW").is_err());
        assert!(parse("PRINT 'x' LIMIT many").is_err());
    }

    #[test]
    fn partition_by_is_taken_out() {
        let s = one("CREATE STREAM o AS SELECT * FROM i PARTITION BY id, name EMIT CHANGES");
        let Statement::CreateAsSelect {
            query,
            partition_by: Some(p),
            ..
        } = s
        else {
            panic!("{s:?}")
        };
        assert_eq!(query.to_string(), "SELECT * FROM I");
        assert_eq!(
            p.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            ["ID", "NAME"]
        );
        let s = one("SELECT a FROM i PARTITION BY a LIMIT 3");
        let Statement::Select {
            query,
            partition_by: Some(_),
            ..
        } = s
        else {
            panic!("{s:?}")
        };
        assert_eq!(query.to_string(), "SELECT A FROM I LIMIT 3");
    }

    #[test]
    fn script_splits_and_keeps_text() {
        let all = parse("SHOW STREAMS;\n  INSERT INTO s (a) VALUES ('x;y');  FLUSH;").unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[1].sql, "INSERT INTO s (a) VALUES ('x;y')");
        assert!(matches!(all[2].statement, Statement::Flush));
    }

    #[test]
    fn scripts_split_outside_quotes_and_comments() {
        let pieces =
            split_script("DEFINE a = 'x;y'; -- c;\nSELECT \"b;\" FROM ${t}; /* ; */ FLUSH")
                .unwrap();
        assert_eq!(
            pieces,
            vec!["DEFINE a = 'x;y'", "SELECT \"b;\" FROM ${t}", "FLUSH"]
        );
    }

    #[test]
    fn variables_substitute_as_text() {
        let vars = |n: &str| (n == "T").then(|| "orders".to_string());
        assert_eq!(
            substitute_variables("SELECT * FROM ${t} WHERE s = '${T}'", &vars).unwrap(),
            "SELECT * FROM orders WHERE s = 'orders'"
        );
        assert!(substitute_variables("SELECT ${nope}", &vars).is_err());
        assert!(substitute_variables("SELECT ${t", &vars).is_err());
    }

    #[test]
    fn digits_then_letters_is_an_identifier() {
        let s = one("SELECT ROUND(v, -1) AS 1R FROM t");
        let Statement::Select { query, .. } = s else {
            panic!("{s:?}")
        };
        assert_eq!(query.to_string(), "SELECT ROUND(V, -1) AS \"1R\" FROM T");
    }

    #[test]
    fn errors_carry_a_position() {
        let e = parse("SELECT * FROM t WHERE").unwrap_err().to_string();
        assert!(e.starts_with("syntax error"), "{e}");
        let e = parse("CREATE STREAM s (a INT) WITH (x=)")
            .unwrap_err()
            .to_string();
        assert!(e.contains("Line: 1, Column: 33"), "{e}");
        let e = parse("BOGUS stuff").unwrap_err().to_string();
        assert!(e.contains("Column: 1"), "{e}");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let sql = format!(
            "SELECT {}1{} FROM t",
            "(".repeat(10_000),
            ")".repeat(10_000)
        );
        assert!(parse(&sql).is_err());
    }
}
