//! Building blocks several applets share (not applets themselves).

pub mod iface_config;
pub mod link_plugin;
pub mod masquerade;
pub mod nft_attachment;
pub mod result_check;
pub mod veth_plugin;
