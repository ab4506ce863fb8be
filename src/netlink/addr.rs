//! Interface addresses.

use std::net::IpAddr;

use ipnet::IpNet;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};

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

fn from_message(msg: &AddressMessage) -> Option<Addr> {
    let mut ip: Option<IpAddr> = None;
    let mut flags = AddressFlags::empty();
    for attr in &msg.attributes {
        match attr {
            // IFA_LOCAL is the interface's own address on point-to-point links.
            AddressAttribute::Local(a) => ip = Some(*a),
            AddressAttribute::Address(a) if ip.is_none() => ip = Some(*a),
            AddressAttribute::Flags(f) => flags = *f,
            _ => {}
        }
    }
    let net = IpNet::new(ip?, msg.header.prefix_len).ok()?;
    Some(Addr {
        index: msg.header.index,
        net,
        tentative: flags.contains(AddressFlags::Tentative),
        dad_failed: flags.contains(AddressFlags::Dadfailed),
    })
}

impl Netlink {
    /// Addresses, of one link or of all.
    pub fn addrs(&self, index: Option<u32>) -> Result<Vec<Addr>> {
        let mut req = self.handle().address().get();
        if let Some(i) = index {
            req = req.set_link_index_filter(i);
        }
        let msgs = self.collect(req.execute(), "listing addresses")?;
        Ok(msgs.iter().filter_map(from_message).filter(|a| index.is_none_or(|i| a.index == i)).collect())
    }

    /// The addresses of one family on one link. The kernel dumps only that
    /// family, so a host with hundreds of veths (each with an IPv6
    /// link-local address) does not make an IPv4 lookup slow.
    pub fn link_addrs(&self, index: u32, v6: bool) -> Result<Vec<Addr>> {
        let mut req = self.handle().address().get().set_link_index_filter(index);
        req.message_mut().header.family = if v6 {
            rtnetlink::packet_route::AddressFamily::Inet6
        } else {
            rtnetlink::packet_route::AddressFamily::Inet
        };
        let msgs = self.collect(req.execute(), "listing addresses")?;
        Ok(msgs.iter().filter_map(from_message).filter(|a| a.index == index && a.net.addr().is_ipv6() == v6).collect())
    }

    /// Adds `net` to the link. `nodad` skips IPv6 duplicate address detection.
    pub fn add_addr(&self, index: u32, net: IpNet, nodad: bool) -> Result<()> {
        let mut req = self.handle().address().add(index, net.addr(), net.prefix_len());
        if nodad && net.addr().is_ipv6() {
            let msg = req.message_mut();
            msg.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        self.exec(req.execute(), &format!("adding address {net} to link #{index}"))
    }

    pub fn del_addr(&self, index: u32, net: IpNet) -> Result<()> {
        let existing = self.addrs(Some(index))?;
        let Some(_) = existing.iter().find(|a| a.net == net) else {
            return Err(Error::new(super::libc_errno::EADDRNOTAVAIL, format!("address {net} not on link #{index}")));
        };
        let mut msg = AddressMessage::default();
        msg.header.family = match net {
            IpNet::V4(_) => rtnetlink::packet_route::AddressFamily::Inet,
            IpNet::V6(_) => rtnetlink::packet_route::AddressFamily::Inet6,
        };
        msg.header.prefix_len = net.prefix_len();
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(net.addr()));
        if net.addr().is_ipv4() {
            msg.attributes.push(AddressAttribute::Address(net.addr()));
        } else {
            msg.attributes[0] = AddressAttribute::Address(net.addr());
        }
        self.exec(self.handle().address().del(msg).execute(), &format!("deleting address {net} from link #{index}"))
    }
}
