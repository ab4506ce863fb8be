//! The one netlink/netns layer every applet shares: a small blocking API
//! with verb_object names over rtnetlink on a current-thread runtime.
//!
//! A netlink socket stays bound to the netns it was created in, so
//! `Netlink::in_netns` opens one while the calling thread is briefly inside
//! the target netns, and then drives it from the caller's own netns.

pub mod addr;
pub mod brport;
pub mod conntrack;
pub mod iface;
pub mod link;
pub mod mac;
pub mod moved_link;
pub mod netns;
pub mod nfnetlink;
pub mod nft;
pub mod nft_build;
pub mod nft_owned;
pub mod route;
pub mod rule;
pub mod sysctl;
pub mod tc;
pub mod tuntap;
pub mod veth;

use std::fmt;
use std::future::Future;

use crate::cni::CniError;

pub use addr::Addr;
pub use link::Link;
pub use netns::NetNs;
pub use route::RouteEntry;

/// A failed netlink or netns operation, with the kernel's errno when known.
#[derive(Debug, Clone)]
pub struct Error {
    pub errno: i32,
    pub msg: String,
}

/// `cni::fault::step` for code returning netlink errors (test builds only
/// ever fail it; see src/cni/fault.rs).
pub(crate) fn fault_step(name: &str) -> Result<()> {
    crate::cni::fault::step(name).map_err(|e| Error::new(0, e.msg))
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
    fn from_rtnetlink(e: rtnetlink::Error, what: &str) -> Self {
        let errno = match &e {
            rtnetlink::Error::NetlinkError(m) => m.raw_code().abs(),
            _ => 0,
        };
        let cause = if errno != 0 { std::io::Error::from_raw_os_error(errno).to_string() } else { e.to_string() };
        Error { errno, msg: format!("{what}: {cause}") }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

impl From<Error> for CniError {
    fn from(e: Error) -> Self {
        CniError::internal(e.msg)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// errno values we test for (nix's Errno as plain integers).
pub mod libc_errno {
    pub const ENOENT: i32 = nix::errno::Errno::ENOENT as i32;
    pub const ESRCH: i32 = nix::errno::Errno::ESRCH as i32;
    pub const EEXIST: i32 = nix::errno::Errno::EEXIST as i32;
    pub const ENODEV: i32 = nix::errno::Errno::ENODEV as i32;
    pub const EADDRNOTAVAIL: i32 = nix::errno::Errno::EADDRNOTAVAIL as i32;
    pub const EBUSY: i32 = nix::errno::Errno::EBUSY as i32;
}

/// A route-netlink socket bound to one network namespace.
pub struct Netlink {
    rt: tokio::runtime::Runtime,
    handle: rtnetlink::Handle,
}

impl Netlink {
    /// A socket in the calling thread's netns.
    pub fn new() -> Result<Netlink> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| Error::new(e.raw_os_error().unwrap_or(0), format!("creating a runtime: {e}")))?;
        let (conn, handle, _) = {
            let _guard = rt.enter();
            rtnetlink::new_connection()
                .map_err(|e| Error::new(e.raw_os_error().unwrap_or(0), format!("opening a netlink socket: {e}")))?
        };
        rt.spawn(conn);
        Ok(Netlink { rt, handle })
    }

    /// A socket in `ns`.
    pub fn in_netns(ns: &NetNs) -> Result<Netlink> {
        ns.run(Netlink::new)?
    }

    /// Runs one rtnetlink request to completion.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The raw rtnetlink handle, for requests this facade does not wrap.
    pub fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }

    /// Collects a dump stream into a Vec.
    fn collect<T>(
        &self,
        stream: impl futures::Stream<Item = std::result::Result<T, rtnetlink::Error>>,
        what: &str,
    ) -> Result<Vec<T>> {
        use futures::TryStreamExt;
        self.block_on(stream.try_collect::<Vec<T>>()).map_err(|e| Error::from_rtnetlink(e, what))
    }

    /// Runs a request that returns nothing but an ACK.
    fn exec(&self, f: impl Future<Output = std::result::Result<(), rtnetlink::Error>>, what: &str) -> Result<()> {
        self.block_on(f).map_err(|e| Error::from_rtnetlink(e, what))
    }
}
