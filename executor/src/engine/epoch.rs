//! Epochs: how much of each input a query reads at a time, and how the
//! reads of a join's inputs are cut to a common time.

use brook_planner::plan::StreamPlan;
use brook_storage::{LogStore, StoredRecord};

use crate::error::Result;

/// An epoch reads at most this many records from each input partition
/// (by default)...
const EPOCH_RECORDS: usize = 16_384;
/// ... and at most this many bytes of keys and values (the record that
/// reaches it included): epochs are sized by what they carry, and a
/// caught-up query's epochs hold what arrived since the last one.
const EPOCH_BYTES: usize = 4 << 20;

/// How much one epoch reads from each input partition at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochBounds {
    /// Records (at least one is read).
    pub records: usize,
    /// Bytes of keys and values, the record that reaches it included.
    pub bytes: usize,
}

impl Default for EpochBounds {
    fn default() -> Self {
        EpochBounds {
            records: EPOCH_RECORDS,
            bytes: EPOCH_BYTES,
        }
    }
}

/// One input partition's share of an epoch.
pub(super) fn read_epoch(
    log: &LogStore,
    bounds: EpochBounds,
    topic: &str,
    partition: u32,
    from: u64,
) -> Result<Vec<StoredRecord>> {
    Ok(log.read_bounded(topic, partition, from, bounds.records.max(1), bounds.bytes)?)
}

/// The records of one partition at offsets in `[from, to)`.
pub(super) fn read_range(
    log: &LogStore,
    topic: &str,
    partition: u32,
    from: u64,
    to: u64,
) -> Result<Vec<StoredRecord>> {
    let mut out: Vec<StoredRecord> = Vec::new();
    let mut next = from;
    while next < to {
        let chunk = log.read(topic, partition, next, (to - next).min(65_536) as usize)?;
        let Some(last) = chunk.last() else { break };
        next = last.offset + 1;
        out.extend(chunk.into_iter().filter(|r| r.offset < to));
    }
    Ok(out)
}

/// Whether a read stopped at the epoch's bounds (more may follow).
fn read_is_full(read: &[StoredRecord], bounds: EpochBounds) -> bool {
    read.len() >= bounds.records.max(1)
        || read
            .iter()
            .map(|r| {
                r.record.key.as_ref().map_or(0, Vec::len)
                    + r.record.value.as_ref().map_or(0, Vec::len)
            })
            .sum::<usize>()
            >= bounds.bytes
}

/// One epoch's records, per input, from what was read per partition (a
/// join's cut at a common time), moving `offsets` past them.
pub(super) fn take_epoch(
    parts: &[(usize, String, u32)],
    mut reads: Vec<Vec<StoredRecord>>,
    offsets: &mut [u64],
    join: bool,
    bounds: EpochBounds,
) -> Vec<Vec<StoredRecord>> {
    if join {
        cut_at_common_time(&mut reads, bounds);
    }
    let inputs = parts.iter().map(|(i, _, _)| i + 1).max().unwrap_or(1);
    let mut by_input: Vec<Vec<StoredRecord>> = vec![Vec::new(); inputs];
    for (g, ((input, _, _), read)) in parts.iter().zip(reads).enumerate() {
        for r in &read {
            offsets[g] = offsets[g].max(r.offset + 1);
        }
        by_input[*input].extend(read);
    }
    by_input
}

/// A join's epoch stops where the partitions that had more to read than
/// an epoch holds stopped in time: records later than that wait for the
/// next epoch, so that both inputs are taken in time order across epochs
/// too (each partition keeps its offset order: it is cut at its first
/// record past that time). If that would leave nothing, nothing is cut.
fn cut_at_common_time(reads: &mut [Vec<StoredRecord>], bounds: EpochBounds) {
    let Some(cutoff) = reads
        .iter()
        .filter(|r| read_is_full(r, bounds))
        .filter_map(|r| r.last().map(|x| x.record.timestamp))
        .min()
    else {
        return;
    };
    let lengths: Vec<usize> = reads
        .iter()
        .map(|r| {
            r.iter()
                .position(|x| x.record.timestamp > cutoff)
                .unwrap_or(r.len())
        })
        .collect();
    if lengths.iter().all(|n| *n == 0) {
        return;
    }
    for (r, n) in reads.iter_mut().zip(lengths) {
        r.truncate(n);
    }
}

/// The topics a query reads, in the order of its offsets.
pub(super) fn input_topics(plan: &StreamPlan) -> Vec<String> {
    match &plan.join {
        Some(j) => j.inputs().into_iter().map(|s| s.topic.clone()).collect(),
        None => vec![plan.source.topic.clone()],
    }
}
