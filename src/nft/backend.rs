//! The seam between rule-building logic and the kernel. `System` execs nft
//! for transactions and listings and speaks nfnetlink for element-only
//! batches; `fake::Fake` (tests) keeps a model of the tables instead, so the
//! applets' nftables logic is tested without root.

use nftables::types::{NfFamily, NfHook};

use super::element::{Element, ElementOp};
use super::error::{Error, Result};
use super::exec;
use super::listing::Listing;
use super::nfnetlink::{Nfnl, WireChain, WireElem, WireExpr, WireOp, WireRule};
use super::schema::{family_of_nfgen, nfgen_family, Transaction};

/// What a lookup by key found: the element's comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub comment: Option<String>,
}

/// A base chain of an ip, ip6 or inet table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    pub family: NfFamily,
    pub table: String,
    pub name: String,
    pub hook: NfHook,
    pub priority: i32,
    /// Whether its policy is drop.
    pub drops: bool,
}

/// A rule, as far as opening a way through another table's chain needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSummary {
    pub handle: u32,
    pub comment: Option<String>,
    /// Whether it drops (or rejects) every packet that reaches it: no
    /// match, only counters or logging before the verdict.
    pub drops_all: bool,
    /// Whether it may drop a packet at all: a drop verdict, a reject, or an
    /// xt target (iptables-nft's REJECT is one), behind whatever match, but
    /// one that matches only conntrack-INVALID packets.
    pub may_drop: bool,
    /// Whether it ends in an accept.
    pub accepts: bool,
    /// The chains it jumps or goes to.
    pub jumps: Vec<String>,
    /// The chain it jumps or goes to with every packet that reaches it (no
    /// match before the verdict).
    pub always_goes_to: Option<String>,
}

pub trait Backend {
    /// Applies `tx` as one atomic transaction (nothing when it is empty).
    fn apply(&mut self, tx: &Transaction) -> Result<()>;
    /// Applies `script`, in nft's own syntax, as one atomic transaction:
    /// for rule text a config passes through, which nft's JSON cannot
    /// carry (it has no form for an expression it did not build).
    fn apply_text(&mut self, script: &str) -> Result<()>;
    /// The table as nft lists it, or None when it does not exist.
    fn list(&mut self, family: NfFamily, table: &str) -> Result<Option<Listing>>;
    /// Applies element-only `ops` on `table` as one atomic batch, without
    /// nft. Missing: a table or set is missing; Exists: a created key is held.
    fn commit(&mut self, family: NfFamily, table: &str, ops: &[ElementOp]) -> Result<()>;
    /// Looks each of `elems` up by key: what `table` holds under it, or None
    /// when it (or its set, or the table) is missing.
    fn lookup(&mut self, family: NfFamily, table: &str, elems: &[Element]) -> Result<Vec<Option<Found>>>;
    /// Whether `table` holds `chain`, without listing (nothing when either is
    /// missing): the cheap check before looking at another's tables.
    fn has_chain(&mut self, family: NfFamily, table: &str, chain: &str) -> Result<bool>;
    /// Whether nftables can be used at all (STATUS).
    fn available(&mut self) -> Result<()>;
    /// The base chains of every ip, ip6 and inet table: one cheap
    /// listing, whoever owns the tables.
    fn base_chains(&mut self) -> Result<Vec<BaseChain>>;
    /// The names of `table`'s chains, base or not (none when it is missing).
    fn chain_names(&mut self, family: NfFamily, table: &str) -> Result<Vec<String>>;
    /// The rules of one chain, in order (none when it is gone).
    fn chain_rules(&mut self, family: NfFamily, table: &str, chain: &str) -> Result<Vec<RuleSummary>>;
}

/// The hook of an ip, ip6 or inet base chain (NF_INET_* numbers).
fn inet_hook(hooknum: u32) -> Option<NfHook> {
    Some(match hooknum {
        0 => NfHook::Prerouting,
        1 => NfHook::Input,
        2 => NfHook::Forward,
        3 => NfHook::Output,
        4 => NfHook::Postrouting,
        5 => NfHook::Ingress,
        _ => return None,
    })
}

fn base_chain(c: WireChain) -> Option<BaseChain> {
    let family = family_of_nfgen(c.family).filter(|f| matches!(f, NfFamily::IP | NfFamily::IP6 | NfFamily::INet))?;
    const NF_DROP: u32 = 0;
    let hook = inet_hook(c.hooknum)?;
    Some(BaseChain { family, table: c.table, name: c.name, hook, priority: c.priority, drops: c.policy == NF_DROP })
}

/// Expressions that neither match nor change a packet's fate.
const PASSIVE_EXPRESSIONS: [&str; 2] = ["counter", "log"];

fn rule_summary(r: WireRule) -> Option<RuleSummary> {
    const NF_DROP: i32 = 0;
    const NF_ACCEPT: i32 = 1;
    const NFT_JUMP: i32 = -3;
    const NFT_GOTO: i32 = -4;
    let drops = |e: &WireExpr| (e.name == "immediate" && e.verdict == Some(NF_DROP)) || e.name == "reject";
    let (last, before) = r.exprs.split_last()?;
    let unconditional = before.iter().all(|e| PASSIVE_EXPRESSIONS.contains(&e.name.as_str()));
    let drops_all = drops(last) && unconditional;
    let goes = unconditional && matches!(last.verdict, Some(NFT_JUMP | NFT_GOTO));
    let always_goes_to = if goes { last.chain.clone() } else { None };
    // Dropping only INVALID packets (kube-proxy's KUBE-FORWARD) drops no
    // container's traffic: the kernel could not track it anyway.
    let invalid_only = r.exprs.iter().any(|e| e.invalid_only);
    let may_drop = !invalid_only && r.exprs.iter().any(|e| drops(e) || e.name == "target");
    let accepts = last.name == "immediate" && last.verdict == Some(NF_ACCEPT);
    let jumps = r
        .exprs
        .iter()
        .filter(|e| matches!(e.verdict, Some(NFT_JUMP | NFT_GOTO)))
        .filter_map(|e| e.chain.clone())
        .collect();
    let handle = u32::try_from(r.handle).ok()?;
    Some(RuleSummary { handle, comment: r.comment, drops_all, may_drop, accepts, jumps, always_goes_to })
}

/// The real thing. The nfnetlink socket is opened on first use and kept for
/// the plugin call: declare the backend before any lock the call takes, so
/// the lock is released before the socket's detached close forks.
///
/// The base chains are dumped once per call (the firewall's checks of
/// foreign tables and of iptables-nft both read them) and dumped again only
/// after a transaction, the one thing here that can add or remove one.
#[derive(Default)]
pub struct System {
    nfnl: Option<Nfnl>,
    base_chains: Option<Vec<BaseChain>>,
}

impl System {
    fn nfnl(&mut self) -> Result<&mut Nfnl> {
        if self.nfnl.is_none() {
            self.nfnl = Some(Nfnl::open()?);
        }
        Ok(self.nfnl.as_mut().expect("opened above"))
    }
}

/// An element's nfnetlink encoding, or the error that sends the caller to nft.
fn wire(e: &Element) -> Result<WireElem> {
    e.wire().ok_or_else(|| Error::exec(format!("cannot encode an element of {}", e.set), ""))
}

impl Backend for System {
    fn apply(&mut self, tx: &Transaction) -> Result<()> {
        if !tx.is_empty() {
            self.base_chains = None;
        }
        exec::apply(tx)
    }

    fn apply_text(&mut self, script: &str) -> Result<()> {
        self.base_chains = None;
        exec::apply_text(script)
    }

    fn list(&mut self, family: NfFamily, table: &str) -> Result<Option<Listing>> {
        exec::list(family, table)
    }

    fn commit(&mut self, family: NfFamily, table: &str, ops: &[ElementOp]) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        // Encoded first, so that an element nfnetlink cannot carry costs no socket.
        let encoded: Vec<Option<WireElem>> = ops
            .iter()
            .map(|op| match op {
                ElementOp::Create(e) | ElementOp::Add(e) | ElementOp::Delete(e) => wire(e).map(Some),
                ElementOp::Flush(_) => Ok(None),
            })
            .collect::<Result<_>>()?;
        let wire: Vec<WireOp> = ops
            .iter()
            .zip(&encoded)
            .map(|(op, w)| match (op, w) {
                (ElementOp::Create(_), Some(w)) => WireOp::Create(w),
                (ElementOp::Add(_), Some(w)) => WireOp::Add(w),
                (ElementOp::Delete(_), Some(w)) => WireOp::Delete(w),
                (ElementOp::Flush(set), _) => WireOp::Flush(set),
                (_, None) => unreachable!("every element op is encoded above"),
            })
            .collect();
        self.nfnl()?.commit(nfgen_family(family), table, &wire)
    }

    fn lookup(&mut self, family: NfFamily, table: &str, elems: &[Element]) -> Result<Vec<Option<Found>>> {
        if elems.is_empty() {
            return Ok(Vec::new());
        }
        let wire: Vec<WireElem> = elems.iter().map(wire).collect::<Result<_>>()?;
        let found = self.nfnl()?.get(nfgen_family(family), table, &wire)?;
        Ok(found.into_iter().map(|f| f.map(|f| Found { comment: f.comment })).collect())
    }

    fn has_chain(&mut self, family: NfFamily, table: &str, chain: &str) -> Result<bool> {
        self.nfnl()?.chain_exists(nfgen_family(family), table, chain)
    }

    fn available(&mut self) -> Result<()> {
        exec::run(&["--version"], None).map(|_| ())
    }

    fn base_chains(&mut self) -> Result<Vec<BaseChain>> {
        if let Some(chains) = &self.base_chains {
            return Ok(chains.clone());
        }
        let chains: Vec<BaseChain> = self.nfnl()?.base_chains()?.into_iter().filter_map(base_chain).collect();
        self.base_chains = Some(chains.clone());
        Ok(chains)
    }

    fn chain_names(&mut self, family: NfFamily, table: &str) -> Result<Vec<String>> {
        self.nfnl()?.chain_names(nfgen_family(family), table)
    }

    fn chain_rules(&mut self, family: NfFamily, table: &str, chain: &str) -> Result<Vec<RuleSummary>> {
        match self.nfnl()?.rules(nfgen_family(family), table, chain) {
            Ok(rules) => Ok(rules.into_iter().filter_map(rule_summary).collect()),
            Err(e) if e.is_missing() => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::nfnetlink::WireExpr;

    fn rule(exprs: &[(&str, Option<i32>)]) -> WireRule {
        let exprs = exprs
            .iter()
            .map(|(n, v)| WireExpr { name: n.to_string(), verdict: *v, chain: None, invalid_only: false })
            .collect();
        WireRule { handle: 3, comment: None, exprs }
    }

    #[test]
    fn only_unconditional_drops_drop_all() {
        let drops = |exprs: &[(&str, Option<i32>)]| rule_summary(rule(exprs)).unwrap().drops_all;
        assert!(drops(&[("immediate", Some(0))]));
        assert!(drops(&[("counter", None), ("log", None), ("immediate", Some(0))]));
        assert!(drops(&[("counter", None), ("reject", None)]));
        // A match first, or another verdict: no.
        assert!(!drops(&[("ct", None), ("cmp", None), ("immediate", Some(0))]));
        assert!(!drops(&[("immediate", Some(1))]));
        assert!(!drops(&[("counter", None)]));
        assert_eq!(rule_summary(rule(&[])), None);
    }

    #[test]
    fn base_chains_of_inet_families_only() {
        let chain = |family, hooknum, policy| WireChain {
            family,
            table: "t".into(),
            name: "c".into(),
            hooknum,
            priority: 0,
            policy,
        };
        let forward = base_chain(chain(1, 2, 0)).unwrap();
        assert_eq!((forward.family, forward.hook, forward.drops), (NfFamily::INet, NfHook::Forward, true));
        assert!(!base_chain(chain(10, 2, 1)).unwrap().drops);
        assert_eq!(base_chain(chain(7, 2, 0)), None, "a bridge table's forward hook is another hook");
    }
}
