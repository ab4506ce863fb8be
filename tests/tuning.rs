mod common;
use common::*;
use serde_json::{json, Value};

/// A fake host netns and a container netns joined by a veth (eth0 in the
/// container), as a main plugin leaves them, plus a data dir for backups.
struct Pair {
    host: Netns,
    ctr: Netns,
    veth: String,
    id: String,
    data: TempDir,
}

impl Pair {
    fn new() -> Pair {
        let host = Netns::new("tuh");
        let ctr = Netns::new("tuc");
        let veth = unique("vt");
        host.exec(&format!("ip link add {veth} type veth peer name eth0 netns {}", ctr.name));
        host.exec(&format!("ip link set {veth} up"));
        ctr.exec("ip link set eth0 up");
        ctr.exec("ip addr add 10.97.0.2/24 dev eth0");
        Pair { host, ctr, veth, id: unique("ctr-tu-"), data: TempDir::new("tuning") }
    }

    fn link(&self) -> Value {
        let v: Value = serde_json::from_str(&self.ctr.exec("ip -j -d link show eth0")).unwrap();
        v[0].clone()
    }

    fn sysctl(&self, path: &str) -> String {
        self.ctr.exec(&format!("cat /proc/sys/{path}")).trim().to_string()
    }

    fn prev(&self) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": self.veth},
                {"name": "eth0", "mac": self.link()["address"], "sandbox": self.ctr.path()}
            ],
            "ips": [{"address": "10.97.0.2/24", "interface": 1}]
        })
    }

    fn conf(&self, extra: Value) -> String {
        let mut c = json!({"cniVersion": "1.0.0", "name": "tuning-test", "type": "tuning",
                           "dataDir": self.data.path(), "prevResult": self.prev()});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c.to_string()
    }

    fn call(&self, plugin: &str) -> Call {
        Call::new(plugin).container(&self.id, &self.ctr.path(), "eth0").in_netns(&self.host)
    }

    fn backup(&self) -> std::path::PathBuf {
        self.data.path().join(format!("{}_eth0.json", self.id))
    }

    /// What tuning may change, for before/after comparisons.
    fn state(&self) -> (Value, Value, bool, bool, Value, String) {
        let l = self.link();
        let flags: Vec<String> =
            l["flags"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect();
        (
            l["address"].clone(),
            l["mtu"].clone(),
            l["promiscuity"].as_u64().unwrap() > 0,
            flags.contains(&"ALLMULTI".to_string()),
            l["txqlen"].clone(),
            self.sysctl("net/ipv4/conf/eth0/arp_filter"),
        )
    }
}

const MAC: &str = "0a:58:0a:61:00:99";

fn everything() -> Value {
    json!({"sysctl": {"net.ipv4.conf.IFNAME.arp_filter": "1", "net/ipv4/conf/eth0/arp_announce": "2"},
           "mac": MAC, "mtu": 1400, "promisc": true, "allmulti": true, "txQLen": 500})
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn add_check_del_restores() {
    require_root();
    let p = Pair::new();
    let before = p.state();
    let arp_announce = p.sysctl("net/ipv4/conf/eth0/arp_announce");
    let c = p.conf(everything());
    let result = p.call("tuning").run("ADD", &c).ok();
    assert_eq!(result["interfaces"][1]["mac"], MAC);
    assert_eq!(result["interfaces"][0]["name"], p.veth.as_str());
    assert_eq!(p.sysctl("net/ipv4/conf/eth0/arp_filter"), "1");
    assert_eq!(p.sysctl("net/ipv4/conf/eth0/arp_announce"), "2");
    let (mac, mtu, promisc, allmulti, txqlen, _) = p.state();
    assert_eq!((mac, mtu, promisc, allmulti, txqlen), (json!(MAC), json!(1400), true, true, json!(500)));
    assert!(p.backup().exists());

    p.call("tuning").run("CHECK", &c).ok();
    p.ctr.exec("ip link set eth0 mtu 1450");
    p.call("tuning").run("CHECK", &c).err_code();
    p.ctr.exec("ip link set eth0 mtu 1400");
    p.call("tuning").run("CHECK", &c).ok();
    p.ctr.exec("sh -c 'echo 0 > /proc/sys/net/ipv4/conf/eth0/arp_filter'");
    p.call("tuning").run("CHECK", &c).err_code();

    p.call("tuning").run("DEL", &c).ok();
    assert_eq!(p.state(), before);
    assert_eq!(p.sysctl("net/ipv4/conf/eth0/arp_announce"), arp_announce);
    assert!(!p.backup().exists());
    p.call("tuning").run("DEL", &c).ok();
    assert_eq!(p.state(), before);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn refused_configs_change_nothing() {
    require_root();
    let p = Pair::new();
    let before = p.state();
    let bad = [
        p.conf(json!({"sysctl": {"kernel.pid_max": "5000"}, "mtu": 1300})),
        p.conf(json!({"sysctl": {"net.ipv4.conf.eth0.arp_filter": "1", "kernel/../x": "1"}})),
        p.conf(json!({"sysctl": {"net.ipv4.conf.eth0.arp_filter": "1", "net/ipv4/conf/eth0/arp_filter": "0"}})),
        p.conf(json!({"mac": "not-a-mac", "mtu": 1300})),
    ];
    for c in bad.iter() {
        assert_eq!(p.call("tuning").run("ADD", c).err_code(), 7, "{c}");
        assert_eq!(p.state(), before);
        assert!(!p.backup().exists());
    }
    // The same key twice, literally.
    let c = p.conf(json!({"mtu": 1300}));
    let dup = c.replacen(
        "\"mtu\"",
        "\"sysctl\":{\"net.ipv4.conf.eth0.arp_filter\":\"1\",\"net.ipv4.conf.eth0.arp_filter\":\"1\"},\"mtu\"",
        1,
    );
    assert_eq!(p.call("tuning").run("ADD", &dup).err_code(), 7);
    assert_eq!(p.state(), before);
    // Without prevResult.
    let mut v: Value = serde_json::from_str(&c).unwrap();
    v.as_object_mut().unwrap().remove("prevResult");
    assert_eq!(p.call("tuning").run("ADD", &v.to_string()).err_code(), 7);
    assert_eq!(p.state(), before);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn a_failing_add_is_undone() {
    require_root();
    let p = Pair::new();
    let before = p.state();
    let arp_announce = p.sysctl("net/ipv4/conf/eth0/arp_announce");
    // arp_announce is written first and works; arp_filter refuses "abc".
    let c = p
        .conf(json!({"sysctl": {"net.ipv4.conf.IFNAME.arp_announce": "2", "net.ipv4.conf.IFNAME.arp_filter": "abc"},
                          "mtu": 1300}));
    assert_ne!(p.call("tuning").run("ADD", &c).err_code(), 0);
    assert_eq!(p.state(), before);
    assert_eq!(p.sysctl("net/ipv4/conf/eth0/arp_announce"), arp_announce);
    assert!(!p.backup().exists());
    // An interface that is not there.
    let c = p.conf(json!({"mtu": 1300}));
    let call = Call::new("tuning").container(&p.id, &p.ctr.path(), "eth9").in_netns(&p.host);
    assert_ne!(call.run("ADD", &c).err_code(), 0);
    assert!(!p.data.path().join(format!("{}_eth9.json", p.id)).exists());
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn allowlist_is_honoured() {
    require_root();
    let p = Pair::new();
    let list = p.data.path().join("allowlist.conf");
    std::fs::write(&list, "^net\\.ipv4\\.conf\\.IFNAME\\.[a-z_]*$\n\n  ^net\\.core\\.somaxconn$  \n").unwrap();
    let call = p.call("tuning").env("CNIBOX_TUNING_ALLOWLIST", list.to_str().unwrap());
    // IPv4 sysctls of a new netns come from the host's: compare with the
    // values found, never with the kernel's defaults.
    let (arp_filter, somaxconn) = (p.sysctl("net/ipv4/conf/eth0/arp_filter"), p.sysctl("net/core/somaxconn"));
    let ok = p.conf(json!({"sysctl": {"net.ipv4.conf.IFNAME.arp_filter": "1", "net.core.somaxconn": "1024"}}));
    call.run("ADD", &ok).ok();
    assert_eq!(p.sysctl("net/ipv4/conf/eth0/arp_filter"), "1");
    assert_eq!(p.sysctl("net/core/somaxconn"), "1024");
    call.run("DEL", &ok).ok();
    assert_eq!(p.sysctl("net/ipv4/conf/eth0/arp_filter"), arp_filter);
    assert_eq!(p.sysctl("net/core/somaxconn"), somaxconn);

    let before = p.state();
    let forwarding = p.sysctl("net/ipv4/ip_forward");
    let wanted = if forwarding == "1" { "0" } else { "1" };
    let refused = p.conf(json!({"sysctl": {"net.ipv4.conf.IFNAME.arp_filter": "1", "net.ipv4.ip_forward": wanted}}));
    assert_eq!(call.run("ADD", &refused).err_code(), 7);
    assert_eq!(p.state(), before);
    assert_eq!(p.sysctl("net/ipv4/ip_forward"), forwarding);
    // An allowlist key from args.cni is checked too.
    let args = p.conf(json!({"args": {"cni": {"sysctl": {"net.ipv4.ip_forward": "1"}}}}));
    assert_eq!(call.run("ADD", &args).err_code(), 7);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn del_with_the_netns_gone_removes_the_backup() {
    require_root();
    let p = Pair::new();
    let c = p.conf(json!({"mtu": 1300}));
    p.call("tuning").run("ADD", &c).ok();
    assert!(p.backup().exists());
    sh(&format!("ip netns del {}", p.ctr.name));
    p.call("tuning").run("DEL", &c).ok();
    assert!(!p.backup().exists());
    Call::new("tuning").container(&p.id, "", "eth0").in_netns(&p.host).run("DEL", &c).ok();
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn precedence_of_mac_and_args() {
    require_root();
    let p = Pair::new();
    // config < CNI_ARGS MAC < runtimeConfig.mac < args.cni.mac
    let conf_only = p.conf(json!({"mac": "0a:00:00:00:00:01"}));
    let with_env = p.call("tuning").env("CNI_ARGS", "IgnoreUnknown=1;MAC=0a:00:00:00:00:02");
    assert_eq!(with_env.run("ADD", &conf_only).ok()["interfaces"][1]["mac"], "0a:00:00:00:00:02");
    with_env.run("DEL", &conf_only).ok();
    let rc = p.conf(json!({"mac": "0a:00:00:00:00:01", "runtimeConfig": {"mac": "0a:00:00:00:00:03"}}));
    assert_eq!(with_env.run("ADD", &rc).ok()["interfaces"][1]["mac"], "0a:00:00:00:00:03");
    with_env.run("DEL", &rc).ok();
    let args = p.conf(json!({"mac": "0a:00:00:00:00:01", "runtimeConfig": {"mac": "0a:00:00:00:00:03"},
                             "args": {"cni": {"mac": "0a:00:00:00:00:04", "mtu": 1280, "txQLen": 42}},
                             "mtu": 1300}));
    assert_eq!(with_env.run("ADD", &args).ok()["interfaces"][1]["mac"], "0a:00:00:00:00:04");
    let l = p.link();
    assert_eq!(
        (l["address"].clone(), l["mtu"].clone(), l["txqlen"].clone()),
        (json!("0a:00:00:00:00:04"), json!(1280), json!(42))
    );
    with_env.run("CHECK", &args).ok();
    with_env.run("DEL", &args).ok();
    // An unknown CNI_ARGS key is refused without IgnoreUnknown.
    let strict = p.call("tuning").env("CNI_ARGS", "FOO=1");
    assert_eq!(strict.run("ADD", &conf_only).err_code(), 7);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn retried_add_keeps_the_true_originals() {
    require_root();
    let p = Pair::new();
    let before = p.state();
    let c = p.conf(json!({"mtu": 1300, "sysctl": {"net.ipv4.conf.IFNAME.arp_filter": "1"}}));
    p.call("tuning").run("ADD", &c).ok();
    p.call("tuning").run("ADD", &c).ok();
    p.call("tuning").run("DEL", &c).ok();
    assert_eq!(p.state(), before);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn gc_removes_stale_backups_of_its_network() {
    require_root();
    let p = Pair::new();
    let c = p.conf(json!({"mtu": 1300}));
    p.call("tuning").run("ADD", &c).ok();
    let stale = p.data.path().join("gone-container_eth0.json");
    std::fs::write(&stale, r#"{"mtu": 1500, "network": "tuning-test"}"#).unwrap();
    let foreign = p.data.path().join("other-net-container_eth0.json");
    std::fs::write(&foreign, r#"{"mtu": 1500, "network": "another"}"#).unwrap();
    let reference_made = p.data.path().join("ref-container_eth0.json");
    std::fs::write(&reference_made, r#"{"mtu": 1500}"#).unwrap();
    // A GC without the list removes nothing.
    let no_list = json!({"cniVersion": "1.1.0", "name": "tuning-test", "type": "tuning", "dataDir": p.data.path()});
    Call::new("tuning").in_netns(&p.host).run("GC", &no_list.to_string()).ok();
    assert!(stale.exists());
    let gc = json!({"cniVersion": "1.1.0", "name": "tuning-test", "type": "tuning", "dataDir": p.data.path(),
                    "cni.dev/valid-attachments": [{"containerID": p.id, "ifname": "eth0"}]});
    Call::new("tuning").in_netns(&p.host).run("GC", &gc.to_string()).ok();
    assert!(p.backup().exists());
    assert!(!stale.exists());
    assert!(foreign.exists());
    assert!(reference_made.exists());
}

/// Backups are the reference's files: each restores what the other saved.
#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn backups_interoperate_with_the_reference() {
    require_root();
    if !std::path::Path::new("/usr/lib/cni/tuning").exists() {
        return;
    }
    let p = Pair::new();
    let before = p.state();
    let c = p.conf(json!({"mac": MAC, "mtu": 1400, "promisc": true, "allmulti": true}));
    let theirs = p.call("/usr/lib/cni/tuning").run("ADD", &c).ok();
    let ours_state = p.state();
    p.call("tuning").run("CHECK", &c).ok();
    p.call("tuning").run("DEL", &c).ok();
    assert_eq!(p.state(), before);
    assert!(!p.backup().exists());

    let ours = p.call("tuning").run("ADD", &c).ok();
    assert_eq!(p.state(), ours_state);
    assert_eq!(ours["interfaces"], theirs["interfaces"]);
    p.call("/usr/lib/cni/tuning").run("CHECK", &c).ok();
    p.call("/usr/lib/cni/tuning").run("DEL", &c).ok();
    assert_eq!(p.state(), before);
    assert!(!p.backup().exists());
}
