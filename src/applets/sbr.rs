//! sbr: source-based routing for the interface of a chained result. Each of
//! its IPs gets a rule `from <ip> lookup <table>` and the interface's routes
//! move from the main table into that table (the first free one from 100 on,
//! a new one per IP), unless `table` names one, in which case only the rules
//! are added.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::IpAddr;

use ipnet::IpNet;
use nix::fcntl::{Flock, FlockArg};
use serde::Deserialize;

use super::shared::link_plugin::{open_container, open_container_for_del};
use crate::cni::fault;
use crate::cni::{Applet, CniError, CniResult, Command, IpConfig};
use crate::netlink::rule::Rule;
use crate::netlink::{Netlink, RouteEntry};

pub struct Sbr;

const FIRST_TABLE: u32 = 100;
const MAIN_TABLE: u32 = 254;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Conf {
    table: Option<u32>,
    /// At most one IPv4 and one IPv6 gateway, used instead of the result's.
    gateways: Vec<IpAddr>,
    /// Keep the subnet routes in the main table, with the IP as source hint.
    add_source_hints: bool,
}

impl Conf {
    fn gateway_for(&self, ip: &IpConfig) -> Option<IpAddr> {
        let v6 = ip.address.addr().is_ipv6();
        self.gateways.iter().copied().find(|g| g.is_ipv6() == v6).or(ip.gateway)
    }

    fn validate(&self) -> Result<(), CniError> {
        let v4 = self.gateways.iter().filter(|g| g.is_ipv4()).count();
        if v4 > 1 || self.gateways.len() - v4 > 1 {
            return Err(CniError::invalid_config("gateways takes at most one IPv4 and one IPv6 address"));
        }
        Ok(())
    }
}

/// The IPs of `prev` on `ifname` (or on no interface in particular).
fn ips_of(prev: &CniResult, ifname: &str) -> Vec<IpConfig> {
    prev.ips
        .iter()
        .filter(|ip| match ip.interface {
            Some(i) => prev.interfaces.get(i).is_none_or(|intf| intf.name == ifname),
            None => true,
        })
        .cloned()
        .collect()
}

/// Serialises sbr calls on one container, by flock on its netns file (as
/// the reference does, so the two exclude each other too).
fn lock_netns(path: &str) -> Result<Flock<File>, CniError> {
    let f = File::open(path).map_err(|e| CniError::io(format!("failed to open {path}")).with_details(e.to_string()))?;
    Flock::lock(f, FlockArg::LockExclusive)
        .map_err(|(_, e)| CniError::io(format!("failed to lock {path}")).with_details(e.to_string()))
}

/// The first table from `from` on that no rule and no route uses.
fn free_table(rules: &[Rule], routes: &[RouteEntry], from: u32) -> u32 {
    let used: BTreeSet<u32> = rules.iter().map(|r| r.table).chain(routes.iter().filter_map(|r| r.table)).collect();
    (from..).find(|t| !used.contains(t)).unwrap_or(from)
}

fn all_routes(nl: &Netlink) -> Result<Vec<RouteEntry>, CniError> {
    let mut routes = nl.routes(false)?;
    routes.extend(nl.routes(true)?);
    Ok(routes)
}

/// What ADD changed, to undo on failure.
#[derive(Default)]
struct Done {
    rules: Vec<Rule>,
    table_routes: Vec<RouteEntry>,
    removed_main: Vec<RouteEntry>,
}

impl Done {
    fn undo(&self, nl: &Netlink) {
        for r in &self.rules {
            let _ = nl.del_rule(r);
        }
        for r in &self.table_routes {
            let _ = nl.del_route(r);
        }
        // Routes through a gateway need the on-link route to that gateway
        // back first: routes without a gateway go in before the others.
        let (direct, via): (Vec<&RouteEntry>, Vec<&RouteEntry>) =
            self.removed_main.iter().partition(|r| r.gw.is_none());
        for r in direct.into_iter().chain(via) {
            if let Err(e) = nl.add_route(r) {
                log::warn!("restoring route {}: {e}", crate::netlink::route::describe(r));
            }
        }
    }
}

fn add_rule(nl: &Netlink, done: &mut Done, ip: IpAddr, table: u32) -> Result<(), CniError> {
    let rule = Rule::from_ip(ip, table);
    nl.add_rule(&rule)?;
    done.rules.push(rule);
    fault::step("sbr: rule added")
}

/// Does a main-table route of the interface go with `ip` (its source or
/// gateway is in ip's subnet, or it has neither)?
fn route_goes_with(r: &RouteEntry, ip: &IpConfig) -> bool {
    let net = ip.address.trunc();
    match (r.src, r.gw) {
        (None, None) => true,
        (src, gw) => src.is_some_and(|s| net.contains(&s)) || gw.is_some_and(|g| net.contains(&g)),
    }
}

fn do_routes(nl: &Netlink, conf: &Conf, ifname: &str, ips: &[IpConfig], done: &mut Done) -> Result<(), CniError> {
    let link = nl.require_link(ifname)?;
    let rules = nl.rules()?;
    let routes = all_routes(nl)?;
    let link_routes: Vec<RouteEntry> =
        routes.iter().filter(|r| r.oif == Some(link.index) && r.table == Some(MAIN_TABLE)).cloned().collect();
    let mut table = free_table(&rules, &routes, FIRST_TABLE);
    for ip in ips {
        add_rule(nl, done, ip.address.addr(), table)?;
        if let Some(gw) = conf.gateway_for(ip) {
            let default = IpNet::new(if gw.is_ipv6() { IpAddr::from([0u16; 8]) } else { IpAddr::from([0u8; 4]) }, 0);
            let route = RouteEntry {
                dst: default.ok(),
                gw: Some(gw),
                oif: Some(link.index),
                table: Some(table),
                ..Default::default()
            };
            nl.add_route(&route)?;
            done.table_routes.push(route);
            fault::step("sbr: default route in the table")?;
        }
        for r in link_routes.iter().filter(|r| route_goes_with(r, ip)) {
            let copy = RouteEntry { table: Some(table), ..r.clone() };
            nl.replace_route(&copy)?;
            done.table_routes.push(copy);
            fault::step("sbr: route copied into the table")?;
        }
        table = free_table(&rules, &routes, table + 1);
    }
    for r in &link_routes {
        let subnet = r.scope == Some(crate::netlink::route::SCOPE_LINK);
        if conf.add_source_hints && subnet {
            continue;
        }
        nl.del_route(r)?;
        done.removed_main.push(r.clone());
        fault::step("sbr: route removed from main")?;
    }
    if conf.add_source_hints {
        for ip in ips {
            let hint = RouteEntry {
                dst: Some(ip.address.trunc()),
                oif: Some(link.index),
                src: Some(ip.address.addr()),
                table: Some(MAIN_TABLE),
                scope: Some(crate::netlink::route::SCOPE_LINK),
                ..Default::default()
            };
            if let Err(e) = nl.replace_route(&hint) {
                log::warn!("source hint for {}: {e}", ip.address);
            }
        }
    }
    Ok(())
}

/// The configuration, the chained result and the interface's IPs.
fn load(cmd: &Command) -> Result<(Conf, CniResult, Vec<IpConfig>), CniError> {
    let conf: Conf = cmd.parse_config()?;
    conf.validate()?;
    let prev = cmd.prev_result()?.ok_or_else(|| CniError::invalid_config("sbr must be called as a chained plugin"))?;
    let ips = ips_of(&prev, &cmd.ifname);
    if ips.is_empty() {
        return Err(CniError::invalid_config(format!("no IP addresses supplied on interface {}", cmd.ifname)));
    }
    Ok((conf, prev, ips))
}

impl Applet for Sbr {
    /// The config alone (doctor validates without a prevResult); a given
    /// prevResult must parse.
    fn validate(&self, cmd: &Command) -> Result<(), CniError> {
        let conf: Conf = cmd.parse_config()?;
        conf.validate()?;
        cmd.prev_result().map(|_| ())
    }

    fn add(&self, cmd: &Command) -> Result<CniResult, CniError> {
        let (conf, prev, ips) = load(cmd)?;
        let (_ns, nl) = open_container(cmd)?;
        let _lock = lock_netns(&cmd.netns)?;
        let mut done = Done::default();
        let outcome = match conf.table {
            Some(table) => ips.iter().try_for_each(|ip| add_rule(&nl, &mut done, ip.address.addr(), table)),
            None => do_routes(&nl, &conf, &cmd.ifname, &ips, &mut done),
        };
        if let Err(e) = outcome {
            done.undo(&nl);
            return Err(e);
        }
        Ok(prev)
    }

    /// Removes the rules whose source is an address of the interface (or of
    /// the prevResult, when the interface is gone already), and the routes
    /// of the tables sbr chose for them.
    fn del(&self, cmd: &Command) -> Result<(), CniError> {
        let conf: Conf = cmd.parse_config()?;
        let Some((_ns, nl)) = open_container_for_del(cmd)? else { return Ok(()) };
        let _lock = lock_netns(&cmd.netns)?;
        let link = nl.link(&cmd.ifname)?;
        let mut sources: BTreeSet<IpAddr> = BTreeSet::new();
        if let Some(l) = &link {
            sources.extend(nl.addrs(Some(l.index))?.iter().map(|a| a.net.addr()));
        }
        if let Ok(Some(prev)) = cmd.prev_result() {
            sources.extend(ips_of(&prev, &cmd.ifname).iter().map(|ip| ip.address.addr()));
        }
        let mut first_error: Option<CniError> = None;
        let mut tables = BTreeSet::new();
        for rule in nl.rules()? {
            let ours =
                rule.src.is_some_and(|s| sources.contains(&s.addr())) && conf.table.is_none_or(|t| t == rule.table);
            if !ours {
                continue;
            }
            match nl.del_rule(&rule) {
                Ok(()) => {
                    tables.insert(rule.table);
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    first_error.get_or_insert(e.into());
                }
            }
        }
        // A configured table is the user's: only tables sbr picked are emptied.
        if let (None, Some(l)) = (conf.table, &link) {
            for r in all_routes(&nl)? {
                if r.oif == Some(l.index) && r.table.is_some_and(|t| tables.contains(&t) && t != MAIN_TABLE) {
                    if let Err(e) = nl.del_route(&r) {
                        if !e.is_not_found() {
                            first_error.get_or_insert(e.into());
                        }
                    }
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn check(&self, cmd: &Command) -> Result<(), CniError> {
        let conf: Conf = cmd.parse_config()?;
        let Some(prev) = cmd.prev_result()? else { return Ok(()) };
        let (_ns, nl) = open_container(cmd)?;
        let rules = nl.rules()?;
        for ip in ips_of(&prev, &cmd.ifname) {
            let addr = ip.address.addr();
            let found = rules.iter().any(|r| {
                r.src.is_some_and(|s| s.addr() == addr && s.prefix_len() == if addr.is_ipv6() { 128 } else { 32 })
                    && conf.table.is_none_or(|t| t == r.table)
            });
            if !found {
                return Err(CniError::internal(format!("no source rule for {addr}")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str, gw: Option<&str>) -> IpConfig {
        IpConfig { address: s.parse().unwrap(), gateway: gw.map(|g| g.parse().unwrap()), interface: None }
    }

    #[test]
    fn table_choice_skips_used_ones() {
        let rules = vec![Rule::from_ip("10.0.0.1".parse().unwrap(), 100), Rule { table: 255, ..Default::default() }];
        let routes = vec![RouteEntry { table: Some(101), ..Default::default() }];
        assert_eq!(free_table(&rules, &routes, 100), 102);
        assert_eq!(free_table(&[], &[], 100), 100);
    }

    #[test]
    fn routes_follow_their_ip() {
        let v4 = ip("10.1.0.5/24", Some("10.1.0.1"));
        let subnet = RouteEntry { src: Some("10.1.0.5".parse().unwrap()), ..Default::default() };
        let via_gw = RouteEntry { gw: Some("10.1.0.1".parse().unwrap()), ..Default::default() };
        let other = RouteEntry { gw: Some("10.2.0.1".parse().unwrap()), ..Default::default() };
        assert!(route_goes_with(&subnet, &v4));
        assert!(route_goes_with(&via_gw, &v4));
        assert!(!route_goes_with(&other, &v4));
        assert!(route_goes_with(&RouteEntry::default(), &v4));
    }

    #[test]
    fn gateways_by_family() {
        let conf = Conf { gateways: vec!["10.9.0.1".parse().unwrap()], ..Default::default() };
        assert_eq!(conf.gateway_for(&ip("10.1.0.5/24", Some("10.1.0.1"))), Some("10.9.0.1".parse().unwrap()));
        assert_eq!(conf.gateway_for(&ip("fd00::5/64", Some("fd00::1"))), Some("fd00::1".parse().unwrap()));
        let two_v4 =
            Conf { gateways: vec!["10.9.0.1".parse().unwrap(), "10.9.0.2".parse().unwrap()], ..Default::default() };
        assert_eq!(two_v4.validate().unwrap_err().code, 7);
    }

    #[test]
    fn ips_of_the_interface() {
        let mut prev = CniResult::default();
        prev.interfaces.push(crate::cni::Interface { name: "eth0".into(), ..Default::default() });
        prev.interfaces.push(crate::cni::Interface { name: "net1".into(), ..Default::default() });
        prev.ips.push(IpConfig { interface: Some(0), ..ip("10.1.0.5/24", None) });
        prev.ips.push(IpConfig { interface: Some(1), ..ip("10.2.0.5/24", None) });
        prev.ips.push(ip("10.3.0.5/24", None));
        let got: Vec<String> = ips_of(&prev, "net1").iter().map(|i| i.address.to_string()).collect();
        assert_eq!(got, ["10.2.0.5/24", "10.3.0.5/24"]);
    }
}
