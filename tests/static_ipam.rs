mod common;
use common::*;

const REFERENCE: &str = "/usr/lib/cni/static";

const CONF: &str = r#"{"cniVersion":"1.0.0","name":"static-test","type":"bridge","ipam":{"type":"static",
    "addresses":[{"address":"10.10.0.5/24","gateway":"10.10.0.1"},{"address":"3ffe:ffff:0:1::5/64","gateway":"3ffe:ffff:0:1::1"}],
    "routes":[{"dst":"0.0.0.0/0"},{"dst":"192.168.0.0/16","gw":"10.10.0.254"},{"dst":"::/0"}],
    "dns":{"nameservers":["8.8.8.8"],"domain":"example.com","search":["example.com"],"options":["ndots:2"]}}}"#;

fn have_reference() -> bool {
    std::path::Path::new(REFERENCE).exists()
}

/// The result without its cniVersion, for comparing with the reference.
fn body(mut v: serde_json::Value) -> serde_json::Value {
    v.as_object_mut().unwrap().remove("cniVersion");
    v
}

fn add_both(ns: &Netns, conf: &str, cni_args: &str) -> (serde_json::Value, serde_json::Value) {
    let ours = Call::new("static").container("c1", &ns.path(), "eth0").env("CNI_ARGS", cni_args).run("ADD", conf).ok();
    let theirs =
        Call::new(REFERENCE).container("c1", &ns.path(), "eth0").env("CNI_ARGS", cni_args).run("ADD", conf).ok();
    (body(ours), body(theirs))
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn add_check_del() {
    require_root();
    let ns = Netns::new("st");
    let call = Call::new("static").container("c1", &ns.path(), "eth0");
    let result = call.run("ADD", CONF).ok();
    assert_eq!(result["cniVersion"], "1.0.0");
    assert_eq!(result["ips"][0]["address"], "10.10.0.5/24");
    assert_eq!(result["ips"][0]["gateway"], "10.10.0.1");
    assert_eq!(result["ips"][1]["address"], "3ffe:ffff:0:1::5/64");
    assert_eq!(result["routes"].as_array().unwrap().len(), 3);
    assert_eq!(result["dns"]["nameservers"][0], "8.8.8.8");
    call.run("DEL", CONF).ok();
    call.run("DEL", CONF).ok();

    // CHECK compares the configured addresses with prevResult.
    let mut with_prev: serde_json::Value = serde_json::from_str(CONF).unwrap();
    with_prev["prevResult"] = result.clone();
    call.run("CHECK", &with_prev.to_string()).ok();
    with_prev["prevResult"]["ips"][0]["gateway"] = "10.10.0.2".into();
    call.run("CHECK", &with_prev.to_string()).err_code();
    with_prev["prevResult"]["ips"].as_array_mut().unwrap().remove(0);
    call.run("CHECK", &with_prev.to_string()).err_code();
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn same_results_as_the_reference() {
    require_root();
    if !have_reference() {
        return;
    }
    let ns = Netns::new("st");
    let (ours, theirs) = add_both(&ns, CONF, "");
    assert_eq!(ours, theirs);
    let (ours, theirs) = add_both(&ns, CONF, "IgnoreUnknown=1;IP=10.20.0.7/16,10.30.0.7/24;GATEWAY=10.20.0.1");
    assert_eq!(ours, theirs);
    assert_eq!(ours["ips"].as_array().unwrap().len(), 4);

    let args = CONF.replacen(r#""type":"bridge","#, r#""type":"bridge","args":{"cni":{"ips":["10.1.0.2/24"]}},"#, 1);
    let (ours, theirs) = add_both(&ns, &args, "IP=10.20.0.7/16");
    assert_eq!(ours, theirs);
    assert_eq!(ours["ips"][0]["address"], "10.1.0.2/24");

    let rc = args.replacen(r#""type":"bridge","#, r#""type":"bridge","runtimeConfig":{"ips":["10.2.0.2/24"]},"#, 1);
    let (ours, theirs) = add_both(&ns, &rc, "");
    assert_eq!(ours, theirs);
    assert_eq!(ours["ips"][0]["address"], "10.2.0.2/24");
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn legacy_result_version() {
    require_root();
    let ns = Netns::new("st");
    let conf = r#"{"cniVersion":"0.2.0","name":"static-test","type":"bridge","ipam":{"type":"static",
        "addresses":[{"address":"10.10.0.5/24","gateway":"10.10.0.1"}]}}"#;
    let result = Call::new("static").container("c1", &ns.path(), "eth0").run("ADD", conf).ok();
    assert_eq!(result["cniVersion"], "0.2.0");
    assert_eq!(result["ip4"]["ip"], "10.10.0.5/24");
    assert_eq!(result["ip4"]["gateway"], "10.10.0.1");
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn bad_configs_are_refused() {
    require_root();
    let ns = Netns::new("st");
    let call = Call::new("static").container("c1", &ns.path(), "eth0");
    let bad_cidr =
        r#"{"cniVersion":"1.0.0","name":"n","type":"x","ipam":{"type":"static","addresses":[{"address":"10.0.0.5"}]}}"#;
    assert_eq!(call.run("ADD", bad_cidr).err_code(), 7);
    let bad_gw = r#"{"cniVersion":"1.0.0","name":"n","type":"x","ipam":{"type":"static",
        "addresses":[{"address":"10.0.0.5/24","gateway":"fd00::1"}]}}"#;
    assert_eq!(call.run("ADD", bad_gw).err_code(), 7);
    assert_eq!(call.clone().env("CNI_ARGS", "IP=10.9.9.9").run("ADD", CONF).err_code(), 7);
    // DEL needs nothing and succeeds even on a bad config.
    call.run("DEL", bad_cidr).ok();
}
