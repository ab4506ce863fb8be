//! firewall: the reference's forward-path rules for a container (chained
//! after a main plugin), with nftables whatever `backend` says (except
//! firewalld, which cnibox does not talk to).
//!
//! Everything lives in `table inet cnibox-firewall`:
//! ```text
//! set containers-v4 / -v6        container addresses (comment: owner)
//! set isolation-bridges          bridges with ingressPolicy same-bridge or isolated
//! set isolation-self             bridge . bridge for those bridges
//! set isolated-self              bridge . bridge for ingressPolicy isolated
//! chain CNI-ADMIN                operators' rules: jumped to first, never flushed
//! chain isolation                isolated-self → drop; isolation-self → return;
//!                                from one isolation bridge to another → drop
//! chain forward (filter hook forward):
//!     jump CNI-ADMIN; jump isolation
//!     ip daddr @containers-v4 ct state established,related accept
//!     ip saddr @containers-v4 accept        (and ip6)
//! ```
//! The reference's CNI-FORWARD semantics (accept established/related to the
//! container and everything from it) become set elements carrying the
//! comment `<network> <containerID> <ifname>`: one nfnetlink batch per ADD
//! once the table exists, one lookup and one batch per DEL by key with
//! prevResult (one listing plus one nft transaction without it). The ingress
//! policy elements are per
//! bridge and, as in the reference, stay after DEL (other containers may use
//! the bridge).
//!
//! nftables differs from iptables in one way operators should know: an
//! accept ends evaluation in this table only; another table's forward chain
//! with a drop policy (e.g. iptables-nft's FORWARD) still sees the packet
//! and must allow it itself. Drops (isolation) are final everywhere.
//!
//! As in the reference, isolation acts on routed traffic (iif/oif are the
//! bridges): frames switched between two ports of one bridge never reach the
//! IP forward hook unless br_netfilter is loaded.

use std::collections::BTreeSet;

use nftables::expr::{Expression, NamedExpression, CT};
use nftables::schema::{NfListObject, Set, SetType, SetTypeValue};
use nftables::stmt::{Operator, Statement};
use nftables::types::{NfChainType, NfFamily, NfHook};
use serde::Deserialize;
use serde_json::Value;

use super::shared::nft_gc;
use crate::cni::{Applet, CniError, CniResult, Command};
use crate::nft::build::{add, concat, cow, eq, ip_proto, jump, matches, meta, payload, str_expr, Obj, Table};
use crate::nft::nfnetlink::{key as nfkey, Elem, Nfnl, Op};
use crate::nft::owned::{self as nft_owned, Listing};
use crate::nft::NftError;

pub struct Firewall;

const TABLE: &str = "cnibox-firewall";
const FAMILY: NfFamily = NfFamily::INet;
const T: Table = Table { family: FAMILY, name: TABLE };
const DEFAULT_ADMIN_CHAIN: &str = "CNI-ADMIN";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct FirewallConf {
    backend: String,
    iptables_admin_chain_name: String,
    ingress_policy: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Policy {
    Open,
    SameBridge,
    Isolated,
}

struct Parsed {
    admin_chain: String,
    policy: Policy,
}

fn parse_conf(cmd: &Command) -> Result<Parsed, CniError> {
    let conf: FirewallConf = cmd.parse_config()?;
    match conf.backend.as_str() {
        "" | "nftables" => {}
        "iptables" => log::info!("firewall: backend \"iptables\" is served with nftables"),
        "firewalld" => {
            return Err(CniError::unsupported_field(
                "backend \"firewalld\" is not supported: cnibox does not talk to firewalld (use \"iptables\" or leave backend unset for nftables)",
            ))
        }
        // The reference falls back to its default for unknown values.
        other => log::warn!("firewall: unknown backend {other:?}; using nftables"),
    }
    // firewalldZone only matters to firewalld: accepted (ignored by serde) and unused.
    let policy = match conf.ingress_policy.as_str() {
        "" | "open" => Policy::Open,
        "same-bridge" => Policy::SameBridge,
        "isolated" => Policy::Isolated,
        other => return Err(CniError::invalid_config(format!("unknown ingressPolicy {other:?}"))),
    };
    let admin_chain = match conf.iptables_admin_chain_name.as_str() {
        "" => DEFAULT_ADMIN_CHAIN.to_string(),
        name if name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) => {
            name.to_string()
        }
        name => return Err(CniError::invalid_config(format!("invalid iptablesAdminChainName {name:?}"))),
    };
    Ok(Parsed { admin_chain, policy })
}

fn fam(v6: bool) -> &'static str {
    if v6 {
        "v6"
    } else {
        "v4"
    }
}

fn containers_set(v6: bool) -> String {
    format!("containers-{}", fam(v6))
}

fn set(name: &str, kind: Vec<SetType>) -> Obj {
    let set_type =
        if kind.len() == 1 { SetTypeValue::Single(kind[0]) } else { SetTypeValue::Concatenated(kind.into()) };
    add(NfListObject::Set(Box::new(Set {
        family: FAMILY,
        table: cow(TABLE),
        name: cow(name),
        set_type,
        ..Default::default()
    })))
}

fn set_ref(name: &str) -> nftables::expr::Expression<'static> {
    str_expr(format!("@{name}"))
}

/// Table, sets, chains and the fixed rules (rewritten on every ADD in the
/// same transaction). The admin chain is only ever `add`ed: never flushed.
/// The marker set recording that the forward chain jumps to `admin`: the
/// fast path of ADD flushes it (a no-op), so that a missing marker (a new
/// admin chain name) sends ADD through the skeleton path.
fn admin_marker(admin: &str) -> String {
    format!("{ADMIN_MARKER}{admin}")
}

const ADMIN_MARKER: &str = "jumps-to-";

fn flush_marker(admin: &str) -> Obj {
    nftables::schema::NfObject::CmdObject(nftables::schema::NfCmd::Flush(nftables::schema::FlushObject::Set(Box::new(
        Set {
            family: FAMILY,
            table: cow(TABLE),
            name: cow(admin_marker(admin)),
            set_type: SetTypeValue::Single(SetType::Ifname),
            ..Default::default()
        },
    ))))
}

/// The admin chains the forward chain must jump to: ours and those other
/// networks registered (their marker sets), read from the table if it exists.
fn admin_chains(ours: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::from([ours.to_string()]);
    if let Ok(Some(listing)) = nft_owned::list("inet", TABLE) {
        out.extend(listing.sets().iter().filter_map(|s| s.strip_prefix(ADMIN_MARKER)).map(str::to_string));
    }
    out
}

fn skeleton(admin_chains: &BTreeSet<String>) -> Vec<Obj> {
    let mut tx = vec![T.add_table()];
    tx.push(set(&containers_set(false), vec![SetType::Ipv4Addr]));
    tx.push(set(&containers_set(true), vec![SetType::Ipv6Addr]));
    tx.push(set("isolation-bridges", vec![SetType::Ifname]));
    tx.push(set("isolation-self", vec![SetType::Ifname, SetType::Ifname]));
    tx.push(set("isolated-self", vec![SetType::Ifname, SetType::Ifname]));
    for admin in admin_chains {
        tx.push(set(&admin_marker(admin), vec![SetType::Ifname]));
        tx.push(add(NfListObject::Chain(T.chain(admin))));
    }
    tx.push(add(NfListObject::Chain(T.chain("isolation"))));
    tx.push(add(NfListObject::Chain(T.base_chain("forward", NfChainType::Filter, NfHook::Forward, 0))));
    tx.push(T.flush_chain("isolation"));
    tx.push(T.flush_chain("forward"));

    let pair = || concat(vec![meta(nftables::expr::MetaKey::Iifname), meta(nftables::expr::MetaKey::Oifname)]);
    tx.push(T.rule("isolation", vec![eq(pair(), set_ref("isolated-self")), Statement::Drop(None)], None));
    tx.push(T.rule("isolation", vec![eq(pair(), set_ref("isolation-self")), Statement::Return(None)], None));
    tx.push(T.rule(
        "isolation",
        vec![
            eq(meta(nftables::expr::MetaKey::Iifname), set_ref("isolation-bridges")),
            eq(meta(nftables::expr::MetaKey::Oifname), set_ref("isolation-bridges")),
            Statement::Drop(None),
        ],
        None,
    ));

    for admin in admin_chains {
        tx.push(T.rule("forward", vec![jump(admin)], None));
    }
    tx.push(T.rule("forward", vec![jump("isolation")], None));
    for v6 in [false, true] {
        let ct_state = matches(
            Expression::Named(NamedExpression::CT(CT { key: cow("state"), family: None, dir: None })),
            Operator::IN,
            Expression::List(vec![str_expr("established"), str_expr("related")]),
        );
        tx.push(T.rule(
            "forward",
            vec![eq(payload(ip_proto(v6), "daddr"), set_ref(&containers_set(v6))), ct_state, Statement::Accept(None)],
            None,
        ));
        tx.push(T.rule(
            "forward",
            vec![eq(payload(ip_proto(v6), "saddr"), set_ref(&containers_set(v6))), Statement::Accept(None)],
            None,
        ));
    }
    tx
}

/// The bridge the ingress policy applies to: the first interface of the
/// previous result, as the reference takes it.
fn policy_bridge(policy: Policy, prev: &CniResult) -> Result<Option<String>, CniError> {
    if policy == Policy::Open {
        return Ok(None);
    }
    match prev.interfaces.first().map(|i| i.name.as_str()) {
        Some(name) if !name.is_empty() => Ok(Some(name.to_string())),
        _ => Err(CniError::invalid_config(
            "ingressPolicy same-bridge/isolated needs the bridge as the first interface of prevResult (chain firewall after bridge)",
        )),
    }
}

fn owner(cmd: &Command) -> String {
    nft_owned::owner_comment(&cmd.conf.name, &cmd.container_id, &cmd.ifname)
}

fn nft_err(e: NftError) -> CniError {
    CniError::from(e)
}

/// The container addresses as set keys: (set, key).
fn address_keys(prev: &CniResult) -> Vec<(String, Value)> {
    let mut seen = BTreeSet::new();
    prev.ips
        .iter()
        .map(|ip| ip.address.addr())
        .filter(|a| seen.insert(*a))
        .map(|a| (containers_set(a.is_ipv6()), Value::from(a.to_string())))
        .collect()
}

/// A container address element (`containers-v4/-v6`) for nfnetlink.
fn owned_elem(set: &str, key: &Value, owner: &str) -> Option<Elem> {
    let addr: std::net::IpAddr = key.as_str()?.parse().ok()?;
    Some(Elem::new(set, nfkey::ip(addr)).with_comment(owner))
}

/// ADD's elements for nfnetlink: the container's addresses (owned, created)
/// and the bridge's isolation elements (shared, added). None when a name
/// cannot be encoded (nft then reports the problem).
fn fast_elements(
    keys: &[(String, Value)],
    bridge: Option<&str>,
    policy: Policy,
    owner: &str,
) -> Option<(Vec<Elem>, Vec<Elem>)> {
    let owned = keys.iter().map(|(set, key)| owned_elem(set, key, owner)).collect::<Option<Vec<_>>>()?;
    let mut shared = Vec::new();
    if let Some(br) = bridge {
        let name = nfkey::ifname(br)?;
        let pair = nfkey::concat(&[&name, &name]);
        shared.push(Elem::new("isolation-bridges", name));
        shared.push(Elem::new("isolation-self", pair.clone()));
        if policy == Policy::Isolated {
            shared.push(Elem::new("isolated-self", pair));
        }
    }
    Some((owned, shared))
}

impl Applet for Firewall {
    /// Chained: a prevResult, when given, must parse and suit the policy;
    /// ADD demands one.
    fn validate(&self, cmd: &Command) -> Result<(), CniError> {
        let conf = parse_conf(cmd)?;
        if let Some(prev) = cmd.prev_result()? {
            policy_bridge(conf.policy, &prev)?;
        }
        Ok(())
    }

    fn add(&self, cmd: &Command) -> Result<CniResult, CniError> {
        let conf = parse_conf(cmd)?;
        let Some(prev) = cmd.prev_result()? else {
            return Err(CniError::invalid_config("firewall must be called as a chained plugin (no prevResult)"));
        };
        let bridge = policy_bridge(conf.policy, &prev)?;
        let keys = address_keys(&prev);
        if keys.is_empty() && bridge.is_none() {
            return Ok(prev);
        }
        let owner = owner(cmd);
        let mut tx = vec![flush_marker(&conf.admin_chain)];
        for (set, key) in &keys {
            tx.push(T.element(true, set, &str_expr(key.as_str().unwrap_or_default()), None, Some(&owner)));
        }
        if let Some(br) = &bridge {
            let pair = concat(vec![str_expr(br), str_expr(br)]);
            tx.push(T.element(false, "isolation-bridges", &str_expr(br), None, None));
            tx.push(T.element(false, "isolation-self", &pair, None, None));
            if conf.policy == Policy::Isolated {
                tx.push(T.element(false, "isolated-self", &pair, None, None));
            }
        }
        let fast = fast_elements(&keys, bridge.as_deref(), conf.policy, &owner);
        let marker = admin_marker(&conf.admin_chain);
        let fast_ops = fast.as_ref().map(|(owned, shared)| {
            let mut ops = vec![Op::Flush(&marker)];
            ops.extend(owned.iter().map(Op::Create));
            ops.extend(shared.iter().map(Op::Add));
            ops
        });
        nft_owned::add_owned(
            FAMILY,
            TABLE,
            || skeleton(&admin_chains(&conf.admin_chain)),
            tx,
            &owner,
            false,
            |e| {
                e.comment.as_deref() == Some(owner.as_str())
                    || keys.iter().any(|(set, key)| *set == e.set && *key == e.key)
            },
            fast_ops.as_deref(),
        )
        .map_err(nft_err)?;
        if let Err(e) = crate::cni::fault::step("firewall: rules committed") {
            // Take back this attachment's elements (shared isolation elements stay, as after DEL).
            if let Err(undo) = self.del(cmd) {
                log::warn!("undoing a failed ADD: {undo}");
            }
            return Err(e);
        }
        Ok(prev)
    }

    fn del(&self, cmd: &Command) -> Result<(), CniError> {
        let owner = owner(cmd);
        // With prevResult the keys are known: delete them without listing.
        if let Ok(Some(prev)) = cmd.prev_result() {
            let candidates: Option<Vec<Elem>> =
                address_keys(&prev).iter().map(|(set, key)| owned_elem(set, key, &owner)).collect();
            if let Some(candidates) = candidates {
                let deleted = Nfnl::open()
                    .and_then(|mut nl| nft_owned::delete_by_key(&mut nl, FAMILY, TABLE, &candidates, |c| c == owner));
                match deleted {
                    Ok(_) => return Ok(()),
                    Err(e) => log::info!("firewall DEL by key: {e}; finding the elements by their comment"),
                }
            }
        }
        // Only the attachment is needed: bad or missing config (even a refused
        // backend) does not block cleanup.
        let Some(listing) = nft_owned::list("inet", TABLE).map_err(nft_err)? else { return Ok(()) };
        nft_owned::delete_owned(FAMILY, TABLE, &listing, |c| c == owner).map_err(nft_err)?;
        Ok(())
    }

    fn check(&self, cmd: &Command) -> Result<(), CniError> {
        let conf = parse_conf(cmd)?;
        let Some(prev) = cmd.prev_result()? else {
            return Err(CniError::invalid_config("required prevResult missing"));
        };
        let bridge = policy_bridge(conf.policy, &prev)?;
        let keys = address_keys(&prev);
        if keys.is_empty() && bridge.is_none() {
            return Ok(());
        }
        let listing = nft_owned::list("inet", TABLE)
            .map_err(nft_err)?
            .ok_or_else(|| CniError::internal(format!("nftables table inet {TABLE} is missing")))?;
        check_listing(&listing, &conf.admin_chain, &keys, bridge.as_deref(), &owner(cmd))
    }

    fn status(&self, _cmd: &Command) -> Result<(), CniError> {
        super::shared::nft_gc::status()
    }

    fn gc(&self, cmd: &Command) -> Result<(), CniError> {
        let (elements, _) = nft_gc::remove_stale(cmd, FAMILY, TABLE)?;
        if !elements.is_empty() {
            log::info!("firewall GC: removed {} elements of stale attachments", elements.len());
        }
        Ok(())
    }
}

fn check_listing(
    listing: &Listing,
    admin_chain: &str,
    keys: &[(String, Value)],
    bridge: Option<&str>,
    owner: &str,
) -> Result<(), CniError> {
    let chains = listing.chains();
    for name in ["forward", "isolation", admin_chain] {
        if !chains.iter().any(|c| c == name) {
            return Err(CniError::internal(format!("nftables chain {name} of inet {TABLE} is missing")));
        }
    }
    let jumps = listing
        .rules()
        .into_iter()
        .filter(|r| r.chain == "forward")
        .filter_map(|r| r.expr.pointer("/0/jump/target").and_then(Value::as_str).map(str::to_string))
        .collect::<Vec<_>>();
    let before_isolation = jumps.iter().take_while(|j| *j != "isolation");
    if !before_isolation.into_iter().any(|j| j == admin_chain) {
        return Err(CniError::internal(format!("the forward chain does not jump to {admin_chain} first")));
    }
    let present = listing.elements();
    for (set, key) in keys {
        if !present.iter().any(|e| e.set == *set && e.key == *key && e.comment.as_deref() == Some(owner)) {
            return Err(CniError::internal(format!("firewall element {key} missing from {set}")));
        }
    }
    if let Some(br) = bridge {
        if !present.iter().any(|e| e.set == "isolation-bridges" && e.key == br) {
            return Err(CniError::internal(format!("ingress policy element for bridge {br} is missing")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nftables::schema::Nftables;
    use std::borrow::Cow;

    #[test]
    fn skeleton_jumps_to_admin_first() {
        let tx = skeleton(&BTreeSet::from(["CNI-ADMIN".to_string()]));
        let json = serde_json::to_value(Nftables { objects: Cow::Owned(tx) }).unwrap();
        let rules: Vec<&Value> =
            json["nftables"].as_array().unwrap().iter().filter_map(|o| o.pointer("/add/rule")).collect();
        let forward: Vec<&&Value> = rules.iter().filter(|r| r["chain"] == "forward").collect();
        assert_eq!(forward[0]["expr"][0]["jump"]["target"], "CNI-ADMIN");
        // The admin chain is never flushed.
        let flushed: Vec<&Value> =
            json["nftables"].as_array().unwrap().iter().filter_map(|o| o.pointer("/flush/chain/name")).collect();
        assert!(!flushed.contains(&&Value::from("CNI-ADMIN")));
    }

    #[test]
    fn address_keys_are_unique() {
        let prev: CniResult = serde_json::from_str(
            r#"{"ips":[{"address":"10.0.0.5/24"},{"address":"10.0.0.5/16"},{"address":"fd00::5/64"}]}"#,
        )
        .unwrap();
        let keys = address_keys(&prev);
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1], ("containers-v6".to_string(), Value::from("fd00::5")));
    }
}
