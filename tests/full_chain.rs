//! The full chain a node runs (bridge + host-local, portmap, firewall,
//! bandwidth, tuning), driven by cnibox's own runtime (`cnibox cnitool`)
//! through the installed links: ADD, CHECK, traffic, DEL, nothing left.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Rate of the bandwidth plugin in both directions: 8 Mbit/s (1 MB/s).
const RATE_BITS: u64 = 8_000_000;
const BURST_BITS: u64 = 400_000;
const HOST_PORT: u16 = 8080;

/// A fake node: the host netns, an outside machine on the host's network,
/// and the directories a runtime keeps.
struct Node {
    host: Netns,
    outside: Netns,
    conf_dir: TempDir,
    cache: TempDir,
    data: TempDir,
    network: String,
}

impl Node {
    fn new() -> Node {
        let host = Netns::new("fch");
        let outside = Netns::new("fco");
        let link = unique("fcv");
        host.exec(&format!("ip link add {link} type veth peer name eth9 netns {}", outside.name));
        host.exec(&format!("ip addr add 10.250.0.1/24 dev {link}"));
        host.exec(&format!("ip link set {link} up"));
        outside.exec("ip addr add 10.250.0.2/24 dev eth9");
        outside.exec("ip link set eth9 up");
        outside.exec("ip route add default via 10.250.0.1");
        let node = Node {
            host,
            outside,
            conf_dir: TempDir::new("fc-conf"),
            cache: TempDir::new("fc-cache"),
            data: TempDir::new("fc-data"),
            network: unique("fcnet"),
        };
        let conflist = json!({
            "cniVersion": "1.0.0",
            "name": node.network,
            "plugins": [
                {"type": "bridge", "bridge": unique("fcbr"), "isGateway": true, "ipMasq": true, "hairpinMode": true,
                 "ipam": {"type": "host-local", "dataDir": node.data.path().join("ipam"),
                          "ranges": [[{"subnet": "10.251.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
                {"type": "portmap", "capabilities": {"portMappings": true}},
                {"type": "firewall"},
                {"type": "bandwidth", "ingressRate": RATE_BITS, "ingressBurst": BURST_BITS,
                 "egressRate": RATE_BITS, "egressBurst": BURST_BITS},
                {"type": "tuning", "dataDir": node.data.path().join("tuning"),
                 "sysctl": {"net.ipv4.conf.IFNAME.arp_notify": "1"}}
            ]
        });
        std::fs::write(node.conf_dir.path().join("10-chain.conflist"), conflist.to_string()).unwrap();
        node
    }

    /// `cnibox cnitool VERB NETWORK NETNS` run inside the fake host, as a runtime would.
    fn cnitool(&self, verb: &str, container: &Netns, cap_args: &Value) -> Value {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.host.name])
            .arg(plugin_dir().join("cnitool"))
            .args([verb, &self.network, &container.path()])
            .env("NETCONFPATH", self.conf_dir.path())
            .env("CNI_PATH", plugin_dir())
            .env("CNI_CACHE_DIR", self.cache.path())
            .env("CAP_ARGS", cap_args.to_string())
            // Never the real host's system bus (the firewall plugin looks for firewalld there).
            .env("DBUS_SYSTEM_BUS_ADDRESS", NO_SYSTEM_BUS)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cnitool {verb} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }
}

fn container_ip(result: &Value) -> String {
    result["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string()
}

/// A minimal HTTP server inside `ns` on port 80, answering every request.
fn serve_http(ns: &str, body: &'static str) {
    let listener = in_ns(ns, || TcpListener::bind("0.0.0.0:80").unwrap());
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut request = Vec::new();
            let mut buf = [0u8; 512];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(conn, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        }
    });
}

/// An HTTP GET from inside `ns`; the response, or None.
fn http_get(ns: &str, addr: &str) -> Option<String> {
    in_ns(ns, || {
        let mut conn = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(3)).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
        conn.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
        let mut response = String::new();
        conn.read_to_string(&mut response).ok()?;
        Some(response)
    })
}

/// Sends `bytes` from `from` to a receiver in `to` (at `to_ip`) and returns
/// the rate the receiver saw, in bits per second.
fn transfer_rate(from: &str, to: &str, to_ip: &str, bytes: usize) -> f64 {
    let listener = in_ns(to, || TcpListener::bind("0.0.0.0:5001").unwrap());
    let receiver = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let start = Instant::now();
        let mut buf = vec![0u8; 65536];
        let mut got = 0usize;
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 {
                break;
            }
            got += n;
        }
        (got, start.elapsed())
    });
    let addr = format!("{to_ip}:5001");
    in_ns(from, || {
        let mut conn = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(3)).unwrap();
        conn.write_all(&vec![0x5a; bytes]).unwrap();
    });
    let (got, elapsed) = receiver.join().unwrap();
    assert_eq!(got, bytes);
    got as f64 * 8.0 / elapsed.as_secs_f64()
}

fn assert_near_rate(rate: f64, what: &str) {
    let (low, high) = (RATE_BITS as f64 * 0.75, RATE_BITS as f64 * 1.25);
    assert!(
        (low..=high).contains(&rate),
        "{what}: {:.2} Mbit/s, configured {} Mbit/s",
        rate / 1e6,
        RATE_BITS / 1_000_000
    );
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn full_chain_add_check_traffic_del() {
    require_root();
    let node = Node::new();
    let c1 = Netns::new("fc1");
    let c2 = Netns::new("fc2");
    let mapping = json!({"portMappings": [{"hostPort": HOST_PORT, "containerPort": 80, "protocol": "tcp"}]});
    let r1 = node.cnitool("add", &c1, &mapping);
    node.cnitool("add", &c2, &json!({}));
    let ip1 = container_ip(&r1);
    node.cnitool("check", &c1, &mapping);
    node.cnitool("check", &c2, &json!({}));

    // tuning and bandwidth show up in the kernel.
    assert_eq!(c1.exec("cat /proc/sys/net/ipv4/conf/eth0/arp_notify").trim(), "1");
    let qdiscs = node.host.exec("tc qdisc show");
    assert!(qdiscs.contains("tbf"), "{qdiscs}");
    assert!(node.host.exec("ip -br link").contains("bwp"), "no ifb for egress shaping");

    // The container's HTTP server answers through the host port from the
    // fake host, from another machine on the host's network, and from a
    // neighbour on the same bridge (hairpin).
    serve_http(&c1.name, "hello from c1");
    let via_host_port = format!("10.250.0.1:{HOST_PORT}");
    for (who, ns) in [("the host", &node.host), ("the outside", &node.outside), ("a neighbour", &c2)] {
        let response = http_get(&ns.name, &via_host_port).unwrap_or_else(|| panic!("no answer from {who}"));
        assert!(response.starts_with("HTTP/1.0 200 OK") && response.ends_with("hello from c1"), "{who}: {response}");
    }

    // Both directions run at the configured rate, within 25%.
    let bytes = 2_000_000;
    assert_near_rate(transfer_rate(&node.host.name, &c1.name, &ip1, bytes), "toward the container (ingress)");
    assert_near_rate(transfer_rate(&c1.name, &node.host.name, "10.250.0.1", bytes), "from the container (egress)");

    node.cnitool("del", &c1, &mapping);
    node.cnitool("del", &c2, &json!({}));
    assert!(http_get(&node.outside.name, &via_host_port).is_none(), "the host port still answers after DEL");
    let links = node.host.exec("ip -br link");
    assert!(!links.contains("veth") && !links.contains("bwp"), "links left after DEL:\n{links}");
    let ruleset = node.host.exec("nft list ruleset");
    for id in [&c1.name, &c2.name] {
        assert!(!ruleset.contains(id.as_str()), "nft still mentions {id}:\n{ruleset}");
    }
    assert!(!ruleset.contains(&ip1), "nft still mentions {ip1}:\n{ruleset}");
    let reservations = std::fs::read_dir(node.data.path().join("ipam").join(&node.network))
        .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("10.")).count())
        .unwrap_or(0);
    assert_eq!(reservations, 0);
    let backups = std::fs::read_dir(node.data.path().join("tuning")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(backups, 0, "tuning backups left");
}
