//! flannel: subnet.env → delegate (bridge + host-local), saved per container
//! so DEL works after the lease file is gone.

mod common;
mod netfixture;
use common::*;

use serde_json::{json, Value};

const REFERENCE: &str = "/usr/lib/cni";

struct Lease {
    dir: TempDir,
    net: String,
    bridge: String,
    octet: u32,
}

impl Lease {
    fn new() -> Lease {
        let lease = Lease { dir: TempDir::new("flannel"), net: unique("fl"), bridge: unique("fb"), octet: 0 };
        Lease { octet: 100 + (std::process::id() + lease.net.len() as u32) % 100, ..lease }
    }
    fn subnet_file(&self) -> std::path::PathBuf {
        self.dir.path().join("subnet.env")
    }
    fn write_env(&self) {
        let o = self.octet;
        std::fs::write(
            self.subnet_file(),
            format!(
                "FLANNEL_NETWORK=10.{o}.0.0/16\nFLANNEL_SUBNET=10.{o}.5.1/24\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=true\n"
            ),
        )
        .unwrap();
    }
    fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }
    fn ipam_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("ipam")
    }
    fn conf(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": self.net,
            "type": "flannel",
            "subnetFile": self.subnet_file(),
            "dataDir": self.data_dir(),
            "delegate": {"bridge": self.bridge},
            "ipam": {"dataDir": self.ipam_dir()},
        })
    }
}

fn call(host: &Netns, id: &str, ctr: &str) -> Call {
    let path = format!("{}:{REFERENCE}", plugin_dir().display());
    Call::new("flannel").container(id, ctr, "eth0").in_netns(host).env("CNI_PATH", &path)
}

/// The same, with the reference plugins first in CNI_PATH (the delegate is
/// then run as a separate process).
fn call_reference(host: &Netns, id: &str, ctr: &str) -> Call {
    call(host, id, ctr).env("CNI_PATH", &format!("{REFERENCE}:{}", plugin_dir().display()))
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn add_check_and_del_after_the_lease_is_gone() {
    require_root();
    let lease = Lease::new();
    lease.write_env();
    let host = Netns::new("fh");
    let ctr = Netns::new("fc");
    let id = unique("ctr");
    let conf = lease.conf("1.0.0");
    let call = call(&host, &id, &ctr.path());
    let result = call.run("ADD", &conf.to_string()).ok();
    let o = lease.octet;
    assert_eq!(result["ips"][0]["address"], format!("10.{o}.5.2/24"), "{result}");
    let link = ctr.exec("ip link show eth0");
    assert!(link.contains("mtu 1400"), "{link}");
    assert!(ctr.exec("ip route").contains(&format!("10.{o}.0.0/16 via 10.{o}.5.1")));
    assert!(host.exec(&format!("ip addr show {}", lease.bridge)).contains(&format!("10.{o}.5.1/24")));
    let saved: Value = serde_json::from_slice(&std::fs::read(lease.data_dir().join(&id)).unwrap()).unwrap();
    assert_eq!(saved["type"], "bridge");
    assert_eq!(saved["ipMasq"], false);
    assert_eq!(saved["ipam"]["ranges"][0][0]["subnet"], format!("10.{o}.5.0/24"));
    let reservation = lease.ipam_dir().join(&lease.net).join(format!("10.{o}.5.2"));
    assert!(reservation.exists());

    let mut check = conf.clone();
    check["prevResult"] = result.clone();
    call.run("CHECK", &check.to_string()).ok();

    // flanneld went away (or changed the lease): DEL uses the saved config.
    std::fs::remove_file(lease.subnet_file()).unwrap();
    call.run("DEL", &conf.to_string()).ok();
    assert!(!ctr.try_exec("ip link show eth0"));
    assert!(!reservation.exists());
    assert!(!lease.data_dir().join(&id).exists());
    // DEL with nothing saved succeeds; CHECK says the container is unknown.
    call.run("DEL", &conf.to_string()).ok();
    assert_eq!(call.run("CHECK", &check.to_string()).err_code(), 3);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn add_without_a_lease_fails_cleanly() {
    require_root();
    let lease = Lease::new();
    let host = Netns::new("fh");
    let ctr = Netns::new("fc");
    let id = unique("ctr");
    let call = call(&host, &id, &ctr.path());
    let code = call.run("ADD", &lease.conf("1.0.0").to_string()).err_code();
    assert_eq!(code, 5);
    assert!(!lease.data_dir().join(&id).exists());
    // STATUS says flannel is not ready yet.
    assert_eq!(call.run("STATUS", &lease.conf("1.1.0").to_string()).err_code(), 50);
    // A broken lease file is named.
    std::fs::write(lease.subnet_file(), "FLANNEL_NETWORK=10.0.0.0/8\n").unwrap();
    let reply = call.run("ADD", &lease.conf("1.0.0").to_string());
    assert!(reply.stdout.contains("FLANNEL_SUBNET"), "{}", reply.stdout);
    assert_eq!(reply.err_code(), 7);
    // A delegate that fails: its error comes back, and its config is kept
    // for the runtime's DEL, which reaches the delegate (as the reference's
    // delegateAdd does) and then drops it.
    lease.write_env();
    let bin = TempDir::new("fbin");
    let log = bin.path().join("calls");
    let delegate = bin.path().join("flaky");
    std::fs::write(
        &delegate,
        format!(
            "#!/bin/sh\necho $CNI_COMMAND >> {}\n[ $CNI_COMMAND = ADD ] || exit 0\n\
             echo '{{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"flaky\"}}'\nexit 1\n",
            log.display()
        ),
    )
    .unwrap();
    sh(&format!("chmod +x {}", delegate.display()));
    let call = call.env("CNI_PATH", &format!("{}:{}", bin.path().display(), plugin_dir().display()));
    let mut conf = lease.conf("1.0.0");
    conf["delegate"] = json!({"type": "flaky"});
    assert_eq!(call.run("ADD", &conf.to_string()).err_code(), 11);
    assert!(lease.data_dir().join(&id).exists());
    call.run("DEL", &conf.to_string()).ok();
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "ADD\nDEL\n");
    assert!(!lease.data_dir().join(&id).exists());
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn check_is_forwarded_to_the_delegate() {
    require_root();
    let lease = Lease::new();
    lease.write_env();
    let host = Netns::new("fh");
    let ctr = Netns::new("fc");
    ctr.exec("ip link set lo down");
    let id = unique("ctr");
    let mut conf = lease.conf("1.0.0");
    conf["delegate"] = json!({"type": "loopback"});
    let call = call(&host, &id, &ctr.path());
    let result = call.run("ADD", &conf.to_string()).ok();
    assert!(ctr.exec("ip link show lo").contains(",UP"));
    conf["prevResult"] = result;
    call.run("CHECK", &conf.to_string()).ok();
    ctr.exec("ip link set lo down");
    call.run("CHECK", &conf.to_string()).err_code();
    call.run("DEL", &conf.to_string()).ok();
    assert!(!lease.data_dir().join(&id).exists());
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn gc_and_status_reach_the_delegate_and_prune_saved_configs() {
    require_root();
    let lease = Lease::new();
    lease.write_env();
    let host = Netns::new("fh");
    let (ctr1, ctr2) = (Netns::new("fc"), Netns::new("fc"));
    let (id1, id2) = (unique("ctr"), unique("ctr"));
    let mut conf = lease.conf("1.1.0");
    conf["delegate"] = json!({"type": "loopback"});
    call(&host, &id1, &ctr1.path()).run("ADD", &conf.to_string()).ok();
    call(&host, &id2, &ctr2.path()).run("ADD", &conf.to_string()).ok();
    assert!(lease.data_dir().join(&id1).exists() && lease.data_dir().join(&id2).exists());

    // Another network's saved config in the same data dir is left alone.
    let foreign = lease.data_dir().join("other-container");
    std::fs::write(&foreign, r#"{"name":"another-net","type":"loopback"}"#).unwrap();
    let gc = Call::new("flannel").in_netns(&host).env("CNI_PATH", &format!("{}:{REFERENCE}", plugin_dir().display()));
    let mut gc_conf = conf.clone();
    gc_conf["cni.dev/valid-attachments"] = json!([{"containerID": id1, "ifname": "eth0"}]);
    gc.run("GC", &gc_conf.to_string()).ok();
    assert!(lease.data_dir().join(&id1).exists());
    assert!(!lease.data_dir().join(&id2).exists(), "the saved config of a gone attachment is pruned");
    assert!(foreign.exists());

    gc.run("STATUS", &conf.to_string()).ok();
    std::fs::remove_file(lease.subnet_file()).unwrap();
    assert_eq!(gc.run("STATUS", &conf.to_string()).err_code(), 50);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn the_reference_bridge_as_delegate() {
    require_root();
    let lease = Lease::new();
    lease.write_env();
    let host = Netns::new("fh");
    let ctr = Netns::new("fc");
    let id = unique("ctr");
    let conf = lease.conf("1.0.0").to_string();
    let call = call_reference(&host, &id, &ctr.path());
    let result = call.run("ADD", &conf).ok();
    assert_eq!(result["ips"][0]["address"], format!("10.{}.5.2/24", lease.octet), "{result}");
    assert!(ctr.exec("ip link show eth0").contains("mtu 1400"));
    std::fs::remove_file(lease.subnet_file()).unwrap();
    call.run("DEL", &conf).ok();
    assert!(!ctr.try_exec("ip link show eth0"));
    assert!(!lease.data_dir().join(&id).exists());
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn two_containers_reach_each_other() {
    require_root();
    let lease = Lease::new();
    lease.write_env();
    let host = Netns::new("fh");
    let (c1, c2) = (Netns::new("fc"), Netns::new("fc"));
    let conf = lease.conf("1.0.0").to_string();
    let cni_path = plugin_dir().display().to_string();
    let call = |id: &str, ns: &Netns| {
        Call::new("flannel").container(id, &ns.path(), "eth0").in_netns(&host).env("CNI_PATH", &cni_path)
    };
    let (id1, id2) = (unique("ctr"), unique("ctr"));
    let r1 = call(&id1, &c1).run("ADD", &conf).ok();
    let r2 = call(&id2, &c2).run("ADD", &conf).ok();
    let ip = |r: &Value| r["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
    netfixture::serve(&c2.name, 7070, "c2");
    assert_eq!(netfixture::tcp_get(&c1.name, &format!("{}:7070", ip(&r2))).as_deref(), Some("c2"));
    netfixture::serve(&c1.name, 7070, "c1");
    assert_eq!(netfixture::tcp_get(&c2.name, &format!("{}:7070", ip(&r1))).as_deref(), Some("c1"));
    // DEL after flanneld is gone still cleans up both.
    std::fs::remove_file(lease.subnet_file()).unwrap();
    call(&id1, &c1).run("DEL", &conf).ok();
    call(&id2, &c2).run("DEL", &conf).ok();
    assert!(!host.exec("ip -br link").contains("veth"));
}
