//! Links: query, create, change, delete.

use rtnetlink::packet_core::{DefaultNla, NLM_F_ACK, NLM_F_CREATE, NLM_F_ECHO, NLM_F_EXCL};
use rtnetlink::packet_route::link::{InfoBridge, InfoData, InfoKind, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::{LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth};

use super::msg::{self, RTM_DELLINK, RTM_GETLINK, RTM_NEWLINK, RTM_SETLINK};
use super::{mac, Error, NetNs, Netlink, Result};

/// What applets need to know about a link.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// "veth", "bridge", "macvlan", ... ("" for physical devices).
    pub kind: String,
    pub mac: String,
    pub mtu: u32,
    pub up: bool,
    /// The link has carrier (IFF_LOWER_UP); for a veth: both ends are up.
    pub carrier: bool,
    pub promisc: bool,
    pub master: Option<u32>,
    /// The parent link (IFLA_LINK), e.g. a veth's peer index.
    pub parent: Option<u32>,
    /// The peer's namespace id (IFLA_LINK_NETNSID), for veths across namespaces.
    pub link_netnsid: Option<i32>,
    pub alias: String,
    pub txqlen: u32,
    pub allmulti: bool,
    /// The port kind when enslaved ("bridge" for bridge ports).
    pub port_kind: String,
    /// The interface group (IFLA_GROUP; 0 by default).
    pub group: u32,
    /// net.ipv6.conf.<link>.accept_ra (None when IPv6 is off on the link).
    pub ipv6_accept_ra: Option<i32>,
}

/// IFLA_* attributes of a link message.
const IFLA_ADDRESS: u16 = 1;
pub(super) const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_TXQLEN: u16 = 13;
const IFLA_LINKINFO: u16 = 18;
const IFLA_IFALIAS: u16 = 20;
pub(super) const IFLA_AF_SPEC: u16 = 26;
const IFLA_GROUP: u16 = 27;
const IFLA_LINK_NETNSID: u16 = 37;
/// Address families inside IFLA_AF_SPEC.
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
/// IFLA_INET_CONF inside AF_INET: IPv4 devconf values, each an attribute
/// whose type is the IPV4_DEVCONF_* index.
const IFLA_INET_CONF: u16 = 1;
const IPV4_DEVCONF_ARP_NOTIFY: u16 = 22;
/// IFLA_INET6_CONF inside AF_INET6: an array of s32 indexed by DEVCONF_*.
const IFLA_INET6_CONF: u16 = 2;
const DEVCONF_ACCEPT_RA: usize = 3;
/// IFLA_INET6_ADDR_GEN_MODE inside AF_INET6 (u8): how link-local addresses
/// are made; NONE makes none.
const IFLA_INET6_ADDR_GEN_MODE: u16 = 8;
const IN6_ADDR_GEN_MODE_NONE: u8 = 1;
/// IFLA_INFO_* inside IFLA_LINKINFO.
const IFLA_INFO_KIND: u16 = 1;
pub(super) const IFLA_INFO_DATA: u16 = 2;
const IFLA_INFO_SLAVE_KIND: u16 = 4;
pub(super) const IFLA_INFO_SLAVE_DATA: u16 = 5;
/// sizeof(struct ifinfomsg).
pub(super) const IFINFOMSG_LEN: usize = 16;
const IFF_UP: u32 = 0x1;
const IFF_PROMISC: u32 = 0x100;
const IFF_ALLMULTI: u32 = 0x200;
const IFF_LOWER_UP: u32 = 0x10000;

impl Link {
    /// Reads an RTM_NEWLINK payload (struct ifinfomsg, then attributes).
    pub(super) fn parse(payload: &[u8]) -> Option<Link> {
        let flags = msg::u32_at(payload, 8)?;
        let mut link = Link {
            index: msg::u32_at(payload, 4)?,
            up: flags & IFF_UP != 0,
            carrier: flags & IFF_LOWER_UP != 0,
            promisc: flags & IFF_PROMISC != 0,
            allmulti: flags & IFF_ALLMULTI != 0,
            ..Default::default()
        };
        for (kind, value) in msg::attrs_after(payload, IFINFOMSG_LEN) {
            match kind {
                IFLA_IFNAME => link.name = msg::string(value),
                IFLA_ADDRESS => link.mac = mac::format(value),
                IFLA_MTU => link.mtu = msg::u32_at(value, 0).unwrap_or_default(),
                IFLA_MASTER => link.master = msg::u32_at(value, 0),
                IFLA_LINK => link.parent = msg::u32_at(value, 0),
                IFLA_LINK_NETNSID => link.link_netnsid = msg::u32_at(value, 0).map(|v| v as i32),
                IFLA_IFALIAS => link.alias = msg::string(value),
                IFLA_TXQLEN => link.txqlen = msg::u32_at(value, 0).unwrap_or_default(),
                IFLA_GROUP => link.group = msg::u32_at(value, 0).unwrap_or_default(),
                IFLA_LINKINFO => {
                    for (k, v) in msg::attrs(value) {
                        match k {
                            IFLA_INFO_KIND => link.kind = msg::string(v),
                            IFLA_INFO_SLAVE_KIND => link.port_kind = msg::string(v),
                            _ => {}
                        }
                    }
                }
                IFLA_AF_SPEC => {
                    link.ipv6_accept_ra = msg::find_attr(value, AF_INET6)
                        .and_then(|inet6| msg::find_attr(inet6, IFLA_INET6_CONF))
                        .and_then(|conf| msg::u32_at(conf, DEVCONF_ACCEPT_RA * 4))
                        .map(|v| v as i32);
                }
                _ => {}
            }
        }
        Some(link)
    }
}

/// An IFLA_AF_SPEC attribute holding one setting, `kind`, of `family`.
fn af_spec(family: u16, kind: u16, value: &[u8]) -> LinkAttribute {
    let mut setting = Vec::new();
    msg::put_attr(&mut setting, kind, value);
    let mut spec = Vec::new();
    msg::put_attr(&mut spec, family, &setting);
    LinkAttribute::Other(DefaultNla::new(IFLA_AF_SPEC, spec))
}

/// The nested attribute `info` (IFLA_INFO_DATA or IFLA_INFO_SLAVE_DATA) of
/// the IFLA_LINKINFO of an RTM_NEWLINK payload, with the kind it belongs
/// to (the link's kind, or for the port data its master's kind).
pub(super) fn link_info(payload: &[u8], info: u16) -> Option<(String, &[u8])> {
    let linkinfo = msg::find_attr(payload.get(IFINFOMSG_LEN..)?, IFLA_LINKINFO)?;
    let kind_attr = if info == IFLA_INFO_SLAVE_DATA { IFLA_INFO_SLAVE_KIND } else { IFLA_INFO_KIND };
    let kind = msg::find_attr(linkinfo, kind_attr).map(msg::string).unwrap_or_default();
    Some((kind, msg::find_attr(linkinfo, info)?))
}

/// Asks for one tx and one rx queue at creation. Otherwise the kernel
/// allocates one per CPU for a veth and then trims the real count to one, and
/// trimming a registered device waits for an RCU grace period while holding
/// RTNL, which every other plugin call on the node then waits for.
fn one_queue<T>(b: LinkMessageBuilder<T>) -> LinkMessageBuilder<T> {
    b.append_extra_attribute(LinkAttribute::NumTxQueues(1)).append_extra_attribute(LinkAttribute::NumRxQueues(1))
}

/// Options for a new veth pair.
#[derive(Debug, Default, Clone)]
pub struct VethSpec<'a> {
    pub name: &'a str,
    pub peer_name: &'a str,
    /// Where the peer is born; None keeps it beside `name`.
    pub peer_netns: Option<&'a NetNs>,
    pub mtu: Option<u32>,
    pub mac: Option<Vec<u8>>,
    pub peer_mac: Option<Vec<u8>>,
    /// The interface group of `name` (IFLA_GROUP, set at creation).
    pub group: Option<u32>,
    /// Enslave `name` to this link (a bridge) and set it up, in the
    /// creating request.
    pub master: Option<u32>,
}

impl Netlink {
    /// The link called `name`, if any.
    pub fn link(&self, name: &str) -> Result<Option<Link>> {
        let query = LinkUnspec::new_with_name(name).build();
        Ok(self.get_link(&query, &format!("looking up link {name}"))?.as_deref().and_then(Link::parse))
    }

    /// The RTM_NEWLINK payload answering a GETLINK for one link (by the
    /// index or name in `query`); None when there is no such link.
    pub(super) fn get_link(&self, query: &LinkMessage, what: &str) -> Result<Option<Vec<u8>>> {
        match self.request(RTM_GETLINK, 0, query, what) {
            Ok(mut replies) => Ok(replies.pop()),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The RTM_NEWLINK payload of link `index`; None when it is gone.
    pub(super) fn get_link_by_index(&self, index: u32) -> Result<Option<Vec<u8>>> {
        self.get_link(&LinkUnspec::new_with_index(index).build(), &format!("looking up link #{index}"))
    }

    /// The link called `name`, or an ENODEV error naming it.
    pub fn require_link(&self, name: &str) -> Result<Link> {
        self.link(name)?.ok_or_else(|| Error::new(super::libc_errno::ENODEV, format!("link {name} not found")))
    }

    pub fn link_by_index(&self, index: u32) -> Result<Option<Link>> {
        Ok(self.get_link_by_index(index)?.as_deref().and_then(Link::parse))
    }

    pub fn links(&self) -> Result<Vec<Link>> {
        Ok(self.dump_links()?.iter().filter_map(|m| Link::parse(m)).collect())
    }

    /// The RTM_NEWLINK payloads of every link.
    pub(super) fn dump_links(&self) -> Result<Vec<Vec<u8>>> {
        self.dump(RTM_GETLINK, &LinkMessage::default(), "listing links")
    }

    /// Sends a prepared RTM_NEWLINK (for link kinds this module does not wrap).
    pub fn add_link_message(&self, msg: LinkMessage, what: &str) -> Result<()> {
        self.ack(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &msg, what)
    }

    /// Creates a veth pair. The peer can be born directly in another netns.
    /// Returns `name`'s link as the kernel announced it to us (NLM_F_ECHO,
    /// Linux 6.1 and later; None before), which saves reading it back.
    pub fn add_veth(&self, spec: &VethSpec) -> Result<Option<Link>> {
        let mut peer = one_queue(LinkMessageBuilder::<LinkUnspec>::new().name(spec.peer_name.to_string()));
        if let Some(ns) = spec.peer_netns {
            peer = peer.setns_by_fd(ns.fd());
        }
        if let Some(mtu) = spec.mtu {
            peer = peer.mtu(mtu);
        }
        if let Some(m) = &spec.peer_mac {
            peer = peer.address(m.clone());
        }
        let mut b = one_queue(
            LinkVeth::new(spec.name, spec.peer_name).set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build()))),
        );
        if let Some(mtu) = spec.mtu {
            b = b.mtu(mtu);
        }
        if let Some(m) = &spec.mac {
            b = b.address(m.clone());
        }
        if let Some(g) = spec.group {
            b = b.link_group(g);
        }
        if let Some(master) = spec.master {
            b = b.controller(master).up();
        }
        let what = format!("creating veth {}/{}", spec.name, spec.peer_name);
        let replies =
            self.request(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO, &b.build(), &what)?;
        Ok(replies.iter().filter_map(|r| Link::parse(r)).find(|l| l.name == spec.name))
    }

    /// Creates a bridge; EEXIST is the caller's to judge.
    pub fn add_bridge(&self, name: &str, mtu: Option<u32>, vlan_filtering: bool) -> Result<()> {
        let mut b = LinkBridge::new(name);
        if vlan_filtering {
            b = b.set_info_data(InfoData::Bridge(vec![InfoBridge::VlanFiltering(true)]));
        }
        if let Some(mtu) = mtu {
            b = b.mtu(mtu);
        }
        self.add_link_message(b.build(), &format!("creating bridge {name}"))
    }

    /// Turns VLAN filtering on or off on an existing bridge.
    pub fn set_bridge_vlan_filtering(&self, index: u32, on: bool) -> Result<()> {
        let msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Bridge)
            .index(index)
            .set_info_data(InfoData::Bridge(vec![InfoBridge::VlanFiltering(on)]))
            .build();
        self.ack(RTM_NEWLINK, 0, &msg, &format!("setting vlan_filtering on #{index}"))
    }

    pub fn del_link(&self, index: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).build();
        self.ack(RTM_DELLINK, 0, &msg, &format!("deleting link #{index}"))
    }

    /// Deletes the link called `name`; Ok(false) when there was none.
    pub fn del_link_by_name(&self, name: &str) -> Result<bool> {
        match self.link(name)? {
            Some(l) => match self.del_link(l.index) {
                Ok(()) => Ok(true),
                Err(e) if e.is_not_found() => Ok(false),
                Err(e) => Err(e),
            },
            None => Ok(false),
        }
    }

    /// RTM_SETLINK with the flags rtnetlink's `link().set()` used.
    pub(super) fn set_link(&self, msg: &LinkMessage, what: &str) -> Result<()> {
        self.ack(RTM_SETLINK, NLM_F_CREATE | NLM_F_EXCL, msg, what)
    }

    fn set(&self, b: LinkMessageBuilder<LinkUnspec>, what: String) -> Result<()> {
        self.set_link(&b.build(), &what)
    }

    fn by_index(index: u32) -> LinkMessageBuilder<LinkUnspec> {
        LinkUnspec::new_with_index(index)
    }

    pub fn set_up(&self, index: u32) -> Result<()> {
        self.set(Self::by_index(index).up(), format!("setting link #{index} up"))
    }

    /// Sets the link up and turns its arp_notify on in the same request.
    /// The kernel applies IFLA_AF_SPEC after the flags, so coming up sends
    /// no gratuitous ARP, as with the reference, which brings the link up
    /// before it has an address: on a bridge the broadcast would be
    /// processed by every container on it (~4 us each, on this call's
    /// CPU). Later link or MAC changes do announce.
    pub fn set_up_with_arp_notify(&self, index: u32) -> Result<()> {
        let mut devconf = Vec::new();
        msg::put_attr(&mut devconf, IPV4_DEVCONF_ARP_NOTIFY, &1u32.to_ne_bytes());
        let mut msg = Self::by_index(index).up().build();
        msg.attributes.push(af_spec(AF_INET, IFLA_INET_CONF, &devconf));
        self.set_link(&msg, &format!("setting link #{index} up with arp_notify"))
    }

    pub fn set_down(&self, index: u32) -> Result<()> {
        self.set(Self::by_index(index).down(), format!("setting link #{index} down"))
    }

    pub fn set_name(&self, index: u32, name: &str) -> Result<()> {
        self.set(Self::by_index(index).name(name.to_string()), format!("renaming link #{index} to {name}"))
    }

    pub fn set_master(&self, index: u32, master: u32) -> Result<()> {
        self.set(Self::by_index(index).controller(master), format!("enslaving link #{index} to #{master}"))
    }

    pub fn set_nomaster(&self, index: u32) -> Result<()> {
        self.set(Self::by_index(index).nocontroller(), format!("releasing link #{index} from its master"))
    }

    pub fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        self.set(Self::by_index(index).mtu(mtu), format!("setting mtu {mtu} on link #{index}"))
    }

    pub fn set_mac(&self, index: u32, addr: &[u8]) -> Result<()> {
        self.set(
            Self::by_index(index).address(addr.to_vec()),
            format!("setting mac {} on link #{index}", mac::format(addr)),
        )
    }

    /// Moves the link into `ns`.
    pub fn set_netns(&self, index: u32, ns: &NetNs) -> Result<()> {
        self.set(Self::by_index(index).setns_by_fd(ns.fd()), format!("moving link #{index} to {}", ns.path().display()))
    }

    /// Moves the link to interface group `group` (IFLA_GROUP).
    pub fn set_group(&self, index: u32, group: u32) -> Result<()> {
        self.set(Self::by_index(index).link_group(group), format!("setting group {group:#x} on link #{index}"))
    }

    pub fn set_alias(&self, index: u32, alias: &str) -> Result<()> {
        self.set(Self::by_index(index).alias(alias.to_string()), format!("setting alias on link #{index}"))
    }

    /// Sets the alias of a bridge port and turns its IPv6 address
    /// generation off (IN6_ADDR_GEN_MODE_NONE) in the same request. Frames
    /// that reach a port go to its bridge, never to the port's own stack, so
    /// a port's link-local address serves nothing, while its two routes
    /// (fe80::/64 and the /128) lengthen the host's IPv6 routing tree, which
    /// the kernel walks in full at every link change on the node, under
    /// RTNL. Done before the port gets carrier: no address is made at all.
    pub fn tag_bridge_port(&self, index: u32, alias: &str) -> Result<()> {
        let mut msg = Self::by_index(index).alias(alias.to_string()).build();
        msg.attributes.push(af_spec(AF_INET6, IFLA_INET6_ADDR_GEN_MODE, &[IN6_ADDR_GEN_MODE_NONE]));
        self.set_link(&msg, &format!("tagging bridge port #{index}"))
    }

    pub fn set_promisc(&self, index: u32, on: bool) -> Result<()> {
        self.set(Self::by_index(index).promiscuous(on), format!("setting promisc={on} on link #{index}"))
    }

    pub fn set_allmulti(&self, index: u32, on: bool) -> Result<()> {
        self.set(Self::by_index(index).allmulticast(on), format!("setting allmulti={on} on link #{index}"))
    }

    pub fn set_txqlen(&self, index: u32, len: u32) -> Result<()> {
        self.set(Self::by_index(index).txqueuelen(len), format!("setting txqlen {len} on link #{index}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::msg::emitted;

    #[test]
    fn parses_what_the_builders_emit() {
        let mut msg = LinkVeth::new("veth0", "eth0").mtu(1400).address(vec![2, 0, 0, 0, 0, 1]).link_group(7).build();
        msg.header.index = 12;
        msg.attributes.push(rtnetlink::packet_route::link::LinkAttribute::Controller(3));
        msg.attributes.push(rtnetlink::packet_route::link::LinkAttribute::IfAlias("tag".into()));
        let link = Link::parse(&emitted(&msg)).unwrap();
        assert_eq!(link.index, 12);
        assert_eq!(link.name, "veth0");
        assert_eq!(link.kind, "veth");
        assert_eq!(link.mtu, 1400);
        assert_eq!(link.mac, "02:00:00:00:00:01");
        assert_eq!(link.group, 7);
        assert_eq!(link.master, Some(3));
        assert_eq!(link.alias, "tag");
        assert!(!link.up);
        let up = LinkUnspec::new_with_index(4).up().build();
        assert!(Link::parse(&emitted(&up)).unwrap().up);
    }

    #[test]
    fn reads_accept_ra_from_the_ipv6_devconf_array() {
        let devconf: Vec<u8> = [1i32, 64, 1500, 2, 0].iter().flat_map(|v| v.to_ne_bytes()).collect();
        let mut inet6 = Vec::new();
        msg::put_attr(&mut inet6, IFLA_INET6_CONF, &devconf);
        let mut af_spec = Vec::new();
        msg::put_attr(&mut af_spec, AF_INET6, &inet6);
        let mut payload = vec![0u8; IFINFOMSG_LEN];
        msg::put_attr(&mut payload, IFLA_AF_SPEC, &af_spec);
        assert_eq!(Link::parse(&payload).unwrap().ipv6_accept_ra, Some(2));
        assert_eq!(Link::parse(&[0u8; IFINFOMSG_LEN]).unwrap().ipv6_accept_ra, None);
    }
}
