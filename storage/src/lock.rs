//! The data directory's lock: one Brook process per data directory. A
//! second process on the same directory would append to the same segments
//! and take the state store for unreadable (and move it aside), so it is
//! refused at open, before anything is read or written.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use crate::error::{io_err, Result, StorageError};

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "brook.lock";

/// An exclusive lock on a data directory, held until dropped (or until the
/// process ends, however it ends: the operating system releases it).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock of `dir` (which must exist), or fails at once when
    /// another process holds it.
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(StorageError::Locked(dir.into())),
            Err(TryLockError::Error(e)) => Err(io_err("lock", &path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        let err = DirLock::acquire(dir.path()).unwrap_err();
        assert!(matches!(err, StorageError::Locked(_)), "{err}");
        assert!(err.to_string().contains("another Brook process"), "{err}");
        drop(first);
        DirLock::acquire(dir.path()).unwrap();
    }
}
