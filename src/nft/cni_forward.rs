//! The firewall plugin's way through iptables' FORWARD, where that drops.
//!
//! nftables evaluates every base chain at a hook, and a drop anywhere is
//! final: cnibox's accept in `inet cnibox-firewall` does nothing against
//! dockerd's `iptables -P FORWARD DROP` or ufw's rules. So, as the
//! reference does, the accept is made where the drop is, with the
//! reference's names and rule shapes (reference.rs), so that either
//! implementation removes the other's rules:
//! ```text
//! FORWARD:      -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD   (first)
//! CNI-FORWARD:  -m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN   (first)
//!               -d <ip>/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
//!               -s <ip>/32 -j ACCEPT
//!               -d <ip>/32 -m conntrack --ctstate DNAT -j ACCEPT    (cnibox's own)
//! ```
//! The last rule goes beyond the reference, whose firewall lets only
//! replies in (containernetworking/plugins issue 467): a connection
//! translated to the container (a host port's, or kube-proxy's) was sent
//! there on purpose, and a host port reached from another machine would
//! otherwise be dropped. The reference leaves it alone; cnibox's DEL and
//! GC remove it with the others.
//! Only an iptables whose FORWARD may drop gets them (iptables-nft and
//! iptables-legacy, IPv4 and IPv6 each decide for themselves); a node
//! without iptables pays one nfnetlink request and one /proc read per
//! address family, and a loaded legacy filter table two getsockopts for
//! its chain names (xtables.rs), so that DEL lists it only when it holds
//! CNI-FORWARD. DEL removes the container's accepts and leaves
//! CNI-FORWARD and its jumps, as the reference does.

use std::collections::BTreeSet;
use std::net::IpAddr;

use nftables::types::NfFamily;

use super::backend::Backend;
use super::error::Result;
use super::iptables::{Flavor, Iptables, Saved, Script};
use super::reference::{self, admin_jump, forward_accepts, forward_jump, host, FORWARD_CHAIN};

/// cnibox's own firewall table (applets/firewall.rs): the addresses in its
/// sets are those of the attachments its firewall serves.
pub const FIREWALL_FAMILY: NfFamily = NfFamily::INet;
pub const FIREWALL_TABLE: &str = "cnibox-firewall";

/// Every accept of one container address: the reference's two, and
/// cnibox's for connections translated to it.
fn container_accepts(ip: IpAddr) -> [Vec<String>; 3] {
    let [to, from] = forward_accepts(ip);
    let translated = ["-d", &host(ip), "-m", "conntrack", "--ctstate", "DNAT", "-j", "ACCEPT"];
    [to, from, translated.iter().map(|w| w.to_string()).collect()]
}

const TABLE: &str = "filter";

/// The addresses of `ips` that `ipt` handles.
fn of_family(ipt: Iptables, ips: &[IpAddr]) -> Vec<IpAddr> {
    ips.iter().copied().filter(|ip| ip.is_ipv6() == ipt.v6).collect()
}

/// `ipt`'s filter table when its FORWARD may drop. A table iptables cannot
/// read (nft's own `ip filter`) is left to nftables.
fn dropping_filter(nft: &mut dyn Backend, ipt: Iptables) -> Result<Option<Saved>> {
    if !ipt.present(nft, TABLE, "FORWARD") || certainly_accepts(nft, ipt) {
        return Ok(None);
    }
    let saved = match ipt.save(TABLE) {
        Ok(saved) => saved,
        Err(e) if e.is_unsupported() => {
            log::info!("{ipt}: {e}; not opening a way through it");
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    Ok(saved.may_drop("FORWARD", FORWARD_CHAIN).then_some(saved))
}

/// Whether iptables-nft's FORWARD certainly lets everything through: its
/// policy accepts, and no rule of it or of a chain it reaches drops,
/// rejects or hands the packet to an xt target (a REJECT is one). Read over
/// nfnetlink, so that a node whose FORWARD cannot drop (accepting rules
/// only, the reference's CNI-FORWARD left behind) pays no iptables-save. In doubt (legacy iptables, an error): false, and the save
/// decides.
fn certainly_accepts(nft: &mut dyn Backend, ipt: Iptables) -> bool {
    if ipt.flavor != Flavor::Nft {
        return false;
    }
    let family = ipt.nft_family();
    let Ok(chains) = nft.base_chains() else { return false };
    let forward = chains.iter().find(|c| c.family == family && c.table == TABLE && c.name == "FORWARD");
    if forward.is_none_or(|c| c.drops) {
        return false;
    }
    let mut todo = vec!["FORWARD".to_string()];
    let mut seen = BTreeSet::new();
    while let Some(chain) = todo.pop() {
        if !seen.insert(chain.clone()) {
            continue;
        }
        let Ok(rules) = nft.chain_rules(family, TABLE, &chain) else { return false };
        if rules.iter().any(|r| r.may_drop) {
            return false;
        }
        todo.extend(rules.into_iter().flat_map(|r| r.jumps));
    }
    true
}

/// Whether iptables-nft's CNI-FORWARD may hold accepts (for the DEL of any
/// address): a chain of jumps only (to the admin chain) holds none, and then
/// nothing is saved. Any other rule, or doubt: true.
fn may_hold_accepts(nft: &mut dyn Backend, ipt: Iptables) -> bool {
    if ipt.flavor != Flavor::Nft {
        return true;
    }
    let rules = nft.chain_rules(ipt.nft_family(), TABLE, FORWARD_CHAIN);
    rules.map_or(true, |rules| rules.iter().any(|r| r.jumps.is_empty()))
}

/// What `saved` lacks of the hole for `ips`.
fn opening(saved: &Saved, ips: &[IpAddr], admin_chain: &str) -> Script {
    let mut script = Script::new(TABLE);
    for chain in [FORWARD_CHAIN, admin_chain] {
        if !saved.has_chain(chain) {
            script.new_chain(chain);
        }
    }
    if !saved.has_rule("FORWARD", &forward_jump()) {
        script.insert_first("FORWARD", &forward_jump());
    }
    if !saved.has_rule(FORWARD_CHAIN, &admin_jump(admin_chain)) {
        script.insert_first(FORWARD_CHAIN, &admin_jump(admin_chain));
    }
    for accept in ips.iter().flat_map(|ip| container_accepts(*ip)) {
        if !saved.has_rule(FORWARD_CHAIN, &accept) {
            script.append(FORWARD_CHAIN, &accept);
        }
    }
    script
}

/// The deletion of the accepts for `ips` that `saved` holds.
fn closing(saved: &Saved, ips: &[IpAddr]) -> Script {
    let mut script = Script::new(TABLE);
    for accept in ips.iter().flat_map(|ip| container_accepts(*ip)) {
        if saved.has_rule(FORWARD_CHAIN, &accept) {
            script.delete(FORWARD_CHAIN, &accept);
        }
    }
    script
}

/// ADD: opens the way for `ips` through every iptables whose FORWARD may
/// drop. Returns the iptables it changed, for the caller's undo.
pub fn open(nft: &mut dyn Backend, ips: &[IpAddr], admin_chain: &str) -> Result<Vec<Iptables>> {
    let mut opened = Vec::new();
    for ipt in Iptables::ALL {
        let ips = of_family(ipt, ips);
        if ips.is_empty() {
            continue;
        }
        let Some(saved) = dropping_filter(nft, ipt)? else { continue };
        ipt.apply_fresh(TABLE, saved, |s| opening(s, &ips, admin_chain))?;
        opened.push(ipt);
    }
    Ok(opened)
}

/// Whether `ipt` may hold the reference's CNI-FORWARD (cheaply: no exec;
/// for iptables-legacy one read of the filter table's chain names).
fn may_hold_forward_chain(nft: &mut dyn Backend, ipt: Iptables) -> bool {
    ipt.present(nft, TABLE, FORWARD_CHAIN)
}

/// DEL and GC: removes the accepts for `ips` from every iptables that has
/// them (whoever made them: these rules name no owner), best effort: every
/// iptables is tried, the first error is returned.
pub fn close(nft: &mut dyn Backend, ips: &[IpAddr]) -> Result<()> {
    let mut first_error = None;
    for ipt in Iptables::ALL {
        let ips = of_family(ipt, ips);
        if ips.is_empty() || !may_hold_forward_chain(nft, ipt) || !may_hold_accepts(nft, ipt) {
            continue;
        }
        let done = match ipt.save(TABLE) {
            Ok(saved) if saved.has_chain(FORWARD_CHAIN) => ipt.apply_fresh(TABLE, saved, |s| closing(s, &ips)),
            Ok(_) => Ok(()),
            Err(e) if e.is_unsupported() => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            log::warn!("{ipt}: removing the accepts of {ips:?}: {e}");
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The addresses cnibox's firewall table accepts (elements whose key is an
/// address: the container sets).
pub fn held_addresses(nft: &mut dyn Backend) -> Result<BTreeSet<IpAddr>> {
    let listing = nft.list(FIREWALL_FAMILY, FIREWALL_TABLE)?.unwrap_or_default();
    Ok(listing.elements().iter().filter_map(|e| e.key.as_str()?.parse().ok()).collect())
}

/// [`close`] for those of `ips` that cnibox's firewall does not hold (an
/// address a stale attachment had may be a live one's now).
pub fn close_unheld(nft: &mut dyn Backend, ips: &[IpAddr]) -> Result<()> {
    if ips.is_empty() {
        return Ok(());
    }
    let held = held_addresses(nft)?;
    let doomed: Vec<IpAddr> = ips.iter().copied().filter(|ip| !held.contains(ip)).collect();
    close(nft, &doomed)
}

/// Every address CNI-FORWARD accepts, in each iptables that has the chain
/// (for the doctor): the addresses of its `-s`/`-d` ACCEPT rules.
pub fn accepted_addresses(nft: &mut dyn Backend) -> Result<Vec<(Iptables, IpAddr)>> {
    let mut out = Vec::new();
    for ipt in Iptables::ALL {
        if !may_hold_forward_chain(nft, ipt) || !may_hold_accepts(nft, ipt) {
            continue;
        }
        let saved = match ipt.save(TABLE) {
            Ok(saved) => saved,
            Err(e) if e.is_unsupported() => continue,
            Err(e) => return Err(e),
        };
        let mut ips = BTreeSet::new();
        for rule in saved.rules_of(FORWARD_CHAIN).filter(|r| r.target() == Some("ACCEPT")) {
            let address = rule.value_of("-s").or_else(|| rule.value_of("-d"));
            ips.extend(address.and_then(reference::rule_address));
        }
        out.extend(ips.into_iter().map(|ip| (ipt, ip)));
    }
    Ok(out)
}

/// CHECK: where FORWARD may drop, the way for `ips` must be open. Returns
/// what is missing.
pub fn check(nft: &mut dyn Backend, ips: &[IpAddr], admin_chain: &str) -> Result<Option<String>> {
    for ipt in Iptables::ALL {
        let ips = of_family(ipt, ips);
        if ips.is_empty() {
            continue;
        }
        let Some(saved) = dropping_filter(nft, ipt)? else { continue };
        let missing = opening(&saved, &ips, admin_chain);
        if !missing.is_empty() {
            return Ok(Some(format!("{ipt}: FORWARD drops and {} of the firewall's rules are missing", missing.len())));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::fake::Fake;
    use crate::nft::schema::{add, jump, Stmt, Table, Transaction};
    use nftables::schema::NfListObject;
    use nftables::stmt::Statement;
    use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

    fn ips() -> Vec<IpAddr> {
        vec!["10.0.0.5".parse().unwrap()]
    }

    #[test]
    fn opening_adds_only_what_is_missing() {
        let empty = Saved::parse("*filter\n:FORWARD DROP [0:0]\nCOMMIT\n");
        let script = opening(&empty, &ips(), "CNI-ADMIN");
        // Two chains, two jumps, three accepts.
        assert_eq!(script.len(), 7);
        let done = Saved::parse(
            "*filter\n:FORWARD DROP [0:0]\n:CNI-FORWARD - [0:0]\n:CNI-ADMIN - [0:0]\n\
             -A FORWARD -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD\n\
             -A CNI-FORWARD -m comment --comment \"CNI firewall plugin admin overrides\" -j CNI-ADMIN\n\
             -A CNI-FORWARD -d 10.0.0.5/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
             -A CNI-FORWARD -s 10.0.0.5/32 -j ACCEPT\n\
             -A CNI-FORWARD -d 10.0.0.5/32 -m conntrack --ctstate DNAT -j ACCEPT\nCOMMIT\n",
        );
        assert!(opening(&done, &ips(), "CNI-ADMIN").is_empty());
        assert_eq!(closing(&done, &ips()).len(), 3);
        assert!(closing(&empty, &ips()).is_empty());
        // Another admin chain: its chain and jump.
        assert_eq!(opening(&done, &ips(), "OPS").len(), 2);
    }

    /// iptables-nft's `ip filter` as nft holds it: FORWARD (with `policy`)
    /// jumping to CNI-FORWARD, which jumps to CNI-ADMIN, plus `extra` rules
    /// (chain, statements).
    fn fake_filter(policy: NfChainPolicy, extra: Vec<(&str, Vec<Stmt>)>) -> Fake {
        let t = Table { family: NfFamily::IP, name: TABLE };
        let forward = nftables::schema::Chain {
            policy: Some(policy),
            ..t.base_chain("FORWARD", NfChainType::Filter, NfHook::Forward, 0)
        };
        let mut objs = vec![t.add_table(), add(NfListObject::Chain(forward))];
        for chain in [FORWARD_CHAIN, "CNI-ADMIN"] {
            objs.push(add(NfListObject::Chain(t.chain(chain))));
        }
        objs.push(t.rule("FORWARD", vec![jump(FORWARD_CHAIN)], None));
        objs.push(t.rule(FORWARD_CHAIN, vec![jump("CNI-ADMIN")], None));
        objs.extend(extra.into_iter().map(|(chain, stmts)| t.rule(chain, stmts, None)));
        let mut nft = Fake::new();
        nft.apply(&Transaction::from(objs)).unwrap();
        nft
    }

    const IPT: Iptables = Iptables { flavor: Flavor::Nft, v6: false };

    #[test]
    fn a_forward_that_cannot_drop_is_read_without_a_save() {
        let accept = || vec![Statement::Accept(None)];
        let drop = || vec![Statement::Drop(None)];
        // The reference's chains left behind, an accepting operator rule: nothing drops.
        assert!(certainly_accepts(&mut fake_filter(NfChainPolicy::Accept, vec![("FORWARD", accept())]), IPT));
        // dockerd's policy, or a drop anywhere FORWARD leads: the save decides.
        assert!(!certainly_accepts(&mut fake_filter(NfChainPolicy::Drop, vec![]), IPT));
        assert!(!certainly_accepts(&mut fake_filter(NfChainPolicy::Accept, vec![("CNI-ADMIN", drop())]), IPT));
        // No such table, or legacy iptables: in doubt.
        assert!(!certainly_accepts(&mut Fake::new(), IPT));
        let legacy = Iptables { flavor: Flavor::Legacy, v6: false };
        assert!(!certainly_accepts(&mut fake_filter(NfChainPolicy::Accept, vec![]), legacy));
    }

    #[test]
    fn a_cni_forward_of_jumps_only_holds_no_accepts() {
        assert!(!may_hold_accepts(&mut fake_filter(NfChainPolicy::Accept, vec![]), IPT));
        let accept = vec![Statement::Accept(None)];
        assert!(may_hold_accepts(&mut fake_filter(NfChainPolicy::Accept, vec![(FORWARD_CHAIN, accept)]), IPT));
    }
}
