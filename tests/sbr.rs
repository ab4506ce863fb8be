mod common;
use common::*;

use serde_json::{json, Value};

/// A fake host and a container with eth0 (10.50.0.2/24, default via
/// 10.50.0.1) and net1 (10.51.0.2/24, 10.60.0.0/16 via 10.51.0.1).
fn setup() -> (Netns, Netns) {
    let host = Netns::new("sbh");
    let c = Netns::new("sbc");
    for (host_end, ifname, addr) in [("s0", "eth0", "10.50.0.2/24"), ("s1", "net1", "10.51.0.2/24")] {
        host.exec(&format!("ip link add {host_end} type veth peer name {ifname} netns {}", c.name));
        host.exec(&format!("ip link set {host_end} up"));
        c.exec(&format!("ip addr add {addr} dev {ifname}"));
        c.exec(&format!("ip link set {ifname} up"));
    }
    c.exec("ip route add default via 10.50.0.1 dev eth0");
    c.exec("ip route add 10.60.0.0/16 via 10.51.0.1 dev net1");
    (host, c)
}

fn conf(c: &Netns, ifname: &str, addr: &str, gw: &str, extra: Value) -> String {
    let mut v = json!({
        "cniVersion": "1.0.0", "name": "sbr-test", "type": "sbr",
        "prevResult": {
            "cniVersion": "1.0.0",
            "interfaces": [{"name": ifname, "sandbox": c.path()}],
            "ips": [{"address": addr, "gateway": gw, "interface": 0}]
        }
    });
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    v.to_string()
}

fn call(host: &Netns, c: &Netns, ifname: &str) -> Call {
    Call::new("sbr").container("c1", &c.path(), ifname).in_netns(host)
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn two_interfaces_get_two_tables_and_del_removes_them() {
    require_root();
    let (host, c) = setup();
    let eth0 = conf(&c, "eth0", "10.50.0.2/24", "10.50.0.1", json!({}));
    let net1 = conf(&c, "net1", "10.51.0.2/24", "10.51.0.1", json!({}));
    let r = call(&host, &c, "eth0").run("ADD", &eth0).ok();
    assert_eq!(r["ips"][0]["address"], "10.50.0.2/24", "prevResult passed through");
    call(&host, &c, "net1").run("ADD", &net1).ok();

    let rules = c.exec("ip rule");
    assert!(rules.contains("from 10.50.0.2 lookup 100"), "{rules}");
    assert!(rules.contains("from 10.51.0.2 lookup 101"), "{rules}");
    let t100 = c.exec("ip route show table 100");
    assert!(t100.contains("default via 10.50.0.1 dev eth0"), "{t100}");
    assert!(t100.contains("10.50.0.0/24 dev eth0"), "{t100}");
    let t101 = c.exec("ip route show table 101");
    assert!(t101.contains("10.60.0.0/16 via 10.51.0.1 dev net1"), "{t101}");
    assert!(t101.contains("10.51.0.0/24 dev net1"), "{t101}");
    let main = c.exec("ip route show table main");
    assert!(!main.contains("eth0") && !main.contains("net1"), "routes moved out of main: {main}");
    call(&host, &c, "eth0").run("CHECK", &eth0).ok();

    // DEL without prevResult finds the rule by the interface's address.
    let bare = r#"{"cniVersion":"1.0.0","name":"sbr-test","type":"sbr"}"#;
    call(&host, &c, "eth0").run("DEL", bare).ok();
    let rules = c.exec("ip rule");
    assert!(!rules.contains("lookup 100"), "{rules}");
    assert!(rules.contains("from 10.51.0.2 lookup 101"), "{rules}");
    assert_eq!(c.exec("ip route show table 100").trim(), "");
    call(&host, &c, "eth0").run("CHECK", &eth0).err_code();
    call(&host, &c, "eth0").run("DEL", bare).ok();

    // With the interface gone, prevResult still names the source.
    c.exec("ip link del net1");
    call(&host, &c, "net1").run("DEL", &net1).ok();
    assert!(!c.exec("ip rule").contains("lookup 101"));
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn configured_table_only_adds_rules() {
    require_root();
    let (host, c) = setup();
    let cfg = conf(&c, "eth0", "10.50.0.2/24", "10.50.0.1", json!({"table": 500}));
    call(&host, &c, "eth0").run("ADD", &cfg).ok();
    assert!(c.exec("ip rule").contains("from 10.50.0.2 lookup 500"));
    assert!(c.exec("ip route show table main").contains("default via 10.50.0.1 dev eth0"));
    call(&host, &c, "eth0").run("CHECK", &cfg).ok();
    call(&host, &c, "eth0").run("DEL", &cfg).ok();
    assert!(!c.exec("ip rule").contains("lookup 500"));
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn used_tables_are_skipped_and_failures_undone() {
    require_root();
    let (host, c) = setup();
    c.exec("ip rule add from 192.0.2.1 lookup 100");
    c.exec("ip route add 192.0.2.0/24 dev net1 table 101");
    let cfg = conf(&c, "eth0", "10.50.0.2/24", "10.50.0.1", json!({}));
    call(&host, &c, "eth0").run("ADD", &cfg).ok();
    assert!(c.exec("ip rule").contains("from 10.50.0.2 lookup 102"));
    call(&host, &c, "eth0").run("DEL", &cfg).ok();
    assert!(c.exec("ip rule").contains("from 192.0.2.1 lookup 100"), "foreign rule kept");

    // An interface that does not exist: nothing is left.
    let before = c.exec("ip rule");
    let bad = conf(&c, "nosuch", "10.52.0.2/24", "10.52.0.1", json!({}));
    call(&host, &c, "nosuch").run("ADD", &bad).err_code();
    assert_eq!(c.exec("ip rule"), before);
    // An unreachable gateway fails after the rule was added: it is removed again.
    let main_before = c.exec("ip route show table main");
    let unreachable = conf(&c, "eth0", "10.50.0.2/24", "10.99.0.1", json!({}));
    call(&host, &c, "eth0").run("ADD", &unreachable).err_code();
    assert_eq!(c.exec("ip rule"), before);
    assert_eq!(c.exec("ip route show table main"), main_before);
    // Not chained: a config error.
    let unchained = r#"{"cniVersion":"1.0.0","name":"sbr-test","type":"sbr"}"#;
    assert_eq!(call(&host, &c, "eth0").run("ADD", unchained).err_code(), 7);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn del_with_the_netns_gone() {
    require_root();
    let (host, c) = setup();
    let cfg = conf(&c, "eth0", "10.50.0.2/24", "10.50.0.1", json!({}));
    call(&host, &c, "eth0").run("ADD", &cfg).ok();
    let gone = c.path();
    drop(c);
    Call::new("sbr").container("c1", &gone, "eth0").in_netns(&host).run("DEL", &cfg).ok();
    Call::new("sbr").container("c1", "", "eth0").in_netns(&host).run("DEL", &cfg).ok();
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn dual_stack_gets_a_table_per_ip() {
    require_root();
    let (host, c) = setup();
    c.exec("ip addr add fd50::2/64 dev eth0 nodad");
    let cfg = json!({
        "cniVersion": "1.0.0", "name": "sbr-test", "type": "sbr",
        "prevResult": {
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": c.path()}],
            "ips": [{"address": "10.50.0.2/24", "gateway": "10.50.0.1", "interface": 0},
                    {"address": "fd50::2/64", "gateway": "fd50::1", "interface": 0}]
        }
    })
    .to_string();
    call(&host, &c, "eth0").run("ADD", &cfg).ok();
    assert!(c.exec("ip -4 rule").contains("from 10.50.0.2 lookup 100"));
    let rules6 = c.exec("ip -6 rule");
    assert!(rules6.contains("from fd50::2 lookup 101"), "{rules6}");
    let t101 = c.exec("ip -6 route show table 101");
    assert!(t101.contains("default via fd50::1 dev eth0"), "{t101}");
    assert!(t101.contains("fd50::/64 dev eth0"), "{t101}");
    call(&host, &c, "eth0").run("CHECK", &cfg).ok();
    call(&host, &c, "eth0").run("DEL", &cfg).ok();
    assert!(!c.exec("ip -6 rule").contains("lookup 101"));
    assert_eq!(c.exec("ip -6 route show table 101").trim(), "");
    assert_eq!(c.exec("ip -4 route show table 100").trim(), "");
}
