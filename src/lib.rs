//! cnibox: the CNI plugin suite in one binary.

pub mod applets;
pub mod cni;
#[doc(hidden)]
pub mod fuzzing;
pub mod netlink;
