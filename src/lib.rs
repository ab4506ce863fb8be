//! cnibox: the CNI plugin suite in one binary.

pub mod applets;
pub mod cni;
pub mod doctor;
#[doc(hidden)]
pub mod fuzzing;
pub mod install;
pub mod netlink;
pub mod nft;
pub mod pause;
pub mod util;
