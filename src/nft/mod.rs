//! The packet-filter layer: cnibox's nftables tables, built from the
//! `nftables` crate's schema types, applied by exec'ing nft or, for
//! element-only batches, over nfnetlink.

pub mod build;
pub mod exec;
pub mod nfnetlink;
pub mod owned;

pub use exec::NftError;
