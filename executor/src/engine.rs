//! The engine: storage handles, topics, INSERT, FLUSH, and the queries it
//! runs. A persistent query's task is `driver`; what each of its epochs
//! commits, and how it resumes, is `checkpoint`; how much of its inputs an
//! epoch reads is `epoch`. Push queries are `push`, pull queries `pull`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use brook_planner::catalog::{SourceDef, SourceKind};
use brook_planner::plan::{InsertRow, StreamPlan};
use brook_storage::{
    CatalogStore, CleanupPolicy, DirLock, FjallStateStore, FlushPolicy, LogConfig, LogStore,
    Record, RecoveryAction, SledStateStore, StateStore, StorageError, StoredRecord, TopicConfig,
    WriteBatch,
};
use datafusion::common::ScalarValue;
use tokio::sync::watch;

use crate::codec::encode_rows;
use crate::error::{ExecError, Result};
use crate::processing_log::{self, ProcessingError};

mod checkpoint;
mod driver;
mod epoch;
mod pull;
mod push;

use driver::{Progress, RunningQuery};
use epoch::input_topics;
pub use epoch::EpochBounds;
pub use push::PushStream;

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
}
