//! GC (spec 1.1.0): the attachments a runtime still considers valid.
//!
//! The one reading of the list for every applet. Absent list = None: a GC
//! without it must remove nothing (every attachment would look stale).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::CniError;
use super::lenient;
use super::Command;

/// The keys a runtime may send the list under: the spec's, and the older one
/// some runtimes (and the reference's host-local) still use.
const KEYS: [&str; 2] = ["cni.dev/valid-attachments", "cni.dev/attachments"];

/// One entry of `cni.dev/valid-attachments`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The attachments the runtime wants kept; everything else of this network
/// may go. None when the runtime sent no list: then nothing may be removed.
pub fn valid_attachments(cmd: &Command) -> Result<Option<Vec<Attachment>>, CniError> {
    valid_attachments_in(&cmd.config)
}

/// [`valid_attachments`] of a raw network configuration (both keys, merged).
pub fn valid_attachments_in(config: &Value) -> Result<Option<Vec<Attachment>>, CniError> {
    let mut found: Option<Vec<Attachment>> = None;
    for key in KEYS {
        let Some(list) = config.get(key).filter(|v| !v.is_null()) else { continue };
        let list: Vec<Attachment> = lenient::parse_config(list, key)?;
        found.get_or_insert_with(Vec::new).extend(list);
    }
    Ok(found)
}

/// Whether (container_id, ifname) is one of the `valid` attachments.
pub fn is_valid(valid: &[Attachment], container_id: &str, ifname: &str) -> bool {
    valid.iter().any(|a| a.container_id == container_id && a.ifname == ifname)
}

/// Whether any valid attachment belongs to `container_id` (for state keyed
/// by container alone).
pub fn is_valid_container(valid: &[Attachment], container_id: &str) -> bool {
    valid.iter().any(|a| a.container_id == container_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_keys_are_merged_and_absence_is_none() {
        let conf = json!({"name": "n",
            "cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}],
            "cni.dev/attachments": [{"containerid": "b", "IfName": "eth1"}]});
        let valid = valid_attachments_in(&conf).unwrap().unwrap();
        assert!(is_valid(&valid, "a", "eth0") && is_valid(&valid, "b", "eth1"));
        assert!(!is_valid(&valid, "a", "eth1"));
        assert!(is_valid_container(&valid, "b") && !is_valid_container(&valid, "c"));
        assert_eq!(valid_attachments_in(&json!({"name": "n"})).unwrap(), None);
        assert_eq!(valid_attachments_in(&json!({"cni.dev/valid-attachments": null})).unwrap(), None);
        assert_eq!(valid_attachments_in(&json!({"cni.dev/valid-attachments": []})).unwrap(), Some(vec![]));
        assert!(valid_attachments_in(&json!({"cni.dev/valid-attachments": 5})).is_err());
    }
}
