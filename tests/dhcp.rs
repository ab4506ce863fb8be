//! The dhcp IPAM and its daemon against dnsmasq, all inside namespaces the
//! test creates: dnsmasq serves a bridge in a fake host netns, each
//! container is a veth into that bridge.

mod common;
use common::*;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A child process killed (and reaped) on drop, even when an assertion fails.
struct Process(Child);

impl Process {
    /// SIGTERM (so the process can clean up), SIGKILL if it lingers.
    fn stop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.crash();
    }

    /// SIGKILL: the process gets no chance to clean up.
    fn crash(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A LAN with a DHCP server: bridge br0 (10.99.0.1/24) in `host`, dnsmasq on it.
/// Fields drop in order: dnsmasq first, then its netns, then its files.
struct Lan {
    dnsmasq: Option<Process>,
    host: Netns,
    dir: TempDir,
    veths: usize,
    /// dnsmasq's IPv6 arguments, when it serves DHCPv6 too.
    v6: Vec<String>,
}

/// The LAN's IPv6 prefix (br0 is ::1 in it).
const V6_NET: &str = "fd99:0:0:1";

impl Lan {
    fn new() -> Lan {
        Self::with_v6(Vec::new())
    }

    /// A LAN whose dnsmasq also serves DHCPv6 from `V6_NET::/64` and, when
    /// `ra`, sends router advertisements for it.
    fn dual_stack(ra: bool) -> Lan {
        let mut v6 = vec![
            "--dhcp-range=::100,::1ff,constructor:br0,64,2m".to_string(),
            format!("--dhcp-option=option6:dns-server,[{V6_NET}::1]"),
            "--dhcp-option=option6:domain-search,v6.test,lan.test".to_string(),
        ];
        if ra {
            v6.push("--enable-ra".into());
        }
        Self::with_v6(v6)
    }

    fn with_v6(v6: Vec<String>) -> Lan {
        let dir = TempDir::new("dhcp");
        let host = Netns::new("dh");
        // A fixed MAC: a bridge otherwise takes its ports' lowest, which
        // changes when a container's veth goes, and renewals are unicast to
        // the MAC the server's ACK came from.
        host.exec("ip link add br0 address 02:00:0a:63:00:01 type bridge");
        host.exec("ip addr add 10.99.0.1/24 dev br0");
        if !v6.is_empty() {
            host.exec(&format!("ip addr add {V6_NET}::1/64 dev br0 nodad"));
        }
        host.exec("ip link set br0 up");
        let mut lan = Lan { dnsmasq: None, dir, host, veths: 0, v6 };
        if !lan.v6.is_empty() {
            // br0 gets its link-local address when a port gives it carrier,
            // and uses it after DAD. Until then dnsmasq sends its RAs from
            // V6_NET::1, which the kernel ignores (an RA's source must be
            // link-local), and a container soliciting in that window waits
            // 4 s for its next solicitation's answer: longer than -ratimeout.
            lan.macvlan_master();
            wait_for("br0's link-local address", || {
                let addrs = lan.host.exec("ip -6 addr show dev br0 scope link");
                addrs.contains("fe80::") && !addrs.contains("tentative")
            });
        }
        // dnsmasq's shortest lease is 2 minutes; a short T1 makes it renew soon.
        lan.start_dnsmasq(&["--dhcp-option=option:T1,4"]);
        lan
    }

    /// (Re)starts dnsmasq on br0; the lease file carries over.
    fn start_dnsmasq(&mut self, extra: &[&str]) {
        if let Some(mut old) = self.dnsmasq.take() {
            old.stop();
        }
        let d = self.dir.path();
        let log = d.join("dnsmasq.log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.host.name, "/usr/sbin/dnsmasq", "--keep-in-foreground"])
            .args(["--conf-file=/dev/null", "--port=0", "--interface=br0", "--bind-interfaces", "--user=root"])
            .args(["--no-ping", "--log-dhcp", "--log-facility=-"])
            .arg("--dhcp-range=10.99.0.10,10.99.0.50,255.255.255.0,2m")
            .arg("--dhcp-option=option:router,10.99.0.1")
            .arg("--dhcp-option=option:dns-server,10.99.0.1,10.99.0.2")
            .arg("--dhcp-option=option:domain-name,lan.test")
            .arg("--dhcp-option=option:domain-search,lan.test,corp.test")
            .arg("--dhcp-option=option:classless-static-route,10.77.0.0/16,10.99.0.3,0.0.0.0/0,10.99.0.1")
            .args(extra)
            .args(&self.v6)
            .arg(format!("--dhcp-leasefile={}", d.join("leases").display()))
            .arg(format!("--pid-file={}", d.join("dnsmasq.pid").display()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        self.dnsmasq = Some(Process(child));
        wait_for("dnsmasq to start", || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("DHCP, sockets bound")));
    }

    /// A container netns whose eth0 is a veth into br0.
    fn container(&mut self) -> Netns {
        let ns = Netns::new("dc");
        self.veths += 1;
        let port = format!("vp{}", self.veths);
        self.host.exec(&format!("ip link add {port} type veth peer name eth0 netns {}", ns.name));
        self.host.exec(&format!("ip link set {port} master br0 up"));
        ns
    }

    /// The master a macvlan container hangs on: a veth in `host` whose peer
    /// is a port of br0 (a macvlan on br0 itself would bypass br0's stack).
    fn macvlan_master(&self) -> &'static str {
        if !self.host.try_exec("ip link show lanup") {
            self.host.exec("ip link add lanup type veth peer name lanbr");
            self.host.exec("ip link set lanbr master br0 up");
            self.host.exec("ip link set lanup up");
        }
        "lanup"
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("dhcp.sock")
    }

    /// The daemon's -statedir (never the host's /var/lib/cni/dhcp).
    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The lease records in the state directory.
    fn records(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(self.state_dir())
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        out.retain(|p| p.extension().is_some_and(|e| e == "json"));
        out.sort();
        out
    }

    fn daemon(&self, extra: &[&str]) -> Daemon {
        let log = self.dir.path().join("daemon.log");
        let child = Command::new(BIN)
            .args(["dhcp", "daemon", "-socketpath"])
            .arg(self.socket())
            .arg(format!("--pidfile={}", self.dir.path().join("daemon.pid").display()))
            .args(["-timeout", "2s", "-resendtimeout=20s", "-statedir"])
            .arg(self.state_dir())
            .args(extra)
            .env("CNIBOX_LOG", "debug")
            .env("CNIBOX_LOG_FILE", &log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let d = Daemon { pid: child.id(), process: Process(child), log };
        wait_for("the daemon to listen", || std::os::unix::net::UnixStream::connect(self.socket()).is_ok());
        d
    }

    fn conf(&self) -> String {
        serde_json::json!({
            "cniVersion": "1.1.0",
            "name": "lan",
            "type": "macvlan",
            "ipam": {
                "type": "dhcp",
                "daemonSocketPath": self.socket(),
                "daemonStateDir": self.state_dir(),
                "provide": [{"option": "host-name", "fromArg": "K8S_POD_NAME"}],
            },
        })
        .to_string()
    }

    /// dnsmasq's lease file: (expiry, ip, hostname) per lease.
    fn leases(&self) -> Vec<(u64, String, String)> {
        // dnsmasq rewrites the file in place: only trust a read that a
        // second read a moment later confirms.
        let path = self.dir.path().join("leases");
        let mut text = std::fs::read_to_string(&path).unwrap_or_default();
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let again = std::fs::read_to_string(&path).unwrap_or_default();
            if again == text {
                break;
            }
            text = again;
        }
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((f.first()?.parse().ok()?, f.get(2)?.to_string(), f.get(3)?.to_string()))
            })
            .collect()
    }

    fn lease_of(&self, ip: &str) -> Option<(u64, String, String)> {
        self.leases().into_iter().find(|l| l.1 == ip)
    }
}

struct Daemon {
    process: Process,
    pid: u32,
    log: PathBuf,
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log lines of this process (a restarted daemon appends to the same file).
    fn own_log(&self) -> String {
        let tag = format!(" pid={}]", self.pid);
        self.log().lines().filter(|l| l.contains(&tag)).map(|l| format!("{l}\n")).collect()
    }
}

/// Polls `cond` for up to 25 s (the whole test stays well under a minute).
fn try_wait(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(25);
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    assert!(try_wait(cond), "timed out waiting for {what}");
}

fn address(result: &Value) -> String {
    let a = result["ips"][0]["address"].as_str().unwrap();
    a.split('/').next().unwrap().to_string()
}

fn call(ns: &Netns, id: &str) -> Call {
    Call::new("dhcp").container(id, &ns.path(), "eth0")
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn lease_renewal_release_and_daemon_restart() {
    require_root();
    let mut lan = Lan::new();
    let mut daemon = lan.daemon(&[]);
    let conf = lan.conf();
    let (a, b) = (lan.container(), lan.container());
    let call_a = call(&a, "ctr-a");
    let call_b = call(&b, "ctr-b").env("CNI_ARGS", "K8S_POD_NAME=web-0");

    let ra = call_a.run("ADD", &conf).ok();
    let rb = call_b.run("ADD", &conf).ok();
    let (ip_a, ip_b) = (address(&ra), address(&rb));
    // What the main plugin would do with the result: the server answers
    // renewals by unicast to the leased address, which must answer ARP.
    for (ns, r) in [(&a, &ra), (&b, &rb)] {
        ns.exec(&format!("ip addr add {} dev eth0", r["ips"][0]["address"].as_str().unwrap()));
    }
    assert_ne!(ip_a, ip_b);
    for r in [&ra, &rb] {
        assert!(r["ips"][0]["address"].as_str().unwrap().ends_with("/24"), "{r}");
        assert!(address(r).starts_with("10.99.0."), "{r}");
        assert_eq!(r["ips"][0]["gateway"], "10.99.0.1");
        // Option 121 replaces the router option's default route (RFC 3442).
        assert_eq!(
            r["routes"],
            serde_json::json!([{"dst": "10.77.0.0/16", "gw": "10.99.0.3"}, {"dst": "0.0.0.0/0", "gw": "10.99.0.1"}])
        );
        assert_eq!(r["dns"]["nameservers"], serde_json::json!(["10.99.0.1", "10.99.0.2"]));
        assert_eq!(r["dns"]["domain"], "lan.test");
        assert_eq!(r["dns"]["search"], serde_json::json!(["lan.test", "corp.test"]));
    }
    // The host name came from CNI_ARGS through `provide`.
    assert_eq!(lan.lease_of(&ip_b).unwrap().2, "web-0");
    let first_expiry = lan.lease_of(&ip_a).unwrap().0;

    // ADD again keeps the same lease; CHECK finds it.
    assert_eq!(address(&call_a.run("ADD", &conf).ok()), ip_a);
    call_a.run("CHECK", &conf).ok();

    // T1 is 4 s: the daemon renews while the container lives.
    wait_for("a renewal", || lan.lease_of(&ip_a).is_some_and(|l| l.0 > first_expiry));
    // dnsmasq writes its lease file before its ACK reaches the daemon.
    let acked = try_wait(|| daemon.log().contains("DHCPACK (RENEW)"));
    assert!(acked, "the daemon logged no DHCPACK (RENEW): {}", daemon.log());

    // DEL releases the lease; a second DEL is fine.
    call_a.run("DEL", &conf).ok();
    wait_for("the release", || lan.lease_of(&ip_a).is_none());
    assert!(lan.lease_of(&ip_b).is_some());
    call_a.run("DEL", &conf).ok();
    call_a.run("CHECK", &conf).err_code();

    // STATUS: available with the daemon, 50 without; ADD asks to retry later.
    let status = Call::new("dhcp");
    status.run("STATUS", &conf).ok();
    daemon.process.stop();
    assert!(!lan.socket().exists(), "the daemon leaves its socket behind");
    assert_eq!(status.run("STATUS", &conf).err_code(), 50);
    assert_eq!(call_a.run("ADD", &conf).err_code(), 11);
    // DEL while the daemon is down releases B's lease from its record.
    call_b.run("DEL", &conf).ok();
    wait_for("the release of B", || lan.lease_of(&ip_b).is_none());

    // A restarted daemon serves again (B gets a new lease: the server may
    // pick another address for it).
    let _daemon = lan.daemon(&[]);
    status.run("STATUS", &conf).ok();
    let ip_b = address(&call_b.run("ADD", &conf).ok());
    assert!(ip_b.starts_with("10.99.0."), "{ip_b}");
    let ip_a = address(&call_a.run("ADD", &conf).ok());

    // GC releases the leases of attachments the runtime no longer lists.
    let mut gc_conf: Value = serde_json::from_str(&conf).unwrap();
    gc_conf["cni.dev/valid-attachments"] = serde_json::json!([{"containerID": "ctr-b", "ifname": "eth0"}]);
    Call::new("dhcp").run("GC", &gc_conf.to_string()).ok();
    wait_for("the release of A by GC", || lan.lease_of(&ip_a).is_none());
    assert!(lan.lease_of(&ip_b).is_some(), "{ip_a} {ip_b} {:?}\n{}", lan.leases(), _daemon.log());
    call_a.run("CHECK", &conf).err_code();

    call_b.run("DEL", &conf).ok();
    wait_for("the release of B", || lan.lease_of(&ip_b).is_none());
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn broadcast_replies_and_del_after_the_netns_is_gone() {
    require_root();
    let mut lan = Lan::new();
    let daemon = lan.daemon(&["-broadcast"]);
    let conf = lan.conf();
    let c = lan.container();
    let path = c.path();
    let r = call(&c, "ctr-c").run("ADD", &conf).ok();
    let ip = address(&r);
    assert!(lan.lease_of(&ip).is_some());
    assert!(daemon.log().contains("DHCPACK of"), "{}", daemon.log());
    // ipam.priority is the metric of every route of the lease.
    let mut ranked: serde_json::Value = serde_json::from_str(&conf).unwrap();
    ranked["ipam"]["priority"] = 300.into();
    let p = lan.container();
    let rp = call(&p, "ctr-p").run("ADD", &ranked.to_string()).ok();
    let routes = rp["routes"].as_array().unwrap();
    assert!(!routes.is_empty() && routes.iter().all(|r| r["priority"] == 300), "{rp}");
    call(&p, "ctr-p").run("DEL", &ranked.to_string()).ok();
    drop(c);
    // The container's netns went first: DEL still succeeds (the server lets
    // the lease expire), and so does the next one.
    let gone = Call::new("dhcp").container("ctr-c", &path, "eth0");
    gone.run("DEL", &conf).ok();
    gone.run("DEL", &conf).ok();
}

#[test]
fn bad_options_are_refused_before_the_daemon() {
    let conf = r#"{"cniVersion":"1.0.0","name":"n","type":"macvlan",
        "ipam":{"type":"dhcp","daemonSocketPath":"/nonexistent/dhcp.sock","request":[{"option":"no-such-option"}]}}"#;
    let reply = Call::new("dhcp").container("c", "/proc/self/ns/net", "eth0").run("ADD", conf);
    assert_eq!(reply.err_code(), 7);
    // Without a daemon there is nothing to release.
    let conf = r#"{"cniVersion":"1.0.0","name":"n","type":"macvlan",
        "ipam":{"type":"dhcp","daemonSocketPath":"/nonexistent/dhcp.sock"}}"#;
    Call::new("dhcp").container("c", "/proc/self/ns/net", "eth0").run("DEL", conf).ok();
}

#[test]
fn daemon_refuses_bad_flags() {
    let out = Command::new(BIN).args(["dhcp", "daemon", "-nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN).args(["dhcp", "bogus"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn socket_activation() {
    let activate = "/usr/bin/systemd-socket-activate";
    require_root();
    if !std::path::Path::new(activate).exists() {
        return;
    }
    let dir = TempDir::new("dhcp-act");
    let socket = dir.path().join("act.sock");
    let child = Command::new(activate)
        .arg("-l")
        .arg(&socket)
        .args([BIN, "dhcp", "daemon", "-socketpath", "/nonexistent/ignored.sock", "-statedir"])
        .arg(dir.path().join("state"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _daemon = Process(child);
    wait_for("the activation socket", || socket.exists());
    let conf = serde_json::json!({
        "cniVersion": "1.1.0", "name": "n", "type": "macvlan",
        "ipam": {"type": "dhcp", "daemonSocketPath": socket},
    })
    .to_string();
    // The first connection starts the daemon on fd 3; it answers on it.
    Call::new("dhcp").run("STATUS", &conf).ok();
    Call::new("dhcp").run("STATUS", &conf).ok();
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn rebinding_when_the_server_moves() {
    require_root();
    let mut lan = Lan::new();
    lan.start_dnsmasq(&["--dhcp-option=option:T1,2", "--dhcp-option=option:T2,4"]);
    let daemon = lan.daemon(&[]);
    let conf = lan.conf();
    let c = lan.container();
    let r = call(&c, "ctr-r").run("ADD", &conf).ok();
    let ip = address(&r);
    c.exec(&format!("ip addr add {} dev eth0", r["ips"][0]["address"].as_str().unwrap()));
    // The server changes address: renewals (unicast to 10.99.0.1) go
    // unanswered until T2, when a broadcast REBIND reaches the new one.
    lan.host.exec("ip addr del 10.99.0.1/24 dev br0");
    lan.host.exec("ip addr add 10.99.0.5/24 dev br0");
    lan.start_dnsmasq(&["--dhcp-option=option:T1,2", "--dhcp-option=option:T2,4"]);
    let rebound = try_wait(|| daemon.log().contains("DHCPACK (REBIND)"));
    let dnsmasq_log = std::fs::read_to_string(lan.dir.path().join("dnsmasq.log")).unwrap_or_default();
    assert!(rebound, "no rebind:\n{}\n{dnsmasq_log}", daemon.log());
    assert!(lan.lease_of(&ip).is_some());
    call(&c, "ctr-r").run("CHECK", &conf).ok();
    // The release goes to the new server.
    call(&c, "ctr-r").run("DEL", &conf).ok();
    wait_for("the release", || lan.lease_of(&ip).is_none());
}

impl Lan {
    /// A macvlan config over `macvlan_master()` with dhcp for `families`.
    fn macvlan_conf(&self, families: &[&str]) -> String {
        serde_json::json!({
            "cniVersion": "1.1.0",
            "name": "lan6",
            "type": "macvlan",
            "master": self.macvlan_master(),
            "mode": "bridge",
            "ipam": {
                "type": "dhcp",
                "daemonSocketPath": self.socket(),
                "daemonStateDir": self.state_dir(),
                "families": families,
            },
        })
        .to_string()
    }
}

fn macvlan_call(lan: &Lan, ns: &Netns, id: &str) -> Call {
    Call::new("macvlan").container(id, &ns.path(), "eth0").in_netns(&lan.host).env("CNI_PATH", &cni_path())
}

/// The result's address of one family, without its prefix length.
fn address_of(result: &Value, v6: bool) -> String {
    let ips = result["ips"].as_array().unwrap();
    let ip = ips.iter().find(|ip| ip["address"].as_str().unwrap().contains(':') == v6).unwrap();
    ip["address"].as_str().unwrap().split('/').next().unwrap().to_string()
}

fn try_wait_long(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    true
}

/// ADD in each container, with the address configured as the main plugin
/// would (renewals are unicast to it): the results.
fn add_all(conf: &str, containers: &[(&Netns, &Call)]) -> Vec<Value> {
    containers
        .iter()
        .map(|(ns, call)| {
            let r = call.run("ADD", conf).ok();
            ns.exec(&format!("ip addr add {} dev eth0", r["ips"][0]["address"].as_str().unwrap()));
            r
        })
        .collect()
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn dual_stack_macvlan_lease_renewal_and_release() {
    require_root();
    let lan = Lan::dual_stack(true);
    let daemon = lan.daemon(&[]);
    let conf = lan.macvlan_conf(&["ipv4", "ipv6"]);
    let c = Netns::new("d6");
    let call = macvlan_call(&lan, &c, "ctr-ds");
    let r = call.run("ADD", &conf).ok();
    let (ip4, ip6) = (address_of(&r, false), address_of(&r, true));
    let ips = r["ips"].as_array().unwrap();
    assert_eq!(ips.len(), 2, "{r}");
    assert!(ip4.starts_with("10.99.0."), "{r}");
    assert!(ip6.starts_with(&format!("{V6_NET}::")), "{r}");
    let v6 = ips.iter().find(|ip| ip["address"].as_str().unwrap().contains(':')).unwrap();
    assert!(v6["address"].as_str().unwrap().ends_with("/128"), "{r}");
    // The RA's router (br0's link-local) is the v6 gateway; its routes are
    // the kernel's, not the result's.
    assert!(v6["gateway"].as_str().is_some_and(|g| g.starts_with("fe80:")), "{r}\n{}", daemon.log());
    assert!(r["routes"].as_array().unwrap().iter().all(|rt| !rt["dst"].as_str().unwrap().contains(':')), "{r}");
    // DNS of both families.
    let ns: Vec<&str> = r["dns"]["nameservers"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(ns, ["10.99.0.1", "10.99.0.2", &format!("{V6_NET}::1")], "{r}");
    assert_eq!(r["dns"]["search"], serde_json::json!(["lan.test", "corp.test", "v6.test"]), "{r}");
    // The container reaches the server over both.
    assert!(c.try_exec("ping -c1 -W2 10.99.0.1"), "no IPv4 path");
    let ping6 = format!("ping -6 -c1 -W1 {V6_NET}::1");
    assert!(try_wait(|| c.try_exec(&ping6)), "no IPv6 path:\n{}", c.exec("ip -6 addr; ip -6 route"));
    assert!(lan.lease_of(&ip4).is_some() && lan.lease_of(&ip6).is_some(), "{:?}", lan.leases());
    call.run("CHECK", &with_prev(&conf, &r)).ok();

    // Renewals: the v4 T1 is 4 s; dnsmasq's v6 T1 is half the 2-minute lease.
    let (first4, first6) = (lan.lease_of(&ip4).unwrap().0, lan.lease_of(&ip6).unwrap().0);
    wait_for("the v4 renewal", || lan.lease_of(&ip4).is_some_and(|l| l.0 > first4));
    let renewed6 = try_wait_long(90, || lan.lease_of(&ip6).is_some_and(|l| l.0 > first6));
    assert!(renewed6, "no DHCPv6 renewal: {:?}\n{}", lan.leases(), daemon.log());
    assert!(try_wait(|| daemon.log().contains("DHCPv6 Reply (Renew)")), "{}", daemon.log());

    // DEL releases both.
    call.run("DEL", &conf).ok();
    wait_for("both releases", || lan.lease_of(&ip4).is_none() && lan.lease_of(&ip6).is_none());
    call.run("DEL", &conf).ok();
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn leases_survive_a_daemon_killed_with_sigkill() {
    require_root();
    let mut lan = Lan::new();
    let mut daemon = lan.daemon(&[]);
    let conf = lan.conf();
    let (a, b, c, d) = (lan.container(), lan.container(), lan.container(), lan.container());
    let calls = [call(&a, "ctr-a"), call(&b, "ctr-b"), call(&c, "ctr-c"), call(&d, "ctr-d")];
    let results = add_all(&conf, &[(&a, &calls[0]), (&b, &calls[1]), (&c, &calls[2]), (&d, &calls[3])]);
    let ips: Vec<String> = results.iter().map(address).collect();
    assert_eq!(lan.records().len(), 4);

    daemon.process.crash();
    assert!(lan.socket().exists(), "SIGKILL leaves the socket behind");
    // While the daemon is down, the runtime deletes C: DEL succeeds and
    // releases the lease from the daemon's record.
    calls[2].run("DEL", &conf).ok();
    wait_for("the release of C", || lan.lease_of(&ips[2]).is_none());
    assert_eq!(lan.records().len(), 3);
    // D's netns goes without a DEL.
    drop(d);
    let expiries: Vec<u64> = ips[..2].iter().map(|ip| lan.lease_of(ip).unwrap().0).collect();

    let daemon = lan.daemon(&[]);
    // A and B are renewed by the new daemon, long before they expire (2 min).
    for (key, (ip, expiry)) in ["ctr-a", "ctr-b"].iter().zip(ips.iter().zip(&expiries)) {
        let renewed = try_wait(|| lan.lease_of(ip).is_some_and(|l| l.0 > *expiry));
        assert!(renewed, "{key} not renewed: {:?}\n{}", lan.leases(), daemon.own_log());
        let acked = try_wait(|| daemon.own_log().contains(&format!("{key}/lan/eth0: DHCPACK (RENEW)")));
        assert!(acked, "{key}: {}", daemon.own_log());
    }
    // D went while the daemon was down: its record is dropped, said so.
    let log = daemon.own_log();
    assert!(log.contains("ctr-d/lan/eth0") && log.contains("went away while the daemon was down"), "{log}");
    assert!(!log.contains("ctr-c/lan/eth0"), "C was resumed after its DEL: {log}");
    assert_eq!(lan.records().len(), 2);
    // CHECK passes against what ADD returned.
    calls[0].run("CHECK", &with_prev(&conf, &results[0])).ok();
    calls[1].run("CHECK", &with_prev(&conf, &results[1])).ok();

    // GC releases a resumed lease the runtime no longer lists; DEL the other.
    let mut gc_conf: Value = serde_json::from_str(&conf).unwrap();
    gc_conf["cni.dev/valid-attachments"] = serde_json::json!([{"containerID": "ctr-a", "ifname": "eth0"}]);
    Call::new("dhcp").run("GC", &gc_conf.to_string()).ok();
    wait_for("the release of B by GC", || lan.lease_of(&ips[1]).is_none());
    calls[0].run("DEL", &conf).ok();
    wait_for("the release of A", || lan.lease_of(&ips[0]).is_none());
    assert!(lan.records().is_empty(), "{:?}", lan.records());
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn dual_stack_leases_survive_a_daemon_killed_with_sigkill() {
    require_root();
    let lan = Lan::dual_stack(true);
    let mut daemon = lan.daemon(&[]);
    let conf = lan.macvlan_conf(&["ipv4", "ipv6"]);
    let (kept, deleted) = (Netns::new("d6"), Netns::new("d6"));
    let (call_kept, call_deleted) = (macvlan_call(&lan, &kept, "ctr-kept"), macvlan_call(&lan, &deleted, "ctr-del"));
    let r = call_kept.run("ADD", &conf).ok();
    let rd = call_deleted.run("ADD", &conf).ok();
    let (ip4, ip6) = (address_of(&r, false), address_of(&r, true));
    let (del4, del6) = (address_of(&rd, false), address_of(&rd, true));
    // One record per lease, named by its family, beside the DUID.
    let names: Vec<String> =
        lan.records().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names.iter().filter(|n| n.ends_with(".ipv4.json")).count(), 2, "{names:?}");
    assert_eq!(names.iter().filter(|n| n.ends_with(".ipv6.json")).count(), 2, "{names:?}");
    assert!(lan.state_dir().join("duid").exists());
    let first6 = lan.lease_of(&ip6).unwrap().0;

    daemon.process.crash();
    // DEL while the daemon is down releases both leases from the records:
    // the DHCPRELEASE and the DHCPv6 Release go out from the container's eth0.
    call_deleted.run("DEL", &conf).ok();
    wait_for("the releases of ctr-del", || lan.lease_of(&del4).is_none() && lan.lease_of(&del6).is_none());
    assert_eq!(lan.records().len(), 2, "{:?}", lan.records());
    assert!(lan.lease_of(&ip4).is_some() && lan.lease_of(&ip6).is_some(), "{:?}", lan.leases());

    let daemon = lan.daemon(&[]);
    assert!(try_wait(|| daemon.own_log().contains("resuming the DHCPv6 lease")), "{}", daemon.own_log());
    assert!(!daemon.own_log().contains("ctr-del/"), "a deleted attachment was resumed: {}", daemon.own_log());
    call_kept.run("CHECK", &with_prev(&conf, &r)).ok();
    // The resumed binding is the server's (same DUID and IAID): it renews at
    // its T1 (half of dnsmasq's 2-minute lease after ADD), without a NoBinding.
    let renewed6 = try_wait_long(90, || lan.lease_of(&ip6).is_some_and(|l| l.0 > first6));
    assert!(renewed6, "no DHCPv6 renewal after the restart: {:?}\n{}", lan.leases(), daemon.own_log());
    let log = daemon.own_log();
    assert!(try_wait(|| daemon.own_log().contains("DHCPv6 Reply (Renew)")), "{log}");
    assert!(!log.contains("no binding"), "{log}");
    assert!(log.contains("ctr-kept/lan6/eth0: DHCPACK (RENEW)"), "{log}");

    // DEL through the restarted daemon releases both and leaves no record.
    call_kept.run("DEL", &conf).ok();
    wait_for("both releases", || lan.lease_of(&ip4).is_none() && lan.lease_of(&ip6).is_none());
    assert!(lan.records().is_empty(), "{:?}", lan.records());
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn ipv6_only_and_without_router_advertisements() {
    require_root();
    let lan = Lan::dual_stack(true);
    let daemon = lan.daemon(&[]);
    let conf = lan.macvlan_conf(&["ipv6"]);
    let c = Netns::new("d6");
    let call = macvlan_call(&lan, &c, "ctr-v6");
    let r = call.run("ADD", &conf).ok();
    assert_eq!(r["ips"].as_array().unwrap().len(), 1, "{r}");
    let ip6 = address_of(&r, true);
    assert_eq!(r["dns"]["nameservers"], serde_json::json!([format!("{V6_NET}::1")]), "{r}");
    assert_eq!(r["dns"]["search"], serde_json::json!(["v6.test", "lan.test"]), "{r}");
    let ping6 = format!("ping -6 -c1 -W1 {V6_NET}::1");
    assert!(try_wait(|| c.try_exec(&ping6)), "no IPv6 path:\n{}", c.exec("ip -6 addr; ip -6 route"));
    // The IPAM's ADD again gives the same binding; the DUID persists in the state dir.
    assert_eq!(address_of(&Call::new("dhcp").container("ctr-v6", &c.path(), "eth0").run("ADD", &conf).ok(), true), ip6);
    let duid = std::fs::read_to_string(lan.state_dir().join("duid")).unwrap();
    assert!(duid.starts_with("00:04:"), "{duid}");
    call.run("DEL", &conf).ok();
    wait_for("the release", || lan.lease_of(&ip6).is_none());
    drop(daemon);

    // Without RAs: ADD still returns the address, without a gateway, and says why.
    let quiet = Lan::dual_stack(false);
    let daemon = quiet.daemon(&["-ratimeout=1s"]);
    let conf = quiet.macvlan_conf(&["ipv6"]);
    let c = Netns::new("d6");
    let call = macvlan_call(&quiet, &c, "ctr-nora");
    let r = call.run("ADD", &conf).ok();
    let v6 = &r["ips"][0];
    assert!(v6["address"].as_str().unwrap().ends_with("/128") && v6.get("gateway").is_none(), "{r}");
    assert!(daemon.log().contains("no router advertisement"), "{}", daemon.log());
    call.run("DEL", &conf).ok();
    let ip6 = address_of(&r, true);
    wait_for("the release", || quiet.lease_of(&ip6).is_none());
    // A bad family is a config error before the daemon is asked.
    let bad = quiet.macvlan_conf(&["ipv5"]);
    assert_eq!(call.run("ADD", &bad).err_code(), 7);
    assert!(!c.try_exec("ip link show eth0"), "a refused ADD leaves its link behind");
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn corrupt_and_truncated_records_are_set_aside() {
    require_root();
    let mut lan = Lan::new();
    let mut daemon = lan.daemon(&[]);
    let conf = lan.conf();
    let (a, b) = (lan.container(), lan.container());
    let (call_a, call_b) = (call(&a, "ctr-a"), call(&b, "ctr-b"));
    let ra = add_all(&conf, &[(&a, &call_a)]).remove(0);
    let only_a = lan.records();
    add_all(&conf, &[(&b, &call_b)]);
    let record_b = lan.records().into_iter().find(|r| !only_a.contains(r)).unwrap();

    daemon.process.crash();
    // B's record cut short (as a disk could leave a file written in place),
    // and a file of garbage.
    let text = std::fs::read(&record_b).unwrap();
    std::fs::write(&record_b, &text[..text.len() / 2]).unwrap();
    let garbage = lan.state_dir().join("0123456789abcdef0123456789abcdef.json");
    std::fs::write(&garbage, b"\x00\xffnot json").unwrap();

    let daemon = lan.daemon(&[]);
    Call::new("dhcp").run("STATUS", &conf).ok();
    call_a.run("CHECK", &with_prev(&conf, &ra)).ok();
    for path in [&record_b, &garbage] {
        let aside = PathBuf::from(format!("{}.corrupt", path.display()));
        assert!(!path.exists() && aside.exists(), "{} not set aside", path.display());
    }
    let log = daemon.own_log();
    assert_eq!(log.matches("set aside as").count(), 2, "{log}");
    // B's lease is not known any more; its DEL still succeeds.
    call_b.run("CHECK", &conf).err_code();
    call_b.run("DEL", &conf).ok();
    call_a.run("DEL", &conf).ok();
    wait_for("the release of A", || lan.lease_of(&address(&ra)).is_none());
    assert!(lan.records().is_empty());
}

#[test]
fn status_is_50_while_the_state_dir_cannot_be_written() {
    let dir = TempDir::new("dhcp-st");
    let socket = dir.path().join("s.sock");
    let state = dir.path().join("state");
    std::fs::write(&state, "a file, not a directory").unwrap();
    let child = Command::new(BIN)
        .args(["dhcp", "daemon", "-socketpath"])
        .arg(&socket)
        .arg("-statedir")
        .arg(&state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _daemon = Process(child);
    wait_for("the daemon to listen", || std::os::unix::net::UnixStream::connect(&socket).is_ok());
    let conf = serde_json::json!({
        "cniVersion": "1.1.0", "name": "n", "type": "macvlan",
        "ipam": {"type": "dhcp", "daemonSocketPath": socket},
    })
    .to_string();
    let reply = Call::new("dhcp").run("STATUS", &conf);
    let error = reply.json();
    assert_eq!(error["code"], 50, "{error}");
    assert!(error["details"].as_str().unwrap().contains(state.to_str().unwrap()), "{error}");
    // Fixed, the daemon is available again.
    std::fs::remove_file(&state).unwrap();
    Call::new("dhcp").run("STATUS", &conf).ok();
    assert!(state.is_dir());
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn add_refuses_a_lease_it_cannot_record() {
    require_root();
    let mut lan = Lan::new();
    let state = lan.dir.path().join("not-a-dir");
    std::fs::write(&state, "").unwrap();
    // The last -statedir wins.
    let daemon = lan.daemon(&["-statedir", state.to_str().unwrap()]);
    let conf = lan.conf();
    let c = lan.container();
    assert_eq!(call(&c, "ctr-n").run("ADD", &conf).err_code(), 5);
    // ADD leaves nothing behind: the lease it got was released.
    assert!(daemon.log().contains("DHCPACK of"), "{}", daemon.log());
    wait_for("the release", || lan.leases().is_empty());
    call(&c, "ctr-n").run("DEL", &conf).ok();
}
