//! vrf (chained): puts the interface CNI_IFNAME into the VRF `vrfname`
//! inside the container, creating the VRF (routing table `table`, or the
//! first free one) unless it exists already: several interfaces may share
//! one VRF. The interface's main-table routes move into the VRF's table.
//! DEL releases the interface and removes the VRF when its last member
//! leaves.

use std::time::Duration;

use rtnetlink::packet_route::link::{InfoData, InfoVrf};
use rtnetlink::LinkVrf;
use serde::Deserialize;

use super::shared::link_plugin::{open_container, open_container_for_del};
use crate::cni::error::INCOMPATIBLE_VERSION;
use crate::cni::fault;
use crate::cni::{version, Applet, CniError, CniResult, Command};
use crate::netlink::{Link, Netlink, RouteEntry};

pub struct Vrf;

const MAIN_TABLE: u32 = 254;
/// Tables a VRF must never take: unspec, default, main, local.
const RESERVED_TABLES: [u32; 4] = [0, 253, 254, 255];

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Conf {
    vrfname: String,
    table: i64,
}

impl Conf {
    fn load(cmd: &Command) -> Result<Conf, CniError> {
        // The reference speaks 0.3.1 and later only.
        if !version::at_least(&cmd.version, "0.3.1") {
            return Err(CniError::new(
                INCOMPATIBLE_VERSION,
                format!("vrf supports CNI versions 0.3.1 and later, not {}", cmd.version),
            ));
        }
        let conf: Conf = cmd.parse_config()?;
        conf.validate()?;
        Ok(conf)
    }

    fn validate(&self) -> Result<(), CniError> {
        if self.vrfname.is_empty() {
            return Err(CniError::invalid_config("configuration is expected to have a valid vrf name"));
        }
        crate::cni::skel::validate_ifname(&self.vrfname)
            .map_err(|e| CniError::invalid_config(format!("invalid vrfname: {}", e.msg)))?;
        if !(0..=i64::from(u32::MAX)).contains(&self.table) || RESERVED_TABLES[1..].contains(&(self.table as u32)) {
            return Err(CniError::invalid_config(format!("invalid VRF table {}", self.table)));
        }
        Ok(())
    }

    /// The configured table, 0 when the VRF may take any.
    fn table(&self) -> u32 {
        self.table as u32
    }
}

/// A VRF device and its routing table.
struct VrfDev {
    link: Link,
    table: u32,
}

/// Every VRF of the netns as (ifindex, table).
fn vrf_tables(nl: &Netlink) -> Result<Vec<(u32, u32)>, CniError> {
    let mut out = Vec::new();
    for (index, data) in nl.links_info_data()? {
        let InfoData::Vrf(data) = data else { continue };
        if let Some(table) = data.iter().find_map(|d| match d {
            InfoVrf::TableId(t) => Some(*t),
            _ => None,
        }) {
            out.push((index, table));
        }
    }
    Ok(out)
}

/// The lowest table no VRF uses (the reference's choice, minus the tables
/// the kernel reserves).
fn free_table(taken: &[u32]) -> Result<u32, CniError> {
    (1..u32::MAX)
        .find(|t| !taken.contains(t) && !RESERVED_TABLES.contains(t))
        .ok_or_else(|| CniError::internal("no free routing table for a VRF"))
}

fn find_vrf(nl: &Netlink, name: &str) -> Result<Option<VrfDev>, CniError> {
    let Some(link) = nl.link(name)? else { return Ok(None) };
    if link.kind != "vrf" {
        return Err(CniError::internal(format!("link {name} exists and is not a VRF")));
    }
    let table = vrf_tables(nl)?
        .into_iter()
        .find(|(index, _)| *index == link.index)
        .map(|(_, t)| t)
        .ok_or_else(|| CniError::internal(format!("VRF {name} has no routing table")))?;
    Ok(Some(VrfDev { link, table }))
}

/// The VRF named in `conf`, created if missing. true when this call created it.
fn find_or_create_vrf(nl: &Netlink, conf: &Conf) -> Result<(VrfDev, bool), CniError> {
    for _ in 0..3 {
        if let Some(vrf) = find_vrf(nl, &conf.vrfname)? {
            if conf.table() != 0 && vrf.table != conf.table() {
                return Err(CniError::invalid_config(format!(
                    "VRF {} already exists with a different routing table {}",
                    conf.vrfname, vrf.table
                )));
            }
            return Ok((vrf, false));
        }
        let table = match conf.table() {
            0 => free_table(&vrf_tables(nl)?.into_iter().map(|(_, t)| t).collect::<Vec<_>>())?,
            t => t,
        };
        match nl.add_link_message(LinkVrf::new(&conf.vrfname, table).build(), &format!("creating VRF {}", conf.vrfname))
        {
            // Another ADD in this netns created it meanwhile: use theirs.
            Err(e) if e.is_exists() => continue,
            Err(e) => return Err(e.into()),
            Ok(()) => {}
        }
        let link = nl.require_link(&conf.vrfname)?;
        if let Err(e) = nl.set_up(link.index) {
            let _ = nl.del_link(link.index);
            return Err(e.into());
        }
        return Ok((VrfDev { link, table }, true));
    }
    Err(CniError::internal(format!("VRF {} keeps vanishing while being created", conf.vrfname)))
}

fn members(nl: &Netlink, vrf: &Link) -> Result<Vec<Link>, CniError> {
    Ok(nl.links()?.into_iter().filter(|l| l.master == Some(vrf.index)).collect())
}

/// Removes the VRF unless some interface is still enslaved to it.
fn del_vrf_if_unused(nl: &Netlink, vrf: &Link) -> Result<(), CniError> {
    if members(nl, vrf)?.is_empty() {
        match nl.del_link(vrf.index) {
            Err(e) if !e.is_not_found() => return Err(e.into()),
            _ => {}
        }
    }
    Ok(())
}

/// Global IPv6 addresses: the kernel drops them when enslaving cycles the
/// link (unless keep_addr_on_down), so they are saved and put back.
fn global_v6_addrs(nl: &Netlink, index: u32) -> Result<Vec<ipnet::IpNet>, CniError> {
    Ok(nl
        .addrs(Some(index))?
        .into_iter()
        .map(|a| a.net)
        .filter(|n| matches!(n, ipnet::IpNet::V6(v6) if (v6.addr().segments()[0] & 0xffc0) != 0xfe80))
        .collect())
}

/// The main-table routes through `index` that are neither local nor
/// connected (scope universe): enslaving deletes them.
fn routes_to_move(nl: &Netlink, index: u32) -> Result<Vec<RouteEntry>, CniError> {
    let mut out = Vec::new();
    for v6 in [false, true] {
        out.extend(nl.routes(v6)?.into_iter().filter(|r| {
            r.oif == Some(index) && r.table.unwrap_or(MAIN_TABLE) == MAIN_TABLE && r.scope.unwrap_or(0) == 0
        }));
    }
    Ok(out)
}

/// Waits (about 2.5 s at most) for the kernel to install the local route of
/// a re-added IPv6 address in the VRF's table.
fn wait_for_local_route(nl: &Netlink, vrf: &VrfDev, index: u32, addr: ipnet::IpNet) -> Result<(), CniError> {
    let host = ipnet::IpNet::new(addr.addr(), 128).ok();
    for attempt in 0..=8u32 {
        let found =
            nl.routes(true)?.iter().any(|r| r.dst == host && r.table == Some(vrf.table) && r.oif == Some(index));
        if found {
            return Ok(());
        }
        if attempt < 8 {
            std::thread::sleep(Duration::from_millis(10 << attempt));
        }
    }
    Err(CniError::internal(format!("the local route of {addr} never appeared in table {}", vrf.table)))
}

/// Enslaves `ifname` to the VRF, restores its IPv6 addresses and moves its
/// routes into the VRF's table. Undone on failure.
fn enslave(nl: &Netlink, vrf: &VrfDev, ifname: &str) -> Result<(), CniError> {
    let link = nl.link(ifname)?.ok_or_else(|| CniError::internal(format!("could not get link by name {ifname}")))?;
    match link.master {
        Some(m) if m == vrf.link.index => return Ok(()),
        Some(m) => {
            let name = nl.link_by_index(m)?.map_or(format!("#{m}"), |l| l.name);
            return Err(CniError::internal(format!("interface {ifname} has already a master set: {name}")));
        }
        None => {}
    }
    let addrs = global_v6_addrs(nl, link.index)?;
    let routes = routes_to_move(nl, link.index)?;
    nl.set_master(link.index, vrf.link.index)?;
    let moved = (|| {
        fault::step("vrf: enslaved")?;
        let now = global_v6_addrs(nl, link.index)?;
        for addr in addrs.iter().filter(|a| !now.contains(a)) {
            match nl.add_addr(link.index, *addr, false) {
                Err(e) if !e.is_exists() => return Err(CniError::from(e)),
                _ => {}
            }
            wait_for_local_route(nl, vrf, link.index, *addr)?;
        }
        for r in &routes {
            nl.replace_route(&RouteEntry { table: Some(vrf.table), ..r.clone() })?;
        }
        fault::step("vrf: routes moved")
    })();
    if moved.is_err() {
        let _ = nl.set_nomaster(link.index);
        // Leaving the VRF cycles the link again: its global IPv6 addresses
        // (and with them the routes through them) may be gone once more.
        let now = global_v6_addrs(nl, link.index).unwrap_or_default();
        for addr in addrs.iter().filter(|a| !now.contains(a)) {
            let _ = nl.add_addr(link.index, *addr, false);
        }
        for r in &routes {
            let _ = nl.replace_route(r);
        }
    }
    moved
}

impl Applet for Vrf {
    /// Chained: a prevResult, when given, must parse; ADD demands one.
    fn validate(&self, cmd: &Command) -> Result<(), CniError> {
        Conf::load(cmd)?;
        cmd.prev_result().map(|_| ())
    }

    fn add(&self, cmd: &Command) -> Result<CniResult, CniError> {
        let conf = Conf::load(cmd)?;
        let prev =
            cmd.prev_result()?.ok_or_else(|| CniError::invalid_config("missing prevResult from earlier plugin"))?;
        let (_ns, nl) = open_container(cmd)?;
        let (vrf, created) = find_or_create_vrf(&nl, &conf)?;
        let enslaved = fault::step("vrf: vrf ready").and_then(|_| enslave(&nl, &vrf, &cmd.ifname));
        enslaved.inspect_err(|_| {
            if created {
                let _ = del_vrf_if_unused(&nl, &vrf.link);
            }
        })?;
        Ok(prev)
    }

    fn del(&self, cmd: &Command) -> Result<(), CniError> {
        let conf = Conf::load(cmd)?;
        let Some((_ns, nl)) = open_container_for_del(cmd)? else { return Ok(()) };
        let Some(vrf) = nl.link(&conf.vrfname)?.filter(|l| l.kind == "vrf") else { return Ok(()) };
        let released = match nl.link(&cmd.ifname)? {
            Some(link) if link.master == Some(vrf.index) => nl.set_nomaster(link.index).map_err(CniError::from),
            _ => Ok(()),
        };
        released.and(del_vrf_if_unused(&nl, &vrf))
    }

    fn check(&self, cmd: &Command) -> Result<(), CniError> {
        let conf = Conf::load(cmd)?;
        cmd.prev_result()?.ok_or_else(|| CniError::invalid_config("missing prevResult from earlier plugin"))?;
        let (_ns, nl) = open_container(cmd)?;
        let vrf = find_vrf(&nl, &conf.vrfname)?
            .ok_or_else(|| CniError::internal(format!("VRF {} not found", conf.vrfname)))?;
        if conf.table() != 0 && vrf.table != conf.table() {
            return Err(CniError::internal(format!(
                "VRF {} uses table {}, the config says {}",
                conf.vrfname,
                vrf.table,
                conf.table()
            )));
        }
        let link = nl.link(&cmd.ifname)?;
        if link.and_then(|l| l.master) != Some(vrf.link.index) {
            return Err(CniError::internal(format!(
                "failed to find {} associated to vrf {}",
                cmd.ifname, conf.vrfname
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(name: &str, table: i64) -> Conf {
        Conf { vrfname: name.into(), table }
    }

    #[test]
    fn validation() {
        conf("vrf0", 0).validate().unwrap();
        conf("vrf0", 100).validate().unwrap();
        for bad in [conf("", 0), conf("a/b", 0), conf("vrf0", -1), conf("vrf0", 254), conf("vrf0", 1 << 32)] {
            assert_eq!(bad.validate().unwrap_err().code, 7, "{bad:?}");
        }
    }

    #[test]
    fn keys_are_lenient() {
        let v = serde_json::json!({"VRFName": "red", "Table": 42});
        let c: Conf = crate::cni::lenient::parse_config(&v, "test").unwrap();
        assert_eq!((c.vrfname.as_str(), c.table()), ("red", 42));
    }

    #[test]
    fn free_tables() {
        assert_eq!(free_table(&[]).unwrap(), 1);
        assert_eq!(free_table(&[1, 2, 4]).unwrap(), 3);
        let busy: Vec<u32> = (1..253).collect();
        assert_eq!(free_table(&busy).unwrap(), 256);
    }
}
