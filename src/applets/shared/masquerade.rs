//! Outbound masquerading (`ipMasq`) and the MAC spoof check (`macspoofchk`)
//! of the bridge and ptp plugins, written with nftables in tables cnibox
//! owns.
//!
//! Layout, chosen so that a container's ADD and DEL cost one nfnetlink batch
//! each (no nft exec, no listing), whatever the number of containers:
//!
//! - `inet cnibox-masq`: per network and subnet, a set `m_<net>_<subnet>` of
//!   the containers' addresses and a nat base chain of the same name holding
//!   one rule `saddr @set daddr != <subnet> daddr != <multicast> masquerade`.
//!   When the set exists, ADD creates the container's element through
//!   nfnetlink; otherwise (or when the address is held by a stale element)
//!   one nft transaction re-declares set and chain (idempotent), flushes and
//!   re-adds the one rule (so it never doubles), and adds the element. DEL
//!   with prevResult deletes the elements by key; without it, it lists the
//!   tables and finds them by comment, and then a set left empty goes with
//!   its chain. GC removes those a DEL by key left empty: a network's set
//!   and chain cost nothing while empty, and deleting them at every last
//!   DEL would make each next ADD declare them again (two nft transactions
//!   per container where a network has one at a time).
//! - `bridge cnibox-macspoof`: a set of guarded ports and a set of allowed
//!   `port . mac` pairs, and one rule dropping frames that enter a guarded
//!   port with any other source MAC.
//!
//! Every element carries its owner's comment (`nft::Owner`), so DEL finds
//! a container's elements from its ID alone (no prevResult, netns gone) and
//! GC can tell whose they are. Elements written by earlier releases carry
//! `<network hash> <container id> <ifname>`: DEL, CHECK and GC accept both.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use nftables::expr::MetaKey;
use nftables::schema::{NfListObject, Set, SetType, SetTypeValue};
use nftables::stmt::{Operator, Statement};
use nftables::types::{NfChainType, NfFamily, NfHook};

use crate::cni::{fault, gc, CniError, CniResult};
use crate::nft::owned;
use crate::nft::owner::is_network;
use crate::nft::schema::{
    add, concat, cow, delete_chain, delete_set, eq, matches, meta, payload, prefix, str_expr, Obj, Table, Transaction,
};
use crate::nft::takeover::{self, Kind};
use crate::nft::{Backend, Element, ElementOp, Key, Listing, Owner};
use crate::util::hash::short_hex;
use crate::util::lock::FileLock;

pub const MASQ_TABLE: &str = "cnibox-masq";
pub const SPOOF_TABLE: &str = "cnibox-macspoof";
const MASQ: Table = Table { family: NfFamily::INet, name: MASQ_TABLE };
const SPOOF: Table = Table { family: NfFamily::Bridge, name: SPOOF_TABLE };
const SPOOF_CHAIN: &str = "prerouting";
const SPOOF_PORTS: &str = "ports";
const SPOOF_ALLOWED: &str = "allowed";
/// nft keeps at most this many bytes of a comment.
const COMMENT_MAX: usize = 127;

/// The network's 8 hex digits in set names, locks and the v0 comments.
pub fn network_hash(network: &str) -> String {
    short_hex(&[network], 8)
}

/// Set and chain name for one network's subnet.
fn masq_name(network: &str, subnet: &IpNet) -> String {
    format!("m_{}_{}", network_hash(network), short_hex(&[&subnet.to_string()], 8))
}

fn masq_prefix(network: &str) -> String {
    format!("m_{}_", network_hash(network))
}

/// Serializes masquerade changes of one network across processes, so that
/// removing a network's set and chain never races with a new element.
fn network_lock(network: &str) -> Result<FileLock, CniError> {
    let dir = std::env::var_os("CNIBOX_LOCK_DIR").map(PathBuf::from).unwrap_or_else(|| "/run/cnibox/locks".into());
    Ok(FileLock::exclusive(&dir.join(format!("masq-{}.lock", network_hash(network))))?)
}

/// What one ADD asks for: masquerading of its addresses, a guarded port.
#[derive(Debug, Default)]
pub struct Additions {
    masquerade: Vec<IpNet>,
    /// (host port, the container's MAC)
    guard: Option<(String, String)>,
}

impl Additions {
    /// Masquerade what `ips` send beyond their subnets.
    pub fn masquerade(&mut self, ips: &[IpNet]) {
        self.masquerade.extend_from_slice(ips);
    }
    /// Frames entering `host_port` must come from `mac`.
    pub fn guard(&mut self, host_port: &str, mac: &str) {
        self.guard = Some((host_port.to_string(), mac.to_string()));
    }
    pub fn is_empty(&self) -> bool {
        self.masquerade.is_empty() && self.guard.is_none()
    }
}

fn ip_set_type(ip: &IpAddr) -> SetType {
    if ip.is_ipv6() {
        SetType::Ipv6Addr
    } else {
        SetType::Ipv4Addr
    }
}

fn set_of(table: &Table, name: &str, types: Vec<SetType>) -> Obj {
    let set_type =
        if types.len() == 1 { SetTypeValue::Single(types[0]) } else { SetTypeValue::Concatenated(types.into()) };
    add(NfListObject::Set(Box::new(Set {
        family: table.family,
        table: cow(table.name),
        name: cow(name),
        set_type,
        ..Default::default()
    })))
}

/// The masquerade element of one address.
fn masq_element(owner: &Owner, ip: &IpNet) -> Element {
    Element::new(masq_name(owner.network, &ip.trunc()), vec![Key::Ip(ip.addr())])
}

/// The guarded-port elements: the port, and the port . MAC pair allowed.
fn spoof_elements(host_port: &str, mac: &str) -> Option<[Element; 2]> {
    let port = Key::ifname(host_port)?;
    Some([Element::new(SPOOF_PORTS, vec![port.clone()]), Element::new(SPOOF_ALLOWED, vec![port, Key::ether(mac)?])])
}

/// The elements `add` gives `owner`, with its comment, per table.
fn owned_elements(owner: &Owner, add: &Additions) -> (Vec<Element>, Vec<Element>) {
    let comment = owner.comment();
    let masq = add.masquerade.iter().map(|ip| masq_element(owner, ip).with_comment(&comment)).collect();
    let spoof = match &add.guard {
        Some((port, mac)) => {
            spoof_elements(port, mac).into_iter().flatten().map(|e| e.with_comment(&comment)).collect()
        }
        None => Vec::new(),
    };
    (masq, spoof)
}

/// One subnet's set, chain and rule (idempotent: the chain is flushed
/// before its one rule is added) and the address's element.
fn masq_transaction(tx: &mut Transaction, owner: &Owner, ip: &IpNet, element: &Element) {
    let subnet = ip.trunc();
    let name = masq_name(owner.network, &subnet);
    let v6 = ip.addr().is_ipv6();
    let (proto, multicast) = if v6 { ("ip6", "ff00::/8") } else { ("ip", "224.0.0.0/4") };
    tx.push(set_of(&MASQ, &name, vec![ip_set_type(&ip.addr())]));
    tx.push(add(NfListObject::Chain(MASQ.base_chain(&name, NfChainType::NAT, NfHook::Postrouting, 100))));
    tx.push(MASQ.flush_chain(&name));
    let mut rule_comment = format!("{} {}", owner.network, subnet);
    rule_comment.truncate(COMMENT_MAX);
    let rule = vec![
        eq(payload(proto, "saddr"), str_expr(format!("@{name}"))),
        matches(payload(proto, "daddr"), Operator::NEQ, prefix(subnet)),
        matches(payload(proto, "daddr"), Operator::NEQ, prefix(multicast.parse().expect("a valid prefix"))),
        Statement::Masquerade(None),
    ];
    tx.push(MASQ.rule(&name, rule, Some(rule_comment)));
    // add + delete + add: the element ends up carrying our comment even
    // when a stale one (a leaked container's) held the address.
    let plain = Element::new(element.set.clone(), element.key.clone());
    tx.push(ElementOp::Add(&plain).schema(MASQ.family, MASQ.name));
    tx.push(ElementOp::Delete(&plain).schema(MASQ.family, MASQ.name));
    tx.push(ElementOp::Add(element).schema(MASQ.family, MASQ.name));
}

/// The spoof check's table, sets, chain and rule, and the port's elements.
fn spoof_transaction(tx: &mut Transaction, elements: &[Element]) {
    tx.push(SPOOF.add_table());
    tx.push(set_of(&SPOOF, SPOOF_PORTS, vec![SetType::Ifname]));
    tx.push(set_of(&SPOOF, SPOOF_ALLOWED, vec![SetType::Ifname, SetType::EtherAddr]));
    tx.push(add(NfListObject::Chain(SPOOF.base_chain(SPOOF_CHAIN, NfChainType::Filter, NfHook::Prerouting, -300))));
    tx.push(SPOOF.flush_chain(SPOOF_CHAIN));
    let rule = vec![
        eq(meta(MetaKey::Iifname), str_expr(format!("@{SPOOF_PORTS}"))),
        matches(
            concat(vec![meta(MetaKey::Iifname), payload("ether", "saddr")]),
            Operator::NEQ,
            str_expr(format!("@{SPOOF_ALLOWED}")),
        ),
        Statement::Drop(None),
    ];
    let comment = "frames from a guarded container port must carry the container's MAC".to_string();
    tx.push(SPOOF.rule(SPOOF_CHAIN, rule, Some(comment)));
    // The allowed pair first: a port is never guarded without it.
    for e in elements.iter().rev() {
        tx.push(ElementOp::Add(e).schema(SPOOF.family, SPOOF.name));
    }
}

/// The whole of `add` as one nft transaction: tables, sets, chains, rules
/// (all idempotent) and the elements.
fn full_transaction(owner: &Owner, add: &Additions, masq: &[Element], spoof: &[Element]) -> Transaction {
    let mut tx = Transaction::new();
    if !masq.is_empty() {
        tx.push(MASQ.add_table());
    }
    for (ip, element) in add.masquerade.iter().zip(masq) {
        masq_transaction(&mut tx, owner, ip, element);
    }
    if add.guard.is_some() {
        spoof_transaction(&mut tx, spoof);
    }
    tx
}

/// Commits `add` for `owner`, with `owner`'s network locked.
///
/// When the tables and sets exist already (every container but a network's
/// first), only the commented elements are new: they are created in one
/// nfnetlink batch per table, without exec'ing nft. A missing set, a held
/// key (the nft transaction takes it over) or any other refusal sends
/// everything through nft, as one transaction.
pub fn apply(owner: &Owner, add: &Additions) -> Result<(), CniError> {
    if add.is_empty() {
        return Ok(());
    }
    // Declared before the lock: see nft::backend::System.
    let mut nft = crate::nft::backend();
    let _lock = network_lock(owner.network)?;
    apply_locked(&mut *nft, owner, add)?;
    fault::step("nft: transaction applied")
}

fn apply_locked(nft: &mut dyn Backend, owner: &Owner, add: &Additions) -> Result<(), CniError> {
    let (masq, spoof) = owned_elements(owner, add);
    let fast = [(MASQ, &masq), (SPOOF, &spoof)].into_iter().filter(|(_, elements)| !elements.is_empty()).try_for_each(
        |(table, elements)| {
            let ops: Vec<ElementOp> = elements.iter().map(ElementOp::Create).collect();
            nft.commit(table.family, table.name, &ops)
        },
    );
    match fast {
        Ok(()) => return Ok(()),
        Err(e) => log::debug!("nfnetlink: {e}; applying with nft"),
    }
    nft.apply(&full_transaction(owner, add, &masq, &spoof))?;
    Ok(())
}

/// Deletes, from the listed masquerade sets of `network`, the elements
/// whose comment `doomed` picks; a set left empty goes with its chain.
fn masq_deletions(tx: &mut Transaction, listing: &Listing, network: &str, doomed: &impl Fn(&str) -> bool) {
    let prefix = masq_prefix(network);
    let elements = listing.elements();
    for set in listing.sets().into_iter().filter(|s| s.starts_with(&prefix)) {
        let (gone, kept): (Vec<_>, Vec<_>) =
            elements.iter().filter(|e| e.set == set).partition(|e| e.comment.as_deref().is_some_and(doomed));
        if kept.is_empty() {
            tx.push(delete_chain(MASQ.family, MASQ.name, &set));
            tx.push(delete_set(MASQ.family, MASQ.name, &set));
        } else {
            tx.extend(gone.iter().filter_map(|e| owned::delete_listed_element(MASQ.family, MASQ.name, e)));
        }
    }
}

fn spoof_deletions(tx: &mut Transaction, listing: &Listing, doomed: &impl Fn(&str) -> bool) {
    let doomed_elements = listing
        .elements()
        .into_iter()
        .filter(|e| (e.set == SPOOF_PORTS || e.set == SPOOF_ALLOWED) && e.comment.as_deref().is_some_and(doomed));
    tx.extend(doomed_elements.filter_map(|e| owned::delete_listed_element(SPOOF.family, SPOOF.name, &e)));
}

/// Removes everything the attachments of `network` whose comment `doomed`
/// picks own, in one transaction. Elements of other networks and
/// containers stay.
fn remove(
    nft: &mut dyn Backend,
    network: &str,
    masq: bool,
    spoof: bool,
    doomed: impl Fn(&str) -> bool,
) -> Result<(), CniError> {
    let _lock = network_lock(network)?;
    let mut tx = Transaction::new();
    if masq {
        if let Some(listing) = nft.list(MASQ.family, MASQ.name)? {
            masq_deletions(&mut tx, &listing, network, &doomed);
        }
    }
    if spoof {
        if let Some(listing) = nft.list(SPOOF.family, SPOOF.name)? {
            spoof_deletions(&mut tx, &listing, &doomed);
        }
    }
    nft.apply(&tx)?;
    Ok(())
}

/// DEL: drops the attachment's masquerade and spoof-check elements. With the
/// previous result the keys are known and deleted without listing (the
/// network's set and chain stay, possibly empty, until GC or a DEL on the
/// listing path); otherwise they are found by their comment.
pub fn del(
    nft: &mut dyn Backend,
    owner: &Owner,
    masq: bool,
    spoof: bool,
    prev: Option<&CniResult>,
) -> Result<(), CniError> {
    if let Some(prev) = prev {
        match del_by_key(nft, owner, masq, spoof, prev) {
            Ok(()) => return Ok(()),
            Err(e) => log::info!("masquerade DEL by key: {e}; finding the elements by their comment"),
        }
    }
    remove(nft, owner.network, masq, spoof, |c| owner.owns(c))
}

/// The elements `prev` names that this attachment may own, per table: its
/// addresses in the masquerade sets, and for the spoof check every host-side
/// interface of the result (the bridge among them: harmless, only elements
/// carrying this attachment's comment are deleted) with the container's MAC.
fn key_candidates(owner: &Owner, masq: bool, spoof: bool, prev: &CniResult) -> Option<(Vec<Element>, Vec<Element>)> {
    let masq_elements =
        if masq { prev.ips.iter().map(|ip| masq_element(owner, &ip.address)).collect() } else { vec![] };
    let mut spoof_elements_ = Vec::new();
    if spoof {
        let container = prev.interfaces.iter().find(|i| !i.sandbox.is_empty() && i.name == owner.ifname)?;
        Key::ether(&container.mac)?;
        for host in prev.interfaces.iter().filter(|i| i.sandbox.is_empty()) {
            spoof_elements_.extend(spoof_elements(&host.name, &container.mac).into_iter().flatten());
        }
    }
    Some((masq_elements, spoof_elements_))
}

fn del_by_key(nft: &mut dyn Backend, owner: &Owner, masq: bool, spoof: bool, prev: &CniResult) -> Result<(), CniError> {
    let Some((masq_elements, spoof_elements)) = key_candidates(owner, masq, spoof, prev) else {
        return Err(CniError::internal("the previous result does not name the container's MAC"));
    };
    let _lock = network_lock(owner.network)?;
    owned::delete_by_key(nft, MASQ.family, MASQ.name, &masq_elements, |c| owner.owns(c))?;
    owned::delete_by_key(nft, SPOOF.family, SPOOF.name, &spoof_elements, |c| owner.owns(c))?;
    Ok(())
}

/// GC: drops the elements of `network`'s attachments not in `valid`.
pub fn gc(
    nft: &mut dyn Backend,
    network: &str,
    valid: &[gc::Attachment],
    masq: bool,
    spoof: bool,
) -> Result<(), CniError> {
    let valid: Vec<Owner> =
        valid.iter().map(|a| Owner { network, container_id: &a.container_id, ifname: &a.ifname }).collect();
    let stale = |c: &str| is_network(c, network) && !valid.iter().any(|v| v.owns(c));
    remove(nft, network, masq, spoof, stale)
}

/// DEL of what the reference's ipMasq made for this attachment (iptables
/// nat chains, nftables rules), on a node that switched from it.
pub fn del_reference(nft: &mut dyn Backend, owner: &Owner) -> Result<(), CniError> {
    Ok(takeover::remove(nft, Kind::Masquerade, owner)?)
}

/// GC of what the reference's ipMasq made for `network`'s attachments not in `valid`.
pub fn gc_reference(nft: &mut dyn Backend, network: &str, valid: &[gc::Attachment]) -> Result<(), CniError> {
    let valid: Vec<Owner> =
        valid.iter().map(|a| Owner { network, container_id: &a.container_id, ifname: &a.ifname }).collect();
    Ok(takeover::remove_stale(nft, Kind::Masquerade, network, &valid)?)
}

/// CHECK: every address of `ips` is in its network's set under this
/// attachment's comment, and the set's chain holds its masquerade rule.
pub fn check(owner: &Owner, ips: &[IpNet]) -> Result<(), CniError> {
    let listing = crate::nft::backend().list(MASQ.family, MASQ.name)?.unwrap_or_default();
    let elements = listing.elements();
    let rules = listing.rules();
    for ip in ips {
        let wanted = masq_element(owner, ip);
        let found = elements.iter().any(|e| wanted.matches(e) && e.comment.as_deref().is_some_and(|c| owner.owns(c)));
        if !found {
            return Err(CniError::internal(format!("masquerade entry for {} is missing", ip.addr())));
        }
        let rule = rules.iter().find(|r| r.chain == wanted.set);
        let has_masq =
            rule.and_then(|r| r.expr.as_array()).is_some_and(|e| e.iter().any(|x| x.get("masquerade").is_some()));
        if !has_masq {
            return Err(CniError::internal(format!("masquerade rule for {} is missing", ip.trunc())));
        }
    }
    Ok(())
}

/// CHECK for the spoof check: the port is guarded with `mac`.
pub fn check_spoof(owner: &Owner, host_port: &str, mac: &str) -> Result<(), CniError> {
    let listing = crate::nft::backend().list(SPOOF.family, SPOOF.name)?.unwrap_or_default();
    let elements = listing.elements();
    let guarded = spoof_elements(host_port, mac).is_some_and(|wanted| {
        wanted
            .iter()
            .all(|w| elements.iter().any(|e| w.matches(e) && e.comment.as_deref().is_some_and(|c| owner.owns(c))))
    });
    if guarded {
        Ok(())
    } else {
        Err(CniError::internal(format!("MAC spoof check for {host_port} is missing")))
    }
}

/// The `ipMasqBackend` key: both values are accepted; rules are always
/// written with nftables.
pub fn check_backend(backend: Option<&str>) -> Result<(), CniError> {
    match backend {
        None | Some("") | Some("nftables") => Ok(()),
        Some("iptables") => {
            log::info!("ipMasqBackend \"iptables\": cnibox writes its masquerade rules with nftables");
            Ok(())
        }
        Some(other) => Err(CniError::invalid_config(format!(
            "unknown ipMasqBackend {other:?} (expected \"iptables\" or \"nftables\")"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::fake::Fake;

    fn owner(id: &str) -> Owner<'_> {
        Owner { network: "net1", container_id: id, ifname: "eth0" }
    }

    fn additions(ip: &str, port: &str) -> Additions {
        let mut add = Additions::default();
        add.masquerade(&[ip.parse().unwrap()]);
        add.guard(port, "0a:58:0a:01:00:05");
        add
    }

    #[test]
    fn first_add_declares_the_tables_later_ones_are_one_batch_each() {
        let mut nft = Fake::new();
        apply_locked(&mut nft, &owner("c1"), &additions("10.1.0.5/24", "veth1")).unwrap();
        assert_eq!((nft.applies(), nft.commits()), (1, 1), "a refused batch, then one transaction");
        let set = masq_name("net1", &"10.1.0.0/24".parse().unwrap());
        assert_eq!(nft.elements(NfFamily::INet, MASQ_TABLE, &set), [("10.1.0.5".into(), Some("net1 c1 eth0".into()))]);
        assert_eq!(nft.rules(NfFamily::INet, MASQ_TABLE, &set).len(), 1);
        apply_locked(&mut nft, &owner("c2"), &additions("10.1.0.6/24", "veth2")).unwrap();
        assert_eq!((nft.applies(), nft.commits()), (1, 3), "one batch per table, no nft");
        assert_eq!(nft.elements(NfFamily::Bridge, SPOOF_TABLE, SPOOF_PORTS).len(), 2);
    }

    #[test]
    fn a_held_address_is_taken_over() {
        let mut nft = Fake::new();
        apply_locked(&mut nft, &owner("stale"), &additions("10.1.0.5/24", "veth1")).unwrap();
        apply_locked(&mut nft, &owner("c1"), &additions("10.1.0.5/24", "veth9")).unwrap();
        let set = masq_name("net1", &"10.1.0.0/24".parse().unwrap());
        assert_eq!(nft.elements(NfFamily::INet, MASQ_TABLE, &set), [("10.1.0.5".into(), Some("net1 c1 eth0".into()))]);
        assert_eq!(nft.rules(NfFamily::INet, MASQ_TABLE, &set).len(), 1, "the rule never doubles");
    }

    #[test]
    fn del_finds_elements_by_comment_in_both_formats() {
        let mut nft = Fake::new();
        apply_locked(&mut nft, &owner("c1"), &additions("10.1.0.5/24", "veth1")).unwrap();
        // An element an earlier release wrote, with its comment format.
        let set = masq_name("net1", &"10.1.0.0/24".parse().unwrap());
        let old = Element::new(set.clone(), vec![Key::Ip("10.1.0.6".parse().unwrap())])
            .with_comment(&format!("{} c2 eth0", network_hash("net1")));
        nft.commit(NfFamily::INet, MASQ_TABLE, &[ElementOp::Create(&old)]).unwrap();
        del(&mut nft, &owner("c2"), true, true, None).unwrap();
        assert_eq!(nft.elements(NfFamily::INet, MASQ_TABLE, &set).len(), 1);
        // The last element takes the set and its chain with it.
        del(&mut nft, &owner("c1"), true, true, None).unwrap();
        assert!(nft.elements(NfFamily::INet, MASQ_TABLE, &set).is_empty());
        assert!(nft.list(NfFamily::INet, MASQ_TABLE).unwrap().unwrap().chains().is_empty());
        assert!(nft.elements(NfFamily::Bridge, SPOOF_TABLE, SPOOF_ALLOWED).is_empty());
    }

    #[test]
    fn del_by_key_is_one_lookup_and_one_batch_per_table_and_gc_takes_the_empty_set() {
        let mut nft = Fake::new();
        apply_locked(&mut nft, &owner("c1"), &additions("10.1.0.5/24", "veth1")).unwrap();
        let prev: CniResult = serde_json::from_str(
            r#"{"interfaces":[{"name":"veth1"},{"name":"eth0","sandbox":"/x","mac":"0a:58:0a:01:00:05"}],
                "ips":[{"address":"10.1.0.5/24","interface":1}]}"#,
        )
        .unwrap();
        let before = nft.calls.len();
        del(&mut nft, &owner("c1"), true, true, Some(&prev)).unwrap();
        assert_eq!(nft.calls.len() - before, 4, "a lookup and a batch per table");
        assert_eq!(nft.applies(), 1);
        let set = masq_name("net1", &"10.1.0.0/24".parse().unwrap());
        assert!(nft.elements(NfFamily::INet, MASQ_TABLE, &set).is_empty());
        assert!(nft.elements(NfFamily::Bridge, SPOOF_TABLE, SPOOF_PORTS).is_empty());
        // The network's emptied set and chain stay for its next container; GC removes them.
        assert!(nft.list(NfFamily::INet, MASQ_TABLE).unwrap().unwrap().sets().contains(&set));
        remove(&mut nft, "net1", true, true, |c| is_network(c, "net1")).unwrap();
        let listing = nft.list(NfFamily::INet, MASQ_TABLE).unwrap().unwrap();
        assert!(listing.sets().is_empty() && listing.chains().is_empty());
    }

    #[test]
    fn backends() {
        check_backend(Some("iptables")).unwrap();
        check_backend(Some("nftables")).unwrap();
        check_backend(None).unwrap();
        assert_eq!(check_backend(Some("ebtables")).unwrap_err().code, 7);
    }
}
