mod common;
mod l2l3;

use std::net::IpAddr;

use common::*;
use l2l3::*;
use serde_json::{json, Value};

struct Setup {
    host: Netns,
    data: TempDir,
    name: String,
}

impl Setup {
    fn new() -> Setup {
        Setup { host: Netns::new("ph"), data: TempDir::new("ptp"), name: unique("ptpnet") }
    }
    fn conf(&self, subnets: &[&str], routes: Value, extra: Value) -> Value {
        net_conf("ptp", &self.name, host_local(&self.data, subnets, routes), extra)
    }
    fn call(&self, id: &str, ns: &Netns) -> Call {
        call("ptp", &self.host, id, &ns.path(), "eth0")
    }
    fn host_veths(&self) -> usize {
        host_veth_names(&self.host).len()
    }
    fn reservations(&self) -> usize {
        reserved_ips(&self.data.path().join(&self.name)).len()
    }
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn host_and_container_reach_each_other() {
    require_root();
    let s = Setup::new();
    let conf = s.conf(&["10.31.0.0/24"], json!([{"dst": "0.0.0.0/0"}]), json!({"mtu": 1400}));
    let (a, b) = (Netns::new("pa"), Netns::new("pb"));
    let ra = s.call("pa", &a).run("ADD", &conf.to_string()).ok();
    let rb = s.call("pb", &b).run("ADD", &conf.to_string()).ok();
    let (ipa, ipb) = (result_ip(&ra, 0), result_ip(&rb, 0));
    let gw: IpAddr = "10.31.0.1".parse().unwrap();
    assert_eq!(ra["ips"][0]["gateway"], "10.31.0.1");
    assert_eq!(ra["interfaces"][1]["sandbox"], a.path().as_str());
    assert_eq!(ra["ips"][0]["interface"], 1);
    let host_if = ra["interfaces"][0]["name"].as_str().unwrap();
    assert!(s.host.exec(&format!("ip addr show {host_if}")).contains("10.31.0.1/32"));
    assert!(s.host.exec("ip route show").contains(&format!("{ipa} dev {host_if}")));
    let routes = a.exec("ip route show");
    assert!(routes.contains("10.31.0.1 dev eth0"), "{routes}");
    assert!(routes.contains("10.31.0.0/24 via 10.31.0.1"), "{routes}");
    assert!(routes.contains("default via 10.31.0.1"), "{routes}");
    assert!(a.exec("ip link show eth0").contains("mtu 1400"));
    assert_eq!(probe(&a, &s.host, gw), Some(ipa));
    assert_eq!(probe(&s.host, &a, ipa), Some(gw));
    // Containers reach each other through the host.
    assert_eq!(probe(&a, &b, ipb), Some(ipa));
    s.call("pa", &a).run("CHECK", &with_prev(&conf, &ra)).ok();
    a.exec("ip route del default");
    s.call("pa", &a).run("CHECK", &with_prev(&conf, &ra)).err_code();
    s.call("pa", &a).run("DEL", &conf.to_string()).ok();
    s.call("pa", &a).run("DEL", &conf.to_string()).ok();
    s.call("pb", &b).run("DEL", &conf.to_string()).ok();
    assert_eq!(s.host_veths(), 0);
    assert_eq!(s.reservations(), 0);
    assert!(!s.host.exec("ip route show").contains("10.31.0."));
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn ipv6_and_dual_stack() {
    require_root();
    let s = Setup::new();
    let conf = s.conf(&["10.32.0.0/24", "fd00:32::/64"], json!([]), json!({}));
    let a = Netns::new("p6");
    let ra = s.call("p6", &a).run("ADD", &conf.to_string()).ok();
    let a6 = result_ip(&ra, 1);
    assert!(a6.is_ipv6());
    assert_eq!(probe(&a, &s.host, "fd00:32::1".parse().unwrap()), Some(a6));
    assert_eq!(probe(&s.host, &a, a6), Some("fd00:32::1".parse().unwrap()));
    assert_eq!(probe(&a, &s.host, "10.32.0.1".parse().unwrap()), Some(result_ip(&ra, 0)));
    s.call("p6", &a).run("CHECK", &with_prev(&conf, &ra)).ok();
    s.call("p6", &a).run("DEL", &conf.to_string()).ok();
    assert_eq!(s.reservations(), 0);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn masquerade_and_clean_del() {
    require_root();
    let s = Setup::new();
    let outside = Netns::new("pout");
    let (h_if, o_if) = (unique("ho"), unique("oo"));
    s.host.exec(&format!("ip link add {h_if} type veth peer name {o_if} netns {}", outside.name));
    s.host.exec(&format!("ip addr add 172.31.8.1/24 dev {h_if}"));
    s.host.exec(&format!("ip link set {h_if} up"));
    outside.exec(&format!("ip addr add 172.31.8.2/24 dev {o_if}"));
    outside.exec(&format!("ip link set {o_if} up"));
    let conf = s.conf(&["10.33.0.0/24"], json!([{"dst": "0.0.0.0/0"}]), json!({"ipMasq": true}));
    let a = Netns::new("pm");
    let id = unique("pmasq");
    let ra = s.call(&id, &a).run("ADD", &conf.to_string()).ok();
    assert_eq!(probe(&a, &outside, "172.31.8.2".parse().unwrap()), Some("172.31.8.1".parse().unwrap()));
    s.call(&id, &a).run("CHECK", &with_prev(&conf, &ra)).ok();
    drop(a);
    s.call(&id, &Netns { name: "gone-for-good".into() }).run("DEL", &conf.to_string()).ok();
    let rules = ruleset(&s.host);
    assert!(!rules.contains(&id) && !rules.contains("masquerade"), "{rules}");
    assert_eq!(s.reservations(), 0);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn failed_ipam_leaves_nothing_behind() {
    require_root();
    let s = Setup::new();
    let conf = s.conf(&["10.34.0.0/30"], json!([]), json!({"ipMasq": true}));
    let (a, b) = (Netns::new("pra"), Netns::new("prb"));
    s.call("ra", &a).run("ADD", &conf.to_string()).ok();
    assert!(s.call("rb", &b).run("ADD", &conf.to_string()).err_code() > 0);
    assert_eq!(s.host_veths(), 1);
    assert_eq!(s.reservations(), 1);
    // A later step failing: the container already has an eth0.
    let c = Netns::new("prc");
    c.exec("ip link add eth0 type veth peer name eth0peer");
    s.call("ra", &a).run("DEL", &conf.to_string()).ok();
    assert!(s.call("rc", &c).run("ADD", &conf.to_string()).err_code() > 0);
    assert_eq!(s.host_veths(), 0);
    assert_eq!(s.reservations(), 0);
    assert!(!ruleset(&s.host).contains("masquerade"));
    // The last step failing: nftables refuses the masquerade transaction.
    let e = Netns::new("pre");
    let reply = s.call("re", &e).env("CNIBOX_NFT", "/bin/false").run("ADD", &conf.to_string());
    assert_ne!(reply.code, 0);
    assert_eq!(s.host_veths(), 0);
    assert_eq!(s.reservations(), 0);
    assert!(!s.host.exec("ip route show").contains("10.34.0."));
}
