//! Offline repair of a damaged catalog, for `brook catalog list` and
//! `brook catalog truncate`. Brook refuses to start when a catalog record
//! cannot be replayed; the operator lists the records, then keeps those
//! before the damaged one. The old catalog topic is copied aside first, and
//! the data directory's lock keeps a running server out.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use brook_storage::{
    CatalogEntry, CatalogStore, DirLock, LogConfig, LogStore, StorageError, CATALOG_TOPIC,
};

use crate::error::Result;
use crate::session::CatalogCommand;

/// One record of the catalog, as `brook catalog list` shows it.
#[derive(Debug, Clone)]
pub struct CatalogRecord {
    /// Its offset in the catalog topic.
    pub offset: u64,
    /// Its command number, when the record has one.
    pub seq: Option<u64>,
    /// The statement it replays, or what is wrong with it.
    pub statement: std::result::Result<String, String>,
}

fn open_log(data_dir: &Path) -> Result<(DirLock, Arc<LogStore>)> {
    if !data_dir.join("log").is_dir() {
        return Err(StorageError::Metadata {
            path: data_dir.into(),
            reason: "not a Brook data directory (it has no log/)".into(),
        }
        .into());
    }
    let lock = DirLock::acquire(data_dir)?;
    let log = LogStore::open(data_dir.join("log"), LogConfig::default())?;
    Ok((lock, Arc::new(log)))
}

/// Every record of the catalog of the (stopped) Brook in `data_dir`.
pub fn catalog_records(data_dir: &Path) -> Result<Vec<CatalogRecord>> {
    let (_lock, log) = open_log(data_dir)?;
    let store = CatalogStore::open(log, None)?;
    Ok(store
        .records()?
        .into_iter()
        .map(|(offset, entry)| {
            let seq = entry.as_ref().ok().map(|e| e.seq);
            let statement = entry.and_then(|e| statement_of(&e.command));
            CatalogRecord {
                offset,
                seq,
                statement,
            }
        })
        .collect())
}

/// The statement text of a catalog command.
fn statement_of(command: &[u8]) -> std::result::Result<String, String> {
    let cmd: CatalogCommand =
        serde_json::from_slice(command).map_err(|e| format!("not a catalog command: {e}"))?;
    Ok(match cmd.dropped {
        Some(why) => format!("-- {why}"),
        None => cmd.sql,
    })
}

/// Keeps the catalog's records before offset `at` and drops the rest, after
/// copying the catalog topic to `catalog-backup-<ms>/` in the data
/// directory. The dropped commands leave a marker holding the highest
/// command number seen, so that no later command (nor its query id) reuses
/// one of theirs. Returns the backup's path and how many commands were kept.
/// Fails, changing nothing, when a record before `at` is damaged itself.
pub fn truncate_catalog(data_dir: &Path, at: u64) -> Result<(PathBuf, usize)> {
    let (_lock, log) = open_log(data_dir)?;
    let store = CatalogStore::open(Arc::clone(&log), None)?;
    let mut keep: Vec<CatalogEntry> = Vec::new();
    let mut max_seq = 0;
    let mut dropped = 0;
    for (offset, entry) in store.records()? {
        if offset >= at {
            max_seq = max_seq.max(entry.map_or(0, |e| e.seq));
            dropped += 1;
            continue;
        }
        let entry = entry.map_err(|reason| StorageError::CatalogRecord { offset, reason })?;
        statement_of(&entry.command)
            .map_err(|reason| StorageError::CatalogRecord { offset, reason })?;
        max_seq = max_seq.max(entry.seq);
        keep.push(entry);
    }
    let kept = keep.len();
    if dropped > 0 {
        let marker = CatalogCommand::dropped(format!(
            "{dropped} record(s) from offset {at} on dropped by `brook catalog truncate`"
        ));
        keep.push(CatalogEntry {
            offset: at,
            seq: max_seq.max(keep.last().map_or(0, |e| e.seq)) + 1,
            command: serde_json::to_vec(&marker)
                .map_err(|e| brook_planner::PlanError::Internal(e.to_string()))?,
        });
    }
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let backup = data_dir.join(format!("catalog-backup-{ms}"));
    copy_dir(&data_dir.join("log").join(CATALOG_TOPIC), &backup)?;
    drop(store);
    CatalogStore::replace(log, &keep)?;
    Ok((backup, kept))
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| StorageError::Io {
            action,
            path,
            source,
        }
    };
    std::fs::create_dir_all(to).map_err(io("create directory", to))?;
    for entry in std::fs::read_dir(from).map_err(io("read directory", from))? {
        let entry = entry.map_err(io("read directory", from))?;
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).map_err(io("copy", &entry.path()))?;
        }
    }
    Ok(())
}
