//! The CNI side shared by the plugins that give a container one new link
//! and configure it from IPAM (ipvlan, vlan, dummy): opening the container,
//! finishing the result, the DEL and CHECK flows, GC/STATUS forwarding.
//! The netlink side lives in `netlink::moved_link`.

use crate::cni::error::INVALID_ENV;
use crate::cni::{ipam, CniContext, CniError, CniResult, Command, Interface};
use crate::netlink::{iface, iface_check, moved_link, sysctl, Link, NetNs, Netlink};

/// The container netns and a socket in it.
pub fn open_container(cmd: &Command) -> Result<(NetNs, Netlink), CniError> {
    let ns = NetNs::open(&cmd.netns).cni(INVALID_ENV, format!("failed to open netns {:?}", cmd.netns))?;
    let nl = Netlink::in_netns(&ns)?;
    Ok((ns, nl))
}

/// Makes `result` describe `link` as the container's only interface,
/// configures its addresses and routes, and applies the config's DNS.
/// `announce` turns on gratuitous ARP / unsolicited NA for the new
/// addresses (for links that share the master's L2 segment).
pub fn finish(
    cmd: &Command,
    ns: &NetNs,
    nl: &Netlink,
    link: &Link,
    mut result: CniResult,
    announce: bool,
) -> Result<CniResult, CniError> {
    if result.ips.is_empty() {
        return Err(CniError::internal("IPAM plugin returned missing IP config"));
    }
    for ip in &mut result.ips {
        ip.interface = Some(0);
    }
    result.interfaces = vec![Interface {
        name: cmd.ifname.clone(),
        mac: link.mac.clone(),
        sandbox: cmd.netns.clone(),
        ..Default::default()
    }];
    if announce {
        let ifname = cmd.ifname.clone();
        // Best effort, as the reference: a kernel without IPv6 has no ndisc_notify.
        let _ = ns.run(move || {
            let _ = sysctl::write(&sysctl::iface_key("ipv4", &ifname, "arp_notify"), "1");
            let _ = sysctl::write(&sysctl::iface_key("ipv6", &ifname, "ndisc_notify"), "1");
        });
    }
    iface::configure_iface(ns, nl, &cmd.ifname, &cmd.netns, &result)?;
    if let Some(dns) = cmd.conf.dns.as_ref().filter(|d| !d.is_empty()) {
        result.dns = dns.clone();
    }
    Ok(result)
}

/// Runs IPAM (unless `prev` already carries the addresses), then `finish`.
/// The IPAM reservation is released if anything fails.
pub fn configure(
    cmd: &Command,
    ns: &NetNs,
    nl: &Netlink,
    link: &Link,
    prev: Option<CniResult>,
    announce: bool,
) -> Result<CniResult, CniError> {
    match prev {
        Some(prev) => finish(cmd, ns, nl, link, prev, announce),
        None => ipam::add_then(cmd, |r| finish(cmd, ns, nl, link, r, announce)),
    }
}

/// DEL: releases the IPAM reservation (when the config has IPAM) and removes
/// the container's link; both are attempted, the first error is reported.
pub fn del(cmd: &Command) -> Result<(), CniError> {
    let released = if ipam::has_ipam(cmd) { ipam::del(cmd) } else { Ok(()) };
    let removed = moved_link::del_container_link(&cmd.netns, &cmd.ifname).map_err(CniError::from);
    released.and(removed)
}

/// CHECK's common part: IPAM check, then the prevResult's interface must be
/// a `kind` link in the container with its MAC, addresses and routes.
/// Returns the link and a socket in the container for kind-specific checks.
pub fn check(cmd: &Command, kind: &str) -> Result<(CniResult, NetNs, Netlink, Link), CniError> {
    if ipam::has_ipam(cmd) {
        ipam::check(cmd)?;
    }
    let prev = cmd.prev_result()?.ok_or_else(|| CniError::invalid_config("required prevResult missing"))?;
    let intf = iface_check::container_interface(&prev, &cmd.ifname, &cmd.netns)?;
    let (ns, nl) = open_container(cmd)?;
    let link = iface_check::check_link(&nl, intf, kind)?;
    iface_check::check_ips(&nl, &link, &iface_check::ips_of(&prev, &cmd.ifname, &cmd.netns))?;
    iface_check::check_routes(&nl, &prev.routes)?;
    Ok((prev, ns, nl, link))
}

/// CHECK: the link's parent is `master` (indexes of the master's netns).
pub fn check_parent(link: &Link, master: &Link) -> Result<(), CniError> {
    if link.parent != Some(master.index) {
        return Err(CniError::internal(format!("{} is no longer a link of master {}", link.name, master.name)));
    }
    Ok(())
}

pub fn gc(cmd: &Command) -> Result<(), CniError> {
    if ipam::has_ipam(cmd) {
        ipam::gc(cmd)?;
    }
    Ok(())
}

pub fn status(cmd: &Command) -> Result<(), CniError> {
    if ipam::has_ipam(cmd) {
        ipam::status(cmd)?;
    }
    Ok(())
}
