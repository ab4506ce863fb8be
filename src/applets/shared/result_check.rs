//! CHECK helpers shared by the main plugins (bridge, ptp, macvlan, ipvlan,
//! vlan, host-device, tap, dummy): does a container still hold what a
//! result says it should?

use super::iface_config;
use crate::cni::{CniError, CniResult, Command, Interface};
use crate::netlink::{Link, Netlink};

/// The interface of `result` called `ifname` in `sandbox`, or an error
/// saying the result does not list it.
pub fn result_interface<'a>(result: &'a CniResult, ifname: &str, sandbox: &str) -> Result<&'a Interface, CniError> {
    let i = result
        .interface_index(ifname, sandbox)
        .ok_or_else(|| CniError::internal(format!("prevResult lists no interface {ifname} in sandbox {sandbox}")))?;
    Ok(&result.interfaces[i])
}

/// `intf` exists in `nl`'s netns and has the MAC the result recorded.
pub fn expect_link(nl: &Netlink, intf: &Interface) -> Result<Link, CniError> {
    let link = nl
        .link(&intf.name)?
        .ok_or_else(|| CniError::internal(format!("container interface {} not found", intf.name)))?;
    if !intf.mac.is_empty() && !intf.mac.eq_ignore_ascii_case(&link.mac) {
        return Err(CniError::internal(format!(
            "interface {} has MAC {}, the result says {}",
            intf.name, link.mac, intf.mac
        )));
    }
    Ok(link)
}

/// The link is of `kind` ("veth", "ipvlan", "vlan", ...).
pub fn expect_kind(link: &Link, kind: &str) -> Result<(), CniError> {
    if link.kind != kind {
        return Err(CniError::internal(format!("{} is a {:?} link, not a {kind}", link.name, link.kind)));
    }
    Ok(())
}

/// The link still hangs off `master` (an index in the master's netns).
pub fn expect_parent(link: &Link, master: &Link) -> Result<(), CniError> {
    if link.parent != Some(master.index) {
        return Err(CniError::internal(format!("{} is no longer a link of master {}", link.name, master.name)));
    }
    Ok(())
}

/// The container interface `cmd` is about: listed in `prev`, present in
/// `nl`'s netns with the recorded MAC.
pub fn expect_container_link(cmd: &Command, prev: &CniResult, nl: &Netlink) -> Result<Link, CniError> {
    expect_link(nl, result_interface(prev, &cmd.ifname, &cmd.netns)?)
}

/// The container interface's addresses and the result's routes.
pub fn expect_container_l3(cmd: &Command, prev: &CniResult, nl: &Netlink, link: &Link) -> Result<(), CniError> {
    expect_ips(nl, link, prev, &cmd.netns)?;
    expect_routes(nl, prev)
}

/// Every address of `result` meant for `link` (in `sandbox`) is on it.
pub fn expect_ips(nl: &Netlink, link: &Link, result: &CniResult, sandbox: &str) -> Result<(), CniError> {
    let have = nl.addrs(Some(link.index))?;
    for ip in iface_config::ips_for(result, &link.name, sandbox) {
        if !have.iter().any(|a| a.net == ip.address) {
            return Err(CniError::internal(format!("address {} not found on {}", ip.address, link.name)));
        }
    }
    Ok(())
}

/// Every route of `result` exists: by destination, gateway when given, and
/// table (the main one when the result names none, as the reference checks).
pub fn expect_routes(nl: &Netlink, result: &CniResult) -> Result<(), CniError> {
    for v6 in [false, true] {
        let wanted: Vec<_> = result.routes.iter().filter(|r| r.dst.addr().is_ipv6() == v6).collect();
        if wanted.is_empty() {
            continue;
        }
        let have = nl.routes(v6)?;
        for r in wanted {
            // A route the result puts in no table may live in any: plugins
            // chained later (vrf, sbr) move the interface's routes out of
            // main, and a chain's CHECK runs every plugin's CHECK.
            let found = have.iter().any(|h| {
                h.dst.map(|d| d.trunc()) == Some(r.dst.trunc())
                    && r.table.is_none_or(|t| h.table == Some(t))
                    && (r.gw.is_none() || h.gw == r.gw)
            });
            if !found {
                let via = r.gw.map(|g| format!(" via {g}")).unwrap_or_default();
                return Err(CniError::internal(format!("route {}{via} not found", r.dst)));
            }
        }
    }
    Ok(())
}
