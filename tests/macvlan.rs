mod common;
use common::*;

/// A fake host netns with an up bridge `br0` to serve as the master.
fn host_with_bridge() -> Netns {
    let host = Netns::new("mvh");
    host.exec("ip link add br0 type bridge");
    // A port gives the bridge carrier, which macvlans inherit.
    host.exec("ip link add port0 type veth peer name port1");
    host.exec("ip link set port1 up");
    host.exec("ip link set port0 master br0 up");
    host.exec("ip link set br0 up");
    host
}

fn conf(mode: &str, ip: &str, extra: &str) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"mv","type":"macvlan","master":"br0","mode":"{mode}"{extra},
        "ipam":{{"type":"static","addresses":[{{"address":"{ip}"}}],
                 "routes":[{{"dst":"10.99.0.0/16","gw":"10.77.0.1"}}]}}}}"#
    )
}

fn call(host: &Netns, id: &str, ns: &Netns) -> Call {
    Call::new("macvlan").container(id, &ns.path(), "eth0").in_netns(host).env("CNI_PATH", &cni_path())
}

/// Two containers on one master in `mode`; returns whether they can ping.
fn two_containers(mode: &str) -> bool {
    let host = host_with_bridge();
    let (c1, c2) = (Netns::new("mva"), Netns::new("mvb"));
    let conf1 = conf(mode, "10.77.0.11/24", "");
    let conf2 = conf(mode, "10.77.0.12/24", "");
    let r = call(&host, "c1", &c1).run("ADD", &conf1).ok();
    assert_eq!(r["interfaces"][0]["name"], "eth0");
    assert_eq!(r["ips"][0]["address"], "10.77.0.11/24");
    call(&host, "c2", &c2).run("ADD", &conf2).ok();
    let details = c1.exec("ip -d link show eth0");
    assert!(details.contains(&format!("macvlan mode {mode}")), "{details}");
    // Nothing is left in the host but the bridge.
    assert!(!host.exec("ip -o link").contains("cni"), "temporary link left in host");
    // A positive control: the ping tool works (its own address answers).
    assert!(c1.try_exec("busybox ping -c1 -W1 10.77.0.11"));
    let reached = c1.try_exec("busybox ping -c1 -W2 10.77.0.12");
    call(&host, "c1", &c1).run("CHECK", &with_prev(&conf1, &r)).ok();
    call(&host, "c1", &c1).run("DEL", &conf1).ok();
    call(&host, "c2", &c2).run("DEL", &conf2).ok();
    assert!(!c1.try_exec("ip link show eth0"));
    reached
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn bridge_mode_containers_reach_each_other() {
    require_root();
    assert!(two_containers("bridge"));
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn private_mode_containers_do_not() {
    require_root();
    assert!(!two_containers("private"));
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn vepa_mode() {
    require_root();
    // Without a hairpinning switch behind the master, VEPA ports do not meet.
    assert!(!two_containers("vepa"));
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn passthru_allows_one() {
    require_root();
    let host = host_with_bridge();
    let (c1, c2) = (Netns::new("mva"), Netns::new("mvb"));
    let conf1 = conf("passthru", "10.77.0.11/24", "");
    call(&host, "c1", &c1).run("ADD", &conf1).ok();
    assert!(c1.exec("ip -d link show eth0").contains("macvlan mode passthru"));
    call(&host, "c2", &c2).run("ADD", &conf("passthru", "10.77.0.12/24", "")).err_code();
    assert!(!c2.try_exec("ip link show eth0"));
    call(&host, "c1", &c1).run("DEL", &conf1).ok();
    // Freed: another container may take it now.
    call(&host, "c2", &c2).run("ADD", &conf("passthru", "10.77.0.12/24", "")).ok();
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn mtu_above_master_is_refused() {
    require_root();
    let host = host_with_bridge();
    host.exec("ip link set br0 mtu 1400");
    let c = Netns::new("mva");
    let code = call(&host, "c1", &c).run("ADD", &conf("bridge", "10.77.0.11/24", r#","mtu":1500"#)).err_code();
    assert_eq!(code, 7);
    assert!(!c.try_exec("ip link show eth0"));
    call(&host, "c1", &c).run("ADD", &conf("bridge", "10.77.0.11/24", r#","mtu":1300"#)).ok();
    assert!(c.exec("ip link show eth0").contains("mtu 1300"));
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn static_addresses_routes_and_mac() {
    require_root();
    let host = host_with_bridge();
    let c = Netns::new("mva");
    let cfg =
        conf("bridge", "10.77.0.11/24", r#","mac":"02:00:00:00:00:01","runtimeConfig":{"mac":"02:00:00:00:00:42"}"#);
    let r = call(&host, "c1", &c).run("ADD", &cfg).ok();
    assert_eq!(r["interfaces"][0]["mac"], "02:00:00:00:00:42");
    assert_eq!(r["interfaces"][0]["sandbox"], c.path());
    let link = c.exec("ip link show eth0");
    assert!(link.contains("02:00:00:00:00:42") && link.contains("UP"), "{link}");
    assert!(c.exec("ip addr show eth0").contains("10.77.0.11/24"));
    assert!(c.exec("ip route").contains("10.99.0.0/16 via 10.77.0.1 dev eth0"));
    assert_eq!(c.exec("cat /proc/sys/net/ipv4/conf/eth0/arp_notify").trim(), "1");
    call(&host, "c1", &c).run("CHECK", &with_prev(&cfg, &r)).ok();
    // CHECK notices a removed address.
    c.exec("ip addr del 10.77.0.11/24 dev eth0");
    call(&host, "c1", &c).run("CHECK", &with_prev(&cfg, &r)).err_code();
    // CNI_ARGS MAC sits between config and runtimeConfig.
    let c2 = Netns::new("mvb");
    let cfg2 = conf("bridge", "10.77.0.12/24", r#","mac":"02:00:00:00:00:01""#);
    let r2 = call(&host, "c2", &c2).env("CNI_ARGS", "IgnoreUnknown=1;MAC=02:00:00:00:00:07").run("ADD", &cfg2).ok();
    assert_eq!(r2["interfaces"][0]["mac"], "02:00:00:00:00:07");
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn default_master_is_the_default_route_interface() {
    require_root();
    let host = host_with_bridge();
    host.exec("ip addr add 10.77.0.1/24 dev br0");
    host.exec("ip route add default via 10.77.0.254");
    let c = Netns::new("mva");
    let cfg = r#"{"cniVersion":"1.0.0","name":"mv","type":"macvlan"}"#;
    let r = call(&host, "c1", &c).run("ADD", cfg).ok();
    assert!(r.get("ips").is_none());
    assert!(c.exec("ip -d link show eth0").contains("macvlan mode bridge"));
    // No default route and no master: a config error.
    let host2 = host_with_bridge();
    let c2 = Netns::new("mvb");
    assert_eq!(call(&host2, "c2", &c2).run("ADD", cfg).err_code(), 7);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn failed_add_leaves_nothing() {
    require_root();
    let host = host_with_bridge();
    let c = Netns::new("mva");
    // The route's gateway is unreachable from the address: configuring fails after creation.
    let cfg = r#"{"cniVersion":"1.0.0","name":"mv","type":"macvlan","master":"br0",
        "ipam":{"type":"static","addresses":[{"address":"10.77.0.11/24"}],"routes":[{"dst":"10.99.0.0/16","gw":"10.55.0.1"}]}}"#;
    call(&host, "c1", &c).run("ADD", cfg).err_code();
    assert!(!c.try_exec("ip link show eth0"));
    assert_eq!(c.exec("ip -o link").lines().count(), 1, "only lo remains");
    // A bad mode or master: refused before anything is made.
    let bad = r#"{"cniVersion":"1.0.0","name":"mv","type":"macvlan","master":"br0","mode":"nope"}"#;
    assert_eq!(call(&host, "c1", &c).run("ADD", bad).err_code(), 7);
    let bad = r#"{"cniVersion":"1.0.0","name":"mv","type":"macvlan","master":"nosuch"}"#;
    assert_eq!(call(&host, "c1", &c).run("ADD", bad).err_code(), 7);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn del_twice_and_with_the_netns_gone() {
    require_root();
    let host = host_with_bridge();
    let c = Netns::new("mva");
    let cfg = conf("bridge", "10.77.0.11/24", "");
    call(&host, "c1", &c).run("ADD", &cfg).ok();
    call(&host, "c1", &c).run("DEL", &cfg).ok();
    call(&host, "c1", &c).run("DEL", &cfg).ok();
    let gone = c.path();
    drop(c);
    Call::new("macvlan")
        .container("c1", &gone, "eth0")
        .in_netns(&host)
        .env("CNI_PATH", &cni_path())
        .run("DEL", &cfg)
        .ok();
    Call::new("macvlan").container("c1", "", "eth0").in_netns(&host).env("CNI_PATH", &cni_path()).run("DEL", &cfg).ok();
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn link_in_container() {
    require_root();
    let host = Netns::new("mvh");
    let c = Netns::new("mva");
    c.exec("ip link add br9 type bridge");
    c.exec("ip link set br9 up");
    let cfg = r#"{"cniVersion":"1.0.0","name":"mv","type":"macvlan","master":"br9","linkInContainer":true}"#;
    call(&host, "c1", &c).run("ADD", cfg).ok();
    assert!(c.exec("ip -d link show eth0").contains("macvlan mode bridge"));
    assert!(c.exec("ip link show eth0").contains("eth0@br9"));
    call(&host, "c1", &c).run("DEL", cfg).ok();
    assert!(!c.try_exec("ip link show eth0"));
    assert!(c.try_exec("ip link show br9"));
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn ipv6_static_address() {
    require_root();
    let host = host_with_bridge();
    let c = Netns::new("mva");
    let cfg = r#"{"cniVersion":"1.0.0","name":"mv","type":"macvlan","master":"br0",
        "ipam":{"type":"static","addresses":[{"address":"fd77::11/64","gateway":"fd77::1"}],"routes":[{"dst":"::/0"}]}}"#;
    let r = call(&host, "c1", &c).run("ADD", cfg).ok();
    assert_eq!(r["ips"][0]["address"], "fd77::11/64");
    assert!(c.exec("ip -6 addr show eth0").contains("fd77::11/64"));
    assert!(c.exec("ip -6 route").contains("default via fd77::1 dev eth0"));
    assert_eq!(c.exec("cat /proc/sys/net/ipv6/conf/eth0/ndisc_notify").trim(), "1");
    call(&host, "c1", &c).run("DEL", cfg).ok();
    assert!(!c.try_exec("ip link show eth0"));
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn parallel_adds_and_dels_on_one_master() {
    require_root();
    let host = host_with_bridge();
    let containers: Vec<Netns> = (0..6).map(|_| Netns::new("mvp")).collect();
    std::thread::scope(|s| {
        for (i, c) in containers.iter().enumerate() {
            let host = &host;
            s.spawn(move || {
                let cfg = conf("bridge", &format!("10.77.0.{}/24", 20 + i), "");
                call(host, &format!("p{i}"), c).run("ADD", &cfg).ok();
                call(host, &format!("p{i}"), c).run("DEL", &cfg).ok();
                call(host, &format!("p{i}"), c).run("ADD", &cfg).ok();
            });
        }
    });
    for c in &containers {
        assert!(c.exec("ip -d link show eth0").contains("macvlan"));
    }
    assert_eq!(host.exec("ip -o link").lines().count(), 4, "host keeps lo, br0 and the veth pair only");
}

/// STATUS of the plugins that hang a link on a host master: ready while the
/// master exists, code 50 when it does not. ipvlan and vlan links cannot be
/// made on this kernel, but their STATUS only looks at the master.
#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn status_asks_for_the_master() {
    require_root();
    let host = host_with_bridge();
    let status = |plugin: &str, master: &str| {
        let conf = format!(
            r#"{{"cniVersion":"1.1.0","name":"st","type":"{plugin}","master":"{master}","vlanId":5,
            "ipam":{{"type":"static","addresses":[{{"address":"10.77.0.5/24"}}]}}}}"#
        );
        Call::new(plugin).in_netns(&host).env("CNI_PATH", &cni_path()).run("STATUS", &conf)
    };
    for plugin in ["macvlan", "ipvlan", "vlan"] {
        status(plugin, "br0").ok();
        assert_eq!(status(plugin, "nosuch0").err_code(), 50, "{plugin}");
    }
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn routes_to_one_destination_via_several_gateways_are_all_installed() {
    require_root();
    let host = host_with_bridge();
    let c = Netns::new("mve");
    let cfg = r#"{"cniVersion":"1.0.0","name":"mvnet","type":"macvlan","master":"br0","mode":"bridge",
        "ipam":{"type":"static","addresses":[{"address":"10.77.0.13/24"},{"address":"fd77::13/64"}],
                "routes":[{"dst":"10.99.0.0/16","gw":"10.77.0.1"},{"dst":"10.99.0.0/16","gw":"10.77.0.2"},
                          {"dst":"fd99::/64","gw":"fd77::1"},{"dst":"fd99::/64","gw":"fd77::2"}]}}"#;
    let r = call(&host, "c1", &c).run("ADD", cfg).ok();
    assert_eq!(r["routes"].as_array().unwrap().len(), 4);
    let v4 = c.exec("ip route show 10.99.0.0/16");
    assert!(v4.contains("via 10.77.0.1") && v4.contains("via 10.77.0.2"), "{v4}");
    let v6 = c.exec("ip -6 route show fd99::/64");
    assert!(v6.contains("via fd77::1") && v6.contains("via fd77::2"), "{v6}");
    call(&host, "c1", &c).run("CHECK", &with_prev(cfg, &r)).ok();
    call(&host, "c1", &c).run("DEL", cfg).ok();
}
