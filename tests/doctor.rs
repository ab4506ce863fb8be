//! cnibox doctor: a healthy node passes; each kind of breakage is named and
//! makes it exit non-zero. Runs inside its own netns (nft tables, sysctls).

mod common;
use common::*;

use std::path::Path;

struct Node {
    ns: Netns,
    bin: TempDir,
    conf: TempDir,
    cache: TempDir,
    ipam: TempDir,
}

impl Node {
    /// A plugin directory with every cnibox applet linked, plus the
    /// reference bridge and host-local (a mixed install is allowed).
    fn healthy() -> Node {
        let node = Node {
            ns: Netns::new("doc"),
            bin: TempDir::new("bin"),
            conf: TempDir::new("conf"),
            cache: TempDir::new("cache"),
            ipam: TempDir::new("ipam"),
        };
        let list = sh(&format!("{BIN} --list"));
        for name in list.lines() {
            std::os::unix::fs::symlink(BIN, node.bin.path().join(name)).unwrap();
        }
        for name in ["bridge", "host-local"] {
            let link = node.bin.path().join(name);
            if !link.exists() {
                std::os::unix::fs::symlink(Path::new("/usr/lib/cni").join(name), link).unwrap();
            }
        }
        node.write("10-lo.conf", r#"{"cniVersion":"1.0.0","name":"lo","type":"loopback"}"#);
        node.write(
            "20-br.conflist",
            &format!(
                r#"{{"cniVersion":"1.0.0","name":"pods","plugins":[{{"type":"bridge","bridge":"cni0",
                    "ipam":{{"type":"host-local","subnet":"10.88.0.0/16","dataDir":"{}"}}}}]}}"#,
                node.ipam.path().display()
            ),
        );
        node.write(
            "30-flannel.conflist",
            r#"{"cniVersion":"1.0.0","name":"cbr0","plugins":[{"type":"flannel","delegate":{"hairpinMode":true}},
                {"type":"portmap","capabilities":{"portMappings":true}}]}"#,
        );
        // Chained plugins are validated without a prevResult.
        node.write(
            "35-chain.conflist",
            &format!(
                r#"{{"cniVersion":"1.0.0","name":"chain","plugins":[{{"type":"ptp",
                    "ipam":{{"type":"host-local","subnet":"10.89.0.0/16","dataDir":"{}"}}}},
                    {{"type":"tuning","sysctl":{{"net.ipv4.conf.IFNAME.arp_filter":"1"}}}},
                    {{"type":"bandwidth","capabilities":{{"bandwidth":true}}}},
                    {{"type":"firewall","ingressPolicy":"same-bridge"}},
                    {{"type":"sbr"}}]}}"#,
                node.ipam.path().display()
            ),
        );
        // A plugin from the reference suite, installed beside cnibox's links.
        std::os::unix::fs::symlink("/usr/lib/cni/vlan", node.bin.path().join("vlan-ref")).unwrap();
        node.write(
            "40-ref.conf",
            r#"{"cniVersion":"0.4.0","name":"ref","type":"vlan-ref","master":"eth0","vlanId":5}"#,
        );
        node
    }

    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.conf.path().join(file), text).unwrap();
    }

    /// Runs the doctor; returns (exit code, report).
    fn doctor(&self) -> (i32, String) {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.ns.name, BIN, "doctor", "--bin-dir"])
            .arg(self.bin.path())
            .arg("--conf-dir")
            .arg(self.conf.path())
            .arg("--cache-dir")
            .arg(self.cache.path())
            .arg("--ipam-dir")
            .arg(self.ipam.path().join("default"))
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        (out.status.code().unwrap_or(-1), report)
    }

    fn expect_problem(&self, needle: &str) {
        let (code, report) = self.doctor();
        assert_eq!(code, 1, "expected a problem about {needle:?}:\n{report}");
        let line = report.lines().find(|l| l.contains("FAIL") && l.contains(needle));
        assert!(line.is_some(), "no FAIL line naming {needle:?}:\n{report}");
    }
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn a_healthy_node_passes() {
    require_root();
    let node = Node::healthy();
    let (code, report) = node.doctor();
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("0 problem(s)"), "{report}");
    assert!(report.contains(r#"10-lo.conf: network "lo" (loopback), cniVersion 1.0.0"#), "{report}");
    assert!(report.contains("bridge: "), "{report}");
    // doctor is not an applet: never listed, never linked.
    assert!(!sh(&format!("{BIN} --list")).lines().any(|l| l == "doctor"));
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn broken_links_and_configs_are_named() {
    require_root();
    let node = Node::healthy();
    let loopback = node.bin.path().join("loopback");
    std::fs::remove_file(&loopback).unwrap();
    std::os::unix::fs::symlink("/nonexistent/cnibox", &loopback).unwrap();
    node.expect_problem("loopback -> /nonexistent/cnibox: broken link");
    std::fs::remove_file(&loopback).unwrap();
    std::os::unix::fs::symlink(BIN, &loopback).unwrap();

    std::os::unix::fs::symlink(BIN, node.bin.path().join("frobnicate")).unwrap();
    node.expect_problem("has no applet \"frobnicate\"");
    std::fs::remove_file(node.bin.path().join("frobnicate")).unwrap();

    node.write("30-bad.conflist", "{not json");
    node.expect_problem("30-bad.conflist");
    std::fs::remove_file(node.conf.path().join("30-bad.conflist")).unwrap();

    node.write("40-unknown.conf", r#"{"cniVersion":"1.0.0","name":"x","type":"nosuchplugin"}"#);
    node.expect_problem(r#"plugin "nosuchplugin" is not installed"#);
    std::fs::remove_file(node.conf.path().join("40-unknown.conf")).unwrap();

    node.write("45-flannel.conf", r#"{"cniVersion":"1.0.0","name":"fl","type":"flannel","delegate":{"name":"x"}}"#);
    node.expect_problem("flannel rejects its config: 'delegate' dictionary must not have 'name' field");
    std::fs::remove_file(node.conf.path().join("45-flannel.conf")).unwrap();

    node.write("47-tuning.conf", r#"{"cniVersion":"1.0.0","name":"t","type":"tuning","sysctl":{"kernel.panic":"1"}}"#);
    node.expect_problem("tuning rejects its config");
    std::fs::remove_file(node.conf.path().join("47-tuning.conf")).unwrap();

    node.write("50-ipam.conf", r#"{"cniVersion":"1.0.0","name":"y","type":"loopback","ipam":{"type":"dhcpx"}}"#);
    node.expect_problem(r#"plugin "dhcpx" is not installed"#);
    std::fs::remove_file(node.conf.path().join("50-ipam.conf")).unwrap();
    assert_eq!(node.doctor().0, 0);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn leaked_state_is_found() {
    require_root();
    let node = Node::healthy();
    // A reservation whose container is cached is fine; one whose container is gone is not.
    let pods = node.ipam.path().join("pods");
    std::fs::create_dir_all(&pods).unwrap();
    std::fs::write(pods.join("10.88.0.2"), "livecontainer\r\neth0").unwrap();
    std::fs::write(pods.join("last_reserved_ip.0"), "10.88.0.3").unwrap();
    std::fs::create_dir_all(node.cache.path().join("results")).unwrap();
    std::fs::write(
        node.cache.path().join("results/pods-livecontainer-eth0"),
        r#"{"kind":"cniCacheV1","containerId":"livecontainer","config":"","ifName":"eth0","networkName":"pods"}"#,
    )
    .unwrap();
    assert_eq!(node.doctor().0, 0, "{}", node.doctor().1);
    std::fs::write(pods.join("10.88.0.3"), "ghostcontainer\r\neth0").unwrap();
    node.expect_problem("held by container ghostcontainer");
    std::fs::remove_file(pods.join("10.88.0.3")).unwrap();

    // An element in a cnibox table owned by a container that is gone.
    node.ns.exec("nft add table inet cnibox-doctest");
    node.ns.exec("nft add set inet cnibox-doctest hosts '{ type ipv4_addr; }'");
    node.ns.exec(r#"nft add element inet cnibox-doctest hosts '{ 10.88.0.2 comment "pods livecontainer eth0" }'"#);
    assert_eq!(node.doctor().0, 0, "{}", node.doctor().1);
    node.ns.exec(r#"nft add element inet cnibox-doctest hosts '{ 10.88.0.9 comment "pods ghost2 eth0" }'"#);
    node.expect_problem("belongs to container ghost2");
    // Tables cnibox does not own are none of its business.
    node.ns.exec("nft delete table inet cnibox-doctest");
    node.ns.exec("nft add table inet other");
    node.ns.exec("nft add set inet other hosts '{ type ipv4_addr; }'");
    node.ns.exec(r#"nft add element inet other hosts '{ 10.88.0.9 comment "pods ghost3 eth0" }'"#);
    assert_eq!(node.doctor().0, 0, "{}", node.doctor().1);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn a_networks_leftover_chain_is_named_as_the_networks() {
    require_root();
    let node = Node::healthy();
    // What an earlier release left after a network's last container: the
    // subnet's masquerade set (empty) and chain, and an unused hairpin chain.
    node.ns.exec("nft add table inet cnibox-masq");
    node.ns.exec("nft add set inet cnibox-masq m_x '{ type ipv4_addr; }'");
    node.ns.exec("nft add chain inet cnibox-masq m_x '{ type nat hook postrouting priority 100; }'");
    node.ns.exec(r#"nft 'add rule inet cnibox-masq m_x ip saddr @m_x masquerade comment "pods 10.88.0.0/16"'"#);
    node.ns.exec("nft add table inet cnibox-portmap");
    node.ns.exec("nft add chain inet cnibox-portmap hairpin-0123456789abcdef");
    let (code, report) = node.doctor();
    assert_eq!(code, 0, "leftovers are warnings, not failures:\n{report}");
    assert!(report.contains("chain m_x (network pods, subnet 10.88.0.0/16) serves no container"), "{report}");
    assert!(report.contains("chain hairpin-0123456789abcdef"), "{report}");
    assert!(!report.contains("belongs to container 10.88"), "{report}");
}
