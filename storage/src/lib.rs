//! Brook's storage layer: bytes in, bytes out.
//!
//! Everything Brook keeps on disk lives behind this crate, which knows nothing
//! of SQL, Arrow or plans.
//!
//! - [`LogStore`] is the source of truth: named topics, each with N
//!   partitions, each an append-only sequence of [`Record`]s kept in segment
//!   files. Record batches are framed with their length and a CRC32C, and an
//!   append returns only once its batch is durable (`fsync`). On open, a torn
//!   tail in the active segment is cut back to the last valid batch and
//!   reported; damage in an older segment is an error, never dropped silently.
//! - [`StateStore`] is an ordered key-value store for derived data (query
//!   state, source offsets, materialized rows). Its [`StateStore::commit`]
//!   applies one [`WriteBatch`] atomically and durably: the unit of an epoch.
//!   [`FjallStateStore`] (an LSM tree) backs it on disk,
//!   [`MemoryStateStore`] in memory; [`SledStateStore`] reads the sled
//!   store of earlier versions, once, to move its state over.
//! - [`CatalogStore`] is the ordered command log of DDL that succeeded,
//!   replayed at start to rebuild the catalog, in an internal topic:
//!   topics named `_brook_…` ([`is_internal_topic`]) are Brook's alone.
//! - [`DirLock`] keeps a data directory to one process.
//!
//! After recovery cut records that readers had passed,
//! [`LogStore::advance_end`] moves a partition's end past them, so that no
//! offset is used twice. `fuzz` is the cargo-fuzz harness for damaged log
//! files.
//!
//! Layers, lowest first: [`vfs`] (the file system, real or simulated) →
//! `log::record` (framing) → `log::segment` and `log::index` (segment files
//! and their sparse offset/time indexes) → [`log`] (partitions, group
//! commit, recovery, retention, compaction) → `catalog` (an internal log
//! topic) and `state` (fjall). [`mod@bench`] measures the log against the raw
//! disk.
#![warn(missing_docs)]

pub mod bench;
mod catalog;
mod error;
#[doc(hidden)]
pub mod fuzz;
mod lock;
pub mod log;
mod state;
pub mod vfs;

pub use catalog::{
    is_internal_topic, CatalogEntry, CatalogStore, CATALOG_TOPIC, INTERNAL_TOPIC_PREFIX,
};
pub use error::{Result, StorageError};
pub use lock::{DirLock, LOCK_FILE};
pub use log::{
    CleanupPolicy, FlushPolicy, LogConfig, LogStore, PartitionStats, Record, RecoveryAction,
    RecoveryReport, StoredRecord, TaggedBatch, TopicConfig,
};
pub use state::{FjallStateStore, MemoryStateStore, SledStateStore, StateStore, WriteBatch};
