//! portmap in the reference's own iptables layout, for the configs that ask
//! for masquerading by a mark, which nftables cannot serve:
//! - `externalSetMarkChain`: someone else's iptables chain (kube-proxy's
//!   `KUBE-MARK-MASQ`) marks the connection and its owner masquerades what
//!   is marked. An nftables rule cannot jump to an iptables chain.
//! - an explicit `markMasqBit`: the connections to masquerade carry that
//!   bit, which other rules of the node may match.
//!
//! nat table, per family (iptables or ip6tables, the flavour that holds the
//! external chain, else iptables-nft):
//! ```text
//! PREROUTING, OUTPUT:  -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
//! CNI-HOSTPORT-DNAT:   -m comment --comment "dnat name: \"N\" id: \"C\"" -m multiport
//!                      -p tcp --destination-ports 8080,8081 [conditions] -j CNI-DN-<hash>
//! CNI-DN-<hash>:       per mapping: -s <subnet> -j <mark chain> (hairpin),
//!                      -s 127.0.0.1 -j <mark chain> (IPv4), -j DNAT --to-destination
//! CNI-HOSTPORT-SETMARK (markMasqBit): -j MARK --set-xmark <bit>/<bit>
//! POSTROUTING (first): -j CNI-HOSTPORT-MASQ; CNI-HOSTPORT-MASQ: -m mark --mark <bit> -j MASQUERADE
//! ```
//! These are the reference's names, comments and rule shapes, so that DEL
//! and GC need nothing of this module: the takeover of the reference's state
//! (nft::takeover) already removes a container's CNI-DN chain and its jumps
//! by the same naming, and the reference's DEL removes cnibox's. The shared
//! chains stay, as the reference leaves them.
//!
//! An ADD is one iptables-save and one iptables-restore per family.

use std::net::IpAddr;

use ipnet::IpNet;

use super::Mapping;
use crate::cni::error::TRY_AGAIN_LATER;
use crate::cni::CniError;
use crate::nft::iptables::{Flavor, Iptables, Saved, Script};
use crate::nft::reference::{self, args, chain_name, DNAT_PREFIX, HOSTPORT_DNAT_CHAIN, MARK_MASQ_CHAIN, SETMARK_CHAIN};
use crate::nft::{takeover, Backend, Owner};

const NAT: &str = "nat";
/// multiport takes at most 15 ports.
const MULTIPORT_MAX: usize = 15;

/// Who marks the connections to masquerade, and who masquerades them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkBy {
    /// `externalSetMarkChain`: that chain marks, its owner masquerades.
    External(String),
    /// `markMasqBit`: CNI-HOSTPORT-SETMARK marks, CNI-HOSTPORT-MASQ masquerades.
    Bit(u32),
}

impl MarkBy {
    fn chain(&self) -> &str {
        match self {
            MarkBy::External(chain) => chain,
            MarkBy::Bit(_) => SETMARK_CHAIN,
        }
    }
}

/// What one container's rules are made of.
pub struct Layout<'a> {
    pub owner: Owner<'a>,
    pub mark: &'a MarkBy,
    pub snat: bool,
    pub masq_all: bool,
    /// conditionsV4 / conditionsV6, iptables arguments.
    pub conditions_v4: &'a [String],
    pub conditions_v6: &'a [String],
}

fn destination(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

impl Layout<'_> {
    fn dnat_chain(&self) -> String {
        chain_name(self.owner.network, self.owner.container_id, DNAT_PREFIX)
    }

    /// CNI-HOSTPORT-DNAT's jumps to the container's chain: one per protocol
    /// and 15 host ports, in the reference's order (protocols sorted).
    fn entry_rules(&self, maps: &[Mapping], v6: bool) -> Vec<Vec<String>> {
        let comment = reference::dnat_comment(self.owner.network, self.owner.container_id);
        let conditions = if v6 { self.conditions_v6 } else { self.conditions_v4 };
        let mut protos: Vec<&str> = maps.iter().map(|m| m.proto).collect();
        protos.sort();
        protos.dedup();
        let mut out = Vec::new();
        for proto in protos {
            let ports: Vec<String> =
                maps.iter().filter(|m| m.proto == proto).map(|m| m.host_port.to_string()).collect();
            for group in ports.chunks(MULTIPORT_MAX) {
                let mut rule = args(&["-m", "comment", "--comment", &comment, "-m", "multiport", "-p", proto]);
                rule.extend(args(&["--destination-ports", &group.join(",")]));
                rule.extend(conditions.iter().flat_map(|c| c.split_whitespace()).map(str::to_string));
                rule.extend(args(&["-j", &self.dnat_chain()]));
                out.push(rule);
            }
        }
        out
    }

    /// The container's chain: per mapping of `ip`'s family, the mark rules
    /// (hairpin, then localhost for IPv4) before the DNAT.
    fn dnat_rules(&self, maps: &[Mapping], ip: IpNet) -> Vec<Vec<String>> {
        let v6 = ip.addr().is_ipv6();
        let mut out = Vec::new();
        for m in maps {
            let mut base = args(&["-p", m.proto, "--dport", &m.host_port.to_string()]);
            match m.host_ip {
                Some(h) if h.is_ipv6() != v6 => continue,
                Some(h) if !h.is_unspecified() => base.extend(args(&["-d", &h.to_string()])),
                _ => {}
            }
            if self.snat {
                let source = match (self.masq_all, v6) {
                    (true, false) => "0.0.0.0/0".to_string(),
                    (true, true) => "::/0".to_string(),
                    (false, _) => ip.trunc().to_string(),
                };
                out.push([base.clone(), args(&["-s", &source, "-j", self.mark.chain()])].concat());
                if !v6 && !self.masq_all {
                    out.push([base.clone(), args(&["-s", "127.0.0.1", "-j", self.mark.chain()])].concat());
                }
            }
            out.push(
                [base, args(&["-j", "DNAT", "--to-destination", &destination(ip.addr(), m.container_port)])].concat(),
            );
        }
        out
    }

    /// The ADD of `ip`'s rules to a nat table listed as `saved`: the shared
    /// chains where missing, and the container's chain made afresh (an
    /// earlier ADD's is removed first, with its jumps).
    fn script(&self, saved: &Saved, maps: &[Mapping], ip: IpNet) -> Script {
        let v6 = ip.addr().is_ipv6();
        let mut script = Script::new(NAT);
        if let (MarkBy::Bit(bit), true) = (self.mark, self.snat) {
            ensure_chain(&mut script, saved, SETMARK_CHAIN, &reference::setmark_rule(*bit));
            ensure_chain(&mut script, saved, MARK_MASQ_CHAIN, &reference::mark_masq_rule(*bit));
            if !jumps_to(saved, "POSTROUTING", MARK_MASQ_CHAIN) {
                script.insert_first("POSTROUTING", &reference::mark_masq_jump());
            }
        }
        if !saved.has_chain(HOSTPORT_DNAT_CHAIN) {
            script.new_chain(HOSTPORT_DNAT_CHAIN);
        }
        for entry in ["PREROUTING", "OUTPUT"] {
            if !jumps_to(saved, entry, HOSTPORT_DNAT_CHAIN) {
                script.append(entry, &reference::hostport_dnat_jump());
            }
        }
        let chain = self.dnat_chain();
        script.extend(takeover::removal(saved, std::slice::from_ref(&chain)));
        script.new_chain(&chain);
        for rule in self.dnat_rules(maps, ip) {
            script.append(&chain, &rule);
        }
        for rule in self.entry_rules(maps, v6) {
            script.append(HOSTPORT_DNAT_CHAIN, &rule);
        }
        script
    }

    /// ADD: the rules of each container address, once every family's
    /// external chain was found. A failure may leave the families before it
    /// written: the caller undoes them with DEL.
    pub fn add(&self, nft: &mut dyn Backend, maps: &[Mapping], ips: &[IpNet]) -> Result<(), CniError> {
        let mut listed = Vec::new();
        for &ip in ips {
            let ipt = self.iptables_for(nft, ip.addr().is_ipv6())?;
            let saved = ipt.save(NAT)?;
            if let MarkBy::External(chain) = self.mark {
                if !saved.has_chain(chain) {
                    return Err(missing_external_chain(ipt, chain));
                }
            }
            listed.push((ip, ipt, saved));
        }
        for (ip, ipt, saved) in listed {
            ipt.apply_fresh(NAT, saved, |s| self.script(s, maps, ip))?;
        }
        Ok(())
    }

    /// CHECK: each address's chain holds its DNAT rules, and is jumped to.
    pub fn check(&self, nft: &mut dyn Backend, maps: &[Mapping], ips: &[IpNet]) -> Result<(), CniError> {
        let chain = self.dnat_chain();
        for &ip in ips {
            let v6 = ip.addr().is_ipv6();
            let ipt = self.iptables_for(nft, v6)?;
            let saved = ipt.save(NAT)?;
            if !saved.has_chain(&chain) || !jumps_to(&saved, HOSTPORT_DNAT_CHAIN, &chain) {
                return Err(CniError::internal(format!("{ipt}: nat chain {chain} of this container is missing")));
            }
            for rule in self.dnat_rules(maps, ip).iter().filter(|r| r.iter().any(|w| w == "DNAT")) {
                let to = rule.last().map(String::as_str);
                if !saved.rules_of(&chain).any(|r| r.target() == Some("DNAT") && r.value_of("--to-destination") == to) {
                    return Err(CniError::internal(format!(
                        "{ipt}: chain {chain} lacks the DNAT to {}",
                        to.unwrap_or("")
                    )));
                }
            }
        }
        Ok(())
    }

    /// The iptables of one family to write to: the flavour whose nat table
    /// holds the external chain (iptables-nft's first), else iptables-nft.
    /// With markMasqBit the probe is PREROUTING: iptables-legacy then only
    /// on a node whose nat table only it has.
    fn iptables_for(&self, nft: &mut dyn Backend, v6: bool) -> Result<Iptables, CniError> {
        let nft_flavor = Iptables { flavor: Flavor::Nft, v6 };
        let legacy = Iptables { flavor: Flavor::Legacy, v6 };
        let probe = match self.mark {
            MarkBy::External(chain) => chain.as_str(),
            MarkBy::Bit(_) => "PREROUTING",
        };
        if nft_flavor.present(nft, NAT, probe) {
            return Ok(nft_flavor);
        }
        if legacy.present(nft, NAT, probe) {
            return Ok(legacy);
        }
        match self.mark {
            MarkBy::External(chain) => Err(missing_external_chain(nft_flavor, chain)),
            MarkBy::Bit(_) => Ok(nft_flavor),
        }
    }
}

/// The external chain is not there (yet: kube-proxy makes it at start-up).
fn missing_external_chain(ipt: Iptables, chain: &str) -> CniError {
    CniError::new(TRY_AGAIN_LATER, format!("externalSetMarkChain {chain:?} does not exist in {ipt}'s nat table"))
}

/// Whether `chain` holds a rule jumping to `target`.
fn jumps_to(saved: &Saved, chain: &str, target: &str) -> bool {
    saved.rules_of(chain).any(|r| r.target() == Some(target))
}

/// Creates `chain` holding `rule`, or adds `rule` to it when it holds no
/// rule of the same target.
fn ensure_chain(script: &mut Script, saved: &Saved, chain: &str, rule: &[String]) {
    if !saved.has_chain(chain) {
        script.new_chain(chain);
    }
    let target = rule.iter().position(|w| w == "-j").and_then(|i| rule.get(i + 1)).map(String::as_str);
    if !saved.rules_of(chain).any(|r| r.target() == target) {
        script.append(chain, rule);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(host_port: u16, container_port: u16, proto: &'static str, host_ip: Option<&str>) -> Mapping {
        Mapping { host_port, container_port, proto, host_ip: host_ip.map(|h| h.parse().unwrap()) }
    }

    fn layout(mark: &MarkBy) -> Layout<'_> {
        Layout {
            owner: Owner { network: "net", container_id: "c1", ifname: "eth0" },
            mark,
            snat: true,
            masq_all: false,
            conditions_v4: &[],
            conditions_v6: &[],
        }
    }

    fn joined(rules: Vec<Vec<String>>) -> Vec<String> {
        rules.into_iter().map(|r| r.join(" ")).collect()
    }

    #[test]
    fn rules_have_the_reference_shape() {
        let mark = MarkBy::External("KUBE-MARK-MASQ".into());
        let l = layout(&mark);
        let maps =
            [m(8080, 80, "tcp", None), m(8053, 53, "udp", Some("fd00::1")), m(9090, 90, "tcp", Some("192.0.2.1"))];
        let ip: IpNet = "10.1.0.5/24".parse().unwrap();
        let chain = l.dnat_chain();
        assert!(chain.starts_with("CNI-DN-") && chain.len() == 28);
        assert_eq!(
            joined(l.dnat_rules(&maps, ip)),
            [
                "-p tcp --dport 8080 -s 10.1.0.0/24 -j KUBE-MARK-MASQ",
                "-p tcp --dport 8080 -s 127.0.0.1 -j KUBE-MARK-MASQ",
                "-p tcp --dport 8080 -j DNAT --to-destination 10.1.0.5:80",
                "-p tcp --dport 9090 -d 192.0.2.1 -s 10.1.0.0/24 -j KUBE-MARK-MASQ",
                "-p tcp --dport 9090 -d 192.0.2.1 -s 127.0.0.1 -j KUBE-MARK-MASQ",
                "-p tcp --dport 9090 -d 192.0.2.1 -j DNAT --to-destination 10.1.0.5:90",
            ]
        );
        let v6: IpNet = "fd01::5/64".parse().unwrap();
        assert_eq!(
            joined(l.dnat_rules(&maps, v6)),
            [
                "-p tcp --dport 8080 -s fd01::/64 -j KUBE-MARK-MASQ",
                "-p tcp --dport 8080 -j DNAT --to-destination [fd01::5]:80",
                "-p udp --dport 8053 -d fd00::1 -s fd01::/64 -j KUBE-MARK-MASQ",
                "-p udp --dport 8053 -d fd00::1 -j DNAT --to-destination [fd01::5]:53",
            ]
        );
        let comment = r#"-m comment --comment dnat name: "net" id: "c1" -m multiport"#;
        assert_eq!(
            joined(l.entry_rules(&maps, false)),
            [
                format!("{comment} -p tcp --destination-ports 8080,9090 -j {chain}"),
                format!("{comment} -p udp --destination-ports 8053 -j {chain}"),
            ]
        );
    }

    #[test]
    fn masq_all_snat_off_conditions_and_long_port_lists() {
        let mark = MarkBy::Bit(5);
        let mut l = layout(&mark);
        l.masq_all = true;
        let ip: IpNet = "10.1.0.5/24".parse().unwrap();
        assert_eq!(
            joined(l.dnat_rules(&[m(80, 80, "tcp", None)], ip))[0],
            "-p tcp --dport 80 -s 0.0.0.0/0 -j CNI-HOSTPORT-SETMARK"
        );
        l.snat = false;
        assert_eq!(
            joined(l.dnat_rules(&[m(80, 80, "tcp", None)], ip)),
            ["-p tcp --dport 80 -j DNAT --to-destination 10.1.0.5:80"]
        );
        let conditions = ["-s 192.0.2.0/24".to_string(), "! -i lo".to_string()];
        l.conditions_v4 = &conditions;
        let maps: Vec<Mapping> = (1..=16).map(|p| m(p, 80, "tcp", None)).collect();
        let entries = joined(l.entry_rules(&maps, false));
        assert_eq!(entries.len(), 2, "multiport takes 15 ports");
        assert!(
            entries[0].contains("--destination-ports 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15 -s 192.0.2.0/24 ! -i lo -j")
        );
        assert!(entries[1].contains("--destination-ports 16 -s"));
    }

    #[test]
    fn scripts_add_what_is_missing_and_replace_the_container_chain() {
        let mark = MarkBy::Bit(13);
        let l = layout(&mark);
        let ip: IpNet = "10.1.0.5/24".parse().unwrap();
        let maps = [m(8080, 80, "tcp", None)];
        let chain = l.dnat_chain();
        let empty =
            Saved::parse("*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n");
        let first = l.script(&empty, &maps, ip);
        // Two mark chains with a rule each, the POSTROUTING jump, the top
        // chain and its two jumps, the container chain with 3 rules and its jump.
        assert_eq!(first.len(), 2 * 2 + 1 + 1 + 2 + 1 + 3 + 1);
        let after = format!(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
             :{SETMARK_CHAIN} - [0:0]\n:{MARK_MASQ_CHAIN} - [0:0]\n:{HOSTPORT_DNAT_CHAIN} - [0:0]\n:{chain} - [0:0]\n\
             -A PREROUTING -m addrtype --dst-type LOCAL -j {HOSTPORT_DNAT_CHAIN}\n\
             -A OUTPUT -m addrtype --dst-type LOCAL -j {HOSTPORT_DNAT_CHAIN}\n\
             -A POSTROUTING -m comment --comment \"CNI portfwd requiring masquerade\" -j {MARK_MASQ_CHAIN}\n\
             -A {SETMARK_CHAIN} -m comment --comment \"CNI portfwd masquerade mark\" -j MARK --set-xmark 0x2000/0x2000\n\
             -A {MARK_MASQ_CHAIN} -m mark --mark 0x2000/0x2000 -j MASQUERADE\n\
             -A {HOSTPORT_DNAT_CHAIN} -p tcp -m comment --comment \"dnat name: \\\"net\\\" id: \\\"c1\\\"\" -m multiport --dports 8080 -j {chain}\n\
             -A {chain} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.1.0.5:80\n\
             COMMIT\n"
        );
        // Again: only the container's chain, removed (jump, flush, delete) and made again.
        let again = l.script(&Saved::parse(&after), &maps, ip);
        assert_eq!(again.len(), 3 + 1 + 3 + 1);
    }
}
