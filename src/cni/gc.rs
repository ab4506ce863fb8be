//! GC (spec 1.1.0): the attachments a runtime still considers valid.

use serde::Deserialize;

use super::{CniError, Command};

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// `cni.dev/valid-attachments` of a GC call (empty when absent: then every
/// attachment of the network is stale).
pub fn valid_attachments(cmd: &Command) -> Result<Vec<Attachment>, CniError> {
    match cmd.config.get("cni.dev/valid-attachments") {
        Some(v) if !v.is_null() => super::lenient::parse_config(v, "cni.dev/valid-attachments"),
        _ => Ok(Vec::new()),
    }
}
