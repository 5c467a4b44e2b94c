//! Scripts: variables substituted, split into statements, each parsed
//! with the text it came from.

use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

use super::statement::parse_one;
use super::tree::Parsed;
use crate::dialect::KsqlDialect;
use crate::error::{PlanError, Result};

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
pub(super) struct Positions<'a> {
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
