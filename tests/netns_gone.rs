//! DEL and the container's netns: a netns that no longer exists leaves
//! nothing to clean up inside it, and DEL succeeds; a CNI_NETNS that names
//! something else than a netns is an error (code 4), never silently taken
//! as "gone". Either way the host side is cleaned up.
mod common;
mod l2l3;

use common::*;
use l2l3::*;
use serde_json::{json, Value};

/// A regular file, standing in for a CNI_NETNS that is not a namespace.
struct NotANetns {
    dir: TempDir,
}

impl NotANetns {
    fn new() -> NotANetns {
        let dir = TempDir::new("not-a-netns");
        std::fs::write(dir.path().join("netns"), "").unwrap();
        NotANetns { dir }
    }
    fn path(&self) -> String {
        self.dir.path().join("netns").to_str().unwrap().to_string()
    }
}

/// Asserts a DEL failed with a CNI error naming the netns path.
fn assert_refused(reply: Reply, path: &str) {
    let stdout = reply.stdout.clone();
    assert_eq!(reply.err_code(), 4, "{stdout}");
    let err: Value = serde_json::from_str(&stdout).unwrap();
    assert!(err["msg"].as_str().unwrap().contains(path), "{stdout}");
}

/// A veth plugin (bridge, ptp) with host-local IPAM in a fake host.
struct VethNet {
    plugin: &'static str,
    host: Netns,
    data: TempDir,
    conf: String,
}

impl VethNet {
    fn new(plugin: &'static str, subnet: &str, extra: Value) -> VethNet {
        let (host, data, name) = (Netns::new("ngh"), TempDir::new("netns-gone"), unique("ngnet"));
        let conf = net_conf(plugin, &name, host_local(&data, &[subnet], json!([])), extra).to_string();
        let reserved = data.path().join(&name);
        let net = VethNet { plugin, host, data, conf };
        assert!(reserved_ips(&reserved).is_empty());
        net
    }
    fn call(&self, id: &str, netns: &str) -> Call {
        call(self.plugin, &self.host, id, netns, "eth0")
    }
    /// (host veths, IPAM reservations) left in the fake host.
    fn host_state(&self) -> (usize, usize) {
        let name = serde_json::from_str::<Value>(&self.conf).unwrap()["name"].as_str().unwrap().to_string();
        (host_veth_names(&self.host).len(), reserved_ips(&self.data.path().join(name)).len())
    }

    fn del_after_the_netns_is_gone(&self) {
        let c = Netns::new("ngc");
        let gone = c.path();
        self.call("c1", &gone).run("ADD", &self.conf).ok();
        assert_eq!(self.host_state(), (1, 1));
        drop(c);
        assert!(!std::path::Path::new(&gone).exists());
        self.call("c1", &gone).run("DEL", &self.conf).ok();
        assert_eq!(self.host_state(), (0, 0), "{} DEL left the host side behind", self.plugin);
        self.call("c1", &gone).run("DEL", &self.conf).ok();
    }

    fn del_with_a_file_that_is_not_a_netns(&self) {
        let c = Netns::new("ngc");
        self.call("c2", &c.path()).run("ADD", &self.conf).ok();
        let file = NotANetns::new();
        assert_refused(self.call("c2", &file.path()).run("DEL", &self.conf), &file.path());
        // Best effort all the same: the host end took the container's with it.
        assert_eq!(self.host_state(), (0, 0), "{} DEL left the host side behind", self.plugin);
        assert!(!c.try_exec("ip link show eth0"));
        assert_eq!(std::fs::read(file.path()).unwrap(), b"", "the file was written to");
        self.call("c2", &c.path()).run("DEL", &self.conf).ok();
    }
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn bridge() {
    require_root();
    let net = VethNet::new("bridge", "10.241.0.0/24", json!({"bridge": unique("ngbr")}));
    net.del_after_the_netns_is_gone();
    net.del_with_a_file_that_is_not_a_netns();
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn ptp() {
    require_root();
    let net = VethNet::new("ptp", "10.242.0.0/24", json!({}));
    net.del_after_the_netns_is_gone();
    net.del_with_a_file_that_is_not_a_netns();
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn macvlan() {
    require_root();
    let host = Netns::new("ngm");
    host.exec("ip link add m0 type veth peer name m1");
    host.exec("ip link set m0 up");
    let data = TempDir::new("netns-gone-mv");
    let name = unique("ngmv");
    let ipam = host_local(&data, &["10.243.0.0/24"], json!([]));
    let conf = net_conf("macvlan", &name, ipam, json!({"master": "m0"})).to_string();
    let reservations = || reserved_ips(&data.path().join(&name)).len();
    let macvlan = |id: &str, netns: &str| call("macvlan", &host, id, netns, "eth0");

    let c = Netns::new("ngc");
    let gone = c.path();
    macvlan("c1", &gone).run("ADD", &conf).ok();
    drop(c);
    macvlan("c1", &gone).run("DEL", &conf).ok();
    assert_eq!(reservations(), 0);

    let c = Netns::new("ngc");
    macvlan("c2", &c.path()).run("ADD", &conf).ok();
    let file = NotANetns::new();
    assert_refused(macvlan("c2", &file.path()).run("DEL", &conf), &file.path());
    // IPAM goes first, as in the reference; the link could not be reached.
    assert_eq!(reservations(), 0);
    assert!(c.try_exec("ip link show eth0"));
    macvlan("c2", &c.path()).run("DEL", &conf).ok();
    assert!(!c.try_exec("ip link show eth0"));
}

/// Every plugin whose DEL opens the container netns refuses a file that is
/// not one, before anything kernel-specific: so this also covers the
/// plugins whose kernel modules only the VM has (ipvlan, vlan, vrf, dummy).
#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn every_del_that_opens_the_netns_refuses_a_file() {
    require_root();
    let host = Netns::new("ngh");
    let file = NotANetns::new();
    let confs = [
        ("loopback", json!({})),
        ("macvlan", json!({"master": "m0"})),
        ("ipvlan", json!({"master": "m0"})),
        ("vlan", json!({"master": "m0", "vlanId": 7})),
        ("dummy", json!({})),
        ("tap", json!({})),
        ("host-device", json!({"device": "ngdev0"})),
        ("sbr", json!({})),
        ("vrf", json!({"vrfname": "blue"})),
        ("bandwidth", json!({})),
        ("bridge", json!({"bridge": "ngbr0"})),
        ("ptp", json!({})),
    ];
    for (plugin, extra) in confs {
        let mut conf = json!({"cniVersion": "1.0.0", "name": "ng", "type": plugin});
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        let reply = call(plugin, &host, "c1", &file.path(), "eth0").run("DEL", &conf.to_string());
        assert_ne!(reply.code, 0, "{plugin} DEL took a regular file for a gone netns");
        assert_refused(reply, &file.path());
        // And a netns that is gone is no error.
        call(plugin, &host, "c1", "/run/netns/cnibox-netns-gone", "eth0").run("DEL", &conf.to_string()).ok();
    }
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn tuning_keeps_its_backup_for_a_retry() {
    require_root();
    let (host, c) = (Netns::new("ngh"), Netns::new("ngc"));
    host.exec(&format!("ip link add ngv0 type veth peer name eth0 netns {}", c.name));
    let data = TempDir::new("netns-gone-tu");
    let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": c.path()}]});
    let conf = json!({"cniVersion": "1.0.0", "name": "ng", "type": "tuning", "mtu": 1300,
                      "dataDir": data.path(), "prevResult": prev})
    .to_string();
    let tuning = |netns: &str| call("tuning", &host, "c1", netns, "eth0");
    tuning(&c.path()).run("ADD", &conf).ok();
    let backups = || std::fs::read_dir(data.path()).unwrap().count();
    assert_eq!(backups(), 1);
    let file = NotANetns::new();
    assert_refused(tuning(&file.path()).run("DEL", &conf), &file.path());
    assert_eq!(backups(), 1, "the backup went before it was restored");
    tuning(&c.path()).run("DEL", &conf).ok();
    assert_eq!(backups(), 0);
    assert!(!c.exec("ip link show eth0").contains("mtu 1300"));
}
