mod common;
use common::*;

fn call(host: &Netns, id: &str, ns: &str) -> Call {
    Call::new("host-device").container(id, ns, "net1").in_netns(host).env("CNI_PATH", &cni_path())
}

/// A fake host with a veth pair hd0/hd1; hd0 is the device to hand over.
fn host() -> Netns {
    let host = Netns::new("hdh");
    host.exec("ip link add hd0 address 02:aa:00:00:00:01 type veth peer name hd1");
    host.exec("ip link set hd1 up");
    host
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn by_device_name_and_back() {
    require_root();
    let host = host();
    let c = Netns::new("hdc");
    let cfg = r#"{"cniVersion":"1.0.0","name":"hd","type":"host-device","device":"hd0"}"#;
    let r = call(&host, "c1", &c.path()).run("ADD", cfg).ok();
    assert_eq!(r["interfaces"][0]["name"], "net1");
    assert_eq!(r["interfaces"][0]["mac"], "02:aa:00:00:00:01");
    assert!(!host.try_exec("ip link show hd0"));
    let link = c.exec("ip link show net1");
    assert!(link.contains("02:aa:00:00:00:01") && link.contains("alias hd0"), "{link}");
    call(&host, "c1", &c.path()).run("CHECK", &with_prev(cfg, &r)).ok();
    call(&host, "c1", &c.path()).run("DEL", cfg).ok();
    assert!(!c.try_exec("ip link show net1"));
    let back = host.exec("ip link show hd0");
    assert!(back.contains("02:aa:00:00:00:01"), "{back}");
    assert!(!back.contains("alias hd0"), "{back}");
    call(&host, "c1", &c.path()).run("CHECK", &with_prev(cfg, &r)).err_code();
    // DEL twice.
    call(&host, "c1", &c.path()).run("DEL", cfg).ok();
    assert!(host.try_exec("ip link show hd0"));
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn by_hwaddr_with_static_ipam() {
    require_root();
    let host = host();
    let c = Netns::new("hdc");
    let cfg = r#"{"cniVersion":"1.0.0","name":"hd","type":"host-device","hwaddr":"02:AA:00:00:00:01",
        "ipam":{"type":"static","addresses":[{"address":"10.66.0.2/24","gateway":"10.66.0.1"}],
                "routes":[{"dst":"10.67.0.0/16"}]}}"#;
    let r = call(&host, "c1", &c.path()).run("ADD", cfg).ok();
    assert_eq!(r["ips"][0]["address"], "10.66.0.2/24");
    assert_eq!(r["ips"][0]["interface"], 0);
    assert!(c.exec("ip addr show net1").contains("10.66.0.2/24"));
    assert!(c.exec("ip route").contains("10.67.0.0/16 via 10.66.0.1 dev net1"));
    call(&host, "c1", &c.path()).run("CHECK", &with_prev(cfg, &r)).ok();
    call(&host, "c1", &c.path()).run("DEL", cfg).ok();
    assert!(host.try_exec("ip link show hd0"));
    call(&host, "c1", &c.path()).run("DEL", cfg).ok();
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn failed_add_returns_the_device() {
    require_root();
    let host = host();
    let c = Netns::new("hdc");
    let cfg = r#"{"cniVersion":"1.0.0","name":"hd","type":"host-device","device":"hd0",
        "ipam":{"type":"static","addresses":[{"address":"10.66.0.2/24"}],"routes":[{"dst":"10.67.0.0/16","gw":"10.99.0.1"}]}}"#;
    call(&host, "c1", &c.path()).run("ADD", cfg).err_code();
    assert!(!c.try_exec("ip link show net1"));
    assert!(host.try_exec("ip link show hd0"));
    // Nothing selects a device: a config error; an unknown device fails cleanly.
    let none = r#"{"cniVersion":"1.0.0","name":"hd","type":"host-device"}"#;
    assert_eq!(call(&host, "c1", &c.path()).run("ADD", none).err_code(), 7);
    let missing = r#"{"cniVersion":"1.0.0","name":"hd","type":"host-device","device":"nosuch"}"#;
    call(&host, "c1", &c.path()).run("ADD", missing).err_code();
    let bad_path = r#"{"cniVersion":"1.0.0","name":"hd","type":"host-device","kernelpath":"/etc"}"#;
    assert_eq!(call(&host, "c1", &c.path()).run("ADD", bad_path).err_code(), 7);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn del_with_the_netns_gone() {
    require_root();
    let host = host();
    let c = Netns::new("hdc");
    let cfg = r#"{"cniVersion":"1.0.0","name":"hd","type":"host-device","device":"hd0"}"#;
    call(&host, "c1", &c.path()).run("ADD", cfg).ok();
    let gone = c.path();
    drop(c);
    call(&host, "c1", &gone).run("DEL", cfg).ok();
    call(&host, "c1", "").run("DEL", cfg).ok();
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn by_kernelpath() {
    require_root();
    let host = host();
    let c = Netns::new("hdc");
    // `ip netns exec` mounts the fake host's own /sys: its virtual devices
    // are lo, hd0 and hd1, and the first by name is hd0.
    let cfg = r#"{"cniVersion":"1.0.0","name":"hd","type":"host-device","kernelpath":"/sys/devices/virtual"}"#;
    let r = call(&host, "c1", &c.path()).run("ADD", cfg).ok();
    assert_eq!(r["interfaces"][0]["mac"], "02:aa:00:00:00:01");
    call(&host, "c1", &c.path()).run("DEL", cfg).ok();
    assert!(host.try_exec("ip link show hd0"));
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn by_auxiliary_device_id() {
    require_root();
    let host = host();
    let c = Netns::new("hdc");
    // A sysfs with one auxiliary-bus device (a sub-function) whose netdev is hd0.
    let sysfs = TempDir::new("sysfs");
    let aux = sysfs.path().join("bus/auxiliary/devices/mlx5_core.sf.4");
    std::fs::create_dir_all(aux.join("net/hd0")).unwrap();
    std::fs::create_dir_all(sysfs.path().join("bus/pci/devices")).unwrap();
    let cfg = r#"{"cniVersion":"1.0.0","name":"hd","type":"host-device",
        "runtimeConfig":{"deviceID":"mlx5_core.sf.4"}}"#;
    let call = |id: &str| call(&host, id, &c.path()).env("CNIBOX_SYSFS", sysfs.path().to_str().unwrap());
    let r = call("c1").run("ADD", cfg).ok();
    assert_eq!(r["interfaces"][0]["mac"], "02:aa:00:00:00:01");
    assert!(c.exec("ip link show net1").contains("alias hd0"));
    call("c1").run("CHECK", &with_prev(cfg, &r)).ok();
    call("c1").run("DEL", cfg).ok();
    assert!(host.try_exec("ip link show hd0"));
    // A deviceID sysfs has on neither bus.
    let missing = cfg.replace("mlx5_core.sf.4", "mlx5_core.sf.9");
    assert_eq!(call("c2").run("ADD", &missing).err_code(), 7);
    assert!(host.try_exec("ip link show hd0"));
}
