//! The nesting limit of a statement's expressions.
//!
//! sqlparser builds chains of infix and postfix operators (`1 + 1 + …`,
//! `x::INT::INT…`, `a[1][1]…`) in a loop, so a statement of a few kilobytes
//! can hold an expression thousands of levels deep, and everything after
//! the parser (binding, simplification, evaluation, even dropping the tree)
//! recurses over it. [`check`] measures the depth once, right after
//! parsing, without recursing deeper than [`MAX_EXPR_DEPTH`]: a deeper part
//! is cut off at the limit and taken apart iteratively, and the statement
//! is refused with "statement too complex" (SQLSTATE 54001).

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Expr, Value, VisitMut, VisitorMut};

use crate::error::{PlanError, Result};

/// How deeply expressions may nest (`n` terms joined by operators nest `n`
/// levels). Every stage after the parser handles this depth on a 2 MiB
/// thread stack, even in a debug build (which overflowed near 200). Subqueries nest only as deep as the parser's recursion
/// limit.
pub const MAX_EXPR_DEPTH: usize = 128;

#[derive(Default)]
struct DepthGuard {
    depth: usize,
    /// Subtrees cut off at the limit, to take apart without recursion.
    cut: Vec<Expr>,
}

impl DepthGuard {
    fn enter(&mut self) -> bool {
        self.depth += 1;
        self.depth > MAX_EXPR_DEPTH
    }
}

impl VisitorMut for DepthGuard {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if self.enter() {
            let placeholder = Expr::Value(Value::Null.into());
            self.cut.push(std::mem::replace(expr, placeholder));
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _expr: &mut Expr) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
}

/// Refuses `node` when an expression in it nests deeper than
/// [`MAX_EXPR_DEPTH`]. Whatever is too deep is removed (and freed) first,
/// so `node` can then be dropped safely either way.
pub fn check<V: VisitMut>(node: &mut V) -> Result<()> {
    let mut guard = DepthGuard::default();
    let _ = node.visit(&mut guard);
    if guard.cut.is_empty() {
        return Ok(());
    }
    dismantle(std::mem::take(&mut guard.cut));
    Err(PlanError::TooComplex(format!(
        "statement too complex: expressions nest more than {MAX_EXPR_DEPTH} levels deep"
    )))
}

/// Frees expression trees of any depth with an explicit stack. Chains the
/// parser builds in a loop go through an operand of an infix or postfix
/// form; every other child nests only as deep as the parser's recursion
/// limit, so dropping it normally is safe.
fn dismantle(mut stack: Vec<Expr>) {
    while let Some(e) = stack.pop() {
        match e {
            Expr::BinaryOp { left, right, .. }
            | Expr::AnyOp { left, right, .. }
            | Expr::AllOp { left, right, .. }
            | Expr::IsDistinctFrom(left, right)
            | Expr::IsNotDistinctFrom(left, right) => {
                stack.push(*left);
                stack.push(*right);
            }
            Expr::UnaryOp { expr, .. }
            | Expr::Nested(expr)
            | Expr::IsNull(expr)
            | Expr::IsNotNull(expr)
            | Expr::IsTrue(expr)
            | Expr::IsNotTrue(expr)
            | Expr::IsFalse(expr)
            | Expr::IsNotFalse(expr)
            | Expr::IsUnknown(expr)
            | Expr::IsNotUnknown(expr)
            | Expr::Cast { expr, .. }
            | Expr::Collate { expr, .. } => stack.push(*expr),
            Expr::CompoundFieldAccess { root, .. } => stack.push(*root),
            Expr::JsonAccess { value, .. } => stack.push(*value),
            Expr::AtTimeZone {
                timestamp,
                time_zone,
            } => {
                stack.push(*timestamp);
                stack.push(*time_zone);
            }
            Expr::InList { expr, list, .. } => {
                stack.push(*expr);
                stack.extend(list);
            }
            Expr::Between {
                expr, low, high, ..
            } => {
                stack.push(*expr);
                stack.push(*low);
                stack.push(*high);
            }
            Expr::Like { expr, pattern, .. }
            | Expr::ILike { expr, pattern, .. }
            | Expr::SimilarTo { expr, pattern, .. }
            | Expr::RLike { expr, pattern, .. } => {
                stack.push(*expr);
                stack.push(*pattern);
            }
            Expr::InSubquery { expr, .. } => stack.push(*expr),
            other => drop(other),
        }
    }
}
