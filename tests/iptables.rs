//! Coexisting with iptables: the firewall plugin opens the way through an
//! iptables FORWARD that drops (dockerd's policy, a firewall script's last
//! rule; iptables-nft and iptables-legacy), with the reference's CNI-FORWARD
//! rules, and DEL leaves the foreign filter as it was.
//!
//! Taking over the reference's state: the reference plugins (/usr/lib/cni)
//! ADD, cnibox DELs (or GCs), and nothing naming the container is left.
//!
//! Every iptables command runs inside the fake host netns (iptables and nft
//! state is per netns).

mod common;
mod netfixture;

use std::process::Command;

use common::*;
use netfixture::{no_dad, serve, tcp_get};
use serde_json::{json, Value};

const OUTSIDE_PORT: u16 = 8000;

/// A fake node: the host netns, an outside machine behind it (10.250.0.2,
/// fd50::2) and the directories a runtime keeps; one network of `main`
/// ("bridge" with isGateway, or "ptp"; ipMasq) + `plugins`.
struct Node {
    host: Netns,
    _outside: Netns,
    conf_dir: TempDir,
    cache: TempDir,
    data: TempDir,
    network: String,
}

impl Node {
    fn new(plugins: Value) -> Node {
        Node::with_main("bridge", plugins)
    }

    fn with_main(main: &str, plugins: Value) -> Node {
        let host = no_dad(Netns::new("ith"));
        let outside = no_dad(Netns::new("ito"));
        let link = unique("itv");
        host.exec(&format!("ip link add {link} type veth peer name eth9 netns {}", outside.name));
        host.exec(&format!("ip addr add 10.250.0.1/24 dev {link}"));
        host.exec(&format!("ip addr add fd50::1/64 dev {link} nodad"));
        host.exec(&format!("ip link set {link} up"));
        host.exec("sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1");
        outside.exec("ip addr add 10.250.0.2/24 dev eth9");
        outside.exec("ip addr add fd50::2/64 dev eth9 nodad");
        outside.exec("ip link set eth9 up");
        outside.exec("ip route add default via 10.250.0.1");
        outside.exec("ip -6 route add default via fd50::1");
        serve(&outside.name, OUTSIDE_PORT, "outside");
        let node = Node {
            host,
            _outside: outside,
            conf_dir: TempDir::new("it-conf"),
            cache: TempDir::new("it-cache"),
            data: TempDir::new("it-data"),
            network: unique("itnet"),
        };
        let mut first = json!({
            "type": main, "ipMasq": true,
            "ipam": {"type": "host-local", "dataDir": node.data.path().join("ipam"),
                     "ranges": [[{"subnet": "10.251.0.0/24"}], [{"subnet": "fd51::/64"}]],
                     "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}
        });
        if main == "bridge" {
            first["bridge"] = json!(unique("itbr"));
            first["isGateway"] = json!(true);
        }
        let mut list = vec![first];
        list.extend(plugins.as_array().unwrap().iter().cloned());
        let conflist = json!({"cniVersion": "1.0.0", "name": node.network, "plugins": list});
        std::fs::write(node.conf_dir.path().join("10-it.conflist"), conflist.to_string()).unwrap();
        node
    }

    /// `cnibox cnitool VERB NETWORK NETNS` inside the fake host, with the
    /// plugins of `cni_path`; the result, or panics.
    fn cnitool(&self, cni_path: &str, verb: &str, container: &Netns) -> Value {
        self.cnitool_with(cni_path, verb, &container.path(), &[])
    }

    /// The same with more environment (CAP_ARGS, PATH), for a netns path
    /// that may be gone.
    fn cnitool_with(&self, cni_path: &str, verb: &str, netns: &str, env: &[(&str, String)]) -> Value {
        self.cnitool_logged(cni_path, verb, netns, env).0
    }

    /// The same, with the plugins' debug log.
    fn cnitool_logged(&self, cni_path: &str, verb: &str, netns: &str, env: &[(&str, String)]) -> (Value, String) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.host.name])
            .arg(plugin_dir().join("cnitool"))
            .args([verb, &self.network])
            .args((verb != "gc").then_some(netns))
            .env("NETCONFPATH", self.conf_dir.path())
            .env("CNI_PATH", cni_path)
            .env("CNI_CACHE_DIR", self.cache.path())
            .env("CNIBOX_LOG", "debug");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "cnitool {verb} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (serde_json::from_slice(&out.stdout).unwrap_or(Value::Null), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// Rewrites the network's config with another cniVersion (GC needs
    /// 1.1.0, which the installed reference plugins do not know).
    fn set_cni_version(&self, version: &str) {
        let file = self.conf_dir.path().join("10-it.conflist");
        let mut conflist: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        conflist["cniVersion"] = json!(version);
        std::fs::write(file, conflist.to_string()).unwrap();
    }

    /// `<tool>-save -t <table>` in the fake host, without comments and counters.
    fn save(&self, tool: &str, table: &str) -> String {
        let out = self.host.exec(&format!("{tool}-save -t {table}"));
        let without_counters = |l: &str| match l.rfind(" [") {
            Some(at) if l.starts_with(':') => l[..at].to_string(),
            _ => l.to_string(),
        };
        out.lines().filter(|l| !l.starts_with('#')).map(without_counters).collect::<Vec<_>>().join("\n")
    }
}

fn firewall_chain() -> Value {
    json!([{"type": "firewall"}])
}

/// Lines of a saved filter table that are not the reference's own chains and jumps.
fn foreign_lines(saved: &str) -> Vec<String> {
    saved.lines().filter(|l| !l.contains("CNI-FORWARD") && !l.contains("CNI-ADMIN")).map(str::to_string).collect()
}

/// A pod on bridge + portmap + firewall reaches the outside machine, and
/// the outside machine reaches its host port (beyond the reference, whose
/// firewall lets only replies in: plugins issue 467), through a FORWARD that
/// `setup` makes drop (in iptables `tool`: iptables-nft or
/// iptables-legacy), and DEL leaves that filter as it was.
fn reaches_the_outside_through(tool: &str, setup: &str) {
    let mut plugins = portmap_chain();
    plugins.as_array_mut().unwrap().extend(firewall_chain().as_array().unwrap().iter().cloned());
    let node = Node::new(plugins);
    let tool6 = format!("ip6{}", &tool[2..]);
    node.host.exec(&setup.replace("{ip}", tool).replace("{ip6}", &tool6));
    let before = [node.save(tool, "filter"), node.save(&tool6, "filter")];
    let pod = no_dad(Netns::new("itc"));
    serve(&pod.name, 80, "pod");
    let ports = [("CAP_ARGS", cap_args())];
    node.cnitool_with(&cni_path(), "add", &pod.path(), &ports);
    assert_eq!(tcp_get(&pod.name, &format!("10.250.0.2:{OUTSIDE_PORT}")).as_deref(), Some("outside"), "{tool}: IPv4");
    assert_eq!(tcp_get(&pod.name, &format!("[fd50::2]:{OUTSIDE_PORT}")).as_deref(), Some("outside"), "{tool}: IPv6");
    let got = tcp_get(&node._outside.name, &format!("10.250.0.1:{HOST_PORT}"));
    assert_eq!(got.as_deref(), Some("pod"), "{tool}: the host port from outside");
    let during = node.save(tool, "filter");
    assert!(
        during.contains("-A FORWARD -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD"),
        "{during}"
    );
    assert!(during.contains("-s 10.251.0.2/32 -j ACCEPT"), "{during}");
    node.cnitool_with(&cni_path(), "check", &pod.path(), &ports);

    // Without its accepts, the pod is cut off: they are what opens the way.
    node.host.exec(&format!("{tool} -w -D CNI-FORWARD -s 10.251.0.2/32 -j ACCEPT"));
    assert_eq!(tcp_get(&pod.name, &format!("10.250.0.2:{OUTSIDE_PORT}")), None, "{tool}");
    node.host.exec(&format!("{tool} -w -A CNI-FORWARD -s 10.251.0.2/32 -j ACCEPT"));

    node.cnitool_with(&cni_path(), "del", &pod.path(), &ports);
    let after = [node.save(tool, "filter"), node.save(&tool6, "filter")];
    for (before, after) in before.iter().zip(&after) {
        assert_eq!(foreign_lines(before), foreign_lines(after), "{tool}: the foreign filter changed");
        assert!(!after.contains("10.251.0.2") && !after.contains("fd51::2"), "{after}");
    }
    assert!(after[0].contains("-j CNI-FORWARD"), "CNI-FORWARD and its jump stay, as the reference leaves them");
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn dockerd_policy_with_iptables_nft() {
    require_root();
    reaches_the_outside_through("iptables-nft", "sh -c '{ip} -w -P FORWARD DROP && {ip6} -w -P FORWARD DROP'");
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn dockerd_policy_with_iptables_legacy() {
    require_root();
    reaches_the_outside_through("iptables-legacy", "sh -c '{ip} -w -P FORWARD DROP && {ip6} -w -P FORWARD DROP'");
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn drop_rule_at_the_end_of_forward() {
    require_root();
    reaches_the_outside_through("iptables-nft", "sh -c '{ip} -w -A FORWARD -j DROP && {ip6} -w -A FORWARD -j DROP'");
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn a_reject_in_a_chain_forward_jumps_to() {
    require_root();
    // As ufw writes it: FORWARD jumps to a chain of its own that rejects.
    let setup = "sh -c '{ip} -w -N ufw-user-forward && {ip} -w -A FORWARD -j ufw-user-forward && \
                 {ip} -w -A ufw-user-forward -j REJECT && {ip6} -w -N ufw-user-forward && \
                 {ip6} -w -A FORWARD -j ufw-user-forward && {ip6} -w -A ufw-user-forward -j REJECT'";
    reaches_the_outside_through("iptables-nft", setup);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn an_accepting_iptables_is_left_alone() {
    require_root();
    let node = Node::new(firewall_chain());
    node.host.exec("iptables-nft -w -A FORWARD -s 192.0.2.1/32 -j ACCEPT");
    let before = node.save("iptables-nft", "filter");
    let pod = no_dad(Netns::new("itc"));
    node.cnitool(&cni_path(), "add", &pod);
    assert_eq!(node.save("iptables-nft", "filter"), before);
    assert_eq!(node.host.exec("cat /proc/net/ip_tables_names").trim(), "", "legacy untouched");
    node.cnitool(&cni_path(), "del", &pod);
}

/// kube-proxy's FORWARD (iptables mode): it drops only conntrack-INVALID
/// packets, which is no container's traffic. The firewall leaves it alone,
/// and finds that out over nfnetlink alone: iptables-nft-save never runs.
#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn kube_proxys_forward_is_left_alone_without_a_save() {
    require_root();
    let node = Node::new(firewall_chain());
    for ip in ["iptables-nft", "ip6tables-nft"] {
        node.host.exec(&format!(
            "sh -c '{ip} -w -N KUBE-FORWARD && \
             {ip} -w -A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD && \
             {ip} -w -A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP && \
             {ip} -w -A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT && \
             {ip} -w -A KUBE-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT'"
        ));
    }
    let before = node.save("iptables-nft", "filter") + &node.save("ip6tables-nft", "filter");
    // Every iptables-nft-save the plugins run is logged.
    let shim = TempDir::new("it-shim");
    let log = shim.path().join("saves");
    for tool in ["iptables-nft-save", "ip6tables-nft-save"] {
        let wrapper = shim.path().join(tool);
        std::fs::write(&wrapper, format!("#!/bin/sh\necho $0 >> {}\nexec /usr/sbin/{tool} \"$@\"\n", log.display()))
            .unwrap();
        sh(&format!("chmod +x {}", wrapper.display()));
    }
    let path = format!("{}:{}", shim.path().display(), std::env::var("PATH").unwrap_or_default());
    let pod = no_dad(Netns::new("itc"));
    node.cnitool_with(&cni_path(), "add", &pod.path(), &[("PATH", path.clone())]);
    assert_eq!(tcp_get(&pod.name, &format!("10.250.0.2:{OUTSIDE_PORT}")).as_deref(), Some("outside"));
    node.cnitool_with(&cni_path(), "check", &pod.path(), &[("PATH", path.clone())]);
    node.cnitool_with(&cni_path(), "del", &pod.path(), &[("PATH", path)]);
    assert_eq!(node.save("iptables-nft", "filter") + &node.save("ip6tables-nft", "filter"), before);
    assert_eq!(std::fs::read_to_string(&log).unwrap_or_default(), "", "iptables-nft-save ran");
}

// --- Taking over the reference's state ---

/// Where the reference's plugins are.
const REFERENCE: &str = "/usr/lib/cni";
const HOST_PORT: u16 = 8080;

fn cap_args() -> String {
    json!({"portMappings": [{"hostPort": HOST_PORT, "containerPort": 80, "protocol": "tcp"}]}).to_string()
}

/// A PATH on which `iptables`, `ip6tables` and their -save/-restore are
/// iptables-legacy's, for the reference's plugins (they run `iptables`).
fn legacy_path(dir: &TempDir) -> String {
    for ip in ["ip", "ip6"] {
        for tool in ["", "-save", "-restore"] {
            let target = format!("/usr/sbin/{ip}tables-legacy{tool}");
            std::os::unix::fs::symlink(target, dir.path().join(format!("{ip}tables{tool}"))).unwrap();
        }
    }
    format!("{}:{}", dir.path().display(), std::env::var("PATH").unwrap_or_default())
}

/// What the reference could have left in the fake host: the nat and filter
/// tables of every iptables that has them, and nft's ruleset.
fn packet_filter_state(node: &Node) -> String {
    let mut out = String::new();
    for (ip, names) in [("ip", "ip_tables_names"), ("ip6", "ip6_tables_names")] {
        let legacy = node.host.exec(&format!("cat /proc/net/{names}"));
        for table in ["nat", "filter"] {
            out += &node.save(&format!("{ip}tables-nft"), table);
            if legacy.lines().any(|l| l == table) {
                out += &node.save(&format!("{ip}tables-legacy"), table);
            }
        }
    }
    out + &node.host.exec("nft list ruleset")
}

/// The reference's chains every container shares (they stay, as the
/// reference leaves them).
const SHARED_CHAINS: &[&str] =
    &["CNI-FORWARD", "CNI-ADMIN", "CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ"];

/// Panics when `state` names a container (its ID, its addresses, a
/// per-container chain of the reference).
fn assert_nothing_of_the_container(state: &str, what: &str) {
    for ip in ["10.251.0.2", "fd51::2"] {
        assert!(
            !state.contains(&format!("{ip}/")) && !state.contains(&format!("{ip}:")),
            "{what}: {ip} left:\n{state}"
        );
    }
    assert!(!state.contains("cnitool-"), "{what}: a container ID left:\n{state}");
    for word in state.split(|c: char| c.is_whitespace() || c == '"' || c == ',') {
        if word.starts_with("CNI-") && !word.contains(' ') {
            assert!(SHARED_CHAINS.contains(&word), "{what}: chain {word} left:\n{state}");
        }
    }
}

/// How cnibox is told the container is gone.
#[derive(Clone, Copy, Debug)]
enum Teardown {
    Del,
    /// DEL after the container's netns was deleted.
    DelNetnsGone,
    /// The runtime's GC (libcni's: a DEL for each stale attachment it
    /// cached, then GC), the container's netns gone.
    GcCached,
    /// GC, the runtime having forgotten the container (and its netns gone):
    /// only the reference's state tells what was the container's.
    Gc,
}

/// The reference ADDs a pod on `main` + `plugins` (through iptables-legacy
/// when `legacy`); cnibox tears it down as `how` says; nothing naming the
/// container is left. Returns the node for more checks.
fn reference_add_cnibox_teardown(main: &str, plugins: Value, legacy: bool, how: Teardown) -> Node {
    let node = Node::with_main(main, plugins);
    let path_dir = TempDir::new("it-path");
    let mut env = vec![("CAP_ARGS", cap_args())];
    if legacy {
        env.push(("PATH", legacy_path(&path_dir)));
    }
    let pod = no_dad(Netns::new("itc"));
    let result = node.cnitool_with(REFERENCE, "add", &pod.path(), &env);
    let what = format!("{main} {} legacy={legacy} {how:?}", node.network);
    assert_eq!(result["ips"][0]["address"], "10.251.0.2/24", "{what}");
    let made = packet_filter_state(&node);
    assert!(made.contains("10.251.0.2"), "{what}: the reference made no rules:\n{made}");
    let reference_tool = if legacy { "iptables-legacy" } else { "iptables-nft" };
    assert!(node.save(reference_tool, "nat").contains("10.251.0.2/32"), "{what}: not in {reference_tool}");
    let netns = pod.path();
    let log = match how {
        Teardown::Del => node.cnitool_logged(&cni_path(), "del", &netns, &env).1,
        Teardown::DelNetnsGone => {
            drop(pod);
            node.cnitool_logged(&cni_path(), "del", &netns, &env).1
        }
        Teardown::GcCached => {
            drop(pod);
            node.set_cni_version("1.1.0");
            node.cnitool_logged(&cni_path(), "gc", "", &env).1
        }
        Teardown::Gc => {
            drop(pod);
            sh(&format!("rm -rf {}/results", node.cache.path().display()));
            node.set_cni_version("1.1.0");
            node.cnitool_logged(&cni_path(), "gc", "", &env).1
        }
    };
    // The kernel's chain names showed the reference's legacy chains, so
    // they were listed (a check of the count that
    // iptables_without_the_reference_costs_no_save expects to be 0).
    assert!(!legacy || iptables_execs(&log, "legacy-save") > 0, "{what}: no iptables-legacy-save:\n{log}");
    assert_nothing_of_the_container(&packet_filter_state(&node), &what);
    node
}

fn each_teardown(main: &str, plugins: Value) {
    for legacy in [false, true] {
        for how in [Teardown::Del, Teardown::DelNetnsGone, Teardown::GcCached, Teardown::Gc] {
            reference_add_cnibox_teardown(main, plugins.clone(), legacy, how);
        }
    }
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn reference_bridge_ip_masq_is_taken_over() {
    require_root();
    each_teardown("bridge", json!([]));
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn reference_ptp_ip_masq_is_taken_over() {
    require_root();
    each_teardown("ptp", json!([]));
}

fn portmap_chain() -> Value {
    json!([{"type": "portmap", "capabilities": {"portMappings": true}}])
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn reference_portmap_is_taken_over_and_the_port_serves_a_new_pod() {
    require_root();
    each_teardown("bridge", portmap_chain());
    for legacy in [false, true] {
        let node = reference_add_cnibox_teardown("bridge", portmap_chain(), legacy, Teardown::Del);
        // A cnibox pod on the same host port gets the traffic.
        let pod = no_dad(Netns::new("itc"));
        serve(&pod.name, 80, "new pod");
        node.cnitool_with(&cni_path(), "add", &pod.path(), &[("CAP_ARGS", cap_args())]);
        let got = tcp_get(&node._outside.name, &format!("10.250.0.1:{HOST_PORT}"));
        assert_eq!(got.as_deref(), Some("new pod"), "legacy={legacy}");
        node.cnitool_with(&cni_path(), "del", &pod.path(), &[("CAP_ARGS", cap_args())]);
    }
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn reference_firewall_accepts_are_taken_over() {
    require_root();
    // The reference's firewall names no container in its accepts: DEL finds
    // them by address (prevResult); GC by the address the container's
    // masquerade jump names.
    each_teardown("bridge", firewall_chain());
}

/// A node that never ran the reference, whose legacy nat and filter tables
/// are loaded (dockerd on iptables-legacy) with chains of their own, and
/// whose iptables-nft nat holds dockerd's: DEL of bridge (ipMasq), portmap
/// and firewall lists no legacy table, as the chains it looks for are not
/// among the kernel's chain names, and GC lists no nat table at all, as
/// none holds a chain named as the reference's per-container chains are.
#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn iptables_without_the_reference_costs_no_save() {
    require_root();
    let node = Node::new(json!([{"type": "portmap", "capabilities": {"portMappings": true}}, {"type": "firewall"}]));
    for tool in ["iptables-legacy", "ip6tables-legacy"] {
        node.host.exec(&format!("{tool} -w -t nat -N CNI-TEST-1"));
        node.host.exec(&format!("{tool} -w -t filter -N CNI-TEST-2"));
    }
    // And iptables-nft's nat as dockerd writes it: its chains, POSTROUTING's masquerade.
    for tool in ["iptables-nft", "ip6tables-nft"] {
        node.host.exec(&format!("{tool} -w -t nat -N DOCKER"));
        node.host.exec(&format!("{tool} -w -t nat -A POSTROUTING -o eth9 -j MASQUERADE"));
    }
    let env = [("CAP_ARGS", cap_args())];
    let pod = no_dad(Netns::new("itc"));
    node.cnitool_with(&cni_path(), "add", &pod.path(), &env);
    let (_, log) = node.cnitool_logged(&cni_path(), "del", &pod.path(), &env);
    assert_eq!(iptables_execs(&log, "legacy-save"), 0, "{log}");
    // GC, which knows no container's chain names, lists no nat table either.
    node.set_cni_version("1.1.0");
    let (_, log) = node.cnitool_logged(&cni_path(), "gc", "", &env);
    assert_eq!(iptables_execs(&log, "legacy-save") + iptables_execs(&log, "nft-save"), 0, "{log}");
    for tool in ["iptables-legacy", "ip6tables-legacy"] {
        assert!(node.save(tool, "nat").contains(":CNI-TEST-1"), "{tool}: foreign chain removed");
        assert!(node.save(tool, "filter").contains(":CNI-TEST-2"), "{tool}: foreign chain removed");
    }
}

/// The first 16 hex digits of the SHA-512 of `s` (the reference's
/// MustFormatHashWithPrefix(16, "", s)).
fn hash16(s: &str) -> String {
    sh(&format!("printf %s '{s}' | sha512sum")).chars().take(16).collect()
}

/// The nftables ipMasq comment of newer reference releases for one attachment.
fn reference_masq_comment(network: &str, ifname: &str, id: &str) -> String {
    format!("{}-{}, net: {network}, if: {ifname}, id: {id}", hash16(network), hash16(&format!("{ifname}:{id}")))
}

/// Writes the state newer reference releases' nftables backends keep for
/// container `id` (address 10.251.0.<n>): a masquerade rule in `inet
/// cni_plugins_masquerade` and DNAT and masquerading rules in `ip
/// cni_hostport`, laid out and commented as theirs are.
fn reference_nft_state(host: &Netns, network: &str, id: &str, n: u8) {
    let masq = reference_masq_comment(network, "eth0", id);
    let script = format!(
        "add table inet cni_plugins_masquerade
add chain inet cni_plugins_masquerade masq_checks
add chain inet cni_plugins_masquerade postrouting {{ type nat hook postrouting priority srcnat; }}
add rule inet cni_plugins_masquerade postrouting goto masq_checks
add rule inet cni_plugins_masquerade masq_checks ip saddr 10.251.0.{n} ip daddr != 10.251.0.0/24 masquerade comment \"{masq}\"
add table ip cni_hostport
add chain ip cni_hostport hostports
add chain ip cni_hostport hostip_hostports
add chain ip cni_hostport masquerading {{ type nat hook postrouting priority srcnat; }}
add rule ip cni_hostport hostports tcp dport {port} dnat to 10.251.0.{n}:80 comment \"{id}\"
add rule ip cni_hostport masquerading ip saddr 10.251.0.{n} ip daddr 10.251.0.{n} masquerade comment \"{id}\"
",
        port = 9000 + u16::from(n)
    );
    let file = TempDir::new("it-nft");
    std::fs::write(file.path().join("state.nft"), script).unwrap();
    host.exec(&format!("nft -f {}", file.path().join("state.nft").display()));
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn reference_nftables_state_is_taken_over_by_del_and_gc() {
    require_root();
    let host = Netns::new("ith");
    let data = TempDir::new("it-data");
    let network = unique("itnft");
    let (gone, deleted, valid) = ("gone-c1", "del-c2", "valid-c3");
    for (id, n) in [(gone, 2), (deleted, 3), (valid, 4)] {
        reference_nft_state(&host, &network, id, n);
    }
    let conf = |plugin: &str, version: &str, extra: Value| {
        let mut c = json!({"cniVersion": version, "name": network, "type": plugin});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c.to_string()
    };
    let bridge = json!({"bridge": unique("itbr"), "ipMasq": true,
                        "ipam": {"type": "host-local", "dataDir": data.path(), "subnet": "10.251.0.0/24"}});
    let call = |plugin: &str, id: &str| {
        Call::new(plugin).container(id, "", "eth0").in_netns(&host).env("CNI_PATH", &cni_path())
    };
    // DEL of one container (its netns long gone).
    call("bridge", deleted).run("DEL", &conf("bridge", "1.0.0", bridge.clone())).ok();
    call("portmap", deleted).run("DEL", &conf("portmap", "1.0.0", json!({}))).ok();
    let rules = host.exec("nft list ruleset");
    assert!(!rules.contains(deleted) && !rules.contains("10.251.0.3"), "{rules}");
    assert!(rules.contains(gone) && rules.contains(valid), "{rules}");
    // GC with only `valid` valid: the masquerade rule of `gone` goes, and
    // with it its portmap rules (they name only the container).
    let attachments = json!({"cni.dev/valid-attachments": [{"containerID": valid, "ifname": "eth0"}]});
    let mut gc_bridge = bridge.clone();
    gc_bridge["cni.dev/valid-attachments"] = attachments["cni.dev/valid-attachments"].clone();
    Call::new("bridge")
        .in_netns(&host)
        .env("CNI_PATH", &cni_path())
        .run("GC", &conf("bridge", "1.1.0", gc_bridge))
        .ok();
    let masq = host.exec("nft list table inet cni_plugins_masquerade");
    assert!(!masq.contains(gone) && masq.contains(valid), "{masq}");
    let hostport = host.exec("nft list table ip cni_hostport");
    assert!(!hostport.contains(gone) && !hostport.contains("10.251.0.2"), "{hostport}");
    assert!(hostport.contains(valid), "{hostport}");
    // portmap's own GC cannot tell whose its rules are: it leaves `valid`'s.
    Call::new("portmap").in_netns(&host).run("GC", &conf("portmap", "1.1.0", attachments)).ok();
    assert!(host.exec("nft list table ip cni_hostport").contains(valid));
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn doctor_lists_what_the_reference_left_for_gone_containers() {
    require_root();
    let mut plugins = portmap_chain();
    plugins.as_array_mut().unwrap().extend(firewall_chain().as_array().unwrap().iter().cloned());
    let node = Node::new(plugins);
    let pod = no_dad(Netns::new("itc"));
    node.cnitool_with(REFERENCE, "add", &pod.path(), &[("CAP_ARGS", cap_args())]);
    reference_nft_state(&node.host, &node.network, "nft-gone", 9);
    let doctor = |what: &str| {
        let out = node.host.exec(&format!(
            "{} doctor --cache-dir {} --conf-dir {} --bin-dir {} || true",
            BIN,
            node.cache.path().display(),
            node.conf_dir.path().display(),
            plugin_dir().display()
        ));
        out.lines().filter(|l| l.contains(what)).map(str::to_string).collect::<Vec<_>>()
    };
    // The pod lives (it is cached): only the nftables leftovers are reported.
    let leftovers = doctor("the reference plugins' state");
    assert!(leftovers.iter().all(|l| l.contains("nft-gone")), "{leftovers:?}");
    assert_eq!(leftovers.len(), 3, "{leftovers:?}");
    assert_eq!(doctor("CNI-FORWARD: accepts for"), Vec::<String>::new());
    // The runtime forgot the pod: its nat chains are reported too.
    sh(&format!("rm -rf {}/results", node.cache.path().display()));
    let leftovers = doctor("the reference plugins' state");
    assert!(leftovers.iter().any(|l| l.contains("iptables-nft nat CNI-DN-")), "{leftovers:?}");
    assert!(leftovers.iter().any(|l| l.contains("ip6tables-nft nat CNI-")), "{leftovers:?}");
    // And the firewall's accepts of its addresses, which name no container.
    let accepts = doctor("CNI-FORWARD: accepts for");
    assert!(
        accepts.iter().any(|l| l.contains("FAIL") && l.contains("iptables-nft filter") && l.contains("10.251.0.2")),
        "{accepts:?}"
    );
    assert!(accepts.iter().any(|l| l.contains("ip6tables-nft filter") && l.contains("fd51::2")), "{accepts:?}");
}
