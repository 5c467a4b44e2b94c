//! The log store: topics → partitions → segment files.
//!
//! Appends to a partition are written under its lock, in offset order, and
//! then wait for durability outside it: with [`FlushPolicy::Always`] the
//! first waiter becomes the *leader*, fsyncs once for everything written so
//! far and wakes the others (group commit). Readers see a record only once
//! it is acknowledged (`visible`), so nobody reads what a failed fsync may
//! have lost. Any failed write or fsync fails the partition: it takes no
//! more writes until the log is reopened and recovery has looked at the file
//! (Postgres' rule: a failed fsync is never retried as if it succeeded).

mod index;
mod record;
mod segment;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use record::encode_batch;
pub use record::{Record, StoredRecord};
pub use segment::TaggedBatch;
use segment::{index_paths, Segment};
use serde::{Deserialize, Serialize};

use crate::error::{io_err, Result, StorageError};
use crate::vfs::{RealVfs, Vfs};

/// When appended bytes are forced to disk (`log.flush`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushPolicy {
    /// `always` (the default): an append is acknowledged only after an
    /// fsync covering it (shared by concurrent appenders). Loses nothing
    /// acknowledged, even on power loss.
    #[default]
    Always,
    /// `interval:<ms>`: acknowledged once written to the OS; fsynced every
    /// `ms` milliseconds. A process crash loses nothing; power loss or an
    /// OS crash can lose the last `ms` of acknowledged appends.
    Interval(u64),
    /// `never`: flushing is left to the OS. A process crash loses nothing;
    /// power loss can lose any acknowledged append not yet written back.
    Never,
}

impl FromStr for FlushPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "always" => Ok(FlushPolicy::Always),
            "never" => Ok(FlushPolicy::Never),
            _ => s
                .strip_prefix("interval:")
                .and_then(|ms| ms.trim().parse::<u64>().ok())
                .filter(|ms| *ms > 0)
                .map(FlushPolicy::Interval)
                .ok_or_else(|| {
                    format!("invalid log.flush \"{s}\": expected always, interval:<ms> or never")
                }),
        }
    }
}

impl std::fmt::Display for FlushPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlushPolicy::Always => f.write_str("always"),
            FlushPolicy::Interval(ms) => write!(f, "interval:{ms}"),
            FlushPolicy::Never => f.write_str("never"),
        }
    }
}

/// Settings of a log store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// When appends are fsynced.
    pub flush: FlushPolicy,
    /// The active segment is rolled before it would exceed this size.
    pub segment_bytes: u64,
    /// ... or once it is this old (milliseconds since it was opened).
    pub segment_ms: u64,
    /// Bytes of log between two sparse index entries.
    pub index_interval_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            flush: FlushPolicy::Always,
            segment_bytes: 64 * 1024 * 1024,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
        }
    }
}

/// What happens to old segments of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CleanupPolicy {
    /// Segments past the retention limits are deleted.
    #[default]
    Delete,
    /// Closed segments keep only the latest record per key (tables'
    /// changelogs); tombstones go once older than `delete_retention_ms`.
    Compact,
}

/// Per-topic settings, kept in the topic's `topic.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    /// Number of partitions.
    pub partitions: u32,
    /// Delete closed segments whose newest record is older than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<i64>,
    /// Delete the oldest closed segments while a partition is larger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_bytes: Option<u64>,
    /// Delete or compact.
    #[serde(default)]
    pub cleanup_policy: CleanupPolicy,
    /// Compaction keeps tombstones this long (by record timestamp).
    #[serde(default = "default_delete_retention_ms")]
    pub delete_retention_ms: i64,
}

fn default_delete_retention_ms() -> i64 {
    24 * 3600 * 1000
}

impl TopicConfig {
    /// A topic with `partitions` partitions, kept forever.
    pub fn new(partitions: u32) -> TopicConfig {
        TopicConfig {
            partitions,
            retention_ms: None,
            retention_bytes: None,
            cleanup_policy: CleanupPolicy::Delete,
            delete_retention_ms: default_delete_retention_ms(),
        }
    }
}

/// What recovery did to a partition when the log was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Topic of the partition.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The segment file concerned.
    pub file: PathBuf,
    /// What was done.
    pub action: RecoveryAction,
}

/// A recovery step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryAction {
    /// A torn or garbage tail of the active segment was cut off.
    TailCut {
        /// Byte position it was cut back to.
        position: u64,
        /// How many bytes were dropped.
        bytes_dropped: u64,
        /// Why the tail was invalid.
        reason: String,
    },
    /// Missing or damaged index files were rebuilt from the segment.
    IndexRebuilt,
    /// The end moved past offsets a torn tail took, which readers had
    /// passed ([`LogStore::advance_end`]): they stay unused.
    EndAdvanced {
        /// Where the partition ended.
        from: u64,
        /// Where it ends now.
        to: u64,
    },
}

/// Size and offsets of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStats {
    /// The first offset still in the log.
    pub start_offset: u64,
    /// The offset the next record will get.
    pub end_offset: u64,
    /// Number of segment files.
    pub segments: usize,
    /// Bytes in segment files.
    pub bytes: u64,
    /// Whether the partition refuses writes after an I/O failure.
    pub failed: Option<String>,
}

struct PartInner {
    segments: Vec<Arc<Segment>>,
    /// The offset the next append gets (written, maybe not durable).
    written: u64,
    /// Offsets below this are acknowledged and readable.
    visible: u64,
    /// Why the partition stopped taking writes.
    failed: Option<String>,
}

#[derive(Default)]
struct SyncState {
    /// Offsets below this are covered by a successful fsync.
    durable: u64,
    /// Whether an appender is fsyncing for the group right now.
    leader: bool,
    /// Set when an fsync or write failed.
    error: Option<String>,
}

struct Partition {
    topic: String,
    id: u32,
    dir: PathBuf,
    inner: Mutex<PartInner>,
    sync: Mutex<SyncState>,
    synced: Condvar,
    /// What the last compaction left, so that the next one runs only when
    /// there is something new to do.
    cleaned: Mutex<Option<CleanMark>>,
}

/// The state of a compacted partition after a compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CleanMark {
    /// End offset of the last closed segment then.
    closed_end: u64,
    /// Timestamp of the oldest tombstone kept in closed segments
    /// (`i64::MAX` if none): nothing is due before the horizon passes it.
    oldest_tombstone: i64,
}

impl Partition {
    fn lock(&self) -> MutexGuard<'_, PartInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_sync(&self) -> MutexGuard<'_, SyncState> {
        self.sync.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn failed_error(&self, reason: &str) -> StorageError {
        StorageError::PartitionFailed {
            topic: self.topic.clone(),
            partition: self.id,
            reason: reason.to_string(),
        }
    }

    /// Marks the partition failed; the caller holds `inner`.
    fn fail(&self, inner: &mut PartInner, reason: String) {
        tracing::error!(topic = %self.topic, partition = self.id, %reason,
            "log partition stops taking writes");
        inner.failed.get_or_insert(reason.clone());
        self.lock_sync().error.get_or_insert(reason);
        self.synced.notify_all();
    }

    /// Waits until offsets below `end` are durable, fsyncing for the group
    /// if no one else is.
    fn wait_durable(&self, end: u64) -> Result<()> {
        let mut s = self.lock_sync();
        loop {
            if s.durable >= end {
                return Ok(());
            }
            if let Some(reason) = &s.error {
                return Err(self.failed_error(reason));
            }
            if s.leader {
                s = self.synced.wait(s).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            s.leader = true;
            drop(s);
            let result = self.sync_now();
            s = self.lock_sync();
            s.leader = false;
            if let Ok(target) = result {
                s.durable = s.durable.max(target);
            }
            self.synced.notify_all();
        }
    }

    /// fsyncs the active segment and records what is now durable.
    fn make_durable(&self) -> Result<()> {
        let target = self.sync_now()?;
        let mut s = self.lock_sync();
        s.durable = s.durable.max(target);
        Ok(())
    }

    /// fsyncs the active segment; returns the offset it covers.
    fn sync_now(&self) -> Result<u64> {
        let (target, seg) = {
            let inner = self.lock();
            if let Some(reason) = &inner.failed {
                return Err(self.failed_error(reason));
            }
            let seg = Arc::clone(inner.segments.last().expect("a partition has a segment"));
            (inner.written, seg)
        };
        let result = seg.sync();
        let mut inner = self.lock();
        match result {
            Ok(()) => {
                inner.visible = inner.visible.max(target);
                Ok(target)
            }
            Err(e) => {
                self.fail(&mut inner, e.to_string());
                Err(e)
            }
        }
    }
}

struct Topic {
    config: TopicConfig,
    partitions: Vec<Arc<Partition>>,
}

type Topics = Arc<RwLock<BTreeMap<String, Arc<Topic>>>>;

/// Append-only, partitioned, durable log of records.
pub struct LogStore {
    root: PathBuf,
    vfs: Arc<dyn Vfs>,
    config: LogConfig,
    topics: Topics,
    recovery: Mutex<Vec<RecoveryReport>>,
    /// Dropping it stops the interval flusher.
    _flusher: Option<mpsc::Sender<()>>,
}

const TOPIC_META: &str = "topic.json";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl LogStore {
    /// Opens (or creates) the log under `root` on the real file system,
    /// recovering every partition (see [`LogStore::open_with_vfs`]).
    pub fn open(root: impl Into<PathBuf>, config: LogConfig) -> Result<LogStore> {
        Self::open_with_vfs(Arc::new(RealVfs), root, config)
    }

    /// Opens the log on `vfs`. The active segment of each partition is
    /// scanned and a torn tail cut back to its last valid batch; closed
    /// segments are opened from their index files, or scanned (and their
    /// index rebuilt) when those are missing or damaged. Damage anywhere but
    /// at the very end of a partition is [`StorageError::Corrupt`].
    pub fn open_with_vfs(
        vfs: Arc<dyn Vfs>,
        root: impl Into<PathBuf>,
        config: LogConfig,
    ) -> Result<LogStore> {
        let root = root.into();
        vfs.create_dir_all(&root)
            .map_err(io_err("create directory", &root))?;
        let mut topics = BTreeMap::new();
        let mut recovery = Vec::new();
        let mut dirs = vfs.read_dir(&root).map_err(io_err("list", &root))?;
        dirs.sort();
        for dir in dirs {
            let meta = dir.join(TOPIC_META);
            if !vfs.exists(&meta) {
                continue; // a topic whose creation did not finish
            }
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let tconfig = read_topic_meta(vfs.as_ref(), &meta)?;
            let mut parts = Vec::with_capacity(tconfig.partitions as usize);
            for p in 0..tconfig.partitions {
                let part = open_partition(
                    vfs.as_ref(),
                    &config,
                    &tconfig,
                    &name,
                    p,
                    &dir.join(p.to_string()),
                    &mut recovery,
                )?;
                parts.push(Arc::new(part));
            }
            topics.insert(
                name,
                Arc::new(Topic {
                    config: tconfig,
                    partitions: parts,
                }),
            );
        }
        let topics: Topics = Arc::new(RwLock::new(topics));
        let flusher = match config.flush {
            FlushPolicy::Interval(ms) => Some(spawn_flusher(Arc::clone(&topics), ms)),
            _ => None,
        };
        Ok(LogStore {
            root,
            vfs,
            config,
            topics,
            recovery: Mutex::new(recovery),
            _flusher: flusher,
        })
    }

    /// What recovery did when the log was opened, and since
    /// ([`LogStore::advance_end`]).
    pub fn recovery_reports(&self) -> Vec<RecoveryReport> {
        self.recovery
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The settings the log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Creates a topic with `partitions` partitions and default settings.
    pub fn create_topic(&self, name: &str, partitions: u32) -> Result<()> {
        self.create_topic_with(name, TopicConfig::new(partitions))
    }

    /// Creates a topic.
    pub fn create_topic_with(&self, name: &str, config: TopicConfig) -> Result<()> {
        validate_topic_name(name)?;
        if config.partitions > MAX_PARTITIONS {
            return Err(StorageError::Metadata {
                path: self.root.join(name),
                reason: format!(
                    "{} partitions: a topic has at most {MAX_PARTITIONS}",
                    config.partitions
                ),
            });
        }
        let vfs = self.vfs.as_ref();
        let config = TopicConfig {
            partitions: config.partitions.max(1),
            ..config
        };
        let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
        if topics.contains_key(name) {
            return Err(StorageError::TopicExists(name.to_string()));
        }
        let dir = self.root.join(name);
        if vfs.exists(&dir) {
            // Left over from an unfinished creation or deletion.
            vfs.remove_dir_all(&dir).map_err(io_err("remove", &dir))?;
        }
        vfs.create_dir_all(&dir)
            .map_err(io_err("create directory", &dir))?;
        let now = now_ms();
        let mut parts = Vec::with_capacity(config.partitions as usize);
        for p in 0..config.partitions {
            let pdir = dir.join(p.to_string());
            vfs.create_dir_all(&pdir)
                .map_err(io_err("create directory", &pdir))?;
            let seg = Segment::create(vfs, &pdir, 0, now)?;
            parts.push(Arc::new(new_partition(name, p, pdir, vec![Arc::new(seg)])));
        }
        vfs.sync_dir(&dir).map_err(io_err("fsync", &dir))?;
        // The metadata file, written last and atomically, marks the topic as complete.
        let meta = serde_json::to_vec(&config).map_err(|e| StorageError::Metadata {
            path: dir.clone(),
            reason: e.to_string(),
        })?;
        let tmp = dir.join("topic.json.tmp");
        vfs.write_synced(&tmp, &meta)
            .map_err(io_err("write", &tmp))?;
        let meta_path = dir.join(TOPIC_META);
        vfs.rename(&tmp, &meta_path)
            .map_err(io_err("rename", &meta_path))?;
        vfs.sync_dir(&dir).map_err(io_err("fsync", &dir))?;
        vfs.sync_dir(&self.root)
            .map_err(io_err("fsync", &self.root))?;
        topics.insert(
            name.to_string(),
            Arc::new(Topic {
                config,
                partitions: parts,
            }),
        );
        Ok(())
    }

    /// Deletes a topic and its files.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        let vfs = self.vfs.as_ref();
        let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
        if topics.remove(name).is_none() {
            return Err(StorageError::TopicNotFound(name.to_string()));
        }
        let dir = self.root.join(name);
        let meta = dir.join(TOPIC_META);
        vfs.remove_file(&meta).map_err(io_err("remove", &meta))?;
        vfs.sync_dir(&dir).map_err(io_err("fsync", &dir))?;
        vfs.remove_dir_all(&dir).map_err(io_err("remove", &dir))?;
        vfs.sync_dir(&self.root)
            .map_err(io_err("fsync", &self.root))
    }

    /// Whether the topic exists.
    pub fn topic_exists(&self, name: &str) -> bool {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(name)
    }

    /// Topics and their partition counts, by name.
    pub fn topics(&self) -> Vec<(String, u32)> {
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        topics
            .iter()
            .map(|(n, t)| (n.clone(), t.partitions.len() as u32))
            .collect()
    }

    /// A topic's settings.
    pub fn topic_config(&self, topic: &str) -> Result<TopicConfig> {
        Ok(self.topic(topic)?.config.clone())
    }

    /// Number of partitions of a topic.
    pub fn partitions(&self, topic: &str) -> Result<u32> {
        Ok(self.topic(topic)?.partitions.len() as u32)
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        topics
            .get(name)
            .cloned()
            .ok_or_else(|| StorageError::TopicNotFound(name.to_string()))
    }

    fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        let t = self.topic(topic)?;
        t.partitions
            .get(partition as usize)
            .cloned()
            .ok_or_else(|| StorageError::PartitionNotFound {
                topic: topic.to_string(),
                partition,
            })
    }

    /// Appends records to one partition as one batch and returns the offset
    /// of the first. With [`FlushPolicy::Always`] the batch is durable when
    /// this returns; concurrent appenders share fsyncs. After a failed write
    /// or fsync the partition refuses further appends.
    pub fn append(&self, topic: &str, partition: u32, records: &[Record]) -> Result<u64> {
        self.append_batch(topic, partition, records, None)
    }

    /// [`LogStore::append`], with the batch tagged by its writer: readers of
    /// records do not see the tag; [`LogStore::tagged_batches`] finds it. A
    /// persistent query tags its output with the epoch that made it, so
    /// that output written before a crash cut the epoch's commit is known
    /// again (Kafka's producer id and epoch do this for a transactional
    /// producer). Compaction drops tags with the batches it rewrites.
    pub fn append_tagged(
        &self,
        topic: &str,
        partition: u32,
        records: &[Record],
        tag: &[u8],
    ) -> Result<u64> {
        self.append_batch(topic, partition, records, Some(tag))
    }

    fn append_batch(
        &self,
        topic: &str,
        partition: u32,
        records: &[Record],
        tag: Option<&[u8]>,
    ) -> Result<u64> {
        let p = self.partition(topic, partition)?;
        let end = {
            let mut inner = p.lock();
            if let Some(reason) = &inner.failed {
                return Err(p.failed_error(reason));
            }
            if records.is_empty() {
                return Ok(inner.written);
            }
            let base = inner.written;
            let framed = encode_batch(base, records, tag);
            if framed.len() > record::MAX_PAYLOAD {
                return Err(StorageError::TooLarge(framed.len()));
            }
            let max_ts = records.iter().map(|r| r.timestamp).max().unwrap_or(0);
            let count = records.len() as u32;
            if let Err(e) = self.write_batch(&p, &mut inner, base, count, max_ts, &framed) {
                p.fail(&mut inner, e.to_string());
                return Err(e);
            }
            inner.written = base + u64::from(count);
            if self.config.flush != FlushPolicy::Always {
                inner.visible = inner.written;
            }
            inner.written
        };
        if self.config.flush == FlushPolicy::Always {
            p.wait_durable(end)?;
        }
        Ok(end - records.len() as u64)
    }

    /// Moves the partition's end forward to `offset` when it is below: the
    /// next record appended gets `offset`, and the offsets between are a
    /// gap that reads pass over. For after recovery cut a torn tail below
    /// offsets that readers had already seen, so that no new record takes
    /// an offset a reader has passed. Durable on return: the active segment
    /// is closed and a new one starts at `offset`, with a `.gap` marker that
    /// lets [`LogStore::open`] accept the hole. Returns whether it moved.
    pub fn advance_end(&self, topic: &str, partition: u32, offset: u64) -> Result<bool> {
        let p = self.partition(topic, partition)?;
        let mut inner = p.lock();
        if let Some(reason) = &inner.failed {
            return Err(p.failed_error(reason));
        }
        if inner.written >= offset {
            return Ok(false);
        }
        let active = inner.segments.last().expect("a partition has a segment");
        active.sync()?;
        active.write_index(self.vfs.as_ref())?;
        let from = inner.written;
        let marker = p.dir.join(gap_file_name(offset));
        self.vfs
            .write_synced(&marker, from.to_string().as_bytes())
            .map_err(io_err("write", &marker))?;
        let seg = Segment::create(self.vfs.as_ref(), &p.dir, offset, now_ms())?;
        inner.segments.push(Arc::new(seg));
        inner.written = offset;
        inner.visible = offset;
        drop(inner);
        let mut synced = p.lock_sync();
        synced.durable = synced.durable.max(offset);
        drop(synced);
        tracing::warn!(
            topic,
            partition,
            from,
            to = offset,
            "log end moved past offsets a torn tail took; they stay unused"
        );
        self.recovery
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(RecoveryReport {
                topic: topic.to_string(),
                partition,
                file: p.dir.join(segment::segment_file_name(offset)),
                action: RecoveryAction::EndAdvanced { from, to: offset },
            });
        Ok(true)
    }

    /// Writes a framed batch to the active segment, rolling it first if it
    /// is full or old. Called under the partition lock.
    fn write_batch(
        &self,
        p: &Partition,
        inner: &mut PartInner,
        base: u64,
        count: u32,
        max_ts: i64,
        framed: &[u8],
    ) -> Result<()> {
        let now = now_ms();
        let active = inner.segments.last().expect("a partition has a segment");
        let len = active.len();
        let full = len + framed.len() as u64 > self.config.segment_bytes;
        let old = now.saturating_sub(active.opened_ms) >= self.config.segment_ms as i64;
        if len > 0 && (full || old) {
            // Even under `never`: a closed segment is never recovered as a
            // torn tail, so it must be whole on disk before its index says so.
            active.sync()?;
            active.write_index(self.vfs.as_ref())?;
            let seg = Segment::create(self.vfs.as_ref(), &p.dir, base, now)?;
            inner.segments.push(Arc::new(seg));
        }
        let active = inner.segments.last().expect("a partition has a segment");
        active.append(
            base,
            count,
            max_ts,
            framed,
            self.config.index_interval_bytes,
        )
    }

    /// Reads up to `max` acknowledged records of one partition, starting at
    /// the first offset at or after `from` still in the log.
    pub fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<StoredRecord>> {
        self.read_bounded(topic, partition, from, max, usize::MAX)
    }

    /// [`LogStore::read`], stopping also once the records read hold
    /// `max_bytes` of keys and values (the record that reaches it is
    /// included, so a read returns at least one record if there is one).
    pub fn read_bounded(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>> {
        let p = self.partition(topic, partition)?;
        let (segments, visible) = snapshot(&p, from);
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        let mut budget = segment::ReadBudget {
            records: max,
            bytes: max_bytes.max(1),
        };
        for (seg, len_limit) in segments {
            if seg.end_offset() <= from {
                continue;
            }
            seg.read_into(p.id, from, visible, len_limit, &mut budget, &mut out)?;
            if budget.spent() {
                break;
            }
        }
        Ok(out)
    }

    /// The tagged batches of one partition that hold records at or after
    /// `from` (see [`LogStore::append_tagged`]), in offset order. Reads the
    /// partition from `from` to its end.
    pub fn tagged_batches(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
    ) -> Result<Vec<TaggedBatch>> {
        let p = self.partition(topic, partition)?;
        let (segments, visible) = snapshot(&p, from);
        let mut out = Vec::new();
        for (seg, len_limit) in segments {
            if seg.end_offset() <= from {
                continue;
            }
            seg.tags_into(from, visible, len_limit, &mut out)?;
        }
        Ok(out)
    }

    /// The first offset of the partition whose record has a timestamp at or
    /// after `ts` (`None` if there is none yet).
    pub fn offset_for_time(&self, topic: &str, partition: u32, ts: i64) -> Result<Option<u64>> {
        let p = self.partition(topic, partition)?;
        let (segments, visible) = snapshot(&p, 0);
        for (seg, len_limit) in segments {
            if let Some(o) = seg.offset_for_time(ts, len_limit)? {
                return Ok((o < visible).then_some(o));
            }
        }
        Ok(None)
    }

    /// The offset the next appended record of the partition will get (all
    /// before it are acknowledged).
    pub fn end_offset(&self, topic: &str, partition: u32) -> Result<u64> {
        Ok(self.partition(topic, partition)?.lock().visible)
    }

    /// End offsets of every partition of a topic.
    pub fn end_offsets(&self, topic: &str) -> Result<Vec<u64>> {
        let t = self.topic(topic)?;
        Ok(t.partitions.iter().map(|p| p.lock().visible).collect())
    }

    /// Makes every append to the topic so far durable, whatever the flush
    /// policy: for writes that must be on disk before something else goes.
    pub fn sync(&self, topic: &str) -> Result<()> {
        for p in &self.topic(topic)?.partitions {
            p.make_durable()?;
        }
        Ok(())
    }

    /// Offsets, segments and size of every partition of a topic.
    pub fn stats(&self, topic: &str) -> Result<Vec<PartitionStats>> {
        let t = self.topic(topic)?;
        Ok(t.partitions
            .iter()
            .map(|p| {
                let inner = p.lock();
                PartitionStats {
                    start_offset: inner.segments.first().map_or(0, |s| s.base_offset),
                    end_offset: inner.visible,
                    segments: inner.segments.len(),
                    bytes: inner.segments.iter().map(|s| s.len()).sum(),
                    failed: inner.failed.clone(),
                }
            })
            .collect())
    }

    /// Applies retention and compaction to every topic; returns how many
    /// segments were deleted or rewritten. Servers call this periodically.
    pub fn maintain(&self, now_ms: i64) -> Result<usize> {
        let topics: Vec<Arc<Topic>> = self
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let mut changed = 0;
        for t in topics {
            for p in &t.partitions {
                changed += self.apply_retention(&t.config, p, now_ms)?;
                if t.config.cleanup_policy == CleanupPolicy::Compact {
                    changed += self.compact(&t.config, p, now_ms)?;
                }
            }
        }
        Ok(changed)
    }

    /// Deletes closed segments past the topic's time or size limit.
    fn apply_retention(&self, config: &TopicConfig, p: &Partition, now: i64) -> Result<usize> {
        if config.retention_ms.is_none() && config.retention_bytes.is_none() {
            return Ok(0);
        }
        let mut deleted = 0;
        loop {
            let mut inner = p.lock();
            if inner.segments.len() < 2 {
                return Ok(deleted);
            }
            let first = &inner.segments[0];
            let total: u64 = inner.segments.iter().map(|s| s.len()).sum();
            let too_old = config
                .retention_ms
                .is_some_and(|ms| first.max_ts() < now.saturating_sub(ms));
            let too_big = config
                .retention_bytes
                .is_some_and(|b| total - first.len() >= b);
            if !(too_old || too_big) {
                return Ok(deleted);
            }
            let seg = inner.segments.remove(0);
            drop(inner);
            tracing::info!(topic = %p.topic, partition = p.id, file = %seg.path.display(),
                "retention deletes log segment");
            self.remove_segment_files(&seg.path)?;
            self.vfs.sync_dir(&p.dir).map_err(io_err("fsync", &p.dir))?;
            deleted += 1;
        }
    }

    fn remove_segment_files(&self, path: &Path) -> Result<()> {
        let (ip, tp) = index_paths(path);
        for f in [&ip, &tp] {
            if self.vfs.exists(f) {
                self.vfs.remove_file(f).map_err(io_err("remove", f))?;
            }
        }
        self.vfs.remove_file(path).map_err(io_err("remove", path))
    }

    /// Rewrites closed segments keeping only the latest record per key
    /// (null keys are kept), and tombstones younger than the topic's
    /// `delete_retention_ms`. Offsets are kept, leaving gaps.
    fn compact(&self, config: &TopicConfig, p: &Partition, now: i64) -> Result<usize> {
        let (segments, visible) = snapshot(p, 0);
        if segments.len() < 2 {
            return Ok(0);
        }
        let horizon = now.saturating_sub(config.delete_retention_ms);
        let closed_end = segments[segments.len() - 2].0.end_offset();
        let mut cleaned = p.cleaned.lock().unwrap_or_else(|e| e.into_inner());
        if cleaned.is_some_and(|m| m.closed_end == closed_end && horizon <= m.oldest_tombstone) {
            // No segment closed and no tombstone expired since the last run.
            return Ok(0);
        }
        // The latest offset of every key, over the whole partition.
        let mut latest: HashMap<Vec<u8>, u64> = HashMap::new();
        for (seg, len_limit) in &segments {
            let mut recs = Vec::new();
            seg.read_into(
                p.id,
                0,
                visible,
                *len_limit,
                &mut segment::ReadBudget::unlimited(),
                &mut recs,
            )?;
            for r in recs {
                if let Some(k) = r.record.key {
                    latest.insert(k, r.offset);
                }
            }
        }
        let mut rewritten = 0;
        let mut oldest_tombstone = i64::MAX;
        for (seg, len_limit) in &segments[..segments.len() - 1] {
            if seg.end_offset() > visible {
                // Records still waiting for their fsync: not ours to rewrite
                // (and the next run must look again).
                return Ok(rewritten);
            }
            let mut recs = Vec::new();
            seg.read_into(
                p.id,
                0,
                visible,
                *len_limit,
                &mut segment::ReadBudget::unlimited(),
                &mut recs,
            )?;
            let before = recs.len();
            recs.retain(|r| match &r.record.key {
                None => true,
                Some(k) => {
                    latest.get(k) == Some(&r.offset)
                        && (r.record.value.is_some() || r.record.timestamp >= horizon)
                }
            });
            for r in recs.iter().filter(|r| r.record.value.is_none()) {
                oldest_tombstone = oldest_tombstone.min(r.record.timestamp);
            }
            if recs.len() == before {
                continue;
            }
            self.rewrite_segment(p, seg, &recs)?;
            rewritten += 1;
        }
        *cleaned = Some(CleanMark {
            closed_end,
            oldest_tombstone,
        });
        Ok(rewritten)
    }

    /// Replaces a closed segment's file by one holding only `records`.
    fn rewrite_segment(
        &self,
        p: &Partition,
        seg: &Arc<Segment>,
        records: &[StoredRecord],
    ) -> Result<()> {
        let vfs = self.vfs.as_ref();
        let cleaned = seg.path.with_extension("log.cleaned");
        if vfs.exists(&cleaned) {
            vfs.remove_file(&cleaned)
                .map_err(io_err("remove", &cleaned))?;
        }
        let file = vfs
            .open(&cleaned, true)
            .map_err(io_err("create", &cleaned))?;
        // Runs of consecutive offsets become one batch each (at most 1000
        // records and about 1 MiB, far below the frame size limit).
        let size = |r: &StoredRecord| {
            let headers: usize = r
                .record
                .headers
                .iter()
                .map(|(k, v)| 8 + k.len() + v.as_ref().map_or(0, Vec::len))
                .sum();
            24 + r.record.key.as_ref().map_or(0, Vec::len)
                + r.record.value.as_ref().map_or(0, Vec::len)
                + headers
        };
        let mut i = 0;
        while i < records.len() {
            let mut j = i + 1;
            let mut bytes = size(&records[i]);
            while j < records.len()
                && j - i < 1000
                && bytes + size(&records[j]) <= 1 << 20
                && records[j].offset == records[j - 1].offset + 1
            {
                bytes += size(&records[j]);
                j += 1;
            }
            let run: Vec<Record> = records[i..j].iter().map(|r| r.record.clone()).collect();
            file.append(&encode_batch(records[i].offset, &run, None))
                .map_err(io_err("write", &cleaned))?;
            i = j;
        }
        file.sync_data().map_err(io_err("fsync", &cleaned))?;
        // Check the new file before it replaces anything.
        let (check, damage) = Segment::open_scan(
            vfs,
            cleaned.clone(),
            seg.base_offset,
            self.config.index_interval_bytes,
            seg.opened_ms,
        )?;
        drop(check);
        if let Some(d) = damage {
            let _ = vfs.remove_file(&cleaned);
            return Err(StorageError::Corrupt {
                path: cleaned,
                position: d.position,
                reason: d.reason,
            });
        }
        let mut inner = p.lock();
        let Some(pos) = inner.segments.iter().position(|s| Arc::ptr_eq(s, seg)) else {
            // Retention deleted it meanwhile.
            drop(inner);
            return vfs
                .remove_file(&cleaned)
                .map_err(io_err("remove", &cleaned));
        };
        // Index files go first: a crash after the rename must not find an
        // index describing the old contents.
        let (ip, tp) = index_paths(&seg.path);
        for f in [&ip, &tp] {
            if vfs.exists(f) {
                vfs.remove_file(f).map_err(io_err("remove", f))?;
            }
        }
        vfs.sync_dir(&p.dir).map_err(io_err("fsync", &p.dir))?;
        vfs.rename(&cleaned, &seg.path)
            .map_err(io_err("rename", &seg.path))?;
        vfs.sync_dir(&p.dir).map_err(io_err("fsync", &p.dir))?;
        let (new, damage) = Segment::open_scan(
            vfs,
            seg.path.clone(),
            seg.base_offset,
            self.config.index_interval_bytes,
            seg.opened_ms,
        )?;
        if let Some(d) = damage {
            return Err(StorageError::Corrupt {
                path: seg.path.clone(),
                position: d.position,
                reason: d.reason,
            });
        }
        new.set_end_offset(seg.end_offset());
        new.write_index(vfs)?;
        inner.segments[pos] = Arc::new(new);
        Ok(())
    }
}

/// The segments to read for offsets from `from`, each with the byte length
/// readable now, and the acknowledged end of the partition.
fn snapshot(p: &Partition, from: u64) -> (Vec<(Arc<Segment>, u64)>, u64) {
    let inner = p.lock();
    let first = inner
        .segments
        .partition_point(|s| s.base_offset <= from)
        .saturating_sub(1);
    let segs = inner.segments[first..]
        .iter()
        .map(|s| (Arc::clone(s), s.len()))
        .collect();
    (segs, inner.visible)
}

impl Drop for LogStore {
    fn drop(&mut self) {
        // A clean shutdown leaves nothing unsynced behind, whatever the policy.
        if self.config.flush == FlushPolicy::Always {
            return;
        }
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        for t in topics.values() {
            for p in &t.partitions {
                let _ = p.sync_now();
            }
        }
    }
}

/// The `interval:<ms>` flusher: fsyncs partitions with unsynced appends
/// until its sender is dropped.
fn spawn_flusher(topics: Topics, ms: u64) -> mpsc::Sender<()> {
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("brook-log-flusher".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) =
                rx.recv_timeout(Duration::from_millis(ms))
            {
                let parts: Vec<Arc<Partition>> = topics
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .flat_map(|t| t.partitions.iter().cloned())
                    .collect();
                for p in parts {
                    let pending = {
                        let written = p.lock().written;
                        written > p.lock_sync().durable
                    };
                    if pending {
                        // A failure marks the partition failed; its writers
                        // see it.
                        let _ = p.make_durable();
                    }
                }
            }
        })
        .map(|_| tx)
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "could not start the log flusher thread");
            mpsc::channel().0
        })
}

fn new_partition(topic: &str, id: u32, dir: PathBuf, segments: Vec<Arc<Segment>>) -> Partition {
    let end = segments.last().map_or(0, |s| s.end_offset());
    Partition {
        topic: topic.to_string(),
        id,
        dir,
        inner: Mutex::new(PartInner {
            segments,
            written: end,
            visible: end,
            failed: None,
        }),
        sync: Mutex::new(SyncState {
            durable: end,
            ..SyncState::default()
        }),
        synced: Condvar::new(),
        cleaned: Mutex::new(None),
    }
}

fn open_partition(
    vfs: &dyn Vfs,
    config: &LogConfig,
    tconfig: &TopicConfig,
    topic: &str,
    id: u32,
    dir: &Path,
    recovery: &mut Vec<RecoveryReport>,
) -> Result<Partition> {
    // A topic's partition directories exist before its topic.json is
    // written: one missing means damage (or a deleted folder), which an
    // empty new partition would hide.
    if !vfs.exists(dir) {
        return Err(StorageError::Metadata {
            path: dir.to_path_buf(),
            reason: format!(
                "partition {id} of topic {topic} is missing (its topic.json names {} partitions)",
                tconfig.partitions
            ),
        });
    }
    let mut files: Vec<(u64, PathBuf)> = Vec::new();
    for path in vfs.read_dir(dir).map_err(io_err("list", dir))? {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.ends_with(".cleaned") {
            // An unfinished compaction: the original is intact.
            vfs.remove_file(&path).map_err(io_err("remove", &path))?;
            continue;
        }
        if name.ends_with(GAP_SUFFIX) {
            continue;
        }
        if let Some(base) = name
            .strip_suffix(".log")
            .and_then(|b| b.parse::<u64>().ok())
        {
            files.push((base, path));
        }
    }
    files.sort();
    let now = now_ms();
    let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(files.len());
    let last = files.len().saturating_sub(1);
    let mut expected = files.first().map_or(0, |f| f.0);
    let compacted = tconfig.cleanup_policy == CleanupPolicy::Compact;
    for (i, (base, path)) in files.into_iter().enumerate() {
        // A hole between segments: compaction's, or one `advance_end` made.
        let gap_allowed = compacted || vfs.exists(&dir.join(gap_file_name(base)));
        if base < expected || (base != expected && !gap_allowed) {
            return Err(StorageError::Corrupt {
                path,
                position: 0,
                reason: format!("segment starts at offset {base}, expected {expected}"),
            });
        }
        let indexed = if i == last {
            None
        } else {
            Segment::open_indexed(vfs, path.clone(), base, now)?
        };
        let seg = match indexed {
            Some(seg) => seg,
            None => {
                let (seg, damage) =
                    Segment::open_scan(vfs, path, base, config.index_interval_bytes, now)?;
                if let Some(d) = damage {
                    // A torn write only damages the last batch of the last
                    // segment: damage with valid batches after it is corruption.
                    if i != last || seg.valid_batch_after(d.position, seg.end_offset())? {
                        return Err(StorageError::Corrupt {
                            path: seg.path.clone(),
                            position: d.position,
                            reason: d.reason,
                        });
                    }
                    tracing::warn!(
                        topic, partition = id, file = %seg.path.display(), position = d.position,
                        bytes_dropped = d.bytes, reason = %d.reason, "cut torn tail of log segment"
                    );
                    seg.truncate_to_valid()?;
                    recovery.push(RecoveryReport {
                        topic: topic.to_string(),
                        partition: id,
                        file: seg.path.clone(),
                        action: RecoveryAction::TailCut {
                            position: d.position,
                            bytes_dropped: d.bytes,
                            reason: d.reason,
                        },
                    });
                }
                if i != last {
                    tracing::info!(topic, partition = id, file = %seg.path.display(),
                        "rebuilt missing or damaged segment index");
                    seg.write_index(vfs)?;
                    recovery.push(RecoveryReport {
                        topic: topic.to_string(),
                        partition: id,
                        file: seg.path.clone(),
                        action: RecoveryAction::IndexRebuilt,
                    });
                }
                seg
            }
        };
        expected = seg.end_offset();
        segments.push(Arc::new(seg));
    }
    if segments.is_empty() {
        segments.push(Arc::new(Segment::create(vfs, dir, 0, now)?));
    }
    Ok(new_partition(topic, id, dir.to_path_buf(), segments))
}

const GAP_SUFFIX: &str = ".gap";

/// The most partitions a topic may have (as `WITH (PARTITIONS=…)` allows):
/// a damaged `topic.json` cannot make the log open, or create, more.
pub const MAX_PARTITIONS: u32 = 1024;

/// The marker of a segment that starts after a hole `advance_end` made.
fn gap_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}{GAP_SUFFIX}")
}

fn read_topic_meta(vfs: &dyn Vfs, path: &Path) -> Result<TopicConfig> {
    let bad = |reason: String| StorageError::Metadata {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = vfs.read(path).map_err(io_err("read", path))?;
    let config: TopicConfig = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    if !(1..=MAX_PARTITIONS).contains(&config.partitions) {
        return Err(bad(format!(
            "bad partition count {} (1 to {MAX_PARTITIONS})",
            config.partitions
        )));
    }
    Ok(config)
}

fn validate_topic_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(StorageError::Metadata {
            path: PathBuf::from(name),
            reason: "topic names may contain only ASCII letters, digits, '.', '_' and '-'".into(),
        })
    }
}
