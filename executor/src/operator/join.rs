//! The join operator: builds the rows of a join's synthetic source (see
//! `brook_planner::join`) from the records of its two inputs.
//!
//! - **Stream-stream** (`WITHIN (before, after)`): each side keeps the
//!   records of its retention (24 hours, or before + after + GRACE PERIOD
//!   when one is given) by join key. A record joins the other side's
//!   records with the same key whose time t' satisfies
//!   `t − before ≤ t' ≤ t + after` (seen from the left), in time order;
//!   the output's time is the later of the two. A LEFT/RIGHT/FULL record
//!   without a match is emitted at once with NULLs for the other side; a
//!   later match is emitted too (ksqlDB's behaviour without a grace
//!   period). With a grace period the NULL row is held until the record's
//!   window closes, and dropped if a match comes first.
//! - **Table-table** (primary key): both tables' current rows; a change on
//!   either side retracts the joined row as it was and inserts it as it is.
//! - **Foreign key** (table-table, the left side on any expression): the
//!   left table's rows by primary key, indexed by the right key they name;
//!   a right change retracts and re-inserts every left row naming it.
//! - **Stream-table**: the table side keeps its current row per primary
//!   key (a tombstone deletes it); a stream record joins the row current
//!   when it is processed. Table changes emit nothing.
//!
//! Records with a NULL key or no value do not join. The buffers are held
//! in memory and mirrored to the state store under the query's prefix, so
//! they commit with the epoch's offsets; they are loaded back at start.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use brook_planner::catalog::{SourceDef, SourceKind};
use brook_planner::plan::{JoinKind, JoinSpec};
use brook_storage::{StateStore, WriteBatch};
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use serde::{Deserialize, Serialize};

use super::{evaluate_lenient, physical, Context, Operator, PhysExpr};
use crate::change::{rows_to_batch, ChangeBatch};
use crate::datum::Datum;
use crate::error::{binary, from_binary, json, ExecError, Result};
use crate::processing_log::ProcessingError;

/// How long a stream-stream join keeps records without a grace period.
const LEGACY_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;

/// A buffered record of one side.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    key: Datum,
    ts: i64,
    seq: u64,
    row: Vec<Datum>,
}

/// A table input's current row for a key.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TableRow {
    row: Vec<Datum>,
    ts: i64,
    /// A foreign-key join's left row: the key of the right row it joins
    /// (`None`: its join expression is NULL).
    /// (Defaulted: rows written as JSON by earlier versions may lack it.)
    #[serde(default)]
    fk: Option<Vec<u8>>,
}

/// State tags of the left and right tables' rows.
const TABLE_TAGS: [u8; 2] = [b'L', b'R'];

/// One side's buffer: entries by key (in (ts, seq) order), and by time for
/// expiry.
#[derive(Default)]
struct Buffer {
    by_key: HashMap<Vec<u8>, Vec<Entry>>,
    by_time: BTreeMap<(i64, u64), Vec<u8>>,
    max_ts: i64,
}

/// A join of two or more inputs: one [`JoinStep`] per step, each step's
/// output the next one's left input. Records of all inputs are taken in
/// one order (see [`merge_order`]) and each goes through the steps before
/// the next one, as Kafka Streams runs a record through its topology.
pub struct JoinChain {
    steps: Vec<JoinStep>,
    spec: JoinSpec,
}

impl JoinChain {
    /// The operators for `spec` (the last step) and the steps before it,
    /// their state loaded from `state`: the last under `prefix`, step `i`
    /// before it under `prefix` + `i.`.
    pub fn new(
        spec: &JoinSpec,
        out_schema: SchemaRef,
        prefix: Vec<u8>,
        state: &dyn StateStore,
    ) -> Result<JoinChain> {
        let specs = spec.steps();
        let mut steps = Vec::with_capacity(specs.len());
        for (i, step) in specs.iter().enumerate() {
            let (schema, prefix) = match specs.get(i + 1) {
                Some(next) => (
                    next.left.source.batch_schema(),
                    [prefix.as_slice(), format!("{i}.").as_bytes()].concat(),
                ),
                None => (Arc::clone(&out_schema), prefix.clone()),
            };
            steps.push(JoinStep::new(step, schema, prefix, state)?);
        }
        Ok(JoinChain {
            steps,
            spec: spec.clone(),
        })
    }

    /// The sources joined, in the query's order: what `process` takes.
    pub fn sources(&self) -> Vec<&SourceDef> {
        self.spec.inputs()
    }

    /// Joins the decoded records of every input into rows of the join's
    /// synthetic source. Join expression failures go to `errors`.
    pub fn join(
        &mut self,
        inputs: &[ChangeBatch],
        errors: &mut Vec<ProcessingError>,
    ) -> Result<ChangeBatch> {
        if inputs.len() != self.steps.len() + 1 {
            return Err(ExecError::Internal(format!(
                "a join of {} inputs got {}",
                self.steps.len() + 1,
                inputs.len()
            )));
        }
        let refs: Vec<&ChangeBatch> = inputs.iter().collect();
        let order = merge_order(&refs);
        // Each output row carries the position in `order` of the record
        // that produced it, so that a later step sees its left rows and
        // its right records in that order.
        let mut left: Option<(ChangeBatch, Vec<usize>)> = None;
        for (k, step) in self.steps.iter_mut().enumerate() {
            let (left_batch, left_rows) = match left.take() {
                None => {
                    let first = order
                        .iter()
                        .enumerate()
                        .filter(|(_, (input, _))| *input == 0)
                        .map(|(g, (_, r))| (*r, g))
                        .collect();
                    (inputs[0].clone(), first)
                }
                Some((batch, pos)) => as_table_changes(batch, &pos)?,
            };
            let right_rows = order
                .iter()
                .enumerate()
                .filter(|(_, (input, _))| *input == k + 1)
                .map(|(g, (_, r))| (*r, g));
            // Both lists are in order: merge them by position.
            let mut step_order = Vec::new();
            let mut positions = Vec::new();
            let mut lefts = left_rows.into_iter().peekable();
            let mut rights = right_rows.peekable();
            loop {
                let side = match (lefts.peek(), rights.peek()) {
                    (Some((_, lg)), Some((_, rg))) if lg <= rg => Side::Left,
                    (Some(_), None) => Side::Left,
                    (_, Some(_)) => Side::Right,
                    (None, None) => break,
                };
                let next = if side == Side::Left {
                    lefts.next()
                } else {
                    rights.next()
                };
                if let Some((r, g)) = next {
                    step_order.push((side, r));
                    positions.push(g);
                }
            }
            let (out, origins) =
                step.process([&left_batch, &inputs[k + 1]], &step_order, errors)?;
            let pos = origins.iter().map(|&o| positions[o]).collect();
            left = Some((out, pos));
        }
        left.map(|(batch, _)| batch)
            .ok_or_else(|| ExecError::Internal("a join without steps".into()))
    }
}

impl Operator<&[ChangeBatch]> for JoinChain {
    fn process(&mut self, inputs: &[ChangeBatch], cx: &mut Context<'_>) -> Result<ChangeBatch> {
        self.join(inputs, cx.errors)
    }

    /// Moves this epoch's state changes of every step into the commit.
    fn checkpoint(&mut self, batch: &mut WriteBatch, _: &dyn StateStore) -> Result<()> {
        for step in &mut self.steps {
            step.drain(batch)?;
        }
        Ok(())
    }
}

/// An earlier step's output as the next step's left input, as (row,
/// position) pairs: a retraction followed by the insertion of the same
/// record (an update) is left out, so that rows are upserts, and the
/// remaining retractions are deletes (a table's tombstones).
fn as_table_changes(out: ChangeBatch, pos: &[usize]) -> Result<(ChangeBatch, Vec<(usize, usize)>)> {
    use datafusion::arrow::array::BooleanArray;
    let n = out.len();
    let keep: Vec<bool> = (0..n)
        .map(|i| {
            !(out.weights[i] < 0
                && i + 1 < n
                && out.weights[i + 1] > 0
                && pos.get(i) == pos.get(i + 1))
        })
        .collect();
    let batch = datafusion::arrow::compute::filter_record_batch(
        &out.batch,
        &BooleanArray::from(keep.clone()),
    )?;
    let mut kept = ChangeBatch {
        batch,
        weights: Vec::new(),
        null_values: Vec::new(),
        rowtimes: Vec::new(),
    };
    let mut rows = Vec::new();
    for i in (0..n).filter(|&i| keep[i]) {
        rows.push((kept.weights.len(), pos.get(i).copied().unwrap_or(0)));
        kept.weights.push(out.weights[i]);
        kept.null_values.push(out.weights[i] < 0);
        kept.rowtimes.push(out.rowtimes[i]);
    }
    Ok((kept, rows))
}

/// The order a join processes its inputs' rows in, as (input, row): each
/// partition in offset order, and across partitions and inputs the head
/// with the earliest time first (then the earlier input, then the lower
/// partition), as Kafka Streams picks records.
pub fn merge_order(inputs: &[&ChangeBatch]) -> Vec<(usize, usize)> {
    use std::collections::VecDeque;
    let mut queues: BTreeMap<(usize, i64), VecDeque<usize>> = BTreeMap::new();
    for (s, input) in inputs.iter().enumerate() {
        let n = input.batch.num_columns();
        let partitions = (n >= 2)
            .then(|| Arc::clone(input.batch.column(n - 2)))
            .and_then(|c| {
                c.as_any()
                    .downcast_ref::<datafusion::arrow::array::Int32Array>()
                    .cloned()
            });
        for r in 0..input.len() {
            let p = partitions.as_ref().map_or(0, |a| i64::from(a.value(r)));
            queues.entry((s, p)).or_default().push_back(r);
        }
    }
    let mut order = Vec::new();
    loop {
        let next = queues
            .iter()
            .filter_map(|(&(s, p), q)| q.front().map(|&r| (inputs[s].rowtimes[r], s, p)))
            .min();
        let Some((_, s, p)) = next else {
            break;
        };
        if let Some(r) = queues.get_mut(&(s, p)).and_then(|q| q.pop_front()) {
            order.push((s, r));
        }
    }
    order
}

/// Which input a record comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The left input.
    Left,
    /// The right input.
    Right,
}

/// The join of one persistent query.
pub struct JoinStep {
    spec: JoinSpec,
    keys: [PhysExpr; 2],
    /// Arrow types of each side's batch columns.
    types: [Vec<datafusion::arrow::datatypes::DataType>; 2],
    out_schema: SchemaRef,
    prefix: Vec<u8>,
    buffers: [Buffer; 2],
    /// Table inputs: each table's current rows by key.
    tables: [HashMap<Vec<u8>, TableRow>; 2],
    next_seq: u64,
    writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// The left join column's index, when the left side joins on a column.
    left_key_column: Option<usize>,
    /// With a grace period: unmatched records of an outer side, waiting
    /// for their window to close (then they are emitted with NULLs) or
    /// for a match (then they are dropped), by (time, seq).
    pending: BTreeMap<(i64, u64), Pending>,
    /// The latest time seen on either side; whether it moved this epoch.
    stream_time: i64,
    stream_time_dirty: bool,
    /// A foreign-key join: the left table's key columns, and its rows'
    /// keys by the right key they join.
    left_pk: Vec<usize>,
    by_foreign_key: HashMap<Vec<u8>, BTreeSet<Vec<u8>>>,
}

/// An unmatched record of an outer side, held until its window closes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    side: usize,
    entry: Entry,
    partition: i32,
    offset: i64,
}

fn key_bytes(key: &Datum) -> Result<Vec<u8>> {
    json(key)
}

/// Join state as written by `binary`, or as JSON by earlier versions.
fn read_state<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    from_binary(bytes, "join state")
}

impl JoinStep {
    /// The operator for `spec`, its buffers loaded from `state`.
    pub fn new(
        spec: &JoinSpec,
        out_schema: SchemaRef,
        prefix: Vec<u8>,
        state: &dyn StateStore,
    ) -> Result<JoinStep> {
        let keys = [
            physical(&spec.left.key, &spec.left.key_schema)?,
            physical(&spec.right.key, &spec.right.key_schema)?,
        ];
        let types = [&spec.left, &spec.right].map(|side| {
            side.source
                .batch_schema()
                .fields()
                .iter()
                .map(|f| f.data_type().clone())
                .collect()
        });
        let left_key_column = match &spec.left.key {
            datafusion::logical_expr::Expr::Column(c) => {
                spec.left.source.batch_schema().index_of(&c.name).ok()
            }
            _ => None,
        };
        let left_pk = spec
            .left
            .source
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.key)
            .map(|(i, _)| i)
            .collect();
        let mut op = JoinStep {
            left_pk,
            by_foreign_key: HashMap::new(),
            left_key_column,
            pending: BTreeMap::new(),
            stream_time: i64::MIN,
            stream_time_dirty: false,
            spec: spec.clone(),
            keys,
            types,
            out_schema,
            prefix,
            buffers: [Buffer::default(), Buffer::default()],
            tables: [HashMap::new(), HashMap::new()],
            next_seq: 0,
            writes: Vec::new(),
        };
        for (i, side) in [b'l', b'r'].into_iter().enumerate() {
            for (_, v) in state.scan_prefix(&op.state_key(side, &[]))? {
                let e: Entry = read_state(&v)?;
                op.next_seq = op.next_seq.max(e.seq + 1);
                op.insert(i, e)?;
            }
        }
        for (side, tag) in TABLE_TAGS.into_iter().enumerate() {
            for (k, v) in state.scan_prefix(&op.state_key(tag, &[]))? {
                let row: TableRow = read_state(&v)?;
                let key = k[op.prefix.len() + 2..].to_vec();
                if let Some(fk) = &row.fk {
                    op.by_foreign_key
                        .entry(fk.clone())
                        .or_default()
                        .insert(key.clone());
                }
                op.tables[side].insert(key, row);
            }
        }
        for (_, v) in state.scan_prefix(&op.state_key(b'p', &[]))? {
            let p: Pending = read_state(&v)?;
            op.pending.insert((p.entry.ts, p.entry.seq), p);
        }
        if let Some(v) = state.get(&op.state_key(b's', &[]))? {
            op.stream_time = read_state(&v)?;
        }
        op.writes.clear();
        Ok(op)
    }

    fn state_key(&self, side: u8, rest: &[u8]) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.push(side);
        k.push(b'/');
        k.extend_from_slice(rest);
        k
    }

    fn is_table(&self, side: usize) -> bool {
        let def = if side == 0 {
            &self.spec.left.source
        } else {
            &self.spec.right.source
        };
        def.kind == SourceKind::Table
    }

    /// Records a table input's change (a row without a value deletes).
    fn update_table(&mut self, side: usize, kb: Vec<u8>, row: Option<TableRow>) -> Result<()> {
        let state_key = self.state_key(TABLE_TAGS[side], &kb);
        match row {
            Some(row) => {
                self.writes.push((state_key, Some(binary(&row)?)));
                self.tables[side].insert(kb, row);
            }
            None => {
                self.tables[side].remove(&kb);
                self.writes.push((state_key, None));
            }
        }
        Ok(())
    }

    /// A table-table join's row for a key, from the current rows: (left,
    /// right, time), if the join kind has one.
    fn table_join(&self, kb: &[u8], key: &Datum) -> Option<(Vec<Datum>, Vec<Datum>, i64)> {
        let (l, r) = (self.tables[0].get(kb), self.tables[1].get(kb));
        match (self.spec.kind, l, r) {
            (_, Some(l), Some(r)) => Some((l.row.clone(), r.row.clone(), l.ts.max(r.ts))),
            (JoinKind::Left | JoinKind::Full, Some(l), None) => {
                Some((l.row.clone(), self.nulls(1), l.ts))
            }
            (JoinKind::Right | JoinKind::Full, None, Some(r)) => {
                let mut left = self.nulls(0);
                if let (JoinKind::Right, Some(i)) = (self.spec.kind, self.left_key_column) {
                    left[i] = key.clone();
                }
                Some((left, r.row.clone(), r.ts))
            }
            _ => None,
        }
    }

    /// A foreign-key join's row for the left row with primary key `pk`:
    /// (left, right, time), if the join kind has one.
    fn foreign_key_joined(&self, pk: &[u8]) -> Option<(Vec<Datum>, Vec<Datum>, i64)> {
        let l = self.tables[0].get(pk)?;
        let r = l.fk.as_ref().and_then(|fk| self.tables[1].get(fk));
        match (r, self.spec.kind) {
            (Some(r), _) => Some((l.row.clone(), r.row.clone(), l.ts.max(r.ts))),
            (None, JoinKind::Left) => Some((l.row.clone(), self.nulls(1), l.ts)),
            _ => None,
        }
    }

    /// A change of either table of a foreign-key join: the left row
    /// changed (or each left row naming the right row that changed)
    /// is retracted as it was joined and inserted as it is joined now;
    /// the rows to emit as (row, time, weight).
    fn foreign_key_change(
        &mut self,
        s: usize,
        key: &Datum,
        row: Vec<Datum>,
        deleted: bool,
        ts: i64,
        (partition, offset): (i32, i64),
    ) -> Result<Vec<(Vec<ScalarValue>, i64, i64)>> {
        let pks: Vec<Vec<u8>> = if s == 0 {
            let pk: Vec<&Datum> = self.left_pk.iter().filter_map(|&i| row.get(i)).collect();
            if pk.iter().all(|d| d.is_null()) {
                return Ok(Vec::new());
            }
            vec![json(&pk)?]
        } else {
            if key.is_null() {
                return Ok(Vec::new());
            }
            self.by_foreign_key
                .get(&key_bytes(key)?)
                .map(|pks| pks.iter().cloned().collect())
                .unwrap_or_default()
        };
        let before: Vec<_> = pks.iter().map(|pk| self.foreign_key_joined(pk)).collect();
        if s == 0 {
            let pk = pks[0].clone();
            if let Some(prev) = self.tables[0].get(&pk).and_then(|t| t.fk.clone()) {
                if let Some(set) = self.by_foreign_key.get_mut(&prev) {
                    set.remove(&pk);
                    if set.is_empty() {
                        self.by_foreign_key.remove(&prev);
                    }
                }
            }
            let change = if deleted {
                None
            } else {
                let fk = (!key.is_null()).then(|| key_bytes(key)).transpose()?;
                if let Some(fk) = &fk {
                    self.by_foreign_key
                        .entry(fk.clone())
                        .or_default()
                        .insert(pk.clone());
                }
                Some(TableRow { row, ts, fk })
            };
            self.update_table(0, pk, change)?;
        } else {
            let change = (!deleted).then_some(TableRow { row, ts, fk: None });
            self.update_table(1, key_bytes(key)?, change)?;
        }
        let mut out = Vec::new();
        for (pk, old) in pks.iter().zip(before) {
            if let Some((l, r, _)) = old {
                out.push((self.output_row(key, &l, &r, ts, partition, offset)?, ts, -1));
            }
            if let Some((l, r, t)) = self.foreign_key_joined(pk) {
                out.push((self.output_row(key, &l, &r, t, partition, offset)?, t, 1));
            }
        }
        Ok(out)
    }

    fn retention(&self) -> i64 {
        match self.spec.window {
            Some(w) => match w.grace_ms {
                Some(g) => w.before_ms.saturating_add(w.after_ms).saturating_add(g),
                None => LEGACY_RETENTION_MS.max(w.before_ms.saturating_add(w.after_ms)),
            },
            None => i64::MAX,
        }
    }

    /// Adds an entry to a side's buffer (in memory).
    fn insert(&mut self, side: usize, e: Entry) -> Result<()> {
        let kb = key_bytes(&e.key)?;
        let buf = &mut self.buffers[side];
        buf.max_ts = buf.max_ts.max(e.ts);
        buf.by_time.insert((e.ts, e.seq), kb.clone());
        let list = buf.by_key.entry(kb).or_default();
        let at = list.partition_point(|x| (x.ts, x.seq) <= (e.ts, e.seq));
        list.insert(at, e);
        Ok(())
    }

    /// Drops a side's entries older than its retention allows.
    fn expire(&mut self, side: usize) {
        let cutoff = self.buffers[side].max_ts.saturating_sub(self.retention());
        loop {
            let buf = &mut self.buffers[side];
            let Some((&(ts, seq), _)) = buf.by_time.iter().next() else {
                break;
            };
            if ts > cutoff {
                break;
            }
            let kb = buf.by_time.remove(&(ts, seq)).unwrap_or_default();
            if let Some(list) = buf.by_key.get_mut(&kb) {
                list.retain(|e| e.seq != seq);
                if list.is_empty() {
                    buf.by_key.remove(&kb);
                }
            }
            let tag = if side == 0 { b'l' } else { b'r' };
            let key = self.state_key(tag, &seq.to_be_bytes());
            self.writes.push((key, None));
        }
    }

    fn nulls(&self, side: usize) -> Vec<Datum> {
        vec![Datum::Null; self.types[side].len()]
    }

    /// A row of the synthetic source.
    fn output_row(
        &self,
        key: &Datum,
        left: &[Datum],
        right: &[Datum],
        ts: i64,
        partition: i32,
        offset: i64,
    ) -> Result<Vec<ScalarValue>> {
        let fields = self.out_schema.fields();
        let mut datums: Vec<&Datum> = Vec::with_capacity(fields.len());
        if self.spec.synthetic_key {
            datums.push(key);
        }
        datums.extend(left.iter());
        datums.extend(right.iter());
        // The key column holds the join value even where its side is
        // NULL-padded.
        if let Some(d) = self.spec.key_column.and_then(|i| datums.get_mut(i)) {
            if d.is_null() {
                *d = key;
            }
        }
        let mut row = Vec::with_capacity(fields.len());
        for (d, f) in datums.into_iter().zip(fields.iter()) {
            row.push(d.to_scalar(f.data_type())?);
        }
        row.push(ScalarValue::Int64(Some(ts)));
        row.push(ScalarValue::Int32(Some(partition)));
        row.push(ScalarValue::Int64(Some(offset)));
        Ok(row)
    }

    /// The joined row of an unmatched record of side `s`, NULLs for the
    /// other side.
    fn null_padded(
        &self,
        s: usize,
        key: &Datum,
        row: &[Datum],
        ts: i64,
        partition: i32,
        offset: i64,
    ) -> Result<Vec<ScalarValue>> {
        let other = 1 - s;
        let mut nulls = self.nulls(other);
        if other == 0 && self.spec.kind == JoinKind::Right {
            // The key is named after the left join column: it carries the
            // join value when the left side is missing.
            if let Some(i) = self.left_key_column {
                nulls[i] = key.clone();
            }
        }
        if s == 0 {
            self.output_row(key, row, &nulls, ts, partition, offset)
        } else {
            self.output_row(key, &nulls, row, ts, partition, offset)
        }
    }

    /// How far after a record of side `s` its window reaches.
    fn reach(&self, s: usize) -> i64 {
        self.spec
            .window
            .map_or(0, |w| if s == 0 { w.after_ms } else { w.before_ms })
    }

    /// Joins the decoded records of both inputs, in `order` (side, row),
    /// into rows of the synthetic source, each with the index in `order`
    /// of the record that produced it. A join expression that fails on a
    /// record gives NULL (the record does not join); the failure is added
    /// to `errors`, for the processing log.
    fn process(
        &mut self,
        inputs: [&ChangeBatch; 2],
        order: &[(Side, usize)],
        errors: &mut Vec<ProcessingError>,
    ) -> Result<(ChangeBatch, Vec<usize>)> {
        let mut key_cols: Vec<ArrayRef> = Vec::with_capacity(2);
        for (i, input) in inputs.iter().enumerate() {
            key_cols.push(evaluate_lenient(&self.keys[i], &input.batch, errors)?);
        }
        if !self.spec.foreign_key && self.is_table(1) && !self.is_table(0) {
            if let Some(out) = self.stream_table(inputs, order, &key_cols)? {
                return Ok(out);
            }
        }
        let (mut rows, mut times, mut weights) = (Vec::new(), Vec::new(), Vec::new());
        let mut origins = Vec::new();
        for (idx, &(side, r)) in order.iter().enumerate() {
            let s = usize::from(side == Side::Right);
            let input = inputs[s];
            let key = Datum::from_scalar(&ScalarValue::try_from_array(&key_cols[s], r)?)?;
            let row: Vec<Datum> = input
                .row(r)?
                .iter()
                .map(Datum::from_scalar)
                .collect::<std::result::Result<_, _>>()?;
            let n = row.len();
            let (ts, partition, offset) = (
                input.rowtimes[r],
                match &row[n - 2] {
                    Datum::Int(p) => *p as i32,
                    _ => 0,
                },
                match &row[n - 1] {
                    Datum::Int(o) => *o,
                    _ => 0,
                },
            );
            if self.spec.foreign_key {
                let deleted = input.null_values[r];
                for (out, t, w) in
                    self.foreign_key_change(s, &key, row, deleted, ts, (partition, offset))?
                {
                    rows.push(out);
                    times.push(t);
                    weights.push(w);
                    origins.push(idx);
                }
                continue;
            }
            if self.is_table(0) && self.is_table(1) {
                // Table-table: the joined row before and after the change.
                if key.is_null() {
                    continue;
                }
                let kb = key_bytes(&key)?;
                let old = self.table_join(&kb, &key);
                let change = (!input.null_values[r]).then_some(TableRow { row, ts, fk: None });
                self.update_table(s, kb.clone(), change)?;
                let new = self.table_join(&kb, &key);
                if let Some((l, rr, _)) = old {
                    rows.push(self.output_row(&key, &l, &rr, ts, partition, offset)?);
                    times.push(ts);
                    weights.push(-1);
                    origins.push(idx);
                }
                if let Some((l, rr, t)) = new {
                    rows.push(self.output_row(&key, &l, &rr, t, partition, offset)?);
                    times.push(t);
                    weights.push(1);
                    origins.push(idx);
                }
                continue;
            }
            if self.is_table(1) {
                // Stream-table: a table change is remembered, a stream
                // record looks its row up.
                let kb = key_bytes(&key)?;
                if s == 1 {
                    let change = (!input.null_values[r]).then_some(TableRow { row, ts, fk: None });
                    self.update_table(1, kb, change)?;
                    continue;
                }
                if input.null_values[r] || key.is_null() {
                    continue;
                }
                let right = match self.tables[1].get(&kb) {
                    Some(t) => t.row.clone(),
                    None if self.spec.kind == JoinKind::Left => self.nulls(1),
                    None => continue,
                };
                rows.push(self.output_row(&key, &row, &right, ts, partition, offset)?);
                times.push(ts);
                weights.push(1);
                origins.push(idx);
                continue;
            }
            if input.null_values[r] || key.is_null() {
                continue;
            }
            let Some(w) = self.spec.window else {
                continue;
            };
            let other = 1 - s;
            // Seen from this side: the other side's window.
            let (lo, hi) = if s == 0 {
                (
                    ts.saturating_sub(w.before_ms),
                    ts.saturating_add(w.after_ms),
                )
            } else {
                (
                    ts.saturating_sub(w.after_ms),
                    ts.saturating_add(w.before_ms),
                )
            };
            let grace = w.grace_ms;
            if let Some(g) = grace {
                // Stream time moves on: held rows whose window has closed
                // are emitted with NULLs, in time order, before this record.
                let now = self.stream_time.max(ts);
                if ts == now {
                    let closed: Vec<(i64, u64)> = self
                        .pending
                        .iter()
                        .filter(|(_, p)| {
                            p.entry
                                .ts
                                .saturating_add(self.reach(p.side))
                                .saturating_add(g)
                                < now
                        })
                        .map(|(k, _)| *k)
                        .collect();
                    for k in closed {
                        if let Some(p) = self.pending.remove(&k) {
                            rows.push(self.null_padded(
                                p.side,
                                &p.entry.key,
                                &p.entry.row,
                                p.entry.ts,
                                p.partition,
                                p.offset,
                            )?);
                            times.push(p.entry.ts);
                            weights.push(1);
                            origins.push(idx);
                            self.writes
                                .push((self.state_key(b'p', &p.entry.seq.to_be_bytes()), None));
                        }
                    }
                }
            }
            if ts > self.stream_time {
                self.stream_time = ts;
                self.stream_time_dirty = true;
            }
            let kb = key_bytes(&key)?;
            let matches: Vec<Entry> = self.buffers[other]
                .by_key
                .get(&kb)
                .map(|list| {
                    list.iter()
                        .filter(|e| e.ts >= lo && e.ts <= hi)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            for m in &matches {
                let (l, rr) = if s == 0 {
                    (&row, &m.row)
                } else {
                    (&m.row, &row)
                };
                rows.push(self.output_row(&key, l, rr, ts.max(m.ts), partition, offset)?);
                times.push(ts.max(m.ts));
                weights.push(1);
                origins.push(idx);
                // A match: the other record's held NULL row is not emitted.
                if self.pending.remove(&(m.ts, m.seq)).is_some() {
                    self.writes
                        .push((self.state_key(b'p', &m.seq.to_be_bytes()), None));
                }
            }
            let outer = matches!(
                (self.spec.kind, s),
                (JoinKind::Full, _) | (JoinKind::Left, 0) | (JoinKind::Right, 1)
            );
            // With a grace period the NULL row waits for the window to
            // close (a match may still come); without one it is emitted now.
            let cutoff = self.buffers[s].max_ts.saturating_sub(self.retention());
            let hold = outer
                && matches.is_empty()
                && grace.is_some()
                && ts > cutoff
                && ts.saturating_add(self.reach(s)) >= self.stream_time;
            if matches.is_empty() && outer && !hold {
                rows.push(self.null_padded(s, &key, &row, ts, partition, offset)?);
                times.push(ts);
                weights.push(1);
                origins.push(idx);
            }
            // Keep the record for the other side's later records, unless
            // it is already past this side's retention.
            if ts > cutoff {
                let e = Entry {
                    key,
                    ts,
                    seq: self.next_seq,
                    row,
                };
                self.next_seq += 1;
                if hold {
                    let p = Pending {
                        side: s,
                        entry: e.clone(),
                        partition,
                        offset,
                    };
                    self.writes.push((
                        self.state_key(b'p', &e.seq.to_be_bytes()),
                        Some(binary(&p)?),
                    ));
                    self.pending.insert((e.ts, e.seq), p);
                }
                let tag = if s == 0 { b'l' } else { b'r' };
                self.writes
                    .push((self.state_key(tag, &e.seq.to_be_bytes()), Some(binary(&e)?)));
                self.insert(s, e)?;
                self.expire(s);
            }
        }
        let batch = rows_to_batch(&self.out_schema_with_pseudo(), rows)?;
        Ok((
            ChangeBatch {
                batch,
                weights,
                null_values: vec![false; times.len()],
                rowtimes: times,
            },
            origins,
        ))
    }

    /// A stream-table join, column by column: the stream's columns are
    /// taken from its batch as they are, and only the table's columns are
    /// built value by value (from the row current when each stream record
    /// is processed). The same rows as the general path in `process`, or
    /// `None` (nothing done) when the output's columns do not have the
    /// stream's types as they are.
    fn stream_table(
        &mut self,
        inputs: [&ChangeBatch; 2],
        order: &[(Side, usize)],
        key_cols: &[ArrayRef],
    ) -> Result<Option<(ChangeBatch, Vec<usize>)>> {
        use datafusion::arrow::array::{Array, Int64Array, RecordBatchOptions, UInt32Array};
        use datafusion::arrow::compute::{cast, take};
        use datafusion::arrow::datatypes::DataType;

        let stream = inputs[0];
        let nl = stream.batch.num_columns();
        let synth = usize::from(self.spec.synthetic_key);
        let right_types = self.types[1].clone();
        let schema = self.out_schema_with_pseudo();
        let fields = schema.fields();
        if nl < 2
            || fields.len() != synth + nl + right_types.len() + 3
            || stream
                .batch
                .columns()
                .iter()
                .zip(&fields[synth..synth + nl])
                .any(|(c, f)| c.data_type() != f.data_type())
        {
            return Ok(None);
        }
        let right_at = synth + nl;
        let key_column = self.spec.key_column;
        let int_keys = key_cols[0].as_any().downcast_ref::<Int64Array>().cloned();
        let mut picks: Vec<u32> = Vec::new();
        let mut origins = Vec::new();
        let mut keys: Vec<Datum> = Vec::new();
        let mut right: Vec<Vec<ScalarValue>> = vec![Vec::new(); right_types.len()];
        for (idx, &(side, r)) in order.iter().enumerate() {
            if side == Side::Right {
                let input = inputs[1];
                let key = Datum::from_scalar(&ScalarValue::try_from_array(&key_cols[1], r)?)?;
                let kb = key_bytes(&key)?;
                let change = if input.null_values[r] {
                    None
                } else {
                    let row = input
                        .row(r)?
                        .iter()
                        .map(Datum::from_scalar)
                        .collect::<std::result::Result<Vec<_>, _>>()?;
                    Some(TableRow {
                        row,
                        ts: input.rowtimes[r],
                        fk: None,
                    })
                };
                self.update_table(1, kb, change)?;
                continue;
            }
            if stream.null_values[r] || key_cols[0].is_null(r) {
                continue;
            }
            let key = match &int_keys {
                Some(a) => Datum::Int(a.value(r)),
                None => Datum::from_scalar(&ScalarValue::try_from_array(&key_cols[0], r)?)?,
            };
            let kb = key_bytes(&key)?;
            let found = self.tables[1].get(&kb).map(|t| &t.row);
            if found.is_none() && self.spec.kind != JoinKind::Left {
                continue;
            }
            for (c, column) in right.iter_mut().enumerate() {
                let f = &fields[right_at + c];
                let d = match found.and_then(|row| row.get(c)) {
                    Some(d) if !d.is_null() => d,
                    // The key column holds the join value where its side
                    // is NULL-padded.
                    _ if key_column == Some(right_at + c) => &key,
                    _ => &Datum::Null,
                };
                column.push(d.to_scalar(f.data_type())?);
            }
            picks.push(r as u32);
            origins.push(idx);
            keys.push(key);
        }
        let n = picks.len();
        let indices = UInt32Array::from(picks);
        let scalars = |values: Vec<ScalarValue>, ty: &DataType| -> Result<ArrayRef> {
            if values.is_empty() {
                return Ok(datafusion::arrow::array::new_empty_array(ty));
            }
            let array = ScalarValue::iter_to_array(values)?;
            Ok(if array.data_type() == ty {
                array
            } else {
                cast(&array, ty)?
            })
        };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(fields.len());
        if synth == 1 {
            let ty = fields[0].data_type();
            let values = keys
                .iter()
                .map(|k| k.to_scalar(ty))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            columns.push(scalars(values, ty)?);
        }
        for (c, column) in stream.batch.columns().iter().enumerate() {
            let taken = take(column.as_ref(), &indices, None)?;
            let at = synth + c;
            if key_column == Some(at) && taken.null_count() > 0 {
                // NULL where the join value is not: the key column takes it.
                let ty = fields[at].data_type();
                let mut values = Vec::with_capacity(n);
                for (j, key) in keys.iter().enumerate() {
                    values.push(if taken.is_null(j) {
                        key.to_scalar(ty)?
                    } else {
                        ScalarValue::try_from_array(&taken, j)?
                    });
                }
                columns.push(scalars(values, ty)?);
            } else {
                columns.push(taken);
            }
        }
        for (c, values) in right.into_iter().enumerate() {
            columns.push(scalars(values, fields[right_at + c].data_type())?);
        }
        let times: Vec<i64> = indices
            .values()
            .iter()
            .map(|&r| stream.rowtimes[r as usize])
            .collect();
        let pseudo = [
            Arc::new(Int64Array::from(times.clone())) as ArrayRef,
            take(stream.batch.column(nl - 2).as_ref(), &indices, None)?,
            take(stream.batch.column(nl - 1).as_ref(), &indices, None)?,
        ];
        for (array, f) in pseudo.into_iter().zip(&fields[fields.len() - 3..]) {
            columns.push(if array.data_type() == f.data_type() {
                array
            } else {
                cast(&array, f.data_type())?
            });
        }
        let options = RecordBatchOptions::new().with_row_count(Some(n));
        let batch = datafusion::arrow::array::RecordBatch::try_new_with_options(
            Arc::clone(&schema),
            columns,
            &options,
        )?;
        Ok(Some((
            ChangeBatch {
                batch,
                weights: vec![1; n],
                null_values: vec![false; n],
                rowtimes: times,
            },
            origins,
        )))
    }

    fn out_schema_with_pseudo(&self) -> SchemaRef {
        Arc::clone(&self.out_schema)
    }

    /// Moves this epoch's buffer changes into the commit.
    pub fn drain(&mut self, batch: &mut WriteBatch) -> Result<()> {
        for (k, v) in self.writes.drain(..) {
            match v {
                Some(v) => batch.put(k, v),
                None => batch.delete(k),
            }
        }
        if std::mem::take(&mut self.stream_time_dirty) {
            batch.put(self.state_key(b's', &[]), binary(&self.stream_time)?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{read_state, Entry, Pending, TableRow};
    use crate::datum::Datum;
    use crate::error::binary;

    #[test]
    fn join_state_reads_back_binary_and_the_json_of_earlier_versions() {
        let entry = Entry {
            key: Datum::Str("k".into()),
            ts: -5,
            seq: 7,
            row: vec![Datum::Int(1), Datum::Null, Datum::Float(0.5)],
        };
        let pending = Pending {
            side: 1,
            entry: entry.clone(),
            partition: 2,
            offset: 9,
        };
        let rows = [
            TableRow {
                row: vec![Datum::Str("zß".into())],
                ts: 3,
                fk: None,
            },
            TableRow {
                row: vec![],
                ts: 4,
                fk: Some(b"\"x\"".to_vec()),
            },
        ];
        let back: Entry = read_state(&binary(&entry).unwrap()).unwrap();
        assert_eq!(format!("{back:?}"), format!("{entry:?}"));
        let back: Pending = read_state(&binary(&pending).unwrap()).unwrap();
        assert_eq!(format!("{back:?}"), format!("{pending:?}"));
        for row in &rows {
            let back: TableRow = read_state(&binary(row).unwrap()).unwrap();
            assert_eq!(format!("{back:?}"), format!("{row:?}"));
        }
        let back: i64 = read_state(&binary(&-42i64).unwrap()).unwrap();
        assert_eq!(back, -42);
        // As earlier versions wrote them: JSON, a table row without `fk`.
        let mut json = serde_json::to_value(&rows[0]).unwrap();
        json.as_object_mut().unwrap().remove("fk");
        let old: TableRow = read_state(&serde_json::to_vec(&json).unwrap()).unwrap();
        assert_eq!(format!("{old:?}"), format!("{:?}", rows[0]));
        let old: Entry = read_state(&serde_json::to_vec(&entry).unwrap()).unwrap();
        assert_eq!(format!("{old:?}"), format!("{entry:?}"));
        let old: i64 = read_state(b"-42").unwrap();
        assert_eq!(old, -42);
        // Damaged state is an error, not a panic.
        let mut bad = binary(&entry).unwrap();
        bad.truncate(bad.len() / 2);
        assert!(read_state::<Entry>(&bad).is_err());
    }
}
