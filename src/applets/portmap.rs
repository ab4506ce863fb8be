//! portmap: forwards host ports to the container (chained after a main
//! plugin), with nftables whatever `backend` says.
//!
//! Everything lives in `table inet cnibox-portmap`, shared by all networks:
//! ```text
//! map hostports-v4-addr / -port     proto . port            -> container addr / port
//! map hostip-v4-addr / -port        hostIP . proto . port   -> container addr / port
//! (and -v6)
//! set masq-lo-v4                    container addr (masquerade from 127.0.0.0/8)
//! set masq-all-v4 / -v6             container addr (masqAll: masquerade from anywhere)
//! map masq-net-v4 / -v6             container addr : jump hairpin-<hash of its subnet>
//! chain prerouting, output (nat, dstnat): jump conditional; jump hostports
//! chain hostports: dnat through the maps (hostIP ones first; the others only
//!                  to local addresses: fib daddr type local)
//! chain conditional: one dnat rule per mapping that has conditionsV4/V6
//! chain masquerade (nat, srcnat): ct status dnat and daddr in the masq sets
//!                  → masquerade; daddr vmap @masq-net
//! chain hairpin-<hash>: saddr <subnet> masquerade (one per subnet, made with
//!                  its first container, removed by GC once nothing jumps to
//!                  it: a DEL leaves it for the subnet's next container)
//! ```
//! Per-container elements live only in plain hash sets and maps: a commit
//! that changes them costs the same whatever the number of containers (an
//! interval set of concatenations, pipapo, is cloned on every commit).
//! Tables made by earlier versions also hold `chain postrouting` and the
//! interval sets `masq-v4` / `masq-v6`: they keep working for the containers
//! added then, DEL still removes their elements, and GC deletes them once
//! they are empty.
//! Every element and conditional rule carries the comment `<network>
//! <containerID> <ifname>`, so DEL and GC find them from the attachment alone.
//! ADD is one nfnetlink batch once the table exists (`create` claims the
//! keys; a key held by a stale attachment is taken over through nft after
//! one listing; the first ADD on a node builds the table with nft). DEL with
//! prevResult and the portMappings is one lookup and one batch by key;
//! without them (or with conditional rules) one listing plus one transaction.
//!
//! Masquerading (`snat`, default true) replaces the reference's mark bit:
//! DNATed connections from the container's own subnet (hairpin: from itself
//! or a neighbour on the same bridge, whose replies would otherwise bypass
//! the host), from 127.0.0.0/8 (with route_localnet set on the interface
//! routing to the container, as the reference does) or, with `masqAll`, from
//! anywhere, are masqueraded: no mark is needed.
//!
//! A config that asks for masquerading by a mark, with `externalSetMarkChain`
//! (an iptables chain, such as kube-proxy's KUBE-MARK-MASQ, that nftables
//! cannot jump to) or an explicit `markMasqBit`, is served in the reference's
//! own iptables layout instead (iptables_layout.rs), as the reference's
//! `ensureBackend` picks iptables for it. With `backend: "nftables"`,
//! `externalSetMarkChain` is refused and `markMasqBit` unused, as there.

mod conditions;
mod iptables_layout;

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use nftables::expr::{Expression, Fib, FibFlag, FibResult, Map as MapExpr, MetaKey, NamedExpression};
use nftables::schema::{Map, NfListObject, Set, SetType, SetTypeValue};
use nftables::stmt::{NATFamily, Statement, VerdictMap, NAT};
use nftables::types::{NfChainType, NfFamily, NfHook};
use serde::Deserialize;
use serde_json::Value;

use super::shared::nft_attachment;
use crate::cni::fault;
use crate::cni::{Applet, CniError, CniResult, Command};
use crate::netlink::{conntrack, sysctl, Netlink};
use crate::nft::iptables::Iptables;
use crate::nft::owned::{self, Claim};
use crate::nft::schema::{
    add, concat, cow as s, ct_status_dnat, delete_chain, delete_set, eq, ip_proto, jump, meta, nfproto, payload,
    prefix, str_expr, Obj, Stmt, Table, Transaction,
};
use crate::nft::takeover::{self, Kind};
use crate::nft::{Backend, Data, Element, ElementOp, Key, ListedElement, ListedRule, Listing, Owner};
use conditions::Conditions;
use iptables_layout::{Layout, MarkBy};

pub struct Portmap;

const TABLE: &str = "cnibox-portmap";
const FAMILY: NfFamily = NfFamily::INet;
const DSTNAT: i32 = -100;
const SRCNAT: i32 = 100;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct PortmapConf {
    backend: Option<String>,
    snat: Option<bool>,
    #[serde(rename = "conditionsV4")]
    conditions_v4: Option<Vec<String>>,
    #[serde(rename = "conditionsV6")]
    conditions_v6: Option<Vec<String>>,
    masq_all: bool,
    mark_masq_bit: Option<i64>,
    external_set_mark_chain: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct PortMapping {
    host_port: i64,
    container_port: i64,
    protocol: String,
    #[serde(rename = "hostIP")]
    host_ip: String,
}

/// One validated mapping.
#[derive(Debug, Clone, PartialEq)]
struct Mapping {
    host_port: u16,
    container_port: u16,
    proto: &'static str,
    host_ip: Option<IpAddr>,
}

fn parse_conf(cmd: &Command) -> Result<PortmapConf, CniError> {
    let conf: PortmapConf = cmd.parse_config()?;
    match conf.backend.as_deref() {
        None | Some("nftables") => {}
        Some("iptables") => log::info!("portmap: backend \"iptables\" is served with nftables"),
        Some(other) => return Err(CniError::invalid_config(format!("unrecognized backend {other:?}"))),
    }
    if conf.mark_masq_bit.is_some() && conf.external_set_mark_chain.is_some() {
        return Err(CniError::invalid_config("cannot specify both externalSetMarkChain and markMasqBit"));
    }
    if conf.mark_masq_bit.is_some_and(|b| !(0..=31).contains(&b)) {
        return Err(CniError::invalid_config("markMasqBit must be between 0 and 31"));
    }
    Ok(conf)
}

/// Whether the config asks for masquerading by a mark, which only iptables
/// serves (the module comment says when).
fn mark_by(conf: &PortmapConf) -> Result<Option<MarkBy>, CniError> {
    let nft_requested = conf.backend.as_deref() == Some("nftables");
    let nft_conditions = [("conditionsV4", &conf.conditions_v4), ("conditionsV6", &conf.conditions_v6)]
        .into_iter()
        .find(|(_, c)| c.as_deref().is_some_and(conditions::is_nft_syntax));
    if let Some(chain) = &conf.external_set_mark_chain {
        if nft_requested {
            return Err(CniError::invalid_config(
                "nftables backend was requested but configuration contains iptables-specific options [externalSetMarkChain]",
            ));
        }
        if let Some((key, _)) = nft_conditions {
            return Err(CniError::invalid_config(format!(
                "externalSetMarkChain needs the iptables backend, but {key} is in nftables syntax"
            )));
        }
        return Ok(Some(MarkBy::External(chain.clone())));
    }
    let Some(bit) = conf.mark_masq_bit else { return Ok(None) };
    let unused = if nft_requested {
        Some("the nftables backend was requested")
    } else if nft_conditions.is_some() {
        Some("the conditions are in nftables syntax")
    } else if !Iptables::ALL.iter().any(Iptables::installed) {
        Some("iptables is not installed")
    } else {
        None
    };
    match unused {
        Some(why) => {
            log::info!("portmap: markMasqBit is unused ({why}): cnibox masquerades with nftables, needing no mark");
            Ok(None)
        }
        None => Ok(Some(MarkBy::Bit(bit as u32))),
    }
}

/// The iptables layout of a config that `mark_by` sends there.
fn layout<'a>(cmd: &'a Command, conf: &'a PortmapConf, mark: &'a MarkBy) -> Layout<'a> {
    Layout {
        owner: nft_attachment::owner(cmd),
        mark,
        snat: conf.snat.unwrap_or(true),
        masq_all: conf.masq_all,
        conditions_v4: conf.conditions_v4.as_deref().unwrap_or_default(),
        conditions_v6: conf.conditions_v6.as_deref().unwrap_or_default(),
    }
}

fn mappings(cmd: &Command) -> Result<Vec<Mapping>, CniError> {
    let raw: Vec<PortMapping> = cmd.runtime_config("portMappings")?.unwrap_or_default();
    let port = |p: i64, what: &str| {
        u16::try_from(p)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| CniError::invalid_config(format!("invalid {what} port number: {p}")))
    };
    raw.iter()
        .map(|m| {
            let proto = match m.protocol.to_ascii_lowercase().as_str() {
                "" | "tcp" => "tcp",
                "udp" => "udp",
                "sctp" => "sctp",
                other => return Err(CniError::invalid_config(format!("unsupported port mapping protocol {other:?}"))),
            };
            let host_ip = match m.host_ip.as_str() {
                "" => None,
                s => Some(
                    s.parse::<IpAddr>()
                        .map_err(|_| CniError::invalid_config(format!("invalid hostIP {s:?} in port mapping")))?,
                ),
            };
            Ok(Mapping {
                host_port: port(m.host_port, "host")?,
                container_port: port(m.container_port, "container")?,
                proto,
                host_ip,
            })
        })
        .collect()
}

/// The container's first IPv4 and first IPv6 address (with prefix), on the
/// interface `ifname` in a sandbox, as the reference picks them.
fn container_ips(prev: &CniResult, ifname: &str) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = Vec::new();
    for ip in &prev.ips {
        if out.iter().any(|o| o.addr().is_ipv4() == ip.address.addr().is_ipv4()) {
            continue;
        }
        if let Some(iface) = ip.interface.and_then(|i| prev.interfaces.get(i)) {
            if iface.name != ifname || iface.sandbox.is_empty() {
                continue;
            }
        }
        out.push(ip.address);
    }
    out
}

const T: Table = Table { family: FAMILY, name: TABLE };

fn fib_daddr_local() -> Stmt {
    let fib = Fib { result: FibResult::Type, flags: [FibFlag::Daddr].into_iter().collect() };
    eq(Expression::Named(NamedExpression::Fib(fib)), str_expr("local"))
}

fn fam(v6: bool) -> &'static str {
    if v6 {
        "v6"
    } else {
        "v4"
    }
}

fn map_name(hostip: bool, v6: bool, part: &str) -> String {
    format!("{}-{}-{part}", if hostip { "hostip" } else { "hostports" }, fam(v6))
}

/// The interval set of tables made by earlier versions (source net . container addr).
fn legacy_masq_set(v6: bool) -> String {
    format!("masq-{}", fam(v6))
}

const MASQ_LOCALHOST: &str = "masq-lo-v4";

fn masq_all_set(v6: bool) -> String {
    format!("masq-all-{}", fam(v6))
}

fn masq_net_map(v6: bool) -> String {
    format!("masq-net-{}", fam(v6))
}

const HAIRPIN_PREFIX: &str = "hairpin-";

/// The chain masquerading sources of `subnet`, shared by every container in it.
fn hairpin_chain(subnet: IpNet) -> String {
    let hash = crate::util::hash::fnv1a_128_hex(&subnet.trunc().to_string());
    format!("{HAIRPIN_PREFIX}{}", &hash[..16])
}

fn ip_type(v6: bool) -> SetType {
    if v6 {
        SetType::Ipv6Addr
    } else {
        SetType::Ipv4Addr
    }
}

/// The table, its maps, sets and chains, the fixed rules, and the hairpin
/// chains of `subnets` (rewritten on every such transaction: `add` of a rule
/// is not idempotent).
fn skeleton(subnets: &[IpNet]) -> Transaction {
    let mut tx = Transaction::new();
    tx.push(T.add_table());
    for v6 in [false, true] {
        tx.add_verdict_map(&T, &masq_net_map(v6), ip_type(v6));
    }
    tx.extend(skeleton_objects(subnets));
    tx
}

/// The skeleton after its table and verdict maps.
fn skeleton_objects(subnets: &[IpNet]) -> Vec<Obj> {
    let mut tx = Vec::new();
    let set = |name: String, v6: bool| {
        add(NfListObject::Set(Box::new(Set {
            family: FAMILY,
            table: s(TABLE),
            name: s(name),
            set_type: SetTypeValue::Single(ip_type(v6)),
            ..Default::default()
        })))
    };
    for v6 in [false, true] {
        for hostip in [false, true] {
            let mut key = vec![SetType::InetProto, SetType::InetService];
            if hostip {
                key.insert(0, ip_type(v6));
            }
            for (part, data) in [("addr", ip_type(v6)), ("port", SetType::InetService)] {
                tx.push(add(NfListObject::Map(Box::new(Map {
                    family: FAMILY,
                    table: s(TABLE),
                    name: s(map_name(hostip, v6, part)),
                    set_type: SetTypeValue::Concatenated(Cow::Owned(key.clone())),
                    map: SetTypeValue::Single(data),
                    ..Default::default()
                }))));
            }
        }
        tx.push(set(masq_all_set(v6), v6));
    }
    tx.push(set(MASQ_LOCALHOST.to_string(), false));
    for subnet in subnets {
        let chain = hairpin_chain(*subnet);
        let v6 = subnet.addr().is_ipv6();
        tx.push(add(NfListObject::Chain(T.chain(&chain))));
        tx.push(T.flush_chain(&chain));
        let saddr = eq(payload(ip_proto(v6), "saddr"), prefix(subnet.trunc()));
        tx.push(T.rule(&chain, vec![nfproto(v6), saddr, Statement::Masquerade(None)], None));
    }
    tx.push(add(NfListObject::Chain(T.chain("conditional"))));
    tx.push(add(NfListObject::Chain(T.chain("hostports"))));
    tx.push(add(NfListObject::Chain(T.base_chain("prerouting", NfChainType::NAT, NfHook::Prerouting, DSTNAT))));
    tx.push(add(NfListObject::Chain(T.base_chain("output", NfChainType::NAT, NfHook::Output, DSTNAT))));
    tx.push(add(NfListObject::Chain(T.base_chain("masquerade", NfChainType::NAT, NfHook::Postrouting, SRCNAT))));
    for name in ["hostports", "prerouting", "output", "masquerade"] {
        tx.push(T.flush_chain(name));
    }
    for name in ["prerouting", "output"] {
        for target in ["conditional", "hostports"] {
            tx.push(T.rule(name, vec![jump(target)], None));
        }
    }
    let lookup = |hostip: bool, v6: bool, part: &str| {
        let mut key = vec![meta(MetaKey::L4proto), payload("th", "dport")];
        if hostip {
            key.insert(0, payload(ip_proto(v6), "daddr"));
        }
        Some(Expression::Named(NamedExpression::Map(Box::new(MapExpr {
            key: concat(key),
            data: str_expr(format!("@{}", map_name(hostip, v6, part))),
        }))))
    };
    let localhost: IpNet = "127.0.0.0/8".parse().unwrap();
    tx.push(T.rule(
        "masquerade",
        vec![
            nfproto(false),
            ct_status_dnat(),
            eq(payload("ip", "saddr"), prefix(localhost)),
            eq(payload("ip", "daddr"), str_expr(format!("@{MASQ_LOCALHOST}"))),
            Statement::Masquerade(None),
        ],
        None,
    ));
    for v6 in [false, true] {
        for hostip in [true, false] {
            let mut expr = vec![nfproto(v6)];
            if !hostip {
                expr.push(fib_daddr_local());
            }
            expr.push(Statement::DNAT(Some(NAT {
                addr: lookup(hostip, v6, "addr"),
                family: Some(if v6 { NATFamily::IP6 } else { NATFamily::IP }),
                port: lookup(hostip, v6, "port"),
                flags: None,
            })));
            tx.push(T.rule("hostports", expr, None));
        }
        let daddr = payload(ip_proto(v6), "daddr");
        tx.push(T.rule(
            "masquerade",
            vec![
                nfproto(v6),
                ct_status_dnat(),
                eq(daddr.clone(), str_expr(format!("@{}", masq_all_set(v6)))),
                Statement::Masquerade(None),
            ],
            None,
        ));
        tx.push(T.rule(
            "masquerade",
            vec![
                nfproto(v6),
                ct_status_dnat(),
                Statement::VerdictMap(VerdictMap { key: daddr, data: str_expr(format!("@{}", masq_net_map(v6))) }),
            ],
            None,
        ));
    }
    tx
}

/// The elements and conditional rules one attachment owns.
#[derive(Debug, Default)]
struct Plan {
    /// Without their comment.
    elements: Vec<Element>,
    conditional: Vec<Vec<Stmt>>,
    /// Conditional rules whose conditions nft expressions pass through as
    /// text: each a rule of chain `conditional` in nft's syntax, without
    /// its comment.
    conditional_text: Vec<String>,
    /// The subnets whose hairpin chains the masq-net elements jump to.
    subnets: Vec<IpNet>,
    /// The masquerade elements earlier versions made (interval set
    /// masq-v4/-v6), for DEL by key on tables made before an upgrade.
    legacy: Vec<Element>,
    /// UDP host ports, per family, for the conntrack flush.
    udp_ports: BTreeSet<(bool, u16)>,
}

/// Each address's conditions. Once one family's pass through as text, the
/// other family's nft expressions do too (an attachment's conditional rules
/// are then all written as text, replaced together), and iptables
/// arguments beside them are refused.
fn conditions_of(conf: &PortmapConf, ips: &[IpNet]) -> Result<Vec<Conditions>, CniError> {
    let raw = |v6: bool| {
        let (key, conds) =
            if v6 { ("conditionsV6", &conf.conditions_v6) } else { ("conditionsV4", &conf.conditions_v4) };
        (key, conds.as_deref().unwrap_or_default())
    };
    let mut out = Vec::new();
    for ip in ips {
        let (key, conds) = raw(ip.addr().is_ipv6());
        out.push(conditions::prepare(key, conds, ip.addr().is_ipv6())?);
    }
    if !out.iter().any(|c| matches!(c, Conditions::Text(_))) {
        return Ok(out);
    }
    for (c, ip) in out.iter_mut().zip(ips) {
        let (key, conds) = raw(ip.addr().is_ipv6());
        match c {
            Conditions::Translated(stmts) if stmts.is_empty() => {}
            Conditions::Translated(_) if conditions::is_nft_syntax(conds) => *c = conditions::pass_through(key, conds)?,
            Conditions::Translated(_) => {
                return Err(CniError::unsupported_field(format!(
                    "{key}: iptables arguments beside nft expressions passed through in the other family"
                )))
            }
            Conditions::Text(_) => {}
        }
    }
    Ok(out)
}

fn plan(conf: &PortmapConf, maps: &[Mapping], ips: &[IpNet]) -> Result<Plan, CniError> {
    let mut plan = Plan::default();
    let mut seen = BTreeSet::new();
    for (ip, conds) in ips.iter().zip(conditions_of(conf, ips)?) {
        let v6 = ip.addr().is_ipv6();
        let mut mapped = false;
        for m in maps {
            // A hostIP of the other family skips the mapping; an unspecified one means any.
            let host_ip = match m.host_ip {
                Some(h) if h.is_ipv6() != v6 => continue,
                Some(h) if h.is_unspecified() => None,
                h => h,
            };
            // The first mapping of a key wins, as the first matching rule would.
            if !seen.insert((v6, host_ip, m.proto, m.host_port)) {
                continue;
            }
            mapped = true;
            if m.proto == "udp" {
                plan.udp_ports.insert((v6, m.host_port));
            }
            let conds = match &conds {
                Conditions::Text(text) => {
                    plan.conditional_text.push(conditional_text_rule(text, ip.addr(), host_ip, m));
                    continue;
                }
                Conditions::Translated(stmts) => stmts,
            };
            if !conds.is_empty() {
                let mut expr = conds.clone();
                expr.push(nfproto(v6));
                expr.push(eq(meta(MetaKey::L4proto), str_expr(m.proto)));
                expr.push(eq(payload("th", "dport"), Expression::Number(m.host_port as u32)));
                match host_ip {
                    Some(h) => expr.push(eq(payload(ip_proto(v6), "daddr"), str_expr(h))),
                    None => expr.push(fib_daddr_local()),
                }
                expr.push(Statement::DNAT(Some(NAT {
                    addr: Some(str_expr(ip.addr())),
                    family: Some(if v6 { NATFamily::IP6 } else { NATFamily::IP }),
                    port: Some(Expression::Number(m.container_port as u32)),
                    flags: None,
                })));
                plan.conditional.push(expr);
                continue;
            }
            let mut key = vec![Key::Proto(m.proto), Key::Port(m.host_port)];
            if let Some(h) = host_ip {
                key.insert(0, Key::Ip(h));
            }
            let hostip = host_ip.is_some();
            let addr = Element::new(map_name(hostip, v6, "addr"), key.clone()).with_data(Data::Ip(ip.addr()));
            let port = Element::new(map_name(hostip, v6, "port"), key).with_data(Data::Port(m.container_port));
            plan.elements.extend([addr, port]);
        }
        if mapped && conf.snat.unwrap_or(true) {
            plan_masquerade(&mut plan, conf, *ip);
        }
    }
    Ok(plan)
}

/// A conditional rule as nft's text, the same matches and DNAT as the
/// JSON rules, after the config's `conditions`.
fn conditional_text_rule(conditions: &str, to: IpAddr, host_ip: Option<IpAddr>, m: &Mapping) -> String {
    let (ip, family, to) = match to {
        IpAddr::V4(a) => ("ip", "ipv4", format!("{a}:{}", m.container_port)),
        IpAddr::V6(a) => ("ip6", "ipv6", format!("[{a}]:{}", m.container_port)),
    };
    let daddr = host_ip.map_or("fib daddr type local".to_string(), |h| format!("{ip} daddr {h}"));
    format!(
        "{conditions} meta nfproto {family} meta l4proto {} th dport {} {daddr} dnat {ip} to {to}",
        m.proto, m.host_port
    )
}

/// The masquerade elements of one container address: DNATed connections to
/// it from its own subnet (hairpin), from 127.0.0.0/8, or with masqAll from
/// anywhere.
fn plan_masquerade(plan: &mut Plan, conf: &PortmapConf, ip: IpNet) {
    let v6 = ip.addr().is_ipv6();
    let key = vec![Key::Ip(ip.addr())];
    if conf.masq_all {
        plan.elements.push(Element::new(masq_all_set(v6), key));
    } else {
        plan.elements.push(Element::new(masq_net_map(v6), key.clone()).with_data(Data::Jump(hairpin_chain(ip))));
        plan.subnets.push(ip.trunc());
        if !v6 {
            plan.elements.push(Element::new(MASQ_LOCALHOST, key));
        }
    }
    // What earlier versions made for the same container.
    let any: IpNet = if v6 { "::/0".parse().unwrap() } else { "0.0.0.0/0".parse().unwrap() };
    let mut sources = vec![if conf.masq_all { any } else { ip.trunc() }];
    if !v6 && !conf.masq_all {
        sources.push("127.0.0.0/8".parse().unwrap());
    }
    for src in sources {
        plan.legacy.push(Element::new(legacy_masq_set(v6), vec![Key::Net(src), Key::Ip(ip.addr())]));
    }
}

/// Sets route_localnet on the interface routing to `ip`, so that 127/8
/// sources may leave through it after DNAT (as the reference does).
fn enable_localnet_routing(ip: IpAddr) -> Result<(), CniError> {
    let nl = Netlink::new()?;
    let best = nl
        .routes(false)?
        .into_iter()
        .filter(|r| r.table.unwrap_or(254) == 254 && r.oif.is_some() && r.dst.is_some_and(|d| d.contains(&ip)))
        .max_by_key(|r| r.dst.map(|d| d.prefix_len()));
    let Some(oif) = best.and_then(|r| r.oif) else { return Ok(()) };
    let Some(link) = nl.link_by_index(oif)? else { return Ok(()) };
    sysctl::write(&sysctl::iface_key("ipv4", &link.name, "route_localnet"), "1")?;
    Ok(())
}

/// Removes stale UDP flows to the host ports; failures are only logged, as
/// in the reference (the rules are what matters).
fn flush_udp_conntrack(ports: &BTreeSet<(bool, u16)>) {
    for (v6, port) in ports {
        let family = if *v6 { conntrack::AF_INET6 } else { conntrack::AF_INET };
        match conntrack::delete_by_dst_port(family, conntrack::IPPROTO_UDP, *port) {
            Ok(n) => log::debug!("conntrack: removed {n} UDP entries to port {port}"),
            Err(e) => log::warn!("failed to delete stale UDP conntrack entries to port {port}: {e}"),
        }
    }
}

/// UDP host ports named by listed elements (`udp . port` keys) or rules.
fn udp_ports_of(elements: &[ListedElement], rules: &[ListedRule]) -> BTreeSet<(bool, u16)> {
    let mut out = BTreeSet::new();
    for e in elements {
        let v6 = e.set.contains("-v6-");
        if let Some(items) = e.key.get("concat").and_then(Value::as_array) {
            if let [.., proto, port] = items.as_slice() {
                if proto == "udp" {
                    if let Some(p) = port.as_u64() {
                        out.insert((v6, p as u16));
                    }
                }
            }
        }
    }
    for r in rules {
        let text = r.expr.to_string();
        let v6 = text.contains("\"ipv6\"");
        if !text.contains("\"udp\"") {
            continue;
        }
        for stmt in r.expr.as_array().into_iter().flatten() {
            let Some(m) = stmt.get("match") else { continue };
            if m.pointer("/left/payload/field") == Some(&Value::from("dport")) {
                if let Some(p) = m.get("right").and_then(Value::as_u64) {
                    out.insert((v6, p as u16));
                }
            }
        }
    }
    out
}

/// The plan of a DEL that has the previous result and the port mappings,
/// when it holds elements only (conditional rules are found by listing).
fn known_plan(cmd: &Command) -> Option<Plan> {
    let conf = parse_conf(cmd).ok()?;
    let prev = cmd.prev_result().ok()??;
    // Without the runtime's portMappings the keys are unknown (not "none").
    cmd.runtime_config::<Vec<PortMapping>>("portMappings").ok()??;
    let maps = mappings(cmd).ok()?;
    let plan = plan(&conf, &maps, &container_ips(&prev, &cmd.ifname)).ok()?;
    (plan.conditional.is_empty() && plan.conditional_text.is_empty()).then_some(plan)
}

/// The (v6, port) of a UDP host port element of the hostports/hostip maps.
fn udp_port_of(e: &Element) -> Option<(bool, u16)> {
    if !(e.set.starts_with("host") && e.set.ends_with("-addr")) {
        return None;
    }
    match e.key.as_slice() {
        [.., Key::Proto("udp"), Key::Port(port)] => Some((e.set.contains("-v6-"), *port)),
        _ => None,
    }
}

/// Commits the plan's elements and rules for `owner`: one nfnetlink batch
/// once the table exists (owned.rs says what else may happen).
fn add_plan(nft: &mut dyn Backend, owner: &Owner, plan: &Plan, ips: &[IpNet]) -> Result<(), CniError> {
    let comment = owner.comment();
    let owned_elements: Vec<Element> = plan.elements.iter().map(|e| e.clone().with_comment(&comment)).collect();
    let rules = plan.conditional.iter().map(|expr| T.rule("conditional", expr.clone(), Some(comment.clone())));
    let claim = Claim {
        family: FAMILY,
        table: TABLE,
        owner: &comment,
        ops: owned_elements.iter().map(ElementOp::Create).collect(),
        rules: rules.collect(),
    };
    let container_addrs: Vec<Value> = ips.iter().map(|i| Value::from(i.addr().to_string())).collect();
    let conflicts = |e: &ListedElement| {
        if e.comment.as_deref() == Some(comment.as_str()) {
            return true;
        }
        if e.set == legacy_masq_set(false) || e.set == legacy_masq_set(true) {
            // An earlier version's interval keys clash on the container address alone.
            let daddr = e.key.get("concat").and_then(Value::as_array).and_then(|c| c.get(1));
            return daddr.is_some_and(|d| container_addrs.contains(d));
        }
        plan.elements.iter().any(|claimed| claimed.matches(e))
    };
    owned::add_owned(nft, &claim, |_| skeleton(&plan.subnets), conflicts)?;
    if !plan.conditional_text.is_empty() {
        add_text_rules(nft, &comment, plan)?;
    }
    Ok(())
}

/// The conditional rules written as text, after the claim: one listing (to
/// replace what an earlier ADD of the owner wrote) and one nft script. A
/// failure leaves the claim's elements: the caller undoes them.
fn add_text_rules(nft: &mut dyn Backend, owner: &str, plan: &Plan) -> Result<(), CniError> {
    if owner.contains('"') {
        return Err(CniError::invalid_config(format!("{owner:?} cannot be an nft comment")));
    }
    let listing = match nft.list(FAMILY, TABLE)? {
        Some(listing) => listing,
        None => {
            nft.apply(&skeleton(&plan.subnets))?;
            nft.list(FAMILY, TABLE)?.unwrap_or_default()
        }
    };
    let mut script = String::new();
    for r in listing.rules().iter().filter(|r| r.comment.as_deref() == Some(owner)) {
        script += &format!("delete rule inet {TABLE} {} handle {}\n", r.chain, r.handle);
    }
    for rule in &plan.conditional_text {
        script += &format!("add rule inet {TABLE} conditional {rule} comment \"{owner}\"\n");
    }
    Ok(nft.apply_text(&script)?)
}

/// Deletes what the attachment owns; returns the UDP host ports it had, for
/// the conntrack flush.
fn del_attachment(nft: &mut dyn Backend, cmd: &Command) -> Result<BTreeSet<(bool, u16)>, CniError> {
    let owner = nft_attachment::owner(cmd);
    // With prevResult and the port mappings the keys are known: delete
    // them without listing.
    if let Some(plan) = known_plan(cmd) {
        // Elements an earlier version made are looked up too (a lookup
        // of a missing set is no error).
        let candidates: Vec<Element> = plan.elements.into_iter().chain(plan.legacy).collect();
        match owned::delete_by_key(nft, FAMILY, TABLE, &candidates, |c| owner.owns(c)) {
            Ok(done) => return Ok(done.iter().filter_map(|i| udp_port_of(&candidates[*i])).collect()),
            Err(e) => log::info!("portmap DEL by key: {e}; finding the elements by their comment"),
        }
    }
    // Otherwise DEL needs nothing but the attachment: what it owns carries its comment.
    let Some(listing) = nft.list(FAMILY, TABLE)? else { return Ok(BTreeSet::new()) };
    let (elements, rules) = owned::delete_owned(nft, FAMILY, TABLE, &listing, |c| owner.owns(c))?;
    Ok(udp_ports_of(&elements, &rules))
}

/// How a config's mappings are served.
enum DataPath {
    /// The usual: elements in cnibox's table.
    Nftables(Plan),
    /// Masquerading by a mark, in the reference's iptables layout.
    Iptables(MarkBy),
}

/// The data path of the mappings of `ips`; None when nothing is to map.
fn data_path(conf: &PortmapConf, maps: &[Mapping], ips: &[IpNet]) -> Result<Option<DataPath>, CniError> {
    if maps.is_empty() || ips.is_empty() {
        return Ok(None);
    }
    if let Some(mark) = mark_by(conf)? {
        return Ok(Some(DataPath::Iptables(mark)));
    }
    let plan = plan(conf, maps, ips)?;
    if plan.elements.is_empty() && plan.conditional.is_empty() && plan.conditional_text.is_empty() {
        return Ok(None);
    }
    Ok(Some(DataPath::Nftables(plan)))
}

/// The UDP host ports of `ips`' families, for the conntrack flush.
fn udp_ports(maps: &[Mapping], ips: &[IpNet]) -> BTreeSet<(bool, u16)> {
    let mut out = BTreeSet::new();
    for v6 in ips.iter().map(|i| i.addr().is_ipv6()) {
        let of_family = |m: &&Mapping| m.host_ip.is_none_or(|h| h.is_ipv6() == v6);
        out.extend(maps.iter().filter(|m| m.proto == "udp").filter(of_family).map(|m| (v6, m.host_port)));
    }
    out
}

impl Applet for Portmap {
    /// Chained: a prevResult, when given, must parse and plan; ADD demands one.
    fn validate(&self, cmd: &Command) -> Result<(), CniError> {
        let conf = parse_conf(cmd)?;
        let maps = mappings(cmd)?;
        if let Some(prev) = cmd.prev_result()? {
            data_path(&conf, &maps, &container_ips(&prev, &cmd.ifname))?;
        }
        Ok(())
    }

    fn add(&self, cmd: &Command) -> Result<CniResult, CniError> {
        let conf = parse_conf(cmd)?;
        let Some(prev) = cmd.prev_result()? else {
            return Err(CniError::invalid_config("portmap must be called as a chained plugin (no prevResult)"));
        };
        let maps = mappings(cmd)?;
        let ips = container_ips(&prev, &cmd.ifname);
        let Some(path) = data_path(&conf, &maps, &ips)? else { return Ok(prev) };
        if conf.snat.unwrap_or(true) {
            for ip in ips.iter().filter(|i| i.addr().is_ipv4()) {
                enable_localnet_routing(ip.addr())?;
            }
        }
        fault::step("portmap: localnet routing")?;
        // Takes back what this ADD committed.
        let undo = |e: CniError| {
            if let Err(undo) = self.del(cmd) {
                log::warn!("undoing a failed ADD: {undo}");
            }
            e
        };
        match &path {
            // One transaction, a failure committing nothing; but for rules
            // written as text after it.
            DataPath::Nftables(plan) if plan.conditional_text.is_empty() => {
                add_plan(&mut *crate::nft::backend(), &nft_attachment::owner(cmd), plan, &ips)?
            }
            DataPath::Nftables(plan) => {
                add_plan(&mut *crate::nft::backend(), &nft_attachment::owner(cmd), plan, &ips).map_err(undo)?
            }
            // One family's commit may have preceded the failure.
            DataPath::Iptables(mark) => {
                layout(cmd, &conf, mark).add(&mut *crate::nft::backend(), &maps, &ips).map_err(undo)?
            }
        }
        fault::step("portmap: mappings committed").map_err(undo)?;
        match &path {
            DataPath::Nftables(plan) => flush_udp_conntrack(&plan.udp_ports),
            DataPath::Iptables(_) => flush_udp_conntrack(&udp_ports(&maps, &ips)),
        }
        Ok(prev)
    }

    fn del(&self, cmd: &Command) -> Result<(), CniError> {
        let mut nft = crate::nft::backend();
        let ours = del_attachment(&mut *nft, cmd);
        // What the reference made for this container, on a node that switched.
        let reference = takeover::remove(&mut *nft, Kind::Portmap, &nft_attachment::owner(cmd));
        flush_udp_conntrack(&ours?);
        Ok(reference?)
    }

    fn check(&self, cmd: &Command) -> Result<(), CniError> {
        let conf = parse_conf(cmd)?;
        let Some(prev) = cmd.prev_result()? else {
            return Err(CniError::invalid_config("required prevResult missing"));
        };
        let maps = mappings(cmd)?;
        let ips = container_ips(&prev, &cmd.ifname);
        let mut nft = crate::nft::backend();
        match data_path(&conf, &maps, &ips)? {
            None => Ok(()),
            Some(DataPath::Iptables(mark)) => layout(cmd, &conf, &mark).check(&mut *nft, &maps, &ips),
            Some(DataPath::Nftables(plan)) => {
                let listing = nft
                    .list(FAMILY, TABLE)?
                    .ok_or_else(|| CniError::internal(format!("nftables table inet {TABLE} is missing")))?;
                check_listing(&listing, &plan, &nft_attachment::owner(cmd).comment())
            }
        }
    }

    fn status(&self, _cmd: &Command) -> Result<(), CniError> {
        nft_attachment::status(&mut *crate::nft::backend())
    }

    fn gc(&self, cmd: &Command) -> Result<(), CniError> {
        let mut nft = crate::nft::backend();
        let (elements, rules) = nft_attachment::remove_stale(cmd, &mut *nft, FAMILY, TABLE)?;
        if !elements.is_empty() || !rules.is_empty() {
            log::info!(
                "portmap GC: removed {} elements and {} rules of stale attachments",
                elements.len(),
                rules.len()
            );
        }
        let reference = nft_attachment::remove_stale_reference(cmd, &mut *nft, Kind::Portmap);
        remove_unused_layout(&mut *nft).and(reference)
    }
}

/// Deletes, in one transaction, the hairpin chains no element jumps to any
/// more and, once their sets are empty, what earlier versions made (chain
/// postrouting, sets masq-v4/-v6). A concurrent ADD that jumps to a chain
/// meanwhile makes the deletion fail (EBUSY): it is only logged, the next GC
/// retries; an ADD after it finds the chain missing and recreates it.
fn remove_unused_layout(nft: &mut dyn Backend) -> Result<(), CniError> {
    let Some(listing) = nft.list(FAMILY, TABLE)? else { return Ok(()) };
    let tx = unused_layout(&listing);
    if tx.is_empty() {
        return Ok(());
    }
    match nft.apply(&tx) {
        Ok(()) => log::info!("portmap GC: removed {} unused chain(s) or set(s)", tx.len()),
        Err(e) => log::warn!("portmap GC: removing unused chains: {}", CniError::from(e)),
    }
    Ok(())
}

/// The deletions `remove_unused_layout` makes for `listing`.
fn unused_layout(listing: &Listing) -> Transaction {
    let elements = listing.elements();
    let jumped: BTreeSet<&str> = elements.iter().filter_map(ListedElement::jump_target).collect();
    let chain = |name: &str| delete_chain(FAMILY, TABLE, name);
    let set = |name: &str| delete_set(FAMILY, TABLE, name);
    let mut tx = Transaction::new();
    for name in listing.chains() {
        if name.starts_with(HAIRPIN_PREFIX) && !jumped.contains(name.as_str()) {
            tx.push(chain(&name));
        }
    }
    let sets = listing.sets();
    let legacy: Vec<String> = [false, true].map(legacy_masq_set).into_iter().filter(|n| sets.contains(n)).collect();
    let legacy_used = elements.iter().any(|e| legacy.contains(&e.set));
    if !legacy_used {
        // The chain first: its rule references the sets.
        if listing.chains().iter().any(|c| c == "postrouting") {
            tx.push(chain("postrouting"));
        }
        for name in &legacy {
            tx.push(set(name));
        }
    }
    tx
}

fn check_listing(listing: &Listing, plan: &Plan, owner: &str) -> Result<(), CniError> {
    let chains = listing.chains();
    let hairpins: Vec<String> = plan.subnets.iter().map(|n| hairpin_chain(*n)).collect();
    let fixed = ["prerouting", "output", "masquerade", "hostports", "conditional"];
    for name in fixed.iter().copied().chain(hairpins.iter().map(String::as_str)) {
        if !chains.iter().any(|c| c == name) {
            return Err(CniError::internal(format!("nftables chain {name} of inet {TABLE} is missing")));
        }
    }
    let rules = listing.rules();
    let fixed = [("prerouting", 2), ("output", 2), ("hostports", 4), ("masquerade", 5)];
    for (name, fixed) in fixed.into_iter().chain(hairpins.iter().map(|h| (h.as_str(), 1))) {
        if rules.iter().filter(|r| r.chain == name).count() < fixed {
            return Err(CniError::internal(format!(
                "rules of chain {name} in inet {TABLE} are missing (delete the table and re-add the containers)"
            )));
        }
    }
    let present = listing.elements();
    for e in &plan.elements {
        if !present.iter().any(|listed| e.is_listed_as(listed, owner)) {
            let key = serde_json::to_value(e.key_expr()).unwrap_or_default();
            return Err(CniError::internal(format!("port mapping element {key} missing from {}", e.set)));
        }
    }
    let owned_rules = rules.iter().filter(|r| r.comment.as_deref() == Some(owner)).count();
    if owned_rules < plan.conditional.len() + plan.conditional_text.len() {
        return Err(CniError::internal("conditional port mapping rules are missing"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(host_port: u16, container_port: u16, proto: &'static str, host_ip: Option<&str>) -> Mapping {
        Mapping { host_port, container_port, proto, host_ip: host_ip.map(|h| h.parse().unwrap()) }
    }

    #[test]
    fn plans_elements_per_family() {
        let ips: Vec<IpNet> = vec!["10.1.0.5/24".parse().unwrap(), "fd00::5/64".parse().unwrap()];
        let maps = vec![
            m(8080, 80, "tcp", None),
            m(8080, 81, "tcp", None), // same key: the first wins
            m(5353, 53, "udp", Some("192.168.1.1")),
            m(9090, 90, "tcp", Some("::")),
        ];
        let p = plan(&PortmapConf::default(), &maps, &ips).unwrap();
        let sets: Vec<&str> = p.elements.iter().map(|e| e.set.as_str()).collect();
        assert_eq!(
            sets,
            vec![
                "hostports-v4-addr",
                "hostports-v4-port",
                "hostip-v4-addr",
                "hostip-v4-port",
                "masq-net-v4",
                "masq-lo-v4",
                "hostports-v6-addr",
                "hostports-v6-port",
                "hostports-v6-addr",
                "hostports-v6-port",
                "masq-net-v6"
            ]
        );
        assert_eq!(p.udp_ports.iter().copied().collect::<Vec<_>>(), vec![(false, 5353)]);
        // Plain keys (the container address); the hairpin element jumps to its subnet's chain.
        let e = &p.elements[4];
        assert_eq!(serde_json::to_value(e.key_expr()).unwrap(), serde_json::json!("10.1.0.5"));
        let chain = hairpin_chain("10.1.0.0/24".parse().unwrap());
        assert_eq!(serde_json::to_value(e.data_expr()).unwrap(), serde_json::json!({"jump": {"target": chain}}));
        assert_eq!(p.subnets, vec!["10.1.0.0/24".parse::<IpNet>().unwrap(), "fd00::/64".parse().unwrap()]);
        assert!(p.elements.iter().all(|e| e.wire().is_some_and(|w| w.key_end.is_none())));
        // DEL by key also looks for what earlier versions made.
        let legacy: Vec<&str> = p.legacy.iter().map(|e| e.set.as_str()).collect();
        assert_eq!(legacy, vec!["masq-v4", "masq-v4", "masq-v6"]);
    }

    #[test]
    fn hairpin_chains_per_subnet() {
        let a = hairpin_chain("10.1.0.5/24".parse().unwrap());
        assert_eq!(a, hairpin_chain("10.1.0.9/24".parse().unwrap()));
        assert_ne!(a, hairpin_chain("10.1.0.5/25".parse().unwrap()));
        assert!(a.starts_with(HAIRPIN_PREFIX) && a.len() == HAIRPIN_PREFIX.len() + 16);
    }

    #[test]
    fn unused_layout_is_found() {
        let used = hairpin_chain("10.1.0.0/24".parse().unwrap());
        let listing = Listing {
            objects: serde_json::from_str(&format!(
                r#"[{{"chain":{{"name":"masquerade"}}}},{{"chain":{{"name":"{used}"}}}},{{"chain":{{"name":"hairpin-00"}}}},
                    {{"chain":{{"name":"postrouting"}}}},{{"set":{{"name":"masq-v4"}}}},{{"set":{{"name":"masq-v6"}}}},
                    {{"map":{{"name":"masq-net-v4","elem":[[{{"elem":{{"val":"10.1.0.5","comment":"o"}}}},{{"jump":{{"target":"{used}"}}}}]]}}}}]"#
            ))
            .unwrap(),
        };
        let tx = serde_json::to_value(unused_layout(&listing)).unwrap();
        let names: Vec<String> = tx["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let (kind, o) = c["delete"].as_object().unwrap().iter().next().unwrap();
                format!("{kind} {}", o["name"].as_str().unwrap())
            })
            .collect();
        assert_eq!(names, vec!["chain hairpin-00", "chain postrouting", "set masq-v4", "set masq-v6"]);
        // A legacy set still holding an element keeps the legacy layout.
        let mut objects = listing.objects.clone();
        objects[4] = serde_json::json!({"set": {"name": "masq-v4", "elem": [{"elem": {"val": {"concat": []}, "comment": "o"}}]}});
        let names = unused_layout(&Listing { objects });
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn snat_off_and_masq_all() {
        let ips: Vec<IpNet> = vec!["10.1.0.5/24".parse().unwrap()];
        let maps = vec![m(8080, 80, "tcp", None)];
        let conf = PortmapConf { snat: Some(false), ..Default::default() };
        let p = plan(&conf, &maps, &ips).unwrap();
        assert!(p.elements.iter().all(|e| !e.set.starts_with("masq")));
        assert!(p.subnets.is_empty() && p.legacy.is_empty());
        let conf = PortmapConf { masq_all: true, ..Default::default() };
        let p = plan(&conf, &maps, &ips).unwrap();
        let masq: Vec<_> = p.elements.iter().filter(|e| e.set.starts_with("masq")).collect();
        assert_eq!(masq.len(), 1);
        assert_eq!(masq[0].set, "masq-all-v4");
        assert!(p.subnets.is_empty());
    }

    #[test]
    fn conditions_make_rules() {
        let ips: Vec<IpNet> = vec!["10.1.0.5/24".parse().unwrap()];
        let conf = PortmapConf { conditions_v4: Some(vec!["-s".into(), "10.0.0.0/8".into()]), ..Default::default() };
        let p = plan(&conf, &[m(8080, 80, "tcp", None)], &ips).unwrap();
        assert_eq!(p.conditional.len(), 1);
        assert!(p.elements.iter().all(|e| e.set.starts_with("masq")));
    }

    #[test]
    fn mark_configs_go_to_iptables_as_in_the_reference() {
        let mark_of = |v: Value| mark_by(&serde_json::from_value::<PortmapConf>(v).unwrap());
        let external = Some(MarkBy::External("KUBE-MARK-MASQ".into()));
        assert_eq!(mark_of(json!({})).unwrap(), None);
        assert_eq!(mark_of(json!({"externalSetMarkChain": "KUBE-MARK-MASQ"})).unwrap(), external);
        let conds = json!({"externalSetMarkChain": "KUBE-MARK-MASQ", "conditionsV4": ["-s", "10.0.0.0/8"]});
        assert_eq!(mark_of(conds).unwrap(), external);
        assert_eq!(mark_of(json!({"externalSetMarkChain": "K", "backend": "nftables"})).unwrap_err().code, 7);
        let nft_conds = json!({"externalSetMarkChain": "K", "conditionsV6": ["ip6 saddr fd00::/8"]});
        assert_eq!(mark_of(nft_conds).unwrap_err().code, 7);
        assert_eq!(mark_of(json!({"markMasqBit": 5, "backend": "nftables"})).unwrap(), None);
        assert_eq!(mark_of(json!({"markMasqBit": 5, "conditionsV4": ["ip saddr 10.0.0.0/8"]})).unwrap(), None);
    }

    #[test]
    fn skeleton_serializes() {
        let tx = skeleton(&["10.1.0.0/24".parse().unwrap()]);
        let json = serde_json::to_string(&tx).unwrap();
        assert!(json.contains(r#""map":"ipv4_addr""#));
        assert!(json.contains(r#""map":"verdict""#));
        assert!(json.contains("@hostports-v4-port"));
        assert!(json.contains(&hairpin_chain("10.1.0.0/24".parse().unwrap())));
        assert!(!json.contains("interval"));
    }

    #[test]
    fn finds_udp_ports_of_listed_objects() {
        let listing = Listing {
            objects: serde_json::from_str(
                r#"[{"map":{"name":"hostports-v6-addr","elem":[[{"elem":{"val":{"concat":["udp",53]},"comment":"o"}},"fd00::5"]]}},
                    {"map":{"name":"hostip-v4-port","elem":[[{"elem":{"val":{"concat":["1.2.3.4","udp",54]},"comment":"o"}},53]]}},
                    {"map":{"name":"hostports-v4-port","elem":[[{"elem":{"val":{"concat":["tcp",80]},"comment":"o"}},80]]}},
                    {"rule":{"chain":"conditional","handle":3,"comment":"o","expr":[
                        {"match":{"op":"==","left":{"meta":{"key":"nfproto"}},"right":"ipv4"}},
                        {"match":{"op":"==","left":{"meta":{"key":"l4proto"}},"right":"udp"}},
                        {"match":{"op":"==","left":{"payload":{"protocol":"th","field":"dport"}},"right":55}}]}}]"#,
            )
            .unwrap(),
        };
        let ports = udp_ports_of(&listing.elements(), &listing.rules());
        assert_eq!(ports.into_iter().collect::<Vec<_>>(), vec![(false, 54), (false, 55), (true, 53)]);
    }

    #[test]
    fn picks_sandbox_ips() {
        let prev: CniResult = serde_json::from_str(
            r#"{"interfaces":[{"name":"br0"},{"name":"eth0","sandbox":"/x"}],
                "ips":[{"address":"10.0.0.1/24","interface":0},{"address":"10.0.0.5/24","interface":1},
                       {"address":"10.0.0.6/24","interface":1}]}"#,
        )
        .unwrap();
        assert_eq!(container_ips(&prev, "eth0"), vec!["10.0.0.5/24".parse::<IpNet>().unwrap()]);
    }

    const CONF: &str = r#"{"cniVersion":"1.0.0","name":"net1","type":"portmap",
        "runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},
                                         {"hostPort":5353,"containerPort":53,"protocol":"udp"}]},
        "prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/x"}],
                      "ips":[{"address":"10.1.0.5/24","interface":0}]}}"#;

    fn owner(id: &str) -> Owner<'_> {
        Owner { network: "net1", container_id: id, ifname: "eth0" }
    }

    fn plan_for(ip: &str) -> (Plan, Vec<IpNet>) {
        let ips: Vec<IpNet> = vec![ip.parse().unwrap()];
        let maps = [m(8080, 80, "tcp", None), m(5353, 53, "udp", None)];
        (plan(&PortmapConf::default(), &maps, &ips).unwrap(), ips)
    }

    #[test]
    fn adds_are_one_batch_once_the_table_exists() {
        let mut nft = crate::nft::fake::Fake::new();
        let (p, ips) = plan_for("10.1.0.5/24");
        add_plan(&mut nft, &owner("c1"), &p, &ips).unwrap();
        assert_eq!((nft.applies(), nft.commits()), (1, 1), "a refused batch, then the skeleton with the claim");
        assert_eq!(nft.rules(FAMILY, TABLE, &hairpin_chain(ips[0])).len(), 1);
        let (p2, ips2) = plan_for("10.1.0.6/24");
        // Another container, other host ports: one batch, no nft.
        let p2 = Plan { elements: p2.elements.into_iter().filter(|e| !e.set.starts_with("host")).collect(), ..p2 };
        add_plan(&mut nft, &owner("c2"), &p2, &ips2).unwrap();
        assert_eq!((nft.applies(), nft.commits()), (1, 2));
        let elems = nft.elements(FAMILY, TABLE, "hostports-v4-addr");
        assert_eq!(
            elems,
            [
                (serde_json::json!({"concat": ["tcp", 8080]}), Some("net1 c1 eth0".into())),
                (serde_json::json!({"concat": ["udp", 5353]}), Some("net1 c1 eth0".into()))
            ]
        );
    }

    #[test]
    fn a_held_host_port_is_taken_over() {
        let mut nft = crate::nft::fake::Fake::new();
        let (p, ips) = plan_for("10.1.0.5/24");
        add_plan(&mut nft, &owner("stale"), &p, &ips).unwrap();
        add_plan(&mut nft, &owner("c1"), &p, &ips).unwrap();
        let comments: Vec<_> = nft.elements(FAMILY, TABLE, "hostports-v4-port").into_iter().map(|(_, c)| c).collect();
        assert_eq!(comments, [Some("net1 c1 eth0".to_string()), Some("net1 c1 eth0".to_string())]);
    }

    #[test]
    fn del_by_key_and_by_comment() {
        let mut nft = crate::nft::fake::Fake::new();
        let (p, ips) = plan_for("10.1.0.5/24");
        add_plan(&mut nft, &owner("c1"), &p, &ips).unwrap();
        // With prevResult and the mappings: one lookup and one batch.
        let cmd = crate::cni::skel::test_command("DEL", CONF, "");
        let before = nft.calls.len();
        assert_eq!(del_attachment(&mut nft, &cmd).unwrap().into_iter().collect::<Vec<_>>(), [(false, 5353)]);
        assert_eq!(nft.calls.len() - before, 2, "a lookup and a batch");
        assert!(nft.elements(FAMILY, TABLE, "hostports-v4-addr").is_empty());
        // Without them: found by comment in one listing.
        add_plan(&mut nft, &owner("c1"), &p, &ips).unwrap();
        let bare =
            crate::cni::skel::test_command("DEL", r#"{"cniVersion":"1.0.0","name":"net1","type":"portmap"}"#, "");
        assert_eq!(del_attachment(&mut nft, &bare).unwrap().into_iter().collect::<Vec<_>>(), [(false, 5353)]);
        assert!(nft.elements(FAMILY, TABLE, "masq-net-v4").is_empty());
        assert!(nft.elements(FAMILY, TABLE, MASQ_LOCALHOST).is_empty());
        // The hairpin chain no element jumps to any more goes with GC.
        remove_unused_layout(&mut nft).unwrap();
        assert!(!nft.list(FAMILY, TABLE).unwrap().unwrap().chains().iter().any(|c| c.starts_with(HAIRPIN_PREFIX)));
    }
}
