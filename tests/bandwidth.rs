mod common;
use common::*;
use serde_json::{json, Value};

/// A fake host netns and a container netns joined by a veth: the host end
/// in the host netns, eth0 in the container, as a main plugin leaves them.
struct Pair {
    host: Netns,
    ctr: Netns,
    veth: String,
    id: String,
}

impl Pair {
    fn new() -> Pair {
        let host = Netns::new("bwh");
        let ctr = Netns::new("bwc");
        let veth = unique("vb");
        host.exec(&format!("ip link add {veth} type veth peer name eth0 netns {}", ctr.name));
        host.exec(&format!("ip link set {veth} up"));
        ctr.exec("ip link set eth0 up");
        ctr.exec("ip addr add 10.98.0.2/24 dev eth0");
        Pair { host, ctr, veth, id: unique("ctr-bw-") }
    }

    fn mac(ns: &Netns, dev: &str) -> String {
        let v: Value = serde_json::from_str(&ns.exec(&format!("ip -j link show {dev}"))).unwrap();
        v[0]["address"].as_str().unwrap().to_string()
    }

    fn prev(&self) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": self.veth, "mac": Self::mac(&self.host, &self.veth)},
                {"name": "eth0", "mac": Self::mac(&self.ctr, "eth0"), "sandbox": self.ctr.path()}
            ],
            "ips": [{"address": "10.98.0.2/24", "interface": 1}]
        })
    }

    fn call(&self, plugin: &str) -> Call {
        Call::new(plugin).container(&self.id, &self.ctr.path(), "eth0").in_netns(&self.host)
    }

    fn qdiscs(&self, dev: &str) -> Vec<Value> {
        let out = self.host.exec(&format!("tc -j qdisc show dev {dev}"));
        serde_json::from_str::<Value>(&out).unwrap().as_array().cloned().unwrap_or_default()
    }

    fn root_tbf(&self, dev: &str) -> Option<Value> {
        self.qdiscs(dev).into_iter().find(|q| q["kind"] == "tbf" && q["root"] == true)
    }

    fn ifbs(&self) -> Vec<String> {
        let out = self.host.exec("ip -j link show type ifb");
        let v: Value = serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out }).unwrap();
        v.as_array().unwrap().iter().map(|l| l["ifname"].as_str().unwrap().to_string()).collect()
    }
}

fn conf(name: &str, extra: Value, prev: Option<Value>) -> String {
    let mut c = json!({"cniVersion": "1.0.0", "name": name, "type": "bandwidth"});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    if let Some(p) = prev {
        c["prevResult"] = p;
    }
    c.to_string()
}

const LIMITS: &str =
    r#"{"ingressRate": 8000000, "ingressBurst": 800000, "egressRate": 16000000, "egressBurst": 1600000}"#;

fn limits() -> Value {
    serde_json::from_str(LIMITS).unwrap()
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn add_check_del() {
    require_root();
    let p = Pair::new();
    let c = conf("bw-test", limits(), Some(p.prev()));
    let result = p.call("bandwidth").run("ADD", &c).ok();

    // Toward the container: tbf on the host veth.
    let tbf = p.root_tbf(&p.veth).expect("tbf on the host veth");
    assert_eq!(tbf["options"]["rate"], 1_000_000);
    assert_eq!(tbf["options"]["burst"], 100_000);
    assert_eq!(tbf["handle"], "1:");
    // From the container: ingress qdisc + redirect to the ifb, tbf on the ifb.
    assert!(p.qdiscs(&p.veth).iter().any(|q| q["kind"] == "ingress"));
    let ifbs = p.ifbs();
    assert_eq!(ifbs.len(), 1);
    let ifb = &ifbs[0];
    assert!(ifb.starts_with("bwp") && ifb.len() == 15, "{ifb}");
    let filters = p.host.exec(&format!("tc filter show dev {} ingress", p.veth));
    assert!(filters.contains(&format!("Egress Redirect to device {ifb}")), "{filters}");
    let tbf = p.root_tbf(ifb).expect("tbf on the ifb");
    assert_eq!(tbf["options"]["rate"], 2_000_000);
    assert_eq!(tbf["options"]["burst"], 200_000);
    // The result gains the ifb.
    let ifaces = result["interfaces"].as_array().unwrap();
    assert_eq!(ifaces.len(), 3);
    assert_eq!(ifaces[2]["name"], ifb.as_str());

    p.call("bandwidth").run("CHECK", &c).ok();
    // Changed by hand: CHECK notices.
    p.host.exec(&format!("tc qdisc change dev {ifb} root tbf rate 3mbit burst 20000 latency 25ms"));
    p.call("bandwidth").run("CHECK", &c).err_code();

    p.call("bandwidth").run("DEL", &c).ok();
    assert!(p.ifbs().is_empty());
    assert!(p.root_tbf(&p.veth).is_none());
    assert!(!p.qdiscs(&p.veth).iter().any(|q| q["kind"] == "ingress"));
    p.call("bandwidth").run("DEL", &c).ok();
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn check_fails_when_the_ifb_is_gone() {
    require_root();
    let p = Pair::new();
    let c = conf("bw-test", limits(), Some(p.prev()));
    p.call("bandwidth").run("ADD", &c).ok();
    p.call("bandwidth").run("CHECK", &c).ok();
    let ifb = p.ifbs().pop().unwrap();
    p.host.exec(&format!("ip link del {ifb}"));
    p.call("bandwidth").run("CHECK", &c).err_code();
    p.call("bandwidth").run("DEL", &c).ok();
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn del_without_prev_result_or_netns() {
    require_root();
    let p = Pair::new();
    p.call("bandwidth").run("ADD", &conf("bw-test", limits(), Some(p.prev()))).ok();
    assert_eq!(p.ifbs().len(), 1);
    // The runtime lost prevResult and the container is gone already.
    let call = Call::new("bandwidth").container(&p.id, "", "eth0").in_netns(&p.host);
    call.run("DEL", &conf("bw-test", json!({}), None)).ok();
    assert!(p.ifbs().is_empty());
    call.run("DEL", &conf("bw-test", json!({}), None)).ok();
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn only_ingress_creates_no_ifb() {
    require_root();
    let p = Pair::new();
    let c = conf("bw-test", json!({"ingressRate": 1000000, "ingressBurst": 100000}), Some(p.prev()));
    let result = p.call("bandwidth").run("ADD", &c).ok();
    assert_eq!(result["interfaces"].as_array().unwrap().len(), 2);
    assert!(p.ifbs().is_empty());
    assert_eq!(p.root_tbf(&p.veth).unwrap()["options"]["rate"], 125_000);
    p.call("bandwidth").run("CHECK", &c).ok();
    p.call("bandwidth").run("DEL", &c).ok();
    assert!(p.root_tbf(&p.veth).is_none());
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn bad_configs_are_refused_and_create_nothing() {
    require_root();
    let p = Pair::new();
    let bad = [
        json!({"ingressRate": 1000000}),
        json!({"egressBurst": 1000000}),
        json!({"egressRate": 1000000, "egressBurst": 8u64 * 4_294_967_295}),
        json!({"ingressRate": 1000000, "ingressBurst": 100000, "egressRate": 5}),
    ];
    for extra in bad {
        let code = p.call("bandwidth").run("ADD", &conf("bw-test", extra.clone(), Some(p.prev()))).err_code();
        assert_eq!(code, 7, "{extra}");
        assert!(p.ifbs().is_empty());
        assert!(p.root_tbf(&p.veth).is_none());
        assert!(!p.qdiscs(&p.veth).iter().any(|q| q["kind"] == "ingress"));
    }
    // Limits given but no prevResult: refused too.
    assert_eq!(p.call("bandwidth").run("ADD", &conf("bw-test", limits(), None)).err_code(), 7);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn no_limits_passes_prev_result_through() {
    require_root();
    let p = Pair::new();
    let prev = p.prev();
    let result = p.call("bandwidth").run("ADD", &conf("bw-test", json!({}), Some(prev.clone()))).ok();
    assert_eq!(result["interfaces"], prev["interfaces"]);
    assert!(p.root_tbf(&p.veth).is_none());
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn runtime_config_is_used_unless_the_config_sets_limits() {
    require_root();
    let p = Pair::new();
    let rc = json!({"runtimeConfig": {"bandwidth": {"ingressRate": 2000000, "ingressBurst": 200000}},
                    "capabilities": {"bandwidth": true}});
    let c = conf("bw-test", rc.clone(), Some(p.prev()));
    p.call("bandwidth").run("ADD", &c).ok();
    assert_eq!(p.root_tbf(&p.veth).unwrap()["options"]["rate"], 250_000);
    p.call("bandwidth").run("CHECK", &c).ok();
    p.call("bandwidth").run("DEL", &c).ok();

    // The config's own keys win, as in the reference.
    let mut both = rc;
    both["ingressRate"] = json!(4000000);
    both["ingressBurst"] = json!(400000);
    let c = conf("bw-test", both, Some(p.prev()));
    p.call("bandwidth").run("ADD", &c).ok();
    assert_eq!(p.root_tbf(&p.veth).unwrap()["options"]["rate"], 500_000);
    p.call("bandwidth").run("DEL", &c).ok();
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn host_veth_found_by_peer_index_without_it_in_prev_result() {
    require_root();
    let p = Pair::new();
    let mut prev = p.prev();
    prev["interfaces"] = json!([prev["interfaces"][1].clone()]);
    let c = conf("bw-test", limits(), Some(prev));
    p.call("bandwidth").run("ADD", &c).ok();
    assert!(p.root_tbf(&p.veth).is_some());
    p.call("bandwidth").run("CHECK", &c).ok();
    p.call("bandwidth").run("DEL", &c).ok();
    assert!(p.ifbs().is_empty());
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn gc_removes_ifbs_of_stale_attachments() {
    require_root();
    let a = Pair::new();
    // A second container in the same fake host.
    let ctr_b = Netns::new("bwc");
    let veth_b = unique("vb");
    a.host.exec(&format!("ip link add {veth_b} type veth peer name eth0 netns {}", ctr_b.name));
    a.host.exec(&format!("ip link set {veth_b} up"));
    let id_b = unique("ctr-bw-");
    let prev_b =
        json!({"cniVersion": "1.0.0", "interfaces": [{"name": veth_b}, {"name": "eth0", "sandbox": ctr_b.path()}]});

    a.call("bandwidth").run("ADD", &conf("bw-gc", limits(), Some(a.prev()))).ok();
    Call::new("bandwidth")
        .container(&id_b, &ctr_b.path(), "eth0")
        .in_netns(&a.host)
        .run("ADD", &conf("bw-gc", limits(), Some(prev_b)))
        .ok();
    assert_eq!(a.ifbs().len(), 2);
    let before = a.ifbs();
    // A GC without the list removes nothing.
    let no_list = json!({"cniVersion": "1.1.0", "name": "bw-gc", "type": "bandwidth"});
    Call::new("bandwidth").in_netns(&a.host).run("GC", &no_list.to_string()).ok();
    assert_eq!(a.ifbs().len(), 2);

    let gc = json!({"cniVersion": "1.1.0", "name": "bw-gc", "type": "bandwidth",
                    "cni.dev/valid-attachments": [{"containerID": a.id, "ifname": "eth0"}]});
    Call::new("bandwidth").in_netns(&a.host).run("GC", &gc.to_string()).ok();
    let after = a.ifbs();
    assert_eq!(after.len(), 1);
    assert!(before.contains(&after[0]));
    // The survivor is a's: CHECK still passes. Another network's GC leaves it.
    a.call("bandwidth").run("CHECK", &conf("bw-gc", limits(), Some(a.prev()))).ok();
    let gc_other = json!({"cniVersion": "1.1.0", "name": "another-net", "type": "bandwidth",
                          "cni.dev/valid-attachments": []});
    Call::new("bandwidth").in_netns(&a.host).run("GC", &gc_other.to_string()).ok();
    assert_eq!(a.ifbs().len(), 1);
}

/// The reference plugin on the same config builds the same qdiscs.
#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn looks_like_the_reference() {
    require_root();
    if !std::path::Path::new("/usr/lib/cni/bandwidth").exists() {
        return;
    }
    let ours = Pair::new();
    let theirs = Pair::new();
    let k8s_like = json!({"ingressRate": 10000000, "ingressBurst": 2147483647,
                          "egressRate": 5000000, "egressBurst": 2147483647});
    let c_ours = conf("bw-cmp", k8s_like.clone(), Some(ours.prev()));
    let c_theirs = conf("bw-cmp", k8s_like, Some(theirs.prev()));
    ours.call("bandwidth").run("ADD", &c_ours).ok();
    theirs.call("/usr/lib/cni/bandwidth").run("ADD", &c_theirs).ok();
    let strip = |q: Option<Value>| {
        let mut q = q.unwrap();
        q.as_object_mut().unwrap().remove("refcnt");
        q
    };
    assert_eq!(strip(ours.root_tbf(&ours.veth)), strip(theirs.root_tbf(&theirs.veth)));
    assert_eq!(strip(ours.root_tbf(&ours.ifbs()[0])), strip(theirs.root_tbf(&theirs.ifbs()[0])));
    // Same ifb naming: "bwp" + sha512(network name + container ID).
    let hash = sh(&format!("printf '%s' 'bw-cmp{}' | sha512sum", theirs.id));
    assert_eq!(theirs.ifbs()[0], format!("bwp{}", &hash[..12]));
    // Each can CHECK and DEL what the other made.
    ours.call("/usr/lib/cni/bandwidth").run("CHECK", &c_ours).ok();
    theirs.call("bandwidth").run("CHECK", &c_theirs).ok();
    theirs.call("bandwidth").run("DEL", &c_theirs).ok();
    assert!(theirs.ifbs().is_empty());
    ours.call("/usr/lib/cni/bandwidth").run("DEL", &c_ours).ok();
    assert!(ours.ifbs().is_empty());
}
