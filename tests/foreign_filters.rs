//! The firewall plugin opening the way through other packet filters of the
//! node: a hardened nftables forward chain (policy drop, a final drop, or
//! jumps that end in a reject) in a table cnibox
//! does not own, and firewalld (run inside the fake host with a private
//! system bus). In each case a pod on a bridge (isGateway, ipMasq) +
//! firewall network reaches a machine beyond the fake host, a pod of a
//! bridge-only network does not (so the filter really drops), and DEL
//! takes back exactly what ADD opened.

mod common;
mod netfixture;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use netfixture::{serve, tcp_get};
use serde_json::{json, Value};

const OUTSIDE_IP: &str = "10.254.0.2";
const OUTSIDE_PORT: u16 = 8081;
/// The fw network's pods map it to their port 80.
const HOST_PORT: u16 = 8091;

/// A fake node: the host netns with an uplink to an outside machine, and
/// two networks: `fw` (bridge + firewall) and `plain` (bridge alone).
struct Node {
    host: Netns,
    /// Kept for its lifetime: serves OUTSIDE_PORT.
    _outside: Netns,
    conf_dir: TempDir,
    cache: TempDir,
    data: TempDir,
    fw: String,
    plain: String,
    /// Where plugins look for the system bus.
    bus: String,
}

impl Node {
    fn new() -> Node {
        let host = Netns::new("ffh");
        let outside = Netns::new("ffo");
        host.exec("sysctl -qw net.ipv4.ip_forward=1");
        let link = unique("ffv");
        host.exec(&format!("ip link add {link} type veth peer name eth9 netns {}", outside.name));
        host.exec(&format!("ip addr add 10.254.0.1/24 dev {link}"));
        host.exec(&format!("ip link set {link} up"));
        outside.exec(&format!("ip addr add {OUTSIDE_IP}/24 dev eth9"));
        outside.exec("ip link set eth9 up");
        outside.exec("ip route add default via 10.254.0.1");
        serve(&outside.name, OUTSIDE_PORT, "outside");
        let node = Node {
            host,
            _outside: outside,
            conf_dir: TempDir::new("ff-conf"),
            cache: TempDir::new("ff-cache"),
            data: TempDir::new("ff-data"),
            fw: unique("fffw"),
            plain: unique("ffpl"),
            bus: NO_SYSTEM_BUS.to_string(),
        };
        node.write_conflist(&node.fw, 1, true);
        node.write_conflist(&node.plain, 2, false);
        node
    }

    fn write_conflist(&self, name: &str, subnet: u8, firewall: bool) {
        let mut plugins = vec![json!({
            "type": "bridge", "bridge": unique("ffb"), "isGateway": true, "ipMasq": true,
            "ipam": {"type": "host-local", "dataDir": self.data.path().join(name),
                     "ranges": [[{"subnet": format!("10.254.{subnet}.0/24")}]], "routes": [{"dst": "0.0.0.0/0"}]}
        })];
        if firewall {
            // portmap too: a host port must be reachable from the outside machine.
            plugins.push(json!({"type": "portmap", "capabilities": {"portMappings": true}}));
            plugins.push(json!({"type": "firewall"}));
        }
        let conflist = json!({"cniVersion": "1.0.0", "name": name, "plugins": plugins});
        std::fs::write(self.conf_dir.path().join(format!("{name}.conflist")), conflist.to_string()).unwrap();
    }

    /// `cnibox cnitool VERB NETWORK NETNS` inside the fake host.
    fn cnitool(&self, verb: &str, network: &str, container: &Netns) -> Value {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.host.name])
            .arg(plugin_dir().join("cnitool"))
            .args([verb, network, &container.path()])
            .env("NETCONFPATH", self.conf_dir.path())
            .env("CNI_PATH", plugin_dir())
            .env("CNI_CACHE_DIR", self.cache.path())
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus)
            .env("CAP_ARGS", json!({"portMappings": [{"hostPort": HOST_PORT, "containerPort": 80}]}).to_string())
            .output()
            .unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "cnitool {verb} {network}: {stdout}\n{stderr}");
        if stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&stdout).unwrap()
        }
    }

    /// A pod of `network`: its netns and IPv4 address.
    fn pod(&self, network: &str) -> (Netns, String) {
        let pod = Netns::new("ffc");
        let result = self.cnitool("add", network, &pod);
        let addr = result["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
        (pod, addr)
    }

    fn reaches_outside(&self, pod: &Netns) -> bool {
        tcp_get(&pod.name, &format!("{OUTSIDE_IP}:{OUTSIDE_PORT}")).as_deref() == Some("outside")
    }

    /// Whether the outside machine reaches `pod` (serving "pod" on port 80)
    /// through the host port.
    fn reached_from_outside(&self, pod: &Netns) -> bool {
        serve(&pod.name, 80, "pod");
        tcp_get(&self._outside.name, &format!("10.254.0.1:{HOST_PORT}")).as_deref() == Some("pod")
    }
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn hardened_forward_chain_is_opened_and_restored() {
    require_root();
    let node = Node::new();
    node.host.exec(
        "nft -f - <<'EOF'
table inet filter {
    chain forward {
        type filter hook forward priority 0; policy drop;
        ct state invalid counter drop
    }
}
table ip hardened {
    chain forward {
        type filter hook forward priority 5; policy accept;
        ct state invalid drop
        counter drop
    }
}
table inet layered {
    chain forward {
        type filter hook forward priority 10; policy accept;
        jump user-forward
    }
    chain user-forward {
        tcp dport 22 accept
        goto reject-forward
    }
    chain reject-forward {
        reject
    }
}
EOF",
    );
    let tables = || {
        ["inet filter", "ip hardened", "inet layered"]
            .map(|t| node.host.exec(&format!("nft -a list table {t}")))
            .concat()
    };
    let before = tables();

    let (plain_pod, _) = node.pod(&node.plain);
    assert!(!node.reaches_outside(&plain_pod), "the drop policy must hold for a pod without the firewall plugin");

    let (pod, addr) = node.pod(&node.fw);
    assert!(node.reaches_outside(&pod), "{}", node.host.exec("nft list ruleset"));
    assert!(node.reached_from_outside(&pod), "{}", node.host.exec("nft list ruleset"));
    let forward = node.host.exec("nft list chain inet filter forward");
    assert!(forward.contains(&format!("ip saddr {addr} accept")), "{forward}");
    assert!(forward.contains(&format!("ip daddr {addr} ct state established,related accept")), "{forward}");
    assert!(forward.contains(&node.fw), "the accepts carry the owner comment: {forward}");
    // Ours go first, the operator's own rule stays after them.
    let position = |text: &str| forward.find(text).unwrap_or_else(|| panic!("{text} missing: {forward}"));
    assert!(position(&format!("ip saddr {addr} accept")) < position("ct state invalid"), "{forward}");
    // A chain ending in an unconditional drop is opened too.
    let hardened = node.host.exec("nft list chain ip hardened forward");
    assert!(hardened.contains(&format!("ip saddr {addr} accept")), "{hardened}");
    // And one whose last rules lead, unconditionally, to a reject.
    let layered = node.host.exec("nft list chain inet layered forward");
    assert!(layered.contains(&format!("ip saddr {addr} accept")), "{layered}");
    node.cnitool("check", &node.fw, &pod);

    node.cnitool("del", &node.fw, &pod);
    node.cnitool("del", &node.plain, &plain_pod);
    assert_eq!(tables(), before);
    // DEL again: nothing to do, nothing changes.
    node.cnitool("del", &node.fw, &pod);
    assert_eq!(tables(), before);
}

/// A child process (daemon) killed and reaped on drop.
struct Daemon {
    child: Child,
    name: &'static str,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGTERM: firewalld cleans up its tables (its netns goes anyway).
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop on SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private system bus: root may own and call anything. It listens on a
/// socket in `dir`; nothing else uses it.
fn private_bus(dir: &Path) -> (Daemon, String) {
    let socket = dir.join("system_bus_socket");
    let config = dir.join("bus.conf");
    std::fs::write(
        &config,
        format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="root"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
            socket.display()
        ),
    )
    .unwrap();
    let child = Command::new("dbus-daemon")
        .arg(format!("--config-file={}", config.display()))
        .args(["--nofork", "--nopidfile"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dbus-daemon (scripts/deps.sh installs it)");
    let daemon = Daemon { child, name: "dbus-daemon" };
    wait_for(Duration::from_secs(10), "the private bus", || socket.exists());
    (daemon, format!("unix:path={}", socket.display()))
}

/// firewalld inside the fake host, on the private bus, with its system
/// configuration in `dir` (the package's defaults from /usr/lib/firewalld;
/// the real host's /etc/firewalld is not read). Its default zone is `drop`,
/// so that forwarding from an interface of no zone is dropped.
fn firewalld_in(host: &Netns, bus: &str, dir: &Path) -> Daemon {
    assert!(Path::new("/usr/sbin/firewalld").exists(), "firewalld is missing: run scripts/deps.sh");
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("firewalld.conf"), "DefaultZone=drop\nFirewallBackend=nftables\nCleanupOnExit=yes\n")
        .unwrap();
    let log = std::fs::File::create(dir.join("firewalld.log")).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &host.name, "/usr/sbin/firewalld", "--nofork", "--nopid"])
        .arg("--system-config")
        .arg(&etc)
        .args(["--log-target", "console"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let daemon = Daemon { child, name: "firewalld" };
    // Its name is on the bus before its rules are; RUNNING comes after both.
    wait_for(Duration::from_secs(60), "firewalld on the private bus", || {
        firewalld_call(
            bus,
            "org.fedoraproject.FirewallD1",
            "/org/fedoraproject/FirewallD1",
            PROPERTIES_GET,
            &["org.fedoraproject.FirewallD1", "state"],
        )
        .is_some_and(|out| out.contains("RUNNING"))
    });
    daemon
}

const PROPERTIES_GET: &str = "org.freedesktop.DBus.Properties.Get";

/// One method call with dbus-send (libdbus: an independent client), its printed reply.
fn firewalld_call(bus: &str, dest: &str, path: &str, method: &str, args: &[&str]) -> Option<String> {
    let out = Command::new("dbus-send")
        .arg(format!("--bus={bus}"))
        .args(["--print-reply", &format!("--dest={dest}"), path, method])
        .args(args.iter().map(|a| format!("string:{a}")))
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The zone firewalld binds `source` to ("" for none).
fn zone_of_source(bus: &str, source: &str) -> String {
    let out = firewalld_call(
        bus,
        "org.fedoraproject.FirewallD1",
        "/org/fedoraproject/FirewallD1",
        "org.fedoraproject.FirewallD1.zone.getZoneOfSource",
        &[source],
    )
    .expect("getZoneOfSource");
    out.lines().find_map(|l| l.trim().strip_prefix("string ")).unwrap_or_default().trim_matches('"').to_string()
}

fn wait_for(limit: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// STATUS of a firewall config naming the firewalld backend, with the bus at `bus`.
fn firewalld_status(node: &Node, bus: &str) -> Reply {
    let conf = json!({"cniVersion": "1.1.0", "name": node.fw, "type": "firewall", "backend": "firewalld"});
    Call::new("firewall").in_netns(&node.host).env("DBUS_SYSTEM_BUS_ADDRESS", bus).run("STATUS", &conf.to_string())
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn firewalld_trusts_the_pod() {
    require_root();
    let dir = TempDir::new("ff-firewalld");
    let mut node = Node::new();
    let (_bus_daemon, bus) = private_bus(dir.path());
    // firewalld asked for but not running: STATUS says "not available".
    let reply = firewalld_status(&node, &bus);
    assert_eq!(reply.err_code(), 50);
    let _firewalld = firewalld_in(&node.host, &bus, dir.path());
    firewalld_status(&node, &bus).ok();
    node.bus = bus.clone();

    let (plain_pod, _) = node.pod(&node.plain);
    let log: PathBuf = dir.path().join("firewalld.log");
    assert!(
        !node.reaches_outside(&plain_pod),
        "firewalld's drop zone must hold for a pod without the firewall plugin: {}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default(),
        node.host.exec("nft list table inet firewalld")
    );

    // No backend named: firewalld is found running and used.
    let (pod, addr) = node.pod(&node.fw);
    assert_eq!(zone_of_source(&bus, &format!("{addr}/32")), "trusted");
    assert!(node.reaches_outside(&pod), "{}", node.host.exec("nft list ruleset"));
    assert!(node.reached_from_outside(&pod), "host port through firewalld: {}", node.host.exec("nft list ruleset"));
    node.cnitool("check", &node.fw, &pod);

    node.cnitool("del", &node.fw, &pod);
    assert_eq!(zone_of_source(&bus, &format!("{addr}/32")), "");
    // DEL again: the source is gone already; fine.
    node.cnitool("del", &node.fw, &pod);
    node.cnitool("del", &node.plain, &plain_pod);
}
