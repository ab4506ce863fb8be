//! Coexisting with iptables: the firewall plugin opens the way through an
//! iptables FORWARD that drops (dockerd's policy, a firewall script's last
//! rule; iptables-nft and iptables-legacy), with the reference's CNI-FORWARD
//! rules, and DEL leaves the foreign filter as it was.
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
/// fd50::2) and the directories a runtime keeps; one network of bridge
/// (isGateway, ipMasq) + `plugins`.
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
        let mut list = vec![json!({
            "type": "bridge", "bridge": unique("itbr"), "isGateway": true, "ipMasq": true,
            "ipam": {"type": "host-local", "dataDir": node.data.path().join("ipam"),
                     "ranges": [[{"subnet": "10.251.0.0/24"}], [{"subnet": "fd51::/64"}]],
                     "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}
        })];
        list.extend(plugins.as_array().unwrap().iter().cloned());
        let conflist = json!({"cniVersion": "1.0.0", "name": node.network, "plugins": list});
        std::fs::write(node.conf_dir.path().join("10-it.conflist"), conflist.to_string()).unwrap();
        node
    }

    /// `cnibox cnitool VERB NETWORK NETNS` inside the fake host, with the
    /// plugins of `cni_path`; the result, or panics.
    fn cnitool(&self, cni_path: &str, verb: &str, container: &Netns) -> Value {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.host.name])
            .arg(plugin_dir().join("cnitool"))
            .args([verb, &self.network, &container.path()])
            .env("NETCONFPATH", self.conf_dir.path())
            .env("CNI_PATH", cni_path)
            .env("CNI_CACHE_DIR", self.cache.path())
            .env("CNIBOX_LOG", "debug")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cnitool {verb} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
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

/// A pod on bridge + firewall reaches the outside machine through a FORWARD
/// that `setup` makes drop (in iptables `tool`: iptables-nft or
/// iptables-legacy), and DEL leaves that filter as it was.
fn reaches_the_outside_through(tool: &str, setup: &str) {
    let node = Node::new(firewall_chain());
    node.host.exec(&setup.replace("{ip}", &format!("{tool}")).replace("{ip6}", &format!("ip6{}", &tool[2..])));
    let before = [node.save(tool, "filter"), node.save(&format!("ip6{}", &tool[2..]), "filter")];
    let pod = no_dad(Netns::new("itc"));
    node.cnitool(&cni_path(), "add", &pod);
    assert_eq!(tcp_get(&pod.name, &format!("10.250.0.2:{OUTSIDE_PORT}")).as_deref(), Some("outside"), "{tool}: IPv4");
    assert_eq!(tcp_get(&pod.name, &format!("[fd50::2]:{OUTSIDE_PORT}")).as_deref(), Some("outside"), "{tool}: IPv6");
    let during = node.save(tool, "filter");
    assert!(
        during.contains("-A FORWARD -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD"),
        "{during}"
    );
    assert!(during.contains("-s 10.251.0.2/32 -j ACCEPT"), "{during}");
    node.cnitool(&cni_path(), "check", &pod);

    // Without its accepts, the pod is cut off: they are what opens the way.
    node.host.exec(&format!("{tool} -w -D CNI-FORWARD -s 10.251.0.2/32 -j ACCEPT"));
    assert_eq!(tcp_get(&pod.name, &format!("10.250.0.2:{OUTSIDE_PORT}")), None, "{tool}");
    node.host.exec(&format!("{tool} -w -A CNI-FORWARD -s 10.251.0.2/32 -j ACCEPT"));

    node.cnitool(&cni_path(), "del", &pod);
    let after = [node.save(tool, "filter"), node.save(&format!("ip6{}", &tool[2..]), "filter")];
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
