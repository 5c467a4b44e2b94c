//! [`SimVfs`]: an in-memory file system that can fail and lose power.
//!
//! Each file keeps two contents: what processes see (the page cache) and
//! what a power loss keeps (the bytes covered by a successful `sync_data`).
//! Directory entries (creations, renames, removals) become durable when
//! their parent directory is synced; directories themselves are durable at
//! once. [`SimVfs::power_loss`] returns the file system as a machine would
//! find it after losing power: unsynced bytes dropped, except that the last
//! file written keeps a seeded random prefix of its unsynced bytes (a torn
//! write).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{VFile, Vfs};

/// A failure to inject into the next matching operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The next `append` fails with EIO after writing half of its bytes.
    Write,
    /// The next `sync_data` fails with EIO and makes nothing durable.
    Sync,
}

#[derive(Default)]
struct SimFile {
    data: Vec<u8>,
    synced: Vec<u8>,
}

#[derive(Default)]
struct State {
    files: HashMap<u64, SimFile>,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    next_id: u64,
    faults: Vec<Fault>,
    capacity: Option<u64>,
    last_write: Option<u64>,
    syncs: u64,
}

impl State {
    fn used(&self) -> u64 {
        self.names
            .values()
            .filter_map(|id| self.files.get(id))
            .map(|f| f.data.len() as u64)
            .sum()
    }

    fn take_fault(&mut self, f: Fault) -> bool {
        match self.faults.iter().position(|x| *x == f) {
            Some(i) => {
                self.faults.remove(i);
                true
            }
            None => false,
        }
    }
}

/// In-memory, fault-injecting file system for tests. Clones share state.
#[derive(Clone, Default)]
pub struct SimVfs {
    state: Arc<Mutex<State>>,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

impl SimVfs {
    /// An empty file system.
    pub fn new() -> SimVfs {
        SimVfs::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the next matching operation fail.
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// Limits the total size of all files; an append beyond it writes what
    /// fits and fails with ENOSPC.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.lock().capacity = bytes;
    }

    /// How many `sync_data` calls succeeded so far.
    pub fn sync_count(&self) -> u64 {
        self.lock().syncs
    }

    /// The live contents of a file, if it exists.
    pub fn file(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.lock();
        s.names.get(path).map(|id| s.files[id].data.clone())
    }

    /// Replaces the live contents of a file (to damage it on purpose).
    pub fn set_file(&self, path: &Path, data: Vec<u8>) -> io::Result<()> {
        let mut s = self.lock();
        let id = *s.names.get(path).ok_or_else(|| not_found(path))?;
        let f = s.files.get_mut(&id).ok_or_else(|| not_found(path))?;
        f.data.clone_from(&data);
        f.synced = data;
        Ok(())
    }

    /// The file system as found after a power loss: what was synced, plus a
    /// prefix (chosen by `seed`) of the last written file's unsynced bytes.
    /// Handles into `self` keep working on the old state.
    pub fn power_loss(&self, seed: u64) -> SimVfs {
        let s = self.lock();
        let mut rng = seed;
        let mut files = HashMap::new();
        for id in s.durable_names.values() {
            let Some(f) = s.files.get(id) else { continue };
            let mut data = f.synced.clone();
            if s.last_write == Some(*id) && f.data.len() > f.synced.len() {
                let common = f.synced.len().min(f.data.len());
                if f.data[..common] == f.synced[..] {
                    let extra = f.data.len() - common;
                    let keep = (splitmix(&mut rng) % (extra as u64 + 1)) as usize;
                    data.extend_from_slice(&f.data[common..common + keep]);
                }
            }
            files.insert(
                *id,
                SimFile {
                    synced: data.clone(),
                    data,
                },
            );
        }
        let state = State {
            files,
            names: s.durable_names.clone(),
            durable_names: s.durable_names.clone(),
            dirs: s.dirs.clone(),
            next_id: s.next_id,
            ..State::default()
        };
        SimVfs {
            state: Arc::new(Mutex::new(state)),
        }
    }
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct SimHandle {
    vfs: SimVfs,
    id: u64,
}

impl VFile for SimHandle {
    fn len(&self) -> io::Result<u64> {
        let s = self.vfs.lock();
        Ok(s.files.get(&self.id).map_or(0, |f| f.data.len() as u64))
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        let s = self.vfs.lock();
        let f = s
            .files
            .get(&self.id)
            .ok_or_else(|| io::Error::other("file is gone"))?;
        let start = usize::try_from(pos).map_err(io::Error::other)?;
        let end = start.saturating_add(buf.len());
        if end > f.data.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the file",
            ));
        }
        buf.copy_from_slice(&f.data[start..end]);
        Ok(())
    }

    fn append(&self, data: &[u8]) -> io::Result<()> {
        let mut s = self.vfs.lock();
        s.last_write = Some(self.id);
        let fail = s.take_fault(Fault::Write);
        let room = match s.capacity {
            Some(cap) => cap.saturating_sub(s.used()) as usize,
            None => usize::MAX,
        };
        let f = s
            .files
            .get_mut(&self.id)
            .ok_or_else(|| io::Error::other("file is gone"))?;
        if fail {
            f.data.extend_from_slice(&data[..data.len() / 2]);
            return Err(io::Error::from_raw_os_error(5));
        }
        if data.len() > room {
            f.data.extend_from_slice(&data[..room]);
            return Err(io::Error::from_raw_os_error(28));
        }
        f.data.extend_from_slice(data);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut s = self.vfs.lock();
        if s.take_fault(Fault::Sync) {
            return Err(io::Error::from_raw_os_error(5));
        }
        s.syncs += 1;
        if let Some(f) = s.files.get_mut(&self.id) {
            f.synced.clone_from(&f.data);
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut s = self.vfs.lock();
        let f = s
            .files
            .get_mut(&self.id)
            .ok_or_else(|| io::Error::other("file is gone"))?;
        f.data
            .resize(usize::try_from(len).map_err(io::Error::other)?, 0);
        Ok(())
    }
}

impl Vfs for SimVfs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        for a in path.ancestors() {
            if !a.as_os_str().is_empty() {
                s.dirs.insert(a.to_path_buf());
            }
        }
        Ok(())
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let s = self.lock();
        if !s.dirs.contains(path) {
            return Err(not_found(path));
        }
        let files = s.names.keys().filter(|p| p.parent() == Some(path));
        let dirs = s.dirs.iter().filter(|p| p.parent() == Some(path));
        Ok(files.chain(dirs).cloned().collect())
    }

    fn exists(&self, path: &Path) -> bool {
        let s = self.lock();
        s.names.contains_key(path) || s.dirs.contains(path)
    }

    fn open(&self, path: &Path, create_new: bool) -> io::Result<Arc<dyn VFile>> {
        let mut s = self.lock();
        let parent = path.parent().unwrap_or(Path::new(""));
        if !s.dirs.contains(parent) {
            return Err(not_found(parent));
        }
        let id = match (s.names.get(path).copied(), create_new) {
            (Some(_), true) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists", path.display()),
                ))
            }
            (Some(id), false) => id,
            (None, false) => return Err(not_found(path)),
            (None, true) => {
                s.next_id += 1;
                let id = s.next_id;
                s.files.insert(id, SimFile::default());
                s.names.insert(path.to_path_buf(), id);
                id
            }
        };
        drop(s);
        Ok(Arc::new(SimHandle {
            vfs: self.clone(),
            id,
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.file(path).ok_or_else(|| not_found(path))
    }

    fn write_synced(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut s = self.lock();
        let parent = path.parent().unwrap_or(Path::new(""));
        if !s.dirs.contains(parent) {
            return Err(not_found(parent));
        }
        let id = match s.names.get(path) {
            Some(id) => *id,
            None => {
                s.next_id += 1;
                let id = s.next_id;
                s.names.insert(path.to_path_buf(), id);
                id
            }
        };
        s.files.insert(
            id,
            SimFile {
                data: data.to_vec(),
                synced: data.to_vec(),
            },
        );
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock();
        let id = s.names.remove(from).ok_or_else(|| not_found(from))?;
        s.names.insert(to.to_path_buf(), id);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.names
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        if !s.dirs.contains(path) {
            return Err(not_found(path));
        }
        s.names.retain(|p, _| !p.starts_with(path));
        s.dirs.retain(|p| !p.starts_with(path));
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        if !s.dirs.contains(path) {
            return Err(not_found(path));
        }
        let live: Vec<(PathBuf, u64)> = s
            .names
            .iter()
            .filter(|(p, _)| p.parent() == Some(path))
            .map(|(p, id)| (p.clone(), *id))
            .collect();
        let dirs = s.dirs.clone();
        s.durable_names.retain(|p, _| {
            // Entries of this directory are replaced by the live ones below;
            // entries under a removed subdirectory go with it.
            let in_dir = p.parent() == Some(path);
            let orphaned = p.starts_with(path) && p.parent().is_some_and(|d| !dirs.contains(d));
            !in_dir && !orphaned
        });
        s.durable_names.extend(live);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_loss_keeps_synced_bytes_and_durable_names() {
        let vfs = SimVfs::new();
        let dir = Path::new("/d");
        vfs.create_dir_all(dir).unwrap();
        let a = vfs.open(&dir.join("a"), true).unwrap();
        a.append(b"hello").unwrap();
        a.sync_data().unwrap();
        vfs.sync_dir(dir).unwrap();
        a.append(b" world").unwrap();
        let b = vfs.open(&dir.join("b"), true).unwrap();
        b.append(b"unsynced name").unwrap();
        b.sync_data().unwrap();
        let after = vfs.power_loss(7);
        assert_eq!(after.read(&dir.join("a")).unwrap(), b"hello");
        assert!(
            !after.exists(&dir.join("b")),
            "its directory was never synced"
        );
    }

    #[test]
    fn the_last_write_may_be_torn() {
        let vfs = SimVfs::new();
        let dir = Path::new("/d");
        vfs.create_dir_all(dir).unwrap();
        let a = vfs.open(&dir.join("a"), true).unwrap();
        vfs.sync_dir(dir).unwrap();
        a.append(b"0123456789").unwrap();
        let lens: BTreeSet<usize> = (0..50)
            .map(|seed| vfs.power_loss(seed).read(&dir.join("a")).unwrap().len())
            .collect();
        assert!(
            lens.len() > 3,
            "seeds choose different tear points: {lens:?}"
        );
        assert!(lens.iter().all(|l| *l <= 10));
    }

    #[test]
    fn faults_and_capacity() {
        let vfs = SimVfs::new();
        let dir = Path::new("/d");
        vfs.create_dir_all(dir).unwrap();
        let a = vfs.open(&dir.join("a"), true).unwrap();
        vfs.inject(Fault::Sync);
        a.append(b"abc").unwrap();
        assert!(a.sync_data().is_err());
        assert!(a.sync_data().is_ok());
        vfs.set_capacity(Some(5));
        let e = a.append(b"defg").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(28));
        assert_eq!(vfs.read(&dir.join("a")).unwrap(), b"abcde");
    }
}
