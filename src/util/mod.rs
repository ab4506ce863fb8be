//! General utilities with no knowledge of CNI, netlink or nftables: the
//! bottom layer every other one may use.

pub mod atomic_file;
pub mod base64;
pub mod dbus;
pub mod detached;
pub mod fault;
pub mod hash;
pub mod lock;
pub mod sha512;
