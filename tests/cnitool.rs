//! cnitool: config directory lookup, chains, the result cache, GC/STATUS.
//! Plugins run inside a fake host netns; the reference plugins stand in
//! for those cnibox does not have.

mod common;
use common::*;

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

const REFERENCE: &str = "/usr/lib/cni";

/// Runs `cnibox cnitool ARGS` (inside `host` when given) with `env`.
fn cnitool(host: Option<&Netns>, env: &[(&str, &str)], args: &[&str]) -> Reply {
    let mut cmd = match host {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &ns.name, BIN]);
            c
        }
        None => Command::new(BIN),
    };
    cmd.arg("cnitool").args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd.env("CNIBOX_LOG", "info");
    // Never the real host's system bus (the firewall plugin looks for firewalld there).
    cmd.env("DBUS_SYSTEM_BUS_ADDRESS", NO_SYSTEM_BUS);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    Reply {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A config dir, a cache dir and a host-local data dir for one test.
struct Setup {
    conf: TempDir,
    cache: TempDir,
    data: TempDir,
    path: String,
}

impl Setup {
    fn new(extra_path: &str) -> Setup {
        let mut path = plugin_dir().display().to_string();
        if !extra_path.is_empty() {
            path = format!("{path}:{extra_path}");
        }
        path += &format!(":{REFERENCE}");
        Setup { conf: TempDir::new("conf"), cache: TempDir::new("cache"), data: TempDir::new("data"), path }
    }
    fn env(&self) -> Vec<(&str, &str)> {
        vec![
            ("NETCONFPATH", self.conf.path().to_str().unwrap()),
            ("CNI_CACHE_DIR", self.cache.path().to_str().unwrap()),
            ("CNI_PATH", &self.path),
        ]
    }
    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.conf.path().join(file), text).unwrap();
    }
    fn cache_files(&self) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(self.cache.path().join("results")) else { return Vec::new() };
        let mut names: Vec<String> = dir.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }
}

fn ok(reply: Reply) -> Reply {
    assert_eq!(reply.code, 0, "cnitool failed:\n{}\n{}", reply.stdout, reply.stderr);
    reply
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn loopback_conf_from_a_directory() {
    require_root();
    let s = Setup::new("");
    let net = unique("lo");
    // libcni's order: every .conflist (by name) before any .conf; the first
    // file naming the network wins.
    s.write("10-lo.conf", &format!(r#"{{"cniVersion":"1.0.0","name":"{net}","type":"nope"}}"#));
    s.write("20-lo.conflist", &format!(r#"{{"cniVersion":"1.0.0","name":"{net}","plugins":[{{"type":"loopback"}}]}}"#));
    let ns = Netns::new("clo");
    ns.exec("ip link set lo down");
    let env = s.env();
    let out = ok(cnitool(None, &env, &["add", &net, &ns.path()]));
    let result: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(result["interfaces"][0]["name"], "lo");
    assert!(ns.exec("ip link show lo").contains(",UP"));
    let files = s.cache_files();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].starts_with(&format!("{net}-cnitool-")) && files[0].ends_with("-eth0"), "{files:?}");
    let cached: Value =
        serde_json::from_slice(&std::fs::read(s.cache.path().join("results").join(&files[0])).unwrap()).unwrap();
    assert_eq!(cached["kind"], "cniCacheV1");
    assert_eq!(cached["netns"], ns.path());
    ok(cnitool(None, &env, &["check", &net, &ns.path()]));
    ok(cnitool(None, &env, &["del", &net, &ns.path()]));
    assert!(!ns.exec("ip link show lo").contains(",UP"));
    assert!(s.cache_files().is_empty());
    // CHECK without a cached attachment says so.
    let r = cnitool(None, &env, &["check", &net, &ns.path()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no cached result"), "{}", r.stderr);
    // A missing network is named in the error.
    let r = cnitool(None, &env, &["add", "no-such-net", &ns.path()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no-such-net") && r.stderr.contains("code: 7"), "{}", r.stderr);
}

/// bridge + host-local (+ loopback) through cnitool, with the plugins taken
/// from cnibox or, when `reference` is set, from the reference suite.
fn bridge_chain(reference: bool) {
    let mut s = Setup::new("");
    if reference {
        s.path = format!("{REFERENCE}:{}", plugin_dir().display());
    }
    let host = Netns::new("hst");
    let ctr = Netns::new("ctr");
    let net = unique("br");
    let bridge = unique("cb");
    let subnet_byte = 100 + (std::process::id() % 50) + if reference { 50 } else { 0 };
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"{net}","plugins":[
            {{"type":"bridge","bridge":"{bridge}","isGateway":true,
              "ipam":{{"type":"host-local","subnet":"10.{subnet_byte}.7.0/24","dataDir":"{}"}}}},
            {{"type":"loopback"}}]}}"#,
        s.data.path().display()
    );
    s.write("50-br.conflist", &conf);
    let env = s.env();
    let out = ok(cnitool(Some(&host), &env, &["add", &net, &ctr.path()]));
    let result: Value = serde_json::from_str(&out.stdout).unwrap();
    let ip = format!("10.{subnet_byte}.7.2/24");
    assert_eq!(result["ips"][0]["address"], ip, "{result}");
    assert!(ctr.exec("ip addr show eth0").contains(&ip));
    assert!(host.exec(&format!("ip link show {bridge}")).contains(&bridge));
    let reservation = s.data.path().join(&net).join(format!("10.{subnet_byte}.7.2"));
    assert!(reservation.exists());
    ok(cnitool(Some(&host), &env, &["check", &net, &ctr.path()]));

    // Changing the file does not change what DEL runs: the cache has ADD's config.
    s.write("50-br.conflist", &format!(r#"{{"cniVersion":"1.0.0","name":"{net}","plugins":[{{"type":"nope"}}]}}"#));
    ok(cnitool(Some(&host), &env, &["del", &net, &ctr.path()]));
    assert!(!ctr.try_exec("ip link show eth0"));
    assert!(!reservation.exists());
    assert!(s.cache_files().is_empty());
    // A second DEL, now with nothing cached, runs the (broken) file and says which plugin failed.
    let r = cnitool(Some(&host), &env, &["del", &net, &ctr.path()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains(r#"type="nope""#), "{}", r.stderr);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn bridge_chain_with_cnibox_plugins() {
    require_root();
    bridge_chain(false);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn bridge_chain_with_reference_plugins() {
    require_root();
    bridge_chain(true);
}

/// A 1.1.0 list of cnibox's bridge, portmap and tuning.
fn full_chain(s: &Setup, net: &str, bridge: &str, octet: u32) -> String {
    format!(
        r#"{{"cniVersion":"1.1.0","name":"{net}","plugins":[
            {{"type":"bridge","bridge":"{bridge}","isGateway":true,"ipMasq":true,
              "ipam":{{"type":"host-local","subnet":"10.{octet}.9.0/24","dataDir":"{}"}}}},
            {{"type":"portmap","capabilities":{{"portMappings":true}}}},
            {{"type":"tuning","capabilities":{{"mac":true}},"sysctl":{{"net.ipv4.conf.eth0.accept_local":"1"}}}}]}}"#,
        s.data.path().display()
    )
}

fn portmap_table(host: &Netns) -> String {
    host.exec("nft list table inet cnibox-portmap 2>/dev/null || true")
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn cnibox_chain_with_capabilities_check_del_and_gc() {
    require_root();
    let s = Setup::new("");
    let host = Netns::new("hst");
    let (ctr1, ctr2) = (Netns::new("ctr"), Netns::new("ctr"));
    let net = unique("full");
    let bridge = unique("fb");
    let octet = 100 + (std::process::id() % 100);
    s.write("10-full.conflist", &full_chain(&s, &net, &bridge, octet));
    let mut env = s.env();
    let caps = r#"{"portMappings":[{"hostPort":18080,"containerPort":80,"protocol":"tcp"}],"mac":"c2:00:00:00:12:34"}"#;
    env.push(("CAP_ARGS", caps));
    let out = ok(cnitool(Some(&host), &env, &["add", &net, &ctr1.path()]));
    let result: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(result["cniVersion"], "1.1.0");
    assert!(ctr1.exec("ip link show eth0").contains("c2:00:00:00:12:34"), "tuning got the mac capability");
    assert_eq!(ctr1.exec("cat /proc/sys/net/ipv4/conf/eth0/accept_local").trim(), "1");
    let id1 = s.cache_files()[0].trim_start_matches(&format!("{net}-")).trim_end_matches("-eth0").to_string();
    assert!(portmap_table(&host).contains(&id1), "portmap got the portMappings capability");
    ok(cnitool(Some(&host), &env, &["check", &net, &ctr1.path()]));

    // A second container without capability args, then its cache entry is lost.
    env.retain(|(k, _)| *k != "CAP_ARGS");
    ok(cnitool(Some(&host), &env, &["add", &net, &ctr2.path()]));
    let r1 = s.data.path().join(&net).join(format!("10.{octet}.9.2"));
    let r2 = s.data.path().join(&net).join(format!("10.{octet}.9.3"));
    assert!(r1.exists() && r2.exists());
    let lost = s.cache_files().into_iter().find(|f| !f.contains(&id1)).unwrap();
    std::fs::remove_file(s.cache.path().join("results").join(lost)).unwrap();
    ok(cnitool(Some(&host), &env, &["gc", &net]));
    assert!(r1.exists(), "a cached attachment keeps its address");
    assert!(!r2.exists(), "GC releases the address of an attachment missing from the cache");
    ok(cnitool(Some(&host), &env, &["status", &net]));

    // DEL (no CAP_ARGS now) still removes the port mapping: the cache has ADD's capability args.
    ok(cnitool(Some(&host), &env, &["del", &net, &ctr1.path()]));
    assert!(!portmap_table(&host).contains(&id1));
    assert!(!r1.exists());
    assert!(!ctr1.try_exec("ip link show eth0"));
}

/// A fake plugin that records its stdin and environment under `dir`, named
/// `<its name>-<verb>-<container ID>`, and answers ADD with a fixed result.
fn recorder(bin: &Path, name: &str, rec: &Path, fail_on: &str) {
    let script = format!(
        r#"#!/bin/sh
f="{rec}/{name}-$CNI_COMMAND-$CNI_CONTAINERID"
cat > "$f"
env | grep '^CNI_' | sort > "$f.env"
if [ "$CNI_COMMAND" = "{fail_on}" ]; then
  echo '{{"cniVersion":"1.1.0","code":7,"msg":"recorder refuses","details":"asked to fail"}}'
  exit 1
fi
if [ "$CNI_COMMAND" = ADD ]; then
  echo '{{"cniVersion":"1.1.0","ips":[{{"address":"10.1.2.3/24"}}]}}'
fi
"#,
        rec = rec.display()
    );
    let path = bin.join(name);
    std::fs::write(&path, script).unwrap();
    sh(&format!("chmod +x {}", path.display()));
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

#[test]
fn capabilities_prev_result_gc_and_status() {
    let bin = TempDir::new("fakebin");
    let rec = TempDir::new("rec");
    recorder(bin.path(), "reca", rec.path(), "");
    recorder(bin.path(), "recb", rec.path(), "");
    let s = Setup::new(bin.path().to_str().unwrap());
    let net = unique("gc");
    s.write(
        "10.conflist",
        &format!(
            r#"{{"cniVersion":"1.1.0","name":"{net}","plugins":[
                {{"type":"reca","capabilities":{{"portMappings":true}}}},
                {{"type":"recb","capabilities":{{"mac":true,"portMappings":false}},"own":1}}]}}"#
        ),
    );
    let ns_dir = TempDir::new("ns");
    let (ns1, ns2) = (ns_dir.path().join("one"), ns_dir.path().join("two"));
    std::fs::write(&ns1, "").unwrap();
    std::fs::write(&ns2, "").unwrap();
    let mut env = s.env();
    let caps = r#"{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}],"mac":"c2:11:22:33:44:55"}"#;
    env.push(("CAP_ARGS", caps));
    env.push(("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=p"));
    env.push(("CNI_IFNAME", "net1"));
    ok(cnitool(None, &env, &["add", &net, ns1.to_str().unwrap()]));
    let files = s.cache_files();
    let id1 = files[0].trim_start_matches(&format!("{net}-")).trim_end_matches("-net1").to_string();
    let a = read_json(&rec.path().join(format!("reca-ADD-{id1}")));
    let b = read_json(&rec.path().join(format!("recb-ADD-{id1}")));
    assert_eq!(a["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
    assert!(a["runtimeConfig"].get("mac").is_none());
    assert_eq!(b["runtimeConfig"], serde_json::json!({"mac":"c2:11:22:33:44:55"}));
    assert_eq!(
        (a["name"].as_str(), b["cniVersion"].as_str(), b["own"].as_u64()),
        (Some(&*net), Some("1.1.0"), Some(1))
    );
    assert!(a.get("prevResult").is_none());
    assert_eq!(b["prevResult"]["ips"][0]["address"], "10.1.2.3/24");
    let env_a = std::fs::read_to_string(rec.path().join(format!("reca-ADD-{id1}.env"))).unwrap();
    assert!(env_a.contains("CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAME=p") && env_a.contains("CNI_IFNAME=net1"), "{env_a}");

    // A second attachment, then its cache entry is lost: GC reports only the first as valid.
    env.retain(|(k, _)| *k != "CAP_ARGS");
    ok(cnitool(None, &env, &["add", &net, ns2.to_str().unwrap()]));
    assert_eq!(s.cache_files().len(), 2);
    let second = s.cache_files().into_iter().find(|f| !f.contains(&id1)).unwrap();
    std::fs::remove_file(s.cache.path().join("results").join(second)).unwrap();
    ok(cnitool(None, &env, &["gc", &net]));
    for plugin in ["reca", "recb"] {
        let gc = read_json(&rec.path().join(format!("{plugin}-GC-")));
        assert_eq!(gc["cni.dev/valid-attachments"], serde_json::json!([{"containerID": id1, "ifname": "net1"}]));
        assert!(gc.get("runtimeConfig").is_none());
    }

    // An attachment whose netns is gone is deleted (from its cache) by GC.
    std::fs::remove_file(&ns1).unwrap();
    ok(cnitool(None, &env, &["gc", &net]));
    let del = read_json(&rec.path().join(format!("reca-DEL-{id1}")));
    assert_eq!(del["prevResult"]["ips"][0]["address"], "10.1.2.3/24");
    assert_eq!(del["runtimeConfig"]["portMappings"][0]["hostPort"], 8080, "capability args come from the cache");
    assert!(s.cache_files().is_empty());
    let gc = read_json(&rec.path().join("reca-GC-"));
    assert_eq!(gc["cni.dev/valid-attachments"], serde_json::json!([]));

    ok(cnitool(None, &env, &["status", &net]));
    assert!(rec.path().join("recb-STATUS-").exists());
}

#[test]
fn a_failed_add_is_undone_and_reported() {
    let bin = TempDir::new("fakebin");
    let rec = TempDir::new("rec");
    recorder(bin.path(), "good", rec.path(), "");
    recorder(bin.path(), "bad", rec.path(), "ADD");
    let s = Setup::new(bin.path().to_str().unwrap());
    let net = unique("fail");
    let list = s.conf.path().join("x.json");
    std::fs::write(
        &list,
        format!(r#"{{"cniVersion":"1.0.0","name":"{net}","plugins":[{{"type":"good"}},{{"type":"bad"}}]}}"#),
    )
    .unwrap();
    let env = s.env();
    let r = cnitool(None, &env, &["--conflist", list.to_str().unwrap(), "add", "/tmp/some-netns"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.is_empty());
    assert!(r.stderr.contains(r#"plugin type="bad" failed (add): recorder refuses"#), "{}", r.stderr);
    assert!(r.stderr.contains("code: 7") && r.stderr.contains("details: asked to fail"), "{}", r.stderr);
    let dels: Vec<String> = std::fs::read_dir(rec.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("-DEL-") && !n.ends_with(".env"))
        .collect();
    assert_eq!(dels.len(), 2, "both plugins that ran get DEL: {dels:?}");
    assert!(s.cache_files().is_empty());
    // --conflist with a network name that is not the file's is refused.
    let r = cnitool(None, &env, &["--conflist", list.to_str().unwrap(), "add", "other", "/tmp/x"]);
    assert_eq!(r.code, 1);
}

#[test]
fn a_plugin_that_hangs_is_killed_after_the_timeout() {
    let bin = TempDir::new("fakebin");
    let slow = bin.path().join("slow");
    std::fs::write(&slow, "#!/bin/sh\n[ \"$CNI_COMMAND\" = ADD ] && exec sleep 60\nexit 0\n").unwrap();
    sh(&format!("chmod +x {}", slow.display()));
    let s = Setup::new(bin.path().to_str().unwrap());
    let net = unique("slow");
    s.write("x.conf", &format!(r#"{{"cniVersion":"1.0.0","name":"{net}","type":"slow"}}"#));
    let mut env = s.env();
    env.push(("CNI_TIMEOUT", "1"));
    let r = cnitool(None, &env, &["add", &net, "/tmp/some-netns"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("timed out after 1s"), "{}", r.stderr);
    assert!(s.cache_files().is_empty());
}

#[test]
fn ifname_from_the_flag_then_the_environment_then_eth0() {
    let bin = TempDir::new("fakebin");
    let rec = TempDir::new("rec");
    recorder(bin.path(), "reca", rec.path(), "");
    let s = Setup::new(bin.path().to_str().unwrap());
    let net = unique("ifn");
    s.write("10.conflist", &format!(r#"{{"cniVersion":"1.1.0","name":"{net}","plugins":[{{"type":"reca"}}]}}"#));
    let ns_dir = TempDir::new("ns");
    // The CNI_IFNAME the plugin saw on one ADD (each in a netns of its own).
    let ifname_of_add = |cni_ifname: Option<&'static str>, flags: &[&str], ns: &str| -> String {
        let netns = ns_dir.path().join(ns);
        std::fs::write(&netns, "").unwrap();
        let mut env = s.env();
        env.extend(cni_ifname.map(|v| ("CNI_IFNAME", v)));
        let mut argv: Vec<&str> = flags.to_vec();
        argv.extend(["add", &net, netns.to_str().unwrap()]);
        ok(cnitool(None, &env, &argv));
        let mut seen = Vec::new();
        for f in std::fs::read_dir(rec.path()).unwrap().flatten() {
            let text = std::fs::read_to_string(f.path()).unwrap();
            seen.extend(text.lines().filter(|l| l.starts_with("CNI_IFNAME=")).map(str::to_string));
            std::fs::remove_file(f.path()).unwrap();
        }
        seen.join(" ")
    };
    assert_eq!(ifname_of_add(Some(""), &[], "a"), "CNI_IFNAME=eth0");
    assert_eq!(ifname_of_add(Some("net3"), &[], "b"), "CNI_IFNAME=net3");
    assert_eq!(ifname_of_add(Some("net3"), &["-i", "net4"], "c"), "CNI_IFNAME=net4");
    assert_eq!(ifname_of_add(None, &["--ifname", "net5"], "d"), "CNI_IFNAME=net5");
}
