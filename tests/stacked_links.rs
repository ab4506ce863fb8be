//! ipvlan, vlan, dummy and vrf on a kernel without their modules: the
//! error paths (codes, nothing left behind) and DEL's idempotence. The
//! working paths run in the VM (`make vmtest`).
mod common;
use common::*;

/// The links of a netns, by name.
fn links(ns: &Netns) -> Vec<String> {
    ns.exec("ip -o link show")
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

/// A fake host with a veth `m0` (MTU 1500) to serve as master, and a container.
fn world() -> (Netns, Netns) {
    let host = Netns::new("slh");
    host.exec("ip link add m0 type veth peer name m0p");
    host.exec("ip link set m0 up");
    (host, Netns::new("slc"))
}

fn assert_untouched(host: &Netns, cont: &Netns) {
    assert_eq!(links(cont), vec!["lo"], "container links");
    let mut h = links(host);
    h.sort();
    assert_eq!(h, vec!["lo", "m0", "m0p"], "host links");
}

const STATIC_IPAM: &str = r#"{"type":"static","addresses":[{"address":"10.9.0.2/24"}]}"#;

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn vlan_id_out_of_range_is_invalid_config() {
    require_root();
    let (host, cont) = world();
    for id in ["4095", "-1", "5000"] {
        let conf = format!(
            r#"{{"cniVersion":"1.0.0","name":"v","type":"vlan","master":"m0","vlanId":{id},"ipam":{STATIC_IPAM}}}"#
        );
        let reply = Call::new("vlan").container("c1", &cont.path(), "eth0").in_netns(&host).run("ADD", &conf);
        assert_eq!(reply.err_code(), 7, "vlanId {id}");
    }
    assert_untouched(&host, &cont);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn missing_master_is_a_clear_error() {
    require_root();
    let (host, cont) = world();
    let confs = [
        ("vlan", format!(r#"{{"cniVersion":"1.0.0","name":"v","type":"vlan","vlanId":5,"ipam":{STATIC_IPAM}}}"#)),
        (
            "vlan",
            format!(
                r#"{{"cniVersion":"1.0.0","name":"v","type":"vlan","master":"nope0","vlanId":5,"ipam":{STATIC_IPAM}}}"#
            ),
        ),
        (
            "ipvlan",
            format!(r#"{{"cniVersion":"1.0.0","name":"i","type":"ipvlan","master":"nope0","ipam":{STATIC_IPAM}}}"#),
        ),
        // No master and no default route in the host: nothing to default to.
        ("ipvlan", format!(r#"{{"cniVersion":"1.0.0","name":"i","type":"ipvlan","ipam":{STATIC_IPAM}}}"#)),
    ];
    for (plugin, conf) in &confs {
        let reply = Call::new(plugin).container("c1", &cont.path(), "eth0").in_netns(&host).run("ADD", conf);
        let out = reply.json();
        assert_eq!(reply.code, 1);
        assert_eq!(out["code"], 7, "{conf}: {out}");
        let msg = out["msg"].as_str().unwrap();
        assert!(msg.contains("master") || msg.contains("default route"), "{msg}");
    }
    assert_untouched(&host, &cont);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn invalid_configs() {
    require_root();
    let (host, cont) = world();
    let cases = [
        ("ipvlan", format!(r#"{{"cniVersion":"1.0.0","name":"i","type":"ipvlan","master":"m0","mode":"l4","ipam":{STATIC_IPAM}}}"#)),
        // MTU above the master's.
        ("ipvlan", format!(r#"{{"cniVersion":"1.0.0","name":"i","type":"ipvlan","master":"m0","mtu":9000,"ipam":{STATIC_IPAM}}}"#)),
        ("vlan", format!(r#"{{"cniVersion":"1.0.0","name":"v","type":"vlan","master":"m0","vlanId":3,"mtu":1501,"ipam":{STATIC_IPAM}}}"#)),
        // Not chained and no IPAM.
        ("ipvlan", r#"{"cniVersion":"1.0.0","name":"i","type":"ipvlan","master":"m0"}"#.to_string()),
        ("vlan", r#"{"cniVersion":"1.0.0","name":"v","type":"vlan","master":"m0","vlanId":3}"#.to_string()),
        ("dummy", r#"{"cniVersion":"1.0.0","name":"d","type":"dummy"}"#.to_string()),
        // vrf: no name, no prevResult, a reserved table.
        ("vrf", r#"{"cniVersion":"1.0.0","name":"r","type":"vrf","prevResult":{"cniVersion":"1.0.0"}}"#.to_string()),
        ("vrf", r#"{"cniVersion":"1.0.0","name":"r","type":"vrf","vrfname":"blue"}"#.to_string()),
        ("vrf", r#"{"cniVersion":"1.0.0","name":"r","type":"vrf","vrfname":"blue","table":254,"prevResult":{"cniVersion":"1.0.0"}}"#.to_string()),
    ];
    for (plugin, conf) in &cases {
        let reply = Call::new(plugin).container("c1", &cont.path(), "eth0").in_netns(&host).run("ADD", conf);
        assert_eq!(reply.err_code(), 7, "{plugin}: {conf}");
    }
    assert_untouched(&host, &cont);
    // vrf speaks 0.3.1 and later only.
    let conf = r#"{"cniVersion":"0.2.0","name":"r","type":"vrf","vrfname":"blue","prevResult":{"cniVersion":"0.2.0"}}"#;
    let reply = Call::new("vrf").container("c1", &cont.path(), "eth0").in_netns(&host).run("ADD", conf);
    assert_eq!(reply.err_code(), 1);
}

/// On this kernel the link kinds themselves are missing: ADD fails cleanly.
#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn add_without_kernel_support_leaves_nothing() {
    require_root();
    let (host, cont) = world();
    let confs = [
        (
            "ipvlan",
            format!(r#"{{"cniVersion":"1.0.0","name":"i","type":"ipvlan","master":"m0","ipam":{STATIC_IPAM}}}"#),
        ),
        (
            "vlan",
            format!(
                r#"{{"cniVersion":"1.0.0","name":"v","type":"vlan","master":"m0","vlanId":7,"ipam":{STATIC_IPAM}}}"#
            ),
        ),
        ("dummy", format!(r#"{{"cniVersion":"1.0.0","name":"d","type":"dummy","ipam":{STATIC_IPAM}}}"#)),
    ];
    for (plugin, conf) in &confs {
        let call = Call::new(plugin).container("c1", &cont.path(), "eth0").in_netns(&host);
        let reply = call.run("ADD", conf);
        if reply.code == 0 {
            // This kernel has the module after all: clean up and move on.
            call.run("DEL", conf).ok();
            continue;
        }
        reply.err_code();
        assert_untouched(&host, &cont);
    }
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn del_is_idempotent() {
    require_root();
    let (host, cont) = world();
    let confs = [
        (
            "ipvlan",
            format!(r#"{{"cniVersion":"1.0.0","name":"i","type":"ipvlan","master":"m0","ipam":{STATIC_IPAM}}}"#),
        ),
        // DEL needs neither the master nor a valid vlanId.
        (
            "vlan",
            format!(
                r#"{{"cniVersion":"1.0.0","name":"v","type":"vlan","master":"gone0","vlanId":7,"ipam":{STATIC_IPAM}}}"#
            ),
        ),
        ("dummy", format!(r#"{{"cniVersion":"1.0.0","name":"d","type":"dummy","ipam":{STATIC_IPAM}}}"#)),
        ("vrf", r#"{"cniVersion":"1.0.0","name":"r","type":"vrf","vrfname":"blue"}"#.to_string()),
    ];
    for (plugin, conf) in &confs {
        // The link is gone (never made).
        Call::new(plugin).container("c1", &cont.path(), "eth0").in_netns(&host).run("DEL", conf).ok();
        // The netns is gone, or was never given.
        Call::new(plugin).container("c1", "/run/netns/cnibox-gone", "eth0").in_netns(&host).run("DEL", conf).ok();
        Call::new(plugin).container("c1", "", "eth0").in_netns(&host).run("DEL", conf).ok();
    }
    // A container link that exists is removed by DEL.
    cont.exec("ip link add eth0 type veth peer name eth0p");
    let conf = &confs[0].1;
    Call::new("ipvlan").container("c1", &cont.path(), "eth0").in_netns(&host).run("DEL", conf).ok();
    assert_eq!(links(&cont), vec!["lo"]);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn status_and_gc_forward_to_ipam() {
    require_root();
    let host = Netns::new("slh");
    // ipvlan's and vlan's STATUS also ask for their master.
    host.exec("ip link add m0 type veth peer name m1");
    for plugin in ["ipvlan", "vlan", "dummy"] {
        let conf = format!(
            r#"{{"cniVersion":"1.1.0","name":"s","type":"{plugin}","master":"m0","ipam":{{"type":"no-such-ipam"}}}}"#
        );
        let reply = Call::new(plugin).in_netns(&host).run("STATUS", &conf);
        assert_ne!(reply.code, 0, "{plugin}: STATUS must reach the (missing) IPAM plugin");
        let conf = format!(r#"{{"cniVersion":"1.1.0","name":"s","type":"{plugin}","master":"m0"}}"#);
        Call::new(plugin).in_netns(&host).run("STATUS", &conf).ok();
        Call::new(plugin).in_netns(&host).run("GC", &conf).ok();
    }
}

/// Without "master", ipvlan takes the link of the host's default route: on
/// this kernel it then fails creating the ipvlan, past the master lookup.
#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn ipvlan_master_defaults_to_the_default_route_link() {
    require_root();
    let (host, cont) = world();
    host.exec("ip addr add 10.9.9.2/24 dev m0");
    host.exec("ip route add default via 10.9.9.1 dev m0");
    let conf = format!(r#"{{"cniVersion":"1.0.0","name":"i","type":"ipvlan","mtu":9000,"ipam":{STATIC_IPAM}}}"#);
    let reply = Call::new("ipvlan").container("c1", &cont.path(), "eth0").in_netns(&host).run("ADD", &conf);
    let out = reply.json();
    // The MTU check ran against m0 (1500), so m0 was found as the master.
    assert_eq!(out["code"], 7, "{out}");
    assert!(out["msg"].as_str().unwrap().contains("master MTU(1500)"), "{out}");
}

/// vrf on this kernel: creating the VRF fails, the interface stays as it
/// was (no master, its routes in the main table) and no VRF is left.
#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn vrf_add_failure_changes_nothing() {
    require_root();
    let cont = Netns::new("slc");
    cont.exec("ip link add eth0 type veth peer name eth0p");
    cont.exec("ip addr add 10.9.8.2/24 dev eth0");
    cont.exec("ip link set eth0 up");
    cont.exec("ip link set eth0p up");
    cont.exec("ip route add 10.77.0.0/16 via 10.9.8.1");
    let prev = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}],"ips":[{"address":"10.9.8.2/24"}]}"#;
    let conf = format!(r#"{{"cniVersion":"1.0.0","name":"r","type":"vrf","vrfname":"blue","prevResult":{prev}}}"#);
    let call = Call::new("vrf").container("c1", &cont.path(), "eth0");
    let reply = call.run("ADD", &conf);
    if reply.code == 0 {
        // This kernel has VRF support after all.
        call.run("DEL", &conf).ok();
        return;
    }
    reply.err_code();
    let mut l = links(&cont);
    l.sort();
    assert_eq!(l, vec!["eth0", "eth0p", "lo"]);
    assert!(!cont.exec("ip link show eth0").contains("master"));
    assert!(cont.exec("ip route show").contains("10.77.0.0/16 via 10.9.8.1"));
    // CHECK fails, DEL succeeds with no VRF there.
    call.run("CHECK", &conf).err_code();
    call.run("DEL", &conf).ok();
}
