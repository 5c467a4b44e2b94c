//! What an epoch commits besides its operators' state (source offsets,
//! where the sink ends, the outbox of a reconciling rebuild), how a sink
//! batch is tagged with its query and epoch, and how a query resumes from
//! its last checkpoint (a torn log tail, epochs to replay, state to
//! rebuild).

use std::collections::{BTreeMap, HashMap};

use brook_planner::catalog::{SourceDef, SourceKind};
use brook_storage::{LogStore, Record, WriteBatch};
use serde::{Deserialize, Serialize};

use super::{mv_expiry_prefix, mv_prefix, query_prefix, Engine};
use crate::error::{json, ExecError, Result};

/// What a sink holds, as counts of `(partition, hash of key and value)`:
/// during a rebuild after a torn tail, an output found here is in the sink
/// already. Order is not compared (a rebuild reads its sources in other
/// epochs, so outputs of different source partitions interleave
/// differently), and records the sink holds that no output matches (what a
/// stream emitted from source records a torn tail took) are left alone.
/// About 40 bytes per sink record, for the rebuild's duration.
#[derive(Default)]
pub(super) struct SinkContents(HashMap<(u32, u64), u32>);

impl SinkContents {
    fn hash(record: &Record) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        record.key.hash(&mut h);
        record.value.hash(&mut h);
        h.finish()
    }

    pub(super) fn read(log: &LogStore, topic: &str, ends: &[u64]) -> Result<SinkContents> {
        let mut counts: HashMap<(u32, u64), u32> = HashMap::new();
        for (partition, &end) in ends.iter().enumerate() {
            let partition = partition as u32;
            let mut from = 0;
            while from < end {
                let records = log.read(topic, partition, from, 4096)?;
                let Some(last) = records.last().map(|r| r.offset) else {
                    break;
                };
                for r in records.iter().filter(|r| r.offset < end) {
                    *counts
                        .entry((partition, Self::hash(&r.record)))
                        .or_default() += 1;
                }
                from = last + 1;
            }
        }
        Ok(SinkContents(counts))
    }

    /// Whether `record` is in the sink's `partition`, counting it off if so.
    pub(super) fn take(&mut self, partition: u32, record: &Record) -> bool {
        match self.0.get_mut(&(partition, Self::hash(record))) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }
}

/// How the log lost records a query had committed (recovery cut a torn tail).
pub(super) enum Torn {
    /// A source partition ends below the query's committed offset.
    Source(String),
    /// A sink partition ends below what the query committed to it.
    Sink(String),
}

/// A committed epoch's checkpoint, kept under `q/<id>/meta`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Checkpoint {
    pub(super) epoch: u64,
    /// Next source offset per partition.
    pub(super) offsets: Vec<u64>,
    /// The epoch's sink records, as versions before sink tags kept them
    /// (written to the log after the commit): read at startup from the
    /// newest kept outbox and written if the log lacks them. Never stored
    /// now.
    #[serde(default, skip_serializing)]
    pub(super) outbox: Vec<OutboxPart>,
    /// Set while the query rebuilds lost state from the log.
    #[serde(default)]
    pub(super) rebuilding: bool,
    /// While rebuilding: how many more records per sink partition are in
    /// the sink already (written before the state was lost, or deleted by
    /// retention since) and are not written again.
    #[serde(default)]
    pub(super) skip: Vec<u64>,
    /// While rebuilding after a torn tail: where each sink partition ended
    /// when the rebuild began. An output equal (key and value) to one of
    /// the sink's records before that end is there already and is not
    /// written again (each sink record stands for one output); see
    /// `SinkContents`.
    #[serde(default)]
    pub(super) sink_end: Vec<u64>,
    /// Where each sink partition ended once this epoch's output was
    /// appended: a sink found shorter at startup lost records the query
    /// committed; tagged output past it is an epoch not committed (see
    /// [`SinkTag`]).
    #[serde(default)]
    pub(super) sink_ends: Vec<u64>,
    /// Records dropped as too late for their window, in all epochs so far.
    #[serde(default)]
    pub(super) late_records: u64,
    /// While rebuilding a table: its outputs are not written but kept per
    /// key (under `q/<id>/r/`), and once caught up the sink gets what makes
    /// its last record per key say what the rebuilt table says (see
    /// [`Engine::reconcile`]).
    #[serde(default)]
    pub(super) reconcile: bool,
}

/// An epoch's outbox as versions before the sink tag kept it, under
/// `q/<id>/o/<epoch>` (big-endian): the newest is read once at startup, so
/// that records committed but not yet written by such a version are
/// written, and then all are deleted.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeptEpoch {
    outbox: Vec<OutboxPart>,
}

pub(super) fn kept_prefix(id: &str) -> Vec<u8> {
    [query_prefix(id), b"o/".to_vec()].concat()
}

fn kept_key(id: &str, epoch: u64) -> Vec<u8> {
    [kept_prefix(id), epoch.to_be_bytes().to_vec()].concat()
}

/// What a persistent query tags each batch of its output with: the epoch
/// that made it and where that epoch's input ended. An epoch's output is
/// appended to the sink before its commit (state, source offsets and sink
/// ends in one atomic write); a crash between the two leaves the output in
/// the log and the epoch uncommitted. At restart the tags find it: the
/// epoch is processed again over exactly the same input, and the outputs
/// already in the log are not written again (see [`PendingEpoch`]). So the
/// output is stored once, in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SinkTag {
    pub(super) query: String,
    pub(super) epoch: u64,
    pub(super) input_ends: Vec<u64>,
}

/// The first byte of an encoded [`SinkTag`].
const SINK_TAG_VERSION: u8 = 1;

impl SinkTag {
    /// `[version u8][epoch u64][n u32][n × u64][query: UTF-8]`, little-endian.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(13 + 8 * self.input_ends.len() + self.query.len());
        out.push(SINK_TAG_VERSION);
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&(self.input_ends.len() as u32).to_le_bytes());
        for end in &self.input_ends {
            out.extend_from_slice(&end.to_le_bytes());
        }
        out.extend_from_slice(self.query.as_bytes());
        out
    }

    /// The tag in `bytes`, or `None` for another writer's tag or damage.
    fn decode(bytes: &[u8]) -> Option<SinkTag> {
        let (&version, rest) = bytes.split_first()?;
        if version != SINK_TAG_VERSION {
            return None;
        }
        let epoch = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
        let n = u32::from_le_bytes(rest.get(8..12)?.try_into().ok()?) as usize;
        let ends_len = n.checked_mul(8)?;
        let ends = rest.get(12..12usize.checked_add(ends_len)?)?;
        let input_ends = ends
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect();
        let query = std::str::from_utf8(rest.get(12 + ends_len..)?).ok()?;
        Some(SinkTag {
            query: query.to_string(),
            epoch,
            input_ends,
        })
    }
}

/// An epoch whose output is (wholly or in part) in the sink but whose
/// commit did not happen: found by [`Engine::pending_epochs`] at startup
/// and processed again before anything new.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PendingEpoch {
    epoch: u64,
    /// Where each input partition's share of the epoch ended.
    pub(super) input_ends: Vec<u64>,
    /// How many of its outputs each sink partition holds already: the
    /// first that many the epoch makes again there are not written.
    pub(super) written: Vec<u64>,
}

/// Where a reconciling rebuild keeps a table's last output for a sink key.
pub(super) fn reconcile_prefix(id: &str) -> Vec<u8> {
    [query_prefix(id), b"r/".to_vec()].concat()
}

pub(super) fn reconcile_key(id: &str, partition: u32, key: Option<&[u8]>) -> Vec<u8> {
    [
        reconcile_prefix(id),
        partition.to_be_bytes().to_vec(),
        key.unwrap_or_default().to_vec(),
    ]
    .concat()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct OutboxPart {
    pub(super) partition: u32,
    pub(super) base: u64,
    pub(super) records: Vec<OutboxRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct OutboxRecord {
    pub(super) timestamp: i64,
    #[serde(with = "opt_bytes")]
    pub(super) key: Option<Vec<u8>>,
    #[serde(with = "opt_bytes")]
    pub(super) value: Option<Vec<u8>>,
}

/// Optional bytes in checkpoints and kept outboxes, as base64 text: JSON's
/// array of numbers, which earlier versions wrote (and which is still
/// read), takes about three times the room and the time.
mod opt_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(bytes) => s.serialize_some(&STANDARD.encode(bytes)),
            None => s.serialize_none(),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Base64(String),
        Numbers(Vec<u8>),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<Stored>::deserialize(d)? {
            None => Ok(None),
            Some(Stored::Numbers(bytes)) => Ok(Some(bytes)),
            Some(Stored::Base64(text)) => STANDARD
                .decode(text)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

impl Engine {
    /// How query state committed at `cp` no longer matches the log, if it
    /// does not: recovery cut a torn tail below what the query committed,
    /// in a source (the query has counted records that are gone, and new
    /// records would come at offsets it has passed) or in its sink (output
    /// it committed is gone).
    pub(super) fn torn_log(
        &self,
        cp: &Checkpoint,
        source_topics: &[String],
        sink: &SourceDef,
    ) -> Result<Option<Torn>> {
        for (p, end) in self.log.end_offsets(&sink.topic)?.into_iter().enumerate() {
            // A partition of the outbox may end at its base (the outbox is
            // then written again); any other must end where the checkpoint
            // says (checkpoints of earlier versions do not say: 0).
            let must_reach = cp
                .outbox
                .iter()
                .find(|part| part.partition as usize == p)
                .map(|part| part.base)
                .or_else(|| cp.sink_ends.get(p).copied())
                .unwrap_or(0);
            if end < must_reach {
                return Ok(Some(Torn::Sink(format!(
                    "partition {p} of sink {} ends at offset {end}, before the committed offset {must_reach}",
                    sink.topic
                ))));
            }
        }
        let mut ends = self.end_offsets_of(source_topics)?;
        if !self.startup_done.load(std::sync::atomic::Ordering::SeqCst) {
            // Another query resumed before this one may have moved the ends.
            let opened: Vec<u64> = source_topics
                .iter()
                .flat_map(|t| self.opened_ends.get(t).cloned().unwrap_or_default())
                .collect();
            if opened.len() == ends.len() {
                ends = opened;
            }
        }
        if let Some((c, e)) = cp.offsets.iter().zip(&ends).find(|(c, e)| c > e) {
            return Ok(Some(Torn::Source(format!(
                "a source partition ends at offset {e}, before the committed offset {c}"
            ))));
        }
        Ok(None)
    }

    /// Moves each source partition that ends below the query's committed
    /// offset up to it (see [`LogStore::advance_end`]).
    pub(super) fn advance_sources(&self, offsets: &[u64], source_topics: &[String]) -> Result<()> {
        let mut committed = offsets.iter();
        for t in source_topics {
            for partition in 0..self.log.partitions(t)? {
                if let Some(&c) = committed.next() {
                    self.log.advance_end(t, partition, c)?;
                }
            }
        }
        Ok(())
    }

    /// The epochs of query `id` after its checkpoint `cp` whose output its
    /// sink holds (whole, or the first part of it when a crash came
    /// between two appends), in epoch order: found by their tags past the
    /// sink ends the checkpoint recorded. Empty for a query that never
    /// wrote past its checkpoint, and for sinks written by versions before
    /// tags (their checkpoints record no sink ends).
    pub(super) fn pending_epochs(
        &self,
        id: &str,
        sink: &SourceDef,
        cp: &Checkpoint,
    ) -> Result<std::collections::VecDeque<PendingEpoch>> {
        let mut by_epoch: BTreeMap<u64, PendingEpoch> = BTreeMap::new();
        let partitions = self.log.partitions(&sink.topic)? as usize;
        for (p, &from) in cp.sink_ends.iter().enumerate().take(partitions) {
            for batch in self.log.tagged_batches(&sink.topic, p as u32, from)? {
                let Some(tag) = SinkTag::decode(&batch.tag) else {
                    continue;
                };
                if tag.query != id
                    || tag.epoch <= cp.epoch
                    || tag.input_ends.len() != cp.offsets.len()
                {
                    continue;
                }
                let e = by_epoch.entry(tag.epoch).or_insert_with(|| PendingEpoch {
                    epoch: tag.epoch,
                    input_ends: tag.input_ends.clone(),
                    written: vec![0; partitions],
                });
                // Records before `from` were committed by an earlier epoch.
                let before = from.saturating_sub(batch.base_offset);
                e.written[p] += batch.count.saturating_sub(before);
            }
        }
        Ok(by_epoch.into_values().collect())
    }

    /// Throws away query `id`'s state (and the rows of the table it
    /// materializes) and starts it again from the beginning of its sources,
    /// in one atomic commit: a rebuild, as after a lost state store. A
    /// table's sink then gets only what differs from the rebuilt table
    /// (`Checkpoint::reconcile`). For a stream, with `skip_written`, the
    /// outputs its sink holds are not written again (see `search_sink`);
    /// without, it keeps what it has and gets every output again.
    pub(super) fn rebuild_from_log(
        &self,
        id: &str,
        sink: &SourceDef,
        partitions: u32,
        why: &str,
        skip_written: bool,
    ) -> Result<Checkpoint> {
        tracing::error!(query_id = %id, reason = %why,
            "the log lost records this query had committed: rebuilding it from what the log holds");
        let meta_key = [query_prefix(id), b"meta".to_vec()].concat();
        let mut batch = WriteBatch::default();
        let mut prefixes = vec![query_prefix(id)];
        if sink.kind == SourceKind::Table && sink.query_id.as_deref() == Some(id) {
            prefixes.push(mv_prefix(&sink.name));
            prefixes.push(mv_expiry_prefix(&sink.name));
        }
        for prefix in prefixes {
            for (key, _) in self.state.scan_prefix(&prefix)? {
                if key != meta_key {
                    batch.delete(key);
                }
            }
        }
        let reconcile = sink.kind == SourceKind::Table;
        let mut cp = Checkpoint {
            epoch: 0,
            offsets: vec![0; partitions as usize],
            outbox: vec![],
            rebuilding: true,
            skip: vec![],
            sink_end: vec![],
            // Tags past here are the new run's.
            sink_ends: self.log.end_offsets(&sink.topic)?,
            late_records: 0,
            reconcile,
        };
        if skip_written && !reconcile {
            self.search_sink(&mut cp, sink)?;
        }
        batch.put(meta_key, json(&cp)?);
        self.state.commit(batch)?;
        Ok(cp)
    }

    /// Sets a rebuilding checkpoint to leave out of the sink what it holds
    /// already: the records retention deleted by count, the rest by content.
    fn search_sink(&self, cp: &mut Checkpoint, sink: &SourceDef) -> Result<()> {
        let stats = self.log.stats(&sink.topic)?;
        cp.skip = stats.iter().map(|s| s.start_offset).collect();
        cp.sink_end = stats.iter().map(|s| s.end_offset).collect();
        Ok(())
    }

    /// A query's checkpoint, or a new one, committed at once with where its
    /// sink ends. A query resumed at startup after the state was lost gets
    /// a rebuilding checkpoint (see [`Engine::finish_startup`]).
    pub(super) fn load_checkpoint(
        &self,
        id: &str,
        sink: &SourceDef,
        partitions: u32,
    ) -> Result<Checkpoint> {
        let meta_key = [query_prefix(id), b"meta".to_vec()].concat();
        let cp = match self.state.get(&meta_key)? {
            Some(b) => serde_json::from_slice(&b)
                .map_err(|e| ExecError::Internal(format!("unreadable checkpoint of {id}: {e}")))?,
            None => {
                let lost =
                    self.state_lost && !self.startup_done.load(std::sync::atomic::Ordering::SeqCst);
                let table = sink.kind == SourceKind::Table;
                let cp = Checkpoint {
                    epoch: 0,
                    offsets: vec![0; partitions as usize],
                    outbox: vec![],
                    rebuilding: lost,
                    // What a stream's sink holds was written before the
                    // state was lost (a table's is reconciled).
                    skip: if lost && !table {
                        self.log.end_offsets(&sink.topic)?
                    } else {
                        vec![]
                    },
                    sink_end: vec![],
                    // Where [`Engine::pending_epochs`] looks for its output.
                    sink_ends: self.log.end_offsets(&sink.topic)?,
                    late_records: 0,
                    reconcile: lost && table,
                };
                let mut b = WriteBatch::default();
                b.put(meta_key, json(&cp)?);
                self.state.commit(b)?;
                cp
            }
        };
        if cp.offsets.len() != partitions as usize {
            return Err(ExecError::Internal(format!(
                "checkpoint of {id} has {} partitions, topic has {partitions}",
                cp.offsets.len()
            )));
        }
        let mut cp = cp;
        if cp.outbox.is_empty() && cp.epoch > 0 {
            if let Some(b) = self.state.get(&kept_key(id, cp.epoch))? {
                let kept: KeptEpoch = serde_json::from_slice(&b)
                    .map_err(|e| ExecError::Internal(format!("unreadable outbox of {id}: {e}")))?;
                cp.outbox = kept.outbox;
            }
        }
        Ok(cp)
    }
}

#[cfg(test)]
mod tests {
    use super::{OutboxRecord, SinkTag};

    #[test]
    fn sink_tags_round_trip_and_foreign_or_damaged_tags_are_not_ours() {
        let tag = SinkTag {
            query: "CSAS_F_3".into(),
            epoch: 41,
            input_ends: vec![0, 7, u64::MAX],
        };
        let bytes = tag.encode();
        assert_eq!(SinkTag::decode(&bytes), Some(tag.clone()));
        let none = SinkTag {
            input_ends: vec![],
            ..tag
        };
        assert_eq!(SinkTag::decode(&none.encode()), Some(none));
        // Any cut of the fixed part, another version, a count past the
        // bytes, a query that is not UTF-8: none of them panic or match.
        for cut in 0..21 {
            assert_eq!(SinkTag::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut other = bytes.clone();
        other[0] = 2;
        assert_eq!(SinkTag::decode(&other), None);
        let mut huge = bytes.clone();
        huge[9..13].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(SinkTag::decode(&huge), None);
        let mut bad = bytes;
        bad.push(0xff);
        assert_eq!(SinkTag::decode(&bad), None);
    }

    #[test]
    fn outbox_bytes_are_base64_and_arrays_of_numbers_still_read() {
        let r = OutboxRecord {
            timestamp: 7,
            key: Some(vec![0, 255]),
            value: None,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(text, r#"{"timestamp":7,"key":"AP8=","value":null}"#);
        let back: OutboxRecord = serde_json::from_str(&text).unwrap();
        assert_eq!((back.key, back.value), (Some(vec![0, 255]), None));
        let old: OutboxRecord =
            serde_json::from_str(r#"{"timestamp":7,"key":[0,255],"value":[1]}"#).unwrap();
        assert_eq!((old.key, old.value), (Some(vec![0, 255]), Some(vec![1])));
        assert!(
            serde_json::from_str::<OutboxRecord>(r#"{"timestamp":7,"key":"!","value":null}"#)
                .is_err()
        );
    }
}
