//! flock(2)-based file locks, compatible with the reference's host-local store lock.

use std::fs::{File, OpenOptions};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

/// A lock that could not be taken: what failed, and the system's reason.
#[derive(Debug)]
pub struct LockError {
    pub msg: String,
    pub details: String,
}

/// An exclusive lock held until dropped.
pub struct FileLock {
    _lock: Flock<File>,
}

impl FileLock {
    /// Creates `path` if needed and blocks until the lock is ours.
    pub fn exclusive(path: &Path) -> Result<FileLock, LockError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| LockError {
                msg: format!("failed to create {}", dir.display()),
                details: e.to_string(),
            })?;
        }
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(|e| {
            LockError { msg: format!("failed to open lock {}", path.display()), details: e.to_string() }
        })?;
        let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| LockError {
            msg: format!("failed to lock {}", path.display()),
            details: e.to_string(),
        })?;
        Ok(FileLock { _lock: lock })
    }
}
