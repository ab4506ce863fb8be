//! What the main plugins that give a container one interface (macvlan,
//! ipvlan, host-device, tap, ...) share: the requested MAC, the result,
//! IPAM-or-up, DEL of a container link plus IPAM, and CHECK's common part.
//! Also the container netns opening and the IPAM-only GC/STATUS every main
//! plugin uses.

use super::iface_config;
use super::result_check;
use crate::cni::{ipam, CniError, CniResult, Command, Interface, IpConfig};
use crate::netlink::{mac, moved_link, Link, NetNs, Netlink};

/// CNI_ARGS keys main plugins accept: their own MAC, and what the static
/// IPAM they delegate to reads (so `IP=...` needs no IgnoreUnknown).
pub const KNOWN_ARGS: &[&str] = &["MAC", "IP", "GATEWAY"];

/// The MAC to give the link: config `mac`, overridden by CNI_ARGS `MAC`,
/// overridden by runtimeConfig `mac` (the reference's order).
pub fn requested_mac(cmd: &Command, configured: &str) -> Result<Option<Vec<u8>>, CniError> {
    let mut chosen = configured.to_string();
    if let Some(m) = cmd.args()?.get("MAC").filter(|m| !m.is_empty()) {
        chosen = m.to_string();
    }
    if let Some(m) = cmd.runtime_config::<String>("mac")?.filter(|m| !m.is_empty()) {
        chosen = m;
    }
    if chosen.is_empty() {
        return Ok(None);
    }
    let bytes = mac::parse(&chosen).filter(|b| b.len() == 6);
    bytes.map(Some).ok_or_else(|| CniError::invalid_config(format!("invalid MAC address {chosen:?}")))
}

/// The result of a main plugin that made one container interface.
pub fn one_interface_result(cmd: &Command, link: &Link, ipam: Option<CniResult>) -> CniResult {
    let mut result = CniResult {
        interfaces: vec![Interface {
            name: cmd.ifname.clone(),
            mac: link.mac.clone(),
            sandbox: cmd.netns.clone(),
            ..Default::default()
        }],
        ..Default::default()
    };
    if let Some(ipam) = ipam {
        // Every address belongs to the one interface this plugin made.
        result.ips = ipam.ips.into_iter().map(|ip| IpConfig { interface: Some(0), ..ip }).collect();
        result.routes = ipam.routes;
        result.dns = ipam.dns;
    }
    if let Some(dns) = cmd.conf.dns.as_ref().filter(|d| !d.is_empty()) {
        result.dns = dns.clone();
    }
    result
}

/// The container's netns (CNI_NETNS); an invalid-environment error when it
/// cannot be opened.
pub fn open_netns(cmd: &Command) -> Result<NetNs, CniError> {
    Ok(NetNs::open(&cmd.netns)?)
}

/// The container's netns for a DEL, the one place that decides when a DEL
/// finds nothing to clean up in it (None): CNI_NETNS is empty (the spec lets
/// a runtime that no longer knows the netns leave it out on DEL) or names a
/// path with nothing behind it (the container is already torn down, and its
/// interfaces with it). Any other failure, such as a file that is not a
/// namespace or EACCES, is an error: the container's interfaces may still
/// be there, and a DEL that reported success would leave them behind
/// unnoticed. The reference's main plugins, vrf and loopback ignore only
/// "does not exist" too (`ns.NSPathNotExistErr`).
pub fn open_netns_for_del(cmd: &Command) -> Result<Option<NetNs>, CniError> {
    if cmd.netns.is_empty() {
        return Ok(None);
    }
    match NetNs::open(&cmd.netns) {
        Ok(ns) => Ok(Some(ns)),
        Err(e) if e.is_gone() => {
            log::info!("{e}: nothing to clean up inside it");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// `open_netns_for_del` and a netlink socket inside the netns.
pub fn open_container_for_del(cmd: &Command) -> Result<Option<(NetNs, Netlink)>, CniError> {
    let Some(ns) = open_netns_for_del(cmd)? else { return Ok(None) };
    let nl = Netlink::in_netns(&ns)?;
    Ok(Some((ns, nl)))
}

/// The container's netns and a netlink socket inside it.
pub fn open_container(cmd: &Command) -> Result<(NetNs, Netlink), CniError> {
    let ns = open_netns(cmd)?;
    let nl = Netlink::in_netns(&ns)?;
    Ok((ns, nl))
}

/// Addresses the new interface from IPAM (released again if that fails),
/// or just sets it up without IPAM.
pub fn address_or_up(cmd: &Command, ns: &NetNs, nl: &Netlink, link: &Link) -> Result<CniResult, CniError> {
    if !ipam::has_ipam(cmd) {
        nl.set_up(link.index)?;
        crate::cni::fault::step("main plugin: interface up")?;
        return Ok(one_interface_result(cmd, link, None));
    }
    ipam::add_then(cmd, |ipam| {
        let result = one_interface_result(cmd, link, Some(ipam));
        iface_config::configure_iface(ns, nl, &cmd.ifname, &cmd.netns, &result)?;
        crate::cni::fault::step("main plugin: interface configured")?;
        Ok(result)
    })
}

/// DEL for plugins whose only state is a container link plus IPAM.
pub fn del_link_and_ipam(cmd: &Command) -> Result<(), CniError> {
    let mut first_error = None;
    if ipam::has_ipam(cmd) {
        if let Err(e) = ipam::del(cmd) {
            log::warn!("IPAM DEL: {e}");
            first_error.get_or_insert(e);
        }
    }
    if let Err(e) = del_container_link(cmd) {
        log::warn!("{e}");
        first_error.get_or_insert(e);
    }
    first_error.map_or(Ok(()), Err)
}

/// The container link's part of DEL: nothing to do when the netns is gone.
fn del_container_link(cmd: &Command) -> Result<(), CniError> {
    let Some(ns) = open_netns_for_del(cmd)? else { return Ok(()) };
    Ok(moved_link::del_container_link(&ns, &cmd.ifname)?)
}

/// CHECK's common part: IPAM, prevResult, the interface, its IPs and routes.
/// Returns the container socket and the link for applet-specific checks.
pub fn check_interface(cmd: &Command) -> Result<(Netlink, Link), CniError> {
    if ipam::has_ipam(cmd) {
        ipam::check(cmd)?;
    }
    let prev = cmd.prev_result()?.ok_or_else(|| CniError::invalid_config("required prevResult missing"))?;
    let intf = result_check::result_interface(&prev, &cmd.ifname, &cmd.netns)?;
    let (_ns, nl) = open_container(cmd)?;
    let link = result_check::expect_link(&nl, intf)?;
    result_check::expect_container_l3(cmd, &prev, &nl, &link)?;
    Ok((nl, link))
}

/// GC for plugins whose only shared state is IPAM's.
pub fn ipam_gc(cmd: &Command) -> Result<(), CniError> {
    if ipam::has_ipam(cmd) {
        ipam::gc(cmd)?;
    }
    Ok(())
}

/// STATUS for plugins that hang a link on a host master (macvlan, ipvlan,
/// vlan): the master must exist (code 50 otherwise), then IPAM must be ready.
/// A master that lives in the container (`linkInContainer`) cannot be looked
/// at without a container, so only IPAM is asked then.
pub fn master_status(cmd: &Command, master: &str, link_in_container: bool) -> Result<(), CniError> {
    if !link_in_container {
        let nl = Netlink::new()?;
        let found = find_master(&nl, master).map_err(|e| CniError::new(crate::cni::error::NOT_AVAILABLE, e.msg))?;
        log::debug!("master {} is present", found.name);
    }
    ipam_status(cmd)
}

/// STATUS for plugins whose readiness is IPAM's.
pub fn ipam_status(cmd: &Command) -> Result<(), CniError> {
    if ipam::has_ipam(cmd) {
        ipam::status(cmd)?;
    }
    Ok(())
}

/// The master named `name` (or the default-route link when empty), seen
/// through `nl`. A missing master is a configuration error.
pub fn find_master(nl: &Netlink, name: &str) -> std::result::Result<Link, CniError> {
    if name.is_empty() {
        return moved_link::default_route_link(nl)?
            .ok_or_else(|| CniError::invalid_config("no master given and no default route interface found"));
    }
    nl.link(name)?.ok_or_else(|| CniError::invalid_config(format!("master interface {name:?} not found")))
}

/// A child link's MTU may not exceed its master's (0 or None: inherit).
pub fn check_mtu(master: &Link, mtu: i64) -> std::result::Result<(), CniError> {
    if mtu < 0 || mtu > master.mtu as i64 {
        return Err(CniError::invalid_config(format!(
            "invalid MTU {mtu}, must be [0, master MTU({})] of {}",
            master.mtu, master.name
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn del_in(netns: &str) -> Command {
        let mut cmd =
            crate::cni::skel::test_command("DEL", r#"{"cniVersion":"1.0.0","name":"n","type":"macvlan"}"#, "");
        cmd.netns = netns.to_string();
        cmd
    }

    #[test]
    fn del_finds_nothing_to_do_without_a_netns_or_with_it_gone() {
        assert!(open_netns_for_del(&del_in("")).unwrap().is_none());
        assert!(open_netns_for_del(&del_in("/run/netns/cnibox-no-such-netns")).unwrap().is_none());
        assert!(open_container_for_del(&del_in("/proc/999999999/ns/net")).unwrap().is_none());
    }

    #[test]
    fn del_refuses_a_path_that_is_not_a_netns() {
        for path in ["/proc/self/exe", "/proc/self/exe/net"] {
            let e = open_netns_for_del(&del_in(path)).unwrap_err();
            assert_eq!(e.code, crate::cni::error::INVALID_ENV, "{path}: {e}");
            assert!(e.msg.contains(path), "{path}: {e}");
        }
    }

    #[test]
    fn mtu_bounds() {
        let master = Link { name: "br0".into(), mtu: 1500, ..Default::default() };
        assert!(check_mtu(&master, 0).is_ok());
        assert!(check_mtu(&master, 1500).is_ok());
        assert_eq!(check_mtu(&master, 1501).unwrap_err().code, 7);
        assert_eq!(check_mtu(&master, -1).unwrap_err().code, 7);
    }
}
