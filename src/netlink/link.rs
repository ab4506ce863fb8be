//! Links: query, create, change, delete.

use rtnetlink::packet_route::link::{
    InfoBridge, InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::{LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth};

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
}

impl Link {
    pub(super) fn from_message(msg: &LinkMessage) -> Link {
        let mut link = Link {
            index: msg.header.index,
            up: msg.header.flags.contains(LinkFlags::Up),
            promisc: msg.header.flags.contains(LinkFlags::Promisc),
            allmulti: msg.header.flags.contains(LinkFlags::Allmulti),
            ..Default::default()
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Address(a) => link.mac = mac::format(a),
                LinkAttribute::Mtu(m) => link.mtu = *m,
                LinkAttribute::Controller(m) => link.master = Some(*m),
                LinkAttribute::Link(l) => link.parent = Some(*l),
                LinkAttribute::LinkNetNsId(id) => link.link_netnsid = Some(*id),
                LinkAttribute::IfAlias(a) => link.alias = a.clone(),
                LinkAttribute::TxQueueLen(q) => link.txqlen = *q,
                LinkAttribute::Group(g) => link.group = *g,
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(k) => link.kind = kind_name(k),
                            LinkInfo::PortKind(k) => link.port_kind = format!("{k:?}").to_ascii_lowercase(),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

fn kind_name(kind: &InfoKind) -> String {
    match kind {
        InfoKind::Other(s) => s.clone(),
        k => k.to_string(),
    }
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
}

impl Netlink {
    /// The link called `name`, if any.
    pub fn link(&self, name: &str) -> Result<Option<Link>> {
        let req = self.handle().link().get().match_name(name.to_string()).execute();
        match self.collect(req, &format!("looking up link {name}")) {
            Ok(msgs) => Ok(msgs.first().map(Link::from_message)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The link called `name`, or an ENODEV error naming it.
    pub fn require_link(&self, name: &str) -> Result<Link> {
        self.link(name)?.ok_or_else(|| Error::new(super::libc_errno::ENODEV, format!("link {name} not found")))
    }

    pub fn link_by_index(&self, index: u32) -> Result<Option<Link>> {
        let req = self.handle().link().get().match_index(index).execute();
        match self.collect(req, &format!("looking up link #{index}")) {
            Ok(msgs) => Ok(msgs.first().map(Link::from_message)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn links(&self) -> Result<Vec<Link>> {
        let msgs = self.collect(self.handle().link().get().execute(), "listing links")?;
        Ok(msgs.iter().map(Link::from_message).collect())
    }

    /// Sends a prepared RTM_NEWLINK (for link kinds this module does not wrap).
    pub fn add_link_message(&self, msg: LinkMessage, what: &str) -> Result<()> {
        self.exec(self.handle().link().add(msg).execute(), what)
    }

    /// Creates a veth pair. The peer can be born directly in another netns.
    pub fn add_veth(&self, spec: &VethSpec) -> Result<()> {
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new().name(spec.peer_name.to_string());
        if let Some(ns) = spec.peer_netns {
            peer = peer.setns_by_fd(ns.fd());
        }
        if let Some(mtu) = spec.mtu {
            peer = peer.mtu(mtu);
        }
        if let Some(m) = &spec.peer_mac {
            peer = peer.address(m.clone());
        }
        let mut b =
            LinkVeth::new(spec.name, spec.peer_name).set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())));
        if let Some(mtu) = spec.mtu {
            b = b.mtu(mtu);
        }
        if let Some(m) = &spec.mac {
            b = b.address(m.clone());
        }
        if let Some(g) = spec.group {
            b = b.link_group(g);
        }
        self.add_link_message(b.build(), &format!("creating veth {}/{}", spec.name, spec.peer_name))
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
        self.exec(self.handle().link().change(msg).execute(), &format!("setting vlan_filtering on #{index}"))
    }

    pub fn del_link(&self, index: u32) -> Result<()> {
        self.exec(self.handle().link().del(index).execute(), &format!("deleting link #{index}"))
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

    fn set(&self, b: LinkMessageBuilder<LinkUnspec>, what: String) -> Result<()> {
        self.exec(self.handle().link().set(b.build()).execute(), &what)
    }

    fn by_index(index: u32) -> LinkMessageBuilder<LinkUnspec> {
        LinkUnspec::new_with_index(index)
    }

    pub fn set_up(&self, index: u32) -> Result<()> {
        self.set(Self::by_index(index).up(), format!("setting link #{index} up"))
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

    /// Enslaves the link and sets it up in one request (the kernel applies
    /// the master first): one RTNL round instead of two on a busy node.
    pub fn set_master_up(&self, index: u32, master: u32) -> Result<()> {
        self.set(
            Self::by_index(index).controller(master).up(),
            format!("enslaving link #{index} to #{master} and setting it up"),
        )
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

    pub fn set_alias(&self, index: u32, alias: &str) -> Result<()> {
        self.set(Self::by_index(index).alias(alias.to_string()), format!("setting alias on link #{index}"))
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
