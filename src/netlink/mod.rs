//! The one netlink/netns layer every applet shares: a small blocking API
//! with verb_object names. Requests are built with rtnetlink's message
//! builders and sent over a plain synchronous socket; replies are read as
//! the one message type each request expects (async rtnetlink with a tokio
//! runtime, and its parser for every message family, cost ~0.3 MB).
//!
//! A netlink socket stays bound to the netns it was created in, so
//! `Netlink::in_netns` opens one while the calling thread is briefly inside
//! the target netns, and then drives it from the caller's own netns.

pub mod addr;
pub mod brport;
pub mod conntrack;
pub mod link;
pub mod link_events;
pub mod mac;
pub mod moved_link;
pub mod msg;
pub mod netns;
pub mod route;
pub mod rule;
pub mod sysctl;
pub mod tc;
pub mod tuntap;
pub mod veth;

use std::fmt;

pub use addr::Addr;
pub use link::Link;
pub use netns::{NetNs, NetNsError};
pub use route::RouteEntry;

/// A failed netlink or netns operation, with the kernel's errno when known.
#[derive(Debug, Clone)]
pub struct Error {
    pub errno: i32,
    pub msg: String,
}

/// `util::fault::step` for code returning netlink errors (test builds only
/// ever fail it; see src/util/fault.rs).
pub fn fault_step(name: &str) -> Result<()> {
    crate::util::fault::step(name).map_err(|e| Error::new(0, e.msg))
}

impl Error {
    pub fn new(errno: i32, msg: impl Into<String>) -> Self {
        Error { errno, msg: msg.into() }
    }
    pub fn is_exists(&self) -> bool {
        self.errno == libc_errno::EEXIST
    }
    /// The object (link, address, route, netns) is not there.
    pub fn is_not_found(&self) -> bool {
        matches!(self.errno, libc_errno::ENOENT | libc_errno::ENODEV | libc_errno::ESRCH | libc_errno::EADDRNOTAVAIL)
    }
    /// The kernel's answer `errno` to the request `what`.
    fn from_errno(errno: i32, what: &str) -> Self {
        Error { errno, msg: format!("{what}: {}", std::io::Error::from_raw_os_error(errno)) }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// errno values we test for (nix's Errno as plain integers).
pub mod libc_errno {
    pub const ENOENT: i32 = nix::errno::Errno::ENOENT as i32;
    pub const ESRCH: i32 = nix::errno::Errno::ESRCH as i32;
    pub const EEXIST: i32 = nix::errno::Errno::EEXIST as i32;
    pub const ENODEV: i32 = nix::errno::Errno::ENODEV as i32;
    pub const EADDRNOTAVAIL: i32 = nix::errno::Errno::EADDRNOTAVAIL as i32;
    pub const EBUSY: i32 = nix::errno::Errno::EBUSY as i32;
    pub const EINVAL: i32 = nix::errno::Errno::EINVAL as i32;
}

/// A route-netlink socket bound to one network namespace. Requests are
/// made synchronously: send one message, read its replies until the ACK,
/// the end of the dump or the single answer (see msg.rs). Not Sync (the
/// Cell): two threads sharing one socket could read each other's replies.
pub struct Netlink {
    sock: netlink_sys::Socket,
    seq: std::cell::Cell<u32>,
}

impl Netlink {
    /// A socket in the calling thread's netns.
    pub fn new() -> Result<Netlink> {
        let io =
            |e: std::io::Error| Error::new(e.raw_os_error().unwrap_or(0), format!("opening a netlink socket: {e}"));
        let mut sock = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE).map_err(io)?;
        sock.bind_auto().map_err(io)?;
        sock.connect(&netlink_sys::SocketAddr::new(0, 0)).map_err(io)?;
        Ok(Netlink { sock, seq: std::cell::Cell::new(1) })
    }

    /// A socket in `ns`.
    pub fn in_netns(ns: &NetNs) -> Result<Netlink> {
        ns.run(Netlink::new)?
    }

    fn next_seq(&self) -> u32 {
        let seq = self.seq.get();
        self.seq.set(seq.wrapping_add(1));
        seq
    }
}
