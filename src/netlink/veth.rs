//! The veth pair every "container on the host" plugin starts with (bridge,
//! ptp): the host end in the calling netns, named `veth<8 hex>`, the peer
//! born directly inside the container netns under CNI_IFNAME.

use super::link::VethSpec;
use super::link_events::{Last, LinkEvents, Only};
use super::{libc_errno, mac, sysctl, Error, Link, NetNs, Netlink, Result};

/// What `create_container_veth` made.
#[derive(Debug, Clone)]
pub struct VethPair {
    pub host: Link,
    pub container: Link,
}

/// The host-side name derived from the attachment: stable, so that DEL and
/// rollback can find it even when the container netns is gone.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    format!("veth{}", crate::util::hash::short_hex(&[container_id, ifname], 8))
}

/// The interface group every host end cnibox creates is born in (IFLA_GROUP
/// is set by the very request that creates the pair): GC can tell cnibox's
/// leftovers from anyone else's even when a process died before tagging one.
pub const HOST_VETH_GROUP: u32 = 0x00c1_b0c5;

/// What `create_container_veth` makes.
#[derive(Debug, Clone, Default)]
pub struct ContainerVeth<'a> {
    pub container_id: &'a str,
    /// The container end's name (CNI_IFNAME).
    pub ifname: &'a str,
    pub mtu: Option<u32>,
    /// The container end's MAC; a random one when None.
    pub mac: Option<Vec<u8>>,
    /// The host end's owner tag (its alias), for GC.
    pub alias: &'a str,
    /// A bridge to enslave the host end to, up, in the creating request.
    pub master: Option<u32>,
    /// The host end is a bridge port: it never carries addresses, so the
    /// kernel generates no IPv6 link-local address for it (see
    /// `Netlink::tag_bridge_port`).
    pub bridge_port: bool,
}

/// Creates the pair. `host` is a socket in the host netns (the calling
/// thread's), `cont` one in the container's. The host end is named
/// `host_veth_name(..)`, or a random `veth<8 hex>` if that name is taken, is
/// born in `HOST_VETH_GROUP` (and in `master`, up, when given), and then
/// carries `alias`. The peer is born directly in the container netns:
/// moving a link between namespaces would cost an RCU grace period under
/// RTNL, which every parallel ADD on the node queues behind. The container
/// end is left down.
///
/// Both MACs are chosen here (the host end's as `mac::random_host_port`),
/// and the kernel echoes the host end back, whose IFLA_LINK is the peer's
/// index: nothing has to be read back, and every read takes RTNL.
pub fn create_container_veth(host: &Netlink, ns: &NetNs, cont: &Netlink, want: &ContainerVeth) -> Result<VethPair> {
    let ifname = want.ifname;
    let container_mac = want.mac.clone().unwrap_or_else(mac::random_local);
    let mut name = host_veth_name(want.container_id, ifname);
    let mut echoed = None;
    for attempt in 0..8 {
        let spec = VethSpec {
            name: &name,
            peer_name: ifname,
            peer_netns: Some(ns),
            mtu: want.mtu,
            mac: Some(mac::random_host_port()),
            peer_mac: Some(container_mac.clone()),
            group: Some(HOST_VETH_GROUP),
            master: want.master,
        };
        match host.add_veth(&spec) {
            Ok(link) => {
                echoed = link;
                break;
            }
            // Only after an EEXIST do we look at which name is taken: no
            // lookups on the way in (each takes RTNL).
            Err(e) if e.is_exists() && cont.link(ifname)?.is_some() => {
                return Err(Error::new(
                    libc_errno::EEXIST,
                    format!("container veth name provided ({ifname}) already exists"),
                ))
            }
            // The host name is taken (a stale pair or a hash collision): pick a random one.
            Err(e) if e.is_exists() && attempt < 7 => name = format!("veth{:08x}", crate::util::hash::random_u32()),
            Err(e) => return Err(e),
        }
    }
    let made = (|| {
        super::fault_step("veth: pair created")?;
        let host_end = match echoed.take() {
            Some(l) => l,
            None => host.require_link(&name)?,
        };
        if want.bridge_port {
            host.tag_bridge_port(host_end.index, want.alias)?;
        } else {
            host.set_alias(host_end.index, want.alias)?;
        }
        super::fault_step("veth: host end tagged")?;
        let container = match host_end.parent {
            Some(index) => Link {
                index,
                name: ifname.to_string(),
                kind: "veth".into(),
                mac: mac::format(&container_mac),
                mtu: host_end.mtu,
                ..Default::default()
            },
            None => cont.require_link(ifname)?,
        };
        Ok(VethPair { host: Link { alias: want.alias.to_string(), master: want.master, ..host_end }, container })
    })();
    if made.is_err() {
        // Deleting either end deletes the pair.
        if let Err(e) = host.del_link_by_name(&name) {
            log::warn!("removing the half-made veth {name}: {e}");
        }
    }
    made
}

/// Deletes the host ends of veth pairs whose alias `doomed` picks (GC of
/// attachments that are gone), cnibox's untagged host ends (a process died
/// between creating and tagging them) whose name no valid attachment
/// derives (`kept_name`), and host ends a killed DEL left in
/// `DOOMED_GROUP`. Returns how many were deleted.
pub fn delete_host_veths(
    host: &Netlink,
    doomed: impl Fn(&str) -> bool,
    kept_name: impl Fn(&str) -> bool,
) -> Result<usize> {
    let mut deleted = 0;
    for l in host.links()? {
        let untagged_leftover = l.alias.is_empty() && l.group == HOST_VETH_GROUP && !kept_name(&l.name);
        // A killed DEL's, half deleted.
        let batch_leftover = l.group == DOOMED_GROUP;
        if l.kind != "veth" || !(untagged_leftover || batch_leftover || (!l.alias.is_empty() && doomed(&l.alias))) {
            continue;
        }
        match host.del_link(l.index) {
            Ok(()) => deleted += 1,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

/// Host ends on their way out. A DEL moves its host end into this group and
/// deletes the whole group with one request, so DELs running at the same
/// time share one unregistration in the kernel (its RCU grace periods, taken
/// under RTNL, which every other link request on the node waits for)
/// instead of queueing for one each: 64 veths go in ~45 ms together, ~1.4 s
/// one by one. A DEL whose host end went with another DEL's batch finds the
/// group empty, and its link gone all the same. A host end a killed process
/// left in the group goes with the next batch, or with GC.
pub const DOOMED_GROUP: u32 = 0x00c1_dead;

/// Deletes the attachment's veth pair: by its host end when that carries the
/// derived name and `tag` (the alias `create_container_veth` gave it), in a
/// batch with other DELs (`DOOMED_GROUP`); otherwise by the container's
/// interface (the host end got a random name), and then the derived host end
/// if it is an untagged one of ours. Missing pieces are not errors.
pub fn delete_container_veth(
    host: &Netlink,
    ns: Option<&NetNs>,
    container_id: &str,
    ifname: &str,
    tag: &str,
) -> Result<()> {
    let name = host_veth_name(container_id, ifname);
    let host_end = host.link(&name)?.filter(|l| l.kind == "veth");
    if let Some(l) = host_end.as_ref().filter(|l| l.alias == tag) {
        return delete_in_batch(host, l.index);
    }
    let mut first_err = None;
    if let Some(ns) = ns {
        // The host end is the last link the pair's deletion takes along
        // (link_events.rs); under a random name it is not watched, and the
        // kernel's answer ends the wait.
        let events = LinkEvents::subscribe(Only::Deletions).ok();
        let res = Netlink::in_netns(ns).and_then(|nl| nl.del_link_watched(ifname, events, Last::Named(&name)));
        match res {
            // Its peer went with it.
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => first_err = Some(e),
        }
    }
    // An empty alias: made before host ends were tagged.
    if let Some(l) = host_end.filter(|l| l.alias.is_empty()) {
        match host.del_link(l.index) {
            Err(e) if !e.is_not_found() => first_err = first_err.or(Some(e)),
            _ => {}
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Deletes host end `index` (and its peer) with the `DOOMED_GROUP` batch,
/// returning once the kernel announces it gone.
fn delete_in_batch(host: &Netlink, index: u32) -> Result<()> {
    let events = LinkEvents::subscribe(Only::Deletions).ok();
    match host.set_group(index, DOOMED_GROUP) {
        Ok(()) => Netlink::new()?.del_group_watched(DOOMED_GROUP, events, Last::Index(index)).map(drop),
        // Gone meanwhile.
        Err(e) if e.is_not_found() => Ok(()),
        // Not in the batch, then: on its own.
        Err(e) => {
            log::warn!("{e}; deleting link #{index} on its own");
            match host.del_link(index) {
                Err(e) if !e.is_not_found() => Err(e),
                _ => Ok(()),
            }
        }
    }
}

/// Container-side sysctls the main plugins set before adding addresses:
/// IPv6 DAD off unless asked for (a fresh veth cannot collide, and DAD
/// delays the address by a second or more). Best effort: a kernel without
/// IPv6 has no such keys. (arp_notify goes with the link-up request:
/// `iface::ArpNotify`.)
pub fn prepare_container_sysctls(ns: &NetNs, ifname: &str, enable_dad: bool) -> Result<()> {
    let ifname = ifname.to_string();
    ns.run(move || {
        if enable_dad {
            let _ = sysctl::write(&sysctl::iface_key("ipv6", &ifname, "enhanced_dad"), "1");
            let _ = sysctl::write(&sysctl::iface_key("ipv6", &ifname, "accept_dad"), "1");
        } else {
            let _ = sysctl::write(&sysctl::iface_key("ipv6", &ifname, "accept_dad"), "0");
        }
    })
}

/// Waits until no IPv6 address of the link is tentative (DAD finished), or
/// fails when DAD found a duplicate or `limit` passed.
pub fn wait_addresses_settled(nl: &Netlink, index: u32, limit: std::time::Duration) -> Result<()> {
    let start = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        let addrs = nl.addrs(Some(index))?;
        if let Some(a) = addrs.iter().find(|a| a.dad_failed) {
            return Err(Error::new(libc_errno::EADDRNOTAVAIL, format!("duplicate address detected for {}", a.net)));
        }
        // Link-local addresses are the kernel's own; only ours count.
        let pending = addrs.iter().any(|a| a.tentative && !is_link_local(a.net.addr()));
        if !pending {
            return Ok(());
        }
        if start.elapsed() >= limit {
            return Err(Error::new(0, format!("addresses on link #{index} still tentative after {limit:?}")));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(50));
    }
}

fn is_link_local(ip: std::net::IpAddr) -> bool {
    matches!(ip, std::net::IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}
