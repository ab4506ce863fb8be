mod common;
mod l2l3;

use std::net::IpAddr;

use common::*;
use l2l3::*;
use serde_json::{json, Value};

/// A fake host with a bridge network config and its storage.
struct Setup {
    host: Netns,
    data: TempDir,
    name: String,
    br: String,
}

impl Setup {
    fn new() -> Setup {
        Setup { host: Netns::new("bh"), data: TempDir::new("bridge"), name: unique("brnet"), br: unique("br") }
    }
    fn conf(&self, subnets: &[&str], extra: Value) -> Value {
        let mut extra = extra;
        extra["bridge"] = json!(self.br);
        net_conf("bridge", &self.name, host_local(&self.data, subnets, json!([])), extra)
    }
    fn call(&self, id: &str, ns: &Netns) -> Call {
        call("bridge", &self.host, id, &ns.path(), "eth0")
    }
    /// The host-side veths the plugin names (`veth<hex>`).
    fn host_veths(&self) -> Vec<String> {
        host_veth_names(&self.host)
    }
    /// Reserved IPs in the host-local store of this network.
    fn reservations(&self) -> Vec<String> {
        reserved_ips(&self.data.path().join(&self.name))
    }
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn two_containers_reach_each_other_the_gateway_and_the_host() {
    require_root();
    let s = Setup::new();
    // An address of the host outside the bridge subnet, reached by the default route.
    s.host.exec("ip link add hostif type veth peer name hostpeer");
    s.host.exec("ip addr add 192.168.77.1/32 dev hostif");
    s.host.exec("ip link set hostif up");
    s.host.exec("ip link set hostpeer up");
    let conf = s.conf(&["10.11.0.0/24"], json!({"isDefaultGateway": true}));
    let (a, b) = (Netns::new("ca"), Netns::new("cb"));
    let ra = s.call("ca", &a).run("ADD", &conf.to_string()).ok();
    let accept_ra = format!("sysctl -n net.ipv6.conf.{}.accept_ra", s.br);
    assert_eq!(s.host.exec(&accept_ra).trim(), "0");
    // Turned on behind the plugin's back: the next ADD turns it off again.
    s.host.exec(&format!("sysctl -qw net.ipv6.conf.{}.accept_ra=1", s.br));
    let rb = s.call("cb", &b).run("ADD", &conf.to_string()).ok();
    assert_eq!(s.host.exec(&accept_ra).trim(), "0");
    let (ipa, ipb) = (result_ip(&ra, 0), result_ip(&rb, 0));
    assert_ne!(ipa, ipb);
    assert_eq!(ra["interfaces"][0]["name"], s.br.as_str());
    assert_eq!(ra["interfaces"][2]["sandbox"], a.path().as_str());
    assert_eq!(ra["ips"][0]["gateway"], "10.11.0.1");
    assert!(ra["interfaces"][1]["name"].as_str().unwrap().starts_with("veth"));
    assert_eq!(ra["interfaces"][1]["name"].as_str().unwrap().len(), 12);
    assert_eq!(probe(&a, &b, ipb), Some(ipa));
    assert_eq!(probe(&b, &a, ipa), Some(ipb));
    assert_eq!(probe(&a, &s.host, "10.11.0.1".parse().unwrap()), Some(ipa));
    assert_eq!(probe(&a, &s.host, "192.168.77.1".parse().unwrap()), Some(ipa));
    assert_eq!(probe(&s.host, &a, ipa), Some("10.11.0.1".parse().unwrap()));
    assert_eq!(s.host.exec("sysctl -n net.ipv4.ip_forward").trim(), "1");
    assert_eq!(a.exec("sysctl -n net.ipv4.conf.eth0.arp_notify").trim(), "1");
    assert!(a.exec("ip route show default").contains("via 10.11.0.1"));
    // Bridge ports carry no addresses, not even IPv6 link-local ones; the
    // containers' interfaces have theirs.
    for port in s.host_veths() {
        assert_eq!(s.host.exec(&format!("ip -6 -o addr show dev {port}")), "", "{port}");
        assert!(s.host.exec(&format!("ip -d link show dev {port}")).contains("addrgenmode none"), "{port}");
    }
    assert!(a.exec("ip -6 -o addr show dev eth0").contains("fe80::"));
    s.call("ca", &a).run("DEL", &conf.to_string()).ok();
    s.call("cb", &b).run("DEL", &conf.to_string()).ok();
    assert!(s.host_veths().is_empty());
    assert!(s.reservations().is_empty());
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn ipv6_and_dual_stack() {
    require_root();
    let s = Setup::new();
    let conf = s.conf(&["10.12.0.0/24", "fd00:12::/64"], json!({"isGateway": true}));
    let (a, b) = (Netns::new("c6a"), Netns::new("c6b"));
    let ra = s.call("c6a", &a).run("ADD", &conf.to_string()).ok();
    let rb = s.call("c6b", &b).run("ADD", &conf.to_string()).ok();
    assert_eq!(ra["ips"].as_array().unwrap().len(), 2);
    let (a6, b6) = (result_ip(&ra, 1), result_ip(&rb, 1));
    assert!(a6.is_ipv6());
    assert_eq!(a.exec("sysctl -n net.ipv6.conf.eth0.accept_dad").trim(), "0");
    assert!(!a.exec("ip -6 addr show dev eth0").contains("tentative"));
    assert_eq!(probe(&a, &b, b6), Some(a6));
    assert_eq!(probe(&b, &s.host, "fd00:12::1".parse().unwrap()), Some(b6));
    assert_eq!(probe(&a, &b, result_ip(&rb, 0)), Some(result_ip(&ra, 0)));
    assert_eq!(s.host.exec("sysctl -n net.ipv6.conf.all.forwarding").trim(), "1");
    s.call("c6a", &a).run("CHECK", &with_prev(&conf, &ra)).ok();
    s.call("c6a", &a).run("DEL", &conf.to_string()).ok();
    s.call("c6b", &b).run("DEL", &conf.to_string()).ok();
    assert!(s.reservations().is_empty());
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn enabledad_waits_for_dad() {
    require_root();
    let s = Setup::new();
    let conf = s.conf(&["fd00:13::/64"], json!({"isGateway": true, "enabledad": true}));
    let a = Netns::new("cd");
    let ra = s.call("cd", &a).run("ADD", &conf.to_string()).ok();
    assert_eq!(a.exec("sysctl -n net.ipv6.conf.eth0.accept_dad").trim(), "1");
    let addr = result_ip(&ra, 0).to_string();
    let shown = a.exec("ip -6 addr show dev eth0");
    let line = shown.lines().find(|l| l.contains(&addr)).unwrap();
    assert!(!line.contains("tentative"), "{line}");
    s.call("cd", &a).run("DEL", &conf.to_string()).ok();
}

/// The fake host's view of nftables holds nothing naming the container.
fn assert_no_trace(host: &Netns, id: &str) {
    let rules = ruleset(host);
    assert!(!rules.contains(&format!(" {id} ")), "{rules}");
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn masquerade_outside_the_subnet_and_clean_del() {
    require_root();
    let s = Setup::new();
    // The outside world: a netns on the far end of a veth from the host.
    let outside = Netns::new("out");
    let (h_if, o_if) = (unique("ho"), unique("oo"));
    s.host.exec(&format!("ip link add {h_if} type veth peer name {o_if} netns {}", outside.name));
    s.host.exec(&format!("ip addr add 172.31.9.1/24 dev {h_if}"));
    s.host.exec(&format!("ip link set {h_if} up"));
    outside.exec(&format!("ip addr add 172.31.9.2/24 dev {o_if}"));
    outside.exec(&format!("ip link set {o_if} up"));
    let conf =
        s.conf(&["10.14.0.0/24"], json!({"isDefaultGateway": true, "ipMasq": true, "ipMasqBackend": "iptables"}));
    let (a, b, c) = (Netns::new("cma"), Netns::new("cmb"), Netns::new("cmc"));
    let ida = unique("masqa");
    let idb = unique("masqb");
    let idc = unique("masqc");
    let ra = s.call(&ida, &a).run("ADD", &conf.to_string()).ok();
    let rb = s.call(&idb, &b).run("ADD", &conf.to_string()).ok();
    s.call(&idc, &c).run("ADD", &conf.to_string()).ok();
    let outside_ip: IpAddr = "172.31.9.2".parse().unwrap();
    assert_eq!(probe(&a, &outside, outside_ip), Some("172.31.9.1".parse().unwrap()));
    // Inside the subnet the source stays the container's.
    assert_eq!(probe(&a, &b, result_ip(&rb, 0)), Some(result_ip(&ra, 0)));
    let rules = ruleset(&s.host);
    assert!(rules.contains(&ida) && rules.contains("masquerade"), "{rules}");
    s.call(&ida, &a).run("CHECK", &with_prev(&conf, &ra)).ok();

    // DEL with the netns already gone.
    drop(a);
    s.call(&ida, &Netns { name: "gone-for-good".into() }).run("DEL", &conf.to_string()).ok();
    assert_no_trace(&s.host, &ida);
    // DEL without a netns at all (and never a prevResult).
    Call::new("bridge")
        .in_netns(&s.host)
        .env("CNI_PATH", &cni_path())
        .env("CNI_CONTAINERID", &idb)
        .env("CNI_IFNAME", "eth0")
        .run("DEL", &conf.to_string())
        .ok();
    assert_no_trace(&s.host, &idb);
    // The other container still goes out masqueraded.
    assert_eq!(probe(&c, &outside, outside_ip), Some("172.31.9.1".parse().unwrap()));
    s.call(&idc, &c).run("DEL", &conf.to_string()).ok();
    assert_no_trace(&s.host, &idc);
    // With the network's last container the set and chain are gone too.
    assert!(!ruleset(&s.host).contains("masquerade"));
    assert!(s.reservations().is_empty());
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn gc_removes_elements_of_vanished_containers() {
    require_root();
    let s = Setup::new();
    let conf = s.conf(&["10.15.0.0/24"], json!({"isGateway": true, "ipMasq": true}));
    let (a, b) = (Netns::new("cga"), Netns::new("cgb"));
    let (ida, idb) = (unique("gca"), unique("gcb"));
    s.call(&ida, &a).run("ADD", &conf.to_string()).ok();
    s.call(&idb, &b).run("ADD", &conf.to_string()).ok();
    // The reference host-local does not speak 1.1.0: GC only the masquerade here.
    let mut gc = conf.clone();
    gc["cniVersion"] = json!("1.1.0");
    gc["ipam"] = json!({});
    gc["cni.dev/valid-attachments"] = json!([{"containerID": idb, "ifname": "eth0"}]);
    Call::new("bridge").in_netns(&s.host).env("CNI_PATH", &cni_path()).run("GC", &gc.to_string()).ok();
    let rules = ruleset(&s.host);
    assert!(!rules.contains(&ida) && rules.contains(&idb), "{rules}");
    Call::new("bridge").in_netns(&s.host).env("CNI_PATH", &cni_path()).run("STATUS", &gc.to_string()).ok();
    s.call(&idb, &b).run("DEL", &conf.to_string()).ok();
}

/// A DEL killed between moving its host end into the deletion batch's group
/// and deleting the group leaves the pair behind: the next DEL's batch takes
/// it along, and so does GC.
#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn host_ends_left_in_the_deletion_group_are_removed() {
    require_root();
    let s = Setup::new();
    let conf = s.conf(&["10.16.0.0/24"], json!({"isGateway": true})).to_string();
    let (a, b) = (Netns::new("cka"), Netns::new("ckb"));
    let doomed = "0xc1dead";
    // As a killed DEL leaves it.
    let left = |ns: &Netns| {
        s.call("ck", ns).run("ADD", &conf).ok();
        let port = s.host_veths()[0].clone();
        s.host.exec(&format!("ip link set {port} group {doomed}"));
        port
    };
    let port = left(&a);
    s.call("other", &b).run("ADD", &conf).ok();
    s.call("other", &b).run("DEL", &conf).ok();
    assert!(s.host_veths().is_empty(), "{:?} (was {port})", s.host_veths());
    assert!(!a.try_exec("ip link show eth0"));
    s.call("ck", &a).run("DEL", &conf).ok();

    let port = left(&a);
    let mut gc: Value = serde_json::from_str(&conf).unwrap();
    gc["cniVersion"] = json!("1.1.0");
    gc["ipam"] = json!({});
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "ck", "ifname": "eth0"}]);
    Call::new("bridge").in_netns(&s.host).env("CNI_PATH", &cni_path()).run("GC", &gc.to_string()).ok();
    assert!(s.host_veths().is_empty(), "{:?} (was {port})", s.host_veths());
    s.call("ck", &a).run("DEL", &conf).ok();
    assert!(s.reservations().is_empty());
}

/// Whether the kernel has VLAN-aware bridges (CONFIG_BRIDGE_VLAN_FILTERING).
fn vlan_filtering_supported(host: &Netns) -> bool {
    let ok = host.try_exec("ip link add vfprobe type bridge vlan_filtering 1");
    let _ = host.try_exec("ip link del vfprobe");
    ok
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn vlan_and_trunk_ports() {
    require_root();
    let s = Setup::new();
    if !vlan_filtering_supported(&s.host) {
        eprintln!("skipped: the kernel has no VLAN filtering on bridges");
        return;
    }
    let conf = s.conf(
        &["10.16.0.0/24"],
        json!({"hairpinMode": true, "mtu": 1400, "vlan": 100, "preserveDefaultVlan": false, "portIsolation": true,
               "isGateway": true}),
    );
    let a = Netns::new("cv");
    let ra = s.call("cv", &a).run("ADD", &conf.to_string()).ok();
    let port = ra["interfaces"][1]["name"].as_str().unwrap().to_string();
    let link = s.host.exec(&format!("bridge -d link show dev {port}"));
    assert!(link.contains("hairpin on"), "{link}");
    assert!(link.contains("isolated on"), "{link}");
    let vlans = s.host.exec(&format!("bridge vlan show dev {port}"));
    assert!(vlans.contains("100 PVID Egress Untagged"), "{vlans}");
    assert!(!vlans.contains(" 1 PVID"), "{vlans}");
    assert!(a.exec("ip link show eth0").contains("mtu 1400"));
    assert!(s.host.exec(&format!("ip -d link show {}", s.br)).contains("vlan_filtering 1"));
    // The gateway lives on <bridge>.<vlan>, as with the reference.
    assert!(s.host.exec(&format!("ip addr show {}.100", s.br)).contains("10.16.0.1/24"));
    assert_eq!(probe(&a, &s.host, "10.16.0.1".parse().unwrap()), Some(result_ip(&ra, 0)));
    s.call("cv", &a).run("DEL", &conf.to_string()).ok();

    // A trunk port on another bridge.
    let s = Setup::new();
    let conf = s.conf(&["10.17.0.0/24"], json!({"vlanTrunk": [{"id": 5}, {"minID": 200, "maxID": 203}]}));
    let b = Netns::new("ct");
    let rb = s.call("ct", &b).run("ADD", &conf.to_string()).ok();
    let port = rb["interfaces"][1]["name"].as_str().unwrap().to_string();
    let vlans = s.host.exec(&format!("bridge -j vlan show dev {port}"));
    let v: Value = serde_json::from_str(&vlans).unwrap();
    let ids: Vec<u64> = v[0]["vlans"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| {
            let lo = e["vlan"].as_u64().unwrap();
            lo..=e["vlanEnd"].as_u64().unwrap_or(lo)
        })
        .collect();
    for id in [1, 5, 200, 201, 202, 203] {
        assert!(ids.contains(&id), "{vlans}");
    }
    s.call("ct", &b).run("CHECK", &with_prev(&conf, &rb)).ok();
    s.call("ct", &b).run("DEL", &conf.to_string()).ok();
    assert!(s.host_veths().is_empty());
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn port_settings_show_in_the_kernel() {
    require_root();
    let s = Setup::new();
    let conf =
        s.conf(&["10.16.0.0/24"], json!({"hairpinMode": true, "mtu": 1400, "portIsolation": true, "isGateway": true}));
    let a = Netns::new("cv");
    let ra = s.call("cv", &a).run("ADD", &conf.to_string()).ok();
    let port = ra["interfaces"][1]["name"].as_str().unwrap().to_string();
    let link = s.host.exec(&format!("bridge -d link show dev {port}"));
    assert!(link.contains("hairpin on"), "{link}");
    assert!(link.contains("isolated on"), "{link}");
    assert!(a.exec("ip link show eth0").contains("mtu 1400"));
    assert!(s.host.exec(&format!("ip link show {port}")).contains("mtu 1400"));
    assert!(s.host.exec(&format!("ip link show {}", s.br)).contains("mtu 1400"));
    s.call("cv", &a).run("CHECK", &with_prev(&conf, &ra)).ok();
    s.call("cv", &a).run("DEL", &conf.to_string()).ok();

    // Promiscuous mode on another bridge.
    let s = Setup::new();
    let conf = s.conf(&["10.17.0.0/24"], json!({"promiscMode": true}));
    let b = Netns::new("ct");
    let rb = s.call("ct", &b).run("ADD", &conf.to_string()).ok();
    assert!(s.host.exec(&format!("ip link show {}", s.br)).contains("PROMISC"));
    s.call("ct", &b).run("CHECK", &with_prev(&conf, &rb)).ok();
    s.call("ct", &b).run("DEL", &conf.to_string()).ok();

    // Refused combinations.
    let bad = s.conf(&["10.17.0.0/24"], json!({"hairpinMode": true, "promiscMode": true}));
    assert_eq!(s.call("cx", &b).run("ADD", &bad.to_string()).err_code(), 7);
    let bad = s.conf(&["10.17.0.0/24"], json!({"vlan": 5000}));
    assert_eq!(s.call("cx", &b).run("ADD", &bad.to_string()).err_code(), 7);
    // (vlan with vlanTrunk is a trunk with a native VLAN, as upstream allows:
    // vmtest's bridge-trunk case.)
    assert!(s.host_veths().is_empty());
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn layer2_only_mac_and_spoof_check() {
    require_root();
    let s = Setup::new();
    let mut conf = s.conf(&[], json!({"macspoofchk": true}));
    conf["ipam"] = json!({});
    conf["runtimeConfig"] = json!({"mac": "0a:58:0a:01:02:03"});
    let a = Netns::new("cl2");
    let id = unique("l2");
    let ra =
        s.call(&id, &a).env("CNI_ARGS", "IgnoreUnknown=1;MAC=0a:58:0a:09:09:09").run("ADD", &conf.to_string()).ok();
    assert!(ra.get("ips").is_none());
    assert_eq!(ra["interfaces"][2]["mac"], "0a:58:0a:01:02:03");
    assert!(a.exec("ip link show eth0").contains("state UP"));
    let port = ra["interfaces"][1]["name"].as_str().unwrap().to_string();
    let rules = s.host.exec("nft list table bridge cnibox-macspoof");
    assert!(rules.contains(&port) && rules.contains("0a:58:0a:01:02:03"), "{rules}");
    s.call(&id, &a).run("CHECK", &with_prev(&conf, &ra)).ok();
    s.call(&id, &a).run("DEL", &conf.to_string()).ok();
    assert_no_trace(&s.host, &id);

    // The CNI_ARGS MAC applies when nothing else names one.
    let mut conf = s.conf(&[], json!({}));
    conf["ipam"] = json!({});
    let rb =
        s.call("l2b", &a).env("CNI_ARGS", "IgnoreUnknown=1;MAC=0a:58:0a:09:09:09").run("ADD", &conf.to_string()).ok();
    assert_eq!(rb["interfaces"][2]["mac"], "0a:58:0a:09:09:09");
    s.call("l2b", &a).run("DEL", &conf.to_string()).ok();

    // disableContainerInterface leaves the container side down, and refuses IPAM.
    let mut conf = s.conf(&[], json!({"disableContainerInterface": true}));
    conf["ipam"] = json!({});
    s.call("l2c", &a).run("ADD", &conf.to_string()).ok();
    assert!(!a.exec("ip link show eth0").contains("state UP"));
    s.call("l2c", &a).run("DEL", &conf.to_string()).ok();
    let conf = s.conf(&["10.24.0.0/24"], json!({"disableContainerInterface": true}));
    assert_eq!(s.call("l2d", &a).run("ADD", &conf.to_string()).err_code(), 7);
    assert!(s.host_veths().is_empty());
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn spoofed_frames_are_dropped() {
    require_root();
    let s = Setup::new();
    let conf = s.conf(&["10.18.0.0/24"], json!({"isGateway": true, "macspoofchk": true}));
    let a = Netns::new("csp");
    let ra = s.call("sp", &a).run("ADD", &conf.to_string()).ok();
    let gw: IpAddr = "10.18.0.1".parse().unwrap();
    assert_eq!(probe(&a, &s.host, gw), Some(result_ip(&ra, 0)));
    // A neighbour on the same bridge without the check, as a control.
    let plain = s.conf(&["10.18.0.0/24"], json!({"isGateway": true}));
    let b = Netns::new("csq");
    s.call("sq", &b).run("ADD", &plain.to_string()).ok();
    for (ns, mac) in [(&a, "0a:58:de:ad:be:ef"), (&b, "0a:58:de:ad:be:e0")] {
        ns.exec(&format!("ip link set eth0 address {mac}"));
        ns.exec("ip neigh flush all");
    }
    s.host.exec("ip neigh flush all");
    assert_eq!(probe(&a, &s.host, gw), None);
    assert!(probe(&b, &s.host, gw).is_some());
    s.call("sp", &a).run("DEL", &conf.to_string()).ok();
    s.call("sq", &b).run("DEL", &plain.to_string()).ok();
    assert!(!ruleset(&s.host).contains("0a:58:de:ad:be:ef"));
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn check_notices_removed_pieces() {
    require_root();
    let s = Setup::new();
    let conf = s.conf(&["10.19.0.0/24"], json!({"isDefaultGateway": true, "ipMasq": true}));
    let a = Netns::new("cc");
    let ra = s.call("cc", &a).run("ADD", &conf.to_string()).ok();
    let check = with_prev(&conf, &ra);
    s.call("cc", &a).run("CHECK", &check).ok();
    // CHECK needs a prevResult.
    s.call("cc", &a).run("CHECK", &conf.to_string()).err_code();
    let addr = ra["ips"][0]["address"].as_str().unwrap();
    a.exec(&format!("ip addr del {addr} dev eth0"));
    s.call("cc", &a).run("CHECK", &check).err_code();
    a.exec(&format!("ip addr add {addr} dev eth0"));
    a.exec("ip route add default via 10.19.0.1");
    s.call("cc", &a).run("CHECK", &check).ok();
    a.exec("ip route del default");
    s.call("cc", &a).run("CHECK", &check).err_code();
    a.exec("ip route add default via 10.19.0.1");
    // The masquerade element.
    let set = {
        let v: Value = serde_json::from_str(&ruleset(&s.host)).unwrap();
        v["nftables"].as_array().unwrap().iter().find_map(|o| o["set"]["name"].as_str().map(str::to_string)).unwrap()
    };
    let ip = result_ip(&ra, 0);
    s.host.exec(&format!("nft delete element inet cnibox-masq {set} {{ {ip} }}"));
    s.call("cc", &a).run("CHECK", &check).err_code();
    a.exec("ip link del eth0");
    s.call("cc", &a).run("CHECK", &check).err_code();
    s.call("cc", &a).run("DEL", &conf.to_string()).ok();
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn del_is_idempotent() {
    require_root();
    let s = Setup::new();
    let conf = s.conf(&["10.20.0.0/24"], json!({"isGateway": true, "ipMasq": true, "macspoofchk": true}));
    let a = Netns::new("ci");
    s.call("ci", &a).run("ADD", &conf.to_string()).ok();
    s.call("ci", &a).run("DEL", &conf.to_string()).ok();
    s.call("ci", &a).run("DEL", &conf.to_string()).ok();
    s.call("never-added", &a).run("DEL", &conf.to_string()).ok();
    assert!(s.host_veths().is_empty());
    assert!(s.reservations().is_empty());
}

/// DEL returns once the kernel announces the host end gone (before it has
/// freed it). When the host end got a random name, because the derived one
/// was taken, no announcement matches: DEL waits for the kernel's answer,
/// and the pair is gone all the same. The veth that held the name stays.
#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn del_removes_a_pair_whose_host_end_has_a_random_name() {
    require_root();
    let s = Setup::new();
    let conf = s.conf(&["10.21.0.0/24"], json!({"isGateway": true})).to_string();
    let a = Netns::new("cr");
    let first = s.call("cr", &a).run("ADD", &conf).ok();
    let derived = first["interfaces"][1]["name"].as_str().unwrap().to_string();
    s.call("cr", &a).run("DEL", &conf).ok();
    assert!(s.host_veths().is_empty(), "{:?}", s.host_veths());
    s.host.exec(&format!("ip link add {derived} type veth peer name squatter"));
    let second = s.call("cr", &a).run("ADD", &conf).ok();
    let random = second["interfaces"][1]["name"].as_str().unwrap().to_string();
    assert_ne!(random, derived);
    s.call("cr", &a).run("DEL", &conf).ok();
    assert_eq!(s.host_veths(), vec![derived]);
    assert!(!a.try_exec("ip link show eth0"));
    assert!(s.reservations().is_empty());
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn failed_ipam_leaves_nothing_behind() {
    require_root();
    let s = Setup::new();
    // A /30 has two usable addresses; the gateway takes one.
    let conf = s.conf(&["10.21.0.0/30"], json!({"isGateway": true, "ipMasq": true}));
    let (a, b) = (Netns::new("cra"), Netns::new("crb"));
    s.call("ra", &a).run("ADD", &conf.to_string()).ok();
    let before = s.host_veths();
    assert_eq!(before.len(), 1);
    assert!(s.call("rb", &b).run("ADD", &conf.to_string()).err_code() > 0);
    assert_eq!(s.host_veths(), before);
    assert!(b.exec("ip -o link show").lines().all(|l| !l.contains("eth0")));
    assert_eq!(s.reservations().len(), 1);
    assert!(!ruleset(&s.host).contains(" rb "));
    // A later step failing: the container already has an eth0.
    let c = Netns::new("crc");
    c.exec("ip link add eth0 type veth peer name eth0peer");
    assert!(s.call("rc", &c).run("ADD", &conf.to_string()).err_code() > 0);
    assert_eq!(s.host_veths(), before);
    assert_eq!(s.reservations().len(), 1);
    // A step after the veth and IPAM failing: the bridge already holds a
    // different IPv4 gateway (no forceAddress).
    let (data2, name2) = (TempDir::new("bridge2"), unique("brnet"));
    let ipam2 = host_local(&data2, &["10.23.0.0/24"], json!([]));
    let conf2 = net_conf("bridge", &name2, ipam2, json!({"bridge": s.br, "isGateway": true, "ipMasq": true}));
    let d = Netns::new("crd");
    let reply = call("bridge", &s.host, "rd", &d.path(), "eth0").run("ADD", &conf2.to_string());
    assert!(reply.stdout.contains("already has an IP address"), "{}", reply.stdout);
    assert_eq!(s.host_veths(), before);
    assert!(reserved_ips(&data2.path().join(&name2)).is_empty());
    assert!(d.exec("ip -o link show").lines().all(|l| !l.contains("eth0")));
    assert!(!ruleset(&s.host).contains(" rd "));
    s.call("ra", &a).run("DEL", &conf.to_string()).ok();
    assert!(s.reservations().is_empty());
    // The last step failing: nftables refuses the masquerade transaction.
    let e = Netns::new("cre");
    let reply = s.call("re", &e).env("CNIBOX_NFT", "/bin/false").run("ADD", &conf.to_string());
    assert_ne!(reply.code, 0);
    assert!(s.host_veths().is_empty());
    assert!(s.reservations().is_empty());
    assert!(e.exec("ip -o link show").lines().all(|l| !l.contains("eth0")));
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn concurrent_adds_and_dels() {
    require_root();
    let s = Setup::new();
    let conf = s.conf(&["10.22.0.0/24"], json!({"isGateway": true, "ipMasq": true})).to_string();
    let nss: Vec<Netns> = (0..32).map(|_| Netns::new("cp")).collect();
    let ids: Vec<String> = (0..32).map(|i| format!("par{i}")).collect();
    let results: Vec<Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = nss
            .iter()
            .zip(&ids)
            .map(|(ns, id)| {
                let (s, conf) = (&s, &conf);
                scope.spawn(move || s.call(id, ns).run("ADD", conf).ok())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ips: Vec<IpAddr> = results.iter().map(|r| result_ip(r, 0)).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 32);
    assert_eq!(s.host_veths().len(), 32);
    assert_eq!(probe(&nss[0], &nss[31], result_ip(&results[31], 0)), Some(result_ip(&results[0], 0)));
    std::thread::scope(|scope| {
        for (ns, id) in nss.iter().zip(&ids) {
            let (s, conf) = (&s, &conf);
            scope.spawn(move || s.call(id, ns).run("DEL", conf).ok());
        }
    });
    assert!(s.host_veths().is_empty());
    assert!(s.reservations().is_empty());
    assert!(!ruleset(&s.host).contains("masquerade"));
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn masquerade_dual_stack() {
    require_root();
    let s = Setup::new();
    let outside = Netns::new("out6");
    let (h_if, o_if) = (unique("ho"), unique("oo"));
    s.host.exec(&format!("ip link add {h_if} type veth peer name {o_if} netns {}", outside.name));
    s.host.exec(&format!("ip addr add 172.31.10.1/24 dev {h_if}"));
    s.host.exec(&format!("ip addr add fd00:99::1/64 dev {h_if} nodad"));
    s.host.exec(&format!("ip link set {h_if} up"));
    outside.exec(&format!("ip addr add 172.31.10.2/24 dev {o_if}"));
    outside.exec(&format!("ip addr add fd00:99::2/64 dev {o_if} nodad"));
    outside.exec(&format!("ip link set {o_if} up"));
    let conf = s.conf(&["10.25.0.0/24", "fd00:25::/64"], json!({"isDefaultGateway": true, "ipMasq": true}));
    let a = Netns::new("cm6");
    let id = unique("m6");
    let ra = s.call(&id, &a).run("ADD", &conf.to_string()).ok();
    assert!(a.exec("ip -6 route show default").contains("via fd00:25::1"));
    assert_eq!(probe(&a, &outside, "fd00:99::2".parse().unwrap()), Some("fd00:99::1".parse().unwrap()));
    assert_eq!(probe(&a, &outside, "172.31.10.2".parse().unwrap()), Some("172.31.10.1".parse().unwrap()));
    s.call(&id, &a).run("CHECK", &with_prev(&conf, &ra)).ok();
    s.call(&id, &a).run("DEL", &conf.to_string()).ok();
    let rules = ruleset(&s.host);
    assert!(!rules.contains(&id) && !rules.contains("masquerade"), "{rules}");
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn legacy_versions() {
    require_root();
    let s = Setup::new();
    let a = Netns::new("clv");
    for version in ["0.4.0", "0.3.1", "0.2.0"] {
        let mut conf = s.conf(&["10.26.0.0/24"], json!({"isGateway": true, "ipMasq": true}));
        conf["cniVersion"] = json!(version);
        let r = s.call("lv", &a).run("ADD", &conf.to_string()).ok();
        assert_eq!(r["cniVersion"], version);
        if version == "0.2.0" {
            assert!(r["ip4"]["ip"].as_str().unwrap().starts_with("10.26.0."));
        } else {
            assert!(r["ips"][0]["address"].as_str().unwrap().starts_with("10.26.0."));
        }
        if version == "0.4.0" {
            s.call("lv", &a).run("CHECK", &with_prev(&conf, &r)).ok();
        }
        s.call("lv", &a).run("DEL", &conf.to_string()).ok();
        assert!(s.reservations().is_empty());
    }
}
