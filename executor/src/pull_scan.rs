//! A pull query's sources as DataFusion tables that read as they are
//! polled: a stream's records one page of the log at a time (up to the ends
//! it had when the query began), a materialized table's rows one page of
//! the state store at a time (or only the rows of the keys its filter pins,
//! `pull_keys`). Memory then goes with what DataFusion's operators keep,
//! which the pull query's memory pool bounds, not with the source's size; a
//! `LIMIT` stops the reading, and so does dropping the query (a cancel or
//! a timeout), between two pages.
//!
//! A table that no query writes is the latest value per key of its topic:
//! that takes reading the whole topic first, into a map bounded by the
//! pull query's byte limit.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use brook_planner::catalog::{SourceDef, SourceKind};
use brook_storage::{LogStore, StateStore};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;

use crate::change::rows_to_batch;
use crate::codec::{batch_row, decode_rows, MvRow};
use crate::error::{ExecError, Result};

/// Rows per batch a scan yields, at most (and DataFusion's batch size in a
/// pull query): the work between two await points, where a timeout or a
/// cancel takes effect, grows with it (a nested-loop join's with the
/// product of both sides). DataFusion's default: smaller ones cost more
/// per row in operators (measured: a top-k over 300,000 rows took 30%
/// longer with 4,096).
pub(crate) const SCAN_BATCH_ROWS: usize = 8192;

/// Records or rows read from the log or the state store at a time.
const PAGE_ROWS: usize = 8192;

/// Bytes per batch a scan yields, about: a sixteenth of the pull query's
/// limit, between 64 KiB and 4 MiB (operators reserve memory for whole
/// batches, and wide rows make big ones).
fn batch_bytes(max_bytes: usize) -> usize {
    (max_bytes / 16).clamp(64 << 10, 4 << 20)
}

/// One source of a pull query, as DataFusion reads it.
pub(crate) struct SourceScan(Arc<Inner>);

struct Inner {
    log: Arc<LogStore>,
    state: Arc<dyn StateStore>,
    def: SourceDef,
    schema: SchemaRef,
    what: What,
    max_bytes: usize,
}

enum What {
    /// Every record of a stream, up to these ends per partition.
    Log { ends: Vec<u64> },
    /// The latest value per key of a table no query writes, up to these ends.
    Latest { ends: Vec<u64> },
    /// A materialized table's rows in these ranges of its keys.
    Ranges(Vec<KeyRange>),
    /// A materialized table's rows at these keys.
    Keys(Vec<Vec<u8>>),
}

impl SourceScan {
    /// A scan of `def`'s current rows: `mv_prefix` is where a materialized
    /// table's rows are, `lookup` which of them it reads.
    pub(crate) fn new(
        log: Arc<LogStore>,
        state: Arc<dyn StateStore>,
        def: &SourceDef,
        mv_prefix: Vec<u8>,
        lookup: Lookup,
        max_bytes: usize,
    ) -> Result<SourceScan> {
        let under = |k: &[u8]| [mv_prefix.as_slice(), k].concat();
        let what = if def.kind == SourceKind::Table && def.query_id.is_some() {
            match lookup {
                Lookup::All => What::Ranges(vec![KeyRange::all(mv_prefix.clone())]),
                Lookup::Keys(keys) if def.window.is_none() => {
                    What::Keys(keys.iter().map(|k| under(k)).collect())
                }
                Lookup::Keys(keys) => {
                    What::Ranges(keys.iter().map(|k| KeyRange::all(under(k))).collect())
                }
                Lookup::Ranges(ranges) => What::Ranges(
                    ranges
                        .iter()
                        .map(|(start, end)| KeyRange {
                            prefix: mv_prefix.clone(),
                            start: start.as_deref().map(under),
                            end: end.as_deref().map(under),
                        })
                        .collect(),
                ),
            }
        } else {
            let ends = log.end_offsets(&def.topic)?;
            if def.kind == SourceKind::Table {
                What::Latest { ends }
            } else {
                What::Log { ends }
            }
        };
        Ok(SourceScan(Arc::new(Inner {
            log,
            state,
            schema: def.batch_schema(),
            def: def.clone(),
            what,
            max_bytes,
        })))
    }
}

impl fmt::Debug for SourceScan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SourceScan({})", self.0.def.name)
    }
}

impl PartitionStream for SourceScan {
    fn schema(&self) -> &SchemaRef {
        &self.0.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let cursor = Cursor {
            scan: Arc::clone(&self.0),
            at: 0,
            from: 0,
            after: None,
            latest: None,
            pending: std::collections::VecDeque::new(),
        };
        // Each page is read in place: a pull query runs on a blocking
        // thread of its own, with one DataFusion partition. Between two
        // batches the query yields, so that its timeout or its cancel (which
        // drop it) can take effect.
        let stream = futures::stream::try_unfold(cursor, |mut c| async move {
            tokio::task::yield_now().await;
            let batch = c.next_batch().map_err(into_datafusion)?;
            Ok(batch.map(|b| (b, c)))
        });
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.0.schema),
            stream,
        ))
    }
}

/// An executor error carried through DataFusion (see [`from_datafusion`]);
/// a resources-exhausted one as DataFusion's own.
fn into_datafusion(e: ExecError) -> DataFusionError {
    match e {
        ExecError::DataFusion(e) => e,
        e => DataFusionError::External(Box::new(e)),
    }
}

/// The executor error a DataFusion error carries, if it does.
pub(crate) fn from_datafusion(e: DataFusionError) -> ExecError {
    match e {
        DataFusionError::External(inner) => match inner.downcast::<ExecError>() {
            Ok(e) => *e,
            Err(other) => ExecError::DataFusion(DataFusionError::External(other)),
        },
        DataFusionError::Shared(shared) => match Arc::try_unwrap(shared) {
            Ok(e) => from_datafusion(e),
            Err(shared) => ExecError::DataFusion(DataFusionError::Shared(shared)),
        },
        e => ExecError::DataFusion(e),
    }
}

/// Keys under `prefix`, from `start` (inclusive; else the first) to `end`
/// (exclusive; else the last), whole keys with the prefix.
pub(crate) struct KeyRange {
    pub(crate) prefix: Vec<u8>,
    pub(crate) start: Option<Vec<u8>>,
    pub(crate) end: Option<Vec<u8>>,
}

impl KeyRange {
    fn all(prefix: Vec<u8>) -> KeyRange {
        KeyRange {
            prefix,
            start: None,
            end: None,
        }
    }
}

/// A range `[start, end)` of encoded keys (`None`: unbounded).
pub(crate) type EncodedRange = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Which of a materialized table's rows a pull query reads.
pub(crate) enum Lookup {
    /// All of them.
    All,
    /// Those of these encoded keys (every window of each, for a windowed
    /// table).
    Keys(Vec<Vec<u8>>),
    /// Those whose encoded keys are in these ranges `[start, end)` (without
    /// the table's prefix; `None`: unbounded).
    Ranges(Vec<EncodedRange>),
}

/// Where a scan is.
struct Cursor {
    scan: Arc<Inner>,
    /// The partition (log) or prefix (state) being read; past the last,
    /// done.
    at: usize,
    /// Next offset in partition `at`.
    from: u64,
    /// Last key read under prefix `at`.
    after: Option<Vec<u8>>,
    /// A table's latest rows, once read.
    latest: Option<std::vec::IntoIter<Vec<ScalarValue>>>,
    /// Rows read and not yielded yet, cut into batches.
    pending: std::collections::VecDeque<Vec<Vec<ScalarValue>>>,
}

impl Cursor {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        if self.pending.is_empty() {
            let rows = self.next_rows()?;
            let cap = batch_bytes(self.scan.max_bytes);
            let (mut chunk, mut bytes) = (Vec::new(), 0usize);
            for row in rows {
                let size = row.iter().map(ScalarValue::size).sum::<usize>();
                if !chunk.is_empty() && (bytes + size > cap || chunk.len() == SCAN_BATCH_ROWS) {
                    self.pending.push_back(std::mem::take(&mut chunk));
                    bytes = 0;
                }
                bytes += size;
                chunk.push(row);
            }
            if !chunk.is_empty() {
                self.pending.push_back(chunk);
            }
        }
        match self.pending.pop_front() {
            Some(rows) => Ok(Some(rows_to_batch(&self.scan.schema, rows)?)),
            None => Ok(None),
        }
    }

    /// The next rows read, or none once done.
    fn next_rows(&mut self) -> Result<Vec<Vec<ScalarValue>>> {
        let scan = Arc::clone(&self.scan);
        let rows = match &scan.what {
            What::Log { ends } => self.log_rows(ends)?,
            What::Ranges(ranges) => self.range_rows(ranges)?,
            What::Keys(keys) => {
                if self.at > 0 {
                    return Ok(Vec::new());
                }
                self.at = 1;
                let mut rows = Vec::with_capacity(keys.len());
                for key in keys {
                    if let Some(v) = scan.state.get(key)? {
                        rows.push(mv_row(&scan.def, &v)?);
                    }
                }
                rows
            }
            What::Latest { ends } => {
                if self.latest.is_none() {
                    self.latest = Some(latest_rows(&scan, ends)?.into_iter());
                }
                self.latest
                    .as_mut()
                    .map(|rows| rows.by_ref().take(PAGE_ROWS).collect())
                    .unwrap_or_default()
            }
        };
        Ok(rows)
    }

    /// The next page of a stream's records with rows, decoded.
    fn log_rows(&mut self, ends: &[u64]) -> Result<Vec<Vec<ScalarValue>>> {
        let scan = &self.scan;
        while let Some(&end) = ends.get(self.at) {
            let partition = self.at as u32;
            let records = if self.from < end {
                scan.log
                    .read(&scan.def.topic, partition, self.from, PAGE_ROWS)?
            } else {
                Vec::new()
            };
            let Some(last) = records.last().map(|r| r.offset) else {
                self.at += 1;
                self.from = 0;
                continue;
            };
            self.from = last + 1;
            let records: Vec<_> = records.into_iter().filter(|r| r.offset < end).collect();
            let mut rows = Vec::with_capacity(records.len());
            for d in decode_rows(&scan.def, &records, false).0 {
                rows.push(batch_row(
                    &scan.def,
                    &d.values,
                    d.window,
                    d.rowtime,
                    d.record.partition as i32,
                    d.record.offset as i64,
                )?);
            }
            if !rows.is_empty() {
                return Ok(rows);
            }
        }
        Ok(Vec::new())
    }

    /// The next page of a materialized table's rows.
    fn range_rows(&mut self, ranges: &[KeyRange]) -> Result<Vec<Vec<ScalarValue>>> {
        use std::ops::Bound;
        let scan = &self.scan;
        while let Some(range) = ranges.get(self.at) {
            let from = match (&self.after, &range.start) {
                (Some(after), _) => Bound::Excluded(after.as_slice()),
                (None, Some(start)) => Bound::Included(start.as_slice()),
                (None, None) => Bound::Unbounded,
            };
            let page = scan
                .state
                .scan_prefix_page(&range.prefix, from, PAGE_ROWS)?;
            let full = page.len() == PAGE_ROWS;
            let in_range: Vec<_> = page
                .into_iter()
                .take_while(|(k, _)| range.end.as_ref().is_none_or(|end| k < end))
                .collect();
            match in_range.last() {
                Some((last, _)) if full && in_range.len() == PAGE_ROWS => {
                    self.after = Some(last.clone());
                }
                _ => {
                    self.at += 1;
                    self.after = None;
                }
            }
            if !in_range.is_empty() {
                return in_range.iter().map(|(_, v)| mv_row(&scan.def, v)).collect();
            }
        }
        Ok(Vec::new())
    }
}

fn mv_row(def: &SourceDef, bytes: &[u8]) -> Result<Vec<ScalarValue>> {
    let row = MvRow::from_bytes(bytes)?;
    batch_row(
        def,
        &row.values,
        row.window,
        row.rowtime,
        row.partition,
        row.offset,
    )
}

/// The latest row per key of a table's topic (applied in offset order;
/// a tombstone deletes), holding at most the scan's byte limit.
fn latest_rows(scan: &Inner, ends: &[u64]) -> Result<Vec<Vec<ScalarValue>>> {
    let def = &scan.def;
    let mut latest: BTreeMap<Option<Vec<u8>>, (usize, Vec<ScalarValue>)> = BTreeMap::new();
    let mut bytes = 0usize;
    for (p, &end) in ends.iter().enumerate() {
        let mut from = 0;
        while from < end {
            let records = scan.log.read(&def.topic, p as u32, from, PAGE_ROWS)?;
            let Some(last) = records.last().map(|r| r.offset) else {
                break;
            };
            from = last + 1;
            for r in records.iter().filter(|r| r.offset < end) {
                let row = if r.record.value.is_none() {
                    None
                } else {
                    decode_rows(def, std::slice::from_ref(r), false)
                        .0
                        .into_iter()
                        .next()
                        .map(|d| {
                            batch_row(
                                def,
                                &d.values,
                                d.window,
                                d.rowtime,
                                r.partition as i32,
                                r.offset as i64,
                            )
                        })
                        .transpose()?
                };
                let old = match row {
                    Some(row) => {
                        let size = row.iter().map(ScalarValue::size).sum::<usize>()
                            + r.record.key.as_ref().map_or(0, Vec::len);
                        bytes = bytes.saturating_add(size);
                        latest.insert(r.record.key.clone(), (size, row))
                    }
                    None => latest.remove(&r.record.key),
                };
                bytes = bytes.saturating_sub(old.map_or(0, |(size, _)| size));
                if bytes > scan.max_bytes {
                    return Err(ExecError::DataFusion(DataFusionError::ResourcesExhausted(
                        format!(
                            "pull query would read more than {} bytes (at {}): add a key lookup or a narrower WHERE, use a push query, or raise --max-pull-bytes",
                            scan.max_bytes, def.name
                        ),
                    )));
                }
            }
        }
    }
    Ok(latest.into_values().map(|(_, row)| row).collect())
}
