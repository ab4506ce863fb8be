//! `conditionsV4` / `conditionsV6`: extra matches a mapping must meet, in
//! the reference's two syntaxes (iptables arguments for its iptables
//! backend, nft expressions for its nftables one). The common matches are
//! translated to nft JSON match statements (the rule then joins the ADD's
//! one transaction); other nft expressions pass through to nft as text; an
//! iptables argument without a translation is refused with code 2 naming
//! it, never silently dropped.

use std::borrow::Cow;

use ipnet::IpNet;
use nftables::expr::Payload;
use nftables::expr::{
    BinaryOperation, Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression, PayloadField, Prefix, Range,
    SetItem,
};
use nftables::stmt::{Match, Operator, Statement};

use crate::cni::CniError;

type Stmt = Statement<'static>;
type Expr = Expression<'static>;

fn unsupported(key: &str, what: &str) -> CniError {
    CniError::unsupported_field(format!("{key}: unsupported condition {what:?}"))
        .with_details("cnibox translates -s/-d/-i/-o/-p/--dport/--sport/-m addrtype/multiport/mark (iptables syntax); nft expressions are translated or passed to nft as written")
}

fn invalid(key: &str, what: &str) -> CniError {
    CniError::invalid_config(format!("{key}: invalid value {what:?}"))
}

fn matches(left: Expr, op: Operator, right: Expr) -> Stmt {
    Statement::Match(Match { left, right, op })
}

fn payload(protocol: &'static str, field: &'static str) -> Expr {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
        protocol: Cow::Borrowed(protocol),
        field: Cow::Borrowed(field),
    })))
}

fn meta(key: MetaKey) -> Expr {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

/// A 32-bit mark value, decimal or 0x-hex, as both tools write it.
fn mark_value(key: &str, s: &str) -> Result<u32, CniError> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| invalid(key, s))
}

/// iptables' `--mark VALUE[/MASK]`: `meta mark == VALUE`, or
/// `meta mark & MASK == VALUE` (iptables-translate's mapping).
fn mark_match(key: &str, op: Operator, arg: &str) -> Result<Stmt, CniError> {
    let (value, mask) = match arg.split_once('/') {
        Some((v, m)) => (mark_value(key, v)?, Some(mark_value(key, m)?)),
        None => (mark_value(key, arg)?, None),
    };
    let left = match mask {
        Some(mask) => {
            Expression::BinaryOperation(Box::new(BinaryOperation::AND(meta(MetaKey::Mark), Expression::Number(mask))))
        }
        None => meta(MetaKey::Mark),
    };
    Ok(matches(left, op, Expression::Number(value)))
}

fn fib_type(flag: FibFlag) -> Expr {
    Expression::Named(NamedExpression::Fib(Fib { result: FibResult::Type, flags: [flag].into_iter().collect() }))
}

/// An address or prefix of the right family.
fn address(key: &str, v6: bool, s: &str) -> Result<Expr, CniError> {
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        if ip.is_ipv6() != v6 {
            return Err(invalid(key, s));
        }
        return Ok(Expression::String(Cow::Owned(ip.to_string())));
    }
    let net: IpNet = s.parse().map_err(|_| invalid(key, s))?;
    if matches!(net, IpNet::V6(_)) != v6 {
        return Err(invalid(key, s));
    }
    Ok(Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(Expression::String(Cow::Owned(net.network().to_string()))),
        len: net.prefix_len() as u32,
    })))
}

/// A port or a range `a:b` / `a-b`.
fn port(key: &str, s: &str) -> Result<Expr, CniError> {
    let num = |p: &str| p.parse::<u16>().map(|n| Expression::Number(n as u32)).map_err(|_| invalid(key, s));
    match s.split_once([':', '-']) {
        Some((a, b)) => Ok(Expression::Range(Box::new(Range { range: [num(a)?, num(b)?] }))),
        None => num(s),
    }
}

/// A protocol by name or number.
fn protocol(key: &str, s: &str) -> Result<Expr, CniError> {
    if let Ok(n) = s.parse::<u8>() {
        return Ok(Expression::Number(n as u32));
    }
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(invalid(key, s));
    }
    Ok(Expression::String(Cow::Owned(s.to_ascii_lowercase())))
}

/// An interface name; iptables' trailing `+` is nft's `*`.
fn ifname(key: &str, s: &str) -> Result<Expr, CniError> {
    let s = s.trim_matches('"');
    if s.is_empty() || s.len() > 16 {
        return Err(invalid(key, s));
    }
    Ok(Expression::String(Cow::Owned(match s.strip_suffix('+') {
        Some(stem) => format!("{stem}*"),
        None => s.to_string(),
    })))
}

/// One value or a comma-separated list (an anonymous set).
fn one_or_set(items: &[String], parse: impl Fn(&str) -> Result<Expr, CniError>) -> Result<Expr, CniError> {
    if items.len() == 1 {
        return parse(&items[0]);
    }
    Ok(Expression::Named(NamedExpression::Set(
        items.iter().map(|i| parse(i).map(SetItem::Element)).collect::<Result<_, _>>()?,
    )))
}

/// Whether `conditions` are nft expressions (not iptables arguments), told
/// by their first word as the reference tells them.
pub fn is_nft_syntax(conditions: &[String]) -> bool {
    let first = conditions.iter().flat_map(|c| c.split_whitespace()).next();
    first.is_some_and(|t| !t.starts_with('-') && !t.starts_with('!'))
}

/// One family's conditions, ready for a rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Conditions {
    /// Match statements of nft's JSON (none: no conditions).
    Translated(Vec<Stmt>),
    /// nft expressions the translation does not know, passed to nft as the
    /// config wrote them (nft checks them when the rule is added).
    Text(String),
}

/// One family's conditions for a rule: translated where the translation
/// knows them, nft expressions it does not know passed through as text.
/// `key` names the config key.
pub fn prepare(key: &str, conditions: &[String], v6: bool) -> Result<Conditions, CniError> {
    match translate(key, conditions, v6) {
        Ok(stmts) => Ok(Conditions::Translated(stmts)),
        Err(e) if e.code == crate::cni::error::UNSUPPORTED_FIELD && is_nft_syntax(conditions) => {
            pass_through(key, conditions)
        }
        Err(e) => Err(e),
    }
}

/// Translates one family's conditions. `key` names the config key.
fn translate(key: &str, conditions: &[String], v6: bool) -> Result<Vec<Stmt>, CniError> {
    if conditions.iter().all(|c| c.trim().is_empty()) {
        Ok(Vec::new())
    } else if is_nft_syntax(conditions) {
        nft(key, conditions, v6)
    } else {
        iptables(key, conditions, v6)
    }
}

/// nft expressions as text for a rule of their own: one statement list, so
/// no `;`, newline or comment that would end the rule and start another
/// command.
pub fn pass_through(key: &str, conditions: &[String]) -> Result<Conditions, CniError> {
    let text = conditions.iter().map(|c| c.trim()).collect::<Vec<_>>().join(" ");
    if let Some(bad) = text.chars().find(|c| matches!(c, ';' | '#' | '\\') || c.is_control()) {
        return Err(CniError::invalid_config(format!("{key}: {bad:?} cannot be part of an nft expression here")));
    }
    Ok(Conditions::Text(text))
}

fn iptables(key: &str, conditions: &[String], v6: bool) -> Result<Vec<Stmt>, CniError> {
    let tokens: Vec<&str> = conditions.iter().flat_map(|c| c.split_whitespace()).collect();
    let ip = if v6 { "ip6" } else { "ip" };
    let mut out = Vec::new();
    let mut negate = false;
    let mut i = 0;
    while i < tokens.len() {
        let opt = tokens[i];
        let value = || tokens.get(i + 1).copied().ok_or_else(|| invalid(key, opt));
        let list = |v: &str| v.split(',').map(str::to_string).collect::<Vec<_>>();
        let op = if negate { Operator::NEQ } else { Operator::EQ };
        match opt {
            "!" => {
                negate = true;
                i += 1;
                continue;
            }
            "-s" | "--source" | "--src" => {
                out.push(matches(payload(ip, "saddr"), op, one_or_set(&list(value()?), |s| address(key, v6, s))?))
            }
            "-d" | "--destination" | "--dst" => {
                out.push(matches(payload(ip, "daddr"), op, one_or_set(&list(value()?), |s| address(key, v6, s))?))
            }
            "--mark" => out.push(mark_match(key, op, value()?)?),
            "-i" | "--in-interface" => out.push(matches(meta(MetaKey::Iifname), op, ifname(key, value()?)?)),
            "-o" | "--out-interface" => out.push(matches(meta(MetaKey::Oifname), op, ifname(key, value()?)?)),
            "-p" | "--protocol" => out.push(matches(meta(MetaKey::L4proto), op, protocol(key, value()?)?)),
            "--dport" | "--destination-port" | "--dports" | "--destination-ports" => {
                out.push(matches(payload("th", "dport"), op, one_or_set(&list(value()?), |s| port(key, s))?))
            }
            "--sport" | "--source-port" | "--sports" | "--source-ports" => {
                out.push(matches(payload("th", "sport"), op, one_or_set(&list(value()?), |s| port(key, s))?))
            }
            "--dst-type" | "--src-type" => {
                let flag = if opt == "--dst-type" { FibFlag::Daddr } else { FibFlag::Saddr };
                let kind = value()?.to_ascii_lowercase();
                if !matches!(kind.as_str(), "local" | "unicast" | "broadcast" | "multicast" | "anycast") {
                    return Err(unsupported(key, &format!("{opt} {kind}")));
                }
                out.push(matches(fib_type(flag), op, Expression::String(Cow::Owned(kind))));
            }
            // A module cannot be negated, only its matches.
            "-m" | "--match" if negate => return Err(invalid(key, "! -m")),
            "-m" | "--match" => match value()? {
                // Modules whose options are translated above (or implied).
                "tcp" | "udp" | "sctp" | "multiport" | "addrtype" | "mark" => {}
                "comment" => {
                    // The comment text is not a match; skip "--comment X".
                    if tokens.get(i + 2) == Some(&"--comment") {
                        i += 2;
                    }
                }
                m => return Err(unsupported(key, &format!("-m {m}"))),
            },
            other => return Err(unsupported(key, other)),
        }
        negate = false;
        i += 2;
    }
    if negate {
        return Err(invalid(key, "!"));
    }
    Ok(out)
}

/// Splits nft syntax into tokens, with `{`, `}` and `,` standing alone.
fn nft_tokens(conditions: &[String]) -> Vec<String> {
    conditions
        .iter()
        .flat_map(|c| {
            c.replace('{', " { ")
                .replace('}', " } ")
                .replace(',', " , ")
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn nft(key: &str, conditions: &[String], v6: bool) -> Result<Vec<Stmt>, CniError> {
    let tokens = nft_tokens(conditions);
    let mut out = Vec::new();
    let mut i = 0;
    let at = |i: usize| tokens.get(i).map(String::as_str);
    while i < tokens.len() {
        // The selector: one or two tokens.
        let (left, kind, used, implied) = match (at(i), at(i + 1)) {
            (Some(fam @ ("ip" | "ip6")), Some(field @ ("saddr" | "daddr"))) => {
                if (fam == "ip6") != v6 {
                    return Err(invalid(key, &format!("{fam} {field}")));
                }
                (
                    payload(if v6 { "ip6" } else { "ip" }, if field == "saddr" { "saddr" } else { "daddr" }),
                    "addr",
                    2,
                    None,
                )
            }
            (Some("meta"), Some("iifname")) => (meta(MetaKey::Iifname), "if", 2, None),
            (Some("meta"), Some("oifname")) => (meta(MetaKey::Oifname), "if", 2, None),
            (Some("iifname"), _) => (meta(MetaKey::Iifname), "if", 1, None),
            (Some("oifname"), _) => (meta(MetaKey::Oifname), "if", 1, None),
            (Some("meta"), Some("l4proto")) => (meta(MetaKey::L4proto), "proto", 2, None),
            (Some("meta"), Some("mark")) => (meta(MetaKey::Mark), "mark", 2, None),
            (Some("mark"), _) => (meta(MetaKey::Mark), "mark", 1, None),
            (Some(p @ ("tcp" | "udp" | "sctp" | "th")), Some(f @ ("dport" | "sport"))) => {
                let implied = (p != "th").then(|| p.to_string());
                (payload("th", if f == "dport" { "dport" } else { "sport" }), "port", 2, implied)
            }
            (Some("fib"), Some(f @ ("daddr" | "saddr"))) if at(i + 2) == Some("type") => {
                (fib_type(if f == "daddr" { FibFlag::Daddr } else { FibFlag::Saddr }), "type", 3, None)
            }
            (Some(t), _) => return Err(unsupported(key, t)),
            (None, _) => break,
        };
        i += used;
        let op = match at(i) {
            Some("==") | Some("eq") => {
                i += 1;
                Operator::EQ
            }
            Some("!=") | Some("ne") => {
                i += 1;
                Operator::NEQ
            }
            _ => Operator::EQ,
        };
        // The value: one token or a `{ a, b }` set.
        let mut items = Vec::new();
        match at(i) {
            Some("{") => {
                i += 1;
                while let Some(t) = at(i) {
                    i += 1;
                    match t {
                        "}" => break,
                        "," => {}
                        t => items.push(t.trim_matches('"').to_string()),
                    }
                }
            }
            Some(t) => {
                items.push(t.trim_matches('"').to_string());
                i += 1;
            }
            None => return Err(invalid(key, &tokens.join(" "))),
        }
        if items.is_empty() {
            return Err(invalid(key, &tokens.join(" ")));
        }
        let right = match kind {
            "addr" => one_or_set(&items, |s| address(key, v6, s))?,
            "if" => one_or_set(&items, |s| ifname(key, s))?,
            "proto" => one_or_set(&items, |s| protocol(key, s))?,
            "port" => one_or_set(&items, |s| port(key, s))?,
            "mark" => one_or_set(&items, |s| Ok(Expression::Number(mark_value(key, s)?)))?,
            _ => {
                let t = items[0].to_ascii_lowercase();
                if items.len() != 1
                    || !matches!(t.as_str(), "local" | "unicast" | "broadcast" | "multicast" | "anycast")
                {
                    return Err(unsupported(key, &format!("fib type {}", items.join(","))));
                }
                Expression::String(Cow::Owned(t))
            }
        };
        if let Some(p) = implied {
            out.push(matches(meta(MetaKey::L4proto), Operator::EQ, Expression::String(Cow::Owned(p))));
        }
        out.push(matches(left, op, right));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(stmts: &[Stmt]) -> String {
        serde_json::to_string(stmts).unwrap()
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn iptables_syntax() {
        let out = translate(
            "conditionsV4",
            &s(&["-s", "10.0.0.0/8", "! -d 1.2.3.4", "-i eth+", "-p tcp", "--dport", "80:90"]),
            false,
        )
        .unwrap();
        let j = json(&out);
        assert_eq!(out.len(), 5);
        assert!(j.contains(r#"{"prefix":{"addr":"10.0.0.0","len":8}}"#), "{j}");
        assert!(j.contains(r#""op":"!=""#) && j.contains("1.2.3.4"));
        assert!(j.contains(r#""eth*""#));
        assert!(j.contains(r#"{"range":[80,90]}"#));
        let out =
            translate("c", &s(&["-m", "multiport", "--dports", "1,2", "-m addrtype --dst-type LOCAL"]), false).unwrap();
        assert_eq!(out.len(), 2);
        assert!(json(&out).contains(r#""local""#));
    }

    #[test]
    fn nft_syntax() {
        let out =
            translate("c", &s(&["ip saddr != { 10.0.0.0/8, 192.168.0.1 }", "iifname \"eth0\"", "udp dport 53"]), false)
                .unwrap();
        assert_eq!(out.len(), 4);
        let out = translate("c", &s(&["ip6 daddr fd00::/64"]), true).unwrap();
        assert_eq!(out.len(), 1);
        assert!(translate("c", &[], false).unwrap().is_empty());
    }

    #[test]
    fn marks_in_both_syntaxes() {
        let value = |out: &[Stmt]| serde_json::to_value(out).unwrap();
        let plain = serde_json::json!([{"match": {"op": "==", "left": {"meta": {"key": "mark"}}, "right": 1}}]);
        // iptables-translate: `-m mark --mark 0x1` is `meta mark 0x00000001`.
        assert_eq!(value(&translate("c", &s(&["-m", "mark", "--mark", "0x1"]), false).unwrap()), plain);
        let masked = translate("c", &s(&["-m mark ! --mark 0x4000/0x4000"]), false).unwrap();
        let want = serde_json::json!([{"match": {"op": "!=", "left": {"&": [{"meta": {"key": "mark"}}, 16384]}, "right": 16384}}]);
        assert_eq!(value(&masked), want);
        for nft in ["meta mark 0x1", "mark 1", "meta mark == 0x00000001"] {
            assert_eq!(value(&translate("c", &s(&[nft]), false).unwrap()), plain, "{nft}");
        }
        assert_eq!(translate("c", &s(&["-m mark --mark nope"]), false).unwrap_err().code, 7);
        assert_eq!(translate("c", &s(&["! -m mark --mark 0x1"]), false).unwrap_err().code, 7);
    }

    #[test]
    fn refuses_what_it_cannot_translate() {
        for bad in [&["-m", "conntrack", "--ctstate", "NEW"][..], &["--foo"], &["ct state new"], &["-j", "DROP"]] {
            let e = translate("conditionsV4", &s(bad), false).unwrap_err();
            assert_eq!(e.code, 2, "{bad:?}");
            assert!(e.msg.contains("conditionsV4"));
        }
        assert_eq!(translate("c", &s(&["-s", "fd00::1"]), false).unwrap_err().code, 7);
        assert_eq!(translate("c", &s(&["-s"]), false).unwrap_err().code, 7);
        assert_eq!(translate("c", &s(&["ip saddr 10.0.0.1"]), true).unwrap_err().code, 7);
    }

    #[test]
    fn nft_expressions_it_does_not_know_pass_through() {
        let text = |c: &[&str]| prepare("conditionsV4", &s(c), false);
        assert_eq!(text(&["ct state new", "ip ttl > 1"]).unwrap(), Conditions::Text("ct state new ip ttl > 1".into()));
        assert!(matches!(text(&["ip saddr 10.0.0.1"]).unwrap(), Conditions::Translated(v) if v.len() == 1));
        // iptables arguments are translated or refused, never passed to nft.
        assert_eq!(text(&["-m", "conntrack", "--ctstate", "NEW"]).unwrap_err().code, 2);
        // Invalid stays invalid; text cannot end the rule.
        assert_eq!(prepare("c", &s(&["ip saddr 10.0.0.1"]), true).unwrap_err().code, 7);
        for bad in ["ct state new; flush ruleset", "ct state new\nflush ruleset", "ct state new # x"] {
            assert_eq!(text(&[bad]).unwrap_err().code, 7, "{bad}");
        }
    }
}
