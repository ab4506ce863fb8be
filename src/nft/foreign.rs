//! A way through other tables' forward chains that would drop a
//! container's traffic.
//!
//! nftables runs every base chain registered at a hook: an accept ends
//! only the chain it is in, a drop anywhere is final. So cnibox's accepts
//! (in its own table) do nothing against, say, a hardened
//! `table inet filter { chain forward { type filter hook forward priority 0; policy drop; } }`.
//! Where such a chain would drop, the firewall plugin inserts at its top,
//! for each container address,
//! ```text
//! ip saddr X accept                                  (from the container)
//! ip daddr X ct state established,related accept     (replies to it)
//! ip daddr X ct status dnat accept                   (to its host ports)
//! ```
//! The last goes beyond the reference, whose firewall lets only replies in:
//! a connection translated to the container (by portmap, or kube-proxy)
//! was sent there on purpose, and a host port reached from another machine
//! would otherwise be dropped.
//! (ip6 for v6 addresses; an ip table gets only v4, an ip6 table only v6),
//! each carrying the attachment's owner comment, so that DEL and GC find
//! and remove exactly those.
//!
//! A chain "would drop" when its policy is drop or its last rule drops
//! every packet that reaches it, itself or through an unconditional jump or
//! goto to a chain that does (as ufw-style rule sets end). A drop behind a
//! match (`ct state invalid drop`, a port, an interface) is the operator's
//! policy and is left to act. Tables left alone: cnibox's own
//! (`cnibox-*`), iptables-nft's (ip/ip6 `filter`, `mangle`, `raw`,
//! `security`, `nat`: the iptables side opens those) and firewalld's
//! (`firewalld`: firewalld rewrites it, and its zones are the way through).
//!
//! Cost: one nfnetlink chain listing per call (no nft exec, no commit),
//! one rule listing per foreign forward chain, and one nft transaction only
//! when something is to be inserted or deleted.

use std::net::IpAddr;

use nftables::stmt::Statement;
use nftables::types::{NfFamily, NfHook};

use super::backend::{Backend, BaseChain, RuleSummary};
use super::error::Result;
use super::schema::{
    ct_state_in, ct_status_dnat, delete_rule, eq, insert_rule, ip_proto, payload, str_expr, Stmt, Transaction,
};

/// Prefix of the tables cnibox owns.
const OWN_TABLE_PREFIX: &str = "cnibox-";
/// The tables iptables-nft keeps in the ip and ip6 families.
const IPTABLES_TABLES: [&str; 5] = ["filter", "mangle", "raw", "security", "nat"];
const FIREWALLD_TABLE: &str = "firewalld";

/// Whether cnibox may open a way through this table's chains.
fn is_foreign(family: NfFamily, table: &str) -> bool {
    let iptables = matches!(family, NfFamily::IP | NfFamily::IP6) && IPTABLES_TABLES.contains(&table);
    !(table.starts_with(OWN_TABLE_PREFIX) || iptables || table == FIREWALLD_TABLE)
}

/// A foreign forward chain, its rules, and whether it would drop.
struct Chain {
    base: BaseChain,
    rules: Vec<RuleSummary>,
    drops: bool,
}

/// How many regular chains deep `ends_in_drop` follows jumps (nft itself
/// allows 16 levels).
const MAX_JUMP_DEPTH: usize = 16;

/// Whether every packet that reaches the end of `rules` (a chain of
/// `family table`) is dropped there: its last rule drops or rejects
/// unconditionally, or jumps or goes unconditionally to a chain that does.
/// A drop behind a match is an operator's policy, not a default deny: it
/// is left to act.
fn ends_in_drop(
    nft: &mut dyn Backend,
    family: NfFamily,
    table: &str,
    rules: &[RuleSummary],
    depth: usize,
) -> Result<bool> {
    let Some(last) = rules.last() else { return Ok(false) };
    if last.drops_all {
        return Ok(true);
    }
    match &last.always_goes_to {
        Some(next) if depth < MAX_JUMP_DEPTH => {
            let rules = nft.chain_rules(family, table, next)?;
            ends_in_drop(nft, family, table, &rules, depth + 1)
        }
        _ => Ok(false),
    }
}

impl Chain {
    fn would_drop(&self) -> bool {
        self.drops
    }

    /// The handles of the rules whose comment `owned` accepts.
    fn owned_rules(&self, owned: &impl Fn(&str) -> bool) -> Vec<u32> {
        self.rules.iter().filter(|r| r.comment.as_deref().is_some_and(owned)).map(|r| r.handle).collect()
    }

    fn delete(&self, handle: u32) -> super::schema::Obj {
        delete_rule(self.base.family, &self.base.table, &self.base.name, handle)
    }
}

/// The foreign tables' base chains at the forward hook, with their rules.
fn forward_chains(nft: &mut dyn Backend) -> Result<Vec<Chain>> {
    let bases = nft.base_chains()?;
    let foreign = bases.into_iter().filter(|c| c.hook == NfHook::Forward && is_foreign(c.family, &c.table));
    foreign
        .map(|base| {
            let rules = nft.chain_rules(base.family, &base.table, &base.name)?;
            let drops = base.drops || ends_in_drop(nft, base.family, &base.table, &rules, 0)?;
            Ok(Chain { base, rules, drops })
        })
        .collect()
}

/// The addresses a chain of `family` can match.
fn addresses_for(family: NfFamily, addrs: &[IpAddr]) -> impl Iterator<Item = IpAddr> + '_ {
    addrs.iter().copied().filter(move |a| match family {
        NfFamily::IP => a.is_ipv4(),
        NfFamily::IP6 => a.is_ipv6(),
        _ => true,
    })
}

/// The accepts for one address: from it, replies to it, and connections
/// translated to it.
fn accepts(addr: IpAddr) -> [Vec<Stmt>; 3] {
    let proto = ip_proto(addr.is_ipv6());
    [
        vec![eq(payload(proto, "saddr"), str_expr(addr)), Statement::Accept(None)],
        vec![
            eq(payload(proto, "daddr"), str_expr(addr)),
            ct_state_in(&["established", "related"]),
            Statement::Accept(None),
        ],
        vec![eq(payload(proto, "daddr"), str_expr(addr)), ct_status_dnat(), Statement::Accept(None)],
    ]
}

/// ADD: in every foreign forward chain that would drop, inserts the
/// accepts for `addrs` carrying `owner`. Rules `owner` left earlier (a
/// retried ADD) are replaced in the same transaction. Returns how many
/// chains were opened.
pub fn open(nft: &mut dyn Backend, owner: &str, addrs: &[IpAddr]) -> Result<usize> {
    let mut tx = Transaction::new();
    let mut opened = 0;
    for chain in forward_chains(nft)? {
        tx.extend(chain.owned_rules(&|c| c == owner).into_iter().map(|h| chain.delete(h)));
        if !chain.would_drop() {
            continue;
        }
        let BaseChain { family, table, name, .. } = &chain.base;
        let rules: Vec<Vec<Stmt>> = addresses_for(*family, addrs).flat_map(accepts).collect();
        if rules.is_empty() {
            continue;
        }
        log::info!(
            "firewall: {} {table} {name} would drop the container's traffic: accepting its addresses",
            family_name(*family)
        );
        // Each insert goes to the top: in reverse, so they read in order.
        tx.extend(rules.into_iter().rev().map(|r| insert_rule(*family, table, name, r, owner)));
        opened += 1;
    }
    nft.apply(&tx)?;
    Ok(opened)
}

/// DEL and GC: deletes the rules whose comment `owned` accepts from every
/// foreign forward chain, in one transaction (none when there are none).
/// Returns how many were deleted.
pub fn close(nft: &mut dyn Backend, owned: impl Fn(&str) -> bool) -> Result<usize> {
    let mut tx = Transaction::new();
    for chain in forward_chains(nft)? {
        tx.extend(chain.owned_rules(&owned).into_iter().map(|h| chain.delete(h)));
    }
    nft.apply(&tx)?;
    Ok(tx.len())
}

/// CHECK: the foreign forward chains that would drop and hold no rule of
/// `owner` (when there are addresses they could match), as
/// `<family> <table> <chain>`.
pub fn unopened(nft: &mut dyn Backend, owner: &str, addrs: &[IpAddr]) -> Result<Vec<String>> {
    Ok(forward_chains(nft)?
        .into_iter()
        .filter(|c| c.would_drop() && addresses_for(c.base.family, addrs).next().is_some())
        .filter(|c| c.owned_rules(&|o| o == owner).is_empty())
        .map(|c| format!("{} {} {}", family_name(c.base.family), c.base.table, c.base.name))
        .collect())
}

fn family_name(family: NfFamily) -> &'static str {
    super::schema::family_str(family)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::fake::Fake;
    use crate::nft::schema::{Obj, Table};
    use nftables::schema::NfListObject;
    use nftables::types::{NfChainPolicy, NfChainType};

    const INET_FILTER: Table = Table { family: NfFamily::INet, name: "filter" };

    fn addrs() -> Vec<IpAddr> {
        vec!["10.1.0.5".parse().unwrap(), "fd01::5".parse().unwrap()]
    }

    /// `table <t> { chain forward { type filter hook forward priority 0; policy <policy>; } }`
    fn forward_table(t: Table, policy: NfChainPolicy) -> Vec<Obj> {
        let chain = nftables::schema::Chain {
            policy: Some(policy),
            ..t.base_chain("forward", NfChainType::Filter, NfHook::Forward, 0)
        };
        vec![t.add_table(), super::super::schema::add(NfListObject::Chain(chain))]
    }

    fn fake_with(objs: Vec<Obj>) -> Fake {
        let mut nft = Fake::new();
        nft.apply(&Transaction::from(objs)).unwrap();
        nft.calls.clear();
        nft
    }

    fn comments(nft: &Fake, t: Table) -> Vec<Option<String>> {
        nft.rule_comments(t.family, t.name, "forward")
    }

    #[test]
    fn a_dropping_chain_gets_accepts_and_loses_them_on_del() {
        let mut nft = fake_with(forward_table(INET_FILTER, NfChainPolicy::Drop));
        assert_eq!(open(&mut nft, "n c1 eth0", &addrs()).unwrap(), 1);
        assert_eq!(nft.applies(), 1);
        let rules = nft.rules(NfFamily::INet, "filter", "forward");
        assert_eq!(rules.len(), 6);
        assert_eq!(rules[0][0]["match"]["left"]["payload"]["field"], "saddr");
        assert_eq!(rules[0][0]["match"]["right"], "10.1.0.5");
        assert_eq!(rules[1][0]["match"]["left"]["payload"]["field"], "daddr");
        assert_eq!(rules[2][1]["match"]["left"]["ct"]["key"], "status");
        assert_eq!(rules[5][0]["match"]["left"]["payload"]["protocol"], "ip6");
        assert!(comments(&nft, INET_FILTER).iter().all(|c| c.as_deref() == Some("n c1 eth0")));
        // A retried ADD replaces them; another attachment adds its own.
        open(&mut nft, "n c1 eth0", &addrs()).unwrap();
        assert_eq!(nft.rules(NfFamily::INet, "filter", "forward").len(), 6);
        open(&mut nft, "n c2 eth0", &["10.1.0.6".parse().unwrap()]).unwrap();
        assert_eq!(nft.rules(NfFamily::INet, "filter", "forward").len(), 9);
        assert!(unopened(&mut nft, "n c1 eth0", &addrs()).unwrap().is_empty());
        assert_eq!(unopened(&mut nft, "n c3 eth0", &addrs()).unwrap(), ["inet filter forward"]);
        // DEL removes exactly c1's, in one transaction.
        nft.calls.clear();
        assert_eq!(close(&mut nft, |c| c == "n c1 eth0").unwrap(), 6);
        assert_eq!(nft.applies(), 1);
        assert_eq!(comments(&nft, INET_FILTER), vec![Some("n c2 eth0".to_string()); 3]);
        // Again: nothing to do, no transaction.
        nft.calls.clear();
        assert_eq!(close(&mut nft, |c| c == "n c1 eth0").unwrap(), 0);
        assert_eq!(nft.applies(), 0);
    }

    #[test]
    fn nothing_is_written_when_no_foreign_chain_drops() {
        let mut objs = forward_table(INET_FILTER, NfChainPolicy::Accept);
        // Ours, iptables-nft's and firewalld's are never touched, whatever their policy.
        objs.extend(forward_table(Table { family: NfFamily::INet, name: "cnibox-firewall" }, NfChainPolicy::Drop));
        objs.extend(forward_table(Table { family: NfFamily::IP, name: "filter" }, NfChainPolicy::Drop));
        objs.extend(forward_table(Table { family: NfFamily::INet, name: "firewalld" }, NfChainPolicy::Drop));
        let mut nft = fake_with(objs);
        assert_eq!(open(&mut nft, "n c1 eth0", &addrs()).unwrap(), 0);
        assert_eq!(nft.applies(), 0);
        assert!(unopened(&mut nft, "n c1 eth0", &addrs()).unwrap().is_empty());
        assert_eq!(close(&mut nft, |_| true).unwrap(), 0);
        assert_eq!(nft.applies(), 0);
    }

    #[test]
    fn a_final_drop_rule_counts_as_a_drop_and_families_are_respected() {
        let ip = Table { family: NfFamily::IP, name: "hardened" };
        let mut objs = forward_table(INET_FILTER, NfChainPolicy::Accept);
        objs.push(INET_FILTER.rule("forward", vec![Statement::Drop(None)], None));
        objs.extend(forward_table(ip, NfChainPolicy::Drop));
        let mut nft = fake_with(objs);
        assert_eq!(open(&mut nft, "n c1 eth0", &addrs()).unwrap(), 2);
        assert_eq!(nft.applies(), 1, "every chain in one transaction");
        // The inet chain: six accepts before its drop; the ip one: v4 only.
        let inet = nft.rules(NfFamily::INet, "filter", "forward");
        assert_eq!(inet.len(), 7);
        assert_eq!(inet[6], serde_json::json!([{"drop": null}]));
        let v4 = nft.rules(NfFamily::IP, "hardened", "forward");
        assert_eq!(v4.len(), 3);
        assert!(v4.iter().all(|r| r[0]["match"]["left"]["payload"]["protocol"] == "ip"));
        // A conditional drop at the end is no reason to touch a chain.
        let mut objs = forward_table(INET_FILTER, NfChainPolicy::Accept);
        let invalid = crate::nft::schema::ct_state_in(&["invalid"]);
        objs.push(INET_FILTER.rule("forward", vec![invalid, Statement::Drop(None)], None));
        let mut nft = fake_with(objs);
        assert_eq!(open(&mut nft, "n c1 eth0", &addrs()).unwrap(), 0);
        assert_eq!(nft.applies(), 0);
        // A drop reached through an unconditional jump (then a goto) counts; a conditional jump does not.
        for conditional in [false, true] {
            let mut objs = forward_table(INET_FILTER, NfChainPolicy::Accept);
            for chain in ["ufw-forward", "ufw-reject"] {
                objs.push(crate::nft::schema::add(NfListObject::Chain(INET_FILTER.chain(chain))));
            }
            let mut first = vec![crate::nft::schema::jump("ufw-forward")];
            if conditional {
                first.insert(0, crate::nft::schema::ct_state_in(&["new"]));
            }
            objs.push(INET_FILTER.rule("forward", first, None));
            objs.push(INET_FILTER.rule(
                "ufw-forward",
                vec![Statement::Goto(nftables::stmt::JumpTarget { target: "ufw-reject".into() })],
                None,
            ));
            objs.push(INET_FILTER.rule("ufw-reject", vec![Statement::Reject(None)], None));
            let mut nft = fake_with(objs);
            assert_eq!(
                open(&mut nft, "n c1 eth0", &addrs()).unwrap(),
                usize::from(!conditional),
                "conditional={conditional}"
            );
        }
        // A loop of jumps ends.
        let mut objs = forward_table(INET_FILTER, NfChainPolicy::Accept);
        objs.push(crate::nft::schema::add(NfListObject::Chain(INET_FILTER.chain("loop"))));
        objs.push(INET_FILTER.rule("forward", vec![crate::nft::schema::jump("loop")], None));
        objs.push(INET_FILTER.rule("loop", vec![crate::nft::schema::jump("loop")], None));
        assert_eq!(open(&mut fake_with(objs), "n c1 eth0", &addrs()).unwrap(), 0);
        // A v6-only table with v4 addresses only: nothing to accept.
        let mut nft = fake_with(forward_table(Table { family: NfFamily::IP6, name: "h6" }, NfChainPolicy::Drop));
        assert_eq!(open(&mut nft, "n c1 eth0", &addrs()[..1]).unwrap(), 0);
        assert_eq!(nft.applies(), 0);
    }
}
