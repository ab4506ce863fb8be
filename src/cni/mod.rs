//! The CNI protocol, shared by every applet.

pub mod args;
pub mod error;
pub mod fault;
pub mod gc;
pub mod invoke;
pub mod ipam;
pub mod lenient;
pub mod runtime;
pub mod skel;
pub mod types;
pub mod version;

pub use error::{CniContext, CniError};
pub use skel::{Applet, Command, Verb};
pub use types::{CniResult, Dns, Interface, IpConfig, NetConf, Route};
