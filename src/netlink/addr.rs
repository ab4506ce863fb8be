//! Interface addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::AddressMessageBuilder;

use super::msg::{self, RTM_DELADDR, RTM_GETADDR, RTM_NEWADDR};
use super::{Error, Netlink, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct Addr {
    pub index: u32,
    /// The address with its prefix length (host bits kept).
    pub net: IpNet,
    /// The kernel marked it tentative (IPv6 DAD still running).
    pub tentative: bool,
    pub dad_failed: bool,
}

/// IFA_* attributes and flags of an address message.
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const IFA_F_DADFAILED: u32 = 0x08;
const IFA_F_TENTATIVE: u32 = 0x40;
/// sizeof(struct ifaddrmsg).
const IFADDRMSG_LEN: usize = 8;

/// Reads an RTM_NEWADDR payload (struct ifaddrmsg, then attributes).
fn parse(payload: &[u8]) -> Option<Addr> {
    let prefix_len = msg::u8_at(payload, 1)?;
    // The 8-bit header flags, superseded by IFA_FLAGS when present.
    let mut flags = u32::from(msg::u8_at(payload, 2)?);
    let mut ip = None;
    for (kind, value) in msg::attrs_after(payload, IFADDRMSG_LEN) {
        match kind {
            // IFA_LOCAL is the interface's own address on point-to-point links.
            IFA_LOCAL => ip = msg::ip(value),
            IFA_ADDRESS if ip.is_none() => ip = msg::ip(value),
            IFA_FLAGS => flags = msg::u32_at(value, 0).unwrap_or(flags),
            _ => {}
        }
    }
    Some(Addr {
        index: msg::u32_at(payload, 4)?,
        net: IpNet::new(ip?, prefix_len).ok()?,
        tentative: flags & IFA_F_TENTATIVE != 0,
        dad_failed: flags & IFA_F_DADFAILED != 0,
    })
}

impl Netlink {
    /// Addresses, of one link or of all.
    pub fn addrs(&self, index: Option<u32>) -> Result<Vec<Addr>> {
        let msgs = self.dump(RTM_GETADDR, &AddressMessage::default(), "listing addresses")?;
        Ok(msgs.iter().filter_map(|m| parse(m)).filter(|a| index.is_none_or(|i| a.index == i)).collect())
    }

    /// The addresses of one family on one link. The kernel dumps only that
    /// family, and with strict checking only that link (otherwise it walks
    /// every device of the netns: hundreds of veths on a busy node).
    pub fn link_addrs(&self, index: u32, v6: bool) -> Result<Vec<Addr>> {
        let mut query = AddressMessage::default();
        query.header.family = if v6 { AddressFamily::Inet6 } else { AddressFamily::Inet };
        query.header.index = index;
        // Only for this dump: strict checking also refuses requests that
        // carry what a plain kernel ignores.
        let strict = self.sock.set_netlink_get_strict_chk(true).is_ok();
        let msgs = self.dump(RTM_GETADDR, &query, "listing addresses");
        if strict {
            let _ = self.sock.set_netlink_get_strict_chk(false);
        }
        Ok(msgs?.iter().filter_map(|m| parse(m)).filter(|a| a.index == index && a.net.addr().is_ipv6() == v6).collect())
    }

    /// Adds `net` to the link. `nodad` skips IPv6 duplicate address detection.
    pub fn add_addr(&self, index: u32, net: IpNet, nodad: bool) -> Result<()> {
        let mut msg = match net.addr() {
            IpAddr::V4(a) => AddressMessageBuilder::<Ipv4Addr>::new().index(index).address(a, net.prefix_len()).build(),
            IpAddr::V6(a) => AddressMessageBuilder::<Ipv6Addr>::new().index(index).address(a, net.prefix_len()).build(),
        };
        if nodad && net.addr().is_ipv6() {
            msg.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        self.ack(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &msg, &format!("adding address {net} to link #{index}"))
    }

    pub fn del_addr(&self, index: u32, net: IpNet) -> Result<()> {
        let existing = self.addrs(Some(index))?;
        let Some(_) = existing.iter().find(|a| a.net == net) else {
            return Err(Error::new(super::libc_errno::EADDRNOTAVAIL, format!("address {net} not on link #{index}")));
        };
        let mut msg = AddressMessage::default();
        msg.header.family = match net {
            IpNet::V4(_) => AddressFamily::Inet,
            IpNet::V6(_) => AddressFamily::Inet6,
        };
        msg.header.prefix_len = net.prefix_len();
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(net.addr()));
        if net.addr().is_ipv4() {
            msg.attributes.push(AddressAttribute::Address(net.addr()));
        } else {
            msg.attributes[0] = AddressAttribute::Address(net.addr());
        }
        self.ack(RTM_DELADDR, 0, &msg, &format!("deleting address {net} from link #{index}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::msg::emitted;

    #[test]
    fn parses_addresses_and_flags() {
        let mut msg = AddressMessageBuilder::<Ipv6Addr>::new().index(9).address("fd00::5".parse().unwrap(), 64).build();
        msg.attributes.push(AddressAttribute::Flags(AddressFlags::Tentative));
        let a = parse(&emitted(&msg)).unwrap();
        assert_eq!((a.index, a.net.to_string(), a.tentative, a.dad_failed), (9, "fd00::5/64".into(), true, false));
        // On a point-to-point link IFA_LOCAL is ours and IFA_ADDRESS the peer's.
        let mut ptp = AddressMessage::default();
        ptp.header.family = AddressFamily::Inet;
        ptp.header.prefix_len = 32;
        ptp.attributes.push(AddressAttribute::Address("10.0.0.2".parse().unwrap()));
        ptp.attributes.push(AddressAttribute::Local("10.0.0.1".parse().unwrap()));
        assert_eq!(parse(&emitted(&ptp)).unwrap().net.to_string(), "10.0.0.1/32");
    }
}
