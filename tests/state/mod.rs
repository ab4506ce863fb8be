//! What a netns and a host-local store hold, as sorted lines that two
//! snapshots can be compared by: the reliability tests (fault injection,
//! crash, soak) check that failed or finished calls leave nothing behind.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use serde_json::Value;

use crate::common::*;

fn json_of(ns: &Netns, cmd: &str) -> Vec<Value> {
    let out = ns.exec(cmd);
    if out.trim().is_empty() {
        return Vec::new();
    }
    match serde_json::from_str::<Value>(&out) {
        Ok(Value::Array(items)) => items,
        Ok(other) => vec![other],
        Err(e) => panic!("`{cmd}` printed unreadable JSON: {e}\n{out}"),
    }
}

fn s(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::Null => String::new(),
        Value::String(x) => x.clone(),
        other => other.to_string(),
    }
}

/// Everything in `ns` a plugin could leave behind, one line per object:
/// links (name, kind, master, up, alias), addresses, routes of every table,
/// policy rules, qdiscs and nftables objects (table objects themselves and
/// nft's metainfo are left out: an empty table owned by cnibox is shared).
pub fn snapshot(ns: &Netns) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for l in json_of(ns, "ip -d -j link show") {
        let kind = s(&l["linkinfo"], "info_kind");
        let up = l["flags"].as_array().is_some_and(|f| f.iter().any(|x| x == "UP"));
        out.insert(format!(
            "link {} kind={} master={} up={} alias={}",
            s(&l, "ifname"),
            kind,
            s(&l, "master"),
            up,
            s(&l, "ifalias")
        ));
    }
    for l in json_of(ns, "ip -j addr show") {
        for a in l["addr_info"].as_array().into_iter().flatten() {
            out.insert(format!("addr {} {}/{}", s(&l, "ifname"), s(a, "local"), s(a, "prefixlen")));
        }
    }
    for fam in ["-4", "-6"] {
        for r in json_of(ns, &format!("ip {fam} -j route show table all")) {
            // The kernel's own per-link routes (local table, multicast) follow their link.
            if s(&r, "table") == "local" || s(&r, "dst").starts_with("ff00::") {
                continue;
            }
            out.insert(format!(
                "route {} dev={} via={} src={} table={} proto={}",
                s(&r, "dst"),
                s(&r, "dev"),
                s(&r, "gateway"),
                s(&r, "prefsrc"),
                s(&r, "table"),
                s(&r, "protocol")
            ));
        }
        for r in json_of(ns, &format!("ip {fam} -j rule show")) {
            out.insert(format!("rule {fam} {r}"));
        }
    }
    for q in json_of(ns, "tc -j qdisc show") {
        out.insert(format!("qdisc {} {} {}", s(&q, "dev"), s(&q, "kind"), s(&q, "handle")));
    }
    let ruleset = ns.exec("nft -j list ruleset");
    let v: Value = serde_json::from_str(&ruleset).unwrap_or(Value::Null);
    for obj in v["nftables"].as_array().into_iter().flatten() {
        if obj.get("metainfo").is_some() || obj.get("table").is_some() {
            continue;
        }
        let mut o = obj.clone();
        // Handles change with every re-creation; they are not state.
        for inner in o.as_object_mut().unwrap().values_mut() {
            if let Some(m) = inner.as_object_mut() {
                m.remove("handle");
            }
        }
        out.insert(format!("nft {o}"));
    }
    out
}

/// The reservation files of every network under a host-local data dir.
pub fn reservations(data_dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(nets) = std::fs::read_dir(data_dir) else { return out };
    for net in nets.flatten() {
        let Ok(files) = std::fs::read_dir(net.path()) else { continue };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.parse::<IpAddr>().is_ok() {
                let owner = std::fs::read_to_string(f.path()).unwrap_or_default().replace("\r\n", " ");
                out.insert(format!("reservation {}/{name} {owner}", net.file_name().to_string_lossy()));
            }
        }
    }
    out
}

/// The files under `dir` (recursively) with their contents: state that
/// chained plugins keep on disk (tuning's saved originals).
pub fn files(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            let content =
                std::fs::read_to_string(&path).unwrap_or_default().split_whitespace().collect::<Vec<_>>().join(" ");
            out.insert(format!("file {} {content}", path.display()));
        }
    }
    out
}

/// Lines of `after` not in `before` (+) and of `before` not in `after` (-).
pub fn diff(before: &BTreeSet<String>, after: &BTreeSet<String>) -> Vec<String> {
    let mut d: Vec<String> = after.difference(before).map(|l| format!("+ {l}")).collect();
    d.extend(before.difference(after).map(|l| format!("- {l}")));
    d
}

/// The veths of `ns` named as cnibox names host ends (`veth<8 hex>`).
pub fn host_veths(ns: &Netns) -> Vec<String> {
    json_of(ns, "ip -d -j link show type veth")
        .iter()
        .map(|l| s(l, "ifname"))
        .filter(|n| n.len() == 12 && n.starts_with("veth"))
        .collect()
}

/// Elements of cnibox's nftables sets in `ns`: (set, value, comment).
pub fn nft_elements(ns: &Netns) -> Vec<(String, String, String)> {
    let v: Value = serde_json::from_str(&ns.exec("nft -j list ruleset")).unwrap_or(Value::Null);
    let mut out = Vec::new();
    for set in v["nftables"].as_array().into_iter().flatten().filter_map(|o| o.get("set")) {
        for e in set["elem"].as_array().into_iter().flatten() {
            let (val, comment) = match e.get("elem") {
                Some(inner) => (inner["val"].to_string(), s(inner, "comment")),
                None => (e.to_string(), String::new()),
            };
            out.push((s(set, "name"), val, comment));
        }
    }
    out
}
