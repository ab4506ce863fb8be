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
//!   its chain (GC removes those a DEL by key left empty).
//! - `bridge cnibox-macspoof`: a set of guarded ports and a set of allowed
//!   `port . mac` pairs, and one rule dropping frames that enter a guarded
//!   port with any other source MAC.
//!
//! Every element carries the comment `<network hash> <container id>
//! <ifname>`, so DEL finds a container's elements from its ID alone (no
//! prevResult, netns gone) and GC can tell whose they are.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde_json::{json, Value};

use crate::cni::gc;
use crate::cni::{CniError, CniResult};
use crate::nft::nfnetlink::{key as nfkey, Elem, Nfnl, Op, FAMILY_BRIDGE, FAMILY_INET};
use crate::nft::{exec as nft, owned as nft_owned};
use crate::util::hash::short_hex;
use crate::util::lock::FileLock;
use nftables::types::NfFamily;

pub const MASQ_TABLE: &str = "cnibox-masq";
pub const SPOOF_TABLE: &str = "cnibox-macspoof";
const SPOOF_CHAIN: &str = "prerouting";
const SPOOF_PORTS: &str = "ports";
const SPOOF_ALLOWED: &str = "allowed";
/// nft keeps at most this many bytes of a comment.
const COMMENT_MAX: usize = 127;

/// One container attachment to one network.
#[derive(Debug, Clone, Copy)]
pub struct Attachment<'a> {
    pub network: &'a str,
    pub container_id: &'a str,
    pub ifname: &'a str,
}

fn network_hash(network: &str) -> String {
    short_hex(&[network], 8)
}

impl Attachment<'_> {
    /// The comment every element of this attachment carries.
    pub fn comment(&self) -> String {
        let mut c = format!("{} {} {}", network_hash(self.network), self.container_id, self.ifname);
        c.truncate(COMMENT_MAX);
        c
    }
}

/// The comment's (container id, ifname), if it is one of ours for `network`.
pub fn owner_of<'c>(comment: &'c str, network: &str) -> Option<(&'c str, &'c str)> {
    let mut parts = comment.splitn(3, ' ');
    if parts.next()? != network_hash(network) {
        return None;
    }
    Some((parts.next()?, parts.next()?))
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
    FileLock::exclusive(&dir.join(format!("masq-{}.lock", network_hash(network)))).map_err(CniError::from)
}

fn family_words(ip: &IpAddr) -> (&'static str, &'static str, &'static str, u8) {
    match ip {
        IpAddr::V4(_) => ("ip", "ipv4_addr", "224.0.0.0", 4),
        IpAddr::V6(_) => ("ip6", "ipv6_addr", "ff00::", 8),
    }
}

fn elem(val: Value, comment: &str) -> Value {
    json!({"elem": {"val": val, "comment": comment}})
}

/// Commands making `ips` masqueraded for `att` (for one transaction).
pub fn masq_add_commands(att: &Attachment, ips: &[IpNet]) -> Vec<Value> {
    if ips.is_empty() {
        return Vec::new();
    }
    let t = json!({"family": "inet", "name": MASQ_TABLE});
    let mut cmds = vec![json!({"add": {"table": t}})];
    let comment = att.comment();
    for ip in ips {
        let subnet = ip.trunc();
        let name = masq_name(att.network, &subnet);
        let (proto, set_type, mcast, mcast_len) = family_words(&ip.addr());
        let obj = |extra: Value| {
            let mut o = json!({"family": "inet", "table": MASQ_TABLE, "name": name});
            o.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            o
        };
        let mut rule_comment = format!("{} {}", att.network, subnet);
        rule_comment.truncate(COMMENT_MAX);
        let addr = ip.addr().to_string();
        cmds.extend([
            json!({"add": {"set": obj(json!({"type": set_type}))}}),
            json!({"add": {"chain": obj(json!({"type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}))}}),
            json!({"flush": {"chain": obj(json!({}))}}),
            json!({"add": {"rule": {"family": "inet", "table": MASQ_TABLE, "chain": name, "comment": rule_comment,
                "expr": [
                    {"match": {"op": "==", "left": {"payload": {"protocol": proto, "field": "saddr"}}, "right": format!("@{name}")}},
                    {"match": {"op": "!=", "left": {"payload": {"protocol": proto, "field": "daddr"}},
                        "right": {"prefix": {"addr": subnet.addr().to_string(), "len": subnet.prefix_len()}}}},
                    {"match": {"op": "!=", "left": {"payload": {"protocol": proto, "field": "daddr"}},
                        "right": {"prefix": {"addr": mcast, "len": mcast_len}}}},
                    {"masquerade": null}
                ]}}}),
            // add + delete + add: the element ends up carrying our comment even
            // when a stale one (a leaked container's) held the address.
            json!({"add": {"element": obj(json!({"elem": [addr]}))}}),
            json!({"delete": {"element": obj(json!({"elem": [addr]}))}}),
            json!({"add": {"element": obj(json!({"elem": [elem(json!(addr), &comment)]}))}}),
        ]);
    }
    cmds
}

/// Commands guarding `host_port`: frames entering it must come from `mac`.
pub fn spoof_add_commands(att: &Attachment, host_port: &str, mac: &str) -> Vec<Value> {
    let obj = |name: &str, extra: Value| {
        let mut o = json!({"family": "bridge", "table": SPOOF_TABLE, "name": name});
        o.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        o
    };
    let comment = att.comment();
    let pair = json!({"concat": [host_port, mac]});
    vec![
        json!({"add": {"table": {"family": "bridge", "name": SPOOF_TABLE}}}),
        json!({"add": {"set": obj(SPOOF_PORTS, json!({"type": "ifname"}))}}),
        json!({"add": {"set": obj(SPOOF_ALLOWED, json!({"type": ["ifname", "ether_addr"]}))}}),
        json!({"add": {"chain": obj(SPOOF_CHAIN, json!({"type": "filter", "hook": "prerouting", "prio": -300, "policy": "accept"}))}}),
        json!({"flush": {"chain": obj(SPOOF_CHAIN, json!({}))}}),
        json!({"add": {"rule": {"family": "bridge", "table": SPOOF_TABLE, "chain": SPOOF_CHAIN,
        "comment": "frames from a guarded container port must carry the container's MAC",
        "expr": [
            {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": format!("@{SPOOF_PORTS}")}},
            {"match": {"op": "!=", "left": {"concat": [{"meta": {"key": "iifname"}}, {"payload": {"protocol": "ether", "field": "saddr"}}]},
                "right": format!("@{SPOOF_ALLOWED}")}},
            {"drop": null}
        ]}}}),
        json!({"add": {"element": obj(SPOOF_ALLOWED, json!({"elem": [elem(pair, &comment)]}))}}),
        json!({"add": {"element": obj(SPOOF_PORTS, json!({"elem": [elem(json!(host_port), &comment)]}))}}),
    ]
}

/// Applies the commands as one nftables transaction (none when empty).
/// `network` is locked while it runs when the commands touch masquerading.
///
/// When the tables and sets exist already (every container but a network's
/// first), only the commented elements are new: they are created in one
/// nfnetlink batch, without exec'ing nft. A missing set (ENOENT), a held key
/// (EEXIST: the nft commands take it over) or any other refusal sends the
/// whole set of commands through nft, as one transaction.
pub fn apply(network: &str, cmds: Vec<Value>) -> Result<(), CniError> {
    if cmds.is_empty() {
        return Ok(());
    }
    let _lock = network_lock(network)?;
    match fast_elements(&cmds).map(|elems| add_fast(&elems)) {
        Some(Ok(())) => return crate::cni::fault::step("nft: transaction applied"),
        Some(Err(e)) => log::debug!("nfnetlink: {e}; applying with nft"),
        None => {}
    }
    transaction(cmds)?;
    crate::cni::fault::step("nft: transaction applied")
}

/// The commented elements of `cmds` (what one attachment owns), encoded for
/// nfnetlink per (family, table); None when one cannot be encoded.
fn fast_elements(cmds: &[Value]) -> Option<Vec<(u8, &'static str, Elem)>> {
    let mut out = Vec::new();
    for obj in cmds.iter().filter_map(|c| c.pointer("/add/element")) {
        let set = obj["name"].as_str()?;
        for e in obj["elem"].as_array()? {
            // Plain keys are the add/delete pair clearing a stale comment: the
            // batch's `create` fails on a held key instead.
            let Some(inner) = e.get("elem") else { continue };
            let (val, comment) = (&inner["val"], inner["comment"].as_str()?);
            let elem = match obj["table"].as_str()? {
                MASQ_TABLE => (FAMILY_INET, MASQ_TABLE, nfkey::ip(val.as_str()?.parse().ok()?)),
                SPOOF_TABLE if set == SPOOF_PORTS => (FAMILY_BRIDGE, SPOOF_TABLE, nfkey::ifname(val.as_str()?)?),
                SPOOF_TABLE if set == SPOOF_ALLOWED => {
                    let pair = val["concat"].as_array()?;
                    let (port, mac) = (pair.first()?.as_str()?, pair.get(1)?.as_str()?);
                    (FAMILY_BRIDGE, SPOOF_TABLE, nfkey::concat(&[&nfkey::ifname(port)?, &nfkey::ether(mac)?]))
                }
                _ => return None,
            };
            out.push((elem.0, elem.1, Elem::new(set, elem.2).with_comment(comment)));
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Creates `elems` (one batch per table).
fn add_fast(elems: &[(u8, &'static str, Elem)]) -> Result<(), crate::netlink::Error> {
    let mut nl = Nfnl::open()?;
    for table in [MASQ_TABLE, SPOOF_TABLE] {
        let ops: Vec<Op> = elems.iter().filter(|(_, t, _)| *t == table).map(|(_, _, e)| Op::Create(e)).collect();
        if let Some((family, _, _)) = elems.iter().find(|(_, t, _)| *t == table) {
            nl.commit(*family, table, &ops)?;
        }
    }
    Ok(())
}

fn transaction(cmds: Vec<Value>) -> Result<(), CniError> {
    if cmds.is_empty() {
        return Ok(());
    }
    // The unit tests check these commands against the nftables crate's schema.
    nft::apply_commands(&cmds).map_err(CniError::from)
}

/// A table's objects as nft lists them (empty when the table is absent).
fn list(family: &str, table: &str) -> Result<Vec<Value>, CniError> {
    match nft::run(&["-j", "list", "table", family, table], None) {
        Ok(out) => {
            let v: Value = serde_json::from_str(&out).map_err(|e| {
                CniError::internal(format!("parsing nft's listing of {table}")).with_details(e.to_string())
            })?;
            Ok(v["nftables"].as_array().cloned().unwrap_or_default())
        }
        Err(e) if e.stderr.contains("No such file or directory") => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// A set as listed: its name and its elements (value, comment).
struct ListedSet {
    name: String,
    /// The set's type as listed (a delete must name it too).
    set_type: Value,
    elems: Vec<(Value, String)>,
}

fn sets_of(listing: &[Value]) -> Vec<ListedSet> {
    listing
        .iter()
        .filter_map(|o| o.get("set"))
        .map(|s| ListedSet {
            name: s["name"].as_str().unwrap_or_default().to_string(),
            set_type: s["type"].clone(),
            elems: s["elem"]
                .as_array()
                .map(|es| {
                    es.iter()
                        .map(|e| match e.get("elem") {
                            Some(inner) => {
                                (inner["val"].clone(), inner["comment"].as_str().unwrap_or_default().to_string())
                            }
                            None => (e.clone(), String::new()),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}

/// Commands deleting, from the listed masquerade sets of `network`, the
/// elements `doomed` picks; a set left empty goes with its chain.
fn masq_del_commands(listing: &[Value], network: &str, doomed: impl Fn(&str, &str) -> bool) -> Vec<Value> {
    let prefix = masq_prefix(network);
    let mut cmds = Vec::new();
    for set in sets_of(listing).into_iter().filter(|s| s.name.starts_with(&prefix)) {
        let (gone, kept): (Vec<_>, Vec<_>) =
            set.elems.iter().partition(|(_, c)| owner_of(c, network).is_some_and(|(id, ifname)| doomed(id, ifname)));
        let obj = json!({"family": "inet", "table": MASQ_TABLE, "name": set.name});
        if kept.is_empty() {
            let set_obj = json!({"family": "inet", "table": MASQ_TABLE, "name": set.name, "type": set.set_type});
            cmds.push(json!({"delete": {"chain": obj}}));
            cmds.push(json!({"delete": {"set": set_obj}}));
        } else if !gone.is_empty() {
            let mut o = obj.clone();
            o["elem"] = Value::Array(gone.iter().map(|(v, _)| v.clone()).collect());
            cmds.push(json!({"delete": {"element": o}}));
        }
    }
    cmds
}

fn spoof_del_commands(listing: &[Value], network: &str, doomed: impl Fn(&str, &str) -> bool) -> Vec<Value> {
    let mut cmds = Vec::new();
    for set in sets_of(listing).into_iter().filter(|s| s.name == SPOOF_PORTS || s.name == SPOOF_ALLOWED) {
        let gone: Vec<Value> = set
            .elems
            .iter()
            .filter(|(_, c)| owner_of(c, network).is_some_and(|(id, ifname)| doomed(id, ifname)))
            .map(|(v, _)| v.clone())
            .collect();
        if !gone.is_empty() {
            let o = json!({"family": "bridge", "table": SPOOF_TABLE, "name": set.name, "elem": gone});
            cmds.push(json!({"delete": {"element": o}}));
        }
    }
    cmds
}

/// Removes everything the picked attachments of `network` own, in one
/// transaction. Elements of other networks and containers stay.
fn remove(network: &str, masq: bool, spoof: bool, doomed: impl Fn(&str, &str) -> bool) -> Result<(), CniError> {
    let _lock = network_lock(network)?;
    let mut cmds = Vec::new();
    if masq {
        cmds.extend(masq_del_commands(&list("inet", MASQ_TABLE)?, network, &doomed));
    }
    if spoof {
        cmds.extend(spoof_del_commands(&list("bridge", SPOOF_TABLE)?, network, &doomed));
    }
    transaction(cmds)
}

/// DEL: drops the attachment's masquerade and spoof-check elements. With the
/// previous result the keys are known and deleted without listing (the
/// network's set and chain stay, possibly empty, until GC or a DEL on the
/// listing path); otherwise they are found by their comment.
pub fn del(att: &Attachment, masq: bool, spoof: bool, prev: Option<&CniResult>) -> Result<(), CniError> {
    if let Some(prev) = prev {
        match del_by_key(att, masq, spoof, prev) {
            Ok(()) => return Ok(()),
            Err(e) => log::info!("masquerade DEL by key: {e}; finding the elements by their comment"),
        }
    }
    del_listed(att, masq, spoof)
}

/// The elements `prev` names that this attachment may own, per table: its
/// addresses in the masquerade sets, and for the spoof check every host-side
/// interface of the result (the bridge among them: harmless, only elements
/// carrying this attachment's comment are deleted) with the container's MAC.
fn key_candidates(att: &Attachment, masq: bool, spoof: bool, prev: &CniResult) -> Option<(Vec<Elem>, Vec<Elem>)> {
    let mut masq_elems = Vec::new();
    if masq {
        for ip in &prev.ips {
            masq_elems.push(Elem::new(&masq_name(att.network, &ip.address.trunc()), nfkey::ip(ip.address.addr())));
        }
    }
    let mut spoof_elems = Vec::new();
    if spoof {
        let container = prev.interfaces.iter().find(|i| !i.sandbox.is_empty() && i.name == att.ifname);
        let mac = container.and_then(|c| nfkey::ether(&c.mac))?;
        for host in prev.interfaces.iter().filter(|i| i.sandbox.is_empty()) {
            let Some(port) = nfkey::ifname(&host.name) else { continue };
            spoof_elems.push(Elem::new(SPOOF_PORTS, port.clone()));
            spoof_elems.push(Elem::new(SPOOF_ALLOWED, nfkey::concat(&[&port, &mac])));
        }
    }
    Some((masq_elems, spoof_elems))
}

fn del_by_key(att: &Attachment, masq: bool, spoof: bool, prev: &CniResult) -> Result<(), CniError> {
    let Some((masq_elems, spoof_elems)) = key_candidates(att, masq, spoof, prev) else {
        return Err(CniError::internal("the previous result does not name the container's MAC"));
    };
    // Opened before the lock is taken, so that the lock is released before
    // the socket's detached close forks (the children inherit descriptors).
    let mut nl = Nfnl::open()?;
    let _lock = network_lock(att.network)?;
    let comment = att.comment();
    nft_owned::delete_by_key(&mut nl, NfFamily::INet, MASQ_TABLE, &masq_elems, |c| c == comment)?;
    nft_owned::delete_by_key(&mut nl, NfFamily::Bridge, SPOOF_TABLE, &spoof_elems, |c| c == comment)?;
    Ok(())
}

fn del_listed(att: &Attachment, masq: bool, spoof: bool) -> Result<(), CniError> {
    let (id, ifname) = (att.container_id, att.ifname);
    // Comments are truncated; compare in the same shape.
    let mine = att.comment();
    let (_, rest) = mine.split_once(' ').unwrap_or(("", ""));
    let rest = rest.to_string();
    remove(att.network, masq, spoof, move |cid, ifn| (cid == id && ifn == ifname) || format!("{cid} {ifn}") == rest)
}

/// GC: drops the elements of attachments not in `valid`.
pub fn gc(network: &str, valid: &[gc::Attachment], masq: bool, spoof: bool) -> Result<(), CniError> {
    remove(network, masq, spoof, |id, ifname| !gc::is_valid(valid, id, ifname))
}

/// CHECK: every address of `ips` is in its network's set under this
/// attachment's comment, and the set's chain holds its masquerade rule.
pub fn check(att: &Attachment, ips: &[IpNet]) -> Result<(), CniError> {
    let listing = list("inet", MASQ_TABLE)?;
    let sets = sets_of(&listing);
    let comment = att.comment();
    for ip in ips {
        let name = masq_name(att.network, &ip.trunc());
        let addr = ip.addr().to_string();
        let found = sets
            .iter()
            .find(|s| s.name == name)
            .is_some_and(|s| s.elems.iter().any(|(v, c)| v.as_str() == Some(addr.as_str()) && *c == comment));
        if !found {
            return Err(CniError::internal(format!("masquerade entry for {addr} is missing")));
        }
        let rule = listing.iter().filter_map(|o| o.get("rule")).find(|r| r["chain"] == name.as_str());
        let has_masq =
            rule.and_then(|r| r["expr"].as_array()).is_some_and(|e| e.iter().any(|x| x.get("masquerade").is_some()));
        if !has_masq {
            return Err(CniError::internal(format!("masquerade rule for {} is missing", ip.trunc())));
        }
    }
    Ok(())
}

/// CHECK for the spoof check: the port is guarded with `mac`.
pub fn check_spoof(att: &Attachment, host_port: &str, mac: &str) -> Result<(), CniError> {
    let sets = sets_of(&list("bridge", SPOOF_TABLE)?);
    let comment = att.comment();
    let want = json!({"concat": [host_port, mac]});
    let ok = sets.iter().any(|s| s.name == SPOOF_ALLOWED && s.elems.iter().any(|(v, c)| *v == want && *c == comment))
        && sets.iter().any(|s| s.name == SPOOF_PORTS && s.elems.iter().any(|(v, c)| v == host_port && *c == comment));
    if ok {
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

    fn att() -> Attachment<'static> {
        Attachment { network: "net1", container_id: "c1", ifname: "eth0" }
    }

    #[test]
    fn add_commands_parse_as_nftables_schema() {
        let ips: Vec<IpNet> = vec!["10.1.0.5/24".parse().unwrap(), "fd00::5/64".parse().unwrap()];
        let mut cmds = masq_add_commands(&att(), &ips);
        cmds.extend(spoof_add_commands(&att(), "veth1234abcd", "0a:58:0a:01:00:05"));
        let doc: nftables::schema::Nftables = serde_json::from_value(json!({ "nftables": cmds })).unwrap();
        assert!(doc.objects.len() > 10);
    }

    #[test]
    fn comments_name_the_owner() {
        let c = att().comment();
        assert_eq!(owner_of(&c, "net1"), Some(("c1", "eth0")));
        assert_eq!(owner_of(&c, "net2"), None);
    }

    #[test]
    fn del_commands_pick_owned_elements() {
        let name = masq_name("net1", &"10.1.0.0/24".parse().unwrap());
        let other = Attachment { container_id: "c2", ..att() }.comment();
        let listing = vec![json!({"set": {"name": name, "type": "ipv4_addr", "elem": [
            {"elem": {"val": "10.1.0.5", "comment": att().comment()}},
            {"elem": {"val": "10.1.0.6", "comment": other}}
        ]}})];
        let cmds = masq_del_commands(&listing, "net1", |id, _| id == "c1");
        assert_eq!(cmds.len(), 1);
        assert_eq!(cmds[0]["delete"]["element"]["elem"], json!(["10.1.0.5"]));
        // The last element takes the set and chain with it.
        let cmds = masq_del_commands(&listing, "net1", |_, _| true);
        assert_eq!(cmds.len(), 2);
        let spoof = vec![json!({"set": {"name": SPOOF_ALLOWED, "type": ["ifname", "ether_addr"], "elem": [
            {"elem": {"val": {"concat": ["veth1", "0a:58:0a:01:00:05"]}, "comment": att().comment()}}
        ]}})];
        let mut all = cmds.clone();
        all.extend(spoof_del_commands(&spoof, "net1", |_, _| true));
        assert_eq!(all.len(), 3);
        let doc: nftables::schema::Nftables = serde_json::from_value(json!({ "nftables": all })).unwrap();
        assert_eq!(doc.objects.len(), 3);
        assert!(masq_del_commands(&listing, "net2", |_, _| true).is_empty());
    }

    #[test]
    fn backends() {
        check_backend(Some("iptables")).unwrap();
        check_backend(Some("nftables")).unwrap();
        check_backend(None).unwrap();
        assert_eq!(check_backend(Some("ebtables")).unwrap_err().code, 7);
    }
}
