mod common;
use common::*;

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

const REFERENCE: &str = "/usr/lib/cni/host-local";

/// A host-local config for network `name` with `ipam` merged into the ipam section.
fn conf(version: &str, name: &str, data_dir: &Path, ipam: Value) -> String {
    let mut section = json!({"type": "host-local", "dataDir": data_dir});
    for (k, v) in ipam.as_object().unwrap() {
        section[k] = v.clone();
    }
    json!({"cniVersion": version, "name": name, "type": "bridge", "ipam": section}).to_string()
}

fn subnet(s: &str) -> Value {
    json!({ "ranges": [[{ "subnet": s }]] })
}

fn call(id: &str, ns: &Netns) -> Call {
    Call::new("host-local").container(id, &ns.path(), "eth0")
}

fn reference(id: &str, ns: &Netns) -> Call {
    Call::new(REFERENCE).container(id, &ns.path(), "eth0")
}

fn have_reference() -> bool {
    Path::new(REFERENCE).exists()
}

fn net_dir(data: &TempDir, name: &str) -> PathBuf {
    data.path().join(name)
}

fn addresses(result: &Value) -> Vec<String> {
    result["ips"].as_array().unwrap().iter().map(|ip| ip["address"].as_str().unwrap().to_string()).collect()
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn add_check_del() {
    require_root();
    let ns = Netns::new("hl");
    let data = TempDir::new("hl");
    let name = unique("net");
    let conf = conf("1.0.0", &name, data.path(), subnet("10.70.0.0/24"));
    let c = call("c1", &ns);

    let result = c.run("ADD", &conf).ok();
    assert_eq!(result["cniVersion"], "1.0.0");
    assert_eq!(addresses(&result), ["10.70.0.2/24"]);
    assert_eq!(result["ips"][0]["gateway"], "10.70.0.1");
    let dir = net_dir(&data, &name);
    assert_eq!(fs::read_to_string(dir.join("10.70.0.2")).unwrap(), "c1\r\neth0");
    assert_eq!(fs::read_to_string(dir.join("last_reserved_ip.0")).unwrap(), "10.70.0.2");
    assert!(dir.join("lock").exists());

    let mut with_prev: Value = serde_json::from_str(&conf).unwrap();
    with_prev["prevResult"] = result.clone();
    c.run("CHECK", &with_prev.to_string()).ok();
    // An address of ours in prevResult that the container does not hold fails CHECK.
    with_prev["prevResult"]["ips"][0]["address"] = "10.70.0.9/24".into();
    c.run("CHECK", &with_prev.to_string()).err_code();

    c.run("DEL", &conf).ok();
    assert!(reserved_ips(&dir).is_empty());
    c.run("CHECK", &conf).err_code();
    c.run("DEL", &conf).ok();

    // Round robin: the next ADD continues after the last address handed out.
    assert_eq!(addresses(&call("c2", &ns).run("ADD", &conf).ok()), ["10.70.0.3/24"]);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn del_without_a_store() {
    require_root();
    let ns = Netns::new("hl");
    let data = TempDir::new("hl");
    let missing = data.path().join("never-created");
    let conf = conf("1.0.0", "nostore", &missing, subnet("10.71.0.0/24"));
    call("c1", &ns).run("DEL", &conf).ok();
    assert!(!missing.exists());
    // DEL needs neither the netns nor valid ranges.
    let bad_ranges = self::conf("1.0.0", "nostore", &missing, subnet("10.71.0.5/24"));
    Call::new("host-local").container("c1", "", "eth0").run("DEL", &bad_ranges).ok();
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn dual_stack_and_legacy_range() {
    require_root();
    let ns = Netns::new("hl");
    let data = TempDir::new("hl");
    let name = unique("net");
    let ipam = json!({
        "subnet": "10.72.0.0/16", "rangeStart": "10.72.5.10", "rangeEnd": "10.72.5.20", "gateway": "10.72.0.1",
        "ranges": [[{"subnet": "fd00:72::/64", "rangeStart": "fd00:72::100"}]],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    });
    let conf = conf("1.0.0", &name, data.path(), ipam);
    let result = call("c1", &ns).run("ADD", &conf).ok();
    assert_eq!(addresses(&result), ["10.72.5.10/16", "fd00:72::100/64"]);
    assert_eq!(result["ips"][1]["gateway"], "fd00:72::1");
    assert_eq!(result["routes"].as_array().unwrap().len(), 2);
    let dir = net_dir(&data, &name);
    assert_eq!(reserved_ips(&dir), ["10.72.5.10", "fd00:72::100"]);
    assert_eq!(fs::read_to_string(dir.join("last_reserved_ip.1")).unwrap(), "fd00:72::100");
    call("c1", &ns).run("CHECK", &conf).ok();
    call("c1", &ns).run("DEL", &conf).ok();
    assert!(reserved_ips(&dir).is_empty());
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn a_second_add_is_refused() {
    require_root();
    let ns = Netns::new("hl");
    let data = TempDir::new("hl");
    let name = unique("net");
    let conf = conf("1.0.0", &name, data.path(), subnet("10.73.0.0/24"));
    call("c1", &ns).run("ADD", &conf).ok();
    let reply = call("c1", &ns).run("ADD", &conf);
    assert!(reply.stdout.contains("duplicate allocation is not allowed"), "{}", reply.stdout);
    reply.err_code();
    assert_eq!(reserved_ips(&net_dir(&data, &name)), ["10.73.0.2"]);
    // Another interface of the same container is another attachment.
    call("c1", &ns).env("CNI_IFNAME", "eth1").run("ADD", &conf).ok();
    assert_eq!(reserved_ips(&net_dir(&data, &name)).len(), 2);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn fifty_concurrent_adds() {
    require_root();
    let ns = Netns::new("hl");
    let data = TempDir::new("hl");
    let name = unique("net");
    let conf = conf("1.0.0", &name, data.path(), subnet("10.74.0.0/24"));
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = {
            let (ns, conf) = (&ns, &conf);
            (0..50).map(|i| s.spawn(move || call(&format!("c{i}"), ns).run("ADD", conf).ok())).collect()
        };
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ips: HashSet<String> = results.iter().map(|r| addresses(r)[0].clone()).collect();
    assert_eq!(ips.len(), 50, "duplicate addresses handed out");
    let files = reserved_ips(&net_dir(&data, &name));
    assert_eq!(files.len(), 50);
    for ip in &ips {
        assert!(files.contains(&ip.trim_end_matches("/24").to_string()));
    }
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn gc_keeps_only_valid_attachments() {
    require_root();
    let ns = Netns::new("hl");
    let data = TempDir::new("hl");
    let name = unique("net");
    let conf = conf("1.1.0", &name, data.path(), subnet("10.75.0.0/24"));
    for id in ["a", "b", "c", "d"] {
        call(id, &ns).run("ADD", &conf).ok();
    }
    let dir = net_dir(&data, &name);
    assert_eq!(reserved_ips(&dir).len(), 4);

    // A GC without the list keeps everything.
    Call::new("host-local").run("GC", &conf).ok();
    assert_eq!(reserved_ips(&dir).len(), 4);

    let mut gc: Value = serde_json::from_str(&conf).unwrap();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "a", "ifname": "eth0"}, {"containerID": "b", "ifname": "eth0"},
               {"containerID": "c", "ifname": "eth9"}]);
    Call::new("host-local").run("GC", &gc.to_string()).ok();
    assert_eq!(reserved_ips(&dir), ["10.75.0.2", "10.75.0.3"]);

    // The older key name is honoured too.
    let mut gc: Value = serde_json::from_str(&conf).unwrap();
    gc["cni.dev/attachments"] = json!([{"containerID": "b", "ifname": "eth0"}]);
    Call::new("host-local").run("GC", &gc.to_string()).ok();
    assert_eq!(reserved_ips(&dir), ["10.75.0.3"]);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn exhaustion_and_status() {
    require_root();
    let ns = Netns::new("hl");
    let data = TempDir::new("hl");
    let name = unique("net");
    let conf = conf(
        "1.1.0",
        &name,
        data.path(),
        json!({"ranges": [[{"subnet": "10.76.0.0/30"}], [{"subnet": "fd00:76::/64"}]]}),
    );
    Call::new("host-local").run("STATUS", &conf).ok();
    call("c1", &ns).run("ADD", &conf).ok();
    let reply = call("c2", &ns).run("ADD", &conf);
    assert!(
        reply
            .stdout
            .contains("failed to allocate for range 0: no IP addresses available in range set: 10.76.0.1-10.76.0.2"),
        "{}",
        reply.stdout
    );
    reply.err_code();
    // Nothing of the failed ADD is left, in either range set.
    assert_eq!(reserved_ips(&net_dir(&data, &name)), ["10.76.0.2", "fd00:76::2"]);
    assert_eq!(Call::new("host-local").run("STATUS", &conf).err_code(), 50);
    call("c1", &ns).run("DEL", &conf).ok();
    Call::new("host-local").run("STATUS", &conf).ok();

    // An unusable data dir.
    let file = data.path().join("a-file");
    fs::write(&file, "").unwrap();
    let broken = self::conf("1.1.0", &name, &file, subnet("10.76.0.0/24"));
    assert_eq!(Call::new("host-local").run("STATUS", &broken).err_code(), 50);
    assert_eq!(call("c1", &ns).run("ADD", &broken).err_code(), 5);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn requested_ips() {
    require_root();
    let ns = Netns::new("hl");
    let data = TempDir::new("hl");
    let name = unique("net");
    let conf = conf(
        "1.0.0",
        &name,
        data.path(),
        json!({"ranges": [[{"subnet": "10.77.0.0/24"}], [{"subnet": "fd00:77::/64"}]]}),
    );
    let result = call("c1", &ns).env("CNI_ARGS", "IP=10.77.0.50,fd00:77::50").run("ADD", &conf).ok();
    assert_eq!(addresses(&result), ["10.77.0.50/24", "fd00:77::50/64"]);
    let taken = call("c2", &ns).env("CNI_ARGS", "IP=10.77.0.50").run("ADD", &conf);
    assert!(taken.stdout.contains("10.77.0.50 is not available"), "{}", taken.stdout);
    taken.err_code();

    let mut rc: Value = serde_json::from_str(&conf).unwrap();
    rc["runtimeConfig"] = json!({"ips": ["10.77.0.60/24"]});
    let result = call("c3", &ns).run("ADD", &rc.to_string()).ok();
    assert_eq!(addresses(&result)[0], "10.77.0.60/24");
    rc["runtimeConfig"] = json!({"ips": ["192.168.0.1"]});
    call("c4", &ns).run("ADD", &rc.to_string()).err_code();
    // ipRanges come before the configured ranges.
    rc["runtimeConfig"] = json!({"ipRanges": [[{"subnet": "10.78.0.0/24"}]]});
    let result = call("c5", &ns).run("ADD", &rc.to_string()).ok();
    assert_eq!(addresses(&result), ["10.78.0.2/24", "10.77.0.2/24", "fd00:77::2/64"]);
    assert_eq!(reserved_ips(&net_dir(&data, &name)).len(), 7);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn resolv_conf_and_legacy_versions() {
    require_root();
    let ns = Netns::new("hl");
    let data = TempDir::new("hl");
    let resolv = data.path().join("resolv.conf");
    fs::write(&resolv, "nameserver 10.79.0.53\nsearch a.example b.example\noptions ndots:2\ndomain example\n").unwrap();
    let name = unique("net");
    let conf = conf("0.2.0", &name, data.path(), json!({"subnet": "10.79.0.0/24", "resolvConf": resolv}));
    let result = call("c1", &ns).run("ADD", &conf).ok();
    assert_eq!(result["ip4"]["ip"], "10.79.0.2/24");
    assert_eq!(result["dns"]["nameservers"], json!(["10.79.0.53"]));
    assert_eq!(result["dns"]["search"], json!(["a.example", "b.example"]));
    assert_eq!(result["dns"]["domain"], "example");
    let missing =
        self::conf("1.0.0", &name, data.path(), json!({"subnet": "10.79.0.0/24", "resolvConf": "/nonexistent"}));
    call("c2", &ns).run("ADD", &missing).err_code();
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn bad_names_and_configs_are_refused() {
    require_root();
    let ns = Netns::new("hl");
    let data = TempDir::new("hl");
    let inner = data.path().join("inner");
    for name in ["a/b", "..", "../escape", "."] {
        let conf = conf("1.0.0", name, &inner, subnet("10.80.0.0/24"));
        assert_eq!(call("c1", &ns).run("ADD", &conf).err_code(), 7, "{name}");
        assert_eq!(call("c1", &ns).run("DEL", &conf).err_code(), 7, "{name}");
    }
    assert!(!data.path().join("escape").exists());
    assert!(!inner.exists());
    let name = unique("net");
    for ipam in [
        json!({"subnet": "10.80.0.0/31"}),
        json!({"subnet": "10.80.0.1/24"}),
        json!({"subnet": "10.80.0.0/24", "gateway": "fd00::1"}),
        json!({"ranges": [[{"subnet": "10.80.0.0/24"}], [{"subnet": "10.80.0.0/25"}]]}),
        json!({}),
    ] {
        let conf = conf("1.0.0", &name, data.path(), ipam.clone());
        assert_eq!(call("c1", &ns).run("ADD", &conf).err_code(), 7, "{ipam}");
    }
}

/// cnibox's state is read and released by the reference.
#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn reference_honours_cnibox_state() {
    require_root();
    if !have_reference() {
        return;
    }
    let ns = Netns::new("hl");
    let data = TempDir::new("hl");
    let name = unique("net");
    let conf = conf("1.0.0", &name, data.path(), subnet("10.81.0.0/29"));
    let dir = net_dir(&data, &name);
    call("c1", &ns).env("CNI_ARGS", "IP=10.81.0.3").run("ADD", &conf).ok();
    call("c2", &ns).env("CNI_ARGS", "IP=10.81.0.5").run("ADD", &conf).ok();
    // Let the reference start at the beginning of the range.
    fs::remove_file(dir.join("last_reserved_ip.0")).unwrap();
    let mut theirs = Vec::new();
    for id in ["r1", "r2", "r3"] {
        theirs.push(addresses(&reference(id, &ns).run("ADD", &conf).ok())[0].clone());
    }
    assert_eq!(theirs, ["10.81.0.2/29", "10.81.0.4/29", "10.81.0.6/29"]);
    reference("r4", &ns).run("ADD", &conf).err_code();
    assert_eq!(fs::read_to_string(dir.join("10.81.0.2")).unwrap(), "r1\r\neth0");

    reference("c1", &ns).run("CHECK", &conf).ok();
    reference("c1", &ns).run("DEL", &conf).ok();
    assert!(!dir.join("10.81.0.3").exists());
    assert!(dir.join("10.81.0.5").exists());
}

/// The reference's state is read and released by cnibox.
#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn cnibox_honours_reference_state() {
    require_root();
    if !have_reference() {
        return;
    }
    let ns = Netns::new("hl");
    let data = TempDir::new("hl");
    let name = unique("net");
    let conf = conf("1.0.0", &name, data.path(), subnet("10.82.0.0/29"));
    let dir = net_dir(&data, &name);
    reference("r1", &ns).env("CNI_ARGS", "IP=10.82.0.3").run("ADD", &conf).ok();
    reference("r2", &ns).env("CNI_ARGS", "IP=10.82.0.5").run("ADD", &conf).ok();
    fs::remove_file(dir.join("last_reserved_ip.0")).unwrap();
    let mut ours = Vec::new();
    for id in ["c1", "c2", "c3"] {
        ours.push(addresses(&call(id, &ns).run("ADD", &conf).ok())[0].clone());
    }
    assert_eq!(ours, ["10.82.0.2/29", "10.82.0.4/29", "10.82.0.6/29"]);
    call("c4", &ns).run("ADD", &conf).err_code();
    // A reservation of the reference counts as the container's own.
    call("r1", &ns).run("ADD", &conf).err_code();
    call("r1", &ns).run("CHECK", &conf).ok();
    call("r1", &ns).run("DEL", &conf).ok();
    assert!(!dir.join("10.82.0.3").exists());
    assert!(dir.join("10.82.0.5").exists());
    // Both write the same bytes.
    assert_eq!(fs::read(dir.join("10.82.0.5")).unwrap(), b"r2\r\neth0");
    assert_eq!(fs::read(dir.join("10.82.0.2")).unwrap(), b"c1\r\neth0");
}

/// `.cnibox-owners` caches who holds each reservation file (by name, inode,
/// size and ctime); it never outranks the files. A file rewritten in place keeps its
/// inode (as one deleted and re-created by another writer may): DEL of the
/// owner the cache names leaves it alone, and DEL of its real owner
/// releases it. A damaged cache is rebuilt.
#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn owners_cache_never_outranks_the_files() {
    require_root();
    let ns = Netns::new("hl");
    let data = TempDir::new("hl");
    let name = unique("net");
    let conf = conf("1.0.0", &name, data.path(), subnet("10.84.0.0/24"));
    let dir = net_dir(&data, &name);
    for id in ["c1", "c2", "c3"] {
        call(id, &ns).run("ADD", &conf).ok();
    }
    let cache = fs::read_to_string(dir.join(".cnibox-owners")).unwrap();
    assert!(cache.lines().any(|l| l.ends_with(" 10.84.0.3 c2 eth0")), "{cache}");

    // Another writer gives c2's address to x9, in place.
    fs::OpenOptions::new().write(true).open(dir.join("10.84.0.3")).unwrap().write_all(b"x9\r\neth0").unwrap();
    call("c2", &ns).run("DEL", &conf).ok();
    assert_eq!(fs::read_to_string(dir.join("10.84.0.3")).unwrap(), "x9\r\neth0");
    call("x9", &ns).run("CHECK", &conf).ok();
    call("x9", &ns).run("DEL", &conf).ok();
    assert!(!dir.join("10.84.0.3").exists());

    fs::write(dir.join(".cnibox-owners"), "garbage\n1 2\n").unwrap();
    assert_eq!(addresses(&call("c4", &ns).run("ADD", &conf).ok()), ["10.84.0.5/24"]);
    call("c1", &ns).run("ADD", &conf).err_code();
    for id in ["c1", "c3", "c4"] {
        call(id, &ns).run("DEL", &conf).ok();
    }
    assert!(reserved_ips(&dir).is_empty());
}

/// Concurrent ADDs from both implementations share the lock.
#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn mixed_concurrent_adds_with_the_reference() {
    require_root();
    if !have_reference() {
        return;
    }
    let ns = Netns::new("hl");
    let data = TempDir::new("hl");
    let name = unique("net");
    let conf = conf("1.0.0", &name, data.path(), subnet("10.83.0.0/24"));
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..30)
            .map(|i| {
                let (ns, conf) = (&ns, &conf);
                s.spawn(move || {
                    let id = format!("m{i}");
                    let c = if i % 2 == 0 { call(&id, ns) } else { reference(&id, ns) };
                    c.run("ADD", conf).ok()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ips: HashSet<String> = results.iter().map(|r| addresses(r)[0].clone()).collect();
    assert_eq!(ips.len(), 30);
    assert_eq!(reserved_ips(&net_dir(&data, &name)).len(), 30);
}

/// Same config, separate stores: the same results as the reference, in every result version.
#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn same_results_as_the_reference() {
    require_root();
    if !have_reference() {
        return;
    }
    let ns = Netns::new("hl");
    let data = TempDir::new("hl");
    let resolv = data.path().join("resolv.conf");
    fs::write(&resolv, "nameserver 10.84.0.53\nsearch example\noptions ndots:3\n").unwrap();
    let ipam = json!({
        "ranges": [[{"subnet": "10.84.0.0/24", "rangeStart": "10.84.0.10", "gateway": "10.84.0.254"}],
                   [{"subnet": "fd00:84::/64"}]],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.84.0.1"}],
        "resolvConf": resolv,
    });
    for version in ["0.3.1", "0.4.0", "1.0.0"] {
        let name = unique("net");
        let ours = conf(version, &name, &data.path().join("ours"), ipam.clone());
        let theirs = conf(version, &name, &data.path().join("theirs"), ipam.clone());
        assert_eq!(call("c1", &ns).run("ADD", &ours).ok(), reference("c1", &ns).run("ADD", &theirs).ok(), "{version}");
    }
    let legacy = json!({"subnet": "10.84.1.0/24", "resolvConf": resolv});
    let name = unique("net");
    let ours = conf("0.2.0", &name, &data.path().join("ours"), legacy.clone());
    let theirs = conf("0.2.0", &name, &data.path().join("theirs"), legacy);
    assert_eq!(call("c1", &ns).run("ADD", &ours).ok(), reference("c1", &ns).run("ADD", &theirs).ok());
}

/// A call that needs no netns of its own: host-local never enters one.
fn without_netns(plugin: &str, id: &str) -> Call {
    Call::new(plugin).container(id, "/proc/self/ns/net", "eth0")
}

/// The owners cache never stands in for another owner's file. cnibox
/// releases A's only address, the reference reserves it for B (on ext4 the
/// new file usually gets A's inode number back, and the reference never
/// touches `.cnibox-owners`), and cnibox's DEL of B must release B's file:
/// were the cache still taken for A, the DEL would succeed, keep the file,
/// and the range would stay full.
#[test]
fn del_releases_a_file_the_reference_made_on_a_released_inode() {
    if !have_reference() {
        return;
    }
    let data = TempDir::new("hl");
    let name = unique("net");
    let one_address =
        json!({"ranges": [[{"subnet": "10.86.0.0/24", "rangeStart": "10.86.0.2", "rangeEnd": "10.86.0.2"}]]});
    let conf = conf("1.0.0", &name, data.path(), one_address);
    let dir = net_dir(&data, &name);

    assert_eq!(addresses(&without_netns("host-local", "A").run("ADD", &conf).ok()), ["10.86.0.2/24"]);
    without_netns("host-local", "A").run("DEL", &conf).ok();
    assert!(reserved_ips(&dir).is_empty());
    assert_eq!(addresses(&without_netns(REFERENCE, "B").run("ADD", &conf).ok()), ["10.86.0.2/24"]);
    without_netns("host-local", "B").run("DEL", &conf).ok();
    assert!(reserved_ips(&dir).is_empty(), "B's reservation survived its DEL");
    // The address is free again for either implementation.
    assert_eq!(addresses(&without_netns("host-local", "C").run("ADD", &conf).ok()), ["10.86.0.2/24"]);
}
