//! Network namespaces: open one by path and run code inside it.
//!
//! Opening tells a path with nothing behind it (`NetNsError::Gone`, which
//! code tearing down may take as done: nothing is left inside) from every
//! other failure (a file that is not a namespace, EACCES, ...), which
//! nobody may take as done. The reference makes the same distinction
//! (pkg/ns: `NSPathNotExistErr`, `NSPathNotNSErr`).

use std::fmt;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sched::{setns, CloneFlags};
use nix::sys::statfs::{fstatfs, statfs, FsType, Statfs, NSFS_MAGIC, PROC_SUPER_MAGIC};

use super::{Error, Result};

/// Why a netns could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetNsError {
    /// Nothing is at the path: ENOENT, or ESRCH from the /proc/<pid>/ns/net
    /// of a process that has exited.
    Gone { path: PathBuf, errno: Errno },
    /// Something is at the path, but on neither nsfs nor procfs, so it is
    /// no namespace (a regular file, a directory, a device node, ...).
    NotNetns { path: PathBuf, fs_type: FsType },
    /// Any other failure: EACCES, ENOTDIR, ELOOP, EMFILE, ...
    Other { path: PathBuf, errno: Errno },
}

impl NetNsError {
    /// The failure of a syscall on `path`, sorted by its errno.
    fn from_errno(path: &Path, errno: Errno) -> NetNsError {
        let path = path.to_path_buf();
        match errno {
            Errno::ENOENT | Errno::ESRCH => NetNsError::Gone { path, errno },
            _ => NetNsError::Other { path, errno },
        }
    }

    /// The namespace is not there any more (or never was): nothing in it is
    /// left to clean up.
    pub fn is_gone(&self) -> bool {
        matches!(self, NetNsError::Gone { .. })
    }

    /// The errno behind the failure (EINVAL for a file that is no namespace,
    /// as setns would say).
    pub fn errno(&self) -> i32 {
        match self {
            NetNsError::Gone { errno, .. } | NetNsError::Other { errno, .. } => *errno as i32,
            NetNsError::NotNetns { .. } => Errno::EINVAL as i32,
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            NetNsError::Gone { path, .. } | NetNsError::NotNetns { path, .. } | NetNsError::Other { path, .. } => path,
        }
    }
}

impl fmt::Display for NetNsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetNsError::Gone { path, errno } => write!(f, "netns {} does not exist: {}", path.display(), errno.desc()),
            NetNsError::NotNetns { path, fs_type } => {
                write!(f, "{} is not a network namespace (filesystem magic {:#x})", path.display(), fs_type.0)
            }
            NetNsError::Other { path, errno } => write!(f, "failed to open netns {}: {}", path.display(), errno.desc()),
        }
    }
}

impl std::error::Error for NetNsError {}

/// For code of this layer that opens a netns among other netlink work.
impl From<NetNsError> for Error {
    fn from(e: NetNsError) -> Error {
        Error::new(e.errno(), e.to_string())
    }
}

/// A namespace file lives on nsfs (a bind mount such as /run/netns/x) or
/// procfs (/proc/<pid>/ns/net). Anything else is refused before setns
/// would be asked to make sense of it.
fn require_namespace_fs(path: &Path, fs: nix::Result<Statfs>) -> std::result::Result<(), NetNsError> {
    let fs_type = fs.map_err(|errno| NetNsError::from_errno(path, errno))?.filesystem_type();
    if fs_type == NSFS_MAGIC || fs_type == PROC_SUPER_MAGIC {
        Ok(())
    } else {
        Err(NetNsError::NotNetns { path: path.to_path_buf(), fs_type })
    }
}

/// An open network namespace.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Opens the netns at `path`, refusing anything that is not a namespace
    /// file. The path is checked before it is opened, so a FIFO or device
    /// node there is never opened (which could block or have effects), and
    /// the opened file is checked again, in case the path changed between.
    pub fn open(path: impl AsRef<Path>) -> std::result::Result<NetNs, NetNsError> {
        let path = path.as_ref();
        require_namespace_fs(path, statfs(path))?;
        let file = File::open(path)
            .map_err(|e| NetNsError::from_errno(path, Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
        require_namespace_fs(path, fstatfs(file.as_fd()))?;
        Ok(NetNs { file, path: path.to_path_buf() })
    }

    /// The netns of the calling thread.
    pub fn current() -> std::result::Result<NetNs, NetNsError> {
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
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| self.enter_error(e))?;
        let _back = ReturnTo(home);
        Ok(f())
    }

    /// A failed setns, said plainly: procfs holds other files than network
    /// namespaces (/proc/<pid>/ns/mnt, /proc/<pid>/status), which only
    /// setns's EINVAL tells apart.
    fn enter_error(&self, errno: Errno) -> Error {
        let path = self.path.display();
        match errno {
            Errno::EINVAL => Error::new(errno as i32, format!("{path} is not a network namespace")),
            _ => Error::new(errno as i32, format!("failed to enter netns {path}: {}", errno.desc())),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_path_is_gone() {
        let e = NetNs::open("/nonexistent/cnibox-netns").unwrap_err();
        assert!(e.is_gone(), "{e:?}");
        assert_eq!(e.errno(), Errno::ENOENT as i32);
        assert!(e.to_string().contains("/nonexistent/cnibox-netns"), "{e}");
    }

    #[test]
    fn a_regular_file_is_not_a_netns() {
        let e = NetNs::open("/proc/self/exe").map(drop);
        // /proc/self/exe resolves to the test binary on a disk filesystem.
        let e = e.unwrap_err();
        assert!(matches!(e, NetNsError::NotNetns { .. }), "{e:?}");
        assert!(!e.is_gone());
        assert!(e.to_string().contains("not a network namespace"), "{e}");
    }

    #[test]
    fn a_path_through_a_file_is_not_gone() {
        // ENOTDIR: the path is wrong, not the namespace gone.
        let e = NetNs::open("/proc/self/exe/net").unwrap_err();
        assert!(matches!(e, NetNsError::Other { errno: Errno::ENOTDIR, .. }), "{e:?}");
        assert!(!e.is_gone());
    }

    #[test]
    fn errnos_sort_into_gone_and_other() {
        let p = Path::new("/proc/123/ns/net");
        assert!(NetNsError::from_errno(p, Errno::ENOENT).is_gone());
        assert!(NetNsError::from_errno(p, Errno::ESRCH).is_gone());
        for errno in [Errno::EACCES, Errno::EPERM, Errno::ENOTDIR, Errno::ELOOP, Errno::EMFILE] {
            let e = NetNsError::from_errno(p, errno);
            assert_eq!(e, NetNsError::Other { path: p.into(), errno }, "{errno}");
            assert_eq!(e.errno(), errno as i32);
        }
    }

    #[test]
    fn only_nsfs_and_procfs_hold_namespaces() {
        let p = Path::new("/x");
        let tmpfs = statfs("/dev/shm").or_else(|_| statfs("/tmp")).unwrap();
        let fs_type = tmpfs.filesystem_type();
        assert_eq!(require_namespace_fs(p, Ok(tmpfs)), Err(NetNsError::NotNetns { path: p.into(), fs_type }));
        assert_eq!(require_namespace_fs(p, statfs("/proc/self/ns/net")), Ok(()));
        assert!(require_namespace_fs(p, Err(Errno::ENOENT)).unwrap_err().is_gone());
    }

    #[test]
    fn the_own_netns_opens() {
        // Needs no privilege: every process may open its own namespace files.
        let ns = NetNs::current().unwrap();
        assert!(ns.same_as(&NetNs::open("/proc/self/ns/net").unwrap()));
    }

    #[test]
    fn converts_to_a_netlink_error_with_its_errno() {
        let e: Error =
            NetNsError::NotNetns { path: "/etc/hostname".into(), fs_type: nix::sys::statfs::EXT4_SUPER_MAGIC }.into();
        assert_eq!(e.errno, Errno::EINVAL as i32);
        assert!(e.msg.contains("/etc/hostname"), "{}", e.msg);
    }
}
