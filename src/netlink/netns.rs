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

    /// Runs `f` inside this netns. The calling thread enters it and comes
    /// back to its own netns before this returns (also when `f` panics), so
    /// the caller's netns is unchanged afterwards. Entering on the calling
    /// thread costs two setns calls; a helper thread would cost a thread
    /// spawn and a hand-off, which is slow on a loaded node.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        let home = File::open("/proc/thread-self/ns/net")
            .map_err(|e| Error::new(e.raw_os_error().unwrap_or(0), format!("failed to open the current netns: {e}")))?;
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| Error::new(e as i32, format!("failed to enter netns {}: {e}", self.path.display())))?;
        let _back = ReturnTo(home);
        Ok(f())
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

/// Puts the calling thread back into the netns it came from when dropped.
struct ReturnTo(File);

impl Drop for ReturnTo {
    fn drop(&mut self) {
        if let Err(e) = setns(self.0.as_fd(), CloneFlags::CLONE_NEWNET) {
            // Carrying on in the wrong netns could change the wrong network.
            eprintln!("cnibox: cannot return to the original netns: {e}");
            std::process::abort();
        }
    }
}
