//! The grouped aggregation: groups interned per batch, their states
//! (`acc`) cached for the epoch and written back at its checkpoint;
//! session windows in `session`.

use std::collections::HashMap;
use std::sync::Arc;

use brook_planner::catalog::{SourceKind, WindowKind, WINDOWSTART};
use brook_planner::plan::{AggCall, AggFunc, StreamPlan};
use brook_storage::{StateStore, WriteBatch};
use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::Expr;

use super::window::Expiry;
use super::{physical, Context, Operator, PhysExpr};
use crate::change::{rows_to_batch, ChangeBatch};
use crate::datum::Datum;
use crate::error::{binary, from_binary, json, ExecError, Result};
use acc::{acc_output, new_acc, trim_top, update_acc, Acc, GroupState};
use session::{session_spec, Sessions};

mod acc;
mod session;

/// An aggregation's output rows, gathered with their weights and times.
#[derive(Default)]
struct Emitted {
    rows: Vec<Vec<ScalarValue>>,
    weights: Vec<i64>,
    times: Vec<i64>,
}

impl Emitted {
    fn push(&mut self, row: Vec<ScalarValue>, weight: i64, time: i64) {
        self.rows.push(row);
        self.weights.push(weight);
        self.times.push(time);
    }

    /// A group's row changed: its old row (if it had one) retracted, the
    /// new one inserted.
    fn change(&mut self, before: Option<Vec<ScalarValue>>, after: Vec<ScalarValue>, time: i64) {
        if let Some(before) = before {
            self.push(before, -1, time);
        }
        self.push(after, 1, time);
    }

    fn into_batch(self, schema: &SchemaRef) -> Result<ChangeBatch> {
        Ok(ChangeBatch {
            batch: rows_to_batch(schema, self.rows)?,
            null_values: vec![false; self.weights.len()],
            weights: self.weights,
            rowtimes: self.times,
        })
    }
}

/// A group met in the batch an aggregation is processing.
struct Slot {
    /// Its key in the state store (after the step's prefix).
    key: Vec<u8>,
    /// Its grouping values.
    group: Vec<ScalarValue>,
    state: GroupState,
    /// Its output row before the batch (consolidating), or before the
    /// row being applied; `None` if it had none.
    before: Option<Vec<ScalarValue>>,
    /// The time of its last row.
    time: i64,
}

/// The value at `row` of an array, as a datum; the common types without a
/// scalar in between.
fn datum_at(a: &ArrayRef, row: usize) -> Result<Datum> {
    use datafusion::arrow::array::AsArray;
    if a.is_null(row) {
        return Ok(Datum::Null);
    }
    Ok(match a.data_type() {
        DataType::Int64 => Datum::Int(
            a.as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .value(row),
        ),
        DataType::Int32 => Datum::Int(i64::from(
            a.as_primitive::<datafusion::arrow::datatypes::Int32Type>()
                .value(row),
        )),
        DataType::Float64 => Datum::Float(
            a.as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                .value(row),
        ),
        DataType::Utf8 => Datum::Str(a.as_string::<i32>().value(row).to_string()),
        DataType::Boolean => Datum::Bool(a.as_boolean().value(row)),
        _ => Datum::from_scalar(&ScalarValue::try_from_array(a, row)?)?,
    })
}

pub(crate) struct AggregateOperator {
    group: Vec<PhysExpr>,
    funcs: Vec<AggFunc>,
    args: Vec<Option<PhysExpr>>,
    schema: SchemaRef,
    prefix: Vec<u8>,
    /// Groups touched this epoch: key → (state, dirty). `None` = deleted.
    cache: HashMap<Vec<u8>, Option<GroupState>>,
    /// Groups as committed by earlier epochs, decoded, with their
    /// estimated sizes: a group met again is not read and decoded again.
    /// At most [`KEPT_STATE_BYTES`]; past it, all are let go.
    kept: HashMap<Vec<u8>, (GroupState, usize)>,
    kept_bytes: usize,
    /// Set for a session-windowed aggregation.
    sessions: Option<Sessions>,
    /// A tumbling or hopping aggregation: the position of the window's
    /// start among the grouping columns, and the expiry of its windows.
    windows: Option<(usize, Expiry)>,
    /// Emit one change per group per batch (ksqlDB's record cache).
    consolidate: bool,
    /// The input never retracts (a stream): MIN and MAX keep their
    /// extreme value alone.
    append_only: bool,
}

impl AggregateOperator {
    /// The aggregation of `plan` by `group`, its state under `prefix`.
    pub(crate) fn new(
        plan: &StreamPlan,
        group: &[Expr],
        aggs: &[AggCall],
        input_schema: &DFSchema,
        output_schema: &DFSchema,
        prefix: &[u8],
    ) -> Result<AggregateOperator> {
        Ok(AggregateOperator {
            group: group
                .iter()
                .map(|e| physical(e, input_schema))
                .collect::<Result<_>>()?,
            funcs: aggs.iter().map(|a| a.func).collect(),
            args: aggs
                .iter()
                .map(|a| {
                    a.arg
                        .as_ref()
                        .map(|e| physical(e, input_schema))
                        .transpose()
                })
                .collect::<Result<_>>()?,
            schema: Arc::new(output_schema.as_arrow().clone()),
            prefix: prefix.to_vec(),
            cache: HashMap::new(),
            kept: HashMap::new(),
            kept_bytes: 0,
            sessions: session_spec(plan)
                .map(|spec| Sessions::new(spec, group, prefix))
                .transpose()?,
            windows: match plan.window {
                Some((spec, _, _)) if spec.kind != WindowKind::Session => {
                    let start = group
                        .iter()
                        .position(|e| {
                            matches!(e.clone().unalias(), Expr::Column(c) if c.name == WINDOWSTART)
                        })
                        .ok_or_else(|| {
                            ExecError::Internal("a windowed aggregation without WINDOWSTART".into())
                        })?;
                    Some((start, Expiry::new(&spec, [prefix, b"x/"].concat())))
                }
                _ => None,
            },
            consolidate: plan.consolidate,
            append_only: plan.source.kind == SourceKind::Stream,
        })
    }

    fn state_key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(key);
        k
    }

    /// A group's state, taken out of the epoch's cache (or read from the
    /// store); the caller puts it back.
    fn take(&mut self, key: &[u8], state: &dyn StateStore) -> Result<Option<GroupState>> {
        if let Some(s) = self.cache.remove(key) {
            return Ok(s);
        }
        if let Some((s, bytes)) = self.kept.remove(key) {
            self.kept_bytes -= bytes;
            return Ok(Some(s));
        }
        let stored = state.get(&self.state_key(key))?;
        stored
            .map(|b| from_binary(&b, "aggregate state"))
            .transpose()
    }

    fn new_state(&self) -> GroupState {
        GroupState {
            rows: 0,
            accs: self
                .funcs
                .iter()
                .map(|f| match f {
                    AggFunc::Min | AggFunc::Max if self.append_only => Acc::Extreme(Datum::Null),
                    f => new_acc(*f),
                })
                .collect(),
        }
    }

    fn apply(&mut self, input: &ChangeBatch, state: &dyn StateStore) -> Result<ChangeBatch> {
        let n = input.len();
        let group_cols = self
            .group
            .iter()
            .map(|e| Ok(e.evaluate(&input.batch)?.into_array(n)?))
            .collect::<Result<Vec<_>>>()?;
        let arg_cols = self
            .args
            .iter()
            .map(|a| {
                a.as_ref()
                    .map(|e| Ok::<_, ExecError>(e.evaluate(&input.batch)?.into_array(n)?))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        if self.sessions.is_some() {
            return self.process_sessions(input, &group_cols, &arg_cols, state);
        }
        let mut out = Emitted::default();
        // The groups of this batch, each looked up once: rows are matched
        // to them by their grouping values in Arrow's row format.
        let converter = RowConverter::new(
            group_cols
                .iter()
                .map(|c| SortField::new(c.data_type().clone()))
                .collect(),
        )?;
        // (No grouping columns: every row is in the one group.)
        let group_rows = (!group_cols.is_empty())
            .then(|| converter.convert_columns(&group_cols))
            .transpose()?;
        let row_key =
            |row: usize| -> &[u8] { group_rows.as_ref().map_or(&[], |r| r.row(row).data()) };
        let mut slot_of: HashMap<&[u8], usize> = HashMap::new();
        let mut slots: Vec<Slot> = Vec::new();
        for row in 0..n {
            if input.null_values[row] {
                continue; // a record without a value is not aggregated
            }
            if group_cols.iter().any(|c| c.is_null(row)) {
                // ksqlDB drops rows whose grouping expressions give NULL.
                continue;
            }
            let weight = input.weights[row];
            if weight <= 0 && self.append_only {
                return Err(ExecError::Internal(
                    "a retraction reached an aggregation of a stream".into(),
                ));
            }
            let time = input.rowtimes[row];
            let (i, first_touch) = match slot_of.get(row_key(row)) {
                Some(i) => (*i, false),
                None => {
                    let slot = self.open_slot(&group_cols, row, time, state)?;
                    slot_of.insert(row_key(row), slots.len());
                    slots.push(slot);
                    (slots.len() - 1, true)
                }
            };
            let slot = &mut slots[i];
            if !self.consolidate && !first_touch {
                slot.before = Some(output_row(
                    &self.schema,
                    &self.funcs,
                    &slot.group,
                    &slot.state,
                )?);
            }
            slot.state.rows += weight;
            for ((acc, col), f) in slot.state.accs.iter_mut().zip(&arg_cols).zip(&self.funcs) {
                let arg = match col {
                    Some(col) => Some(datum_at(col, row)?),
                    None => None,
                };
                update_acc(*f, acc, arg.as_ref(), weight);
                if self.append_only {
                    trim_top(*f, acc);
                }
            }
            slot.time = time;
            if !self.consolidate {
                // A group whose rows were all retracted stays, with its
                // aggregates back at their initial values (ksqlDB emits COUNT 0).
                let before = slot.before.take();
                out.change(before, self.row_of(slot)?, time);
            }
        }
        drop(slot_of);
        for slot in slots {
            if self.consolidate {
                let after = self.row_of(&slot)?;
                out.change(slot.before, after, slot.time);
            }
            self.cache.insert(slot.key, Some(slot.state));
        }
        out.into_batch(&self.schema)
    }

    /// A group's output row now.
    fn row_of(&self, slot: &Slot) -> Result<Vec<ScalarValue>> {
        output_row(&self.schema, &self.funcs, &slot.group, &slot.state)
    }

    /// The group of row `row`, first met in this batch: its key and state
    /// (a new one if it has none), and its output row before the batch.
    fn open_slot(
        &mut self,
        group_cols: &[ArrayRef],
        row: usize,
        time: i64,
        state: &dyn StateStore,
    ) -> Result<Slot> {
        let group: Vec<ScalarValue> = group_cols
            .iter()
            .map(|c| ScalarValue::try_from_array(c, row))
            .collect::<Result<_, _>>()?;
        let group_datums = group
            .iter()
            .map(|v| Datum::from_scalar(v).map_err(ExecError::from))
            .collect::<Result<Vec<_>>>()?;
        let key = json(&group_datums)?;
        let old = self.take(&key, state)?;
        if let Some((start_at, expiry)) = &mut self.windows {
            expiry.observe(time);
            if old.is_none() {
                if let Some(Datum::Int(start)) = group_datums.get(*start_at) {
                    let k = [self.prefix.as_slice(), &key].concat();
                    expiry.track(*start, &k);
                }
            }
        }
        let before = match &old {
            Some(old) => Some(output_row(&self.schema, &self.funcs, &group, old)?),
            None => None,
        };
        Ok(Slot {
            state: old.unwrap_or_else(|| self.new_state()),
            key,
            group,
            before,
            time,
        })
    }

    /// A session-windowed aggregation: each row goes to its sessions.
    fn process_sessions(
        &mut self,
        input: &ChangeBatch,
        group_cols: &[ArrayRef],
        arg_cols: &[Option<ArrayRef>],
        state: &dyn StateStore,
    ) -> Result<ChangeBatch> {
        let mut out = Emitted::default();
        let Some(sessions) = &mut self.sessions else {
            return Err(ExecError::Internal("not a session aggregation".into()));
        };
        for row in 0..input.len() {
            if input.null_values[row] || input.weights[row] <= 0 {
                // Not aggregated: a record without a value; sessions
                // aggregate streams, nothing retracts.
                continue;
            }
            let group: Vec<ScalarValue> = group_cols
                .iter()
                .map(|c| ScalarValue::try_from_array(c, row))
                .collect::<Result<_, _>>()?;
            if group.iter().any(ScalarValue::is_null) {
                continue;
            }
            let args = arg_cols
                .iter()
                .map(|col| col.as_ref().map(|c| datum_at(c, row)).transpose())
                .collect::<Result<Vec<_>>>()?;
            let ts = input.rowtimes[row];
            for c in sessions.add(&group, &args, ts, &self.funcs, state)? {
                let row = output_row(&self.schema, &self.funcs, &c.group, &c.state)?;
                out.push(row, c.weight, c.time);
            }
        }
        out.into_batch(&self.schema)
    }
}

impl Operator for AggregateOperator {
    fn process(&mut self, input: ChangeBatch, cx: &mut Context<'_>) -> Result<ChangeBatch> {
        self.apply(&input, cx.state)
    }

    fn checkpoint(&mut self, batch: &mut WriteBatch, state: &dyn StateStore) -> Result<()> {
        if let Some(sessions) = &mut self.sessions {
            sessions.drain(batch, state)?;
        }
        for (key, s) in std::mem::take(&mut self.cache) {
            let k = self.state_key(&key);
            match s {
                Some(s) => {
                    batch.put(k, binary(&s)?);
                    let bytes = key.len() + state_bytes(&s);
                    self.kept_bytes += bytes;
                    self.kept.insert(key, (s, bytes));
                }
                None => batch.delete(k),
            }
        }
        // After the puts: a window expiring now is deleted.
        if let Some((_, expiry)) = &mut self.windows {
            for k in expiry.drain(state, batch)? {
                if let Some((_, bytes)) = k
                    .strip_prefix(self.prefix.as_slice())
                    .and_then(|key| self.kept.remove(key))
                {
                    self.kept_bytes -= bytes;
                }
            }
        }
        if self.kept_bytes > KEPT_STATE_BYTES {
            self.kept.clear();
            self.kept_bytes = 0;
        }
        Ok(())
    }

    fn take_late(&mut self) -> u64 {
        self.sessions
            .as_mut()
            .map_or(0, |s| std::mem::take(&mut s.late))
    }
}

/// How many bytes of committed group states an aggregation keeps decoded
/// across epochs (estimated, [`state_bytes`]).
const KEPT_STATE_BYTES: usize = 64 << 20;

/// A group state's size in memory, roughly.
fn state_bytes(s: &GroupState) -> usize {
    fn datum(d: &Datum) -> usize {
        std::mem::size_of::<Datum>()
            + match d {
                Datum::Str(s) => s.len(),
                Datum::Bytes(b) => b.len(),
                Datum::List(v) | Datum::Struct(v) => v.iter().map(datum).sum(),
                Datum::Map(m) => m.iter().map(|(k, v)| datum(k) + datum(v)).sum(),
                _ => 0,
            }
    }
    let accs: usize = s
        .accs
        .iter()
        .map(|a| {
            std::mem::size_of::<Acc>()
                + match a {
                    Acc::MinMax(v) => v.iter().map(|(d, _)| datum(d) + 8).sum(),
                    Acc::List(v) | Acc::Offsets(v) => v.iter().map(datum).sum(),
                    Acc::Extreme(d) | Acc::Pick(d) => datum(d),
                    _ => 0,
                }
        })
        .sum();
    64 + accs
}

/// A group's output row: its grouping columns, then each aggregate.
fn output_row(
    schema: &SchemaRef,
    funcs: &[AggFunc],
    group: &[ScalarValue],
    s: &GroupState,
) -> Result<Vec<ScalarValue>> {
    let mut row = group.to_vec();
    for (i, acc) in s.accs.iter().enumerate() {
        let ty = schema.field(group.len() + i).data_type();
        let d = acc_output(funcs[i], acc, ty);
        row.push(d.to_scalar(ty)?);
    }
    Ok(row)
}
