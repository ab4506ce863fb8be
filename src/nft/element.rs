//! Set and map elements as typed values. One `Element` gives both of its
//! encodings: the `nftables` crate's schema expression (for transactions
//! nft applies) and nfnetlink's bytes (for element-only batches sent
//! without exec'ing nft), so the two can never disagree.

use std::net::IpAddr;

use ipnet::IpNet;
use nftables::expr::{Elem, Expression, NamedExpression, Verdict};
use nftables::schema::{Element as SchemaElement, NfCmd, NfListObject, NfObject};
use nftables::stmt::JumpTarget;
use nftables::types::NfFamily;

use super::listing::ListedElement;
use super::nfnetlink::{key, WireElem};
use super::schema::{cow, prefix, str_expr, Expr, Obj};

/// One field of a key, typed as the set declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// `ipv4_addr` / `ipv6_addr`.
    Ip(IpAddr),
    /// A range of addresses (an interval set's field): `10.1.0.0/24`.
    Net(IpNet),
    /// `inet_proto`: "tcp", "udp" or "sctp".
    Proto(&'static str),
    /// `inet_service`.
    Port(u16),
    /// `ifname`.
    Ifname(String),
    /// `ether_addr`, as `aa:bb:cc:dd:ee:ff`.
    Ether(String),
}

impl Key {
    /// An interface name, if it is one the kernel can hold (1 to 15 bytes).
    pub fn ifname(name: &str) -> Option<Key> {
        key::ifname(name).map(|_| Key::Ifname(name.to_string()))
    }

    /// A MAC address, if `mac` is one (`aa:bb:cc:dd:ee:ff`).
    pub fn ether(mac: &str) -> Option<Key> {
        key::ether(mac).map(|_| Key::Ether(mac.to_string()))
    }
}

/// A map element's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    Ip(IpAddr),
    Port(u16),
    /// A verdict map's `jump <chain>`.
    Jump(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// The set or map holding it.
    pub set: String,
    /// The key's fields (more than one: a concatenation).
    pub key: Vec<Key>,
    pub data: Option<Data>,
    pub comment: Option<String>,
}

/// One change of an element-only batch.
#[derive(Debug, Clone, Copy)]
pub enum ElementOp<'a> {
    /// `create element`: fails (Exists) when the key is held.
    Create(&'a Element),
    /// `add element`: no error when an identical element exists.
    Add(&'a Element),
    /// `delete element`.
    Delete(&'a Element),
    /// `flush set`: fails (Missing) when the set does not exist. Meant for
    /// empty marker sets.
    Flush(&'a str),
}

impl Element {
    pub fn new(set: impl Into<String>, key: Vec<Key>) -> Element {
        Element { set: set.into(), key, data: None, comment: None }
    }
    pub fn with_data(mut self, data: Data) -> Element {
        self.data = Some(data);
        self
    }
    pub fn with_comment(mut self, comment: &str) -> Element {
        self.comment = Some(comment.to_string());
        self
    }

    /// The key as nft's JSON writes (and lists) it.
    pub fn key_expr(&self) -> Expr {
        match self.key.as_slice() {
            [one] => key_field_expr(one),
            many => Expression::Named(NamedExpression::Concat(many.iter().map(key_field_expr).collect())),
        }
    }

    pub fn data_expr(&self) -> Option<Expr> {
        Some(match self.data.as_ref()? {
            Data::Ip(a) => str_expr(a),
            Data::Port(p) => Expression::Number(*p as u32),
            Data::Jump(chain) => Expression::Verdict(Verdict::Jump(JumpTarget { target: cow(chain.clone()) })),
        })
    }

    /// Whether `listed` is this element's key in this element's set.
    pub fn matches(&self, listed: &ListedElement) -> bool {
        self.set == listed.set && serde_json::to_value(self.key_expr()).is_ok_and(|k| k == listed.key)
    }

    /// Whether `listed` is this element, with its data (if any) and `comment`.
    pub fn is_listed_as(&self, listed: &ListedElement, comment: &str) -> bool {
        let data = self.data_expr().map(|d| serde_json::to_value(d).unwrap_or_default());
        self.matches(listed) && listed.comment.as_deref() == Some(comment) && (data.is_none() || listed.data == data)
    }

    /// The element as it goes into a schema command: `key` or `key : data`,
    /// with the comment when `with_comment`.
    fn schema_elem(&self, with_comment: bool) -> Expr {
        let key = match self.comment.as_deref().filter(|_| with_comment) {
            Some(c) => Expression::Named(NamedExpression::Elem(Elem {
                val: Box::new(self.key_expr()),
                timeout: None,
                expires: None,
                comment: Some(cow(c)),
                counter: None,
            })),
            None => self.key_expr(),
        };
        match self.data_expr().filter(|_| with_comment) {
            Some(d) => Expression::List(vec![key, d]),
            None => key,
        }
    }

    fn schema(&self, family: NfFamily, table: &str, with_payload: bool) -> NfListObject<'static> {
        NfListObject::Element(SchemaElement {
            family,
            table: cow(table),
            name: cow(self.set.clone()),
            elem: vec![self.schema_elem(with_payload)].into(),
        })
    }

    /// The encoding nfnetlink sends; None when a field cannot be encoded
    /// (an interface name too long, a malformed MAC): nft then reports it.
    pub(crate) fn wire(&self) -> Option<WireElem> {
        let start: Vec<Vec<u8>> = self.key.iter().map(|k| key_field_bytes(k, false)).collect::<Option<_>>()?;
        let ranged = self.key.iter().any(|k| matches!(k, Key::Net(_)));
        let end: Option<Vec<Vec<u8>>> =
            if ranged { Some(self.key.iter().map(|k| key_field_bytes(k, true)).collect::<Option<_>>()?) } else { None };
        let join = |fields: &[Vec<u8>]| match fields {
            [one] if !ranged => one.clone(),
            many => key::concat(&many.iter().map(Vec::as_slice).collect::<Vec<_>>()),
        };
        let mut e = WireElem::new(&self.set, join(&start));
        e.key_end = end.map(|f| join(&f));
        match &self.data {
            Some(Data::Ip(a)) => e.data = Some(key::ip(*a)),
            Some(Data::Port(p)) => e.data = Some(key::inet_service(*p)),
            Some(Data::Jump(chain)) => e.jump = Some(chain.clone()),
            None => {}
        }
        e.comment = self.comment.clone();
        Some(e)
    }
}

impl ElementOp<'_> {
    /// The op as a schema command, for a transaction nft applies.
    pub fn schema(&self, family: NfFamily, table: &str) -> Obj {
        match self {
            ElementOp::Create(e) => NfObject::CmdObject(NfCmd::Create(e.schema(family, table, true))),
            ElementOp::Add(e) => NfObject::CmdObject(NfCmd::Add(e.schema(family, table, true))),
            ElementOp::Delete(e) => NfObject::CmdObject(NfCmd::Delete(e.schema(family, table, false))),
            ElementOp::Flush(set) => super::schema::flush_set(family, table, set),
        }
    }
}

fn key_field_expr(k: &Key) -> Expr {
    match k {
        Key::Ip(a) => str_expr(a),
        Key::Net(n) => prefix(*n),
        Key::Proto(p) => str_expr(p),
        Key::Port(p) => Expression::Number(*p as u32),
        Key::Ifname(n) => str_expr(n),
        Key::Ether(m) => str_expr(m),
    }
}

/// A field's bytes; for a range its first (`end` false) or last address.
fn key_field_bytes(k: &Key, end: bool) -> Option<Vec<u8>> {
    match k {
        Key::Ip(a) => Some(key::ip(*a)),
        Key::Net(n) if end => Some(key::ip_last(*n)),
        Key::Net(n) => Some(key::ip(n.network())),
        Key::Proto(p) => key::inet_proto(p),
        Key::Port(p) => Some(key::inet_service(*p)),
        Key::Ifname(n) => key::ifname(n),
        Key::Ether(m) => key::ether(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_encodings_of_one_element() {
        let e = Element::new("m", vec![Key::Proto("tcp"), Key::Port(8080)])
            .with_data(Data::Ip("10.0.0.5".parse().unwrap()))
            .with_comment("net c1 eth0");
        let json = serde_json::to_value(ElementOp::Create(&e).schema(NfFamily::INet, "t")).unwrap();
        let elem = &json["create"]["element"]["elem"][0];
        assert_eq!(elem[0]["elem"]["val"]["concat"], serde_json::json!(["tcp", 8080]));
        assert_eq!(elem[0]["elem"]["comment"], "net c1 eth0");
        assert_eq!(elem[1], "10.0.0.5");
        let wire = e.wire().unwrap();
        assert_eq!(wire.key, [6, 0, 0, 0, 0x1f, 0x90, 0, 0]);
        assert_eq!(wire.data, Some(vec![10, 0, 0, 5]));
        // A deletion names the key only.
        let json = serde_json::to_value(ElementOp::Delete(&e).schema(NfFamily::INet, "t")).unwrap();
        assert_eq!(json["delete"]["element"]["elem"][0]["concat"], serde_json::json!(["tcp", 8080]));
    }

    #[test]
    fn ranges_have_an_end() {
        let net: IpNet = "10.1.0.0/24".parse().unwrap();
        let e = Element::new("s", vec![Key::Net(net), Key::Ip("10.1.0.5".parse().unwrap())]);
        let w = e.wire().unwrap();
        assert_eq!(w.key, [10, 1, 0, 0, 10, 1, 0, 5]);
        assert_eq!(w.key_end, Some(vec![10, 1, 0, 255, 10, 1, 0, 5]));
        assert!(Element::new("s", vec![Key::Ifname("sixteen-chars-xx".into())]).wire().is_none());
        let v = Element::new("v", vec![Key::Ip("10.1.0.5".parse().unwrap())]).with_data(Data::Jump("hp".into()));
        assert_eq!(v.wire().unwrap().jump.as_deref(), Some("hp"));
    }
}
