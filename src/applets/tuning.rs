//! tuning: a chained plugin that sets sysctls and link settings (mac, mtu,
//! promisc, allmulti, txqlen) of the container interface, and puts the
//! original values back on DEL.
//!
//! The originals are saved in `<dataDir>/<containerID>_<ifname>.json`, the
//! reference's file, with the reference's keys (mac, mtu, promisc, allmulti,
//! txQLen) plus two of ours that the reference ignores: `sysctl` (the
//! original values of the sysctls set, restored too) and `network` (so GC
//! only touches files of its own network).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::cni::error::{INVALID_CONFIG, IO_FAILURE};
use crate::cni::fault;
use crate::cni::{gc, lenient, Applet, CniContext, CniError, CniResult, Command};
use crate::netlink::{mac, sysctl, Link, NetNs, Netlink};

pub struct Tuning;

const DEFAULT_DATA_DIR: &str = "/run/cni/tuning";
const ALLOWLIST: &str = "/etc/cni/tuning/allowlist.conf";
/// Points at another allowlist file; for tests and unusual installs.
const ALLOWLIST_ENV: &str = "CNIBOX_TUNING_ALLOWLIST";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Conf {
    data_dir: String,
    sysctl: BTreeMap<String, String>,
    mac: String,
    promisc: bool,
    mtu: u32,
    tx_q_len: Option<u32>,
    allmulti: Option<bool>,
}

/// `args.cni`: each key present overrides the config.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ArgsCni {
    sysctl: Option<BTreeMap<String, String>>,
    mac: Option<String>,
    promisc: Option<bool>,
    mtu: Option<u32>,
    allmulti: Option<bool>,
    tx_q_len: Option<u32>,
}

/// What one call asks for, resolved and validated.
#[derive(Debug, Default)]
struct Settings {
    data_dir: PathBuf,
    /// (key as written, /proc/sys-relative path, value)
    sysctls: Vec<(String, String, String)>,
    mac: Option<Vec<u8>>,
    promisc: bool,
    mtu: Option<u32>,
    allmulti: Option<bool>,
    txqlen: Option<u32>,
}

impl Settings {
    fn changes_link(&self) -> bool {
        self.mac.is_some() || self.promisc || self.mtu.is_some() || self.allmulti.is_some() || self.txqlen.is_some()
    }
}

/// The saved originals (compatible with the reference's configToRestore).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
struct Backup {
    #[serde(skip_serializing_if = "String::is_empty")]
    mac: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    promisc: Option<bool>,
    #[serde(skip_serializing_if = "is_zero")]
    mtu: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    allmulti: Option<bool>,
    #[serde(rename = "txQLen", skip_serializing_if = "Option::is_none")]
    tx_q_len: Option<u32>,
    /// /proc/sys-relative path -> original value.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    sysctl: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    network: String,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl Backup {
    /// Keeps values already saved: they are older, hence the true originals
    /// (an ADD retried for the same attachment must not save tuned values).
    fn merge_older(mut self, older: Backup) -> Backup {
        if !older.mac.is_empty() {
            self.mac = older.mac;
        }
        if older.mtu != 0 {
            self.mtu = older.mtu;
        }
        self.promisc = older.promisc.or(self.promisc);
        self.allmulti = older.allmulti.or(self.allmulti);
        self.tx_q_len = older.tx_q_len.or(self.tx_q_len);
        for (k, v) in older.sysctl {
            self.sysctl.insert(k, v);
        }
        self
    }
}

/// The /proc/sys-relative path of a sysctl key: dots become slashes unless
/// the key is written with slashes already (then dots belong to names, e.g.
/// VLAN interfaces), and IFNAME becomes the interface name.
fn sysctl_path(key: &str, ifname: &str) -> Result<String, CniError> {
    let path = if key.contains('/') { key.to_string() } else { key.replace('.', "/") };
    let path = path.replace("IFNAME", ifname);
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() < 2 || parts[0] != "net" || parts.iter().any(|p| p.is_empty() || *p == "." || *p == "..") {
        return Err(CniError::invalid_config(format!("invalid net sysctl key: {key:?}")));
    }
    Ok(path)
}

/// The keys of every "sysctl" object in the raw config, in order, duplicates
/// included (parsing into a map would silently keep the last one).
struct RawSysctlKeys(Vec<String>);

impl<'de> Deserialize<'de> for RawSysctlKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Top;
        impl<'de> Visitor<'de> for Top {
            type Value = Vec<String>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
                let mut keys = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    if k.eq_ignore_ascii_case("sysctl") {
                        keys.extend(map.next_value::<Keys>()?.0);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(keys)
            }
        }
        struct Keys(Vec<String>);
        impl<'de> Deserialize<'de> for Keys {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = Vec<String>;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("an object of sysctls")
                    }
                    fn visit_unit<E>(self) -> Result<Vec<String>, E> {
                        Ok(Vec::new())
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
                        let mut keys = Vec::new();
                        while let Some(k) = map.next_key::<String>()? {
                            map.next_value::<IgnoredAny>()?;
                            keys.push(k);
                        }
                        Ok(keys)
                    }
                }
                d.deserialize_any(V).map(Keys)
            }
        }
        d.deserialize_map(Top).map(RawSysctlKeys)
    }
}

/// Refuses a sysctl given twice, literally or in another spelling
/// ("net.ipv4.ip_forward" and "net/ipv4/ip_forward").
fn check_duplicate_sysctls(stdin: &[u8]) -> Result<(), CniError> {
    let RawSysctlKeys(keys) =
        serde_json::from_slice(stdin).cni(crate::cni::error::DECODE_FAILURE, "failed to parse the sysctl map")?;
    let mut seen = std::collections::HashSet::new();
    for key in &keys {
        let norm = if key.contains('/') { key.clone() } else { key.replace('.', "/") };
        if !seen.insert(norm) {
            return Err(CniError::invalid_config(format!("duplicated sysctl key {key:?} is not allowed")));
        }
    }
    Ok(())
}

/// The allowlist's regexes, one a line, or None when there is no allowlist.
fn read_allowlist() -> Result<Option<Vec<String>>, CniError> {
    let path = std::env::var(ALLOWLIST_ENV).ok().filter(|p| !p.is_empty()).unwrap_or_else(|| ALLOWLIST.into());
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CniError::io(format!("failed to read the sysctl allowlist {path}")).with_details(e.to_string())),
    }
}

/// A key passes when one of the regexes matches it (unanchored, as
/// written in the config), like the reference's regexp.MatchString.
fn check_allowlist(keys: &[&str], allowlist: &[String]) -> Result<(), CniError> {
    let mut regexes = Vec::with_capacity(allowlist.len());
    for pattern in allowlist {
        let re = regex_lite::Regex::new(pattern)
            .cni(INVALID_CONFIG, format!("invalid regex {pattern:?} in the sysctl allowlist"))?;
        regexes.push(re);
    }
    for key in keys {
        if !regexes.iter().any(|re| re.is_match(key)) {
            return Err(CniError::invalid_config(format!("sysctl {key} is not allowed"))
                .with_details(format!("the allowlist allows only {allowlist:?}")));
        }
    }
    Ok(())
}

fn parse_mac(s: &str) -> Result<Vec<u8>, CniError> {
    mac::parse(s).ok_or_else(|| CniError::invalid_config(format!("invalid MAC address {s:?}")))
}

/// Resolves the settings with the reference's precedence: config < CNI_ARGS
/// MAC < runtimeConfig.mac < args.cni, for mac; config < args.cni otherwise.
fn settings(cmd: &Command) -> Result<Settings, CniError> {
    check_duplicate_sysctls(&cmd.stdin)?;
    let conf: Conf = cmd.parse_config()?;
    let cni_args = cmd.args()?;
    cni_args.check_known(&["MAC"])?;
    let args: ArgsCni = match cmd.conf.args.as_ref().and_then(|a| a.get("cni")) {
        Some(v) if !v.is_null() => lenient::parse_config(v, "args.cni")?,
        _ => ArgsCni::default(),
    };
    let mut mac_str = conf.mac;
    if let Some(m) = cni_args.get("MAC").filter(|m| !m.is_empty()) {
        mac_str = m.to_string();
    }
    if let Some(m) = cmd.runtime_config::<String>("mac")?.filter(|m| !m.is_empty()) {
        mac_str = m;
    }
    if let Some(m) = args.mac {
        mac_str = m;
    }
    let mut sysctls = conf.sysctl;
    for (k, v) in args.sysctl.unwrap_or_default() {
        sysctls.insert(k, v);
    }
    let mut resolved: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (key, value) in sysctls {
        let path = sysctl_path(&key, &cmd.ifname)?;
        // An args.cni spelling of a config key overrides it.
        resolved.insert(path, (key, value));
    }
    if let Some(allowlist) = read_allowlist()? {
        let keys: Vec<&str> = resolved.values().map(|(k, _)| k.as_str()).collect();
        check_allowlist(&keys, &allowlist)?;
    }
    let mtu = args.mtu.unwrap_or(conf.mtu);
    Ok(Settings {
        data_dir: PathBuf::from(if conf.data_dir.is_empty() { DEFAULT_DATA_DIR.into() } else { conf.data_dir }),
        sysctls: resolved.into_iter().map(|(path, (key, value))| (key, path, value)).collect(),
        mac: if mac_str.is_empty() { None } else { Some(parse_mac(&mac_str)?) },
        promisc: args.promisc.unwrap_or(conf.promisc),
        mtu: (mtu != 0).then_some(mtu),
        allmulti: args.allmulti.or(conf.allmulti),
        txqlen: args.tx_q_len.or(conf.tx_q_len),
    })
}

/// Only the data dir matters to DEL and GC; a config whose other keys are
/// bad must not keep DEL from cleaning up.
fn data_dir(cmd: &Command) -> PathBuf {
    #[derive(Default, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    struct DirOnly {
        data_dir: Option<String>,
    }
    let dir = lenient::from_value::<DirOnly>(&cmd.config).ok().and_then(|d| d.data_dir).filter(|d| !d.is_empty());
    PathBuf::from(dir.unwrap_or_else(|| DEFAULT_DATA_DIR.into()))
}

fn backup_path(dir: &Path, container_id: &str, ifname: &str) -> PathBuf {
    dir.join(format!("{container_id}_{ifname}.json"))
}

fn read_backup(path: &Path) -> Result<Option<Backup>, CniError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CniError::io(format!("failed to read {}", path.display())).with_details(e.to_string())),
    }
}

/// Writes the file whole or not at all (temporary file + rename).
fn write_backup(path: &Path, backup: &Backup) -> Result<(), CniError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .cni(IO_FAILURE, format!("failed to create {}", dir.display()))?;
    let data = serde_json::to_vec_pretty(backup).cni_internal("failed to encode the backup")?;
    let tmp = path.with_extension("json.tmp");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().cni(IO_FAILURE, format!("failed to save {}", path.display()))
}

fn remove_file(path: &Path) -> Result<(), CniError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(CniError::io(format!("failed to remove {}", path.display())).with_details(e.to_string()))
        }
        _ => Ok(()),
    }
}

/// The current values of what `s` changes.
fn originals(ns: &NetNs, link: &Link, s: &Settings, network: &str) -> Result<Backup, CniError> {
    let paths: Vec<String> = s.sysctls.iter().map(|(_, p, _)| p.clone()).collect();
    let values = ns.run(|| paths.iter().map(|p| sysctl::read(p).map(|v| (p.clone(), v))).collect::<Vec<_>>())?;
    let mut sysctls = BTreeMap::new();
    for v in values {
        let (p, v) = v.map_err(|e| {
            let code = if e.is_not_found() { INVALID_CONFIG } else { IO_FAILURE };
            CniError::new(code, "cannot read a sysctl in the container").with_details(e.msg)
        })?;
        sysctls.insert(p, v);
    }
    Ok(Backup {
        mac: if s.mac.is_some() { link.mac.clone() } else { String::new() },
        promisc: s.promisc.then_some(link.promisc),
        mtu: if s.mtu.is_some() { link.mtu } else { 0 },
        allmulti: s.allmulti.map(|_| link.allmulti),
        tx_q_len: s.txqlen.map(|_| link.txqlen),
        sysctl: sysctls,
        network: network.to_string(),
    })
}

/// Writes `sysctls` (path -> value) inside the netns; returns the errors.
fn write_sysctls(ns: &NetNs, sysctls: &[(String, String)]) -> Vec<String> {
    let run = ns
        .run(|| sysctls.iter().filter_map(|(p, v)| sysctl::write(p, v).err()).map(|e| e.msg).collect::<Vec<String>>());
    run.unwrap_or_else(|e| vec![e.msg])
}

fn apply(ns: &NetNs, nl: &Netlink, link: &Link, s: &Settings) -> Result<(), CniError> {
    let sysctls: Vec<(String, String)> = s.sysctls.iter().map(|(_, p, v)| (p.clone(), v.clone())).collect();
    let errors = write_sysctls(ns, &sysctls);
    if !errors.is_empty() {
        return Err(CniError::io("failed to set sysctls in the container").with_details(errors.join("; ")));
    }
    fault::step("tuning: sysctls")?;
    if let Some(m) = &s.mac {
        nl.set_mac(link.index, m)?;
        fault::step("tuning: mac")?;
    }
    if s.promisc {
        nl.set_promisc(link.index, true)?;
        fault::step("tuning: promisc")?;
    }
    if let Some(mtu) = s.mtu {
        nl.set_mtu(link.index, mtu)?;
        fault::step("tuning: mtu")?;
    }
    if let Some(on) = s.allmulti {
        nl.set_allmulti(link.index, on)?;
        fault::step("tuning: allmulti")?;
    }
    if let Some(len) = s.txqlen {
        nl.set_txqlen(link.index, len)?;
        fault::step("tuning: txqlen")?;
    }
    Ok(())
}

/// Puts the saved values back; returns what failed. A missing interface or
/// sysctl (the interface went away) is nothing left to restore.
fn restore(ns: &NetNs, ifname: &str, b: &Backup) -> Vec<String> {
    let mut errors = Vec::new();
    let sysctls: Vec<(String, String)> = b.sysctl.iter().map(|(p, v)| (p.clone(), v.clone())).collect();
    let run = ns.run(|| {
        sysctls
            .iter()
            .filter_map(|(p, v)| sysctl::write(p, v).err())
            .filter(|e| !e.is_not_found())
            .map(|e| e.msg)
            .collect::<Vec<String>>()
    });
    match run {
        Ok(errs) => errors.extend(errs),
        Err(e) => errors.push(e.msg),
    }
    let nl = match Netlink::in_netns(ns) {
        Ok(nl) => nl,
        Err(e) => {
            errors.push(e.msg);
            return errors;
        }
    };
    let link = match nl.link(ifname) {
        Ok(Some(l)) => l,
        Ok(None) => return errors,
        Err(e) => {
            errors.push(e.msg);
            return errors;
        }
    };
    let mut note = |r: crate::netlink::Result<()>, what: &str| {
        if let Err(e) = r {
            errors.push(format!("failed to restore {what}: {}", e.msg));
        }
    };
    if b.mtu != 0 {
        note(nl.set_mtu(link.index, b.mtu), "the MTU");
    }
    if !b.mac.is_empty() {
        match mac::parse(&b.mac) {
            Some(m) => note(nl.set_mac(link.index, &m), "the MAC address"),
            None => log::warn!("ignoring the unreadable saved MAC address {:?}", b.mac),
        }
    }
    if let Some(on) = b.promisc {
        note(nl.set_promisc(link.index, on), "promiscuous mode");
    }
    if let Some(on) = b.allmulti {
        note(nl.set_allmulti(link.index, on), "all-multicast mode");
    }
    if let Some(len) = b.tx_q_len {
        note(nl.set_txqlen(link.index, len), "the transmit queue length");
    }
    errors
}

/// Result: prevResult with the container interface's MAC updated.
fn updated_result(cmd: &Command, mut result: CniResult, s: &Settings) -> CniResult {
    let Some(m) = &s.mac else { return result };
    let in_sandbox = result.interfaces.iter().position(|i| i.name == cmd.ifname && !i.sandbox.is_empty());
    let index = in_sandbox.or_else(|| result.interfaces.iter().position(|i| i.name == cmd.ifname));
    if let Some(i) = index {
        result.interfaces[i].mac = mac::format(m);
    }
    result
}

fn require_prev(cmd: &Command) -> Result<CniResult, CniError> {
    cmd.prev_result()?
        .ok_or_else(|| CniError::invalid_config("tuning must be called as a chained plugin: prevResult missing"))
}

/// Sysctl values compare as the kernel prints them: tabs and spaces alike.
fn same_value(a: &str, b: &str) -> bool {
    a.split_whitespace().eq(b.split_whitespace())
}

impl Applet for Tuning {
    /// Chained: a prevResult, when given, must parse; ADD demands one.
    fn validate(&self, cmd: &Command) -> Result<(), CniError> {
        settings(cmd)?;
        cmd.prev_result().map(|_| ())
    }

    fn add(&self, cmd: &Command) -> Result<CniResult, CniError> {
        let s = settings(cmd)?;
        let prev = require_prev(cmd)?;
        if s.sysctls.is_empty() && !s.changes_link() {
            return Ok(prev);
        }
        let ns = super::shared::link_plugin::open_netns(cmd)?;
        let nl = Netlink::in_netns(&ns)?;
        let link = nl
            .link(&cmd.ifname)?
            .ok_or_else(|| CniError::internal(format!("interface {} not found in the container", cmd.ifname)))?;
        let orig = originals(&ns, &link, &s, &cmd.conf.name)?;
        let path = backup_path(&s.data_dir, &cmd.container_id, &cmd.ifname);
        let older = read_backup(&path)?;
        let existed = older.is_some();
        let saved = match older {
            Some(old) => orig.clone().merge_older(old),
            None => orig.clone(),
        };
        write_backup(&path, &saved)?;
        if let Err(e) = fault::step("tuning: originals saved").and_then(|_| apply(&ns, &nl, &link, &s)) {
            // Leave the interface as it was before this ADD.
            for err in restore(&ns, &cmd.ifname, &orig) {
                log::warn!("undoing a failed ADD: {err}");
            }
            if !existed {
                let _ = remove_file(&path);
            }
            return Err(e);
        }
        Ok(updated_result(cmd, prev, &s))
    }

    fn del(&self, cmd: &Command) -> Result<(), CniError> {
        let path = backup_path(&data_dir(cmd), &cmd.container_id, &cmd.ifname);
        let backup = match read_backup(&path)? {
            Some(b) => b,
            None => return remove_file(&path),
        };
        // Without the netns nothing is left to restore. One that cannot be
        // opened keeps the file, for a retried DEL to restore from.
        let Some(ns) = super::shared::link_plugin::open_netns_for_del(cmd)? else { return remove_file(&path) };
        let errors = restore(&ns, &cmd.ifname, &backup);
        if !errors.is_empty() {
            // The file stays so a retried DEL can try again.
            return Err(CniError::internal("failed to restore the interface settings").with_details(errors.join("; ")));
        }
        remove_file(&path)
    }

    fn check(&self, cmd: &Command) -> Result<(), CniError> {
        let s = settings(cmd)?;
        require_prev(cmd)?;
        let ns = super::shared::link_plugin::open_netns(cmd)?;
        let paths: Vec<String> = s.sysctls.iter().map(|(_, p, _)| p.clone()).collect();
        let current = ns.run(|| paths.iter().map(|p| sysctl::read(p)).collect::<Vec<_>>())?;
        for ((key, _, want), got) in s.sysctls.iter().zip(current) {
            let got = got.map_err(|e| CniError::internal(format!("cannot read sysctl {key}")).with_details(e.msg))?;
            if !same_value(want, &got) {
                return Err(CniError::internal(format!("sysctl {key} is {got:?}, configured {want:?}")));
            }
        }
        let nl = Netlink::in_netns(&ns)?;
        let link = nl
            .link(&cmd.ifname)?
            .ok_or_else(|| CniError::internal(format!("cannot find container link {}", cmd.ifname)))?;
        let fail = |what: &str, want: String, got: String| {
            Err(CniError::internal(format!("{} of {} is {got}, configured {want}", what, cmd.ifname)))
        };
        if let Some(m) = &s.mac {
            if mac::parse(&link.mac).as_ref() != Some(m) {
                return fail("the MAC address", mac::format(m), link.mac.clone());
            }
        }
        if s.promisc && !link.promisc {
            return fail("promiscuous mode", "on".into(), "off".into());
        }
        if let Some(mtu) = s.mtu {
            if link.mtu != mtu {
                return fail("the MTU", mtu.to_string(), link.mtu.to_string());
            }
        }
        if let Some(on) = s.allmulti {
            if link.allmulti != on {
                return fail("all-multicast mode", on.to_string(), link.allmulti.to_string());
            }
        }
        if let Some(len) = s.txqlen {
            if link.txqlen != len {
                return fail("the transmit queue length", len.to_string(), link.txqlen.to_string());
            }
        }
        Ok(())
    }

    /// Removes the backups of this network's attachments that the runtime
    /// no longer knows. Files without our `network` key (the reference's)
    /// are left alone: the data dir is shared by every network.
    fn gc(&self, cmd: &Command) -> Result<(), CniError> {
        let dir = data_dir(cmd);
        let Some(valid) = gc::valid_attachments(cmd)? else { return Ok(()) };
        let valid: Vec<String> = valid.iter().map(|a| format!("{}_{}.json", a.container_id, a.ifname)).collect();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(CniError::io(format!("failed to list {}", dir.display())).with_details(e.to_string())),
        };
        let mut errors = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".json") || valid.contains(&name) {
                continue;
            }
            let Ok(Some(b)) = read_backup(&entry.path()) else { continue };
            if b.network != cmd.conf.name {
                continue;
            }
            log::info!("GC: removing the stale backup {name}");
            if let Err(e) = remove_file(&entry.path()) {
                errors.push(e.to_string());
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(CniError::io("tuning GC failed").with_details(errors.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_paths() {
        assert_eq!(sysctl_path("net.ipv4.conf.IFNAME.arp_filter", "eth0").unwrap(), "net/ipv4/conf/eth0/arp_filter");
        assert_eq!(sysctl_path("net.ipv4.conf.IFNAME.arp_filter", "e.1").unwrap(), "net/ipv4/conf/e.1/arp_filter");
        assert_eq!(sysctl_path("net/ipv4/conf/eth0.5/rp_filter", "x").unwrap(), "net/ipv4/conf/eth0.5/rp_filter");
        for bad in ["kernel.pid_max", "net", "net/../kernel/x", "net..a", "vm/x", "", "net.ipv4/../../kernel"] {
            assert_eq!(sysctl_path(bad, "eth0").unwrap_err().code, 7, "{bad}");
        }
    }

    #[test]
    fn duplicates() {
        let ok = br#"{"name":"n","sysctl":{"net.a.b":"1","net.a.c":"2"},"other":{"sysctl":1}}"#;
        check_duplicate_sysctls(ok).unwrap();
        let literal = br#"{"sysctl":{"net.a.b":"1","net.a.b":"2"}}"#;
        assert_eq!(check_duplicate_sysctls(literal).unwrap_err().code, 7);
        let spelled = br#"{"sysctl":{"net.a.b":"1","net/a/b":"2"}}"#;
        assert_eq!(check_duplicate_sysctls(spelled).unwrap_err().code, 7);
        check_duplicate_sysctls(br#"{"sysctl":null}"#).unwrap();
    }

    #[test]
    fn allowlist() {
        let list = vec![r"^net\.ipv4\.conf\.IFNAME\.[a-z_]*$".to_string(), "^net.core.somaxconn$".into()];
        check_allowlist(&["net.ipv4.conf.IFNAME.arp_filter", "net.core.somaxconn"], &list).unwrap();
        assert_eq!(check_allowlist(&["net.ipv4.ip_forward"], &list).unwrap_err().code, 7);
        assert_eq!(check_allowlist(&["x"], &["(".into()]).unwrap_err().code, 7);
    }

    #[test]
    fn backup_format_and_merge() {
        let reference = br#"{ "mac": "aa:bb:cc:dd:ee:ff", "mtu": 1500, "txQLen": 1000 }"#;
        let b: Backup = serde_json::from_slice(reference).unwrap();
        assert_eq!((b.mac.as_str(), b.mtu, b.tx_q_len), ("aa:bb:cc:dd:ee:ff", 1500, Some(1000)));
        let newer = Backup { mtu: 9000, promisc: Some(true), ..Default::default() };
        let merged = newer.merge_older(b);
        assert_eq!((merged.mtu, merged.promisc), (1500, Some(true)));
        let text = serde_json::to_string(&merged).unwrap();
        assert!(text.contains("\"txQLen\":1000") && !text.contains("allmulti"), "{text}");
    }

    #[test]
    fn values_compare_like_the_kernel_prints_them() {
        assert!(same_value("4096 87380 6291456", "4096\t87380\t6291456"));
        assert!(!same_value("1", "0"));
    }
}
