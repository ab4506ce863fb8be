//! `cnibox doctor`: checks a node for what makes CNI fail in practice:
//! plugin links, configs naming missing plugins, kernel features and
//! sysctls the configs need, and state leaked by containers that are gone.
//! It is a front-door subcommand, never installed as a plugin link.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::applets;
use crate::cni::runtime::{self, Cache, NetworkList};
use crate::cni::{CniError, Command};

const USAGE: &str = "\
usage: cnibox doctor [--bin-dir DIR] [--conf-dir DIR] [--cache-dir DIR] [--ipam-dir DIR]

Checks this node and prints a report; exits 1 when it finds problems.
  --bin-dir DIR    plugin directory (default /opt/cni/bin)
  --conf-dir DIR   network configs (default /etc/cni/net.d)
  --cache-dir DIR  libcni result cache (default $CNI_CACHE_DIR or /var/lib/cni)
  --ipam-dir DIR   host-local's default data dir (default /var/lib/cni/networks)
";

const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";
const DEFAULT_IPAM_DIR: &str = "/var/lib/cni/networks";

#[derive(Debug, Clone)]
struct Options {
    bin_dir: PathBuf,
    conf_dir: PathBuf,
    cache_dir: PathBuf,
    ipam_dir: PathBuf,
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let cache_default = std::env::var("CNI_CACHE_DIR").ok().filter(|d| !d.is_empty());
    let mut o = Options {
        bin_dir: DEFAULT_BIN_DIR.into(),
        conf_dir: runtime::DEFAULT_CONF_DIR.into(),
        cache_dir: cache_default.unwrap_or_else(|| runtime::DEFAULT_CACHE_DIR.into()).into(),
        ipam_dir: DEFAULT_IPAM_DIR.into(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (arg.as_str(), None),
        };
        let slot = match flag {
            "--bin-dir" => &mut o.bin_dir,
            "--conf-dir" => &mut o.conf_dir,
            "--cache-dir" => &mut o.cache_dir,
            "--ipam-dir" => &mut o.ipam_dir,
            _ => return Err(format!("unknown argument {arg:?}")),
        };
        let value = match inline {
            Some(v) => v,
            None => it.next().cloned().ok_or(format!("{flag} needs a directory"))?,
        };
        *slot = value.into();
    }
    Ok(o)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    Warn,
    Fail,
}

/// The findings, section by section, as they are printed.
#[derive(Default)]
struct Report {
    lines: Vec<String>,
    problems: usize,
    warnings: usize,
}

impl Report {
    fn section(&mut self, title: String) {
        self.lines.push(format!("== {title}"));
    }
    fn add(&mut self, level: Level, text: String) {
        let tag = match level {
            Level::Ok => "ok  ",
            Level::Warn => {
                self.warnings += 1;
                "WARN"
            }
            Level::Fail => {
                self.problems += 1;
                "FAIL"
            }
        };
        self.lines.push(format!("  {tag}  {text}"));
    }
}

/// The file that applet links should resolve to: the plugin directory's
/// own `cnibox` when there is one, else the running binary.
fn cnibox_binary(bin_dir: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(bin_dir.join("cnibox")).or_else(|_| std::fs::canonicalize("/proc/self/exe")).ok()
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

fn plugin_applets() -> impl Iterator<Item = &'static str> {
    applets::APPLETS.iter().filter(|a| matches!(a.entry, applets::Entry::Plugin(_))).map(|a| a.name)
}

/// What a name in the plugin directory is.
#[derive(Debug, PartialEq)]
enum Installed {
    Missing,
    Cnibox,
    Other(PathBuf),
    Broken(PathBuf),
}

fn installed(bin_dir: &Path, name: &str, cnibox: Option<&Path>) -> Installed {
    let path = bin_dir.join(name);
    let Ok(meta) = std::fs::symlink_metadata(&path) else {
        return Installed::Missing;
    };
    let target = std::fs::read_link(&path).unwrap_or_else(|_| path.clone());
    match std::fs::canonicalize(&path) {
        Err(_) => Installed::Broken(target),
        Ok(real) if cnibox.is_some_and(|c| real == c || same_file(&real, c)) => Installed::Cnibox,
        Ok(real) if !meta.file_type().is_symlink() => Installed::Other(real),
        Ok(_) => Installed::Other(target),
    }
}

fn check_bin_dir(o: &Options, r: &mut Report) {
    r.section(format!("plugin directory {}", o.bin_dir.display()));
    if !o.bin_dir.is_dir() {
        r.add(Level::Fail, "does not exist (install with `cnibox install` or pass --bin-dir)".into());
        return;
    }
    let cnibox = cnibox_binary(&o.bin_dir);
    let mut linked = 0;
    let mut missing = Vec::new();
    for name in plugin_applets() {
        match installed(&o.bin_dir, name, cnibox.as_deref()) {
            Installed::Cnibox => linked += 1,
            Installed::Missing => missing.push(name),
            Installed::Broken(t) => r.add(Level::Fail, format!("{name} -> {}: broken link", t.display())),
            Installed::Other(t) => r.add(Level::Warn, format!("{name} is not cnibox ({})", t.display())),
        }
    }
    // Links to cnibox under names it has no applet for (an old version's?).
    let mut entries: Vec<_> = std::fs::read_dir(&o.bin_dir).into_iter().flatten().flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "cnibox" || applets::find(&name).is_some() {
            continue;
        }
        match installed(&o.bin_dir, &name, cnibox.as_deref()) {
            Installed::Cnibox => r.add(Level::Fail, format!("{name} links to cnibox, which has no applet {name:?}")),
            Installed::Broken(t) => r.add(Level::Fail, format!("{name} -> {}: broken link", t.display())),
            _ => {}
        }
    }
    let target = cnibox.map(|c| c.display().to_string()).unwrap_or_else(|| "?".into());
    r.add(Level::Ok, format!("{linked} applet links point to {target}"));
    if !missing.is_empty() {
        r.add(Level::Warn, format!("not installed: {}", missing.join(", ")));
    }
}

/// Every plugin binary a network needs: each plugin's type, its IPAM type,
/// and for flannel its delegate (bridge + host-local unless configured).
fn needed_binaries(list: &NetworkList) -> Vec<String> {
    let mut names = Vec::new();
    for plugin in &list.plugins {
        let kind = NetworkList::plugin_type(plugin);
        names.push(kind.to_string());
        let ipam_type = |p: &Value| p.get("ipam").and_then(|i| i.get("type")).and_then(Value::as_str).map(String::from);
        if let Some(t) = ipam_type(plugin) {
            names.push(t);
        }
        if kind == "flannel" {
            let delegate = plugin.get("delegate");
            names.push(delegate.and_then(|d| d.get("type")).and_then(Value::as_str).unwrap_or("bridge").to_string());
            names.push(ipam_type(plugin).unwrap_or_else(|| "host-local".into()));
        }
    }
    let mut seen = BTreeSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// Runs the cnibox applets' own config validation (no system changes) on
/// what a runtime would send them: the plugin and its IPAM plugin.
fn validate_plugin(
    list: &NetworkList,
    plugin: &Value,
    bin_dir: &Path,
    cnibox: Option<&Path>,
) -> Vec<(String, CniError)> {
    let stdin = runtime::plugin_config(list, plugin, None, &Default::default()).to_string();
    let ipam = plugin.get("ipam").and_then(|i| i.get("type")).and_then(Value::as_str);
    let mut failures = Vec::new();
    for name in std::iter::once(NetworkList::plugin_type(plugin)).chain(ipam) {
        if installed(bin_dir, name, cnibox) != Installed::Cnibox {
            continue;
        }
        let Some(applet) = applets::plugin(name) else {
            continue;
        };
        let env = |key: &str| {
            let value = match key {
                "CNI_COMMAND" => "ADD".to_string(),
                "CNI_CONTAINERID" => "cnibox-doctor".to_string(),
                "CNI_NETNS" => "/proc/self/ns/net".to_string(),
                "CNI_IFNAME" => "eth0".to_string(),
                "CNI_PATH" => bin_dir.display().to_string(),
                _ => return None,
            };
            Some(value)
        };
        let outcome = Command::from_env(env, stdin.clone().into_bytes())
            .map_err(|(e, _)| e)
            .and_then(|cmd| applet.validate(&cmd));
        if let Err(e) = outcome {
            failures.push((name.to_string(), e));
        }
    }
    failures
}

/// What the configs ask of the node, gathered while checking them.
#[derive(Default)]
struct Needs {
    kinds: BTreeSet<String>,
    masquerade: bool,
    ipam_dirs: BTreeSet<PathBuf>,
}

fn check_configs(o: &Options, r: &mut Report) -> Needs {
    r.section(format!("network configs {}", o.conf_dir.display()));
    let mut needs = Needs::default();
    let all = runtime::load_all(&o.conf_dir);
    if all.is_empty() {
        r.add(Level::Warn, "no .conf, .conflist or .json files: the node has no pod network".into());
    }
    let cnibox = cnibox_binary(&o.bin_dir);
    let mut seen = BTreeSet::new();
    for (file, parsed) in all {
        let fname = file.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        let list = match parsed {
            Ok(list) => list,
            Err(e) => {
                r.add(Level::Fail, format!("{fname}: cannot be used: {e}"));
                continue;
            }
        };
        if !seen.insert(list.name.clone()) {
            r.add(Level::Warn, format!("{fname}: network {:?} is already defined by an earlier file", list.name));
        }
        let mut problems = 0;
        if let Err(e) = runtime::validate_network_name(&list.name) {
            r.add(Level::Fail, format!("{fname}: {}", e.msg));
            problems += 1;
        }
        for name in needed_binaries(&list) {
            let why = match installed(&o.bin_dir, &name, cnibox.as_deref()) {
                Installed::Missing => Some(format!("plugin {name:?} is not installed in {}", o.bin_dir.display())),
                Installed::Broken(t) => Some(format!("plugin {name:?} is a broken link to {}", t.display())),
                Installed::Cnibox if applets::plugin(&name).is_none() => {
                    Some(format!("plugin {name:?} links to cnibox, which has no such applet"))
                }
                _ => None,
            };
            if let Some(why) = why {
                r.add(Level::Fail, format!("{fname}: network {:?}: {why}", list.name));
                problems += 1;
            }
        }
        for plugin in &list.plugins {
            gather_needs(plugin, &mut needs);
            for (name, e) in validate_plugin(&list, plugin, &o.bin_dir, cnibox.as_deref()) {
                r.add(Level::Fail, format!("{fname}: network {:?}: {name} rejects its config: {e}", list.name));
                problems += 1;
            }
        }
        if problems == 0 {
            let kinds: Vec<&str> = list.plugins.iter().map(NetworkList::plugin_type).collect();
            let version = if list.cni_version.is_empty() { "0.1.0" } else { &list.cni_version };
            r.add(Level::Ok, format!("{fname}: network {:?} ({}), cniVersion {version}", list.name, kinds.join(", ")));
        }
    }
    needs
}

fn gather_needs(plugin: &Value, needs: &mut Needs) {
    let kind = NetworkList::plugin_type(plugin);
    needs.kinds.insert(kind.to_string());
    let flag = |key: &str| plugin.get(key).and_then(Value::as_bool).unwrap_or(false);
    if flag("ipMasq") || kind == "flannel" || kind == "portmap" || kind == "firewall" {
        needs.masquerade = true;
    }
    let ipam = if kind == "flannel" { plugin.get("ipam").or(Some(&Value::Null)) } else { plugin.get("ipam") };
    if let Some(ipam) = ipam {
        let ipam_type =
            ipam.get("type").and_then(Value::as_str).unwrap_or(if kind == "flannel" { "host-local" } else { "" });
        if ipam_type == "host-local" {
            if let Some(dir) = ipam.get("dataDir").and_then(Value::as_str).filter(|d| !d.is_empty()) {
                needs.ipam_dirs.insert(dir.into());
            }
        }
    }
    if kind == "flannel" {
        if let Some(delegate) = plugin.get("delegate") {
            let mut d = delegate.clone();
            if d.get("type").is_none() {
                d["type"] = "bridge".into();
            }
            gather_needs(&d, needs);
        } else {
            needs.kinds.insert("bridge".into());
        }
    }
}

/// Where kernel features are looked up. Built-in code without parameters
/// has no /sys/module entry, so kernel symbols tell built-in from missing.
struct Kernel {
    /// The symbols asked about that the kernel has.
    symbols: BTreeSet<String>,
    modules_dir: PathBuf,
}

impl Kernel {
    /// Reads /proc/kallsyms once, keeping only the `wanted` symbols.
    fn probe(wanted: &[&str]) -> Kernel {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let all = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
        let symbols = all
            .lines()
            .filter_map(|l| l.split_whitespace().nth(2))
            .filter(|s| wanted.contains(s))
            .map(String::from)
            .collect();
        Kernel { symbols, modules_dir: Path::new("/lib/modules").join(release.trim()) }
    }

    /// "loaded", "built in", "loadable", or None when it cannot be found.
    fn feature(&self, module: &str, symbol: &str) -> Option<&'static str> {
        if Path::new("/sys/module").join(module).exists() {
            return Some("loaded");
        }
        if self.symbols.contains(symbol) {
            return Some("built in");
        }
        let listed = |file: &str| {
            std::fs::read_to_string(self.modules_dir.join(file))
                .map(|t| t.lines().any(|l| l.contains(&format!("/{module}.ko"))))
                .unwrap_or(false)
        };
        if listed("modules.builtin") {
            return Some("built in");
        }
        if listed("modules.dep") {
            return Some("loadable (loads on first use)");
        }
        None
    }
}

fn read_sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn nft_works() -> Result<(), String> {
    match std::process::Command::new("nft").args(["list", "tables"]).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        Err(e) => Err(format!("cannot run nft: {e}")),
    }
}

fn check_kernel(needs: &Needs, r: &mut Report) {
    r.section("kernel".into());
    let uses = |kinds: &[&str]| kinds.iter().any(|k| needs.kinds.contains(*k));
    let features: &[(&str, &str, &[&str])] = &[
        ("bridge", "br_dev_setup", &["bridge", "flannel"]),
        ("veth", "veth_setup", &["bridge", "ptp", "flannel"]),
        ("macvlan", "macvlan_common_newlink", &["macvlan"]),
        ("ipvlan", "ipvlan_link_new", &["ipvlan"]),
        ("8021q", "register_vlan_dev", &["vlan"]),
        ("vrf", "vrf_dev_init", &["vrf"]),
        ("ifb", "ifb_setup", &["bandwidth"]),
        ("sch_tbf", "tbf_enqueue", &["bandwidth"]),
    ];
    let wanted: Vec<&str> = features.iter().map(|(_, symbol, _)| *symbol).collect();
    let kernel = Kernel::probe(&wanted);
    for (module, symbol, kinds) in features {
        if !uses(kinds) {
            continue;
        }
        match kernel.feature(module, symbol) {
            Some(state) => r.add(Level::Ok, format!("{module}: {state}")),
            None => r.add(Level::Fail, format!("{module}: not available, but {} configs need it", kinds.join("/"))),
        }
    }
    match nft_works() {
        Ok(()) => r.add(Level::Ok, "nftables: working (nft list tables)".into()),
        Err(e) if needs.masquerade => {
            r.add(Level::Fail, format!("nftables: not usable, but configs masquerade or map ports: {e}"))
        }
        Err(e) => r.add(Level::Warn, format!("nftables: not usable: {e}")),
    }
    let routed = uses(&["bridge", "ptp", "flannel", "portmap", "macvlan", "ipvlan"]);
    match read_sysctl("/proc/sys/net/ipv4/ip_forward").as_deref() {
        Some("1") => r.add(Level::Ok, "net.ipv4.ip_forward = 1".into()),
        Some(v) if routed => r.add(
            Level::Warn,
            format!("net.ipv4.ip_forward = {v}: pods cannot reach beyond the node until a gateway plugin enables it"),
        ),
        Some(v) => r.add(Level::Ok, format!("net.ipv4.ip_forward = {v} (no config needs forwarding)")),
        None => r.add(Level::Warn, "net.ipv4.ip_forward cannot be read".into()),
    }
    // The sysctl exists exactly when br_netfilter is active.
    match read_sysctl("/proc/sys/net/bridge/bridge-nf-call-iptables").as_deref() {
        Some("1") => r.add(Level::Ok, "net.bridge.bridge-nf-call-iptables = 1".into()),
        Some(v) if uses(&["bridge", "flannel"]) => r.add(
            Level::Warn,
            format!(
                "net.bridge.bridge-nf-call-iptables = {v}: bridged pod traffic bypasses kube-proxy and network policy"
            ),
        ),
        Some(v) => r.add(Level::Ok, format!("net.bridge.bridge-nf-call-iptables = {v}")),
        None => r.add(Level::Ok, "br_netfilter not loaded (bridge-nf-call-iptables does not apply)".into()),
    }
}

/// Container IDs the node still knows: cached attachments, and netns named
/// after a container; and the addresses of the cached attachments.
struct Known {
    containers: BTreeSet<String>,
    addresses: BTreeSet<IpAddr>,
}

impl Known {
    fn load(cache: &Cache) -> Known {
        let entries = cache.list();
        let results = entries.iter().filter_map(|e| e.result.as_ref());
        let addresses = results
            .filter_map(|r| crate::cni::version::parse_result(r, "1.0.0").ok())
            .flat_map(|r| r.ips.into_iter().map(|ip| ip.address.addr()))
            .collect();
        Known { containers: entries.into_iter().map(|e| e.container_id).collect(), addresses }
    }
    fn alive(&self, container_id: &str) -> bool {
        self.containers.contains(container_id) || Path::new("/run/netns").join(container_id).exists()
    }
}

/// host-local's reservation files: `<dir>/<network>/<ip>` holding the
/// container ID on the first line.
fn leaked_reservations(dir: &Path, known: &Known) -> Vec<(PathBuf, String)> {
    let mut leaks = Vec::new();
    for network in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if !network.path().is_dir() {
            continue;
        }
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(network.path()).into_iter().flatten().flatten().map(|e| e.path()).collect();
        files.sort();
        for file in files {
            let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.parse::<std::net::IpAddr>().is_err() {
                continue; // lock, last_reserved_ip.N
            }
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let id = text.lines().next().unwrap_or("").trim().to_string();
            if !id.is_empty() && !known.alive(&id) {
                leaks.push((file, id));
            }
        }
    }
    leaks
}

/// Whose object a comment in a cnibox table says it is.
#[derive(Debug, PartialEq)]
enum CommentOwner<'a> {
    /// `<network> <containerID> <ifname>`: one container's.
    Container(&'a str),
    /// `<network> <subnet>`: a network's, e.g. the masquerade rule of one subnet.
    Network { network: &'a str, subnet: &'a str },
    /// Hashed parts, or not a comment of ours: cannot be told here.
    Unknown,
}

fn comment_owner(comment: &str) -> CommentOwner<'_> {
    let parts: Vec<&str> = comment.split(' ').collect();
    match parts.as_slice() {
        [_, id, _] if !id.is_empty() && !id.starts_with('#') => CommentOwner::Container(id),
        [network, subnet] if subnet.parse::<ipnet::IpNet>().is_ok() => CommentOwner::Network { network, subnet },
        _ => CommentOwner::Unknown,
    }
}

/// An object in a cnibox nft table that nothing uses any more.
struct NftLeak {
    level: Level,
    what: String,
}

/// What `listing` of cnibox table `table` holds for containers that are
/// gone: elements and rules of a container (Fail), and per-network objects
/// no container uses any more (Warn: the network's next DEL or GC removes
/// them).
fn leaks_in(table: &str, listing: &crate::nft::Listing, known: &Known) -> Vec<NftLeak> {
    let mut out = Vec::new();
    let elements = listing.elements();
    let comments = elements.iter().filter_map(|e| e.comment.clone());
    for comment in comments.chain(listing.rules().into_iter().filter_map(|r| r.comment)) {
        if let CommentOwner::Container(id) = comment_owner(&comment) {
            if !known.alive(id) {
                let what =
                    format!("nft table {table}: element/rule {comment:?} belongs to container {id}, which is gone");
                out.push(NftLeak { level: Level::Fail, what });
            }
        }
    }
    for rule in listing.rules() {
        let Some(comment) = rule.comment.as_deref() else { continue };
        let CommentOwner::Network { network, subnet } = comment_owner(comment) else { continue };
        // The masquerade chain of a subnet matches the set of the same name.
        if !elements.iter().any(|e| e.set == rule.chain) {
            out.push(NftLeak {
                level: Level::Warn,
                what: format!(
                    "nft table {table}: chain {} (network {network}, subnet {subnet}) serves no container any more",
                    rule.chain
                ),
            });
        }
    }
    let jumped: BTreeSet<&str> = elements.iter().filter_map(|e| e.jump_target()).collect();
    for chain in listing.chains().iter().filter(|c| c.starts_with("hairpin-") && !jumped.contains(c.as_str())) {
        out.push(NftLeak {
            level: Level::Warn,
            what: format!(
                "nft table {table}: chain {chain} (one subnet's hairpin masquerade) serves no container any more"
            ),
        });
    }
    out
}

/// What the cnibox nft tables hold for containers that are gone.
fn leaked_nft(known: &Known) -> Vec<NftLeak> {
    let Ok(tables) = crate::nft::exec::tables() else { return Vec::new() };
    let mut leaks = Vec::new();
    for (family, name) in tables.into_iter().filter(|(_, name)| name.starts_with("cnibox-")) {
        let Ok(Some(listing)) = crate::nft::exec::list(family, &name) else { continue };
        leaks.extend(leaks_in(&format!("{} {name}", crate::nft::schema::family_str(family)), &listing, known));
    }
    leaks
}

fn check_leaks(o: &Options, needs: &Needs, r: &mut Report) {
    r.section("leaked state".into());
    let cache = Cache::new(&o.cache_dir);
    let known = Known::load(&cache);
    r.add(Level::Ok, format!("{} cached attachments in {}", known.containers.len(), cache.results_dir().display()));
    let mut dirs: BTreeSet<PathBuf> = needs.ipam_dirs.clone();
    dirs.insert(o.ipam_dir.clone());
    let mut reservations = 0;
    for dir in &dirs {
        for (file, id) in leaked_reservations(dir, &known) {
            r.add(
                Level::Fail,
                format!("host-local reservation {} held by container {id}, which is in no cached attachment and has no netns", file.display()),
            );
            reservations += 1;
        }
    }
    if reservations == 0 {
        let list: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        r.add(Level::Ok, format!("no leaked host-local reservations in {}", list.join(", ")));
    }
    let nft = leaked_nft(&known);
    for leak in &nft {
        r.add(leak.level, leak.what.clone());
    }
    if nft.is_empty() {
        r.add(Level::Ok, "no leaked elements in cnibox-* nft tables".into());
    }
    check_reference_leftovers(&known, r);
}

/// The reference plugins' per-container iptables chains and nftables rules
/// (a node that switched) of containers that are gone, and the firewall's
/// CNI-FORWARD accepts of addresses no container holds.
fn check_reference_leftovers(known: &Known, r: &mut Report) {
    let mut nft = crate::nft::backend();
    let leftovers = match crate::nft::takeover::leftovers(&mut *nft) {
        Ok(all) => all,
        Err(e) => return r.add(Level::Warn, format!("the reference plugins' state cannot be read: {e}")),
    };
    let gone: Vec<_> = leftovers.iter().filter(|l| !known.alive(&l.container_id)).collect();
    for l in &gone {
        r.add(
            Level::Fail,
            format!("{}: the reference plugins' state for container {}, which is gone", l.place, l.container_id),
        );
    }
    if gone.is_empty() {
        r.add(Level::Ok, "no leftovers of the reference plugins' per-container iptables/nftables state".into());
    }
    match unheld_forward_accepts(&mut *nft, known) {
        Ok(unheld) if unheld.is_empty() => r.add(Level::Ok, "every CNI-FORWARD accept is of a known container".into()),
        Ok(unheld) => {
            for (ipt, ip) in unheld {
                r.add(
                    Level::Fail,
                    format!(
                        "{ipt} filter CNI-FORWARD: accepts for {ip}, which no cached attachment and no cnibox firewall element holds"
                    ),
                );
            }
        }
        Err(e) => r.add(Level::Warn, format!("CNI-FORWARD cannot be read: {e}")),
    }
}

/// The addresses CNI-FORWARD accepts (the reference's firewall, or
/// cnibox's) that neither a cached attachment nor cnibox's firewall table
/// holds. (An element of a gone container is reported with the cnibox
/// tables.)
fn unheld_forward_accepts(
    nft: &mut dyn crate::nft::Backend,
    known: &Known,
) -> Result<Vec<(crate::nft::iptables::Iptables, IpAddr)>, crate::nft::Error> {
    let accepted = crate::nft::cni_forward::accepted_addresses(nft)?;
    if accepted.is_empty() {
        return Ok(accepted);
    }
    let held = crate::nft::cni_forward::held_addresses(nft)?;
    Ok(accepted.into_iter().filter(|(_, ip)| !known.addresses.contains(ip) && !held.contains(ip)).collect())
}

pub fn main(args: &[String]) -> i32 {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{USAGE}");
        return 0;
    }
    let o = match parse_options(args) {
        Ok(o) => o,
        Err(e) => {
            eprint!("cnibox doctor: {e}\n{USAGE}");
            return 2;
        }
    };
    let mut r = Report::default();
    check_bin_dir(&o, &mut r);
    let needs = check_configs(&o, &mut r);
    check_kernel(&needs, &mut r);
    check_leaks(&o, &needs, &mut r);
    println!("cnibox doctor v{}", env!("CARGO_PKG_VERSION"));
    for line in &r.lines {
        println!("{line}");
    }
    println!("{} problem(s), {} warning(s)", r.problems, r.warnings);
    i32::from(r.problems > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let args: Vec<String> = ["--bin-dir", "/b", "--conf-dir=/c"].iter().map(|s| s.to_string()).collect();
        let o = parse_options(&args).unwrap();
        assert_eq!((o.bin_dir, o.conf_dir), (PathBuf::from("/b"), PathBuf::from("/c")));
        assert!(parse_options(&["--bogus".to_string()]).is_err());
        assert!(parse_options(&["--bin-dir".to_string()]).is_err());
    }

    #[test]
    fn binaries_a_network_needs() {
        let list = NetworkList::from_bytes(
            br#"{"cniVersion":"1.0.0","name":"n","plugins":[
                {"type":"flannel","delegate":{"hairpinMode":true}},
                {"type":"portmap","capabilities":{"portMappings":true}},
                {"type":"bridge","ipam":{"type":"static"}}]}"#,
        )
        .unwrap();
        assert_eq!(needed_binaries(&list), ["flannel", "bridge", "host-local", "portmap", "static"]);
        let mut needs = Needs::default();
        for p in &list.plugins {
            gather_needs(p, &mut needs);
        }
        assert!(needs.masquerade && needs.kinds.contains("bridge"));
    }

    #[test]
    fn owner_comments_from_a_listing() {
        let listing = serde_json::json!({"nftables": [
            {"table": {"family": "inet", "name": "cnibox-x"}},
            {"set": {"name": "s", "comment": "not an owner", "elem": [
                {"elem": {"val": "10.0.0.1", "comment": "net c1 eth0"}}, "10.0.0.2"]}},
            {"map": {"name": "m", "elem": [[{"elem": {"val": 80, "comment": "net c2 eth0"}}, "x"]]}},
            {"rule": {"chain": "c", "handle": 4, "comment": "net c3 eth0"}}
        ]});
        let listing = crate::nft::Listing::parse(&listing.to_string()).unwrap();
        assert_eq!(listing.comments(), ["net c1 eth0", "net c2 eth0", "net c3 eth0"]);
        assert_eq!(listing.tables(), [(nftables::types::NfFamily::INet, "cnibox-x".to_string())]);
    }

    #[test]
    fn per_network_objects_are_told_from_per_container_ones() {
        assert_eq!(comment_owner("pods c1 eth0"), CommentOwner::Container("c1"));
        assert_eq!(
            comment_owner("pods 10.88.0.0/16"),
            CommentOwner::Network { network: "pods", subnet: "10.88.0.0/16" }
        );
        assert_eq!(comment_owner("pods #0123abcd"), CommentOwner::Unknown);
        let listing = crate::nft::Listing::parse(
            &serde_json::json!({"nftables": [
                {"set": {"name": "m_a", "elem": []}},
                {"chain": {"name": "m_a"}},
                {"rule": {"chain": "m_a", "handle": 2, "comment": "pods 10.88.0.0/16"}},
                {"set": {"name": "m_b", "elem": [{"elem": {"val": "10.89.0.2", "comment": "other c7 eth0"}}]}},
                {"rule": {"chain": "m_b", "handle": 3, "comment": "other 10.89.0.0/16"}},
                {"map": {"name": "masq-net-v4", "elem": [[{"elem": {"val": "10.89.0.2", "comment": "other c7 eth0"}},
                                                          {"jump": {"target": "hairpin-1"}}]]}},
                {"chain": {"name": "hairpin-1"}},
                {"chain": {"name": "hairpin-2"}}
            ]})
            .to_string(),
        )
        .unwrap();
        let known = Known { containers: BTreeSet::from(["c7".to_string()]), addresses: BTreeSet::new() };
        let leaks: Vec<String> = leaks_in("inet t", &listing, &known).into_iter().map(|l| l.what).collect();
        assert_eq!(leaks.len(), 2, "{leaks:?}");
        assert!(leaks[0].contains("chain m_a (network pods, subnet 10.88.0.0/16) serves no container"));
        assert!(leaks[1].contains("chain hairpin-2"));
        let gone = Known { containers: BTreeSet::new(), addresses: BTreeSet::new() };
        let leaks: Vec<String> = leaks_in("inet t", &listing, &gone).into_iter().map(|l| l.what).collect();
        assert!(leaks.iter().any(|l| l.contains("belongs to container c7")), "{leaks:?}");
        assert!(!leaks.iter().any(|l| l.contains("container 10.")), "{leaks:?}");
    }
}
