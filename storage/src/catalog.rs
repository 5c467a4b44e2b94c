//! The catalog store: an ordered, durable command log of the DDL that
//! succeeded. The server decides what a command is; this stores bytes.

use crate::error::Result;

/// Append-only command log on a sled tree, keyed by sequence number.
pub struct CatalogStore {
    db: sled::Db,
    tree: sled::Tree,
}

impl CatalogStore {
    /// Opens the `catalog` tree of a sled database.
    pub fn open(db: &sled::Db) -> Result<CatalogStore> {
        Ok(CatalogStore {
            db: db.clone(),
            tree: db.open_tree("catalog")?,
        })
    }

    /// Every command in order, with its sequence number.
    pub fn entries(&self) -> Result<Vec<(u64, Vec<u8>)>> {
        self.tree
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let mut seq = [0u8; 8];
                seq.copy_from_slice(&k[..8.min(k.len())]);
                Ok((u64::from_be_bytes(seq), v.to_vec()))
            })
            .collect()
    }

    /// The sequence number the next command will get.
    pub fn next_seq(&self) -> Result<u64> {
        Ok(match self.tree.last()? {
            Some((k, _)) if k.len() == 8 => {
                let mut seq = [0u8; 8];
                seq.copy_from_slice(&k);
                u64::from_be_bytes(seq) + 1
            }
            _ => 1,
        })
    }

    /// Appends a command with sequence number `seq`, durably.
    pub fn append(&self, seq: u64, command: &[u8]) -> Result<()> {
        self.tree.insert(seq.to_be_bytes(), command)?;
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_replay_in_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = crate::SledStateStore::open_db(dir.path()).unwrap();
            let c = CatalogStore::open(&db).unwrap();
            assert_eq!(c.next_seq().unwrap(), 1);
            c.append(1, b"one").unwrap();
            c.append(2, b"two").unwrap();
        }
        let db = crate::SledStateStore::open_db(dir.path()).unwrap();
        let c = CatalogStore::open(&db).unwrap();
        assert_eq!(
            c.entries().unwrap(),
            vec![(1, b"one".to_vec()), (2, b"two".to_vec())]
        );
        assert_eq!(c.next_seq().unwrap(), 3);
    }
}
