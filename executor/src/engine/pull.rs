//! Pull queries: DataFusion over the current contents of the sources.

use std::collections::HashMap;
use std::sync::Arc;

use brook_planner::catalog::SourceKind;
use brook_planner::plan::PullPlan;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::common::tree_node::Transformed;
use datafusion::datasource::provider_as_source;
use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlan;

use super::{mv_prefix, Engine};
use crate::error::{ExecError, Result};
use crate::pull_scan::{from_datafusion, SourceScan};

impl Engine {
    /// Runs a pull query over the current contents of its sources, which
    /// it reads as it goes (`pull_scan`). What its operators keep, the rows
    /// of a table no query writes, and its result are each bounded by
    /// `max_bytes`; past it, it fails with a resources-exhausted error.
    pub async fn pull(
        &self,
        plan: PullPlan,
        max_bytes: usize,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let mut tables: HashMap<String, Arc<StreamingTable>> = HashMap::new();
        for def in &plan.sources {
            if let Some((done, total)) = def
                .query_id
                .as_deref()
                .filter(|_| def.kind == SourceKind::Table)
                .and_then(|q| self.rebuild_progress(q))
            {
                return Err(ExecError::NotReady {
                    table: def.name.clone(),
                    done,
                    total,
                });
            }
            let scan = SourceScan::new(
                Arc::clone(&self.log),
                Arc::clone(&self.state),
                def,
                mv_prefix(&def.name),
                crate::pull_keys::lookup(&plan.plan, def),
                max_bytes,
            )?;
            tables.insert(
                def.name.clone(),
                Arc::new(StreamingTable::try_new(
                    def.batch_schema(),
                    vec![Arc::new(scan)],
                )?),
            );
        }
        let plan = plan
            .plan
            .transform_up_with_subqueries(|node| {
                if let LogicalPlan::TableScan(mut scan) = node {
                    if let Some(t) = tables.get(scan.table_name.table()) {
                        scan.source = provider_as_source(Arc::clone(t) as _);
                        return Ok(Transformed::yes(LogicalPlan::TableScan(scan)));
                    }
                    return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
                }
                Ok(Transformed::no(node))
            })?
            .data;
        // One partition: the scans read in place, on the pull query's own
        // thread. What operators keep (sorts, joins, aggregates) counts
        // against `max_bytes`, with no spilling to disk.
        let mut cfg = SessionConfig::new()
            .with_target_partitions(1)
            .with_batch_size(crate::pull_scan::SCAN_BATCH_ROWS);
        cfg.options_mut().sql_parser.enable_ident_normalization = false;
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(max_bytes, 1.0)
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()?;
        // The plan holds its functions already: no registry is built.
        let state = datafusion::execution::session_state::SessionStateBuilder::new()
            .with_config(cfg)
            .with_runtime_env(runtime)
            .build();
        let ctx = SessionContext::new_with_state(state);
        let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
        let mut stream = ctx
            .execute_logical_plan(plan)
            .await?
            .execute_stream()
            .await
            .map_err(from_datafusion)?;
        let mut batches = Vec::new();
        let mut bytes = 0usize;
        while let Some(batch) = futures::StreamExt::next(&mut stream).await {
            let batch = batch.map_err(from_datafusion)?;
            bytes = bytes.saturating_add(slice_bytes(&batch));
            if bytes > max_bytes {
                return Err(ExecError::DataFusion(
                    datafusion::error::DataFusionError::ResourcesExhausted(format!(
                        "pull query result is larger than {max_bytes} bytes: add a LIMIT or a narrower WHERE, use a push query, or raise --max-pull-bytes"
                    )),
                ));
            }
            batches.push(batch);
        }
        Ok((schema, batches))
    }
}

/// The bytes of Arrow data a batch holds (of its slice, not of buffers it
/// shares with others).
fn slice_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
        .sum()
}
