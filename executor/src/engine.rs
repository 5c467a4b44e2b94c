//! The engine: storage handles, running persistent queries, push
//! subscriptions, pull queries, INSERT and FLUSH.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use brook_planner::binder::InsertRow;
use brook_planner::catalog::{SourceDef, SourceKind};
use brook_planner::plan::{PullPlan, StreamPlan};
use brook_storage::{
    CatalogStore, CleanupPolicy, DirLock, FjallStateStore, FlushPolicy, LogConfig, LogStore,
    MemoryStateStore, Record, RecoveryAction, SledStateStore, StateStore, StorageError,
    StoredRecord, TopicConfig, WriteBatch,
};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::common::tree_node::Transformed;
use datafusion::common::ScalarValue;
use datafusion::datasource::provider_as_source;
use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlan;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::codec::{encode_rows, encode_sink};
use crate::dataflow::{Dataflow, EpochOutput};
use crate::error::{json, ExecError, Result};
use crate::operator::window::Expiry;
use crate::panic_guard::guarded;
use crate::processing_log::{self, ProcessingError};
use crate::pull_scan::{from_datafusion, SourceScan};

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
fn read_epoch(
    log: &LogStore,
    bounds: EpochBounds,
    topic: &str,
    partition: u32,
    from: u64,
) -> Result<Vec<StoredRecord>> {
    Ok(log.read_bounded(topic, partition, from, bounds.records.max(1), bounds.bytes)?)
}

/// The records of one partition at offsets in `[from, to)`.
fn read_range(
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

/// Progress of a persistent query, published after each committed epoch.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// Next source offset per partition.
    offsets: Vec<u64>,
    /// Set when the query failed and stopped.
    failed: Option<String>,
    /// While rebuilding lost state: the source offsets to reach.
    rebuild_target: Option<Vec<u64>>,
    /// Records dropped as too late for their window (committed with the
    /// checkpoint).
    late_records: u64,
}

struct RunningQuery {
    /// The topics it reads; its offsets are theirs, concatenated.
    source_topics: Vec<String>,
    progress: watch::Receiver<Progress>,
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

/// What a sink holds, as counts of `(partition, hash of key and value)`:
/// during a rebuild after a torn tail, an output found here is in the sink
/// already. Order is not compared (a rebuild reads its sources in other
/// epochs, so outputs of different source partitions interleave
/// differently), and records the sink holds that no output matches (what a
/// stream emitted from source records a torn tail took) are left alone.
/// About 40 bytes per sink record, for the rebuild's duration.
#[derive(Default)]
struct SinkContents(HashMap<(u32, u64), u32>);

impl SinkContents {
    fn hash(record: &Record) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        record.key.hash(&mut h);
        record.value.hash(&mut h);
        h.finish()
    }

    fn read(log: &LogStore, topic: &str, ends: &[u64]) -> Result<SinkContents> {
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
    fn take(&mut self, partition: u32, record: &Record) -> bool {
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
enum Torn {
    /// A source partition ends below the query's committed offset.
    Source(String),
    /// A sink partition ends below what the query committed to it.
    Sink(String),
}

/// A committed epoch's checkpoint, kept under `q/<id>/meta`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Checkpoint {
    epoch: u64,
    /// Next source offset per partition.
    offsets: Vec<u64>,
    /// The epoch's sink records, as versions before sink tags kept them
    /// (written to the log after the commit): read at startup from the
    /// newest kept outbox and written if the log lacks them. Never stored
    /// now.
    #[serde(default, skip_serializing)]
    outbox: Vec<OutboxPart>,
    /// Set while the query rebuilds lost state from the log.
    #[serde(default)]
    rebuilding: bool,
    /// While rebuilding: how many more records per sink partition are in
    /// the sink already (written before the state was lost, or deleted by
    /// retention since) and are not written again.
    #[serde(default)]
    skip: Vec<u64>,
    /// While rebuilding after a torn tail: where each sink partition ended
    /// when the rebuild began. An output equal (key and value) to one of
    /// the sink's records before that end is there already and is not
    /// written again (each sink record stands for one output); see
    /// `SinkContents`.
    #[serde(default)]
    sink_end: Vec<u64>,
    /// Where each sink partition ended once this epoch's output was
    /// appended: a sink found shorter at startup lost records the query
    /// committed; tagged output past it is an epoch not committed (see
    /// [`SinkTag`]).
    #[serde(default)]
    sink_ends: Vec<u64>,
    /// Records dropped as too late for their window, in all epochs so far.
    #[serde(default)]
    late_records: u64,
    /// While rebuilding a table: its outputs are not written but kept per
    /// key (under `q/<id>/r/`), and once caught up the sink gets what makes
    /// its last record per key say what the rebuilt table says (see
    /// [`Engine::reconcile`]).
    #[serde(default)]
    reconcile: bool,
}

/// An epoch's outbox as versions before the sink tag kept it, under
/// `q/<id>/o/<epoch>` (big-endian): the newest is read once at startup, so
/// that records committed but not yet written by such a version are
/// written, and then all are deleted.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeptEpoch {
    outbox: Vec<OutboxPart>,
}

fn kept_prefix(id: &str) -> Vec<u8> {
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
struct SinkTag {
    query: String,
    epoch: u64,
    input_ends: Vec<u64>,
}

/// The first byte of an encoded [`SinkTag`].
const SINK_TAG_VERSION: u8 = 1;

impl SinkTag {
    /// `[version u8][epoch u64][n u32][n × u64][query: UTF-8]`, little-endian.
    fn encode(&self) -> Vec<u8> {
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
struct PendingEpoch {
    epoch: u64,
    /// Where each input partition's share of the epoch ended.
    input_ends: Vec<u64>,
    /// How many of its outputs each sink partition holds already: the
    /// first that many the epoch makes again there are not written.
    written: Vec<u64>,
}

/// Where a reconciling rebuild keeps a table's last output for a sink key.
fn reconcile_prefix(id: &str) -> Vec<u8> {
    [query_prefix(id), b"r/".to_vec()].concat()
}

fn reconcile_key(id: &str, partition: u32, key: Option<&[u8]>) -> Vec<u8> {
    [
        reconcile_prefix(id),
        partition.to_be_bytes().to_vec(),
        key.unwrap_or_default().to_vec(),
    ]
    .concat()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OutboxPart {
    partition: u32,
    base: u64,
    records: Vec<OutboxRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OutboxRecord {
    timestamp: i64,
    #[serde(with = "opt_bytes")]
    key: Option<Vec<u8>>,
    #[serde(with = "opt_bytes")]
    value: Option<Vec<u8>>,
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

/// Rows streamed to a push-query client.
pub struct PushStream {
    /// Schema of the rows.
    pub schema: SchemaRef,
    /// Rows as they are produced; ends at LIMIT or on error.
    pub rows: mpsc::Receiver<Result<Vec<ScalarValue>>>,
}

/// How an engine keeps its data.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// The log store's settings (`log.flush`, segment sizes).
    pub log: LogConfig,
    /// Whether state commits are flushed to disk (off only for tests that
    /// throw their data away).
    pub durable_state: bool,
    /// How often retention and compaction run, in milliseconds (0: never).
    pub maintenance_ms: u64,
    /// Persistent queries encode their output but do not append it to
    /// their sink topics (a table's rows are still materialized): for
    /// benchmarks that measure the engine alone, as peers measure with a
    /// discarding sink. Never set in a server.
    pub discard_sink_output: bool,
    /// How much an epoch reads from each input partition. Smaller epochs
    /// commit more often; tests use tiny ones to cross epoch boundaries.
    pub epoch: EpochBounds,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            log: LogConfig::default(),
            durable_state: true,
            maintenance_ms: 60_000,
            discard_sink_output: false,
            epoch: EpochBounds::default(),
        }
    }
}

impl EngineConfig {
    /// Nothing fsynced: for tests that throw the data directory away.
    pub fn throwaway() -> EngineConfig {
        EngineConfig {
            log: LogConfig {
                flush: FlushPolicy::Never,
                ..LogConfig::default()
            },
            durable_state: false,
            maintenance_ms: 0,
            discard_sink_output: false,
            epoch: EpochBounds::default(),
        }
    }
}

/// Brook's engine: one per data directory.
pub struct Engine {
    /// This process's hold on the data directory, until shutdown.
    lock: Mutex<Option<DirLock>>,
    log: Arc<LogStore>,
    state: Arc<dyn StateStore>,
    catalog: CatalogStore,
    appended: watch::Sender<u64>,
    queries: Mutex<HashMap<String, RunningQuery>>,
    /// The state store was lost (unopenable or deleted) and is rebuilt
    /// from the log by the queries as they start.
    state_lost: bool,
    /// Set by [`Engine::finish_startup`]: queries started later are new,
    /// not resumed, and never rebuild.
    startup_done: std::sync::atomic::AtomicBool,
    /// Each topic's partition ends as recovery left them, before any query
    /// reconciled a torn tail: what queries resumed at startup compare
    /// their committed offsets with (the first one moves the ends on).
    opened_ends: HashMap<String, Vec<u64>>,
    config: EngineConfig,
}

/// Key marking a state store that has been initialized by an engine.
const INITIALIZED_KEY: &[u8] = b"engine/initialized";

/// Moves a store that cannot be opened out of the way, to
/// `<name>.unreadable-<ms>`, so that it is rebuilt from the log.
fn move_aside(data_dir: &Path, path: &Path, name: &str, error: &StorageError) -> Result<()> {
    let aside = data_dir.join(format!("{name}.unreadable-{}", now_ms()));
    tracing::error!(%error, path = %path.display(), moved_to = %aside.display(),
        "state store cannot be opened; moving it aside and rebuilding it from the log");
    std::fs::rename(path, &aside).map_err(|source| StorageError::Io {
        action: "move aside",
        path: path.into(),
        source,
    })?;
    Ok(())
}

/// Runs blocking I/O (appends that fsync) or CPU-bound work (parsing,
/// planning) without stalling the other tasks of a multi-threaded runtime:
/// the worker hands its other tasks on first. On a current-thread runtime,
/// or outside one, in place.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn query_prefix(id: &str) -> Vec<u8> {
    format!("q/{id}/").into_bytes()
}

/// Materialized rows of a table; the name is length-prefixed so that no
/// table's prefix is a prefix of another's (quoted names may contain `/`).
fn mv_prefix(table: &str) -> Vec<u8> {
    format!("mv/{}:{table}/", table.len()).into_bytes()
}

/// The expiry index of a windowed table's materialized rows (see
/// `pipeline::Expiry`): rows of windows past the retention leave, as
/// ksqlDB's window stores drop them, so pull queries no longer see them.
fn mv_expiry_prefix(table: &str) -> Vec<u8> {
    format!("mvx/{}:{table}/", table.len()).into_bytes()
}

impl Engine {
    /// Opens the engine's storage under `data_dir` (`log/` and `state/`).
    pub fn open(data_dir: &Path) -> Result<Arc<Engine>> {
        Self::open_with(data_dir, EngineConfig::default())
    }

    /// [`Engine::open`] with explicit settings.
    ///
    /// The log is the source of truth and must open. The state store (an
    /// LSM tree under `state/`) holds only derived data: if it cannot be
    /// opened it is moved aside to `state.unreadable-<ms>` and rebuilt from
    /// the log, and tables say "not ready" to pull queries until their query
    /// caught up. A sled store of an earlier version (`meta/`) is moved over
    /// once and removed.
    pub fn open_with(data_dir: &Path, config: EngineConfig) -> Result<Arc<Engine>> {
        std::fs::create_dir_all(data_dir).map_err(|source| StorageError::Io {
            action: "create directory",
            path: data_dir.into(),
            source,
        })?;
        let lock = DirLock::acquire(data_dir)?;
        let log = Arc::new(LogStore::open(data_dir.join("log"), config.log)?);
        for r in log.recovery_reports() {
            match &r.action {
                RecoveryAction::TailCut {
                    position,
                    bytes_dropped,
                    reason,
                } => tracing::warn!(topic = %r.topic, partition = r.partition,
                    file = %r.file.display(), position, bytes_dropped, %reason,
                    "log tail recovered"),
                RecoveryAction::IndexRebuilt => tracing::info!(topic = %r.topic,
                    partition = r.partition, file = %r.file.display(), "segment index rebuilt"),
                RecoveryAction::EndAdvanced { .. } => {}
            }
        }
        // Versions before the LSM state store kept the catalog and the state
        // in sled under `meta/`: both are moved over once, then it goes.
        let legacy_path = data_dir.join("meta");
        let legacy = if legacy_path.is_dir() {
            match SledStateStore::open_db(&legacy_path) {
                Ok(db) => Some(db),
                // In use (by an engine of this process not dropped yet): not damage.
                Err(e @ StorageError::Locked(_)) => return Err(e.into()),
                Err(e) => {
                    move_aside(data_dir, &legacy_path, "meta", &e)?;
                    None
                }
            }
        } else {
            None
        };
        let catalog = CatalogStore::open(Arc::clone(&log), legacy.as_ref())?;
        let state_path = data_dir.join("state");
        let store = match FjallStateStore::open(&state_path, config.durable_state) {
            Ok(store) => store,
            Err(e @ StorageError::Locked(_)) => return Err(e.into()),
            Err(e) => {
                move_aside(data_dir, &state_path, "state", &e)?;
                FjallStateStore::open(&state_path, config.durable_state)?
            }
        };
        if let Some(db) = legacy {
            if store.get(INITIALIZED_KEY)?.is_none() {
                if let Err(e) = store.copy_from_sled(&db, INITIALIZED_KEY) {
                    // Unreadable: start empty, and the state is rebuilt from
                    // the log (no marker) like any lost state.
                    tracing::error!(error = %e, path = %legacy_path.display(),
                        "state of an earlier version cannot be read; rebuilding it from the log");
                    store.delete_prefix(b"")?;
                }
            }
            drop(db);
            // The catalog copied from it is durable before it goes.
            log.sync(brook_storage::CATALOG_TOPIC)?;
            std::fs::remove_dir_all(&legacy_path).map_err(|source| StorageError::Io {
                action: "remove",
                path: legacy_path.clone(),
                source,
            })?;
            tracing::info!(path = %legacy_path.display(),
                "state store of an earlier version moved to the LSM store");
        }
        let initialized = store.get(INITIALIZED_KEY)?.is_some();
        let state_lost = !initialized && !catalog.is_empty()?;
        if state_lost {
            tracing::warn!(
                "state store is empty but the catalog is not: rebuilding state from the log"
            );
        }
        if !initialized && !state_lost {
            // (When state was lost, the marker is written only once every
            // resumed query has a rebuilding checkpoint: see finish_startup.)
            let mut b = WriteBatch::default();
            b.put(INITIALIZED_KEY.to_vec(), b"1".to_vec());
            store.commit(b)?;
        }
        let state: Arc<dyn StateStore> = Arc::new(store);
        let (appended, _) = watch::channel(0);
        let mut opened_ends = HashMap::new();
        for (topic, _) in log.topics() {
            opened_ends.insert(topic.clone(), log.end_offsets(&topic)?);
        }
        let engine = Arc::new(Engine {
            lock: Mutex::new(Some(lock)),
            log,
            state,
            catalog,
            appended,
            queries: Mutex::new(HashMap::new()),
            state_lost,
            startup_done: std::sync::atomic::AtomicBool::new(false),
            opened_ends,
            config,
        });
        if config.maintenance_ms > 0 {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let weak = Arc::downgrade(&engine);
                handle.spawn(async move {
                    let period = std::time::Duration::from_millis(config.maintenance_ms);
                    loop {
                        tokio::time::sleep(period).await;
                        let Some(engine) = weak.upgrade() else { return };
                        let log = Arc::clone(&engine.log);
                        drop(engine);
                        match tokio::task::spawn_blocking(move || log.maintain(now_ms())).await {
                            Ok(Err(e)) => tracing::error!(error = %e, "log maintenance failed"),
                            Ok(Ok(n)) if n > 0 => tracing::info!(segments = n, "log maintenance"),
                            _ => {}
                        }
                    }
                });
            }
        }
        Ok(engine)
    }

    /// Says that every persistent query of the catalog has been started:
    /// queries started from now on are new. After a state loss, this is when
    /// the rebuild is recorded as under way (each resumed query has a
    /// rebuilding checkpoint by then), so a crash before it rebuilds again.
    pub fn finish_startup(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        if self.state_lost && !self.startup_done.load(Ordering::SeqCst) {
            let mut b = WriteBatch::default();
            b.put(INITIALIZED_KEY.to_vec(), b"1".to_vec());
            self.state.commit(b)?;
        }
        self.startup_done.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Whether the table written by query `query_id` is still rebuilding
    /// its state from the log; `Some((done, total))` records if so.
    pub fn rebuild_progress(&self, query_id: &str) -> Option<(u64, u64)> {
        let queries = self.queries.lock().unwrap_or_else(|e| e.into_inner());
        let q = queries.get(query_id)?;
        let p = q.progress.borrow();
        let target = p.rebuild_target.as_ref()?;
        let done: u64 = p
            .offsets
            .iter()
            .zip(target)
            .map(|(a, b)| (*a).min(*b))
            .sum();
        Some((done, target.iter().sum()))
    }

    /// Query `query_id`'s progress: the source records it has consumed
    /// (committed) over all its input partitions, and the records they
    /// hold; `None` if it is not running.
    pub fn query_progress(&self, query_id: &str) -> Result<Option<(u64, u64)>> {
        let (topics, consumed) = {
            let queries = self.queries.lock().unwrap_or_else(|e| e.into_inner());
            let Some(q) = queries.get(query_id) else {
                return Ok(None);
            };
            let consumed: u64 = q.progress.borrow().offsets.iter().sum();
            (q.source_topics.clone(), consumed)
        };
        let total = self.end_offsets_of(&topics)?.iter().sum();
        Ok(Some((consumed, total)))
    }

    /// The catalog command log.
    pub fn catalog_store(&self) -> &CatalogStore {
        &self.catalog
    }

    /// The log store.
    pub fn log(&self) -> &LogStore {
        &self.log
    }

    /// Changes whenever records are appended through the engine.
    pub(crate) fn subscribe_appended(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    fn notify_appended(&self) {
        self.appended.send_modify(|v| *v += 1);
    }

    /// Creates the topic of a source unless it exists. Returns whether it
    /// was created.
    pub fn ensure_topic(&self, def: &SourceDef) -> Result<bool> {
        if self.log.topic_exists(&def.topic) {
            return Ok(false);
        }
        let mut config = TopicConfig::new(def.partitions);
        config.retention_ms = def.retention_ms;
        config.retention_bytes = def.retention_bytes;
        if def.kind == SourceKind::Table {
            // A table's topic is its changelog: only the latest value per key matters.
            config.cleanup_policy = CleanupPolicy::Compact;
        }
        self.log.create_topic_with(&def.topic, config)?;
        Ok(true)
    }

    /// Partitions of an existing topic, if it exists.
    pub fn topic_partitions(&self, topic: &str) -> Option<u32> {
        self.log.partitions(topic).ok()
    }

    /// Deletes a topic.
    pub fn delete_topic(&self, topic: &str) -> Result<()> {
        match self.log.delete_topic(topic) {
            Ok(()) | Err(StorageError::TopicNotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Appends raw records to a topic partition (creating the topic with
    /// one partition if it does not exist), as a producer would.
    pub fn produce(&self, topic: &str, partition: u32, records: &[Record]) -> Result<u64> {
        if !self.log.topic_exists(topic) {
            self.log.create_topic(topic, 1)?;
        }
        let offset = self.log.append(topic, partition, records)?;
        self.notify_appended();
        Ok(offset)
    }

    /// Appends failures of query `logger` to the processing log. Failing to
    /// log is itself only logged: it must not stop the query.
    pub fn log_processing_errors(&self, logger: &str, problems: &[ProcessingError]) {
        if problems.is_empty() {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let records: Vec<Record> = problems.iter().map(|p| p.to_record(logger, now)).collect();
        if let Err(e) = self.produce(processing_log::TOPIC, 0, &records) {
            tracing::warn!(query = logger, error = %e, "could not write the processing log");
        }
    }

    /// Every record of a topic, partition by partition, in offset order.
    pub fn read_topic(&self, topic: &str) -> Result<Vec<StoredRecord>> {
        let mut out = Vec::new();
        for p in 0..self.log.partitions(topic)? {
            let mut from = 0;
            loop {
                let records = self.log.read(topic, p, from, 10_000)?;
                let Some(last) = records.last() else { break };
                from = last.offset + 1;
                out.extend(records);
            }
        }
        Ok(out)
    }

    /// Appends rows to a source's topic; returns once they are durable.
    pub fn insert(&self, def: &SourceDef, rows: &[InsertRow]) -> Result<usize> {
        let rows: Vec<(Option<i64>, Vec<ScalarValue>)> =
            rows.iter().map(|r| (r.rowtime, r.values.clone())).collect();
        let encoded = encode_rows(def, &rows, now_ms())?;
        let mut by_partition: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
        for (p, r) in encoded {
            by_partition.entry(p).or_default().push(r);
        }
        for (p, records) in by_partition {
            self.log.append(&def.topic, p, &records)?;
        }
        self.notify_appended();
        Ok(rows.len())
    }

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

    /// Stops a persistent query (if it runs) and deletes its state, which a
    /// crash may have left behind for a query that no longer runs.
    pub async fn terminate_query(&self, id: &str) -> Result<()> {
        self.pause_query(id).await;
        self.state.delete_prefix(&query_prefix(id))?;
        Ok(())
    }

    /// Stops a persistent query and keeps its state and checkpoint, so
    /// that [`Engine::start_query`] continues where it stopped (`PAUSE`).
    pub async fn pause_query(&self, id: &str) {
        let q = self
            .queries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        if let Some(q) = q {
            let _ = q.stop.send(true);
            let _ = q.handle.await;
        }
    }

    /// Whether a persistent query is running.
    pub fn is_running(&self, id: &str) -> bool {
        self.queries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id)
    }

    /// Deletes the materialized rows of a table.
    pub fn drop_materialization(&self, table: &str) -> Result<()> {
        self.state.delete_prefix(&mv_expiry_prefix(table))?;
        Ok(self.state.delete_prefix(&mv_prefix(table))?)
    }

    /// How many records query `query_id` has dropped as too late for their
    /// window.
    pub fn late_records(&self, query_id: &str) -> Option<u64> {
        let queries = self.queries.lock().unwrap_or_else(|e| e.into_inner());
        let late = queries.get(query_id)?.progress.borrow().late_records;
        Some(late)
    }

    /// Ids of running persistent queries and whether each has failed.
    pub fn query_status(&self) -> BTreeMap<String, Option<String>> {
        let queries = self.queries.lock().unwrap_or_else(|e| e.into_inner());
        queries
            .iter()
            .map(|(id, q)| (id.clone(), q.progress.borrow().failed.clone()))
            .collect()
    }

    /// Stops every query (their state stays for the next start).
    pub async fn shutdown(&self) {
        let queries: Vec<RunningQuery> = {
            let mut q = self.queries.lock().unwrap_or_else(|e| e.into_inner());
            q.drain().map(|(_, v)| v).collect()
        };
        for q in &queries {
            let _ = q.stop.send(true);
        }
        for q in queries {
            let _ = q.handle.await;
        }
        // Commits need not have been durable (`durable_state` off): a clean
        // stop keeps them all, before another engine may open the state.
        if let Err(e) = blocking(|| self.state.flush()) {
            tracing::error!(error = %e, "flushing the state store at shutdown failed");
        }
        // Nothing writes any more: another engine may open the directory.
        self.lock.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Waits until every persistent query has processed everything appended
    /// before the call, including what queries upstream of it produce.
    pub async fn flush(&self) -> Result<()> {
        loop {
            let version = *self.appended.borrow();
            let waits: Vec<(String, watch::Receiver<Progress>, Vec<u64>)> = {
                let queries = self.queries.lock().unwrap_or_else(|e| e.into_inner());
                let mut w = Vec::with_capacity(queries.len());
                for (id, q) in queries.iter() {
                    let target = self.end_offsets_of(&q.source_topics)?;
                    w.push((id.clone(), q.progress.clone(), target));
                }
                w
            };
            for (id, mut progress, target) in waits {
                loop {
                    {
                        let p = progress.borrow_and_update();
                        if let Some(reason) = &p.failed {
                            return Err(ExecError::QueryFailed {
                                id,
                                reason: reason.clone(),
                            });
                        }
                        if p.offsets.len() == target.len()
                            && p.offsets.iter().zip(&target).all(|(a, b)| a >= b)
                        {
                            break;
                        }
                    }
                    if progress.changed().await.is_err() {
                        // The task is gone: terminated (no longer listed) or died.
                        let listed = self
                            .queries
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .contains_key(&id);
                        if listed {
                            return Err(ExecError::QueryFailed {
                                id,
                                reason: "the query task stopped unexpectedly".into(),
                            });
                        }
                        break;
                    }
                }
            }
            if *self.appended.borrow() == version {
                return Ok(());
            }
        }
    }

    /// (input, topic, partition) for each entry of a query's offsets.
    fn input_parts(&self, plan: &StreamPlan) -> Result<Vec<(usize, String, u32)>> {
        let mut parts = Vec::new();
        for (i, t) in input_topics(plan).into_iter().enumerate() {
            for p in 0..self.log.partitions(&t)? {
                parts.push((i, t.clone(), p));
            }
        }
        Ok(parts)
    }

    /// The end offsets of several topics, concatenated.
    fn end_offsets_of(&self, topics: &[String]) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for t in topics {
            out.extend(self.log.end_offsets(t)?);
        }
        Ok(out)
    }

    /// How query state committed at `cp` no longer matches the log, if it
    /// does not: recovery cut a torn tail below what the query committed,
    /// in a source (the query has counted records that are gone, and new
    /// records would come at offsets it has passed) or in its sink (output
    /// it committed is gone).
    fn torn_log(
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
    fn advance_sources(&self, offsets: &[u64], source_topics: &[String]) -> Result<()> {
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
    fn pending_epochs(
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
    fn rebuild_from_log(
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
    fn load_checkpoint(&self, id: &str, sink: &SourceDef, partitions: u32) -> Result<Checkpoint> {
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

    /// Starts a push query: a transient dataflow streaming rows until LIMIT
    /// or until the receiver is dropped.
    pub fn push(self: &Arc<Self>, plan: StreamPlan, from_beginning: bool) -> Result<PushStream> {
        let parts = self.input_parts(&plan)?;
        let mut offsets: Vec<u64> = if from_beginning {
            vec![0; parts.len()]
        } else {
            self.end_offsets_of(&input_topics(&plan))?
        };
        let (tx, rx) = mpsc::channel(1024);
        let engine = Arc::clone(self);
        let out_schema = Arc::clone(&plan.output_schema);
        tokio::spawn(async move {
            let state = MemoryStateStore::default();
            let run = async {
                // The dataflow of a persistent query (a table's upserts
                // become changes, the key's previous row retracted), its
                // state in memory.
                let mut dataflow = Dataflow::new(&plan, b"", &state)?;
                let mut appended = engine.appended.subscribe();
                let mut sent = 0usize;
                if plan.limit == Some(0) {
                    return Ok(());
                }
                loop {
                    appended.borrow_and_update();
                    let mut reads = Vec::with_capacity(parts.len());
                    for (g, (_, topic, p)) in parts.iter().enumerate() {
                        reads.push(read_epoch(
                            &engine.log,
                            engine.config.epoch,
                            topic,
                            *p,
                            offsets[g],
                        )?);
                    }
                    let by_input = take_epoch(
                        &parts,
                        reads,
                        &mut offsets,
                        plan.join.is_some(),
                        engine.config.epoch,
                    );
                    if by_input.iter().all(Vec::is_empty) {
                        tokio::select! {
                            r = appended.changed() => if r.is_err() { return Ok(()) },
                            _ = tx.closed() => return Ok(()),
                        }
                        continue;
                    }
                    let EpochOutput {
                        changes: out,
                        problems,
                        ..
                    } = dataflow.process(&by_input, &state)?;
                    engine.log_processing_errors("transient", &problems);
                    let mut wb = WriteBatch::default();
                    dataflow.checkpoint(&mut wb, &state)?;
                    state.commit(wb)?;
                    for i in 0..out.len() {
                        if out.weights[i] <= 0 || out.null_values[i] {
                            continue;
                        }
                        if tx.send(Ok(out.row(i)?)).await.is_err() {
                            return Ok(());
                        }
                        sent += 1;
                        if plan.limit.is_some_and(|l| sent >= l) {
                            return Ok(());
                        }
                    }
                }
            };
            let result: Result<()> = guarded("push query", run).await;
            if let Err(e) = result {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(PushStream {
            schema: out_schema,
            rows: rx,
        })
    }

    /// Runs a pull query over the current contents of its sources, which
    /// it reads as it goes (`pull_scan`). What its operators keep, the rows
    /// of a table no query writes, and its result are each bounded by
    /// `max_bytes`; past it, it fails with a resources-exhausted error.
    pub async fn pull(
        &self,
        plan: PullPlan,
        max_bytes: usize,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let mut tables: HashMap<String, Arc<StreamingTable>> = HashMap::new();
        for def in &plan.sources {
            if let Some((done, total)) = def
                .query_id
                .as_deref()
                .filter(|_| def.kind == SourceKind::Table)
                .and_then(|q| self.rebuild_progress(q))
            {
                return Err(ExecError::NotReady {
                    table: def.name.clone(),
                    done,
                    total,
                });
            }
            let scan = SourceScan::new(
                Arc::clone(&self.log),
                Arc::clone(&self.state),
                def,
                mv_prefix(&def.name),
                crate::pull_keys::lookup(&plan.plan, def),
                max_bytes,
            )?;
            tables.insert(
                def.name.clone(),
                Arc::new(StreamingTable::try_new(
                    def.batch_schema(),
                    vec![Arc::new(scan)],
                )?),
            );
        }
        let plan = plan
            .plan
            .transform_up_with_subqueries(|node| {
                if let LogicalPlan::TableScan(mut scan) = node {
                    if let Some(t) = tables.get(scan.table_name.table()) {
                        scan.source = provider_as_source(Arc::clone(t) as _);
                        return Ok(Transformed::yes(LogicalPlan::TableScan(scan)));
                    }
                    return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
                }
                Ok(Transformed::no(node))
            })?
            .data;
        // One partition: the scans read in place, on the pull query's own
        // thread. What operators keep (sorts, joins, aggregates) counts
        // against `max_bytes`, with no spilling to disk.
        let mut cfg = SessionConfig::new()
            .with_target_partitions(1)
            .with_batch_size(crate::pull_scan::SCAN_BATCH_ROWS);
        cfg.options_mut().sql_parser.enable_ident_normalization = false;
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(max_bytes, 1.0)
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()?;
        // The plan holds its functions already: no registry is built.
        let state = datafusion::execution::session_state::SessionStateBuilder::new()
            .with_config(cfg)
            .with_runtime_env(runtime)
            .build();
        let ctx = SessionContext::new_with_state(state);
        let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
        let mut stream = ctx
            .execute_logical_plan(plan)
            .await?
            .execute_stream()
            .await
            .map_err(from_datafusion)?;
        let mut batches = Vec::new();
        let mut bytes = 0usize;
        while let Some(batch) = futures::StreamExt::next(&mut stream).await {
            let batch = batch.map_err(from_datafusion)?;
            bytes = bytes.saturating_add(slice_bytes(&batch));
            if bytes > max_bytes {
                return Err(ExecError::DataFusion(
                    datafusion::error::DataFusionError::ResourcesExhausted(format!(
                        "pull query result is larger than {max_bytes} bytes: add a LIMIT or a narrower WHERE, use a push query, or raise --max-pull-bytes"
                    )),
                ));
            }
            batches.push(batch);
        }
        Ok((schema, batches))
    }
}

/// The bytes of Arrow data a batch holds (of its slice, not of buffers it
/// shares with others).
fn slice_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
        .sum()
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

/// One epoch's records, per input, from what was read per partition (a
/// join's cut at a common time), moving `offsets` past them.
fn take_epoch(
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
fn input_topics(plan: &StreamPlan) -> Vec<String> {
    match &plan.join {
        Some(j) => j.inputs().into_iter().map(|s| s.topic.clone()).collect(),
        None => vec![plan.source.topic.clone()],
    }
}

#[cfg(test)]
mod tests {
    use super::{append_chunks, held_prefix, Record, APPEND_BYTES};

    fn record(bytes: usize) -> Record {
        Record {
            timestamp: 0,
            key: None,
            value: Some(vec![0; bytes]),
            headers: vec![],
        }
    }

    #[test]
    fn sink_tags_round_trip_and_foreign_or_damaged_tags_are_not_ours() {
        use super::SinkTag;
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
        use super::OutboxRecord;
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
