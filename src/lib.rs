//! cnibox: the CNI plugin suite in one binary.

pub mod applets;
pub mod cni;
pub mod doctor;
pub mod netlink;
