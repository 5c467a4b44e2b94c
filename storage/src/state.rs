//! The state store: an ordered key-value store for derived data, written in
//! atomic, durable batches (one per epoch).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use crate::error::{Result, StorageError};

/// Writes applied together: `None` deletes the key.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    /// Key → new value (or deletion), in the order given.
    pub writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl WriteBatch {
    /// Sets `key` to `value`.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.writes.push((key.into(), Some(value.into())));
    }
    /// Deletes `key`.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.writes.push((key.into(), None));
    }
    /// Whether nothing is written.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

/// Ordered key-value store for derived state.
pub trait StateStore: Send + Sync {
    /// Reads one key.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// All pairs whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// All pairs with `start <= key < end`, in key order.
    fn scan_range(&self, start: &[u8], end: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// At most `limit` pairs whose key starts with `prefix`, from `from`
    /// (`Unbounded`: the first), in key order: a prefix scan one page at a
    /// time, the next page from `Excluded(last key)`.
    fn scan_prefix_page(
        &self,
        prefix: &[u8],
        from: std::ops::Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Applies the batch atomically; when this returns it is durable (for
    /// persistent backends): all of it survives a crash, or none of it.
    fn commit(&self, batch: WriteBatch) -> Result<()>;
    /// Deletes every key starting with `prefix`, durably.
    fn delete_prefix(&self, prefix: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::default();
        for (k, _) in self.scan_prefix(prefix)? {
            batch.delete(k);
        }
        self.commit(batch)
    }
    /// Makes every commit so far durable (for a store whose commits are
    /// not, as with sync off): for a clean shutdown.
    fn flush(&self) -> Result<()> {
        Ok(())
    }
}

/// Where a page of a prefix scan starts: `from`, or the prefix itself.
fn page_start(prefix: &[u8], from: std::ops::Bound<&[u8]>) -> std::ops::Bound<Vec<u8>> {
    use std::ops::Bound;
    match from {
        Bound::Included(k) if k > prefix => Bound::Included(k.to_vec()),
        Bound::Excluded(k) if k >= prefix => Bound::Excluded(k.to_vec()),
        _ => Bound::Included(prefix.to_vec()),
    }
}

/// [`StateStore`] on a sled tree: where versions before
/// [`FjallStateStore`] kept their state. Brook reads it once at start, to
/// move it over ([`FjallStateStore::copy_from_sled`]); tests write one.
pub struct SledStateStore {
    db: sled::Db,
    tree: sled::Tree,
}

impl SledStateStore {
    /// Opens the `state` tree of a sled database.
    pub fn open(db: &sled::Db) -> Result<SledStateStore> {
        Ok(SledStateStore {
            db: db.clone(),
            tree: db.open_tree("state")?,
        })
    }

    /// Opens a sled database at `path`.
    ///
    /// Brook flushes explicitly at every commit, so sled's periodic flusher
    /// is off. A database closed a moment ago in this process may still hold
    /// its file lock while sled's threads wind down; opening retries that
    /// case for up to two seconds, then fails with [`StorageError::Locked`]
    /// (the database is in use, not damaged).
    pub fn open_db(path: &Path) -> Result<sled::Db> {
        let mut attempts = 0;
        loop {
            match sled::Config::new().path(path).flush_every_ms(None).open() {
                Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                    if attempts == 100 {
                        return Err(StorageError::Locked(path.into()));
                    }
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return Ok(other?),
            }
        }
    }
}

impl StateStore for SledStateStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.tree
            .scan_prefix(prefix)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    fn scan_prefix_page(
        &self,
        prefix: &[u8],
        from: std::ops::Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let start = page_start(prefix, from);
        let mut page = Vec::new();
        for kv in self
            .tree
            .range::<Vec<u8>, _>((start, std::ops::Bound::Unbounded))
        {
            let (k, v) = kv?;
            if !k.starts_with(prefix) || page.len() == limit {
                break;
            }
            page.push((k.to_vec(), v.to_vec()));
        }
        Ok(page)
    }

    fn scan_range(&self, start: &[u8], end: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if start >= end {
            return Ok(Vec::new());
        }
        self.tree
            .range(start..end)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    fn commit(&self, batch: WriteBatch) -> Result<()> {
        let mut b = sled::Batch::default();
        for (k, v) in batch.writes {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        self.tree.apply_batch(b)?;
        // sled makes writes durable only on flush.
        self.db.flush()?;
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}

/// [`StateStore`] on an LSM tree (fjall): the `state` keyspace of a fjall
/// database of its own directory. Small writes are cheap (a journal append
/// and a memtable insert), which is what per-group state needs; see
/// `docs/design/20261205_state_store_lsm.md`.
pub struct FjallStateStore {
    db: fjall::Database,
    tree: fjall::Keyspace,
    sync: bool,
}

impl FjallStateStore {
    /// Opens (or creates) the store in directory `path`. With `sync`, each
    /// commit is fsynced before it returns; without, commits are atomic but
    /// reach the disk when the OS writes them (for tests that throw the data
    /// away).
    ///
    /// A store closed a moment ago in this process may still hold its
    /// lock; opening retries that case for up to two seconds, then fails
    /// with [`StorageError::Locked`] (in use, not damaged).
    pub fn open(path: &Path, sync: bool) -> Result<FjallStateStore> {
        let mut attempts = 0;
        let db = loop {
            match fjall::Database::builder(path)
                .cache_size(STATE_CACHE_BYTES)
                .open()
            {
                Err(fjall::Error::Locked) => {
                    if attempts == 10 {
                        return Err(StorageError::Locked(path.into()));
                    }
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                other => break other?,
            }
        };
        let tree = db.keyspace("state", fjall::KeyspaceCreateOptions::default)?;
        Ok(FjallStateStore { db, tree, sync })
    }

    /// Copies every pair of the `state` tree of an earlier version's sled
    /// database, in batches, the pair of key `last` after all others, then
    /// makes it durable. A crash part way leaves a store without `last`:
    /// the caller copies again.
    pub fn copy_from_sled(&self, db: &sled::Db, last: &[u8]) -> Result<()> {
        const BATCH_BYTES: usize = 8 << 20;
        if !db.tree_names().iter().any(|n| &n[..] == b"state") {
            return Ok(());
        }
        let mut kept = None;
        let mut batch = WriteBatch::default();
        let mut bytes = 0;
        for kv in db.open_tree("state")?.iter() {
            let (k, v) = kv?;
            if &k[..] == last {
                kept = Some(v.to_vec());
                continue;
            }
            bytes += k.len() + v.len();
            batch.put(k.to_vec(), v.to_vec());
            if bytes >= BATCH_BYTES {
                self.commit(std::mem::take(&mut batch))?;
                bytes = 0;
            }
        }
        self.commit(batch)?;
        if let Some(v) = kept {
            let mut b = WriteBatch::default();
            b.put(last.to_vec(), v);
            self.commit(b)?;
        }
        self.flush()
    }

    fn pairs(
        iter: fjall::Iter,
        prefix: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for guard in iter {
            if out.len() == limit {
                break;
            }
            let (k, v) = guard.into_inner()?;
            if prefix.is_some_and(|p| !k.starts_with(p)) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }
}

/// The block cache of the state store.
const STATE_CACHE_BYTES: u64 = 64 << 20;

impl StateStore for FjallStateStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Self::pairs(self.tree.prefix(prefix), None, usize::MAX)
    }

    fn scan_prefix_page(
        &self,
        prefix: &[u8],
        from: std::ops::Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let start = page_start(prefix, from);
        let iter = self
            .tree
            .range::<Vec<u8>, _>((start, std::ops::Bound::Unbounded));
        Self::pairs(iter, Some(prefix), limit)
    }

    fn scan_range(&self, start: &[u8], end: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if start >= end {
            return Ok(Vec::new());
        }
        Self::pairs(self.tree.range(start..end), None, usize::MAX)
    }

    fn commit(&self, batch: WriteBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut b = self.db.batch();
        for (k, v) in batch.writes {
            match v {
                Some(v) => b.insert(&self.tree, k, v),
                None => b.remove(&self.tree, k),
            }
        }
        b.commit()?;
        if self.sync {
            self.db.persist(fjall::PersistMode::SyncAll)?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.db.persist(fjall::PersistMode::SyncAll)?;
        Ok(())
    }
}

/// [`StateStore`] in memory, for transient queries and tests.
#[derive(Default)]
pub struct MemoryStateStore {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl StateStore for MemoryStateStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned())
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        Ok(map
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn scan_prefix_page(
        &self,
        prefix: &[u8],
        from: std::ops::Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let start = page_start(prefix, from);
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        Ok(map
            .range::<Vec<u8>, _>((start, std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn scan_range(&self, start: &[u8], end: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if start >= end {
            return Ok(Vec::new());
        }
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        Ok(map
            .range(start.to_vec()..end.to_vec())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn commit(&self, batch: WriteBatch) -> Result<()> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        for (k, v) in batch.writes {
            match v {
                Some(v) => map.insert(k, v),
                None => map.remove(&k),
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conformance(store: &dyn StateStore) {
        let mut b = WriteBatch::default();
        b.put(b"a/1".to_vec(), b"x".to_vec());
        b.put(b"a/2".to_vec(), b"y".to_vec());
        b.put(b"b/1".to_vec(), b"z".to_vec());
        store.commit(b).unwrap();
        assert_eq!(store.get(b"a/1").unwrap(), Some(b"x".to_vec()));
        let mut b = WriteBatch::default();
        b.delete(b"a/1".to_vec());
        b.put(b"a/3".to_vec(), b"w".to_vec());
        store.commit(b).unwrap();
        let keys: Vec<_> = store
            .scan_prefix(b"a/")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![b"a/2".to_vec(), b"a/3".to_vec()]);
        // A range is start-inclusive, end-exclusive; an empty one is empty.
        let range: Vec<_> = store
            .scan_range(b"a/2", b"b/1")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(range, vec![b"a/2".to_vec(), b"a/3".to_vec()]);
        assert!(store.scan_range(b"b/", b"a/").unwrap().is_empty());
        // Pages follow one another and stay inside the prefix.
        use std::ops::Bound;
        let page = |from: Bound<&[u8]>| -> Vec<Vec<u8>> {
            store
                .scan_prefix_page(b"a/", from, 1)
                .unwrap()
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        };
        assert_eq!(page(Bound::Unbounded), vec![b"a/2".to_vec()]);
        assert_eq!(page(Bound::Excluded(b"a/2")), vec![b"a/3".to_vec()]);
        assert_eq!(page(Bound::Included(b"a/3")), vec![b"a/3".to_vec()]);
        assert!(page(Bound::Excluded(b"a/3")).is_empty());
        // A start before the prefix starts at the prefix.
        assert_eq!(page(Bound::Included(b"0")), vec![b"a/2".to_vec()]);
        let all = store.scan_prefix_page(b"a/", Bound::Unbounded, 10).unwrap();
        assert_eq!(all.len(), 2);
        store.delete_prefix(b"a/").unwrap();
        assert!(store.scan_prefix(b"a/").unwrap().is_empty());
        assert_eq!(store.get(b"b/1").unwrap(), Some(b"z".to_vec()));
    }

    #[test]
    fn memory_conforms() {
        conformance(&MemoryStateStore::default());
    }

    #[test]
    fn fjall_conforms_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        conformance(&FjallStateStore::open(dir.path(), true).unwrap());
        let store = FjallStateStore::open(dir.path(), true).unwrap();
        assert_eq!(store.get(b"b/1").unwrap(), Some(b"z".to_vec()));
        // A batch's writes apply in order: the last write of a key wins.
        let mut b = WriteBatch::default();
        b.put(b"c".to_vec(), b"1".to_vec());
        b.delete(b"c".to_vec());
        b.put(b"d".to_vec(), b"1".to_vec());
        b.put(b"d".to_vec(), b"2".to_vec());
        store.commit(b).unwrap();
        assert_eq!(store.get(b"c").unwrap(), None);
        assert_eq!(store.get(b"d").unwrap(), Some(b"2".to_vec()));
    }

    #[test]
    fn sled_conforms_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = SledStateStore::open_db(dir.path()).unwrap();
            conformance(&SledStateStore::open(&db).unwrap());
        }
        let db = SledStateStore::open_db(dir.path()).unwrap();
        let store = SledStateStore::open(&db).unwrap();
        assert_eq!(store.get(b"b/1").unwrap(), Some(b"z".to_vec()));
    }
}
