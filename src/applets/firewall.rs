//! firewall: the reference's forward-path rules for a container (chained
//! after a main plugin), with nftables whatever `backend` says; plus, where
//! firewalld runs (or `backend: "firewalld"`), the container's addresses as
//! sources of the `firewalldZone` zone (nft/firewalld.rs), and accepts at
//! the top of other tables' forward chains that would drop (nft/foreign.rs).
//!
//! Everything lives in `table inet cnibox-firewall`:
//! ```text
//! set containers-v4 / -v6        container addresses (comment: owner)
//! set isolation-bridges          bridges with ingressPolicy same-bridge or isolated
//! set isolation-self             bridge . bridge for those bridges
//! set isolated-self              bridge . bridge for ingressPolicy isolated
//! chain CNI-ADMIN                operators' rules: jumped to first, never flushed
//! chain isolation                isolated-self → drop; isolation-self → return;
//!                                from one isolation bridge to another → drop
//! chain forward (filter hook forward):
//!     jump CNI-ADMIN; jump isolation
//!     ip daddr @containers-v4 ct state established,related accept
//!     ip saddr @containers-v4 accept        (and ip6)
//! ```
//! The reference's CNI-FORWARD semantics (accept established/related to the
//! container and everything from it) become set elements carrying the
//! comment `<network> <containerID> <ifname>`: one nfnetlink batch per ADD
//! once the table exists, one lookup and one batch per DEL by key with
//! prevResult (one listing plus one nft transaction without it). The ingress
//! policy elements are per
//! bridge and, as in the reference, stay after DEL (other containers may use
//! the bridge).
//!
//! nftables differs from iptables in one way operators should know: an
//! accept ends evaluation in this table only; another table's forward chain
//! with a drop policy still sees the packet and must allow it itself: hence
//! firewalld's zone, the accepts in foreign nftables chains, and, where an
//! iptables FORWARD (nft or legacy) may drop, the container's accepts made
//! there as the reference makes them (nft/cni_forward.rs). Drops
//! (isolation) are final everywhere.
//!
//! As in the reference, isolation acts on routed traffic (iif/oif are the
//! bridges): frames switched between two ports of one bridge never reach the
//! IP forward hook unless br_netfilter is loaded.

use std::collections::BTreeSet;
use std::net::IpAddr;

use nftables::schema::{NfListObject, Set, SetType, SetTypeValue};
use nftables::stmt::Statement;
use nftables::types::{NfChainType, NfFamily, NfHook};
use serde::Deserialize;
use serde_json::Value;

use super::shared::nft_attachment;
use crate::cni::{Applet, CniError, CniResult, Command};
use crate::nft::cni_forward;
use crate::nft::firewalld::{self, Firewalld};
use crate::nft::foreign;
use crate::nft::owned::{self, Claim};
use crate::nft::schema::{
    add, concat, cow, ct_state_in, eq, ip_proto, jump, meta, payload, str_expr, Obj, Table, Transaction,
};
use crate::nft::{Backend, Element, ElementOp, Key, ListedElement, Listing};

pub struct Firewall;

const TABLE: &str = cni_forward::FIREWALL_TABLE;
const FAMILY: NfFamily = cni_forward::FIREWALL_FAMILY;
const T: Table = Table { family: FAMILY, name: TABLE };
const DEFAULT_ADMIN_CHAIN: &str = "CNI-ADMIN";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct FirewallConf {
    backend: String,
    iptables_admin_chain_name: String,
    ingress_policy: String,
    firewalld_zone: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Policy {
    Open,
    SameBridge,
    Isolated,
}

struct Parsed {
    admin_chain: String,
    policy: Policy,
    firewalld: firewalld::Use,
    zone: String,
}

fn parse_conf(cmd: &Command) -> Result<Parsed, CniError> {
    let conf: FirewallConf = cmd.parse_config()?;
    // cnibox's own table is written whatever the backend; firewalld is used
    // as the reference decides (named, or unnamed and running).
    let firewalld = match conf.backend.as_str() {
        "" => firewalld::Use::IfRunning,
        "nftables" => firewalld::Use::Never,
        "iptables" => {
            log::info!("firewall: backend \"iptables\" is served with nftables");
            firewalld::Use::Never
        }
        "firewalld" => firewalld::Use::Required,
        // The reference falls back to its default for unknown values.
        other => {
            log::warn!("firewall: unknown backend {other:?}; using nftables, and firewalld if it runs");
            firewalld::Use::IfRunning
        }
    };
    let zone = match conf.firewalld_zone.as_str() {
        "" => firewalld::DEFAULT_ZONE.to_string(),
        zone => zone.to_string(),
    };
    let policy = match conf.ingress_policy.as_str() {
        "" | "open" => Policy::Open,
        "same-bridge" => Policy::SameBridge,
        "isolated" => Policy::Isolated,
        other => return Err(CniError::invalid_config(format!("unknown ingressPolicy {other:?}"))),
    };
    let admin_chain = match conf.iptables_admin_chain_name.as_str() {
        "" => DEFAULT_ADMIN_CHAIN.to_string(),
        name if name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) => {
            name.to_string()
        }
        name => return Err(CniError::invalid_config(format!("invalid iptablesAdminChainName {name:?}"))),
    };
    Ok(Parsed { admin_chain, policy, firewalld, zone })
}

/// firewalld as the config asks, found before ADD or CHECK changes or
/// reads anything. Not running while the config names it: the backend the
/// config asks for cannot be served here (unsupported field).
fn firewalld_for(conf: &Parsed) -> Result<Option<Firewalld>, CniError> {
    firewalld::connect(conf.firewalld).map_err(|e| match e {
        firewalld::Error::NotRunning(m) => CniError::unsupported_field(format!("backend \"firewalld\": {m}")),
        other => other.into(),
    })
}

/// The container's addresses, once each.
fn container_ips(prev: &CniResult) -> Vec<IpAddr> {
    let mut seen = BTreeSet::new();
    prev.ips.iter().map(|ip| ip.address.addr()).filter(|a| seen.insert(*a)).collect()
}

/// ADD's ways through other filters: accepts in foreign forward chains
/// that would drop, and the addresses in firewalld's zone.
fn open_other_filters(
    nft: &mut dyn Backend,
    firewalld: Option<&mut Firewalld>,
    zone: &str,
    owner: &str,
    addrs: &[IpAddr],
) -> Result<(), CniError> {
    foreign::open(nft, owner, addrs)?;
    if let Some(fw) = firewalld {
        fw.add_sources(zone, addrs)?;
    }
    Ok(())
}

/// DEL's and GC's firewalld part: best effort, as in the reference (what
/// fails is logged). A config that does not parse still tries firewalld if
/// it runs, with the default zone.
fn remove_firewalld_sources(cmd: &Command, addrs: &[IpAddr]) {
    if addrs.is_empty() {
        return;
    }
    let (usage, zone) = match parse_conf(cmd) {
        Ok(conf) => (conf.firewalld, conf.zone),
        Err(_) => (firewalld::Use::IfRunning, firewalld::DEFAULT_ZONE.to_string()),
    };
    match firewalld::connect(usage) {
        Ok(Some(mut fw)) => fw.remove_sources(&zone, addrs).iter().for_each(|e| log::warn!("firewall: {e}")),
        Ok(None) => {}
        Err(e) => log::warn!("firewall: leaving firewalld's zone {zone} alone: {e}"),
    }
}

/// The addresses of listed `containers-v4/-v6` elements.
fn listed_addresses(elements: &[ListedElement]) -> Vec<IpAddr> {
    let containers = [containers_set(false), containers_set(true)];
    elements.iter().filter(|e| containers.contains(&e.set)).filter_map(|e| e.key.as_str()?.parse().ok()).collect()
}

fn fam(v6: bool) -> &'static str {
    if v6 {
        "v6"
    } else {
        "v4"
    }
}

fn containers_set(v6: bool) -> String {
    format!("containers-{}", fam(v6))
}

fn set(name: &str, kind: Vec<SetType>) -> Obj {
    let set_type =
        if kind.len() == 1 { SetTypeValue::Single(kind[0]) } else { SetTypeValue::Concatenated(kind.into()) };
    add(NfListObject::Set(Box::new(Set {
        family: FAMILY,
        table: cow(TABLE),
        name: cow(name),
        set_type,
        ..Default::default()
    })))
}

fn set_ref(name: &str) -> nftables::expr::Expression<'static> {
    str_expr(format!("@{name}"))
}

/// The marker set recording that the forward chain jumps to `admin`: the
/// fast path of ADD flushes it (a no-op), so that a missing marker (a new
/// admin chain name) sends ADD through the skeleton path.
fn admin_marker(admin: &str) -> String {
    format!("{ADMIN_MARKER}{admin}")
}

const ADMIN_MARKER: &str = "jumps-to-";

/// The admin chains the forward chain must jump to: ours and those other
/// networks registered (their marker sets), read from the table if it exists.
fn admin_chains(nft: &mut dyn Backend, ours: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::from([ours.to_string()]);
    if let Ok(Some(listing)) = nft.list(FAMILY, TABLE) {
        out.extend(listing.sets().iter().filter_map(|s| s.strip_prefix(ADMIN_MARKER)).map(str::to_string));
    }
    out
}

/// Table, sets, chains and the fixed rules (rewritten on every ADD in the
/// same transaction). The admin chain is only ever `add`ed: never flushed.
fn skeleton(admin_chains: &BTreeSet<String>) -> Vec<Obj> {
    let mut tx = vec![T.add_table()];
    tx.push(set(&containers_set(false), vec![SetType::Ipv4Addr]));
    tx.push(set(&containers_set(true), vec![SetType::Ipv6Addr]));
    tx.push(set("isolation-bridges", vec![SetType::Ifname]));
    tx.push(set("isolation-self", vec![SetType::Ifname, SetType::Ifname]));
    tx.push(set("isolated-self", vec![SetType::Ifname, SetType::Ifname]));
    for admin in admin_chains {
        tx.push(set(&admin_marker(admin), vec![SetType::Ifname]));
        tx.push(add(NfListObject::Chain(T.chain(admin))));
    }
    tx.push(add(NfListObject::Chain(T.chain("isolation"))));
    tx.push(add(NfListObject::Chain(T.base_chain("forward", NfChainType::Filter, NfHook::Forward, 0))));
    tx.push(T.flush_chain("isolation"));
    tx.push(T.flush_chain("forward"));

    let pair = || concat(vec![meta(nftables::expr::MetaKey::Iifname), meta(nftables::expr::MetaKey::Oifname)]);
    tx.push(T.rule("isolation", vec![eq(pair(), set_ref("isolated-self")), Statement::Drop(None)], None));
    tx.push(T.rule("isolation", vec![eq(pair(), set_ref("isolation-self")), Statement::Return(None)], None));
    tx.push(T.rule(
        "isolation",
        vec![
            eq(meta(nftables::expr::MetaKey::Iifname), set_ref("isolation-bridges")),
            eq(meta(nftables::expr::MetaKey::Oifname), set_ref("isolation-bridges")),
            Statement::Drop(None),
        ],
        None,
    ));

    for admin in admin_chains {
        tx.push(T.rule("forward", vec![jump(admin)], None));
    }
    tx.push(T.rule("forward", vec![jump("isolation")], None));
    for v6 in [false, true] {
        let ct_state = ct_state_in(&["established", "related"]);
        tx.push(T.rule(
            "forward",
            vec![eq(payload(ip_proto(v6), "daddr"), set_ref(&containers_set(v6))), ct_state, Statement::Accept(None)],
            None,
        ));
        tx.push(T.rule(
            "forward",
            vec![eq(payload(ip_proto(v6), "saddr"), set_ref(&containers_set(v6))), Statement::Accept(None)],
            None,
        ));
    }
    tx
}

/// The bridge the ingress policy applies to: the first interface of the
/// previous result, as the reference takes it.
fn policy_bridge(policy: Policy, prev: &CniResult) -> Result<Option<String>, CniError> {
    if policy == Policy::Open {
        return Ok(None);
    }
    match prev.interfaces.first().map(|i| i.name.as_str()) {
        Some(name) if !name.is_empty() => Ok(Some(name.to_string())),
        _ => Err(CniError::invalid_config(
            "ingressPolicy same-bridge/isolated needs the bridge as the first interface of prevResult (chain firewall after bridge)",
        )),
    }
}

/// The container's addresses (`containers-v4/-v6` elements, one per address).
fn address_elements(prev: &CniResult, owner: &str) -> Vec<Element> {
    container_ips(prev)
        .into_iter()
        .map(|a| Element::new(containers_set(a.is_ipv6()), vec![Key::Ip(a)]).with_comment(owner))
        .collect()
}

/// The bridge's ingress policy elements (shared by its containers).
fn policy_elements(bridge: &str, policy: Policy) -> Vec<Element> {
    let name = || Key::Ifname(bridge.to_string());
    let mut out =
        vec![Element::new("isolation-bridges", vec![name()]), Element::new("isolation-self", vec![name(), name()])];
    if policy == Policy::Isolated {
        out.push(Element::new("isolated-self", vec![name(), name()]));
    }
    out
}

/// ADD's nftables part: the admin marker flushed (a no-op that fails when
/// the marker is missing), the addresses created, the policy elements added.
fn add_elements(
    nft: &mut dyn Backend,
    conf: &Parsed,
    owner: &str,
    addresses: &[Element],
    policy: &[Element],
) -> Result<(), CniError> {
    let marker = admin_marker(&conf.admin_chain);
    let mut ops = vec![ElementOp::Flush(&marker)];
    ops.extend(addresses.iter().map(ElementOp::Create));
    ops.extend(policy.iter().map(ElementOp::Add));
    let claim = Claim { family: FAMILY, table: TABLE, owner, ops, rules: Vec::new() };
    let skeleton = |nft: &mut dyn Backend| Transaction::from(skeleton(&admin_chains(nft, &conf.admin_chain)));
    let conflicts = |e: &ListedElement| e.comment.as_deref() == Some(owner) || addresses.iter().any(|a| a.matches(e));
    owned::add_owned(nft, &claim, skeleton, conflicts)?;
    Ok(())
}

/// DEL's nftables part: by key with prevResult, else found by comment.
/// Returns the container's addresses: prevResult's, else those of the
/// elements found.
fn del_elements(nft: &mut dyn Backend, cmd: &Command) -> Result<Vec<IpAddr>, CniError> {
    let owner = nft_attachment::owner(cmd);
    // With prevResult the keys are known: delete them without listing.
    let prev = cmd.prev_result().ok().flatten();
    if let Some(prev) = &prev {
        let candidates = address_elements(prev, &owner.comment());
        match owned::delete_by_key(nft, FAMILY, TABLE, &candidates, |c| owner.owns(c)) {
            Ok(_) => return Ok(container_ips(prev)),
            Err(e) => log::info!("firewall DEL by key: {e}; finding the elements by their comment"),
        }
    }
    // Only the attachment is needed: bad or missing config (even a refused
    // backend) does not block cleanup.
    let Some(listing) = nft.list(FAMILY, TABLE)? else {
        return Ok(prev.as_ref().map(container_ips).unwrap_or_default());
    };
    let (elements, _) = owned::delete_owned(nft, FAMILY, TABLE, &listing, |c| owner.owns(c))?;
    Ok(prev.as_ref().map(container_ips).unwrap_or_else(|| listed_addresses(&elements)))
}

impl Applet for Firewall {
    /// Chained: a prevResult, when given, must parse and suit the policy;
    /// ADD demands one.
    fn validate(&self, cmd: &Command) -> Result<(), CniError> {
        let conf = parse_conf(cmd)?;
        if let Some(prev) = cmd.prev_result()? {
            policy_bridge(conf.policy, &prev)?;
        }
        Ok(())
    }

    fn add(&self, cmd: &Command) -> Result<CniResult, CniError> {
        let conf = parse_conf(cmd)?;
        let Some(prev) = cmd.prev_result()? else {
            return Err(CniError::invalid_config("firewall must be called as a chained plugin (no prevResult)"));
        };
        let bridge = policy_bridge(conf.policy, &prev)?;
        let mut firewalld = firewalld_for(&conf)?;
        let owner = nft_attachment::owner(cmd).comment();
        let addresses = address_elements(&prev, &owner);
        if addresses.is_empty() && bridge.is_none() {
            return Ok(prev);
        }
        let policy = bridge.map(|br| policy_elements(&br, conf.policy)).unwrap_or_default();
        let mut nft = crate::nft::backend();
        add_elements(&mut *nft, &conf, &owner, &addresses, &policy)?;
        let ips = container_ips(&prev);
        let opened = open_other_filters(&mut *nft, firewalld.as_mut(), &conf.zone, &owner, &ips)
            .and_then(|_| cni_forward::open(&mut *nft, &ips, &conf.admin_chain).map_err(CniError::from));
        if let Err(e) = opened.and_then(|_| crate::cni::fault::step("firewall: rules committed")) {
            // Take back this attachment's elements (shared isolation elements stay, as after DEL).
            if let Err(undo) = self.del(cmd) {
                log::warn!("undoing a failed ADD: {undo}");
            }
            return Err(e);
        }
        Ok(prev)
    }

    /// Every part is tried; the first error is returned.
    fn del(&self, cmd: &Command) -> Result<(), CniError> {
        let mut nft = crate::nft::backend();
        let owner = nft_attachment::owner(cmd);
        let (addrs, elements) = match del_elements(&mut *nft, cmd) {
            Ok(addrs) => (addrs, Ok(())),
            Err(e) => (cmd.prev_result().ok().flatten().map(|p| container_ips(&p)).unwrap_or_default(), Err(e)),
        };
        let holes = foreign::close(&mut *nft, |c| owner.owns(c));
        remove_firewalld_sources(cmd, &addrs);
        let iptables = cni_forward::close(&mut *nft, &addrs).map_err(CniError::from);
        elements.and(holes.map(drop).map_err(CniError::from)).and(iptables)
    }

    fn check(&self, cmd: &Command) -> Result<(), CniError> {
        let conf = parse_conf(cmd)?;
        let Some(prev) = cmd.prev_result()? else {
            return Err(CniError::invalid_config("required prevResult missing"));
        };
        let bridge = policy_bridge(conf.policy, &prev)?;
        let owner = nft_attachment::owner(cmd).comment();
        let addresses = address_elements(&prev, &owner);
        if addresses.is_empty() && bridge.is_none() {
            return Ok(());
        }
        let mut firewalld = firewalld_for(&conf)?;
        let mut nft = crate::nft::backend();
        let listing = nft
            .list(FAMILY, TABLE)?
            .ok_or_else(|| CniError::internal(format!("nftables table inet {TABLE} is missing")))?;
        check_listing(&listing, &conf.admin_chain, &addresses, bridge.as_deref(), &owner)?;
        let ips = container_ips(&prev);
        if let Some(chain) = foreign::unopened(&mut *nft, &owner, &ips)?.first() {
            return Err(CniError::internal(format!(
                "{chain} would drop the container's traffic: its accepts are missing"
            )));
        }
        if let Some(missing) = cni_forward::check(&mut *nft, &ips, &conf.admin_chain)? {
            return Err(CniError::internal(missing));
        }
        let missing = match firewalld.as_mut() {
            Some(fw) => fw.missing_sources(&conf.zone, &ips)?,
            None => Vec::new(),
        };
        match missing.first() {
            Some(src) => Err(CniError::internal(format!("{src} is not a source of firewalld zone {}", conf.zone))),
            None => Ok(()),
        }
    }

    /// nft, and firewalld when the config names it (code 50 while it does not run).
    fn status(&self, cmd: &Command) -> Result<(), CniError> {
        nft_attachment::status(&mut *crate::nft::backend())?;
        if parse_conf(cmd).is_ok_and(|c| c.firewalld == firewalld::Use::Required) {
            firewalld::require()?;
        }
        Ok(())
    }

    fn gc(&self, cmd: &Command) -> Result<(), CniError> {
        let mut nft = crate::nft::backend();
        let (elements, _) = nft_attachment::remove_stale(cmd, &mut *nft, FAMILY, TABLE)?;
        if !elements.is_empty() {
            log::info!("firewall GC: removed {} elements of stale attachments", elements.len());
        }
        if let Some(stale) = nft_attachment::stale_filter(cmd)? {
            foreign::close(&mut *nft, stale)?;
        }
        remove_firewalld_sources(cmd, &listed_addresses(&elements));
        close_stale(&mut *nft, &elements)
    }
}

/// GC's iptables part: the accepts of the addresses stale attachments held
/// (`removed`), unless a live attachment holds the address now.
fn close_stale(nft: &mut dyn Backend, removed: &[ListedElement]) -> Result<(), CniError> {
    Ok(cni_forward::close_unheld(nft, &listed_addresses(removed))?)
}

fn check_listing(
    listing: &Listing,
    admin_chain: &str,
    addresses: &[Element],
    bridge: Option<&str>,
    owner: &str,
) -> Result<(), CniError> {
    let chains = listing.chains();
    for name in ["forward", "isolation", admin_chain] {
        if !chains.iter().any(|c| c == name) {
            return Err(CniError::internal(format!("nftables chain {name} of inet {TABLE} is missing")));
        }
    }
    let jumps = listing
        .rules()
        .into_iter()
        .filter(|r| r.chain == "forward")
        .filter_map(|r| r.expr.pointer("/0/jump/target").and_then(Value::as_str).map(str::to_string))
        .collect::<Vec<_>>();
    let before_isolation = jumps.iter().take_while(|j| *j != "isolation");
    if !before_isolation.into_iter().any(|j| j == admin_chain) {
        return Err(CniError::internal(format!("the forward chain does not jump to {admin_chain} first")));
    }
    let present = listing.elements();
    for a in addresses {
        if !present.iter().any(|e| a.is_listed_as(e, owner)) {
            let key = serde_json::to_value(a.key_expr()).unwrap_or_default();
            return Err(CniError::internal(format!("firewall element {key} missing from {}", a.set)));
        }
    }
    if let Some(br) = bridge {
        if !present.iter().any(|e| e.set == "isolation-bridges" && e.key == br) {
            return Err(CniError::internal(format!("ingress policy element for bridge {br} is missing")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nftables::schema::Nftables;
    use std::borrow::Cow;

    #[test]
    fn skeleton_jumps_to_admin_first() {
        let tx = skeleton(&BTreeSet::from(["CNI-ADMIN".to_string()]));
        let json = serde_json::to_value(Nftables { objects: Cow::Owned(tx) }).unwrap();
        let rules: Vec<&Value> =
            json["nftables"].as_array().unwrap().iter().filter_map(|o| o.pointer("/add/rule")).collect();
        let forward: Vec<&&Value> = rules.iter().filter(|r| r["chain"] == "forward").collect();
        assert_eq!(forward[0]["expr"][0]["jump"]["target"], "CNI-ADMIN");
        // The admin chain is never flushed.
        let flushed: Vec<&Value> =
            json["nftables"].as_array().unwrap().iter().filter_map(|o| o.pointer("/flush/chain/name")).collect();
        assert!(!flushed.contains(&&Value::from("CNI-ADMIN")));
    }

    #[test]
    fn address_keys_are_unique() {
        let prev: CniResult = serde_json::from_str(
            r#"{"ips":[{"address":"10.0.0.5/24"},{"address":"10.0.0.5/16"},{"address":"fd00::5/64"}]}"#,
        )
        .unwrap();
        let elements = address_elements(&prev, "o");
        assert_eq!(elements.len(), 2);
        assert_eq!(elements[1].set, "containers-v6");
        assert_eq!(serde_json::to_value(elements[1].key_expr()).unwrap(), Value::from("fd00::5"));
    }

    fn parsed(admin: &str) -> Parsed {
        Parsed {
            admin_chain: admin.to_string(),
            policy: Policy::SameBridge,
            firewalld: firewalld::Use::Never,
            zone: firewalld::DEFAULT_ZONE.into(),
        }
    }

    fn address(ip: &str, owner: &str) -> Vec<Element> {
        vec![Element::new("containers-v4", vec![Key::Ip(ip.parse().unwrap())]).with_comment(owner)]
    }

    #[test]
    fn adds_go_through_the_skeleton_once() {
        let mut nft = crate::nft::fake::Fake::new();
        let policy = policy_elements("br0", Policy::SameBridge);
        add_elements(&mut nft, &parsed("CNI-ADMIN"), "n c1 eth0", &address("10.0.0.5", "n c1 eth0"), &policy).unwrap();
        assert_eq!((nft.applies(), nft.commits()), (1, 1));
        add_elements(&mut nft, &parsed("CNI-ADMIN"), "n c2 eth0", &address("10.0.0.6", "n c2 eth0"), &policy).unwrap();
        assert_eq!((nft.applies(), nft.commits()), (1, 2), "one batch: the marker is there");
        assert_eq!(nft.elements(FAMILY, TABLE, "isolation-bridges").len(), 1);
        // Another admin chain name: its marker is missing, so the skeleton is
        // rewritten, jumping to both.
        add_elements(&mut nft, &parsed("OPS"), "n c3 eth0", &address("10.0.0.7", "n c3 eth0"), &[]).unwrap();
        let jumps: Vec<Value> =
            nft.rules(FAMILY, TABLE, "forward").iter().map(|r| r[0]["jump"]["target"].clone()).collect();
        assert_eq!(&jumps[..3], [Value::from("CNI-ADMIN"), Value::from("OPS"), Value::from("isolation")]);
        assert_eq!(nft.elements(FAMILY, TABLE, "containers-v4").len(), 3);
        let listing = nft.list(FAMILY, TABLE).unwrap().unwrap();
        check_listing(&listing, "OPS", &address("10.0.0.7", "n c3 eth0"), None, "n c3 eth0").unwrap();
        assert!(check_listing(&listing, "OPS", &address("10.0.0.9", "n c3 eth0"), None, "n c3 eth0").is_err());
    }

    #[test]
    fn del_without_prev_result_finds_the_elements_by_comment() {
        let mut nft = crate::nft::fake::Fake::new();
        add_elements(&mut nft, &parsed("CNI-ADMIN"), "net1 c1 eth0", &address("10.0.0.5", "net1 c1 eth0"), &[])
            .unwrap();
        let cmd =
            crate::cni::skel::test_command("DEL", r#"{"cniVersion":"1.0.0","name":"net1","type":"firewall"}"#, "");
        del_elements(&mut nft, &cmd).unwrap();
        assert!(nft.elements(FAMILY, TABLE, "containers-v4").is_empty());
    }
}
