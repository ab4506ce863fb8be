//! Set and map elements (and the odd rule) owned by one CNI attachment, found
//! again from their comment. Plugins keep per-container state as elements of
//! per-network sets/maps instead of per-container chains: one transaction
//! adds them, one listing plus one transaction removes them.
//!
//! Listings are read as plain JSON: the `nftables` crate cannot parse every
//! form nft prints (e.g. a map's concatenated data type) and operators may put
//! anything in the chains we list; commands are still built from its types.

use nftables::schema::NfObject;
use nftables::types::NfFamily;
use serde_json::{json, Value};

use super::exec::{self as nft, NftError};
use super::nfnetlink::{self, Elem, Nfnl, Op};
use crate::netlink;
use crate::util::hash::fnv1a_128_hex;

/// nft's limit for a rule or element comment.
const COMMENT_MAX: usize = 128;

/// The comment marking what one attachment owns: `<network> <containerID>
/// <ifname>` (none of them may hold spaces), or hashed parts when too long.
pub fn owner_comment(network: &str, container_id: &str, ifname: &str) -> String {
    let plain = format!("{network} {container_id} {ifname}");
    if plain.len() <= COMMENT_MAX {
        return plain;
    }
    format!("{} #{}", network_part(network), fnv1a_128_hex(&format!("{container_id} {ifname}")))
}

/// What every comment of `network` starts with (followed by a space).
pub fn network_part(network: &str) -> String {
    if network.len() <= 48 && !network.contains(char::is_whitespace) {
        network.to_string()
    } else {
        format!("#{}", fnv1a_128_hex(network))
    }
}

/// Whether `comment` belongs to `network`.
pub fn is_network(comment: &str, network: &str) -> bool {
    comment.strip_prefix(&network_part(network)).is_some_and(|rest| rest.starts_with(' '))
}

/// One element as nft lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedElement {
    /// The set or map holding it.
    pub set: String,
    pub key: Value,
    /// The mapped value, for maps.
    pub data: Option<Value>,
    pub comment: Option<String>,
}

/// One rule as nft lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedRule {
    pub chain: String,
    pub handle: u32,
    pub comment: Option<String>,
    pub expr: Value,
}

/// A table as nft lists it, or None when it does not exist.
pub struct Listing {
    pub objects: Vec<Value>,
}

pub fn list(family: &str, table: &str) -> Result<Option<Listing>, NftError> {
    let out = match nft::run(&["-j", "list", "table", family, table], None) {
        Ok(out) => out,
        Err(e) if e.stderr.contains("No such file or directory") => return Ok(None),
        Err(e) => return Err(e),
    };
    let doc: Value = serde_json::from_str(&out)
        .map_err(|e| NftError { msg: format!("parsing nft's listing of {family} {table}"), stderr: e.to_string() })?;
    let objects = doc.get("nftables").and_then(Value::as_array).cloned().unwrap_or_default();
    Ok(Some(Listing { objects }))
}

impl Listing {
    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects.iter().filter_map(move |o| o.get(kind))
    }

    /// Every element of every set and map.
    pub fn elements(&self) -> Vec<ListedElement> {
        let mut out = Vec::new();
        for object in &self.objects {
            for (kind, set) in ["set", "map"].into_iter().filter_map(|k| Some((k, object.get(k)?))) {
                let name = set.get("name").and_then(Value::as_str).unwrap_or_default();
                let Some(elems) = set.get("elem").and_then(Value::as_array) else { continue };
                for e in elems {
                    let (key, data) = match (kind, e) {
                        ("map", Value::Array(pair)) if pair.len() == 2 => (&pair[0], Some(pair[1].clone())),
                        _ => (e, None),
                    };
                    let (key, comment) = match key.get("elem") {
                        Some(inner) => (
                            inner.get("val").cloned().unwrap_or(Value::Null),
                            inner.get("comment").and_then(Value::as_str).map(str::to_string),
                        ),
                        None => (key.clone(), None),
                    };
                    out.push(ListedElement { set: name.to_string(), key, data, comment });
                }
            }
        }
        out
    }

    /// Every rule, with its handle and comment.
    pub fn rules(&self) -> Vec<ListedRule> {
        self.of_kind("rule")
            .filter_map(|r| {
                Some(ListedRule {
                    chain: r.get("chain")?.as_str()?.to_string(),
                    handle: r.get("handle")?.as_u64()? as u32,
                    comment: r.get("comment").and_then(Value::as_str).map(str::to_string),
                    expr: r.get("expr").cloned().unwrap_or(Value::Null),
                })
            })
            .collect()
    }

    /// Names of the chains in the table.
    pub fn chains(&self) -> Vec<String> {
        self.of_kind("chain").filter_map(|c| c.get("name")?.as_str().map(str::to_string)).collect()
    }

    /// Names of the sets and maps in the table.
    pub fn sets(&self) -> Vec<String> {
        self.of_kind("set")
            .chain(self.of_kind("map"))
            .filter_map(|c| c.get("name")?.as_str().map(str::to_string))
            .collect()
    }
}

/// `delete element <family> <table> <set> { key }`, as nft JSON (the listed
/// key is passed through as nft printed it).
pub fn delete_element(family: NfFamily, table: &str, set: &str, key: &Value) -> Value {
    json!({"delete": {"element": {"family": family_str(family), "table": table, "name": set, "elem": [key]}}})
}

/// `delete rule <family> <table> <chain> handle <handle>`, as nft JSON.
pub fn delete_rule(family: NfFamily, table: &str, chain: &str, handle: u32) -> Value {
    json!({"delete": {"rule": {"family": family_str(family), "table": table, "chain": chain, "handle": handle}}})
}

/// The `nftables` crate's commands (or JSON values already) as nft JSON values.
fn to_values<S: serde::Serialize>(objects: Vec<S>) -> Result<Vec<Value>, NftError> {
    objects
        .into_iter()
        .map(|o| {
            serde_json::to_value(o).map_err(|e| NftError { msg: "encoding nft JSON".into(), stderr: e.to_string() })
        })
        .collect()
}

/// Deletes everything in `listing` owned by the comments `owned` accepts:
/// elements of any set or map and rules of any chain, in one transaction
/// (none when nothing matches). When the transaction fails because a
/// concurrent call changed the table meanwhile, lists it again and retries
/// once. Returns what was removed.
pub fn delete_owned(
    family: NfFamily,
    table: &str,
    listing: &Listing,
    owned: impl Fn(&str) -> bool,
) -> Result<(Vec<ListedElement>, Vec<ListedRule>), NftError> {
    match delete_owned_once(family, table, listing, &owned) {
        Ok(done) => Ok(done),
        Err(first) => match list(family_str(family), table)? {
            Some(fresh) => delete_owned_once(family, table, &fresh, &owned).map_err(|_| first),
            None => Ok((Vec::new(), Vec::new())),
        },
    }
}

fn delete_owned_once(
    family: NfFamily,
    table: &str,
    listing: &Listing,
    owned: &impl Fn(&str) -> bool,
) -> Result<(Vec<ListedElement>, Vec<ListedRule>), NftError> {
    let elements: Vec<ListedElement> =
        listing.elements().into_iter().filter(|e| e.comment.as_deref().is_some_and(owned)).collect();
    let rules: Vec<ListedRule> =
        listing.rules().into_iter().filter(|r| r.comment.as_deref().is_some_and(owned)).collect();
    let mut tx = Vec::new();
    for e in &elements {
        tx.push(delete_element(family, table, &e.set, &e.key));
    }
    for r in &rules {
        tx.push(delete_rule(family, table, &r.chain, r.handle));
    }
    nft::apply_commands(&tx)?;
    Ok((elements, rules))
}

/// DEL by key, without listing: looks `candidates` up in `table` and
/// deletes, in one batch, those whose comment `owned` accepts (a key held by
/// another attachment stays). Returns the indices of the deleted candidates.
/// Missing elements, sets or tables are no error. On an error the caller
/// falls back to the listing path (`delete_owned`).
pub fn delete_by_key(
    nl: &mut Nfnl,
    family: NfFamily,
    table: &str,
    candidates: &[Elem],
    owned: impl Fn(&str) -> bool,
) -> Result<Vec<usize>, netlink::Error> {
    let family = nfproto(family);
    let found = nl.get(family, table, candidates)?;
    let doomed: Vec<usize> = found
        .iter()
        .enumerate()
        .filter(|(_, f)| f.as_ref().and_then(|f| f.comment.as_deref()).is_some_and(&owned))
        .map(|(i, _)| i)
        .collect();
    let ops: Vec<Op> = doomed.iter().map(|i| Op::Delete(&candidates[*i])).collect();
    nl.commit(family, table, &ops)?;
    Ok(doomed)
}

/// STATUS: whether nft can run at all.
pub fn status() -> Result<(), NftError> {
    nft::run(&["--version"], None).map(|_| ())
}

/// Adds what one attachment owns with the least kernel work:
/// 0. `fast` (the same elements, encoded for nfnetlink) in one batch of our
///    own, without exec'ing nft: the common case, when the table and its
///    sets exist and no key is held;
/// 1. `claims` alone (`create element`s and owned rules) through nft, when
///    the fast path is not possible (rules, or a batch refused for another
///    reason than a missing set or a held key);
/// 2. when something is missing (first use on the node, or the table was
///    removed): `skeleton()` and `claims` in one transaction;
/// 3. when a claimed key is held already (a stale attachment whose DEL never
///    came, or a retried ADD): one listing, then the holders `conflicts`
///    picks (and rules carrying `owner`) are deleted and the claims applied
///    in one transaction: last writer wins, as with the reference.
///
/// Rules are not keyed, so a retried ADD would duplicate them: when `claims`
/// hold rules (`has_rules`), path 3 is taken from the start.
/// A failed transaction changes nothing, so each path commits once.
#[allow(clippy::too_many_arguments)]
pub fn add_owned<S: serde::Serialize>(
    family: NfFamily,
    table: &str,
    skeleton: impl FnOnce() -> Vec<S>,
    claims: Vec<NfObject<'static>>,
    owner: &str,
    has_rules: bool,
    conflicts: impl Fn(&ListedElement) -> bool,
    fast: Option<&[Op]>,
) -> Result<(), NftError> {
    let claims = to_values(claims)?;
    let skeleton = || to_values(skeleton());
    if has_rules {
        return reclaim(family, table, skeleton, claims, owner, conflicts, None);
    }
    let mut missing = false;
    if let Some(ops) = fast {
        match Nfnl::open().and_then(|mut nl| nl.commit(nfproto(family), table, ops)) {
            Ok(()) => return Ok(()),
            Err(e) if nfnetlink::is_missing(&e) => missing = true,
            Err(e) if e.is_exists() => return reclaim(family, table, skeleton, claims, owner, conflicts, None),
            Err(e) => log::debug!("nfnetlink: {e}; applying with nft"),
        }
    }
    let first = if missing { Err(missing_error()) } else { nft::apply_commands(&claims) };
    match first {
        Ok(()) => Ok(()),
        Err(e) if is_missing(&e) => {
            let mut full = skeleton()?;
            full.extend(claims);
            match nft::apply_commands(&full) {
                Ok(()) => Ok(()),
                Err(e) => reclaim(family, table, || Ok(Vec::new()), full, owner, conflicts, Some(e)),
            }
        }
        Err(e) => reclaim(family, table, skeleton, claims, owner, conflicts, Some(e)),
    }
}

fn missing_error() -> NftError {
    NftError { msg: "nfnetlink".into(), stderr: "No such file or directory".into() }
}

fn is_missing(e: &NftError) -> bool {
    e.stderr.contains("No such file or directory")
}

/// Lists the table, deletes what `conflicts` picks and the rules of `owner`,
/// and applies `tx` in the same transaction (with the skeleton when the
/// table is missing or the transaction finds something missing).
fn reclaim(
    family: NfFamily,
    table: &str,
    skeleton: impl FnOnce() -> Result<Vec<Value>, NftError>,
    tx: Vec<Value>,
    owner: &str,
    conflicts: impl Fn(&ListedElement) -> bool,
    failure: Option<NftError>,
) -> Result<(), NftError> {
    let Some(listing) = list(family_str(family), table)? else {
        let mut full = skeleton()?;
        full.extend(tx);
        return nft::apply_commands(&full);
    };
    let mut deletes = Vec::new();
    for e in listing.elements().iter().filter(|e| conflicts(e)) {
        deletes.push(delete_element(family, table, &e.set, &e.key));
    }
    for r in listing.rules().iter().filter(|r| r.comment.as_deref() == Some(owner)) {
        deletes.push(delete_rule(family, table, &r.chain, r.handle));
    }
    if deletes.is_empty() {
        if let Some(failure) = failure {
            return Err(failure);
        }
    } else {
        log::info!("nft: {table}: replacing {} object(s) held by this or stale attachments", deletes.len());
    }
    let mut retry = deletes.clone();
    retry.extend(tx.iter().cloned());
    match nft::apply_commands(&retry) {
        Err(e) if is_missing(&e) => {
            let mut full = skeleton()?;
            full.extend(deletes);
            full.extend(tx);
            nft::apply_commands(&full)
        }
        other => other,
    }
}

/// The nfgenmsg family of a table family.
pub fn nfproto(family: NfFamily) -> u8 {
    match family {
        NfFamily::INet => 1,
        NfFamily::IP => 2,
        NfFamily::ARP => 3,
        NfFamily::NetDev => 5,
        NfFamily::Bridge => 7,
        NfFamily::IP6 => 10,
    }
}

pub fn family_str(family: NfFamily) -> &'static str {
    match family {
        NfFamily::IP => "ip",
        NfFamily::IP6 => "ip6",
        NfFamily::INet => "inet",
        NfFamily::ARP => "arp",
        NfFamily::Bridge => "bridge",
        NfFamily::NetDev => "netdev",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_comments() {
        assert_eq!(owner_comment("net", "abc", "eth0"), "net abc eth0");
        assert!(is_network("net abc eth0", "net"));
        assert!(!is_network("net2 abc eth0", "net"));
        let long_id = "a".repeat(200);
        let c = owner_comment("net", &long_id, "eth0");
        assert!(c.len() <= COMMENT_MAX && c.starts_with("net #"));
        assert_eq!(c, owner_comment("net", &long_id, "eth0"));
        assert_ne!(c, owner_comment("net", &long_id, "eth1"));
        let long_net = "n".repeat(100);
        let c = owner_comment(&long_net, &long_id, "eth0");
        assert!(c.len() <= COMMENT_MAX && is_network(&c, &long_net));
    }

    #[test]
    fn reads_elements_of_sets_and_maps() {
        let listing = Listing {
            objects: serde_json::from_str(
                r#"[{"metainfo":{}},
                {"map":{"name":"m","elem":[[{"elem":{"val":{"concat":["tcp",80]},"comment":"n c e"}},"10.0.0.1"],
                                           [{"concat":["udp",53]},"10.0.0.2"]]}},
                {"set":{"name":"s","elem":["10.0.0.1",{"elem":{"val":"10.0.0.3","comment":"x"}}]}},
                {"rule":{"chain":"c","handle":7,"comment":"n c e","expr":[]}}]"#,
            )
            .unwrap(),
        };
        let e = listing.elements();
        assert_eq!(e.len(), 4);
        assert_eq!(e[0].comment.as_deref(), Some("n c e"));
        assert_eq!(e[0].data, Some(Value::from("10.0.0.1")));
        assert_eq!(e[1].comment, None);
        assert_eq!(e[3].key, Value::from("10.0.0.3"));
        assert_eq!(listing.rules()[0].handle, 7);
        let cmd = delete_element(NfFamily::INet, "t", "m", &e[0].key);
        assert_eq!(cmd["delete"]["element"]["elem"][0]["concat"][1], 80);
    }
}
