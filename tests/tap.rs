mod common;
use common::*;

/// The plugin runs in a fake host netns, as a runtime would run it.
fn call(host: &Netns, id: &str, ns: &str) -> Call {
    Call::new("tap").container(id, ns, "tap0").in_netns(host).env("CNI_PATH", &cni_path())
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn tap_with_mac_mtu_owner_group_multiqueue() {
    require_root();
    let host = Netns::new("tph");
    let c = Netns::new("tpc");
    let cfg = r#"{"cniVersion":"1.0.0","name":"tp","type":"tap","mac":"02:00:00:00:aa:01","mtu":1400,
        "owner":1000,"group":2000,"multiQueue":true}"#;
    let r = call(&host, "c1", &c.path()).run("ADD", cfg).ok();
    assert_eq!(r["interfaces"][0]["name"], "tap0");
    assert_eq!(r["interfaces"][0]["mac"], "02:00:00:00:aa:01");
    assert_eq!(r["interfaces"][0]["sandbox"], c.path());
    let link = c.exec("ip -d link show tap0");
    assert!(link.contains("mtu 1400") && link.contains("02:00:00:00:aa:01") && link.contains("UP"), "{link}");
    assert!(link.contains("tun type tap"), "{link}");
    assert!(link.contains("multi_queue"), "{link}");
    assert_eq!(c.exec("cat /sys/class/net/tap0/owner").trim(), "1000");
    assert_eq!(c.exec("cat /sys/class/net/tap0/group").trim(), "2000");
    let flags =
        u32::from_str_radix(c.exec("cat /sys/class/net/tap0/tun_flags").trim().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 0x0102, 0x0102, "IFF_TAP|IFF_MULTI_QUEUE in {flags:#x}");
    call(&host, "c1", &c.path()).run("CHECK", &with_prev(cfg, &r)).ok();
    call(&host, "c1", &c.path()).run("DEL", cfg).ok();
    assert!(!c.try_exec("ip link show tap0"));
    call(&host, "c1", &c.path()).run("CHECK", &with_prev(cfg, &r)).err_code();
    call(&host, "c1", &c.path()).run("DEL", cfg).ok();
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn plain_tap_has_no_owner_and_one_queue() {
    require_root();
    let host = Netns::new("tph");
    let c = Netns::new("tpc");
    let cfg = r#"{"cniVersion":"1.0.0","name":"tp","type":"tap"}"#;
    call(&host, "c1", &c.path()).run("ADD", cfg).ok();
    assert_eq!(c.exec("cat /sys/class/net/tap0/owner").trim(), "-1");
    let flags =
        u32::from_str_radix(c.exec("cat /sys/class/net/tap0/tun_flags").trim().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 0x0100, 0, "no IFF_MULTI_QUEUE in {flags:#x}");
    // A second ADD with the same name does not attach to the existing tap.
    call(&host, "c2", &c.path()).run("ADD", cfg).err_code();
    assert!(c.try_exec("ip link show tap0"));
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn bridge_port_with_static_ipam() {
    require_root();
    let host = Netns::new("tph");
    let c = Netns::new("tpc");
    c.exec("ip link add br0 type bridge");
    let cfg = r#"{"cniVersion":"1.0.0","name":"tp","type":"tap","bridge":"br0",
        "ipam":{"type":"static","addresses":[{"address":"10.88.0.2/24"}]}}"#;
    let r = call(&host, "c1", &c.path()).run("ADD", cfg).ok();
    assert_eq!(r["ips"][0]["address"], "10.88.0.2/24");
    assert!(c.exec("ip link show tap0").contains("master br0"));
    assert!(c.exec("ip addr show tap0").contains("10.88.0.2/24"));
    call(&host, "c1", &c.path()).run("DEL", cfg).ok();
    assert!(!c.try_exec("ip link show tap0"));
    assert!(c.try_exec("ip link show br0"));
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn failures_leave_nothing() {
    require_root();
    let host = Netns::new("tph");
    let c = Netns::new("tpc");
    let cfg = r#"{"cniVersion":"1.0.0","name":"tp","type":"tap","bridge":"nosuch"}"#;
    assert_eq!(call(&host, "c1", &c.path()).run("ADD", cfg).err_code(), 7);
    assert!(!c.try_exec("ip link show tap0"));
    let cfg = r#"{"cniVersion":"1.0.0","name":"tp","type":"tap",
        "ipam":{"type":"static","addresses":[{"address":"10.88.0.2/24"}],"routes":[{"dst":"10.9.0.0/16","gw":"10.7.0.1"}]}}"#;
    call(&host, "c1", &c.path()).run("ADD", cfg).err_code();
    assert!(!c.try_exec("ip link show tap0"));
    let cfg = r#"{"cniVersion":"1.0.0","name":"tp","type":"tap","mac":"nope"}"#;
    assert_eq!(call(&host, "c1", &c.path()).run("ADD", cfg).err_code(), 7);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn del_with_the_netns_gone() {
    require_root();
    let host = Netns::new("tph");
    let c = Netns::new("tpc");
    let cfg = r#"{"cniVersion":"1.0.0","name":"tp","type":"tap"}"#;
    call(&host, "c1", &c.path()).run("ADD", cfg).ok();
    let gone = c.path();
    drop(c);
    call(&host, "c1", &gone).run("DEL", cfg).ok();
    call(&host, "c1", "").run("DEL", cfg).ok();
}

/// Without SELinux the context cannot be applied: ADD says so (rather than
/// making an unlabelled tap) and leaves neither a tap nor a reservation.
/// The labelled path itself runs in the VM (vmtest case tap-selinux).
#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn selinux_context_without_selinux_is_refused_cleanly() {
    require_root();
    if std::path::Path::new("/sys/fs/selinux/enforce").exists() {
        return;
    }
    let host = Netns::new("tph");
    let c = Netns::new("tpc");
    let store = TempDir::new("tap-selinux");
    let cfg = format!(
        r#"{{"cniVersion":"1.0.0","name":"tp","type":"tap","selinuxContext":"system_u:system_r:svirt_t:s0",
        "ipam":{{"type":"host-local","subnet":"10.88.0.0/24","dataDir":"{}"}}}}"#,
        store.path().display()
    );
    let reply = call(&host, "c1", &c.path()).run("ADD", &cfg);
    assert!(reply.stdout.contains("SELinux context"), "{}", reply.stdout);
    reply.err_code();
    assert!(!c.try_exec("ip link show tap0"));
    assert!(reserved_ips(&store.path().join("tp")).is_empty());
}

/// `cnibox tap make-device`, the child that creates a labelled tap, makes a
/// persistent tap in the netns it runs in, and refuses bad arguments.
#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn make_device_creates_a_persistent_tap_where_it_runs() {
    require_root();
    let c = Netns::new("tpc");
    let bin = plugin_dir().join("tap");
    c.exec(&format!("{} make-device t0 --multi-queue --owner 1000 --group 2000", bin.display()));
    let link = c.exec("ip -d link show t0");
    assert!(link.contains("tun type tap") && link.contains("multi_queue") && link.contains("persist on"), "{link}");
    assert_eq!(c.exec("cat /sys/class/net/t0/owner").trim(), "1000");
    assert_eq!(c.exec("cat /sys/class/net/t0/group").trim(), "2000");
    assert!(!c.try_exec(&format!("{} make-device t1 --owner", bin.display())));
    assert!(!c.try_exec(&format!("{} make-device", bin.display())));
    assert!(!c.try_exec("ip link show t1"));
}
