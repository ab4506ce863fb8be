//! The CNI protocol, shared by every applet.

pub mod args;
pub mod base64;
pub mod error;
pub mod fault;
pub mod gc;
pub mod hash;
pub mod ipam;
pub mod lenient;
pub mod lock;
pub mod runtime;
pub mod sha512;
pub mod skel;
pub mod types;
pub mod version;

pub use error::{CniContext, CniError};
pub use skel::{Applet, Command, Verb};
pub use types::{CniResult, Dns, Interface, IpConfig, NetConf, Route};
