mod common;
mod netfixture;

use common::*;
use netfixture::*;
use serde_json::{json, Value};

fn conf(extra: Value, prev: Option<Value>) -> String {
    let mut c = json!({"cniVersion": "1.0.0", "name": "fwnet", "type": "firewall"});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    if let Some(p) = prev {
        c["prevResult"] = p;
    }
    c.to_string()
}

fn call(node: &Node, c: &Container) -> Call {
    Call::new("firewall").container(&c.id, &c.ns.path(), "eth0").in_netns(&node.host).env("CNIBOX_LOG", "debug")
}

fn admin_rules(node: &Node) -> String {
    node.host.exec("nft list chain inet cnibox-firewall CNI-ADMIN")
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn open_policy_admin_chain_del_and_gc() {
    require_root();
    let node = Node::new();
    node.bridge("br0", 1);
    let c1 = node.container("br0", 1, 5);
    let c2 = node.container("br0", 1, 6);
    serve(&c1.ns.name, 80, "c1-80");
    serve(&c1.ns.name, 81, "c1-81");
    let add = conf(json!({}), Some(c1.prev_result(1)));
    let reply = call(&node, &c1).run("ADD", &add);
    let stderr = reply.stderr.clone();
    let out = reply.ok();
    assert_eq!(out["ips"][0]["address"], "10.1.0.5/24");
    // The first ADD on the node builds the table: one committed transaction.
    assert_eq!(nft_execs(&stderr).0, 1, "{stderr}");
    let o = &node.outside.name;
    assert_eq!(tcp_get(o, "10.1.0.5:80").as_deref(), Some("c1-80"));
    assert_eq!(tcp_get(o, "[fd01::5]:80").as_deref(), Some("c1-80"));
    call(&node, &c1).run("CHECK", &add).ok();
    node.host.exec("nft delete element inet cnibox-firewall containers-v6 '{ fd01::5 }'");
    call(&node, &c1).run("CHECK", &add).err_code();
    call(&node, &c1).run("ADD", &add).ok();
    call(&node, &c1).run("CHECK", &add).ok();

    // Operators' rules in the admin chain come first.
    node.host.exec("nft add rule inet cnibox-firewall CNI-ADMIN ip saddr 192.168.77.2 tcp dport 81 drop");
    assert_eq!(tcp_get(o, "10.1.0.5:81"), None);
    assert_eq!(tcp_get(o, "10.1.0.5:80").as_deref(), Some("c1-80"));

    // Another container's ADD is one nfnetlink batch (no nft) and keeps the admin chain's rules.
    let reply = call(&node, &c2).run("ADD", &conf(json!({}), Some(c2.prev_result(1))));
    let stderr = reply.stderr.clone();
    reply.ok();
    assert_eq!(nft_execs(&stderr), (0, 0, 0), "{stderr}");
    assert_eq!(nfnl_calls(&stderr), (1, 0), "{stderr}");
    assert!(admin_rules(&node).contains("dport 81 drop"));

    let reply = call(&node, &c1).run("DEL", &add);
    let stderr = reply.stderr.clone();
    reply.ok();
    // Deleted by key (prevResult), without nft.
    assert_eq!(nft_execs(&stderr), (0, 0, 0), "{stderr}");
    assert_eq!(nfnl_calls(&stderr), (1, 1), "{stderr}");
    let rs = ruleset(&node.host);
    assert!(!rs.contains(&c1.id) && rs.contains(&c2.id));
    assert!(admin_rules(&node).contains("dport 81 drop"));
    call(&node, &c1).run("CHECK", &add).err_code();
    // DEL without prevResult, and again: fine.
    Call::new("firewall").container(&c1.id, "", "eth0").in_netns(&node.host).run("DEL", &conf(json!({}), None)).ok();

    // GC removes c2 (not valid) and keeps the admin chain.
    let gc = json!({"cniVersion": "1.1.0", "name": "fwnet", "type": "firewall", "cni.dev/valid-attachments": []});
    Call::new("firewall").in_netns(&node.host).run("GC", &gc.to_string()).ok();
    assert!(!ruleset(&node.host).contains(&c2.id));
    assert!(admin_rules(&node).contains("dport 81 drop"));
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn gc_keeps_valid_attachments() {
    require_root();
    let node = Node::new();
    node.bridge("br0", 1);
    let c1 = node.container("br0", 1, 5);
    let c2 = node.container("br0", 1, 6);
    call(&node, &c1).run("ADD", &conf(json!({}), Some(c1.prev_result(1)))).ok();
    call(&node, &c2).run("ADD", &conf(json!({}), Some(c2.prev_result(1)))).ok();
    // A GC without the list removes nothing.
    let no_list = json!({"cniVersion": "1.1.0", "name": "fwnet", "type": "firewall"});
    Call::new("firewall").in_netns(&node.host).run("GC", &no_list.to_string()).ok();
    let rs = ruleset(&node.host);
    assert!(rs.contains(&c1.id) && rs.contains(&c2.id));
    let gc = json!({"cniVersion": "1.1.0", "name": "fwnet", "type": "firewall",
        "cni.dev/valid-attachments": [{"containerID": c1.id, "ifname": "eth0"}]});
    Call::new("firewall").in_netns(&node.host).run("GC", &gc.to_string()).ok();
    let rs = ruleset(&node.host);
    assert!(rs.contains(&c1.id) && !rs.contains(&c2.id));
    call(&node, &c1).run("CHECK", &conf(json!({}), Some(c1.prev_result(1)))).ok();
}

/// br1 (10.1/24 and a second subnet 10.3/24, so that two of its containers
/// talk through the host) and br2 (10.2/24).
fn two_bridges(node: &Node) {
    node.bridge("br1", 1);
    node.bridge("br2", 2);
    node.host.exec("ip addr add 10.3.0.1/24 dev br1");
    node.host.exec("ip addr add fd03::1/64 dev br1 nodad");
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn same_bridge_policy() {
    require_root();
    let node = Node::new();
    two_bridges(&node);
    let c1 = node.container("br1", 1, 5);
    let c3 = node.container("br1", 3, 5); // same bridge, other subnet: routed by the host
    let c2 = node.container("br2", 2, 5);
    serve(&c1.ns.name, 80, "c1");
    assert_eq!(tcp_get(&c2.ns.name, "10.1.0.5:80").as_deref(), Some("c1"));
    let policy = json!({"ingressPolicy": "same-bridge"});
    call(&node, &c1).run("ADD", &conf(policy.clone(), Some(c1.prev_result(1)))).ok();
    call(&node, &c2).run("ADD", &conf(policy.clone(), Some(c2.prev_result(2)))).ok();
    call(&node, &c1).run("CHECK", &conf(policy.clone(), Some(c1.prev_result(1)))).ok();
    // Another isolating bridge cannot reach c1; its own bridge and the outside can.
    assert_eq!(tcp_get(&c2.ns.name, "10.1.0.5:80"), None);
    assert_eq!(tcp_get(&c2.ns.name, "[fd01::5]:80"), None);
    assert_eq!(tcp_get(&c3.ns.name, "10.1.0.5:80").as_deref(), Some("c1"));
    assert_eq!(tcp_get(&node.outside.name, "10.1.0.5:80").as_deref(), Some("c1"));
    assert_eq!(tcp_get(&node.host.name, "10.1.0.5:80").as_deref(), Some("c1"));
    // As in the reference, the per-bridge policy outlives the containers.
    call(&node, &c1).run("DEL", &conf(policy.clone(), Some(c1.prev_result(1)))).ok();
    assert_eq!(tcp_get(&c2.ns.name, "10.1.0.5:80"), None);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn isolated_policy() {
    require_root();
    let node = Node::new();
    two_bridges(&node);
    let c1 = node.container("br1", 1, 5);
    let c3 = node.container("br1", 3, 5);
    let c2 = node.container("br2", 2, 5);
    serve(&c1.ns.name, 80, "c1");
    serve(&c2.ns.name, 80, "c2");
    // Before the policy, everybody talks.
    assert_eq!(tcp_get(&c3.ns.name, "10.1.0.5:80").as_deref(), Some("c1"));
    assert_eq!(tcp_get(&c3.ns.name, "[fd01::5]:80").as_deref(), Some("c1"));
    assert_eq!(tcp_get(&c2.ns.name, "10.1.0.5:80").as_deref(), Some("c1"));
    assert_eq!(tcp_get(&c1.ns.name, "10.2.0.5:80").as_deref(), Some("c2"));
    let isolated = json!({"ingressPolicy": "isolated"});
    call(&node, &c1).run("ADD", &conf(isolated.clone(), Some(c1.prev_result(1)))).ok();
    call(&node, &c2).run("ADD", &conf(json!({"ingressPolicy": "same-bridge"}), Some(c2.prev_result(2)))).ok();
    // Not even its own bridge reaches c1 through the host, nor another isolating bridge.
    assert_eq!(tcp_get(&c3.ns.name, "10.1.0.5:80"), None);
    assert_eq!(tcp_get(&c3.ns.name, "[fd01::5]:80"), None);
    assert_eq!(tcp_get(&c2.ns.name, "10.1.0.5:80"), None);
    assert_eq!(tcp_get(&c1.ns.name, "10.2.0.5:80"), None);
    // The outside machine and the host still can; c1 reaches the outside.
    assert_eq!(tcp_get(&node.outside.name, "10.1.0.5:80").as_deref(), Some("c1"));
    assert_eq!(tcp_get(&node.host.name, "10.1.0.5:80").as_deref(), Some("c1"));
    serve(&node.outside.name, 8000, "outside");
    assert_eq!(tcp_get(&c1.ns.name, "192.168.77.2:8000").as_deref(), Some("outside"));
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn backends_and_errors() {
    require_root();
    let node = Node::new();
    node.bridge("br0", 1);
    let c1 = node.container("br0", 1, 5);
    let prev = Some(c1.prev_result(1));
    let reply = call(&node, &c1).run("ADD", &conf(json!({"backend": "firewalld"}), prev.clone()));
    let out = reply.json();
    assert_eq!(out["code"], 2);
    assert!(out["msg"].as_str().unwrap().contains("backend"), "{out}");
    assert_eq!(call(&node, &c1).run("ADD", &conf(json!({"ingressPolicy": "closed"}), prev.clone())).err_code(), 7);
    assert!(call(&node, &c1).run("ADD", &conf(json!({}), None)).err_code() > 0);
    assert_eq!(node.host.exec("nft list tables").trim(), "");
    // DEL of a refused config still succeeds.
    call(&node, &c1).run("DEL", &conf(json!({"backend": "firewalld"}), prev.clone())).ok();

    // The iptables backend is served with nftables, with the admin chain name it names.
    let extra = json!({"backend": "iptables", "iptablesAdminChainName": "MY-ADMIN"});
    call(&node, &c1).run("ADD", &conf(extra.clone(), prev.clone())).ok();
    call(&node, &c1).run("CHECK", &conf(extra.clone(), prev.clone())).ok();
    node.host.exec("nft list chain inet cnibox-firewall MY-ADMIN");
    // Another network naming another admin chain: the forward chain jumps to both.
    let c2 = node.container("br0", 1, 6);
    let other = json!({"name": "othernet"});
    Call::new("firewall")
        .container(&c2.id, &c2.ns.path(), "eth0")
        .in_netns(&node.host)
        .run("ADD", &conf(other, Some(c2.prev_result(1))))
        .ok();
    let forward = node.host.exec("nft list chain inet cnibox-firewall forward");
    assert!(forward.contains("jump MY-ADMIN") && forward.contains("jump CNI-ADMIN"), "{forward}");
    call(&node, &c1).run("CHECK", &conf(extra.clone(), prev.clone())).ok();
    call(&node, &c1).run("DEL", &conf(extra, prev)).ok();
}
