//! A fake node for the meta plugins' tests, built with `ip` alone (so they
//! do not depend on the bridge plugin): a "host" netns with a linux bridge
//! holding the gateway addresses, containers on veth ports (hairpin on, as
//! the bridge plugin's hairpinMode sets), and an "outside" netns standing in
//! for another machine on the host's network. Plus tiny TCP/UDP servers and
//! clients that run on threads inside a netns.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use crate::common::*;

/// Serves `reply` on TCP and UDP port `port` (both families) inside `ns`
/// until the process ends.
pub fn serve(ns: &str, port: u16, reply: &str) {
    let (tcp, udp) = in_ns(ns, || (TcpListener::bind(("::", port)).unwrap(), UdpSocket::bind(("::", port)).unwrap()));
    let r = reply.to_string();
    std::thread::spawn(move || {
        for mut conn in tcp.incoming().flatten() {
            let _ = conn.write_all(r.as_bytes());
        }
    });
    let r = reply.to_string();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((_, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(r.as_bytes(), from);
        }
    });
}

/// Serves, on TCP port `port` inside `ns`, the address each client comes from.
pub fn serve_peer(ns: &str, port: u16) {
    let tcp = in_ns(ns, || TcpListener::bind(("::", port)).unwrap());
    std::thread::spawn(move || {
        for mut conn in tcp.incoming().flatten() {
            let peer = conn.peer_addr().map(|a| a.ip().to_canonical().to_string()).unwrap_or_default();
            let _ = conn.write_all(peer.as_bytes());
        }
    });
}

/// What a TCP connection from `ns` to `addr` reads, or None.
pub fn tcp_get(ns: &str, addr: &str) -> Option<String> {
    let addr: SocketAddr = addr.parse().unwrap();
    in_ns(ns, || {
        let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut s = String::new();
        c.read_to_string(&mut s).ok()?;
        (!s.is_empty()).then_some(s)
    })
}

/// The UDP answer from `addr` to a datagram sent from `ns`, or None.
pub fn udp_get(ns: &str, addr: &str) -> Option<String> {
    let addr: SocketAddr = addr.parse().unwrap();
    in_ns(ns, || {
        let any = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let s = UdpSocket::bind(any).ok()?;
        s.set_read_timeout(Some(Duration::from_millis(1500))).ok()?;
        s.send_to(b"ping", addr).ok()?;
        let mut buf = [0u8; 64];
        let (n, _) = s.recv_from(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}

/// Addresses usable at once: no duplicate address detection (link-local
/// addresses would stay tentative for a while otherwise).
pub fn no_dad(ns: Netns) -> Netns {
    ns.exec("sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0");
    ns
}

/// The fake node.
pub struct Node {
    pub host: Netns,
    pub outside: Netns,
    /// Host address on the outside link, and the outside machine's.
    pub host_ip: &'static str,
    pub host_ip6: &'static str,
    pub outside_ip: &'static str,
}

pub struct Container {
    pub ns: Netns,
    pub id: String,
    pub ip: String,
    pub ip6: String,
    pub bridge: String,
    pub mac: String,
}

impl Node {
    pub fn new() -> Node {
        let host = no_dad(Netns::new("mh"));
        let outside = no_dad(Netns::new("mo"));
        host.exec("sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1");
        sh(&format!("ip -n {} link add up0 type veth peer name eth0 netns {}", host.name, outside.name));
        host.exec("ip addr add 192.168.77.1/24 dev up0");
        host.exec("ip addr add fd77::1/64 dev up0 nodad");
        host.exec("ip link set up0 up");
        outside.exec("ip addr add 192.168.77.2/24 dev eth0");
        outside.exec("ip addr add fd77::2/64 dev eth0 nodad");
        outside.exec("ip link set eth0 up");
        outside.exec("ip route add default via 192.168.77.1");
        outside.exec("ip -6 route add default via fd77::1");
        Node { host, outside, host_ip: "192.168.77.1", host_ip6: "fd77::1", outside_ip: "192.168.77.2" }
    }

    /// A bridge `name` with gateway 10.<n>.0.1/24 and fd<n>::1/64.
    pub fn bridge(&self, name: &str, n: u8) {
        self.host.exec(&format!("ip link add {name} type bridge"));
        self.host.exec(&format!("ip addr add 10.{n}.0.1/24 dev {name}"));
        self.host.exec(&format!("ip addr add fd{n:02x}::1/64 dev {name} nodad"));
        self.host.exec(&format!("ip link set {name} up"));
    }

    /// A container on bridge `bridge` (subnet `n`) with host part `host`.
    pub fn container(&self, bridge: &str, n: u8, host: u8) -> Container {
        let ns = no_dad(Netns::new("mc"));
        let port = format!("v{n}x{host}");
        sh(&format!("ip -n {} link add {port} type veth peer name eth0 netns {}", self.host.name, ns.name));
        self.host.exec(&format!("ip link set {port} master {bridge}"));
        self.host.exec(&format!("ip link set {port} up"));
        self.host.exec(&format!("bridge link set dev {port} hairpin on"));
        let ip = format!("10.{n}.0.{host}");
        let ip6 = format!("fd{n:02x}::{host:x}");
        ns.exec(&format!("ip addr add {ip}/24 dev eth0"));
        ns.exec(&format!("ip addr add {ip6}/64 dev eth0 nodad"));
        ns.exec("ip link set eth0 up");
        ns.exec(&format!("ip route add default via 10.{n}.0.1"));
        ns.exec(&format!("ip -6 route add default via fd{n:02x}::1"));
        let mac = ns.exec("cat /sys/class/net/eth0/address").trim().to_string();
        Container { id: unique("ctr"), ns, ip, ip6, bridge: bridge.to_string(), mac }
    }
}

impl Container {
    /// The prevResult a bridge plugin would have returned.
    pub fn prev_result(&self, n: u8) -> serde_json::Value {
        serde_json::json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": self.bridge, "mac": "00:00:00:00:00:01"},
                {"name": "eth0", "mac": self.mac, "sandbox": self.ns.path()}
            ],
            "ips": [
                {"address": format!("{}/24", self.ip), "gateway": format!("10.{n}.0.1"), "interface": 1},
                {"address": format!("{}/64", self.ip6), "gateway": format!("fd{n:02x}::1"), "interface": 1}
            ]
        })
    }
}
