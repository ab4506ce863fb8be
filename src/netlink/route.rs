//! Routes and policy rules.

use std::net::IpAddr;

use ipnet::IpNet;
use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use rtnetlink::packet_route::route::{RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteScope};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::RouteMessageBuilder;

use super::msg::{self, RTM_DELROUTE, RTM_GETROUTE, RTM_NEWROUTE};
use super::{Error, Netlink, Result};

/// A route as applets describe and read them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteEntry {
    pub dst: Option<IpNet>,
    pub gw: Option<IpAddr>,
    pub oif: Option<u32>,
    /// Main table when None.
    pub table: Option<u32>,
    pub metric: Option<u32>,
    pub src: Option<IpAddr>,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    /// RT_SCOPE_* (0 universe, 253 link, 254 host).
    pub scope: Option<u8>,
    /// RTPROT_* (2 kernel, 3 boot, 4 static); None: the builder's default
    /// (static). Kept so that a route read and re-added is the same route.
    pub protocol: Option<u8>,
}

pub const SCOPE_LINK: u8 = 253;

/// RTA_* attributes of a route message, and RTAX_* inside RTA_METRICS.
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_PREFSRC: u16 = 7;
const RTA_METRICS: u16 = 8;
const RTA_MULTIPATH: u16 = 9;
/// `struct rtnexthop`: length, flags, hops, ifindex.
const RTNH_LEN: usize = 8;
const RTA_TABLE: u16 = 15;
const RTAX_MTU: u16 = 2;
const RTAX_ADVMSS: u16 = 8;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// sizeof(struct rtmsg).
const RTMSG_LEN: usize = 12;

/// Reads an RTM_NEWROUTE payload (struct rtmsg, then attributes).
/// The routes one RTM_NEWROUTE message holds: one, or one per next hop of
/// a multipath (ECMP) route, each with its own gateway and interface.
fn parse(payload: &[u8]) -> Vec<RouteEntry> {
    let Some(route) = parse_one(payload) else { return Vec::new() };
    let Some(hops) = msg::attrs_after(payload, RTMSG_LEN).find(|(k, _)| *k == RTA_MULTIPATH).map(|(_, v)| v) else {
        return vec![route];
    };
    next_hops(hops).map(|(oif, gw)| RouteEntry { oif: Some(oif), gw, ..route.clone() }).collect()
}

/// (ifindex, gateway) of each `rtnexthop` in an RTA_MULTIPATH payload.
fn next_hops(mut buf: &[u8]) -> impl Iterator<Item = (u32, Option<IpAddr>)> + '_ {
    std::iter::from_fn(move || {
        let len = usize::from(msg::u16_at(buf, 0)?);
        if len < RTNH_LEN || len > buf.len() {
            return None;
        }
        let oif = msg::u32_at(buf, 4)?;
        let gw = msg::attrs(&buf[RTNH_LEN..len]).find(|(k, _)| *k == RTA_GATEWAY).and_then(|(_, v)| msg::ip(v));
        buf = &buf[((len + 3) & !3).min(buf.len())..];
        Some((oif, gw))
    })
}

fn parse_one(payload: &[u8]) -> Option<RouteEntry> {
    let family = msg::u8_at(payload, 0)?;
    let dst_len = msg::u8_at(payload, 1)?;
    let mut table = u32::from(msg::u8_at(payload, 4)?);
    let mut r = RouteEntry {
        protocol: Some(msg::u8_at(payload, 5)?),
        scope: Some(msg::u8_at(payload, 6)?),
        ..Default::default()
    };
    let mut dst_ip = None;
    for (kind, value) in msg::attrs_after(payload, RTMSG_LEN) {
        match kind {
            RTA_DST => dst_ip = msg::ip(value),
            RTA_GATEWAY => r.gw = msg::ip(value),
            RTA_OIF => r.oif = msg::u32_at(value, 0),
            RTA_TABLE => table = msg::u32_at(value, 0).unwrap_or(table),
            RTA_PRIORITY => r.metric = msg::u32_at(value, 0),
            RTA_PREFSRC => r.src = msg::ip(value),
            RTA_METRICS => {
                for (m, v) in msg::attrs(value) {
                    match m {
                        RTAX_MTU => r.mtu = msg::u32_at(v, 0),
                        RTAX_ADVMSS => r.advmss = msg::u32_at(v, 0),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    r.dst = match (dst_ip, family) {
        (Some(ip), _) => IpNet::new(ip, dst_len).ok(),
        (None, AF_INET) => IpNet::new(IpAddr::from([0u8; 4]), 0).ok(),
        (None, AF_INET6) => IpNet::new(IpAddr::from([0u16; 8]), 0).ok(),
        _ => None,
    };
    r.table = Some(table);
    Some(r)
}

/// The RTM_*ROUTE message for `r`; an error when its addresses mix families
/// (the builder refuses them, and a silently dropped gateway would install
/// a different route than asked for).
fn build(r: &RouteEntry, v6: bool) -> Result<RouteMessage> {
    let invalid = |e| Error::new(super::libc_errno::EINVAL, format!("invalid route {}: {e:?}", describe(r)));
    let mut b = RouteMessageBuilder::<IpAddr>::new();
    if let Some(dst) = r.dst {
        // Host bits are cleared: the kernel refuses a destination with them set.
        let dst = dst.trunc();
        b = b.destination_prefix(dst.addr(), dst.prefix_len()).map_err(invalid)?;
    }
    if let Some(gw) = r.gw {
        b = b.gateway(gw).map_err(invalid)?;
    }
    if let Some(oif) = r.oif {
        b = b.output_interface(oif);
    }
    if let Some(t) = r.table {
        b = b.table_id(t);
    }
    if let Some(m) = r.metric {
        b = b.priority(m);
    }
    if let Some(src) = r.src {
        b = b.pref_source(src).map_err(invalid)?;
    }
    if let Some(scope) = r.scope {
        b = b.scope(RouteScope::from(scope));
    }
    let mut msg = b.build();
    if let Some(p) = r.protocol {
        msg.header.protocol = rtnetlink::packet_route::route::RouteProtocol::from(p);
    }
    msg.header.address_family = if v6 { AddressFamily::Inet6 } else { AddressFamily::Inet };
    let mut metrics = Vec::new();
    if let Some(mtu) = r.mtu {
        metrics.push(RouteMetric::Mtu(mtu));
    }
    if let Some(advmss) = r.advmss {
        metrics.push(RouteMetric::Advmss(advmss));
    }
    if !metrics.is_empty() {
        msg.attributes.push(RouteAttribute::Metrics(metrics));
    }
    Ok(msg)
}

fn is_v6(r: &RouteEntry) -> bool {
    r.dst.map(|d| d.addr().is_ipv6()).or(r.gw.map(|g| g.is_ipv6())).unwrap_or(false)
}

impl Netlink {
    /// All routes of one family in every table.
    pub fn routes(&self, v6: bool) -> Result<Vec<RouteEntry>> {
        let mut query = RouteMessage::default();
        query.header.address_family = if v6 { AddressFamily::Inet6 } else { AddressFamily::Inet };
        query.header.table = RouteHeader::RT_TABLE_UNSPEC;
        let msgs = self.dump(RTM_GETROUTE, &query, "listing routes")?;
        Ok(msgs.iter().flat_map(|m| parse(m)).collect())
    }

    pub fn add_route(&self, r: &RouteEntry) -> Result<()> {
        let msg = build(r, is_v6(r))?;
        self.ack(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, &msg, &format!("adding route {}", describe(r)))
    }

    /// Adds a route beside those to the same destination (NLM_F_CREATE
    /// without NLM_F_EXCL, as the reference's RouteAddEcmp): another
    /// gateway makes an IPv6 multipath route, or one more IPv4 route. An
    /// identical route is still EEXIST.
    pub fn add_route_beside(&self, r: &RouteEntry) -> Result<()> {
        let msg = build(r, is_v6(r))?;
        self.ack(RTM_NEWROUTE, NLM_F_CREATE, &msg, &format!("adding route {}", describe(r)))
    }

    /// Adds or replaces (NLM_F_REPLACE).
    pub fn replace_route(&self, r: &RouteEntry) -> Result<()> {
        let msg = build(r, is_v6(r))?;
        self.ack(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, &msg, &format!("replacing route {}", describe(r)))
    }

    pub fn del_route(&self, r: &RouteEntry) -> Result<()> {
        let mut msg = build(r, is_v6(r))?;
        // Deleting matches on what is given; the builder's defaults would narrow it.
        msg.header.protocol = rtnetlink::packet_route::route::RouteProtocol::Unspec;
        if r.scope.is_none() {
            msg.header.scope = RouteScope::NoWhere;
        }
        self.ack(RTM_DELROUTE, 0, &msg, &format!("deleting route {}", describe(r)))
    }
}

pub fn describe(r: &RouteEntry) -> String {
    let mut s = r.dst.map_or("default".to_string(), |d| d.to_string());
    if let Some(gw) = r.gw {
        s += &format!(" via {gw}");
    }
    if let Some(oif) = r.oif {
        s += &format!(" dev #{oif}");
    }
    if let Some(t) = r.table {
        s += &format!(" table {t}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::msg::emitted;

    #[test]
    fn parses_what_build_emits() {
        let r = RouteEntry {
            dst: Some("10.1.0.0/16".parse().unwrap()),
            gw: Some("10.0.0.1".parse().unwrap()),
            oif: Some(5),
            table: Some(1000),
            metric: Some(100),
            mtu: Some(1400),
            advmss: Some(1360),
            scope: Some(0),
            protocol: Some(4),
            ..Default::default()
        };
        assert_eq!(parse(&emitted(&build(&r, false).unwrap())), [r]);
        let default6 = RouteEntry {
            dst: Some("::/0".parse().unwrap()),
            gw: Some("fd00::1".parse().unwrap()),
            ..Default::default()
        };
        let back = parse(&emitted(&build(&default6, true).unwrap())).remove(0);
        assert_eq!(back.dst, default6.dst);
        assert_eq!(back.gw, default6.gw);
        assert_eq!(back.table, Some(254));
    }

    #[test]
    fn a_multipath_route_is_one_entry_per_next_hop() {
        // rtmsg: family inet6, dst_len 64, src_len, tos, table main, protocol static, scope universe, type unicast, flags.
        let mut payload = vec![10u8, 64, 0, 0, 254, 4, 0, 1, 0, 0, 0, 0];
        let dst: IpAddr = "fd99::".parse().unwrap();
        let IpAddr::V6(dst) = dst else { unreachable!() };
        msg::put_attr(&mut payload, RTA_DST, &dst.octets());
        let mut hops = Vec::new();
        for (oif, gw) in [(7u32, "fd77::1"), (8, "fd77::2")] {
            let gw: std::net::Ipv6Addr = gw.parse().unwrap();
            let mut attrs = Vec::new();
            msg::put_attr(&mut attrs, RTA_GATEWAY, &gw.octets());
            hops.extend(((RTNH_LEN + attrs.len()) as u16).to_ne_bytes());
            hops.extend([0u8, 0]);
            hops.extend(oif.to_ne_bytes());
            hops.extend(attrs);
        }
        msg::put_attr(&mut payload, RTA_MULTIPATH, &hops);
        let routes = parse(&payload);
        let got: Vec<(Option<u32>, Option<IpAddr>)> = routes.iter().map(|r| (r.oif, r.gw)).collect();
        assert_eq!(got, [(Some(7), Some("fd77::1".parse().unwrap())), (Some(8), Some("fd77::2".parse().unwrap()))]);
        assert!(routes.iter().all(|r| r.dst == Some("fd99::/64".parse().unwrap())));
    }
}
