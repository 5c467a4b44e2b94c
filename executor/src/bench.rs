//! What the operator benchmarks (`benches/operators.rs`) reach inside the
//! crate for: a source's records decoded into a change batch as a
//! persistent query decodes them, and the join operator. Not an API.

use brook_planner::catalog::{SourceDef, SourceKind};
use brook_planner::plan::{JoinSpec, StreamPlan};
use brook_storage::{StateStore, StoredRecord};

use crate::change::ChangeBatch;
use crate::error::Result;
use crate::operator::join::JoinChain;

/// `records` of `def` as the change batch a persistent query reading `def`
/// would process (a table's records as a stream's: the table-source step
/// is not part of these benchmarks).
pub fn decode(def: &SourceDef, records: &[StoredRecord]) -> Result<ChangeBatch> {
    let mut as_stream = def.clone();
    as_stream.kind = SourceKind::Stream;
    Ok(crate::decode::decode_batch(&as_stream, &def.batch_schema(), records)?.0)
}

/// A join's operator, as a persistent query runs it.
pub struct Join(JoinChain);

impl Join {
    /// The join of `plan` (which must have one), its state empty in `state`.
    pub fn new(plan: &StreamPlan, state: &dyn StateStore) -> Result<Join> {
        let spec: &JoinSpec = plan
            .join
            .as_ref()
            .ok_or_else(|| crate::error::ExecError::Internal("the plan has no join".into()))?;
        Ok(Join(JoinChain::new(
            spec,
            plan.source.batch_schema(),
            b"j/".to_vec(),
            state,
        )?))
    }

    /// The sources the join reads, in the order [`Join::process`] takes
    /// their batches.
    pub fn sources(&self) -> Vec<SourceDef> {
        self.0.sources().into_iter().cloned().collect()
    }

    /// Joins one epoch's decoded batches (one per source) into the rows of
    /// the join's synthetic source.
    pub fn process(&mut self, inputs: &[ChangeBatch]) -> Result<ChangeBatch> {
        let mut problems = Vec::new();
        self.0.join(inputs, &mut problems)
    }
}
