mod common;
use common::*;

const CONF: &str = r#"{"cniVersion":"1.0.0","name":"lo-test","type":"loopback"}"#;

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn add_check_del() {
    require_root();
    let ns = Netns::new("lo");
    ns.exec("ip link set lo down");
    let call = Call::new("loopback").container("c1", &ns.path(), "lo");
    let result = call.run("ADD", CONF).ok();
    assert_eq!(result["interfaces"][0]["name"], "lo");
    assert!(result["ips"].as_array().unwrap().iter().any(|ip| ip["address"] == "127.0.0.1/8"));
    assert!(ns.exec("ip link show lo").contains(",UP"));
    call.run("CHECK", CONF).ok();
    call.run("DEL", CONF).ok();
    assert!(!ns.exec("ip link show lo").contains(",UP"));
    call.run("CHECK", CONF).err_code();
    call.run("DEL", CONF).ok();
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn del_with_the_netns_gone() {
    require_root();
    let call = Call::new("loopback").container("c2", "/run/netns/does-not-exist", "lo");
    call.run("DEL", CONF).ok();
    let call = Call::new("loopback").container("c2", "", "lo");
    call.run("DEL", CONF).ok();
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn add_in_a_missing_netns_fails_cleanly() {
    require_root();
    let call = Call::new("loopback").container("c3", "/run/netns/does-not-exist", "lo");
    let code = call.run("ADD", CONF).err_code();
    assert!(code > 0);
    // A path that is not a namespace is refused too.
    let call = Call::new("loopback").container("c3", "/etc/hostname", "lo");
    call.run("ADD", CONF).err_code();
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn legacy_versions() {
    require_root();
    let ns = Netns::new("lo");
    let conf = r#"{"cniVersion":"0.2.0","name":"lo-test","type":"loopback"}"#;
    let result = Call::new("loopback").container("c4", &ns.path(), "lo").run("ADD", conf).ok();
    assert_eq!(result["cniVersion"], "0.2.0");
    assert_eq!(result["ip4"]["ip"], "127.0.0.1/8");
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn cni_args_are_read_only_by_plugins_that_use_them() {
    require_root();
    // The reference's own loopback tests run with CNI_ARGS=none: its skel
    // never parses CNI_ARGS, and loopback reads none.
    let ns = Netns::new("lo");
    let call = Call::new("loopback").container("c5", &ns.path(), "lo").env("CNI_ARGS", "none");
    call.run("ADD", CONF).ok();
    call.run("CHECK", CONF).ok();
    call.run("DEL", CONF).ok();
    // A plugin that reads them refuses the pair, in the config's version.
    let conf = r#"{"cniVersion":"0.3.1","name":"n","type":"static","ipam":{"type":"static"}}"#;
    let reply = Call::new("static").container("c5", &ns.path(), "eth0").env("CNI_ARGS", "none").run("ADD", conf);
    let err: serde_json::Value = serde_json::from_str(&reply.stdout).unwrap();
    assert_eq!((err["code"].as_u64(), err["cniVersion"].as_str()), (Some(7), Some("0.3.1")), "{err}");
}

#[test]
fn errors_before_the_config_is_read_carry_its_version() {
    let conf = r#"{"cniVersion":"0.4.0","name":"lo-test","type":"loopback"}"#;
    let reply = Call::new("loopback").container("bad/id", "/x", "lo").run("ADD", conf);
    let err: serde_json::Value = serde_json::from_str(&reply.stdout).unwrap();
    assert_eq!((err["code"].as_u64(), err["cniVersion"].as_str()), (Some(4), Some("0.4.0")), "{err}");
}
