//! Configuring a container interface from an IPAM result, shared by every
//! main plugin (the counterpart of the reference's ipam.ConfigureIface).

use std::net::IpAddr;

use crate::cni::CniResult;

use crate::netlink::route::RouteEntry;
use crate::netlink::{fault_step, sysctl, Error, Link, NetNs, Netlink, Result};

/// The IPs of `result` that belong to the interface named `ifname` in
/// `sandbox` (or that name no interface at all).
pub fn ips_for<'a>(
    result: &'a CniResult,
    ifname: &str,
    sandbox: &str,
) -> impl Iterator<Item = &'a crate::cni::IpConfig> + 'a {
    let wanted = result.interface_index(ifname, sandbox);
    result.ips.iter().filter(move |ip| ip.interface.is_none() || ip.interface == wanted)
}

/// Adds the result's addresses and routes to `ifname` inside `ns` and sets
/// it up. `nl` must be a socket in `ns`. Routes without a gateway use the
/// gateway of the first address of their family.
pub fn configure_iface(ns: &NetNs, nl: &Netlink, ifname: &str, sandbox: &str, result: &CniResult) -> Result<()> {
    configure_link(ns, nl, &nl.require_link(ifname)?, sandbox, result, ArpNotify::Unchanged)
}

/// Whether `configure_link` turns the link's arp_notify on as it sets it up.
#[derive(Clone, Copy, PartialEq)]
pub enum ArpNotify {
    Unchanged,
    On,
}

/// `configure_iface` for a link the caller has just read (e.g. a veth end
/// it created): one lookup fewer, and every lookup takes RTNL, which the
/// node's other plugin calls wait for.
pub fn configure_link(
    ns: &NetNs,
    nl: &Netlink,
    link: &Link,
    sandbox: &str,
    result: &CniResult,
    arp_notify: ArpNotify,
) -> Result<()> {
    let ifname = link.name.as_str();
    let ips: Vec<_> = ips_for(result, ifname, sandbox).collect();
    if ips.iter().any(|ip| ip.address.addr().is_ipv6()) {
        // Some distributions disable IPv6 on new interfaces by default.
        let key = sysctl::iface_key("ipv6", ifname, "disable_ipv6");
        ns.run(|| sysctl::write(&key, "0"))??;
    }
    for ip in &ips {
        match nl.add_addr(link.index, ip.address, false) {
            Err(e) if e.is_exists() => {}
            other => other?,
        }
    }
    fault_step("iface: addresses added")?;
    match arp_notify {
        ArpNotify::On => nl.set_up_with_arp_notify(link.index)?,
        ArpNotify::Unchanged => nl.set_up(link.index)?,
    }
    fault_step("iface: link up")?;
    let gw_v4 = ips.iter().filter_map(|ip| ip.gateway).find(IpAddr::is_ipv4);
    let gw_v6 = ips.iter().filter_map(|ip| ip.gateway).find(IpAddr::is_ipv6);
    for r in &result.routes {
        let v6 = r.dst.addr().is_ipv6();
        // Only routes of a family this interface has an address in.
        if !ips.iter().any(|ip| ip.address.addr().is_ipv6() == v6) {
            continue;
        }
        let gw = r.gw.or(if v6 { gw_v6 } else { gw_v4 });
        let entry = RouteEntry {
            dst: Some(r.dst),
            gw,
            oif: Some(link.index),
            table: r.table,
            metric: r.priority,
            mtu: r.mtu,
            advmss: r.advmss,
            scope: r.scope,
            ..Default::default()
        };
        // Several routes to one destination via different gateways are all
        // installed (ECMP), as the reference does.
        match nl.add_route_beside(&entry) {
            Err(e) if e.is_exists() => {}
            Err(e) => return Err(Error::new(e.errno, format!("{} (on {ifname})", e.msg))),
            Ok(()) => {}
        }
        fault_step("iface: route added")?;
    }
    Ok(())
}
