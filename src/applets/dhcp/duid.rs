//! The node's DHCPv6 DUID: one per node, generated once and kept in the
//! daemon's state directory, so a restarted daemon (or a rebooted node) is
//! the same client to the server. Each attachment is one IA_NA of it,
//! told apart by its IAID.
//!
//! DUID-UUID (RFC 6355) from random bits: a node need not have a stable
//! link-layer address (DUID-LL) and its clock may be wrong at first boot
//! (DUID-LLT); a random UUID has neither problem once persisted.

use std::path::Path;

use crate::util::atomic_file;

/// In the daemon's state directory (state.rs), beside the lease records.
const FILE: &str = "duid";
const DUID_UUID: u16 = 4;

/// A new DUID-UUID: type 4, then a random (version 4) UUID.
fn generate() -> Vec<u8> {
    let mut uuid = [0u8; 16];
    crate::util::hash::random_bytes(&mut uuid);
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    let mut duid = DUID_UUID.to_be_bytes().to_vec();
    duid.extend_from_slice(&uuid);
    duid
}

/// "00:04:..." as the file (and dnsmasq's lease file) shows it.
pub fn to_text(duid: &[u8]) -> String {
    duid.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// A DUID read back from text; None for anything that is not one
/// (RFC 8415: 2 bytes of type, at most 128 bytes of data).
pub fn from_text(text: &str) -> Option<Vec<u8>> {
    let bytes: Option<Vec<u8>> = text.trim().split(':').map(|h| u8::from_str_radix(h, 16).ok()).collect();
    bytes.filter(|b| (3..=130).contains(&b.len()))
}

/// The DUID stored in `dir`, created (with the directory) on first use.
/// A file that does not hold a DUID is an error rather than replaced: the
/// server knows the node by it.
pub fn load_or_create(dir: &Path) -> Result<Vec<u8>, String> {
    let path = dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => return from_text(&text).ok_or_else(|| format!("{} holds no DUID", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    }
    use std::os::unix::fs::DirBuilderExt;
    // The lease records' directory too: root's eyes only (as state.rs makes it).
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let duid = generate();
    // Atomically: a crash never leaves half a DUID.
    atomic_file::replace_file(&path, format!("{}\n", to_text(&duid)).as_bytes(), 0o644)
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    log::info!("new DHCPv6 DUID {} in {}", to_text(&duid), path.display());
    Ok(duid)
}

/// The IAID of an attachment: stable for its key (container, network,
/// interface), so a restarted daemon asks for the same binding.
pub fn iaid(key: &str) -> u32 {
    let h = crate::util::hash::fnv1a(&[key]);
    (h ^ (h >> 32)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_read_back() {
        let dir = std::env::temp_dir().join(format!("cnibox-duid-{}", crate::util::hash::random_u32()));
        let first = load_or_create(&dir).unwrap();
        assert_eq!(first.len(), 18);
        assert_eq!(&first[..2], &[0, 4]);
        assert_eq!(load_or_create(&dir).unwrap(), first);
        std::fs::write(dir.join(FILE), "not a duid").unwrap();
        assert!(load_or_create(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn text_form() {
        assert_eq!(to_text(&[0, 4, 0xab]), "00:04:ab");
        assert_eq!(from_text("00:04:ab\n"), Some(vec![0, 4, 0xab]));
        assert_eq!(from_text("00:04"), None);
        assert_eq!(from_text("00:zz:01"), None);
        assert_eq!(iaid("c/n/eth0"), iaid("c/n/eth0"));
        assert_ne!(iaid("c/n/eth0"), iaid("c/n/eth1"));
    }
}
