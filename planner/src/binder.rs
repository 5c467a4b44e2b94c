//! The binder: statements + catalog → source definitions, stream plans,
//! pull plans and insert rows.
//!
//! Queries are planned by DataFusion's SQL planner against placeholder
//! tables that carry each source's schema, then analyzed (type coercion).
//! Continuous queries are lowered from that logical plan into a
//! [`StreamPlan`](crate::plan::StreamPlan); pull queries keep the logical
//! plan.
//!
//! One file per concern: `props` (`WITH (…)`), `source` (`CREATE
//! STREAM|TABLE`, `ALTER`, upgrade checks), `query` (planning with
//! DataFusion, ksqlDB's rewrites and messages), `select` (continuous
//! queries: `CREATE … AS SELECT`, push queries), `window`, `partition`
//! (`PARTITION BY` and result keys), `lower` (logical plan → stream
//! operators), `insert` and `pull`. Joins are planned by `crate::join`.

mod insert;
mod lower;
mod partition;
mod props;
mod pull;
mod query;
mod select;
mod source;
mod window;

pub use insert::{plan_insert, plan_insert_select};
pub use props::FormatDefaults;
pub use pull::plan_pull;
pub use select::{make_emit_final, plan_create_as_select, plan_stream};
pub use source::{check_upgrade, plan_alter, plan_create_source};
