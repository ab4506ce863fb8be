//! Links made on top of a master (macvlan, ipvlan, vlan, ...) and handed to
//! a container: find the master (default: the interface of the default
//! route), check the MTU against it, create the link under a temporary name
//! born directly in the container netns, rename it to CNI_IFNAME there.

use rtnetlink::packet_route::link::{InfoData, LinkAttribute, LinkMessage};

use super::link::{link_info, Link, IFLA_INFO_DATA};
use super::link_events::{Last, LinkEvents, Only};
use super::msg;
use super::{sysctl, Error, NetNs, Netlink, Result};

/// The main-table table id.
const MAIN_TABLE: u32 = 254;

/// The link carrying the default route of `nl`'s netns (IPv4 first, then
/// IPv6), as the reference picks the default master.
pub fn default_route_link(nl: &Netlink) -> Result<Option<Link>> {
    for v6 in [false, true] {
        let routes = nl.routes(v6)?;
        let default = routes.iter().find(|r| {
            r.table.unwrap_or(MAIN_TABLE) == MAIN_TABLE && r.dst.is_some_and(|d| d.prefix_len() == 0) && r.oif.is_some()
        });
        if let Some(oif) = default.and_then(|r| r.oif) {
            return nl.link_by_index(oif);
        }
    }
    Ok(None)
}

/// A short random link name ("cni" + 8 hex digits) for the moment between
/// creation and the rename to CNI_IFNAME.
pub fn temp_name() -> String {
    let mut bytes = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut bytes);
    }
    let salt = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let n = u32::from_ne_bytes(bytes) ^ salt ^ std::process::id();
    format!("cni{n:08x}")
}

/// Where the new link is created and who sees it there.
pub struct Target<'a> {
    /// The container netns and a socket in it.
    pub container: &'a NetNs,
    pub container_nl: &'a Netlink,
    /// The socket the RTM_NEWLINK goes through: the host's, or the
    /// container's when the master lives in the container (linkInContainer).
    pub creator: &'a Netlink,
    pub creator_is_container: bool,
}

/// Creates the link described by `msg` (any kind; its IFLA_IFNAME is
/// replaced) inside the container and renames it to `ifname`. The new link
/// is never visible in the host under a real name; on failure nothing is
/// left behind. Returns the link as the container sees it (still down).
pub fn create_in_container(target: &Target, mut msg: LinkMessage, ifname: &str) -> Result<Link> {
    if target.container_nl.link(ifname)?.is_some() {
        return Err(Error::new(super::libc_errno::EEXIST, format!("container already has an interface {ifname}")));
    }
    let tmp = temp_name();
    msg.attributes.retain(|a| !matches!(a, LinkAttribute::IfName(_) | LinkAttribute::NetNsFd(_)));
    msg.attributes.push(LinkAttribute::IfName(tmp.clone()));
    if !target.creator_is_container {
        msg.attributes.push(LinkAttribute::NetNsFd(target.container.fd()));
    }
    target.creator.add_link_message(msg, &format!("creating link {tmp} for {ifname}"))?;
    let renamed = super::fault_step("moved link: created").and_then(|_| {
        let l = target.container_nl.require_link(&tmp)?;
        target.container_nl.set_name(l.index, ifname)?;
        super::fault_step("moved link: renamed")?;
        target.container_nl.require_link(ifname)
    });
    if renamed.is_err() {
        // Under either name, depending on where it failed.
        for name in [tmp.as_str(), ifname] {
            if let Err(e) = target.container_nl.del_link_by_name(name) {
                log::warn!("removing the half-made link {name}: {e}");
            }
        }
    }
    renamed
}

/// Gratuitous ARP / unsolicited NA on link changes, as the reference turns on
/// for container interfaces (best effort: IPv6 may be off).
pub fn enable_notify(container: &NetNs, ifname: &str) {
    let v4 = sysctl::iface_key("ipv4", ifname, "arp_notify");
    let v6 = sysctl::iface_key("ipv6", ifname, "ndisc_notify");
    let outcome = container.run(|| (sysctl::write(&v4, "1"), sysctl::write(&v6, "1")));
    if let Ok((Err(e), _)) = outcome {
        log::warn!("{e}");
    }
}

/// DEL's part for links that live only in the container: deletes `ifname`
/// in `ns`. A missing interface is success (it is already gone).
pub fn del_container_link(ns: &NetNs, ifname: &str) -> Result<()> {
    // Returns once the link is announced gone there, before the kernel has
    // freed it (link_events.rs).
    let (events, nl) =
        ns.run(|| Ok::<_, super::Error>((LinkEvents::subscribe(Only::Deletions).ok(), Netlink::new()?)))??;
    nl.del_link_watched(ifname, events, Last::Named(ifname)).map(drop)
}

impl Netlink {
    /// The kind-specific attributes (IFLA_INFO_DATA) of link `index`: the
    /// ipvlan mode, vlan id, macvlan mode or vrf table that CHECK compares.
    /// None when the link is gone or has none.
    pub fn link_info_data(&self, index: u32) -> Result<Option<InfoData>> {
        Ok(self.get_link_by_index(index)?.and_then(|m| info_data(&m)))
    }

    /// The kind-specific attributes of every link that has them, by index.
    pub fn links_info_data(&self) -> Result<Vec<(u32, InfoData)>> {
        let msgs = self.dump_links()?;
        Ok(msgs.iter().filter_map(|m| Some((msg::u32_at(m, 4)?, info_data(m)?))).collect())
    }
}

/// The IFLA_INFO_DATA of an RTM_NEWLINK payload, decoded for the kinds
/// cnibox creates on top of a master (other kinds come back raw).
fn info_data(payload: &[u8]) -> Option<InfoData> {
    let (kind, data) = link_info(payload, IFLA_INFO_DATA)?;
    Some(match kind.as_str() {
        "vlan" => InfoData::Vlan(msg::typed_attrs(data)),
        "ipvlan" => InfoData::IpVlan(msg::typed_attrs(data)),
        "macvlan" => InfoData::MacVlan(msg::typed_attrs(data)),
        "vrf" => InfoData::Vrf(msg::typed_attrs(data)),
        _ => InfoData::Other(data.to_vec()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_fit_and_vary() {
        let a = temp_name();
        assert_eq!(a.len(), 11);
        assert!(a.starts_with("cni"));
        assert_ne!(a, temp_name());
    }
}
