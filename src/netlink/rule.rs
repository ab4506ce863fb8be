//! Policy routing rules (RTM_NEWRULE / RTM_DELRULE): `from <src> lookup <table>`.

use std::net::IpAddr;

use ipnet::IpNet;
use rtnetlink::packet_route::route::RouteHeader;
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::IpVersion;

use super::{Netlink, Result};

/// A `lookup` rule as applets describe and read them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule {
    /// The rule's family when it has no source (true: IPv6).
    pub v6: bool,
    /// `from <src>`; None matches every source.
    pub src: Option<IpNet>,
    pub table: u32,
    /// The kernel picks one below the previous rule's when None.
    pub priority: Option<u32>,
}

impl Rule {
    /// `from <ip>/<full length> lookup <table>`.
    pub fn from_ip(ip: IpAddr, table: u32) -> Rule {
        let len = if ip.is_ipv6() { 128 } else { 32 };
        Rule { v6: ip.is_ipv6(), src: IpNet::new(ip, len).ok(), table, priority: None }
    }

    fn is_v6(&self) -> bool {
        self.src.map_or(self.v6, |s| s.addr().is_ipv6())
    }

    fn to_message(&self) -> RuleMessage {
        let mut msg = RuleMessage::default();
        msg.header.family = if self.is_v6() { AddressFamily::Inet6 } else { AddressFamily::Inet };
        msg.header.action = RuleAction::ToTable;
        if self.table > 255 {
            msg.header.table = RouteHeader::RT_TABLE_UNSPEC;
        } else {
            msg.header.table = self.table as u8;
        }
        msg.attributes.push(RuleAttribute::Table(self.table));
        if let Some(src) = self.src {
            msg.header.src_len = src.prefix_len();
            msg.attributes.push(RuleAttribute::Source(src.addr()));
        }
        if let Some(p) = self.priority {
            msg.attributes.push(RuleAttribute::Priority(p));
        }
        msg
    }

    fn from_message(msg: &RuleMessage) -> Rule {
        let mut rule = Rule {
            v6: msg.header.family == AddressFamily::Inet6,
            table: msg.header.table as u32,
            ..Default::default()
        };
        for attr in &msg.attributes {
            match attr {
                RuleAttribute::Table(t) => rule.table = *t,
                RuleAttribute::Priority(p) => rule.priority = Some(*p),
                RuleAttribute::Source(ip) => rule.src = IpNet::new(*ip, msg.header.src_len).ok(),
                _ => {}
            }
        }
        rule
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.src {
            Some(src) => write!(f, "from {src}")?,
            None => write!(f, "from all")?,
        }
        write!(f, " lookup {}", self.table)
    }
}

impl Netlink {
    /// The rules of both families, in kernel order.
    pub fn rules(&self) -> Result<Vec<Rule>> {
        let mut all = Vec::new();
        for version in [IpVersion::V4, IpVersion::V6] {
            let msgs = self.collect(self.handle().rule().get(version).execute(), "listing rules")?;
            all.extend(msgs.iter().map(Rule::from_message));
        }
        Ok(all)
    }

    /// Adds `rule`; EEXIST when an identical rule is there.
    pub fn add_rule(&self, rule: &Rule) -> Result<()> {
        let mut req = self.handle().rule().add();
        *req.message_mut() = rule.to_message();
        self.exec(req.execute(), &format!("adding rule {rule}"))
    }

    /// Deletes the first rule matching `rule` (priority matched when given).
    pub fn del_rule(&self, rule: &Rule) -> Result<()> {
        let req = self.handle().rule().del(rule.to_message());
        self.exec(req.execute(), &format!("deleting rule {rule}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_round_trip() {
        let r = Rule::from_ip("10.1.2.3".parse().unwrap(), 1000);
        assert_eq!(r.src.unwrap().to_string(), "10.1.2.3/32");
        let back = Rule::from_message(&r.to_message());
        assert_eq!(back, r);
        let r6 = Rule::from_ip("fd00::1".parse().unwrap(), 100);
        let msg = r6.to_message();
        assert_eq!(msg.header.family, AddressFamily::Inet6);
        assert_eq!(msg.header.table, 100);
        assert_eq!(Rule::from_message(&msg), r6);
        assert_eq!(r6.to_string(), "from fd00::1/128 lookup 100");
    }
}
