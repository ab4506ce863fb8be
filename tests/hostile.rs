//! Hostile input: every case gets the right CNI error code, and nothing is touched.
mod common;
use common::*;

const LO: &str = r#"{"cniVersion":"1.0.0","name":"hostile","type":"loopback"}"#;

fn every_plugin() -> Vec<String> {
    let out = std::process::Command::new(BIN).arg("--list").output().unwrap();
    String::from_utf8(out.stdout).unwrap().lines().map(String::from).filter(|n| n != "cnitool").collect()
}

#[test]
fn bad_container_ids_and_interface_names_are_code_4() {
    for id in ["", "-leading-dash", "has/slash", "has space", "semi;colon", "a\u{e9}"] {
        let r = Call::new("loopback").container(id, "/run/netns/none", "eth0").run("ADD", LO);
        assert_eq!(r.err_code(), 4, "container id {id:?}");
    }
    for ifname in ["", ".", "..", "a/b", "a:b", "a b", "sixteen-bytes-xx"] {
        let r = Call::new("loopback").container("c1", "/run/netns/none", ifname).run("ADD", LO);
        assert_eq!(r.err_code(), 4, "ifname {ifname:?}");
    }
}

#[test]
fn oversized_and_deeply_nested_input_is_code_6_for_every_plugin() {
    let big = format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"x","pad":"{}"}}"#, "x".repeat(1 << 20));
    let deep =
        format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"x","a":{}1{}}}"#, "[".repeat(5000), "]".repeat(5000));
    for plugin in every_plugin() {
        let call = Call::new(&plugin).container("c1", "/run/netns/none", "eth0");
        assert_eq!(call.run("ADD", &big).err_code(), 6, "{plugin} with 1 MiB of stdin");
        assert_eq!(call.run("ADD", &deep).err_code(), 6, "{plugin} with deep JSON");
        assert_eq!(call.run("ADD", "\u{0}\u{1}garbage").err_code(), 6, "{plugin} with garbage");
        assert_eq!(call.run("ADD", r#"{"cniVersion":"42.0.0","name":"n"}"#).err_code(), 1, "{plugin} version");
        // VERSION always answers, whatever the plugin.
        let v = call.run("VERSION", r#"{"cniVersion":"1.0.0"}"#).ok();
        assert!(v["supportedVersions"].as_array().unwrap().len() >= 7, "{plugin}");
    }
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn a_netns_path_that_is_not_a_namespace_is_refused() {
    require_root();
    let dir = TempDir::new("hostile");
    let file = dir.path().join("not-a-netns");
    std::fs::write(&file, "").unwrap();
    let call = Call::new("loopback").container("c1", file.to_str().unwrap(), "lo");
    let r = call.run("ADD", LO);
    assert_ne!(r.code, 0);
    assert!(r.json()["msg"].as_str().unwrap().contains("netns"), "{}", r.stdout);
    assert_eq!(std::fs::read(&file).unwrap(), b"");
}

#[test]
fn errors_are_the_only_thing_on_stdout() {
    let r = Call::new("loopback").container("c1", "/run/netns/none", "lo").run("ADD", "{");
    let v = r.json();
    assert_eq!(v["code"], 6);
    assert!(v["msg"].is_string());
    assert_eq!(v["cniVersion"], "1.1.0");
    assert_eq!(r.stdout.lines().count(), 1);
}

// ---- host-local and static input that tries to escape or overflow ----

/// A host-local config storing under `data` (network `name`), with `ipam` keys added.
fn host_local_conf(name: &str, data: &std::path::Path, ipam: serde_json::Value) -> String {
    let mut conf = serde_json::json!({"cniVersion": "1.0.0", "name": name, "type": "host-local",
        "ipam": {"type": "host-local", "dataDir": data}});
    for (k, v) in ipam.as_object().unwrap() {
        conf["ipam"][k] = v.clone();
    }
    conf.to_string()
}

fn host_local(id: &str) -> Call {
    Call::new("host-local").container(id, "/run/netns/none", "eth0")
}

/// Every file and directory under `root`, relative to it.
fn tree(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            out.push(e.path().strip_prefix(root).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn network_names_with_path_separators_are_code_7_and_write_nothing() {
    require_root();
    let root = TempDir::new("hostile-names");
    let host = Netns::new("hnh");
    let data = root.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let ranges = serde_json::json!({"ranges": [[{"subnet": "10.220.0.0/24"}]]});
    for name in ["../escape", "..", ".", "a/b", "/abs", "x/../../y", "a\u{0}b", ""] {
        let conf = host_local_conf(name, &data, ranges.clone());
        for verb in ["ADD", "DEL", "CHECK"] {
            let r = host_local("c1").run(verb, &conf);
            assert_eq!(r.err_code(), 7, "{verb} with network name {name:?}");
        }
        let gc = conf.replace("1.0.0", "1.1.0");
        assert_eq!(Call::new("host-local").run("GC", &gc).err_code(), 7, "GC with network name {name:?}");
        // A main plugin delegating to host-local refuses it before touching anything.
        let mut bridge: serde_json::Value = serde_json::from_str(&conf).unwrap();
        bridge["type"] = "bridge".into();
        bridge["bridge"] = "hostile-nobr".into();
        let r = Call::new("bridge")
            .container("c1", "/run/netns/none", "eth0")
            .in_netns(&host)
            .run("ADD", &bridge.to_string());
        assert_eq!(r.err_code(), 7, "bridge ADD with network name {name:?}");
    }
    assert_eq!(tree(root.path()), ["data"], "something was written");
    assert!(!host.try_exec("ip link show hostile-nobr"), "the bridge was created");
}

#[test]
fn invalid_cidrs_and_addresses_are_code_7() {
    let root = TempDir::new("hostile-cidr");
    let bad_ranges = [
        serde_json::json!({"subnet": "10.0.0.0/33"}),
        serde_json::json!({"subnet": "300.1.1.0/24"}),
        serde_json::json!({"subnet": "10.0.0.0"}),
        serde_json::json!({"subnet": "10.0.0.0/-1"}),
        serde_json::json!({"subnet": "fd00::/129"}),
        serde_json::json!({"subnet": "10.0.0.0/24/8"}),
        serde_json::json!({"subnet": " "}),
        serde_json::json!({"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.x"}),
        serde_json::json!({"subnet": "10.0.0.0/24", "rangeEnd": "256.0.0.1"}),
        serde_json::json!({"subnet": "10.0.0.0/24", "gateway": "10.0.0.1/24"}),
        serde_json::json!({"subnet": 42}),
        serde_json::json!({"subnet": "10.0.0.0/24", "rangeStart": ["10.0.0.5"]}),
    ];
    for range in bad_ranges {
        let conf = host_local_conf("bad", root.path(), serde_json::json!({"ranges": [[range.clone()]]}));
        let code = host_local("c1").run("ADD", &conf).err_code();
        // Wrong JSON types are decode failures (6), wrong values invalid config (7).
        let want = if range.to_string().contains("42") || range.to_string().contains('[') { 6 } else { 7 };
        assert_eq!(code, want, "{range}");
    }
    let good = host_local_conf("bad", root.path(), serde_json::json!({"subnet": "10.0.0.0/24"}));
    for args in ["IP=10.0.0.300", "IP=10.0.0.5/", "IP=10.0.0.5/99", "IP=::ffff:zz", "IP=1.2.3.4.5"] {
        assert_eq!(host_local("c1").env("CNI_ARGS", args).run("ADD", &good).err_code(), 7, "{args}");
    }
    let static_conf = |addr: &str| {
        format!(
            r#"{{"cniVersion":"1.0.0","name":"s","type":"static","ipam":{{"type":"static","addresses":[{{"address":"{addr}"}}]}}}}"#
        )
    };
    for addr in ["10.0.0.5", "10.0.0.5/33", "x/24", "fd00::5/200", ""] {
        let r = Call::new("static").container("c1", "/run/netns/none", "eth0").run("ADD", &static_conf(addr));
        assert_eq!(r.err_code(), 7, "static address {addr:?}");
    }
    assert_eq!(tree(root.path()), Vec::<String>::new(), "a refused ADD wrote something");
}

/// An invalid CIDR through a main plugin: refused before the bridge is created.
#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn invalid_cidr_through_a_main_plugin_creates_no_bridge() {
    require_root();
    let root = TempDir::new("hostile-cidr");
    let host = Netns::new("hch");
    let bridge = serde_json::json!({"cniVersion": "1.0.0", "name": "bad", "type": "bridge", "bridge": "hostile-br",
        "ipam": {"type": "host-local", "dataDir": root.path(), "subnet": "10.0.0.0/33"}});
    let r = Call::new("bridge")
        .container("c1", "/run/netns/none", "eth0")
        .in_netns(&host)
        .env("CNI_PATH", &format!("{}", plugin_dir().display()))
        .run("ADD", &bridge.to_string());
    assert_eq!(r.err_code(), 7);
    assert!(!host.try_exec("ip link show hostile-br"), "the bridge was created");
}

#[test]
fn ipv4_mapped_ipv6_addresses_are_ipv4_where_the_reference_takes_them() {
    let root = TempDir::new("hostile-mapped");
    // A mapped subnet: refused (the reference fails on it too).
    let conf = host_local_conf("m", root.path(), serde_json::json!({"subnet": "::ffff:10.221.0.0/120"}));
    assert_eq!(host_local("c1").run("ADD", &conf).err_code(), 7);
    assert!(tree(root.path()).is_empty());
    // Mapped addresses in a range and in a request: IPv4.
    let conf = host_local_conf(
        "m",
        root.path(),
        serde_json::json!({"subnet": "10.221.0.0/24", "rangeStart": "::ffff:10.221.0.10",
                           "rangeEnd": "::ffff:10.221.0.20", "gateway": "::ffff:10.221.0.1"}),
    );
    let r = host_local("c1").env("CNI_ARGS", "IP=::ffff:10.221.0.15").run("ADD", &conf).ok();
    assert_eq!(r["ips"][0]["address"], "10.221.0.15/24");
    assert_eq!(r["ips"][0]["gateway"], "10.221.0.1");
    assert!(root.path().join("m/10.221.0.15").exists());
    let r = host_local("c2").run("ADD", &conf).ok();
    // Round robin: the next address after the last one reserved.
    assert_eq!(r["ips"][0]["address"], "10.221.0.16/24");
    // A mapped request outside the range is refused like its IPv4 form.
    assert_ne!(host_local("c3").env("CNI_ARGS", "IP=::ffff:10.221.0.50").run("ADD", &conf).code, 0);
    for id in ["c1", "c2"] {
        host_local(id).run("DEL", &conf).ok();
    }
    // static: a mapped address with its mapped prefix becomes IPv4, as in the reference.
    let st = r#"{"cniVersion":"1.0.0","name":"s","type":"static","ipam":{"type":"static",
        "addresses":[{"address":"::ffff:10.0.0.5/120","gateway":"::ffff:10.0.0.1"}]}}"#;
    let r = Call::new("static").container("c1", "/run/netns/none", "eth0").run("ADD", st).ok();
    assert_eq!(r["ips"][0]["address"], "10.0.0.5/24");
    assert_eq!(r["ips"][0]["gateway"], "10.0.0.1");
}

#[test]
fn ranges_at_the_ends_of_the_address_space_allocate_or_fail_cleanly() {
    let root = TempDir::new("hostile-ends");
    // (ranges, how many ADDs succeed, their addresses)
    let cases: Vec<(serde_json::Value, Vec<&str>)> = vec![
        (
            serde_json::json!([[{"subnet": "255.255.255.0/24", "rangeStart": "255.255.255.253", "rangeEnd": "255.255.255.255"}]]),
            vec!["255.255.255.253/24", "255.255.255.254/24", "255.255.255.255/24"],
        ),
        (serde_json::json!([[{"subnet": "255.255.255.252/30"}]]), vec!["255.255.255.254/30"]),
        (
            serde_json::json!([[{"subnet": "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120",
                               "rangeStart": "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"}]]),
            vec!["ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/120", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/120"],
        ),
        (
            serde_json::json!([[{"subnet": "0.0.0.0/0", "rangeStart": "255.255.255.253"}]]),
            vec!["255.255.255.253/0", "255.255.255.254/0"],
        ),
        (
            serde_json::json!([[{"subnet": "::/0", "rangeStart": "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"}]]),
            vec!["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/0"],
        ),
        (serde_json::json!([[{"subnet": "0.0.0.0/0"}], [{"subnet": "::/0"}]]), vec!["0.0.0.2/0", "0.0.0.3/0"]),
    ];
    for (i, (ranges, want)) in cases.iter().enumerate() {
        let name = format!("ends{i}");
        let conf = host_local_conf(&name, root.path(), serde_json::json!({"ranges": ranges}));
        let mut got = Vec::new();
        for n in 0..want.len() + 1 {
            let r = host_local(&format!("c{n}")).run("ADD", &conf);
            if r.code != 0 {
                assert_eq!(n, want.len(), "case {i}: ADD {n} failed: {}", r.stdout);
                assert!(r.json()["msg"].as_str().unwrap().contains("no IP addresses available"), "{}", r.stdout);
                break;
            }
            got.push(r.json()["ips"][0]["address"].as_str().unwrap().to_string());
        }
        if i < 5 {
            assert_eq!(got, *want, "case {i}");
        } else {
            // Huge ranges: the first addresses, and no failure.
            assert_eq!(got[..2], want[..], "case {i}");
        }
        // STATUS knows when a range set is full, without walking it.
        let status = conf.replace("1.0.0", "1.1.0");
        let r = Call::new("host-local").run("STATUS", &status);
        assert_eq!(r.code != 0, i < 5, "case {i} STATUS: {}", r.stdout);
    }
}
