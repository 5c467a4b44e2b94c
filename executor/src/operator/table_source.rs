//! A table read as changes.

use brook_planner::catalog::SourceDef;
use brook_storage::{StateStore, StoredRecord, WriteBatch};
use datafusion::arrow::datatypes::SchemaRef;

use super::{Context, Operator};
use crate::change::{rows_to_batch, ChangeBatch};
use crate::codec::{batch_row, decode_rows, MvRow};
use crate::error::Result;

/// A table read as changes: each upsert retracts the key's previous row
/// and inserts the new one; a tombstone retracts only. The latest row per
/// key is kept in the state store under a prefix.
pub(crate) struct TableSourceOperator {
    def: SourceDef,
    schema: SchemaRef,
    prefix: Vec<u8>,
    /// Keys touched this epoch: their latest row (`None` = deleted).
    cache: std::collections::HashMap<Vec<u8>, Option<MvRow>>,
}

impl TableSourceOperator {
    /// The table `def` as changes, its rows kept under `prefix`.
    pub(crate) fn new(def: &SourceDef, prefix: Vec<u8>) -> TableSourceOperator {
        TableSourceOperator {
            def: def.clone(),
            schema: def.batch_schema(),
            prefix,
            cache: std::collections::HashMap::new(),
        }
    }

    fn previous(&self, key: &[u8], state: &dyn StateStore) -> Result<Option<MvRow>> {
        if let Some(row) = self.cache.get(key) {
            return Ok(row.clone());
        }
        let stored = state.get(&[self.prefix.as_slice(), key].concat())?;
        stored.map(|b| MvRow::from_bytes(&b)).transpose()
    }
}

impl Operator<&[StoredRecord]> for TableSourceOperator {
    /// The changes the records make, in order. Records without a key are
    /// ignored, as ksqlDB's tables ignore them.
    fn process(&mut self, records: &[StoredRecord], cx: &mut Context<'_>) -> Result<ChangeBatch> {
        let to_scalars = |row: &MvRow| {
            batch_row(
                &self.def,
                &row.values,
                row.window,
                row.rowtime,
                row.partition,
                row.offset,
            )
        };
        let mut rows = Vec::new();
        let mut weights = Vec::new();
        let mut rowtimes = Vec::new();
        for r in records {
            let Some(key) = r.record.key.clone() else {
                continue;
            }; // tables ignore records without a key
            let new = if r.record.value.is_none() {
                None
            } else {
                let (decoded, skipped) = decode_rows(&self.def, std::slice::from_ref(r), false);
                match decoded.into_iter().next() {
                    Some(d) => Some(MvRow {
                        values: d.values,
                        rowtime: d.rowtime,
                        partition: r.partition as i32,
                        offset: r.offset as i64,
                        window: d.window,
                    }),
                    None => {
                        // Undecodable: skipped and logged.
                        cx.errors.extend(skipped);
                        continue;
                    }
                }
            };
            if let Some(prev) = self.previous(&key, cx.state)? {
                rows.push(to_scalars(&prev)?);
                weights.push(-1);
                rowtimes.push(new.as_ref().map_or(r.record.timestamp, |n| n.rowtime));
            }
            if let Some(new) = &new {
                rows.push(to_scalars(new)?);
                weights.push(1);
                rowtimes.push(new.rowtime);
            }
            self.cache.insert(key, new);
        }
        Ok(ChangeBatch {
            batch: rows_to_batch(&self.schema, rows)?,
            null_values: vec![false; weights.len()],
            weights,
            rowtimes,
        })
    }

    /// Adds the epoch's row changes to `batch`.
    fn checkpoint(&mut self, batch: &mut WriteBatch, _: &dyn StateStore) -> Result<()> {
        for (key, row) in std::mem::take(&mut self.cache) {
            let k = [self.prefix.as_slice(), key.as_slice()].concat();
            match row {
                Some(row) => batch.put(k, row.to_bytes()?),
                None => batch.delete(k),
            }
        }
        Ok(())
    }
}
