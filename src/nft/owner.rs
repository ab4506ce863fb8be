//! Who owns an element or rule: one CNI attachment (network, container ID,
//! interface), written into its nftables comment so that DEL finds what a
//! container owns from its ID alone and GC can tell whose it is.

use crate::util::hash::{fnv1a_128_hex, short_hex};

/// nft's limit for a rule or element comment.
const COMMENT_MAX: usize = 128;

/// One container attachment to one network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner<'a> {
    pub network: &'a str,
    pub container_id: &'a str,
    pub ifname: &'a str,
}

impl Owner<'_> {
    /// The comment: `<network> <containerID> <ifname>` (none of them may hold
    /// spaces), or with hashed parts when that is too long for nft.
    pub fn comment(&self) -> String {
        let plain = format!("{} {} {}", self.network, self.container_id, self.ifname);
        if plain.len() <= COMMENT_MAX {
            return plain;
        }
        format!("{} #{}", network_part(self.network), fnv1a_128_hex(&format!("{} {}", self.container_id, self.ifname)))
    }

    /// The comment cnibox releases before the packet-filter layer wrote on
    /// masquerade and MAC spoof check elements: `<8 hex digits of the
    /// network's hash> <containerID> <ifname>`, cut at 127 bytes.
    fn masquerade_comment_v0(&self) -> String {
        let mut c = format!("{} {} {}", masquerade_network_v0(self.network), self.container_id, self.ifname);
        c.truncate(COMMENT_MAX - 1);
        c
    }

    /// Whether `comment` names this attachment, in either format.
    pub fn owns(&self, comment: &str) -> bool {
        comment == self.comment() || comment == self.masquerade_comment_v0()
    }
}

/// What every comment of `network` starts with (followed by a space).
fn network_part(network: &str) -> String {
    if network.len() <= 48 && !network.contains(char::is_whitespace) {
        network.to_string()
    } else {
        format!("#{}", fnv1a_128_hex(network))
    }
}

fn masquerade_network_v0(network: &str) -> String {
    short_hex(&[network], 8)
}

/// Whether `comment` belongs to an attachment of `network`, in either format.
pub fn is_network(comment: &str, network: &str) -> bool {
    [network_part(network), masquerade_network_v0(network)]
        .iter()
        .any(|part| comment.strip_prefix(part.as_str()).is_some_and(|rest| rest.starts_with(' ')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner<'a>(network: &'a str, id: &'a str) -> Owner<'a> {
        Owner { network, container_id: id, ifname: "eth0" }
    }

    #[test]
    fn comments_name_the_owner() {
        assert_eq!(owner("net", "abc").comment(), "net abc eth0");
        assert!(is_network("net abc eth0", "net"));
        assert!(!is_network("net2 abc eth0", "net"));
        let long_id = "a".repeat(200);
        let c = owner("net", &long_id).comment();
        assert!(c.len() <= COMMENT_MAX && c.starts_with("net #"));
        assert_eq!(c, owner("net", &long_id).comment());
        assert_ne!(c, Owner { ifname: "eth1", ..owner("net", &long_id) }.comment());
        let long_net = "n".repeat(100);
        let c = owner(&long_net, &long_id).comment();
        assert!(c.len() <= COMMENT_MAX && is_network(&c, &long_net));
    }

    #[test]
    fn earlier_masquerade_comments_are_recognised() {
        let o = owner("net1", "c1");
        let v0 = format!("{} c1 eth0", short_hex(&["net1"], 8));
        assert!(o.owns(&v0) && o.owns("net1 c1 eth0"));
        assert!(!owner("net1", "c2").owns(&v0));
        assert!(is_network(&v0, "net1") && !is_network(&v0, "net2"));
        let long_id = "b".repeat(200);
        let o = owner("net1", &long_id);
        let mut v0 = format!("{} {long_id} eth0", short_hex(&["net1"], 8));
        v0.truncate(127);
        assert!(o.owns(&v0));
    }
}
