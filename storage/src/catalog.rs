//! The catalog store: an ordered, durable command log of the DDL that
//! succeeded, kept in the internal log topic `_brook_catalog` (so that it
//! shares the log's durability and recovery, and survives the loss of the
//! state store). The server decides what a command is; this stores bytes.

use std::sync::Arc;

use crate::error::{Result, StorageError};
use crate::log::{LogStore, Record};

/// The internal topic holding the catalog.
pub const CATALOG_TOPIC: &str = "_brook_catalog";

/// Topics whose name starts with this, in any case, are Brook's own: no
/// statement (and no Kafka client) may declare, write, alter or delete them.
pub const INTERNAL_TOPIC_PREFIX: &str = "_brook_";

/// Whether `topic` is one of Brook's internal topics ([`INTERNAL_TOPIC_PREFIX`]).
pub fn is_internal_topic(topic: &str) -> bool {
    topic
        .get(..INTERNAL_TOPIC_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(INTERNAL_TOPIC_PREFIX))
}

/// One command of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    /// Its offset in the catalog topic.
    pub offset: u64,
    /// Its sequence number (the server's command number).
    pub seq: u64,
    /// The command's bytes, as the server wrote them.
    pub command: Vec<u8>,
}

/// Append-only command log, keyed by sequence number.
pub struct CatalogStore {
    log: Arc<LogStore>,
}

impl CatalogStore {
    /// Opens the catalog in `log`, creating its topic if needed. Commands a
    /// previous version kept in the sled tree `catalog` of `legacy` are
    /// copied over once.
    pub fn open(log: Arc<LogStore>, legacy: Option<&sled::Db>) -> Result<CatalogStore> {
        if !log.topic_exists(CATALOG_TOPIC) {
            log.create_topic(CATALOG_TOPIC, 1)?;
        }
        let store = CatalogStore { log };
        if let Some(db) = legacy {
            if store.is_empty()? && db.tree_names().iter().any(|n| &n[..] == b"catalog") {
                for (i, kv) in db.open_tree("catalog")?.iter().enumerate() {
                    let (k, v) = kv?;
                    let seq =
                        seq_of(Some(&k[..])).map_err(|reason| StorageError::CatalogRecord {
                            offset: i as u64,
                            reason: format!("legacy catalog entry {i}: {reason}"),
                        })?;
                    store.append(seq, &v)?;
                }
            }
        }
        Ok(store)
    }

    /// Every record of the catalog topic in order: its offset, and the
    /// command or what is wrong with it. For tools that show or repair a
    /// damaged catalog; [`CatalogStore::entries`] is for everything else.
    pub fn records(&self) -> Result<Vec<(u64, Result<CatalogEntry, String>)>> {
        let mut out = Vec::new();
        let mut from = 0;
        loop {
            let chunk = self.log.read(CATALOG_TOPIC, 0, from, 10_000)?;
            let Some(last) = chunk.last() else { break };
            from = last.offset + 1;
            for r in chunk {
                let offset = r.offset;
                let entry = seq_of(r.record.key.as_deref()).and_then(|seq| {
                    let command = r.record.value.ok_or("it has no value")?;
                    Ok(CatalogEntry {
                        offset,
                        seq,
                        command,
                    })
                });
                out.push((offset, entry.map_err(str::to_string)));
            }
        }
        Ok(out)
    }

    /// Every command in order. A record that is not a command (its key is
    /// not a sequence number, it has no value, or the sequence goes back)
    /// is an error naming its offset: the catalog is never half-read.
    pub fn entries(&self) -> Result<Vec<CatalogEntry>> {
        let mut out: Vec<CatalogEntry> = Vec::new();
        for (offset, entry) in self.records()? {
            let entry = entry.map_err(|reason| StorageError::CatalogRecord { offset, reason })?;
            if let Some(prev) = out.last().filter(|p| p.seq >= entry.seq) {
                return Err(StorageError::CatalogRecord {
                    offset,
                    reason: format!(
                        "its sequence number {} does not follow {} (offset {})",
                        entry.seq, prev.seq, prev.offset
                    ),
                });
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// Whether no command was ever written (damaged records count as written).
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.log.end_offset(CATALOG_TOPIC, 0)? == 0)
    }

    /// The sequence number the next command will get.
    pub fn next_seq(&self) -> Result<u64> {
        Ok(self.entries()?.last().map_or(1, |e| e.seq + 1))
    }

    /// Appends a command with sequence number `seq`, durably.
    pub fn append(&self, seq: u64, command: &[u8]) -> Result<()> {
        let record = Record {
            timestamp: 0,
            key: Some(seq.to_be_bytes().to_vec()),
            value: Some(command.to_vec()),
            headers: vec![],
        };
        self.log.append(CATALOG_TOPIC, 0, &[record])?;
        Ok(())
    }

    /// Replaces the whole catalog by `entries` (kept in their order, with
    /// their sequence numbers): the repair tool's last step, once the
    /// operator has chosen what to keep and the old topic is backed up.
    pub fn replace(log: Arc<LogStore>, entries: &[CatalogEntry]) -> Result<CatalogStore> {
        if log.topic_exists(CATALOG_TOPIC) {
            log.delete_topic(CATALOG_TOPIC)?;
        }
        let store = CatalogStore::open(log, None)?;
        for e in entries {
            store.append(e.seq, &e.command)?;
        }
        Ok(store)
    }
}

/// A catalog key: the command's sequence number, 8 bytes big-endian.
fn seq_of(key: Option<&[u8]>) -> std::result::Result<u64, &'static str> {
    let key = key.ok_or("it has no key")?;
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| "its key is not an 8-byte sequence number")?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LogConfig;

    #[test]
    fn commands_replay_in_order_and_move_over_from_sled() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = crate::SledStateStore::open_db(&dir.path().join("meta")).unwrap();
            let legacy = db.open_tree("catalog").unwrap();
            legacy.insert(1u64.to_be_bytes(), b"one".to_vec()).unwrap();
            db.flush().unwrap();
        }
        {
            let log =
                Arc::new(LogStore::open(dir.path().join("log"), LogConfig::default()).unwrap());
            let db = crate::SledStateStore::open_db(&dir.path().join("meta")).unwrap();
            let c = CatalogStore::open(log, Some(&db)).unwrap();
            assert_eq!(c.next_seq().unwrap(), 2);
            c.append(2, b"two").unwrap();
        }
        let log = Arc::new(LogStore::open(dir.path().join("log"), LogConfig::default()).unwrap());
        let db = crate::SledStateStore::open_db(&dir.path().join("meta")).unwrap();
        let c = CatalogStore::open(log, Some(&db)).unwrap();
        let entries: Vec<(u64, Vec<u8>)> = c
            .entries()
            .unwrap()
            .into_iter()
            .map(|e| (e.seq, e.command))
            .collect();
        assert_eq!(entries, vec![(1, b"one".to_vec()), (2, b"two".to_vec())]);
        assert_eq!(c.next_seq().unwrap(), 3);
    }

    #[test]
    fn a_damaged_record_is_an_error_naming_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(LogStore::open(dir.path(), LogConfig::default()).unwrap());
        let c = CatalogStore::open(Arc::clone(&log), None).unwrap();
        c.append(1, b"one").unwrap();
        let bad = |key: Option<Vec<u8>>, value: Option<Vec<u8>>| Record {
            timestamp: 0,
            key,
            value,
            headers: vec![],
        };
        log.append(CATALOG_TOPIC, 0, &[bad(Some(vec![]), Some(b"x".to_vec()))])
            .unwrap();
        let err = c.entries().unwrap_err().to_string();
        assert_eq!(
            err,
            "catalog record at offset 1 is damaged: its key is not an 8-byte sequence number"
        );
        let records = c.records().unwrap();
        assert_eq!(records.len(), 2);
        assert!(records[0].1.is_ok() && records[1].1.is_err());

        // The repair keeps what the operator chose; the rest is gone.
        let kept: Vec<CatalogEntry> = records.into_iter().filter_map(|(_, e)| e.ok()).collect();
        let c = CatalogStore::replace(Arc::clone(&log), &kept).unwrap();
        assert_eq!(c.next_seq().unwrap(), 2);

        log.append(
            CATALOG_TOPIC,
            0,
            &[bad(Some(1u64.to_be_bytes().to_vec()), None)],
        )
        .unwrap();
        assert!(c.entries().unwrap_err().to_string().contains("no value"));
        let c = CatalogStore::replace(Arc::clone(&log), &kept).unwrap();
        log.append(
            CATALOG_TOPIC,
            0,
            &[bad(Some(1u64.to_be_bytes().to_vec()), Some(vec![]))],
        )
        .unwrap();
        assert!(c
            .entries()
            .unwrap_err()
            .to_string()
            .contains("does not follow"));
    }

    #[test]
    fn internal_topics_are_named_by_their_prefix_in_any_case() {
        assert!(is_internal_topic(CATALOG_TOPIC));
        assert!(is_internal_topic("_BROOK_catalog"));
        assert!(is_internal_topic("_brook_"));
        assert!(!is_internal_topic("_broo"));
        assert!(!is_internal_topic("brook_catalog"));
        assert!(!is_internal_topic("é_brook_x"));
    }
}
