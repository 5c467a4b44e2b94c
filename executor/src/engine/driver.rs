//! The persistent-query driver: starts a query's task, runs its dataflow
//! epoch by epoch, appends the output to its sink and commits state,
//! offsets and sink position atomically.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use brook_planner::catalog::{SourceDef, SourceKind};
use brook_planner::plan::StreamPlan;
use brook_storage::{Record, WriteBatch};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::checkpoint::{
    kept_prefix, reconcile_key, reconcile_prefix, Checkpoint, OutboxPart, OutboxRecord,
    PendingEpoch, SinkContents, SinkTag, Torn,
};
use super::epoch::{input_topics, read_epoch, read_range, take_epoch};
use super::{blocking, mv_expiry_prefix, mv_prefix, query_prefix, Engine};
use crate::codec::encode_sink;
use crate::dataflow::{Dataflow, EpochOutput};
use crate::error::{json, ExecError, Result};
use crate::operator::window::Expiry;
use crate::panic_guard::guarded;

/// Progress of a persistent query, published after each committed epoch.
#[derive(Debug, Clone, Default)]
pub(super) struct Progress {
    /// Next source offset per partition.
    pub(super) offsets: Vec<u64>,
    /// Set when the query failed and stopped.
    pub(super) failed: Option<String>,
    /// While rebuilding lost state: the source offsets to reach.
    pub(super) rebuild_target: Option<Vec<u64>>,
    /// Records dropped as too late for their window (committed with the
    /// checkpoint).
    pub(super) late_records: u64,
}

pub(super) struct RunningQuery {
    /// The topics it reads; its offsets are theirs, concatenated.
    pub(super) source_topics: Vec<String>,
    pub(super) progress: watch::Receiver<Progress>,
    pub(super) stop: watch::Sender<bool>,
    pub(super) handle: JoinHandle<()>,
}

impl Engine {
    /// Starts (or resumes from its checkpoint) a persistent query writing `sink`.
    pub fn start_query(
        self: &Arc<Self>,
        id: &str,
        plan: StreamPlan,
        sink: SourceDef,
    ) -> Result<()> {
        let mut queries = self.queries.lock().unwrap_or_else(|e| e.into_inner());
        if queries.contains_key(id) {
            return Err(ExecError::Internal(format!(
                "query {id} is already running"
            )));
        }
        let source_topics = input_topics(&plan);
        let mut partitions = 0;
        for t in &source_topics {
            partitions += self.log.partitions(t)?;
        }
        let mut cp = self.load_checkpoint(id, &sink, partitions)?;
        let mut pending = self.pending_epochs(id, &sink, &cp)?;
        match self.torn_log(&cp, &source_topics, &sink)? {
            None => {}
            Some(Torn::Source(why)) => {
                // New records must not take offsets the query has passed,
                // nor those of an epoch whose output stands in the sink.
                let mut passed = cp.offsets.clone();
                for e in &pending {
                    for (p, end) in passed.iter_mut().zip(&e.input_ends) {
                        *p = (*p).max(*end);
                    }
                }
                self.advance_sources(&passed, &source_topics)?;
                if sink.kind == SourceKind::Table {
                    // The table counted records that are gone: recount it
                    // from what survives, writing the sink's changelog
                    // again (upserts: the last one per key is the recount).
                    cp = self.rebuild_from_log(id, &sink, partitions, &why, false)?;
                    pending.clear();
                } else {
                    // A stream keeps what it emitted (a consumer may have
                    // read it) and goes on from where it was.
                    tracing::error!(query_id = %id, reason = %why,
                        "the log lost source records this query had read; its sink keeps what it emitted from them");
                }
            }
            Some(Torn::Sink(why)) => {
                // Output the query committed is gone (the sink was fsynced
                // before each commit: only a log that lost synced writes,
                // or one not synced at every append, gets here).
                cp = self.rebuild_from_log(id, &sink, partitions, &why, true)?;
                pending.clear();
            }
        }
        if cp.rebuilding && !cp.sink_end.is_empty() && cp.epoch > 0 {
            // Stopped during such a rebuild: which sink records its outputs
            // matched is not kept, so it starts again, now matching what
            // the sink holds, its own outputs included.
            cp = self.rebuild_from_log(id, &sink, partitions, "restarted", true)?;
            pending.clear();
        }
        if cp.reconcile {
            // A reconciling rebuild writes only what the sink lacks, found
            // by reading the sink: nothing to skip.
            pending.clear();
        }
        if !pending.is_empty() {
            tracing::info!(query_id = %id, epochs = pending.len(),
                "processing again epochs whose output was written before their commit");
        }
        // The last epoch's sink records as a version with outboxes kept
        // them, if a stop came before they were all written: before the
        // query counts as started, so that FLUSH (which waits for source
        // offsets the checkpoint has passed already) finds them written.
        if !cp.outbox.is_empty() {
            self.write_outbox(id, &sink, &cp.outbox)?;
            cp.outbox.clear();
        }
        if !self.state.scan_prefix(&kept_prefix(id))?.is_empty() {
            self.state.delete_prefix(&kept_prefix(id))?;
        }
        let rebuild_target = if cp.rebuilding {
            let target = self.end_offsets_of(&source_topics)?;
            let done = cp.offsets.iter().zip(&target).all(|(a, b)| a >= b);
            tracing::warn!(query_id = %id, records = target.iter().sum::<u64>(),
                "rebuilding query state from the log");
            (!done).then_some(target)
        } else {
            None
        };
        let (stop, stop_rx) = watch::channel(false);
        let (progress_tx, progress) = watch::channel(Progress {
            offsets: cp.offsets.clone(),
            failed: None,
            rebuild_target: rebuild_target.clone(),
            late_records: cp.late_records,
        });
        let engine = Arc::clone(self);
        let qid = id.to_string();
        let handle = tokio::spawn(async move {
            let run = engine.run_query(
                &qid,
                plan,
                sink,
                (cp, pending),
                rebuild_target,
                stop_rx,
                &progress_tx,
            );
            let result = guarded(&format!("persistent query {qid}"), run).await;
            if let Err(e) = result {
                tracing::error!(query_id = %qid, error = %e, "persistent query failed");
                progress_tx.send_modify(|p| p.failed = Some(e.to_string()));
            }
        });
        queries.insert(
            id.to_string(),
            RunningQuery {
                source_topics,
                progress,
                stop,
                handle,
            },
        );
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_query(
        &self,
        id: &str,
        plan: StreamPlan,
        sink: SourceDef,
        (mut cp, mut pending): (Checkpoint, std::collections::VecDeque<PendingEpoch>),
        mut rebuild_target: Option<Vec<u64>>,
        mut stop: watch::Receiver<bool>,
        progress: &watch::Sender<Progress>,
    ) -> Result<()> {
        let meta_key = [query_prefix(id), b"meta".to_vec()].concat();
        let parts = self.input_parts(&plan)?;
        let mut dataflow = Dataflow::new(&plan, &query_prefix(id), self.state.as_ref())?;
        let mut mv_expiry = sink
            .window
            .map(|spec| Expiry::new(&spec, mv_expiry_prefix(&sink.name)));
        let mut appended = self.appended.subscribe();
        if cp.reconcile && rebuild_target.is_none() {
            // The rebuild has nothing to read (the sources hold nothing
            // now): the sink is reconciled at once.
            cp = self.reconcile_now(id, &sink, cp)?;
        }
        let mut sink_contents = if rebuild_target.is_some() && !cp.sink_end.is_empty() {
            blocking(|| SinkContents::read(&self.log, &sink.topic, &cp.sink_end))?
        } else {
            SinkContents::default()
        };
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            appended.borrow_and_update();
            let mut offsets = cp.offsets.clone();
            let mut skipped_gap = false;
            let mut reads = Vec::with_capacity(parts.len());
            let replay = pending.front().cloned();
            for (g, (_, topic, p)) in parts.iter().enumerate() {
                if let Some(e) = &replay {
                    // Exactly the input the epoch had the first time.
                    let end = e.input_ends[g];
                    reads.push(blocking(|| {
                        read_range(&self.log, topic, *p, cp.offsets[g], end)
                    })?);
                    continue;
                }
                let end = self.log.end_offset(topic, *p)?;
                let read = read_epoch(&self.log, self.config.epoch, topic, *p, cp.offsets[g])?;
                if read.is_empty() && cp.offsets[g] < end {
                    // Nothing readable below the end: compaction or
                    // retention left a gap. Move past it.
                    cp.offsets[g] = end;
                    offsets[g] = end;
                    skipped_gap = true;
                }
                reads.push(read);
            }
            let by_input = take_epoch(
                &parts,
                reads,
                &mut offsets,
                plan.join.is_some() && replay.is_none(),
                self.config.epoch,
            );
            if let Some(e) = &replay {
                for (o, end) in offsets.iter_mut().zip(&e.input_ends) {
                    *o = (*o).max(*end);
                }
            }
            if by_input.iter().all(Vec::is_empty) && replay.is_none() {
                if skipped_gap {
                    if rebuild_target
                        .as_ref()
                        .is_some_and(|t| cp.offsets.iter().zip(t).all(|(a, b)| a >= b))
                    {
                        rebuild_target = None;
                        if cp.reconcile {
                            cp = self.reconcile_now(id, &sink, cp)?;
                        }
                    }
                    progress.send_modify(|p| {
                        p.offsets = cp.offsets.clone();
                        p.rebuild_target = rebuild_target.clone();
                    });
                    continue;
                }
                tokio::select! {
                    _ = appended.changed() => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            // One epoch: process, append the output to the sink (tagged
            // with the epoch), then commit state, offsets and where the
            // sink ends, atomically.
            let EpochOutput {
                changes: output,
                problems,
                late,
            } = dataflow.process(&by_input, self.state.as_ref())?;
            // A rebuild replays records whose problems were logged before.
            if rebuild_target.is_none() {
                self.log_processing_errors(id, &problems);
            }
            if late > 0 {
                tracing::debug!(query_id = %id, late, "dropped records too late for their window");
            }
            let sink_records = encode_sink(&sink, &output, plan.repartitioned)?;
            let mut batch = WriteBatch::default();
            dataflow.checkpoint(&mut batch, self.state.as_ref())?;
            let mut outbox: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
            // Outputs an interrupted run of this epoch wrote already.
            let mut written = replay
                .as_ref()
                .map(|e| e.written.clone())
                .unwrap_or_default();
            // A reconciling rebuild's outputs, by `reconcile_key`.
            let mut rebuilt: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            // Only while rebuilding: afterwards every output is new.
            let mut skip = if rebuild_target.is_some() {
                cp.skip.clone()
            } else {
                vec![]
            };
            for r in sink_records {
                if let (Some(mv), Some(key)) = (&r.mv, &r.record.key) {
                    let k = [mv_prefix(&sink.name), key.clone()].concat();
                    if let (Some(expiry), Some(row)) = (&mut mv_expiry, mv) {
                        expiry.observe(r.record.timestamp);
                        // A window is indexed once, when its row is
                        // created; an update keeps its key and bounds.
                        if let (Some(window), false) = (row.window, r.replaces) {
                            expiry.track_window(window, &k);
                        }
                    }
                    match mv {
                        Some(row) => batch.put(k, row.to_bytes()?),
                        None => batch.delete(k),
                    }
                }
                if cp.reconcile {
                    let key = reconcile_key(id, r.partition, r.record.key.as_deref());
                    let record = OutboxRecord {
                        timestamp: r.record.timestamp,
                        key: r.record.key,
                        value: r.record.value,
                    };
                    rebuilt.insert(key, json(&record)?);
                    continue;
                }
                if let Some(n) = skip.get_mut(r.partition as usize).filter(|n| **n > 0) {
                    *n -= 1;
                    continue;
                }
                if rebuild_target.is_some() && sink_contents.take(r.partition, &r.record) {
                    continue;
                }
                if let Some(n) = written.get_mut(r.partition as usize).filter(|n| **n > 0) {
                    *n -= 1;
                    continue;
                }
                outbox.entry(r.partition).or_default().push(r.record);
            }
            if let Some(expiry) = &mut mv_expiry {
                expiry.drain(self.state.as_ref(), &mut batch)?;
            }
            let caught_up = rebuild_target
                .as_ref()
                .is_none_or(|t| offsets.iter().zip(t).all(|(a, b)| a >= b));
            if cp.reconcile && caught_up {
                outbox = self.reconcile(id, &sink, rebuilt, &mut batch)?;
            } else {
                for (k, v) in rebuilt {
                    batch.put(k, v);
                }
            }
            if self.config.discard_sink_output {
                outbox.clear();
            }
            let tag = SinkTag {
                query: id.to_string(),
                epoch: cp.epoch + 1,
                input_ends: offsets.clone(),
            };
            blocking(|| self.write_sink(&sink, &tag, &outbox))?;
            cp = Checkpoint {
                epoch: cp.epoch + 1,
                offsets,
                outbox: vec![],
                sink_ends: self.log.end_offsets(&sink.topic)?,
                rebuilding: cp.rebuilding && !caught_up,
                // Once caught up, every output is new.
                skip: if caught_up { vec![] } else { skip },
                sink_end: if caught_up {
                    vec![]
                } else {
                    cp.sink_end.clone()
                },
                late_records: cp.late_records + late,
                reconcile: cp.reconcile && !caught_up,
            };
            batch.put(meta_key.clone(), json(&cp)?);
            let state = Arc::clone(&self.state);
            tokio::task::spawn_blocking(move || state.commit(batch))
                .await
                .map_err(|e| ExecError::Internal(e.to_string()))??;
            if replay.is_some() {
                pending.pop_front();
            }
            if caught_up && rebuild_target.take().is_some() {
                tracing::info!(query_id = %id, "query state rebuilt");
            }
            progress.send_modify(|p| {
                p.offsets = cp.offsets.clone();
                p.rebuild_target = rebuild_target.clone();
                p.late_records = cp.late_records;
            });
        }
    }

    /// Commits the end of a reconciling rebuild that caught up without an
    /// epoch to process (what was left to read was a gap): an epoch that
    /// writes what `reconcile` finds.
    fn reconcile_now(&self, id: &str, sink: &SourceDef, cp: Checkpoint) -> Result<Checkpoint> {
        let meta_key = [query_prefix(id), b"meta".to_vec()].concat();
        let mut batch = WriteBatch::default();
        let outbox = self.reconcile(id, sink, BTreeMap::new(), &mut batch)?;
        let tag = SinkTag {
            query: id.to_string(),
            epoch: cp.epoch + 1,
            input_ends: cp.offsets.clone(),
        };
        blocking(|| self.write_sink(sink, &tag, &outbox))?;
        let cp = Checkpoint {
            epoch: cp.epoch + 1,
            outbox: vec![],
            sink_ends: self.log.end_offsets(&sink.topic)?,
            rebuilding: false,
            reconcile: false,
            skip: vec![],
            sink_end: vec![],
            ..cp
        };
        batch.put(meta_key, json(&cp)?);
        blocking(|| self.state.commit(batch))?;
        Ok(cp)
    }

    /// The records that make a table's sink say what its rebuilt table
    /// says, once the rebuild has caught up: per key, the rebuild's last
    /// output where the sink's last record for that key differs, and a
    /// tombstone where the sink still has a row the table no longer has
    /// (its source records were lost). `pending` holds the outputs of the
    /// epoch not committed yet; the kept outputs are deleted in `batch`.
    /// Holds a hash of the last value per key of the sink in memory, and
    /// reads the kept outputs a page at a time.
    fn reconcile(
        &self,
        id: &str,
        sink: &SourceDef,
        pending: BTreeMap<Vec<u8>, Vec<u8>>,
        batch: &mut WriteBatch,
    ) -> Result<BTreeMap<u32, Vec<Record>>> {
        use std::hash::{Hash, Hasher};
        let hash = |value: &[u8]| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            value.hash(&mut h);
            h.finish()
        };
        // The sink's last record per key: hash of its value, and its time.
        let mut last: HashMap<(u32, Vec<u8>), (Option<u64>, i64)> = HashMap::new();
        for (p, stats) in self.log.stats(&sink.topic)?.iter().enumerate() {
            let mut from = stats.start_offset;
            while from < stats.end_offset {
                let records = self.log.read(&sink.topic, p as u32, from, 4096)?;
                let Some(end) = records.last().map(|r| r.offset + 1) else {
                    break;
                };
                for r in records {
                    if let Some(key) = r.record.key {
                        let value = r.record.value.as_deref().map(hash);
                        last.insert((p as u32, key), (value, r.record.timestamp));
                    }
                }
                from = end;
            }
        }
        let prefix = reconcile_prefix(id);
        let mut pending = pending;
        let mut outbox: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
        let mut emit = |partition: u32, record: OutboxRecord| {
            outbox.entry(partition).or_default().push(Record {
                timestamp: record.timestamp,
                key: record.key,
                value: record.value,
                headers: vec![],
            });
        };
        let mut compare = |k: &[u8], v: &[u8]| -> Result<()> {
            let Some(partition) = k
                .get(prefix.len()..prefix.len() + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes)
            else {
                return Ok(());
            };
            let record: OutboxRecord = serde_json::from_slice(v).map_err(|e| {
                ExecError::Internal(format!("unreadable rebuilt output of {id}: {e}"))
            })?;
            let Some(key) = record.key.clone() else {
                return Ok(());
            };
            let in_sink = last.remove(&(partition, key)).and_then(|l| l.0);
            if in_sink != record.value.as_deref().map(hash) {
                emit(partition, record);
            }
            Ok(())
        };
        // The kept outputs, a page at a time, overridden by this epoch's.
        let mut from: Option<Vec<u8>> = None;
        loop {
            let start = from
                .as_deref()
                .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
            let page = self.state.scan_prefix_page(&prefix, start, 4096)?;
            let Some((last_key, _)) = page.last() else {
                break;
            };
            from = Some(last_key.clone());
            for (k, v) in page {
                let v = pending.remove(&k).unwrap_or(v);
                compare(&k, &v)?;
                batch.delete(k);
            }
        }
        for (k, v) in pending {
            compare(&k, &v)?;
        }
        // Rows the sink has for keys the rebuilt table has not.
        let mut gone: Vec<((u32, Vec<u8>), i64)> = last
            .into_iter()
            .filter(|(_, (value, _))| value.is_some())
            .map(|(k, (_, ts))| (k, ts))
            .collect();
        gone.sort();
        for ((partition, key), timestamp) in gone {
            emit(
                partition,
                OutboxRecord {
                    timestamp,
                    key: Some(key),
                    value: None,
                },
            );
        }
        if !outbox.is_empty() {
            tracing::warn!(query_id = %id,
                records = outbox.values().map(Vec::len).sum::<usize>(),
                "table rebuilt: its sink gets what differs from the rebuilt table");
        }
        Ok(outbox)
    }

    /// Appends an epoch's sink records, per partition in batches of bounded
    /// size, each tagged with `tag` (see [`SinkTag`]). Durable on return
    /// under `log.flush = always`, before the epoch commits.
    fn write_sink(
        &self,
        sink: &SourceDef,
        tag: &SinkTag,
        output: &BTreeMap<u32, Vec<Record>>,
    ) -> Result<()> {
        if output.values().all(Vec::is_empty) {
            return Ok(());
        }
        let tag = tag.encode();
        for (p, records) in output {
            for chunk in append_chunks(records) {
                self.log.append_tagged(&sink.topic, *p, chunk, &tag)?;
            }
        }
        self.notify_appended();
        Ok(())
    }

    /// Writes the sink records a version with outboxes committed, unless
    /// they are in the log already. Each partition's records were appended, in batches of
    /// bounded size, at or after the offset recorded at commit, so they are
    /// there iff that exact run of records appears there. A torn tail (or a
    /// stop) between two batches leaves the log ending with a prefix of the
    /// run: only the rest is written again, so that no record of the run is
    /// in the sink twice. (Another writer appending the very same records
    /// in that window would be taken for ours.)
    fn write_outbox(&self, id: &str, sink: &SourceDef, outbox: &[OutboxPart]) -> Result<()> {
        let mut wrote = false;
        for part in outbox {
            let records: Vec<Record> = part
                .records
                .iter()
                .map(|r| Record {
                    timestamp: r.timestamp,
                    key: r.key.clone(),
                    value: r.value.clone(),
                    headers: vec![],
                })
                .collect();
            let end = self.log.end_offset(&sink.topic, part.partition)?;
            if end < part.base {
                return Err(ExecError::Internal(format!(
                    "sink {} partition {} of query {id} ends at {end}, before the committed offset {}",
                    sink.topic, part.partition, part.base
                )));
            }
            let written = if end > part.base {
                self.log_holds_run(&sink.topic, part.partition, part.base, &records)?
            } else {
                0
            };
            for chunk in append_chunks(&records[written..]) {
                self.log.append(&sink.topic, part.partition, chunk)?;
                wrote = true;
            }
        }
        if wrote {
            self.notify_appended();
        }
        Ok(())
    }

    /// How much of `run` the partition holds at or after `from`: all of it
    /// if it appears there contiguously, else the longest prefix of it the
    /// partition ends with (a torn tail cut the rest), else none.
    fn log_holds_run(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        run: &[Record],
    ) -> Result<usize> {
        if run.is_empty() {
            return Ok(0);
        }
        let mut tail = Vec::new();
        let mut next = from;
        loop {
            let chunk = self.log.read(topic, partition, next, 10_000)?;
            let Some(last) = chunk.last() else { break };
            next = last.offset + 1;
            tail.extend(chunk.into_iter().map(|r| r.record));
        }
        Ok(held_prefix(&tail, run))
    }
}

/// Bytes of key and value per log append of a sink's records: the log
/// takes each append as one frame, which has a size limit.
const APPEND_BYTES: usize = 8 << 20;

/// `records` cut into runs of at most [`APPEND_BYTES`] of keys and values
/// (a record larger than that is a run of its own).
fn append_chunks(records: &[Record]) -> Vec<&[Record]> {
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, r) in records.iter().enumerate() {
        let size = r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len);
        if i > start && bytes + size > APPEND_BYTES {
            chunks.push(&records[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < records.len() {
        chunks.push(&records[start..]);
    }
    chunks
}

/// How much of `run` is in `tail`: all of it if it appears contiguously,
/// else the length of the longest prefix of `run` that `tail` ends with.
fn held_prefix<T: PartialEq>(tail: &[T], run: &[T]) -> usize {
    if run.is_empty() {
        return 0;
    }
    if tail.windows(run.len()).any(|w| w == run) {
        return run.len();
    }
    (1..run.len().min(tail.len() + 1))
        .rev()
        .find(|&k| tail[tail.len() - k..] == run[..k])
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::{append_chunks, held_prefix, APPEND_BYTES};
    use brook_storage::Record;

    fn record(bytes: usize) -> Record {
        Record {
            timestamp: 0,
            key: None,
            value: Some(vec![0; bytes]),
            headers: vec![],
        }
    }

    #[test]
    fn appends_are_cut_by_size_and_keep_every_record() {
        assert!(append_chunks(&[]).is_empty());
        let small: Vec<Record> = (0..5).map(|_| record(10)).collect();
        assert_eq!(append_chunks(&small).len(), 1);
        let big: Vec<Record> = (0..5).map(|_| record(APPEND_BYTES / 2)).collect();
        let lens: Vec<usize> = append_chunks(&big).iter().map(|c| c.len()).collect();
        assert_eq!(lens, vec![2, 2, 1]);
        let huge = vec![record(APPEND_BYTES * 2), record(1)];
        let lens: Vec<usize> = append_chunks(&huge).iter().map(|c| c.len()).collect();
        assert_eq!(lens, vec![1, 1]);
    }

    #[test]
    fn a_run_found_whole_is_held_whole() {
        assert_eq!(held_prefix(&[9, 1, 2, 3, 8], &[1, 2, 3]), 3);
        assert_eq!(held_prefix(&[1, 2, 3], &[1, 2, 3]), 3);
    }

    #[test]
    fn a_run_cut_by_the_tail_is_held_up_to_the_cut() {
        assert_eq!(held_prefix(&[7, 1, 2], &[1, 2, 3]), 2);
        assert_eq!(held_prefix(&[1], &[1, 2, 3]), 1);
        // The longest prefix the tail ends with, not the first match.
        assert_eq!(held_prefix(&[1, 1, 1], &[1, 1, 1, 2]), 3);
    }

    #[test]
    fn a_run_absent_is_not_held() {
        assert_eq!(held_prefix(&[], &[1, 2]), 0);
        assert_eq!(held_prefix(&[1, 2, 4], &[1, 2, 3]), 0);
        assert_eq!(held_prefix::<u8>(&[1], &[]), 0);
    }
}
