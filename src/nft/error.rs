//! The packet-filter layer's one error type. Callers decide on its kind,
//! never on nft's or the kernel's wording.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A table, chain, set or element the request names does not exist.
    Missing,
    /// An element a request creates is there already.
    Exists,
    /// nft could not be run, or refused the request for another reason.
    Exec,
    /// The kernel refused an nfnetlink request with this errno.
    Kernel(i32),
    /// The tool is not installed, or cannot handle this table (iptables on
    /// a table nft wrote, or a kernel without it).
    Unsupported,
}

#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    pub msg: String,
    /// What nft printed on stderr, or the system's reason.
    pub details: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(kind: ErrorKind, msg: impl Into<String>, details: impl Into<String>) -> Error {
        Error { kind, msg: msg.into(), details: details.into() }
    }

    /// A failure to run nft, encode a request or read a reply.
    pub fn exec(msg: impl Into<String>, details: impl ToString) -> Error {
        Error::new(ErrorKind::Exec, msg, details.to_string())
    }

    /// The kernel's answer `errno` to the nfnetlink request `what`.
    pub fn kernel(errno: i32, what: &str) -> Error {
        let kind = match errno {
            ENOENT => ErrorKind::Missing,
            EEXIST => ErrorKind::Exists,
            _ => ErrorKind::Kernel(errno),
        };
        Error::new(kind, format!("{what}: {}", std::io::Error::from_raw_os_error(errno)), "")
    }

    pub fn is_missing(&self) -> bool {
        self.kind == ErrorKind::Missing
    }

    pub fn is_exists(&self) -> bool {
        self.kind == ErrorKind::Exists
    }

    pub fn is_unsupported(&self) -> bool {
        self.kind == ErrorKind::Unsupported
    }
}

pub(crate) const ENOENT: i32 = nix::errno::Errno::ENOENT as i32;
pub(crate) const EEXIST: i32 = nix::errno::Errno::EEXIST as i32;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.details.is_empty() {
            f.write_str(&self.msg)
        } else {
            write!(f, "{}: {}", self.msg, self.details.trim())
        }
    }
}

impl std::error::Error for Error {}
