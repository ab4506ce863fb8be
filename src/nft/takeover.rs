//! Taking over a node that ran the reference plugins: DEL and GC find what
//! the reference made for a container, by the reference's naming
//! (reference.rs), and remove it, wherever it wrote it:
//! - iptables (iptables-nft and iptables-legacy, IPv4 and IPv6), nat table:
//!   ipMasq's chain `CNI-<hash>` with its commented POSTROUTING jump;
//!   portmap's `CNI-DN-<hash>` (and old releases' `CNI-SN-<hash>`) with
//!   their commented `CNI-HOSTPORT-DNAT` jumps. The shared chains
//!   (CNI-HOSTPORT-*) stay, as the reference leaves them.
//! - nftables of newer releases: ipMasq's rules in `inet
//!   cni_plugins_masquerade` (comment: a hash of network, interface and
//!   container ID), portmap's rules in `ip`/`ip6 cni_hostport` (comment: the
//!   container ID).
//!
//! GC learns from the same state which address a stale container had: its
//! masquerade jump or rule names its network, its ID and its address, its
//! DNAT chain the address it translates to. With those go the rest of what
//! the reference made for that container, which names no network: its
//! firewall's CNI-FORWARD accepts of the address (unless cnibox's firewall
//! accepts it for an attachment of its own) and its nftables portmap's
//! rules (named by container ID). The runtime's own GC (libcni's) first
//! DELs every stale attachment it cached; this is for a container the
//! runtime forgot.
//!
//! A node that never ran the reference pays one nfnetlink request per
//! place (no exec, no listing), and a /proc read for iptables-legacy (and,
//! where a legacy nat table is loaded, two getsockopts for its chain
//! names: xtables.rs). GC, which does not know the containers' names,
//! reads the nat tables' chain names (one nfnetlink dump, or the legacy
//! getsockopts) and lists only a table holding a chain named as the
//! reference names its per-container chains.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::IpAddr;

use nftables::types::NfFamily;
use serde_json::Value;

use super::backend::Backend;
use super::cni_forward;
use super::error::Result;
use super::iptables::{Iptables, Saved, SavedRule, Script};
use super::listing::ListedRule;
use super::owned;
use super::owner::Owner;
use super::reference::{self, chain_name, parse_comment};

const NAT: &str = "nat";

/// One kind of the reference's per-container state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// bridge's and ptp's ipMasq.
    Masquerade,
    /// portmap.
    Portmap,
}

impl Kind {
    /// The prefixes of its per-container nat chains (after `CNI-`).
    fn chain_prefixes(self) -> &'static [&'static str] {
        match self {
            Kind::Masquerade => &[""],
            Kind::Portmap => &[reference::DNAT_PREFIX, reference::OLD_SNAT_PREFIX],
        }
    }

    /// The chain holding the commented jumps to its per-container chains.
    fn entry_chain(self) -> &'static str {
        match self {
            Kind::Masquerade => "POSTROUTING",
            Kind::Portmap => reference::HOSTPORT_DNAT_CHAIN,
        }
    }

    fn chains_of(self, network: &str, container_id: &str) -> Vec<String> {
        self.chain_prefixes().iter().map(|p| chain_name(network, container_id, p)).collect()
    }

    /// Whether `chain` is named as one of its per-container chains are.
    fn is_container_chain(self, chain: &str) -> bool {
        self.chain_prefixes().iter().any(|p| reference::is_chain_name(chain, p))
    }
}

/// The iptables whose nat table may hold per-container chains of `kinds`
/// (of any container), told by the table's chain names, read without an
/// exec; in doubt, it may.
fn with_container_chains(nft: &mut dyn Backend, kinds: &[Kind]) -> Vec<Iptables> {
    let holds = |names: &BTreeSet<String>| names.iter().any(|n| kinds.iter().any(|k| k.is_container_chain(n)));
    Iptables::ALL.into_iter().filter(|ipt| ipt.chain_names(nft, NAT).is_none_or(|names| holds(&names))).collect()
}

/// The deletion of `doomed` nat chains (those `saved` holds): every rule
/// jumping to them, then their rules and the chains themselves.
pub fn removal(saved: &Saved, doomed: &[String]) -> Script {
    let doomed: Vec<&String> = doomed.iter().filter(|c| saved.has_chain(c)).collect();
    let mut script = Script::new(NAT);
    let is_doomed = |c: &str| doomed.iter().any(|d| *d == c);
    for rule in saved.rules.iter().filter(|r| !is_doomed(&r.chain) && r.target().is_some_and(is_doomed)) {
        script.delete(&rule.chain, &rule.spec);
    }
    for chain in &doomed {
        script.flush_chain(chain);
        script.delete_chain(chain);
    }
    script
}

/// Removes the nat chains `pick` chooses from a listing, in every iptables
/// of `candidates` (those that may hold some): one listing and at most one
/// commit each. Best effort: returns the first error.
fn remove_nat_chains(candidates: &[Iptables], pick: impl Fn(&Saved) -> Vec<String>) -> Result<()> {
    let mut first_error = None;
    for &ipt in candidates {
        let done = match ipt.save(NAT) {
            Ok(saved) => ipt.apply_fresh(NAT, saved, |s| removal(s, &pick(s))),
            Err(e) if e.is_unsupported() => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            log::warn!("{ipt}: removing the reference's nat chains: {e}");
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The entry chain's jumps in `saved` to the per-container chains of
/// `network`'s stale containers: their comment names a container of
/// `network` that `valid` rejects, and their target is that container's
/// chain. With the container's ID.
fn stale_jumps<'a>(
    saved: &'a Saved,
    kind: Kind,
    network: &str,
    valid: &dyn Fn(&str) -> bool,
) -> Vec<(&'a SavedRule, String)> {
    let mut out = Vec::new();
    for rule in saved.rules_of(kind.entry_chain()) {
        let (Some(target), Some((net, id))) = (rule.target(), rule.comment().and_then(parse_comment)) else {
            continue;
        };
        if net == network && !valid(&id) && kind.chains_of(&net, &id).iter().any(|c| c == target) {
            out.push((rule, id));
        }
    }
    out
}

/// The chains those jumps go to, each once.
fn targets(jumps: &[(&SavedRule, String)]) -> Vec<String> {
    let chains: BTreeSet<String> = jumps.iter().filter_map(|(rule, _)| rule.target()).map(str::to_string).collect();
    chains.into_iter().collect()
}

/// The containers GC found stale in the reference's state, and the
/// addresses that state names for them.
#[derive(Debug, Default)]
struct StaleContainers {
    ids: BTreeSet<String>,
    /// The starts of IDs a cut comment gave (long network names leave an
    /// nftables ipMasq comment no room for the whole ID).
    id_starts: BTreeSet<String>,
    ips: BTreeSet<IpAddr>,
}

/// The shortest start of a container ID that still names one container
/// (runtimes' IDs are 64 hex digits): a shorter one is not used.
const MIN_ID_START: usize = 32;

impl StaleContainers {
    fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.id_starts.is_empty()
    }

    /// Whether a container ID (a `cni_hostport` rule's comment) is one of them.
    fn holds(&self, id: &str) -> bool {
        self.ids.contains(id) || self.id_starts.iter().any(|start| id.starts_with(start.as_str()))
    }

    /// From iptables: a masquerade jump's source, a DNAT chain's destinations.
    fn note_jumps(&mut self, saved: &Saved, kind: Kind, jumps: &[(&SavedRule, String)]) {
        for (jump, id) in jumps {
            self.ids.insert(id.clone());
            let addresses: Vec<IpAddr> = match kind {
                Kind::Masquerade => jump.value_of("-s").and_then(reference::rule_address).into_iter().collect(),
                Kind::Portmap => {
                    let chain = jump.target().unwrap_or_default();
                    saved
                        .rules_of(chain)
                        .filter_map(|r| r.value_of("--to-destination"))
                        .filter_map(reference::rule_address)
                        .collect()
                }
            };
            self.ips.extend(addresses);
        }
    }

    /// From nftables: the masquerade rules removed (comment, `ip saddr`).
    fn note_masq_rules(&mut self, rules: &[ListedRule]) {
        for rule in rules {
            let Some(comment) = rule.comment.as_deref() else { continue };
            if let Some(id) = reference::masq_comment_container(comment) {
                if !reference::masq_comment_is_cut(comment) {
                    self.ids.insert(id.to_string());
                } else if id.len() >= MIN_ID_START {
                    self.id_starts.insert(id.to_string());
                }
            }
            self.ips.extend(matched_address(&rule.expr, "saddr"));
        }
    }
}

/// The address an nft rule's `ip|ip6 <field> == <address>` match names.
fn matched_address(expr: &Value, field: &str) -> Option<IpAddr> {
    expr.as_array()?.iter().find_map(|stmt| {
        let m = stmt.get("match")?;
        let left = m.pointer("/left/payload/field")?.as_str()?;
        (left == field).then(|| m.get("right")?.as_str()?.parse().ok()).flatten()
    })
}

/// The reference's nftables table of `kind`: (family, table) of each, and a
/// chain every such table has.
fn nft_tables(kind: Kind) -> (&'static [NfFamily], &'static str, &'static str) {
    match kind {
        Kind::Masquerade => (&[NfFamily::INet], reference::MASQ_TABLE, reference::MASQ_CHAIN),
        Kind::Portmap => (&[NfFamily::IP, NfFamily::IP6], reference::HOSTPORT_TABLE, reference::HOSTPORT_CHAIN),
    }
}

/// Deletes the rules of the reference's nftables table(s) of `kind` whose
/// comment `doomed` accepts, in one transaction per table, after one
/// nfnetlink request finds the table. Best effort: returns the first error,
/// else the rules deleted.
fn remove_nft_rules(nft: &mut dyn Backend, kind: Kind, doomed: &dyn Fn(&str) -> bool) -> Result<Vec<ListedRule>> {
    let (families, table, chain) = nft_tables(kind);
    let mut first_error = None;
    let mut removed = Vec::new();
    for family in families {
        let done = match nft.has_chain(*family, table, chain) {
            Ok(true) => match nft.list(*family, table) {
                Ok(Some(listing)) => owned::delete_owned(nft, *family, table, &listing, doomed).map(|(_, r)| r),
                Ok(None) => Ok(Vec::new()),
                Err(e) => Err(e),
            },
            Ok(false) => Ok(Vec::new()),
            Err(e) => Err(e),
        };
        match done {
            Ok(rules) => removed.extend(rules),
            Err(e) => {
                log::warn!("removing the reference's rules from {table}: {e}");
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(removed), Err)
}

/// Whether an nftables rule comment of the reference's `kind` belongs to `owner`.
fn nft_owned(kind: Kind, owner: &Owner, comment: &str) -> bool {
    match kind {
        Kind::Masquerade => {
            comment.starts_with(&reference::masq_instance_hash(owner.network, owner.ifname, owner.container_id))
        }
        Kind::Portmap => comment == owner.container_id,
    }
}

/// The iptables whose nat table may hold one of `chains` (cheaply: no
/// exec; for iptables-legacy one read of the table's chain names).
fn holders(nft: &mut dyn Backend, chains: &[String]) -> Vec<Iptables> {
    Iptables::ALL.into_iter().filter(|ipt| ipt.holds_any(nft, NAT, chains)).collect()
}

/// DEL: removes what the reference made of `kind` for `owner`.
pub fn remove(nft: &mut dyn Backend, kind: Kind, owner: &Owner) -> Result<()> {
    // For historical reasons the reference's iptables names ignore ifname.
    let chains = kind.chains_of(owner.network, owner.container_id);
    let candidates = holders(nft, &chains);
    let iptables = remove_nat_chains(&candidates, |_| chains.clone());
    // Best effort: the nftables part runs whatever iptables said; the first error wins.
    let nftables = remove_nft_rules(nft, kind, &|c| nft_owned(kind, owner, c));
    iptables.and(nftables.map(drop))
}

/// GC: removes what the reference made of `kind` for containers of
/// `network` that are not in `valid`, and the rest of what it made for
/// those containers (the module's comment). portmap's nftables rules name
/// no network: they go only with a container found stale so.
pub fn remove_stale(nft: &mut dyn Backend, kind: Kind, network: &str, valid: &[Owner]) -> Result<()> {
    let valid_id = |id: &str| valid.iter().any(|o| o.container_id == id);
    let candidates = with_container_chains(nft, &[kind]);
    let stale = RefCell::new(StaleContainers::default());
    let iptables = remove_nat_chains(&candidates, |saved| {
        let jumps = stale_jumps(saved, kind, network, &valid_id);
        stale.borrow_mut().note_jumps(saved, kind, &jumps);
        targets(&jumps)
    });
    let nftables = match kind {
        Kind::Masquerade => {
            let doomed = |c: &str| {
                c.starts_with(&reference::masq_network_hash(network))
                    && !valid.iter().any(|o| c == reference::masq_comment(network, o.ifname, o.container_id))
            };
            remove_nft_rules(nft, kind, &doomed).map(|rules| stale.borrow_mut().note_masq_rules(&rules))
        }
        Kind::Portmap => Ok(()),
    };
    let rest = remove_the_rest(nft, &stale.into_inner());
    iptables.and(nftables).and(rest)
}

/// What else the reference made for `stale` containers: its firewall's
/// accepts of their addresses (unless cnibox's firewall holds one) and its
/// nftables portmap's rules. Best effort: returns the first error.
fn remove_the_rest(nft: &mut dyn Backend, stale: &StaleContainers) -> Result<()> {
    if stale.is_empty() {
        return Ok(());
    }
    log::info!("the reference's state of stale containers {stale:?}");
    let ips: Vec<IpAddr> = stale.ips.iter().copied().collect();
    let accepts = cni_forward::close_unheld(nft, &ips);
    let ports = remove_nft_rules(nft, Kind::Portmap, &|c| stale.holds(c));
    accepts.and(ports.map(drop))
}

/// One of the reference's per-container objects, for the doctor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// Where it is: `iptables-nft nat CNI-...`, `nft inet cni_plugins_masquerade`.
    pub place: String,
    pub container_id: String,
}

/// Every per-container object of the reference on this node, whoever owns
/// it (the doctor decides which containers are gone).
pub fn leftovers(nft: &mut dyn Backend) -> Result<Vec<Leftover>> {
    let mut out = Vec::new();
    for ipt in with_container_chains(nft, &[Kind::Masquerade, Kind::Portmap]) {
        let saved = match ipt.save(NAT) {
            Ok(saved) => saved,
            Err(e) if e.is_unsupported() => continue,
            Err(e) => return Err(e),
        };
        for rule in &saved.rules {
            let (Some(target), Some((net, id))) = (rule.target(), rule.comment().and_then(parse_comment)) else {
                continue;
            };
            if [Kind::Masquerade, Kind::Portmap].iter().any(|k| k.chains_of(&net, &id).iter().any(|c| c == target)) {
                out.push(Leftover { place: format!("{ipt} {NAT} {target} (network {net})"), container_id: id });
            }
        }
    }
    for kind in [Kind::Masquerade, Kind::Portmap] {
        let (families, table, chain) = nft_tables(kind);
        for family in families {
            if !nft.has_chain(*family, table, chain)? {
                continue;
            }
            let Some(listing) = nft.list(*family, table)? else { continue };
            for comment in listing.rules().into_iter().filter_map(|r| r.comment) {
                let id = match kind {
                    Kind::Masquerade => reference::masq_comment_container(&comment).map(str::to_string),
                    Kind::Portmap => Some(comment.clone()),
                };
                let place = format!("nft {} {table}", super::schema::family_str(*family));
                out.extend(id.map(|container_id| Leftover { place, container_id }));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved_nat(network: &str, ids: &[&str]) -> Saved {
        let mut text = String::from("*nat\n:POSTROUTING ACCEPT [0:0]\n:CNI-HOSTPORT-DNAT - [0:0]\n");
        for id in ids {
            let masq = chain_name(network, id, "");
            let dn = chain_name(network, id, "DN-");
            let comment = reference::comment(network, id).replace('"', "\\\"");
            text += &format!(":{masq} - [0:0]\n:{dn} - [0:0]\n");
            text += &format!("-A POSTROUTING -s 10.0.0.5/32 -m comment --comment \"{comment}\" -j {masq}\n");
            text += &format!("-A {masq} -d 10.0.0.0/24 -m comment --comment \"{comment}\" -j ACCEPT\n");
            text += &format!(
                "-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment \"dnat {comment}\" -m multiport --dports 80 -j {dn}\n"
            );
            text += &format!("-A {dn} -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.5:80\n");
        }
        Saved::parse(&(text + "COMMIT\n"))
    }

    #[test]
    fn removal_deletes_the_jumps_then_the_chains() {
        let saved = saved_nat("net", &["c1", "c2"]);
        let doomed = Kind::Masquerade.chains_of("net", "c1");
        let script = removal(&saved, &doomed);
        // The POSTROUTING jump, a flush and the chain.
        assert_eq!(script.len(), 3);
        assert!(removal(&saved, &Kind::Masquerade.chains_of("net", "c9")).is_empty());
        // portmap: the DNAT jump, the DN chain; no SN chain is there.
        assert_eq!(removal(&saved, &Kind::Portmap.chains_of("net", "c2")).len(), 3);
    }

    #[test]
    fn stale_chains_are_found_by_their_jumps_comments() {
        let saved = saved_nat("net", &["c1", "c2"]);
        let valid = |id: &str| id == "c1";
        let chains = |kind, network, valid: &dyn Fn(&str) -> bool| targets(&stale_jumps(&saved, kind, network, valid));
        assert_eq!(chains(Kind::Masquerade, "net", &valid), [chain_name("net", "c2", "")]);
        assert_eq!(chains(Kind::Portmap, "net", &valid), [chain_name("net", "c2", "DN-")]);
        assert!(chains(Kind::Masquerade, "other", &|_| false).is_empty());
    }

    #[test]
    fn stale_containers_and_their_addresses_from_the_jumps() {
        let saved = saved_nat("net", &["c1", "c2"]);
        for kind in [Kind::Masquerade, Kind::Portmap] {
            let mut stale = StaleContainers::default();
            stale.note_jumps(&saved, kind, &stale_jumps(&saved, kind, "net", &|id| id == "c1"));
            assert_eq!(stale.ids.into_iter().collect::<Vec<_>>(), ["c2"], "{kind:?}");
            assert_eq!(stale.ips.into_iter().collect::<Vec<_>>(), ["10.0.0.5".parse::<IpAddr>().unwrap()]);
        }
    }

    #[test]
    fn an_nft_masquerade_rule_names_its_source() {
        let expr = serde_json::json!([
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "10.0.0.7"}},
            {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                       "right": {"prefix": {"addr": "10.0.0.0", "len": 24}}}},
            {"masquerade": null}
        ]);
        assert_eq!(matched_address(&expr, "saddr"), "10.0.0.7".parse().ok());
        assert_eq!(matched_address(&expr, "daddr"), None);
        let rule = ListedRule {
            chain: "c".into(),
            handle: 1,
            comment: Some(reference::masq_comment("n", "eth0", "c9")),
            expr,
        };
        let mut stale = StaleContainers::default();
        stale.note_masq_rules(std::slice::from_ref(&rule));
        assert!(stale.holds("c9") && !stale.holds("c99") && stale.ips.len() == 1);
        // A long network name cuts the comment, and with it the ID: its start names the container.
        let id = "0123456789abcdef".repeat(4);
        let cut = ListedRule { comment: Some(reference::masq_comment(&"n".repeat(20), "eth0", &id)), ..rule.clone() };
        let mut stale = StaleContainers::default();
        stale.note_masq_rules(&[cut]);
        assert!(stale.holds(&id) && !stale.holds(&"f".repeat(64)));
        // Cut so far that the start could be anyone's: not used.
        let short = ListedRule { comment: Some(reference::masq_comment(&"n".repeat(80), "eth0", &id)), ..rule };
        let mut stale = StaleContainers::default();
        stale.note_masq_rules(&[short]);
        assert!(stale.is_empty());
    }

    #[test]
    fn nft_rules_of_the_owner_only() {
        let owner = Owner { network: "n", container_id: "c1", ifname: "eth0" };
        assert!(nft_owned(Kind::Masquerade, &owner, &reference::masq_comment("n", "eth0", "c1")));
        assert!(!nft_owned(Kind::Masquerade, &owner, &reference::masq_comment("n", "eth1", "c1")));
        assert!(nft_owned(Kind::Portmap, &owner, "c1") && !nft_owned(Kind::Portmap, &owner, "c10"));
    }
}
