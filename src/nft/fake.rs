//! A recording fake of the kernel's nftables, for unit tests of the
//! rule-building logic without root (as knftables' `NewFake` is for the
//! reference's plugins). It keeps a model of the tables: transactions,
//! element batches and lookups change and read it with the kernel's
//! all-or-nothing semantics and its Missing/Exists answers, and listings
//! come out in nft's JSON form, so the real listing parser reads them.
//! Every call is recorded, to count nft execs and nfnetlink batches.

use std::collections::BTreeMap;

use nftables::types::{NfFamily, NfHook};
use serde_json::{json, Value};

use super::backend::{Backend, BaseChain, Found, RuleSummary};
use super::element::{Element, ElementOp};
use super::error::{Error, ErrorKind, Result};
use super::listing::Listing;
use super::schema::{family_of, family_str, Transaction};

/// One call the code under test made.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// An nft transaction (its commands as JSON).
    Apply(Vec<Value>),
    /// An nft script in text syntax (not modelled: the tables are unchanged).
    ApplyText(String),
    List(String),
    /// An nfnetlink batch of this many messages.
    Commit(usize),
    Lookup(usize),
    /// The base chains of every table.
    ListChains,
    /// The rules of one chain.
    ListRules(String),
}

#[derive(Debug, Clone, Default)]
struct Set {
    is_map: bool,
    /// (key, data, comment)
    elems: Vec<(Value, Option<Value>, Option<String>)>,
}

#[derive(Debug, Clone, Default)]
struct Table {
    sets: BTreeMap<String, Set>,
    /// chain -> (handle, comment, expr)
    chains: BTreeMap<String, Vec<(u32, Option<String>, Value)>>,
    /// base chain -> (hook, priority, policy) as nft JSON names them
    hooks: BTreeMap<String, (String, i32, String)>,
}

#[derive(Debug, Default)]
pub struct Fake {
    tables: BTreeMap<(String, String), Table>,
    next_handle: u32,
    pub calls: Vec<Call>,
}

fn missing(what: String) -> Error {
    Error::new(ErrorKind::Missing, what, "")
}

impl Fake {
    pub fn new() -> Fake {
        Fake::default()
    }

    /// How many nft transactions were applied (JSON or text).
    pub fn applies(&self) -> usize {
        self.calls.iter().filter(|c| matches!(c, Call::Apply(_) | Call::ApplyText(_))).count()
    }

    /// How many nfnetlink batches were committed.
    pub fn commits(&self) -> usize {
        self.calls.iter().filter(|c| matches!(c, Call::Commit(_))).count()
    }

    pub fn has_table(&self, family: NfFamily, table: &str) -> bool {
        self.tables.contains_key(&(family_str(family).to_string(), table.to_string()))
    }

    /// The elements of `set` in `table`: (key, comment).
    pub fn elements(&self, family: NfFamily, table: &str, set: &str) -> Vec<(Value, Option<String>)> {
        let t = self.tables.get(&(family_str(family).to_string(), table.to_string()));
        let s = t.and_then(|t| t.sets.get(set));
        s.map(|s| s.elems.iter().map(|(k, _, c)| (k.clone(), c.clone())).collect()).unwrap_or_default()
    }

    /// The rules of `chain` in `table`, as JSON expressions.
    pub fn rules(&self, family: NfFamily, table: &str, chain: &str) -> Vec<Value> {
        let t = self.tables.get(&(family_str(family).to_string(), table.to_string()));
        let c = t.and_then(|t| t.chains.get(chain));
        c.map(|c| c.iter().map(|(_, _, e)| e.clone()).collect()).unwrap_or_default()
    }

    /// The comments of the rules of `chain` in `table`, in order.
    pub fn rule_comments(&self, family: NfFamily, table: &str, chain: &str) -> Vec<Option<String>> {
        let t = self.tables.get(&(family_str(family).to_string(), table.to_string()));
        let c = t.and_then(|t| t.chains.get(chain));
        c.map(|c| c.iter().map(|(_, comment, _)| comment.clone()).collect()).unwrap_or_default()
    }

    fn table_mut(&mut self, obj: &Value) -> Result<&mut Table> {
        let key = (str_of(obj, "family"), str_of(obj, "table"));
        let what = format!("table {} {}", key.0, key.1);
        self.tables.get_mut(&key).ok_or_else(|| missing(what))
    }

    fn set_mut(&mut self, obj: &Value) -> Result<&mut Set> {
        let name = str_of(obj, "name");
        self.table_mut(obj)?.sets.get_mut(&name).ok_or_else(|| missing(format!("set {name}")))
    }

    /// One command of a transaction, nft JSON.
    fn command(&mut self, cmd: &Value) -> Result<()> {
        let (verb, body) = cmd.as_object().and_then(|o| o.iter().next()).expect("one verb per command");
        let (kind, obj) = body.as_object().and_then(|o| o.iter().next()).expect("one object per command");
        match (verb.as_str(), kind.as_str()) {
            ("add", "table") => {
                self.tables.entry((str_of(obj, "family"), str_of(obj, "name"))).or_default();
            }
            ("delete", "table") => {
                let key = (str_of(obj, "family"), str_of(obj, "name"));
                self.tables.remove(&key).ok_or_else(|| missing(format!("table {}", key.1)))?;
            }
            ("add", "set" | "map") => {
                let name = str_of(obj, "name");
                let set = self.table_mut(obj)?.sets.entry(name).or_default();
                set.is_map = kind == "map";
            }
            ("delete", "set" | "map") => {
                let name = str_of(obj, "name");
                self.table_mut(obj)?.sets.remove(&name).ok_or_else(|| missing(format!("set {name}")))?;
            }
            ("flush", "set" | "map") => self.set_mut(obj)?.elems.clear(),
            ("add", "chain") => {
                let table = self.table_mut(obj)?;
                table.chains.entry(str_of(obj, "name")).or_default();
                if let Some(hook) = obj.get("hook").and_then(Value::as_str) {
                    let prio = obj.get("prio").and_then(Value::as_i64).unwrap_or(0) as i32;
                    table.hooks.insert(str_of(obj, "name"), (hook.to_string(), prio, str_of(obj, "policy")));
                }
            }
            ("delete", "chain") => {
                let name = str_of(obj, "name");
                let table = self.table_mut(obj)?;
                table.hooks.remove(&name);
                table.chains.remove(&name).ok_or_else(|| missing(format!("chain {name}")))?;
            }
            ("flush", "chain") => {
                let name = str_of(obj, "name");
                self.table_mut(obj)?.chains.get_mut(&name).ok_or_else(|| missing(format!("chain {name}")))?.clear();
            }
            (verb @ ("add" | "insert"), "rule") => {
                self.next_handle += 1;
                let handle = self.next_handle;
                let chain = str_of(obj, "chain");
                let rules =
                    self.table_mut(obj)?.chains.get_mut(&chain).ok_or_else(|| missing(format!("chain {chain}")))?;
                let comment = obj.get("comment").and_then(Value::as_str).map(str::to_string);
                // `insert` without a position puts the rule at the top.
                let at = if verb == "insert" { 0 } else { rules.len() };
                rules.insert(at, (handle, comment, obj["expr"].clone()));
            }
            ("delete", "rule") => {
                let (chain, handle) = (str_of(obj, "chain"), obj["handle"].as_u64().unwrap_or(0) as u32);
                let rules =
                    self.table_mut(obj)?.chains.get_mut(&chain).ok_or_else(|| missing(format!("chain {chain}")))?;
                let i = rules.iter().position(|r| r.0 == handle).ok_or_else(|| missing(format!("rule {handle}")))?;
                rules.remove(i);
            }
            (verb @ ("add" | "create" | "delete"), "element") => {
                let set = self.set_mut(obj)?;
                for e in obj["elem"].as_array().cloned().unwrap_or_default() {
                    element_command(set, verb, e)?;
                }
            }
            other => panic!("the fake does not model {other:?}"),
        }
        Ok(())
    }
}

fn str_of(obj: &Value, key: &str) -> String {
    obj.get(key).and_then(Value::as_str).unwrap_or_default().to_string()
}

/// `add`, `create` or `delete` of one element given as nft JSON.
fn element_command(set: &mut Set, verb: &str, e: Value) -> Result<()> {
    let (keyed, data) = match e {
        Value::Array(pair) if pair.len() == 2 => (pair[0].clone(), Some(pair[1].clone())),
        other => (other, None),
    };
    let (key, comment) = match keyed.get("elem") {
        Some(inner) => (inner["val"].clone(), inner.get("comment").and_then(Value::as_str).map(str::to_string)),
        None => (keyed, None),
    };
    let at = set.elems.iter().position(|(k, _, _)| *k == key);
    match (verb, at) {
        ("delete", Some(i)) => {
            set.elems.remove(i);
        }
        ("delete", None) => return Err(missing(format!("element {key}"))),
        ("create", Some(_)) => return Err(Error::new(ErrorKind::Exists, format!("element {key}"), "")),
        ("add", Some(_)) => {}
        _ => set.elems.push((key, data, comment)),
    }
    Ok(())
}

impl Backend for Fake {
    fn apply(&mut self, tx: &Transaction) -> Result<()> {
        if tx.is_empty() {
            return Ok(());
        }
        let json = serde_json::to_value(tx).expect("transactions serialize");
        let cmds = json["nftables"].as_array().cloned().unwrap_or_default();
        self.calls.push(Call::Apply(cmds.clone()));
        let before = (self.tables.clone(), self.next_handle);
        for cmd in &cmds {
            if let Err(e) = self.command(cmd) {
                (self.tables, self.next_handle) = before;
                return Err(e);
            }
        }
        Ok(())
    }

    fn apply_text(&mut self, script: &str) -> Result<()> {
        self.calls.push(Call::ApplyText(script.to_string()));
        Ok(())
    }

    fn list(&mut self, family: NfFamily, table: &str) -> Result<Option<Listing>> {
        self.calls.push(Call::List(table.to_string()));
        let Some(t) = self.tables.get(&(family_str(family).to_string(), table.to_string())) else { return Ok(None) };
        let mut objects = vec![json!({"table": {"family": family_str(family), "name": table}})];
        for (name, set) in &t.sets {
            let elems: Vec<Value> = set
                .elems
                .iter()
                .map(|(k, d, c)| {
                    let key = match c {
                        Some(c) => json!({"elem": {"val": k, "comment": c}}),
                        None => k.clone(),
                    };
                    match d {
                        Some(d) => json!([key, d]),
                        None => key,
                    }
                })
                .collect();
            let kind = if set.is_map { "map" } else { "set" };
            objects.push(json!({ kind: {"family": family_str(family), "table": table, "name": name, "elem": elems}}));
        }
        for (chain, rules) in &t.chains {
            objects.push(json!({"chain": {"family": family_str(family), "table": table, "name": chain}}));
            for (handle, comment, expr) in rules {
                let mut r = json!({"family": family_str(family), "table": table, "chain": chain,
                                   "handle": handle, "expr": expr});
                if let Some(c) = comment {
                    r["comment"] = json!(c);
                }
                objects.push(json!({ "rule": r }));
            }
        }
        Ok(Some(Listing { objects }))
    }

    fn commit(&mut self, family: NfFamily, table: &str, ops: &[ElementOp]) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        self.calls.push(Call::Commit(ops.len()));
        let before = self.tables.clone();
        for op in ops {
            let cmd = serde_json::to_value(op.schema(family, table)).expect("ops serialize");
            if let Err(e) = self.command(&cmd) {
                self.tables = before;
                return Err(e);
            }
        }
        Ok(())
    }

    fn lookup(&mut self, family: NfFamily, table: &str, elems: &[Element]) -> Result<Vec<Option<Found>>> {
        self.calls.push(Call::Lookup(elems.len()));
        let t = self.tables.get(&(family_str(family).to_string(), table.to_string()));
        Ok(elems
            .iter()
            .map(|e| {
                let key = serde_json::to_value(e.key_expr()).expect("keys serialize");
                let set = t.and_then(|t| t.sets.get(&e.set))?;
                let (_, _, comment) = set.elems.iter().find(|(k, _, _)| *k == key)?;
                Some(Found { comment: comment.clone() })
            })
            .collect())
    }

    fn has_chain(&mut self, family: NfFamily, table: &str, chain: &str) -> Result<bool> {
        let t = self.tables.get(&(family_str(family).to_string(), table.to_string()));
        Ok(t.is_some_and(|t| t.chains.contains_key(chain)))
    }

    fn available(&mut self) -> Result<()> {
        Ok(())
    }

    fn chain_names(&mut self, family: NfFamily, table: &str) -> Result<Vec<String>> {
        let t = self.tables.get(&(family_str(family).to_string(), table.to_string()));
        Ok(t.map(|t| t.chains.keys().cloned().collect()).unwrap_or_default())
    }

    fn base_chains(&mut self) -> Result<Vec<BaseChain>> {
        self.calls.push(Call::ListChains);
        let mut out = Vec::new();
        for ((family, table), t) in &self.tables {
            let family = family_of(family).expect("the fake's tables have known families");
            for (name, (hook, priority, policy)) in &t.hooks {
                let hook: NfHook = serde_json::from_value(Value::from(hook.as_str())).expect("nft hook names");
                let (table, name, priority) = (table.clone(), name.clone(), *priority);
                out.push(BaseChain { family, table, name, hook, priority, drops: policy == "drop" });
            }
        }
        Ok(out)
    }

    fn chain_rules(&mut self, family: NfFamily, table: &str, chain: &str) -> Result<Vec<RuleSummary>> {
        self.calls.push(Call::ListRules(chain.to_string()));
        let t = self.tables.get(&(family_str(family).to_string(), table.to_string()));
        let rules = t.and_then(|t| t.chains.get(chain)).cloned().unwrap_or_default();
        Ok(rules.into_iter().map(|(handle, comment, expr)| summary(handle, comment, &expr)).collect())
    }
}

/// A rule's summary from its statements (nft JSON), as the kernel's
/// expressions give it (backend.rs).
fn summary(handle: u32, comment: Option<String>, expr: &Value) -> RuleSummary {
    let stmts = expr.as_array().cloned().unwrap_or_default();
    let kind = |s: &Value| s.as_object().and_then(|o| o.keys().next().cloned()).unwrap_or_default();
    let drops = |s: &Value| matches!(kind(s).as_str(), "drop" | "reject");
    let passive = |s: &Value| matches!(kind(s).as_str(), "counter" | "log");
    let target = |s: &Value| s.get("jump").or_else(|| s.get("goto"))?.get("target")?.as_str().map(str::to_string);
    let unconditional = stmts.split_last().map(|(last, before)| (last, before.iter().all(passive)));
    let drops_all = unconditional.is_some_and(|(last, all_passive)| drops(last) && all_passive);
    let always_goes_to = unconditional.and_then(|(last, all_passive)| if all_passive { target(last) } else { None });
    let may_drop = stmts.iter().any(drops);
    let accepts = stmts.last().is_some_and(|s| kind(s) == "accept");
    let jumps = stmts.iter().filter_map(target).collect();
    RuleSummary { handle, comment, drops_all, may_drop, accepts, jumps, always_goes_to }
}
