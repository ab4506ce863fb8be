//! Bridge ports: port flags (hairpin, isolation), VLAN membership, and the
//! port's STP state.

use rtnetlink::packet_route::link::{BridgeVlanInfoFlags, LinkAttribute, LinkExtentMask, LinkMessage};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{LinkBridgePort, LinkBridgeVlan};

use super::link::{link_info, IFINFOMSG_LEN, IFLA_AF_SPEC, IFLA_INFO_DATA, IFLA_INFO_SLAVE_DATA};
use super::link_events::{self, LinkEvents, Wait};
use super::msg::{self, RTM_DELLINK, RTM_GETLINK, RTM_NEWLINK};
use super::{Link, Netlink, Result};

/// IFLA_BRIDGE_VLAN_INFO inside IFLA_AF_SPEC: struct bridge_vlan_info { u16 flags; u16 vid; }.
const IFLA_BRIDGE_VLAN_INFO: u16 = 2;
const BRIDGE_VLAN_INFO_PVID: u16 = 0x2;
const BRIDGE_VLAN_INFO_UNTAGGED: u16 = 0x4;
/// IFLA_BR_* bridge options inside IFLA_INFO_DATA.
const IFLA_BR_VLAN_FILTERING: u16 = 7;
const IFLA_BR_VLAN_DEFAULT_PVID: u16 = 39;
/// IFLA_BRPORT_STATE inside a bridge port's IFLA_INFO_SLAVE_DATA.
const IFLA_BRPORT_STATE: u16 = 1;

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
        self.ack(RTM_NEWLINK, 0, &msg, &format!("setting bridge port flags on link #{index}"))
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
        self.set_link(&b.build(), &format!("adding vlan {first}-{last} to bridge port #{index}"))
    }

    /// Removes VLAN `vid` from a bridge port.
    pub fn del_bridge_vlan(&self, index: u32, vid: u16) -> Result<()> {
        let msg = LinkBridgeVlan::new(index).vlan(vid, BridgeVlanInfoFlags::empty()).build();
        self.ack(RTM_DELLINK, 0, &msg, &format!("removing vlan {vid} from bridge port #{index}"))
    }

    /// The VLANs of a bridge port (or of the bridge itself), one entry per
    /// VLAN id. Only an AF_BRIDGE dump reports them, so this dumps every
    /// bridge port and keeps `index`'s.
    pub fn bridge_port_vlans(&self, index: u32) -> Result<Vec<PortVlan>> {
        let mut query = LinkMessage::default();
        query.header.interface_family = AddressFamily::Bridge;
        query.attributes.push(LinkAttribute::ExtMask(vec![LinkExtentMask::Brvlan]));
        let msgs = self.dump(RTM_GETLINK, &query, "listing bridge port VLANs")?;
        let mut vlans = Vec::new();
        for m in msgs.iter().filter(|m| msg::u32_at(m, 4) == Some(index)) {
            let Some(spec) = m.get(IFINFOMSG_LEN..).and_then(|a| msg::find_attr(a, IFLA_AF_SPEC)) else { continue };
            for (kind, v) in msg::attrs(spec) {
                let (Some(flags), Some(vid)) = (msg::u16_at(v, 0), msg::u16_at(v, 2)) else { continue };
                if kind == IFLA_BRIDGE_VLAN_INFO {
                    vlans.push(PortVlan {
                        vid,
                        pvid: flags & BRIDGE_VLAN_INFO_PVID != 0,
                        untagged: flags & BRIDGE_VLAN_INFO_UNTAGGED != 0,
                    });
                }
            }
        }
        Ok(vlans)
    }

    /// The VLAN a bridge puts new ports in (untagged, pvid); None when the
    /// link is not a bridge or the kernel does not say.
    pub fn bridge_default_pvid(&self, index: u32) -> Result<Option<u16>> {
        Ok(self.bridge_option(index, IFLA_BR_VLAN_DEFAULT_PVID)?.and_then(|v| msg::u16_at(&v, 0)))
    }

    /// Whether the bridge filters by VLAN; None when the link is not a
    /// bridge or the kernel does not say.
    pub fn bridge_vlan_filtering(&self, index: u32) -> Result<Option<bool>> {
        Ok(self.bridge_option(index, IFLA_BR_VLAN_FILTERING)?.and_then(|v| msg::u8_at(&v, 0)).map(|on| on != 0))
    }

    /// The bridge option `kind` (IFLA_BR_*) of link `index`; None when it
    /// is no bridge or the kernel does not report that option.
    fn bridge_option(&self, index: u32, kind: u16) -> Result<Option<Vec<u8>>> {
        let Some(m) = self.get_link_by_index(index)? else { return Ok(None) };
        Ok(match link_info(&m, IFLA_INFO_DATA) {
            Some((k, data)) if k == "bridge" => msg::find_attr(data, kind).map(<[u8]>::to_vec),
            _ => None,
        })
    }

    /// The port's STP state; None when the link is not a bridge port.
    pub fn bridge_port_state(&self, index: u32) -> Result<Option<PortState>> {
        Ok(self.bridge_port(index)?.and_then(|(_, state)| state))
    }

    /// The link and its STP state (None when it is not a bridge port), from
    /// one request; None when the link is gone.
    pub fn bridge_port(&self, index: u32) -> Result<Option<(Link, Option<PortState>)>> {
        let Some(m) = self.get_link_by_index(index)? else { return Ok(None) };
        Ok(Link::parse(&m).map(|link| (link, port_state(&m))))
    }

    /// Waits until the port forwards. With STP off (the bridge plugin's
    /// default) the kernel moves a port to forwarding shortly after it gets
    /// carrier (linkwatch, asynchronously). `events`, subscribed before the
    /// port could get carrier, carries the kernel's announcement of that
    /// change, which answers the wait without a request: a request takes
    /// RTNL, and right after a container end comes up the kernel holds RTNL
    /// while it floods the new link's IPv6 router solicitation and MLD
    /// report to every port (milliseconds on a bridge of 200 containers).
    /// The port is queried when no announcement came within a while, and
    /// without `events` (or once it lost events) between sleeps. Returns the
    /// last state seen when `limit` passes, and the port's link as last seen
    /// (None when it is gone).
    pub fn wait_bridge_port_forwarding(
        &self,
        index: u32,
        limit: std::time::Duration,
        mut events: Option<&LinkEvents>,
    ) -> Result<(Option<PortState>, Option<Link>)> {
        let start = std::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(1);
        // The announcement normally comes within a few milliseconds.
        let mut patience = std::time::Duration::from_millis(20);
        loop {
            let left = limit.saturating_sub(start.elapsed());
            if let Some(ev) = events {
                let announced = std::cell::Cell::new(None);
                let forwarding =
                    |e: link_events::Event| forwarding_port(e, index).map(|link| announced.set(Some(link))).is_some();
                match ev.wait_for(left.min(patience), forwarding) {
                    Wait::Seen => return Ok((Some(PortState::Forwarding), announced.into_inner())),
                    Wait::Lost => events = None,
                    Wait::TimedOut => {}
                }
                patience = std::time::Duration::from_millis(100);
            }
            let (link, state) = match self.bridge_port(index)? {
                Some((link, state)) => (Some(link), state),
                None => (None, None),
            };
            let left = limit.saturating_sub(start.elapsed());
            if state == Some(PortState::Forwarding) || left.is_zero() {
                return Ok((state, link));
            }
            if events.is_none() {
                std::thread::sleep(pause.min(left));
                pause = (pause * 2).min(std::time::Duration::from_millis(50));
            }
        }
    }
}

/// The port as an event announces it, when the event is about port `index`
/// and says it forwards with carrier. A port the kernel has just created
/// may say "forwarding" before it ever had carrier; with carrier, it does.
fn forwarding_port((kind, payload): link_events::Event, index: u32) -> Option<Link> {
    if kind != RTM_NEWLINK || link_events::event_index((kind, payload)) != Some(index) {
        return None;
    }
    let link = Link::parse(payload)?;
    (port_state(payload) == Some(PortState::Forwarding) && link.carrier).then_some(link)
}

/// The STP state in an RTM_NEWLINK payload; None when it is not a bridge port.
fn port_state(payload: &[u8]) -> Option<PortState> {
    let (kind, port) = link_info(payload, IFLA_INFO_SLAVE_DATA)?;
    if kind != "bridge" {
        return None;
    }
    let state = msg::u8_at(msg::find_attr(port, IFLA_BRPORT_STATE)?, 0)?;
    // BR_STATE_* from linux/if_bridge.h.
    Some(match state {
        0 => PortState::Disabled,
        1 => PortState::Listening,
        2 => PortState::Learning,
        3 => PortState::Forwarding,
        4 => PortState::Blocking,
        _ => PortState::Other,
    })
}
