//! Policy routing rules (RTM_NEWRULE / RTM_DELRULE): `from <src> lookup <table>`.

use std::net::IpAddr;

use ipnet::IpNet;
use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use rtnetlink::packet_route::route::RouteHeader;
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::packet_route::AddressFamily;

use super::msg::{self, RTM_DELRULE, RTM_GETRULE, RTM_NEWRULE};
use super::{Netlink, Result};

/// FRA_* attributes of a rule message.
const FRA_SRC: u16 = 2;
const FRA_PRIORITY: u16 = 6;
const FRA_TABLE: u16 = 15;
const AF_INET6: u8 = 10;
/// sizeof(struct fib_rule_hdr).
const FIB_RULE_HDR_LEN: usize = 12;

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

    /// Reads an RTM_NEWRULE payload (struct fib_rule_hdr, then attributes).
    fn parse(payload: &[u8]) -> Option<Rule> {
        let src_len = msg::u8_at(payload, 2)?;
        let mut rule = Rule {
            v6: msg::u8_at(payload, 0)? == AF_INET6,
            table: u32::from(msg::u8_at(payload, 4)?),
            ..Default::default()
        };
        for (kind, value) in msg::attrs_after(payload, FIB_RULE_HDR_LEN) {
            match kind {
                FRA_TABLE => rule.table = msg::u32_at(value, 0).unwrap_or(rule.table),
                FRA_PRIORITY => rule.priority = msg::u32_at(value, 0),
                FRA_SRC => rule.src = msg::ip(value).and_then(|ip| IpNet::new(ip, src_len).ok()),
                _ => {}
            }
        }
        Some(rule)
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
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut query = RuleMessage::default();
            query.header.family = family;
            query.header.table = RouteHeader::RT_TABLE_UNSPEC;
            let msgs = self.dump(RTM_GETRULE, &query, "listing rules")?;
            all.extend(msgs.iter().filter_map(|m| Rule::parse(m)));
        }
        Ok(all)
    }

    /// Adds `rule`; EEXIST when an identical rule is there.
    pub fn add_rule(&self, rule: &Rule) -> Result<()> {
        self.ack(RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL, &rule.to_message(), &format!("adding rule {rule}"))
    }

    /// Deletes the first rule matching `rule` (priority matched when given).
    pub fn del_rule(&self, rule: &Rule) -> Result<()> {
        self.ack(RTM_DELRULE, 0, &rule.to_message(), &format!("deleting rule {rule}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::msg::emitted;

    #[test]
    fn message_round_trip() {
        let r = Rule::from_ip("10.1.2.3".parse().unwrap(), 1000);
        assert_eq!(r.src.unwrap().to_string(), "10.1.2.3/32");
        let back = Rule::parse(&emitted(&r.to_message())).unwrap();
        assert_eq!(back, r);
        let r6 = Rule::from_ip("fd00::1".parse().unwrap(), 100);
        let msg = r6.to_message();
        assert_eq!(msg.header.family, AddressFamily::Inet6);
        assert_eq!(msg.header.table, 100);
        assert_eq!(Rule::parse(&emitted(&msg)), Some(r6.clone()));
        assert_eq!(r6.to_string(), "from fd00::1/128 lookup 100");
    }
}
