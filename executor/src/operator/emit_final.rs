//! `EMIT FINAL`: a window's result once, when the window closes.

use std::collections::BTreeMap;
use std::sync::Arc;

use brook_planner::catalog::{WindowKind, WindowSpec};
use brook_planner::plan::StreamPlan;
use brook_storage::{StateStore, WriteBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use serde::{Deserialize, Serialize};

use super::{Context, Operator};
use crate::change::{rows_to_batch, ChangeBatch};
use crate::datum::Datum;
use crate::error::{binary, from_binary, json, ExecError, Result};

/// `EMIT FINAL`: holds each window's latest result and emits it once,
/// when the window closes, as Kafka Streams' emit-on-window-close does.
/// Windows close in order of start as stream time passes their end plus the
/// grace period; a window that is already past the store's retention (size
/// plus grace) by then is never emitted, as in Kafka Streams.
pub(crate) struct EmitFinalOperator {
    spec: WindowSpec,
    /// Output columns of the window's bounds, and the key columns.
    start: usize,
    end: usize,
    keys: Vec<usize>,
    schema: SchemaRef,
    prefix: Vec<u8>,
    loaded: bool,
    /// (window start, key) → the latest row and its time.
    held: BTreeMap<(i64, Vec<u8>), HeldRow>,
    stream_time: i64,
    last_close: i64,
    writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct HeldRow {
    start: i64,
    key: Vec<u8>,
    row: Vec<Datum>,
    ts: i64,
}

impl EmitFinalOperator {
    /// For the windowed aggregation of `plan`, whose window is `spec` and
    /// whose output has the window's bounds at `start` and `end`; state
    /// under `prefix`.
    pub(crate) fn new(
        (spec, start, end): (WindowSpec, usize, usize),
        plan: &StreamPlan,
        prefix: Vec<u8>,
    ) -> EmitFinalOperator {
        EmitFinalOperator {
            spec,
            start,
            end,
            keys: plan.key_columns.clone(),
            schema: Arc::clone(&plan.output_schema),
            prefix,
            loaded: false,
            held: BTreeMap::new(),
            stream_time: i64::MIN,
            last_close: -1,
            writes: Vec::new(),
        }
    }

    fn state_key(&self, start: i64, key: &[u8]) -> Vec<u8> {
        [self.prefix.as_slice(), b"h/", &start.to_be_bytes(), key].concat()
    }

    fn load(&mut self, state: &dyn StateStore) -> Result<()> {
        if self.loaded {
            return Ok(());
        }
        self.loaded = true;
        let bad =
            |e: serde_json::Error| ExecError::Internal(format!("unreadable EMIT FINAL state: {e}"));
        for (_, v) in state.scan_prefix(&[self.prefix.as_slice(), b"h/"].concat())? {
            let h: HeldRow = from_binary(&v, "EMIT FINAL state")?;
            self.held.insert((h.start, h.key.clone()), h);
        }
        if let Some(v) = state.get(&[self.prefix.as_slice(), b"meta"].concat())? {
            (self.stream_time, self.last_close) = serde_json::from_slice(&v).map_err(bad)?;
        }
        Ok(())
    }

    fn close(&mut self, input: &ChangeBatch, state: &dyn StateStore) -> Result<ChangeBatch> {
        self.load(state)?;
        if self.spec.kind == WindowKind::Session {
            return self.process_sessions(input);
        }
        let (mut rows, mut times) = (Vec::new(), Vec::new());
        let grace = self.spec.grace_ms;
        let size = self.spec.size_ms;
        for r in 0..input.len() {
            let (row, key) = self.row_and_key(input, r)?;
            let Some(Datum::Int(start)) = row.get(self.start).cloned() else {
                continue;
            };
            if input.weights[r] > 0 {
                let ts = self
                    .held
                    .get(&(start, key.clone()))
                    .map_or(input.rowtimes[r], |h| h.ts.max(input.rowtimes[r]));
                let h = HeldRow {
                    start,
                    key: key.clone(),
                    row,
                    ts,
                };
                self.writes
                    .push((self.state_key(start, &key), Some(binary(&h)?)));
                self.held.insert((start, key), h);
            }
            self.stream_time = self.stream_time.max(input.rowtimes[r]);
            let close = self.stream_time.saturating_sub(grace);
            if close <= self.last_close {
                continue;
            }
            let upper = close.saturating_sub(size);
            let lower = (self.last_close.saturating_sub(size)).max(0);
            if upper < 0 || upper < lower {
                continue;
            }
            let expired_before = self.stream_time.saturating_sub(size.saturating_add(grace));
            let closed: Vec<(i64, Vec<u8>)> = self
                .held
                .range(..(upper.saturating_add(1), Vec::new()))
                .map(|(k, _)| k.clone())
                .collect();
            for k in closed {
                if let Some(h) = self.held.remove(&k) {
                    self.writes.push((self.state_key(h.start, &h.key), None));
                    if h.start >= lower && h.start >= expired_before {
                        rows.push(self.scalars(&h.row)?);
                        times.push(h.ts);
                    }
                }
            }
            self.last_close = close;
        }
        self.emitted(rows, times)
    }

    /// Sessions are held by their end (and key and start) and emitted
    /// once stream time passes their end by the gap plus the grace period,
    /// as Kafka Streams' suppression does; a merged-away session's tombstone only
    /// drops it.
    fn process_sessions(&mut self, input: &ChangeBatch) -> Result<ChangeBatch> {
        let (mut rows, mut times) = (Vec::new(), Vec::new());
        for r in 0..input.len() {
            let (row, mut key) = self.row_and_key(input, r)?;
            let (Some(Datum::Int(start)), Some(Datum::Int(end))) =
                (row.get(self.start).cloned(), row.get(self.end).cloned())
            else {
                continue;
            };
            key.extend_from_slice(&start.to_be_bytes());
            let state_key = self.state_key(end, &key);
            if input.weights[r] > 0 {
                let h = HeldRow {
                    start: end,
                    key: key.clone(),
                    row,
                    ts: input.rowtimes[r],
                };
                self.writes.push((state_key, Some(binary(&h)?)));
                self.held.insert((end, key), h);
            } else {
                self.writes.push((state_key, None));
                self.held.remove(&(end, key));
            }
            self.stream_time = self.stream_time.max(input.rowtimes[r]);
            // A session can grow until stream time passes its end by the
            // gap; Kafka Streams adds the gap to the grace period here.
            let close = self
                .stream_time
                .saturating_sub(self.spec.grace_ms.saturating_add(self.spec.size_ms));
            while let Some(entry) = self.held.first_entry() {
                if entry.key().0 > close {
                    break;
                }
                let h = entry.remove();
                self.writes.push((self.state_key(h.start, &h.key), None));
                rows.push(self.scalars(&h.row)?);
                times.push(h.ts);
            }
        }
        self.emitted(rows, times)
    }

    /// Input row `r` as datums, and its key columns as JSON.
    fn row_and_key(&self, input: &ChangeBatch, r: usize) -> Result<(Vec<Datum>, Vec<u8>)> {
        let row: Vec<Datum> = input
            .row(r)?
            .iter()
            .map(Datum::from_scalar)
            .collect::<std::result::Result<_, _>>()?;
        let key: Vec<&Datum> = self.keys.iter().filter_map(|&k| row.get(k)).collect();
        let key = json(&key)?;
        Ok((row, key))
    }

    /// Records stream time and the close time, and batches the rows
    /// emitted (each at its time).
    fn emitted(&mut self, rows: Vec<Vec<ScalarValue>>, times: Vec<i64>) -> Result<ChangeBatch> {
        let meta = json(&(self.stream_time, self.last_close))?;
        self.writes
            .push(([self.prefix.as_slice(), b"meta"].concat(), Some(meta)));
        Ok(ChangeBatch {
            batch: rows_to_batch(&self.schema, rows)?,
            weights: vec![1; times.len()],
            null_values: vec![false; times.len()],
            rowtimes: times,
        })
    }

    fn scalars(&self, row: &[Datum]) -> Result<Vec<ScalarValue>> {
        row.iter()
            .zip(self.schema.fields().iter())
            .map(|(d, f)| Ok(d.to_scalar(f.data_type())?))
            .collect()
    }
}

impl Operator for EmitFinalOperator {
    fn process(&mut self, input: ChangeBatch, cx: &mut Context<'_>) -> Result<ChangeBatch> {
        self.close(&input, cx.state)
    }

    fn checkpoint(&mut self, batch: &mut WriteBatch, _: &dyn StateStore) -> Result<()> {
        for (k, v) in self.writes.drain(..) {
            match v {
                Some(v) => batch.put(k, v),
                None => batch.delete(k),
            }
        }
        Ok(())
    }
}
