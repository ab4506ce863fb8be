//! CHECK helpers shared by the main plugins: compare what a prevResult
//! promises about the container interface with what the kernel has (the
//! counterpart of the reference's ValidateExpectedInterfaceIPs /
//! ValidateExpectedRoute). `nl` is a socket in the container netns.

use crate::cni::{CniError, CniResult, Interface, IpConfig, Route};

use super::{iface, Link, Netlink};

/// The prevResult's entry for `ifname` in `sandbox`, or an error saying so.
pub fn container_interface<'a>(result: &'a CniResult, ifname: &str, sandbox: &str) -> Result<&'a Interface, CniError> {
    result
        .interfaces
        .iter()
        .find(|i| i.name == ifname && i.sandbox == sandbox)
        .ok_or_else(|| CniError::internal(format!("prevResult lists no interface {ifname:?} in sandbox {sandbox:?}")))
}

/// The interface exists with the MAC the result recorded (when it did).
pub fn check_link(nl: &Netlink, intf: &Interface, kind: &str) -> Result<Link, CniError> {
    let link = nl
        .link(&intf.name)?
        .ok_or_else(|| CniError::internal(format!("container interface {} not found", intf.name)))?;
    if link.kind != kind {
        return Err(CniError::internal(format!(
            "container interface {} is of type {:?}, not {kind}",
            intf.name, link.kind
        )));
    }
    if !intf.mac.is_empty() && !intf.mac.eq_ignore_ascii_case(&link.mac) {
        return Err(CniError::internal(format!(
            "interface {} has MAC {}, the result says {}",
            intf.name, link.mac, intf.mac
        )));
    }
    Ok(link)
}

/// Every address the result gives `ifname` is on the link.
pub fn check_ips(nl: &Netlink, link: &Link, ips: &[&IpConfig]) -> Result<(), CniError> {
    let have = nl.addrs(Some(link.index))?;
    for ip in ips {
        if !have.iter().any(|a| a.net == ip.address) {
            return Err(CniError::internal(format!("address {} is missing on {}", ip.address, link.name)));
        }
    }
    Ok(())
}

const MAIN_TABLE: u32 = 254;
const LOCAL_TABLE: u32 = 255;

/// Every route of the result is in the routing table (its own table if it
/// names one, else any table but the local one).
pub fn check_routes(nl: &Netlink, routes: &[Route]) -> Result<(), CniError> {
    let mut tables = [None, None];
    for r in routes {
        let v6 = r.dst.addr().is_ipv6();
        let slot = &mut tables[usize::from(v6)];
        if slot.is_none() {
            *slot = Some(nl.routes(v6)?);
        }
        // A route without a table may live in any table but the local one: a
        // later plugin (vrf) may have moved it into its own.
        let table_ok = |t: Option<u32>| match r.table {
            Some(want) => t.unwrap_or(MAIN_TABLE) == want,
            None => t != Some(LOCAL_TABLE),
        };
        let found = slot.as_ref().is_some_and(|have| {
            have.iter().any(|h| h.dst == Some(r.dst.trunc()) && table_ok(h.table) && (r.gw.is_none() || h.gw == r.gw))
        });
        if !found {
            let via = r.gw.map(|g| format!(" via {g}")).unwrap_or_default();
            return Err(CniError::internal(format!("route {}{via} is missing", r.dst)));
        }
    }
    Ok(())
}

/// The addresses of `result` that belong to `ifname` in `sandbox`.
pub fn ips_of<'a>(result: &'a CniResult, ifname: &str, sandbox: &str) -> Vec<&'a IpConfig> {
    iface::ips_for(result, ifname, sandbox).collect()
}
