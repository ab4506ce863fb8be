//! Short constructors for the `nftables` crate's schema types, so that
//! applets read like the rules they build.

use std::borrow::Cow;

use nftables::expr::{Elem, Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix};
use nftables::schema::{Chain, Element, FlushObject, NfCmd, NfListObject, NfObject, Rule, Table as NfTable};
use nftables::stmt::{JumpTarget, Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

pub type Obj = NfObject<'static>;
pub type Expr = Expression<'static>;
pub type Stmt = Statement<'static>;

pub fn cow(v: impl Into<String>) -> Cow<'static, str> {
    Cow::Owned(v.into())
}

pub fn add(o: NfListObject<'static>) -> Obj {
    NfObject::CmdObject(NfCmd::Add(o))
}

/// `<protocol> <field>`, e.g. `ip saddr`, `th dport`.
pub fn payload(protocol: &'static str, field: &'static str) -> Expr {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
        protocol: Cow::Borrowed(protocol),
        field: Cow::Borrowed(field),
    })))
}

pub fn meta(key: MetaKey) -> Expr {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

pub fn concat(items: Vec<Expr>) -> Expr {
    Expression::Named(NamedExpression::Concat(items))
}

pub fn str_expr(v: impl ToString) -> Expr {
    Expression::String(Cow::Owned(v.to_string()))
}

pub fn prefix(net: ipnet::IpNet) -> Expr {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(str_expr(net.network())),
        len: net.prefix_len() as u32,
    }))
}

pub fn matches(left: Expr, op: Operator, right: Expr) -> Stmt {
    Statement::Match(Match { left, right, op })
}

pub fn eq(left: Expr, right: Expr) -> Stmt {
    matches(left, Operator::EQ, right)
}

/// `meta nfproto ipv4|ipv6`.
pub fn nfproto(v6: bool) -> Stmt {
    eq(meta(MetaKey::Nfproto), str_expr(if v6 { "ipv6" } else { "ipv4" }))
}

pub fn jump(target: &str) -> Stmt {
    Statement::Jump(JumpTarget { target: cow(target) })
}

/// `ip` or `ip6`, for payload expressions.
pub fn ip_proto(v6: bool) -> &'static str {
    if v6 {
        "ip6"
    } else {
        "ip"
    }
}

/// One table, to build its objects with less noise.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    pub family: NfFamily,
    pub name: &'static str,
}

impl Table {
    pub fn add_table(&self) -> Obj {
        add(NfListObject::Table(NfTable { family: self.family, name: cow(self.name), handle: None }))
    }

    pub fn chain(&self, name: &str) -> Chain<'static> {
        Chain { family: self.family, table: cow(self.name), name: cow(name), ..Default::default() }
    }

    pub fn base_chain(&self, name: &str, kind: NfChainType, hook: NfHook, prio: i32) -> Chain<'static> {
        Chain {
            _type: Some(kind),
            hook: Some(hook),
            prio: Some(prio),
            policy: Some(NfChainPolicy::Accept),
            ..self.chain(name)
        }
    }

    pub fn flush_chain(&self, name: &str) -> Obj {
        NfObject::CmdObject(NfCmd::Flush(FlushObject::Chain(self.chain(name))))
    }

    pub fn rule(&self, chain: &str, expr: Vec<Stmt>, comment: Option<String>) -> Obj {
        add(NfListObject::Rule(Rule {
            family: self.family,
            table: cow(self.name),
            chain: cow(chain),
            expr: Cow::Owned(expr),
            comment: comment.map(Cow::Owned),
            ..Default::default()
        }))
    }

    /// `add element` (idempotent) or `create element` (fails when the key
    /// exists) of `key` [: `data`] with an optional comment.
    pub fn element(&self, create: bool, set: &str, key: &Expr, data: Option<&Expr>, comment: Option<&str>) -> Obj {
        let key = match comment {
            Some(c) => Expression::Named(NamedExpression::Elem(Elem {
                val: Box::new(key.clone()),
                timeout: None,
                expires: None,
                comment: Some(cow(c)),
                counter: None,
            })),
            None => key.clone(),
        };
        let elem = match data {
            Some(d) => Expression::List(vec![key, d.clone()]),
            None => key,
        };
        let e = NfListObject::Element(Element {
            family: self.family,
            table: cow(self.name),
            name: cow(set),
            elem: Cow::Owned(vec![elem]),
        });
        NfObject::CmdObject(if create { NfCmd::Create(e) } else { NfCmd::Add(e) })
    }
}
