//! CHECK helpers: does a container still hold what a result says it should?

use crate::cni::{CniError, CniResult, Interface};

use super::Netlink;

/// The interface of `result` called `ifname` in `sandbox`, or an error
/// saying the result does not list it.
pub fn result_interface<'a>(result: &'a CniResult, ifname: &str, sandbox: &str) -> Result<&'a Interface, CniError> {
    let i = result
        .interface_index(ifname, sandbox)
        .ok_or_else(|| CniError::internal(format!("prevResult lists no interface {ifname} in sandbox {sandbox}")))?;
    Ok(&result.interfaces[i])
}

/// `ifname` exists in `nl`'s netns and has the MAC the result recorded.
pub fn expect_link(nl: &Netlink, intf: &Interface) -> Result<super::Link, CniError> {
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

/// Every address of `result` meant for `ifname` is on it.
pub fn expect_ips(nl: &Netlink, result: &CniResult, ifname: &str, sandbox: &str) -> Result<(), CniError> {
    let link = nl.link(ifname)?.ok_or_else(|| CniError::internal(format!("interface {ifname} not found")))?;
    let have = nl.addrs(Some(link.index))?;
    for ip in super::iface::ips_for(result, ifname, sandbox) {
        if !have.iter().any(|a| a.net == ip.address) {
            return Err(CniError::internal(format!("address {} not found on {ifname}", ip.address)));
        }
    }
    Ok(())
}

/// Every route of `result` exists (by destination, and gateway when given).
pub fn expect_routes(nl: &Netlink, result: &CniResult) -> Result<(), CniError> {
    for v6 in [false, true] {
        let wanted: Vec<_> = result.routes.iter().filter(|r| r.dst.addr().is_ipv6() == v6).collect();
        if wanted.is_empty() {
            continue;
        }
        let have = nl.routes(v6)?;
        for r in wanted {
            let found = have.iter().any(|h| {
                h.dst.map(|d| d.trunc()) == Some(r.dst.trunc())
                    && (r.gw.is_none() || h.gw == r.gw)
                    && r.table.is_none_or(|t| h.table == Some(t))
            });
            if !found {
                let via = r.gw.map(|g| format!(" via {g}")).unwrap_or_default();
                return Err(CniError::internal(format!("route {}{via} not found", r.dst)));
            }
        }
    }
    Ok(())
}
