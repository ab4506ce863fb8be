//! The packet-filter layer: cnibox's nftables tables. Commands are built
//! from the `nftables` crate's schema types (schema.rs) and typed elements
//! (element.rs); a `Backend` applies them: nft for transactions and
//! listings, nfnetlink for element-only batches, or a fake in tests.
//! Nothing here knows CNI: callers name owners (owner.rs) and get typed
//! errors (error.rs).

pub mod backend;
pub mod cni_forward;
pub mod element;
pub mod error;
pub mod exec;
#[cfg(test)]
pub mod fake;
pub mod firewalld;
pub mod foreign;
pub mod iptables;
pub mod listing;
pub mod nfnetlink;
pub mod owned;
pub mod owner;
pub mod reference;
pub mod schema;
pub mod takeover;
pub mod xtables;

pub use backend::{Backend, Found};
pub use element::{Data, Element, ElementOp, Key};
pub use error::{Error, ErrorKind};
pub use listing::{ListedElement, ListedRule, Listing};
pub use owner::Owner;
pub use schema::Transaction;

/// The backend every plugin call uses: chosen here, and only here.
pub fn backend() -> Box<dyn Backend> {
    Box::new(backend::System::default())
}
