mod common;
mod netfixture;

use common::*;
use netfixture::*;
use serde_json::{json, Value};

fn conf(extra: Value, mappings: Option<Value>, prev: Option<Value>) -> String {
    let mut c =
        json!({"cniVersion": "1.0.0", "name": "pmnet", "type": "portmap", "capabilities": {"portMappings": true}});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    if let Some(m) = mappings {
        c["runtimeConfig"] = json!({ "portMappings": m });
    }
    if let Some(p) = prev {
        c["prevResult"] = p;
    }
    c.to_string()
}

fn call(node: &Node, c: &Container) -> Call {
    Call::new("portmap").container(&c.id, &c.ns.path(), "eth0").in_netns(&node.host).env("CNIBOX_LOG", "debug")
}

/// A fake host with bridge br0 (10.1.0.0/24) and two containers on it,
/// 10.1.0.5 and 10.1.0.6.
fn node_with_two_containers() -> (Node, Container, Container) {
    let node = Node::new();
    node.bridge("br0", 1);
    let c1 = node.container("br0", 1, 5);
    let c2 = node.container("br0", 1, 6);
    (node, c1, c2)
}

fn std_maps() -> Value {
    json!([
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 8053, "containerPort": 53, "protocol": "udp"}
    ])
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn reaches_the_container_from_everywhere_and_del_removes_all() {
    require_root();
    let (node, c1, c2) = node_with_two_containers();
    serve(&c1.ns.name, 80, "c1-tcp");
    serve(&c1.ns.name, 53, "c1-udp");
    let add = conf(json!({}), Some(std_maps()), Some(c1.prev_result(1)));

    let reply = call(&node, &c1).run("ADD", &add);
    let stderr = reply.stderr.clone();
    let result = reply.ok();
    assert_eq!(result["ips"][0]["address"], "10.1.0.5/24", "prevResult passes through");
    // The first ADD on the node creates the table: the nfnetlink batch (elements
    // only) fails without changing anything, then one nft transaction commits.
    assert_eq!(nft_execs(&stderr), (1, 1, 0), "ADD commits one transaction, lists nothing:\n{stderr}");
    assert_eq!(nfnl_calls(&stderr), (0, 0), "{stderr}");

    let (o, h) = (&node.outside.name, &node.host.name);
    // Another machine on the host's network, IPv4 and IPv6, TCP and UDP.
    assert_eq!(tcp_get(o, "192.168.77.1:8080").as_deref(), Some("c1-tcp"));
    assert_eq!(udp_get(o, "192.168.77.1:8053").as_deref(), Some("c1-udp"));
    assert_eq!(tcp_get(o, "[fd77::1]:8080").as_deref(), Some("c1-tcp"));
    assert_eq!(udp_get(o, "[fd77::1]:8053").as_deref(), Some("c1-udp"));
    // The host itself: its own addresses and localhost.
    assert_eq!(tcp_get(h, "192.168.77.1:8080").as_deref(), Some("c1-tcp"));
    assert_eq!(tcp_get(h, "10.1.0.1:8080").as_deref(), Some("c1-tcp"));
    assert_eq!(tcp_get(h, "127.0.0.1:8080").as_deref(), Some("c1-tcp"));
    assert_eq!(udp_get(h, "127.0.0.1:8053").as_deref(), Some("c1-udp"));
    assert_eq!(tcp_get(h, "[fd77::1]:8080").as_deref(), Some("c1-tcp"));
    // A neighbour on the same bridge, and the container itself (hairpin).
    assert_eq!(tcp_get(&c2.ns.name, "10.1.0.1:8080").as_deref(), Some("c1-tcp"));
    assert_eq!(tcp_get(&c2.ns.name, "192.168.77.1:8080").as_deref(), Some("c1-tcp"));
    assert_eq!(udp_get(&c2.ns.name, "192.168.77.1:8053").as_deref(), Some("c1-udp"));
    assert_eq!(tcp_get(&c2.ns.name, "[fd01::1]:8080").as_deref(), Some("c1-tcp"));
    assert_eq!(tcp_get(&c1.ns.name, "192.168.77.1:8080").as_deref(), Some("c1-tcp"));

    call(&node, &c1).run("CHECK", &add).ok();
    assert!(ruleset(&node.host).contains(&c1.id));
    // CHECK notices a removed element; a retried ADD restores it.
    node.host.exec("nft delete element inet cnibox-portmap hostports-v4-port '{ udp . 8053 }'");
    call(&node, &c1).run("CHECK", &add).err_code();
    call(&node, &c1).run("ADD", &add).ok();
    call(&node, &c1).run("CHECK", &add).ok();

    // Any later ADD is a single nfnetlink batch, without nft.
    let maps2 = json!([{"hostPort": 9090, "containerPort": 80, "protocol": "tcp"}]);
    let add2 = conf(json!({}), Some(maps2), Some(c2.prev_result(1)));
    let reply = call(&node, &c2).run("ADD", &add2);
    let stderr = reply.stderr.clone();
    reply.ok();
    assert_eq!(nft_execs(&stderr), (0, 0, 0), "{stderr}");
    assert_eq!(nfnl_calls(&stderr), (1, 0), "{stderr}");
    // Written by nfnetlink, listed by nft with the same comment nft writes.
    let rs = ruleset(&node.host);
    assert!(rs.contains(&format!(r#""comment": "pmnet {} eth0""#, c2.id)), "{rs}");
    assert!(rs.contains(r#""concat": ["tcp", 9090]"#), "{rs}");

    let reply = call(&node, &c1).run("DEL", &add);
    let stderr = reply.stderr.clone();
    reply.ok();
    // With prevResult and the mappings: deleted by key, no nft, no listing.
    assert_eq!(nft_execs(&stderr), (0, 0, 0), "DEL is one lookup and one batch:\n{stderr}");
    assert_eq!(nfnl_calls(&stderr), (1, 1), "{stderr}");
    assert!(!ruleset(&node.host).contains(&c1.id));
    assert_eq!(tcp_get(o, "192.168.77.1:8080"), None);
    assert_eq!(udp_get(o, "192.168.77.1:8053"), None);
    assert_eq!(tcp_get(h, "127.0.0.1:8080"), None);
    call(&node, &c1).run("CHECK", &add).err_code();
    // DEL again: idempotent, and nothing to change.
    let reply = call(&node, &c1).run("DEL", &add);
    let stderr = reply.stderr.clone();
    reply.ok();
    assert_eq!(nft_execs(&stderr), (0, 0, 0));
    assert_eq!(nfnl_calls(&stderr), (0, 1), "{stderr}");
    // c2's elements are untouched.
    call(&node, &c2).run("CHECK", &add2).ok();
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn del_needs_neither_runtime_config_nor_prev_result() {
    require_root();
    let node = Node::new();
    node.bridge("br0", 1);
    let c1 = node.container("br0", 1, 5);
    serve(&c1.ns.name, 80, "c1");
    call(&node, &c1).run("ADD", &conf(json!({}), Some(std_maps()), Some(c1.prev_result(1)))).ok();
    assert_eq!(tcp_get(&node.outside.name, "192.168.77.1:8080").as_deref(), Some("c1"));
    // The netns is gone too.
    Call::new("portmap")
        .container(&c1.id, "", "eth0")
        .in_netns(&node.host)
        .run("DEL", &conf(json!({}), None, None))
        .ok();
    assert!(!ruleset(&node.host).contains(&c1.id));
    assert_eq!(tcp_get(&node.outside.name, "192.168.77.1:8080"), None);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn no_mappings_touch_nothing() {
    require_root();
    let node = Node::new();
    node.bridge("br0", 1);
    let c1 = node.container("br0", 1, 5);
    let prev = c1.prev_result(1);
    for mappings in [None, Some(json!([]))] {
        let reply = call(&node, &c1).run("ADD", &conf(json!({}), mappings, Some(prev.clone())));
        let stderr = reply.stderr.clone();
        let out = reply.ok();
        assert_eq!(out["interfaces"], prev["interfaces"]);
        assert_eq!(out["ips"], prev["ips"]);
        assert_eq!(nft_execs(&stderr), (0, 0, 0), "{stderr}");
    }
    assert_eq!(node.host.exec("nft list tables").trim(), "");
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn add_without_prev_result_fails() {
    require_root();
    let node = Node::new();
    node.bridge("br0", 1);
    let c1 = node.container("br0", 1, 5);
    assert!(call(&node, &c1).run("ADD", &conf(json!({}), Some(std_maps()), None)).err_code() > 0);
    assert_eq!(node.host.exec("nft list tables").trim(), "");
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn host_ip_and_conditions() {
    require_root();
    let node = Node::new();
    node.bridge("br0", 1);
    let c1 = node.container("br0", 1, 5);
    serve(&c1.ns.name, 80, "c1");
    serve(&c1.ns.name, 81, "c1-81");
    let maps = json!([
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "192.168.77.1"},
        {"hostPort": 8081, "containerPort": 81, "protocol": "tcp", "hostIP": "fd77::1"}
    ]);
    call(&node, &c1).run("ADD", &conf(json!({}), Some(maps.clone()), Some(c1.prev_result(1)))).ok();
    let o = &node.outside.name;
    assert_eq!(tcp_get(o, "192.168.77.1:8080").as_deref(), Some("c1"));
    // Only the hostIP of each mapping forwards.
    assert_eq!(tcp_get(&node.host.name, "10.1.0.1:8080"), None);
    assert_eq!(tcp_get(o, "[fd77::1]:8081").as_deref(), Some("c1-81"));
    assert_eq!(tcp_get(o, "192.168.77.1:8081"), None);
    call(&node, &c1).run("DEL", &conf(json!({}), Some(maps), None)).ok();

    // Conditions (iptables syntax): only the outside machine may use the port.
    let c2 = node.container("br0", 1, 6);
    let maps = json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]);
    let extra =
        json!({"conditionsV4": ["-s", "192.168.77.0/24", "!", "-i", "lo"], "conditionsV6": ["ip6 saddr fd77::/64"]});
    let add = conf(extra, Some(maps.clone()), Some(c1.prev_result(1)));
    call(&node, &c1).run("ADD", &add).ok();
    assert_eq!(tcp_get(o, "192.168.77.1:8080").as_deref(), Some("c1"));
    assert_eq!(tcp_get(o, "[fd77::1]:8080").as_deref(), Some("c1"));
    assert_eq!(tcp_get(&c2.ns.name, "10.1.0.1:8080"), None);
    call(&node, &c1).run("CHECK", &add).ok();
    let conditional = || node.host.exec("nft list chain inet cnibox-portmap conditional").matches(&c1.id).count();
    assert_eq!(conditional(), 2);
    // A retried ADD does not duplicate the (unkeyed) rules.
    call(&node, &c1).run("ADD", &add).ok();
    assert_eq!(conditional(), 2);
    call(&node, &c1).run("DEL", &conf(json!({}), None, None)).ok();
    assert!(!ruleset(&node.host).contains(&c1.id));
    assert_eq!(tcp_get(o, "192.168.77.1:8080"), None);

    // Marks, in both syntaxes: nothing here marks packets, so a mapping that
    // needs mark 0x1 is not used, and one that refuses it is.
    let cases: [(&[&str], &[&str]); 2] = [
        (&["-m", "mark", "--mark", "0x1/0x1"], &["-m mark", "!", "--mark 0x1"]),
        (&["meta mark 0x1"], &["meta mark != 0x1"]),
    ];
    for (marked, unmarked) in cases {
        for (conditions, reached) in [(marked, None), (unmarked, Some("c1"))] {
            let add = conf(json!({"conditionsV4": conditions}), Some(maps.clone()), Some(c1.prev_result(1)));
            call(&node, &c1).run("ADD", &add).ok();
            assert_eq!(tcp_get(o, "192.168.77.1:8080").as_deref(), reached, "{conditions:?}");
            call(&node, &c1).run("DEL", &conf(json!({}), None, None)).ok();
        }
    }

    // nft expressions the translation does not know pass through to nft,
    // with the other family's (translatable) ones.
    let extra =
        json!({"conditionsV4": ["ip saddr 192.168.77.2", "ip ttl != 0"], "conditionsV6": ["ip6 saddr fd77::2"]});
    let add = conf(extra, Some(maps.clone()), Some(c1.prev_result(1)));
    call(&node, &c1).run("ADD", &add).ok();
    assert_eq!(tcp_get(o, "192.168.77.1:8080").as_deref(), Some("c1"));
    assert_eq!(tcp_get(o, "[fd77::1]:8080").as_deref(), Some("c1"));
    assert_eq!(tcp_get(&node.host.name, "127.0.0.1:8080"), None);
    let rules = node.host.exec("nft list chain inet cnibox-portmap conditional");
    assert!(rules.contains("ip ttl != 0"), "{rules}");
    call(&node, &c1).run("CHECK", &add).ok();
    call(&node, &c1).run("ADD", &add).ok();
    assert_eq!(conditional(), 2, "a retried ADD replaces the text rules");
    call(&node, &c1).run("DEL", &conf(json!({}), None, None)).ok();
    assert!(!ruleset(&node.host).contains(&c1.id));
    // nft itself judges them: a bad expression is refused with nft's message, and nothing stays.
    let bad = conf(json!({"conditionsV4": ["ip tll 3"]}), Some(maps.clone()), Some(c1.prev_result(1)));
    let reply = call(&node, &c1).run("ADD", &bad);
    assert!(reply.json()["details"].as_str().unwrap_or_default().contains("tll"), "{}", reply.stdout);
    assert!(!ruleset(&node.host).contains(&c1.id));

    // iptables arguments it cannot translate are refused, naming them, and change nothing.
    let extra = json!({"conditionsV4": ["-m", "conntrack", "--ctstate", "NEW"]});
    let reply = call(&node, &c1).run("ADD", &conf(extra, Some(maps), Some(c1.prev_result(1))));
    let out = reply.json();
    assert_eq!(out["code"], 2);
    assert!(out["msg"].as_str().unwrap().contains("conditionsV4"), "{out}");
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn stale_owner_is_replaced_and_gc_removes_stale_attachments() {
    require_root();
    let (node, c1, c2) = node_with_two_containers();
    serve(&c1.ns.name, 80, "c1");
    serve(&c2.ns.name, 80, "c2");
    let maps = json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]);
    call(&node, &c1).run("ADD", &conf(json!({}), Some(maps.clone()), Some(c1.prev_result(1)))).ok();
    // c1's DEL never came; c2 gets the same host port: last writer wins.
    call(&node, &c2).run("ADD", &conf(json!({}), Some(maps.clone()), Some(c2.prev_result(1)))).ok();
    assert_eq!(tcp_get(&node.outside.name, "192.168.77.1:8080").as_deref(), Some("c2"));
    // A late DEL of c1 leaves c2's mapping alone.
    call(&node, &c1).run("DEL", &conf(json!({}), None, None)).ok();
    assert_eq!(tcp_get(&node.outside.name, "192.168.77.1:8080").as_deref(), Some("c2"));
    // ADD retried for the same attachment works too.
    call(&node, &c2).run("ADD", &conf(json!({}), Some(maps.clone()), Some(c2.prev_result(1)))).ok();

    // GC: c2 is no longer valid, c1 (on another port) is.
    let maps81 = json!([{"hostPort": 8081, "containerPort": 80, "protocol": "tcp"}]);
    call(&node, &c1).run("ADD", &conf(json!({}), Some(maps81), Some(c1.prev_result(1)))).ok();
    // A GC without the list removes nothing.
    let no_list = json!({"cniVersion": "1.1.0", "name": "pmnet", "type": "portmap"});
    Call::new("portmap").in_netns(&node.host).run("GC", &no_list.to_string()).ok();
    let rs = ruleset(&node.host);
    assert!(rs.contains(&c1.id) && rs.contains(&c2.id));
    let gc = json!({"cniVersion": "1.1.0", "name": "pmnet", "type": "portmap",
        "cni.dev/valid-attachments": [{"containerID": c1.id, "ifname": "eth0"}]});
    Call::new("portmap").in_netns(&node.host).run("GC", &gc.to_string()).ok();
    let rs = ruleset(&node.host);
    assert!(rs.contains(&c1.id) && !rs.contains(&c2.id));
    assert_eq!(tcp_get(&node.outside.name, "192.168.77.1:8080"), None);
    assert_eq!(tcp_get(&node.outside.name, "192.168.77.1:8081").as_deref(), Some("c1"));
    // Another network's GC does not touch pmnet's elements.
    let gc_other =
        json!({"cniVersion": "1.1.0", "name": "othernet", "type": "portmap", "cni.dev/valid-attachments": []});
    Call::new("portmap").in_netns(&node.host).run("GC", &gc_other.to_string()).ok();
    assert!(ruleset(&node.host).contains(&c1.id));
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn config_errors() {
    require_root();
    let node = Node::new();
    node.bridge("br0", 1);
    let c1 = node.container("br0", 1, 5);
    let prev = Some(c1.prev_result(1));
    let cases = [
        (json!({}), json!([{"hostPort": 0, "containerPort": 80}])),
        (json!({}), json!([{"hostPort": 70000, "containerPort": 80}])),
        (json!({}), json!([{"hostPort": 80, "containerPort": 80, "protocol": "icmp"}])),
        (json!({"markMasqBit": 40}), std_maps()),
        (json!({"markMasqBit": 4, "externalSetMarkChain": "KUBE-MARK-MASQ"}), std_maps()),
        (json!({"backend": "ebpf"}), std_maps()),
        // externalSetMarkChain is an iptables chain, as the reference says.
        (json!({"backend": "nftables", "externalSetMarkChain": "KUBE-MARK-MASQ"}), std_maps()),
        (json!({"externalSetMarkChain": "KUBE-MARK-MASQ", "conditionsV4": ["ip saddr 10.0.0.0/8"]}), std_maps()),
    ];
    for (extra, maps) in cases {
        assert_eq!(
            call(&node, &c1).run("ADD", &conf(extra.clone(), Some(maps), prev.clone())).err_code(),
            7,
            "{extra}"
        );
    }
    assert_eq!(node.host.exec("nft list tables").trim(), "");
    // The iptables backend is served with nftables, and so is markMasqBit
    // where nftables was asked for (unused there, as in the reference).
    for extra in [json!({"backend": "iptables"}), json!({"backend": "nftables", "markMasqBit": 3})] {
        call(&node, &c1).run("ADD", &conf(extra, Some(std_maps()), prev.clone())).ok();
        assert!(ruleset(&node.host).contains(&c1.id));
        call(&node, &c1).run("DEL", &conf(json!({}), None, None)).ok();
    }

    // STATUS: available when nft runs, code 50 when it cannot.
    let status = json!({"cniVersion": "1.1.0", "name": "pmnet", "type": "portmap"}).to_string();
    Call::new("portmap").in_netns(&node.host).run("STATUS", &status).ok();
    let missing = Call::new("portmap").in_netns(&node.host).env("CNIBOX_NFT", "/nonexistent/nft");
    assert_eq!(missing.run("STATUS", &status).err_code(), 50);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn stale_udp_conntrack_entries_are_flushed() {
    require_root();
    let node = Node::new();
    node.bridge("br0", 1);
    let c1 = node.container("br0", 1, 5);
    serve(&c1.ns.name, 53, "c1-udp");
    // Conntrack runs in a netns only once some rule needs it, as on a real host.
    node.host.exec("nft 'add table inet other; add chain inet other c { type filter hook prerouting priority 0; }; add rule inet other c ct state new counter'");
    // A client that keeps its source port: its first datagram, sent before
    // the mapping exists, leaves a conntrack entry without DNAT.
    let sock = in_ns(&node.outside.name, || std::net::UdpSocket::bind("0.0.0.0:0").unwrap());
    sock.set_read_timeout(Some(std::time::Duration::from_millis(1500))).unwrap();
    let ask = || {
        sock.send_to(b"ping", "192.168.77.1:8053").unwrap();
        let mut buf = [0u8; 64];
        sock.recv_from(&mut buf).ok().map(|(n, _)| String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    assert_eq!(ask(), None);
    assert!(node.host.exec("cat /proc/net/nf_conntrack").contains("dport=8053"));
    let maps = json!([{"hostPort": 8053, "containerPort": 53, "protocol": "udp"}]);
    call(&node, &c1).run("ADD", &conf(json!({}), Some(maps), Some(c1.prev_result(1)))).ok();
    // Without the flush the old entry would keep the flow away from the container.
    assert_eq!(ask().as_deref(), Some("c1-udp"));
    call(&node, &c1).run("DEL", &conf(json!({}), None, None)).ok();
    assert!(!node.host.exec("cat /proc/net/nf_conntrack").contains("dport=8053"));
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn concurrent_add_and_del() {
    require_root();
    let node = Node::new();
    node.bridge("br0", 1);
    let cs: Vec<Container> = (0..6).map(|i| node.container("br0", 1, 10 + i)).collect();
    for (i, c) in cs.iter().enumerate() {
        serve(&c.ns.name, 80, &format!("c{i}"));
    }
    let run_all = |verb: &str| {
        std::thread::scope(|s| {
            for (i, c) in cs.iter().enumerate() {
                let maps = json!([{"hostPort": 9000 + i, "containerPort": 80, "protocol": "tcp"}]);
                let stdin = conf(json!({}), Some(maps), Some(c.prev_result(1)));
                let call = call(&node, c);
                let verb = verb.to_string();
                s.spawn(move || call.run(&verb, &stdin).ok());
            }
        })
    };
    run_all("ADD");
    for i in 0..cs.len() {
        assert_eq!(tcp_get(&node.outside.name, &format!("192.168.77.1:{}", 9000 + i)), Some(format!("c{i}")));
    }
    let rs = node.host.exec("nft list table inet cnibox-portmap");
    assert_eq!(rs.matches("jump hostports").count(), 2, "fixed rules exist once:\n{rs}");
    run_all("DEL");
    let rs = ruleset(&node.host);
    assert!(cs.iter().all(|c| !rs.contains(&c.id)));
    assert_eq!(tcp_get(&node.outside.name, "192.168.77.1:9000"), None);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn masquerading_follows_snat_and_masq_all() {
    require_root();
    let (node, c1, c2) = node_with_two_containers();
    serve_peer(&c1.ns.name, 80);
    let maps = json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]);
    let o = &node.outside.name;
    let add = |extra: Value| {
        call(&node, &c1).run("DEL", &conf(json!({}), None, None)).ok();
        call(&node, &c1).run("ADD", &conf(extra, Some(maps.clone()), Some(c1.prev_result(1)))).ok();
    };
    // Default: only hairpin and localhost connections are masqueraded.
    add(json!({}));
    assert_eq!(tcp_get(o, "192.168.77.1:8080").as_deref(), Some("192.168.77.2"));
    assert_eq!(tcp_get(&c2.ns.name, "192.168.77.1:8080").as_deref(), Some("10.1.0.1"));
    assert_eq!(tcp_get(&node.host.name, "127.0.0.1:8080").as_deref(), Some("10.1.0.1"));
    assert_eq!(tcp_get(o, "[fd77::1]:8080").as_deref(), Some("fd77::2"));
    assert_eq!(tcp_get(&c2.ns.name, "[fd01::1]:8080").as_deref(), Some("fd01::1"));
    // masqAll: everything is.
    add(json!({"masqAll": true}));
    assert_eq!(tcp_get(o, "192.168.77.1:8080").as_deref(), Some("10.1.0.1"));
    assert_eq!(tcp_get(o, "[fd77::1]:8080").as_deref(), Some("fd01::1"));
    // snat off: nothing is. A neighbour's connection then only works where
    // br_netfilter un-NATs the bridged replies; it is never masqueraded.
    add(json!({"snat": false}));
    assert_eq!(tcp_get(o, "192.168.77.1:8080").as_deref(), Some("192.168.77.2"));
    assert_ne!(tcp_get(&c2.ns.name, "192.168.77.1:8080").as_deref(), Some("10.1.0.1"));
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn host_ip_mappings_through_nfnetlink_and_del_by_key() {
    require_root();
    let node = Node::new();
    node.bridge("br0", 1);
    let (c1, c2) = (node.container("br0", 1, 5), node.container("br0", 1, 6));
    serve(&c2.ns.name, 80, "c2");
    serve(&c2.ns.name, 81, "c2-81");
    // c1 builds the table; c2's hostIP elements (v4 and v6) then go through nfnetlink.
    call(&node, &c1).run("ADD", &conf(json!({}), Some(std_maps()), Some(c1.prev_result(1)))).ok();
    let maps = json!([
        {"hostPort": 8090, "containerPort": 80, "protocol": "tcp", "hostIP": "192.168.77.1"},
        {"hostPort": 8091, "containerPort": 81, "protocol": "tcp", "hostIP": "fd77::1"}
    ]);
    let add = conf(json!({}), Some(maps), Some(c2.prev_result(1)));
    let reply = call(&node, &c2).run("ADD", &add);
    let stderr = reply.stderr.clone();
    reply.ok();
    assert_eq!((nft_execs(&stderr), nfnl_calls(&stderr)), ((0, 0, 0), (1, 0)), "{stderr}");
    let rs = ruleset(&node.host);
    assert!(rs.contains(r#""concat": ["192.168.77.1", "tcp", 8090]"#), "{rs}");
    assert!(rs.contains(r#""concat": ["fd77::1", "tcp", 8091]"#), "{rs}");
    let o = &node.outside.name;
    assert_eq!(tcp_get(o, "192.168.77.1:8090").as_deref(), Some("c2"));
    assert_eq!(tcp_get(o, "[fd77::1]:8091").as_deref(), Some("c2-81"));
    call(&node, &c2).run("CHECK", &add).ok();
    let reply = call(&node, &c2).run("DEL", &add);
    let stderr = reply.stderr.clone();
    reply.ok();
    assert_eq!((nft_execs(&stderr), nfnl_calls(&stderr)), ((0, 0, 0), (1, 1)), "{stderr}");
    assert!(!ruleset(&node.host).contains(&c2.id));
    assert_eq!(tcp_get(o, "192.168.77.1:8090"), None);
    assert!(ruleset(&node.host).contains(&c1.id));
}

fn conf_net(net: &str, mappings: Value, prev: Value) -> String {
    let mut c: Value = serde_json::from_str(&conf(json!({}), Some(mappings), Some(prev))).unwrap();
    c["name"] = json!(net);
    c.to_string()
}

fn gc_conf(net: &str, valid: &[&Container]) -> String {
    let valid: Vec<Value> = valid.iter().map(|c| json!({"containerID": c.id, "ifname": "eth0"})).collect();
    json!({"cniVersion": "1.1.0", "name": net, "type": "portmap", "cni.dev/valid-attachments": valid}).to_string()
}

/// The hairpin chains (`hairpin-*`) of the table.
fn hairpin_chains(node: &Node) -> Vec<String> {
    let rs: Value = serde_json::from_str(&ruleset(&node.host)).unwrap();
    rs["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.pointer("/chain/name")?.as_str())
        .filter(|n| n.starts_with("hairpin-"))
        .map(str::to_string)
        .collect()
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn two_networks_each_hairpin_only_their_own_subnet_and_gc_removes_unused_chains() {
    require_root();
    let node = Node::new();
    node.bridge("br1", 1);
    node.bridge("br2", 2);
    let (a1, a2) = (node.container("br1", 1, 5), node.container("br1", 1, 6));
    let (b1, b2) = (node.container("br2", 2, 5), node.container("br2", 2, 6));
    serve_peer(&a1.ns.name, 80);
    serve_peer(&b1.ns.name, 80);
    let port = |p: u16| json!([{"hostPort": p, "containerPort": 80, "protocol": "tcp"}]);
    let add_a = conf_net("pmnet-a", port(8080), a1.prev_result(1));
    let add_b = conf_net("pmnet-b", port(8081), b1.prev_result(2));
    call(&node, &a1).run("ADD", &add_a).ok();
    let chains_a = hairpin_chains(&node);
    assert_eq!(chains_a.len(), 2, "one chain per subnet and family");
    // The first container of another subnet: its hairpin chain is made with nft.
    let reply = call(&node, &b1).run("ADD", &add_b);
    let stderr = reply.stderr.clone();
    reply.ok();
    assert_eq!(nft_execs(&stderr).0, 1, "{stderr}");
    assert_eq!(hairpin_chains(&node).len(), 4, "one chain per subnet and family");
    // A second container of a known subnet is a single nfnetlink batch.
    let add_b2 = conf_net("pmnet-b", port(8082), b2.prev_result(2));
    let reply = call(&node, &b2).run("ADD", &add_b2);
    let stderr = reply.stderr.clone();
    reply.ok();
    assert_eq!((nft_execs(&stderr), nfnl_calls(&stderr)), ((0, 0, 0), (1, 0)), "{stderr}");
    // Its verdict element (written by nfnetlink) lists as nft writes it.
    call(&node, &b2).run("CHECK", &add_b2).ok();
    // Per-container elements only in plain hash sets and maps.
    let rs = ruleset(&node.host);
    assert!(!rs.contains("interval"), "{rs}");
    for set in ["masq-lo-v4", "masq-net-v4", "masq-net-v6"] {
        assert!(rs.contains(&format!(r#""name": "{set}""#)), "{set}: {rs}");
    }
    call(&node, &a1).run("CHECK", &add_a).ok();
    call(&node, &b1).run("CHECK", &add_b).ok();

    let h = "192.168.77.1";
    // Each network's own subnet is masqueraded (hairpin)...
    assert_eq!(tcp_get(&a2.ns.name, &format!("{h}:8080")).as_deref(), Some("10.1.0.1"));
    assert_eq!(tcp_get(&b2.ns.name, &format!("{h}:8081")).as_deref(), Some("10.2.0.1"));
    assert_eq!(tcp_get(&b2.ns.name, "[fd02::1]:8081").as_deref(), Some("fd02::1"));
    // ...the other network's is not.
    assert_eq!(tcp_get(&b2.ns.name, &format!("{h}:8080")).as_deref(), Some("10.2.0.6"));
    assert_eq!(tcp_get(&a2.ns.name, &format!("{h}:8081")).as_deref(), Some("10.1.0.6"));
    assert_eq!(tcp_get(&a2.ns.name, "[fd77::1]:8081").as_deref(), Some("fd01::6"));
    // Localhost still is.
    assert_eq!(tcp_get(&node.host.name, "127.0.0.1:8081").as_deref(), Some("10.2.0.1"));

    // CHECK notices an emptied hairpin chain (network a's is not b's business).
    for c in hairpin_chains(&node).iter().filter(|c| !chains_a.contains(c)) {
        node.host.exec(&format!("nft flush chain inet cnibox-portmap {c}"));
    }
    call(&node, &b1).run("CHECK", &add_b).err_code();
    call(&node, &a1).run("CHECK", &add_a).ok();

    // Network b's containers go: their chains stay until GC, which keeps network a's.
    call(&node, &b1).run("DEL", &add_b).ok();
    let mut del_b2: Value = serde_json::from_str(&conf(json!({}), None, None)).unwrap();
    del_b2["name"] = json!("pmnet-b");
    call(&node, &b2).run("DEL", &del_b2.to_string()).ok();
    assert_eq!(hairpin_chains(&node).len(), 4);
    Call::new("portmap").in_netns(&node.host).run("GC", &gc_conf("pmnet-b", &[])).ok();
    assert_eq!(hairpin_chains(&node), chains_a);
    call(&node, &a1).run("CHECK", &add_a).ok();
    assert_eq!(tcp_get(&a2.ns.name, &format!("{h}:8080")).as_deref(), Some("10.1.0.1"));
    // Network b comes back: its chains are made again.
    call(&node, &b1).run("ADD", &add_b).ok();
    assert_eq!(hairpin_chains(&node).len(), 4);
    assert_eq!(tcp_get(&b2.ns.name, &format!("{h}:8081")).as_deref(), Some("10.2.0.1"));
    call(&node, &b1).run("CHECK", &add_b).ok();
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn tables_of_earlier_versions_are_migrated() {
    require_root();
    let node = Node::new();
    node.bridge("br0", 1);
    let (c1, c2, c3) = (node.container("br0", 1, 5), node.container("br0", 1, 6), node.container("br0", 1, 7));
    serve_peer(&c1.ns.name, 80);
    serve_peer(&c3.ns.name, 80);
    let maps = json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]);
    // What an earlier version left: masquerading through an interval set, for c1.
    let owner = format!("pmnet {} eth0", c1.id);
    let old = format!(
        r#"table inet cnibox-portmap {{
            map hostports-v4-addr {{ type inet_proto . inet_service : ipv4_addr; elements = {{ tcp . 8080 comment "{owner}" : 10.1.0.5 }} }}
            map hostports-v4-port {{ type inet_proto . inet_service : inet_service; elements = {{ tcp . 8080 comment "{owner}" : 80 }} }}
            set masq-v4 {{ type ipv4_addr . ipv4_addr; flags interval;
                elements = {{ 10.1.0.0/24 . 10.1.0.5 comment "{owner}", 127.0.0.0/8 . 10.1.0.5 comment "{owner}" }} }}
            set masq-v6 {{ type ipv6_addr . ipv6_addr; flags interval; }}
            chain hostports {{ meta nfproto ipv4 fib daddr type local dnat ip to meta l4proto . th dport map @hostports-v4-addr : meta l4proto . th dport map @hostports-v4-port; }}
            chain prerouting {{ type nat hook prerouting priority dstnat; jump hostports; }}
            chain postrouting {{ type nat hook postrouting priority srcnat;
                meta nfproto ipv4 ct status dnat ip saddr . ip daddr @masq-v4 masquerade; }}
        }}"#
    );
    let file = TempDir::new("pmold");
    let path = file.path().join("old.nft");
    std::fs::write(&path, old).unwrap();
    node.host.exec(&format!("nft -f {}", path.display()));
    assert_eq!(tcp_get(&c2.ns.name, "192.168.77.1:8080").as_deref(), Some("10.1.0.1"));
    // A new container gets the new layout; the old one keeps its masquerading.
    let add3 = conf(json!({}), Some(json!([{"hostPort": 8083, "containerPort": 80}])), Some(c3.prev_result(1)));
    call(&node, &c3).run("ADD", &add3).ok();
    assert_eq!(tcp_get(&c2.ns.name, "192.168.77.1:8083").as_deref(), Some("10.1.0.1"));
    assert_eq!(tcp_get(&c2.ns.name, "192.168.77.1:8080").as_deref(), Some("10.1.0.1"));
    // GC keeps the old layout while it holds elements.
    let gc = gc_conf("pmnet", &[&c1, &c3]);
    Call::new("portmap").in_netns(&node.host).run("GC", &gc).ok();
    assert!(ruleset(&node.host).contains(r#""name": "masq-v4""#));
    // DEL by key removes the old elements too.
    let add1 = conf(json!({}), Some(maps), Some(c1.prev_result(1)));
    call(&node, &c1).run("DEL", &add1).ok();
    let rs = ruleset(&node.host);
    assert!(!rs.contains(&c1.id), "{rs}");
    // Then GC removes the old chain and sets; the new layout works on.
    Call::new("portmap").in_netns(&node.host).run("GC", &gc).ok();
    let rs = ruleset(&node.host);
    assert!(!rs.contains(r#""name": "masq-v4""#) && !rs.contains(r#""name": "postrouting""#), "{rs}");
    assert!(!rs.contains(r#""name": "masq-v6""#), "{rs}");
    assert_eq!(tcp_get(&c2.ns.name, "192.168.77.1:8083").as_deref(), Some("10.1.0.1"));
    call(&node, &c3).run("CHECK", &add3).ok();
}

/// kube-proxy's mark chains as it writes them with `tool`: KUBE-MARK-MASQ
/// marks, KUBE-POSTROUTING masquerades what is marked.
fn kube_proxy_mark_chains(node: &Node, tool: &str) {
    for rule in [
        "-N KUBE-MARK-MASQ",
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
        "-N KUBE-POSTROUTING",
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
        "-A KUBE-POSTROUTING -j MASQUERADE",
        "-A POSTROUTING -j KUBE-POSTROUTING",
    ] {
        node.host.exec(&format!("{tool} -w -t nat {rule}"));
    }
}

/// The packets that went through `chain`'s first rule.
fn first_rule_packets(node: &Node, tool: &str, chain: &str) -> u64 {
    let listing = node.host.exec(&format!("{tool} -w -t nat -L {chain} -n -v -x"));
    let line = listing.lines().nth(2).unwrap_or_else(|| panic!("{chain} has no rule:\n{listing}"));
    line.split_whitespace().next().unwrap().parse().unwrap()
}

/// The reference's portmap (Debian's containernetworking-plugins) run as a runtime would.
fn reference_portmap(node: &Node, c: &Container, verb: &str, conf: &str) {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &node.host.name, "/usr/lib/cni/portmap"])
        .env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", &c.id)
        .env("CNI_NETNS", c.ns.path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(conf.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "reference portmap {verb}: {}", String::from_utf8_lossy(&out.stdout));
}

/// `externalSetMarkChain`: the connections to masquerade go through
/// kube-proxy's chain and its masquerade, in the reference's iptables
/// layout, which either implementation removes.
fn external_mark_chain_with(tool: &str) {
    let (node, c1, c2) = node_with_two_containers();
    serve(&c1.ns.name, 80, "c1-tcp");
    let add = conf(json!({"externalSetMarkChain": "KUBE-MARK-MASQ"}), Some(std_maps()), Some(c1.prev_result(1)));
    // Before kube-proxy made its chain: try again later, nothing written.
    assert_eq!(call(&node, &c1).run("ADD", &add).err_code(), 11);
    kube_proxy_mark_chains(&node, tool);
    // A dual-stack pod needs the chain of both families, as in the reference.
    assert_eq!(call(&node, &c1).run("ADD", &add).err_code(), 11);
    let ip6tool = format!("ip6{}", tool.strip_prefix("ip").unwrap());
    assert!(!node.host.exec(&format!("{tool}-save -t nat")).contains("CNI-DN-"), "nothing left of the failed ADD");
    kube_proxy_mark_chains(&node, &ip6tool);
    let made_by_kube = node.host.exec(&format!("{tool}-save -t nat"));

    call(&node, &c1).run("ADD", &add).ok();
    let chain = node.host.exec(&format!("{tool}-save -t nat"));
    assert!(chain.contains(&format!("dnat name: \\\"pmnet\\\" id: \\\"{}\\\"", c1.id)), "{chain}");
    assert!(!ruleset(&node.host).contains(&c1.id), "nothing in cnibox's nftables table");
    // A neighbour's hairpin connection works only masqueraded: kube-proxy's chain marked it.
    let before = first_rule_packets(&node, tool, "KUBE-MARK-MASQ");
    assert_eq!(tcp_get(&c2.ns.name, "10.1.0.1:8080").as_deref(), Some("c1-tcp"));
    assert_eq!(tcp_get(&node.host.name, "127.0.0.1:8080").as_deref(), Some("c1-tcp"));
    assert!(first_rule_packets(&node, tool, "KUBE-MARK-MASQ") >= before + 2);
    assert_eq!(tcp_get(&node.outside.name, "192.168.77.1:8080").as_deref(), Some("c1-tcp"));
    let before6 = first_rule_packets(&node, &ip6tool, "KUBE-MARK-MASQ");
    assert_eq!(tcp_get(&c2.ns.name, "[fd01::1]:8080").as_deref(), Some("c1-tcp"));
    assert!(first_rule_packets(&node, &ip6tool, "KUBE-MARK-MASQ") > before6);

    call(&node, &c1).run("CHECK", &add).ok();
    let dnat = chain.lines().find(|l| l.contains("--to-destination 10.1.0.5:80")).unwrap().replacen("-A", "-D", 1);
    node.host.exec(&format!("{tool} -w -t nat {dnat}"));
    call(&node, &c1).run("CHECK", &add).err_code();
    call(&node, &c1).run("ADD", &add).ok();
    call(&node, &c1).run("CHECK", &add).ok();

    call(&node, &c1).run("DEL", &add).ok();
    assert_eq!(tcp_get(&node.outside.name, "192.168.77.1:8080"), None);
    let left = node.host.exec(&format!("{tool}-save -t nat")) + &node.host.exec(&format!("{ip6tool}-save -t nat"));
    assert!(!left.contains(&c1.id) && !left.contains("10.1.0.5") && !left.contains("fd01::5"), "{left}");
    // kube-proxy's chains are as they were.
    for line in made_by_kube.lines().filter(|l| l.contains("KUBE-")) {
        assert!(left.contains(line), "{line} gone:\n{left}");
    }
    call(&node, &c1).run("DEL", &add).ok();
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn external_set_mark_chain_with_iptables_nft() {
    require_root();
    external_mark_chain_with("iptables-nft");
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn external_set_mark_chain_with_iptables_legacy() {
    require_root();
    external_mark_chain_with("iptables-legacy");
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn mark_masq_bit_marks_and_masquerades_as_the_reference_does() {
    require_root();
    let (node, c1, c2) = node_with_two_containers();
    serve(&c1.ns.name, 80, "c1-tcp");
    let add = conf(json!({"markMasqBit": 5}), Some(std_maps()), Some(c1.prev_result(1)));
    call(&node, &c1).run("ADD", &add).ok();
    let saved = node.host.exec("iptables-nft-save -t nat");
    assert!(saved.contains("-A CNI-HOSTPORT-SETMARK -m comment --comment \"CNI portfwd masquerade mark\" -j MARK --set-xmark 0x20/0x20"), "{saved}");
    assert!(saved.contains("-A CNI-HOSTPORT-MASQ -m mark --mark 0x20/0x20 -j MASQUERADE"), "{saved}");
    assert!(
        saved.contains("-A POSTROUTING -m comment --comment \"CNI portfwd requiring masquerade\" -j CNI-HOSTPORT-MASQ")
    );
    assert_eq!(tcp_get(&c2.ns.name, "10.1.0.1:8080").as_deref(), Some("c1-tcp"));
    assert_eq!(tcp_get(&node.host.name, "127.0.0.1:8080").as_deref(), Some("c1-tcp"));
    assert_eq!(tcp_get(&node.outside.name, "192.168.77.1:8080").as_deref(), Some("c1-tcp"));
    assert_eq!(tcp_get(&c2.ns.name, "[fd01::1]:8080").as_deref(), Some("c1-tcp"));
    assert!(first_rule_packets(&node, "iptables-nft", "CNI-HOSTPORT-SETMARK") >= 2);
    call(&node, &c1).run("CHECK", &add).ok();

    // The reference's DEL removes what cnibox wrote, and the other way round.
    reference_portmap(&node, &c1, "DEL", &add);
    let left = node.host.exec("iptables-nft-save -t nat") + &node.host.exec("ip6tables-nft-save -t nat");
    assert!(!left.contains(&c1.id) && !left.contains("10.1.0.5") && !left.contains("fd01::5"), "{left}");
    call(&node, &c1).run("CHECK", &add).err_code();
    reference_portmap(&node, &c1, "ADD", &add);
    call(&node, &c1).run("DEL", &add).ok();
    let left = node.host.exec("iptables-nft-save -t nat") + &node.host.exec("ip6tables-nft-save -t nat");
    assert!(!left.contains(&c1.id) && !left.contains("10.1.0.5") && !left.contains("fd01::5"), "{left}");
    assert_eq!(tcp_get(&node.outside.name, "192.168.77.1:8080"), None);
}
