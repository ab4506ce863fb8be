//! Routes and policy rules.

use std::net::IpAddr;

use ipnet::IpNet;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteScope,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::RouteMessageBuilder;

use super::{Netlink, Result};

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

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn from_message(msg: &RouteMessage) -> RouteEntry {
    let mut r = RouteEntry {
        scope: Some(u8::from(msg.header.scope)),
        protocol: Some(u8::from(msg.header.protocol)),
        ..Default::default()
    };
    let mut table = msg.header.table as u32;
    let mut dst_ip = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst_ip = route_addr(a),
            RouteAttribute::Gateway(a) => r.gw = route_addr(a),
            RouteAttribute::Oif(i) => r.oif = Some(*i),
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Priority(p) => r.metric = Some(*p),
            RouteAttribute::PrefSource(a) => r.src = route_addr(a),
            RouteAttribute::Metrics(ms) => {
                for m in ms {
                    match m {
                        RouteMetric::Mtu(v) => r.mtu = Some(*v),
                        RouteMetric::Advmss(v) => r.advmss = Some(*v),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let len = msg.header.destination_prefix_length;
    r.dst = match (dst_ip, msg.header.address_family) {
        (Some(ip), _) => IpNet::new(ip, len).ok(),
        (None, AddressFamily::Inet) => IpNet::new(IpAddr::from([0u8; 4]), 0).ok(),
        (None, AddressFamily::Inet6) => IpNet::new(IpAddr::from([0u16; 8]), 0).ok(),
        _ => None,
    };
    r.table = Some(table);
    r
}

fn build(r: &RouteEntry, v6: bool) -> RouteMessage {
    let mut b = RouteMessageBuilder::<IpAddr>::new();
    if let Some(dst) = r.dst {
        // Host bits are cleared: the kernel refuses a destination with them set.
        let dst = dst.trunc();
        b = b.destination_prefix(dst.addr(), dst.prefix_len()).unwrap_or_else(|_| RouteMessageBuilder::<IpAddr>::new());
    }
    if let Some(gw) = r.gw {
        b = b.gateway(gw).unwrap_or_else(|_| RouteMessageBuilder::<IpAddr>::new());
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
        b = b.pref_source(src).unwrap_or_else(|_| RouteMessageBuilder::<IpAddr>::new());
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
    msg
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
        let msgs = self.collect(self.handle().route().get(query).execute(), "listing routes")?;
        Ok(msgs.iter().map(from_message).collect())
    }

    pub fn add_route(&self, r: &RouteEntry) -> Result<()> {
        let msg = build(r, is_v6(r));
        self.exec(self.handle().route().add(msg).execute(), &format!("adding route {}", describe(r)))
    }

    /// Adds or replaces (NLM_F_REPLACE).
    pub fn replace_route(&self, r: &RouteEntry) -> Result<()> {
        let msg = build(r, is_v6(r));
        self.exec(self.handle().route().add(msg).replace().execute(), &format!("replacing route {}", describe(r)))
    }

    pub fn del_route(&self, r: &RouteEntry) -> Result<()> {
        let mut msg = build(r, is_v6(r));
        // Deleting matches on what is given; the builder's defaults would narrow it.
        msg.header.protocol = rtnetlink::packet_route::route::RouteProtocol::Unspec;
        if r.scope.is_none() {
            msg.header.scope = RouteScope::NoWhere;
        }
        self.exec(self.handle().route().del(msg).execute(), &format!("deleting route {}", describe(r)))
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
