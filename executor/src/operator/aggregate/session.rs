//! Session windows: sessions per grouping key, merged as records join them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use brook_planner::catalog::{WindowKind, WindowSpec, WINDOWEND, WINDOWSTART};
use brook_planner::plan::{AggFunc, StreamOp, StreamPlan};
use brook_storage::{StateStore, WriteBatch};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Expr;

use super::acc::{merge_acc, new_acc, update_acc, GroupState};
use crate::datum::Datum;
use crate::error::{binary, from_binary, json, ExecError, Result};
use crate::operator::window::Expiry;

/// The session window of a plan's aggregation, if it has one.
pub(crate) fn session_spec(plan: &StreamPlan) -> Option<WindowSpec> {
    plan.ops.iter().find_map(|op| match op {
        StreamOp::Window { spec } if spec.kind == WindowKind::Session => Some(*spec),
        _ => None,
    })
}

/// The sessions of a session-windowed aggregation, as Kafka Streams keeps
/// them: per grouping key, disjoint `[start, end]` ranges of record times
/// with an aggregate each. A record joins every session that ends at most
/// the gap before it or starts at most the gap after it; those sessions
/// are merged into one (their accumulators merged, oldest first) and
/// deleted, which the sink writes as tombstones. A record whose merged
/// session ends before stream time minus the grace period is dropped as
/// late.
pub(crate) struct Sessions {
    gap: i64,
    grace: i64,
    /// Positions of `WINDOWSTART` and `WINDOWEND` among the grouping
    /// expressions; the others make the session's key.
    start_at: usize,
    end_at: usize,
    prefix: Vec<u8>,
    time_key: Vec<u8>,
    /// Loaded from the state store on first use.
    stream_time: Option<i64>,
    time_dirty: bool,
    /// Keys touched this epoch → their sessions.
    cache: HashMap<Vec<u8>, SessionSet>,
    /// Records dropped as late since the last [`Pipeline::take_late`].
    pub(crate) late: u64,
    /// Sessions past their retention leave the store.
    expiry: Expiry,
}

/// A session emitted by [`Sessions::add`].
pub(crate) struct SessionChange {
    /// The grouping columns, the bounds set.
    pub(crate) group: Vec<ScalarValue>,
    pub(crate) state: GroupState,
    /// −1: the session was merged away; +1: the session now.
    pub(crate) weight: i64,
    /// The session's end.
    pub(crate) time: i64,
}

/// One key's sessions: as stored at the start of the epoch, and now;
/// `changed`: those of `now` made or merged this epoch (only they are
/// written back).
#[derive(Default)]
struct SessionSet {
    stored: Vec<(i64, i64)>,
    now: BTreeMap<(i64, i64), GroupState>,
    changed: BTreeSet<(i64, i64)>,
}

impl Sessions {
    pub(crate) fn new(spec: WindowSpec, group: &[Expr], prefix: &[u8]) -> Result<Sessions> {
        let at = |name: &str| {
            group
                .iter()
                .position(|e| matches!(e.clone().unalias(), Expr::Column(c) if c.name == name))
                .ok_or_else(|| ExecError::Internal(format!("a session window without {name}")))
        };
        Ok(Sessions {
            gap: spec.size_ms,
            grace: spec.grace_ms,
            start_at: at(WINDOWSTART)?,
            end_at: at(WINDOWEND)?,
            prefix: [prefix, b"s/"].concat(),
            time_key: [prefix, b"s-time"].concat(),
            stream_time: None,
            time_dirty: false,
            cache: HashMap::new(),
            late: 0,
            expiry: Expiry::new(&spec, [prefix, b"sx/"].concat()),
        })
    }

    fn set_key(&self, key: &[u8], window: (i64, i64)) -> Vec<u8> {
        [
            self.prefix.as_slice(),
            key,
            &window.0.to_be_bytes(),
            &window.1.to_be_bytes(),
        ]
        .concat()
    }

    /// The sessions of `key` (a JSON array, so no key's bytes start with
    /// another's).
    fn load(&mut self, key: &[u8], state: &dyn StateStore) -> Result<&mut SessionSet> {
        if !self.cache.contains_key(key) {
            let mut set = SessionSet::default();
            let scan = [self.prefix.as_slice(), key].concat();
            for (k, v) in state.scan_prefix(&scan)? {
                let bounds = k
                    .get(scan.len()..)
                    .filter(|b| b.len() == 16)
                    .ok_or_else(|| ExecError::Internal("a malformed session key".into()))?;
                let be = |b: &[u8]| i64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
                let window = (be(&bounds[..8]), be(&bounds[8..]));
                let group: GroupState = from_binary(&v, "session state")?;
                set.stored.push(window);
                set.now.insert(window, group);
            }
            self.cache.insert(key.to_vec(), set);
        }
        self.cache
            .get_mut(key)
            .ok_or_else(|| ExecError::Internal("session cache".into()))
    }

    fn stream_time(&mut self, state: &dyn StateStore) -> Result<i64> {
        if let Some(t) = self.stream_time {
            return Ok(t);
        }
        let t = state
            .get(&self.time_key)?
            .and_then(|b| b.try_into().ok())
            .map_or(i64::MIN, i64::from_be_bytes);
        self.stream_time = Some(t);
        Ok(t)
    }

    /// Adds one record of the grouping key `group` (with its placeholder
    /// bounds) to its session; the sessions to emit.
    pub(crate) fn add(
        &mut self,
        group: &[ScalarValue],
        args: &[Option<Datum>],
        ts: i64,
        funcs: &[AggFunc],
        state: &dyn StateStore,
    ) -> Result<Vec<SessionChange>> {
        let time = self.stream_time(state)?;
        if ts > time {
            self.stream_time = Some(ts);
            self.time_dirty = true;
        }
        self.expiry.observe(ts);
        let time = time.max(ts);
        let (start_at, end_at) = (self.start_at, self.end_at);
        let base = group
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != start_at && *i != end_at)
            .map(|(_, v)| Datum::from_scalar(v).map_err(ExecError::from))
            .collect::<Result<Vec<_>>>()?;
        let key = json(&base)?;
        let (gap, grace) = (self.gap, self.grace);
        let set = self.load(&key, state)?;
        let touching: Vec<(i64, i64)> = set
            .now
            .keys()
            .filter(|(s, e)| *e >= ts.saturating_sub(gap) && *s <= ts.saturating_add(gap))
            .copied()
            .collect();
        let start = touching.iter().map(|w| w.0).fold(ts, i64::min);
        let end = touching.iter().map(|w| w.1).fold(ts, i64::max);
        if end < time.saturating_sub(grace) {
            self.late += 1; // the merged session has closed
            return Ok(Vec::new());
        }
        let with_bounds = |(s, e): (i64, i64)| {
            let mut g = group.to_vec();
            g[start_at] = ScalarValue::Int64(Some(s));
            g[end_at] = ScalarValue::Int64(Some(e));
            g
        };
        let mut merged = GroupState {
            rows: 0,
            accs: funcs.iter().map(|f| new_acc(*f)).collect(),
        };
        let mut out = Vec::with_capacity(touching.len() + 1);
        for w in touching {
            let Some(old) = set.now.remove(&w) else {
                continue;
            };
            merged.rows += old.rows;
            for ((acc, other), f) in merged.accs.iter_mut().zip(&old.accs).zip(funcs) {
                merge_acc(*f, acc, other);
            }
            out.push(SessionChange {
                group: with_bounds(w),
                state: old,
                weight: -1,
                time: w.1,
            });
        }
        merged.rows += 1;
        for ((acc, arg), f) in merged.accs.iter_mut().zip(args).zip(funcs) {
            update_acc(*f, acc, arg.as_ref(), 1);
        }
        set.now.insert((start, end), merged.clone());
        set.changed.insert((start, end));
        out.push(SessionChange {
            group: with_bounds((start, end)),
            state: merged,
            weight: 1,
            time: end,
        });
        Ok(out)
    }

    pub(crate) fn drain(&mut self, batch: &mut WriteBatch, state: &dyn StateStore) -> Result<()> {
        for (key, set) in std::mem::take(&mut self.cache) {
            for w in &set.stored {
                if !set.now.contains_key(w) {
                    batch.delete(self.set_key(&key, *w));
                }
            }
            for (w, group) in set.now.iter().filter(|(w, _)| set.changed.contains(w)) {
                if !set.stored.contains(w) {
                    let k = self.set_key(&key, *w);
                    self.expiry.track_window(*w, &k);
                }
                batch.put(self.set_key(&key, *w), binary(group)?);
            }
        }
        self.expiry.drain(state, batch)?;
        if let (true, Some(t)) = (self.time_dirty, self.stream_time) {
            batch.put(self.time_key.clone(), t.to_be_bytes().to_vec());
            self.time_dirty = false;
        }
        Ok(())
    }
}
