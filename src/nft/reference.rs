//! The reference plugins' (containernetworking/plugins) names for what they
//! write to iptables: per-container chain names hashed from network name and
//! container ID, their rule comments, and the firewall plugin's CNI-FORWARD
//! rules. cnibox writes and recognises exactly these, so that either
//! implementation finds and removes what the other made on a node that
//! switched.

use std::fmt::Write;
use std::net::IpAddr;

use crate::util::sha512;

/// iptables' chain names are at most 28 bytes; the reference fills them.
const CHAIN_LEN: usize = 28;

/// The firewall plugin's chain, jumped to first from FORWARD.
pub const FORWARD_CHAIN: &str = "CNI-FORWARD";
/// The firewall plugin's default admin chain (`iptablesAdminChainName`).
pub const DEFAULT_ADMIN_CHAIN: &str = "CNI-ADMIN";
/// The comment of FORWARD's jump to CNI-FORWARD.
const FORWARD_JUMP_COMMENT: &str = "CNI firewall plugin rules";
/// The comment of CNI-FORWARD's jump to the admin chain.
const ADMIN_JUMP_COMMENT: &str = "CNI firewall plugin admin overrides";

/// `CNI-<prefix><hex SHA-512 of network name + container ID>`, cut to 28
/// bytes (the reference's MustFormatChainNameWithPrefix): `prefix` is ""
/// for ipMasq's nat chain, "DN-" for portmap's DNAT chain.
pub fn chain_name(network: &str, container_id: &str, prefix: &str) -> String {
    sha512::name_with_prefix(CHAIN_LEN, &format!("CNI-{prefix}"), &format!("{network}{container_id}"))
}

/// Whether `name` has the shape of a `chain_name(.., .., prefix)`: `CNI-`,
/// the prefix, then hex digits to 28 bytes.
pub fn is_chain_name(name: &str, prefix: &str) -> bool {
    name.len() == CHAIN_LEN
        && name
            .strip_prefix("CNI-")
            .and_then(|rest| rest.strip_prefix(prefix))
            .is_some_and(|hash| hash.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
}

/// The comment the reference puts on a container's rules:
/// `name: "<network>" id: "<containerID>"` (Go's `%q` quoting).
pub fn comment(network: &str, container_id: &str) -> String {
    format!("name: {} id: {}", go_quote(network), go_quote(container_id))
}

/// A string as Go's `%q` prints it (for the characters names can hold:
/// printable text is kept, quotes, backslashes and control characters are
/// escaped).
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The network and container ID a reference comment names, if `comment` is
/// one (also inside a longer comment, such as portmap's `dnat name: ...`).
pub fn parse_comment(comment: &str) -> Option<(String, String)> {
    let rest = &comment[comment.find("name: \"")? + "name: ".len()..];
    let (network, rest) = go_unquote(rest)?;
    let (id, _) = go_unquote(rest.strip_prefix(" id: ")?)?;
    Some((network, id))
}

/// The quoted string at the start of `s` and what follows it.
fn go_unquote(s: &str) -> Option<(String, &str)> {
    let mut chars = s.strip_prefix('"')?.char_indices();
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 2..])),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'x' => {
                    let hex: String = [chars.next()?.1, chars.next()?.1].iter().collect();
                    out.push(char::from(u8::from_str_radix(&hex, 16).ok()?));
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

/// nftables' limit for a rule comment (knftables' CommentLengthMax).
const NFT_COMMENT_MAX: usize = 128;

/// The table and chain of newer reference releases' nftables ipMasq
/// (family inet): one rule per container address, its comment starting
/// with `instance_hash`.
pub const MASQ_TABLE: &str = "cni_plugins_masquerade";
pub const MASQ_CHAIN: &str = "masq_checks";

/// The first 16 hex digits of the SHA-512 of `s`.
fn hash16(s: &str) -> String {
    sha512::name_with_prefix(16, "", s)
}

/// What every nftables ipMasq comment of `network` starts with.
pub fn masq_network_hash(network: &str) -> String {
    hash16(network)
}

/// What the nftables ipMasq comments of one attachment start with.
pub fn masq_instance_hash(network: &str, ifname: &str, container_id: &str) -> String {
    format!("{}-{}", masq_network_hash(network), hash16(&format!("{ifname}:{container_id}")))
}

/// The whole comment of one attachment's nftables ipMasq rules.
pub fn masq_comment(network: &str, ifname: &str, container_id: &str) -> String {
    let mut comment = format!(
        "{}, net: {}, if: {}, id: {}",
        masq_instance_hash(network, ifname, container_id),
        network.replace('"', ""),
        ifname.replace('"', ""),
        container_id.replace('"', "")
    );
    comment.truncate(NFT_COMMENT_MAX);
    comment
}

/// The container ID at the end of an nftables ipMasq comment (for the
/// doctor; possibly cut short with the comment).
pub fn masq_comment_container(comment: &str) -> Option<&str> {
    comment.rsplit_once(", id: ").map(|(_, id)| id)
}

/// Whether an nftables ipMasq comment was cut to nftables' limit (so that
/// the container ID at its end may be only the ID's start).
pub fn masq_comment_is_cut(comment: &str) -> bool {
    comment.len() >= NFT_COMMENT_MAX
}

/// The table of newer reference releases' nftables portmap (families ip
/// and ip6): its per-container rules carry the bare container ID as comment.
pub const HOSTPORT_TABLE: &str = "cni_hostport";
/// A chain every cni_hostport table has (the presence check).
pub const HOSTPORT_CHAIN: &str = "hostports";

/// portmap's iptables chains: the per-container DNAT chain and the one old
/// releases made, and the top-level chain jumping to the DNAT chains.
pub const DNAT_PREFIX: &str = "DN-";
pub const OLD_SNAT_PREFIX: &str = "SN-";
pub const HOSTPORT_DNAT_CHAIN: &str = "CNI-HOSTPORT-DNAT";
/// portmap's mark chains (with its own mark bit): one marks the connections
/// to masquerade, the other, jumped to first from POSTROUTING, masquerades
/// what is marked.
pub const SETMARK_CHAIN: &str = "CNI-HOSTPORT-SETMARK";
pub const MARK_MASQ_CHAIN: &str = "CNI-HOSTPORT-MASQ";
/// The reference's default `markMasqBit`.
pub const DEFAULT_MARK_BIT: u32 = 13;
/// The reference cuts a longer comment to 253 bytes and `...`.
const IPTABLES_COMMENT_MAX: usize = 255;

/// The comment of CNI-HOSTPORT-DNAT's jumps to a container's DNAT chain:
/// `dnat name: "<network>" id: "<containerID>"`, cut as the reference cuts it.
pub fn dnat_comment(network: &str, container_id: &str) -> String {
    let mut comment = format!("dnat {}", comment(network, container_id));
    if comment.len() > IPTABLES_COMMENT_MAX {
        let mut cut = IPTABLES_COMMENT_MAX - 2;
        while !comment.is_char_boundary(cut) {
            cut -= 1;
        }
        comment.truncate(cut);
        comment.push_str("...");
    }
    comment
}

/// PREROUTING's and OUTPUT's jump to CNI-HOSTPORT-DNAT (as the reference
/// writes it; iptables-save prints the same words).
pub fn hostport_dnat_jump() -> Vec<String> {
    args(&["-m", "addrtype", "--dst-type", "LOCAL", "-j", HOSTPORT_DNAT_CHAIN])
}

/// `0x2000/0x2000` for bit 13, as the reference and iptables-save write it.
fn mark_of(bit: u32) -> String {
    let value = 1u32 << bit;
    format!("{value:#x}/{value:#x}")
}

/// The one rule of CNI-HOSTPORT-SETMARK.
pub fn setmark_rule(bit: u32) -> Vec<String> {
    args(&["-m", "comment", "--comment", "CNI portfwd masquerade mark", "-j", "MARK", "--set-xmark", &mark_of(bit)])
}

/// POSTROUTING's jump to CNI-HOSTPORT-MASQ (inserted first, so that
/// bridge's and ptp's masquerade rules do not take these connections).
pub fn mark_masq_jump() -> Vec<String> {
    args(&["-m", "comment", "--comment", "CNI portfwd requiring masquerade", "-j", MARK_MASQ_CHAIN])
}

/// The one rule of CNI-HOSTPORT-MASQ.
pub fn mark_masq_rule(bit: u32) -> Vec<String> {
    args(&["-m", "mark", "--mark", &mark_of(bit), "-j", "MASQUERADE"])
}

/// An address as the firewall plugin's rules name it, a host prefix
/// (`10.0.0.5/32`), as iptables-save prints it.
pub fn host(ip: IpAddr) -> String {
    format!("{ip}/{}", if ip.is_ipv6() { 128 } else { 32 })
}

/// An address as an iptables rule names it: `10.0.0.5/32`, `10.0.0.5:80`,
/// `[fd00::5]:80`, `fd00::5/128`.
pub fn rule_address(word: &str) -> Option<IpAddr> {
    let host = word.split('/').next()?;
    if let Ok(ip) = host.parse() {
        return Some(ip);
    }
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => host.rsplit_once(':')?.0,
    };
    host.parse().ok()
}

/// A rule's words, owned (as Script and Saved hold them).
pub fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// The firewall plugin's accepts for one container address in CNI-FORWARD,
/// as iptables-save prints them: replies to it, and everything from it.
pub fn forward_accepts(ip: IpAddr) -> [Vec<String>; 2] {
    let ip = host(ip);
    [
        args(&["-d", &ip, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"]),
        args(&["-s", &ip, "-j", "ACCEPT"]),
    ]
}

/// FORWARD's jump to CNI-FORWARD.
pub fn forward_jump() -> Vec<String> {
    args(&["-m", "comment", "--comment", FORWARD_JUMP_COMMENT, "-j", FORWARD_CHAIN])
}

/// CNI-FORWARD's jump to the admin chain.
pub fn admin_jump(admin_chain: &str) -> Vec<String> {
    args(&["-m", "comment", "--comment", ADMIN_JUMP_COMMENT, "-j", admin_chain])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_names_match_the_reference() {
        // `printf net1abc | sha512sum` starts with 30f8de359c7f...
        let name = chain_name("net1", "abc", "");
        assert_eq!(name.len(), 28);
        assert!(name.starts_with("CNI-30f8de359c7f"), "{name}");
        let dn = chain_name("net1", "abc", "DN-");
        assert!(dn.starts_with("CNI-DN-30f8de359c7f") && dn.len() == 28, "{dn}");
        assert!(is_chain_name(&name, "") && is_chain_name(&dn, "DN-"));
        assert!(!is_chain_name(&dn, "") && !is_chain_name(&name, "DN-"));
        for shared in ["CNI-FORWARD", "CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-ADMIN"] {
            assert!(!is_chain_name(shared, "") && !is_chain_name(shared, "DN-"), "{shared}");
        }
    }

    #[test]
    fn comments_round_trip() {
        assert_eq!(comment("mynet", "c1"), r#"name: "mynet" id: "c1""#);
        for (net, id) in [("mynet", "c1"), ("a\"b", "x\\y"), ("tab\there", "nl\n")] {
            assert_eq!(parse_comment(&comment(net, id)), Some((net.to_string(), id.to_string())));
        }
        let dnat = format!("dnat {}", comment("n", "abc"));
        assert_eq!(parse_comment(&dnat), Some(("n".into(), "abc".into())));
        assert_eq!(parse_comment("CNI firewall plugin rules"), None);
        assert_eq!(parse_comment(r#"name: "n" id: "unterminated"#), None);
    }

    #[test]
    fn nftables_masquerade_comments() {
        // `printf mynet | sha512sum`, `printf eth0:c1 | sha512sum`: their first 16 digits.
        let network = crate::util::sha512::hex(&crate::util::sha512::sha512(b"mynet"))[..16].to_string();
        let instance = crate::util::sha512::hex(&crate::util::sha512::sha512(b"eth0:c1"))[..16].to_string();
        assert_eq!(masq_network_hash("mynet"), network);
        let comment = masq_comment("mynet", "eth0", "c1");
        assert_eq!(comment, format!("{network}-{instance}, net: mynet, if: eth0, id: c1"));
        assert!(comment.starts_with(&masq_instance_hash("mynet", "eth0", "c1")));
        assert_eq!(masq_comment_container(&comment), Some("c1"));
        assert_eq!(masq_comment("n", "eth0", &"x".repeat(200)).len(), 128);
    }

    #[test]
    fn portmap_rules_have_the_reference_shape() {
        assert_eq!(dnat_comment("n", "c"), r#"dnat name: "n" id: "c""#);
        let long = dnat_comment("n", &"x".repeat(300));
        assert_eq!(long.len(), 256);
        assert!(long.ends_with("xx..."));
        assert_eq!(
            setmark_rule(13).join(" "),
            "-m comment --comment CNI portfwd masquerade mark -j MARK --set-xmark 0x2000/0x2000"
        );
        assert_eq!(mark_masq_rule(0).join(" "), "-m mark --mark 0x1/0x1 -j MASQUERADE");
    }

    #[test]
    fn addresses_as_rules_name_them() {
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        assert_eq!(rule_address("10.0.0.5/32"), ip("10.0.0.5"));
        assert_eq!(rule_address("10.0.0.5:80"), ip("10.0.0.5"));
        assert_eq!(rule_address("10.0.0.5:80-90"), ip("10.0.0.5"));
        assert_eq!(rule_address("[fd00::5]:80"), ip("fd00::5"));
        assert_eq!(rule_address("fd00::5/128"), ip("fd00::5"));
        assert_eq!(rule_address("fd00::5"), ip("fd00::5"));
        assert_eq!(rule_address("LOCAL"), None);
    }

    #[test]
    fn firewall_rules_have_the_reference_shape() {
        let [to, from] = forward_accepts("10.0.0.5".parse().unwrap());
        assert_eq!(to.join(" "), "-d 10.0.0.5/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT");
        assert_eq!(from.join(" "), "-s 10.0.0.5/32 -j ACCEPT");
        assert_eq!(forward_accepts("fd00::5".parse().unwrap())[1].join(" "), "-s fd00::5/128 -j ACCEPT");
    }
}
