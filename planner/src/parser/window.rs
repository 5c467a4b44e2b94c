//! `WINDOW …` of an aggregation and `WITHIN …` of a join, rewritten into
//! forms sqlparser reads.

use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Whitespace};

use super::tokens::{is_word, next_meaningful};
use crate::error::{PlanError, Result};

/// What a join's `WITHIN … [GRACE PERIOD …]` is read as: a table hint on
/// the joined source, `WITH (__BROOK_WITHIN(before_ms, after_ms[, grace_ms]))`,
/// which sqlparser keeps on the table factor.
pub const WITHIN: &str = "__BROOK_WITHIN";

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
pub(super) fn rewrite_windows(tokens: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>> {
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
pub(super) fn rewrite_join_windows(tokens: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>> {
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
