//! Two flannel vxlan nodes: each a network namespace with the vxlan
//! device(s), routes, neighbour and FDB entries and masquerade rules that
//! flanneld's vxlan backend (nftables mode) would set up for the other node's
//! lease, its own subnet.env, and the stock kube-flannel conflist (flannel
//! delegating to bridge, then portmap) run by `cnibox cnitool` as the
//! runtime. Pods on different nodes reach each other with full-size packets
//! at the flannel MTU, reach the other node, a hostPort is reached from the
//! other node, and DEL leaves nothing of the pods behind. IPv4 alone and
//! dual-stack (FLANNEL_IPV6_NETWORK / FLANNEL_IPV6_SUBNET).

mod common;
mod netfixture;
use common::*;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use cnibox::cni::runtime::Attachment;
use serde_json::{json, Value};

/// kube-flannel.yml's cni-conf.json (flannel's Documentation/kube-flannel.yml,
/// written to /etc/cni/net.d/10-flannel.conflist by its init container).
const STOCK_CONFLIST: &str = r#"{
  "name": "cbr0",
  "cniVersion": "0.3.1",
  "plugins": [
    {
      "type": "flannel",
      "delegate": {
        "hairpinMode": true,
        "isDefaultGateway": true
      }
    },
    {
      "type": "portmap",
      "capabilities": {
        "portMappings": true
      }
    }
  ]
}"#;
const NETWORK_NAME: &str = "cbr0";

const UNDERLAY_MTU: u32 = 1500;
/// flanneld's vxlan encapOverhead: outer IPv4 (20), UDP (8), VXLAN (8) and
/// the inner Ethernet header (14). FLANNEL_MTU is the underlay's minus this.
const VXLAN_OVERHEAD: u32 = 50;
const FLANNEL_MTU: u32 = UNDERLAY_MTU - VXLAN_OVERHEAD;
/// Over an IPv6 underlay the outer header is 20 bytes longer. flanneld asks
/// for FLANNEL_MTU on flannel-v6.1 too, but the kernel caps a vxlan device
/// at its lower device's MTU minus the encapsulation, so IPv6 between nodes
/// has this path MTU while the pods' interfaces (one MTU for both families,
/// from FLANNEL_MTU) say FLANNEL_MTU: the pods learn it from the node's ICMPv6
/// "packet too big".
const VXLAN6_PATH_MTU: u32 = UNDERLAY_MTU - 70;
/// What `ping -s` does not count: the IP header (20, or 40 for IPv6) and ICMP's (8).
const ICMP4_HEADERS: u32 = 28;
const ICMP6_HEADERS: u32 = 48;

const FLANNEL_NETWORK: &str = "10.244.0.0/16";
const FLANNEL_IPV6_NETWORK: &str = "fd00:10:244::/56";
const HOST_PORT: u16 = 8080;
/// Where the pods' and the nodes' peer-address servers listen.
const POD_PORT: u16 = 80;
const NODE_PORT: u16 = 7000;

/// One flannel node: its netns, its number `n` (lease 10.244.n.0/24 and
/// fd00:10:244:n::/64, underlay 192.168.50.n and fd50::n) and the files a
/// node keeps: subnet.env, the CNI config dir, cnitool's cache, flannel's
/// saved delegate configs and host-local's reservations.
struct Node {
    ns: Netns,
    n: u8,
    dual_stack: bool,
    dir: TempDir,
}

impl Node {
    fn new(n: u8, dual_stack: bool) -> Node {
        let node = Node { ns: Netns::new("fln"), n, dual_stack, dir: TempDir::new("flnode") };
        // Set, not inherited: a new netns copies the host's IPv4 sysctls.
        // Strict reverse-path filtering, as many distributions ship it: a
        // pod's packet to the other node's own address is only answered
        // because flanneld's masquerade gives it this node's address.
        node.ns.exec(
            "sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
             net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.default.rp_filter=1",
        );
        std::fs::create_dir_all(node.conf_dir()).unwrap();
        node
    }

    fn underlay_ip(&self) -> String {
        format!("192.168.50.{}", self.n)
    }
    fn underlay_ip6(&self) -> String {
        format!("fd50::{}", self.n)
    }
    /// The lease's network address (flannel.1's address, the remote
    /// routes' gateway) and prefix.
    fn subnet(&self) -> (String, u8) {
        (format!("10.244.{}.0", self.n), 24)
    }
    fn subnet6(&self) -> (String, u8) {
        (format!("fd00:10:244:{}::", self.n), 64)
    }
    /// The address the bridge plugin gives cni0 (subnet.env's FLANNEL_SUBNET).
    fn gateway(&self) -> String {
        format!("10.244.{}.1", self.n)
    }
    fn gateway6(&self) -> String {
        format!("fd00:10:244:{}::1", self.n)
    }

    fn subnet_file(&self) -> PathBuf {
        self.dir.path().join("subnet.env")
    }
    fn conf_dir(&self) -> PathBuf {
        self.dir.path().join("net.d")
    }
    fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }
    fn flannel_dir(&self) -> PathBuf {
        self.dir.path().join("flannel")
    }
    fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("networks")
    }

    /// flanneld's vxlan device(s): `flannel.1` (VNI 1, the kernel's default
    /// port 8472, no learning) with the lease's network address as /32, and
    /// with IPv6 `flannel-v6.1` (also VNI 1, over the IPv6 underlay) with
    /// the v6 lease's network address as /128.
    fn add_vxlan_devices(&self) {
        let (subnet, _) = self.subnet();
        self.add_vxlan("flannel.1", &self.underlay_ip(), &format!("{subnet}/32"));
        if self.dual_stack {
            let (subnet6, _) = self.subnet6();
            self.add_vxlan("flannel-v6.1", &self.underlay_ip6(), &format!("{subnet6}/128 nodad"));
        }
    }

    fn add_vxlan(&self, dev: &str, local: &str, addr: &str) {
        self.ns.exec(&format!(
            "ip link add {dev} mtu {FLANNEL_MTU} type vxlan id 1 local {local} dev ul0 dstport 8472 nolearning"
        ));
        // flanneld turns router advertisements off on its devices.
        self.ns.exec(&format!("sh -c 'echo 0 > /proc/sys/net/ipv6/conf/{dev}/accept_ra'"));
        self.ns.exec(&format!("ip addr add {addr} dev {dev}"));
        self.ns.exec(&format!("ip link set {dev} up"));
    }

    fn mac(&self, dev: &str) -> String {
        self.ns.exec(&format!("cat /sys/class/net/{dev}/address")).trim().to_string()
    }

    /// What flanneld's lease watcher adds for another node's lease: a route
    /// to its subnet via the subnet's network address on the vxlan device
    /// (onlink), a permanent neighbour entry giving that address the remote
    /// VTEP's MAC, and an FDB entry sending that MAC to the remote node.
    fn learn_lease_of(&self, remote: &Node) {
        let (subnet, len) = remote.subnet();
        self.add_remote("flannel.1", &subnet, len, &remote.mac("flannel.1"), &remote.underlay_ip());
        if self.dual_stack {
            let (subnet6, len6) = remote.subnet6();
            self.add_remote("flannel-v6.1", &subnet6, len6, &remote.mac("flannel-v6.1"), &remote.underlay_ip6());
        }
    }

    fn add_remote(&self, dev: &str, subnet: &str, len: u8, vtep_mac: &str, underlay: &str) {
        self.ns.exec(&format!("ip route add {subnet}/{len} via {subnet} dev {dev} onlink"));
        self.ns.exec(&format!("ip neigh add {subnet} lladdr {vtep_mac} dev {dev} nud permanent"));
        self.ns.exec(&format!("bridge fdb add {vtep_mac} dev {dev} dst {underlay} self permanent"));
    }

    /// flanneld's `--ip-masq` rules in its nftables mode (tables
    /// flannel-ipv4/-ipv6): accept the flannel network in forward, no NAT
    /// inside the flannel network, masquerade pods' traffic leaving it.
    fn add_flanneld_rules(&self) {
        let (subnet, len) = self.subnet();
        let mut script = flanneld_rules("ip", FLANNEL_NETWORK, &format!("{subnet}/{len}"), "224.0.0.0/4");
        if self.dual_stack {
            let (subnet6, len6) = self.subnet6();
            script += &flanneld_rules("ip6", FLANNEL_IPV6_NETWORK, &format!("{subnet6}/{len6}"), "ff00::/8");
        }
        let file = self.dir.path().join("flanneld.nft");
        std::fs::write(&file, script).unwrap();
        self.ns.exec(&format!("nft -f {}", file.display()));
    }

    /// subnet.env as flanneld writes it (FLANNEL_SUBNET is the lease's
    /// first address, the bridge's).
    fn write_lease(&self) {
        let mut env = format!("FLANNEL_NETWORK={FLANNEL_NETWORK}\nFLANNEL_SUBNET={}/24\n", self.gateway());
        if self.dual_stack {
            let subnet6 = self.gateway6();
            env += &format!("FLANNEL_IPV6_NETWORK={FLANNEL_IPV6_NETWORK}\nFLANNEL_IPV6_SUBNET={subnet6}/64\n");
        }
        env += &format!("FLANNEL_MTU={FLANNEL_MTU}\nFLANNEL_IPMASQ=true\n");
        std::fs::write(self.subnet_file(), env).unwrap();
    }

    /// The stock conflist with this node's paths, the only difference
    /// between the nodes: flannel's `subnetFile` and `dataDir` (by default
    /// /run/flannel/subnet.env and /var/lib/cni/flannel), and host-local's
    /// `dataDir` (by default /var/lib/cni/networks, which this test must
    /// not write to) through flannel's own `ipam` section, which flannel
    /// completes with the lease's ranges and routes.
    fn write_conflist(&self) {
        let mut conf: Value = serde_json::from_str(STOCK_CONFLIST).unwrap();
        let flannel = &mut conf["plugins"][0];
        flannel["subnetFile"] = json!(self.subnet_file());
        flannel["dataDir"] = json!(self.flannel_dir());
        flannel["ipam"] = json!({"dataDir": self.ipam_dir()});
        std::fs::write(self.conf_dir().join("10-flannel.conflist"), conf.to_string()).unwrap();
    }

    /// `cnitool VERB cbr0 POD` inside the node, as the kubelet's runtime
    /// would run the chain; the reply's JSON (Null when empty).
    fn cnitool(&self, verb: &str, pod: &Netns, port_mappings: &[Value]) -> Value {
        let out = self.run_cnitool(verb, pod, port_mappings);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "cnitool {verb} on node {} failed: {stdout}{stderr}", self.n);
        serde_json::from_str(&stdout).unwrap_or(Value::Null)
    }

    fn run_cnitool(&self, verb: &str, pod: &Netns, port_mappings: &[Value]) -> std::process::Output {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns.name])
            .arg(plugin_dir().join("cnitool"))
            .args([verb, NETWORK_NAME, &pod.path()])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("NETCONFPATH", self.conf_dir())
            .env("CNI_PATH", plugin_dir())
            .env("CNI_CACHE_DIR", self.cache_dir())
            .env("CNIBOX_LOG", "info")
            // Never the real host's system bus.
            .env("DBUS_SYSTEM_BUS_ADDRESS", NO_SYSTEM_BUS);
        if !port_mappings.is_empty() {
            cmd.env("CAP_ARGS", json!({"portMappings": port_mappings}).to_string());
        }
        cmd.output().unwrap()
    }

    /// flanneld's state on its devices: routes, neighbours, FDB entries.
    fn flanneld_state(&self) -> String {
        let mut devs = vec!["flannel.1"];
        if self.dual_stack {
            devs.push("flannel-v6.1");
        }
        let shows = ["ip route show dev", "ip -6 route show dev", "ip neigh show dev", "bridge fdb show dev"];
        devs.iter().flat_map(|d| shows.map(|show| self.ns.exec(&format!("{show} {d}")))).collect()
    }
}

/// The rules flanneld's nftables mode installs for one family.
fn flanneld_rules(family: &str, cluster: &str, pods: &str, multicast: &str) -> String {
    let table = if family == "ip" { "flannel-ipv4" } else { "flannel-ipv6" };
    format!(
        "table {family} {table} {{
  chain forward {{
    type filter hook forward priority filter; policy accept;
    {family} saddr {cluster} accept
    {family} daddr {cluster} accept
  }}
  chain postrtg {{
    type nat hook postrouting priority srcnat; policy accept;
    meta mark 0x4000 return
    {family} saddr {pods} {family} daddr {cluster} return
    {family} saddr {cluster} {family} daddr {pods} return
    {family} saddr != {pods} {family} daddr {cluster} return
    {family} saddr {cluster} {family} daddr != {multicast} masquerade fully-random
    {family} saddr != {cluster} {family} daddr {cluster} masquerade fully-random
  }}
}}
"
    )
}

/// Two nodes joined by an underlay link (`ul0` on both), each with
/// flanneld's devices, the other's lease, its rules, subnet.env and the
/// conflist.
fn cluster(dual_stack: bool) -> (Node, Node) {
    let (a, b) = (Node::new(1, dual_stack), Node::new(2, dual_stack));
    sh(&format!("ip -n {} link add ul0 type veth peer name ul0 netns {}", a.ns.name, b.ns.name));
    for node in [&a, &b] {
        node.ns.exec(&format!("ip link set ul0 mtu {UNDERLAY_MTU}"));
        node.ns.exec(&format!("ip addr add {}/24 dev ul0", node.underlay_ip()));
        if dual_stack {
            node.ns.exec(&format!("ip addr add {}/64 dev ul0 nodad", node.underlay_ip6()));
        }
        node.ns.exec("ip link set ul0 up");
        node.add_vxlan_devices();
        node.add_flanneld_rules();
        node.write_lease();
        node.write_conflist();
    }
    a.learn_lease_of(&b);
    b.learn_lease_of(&a);
    (a, b)
}

fn address(result: &Value, i: usize) -> String {
    result["ips"][i]["address"].as_str().unwrap_or_else(|| panic!("no ips[{i}] in {result}")).to_string()
}

fn without_prefix(cidr: &str) -> String {
    cidr.split('/').next().unwrap().to_string()
}

/// `ping` from `ns` with the don't-fragment bit: whether it was answered,
/// and what ping said.
fn ping(ns: &Netns, dst: &str, payload: u32) -> (bool, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "ping", "-c", "1", "-W", "2", "-M", "do", "-s", &payload.to_string(), dst])
        .output()
        .unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Waits (bounded) for the first answer: the bridge's new IPv6 gateway
/// address answers neighbour solicitations only once its DAD is over.
fn first_ping(ns: &Netns, dst: &str, payload: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, out) = ping(ns, dst, payload);
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "no answer from {dst} to {}: {out}", ns.name);
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_ping(ns: &Netns, dst: &str, payload: u32) {
    let (ok, out) = ping(ns, dst, payload);
    assert!(ok, "{} bytes with DF from {} to {dst} got no answer: {out}", payload, ns.name);
}

fn assert_no_ping(ns: &Netns, dst: &str, payload: u32) {
    let (ok, out) = ping(ns, dst, payload);
    assert!(!ok, "{} bytes with DF from {} to {dst} were answered: {out}", payload, ns.name);
}

fn sorted_files(dir: &std::path::Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<String> = entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

fn mapping(host_port: u16, container_port: u16) -> Value {
    json!({"hostPort": host_port, "containerPort": container_port, "protocol": "tcp"})
}

/// What the pod's result gives it: the lease's next address in each family
/// and the interface at the flannel MTU.
fn assert_pod_addresses(node: &Node, pod: &Pod) {
    let result = &pod.result;
    assert_eq!(address(result, 0), format!("10.244.{}.2/24", node.n), "{result}");
    if node.dual_stack {
        assert_eq!(address(result, 1), format!("fd00:10:244:{}::2/64", node.n), "{result}");
    } else {
        assert_eq!(result["ips"].as_array().map(Vec::len), Some(1), "{result}");
    }
    assert_eq!(pod.ns.exec("cat /sys/class/net/eth0/mtu").trim(), FLANNEL_MTU.to_string());
}

/// A pod attached by cnitool, with the result it got.
struct Pod {
    ns: Netns,
    result: Value,
}

impl Pod {
    fn ip(&self) -> String {
        without_prefix(&address(&self.result, 0))
    }
    fn ip6(&self) -> String {
        without_prefix(&address(&self.result, 1))
    }
}

impl Node {
    fn add_pod(&self, port_mappings: &[Value]) -> Pod {
        let ns = Netns::new("flp");
        let result = self.cnitool("add", &ns, port_mappings);
        Pod { ns, result }
    }
    fn host_port(&self, port: u16) -> String {
        format!("{}:{port}", self.underlay_ip())
    }
    fn host_port6(&self, port: u16) -> String {
        format!("[{}]:{port}", self.underlay_ip6())
    }
}

fn multinode(dual_stack: bool) {
    let (node1, node2) = cluster(dual_stack);
    let flanneld_before = [node1.flanneld_state(), node2.flanneld_state()];
    let web = [mapping(HOST_PORT, POD_PORT)];
    let pod1 = node1.add_pod(&web);
    let pod2 = node2.add_pod(&[]);
    assert_pod_addresses(&node1, &pod1);
    assert_pod_addresses(&node2, &pod2);
    // The stock conflist is 0.3.1, older than CHECK: a runtime does not
    // CHECK it, and cnitool refuses to, as libcni does.
    let check = node1.run_cnitool("check", &pod1.ns, &web);
    assert!(!check.status.success() && String::from_utf8_lossy(&check.stderr).contains("does not support CHECK"));

    for (pod, port) in [(&pod1, POD_PORT), (&pod2, POD_PORT)] {
        netfixture::serve_peer(&pod.ns.name, port);
    }
    netfixture::serve_peer(&node2.ns.name, NODE_PORT);
    ipv4_across_nodes(&node1, &node2, &pod1, &pod2);
    if dual_stack {
        ipv6_across_nodes(&node1, &node2, &pod1, &pod2);
    }
    a_second_pod_leaves_the_ruleset_as_it_was(&node1, &node2, &pod1, &pod2);

    // DEL (without CAP_ARGS: cnitool's cache has ADD's) releases everything.
    node1.cnitool("del", &pod1.ns, &[]);
    node2.cnitool("del", &pod2.ns, &[]);
    assert_eq!(netfixture::tcp_get(&node2.ns.name, &node1.host_port(HOST_PORT)), None, "host port open after DEL");
    assert_released(&node1, &pod1);
    assert_released(&node2, &pod2);
    assert_eq!([node1.flanneld_state(), node2.flanneld_state()], flanneld_before, "the chain touched flanneld's state");
    // A second DEL (nothing cached now: the conflist is run) succeeds.
    node1.cnitool("del", &pod1.ns, &[]);
}

/// Pod 1 on node 1 (host port HOST_PORT) and pod 2 on node 2, both serving
/// their peer's address on POD_PORT; node 2 serves it on NODE_PORT.
fn ipv4_across_nodes(node1: &Node, node2: &Node, pod1: &Pod, pod2: &Pod) {
    // Full-size packets at the flannel MTU cross the vxlan; one byte more
    // does not leave the pod with DF set.
    first_ping(&pod1.ns, &pod2.ip(), FLANNEL_MTU - ICMP4_HEADERS);
    assert_ping(&pod2.ns, &pod1.ip(), FLANNEL_MTU - ICMP4_HEADERS);
    assert_no_ping(&pod1.ns, &pod2.ip(), FLANNEL_MTU - ICMP4_HEADERS + 1);
    assert_eq!(node1.ns.exec("cat /sys/class/net/flannel.1/mtu").trim(), FLANNEL_MTU.to_string());

    // Pod to pod: no NAT (FLANNEL_IPMASQ=true turns the bridge's ipMasq
    // off, and flanneld's rules skip the flannel network).
    let from_pod1 = |addr: String| netfixture::tcp_get(&pod1.ns.name, &addr);
    assert_eq!(from_pod1(format!("{}:{POD_PORT}", pod2.ip())), Some(pod1.ip()));
    // A pod reaches the other node, masqueraded by flanneld's rules to its
    // node's address.
    assert_eq!(from_pod1(node2.host_port(NODE_PORT)), Some(node1.underlay_ip()));

    // The host port (portmap, from the stock conflist) answers the other
    // node, the other node's pod, and the pod itself (hairpin).
    let host_port = node1.host_port(HOST_PORT);
    assert_eq!(netfixture::tcp_get(&node2.ns.name, &host_port), Some(node2.underlay_ip()));
    assert_eq!(netfixture::tcp_get(&pod2.ns.name, &host_port), Some(node2.underlay_ip()));
    assert!(from_pod1(host_port).is_some(), "no hairpin through the host port");
}

fn ipv6_across_nodes(node1: &Node, node2: &Node, pod1: &Pod, pod2: &Pod) {
    first_ping(&pod1.ns, &pod2.ip6(), VXLAN6_PATH_MTU - ICMP6_HEADERS);
    assert_ping(&pod2.ns, &pod1.ip6(), VXLAN6_PATH_MTU - ICMP6_HEADERS);
    assert_eq!(node1.ns.exec("cat /sys/class/net/flannel-v6.1/mtu").trim(), VXLAN6_PATH_MTU.to_string());
    // A packet at the pod's MTU exceeds the IPv6 path: the node says
    // "packet too big" and the pod caches the path's MTU.
    assert_no_ping(&pod1.ns, &pod2.ip6(), FLANNEL_MTU - ICMP6_HEADERS);
    let route = pod1.ns.exec(&format!("ip -6 route get {}", pod2.ip6()));
    assert!(route.contains(&format!("mtu {VXLAN6_PATH_MTU}")), "{route}");

    let from_pod1 = |addr: String| netfixture::tcp_get(&pod1.ns.name, &addr);
    assert_eq!(from_pod1(format!("[{}]:{POD_PORT}", pod2.ip6())), Some(pod1.ip6()));
    assert_eq!(from_pod1(node2.host_port6(NODE_PORT)), Some(node1.underlay_ip6()));
    let host_port = node1.host_port6(HOST_PORT);
    assert_eq!(netfixture::tcp_get(&node2.ns.name, &host_port), Some(node2.underlay_ip6()));
    assert_eq!(netfixture::tcp_get(&pod2.ns.name, &host_port), Some(node2.underlay_ip6()));
}

/// A second pod on node 1, with its own host port, reaches its neighbour
/// and the other node's pod; its DEL gives node 1 back exactly the ruleset
/// it had before its ADD.
fn a_second_pod_leaves_the_ruleset_as_it_was(node1: &Node, node2: &Node, pod1: &Pod, pod2: &Pod) {
    let rules_before = node1.ns.exec("nft list ruleset");
    let pod3 = node1.add_pod(&[mapping(HOST_PORT + 1, POD_PORT)]);
    assert_eq!(address(&pod3.result, 0), "10.244.1.3/24", "{}", pod3.result);
    assert_ping(&pod3.ns, &pod1.ip(), FLANNEL_MTU - ICMP4_HEADERS);
    assert_ping(&pod3.ns, &pod2.ip(), FLANNEL_MTU - ICMP4_HEADERS);
    netfixture::serve_peer(&pod3.ns.name, POD_PORT);
    let host_port = node1.host_port(HOST_PORT + 1);
    assert_eq!(netfixture::tcp_get(&node2.ns.name, &host_port), Some(node2.underlay_ip()));
    node1.cnitool("del", &pod3.ns, &[]);
    assert_eq!(node1.ns.exec("nft list ruleset"), rules_before, "pod 3's DEL left the ruleset changed");
    assert_released(node1, &pod3);
}

/// What DEL of `pod` must have removed, whatever other pods the node has:
/// its interfaces (not the bridge, which stays as the reference's does),
/// its reservations, flannel's saved config and cnitool's cached result
/// (both named by the container ID), and every nft object naming its ID or
/// its addresses.
fn assert_released(node: &Node, pod: &Pod) {
    let n = node.n;
    let id = Attachment::cnitool_container_id(&pod.ns.path());
    assert!(!pod.ns.try_exec("ip link show eth0"), "node {n}: the pod's eth0 is left");
    let interfaces = pod.result["interfaces"].as_array().unwrap();
    for veth in interfaces.iter().skip(1).filter(|i| i.get("sandbox").is_none()) {
        let name = veth["name"].as_str().unwrap();
        assert!(!node.ns.try_exec(&format!("ip link show {name}")), "node {n}: {name} is left");
    }
    let addresses: Vec<String> = pod.result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ip| without_prefix(ip["address"].as_str().unwrap()))
        .collect();
    let reserved = reserved_ips(&node.ipam_dir().join(NETWORK_NAME));
    assert!(addresses.iter().all(|a| !reserved.contains(a)), "node {n}: {addresses:?} still in {reserved:?}");
    let ours = |files: Vec<String>| files.into_iter().filter(|f| f.contains(&id)).collect::<Vec<_>>();
    let saved = ours(sorted_files(&node.flannel_dir()));
    assert!(saved.is_empty(), "node {n}: flannel's saved delegate config is left: {saved:?}");
    let cached = ours(sorted_files(&node.cache_dir().join("results")));
    assert!(cached.is_empty(), "node {n}: cnitool's cached result is left: {cached:?}");
    let rules = node.ns.exec("nft list ruleset");
    assert!(!rules.contains(&id), "node {n}: nft still names {id}:\n{rules}");
    // Addresses as whole words: 10.244.1.2 is not in 10.244.1.20.
    let words: Vec<&str> = rules.split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':')).collect();
    for a in &addresses {
        assert!(!words.contains(&a.as_str()), "node {n}: nft still names {a}:\n{rules}");
    }
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn two_vxlan_nodes_ipv4() {
    require_root();
    multinode(false);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn two_vxlan_nodes_dual_stack() {
    require_root();
    multinode(true);
}
