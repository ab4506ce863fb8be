//! Helpers shared by the bridge and ptp tests: configs, and TCP probes run
//! from threads inside a test's namespaces (no ping or nc needed).
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

/// A plugin call for one container, run inside the fake host netns.
pub fn call(plugin: &str, host: &Netns, id: &str, netns: &str, ifname: &str) -> Call {
    Call::new(plugin).container(id, netns, ifname).in_netns(host).env("CNI_PATH", &cni_path())
}

/// A host-local IPAM section storing under `data`.
pub fn host_local(data: &TempDir, subnets: &[&str], routes: Value) -> Value {
    let ranges: Vec<Value> = subnets.iter().map(|s| json!([{ "subnet": s }])).collect();
    json!({"type": "host-local", "dataDir": data.path(), "ranges": ranges, "routes": routes})
}

/// A network config: `plugin` with `name`, `ipam` and the extra keys.
pub fn net_conf(plugin: &str, name: &str, ipam: Value, extra: Value) -> Value {
    let mut conf = json!({"cniVersion": "1.0.0", "name": name, "type": plugin, "ipam": ipam});
    for (k, v) in extra.as_object().unwrap() {
        conf[k] = v.clone();
    }
    conf
}

/// The address of the result's `n`th IP, without prefix.
pub fn result_ip(result: &Value, n: usize) -> IpAddr {
    let s = result["ips"][n]["address"].as_str().unwrap();
    s.split('/').next().unwrap().parse().unwrap()
}

/// A TCP listener bound inside a netns.
pub struct Listener {
    pub addr: SocketAddr,
    sock: TcpListener,
}

impl Listener {
    pub fn new(ns: &Netns, ip: IpAddr) -> Listener {
        let sock = in_ns(&ns.name, || TcpListener::bind(SocketAddr::new(ip, 0)).unwrap());
        Listener { addr: sock.local_addr().unwrap(), sock }
    }
    /// The source address of the next connection (call after a successful connect).
    pub fn peer(&self) -> IpAddr {
        self.sock.accept().unwrap().1.ip()
    }
}

/// Whether a TCP connection from inside `ns` to `to` succeeds.
pub fn connects(ns: &Netns, to: SocketAddr) -> bool {
    in_ns(&ns.name, || TcpStream::connect_timeout(&to, Duration::from_secs(3)).is_ok())
}

/// Connects from `ns` to a fresh listener at `ip` in `target`; returns the
/// source address the listener saw, or None when it could not connect.
pub fn probe(from: &Netns, target: &Netns, ip: IpAddr) -> Option<IpAddr> {
    let l = Listener::new(target, ip);
    connects(from, l.addr).then(|| l.peer())
}

/// The veths of `ns` named like the host ends the plugins make (`veth...`).
pub fn host_veth_names(ns: &Netns) -> Vec<String> {
    ns.exec("ip -o link show type veth")
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap().to_string())
        .filter(|n| n.starts_with("veth"))
        .collect()
}
