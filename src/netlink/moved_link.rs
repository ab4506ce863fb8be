//! Links stacked on a parent ("master") device and handed to a container:
//! ipvlan, vlan (and macvlan). The steps they share:
//!
//! - `default_route_link`: the master when none is configured, the link of
//!   the first default route of the main table;
//! - `find_master`: look the master up (in the host or, with
//!   `linkInContainer`, in the container) with an error that names it;
//! - `check_mtu`: a requested MTU must fit the master's;
//! - `add_moved_link`: create the link under a temporary name directly in
//!   the container netns (IFLA_NET_NS_FD) and rename it to CNI_IFNAME, so a
//!   host link of the same name never collides; deleted again on failure;
//! - `Netlink::link_info_data`: the kind-specific attributes (ipvlan mode,
//!   vlan id, vrf table) that CHECK compares.

use rtnetlink::packet_route::link::{InfoData, LinkAttribute, LinkInfo, LinkMessage};

use crate::cni::CniError;

use super::{libc_errno, Error, Link, NetNs, Netlink, Result};

/// The main routing table (RT_TABLE_MAIN).
const MAIN_TABLE: u32 = 254;

/// The link of the first default route (IPv4 first, then IPv6) in the main
/// table of `nl`'s netns, as the reference picks it.
pub fn default_route_link(nl: &Netlink) -> Result<Link> {
    for v6 in [false, true] {
        let found = nl.routes(v6)?.into_iter().find(|r| {
            r.table.unwrap_or(MAIN_TABLE) == MAIN_TABLE && r.dst.is_some_and(|d| d.prefix_len() == 0) && r.oif.is_some()
        });
        if let Some(index) = found.and_then(|r| r.oif) {
            return nl
                .link_by_index(index)?
                .ok_or_else(|| Error::new(libc_errno::ENODEV, format!("default route link #{index} vanished")));
        }
    }
    Err(Error::new(libc_errno::ENOENT, "no default route interface found"))
}

/// The master link called `name` in `nl`'s netns. A missing master is a
/// configuration error (code 7) that names it.
pub fn find_master(nl: &Netlink, name: &str) -> std::result::Result<Link, CniError> {
    match nl.link(name)? {
        Some(link) => Ok(link),
        None => Err(CniError::invalid_config(format!("failed to lookup master {name:?}: link not found"))),
    }
}

/// A requested MTU (0 = inherit the master's) must lie in [0, master MTU].
pub fn check_mtu(mtu: i64, master: &Link) -> std::result::Result<(), CniError> {
    if mtu < 0 || mtu > i64::from(master.mtu) {
        return Err(CniError::invalid_config(format!("invalid MTU {mtu}, must be [0, master MTU({})]", master.mtu)));
    }
    Ok(())
}

/// A name for a link's short life before its rename: "cni" + 8 random hex
/// digits (random so concurrent ADDs on one host never collide).
pub fn temp_name() -> String {
    let mut buf = [0u8; 4];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf));
    if random.is_err() {
        // Unique enough per process and call without /dev/urandom.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        buf = (nanos ^ std::process::id().rotate_left(16)).to_be_bytes();
    }
    format!("cni{:08x}", u32::from_be_bytes(buf))
}

/// Creates the link `build(temp_name)` describes, through `creator` (a
/// socket in the netns where the master lives, so its index resolves
/// there), born directly in `target` (`target_nl` is a socket in it), then
/// renames it to `ifname`. Returns the link as seen in `target`. Nothing is
/// left behind on failure.
pub fn add_moved_link(
    creator: &Netlink,
    target: &NetNs,
    target_nl: &Netlink,
    ifname: &str,
    what: &str,
    build: impl FnOnce(&str) -> LinkMessage,
) -> std::result::Result<Link, CniError> {
    let tmp = temp_name();
    let mut msg = build(&tmp);
    msg.attributes.push(LinkAttribute::NetNsFd(target.fd()));
    creator
        .add_link_message(msg, &format!("creating {what} {tmp}"))
        .map_err(|e| CniError::internal(format!("failed to create {what}: {}", e.msg)))?;
    let link = target_nl.require_link(&tmp)?;
    if let Err(e) = target_nl.set_name(link.index, ifname) {
        let _ = target_nl.del_link(link.index);
        let why = if e.is_exists() { format!("an interface {ifname:?} already exists") } else { e.msg };
        return Err(CniError::internal(format!("failed to rename {what} to {ifname:?}: {why}")));
    }
    match target_nl.link_by_index(link.index) {
        Ok(Some(link)) => Ok(link),
        other => {
            let _ = target_nl.del_link(link.index);
            Err(CniError::internal(format!("{what} {ifname} vanished after its creation: {other:?}")))
        }
    }
}

/// DEL's half: removes `ifname` from the container netns at `netns_path`.
/// Succeeds when the path is empty, the netns or the link is gone.
pub fn del_container_link(netns_path: &str, ifname: &str) -> Result<()> {
    if netns_path.is_empty() {
        return Ok(());
    }
    let ns = match NetNs::open(netns_path) {
        Ok(ns) => ns,
        // errno 0: the path is no namespace any more (a stale mount point).
        Err(e) if e.is_not_found() || e.errno == 0 => return Ok(()),
        Err(e) => return Err(e),
    };
    Netlink::in_netns(&ns)?.del_link_by_name(ifname).map(|_| ())
}

impl Netlink {
    /// The kind-specific attributes (IFLA_INFO_DATA) of link `index`.
    pub fn link_info_data(&self, index: u32) -> Result<Option<InfoData>> {
        let req = self.handle().link().get().match_index(index).execute();
        let msgs = self.collect(req, &format!("looking up link #{index}"))?;
        Ok(msgs.first().and_then(|m| {
            m.attributes.iter().find_map(|a| match a {
                LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                    LinkInfo::Data(d) => Some(d.clone()),
                    _ => None,
                }),
                _ => None,
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_fit_and_differ() {
        let (a, b) = (temp_name(), temp_name());
        assert_eq!(a.len(), 11);
        assert!(a.starts_with("cni"));
        assert_ne!(a, b);
    }

    #[test]
    fn mtu_bounds() {
        let master = Link { mtu: 1500, ..Default::default() };
        check_mtu(0, &master).unwrap();
        check_mtu(1500, &master).unwrap();
        assert_eq!(check_mtu(1501, &master).unwrap_err().code, 7);
        assert_eq!(check_mtu(-1, &master).unwrap_err().code, 7);
    }
}
