//! Window assignment, and the expiry of window state past its retention.

use std::sync::Arc;

use brook_planner::catalog::{WindowKind, WindowSpec, WINDOWEND, WINDOWSTART};
use brook_storage::{StateStore, WriteBatch};
use datafusion::arrow::array::{
    ArrayRef, Int64Array, RecordBatch, RecordBatchOptions, UInt32Array,
};
use datafusion::arrow::compute::take_arrays;
use datafusion::arrow::datatypes::{DataType, Field};

use super::{Context, Operator};
use crate::change::ChangeBatch;
use crate::error::Result;

/// Assigns rows to their windows (see `StreamOp::Window`), tracking the
/// query's stream time (the latest event time seen) to drop late rows.
pub(crate) struct WindowOperator {
    spec: WindowSpec,
    /// Loaded from the state store on first use.
    stream_time: Option<i64>,
    key: Vec<u8>,
    dirty: bool,
    /// Rows dropped as too late for their window, since the last
    /// [`Operator::take_late`].
    late: u64,
}

impl WindowOperator {
    /// Windows of `spec`; stream time kept at `key`.
    pub(crate) fn new(spec: WindowSpec, key: Vec<u8>) -> WindowOperator {
        WindowOperator {
            spec,
            stream_time: None,
            key,
            dirty: false,
            late: 0,
        }
    }

    fn assign(&mut self, input: ChangeBatch, state: &dyn StateStore) -> Result<ChangeBatch> {
        let mut stream_time = match self.stream_time {
            Some(t) => t,
            None => state
                .get(&self.key)?
                .and_then(|b| b.try_into().ok())
                .map_or(i64::MIN, i64::from_be_bytes),
        };
        let (mut rows, mut starts, mut ends) = (Vec::new(), Vec::new(), Vec::new());
        let (mut weights, mut rowtimes, mut null_values) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..input.len() {
            let ts = input.rowtimes[r];
            stream_time = stream_time.max(ts);
            let session = self.spec.kind == WindowKind::Session;
            // The aggregation finds a row's session (and whether it is
            // late); until then the row is a session of its own.
            let windows = if session {
                vec![(ts, ts)]
            } else {
                self.spec.windows_of(ts)
            };
            for (start, end) in windows {
                // Too late: the window closed (end + grace) before now.
                if !session && end.saturating_add(self.spec.grace_ms) <= stream_time {
                    self.late += 1;
                    continue;
                }
                rows.push(r as u32);
                starts.push(start);
                ends.push(end);
                weights.push(input.weights[r]);
                rowtimes.push(ts);
                null_values.push(input.null_values[r]);
            }
        }
        if self.stream_time != Some(stream_time) {
            self.stream_time = Some(stream_time);
            self.dirty = true;
        }
        let indices = UInt32Array::from(rows);
        let taken = take_arrays(input.batch.columns(), &indices, None)?;
        let n = taken.len();
        let split = n.saturating_sub(3);
        let mut columns: Vec<ArrayRef> = taken[..split].to_vec();
        columns.push(Arc::new(Int64Array::from(starts)));
        columns.push(Arc::new(Int64Array::from(ends)));
        columns.extend_from_slice(&taken[split..]);
        let in_schema = input.batch.schema();
        let mut fields: Vec<Arc<Field>> = in_schema.fields()[..split].to_vec();
        fields.push(Arc::new(Field::new(WINDOWSTART, DataType::Int64, true)));
        fields.push(Arc::new(Field::new(WINDOWEND, DataType::Int64, true)));
        fields.extend_from_slice(&in_schema.fields()[split..]);
        let options = RecordBatchOptions::new().with_row_count(Some(indices.len()));
        Ok(ChangeBatch {
            batch: RecordBatch::try_new_with_options(
                Arc::new(datafusion::arrow::datatypes::Schema::new(fields)),
                columns,
                &options,
            )?,
            weights,
            rowtimes,
            null_values,
        })
    }
}

impl Operator for WindowOperator {
    fn process(&mut self, input: ChangeBatch, cx: &mut Context<'_>) -> Result<ChangeBatch> {
        self.assign(input, cx.state)
    }

    fn checkpoint(&mut self, batch: &mut WriteBatch, _: &dyn StateStore) -> Result<()> {
        if let (true, Some(t)) = (self.dirty, self.stream_time) {
            batch.put(self.key.clone(), t.to_be_bytes().to_vec());
            self.dirty = false;
        }
        Ok(())
    }

    fn take_late(&mut self) -> u64 {
        std::mem::take(&mut self.late)
    }
}

/// Drops the state of windows past their retention, as Kafka Streams'
/// window stores drop their old segments. An index under the step's
/// prefix orders each window's state key by the time it expires (a time
/// window's start, a session's end, plus the retention); each epoch the
/// entries that expired before stream time are deleted with their state.
/// The retention is at least the window's size plus its grace period, so
/// a window is closed (no record can change it) before it expires.
pub(crate) struct Expiry {
    index: Vec<u8>,
    retention: i64,
    /// Session windows expire by their end, the others by their start.
    by_end: bool,
    stream_time: i64,
    /// Index entries of the windows created this epoch (a window updated
    /// many times is indexed once).
    created: std::collections::BTreeSet<Vec<u8>>,
}

/// A time as bytes that sort as the time does (negative times too).
fn ordered(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

impl Expiry {
    /// For windows of `spec`, indexed under `index`.
    pub(crate) fn new(spec: &WindowSpec, index: Vec<u8>) -> Expiry {
        let retention = spec
            .retention_ms
            .unwrap_or(0)
            .max(spec.size_ms.saturating_add(spec.grace_ms));
        Expiry {
            index,
            retention,
            by_end: spec.kind == WindowKind::Session,
            stream_time: i64::MIN,
            created: Default::default(),
        }
    }

    /// A record's time: stream time moves on.
    pub(crate) fn observe(&mut self, ts: i64) {
        self.stream_time = self.stream_time.max(ts);
    }

    /// A window created at `key` in the state store, keeping it until
    /// `at` (its start, or a session's end) plus the retention.
    pub(crate) fn track(&mut self, at: i64, key: &[u8]) {
        self.created.insert(
            [
                self.index.as_slice(),
                &ordered(at.saturating_add(self.retention)),
                key,
            ]
            .concat(),
        );
    }

    /// A window `(start, end)` stored at `key`: [`Expiry::track`] by the
    /// bound its kind expires by.
    pub(crate) fn track_window(&mut self, (start, end): (i64, i64), key: &[u8]) {
        self.track(if self.by_end { end } else { start }, key);
    }

    /// Writes the index entries of this epoch and deletes the windows that
    /// expired before stream time; their keys.
    pub(crate) fn drain(
        &mut self,
        state: &dyn StateStore,
        batch: &mut WriteBatch,
    ) -> Result<Vec<Vec<u8>>> {
        for k in std::mem::take(&mut self.created) {
            batch.put(k, Vec::new());
        }
        if self.stream_time == i64::MIN {
            return Ok(Vec::new());
        }
        let from = [self.index.as_slice(), &ordered(i64::MIN)].concat();
        let to = [self.index.as_slice(), &ordered(self.stream_time)].concat();
        let mut expired = Vec::new();
        for (k, _) in state.scan_range(&from, &to)? {
            let key = k[self.index.len() + 8..].to_vec();
            batch.delete(key.clone());
            batch.delete(k);
            expired.push(key);
        }
        Ok(expired)
    }
}

#[cfg(test)]
mod expiry_tests {
    use super::*;
    use brook_storage::MemoryStateStore;

    fn spec(retention_ms: Option<i64>) -> WindowSpec {
        WindowSpec {
            kind: WindowKind::Tumbling,
            size_ms: 1000,
            advance_ms: 1000,
            grace_ms: 500,
            retention_ms,
            grace_given: true,
        }
    }

    fn commit(state: &MemoryStateStore, expiry: &mut Expiry) -> Vec<Vec<u8>> {
        let mut batch = WriteBatch::default();
        let gone = expiry.drain(state, &mut batch).expect("drains");
        state.commit(batch).expect("commits");
        gone
    }

    #[test]
    fn windows_leave_once_stream_time_passes_start_plus_retention() {
        let state = MemoryStateStore::default();
        let mut batch = WriteBatch::default();
        for k in [b"a/w-2000".as_slice(), b"a/w0", b"a/w3000"] {
            batch.put(k.to_vec(), b"state".to_vec());
        }
        state.commit(batch).expect("commits");
        // Retention below size + grace is raised to it (1500 ms).
        let mut expiry = Expiry::new(&spec(Some(100)), b"a/x/".to_vec());
        expiry.track(-2000, b"a/w-2000");
        expiry.track(0, b"a/w0");
        expiry.track(3000, b"a/w3000");
        assert!(commit(&state, &mut expiry).is_empty(), "no stream time yet");
        expiry.observe(1500);
        // -2000 + 1500 < 1500; 0 + 1500 is not before 1500.
        assert_eq!(commit(&state, &mut expiry), vec![b"a/w-2000".to_vec()]);
        expiry.observe(1501);
        assert_eq!(commit(&state, &mut expiry), vec![b"a/w0".to_vec()]);
        assert_eq!(state.get(b"a/w0").expect("reads"), None);
        assert!(state.get(b"a/w3000").expect("reads").is_some());
        // The index keeps only the window still retained.
        assert_eq!(state.scan_prefix(b"a/x/").expect("scans").len(), 1);
    }

    #[test]
    fn a_longer_retention_keeps_windows_longer() {
        let state = MemoryStateStore::default();
        let mut expiry = Expiry::new(&spec(Some(10_000)), b"x/".to_vec());
        expiry.track(0, b"w0");
        commit(&state, &mut expiry);
        expiry.observe(9_999);
        assert!(commit(&state, &mut expiry).is_empty());
        expiry.observe(10_001);
        assert_eq!(commit(&state, &mut expiry), vec![b"w0".to_vec()]);
    }
}
