//! Brook's planner: SQL text → statements → bound plans.
//!
//! It owns the ksqlDB dialect (on sqlparser, through DataFusion's
//! re-export), the catalog model (streams, tables, persistent queries),
//! ksqlDB's types, and the lowering of queries into plans. It does no I/O
//! and knows nothing of tokio or storage.
//!
//! Where to start:
//! - [`parser::parse`] turns a script into [`parser::Statement`]s; ksqlDB
//!   identifiers are upper-cased unless quoted.
//! - [`binder`] binds statements against a [`catalog::Catalog`]:
//!   [`binder::plan_create_source`] gives a [`catalog::SourceDef`],
//!   [`binder::plan_stream`] a [`plan::StreamPlan`] (continuous queries),
//!   [`binder::plan_pull`] a [`plan::PullPlan`] (DataFusion over state),
//!   [`binder::plan_insert`] typed rows.
//! - [`plan`] is the only contract with the executor.
//! - [`printer`] prints a statement back as ksqlDB text (the inverse of
//!   parsing; round-trip tested).
//!
//! Layers, lowest first: `types` → `catalog` → `parser` → `binder` → `plan`.
#![warn(missing_docs)]

pub mod binder;
pub mod catalog;
pub mod datum;
mod dialect;
mod error;
pub mod functions;
pub mod join;
mod ksql_ast;
pub mod parser;
pub mod plan;
pub mod printer;
pub mod types;

pub use error::{PlanError, Result};
