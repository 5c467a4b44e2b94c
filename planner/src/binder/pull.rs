//! Pull queries: a logical plan over the sources' current rows.

use datafusion::sql::sqlparser::ast::Query;

use super::query::{logical_plan, referenced_sources};
use crate::catalog::Catalog;
use crate::error::Result;
use crate::plan::PullPlan;

/// A pull query: any SELECT DataFusion can run over the sources' current
/// contents.
pub fn plan_pull(catalog: &Catalog, query: &Query) -> Result<PullPlan> {
    let sources = referenced_sources(catalog, query)?;
    let plan = logical_plan(query, &sources)?;
    Ok(PullPlan {
        plan,
        sources: sources.into_iter().cloned().collect(),
    })
}
