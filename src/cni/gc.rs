//! GC (spec 1.1.0): the attachments a runtime still considers valid.

use serde::Deserialize;

use super::error::CniError;
use super::lenient;
use super::Command;

/// One entry of `cni.dev/valid-attachments`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The attachments the runtime wants kept; everything else of this network may go.
pub fn valid_attachments(cmd: &Command) -> Result<Vec<Attachment>, CniError> {
    match cmd.config.get("cni.dev/valid-attachments") {
        Some(v) if !v.is_null() => lenient::parse_config(v, "cni.dev/valid-attachments"),
        _ => Ok(Vec::new()),
    }
}
