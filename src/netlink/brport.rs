//! Bridge ports: port flags (hairpin, isolation), VLAN membership, and the
//! port's STP state.

use rtnetlink::packet_route::link::{
    AfSpecBridge, BridgePortState, BridgeVlanInfoFlags, InfoBridge, InfoBridgePort, InfoData, InfoPortData,
    LinkAttribute, LinkExtentMask, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{LinkBridgePort, LinkBridgeVlan};

use super::{Link, Netlink, Result};

/// One VLAN a bridge port is a member of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortVlan {
    pub vid: u16,
    /// Untagged frames arriving on the port join this VLAN.
    pub pvid: bool,
    /// Frames of this VLAN leave the port untagged.
    pub untagged: bool,
}

/// The STP state of a bridge port as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortState {
    Disabled,
    Listening,
    Learning,
    Forwarding,
    Blocking,
    Other,
}

impl Netlink {
    /// Sets the port's hairpin (reflective relay) flag, and isolation when
    /// asked for (left out otherwise: kernels before 4.18 do not know it).
    pub fn set_bridge_port_flags(&self, index: u32, hairpin: bool, isolated: bool) -> Result<()> {
        let mut b = LinkBridgePort::new(index).hairpin(hairpin);
        if isolated {
            b = b.isolated(true);
        }
        let msg = b.build();
        self.exec(self.handle().link().set_port(msg).execute(), &format!("setting bridge port flags on link #{index}"))
    }

    /// Adds VLANs `first..=last` to a bridge port (a range in one message).
    pub fn add_bridge_vlans(&self, index: u32, first: u16, last: u16, pvid_untagged: bool) -> Result<()> {
        let flags = if pvid_untagged {
            BridgeVlanInfoFlags::Pvid | BridgeVlanInfoFlags::Untagged
        } else {
            BridgeVlanInfoFlags::empty()
        };
        let b = LinkBridgeVlan::new(index);
        let b = if first == last {
            b.vlan(first, flags)
        } else {
            b.vlan_range_start(first, flags).vlan_range_end(last, flags)
        };
        self.exec(
            self.handle().link().set(b.build()).execute(),
            &format!("adding vlan {first}-{last} to bridge port #{index}"),
        )
    }

    /// Removes VLAN `vid` from a bridge port.
    pub fn del_bridge_vlan(&self, index: u32, vid: u16) -> Result<()> {
        let msg = LinkBridgeVlan::new(index).vlan(vid, BridgeVlanInfoFlags::empty()).build();
        self.exec(
            self.handle().link().del_with_message(msg).execute(),
            &format!("removing vlan {vid} from bridge port #{index}"),
        )
    }

    /// The VLANs of a bridge port (or of the bridge itself), one entry per
    /// VLAN id. Only an AF_BRIDGE dump reports them, so this dumps every
    /// bridge port and keeps `index`'s.
    pub fn bridge_port_vlans(&self, index: u32) -> Result<Vec<PortVlan>> {
        let req = self.handle().link().get().set_filter_mask(AddressFamily::Bridge, vec![LinkExtentMask::Brvlan]);
        let msgs = self.collect(req.execute(), "listing bridge port VLANs")?;
        let mut vlans = Vec::new();
        for attr in msgs.iter().filter(|m| m.header.index == index).flat_map(|m| m.attributes.iter()) {
            let LinkAttribute::AfSpecBridge(specs) = attr else { continue };
            for spec in specs {
                if let AfSpecBridge::VlanInfo(v) = spec {
                    vlans.push(PortVlan {
                        vid: v.vid,
                        pvid: v.flags.contains(BridgeVlanInfoFlags::Pvid),
                        untagged: v.flags.contains(BridgeVlanInfoFlags::Untagged),
                    });
                }
            }
        }
        Ok(vlans)
    }

    /// The VLAN a bridge puts new ports in (untagged, pvid); None when the
    /// link is not a bridge or the kernel does not say.
    pub fn bridge_default_pvid(&self, index: u32) -> Result<Option<u16>> {
        Ok(self.bridge_options(index)?.iter().find_map(|o| match o {
            InfoBridge::VlanDefaultPvid(v) => Some(*v),
            _ => None,
        }))
    }

    /// Whether the bridge filters by VLAN; None when the link is not a
    /// bridge or the kernel does not say.
    pub fn bridge_vlan_filtering(&self, index: u32) -> Result<Option<bool>> {
        Ok(self.bridge_options(index)?.iter().find_map(|o| match o {
            InfoBridge::VlanFiltering(on) => Some(*on),
            _ => None,
        }))
    }

    /// The bridge options of link `index` (empty when it is no bridge).
    fn bridge_options(&self, index: u32) -> Result<Vec<InfoBridge>> {
        let req = self.handle().link().get().match_index(index).execute();
        let msgs = self.collect(req, &format!("looking up link #{index}"))?;
        for attr in msgs.into_iter().flat_map(|m| m.attributes.into_iter()) {
            let LinkAttribute::LinkInfo(infos) = attr else { continue };
            for info in infos {
                if let LinkInfo::Data(InfoData::Bridge(opts)) = info {
                    return Ok(opts);
                }
            }
        }
        Ok(Vec::new())
    }

    /// The port's STP state; None when the link is not a bridge port.
    pub fn bridge_port_state(&self, index: u32) -> Result<Option<PortState>> {
        Ok(self.bridge_port(index)?.and_then(|(_, state)| state))
    }

    /// The link and its STP state (None when it is not a bridge port), from
    /// one request; None when the link is gone.
    pub fn bridge_port(&self, index: u32) -> Result<Option<(Link, Option<PortState>)>> {
        let req = self.handle().link().get().match_index(index).execute();
        let msgs = self.collect(req, &format!("looking up link #{index}"))?;
        Ok(msgs.first().map(|m| (Link::from_message(m), port_state(m))))
    }

    /// Waits until the port forwards. With STP off (the bridge plugin's
    /// default) the kernel moves a port to forwarding as soon as it has
    /// carrier, so this normally returns after one query; between queries
    /// it sleeps briefly. Returns the last state seen when `limit` passes.
    /// Also returns the port's link as last seen (None when it is gone).
    pub fn wait_bridge_port_forwarding(
        &self,
        index: u32,
        limit: std::time::Duration,
    ) -> Result<(Option<PortState>, Option<Link>)> {
        let start = std::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(1);
        loop {
            let (link, state) = match self.bridge_port(index)? {
                Some((link, state)) => (Some(link), state),
                None => (None, None),
            };
            if state == Some(PortState::Forwarding) || start.elapsed() >= limit {
                return Ok((state, link));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(50));
        }
    }
}

/// The STP state in a link message; None when it is not a bridge port.
fn port_state(msg: &LinkMessage) -> Option<PortState> {
    for attr in &msg.attributes {
        let LinkAttribute::LinkInfo(infos) = attr else { continue };
        for info in infos {
            let LinkInfo::PortData(InfoPortData::BridgePort(port)) = info else { continue };
            for p in port {
                if let InfoBridgePort::State(s) = p {
                    return Some(match s {
                        BridgePortState::Disabled => PortState::Disabled,
                        BridgePortState::Listening => PortState::Listening,
                        BridgePortState::Learning => PortState::Learning,
                        BridgePortState::Forwarding => PortState::Forwarding,
                        BridgePortState::Blocking => PortState::Blocking,
                        _ => PortState::Other,
                    });
                }
            }
        }
    }
    None
}
