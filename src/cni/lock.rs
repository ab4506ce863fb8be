//! flock(2)-based file locks, compatible with the reference's host-local store lock.

use std::fs::{File, OpenOptions};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use super::error::{CniContext, CniError, IO_FAILURE};

/// An exclusive lock held until dropped.
pub struct FileLock {
    _lock: Flock<File>,
}

impl FileLock {
    /// Creates `path` if needed and blocks until the lock is ours.
    pub fn exclusive(path: &Path) -> Result<FileLock, CniError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).cni(IO_FAILURE, format!("failed to create {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .cni(IO_FAILURE, format!("failed to open lock {}", path.display()))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| CniError::io(format!("failed to lock {}", path.display())).with_details(e.to_string()))?;
        Ok(FileLock { _lock: lock })
    }
}
