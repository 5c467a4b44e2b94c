//! The log store: topics → partitions → segment files.

mod record;
mod segment;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use record::encode_batch;
pub use record::{Record, StoredRecord};
use segment::Segment;

use crate::error::{io_err, Result, StorageError};

/// When appended bytes are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushPolicy {
    /// fsync before an append is acknowledged (the default): an
    /// acknowledged append survives power loss.
    #[default]
    Always,
    /// Leave flushing to the operating system: a crash of the machine (not
    /// of the process) can lose acknowledged appends. For tests and bulk loads.
    Never,
}

/// Default size at which the active segment is rolled.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

struct Partition {
    topic: String,
    id: u32,
    dir: PathBuf,
    segments: Vec<Segment>,
    next_offset: u64,
    /// Set after a failed write or fsync: the partition takes no more writes,
    /// since what reached the disk is unknown (Postgres' fsync rule).
    failed: bool,
}

struct Topic {
    partitions: Vec<Mutex<Partition>>,
}

/// A recovery action taken when the log was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Topic of the damaged partition.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The segment file that was cut back.
    pub file: PathBuf,
    /// Byte position it was cut back to.
    pub position: u64,
    /// How many bytes were dropped.
    pub bytes_dropped: u64,
    /// Why the tail was invalid.
    pub reason: String,
}

/// Append-only, partitioned, durable log of records.
pub struct LogStore {
    root: PathBuf,
    policy: FlushPolicy,
    segment_bytes: u64,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    recovery: Vec<RecoveryReport>,
}

const TOPIC_META: &str = "topic.json";

impl LogStore {
    /// Opens (or creates) the log under `root`, scanning every partition and
    /// cutting a torn tail of an active segment back to its last valid batch.
    pub fn open(root: impl Into<PathBuf>, policy: FlushPolicy) -> Result<LogStore> {
        Self::open_with_segment_bytes(root, policy, DEFAULT_SEGMENT_BYTES)
    }

    /// [`LogStore::open`] with a custom segment size (tests roll small segments).
    pub fn open_with_segment_bytes(
        root: impl Into<PathBuf>,
        policy: FlushPolicy,
        segment_bytes: u64,
    ) -> Result<LogStore> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(io_err("create directory", &root))?;
        let mut topics = BTreeMap::new();
        let mut recovery = Vec::new();
        for entry in fs::read_dir(&root).map_err(io_err("list", &root))? {
            let entry = entry.map_err(io_err("list", &root))?;
            let dir = entry.path();
            let meta = dir.join(TOPIC_META);
            if !meta.exists() {
                continue; // a topic whose creation did not finish
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let partitions = read_topic_meta(&meta)?;
            let mut parts = Vec::with_capacity(partitions as usize);
            for p in 0..partitions {
                let part = open_partition(&name, p, &dir.join(p.to_string()), &mut recovery)?;
                parts.push(Mutex::new(part));
            }
            topics.insert(name, Arc::new(Topic { partitions: parts }));
        }
        Ok(LogStore {
            root,
            policy,
            segment_bytes,
            topics: RwLock::new(topics),
            recovery,
        })
    }

    /// What recovery did when the log was opened.
    pub fn recovery_reports(&self) -> &[RecoveryReport] {
        &self.recovery
    }

    /// Creates a topic with `partitions` partitions.
    pub fn create_topic(&self, name: &str, partitions: u32) -> Result<()> {
        validate_topic_name(name)?;
        let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
        if topics.contains_key(name) {
            return Err(StorageError::TopicExists(name.to_string()));
        }
        let dir = self.root.join(name);
        if dir.exists() {
            // Left over from an unfinished creation or deletion.
            fs::remove_dir_all(&dir).map_err(io_err("remove", &dir))?;
        }
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        let mut parts = Vec::with_capacity(partitions as usize);
        for p in 0..partitions.max(1) {
            let pdir = dir.join(p.to_string());
            fs::create_dir_all(&pdir).map_err(io_err("create directory", &pdir))?;
            let seg = Segment::create(&pdir, 0)?;
            parts.push(Mutex::new(Partition {
                topic: name.to_string(),
                id: p,
                dir: pdir,
                segments: vec![seg],
                next_offset: 0,
                failed: false,
            }));
        }
        sync_dir(&dir)?;
        // The metadata file, written last and atomically, marks the topic as complete.
        let meta = serde_json::json!({ "partitions": partitions.max(1) }).to_string();
        let tmp = dir.join("topic.json.tmp");
        fs::write(&tmp, meta).map_err(io_err("write", &tmp))?;
        fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_err("fsync", &tmp))?;
        let meta_path = dir.join(TOPIC_META);
        fs::rename(&tmp, &meta_path).map_err(io_err("rename", &meta_path))?;
        sync_dir(&dir)?;
        sync_dir(&self.root)?;
        topics.insert(name.to_string(), Arc::new(Topic { partitions: parts }));
        Ok(())
    }

    /// Deletes a topic and its files.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
        if topics.remove(name).is_none() {
            return Err(StorageError::TopicNotFound(name.to_string()));
        }
        let dir = self.root.join(name);
        let meta = dir.join(TOPIC_META);
        fs::remove_file(&meta).map_err(io_err("remove", &meta))?;
        sync_dir(&dir)?;
        fs::remove_dir_all(&dir).map_err(io_err("remove", &dir))?;
        sync_dir(&self.root)
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

    fn with_partition<T>(
        &self,
        topic: &str,
        partition: u32,
        f: impl FnOnce(&mut Partition) -> Result<T>,
    ) -> Result<T> {
        let t = self.topic(topic)?;
        let p = t.partitions.get(partition as usize).ok_or_else(|| {
            StorageError::PartitionNotFound {
                topic: topic.to_string(),
                partition,
            }
        })?;
        let mut guard = p.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Appends records to one partition as one batch and returns the offset
    /// of the first. With [`FlushPolicy::Always`] the batch is on disk when
    /// this returns. After a failed write or fsync the partition refuses
    /// further appends.
    pub fn append(&self, topic: &str, partition: u32, records: &[Record]) -> Result<u64> {
        let policy = self.policy;
        let segment_bytes = self.segment_bytes;
        self.with_partition(topic, partition, |p| {
            if p.failed {
                return Err(StorageError::PartitionFailed {
                    topic: p.topic.clone(),
                    partition: p.id,
                });
            }
            if records.is_empty() {
                return Ok(p.next_offset);
            }
            let base = p.next_offset;
            let framed = encode_batch(base, records);
            if framed.len() > record::MAX_PAYLOAD {
                return Err(StorageError::TooLarge(framed.len()));
            }
            let result =
                p.append_framed(base, records.len() as u32, &framed, policy, segment_bytes);
            if result.is_err() {
                p.failed = true;
            }
            result?;
            p.next_offset = base + records.len() as u64;
            Ok(base)
        })
    }

    /// Reads up to `max` records of one partition starting at offset `from`.
    pub fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<StoredRecord>> {
        self.with_partition(topic, partition, |p| p.read(from, max))
    }

    /// The offset the next appended record of the partition will get.
    pub fn end_offset(&self, topic: &str, partition: u32) -> Result<u64> {
        self.with_partition(topic, partition, |p| Ok(p.next_offset))
    }

    /// End offsets of every partition of a topic.
    pub fn end_offsets(&self, topic: &str) -> Result<Vec<u64>> {
        let t = self.topic(topic)?;
        Ok(t.partitions
            .iter()
            .map(|p| p.lock().unwrap_or_else(|e| e.into_inner()).next_offset)
            .collect())
    }
}

impl Partition {
    fn append_framed(
        &mut self,
        base: u64,
        count: u32,
        framed: &[u8],
        policy: FlushPolicy,
        segment_bytes: u64,
    ) -> Result<()> {
        let roll = self
            .segments
            .last()
            .is_none_or(|s| s.len > 0 && s.len + framed.len() as u64 > segment_bytes);
        if roll {
            if let Some(last) = self.segments.last() {
                last.sync()?;
            }
            self.segments.push(Segment::create(&self.dir, base)?);
        }
        let seg = self
            .segments
            .last_mut()
            .expect("a segment was just ensured");
        seg.append(base, count, framed)?;
        if policy == FlushPolicy::Always {
            seg.sync()?;
        }
        Ok(())
    }

    fn read(&self, from: u64, max: usize) -> Result<Vec<StoredRecord>> {
        let mut out = Vec::new();
        if from >= self.next_offset || max == 0 {
            return Ok(out);
        }
        let first_seg = self
            .segments
            .partition_point(|s| s.base_offset <= from)
            .saturating_sub(1);
        for seg in &self.segments[first_seg..] {
            let first_batch = seg
                .batches
                .partition_point(|b| b.base_offset <= from)
                .saturating_sub(1);
            for batch in &seg.batches[first_batch..] {
                if batch.base_offset + u64::from(batch.count) <= from {
                    continue;
                }
                let records = seg.read_batch(batch)?;
                for (i, record) in records.into_iter().enumerate() {
                    let offset = batch.base_offset + i as u64;
                    if offset >= self.next_offset {
                        // Written but not acknowledged (its fsync failed).
                        return Ok(out);
                    }
                    if offset < from {
                        continue;
                    }
                    out.push(StoredRecord {
                        partition: self.id,
                        offset,
                        record,
                    });
                    if out.len() >= max {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }
}

fn open_partition(
    topic: &str,
    id: u32,
    dir: &Path,
    recovery: &mut Vec<RecoveryReport>,
) -> Result<Partition> {
    fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    let mut files: Vec<(u64, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let path = entry.map_err(io_err("list", dir))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if let Some(base) = name
            .strip_suffix(".log")
            .and_then(|b| b.parse::<u64>().ok())
        {
            files.push((base, path));
        }
    }
    files.sort();
    let mut segments = Vec::with_capacity(files.len());
    let last = files.len().saturating_sub(1);
    let mut expected = files.first().map_or(0, |f| f.0);
    for (i, (base, path)) in files.into_iter().enumerate() {
        if base != expected {
            return Err(StorageError::Corrupt {
                path,
                position: 0,
                reason: format!("segment starts at offset {base}, expected {expected}"),
            });
        }
        let (mut seg, damage) = Segment::open(path, base)?;
        if let Some(d) = damage {
            // A torn write only damages the last batch of the last segment:
            // damage with valid batches after it is corruption.
            if i != last || seg.valid_batch_after(d.position, seg.next_offset())? {
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
                position: d.position,
                bytes_dropped: d.bytes,
                reason: d.reason,
            });
        }
        expected = seg.next_offset();
        segments.push(seg);
    }
    if segments.is_empty() {
        segments.push(Segment::create(dir, 0)?);
    }
    let next_offset = segments.last().map_or(0, Segment::next_offset);
    Ok(Partition {
        topic: topic.to_string(),
        id,
        dir: dir.to_path_buf(),
        segments,
        next_offset,
        failed: false,
    })
}

fn read_topic_meta(path: &Path) -> Result<u32> {
    let bad = |reason: String| StorageError::Metadata {
        path: path.to_path_buf(),
        reason,
    };
    let text = fs::read_to_string(path).map_err(io_err("read", path))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let n = v
        .get("partitions")
        .and_then(|p| p.as_u64())
        .ok_or_else(|| bad("no partition count".into()))?;
    u32::try_from(n)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| bad(format!("bad partition count {n}")))
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

/// Makes a directory's entries durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_err("fsync", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn rec(i: i64) -> Record {
        Record {
            timestamp: i,
            key: Some(i.to_le_bytes().to_vec()),
            value: Some(format!("v{i}").into_bytes()),
            headers: vec![],
        }
    }

    #[test]
    fn append_read_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log =
                LogStore::open_with_segment_bytes(dir.path(), FlushPolicy::Always, 200).unwrap();
            log.create_topic("t", 2).unwrap();
            for i in 0..20 {
                assert_eq!(log.append("t", 0, &[rec(i)]).unwrap(), i as u64);
            }
            assert_eq!(log.append("t", 1, &[rec(1), rec(2)]).unwrap(), 0);
            let got = log.read("t", 0, 5, 3).unwrap();
            assert_eq!(
                got.iter().map(|r| r.offset).collect::<Vec<_>>(),
                vec![5, 6, 7]
            );
            assert_eq!(got[0].record, rec(5));
        }
        let log = LogStore::open(dir.path(), FlushPolicy::Always).unwrap();
        assert_eq!(log.end_offsets("t").unwrap(), vec![20, 2]);
        let all = log.read("t", 0, 0, 100).unwrap();
        assert_eq!(all.len(), 20);
        assert_eq!(all[19].record, rec(19));
        assert!(log.recovery_reports().is_empty());
        assert!(matches!(
            log.create_topic("t", 1),
            Err(StorageError::TopicExists(_))
        ));
        assert!(matches!(
            log.read("nope", 0, 0, 1),
            Err(StorageError::TopicNotFound(_))
        ));
        assert!(log.create_topic("../evil", 1).is_err());
    }

    #[test]
    fn torn_tail_is_cut_back_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = LogStore::open(dir.path(), FlushPolicy::Always).unwrap();
            log.create_topic("t", 1).unwrap();
            log.append("t", 0, &[rec(1), rec(2)]).unwrap();
            log.append("t", 0, &[rec(3)]).unwrap();
        }
        let seg = dir.path().join("t/0/00000000000000000000.log");
        let full = fs::metadata(&seg).unwrap().len();
        // Tear the last batch and add garbage.
        let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(full - 3).unwrap();
        drop(f);
        let mut f = fs::OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"garbage").unwrap();
        drop(f);
        let log = LogStore::open(dir.path(), FlushPolicy::Always).unwrap();
        assert_eq!(log.end_offset("t", 0).unwrap(), 2);
        assert_eq!(log.recovery_reports().len(), 1);
        // Appends continue after the cut.
        assert_eq!(log.append("t", 0, &[rec(9)]).unwrap(), 2);
        let all = log.read("t", 0, 0, 10).unwrap();
        assert_eq!(
            all.iter().map(|r| r.record.timestamp).collect::<Vec<_>>(),
            vec![1, 2, 9]
        );
    }

    #[test]
    fn damage_followed_by_valid_batches_is_an_error_not_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = LogStore::open(dir.path(), FlushPolicy::Always).unwrap();
            log.create_topic("t", 1).unwrap();
            for i in 0..5 {
                log.append("t", 0, &[rec(i)]).unwrap();
            }
        }
        let seg = dir.path().join("t/0/00000000000000000000.log");
        let mut bytes = fs::read(&seg).unwrap();
        let len = bytes.len();
        bytes[len / 3] ^= 0x01; // inside an early batch: acknowledged batches follow
        fs::write(&seg, &bytes).unwrap();
        match LogStore::open(dir.path(), FlushPolicy::Always) {
            Err(StorageError::Corrupt { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("acknowledged batches after the damage would have been cut"),
        }
        assert_eq!(fs::read(&seg).unwrap().len(), len, "nothing was truncated");
    }

    #[test]
    fn damage_in_an_older_segment_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log =
                LogStore::open_with_segment_bytes(dir.path(), FlushPolicy::Always, 60).unwrap();
            log.create_topic("t", 1).unwrap();
            for i in 0..10 {
                log.append("t", 0, &[rec(i)]).unwrap();
            }
        }
        let seg = dir.path().join("t/0/00000000000000000000.log");
        let mut bytes = fs::read(&seg).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        fs::write(&seg, bytes).unwrap();
        match LogStore::open(dir.path(), FlushPolicy::Always) {
            Err(StorageError::Corrupt { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("corruption went unnoticed"),
        }
    }
}
