//! Rewrites and checks on the tokens before sqlparser sees them: ksqlDB's
//! identifier case, `EMIT`, `PARTITION BY`, collection casts, and the
//! length of operator chains.

use datafusion::sql::sqlparser::ast::{self, Expr};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Span, Token, TokenWithSpan, Word};

use super::tree::Emit;
use super::{depth, MAX_CHAIN_OPERATORS, MAX_EXPR_DEPTH, RECURSION_LIMIT};
use crate::dialect::KsqlDialect;
use crate::error::{PlanError, Result};

pub(super) fn is_word(t: &Token, w: &str) -> bool {
    matches!(t, Token::Word(word) if word.quote_style.is_none() && word.value.eq_ignore_ascii_case(w))
}

pub(super) fn syntax(e: ParserError) -> PlanError {
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
pub(super) fn normalize_tokens(tokens: Vec<TokenWithSpan>) -> (Vec<TokenWithSpan>, Option<Emit>) {
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
pub(super) fn take_partition_by(
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

/// The index of the first token at or after `from` that is not whitespace.
pub(super) fn next_meaningful(tokens: &[TokenWithSpan], from: usize) -> Option<usize> {
    tokens
        .get(from..)?
        .iter()
        .position(|t| !matches!(t.token, Token::Whitespace(_)))
        .map(|n| n + from)
}

/// `CAST(e AS ARRAY<…>|MAP<…>|STRUCT<…>)` → `__BROOK_CAST(e, 'type')`:
/// sqlparser and DataFusion do not read every ksqlDB collection type, and
/// ksqlDB's collection casts differ from Arrow's (see
/// [`crate::functions::cast`]).
pub(super) fn rewrite_collection_casts(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
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

/// Refuses, before sqlparser sees them, tokens with a chain of more than
/// [`MAX_CHAIN_OPERATORS`] operators at one nesting level: sqlparser builds
/// such a chain in a loop, as a tree as deep as the chain is long, which
/// nothing after it (not even dropping it) could take apart without
/// overflowing the stack. Linear in the number of tokens.
pub(super) fn check_chains(tokens: &[TokenWithSpan]) -> Result<()> {
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
