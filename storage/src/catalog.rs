//! The catalog store: an ordered, durable command log of the DDL that
//! succeeded, kept in the internal log topic `_brook_catalog` (so that it
//! shares the log's durability and recovery, and survives the loss of the
//! state store). The server decides what a command is; this stores bytes.

use std::sync::Arc;

use crate::error::Result;
use crate::log::{LogStore, Record};

/// The internal topic holding the catalog.
pub const CATALOG_TOPIC: &str = "_brook_catalog";

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
            if store.entries()?.is_empty() && db.tree_names().iter().any(|n| &n[..] == b"catalog") {
                for kv in db.open_tree("catalog")?.iter() {
                    let (k, v) = kv?;
                    let mut seq = [0u8; 8];
                    seq.copy_from_slice(&k[..8.min(k.len())]);
                    store.append(u64::from_be_bytes(seq), &v)?;
                }
            }
        }
        Ok(store)
    }

    /// Every command in order, with its sequence number.
    pub fn entries(&self) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut out = Vec::new();
        let mut from = 0;
        loop {
            let chunk = self.log.read(CATALOG_TOPIC, 0, from, 10_000)?;
            let Some(last) = chunk.last() else { break };
            from = last.offset + 1;
            for r in chunk {
                let key = r.record.key.unwrap_or_default();
                let mut seq = [0u8; 8];
                seq.copy_from_slice(&key[..8.min(key.len())]);
                out.push((u64::from_be_bytes(seq), r.record.value.unwrap_or_default()));
            }
        }
        Ok(out)
    }

    /// The sequence number the next command will get.
    pub fn next_seq(&self) -> Result<u64> {
        Ok(self.entries()?.last().map_or(1, |(seq, _)| seq + 1))
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
        assert_eq!(
            c.entries().unwrap(),
            vec![(1, b"one".to_vec()), (2, b"two".to_vec())]
        );
        assert_eq!(c.next_seq().unwrap(), 3);
    }
}
