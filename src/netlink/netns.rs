//! Network namespaces: open one by path and run code inside it.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};
use nix::sys::statfs::{fstatfs, PROC_SUPER_MAGIC};

use super::{Error, Result};

/// nsfs, the filesystem behind bind-mounted namespaces (/run/netns/*).
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// An open network namespace.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Opens the netns at `path`, refusing anything that is not a namespace file.
    pub fn open(path: impl AsRef<Path>) -> Result<NetNs> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| {
            Error::new(e.raw_os_error().unwrap_or(0), format!("failed to open netns {}: {e}", path.display()))
        })?;
        let fs = fstatfs(file.as_fd()).map_err(|e| Error::new(e as i32, format!("statfs {}: {e}", path.display())))?;
        let magic = fs.filesystem_type().0 as i64;
        if magic != NSFS_MAGIC && magic != PROC_SUPER_MAGIC.0 {
            return Err(Error::new(0, format!("{} is not a network namespace", path.display())));
        }
        Ok(NetNs { file, path: path.to_path_buf() })
    }

    /// The netns of the calling thread.
    pub fn current() -> Result<NetNs> {
        Self::open("/proc/thread-self/ns/net")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Runs `f` on a thread that has entered this netns (setns moves only the
    /// calling thread, so the caller's thread never changes namespace).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| {
                        Error::new(e as i32, format!("failed to enter netns {}: {e}", self.path.display()))
                    })?;
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|_| Err(Error::new(0, "a thread inside the netns panicked")))
        })
    }

    /// Two handles refer to the same namespace (same nsfs inode).
    pub fn same_as(&self, other: &NetNs) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (self.file.metadata(), other.file.metadata()) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
}
