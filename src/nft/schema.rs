//! Transactions, and short constructors for the `nftables` crate's schema
//! types, so that applets read like the rules they build. Every command
//! cnibox sends nft is one of these.

use std::borrow::Cow;

use nftables::expr::{Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix, CT};
use nftables::schema::{
    Chain, FlushObject, NfCmd, NfListObject, NfObject, Rule, Set, SetType, SetTypeValue, Table as NfTable,
};
use nftables::stmt::{JumpTarget, Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use serde::Serialize;

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

/// `ct state { states }`.
pub fn ct_state_in(states: &[&str]) -> Stmt {
    let ct = Expression::Named(NamedExpression::CT(CT { key: Cow::Borrowed("state"), family: None, dir: None }));
    matches(ct, Operator::IN, Expression::List(states.iter().map(str_expr).collect()))
}

/// `ct status dnat`: a connection whose destination was translated (a
/// host port's, say).
pub fn ct_status_dnat() -> Stmt {
    let ct = Expression::Named(NamedExpression::CT(CT { key: Cow::Borrowed("status"), family: None, dir: None }));
    matches(ct, Operator::IN, str_expr("dnat"))
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
}

/// One atomic nft transaction: schema commands, plus what the crate has no
/// type for.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Transaction {
    #[serde(rename = "nftables")]
    commands: Vec<Command>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
enum Command {
    Schema(Obj),
    /// `add map ... { type <key> : verdict }`: the crate's map types have no
    /// verdict data type.
    AddVerdictMap {
        add: VerdictMapBody,
    },
}

#[derive(Debug, Clone, Serialize)]
struct VerdictMapBody {
    map: VerdictMap,
}

#[derive(Debug, Clone, Serialize)]
struct VerdictMap {
    family: NfFamily,
    table: String,
    name: String,
    #[serde(rename = "type")]
    key_type: SetType,
    map: &'static str,
}

impl Transaction {
    pub fn new() -> Transaction {
        Transaction::default()
    }
    pub fn push(&mut self, obj: Obj) {
        self.commands.push(Command::Schema(obj));
    }
    pub fn extend(&mut self, objs: impl IntoIterator<Item = Obj>) {
        self.commands.extend(objs.into_iter().map(Command::Schema));
    }
    /// Appends every command of `other`.
    pub fn append(&mut self, other: Transaction) {
        self.commands.extend(other.commands);
    }
    /// Declares a verdict map keyed by `key_type` (idempotent).
    pub fn add_verdict_map(&mut self, table: &Table, name: &str, key_type: SetType) {
        let map = VerdictMap {
            family: table.family,
            table: table.name.to_string(),
            name: name.to_string(),
            key_type,
            map: "verdict",
        };
        self.commands.push(Command::AddVerdictMap { add: VerdictMapBody { map } });
    }
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }
    pub fn len(&self) -> usize {
        self.commands.len()
    }
}

impl From<Vec<Obj>> for Transaction {
    fn from(objs: Vec<Obj>) -> Transaction {
        let mut tx = Transaction::new();
        tx.extend(objs);
        tx
    }
}

pub fn delete(o: NfListObject<'static>) -> Obj {
    NfObject::CmdObject(NfCmd::Delete(o))
}

/// A set object naming `name` only, for commands that need no type (nft
/// ignores the type of a set it flushes or deletes).
fn named_set(family: NfFamily, table: &str, name: &str) -> Set<'static> {
    Set {
        family,
        table: cow(table),
        name: cow(name),
        set_type: SetTypeValue::Single(SetType::Ifname),
        ..Default::default()
    }
}

/// `flush set <family> <table> <name>`.
pub fn flush_set(family: NfFamily, table: &str, name: &str) -> Obj {
    NfObject::CmdObject(NfCmd::Flush(FlushObject::Set(Box::new(named_set(family, table, name)))))
}

/// `delete set <family> <table> <name>` (a map too).
pub fn delete_set(family: NfFamily, table: &str, name: &str) -> Obj {
    delete(NfListObject::Set(Box::new(named_set(family, table, name))))
}

/// `delete chain <family> <table> <name>`.
pub fn delete_chain(family: NfFamily, table: &str, name: &str) -> Obj {
    delete(NfListObject::Chain(Chain { family, table: cow(table), name: cow(name), ..Default::default() }))
}

/// `delete rule <family> <table> <chain> handle <handle>`.
pub fn delete_rule(family: NfFamily, table: &str, chain: &str, handle: u32) -> Obj {
    delete(NfListObject::Rule(Rule {
        family,
        table: cow(table),
        chain: cow(chain),
        handle: Some(handle),
        ..Default::default()
    }))
}

/// `insert rule <family> <table> <chain> <expr>`: at the top of the chain,
/// in any table (the rule goes before the chain's own rules).
pub fn insert_rule(family: NfFamily, table: &str, chain: &str, expr: Vec<Stmt>, comment: &str) -> Obj {
    NfObject::CmdObject(NfCmd::Insert(NfListObject::Rule(Rule {
        family,
        table: cow(table),
        chain: cow(chain),
        expr: Cow::Owned(expr),
        comment: Some(cow(comment)),
        ..Default::default()
    })))
}

/// `delete element <family> <table> <set> { key }`, the key as listed.
pub fn delete_element(family: NfFamily, table: &str, set: &str, key: Expr) -> Obj {
    delete(NfListObject::Element(nftables::schema::Element {
        family,
        table: cow(table),
        name: cow(set),
        elem: vec![key].into(),
    }))
}

/// The nfgenmsg family of a table family.
pub fn nfgen_family(family: NfFamily) -> u8 {
    match family {
        NfFamily::INet => 1,
        NfFamily::IP => 2,
        NfFamily::ARP => 3,
        NfFamily::NetDev => 5,
        NfFamily::Bridge => 7,
        NfFamily::IP6 => 10,
    }
}

/// The table family of an nfgenmsg family.
pub fn family_of_nfgen(family: u8) -> Option<NfFamily> {
    use NfFamily::*;
    [INet, IP, ARP, NetDev, Bridge, IP6].into_iter().find(|f| nfgen_family(*f) == family)
}

/// The family nft's listings name `name`.
pub fn family_of(name: &str) -> Option<NfFamily> {
    Some(match name {
        "ip" => NfFamily::IP,
        "ip6" => NfFamily::IP6,
        "inet" => NfFamily::INet,
        "arp" => NfFamily::ARP,
        "bridge" => NfFamily::Bridge,
        "netdev" => NfFamily::NetDev,
        _ => return None,
    })
}

/// The family as nft's command line names it.
pub fn family_str(family: NfFamily) -> &'static str {
    match family {
        NfFamily::IP => "ip",
        NfFamily::IP6 => "ip6",
        NfFamily::INet => "inet",
        NfFamily::ARP => "arp",
        NfFamily::Bridge => "bridge",
        NfFamily::NetDev => "netdev",
    }
}
