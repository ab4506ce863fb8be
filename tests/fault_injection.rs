//! Fault injection: every step of every applet's ADD fails in turn
//! (CNIBOX_FAIL_AT=1, 2, ... until ADD succeeds), and each failure must leave
//! the fake host, the container and the host-local store exactly as they
//! were. Needs the binary built with `--features fault-injection` (as `make
//! test` does); skipped otherwise. Cases the kernel cannot run are skipped
//! here; vmtest's `fault-injection` case covers dummy, ipvlan, vlan,
//! the bridge VLAN gateway and vrf.
//!
//! To cover a new applet, add one `Case` to `cases()`.
mod common;
mod state;

use std::cell::RefCell;
use std::collections::BTreeSet;

use common::*;
use serde_json::{json, Value};
use state::{diff, files, reservations, snapshot};

/// The world of one case: a fake host, a container, a host-local data dir.
struct World {
    host: Netns,
    cont: Netns,
    data: TempDir,
    /// A name unique to the case (network, bridge).
    tag: String,
    /// Commands run in the container whose output is part of the state
    /// (what the general snapshot leaves out: sysctls, link attributes).
    watched: RefCell<Vec<String>>,
}

impl World {
    fn new() -> World {
        World {
            host: Netns::new("fih"),
            cont: Netns::new("fic"),
            data: TempDir::new("fault"),
            tag: unique("fi"),
            watched: RefCell::new(Vec::new()),
        }
    }

    /// Makes the output of `cmd` in the container part of the state.
    fn watch(&self, cmd: &str) {
        self.watched.borrow_mut().push(cmd.to_string());
    }

    /// Where chained plugins that keep files (tuning) keep them.
    fn state_dir(&self) -> String {
        self.data.path().join("state").display().to_string()
    }

    /// A container attached as the bridge plugin would attach it: host
    /// bridge `fibr0` with 10.<n>.0.1/24 and fd00:<n>::1/64, port `fiveth0`,
    /// container `eth0` with .2 / ::2 and a default route; returns the
    /// prevResult describing it.
    fn attached(&self, n: u8) -> Value {
        let (v4, v6) = (format!("10.{n}.0"), format!("fd00:{n}:"));
        self.host.exec("ip link add fibr0 type bridge");
        self.host.exec(&format!("ip link add fiveth0 type veth peer name eth0 netns {}", self.cont.name));
        self.host.exec("ip link set fiveth0 master fibr0 up");
        self.host.exec(&format!("ip addr add {v4}.1/24 dev fibr0"));
        self.host.exec(&format!("ip -6 addr add {v6}:1/64 dev fibr0 nodad"));
        self.host.exec("ip link set fibr0 up");
        self.cont.exec(&format!("ip addr add {v4}.2/24 dev eth0"));
        self.cont.exec(&format!("ip -6 addr add {v6}:2/64 dev eth0 nodad"));
        self.cont.exec("ip link set eth0 up");
        self.cont.exec(&format!("ip route add default via {v4}.1 dev eth0"));
        let mac = self.cont.exec("cat /sys/class/net/eth0/address").trim().to_string();
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "fibr0"}, {"name": "fiveth0"}, {"name": "eth0", "mac": mac, "sandbox": self.cont.path()}],
            "ips": [{"address": format!("{v4}.2/24"), "gateway": format!("{v4}.1"), "interface": 2},
                    {"address": format!("{v6}:2/64"), "gateway": format!("{v6}:1"), "interface": 2}],
            "routes": [{"dst": "0.0.0.0/0"}]
        })
    }

    fn host_local(&self, subnets: &[&str]) -> Value {
        let ranges: Vec<Value> = subnets.iter().map(|s| json!([{ "subnet": s }])).collect();
        json!({"type": "host-local", "dataDir": self.data.path(), "ranges": ranges,
               "routes": [{"dst": "192.0.2.0/24"}]})
    }

    fn state(&self) -> BTreeSet<String> {
        let mut all: BTreeSet<String> = snapshot(&self.host).into_iter().map(|l| format!("host {l}")).collect();
        all.extend(snapshot(&self.cont).into_iter().map(|l| format!("container {l}")));
        all.extend(reservations(self.data.path()));
        all.extend(files(std::path::Path::new(&self.state_dir())));
        for cmd in self.watched.borrow().iter() {
            all.insert(format!("container `{cmd}`: {}", self.cont.exec(cmd).trim()));
        }
        all
    }
}

struct Case {
    name: &'static str,
    plugin: &'static str,
    ifname: &'static str,
    /// Builds the topology the test owns and returns the network config
    /// (Null: this kernel cannot run the case).
    setup: fn(&World) -> Value,
    /// Run one ADD + DEL before measuring, so that shared objects a first ADD
    /// creates (a bridge, its gateway address, an nftables table) are there
    /// already; DEL must then also bring the world back to that state.
    warm_up: bool,
    /// The plugin keeps a record for the runtime's DEL after a failed ADD
    /// (flannel's saved delegate config, as the reference keeps it): the
    /// world must be as before once that DEL ran.
    del_after_failure: bool,
}

fn conf(w: &World, plugin: &str, ipam: Value, extra: Value) -> Value {
    let mut c = json!({"cniVersion": "1.0.0", "name": w.tag, "type": plugin});
    if !ipam.is_null() {
        c["ipam"] = ipam;
    }
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "host-local dual stack",
            plugin: "host-local",
            ifname: "eth0",
            setup: |w| conf(w, "bridge", w.host_local(&["10.201.0.0/24", "fd00:201::/64"]), json!({})),
            warm_up: false,
            del_after_failure: false,
        },
        Case {
            name: "bridge gateway, masquerade, spoof check, dual stack",
            plugin: "bridge",
            ifname: "eth0",
            setup: |w| {
                conf(
                    w,
                    "bridge",
                    w.host_local(&["10.202.0.0/24", "fd00:202::/64"]),
                    json!({"bridge": w.tag, "isDefaultGateway": true, "ipMasq": true, "macspoofchk": true,
                           "hairpinMode": true}),
                )
            },
            warm_up: true,
            del_after_failure: false,
        },
        Case {
            name: "bridge layer 2 with a MAC and the spoof check",
            plugin: "bridge",
            ifname: "eth0",
            setup: |w| {
                conf(
                    w,
                    "bridge",
                    Value::Null,
                    json!({"bridge": w.tag, "promiscMode": true, "macspoofchk": true,
                           "runtimeConfig": {"mac": "02:00:00:00:aa:02"}}),
                )
            },
            warm_up: true,
            del_after_failure: false,
        },
        Case {
            name: "bridge VLAN with its gateway interface",
            plugin: "bridge",
            ifname: "eth0",
            setup: |w| {
                if !w.host.try_exec("ip link add vfprobe type bridge vlan_filtering 1") {
                    return Value::Null;
                }
                w.host.exec("ip link del vfprobe");
                conf(
                    w,
                    "bridge",
                    w.host_local(&["10.208.0.0/24"]),
                    json!({"bridge": w.tag, "vlan": 7, "isGateway": true, "preserveDefaultVlan": false}),
                )
            },
            warm_up: true,
            del_after_failure: false,
        },
        Case {
            name: "ptp masquerade, dual stack",
            plugin: "ptp",
            ifname: "eth0",
            setup: |w| {
                conf(w, "ptp", w.host_local(&["10.203.0.0/24", "fd00:203::/64"]), json!({"ipMasq": true, "mtu": 1400}))
            },
            warm_up: true,
            del_after_failure: false,
        },
        Case {
            name: "macvlan on a host bridge",
            plugin: "macvlan",
            ifname: "eth0",
            setup: |w| {
                // A bridge with a port: it has carrier, which macvlans inherit.
                w.host.exec("ip link add mvmaster type bridge");
                w.host.exec("ip link add mvport0 type veth peer name mvport1");
                w.host.exec("ip link set mvport1 up");
                w.host.exec("ip link set mvport0 master mvmaster up");
                w.host.exec("ip link set mvmaster up");
                conf(w, "macvlan", w.host_local(&["10.204.0.0/24"]), json!({"master": "mvmaster", "mtu": 1400}))
            },
            warm_up: true,
            del_after_failure: false,
        },
        Case {
            name: "host-device by name",
            plugin: "host-device",
            ifname: "net1",
            setup: |w| {
                w.host.exec("ip link add hdev0 type veth peer name hdev1");
                // The peer stays in the host; without addrgenmode none it
                // gains and loses a link-local address as hdev0's carrier
                // comes and goes, in the kernel's own time.
                w.host.exec("ip link set hdev1 addrgenmode none");
                w.host.exec("ip link set hdev1 up");
                conf(w, "host-device", w.host_local(&["10.205.0.0/24"]), json!({"device": "hdev0"}))
            },
            warm_up: true,
            del_after_failure: false,
        },
        Case {
            name: "tap on a container bridge",
            plugin: "tap",
            ifname: "tap0",
            setup: |w| {
                w.cont.exec("ip link add tapbr type bridge");
                conf(
                    w,
                    "tap",
                    w.host_local(&["10.206.0.0/24"]),
                    json!({"bridge": "tapbr", "mtu": 1400, "mac": "02:00:00:00:aa:06"}),
                )
            },
            warm_up: true,
            del_after_failure: false,
        },
        Case {
            name: "sbr moving routes into a table",
            plugin: "sbr",
            ifname: "eth0",
            setup: |w| {
                w.host.exec(&format!("ip link add sb0 type veth peer name eth0 netns {}", w.cont.name));
                w.cont.exec("ip addr add 10.207.0.2/24 dev eth0");
                w.cont.exec("ip -6 addr add fd00:207::2/64 dev eth0 nodad");
                w.cont.exec("ip link set eth0 up");
                w.cont.exec("ip route add default via 10.207.0.1 dev eth0");
                w.cont.exec("ip route add 10.99.0.0/16 via 10.207.0.1 dev eth0");
                let mut c = conf(w, "sbr", Value::Null, json!({}));
                c["prevResult"] = json!({
                    "cniVersion": "1.0.0",
                    "interfaces": [{"name": "eth0", "sandbox": w.cont.path()}],
                    "ips": [{"address": "10.207.0.2/24", "gateway": "10.207.0.1", "interface": 0},
                            {"address": "fd00:207::2/64", "gateway": "fd00:207::1", "interface": 0}]
                });
                c
            },
            // sbr's DEL leaves the interface's routes in their table (as the reference does).
            warm_up: false,
            del_after_failure: false,
        },
        Case {
            name: "dummy with host-local",
            plugin: "dummy",
            ifname: "eth0",
            setup: |w| {
                if !w.host.try_exec("ip link add dmprobe type dummy") {
                    return Value::Null;
                }
                w.host.exec("ip link del dmprobe");
                conf(w, "dummy", w.host_local(&["10.214.0.0/24"]), json!({}))
            },
            warm_up: true,
            del_after_failure: false,
        },
        Case {
            name: "ipvlan l2 on a host veth",
            plugin: "ipvlan",
            ifname: "eth0",
            setup: |w| {
                w.host.exec("ip link add ipm0 type veth peer name ipm1");
                w.host.exec("ip link set ipm0 up");
                if !w.host.try_exec("ip link add ipprobe link ipm0 type ipvlan mode l2") {
                    return Value::Null;
                }
                w.host.exec("ip link del ipprobe");
                conf(w, "ipvlan", w.host_local(&["10.215.0.0/24"]), json!({"master": "ipm0", "mtu": 1400}))
            },
            warm_up: true,
            del_after_failure: false,
        },
        Case {
            name: "vlan on a host veth",
            plugin: "vlan",
            ifname: "eth0",
            setup: |w| {
                w.host.exec("ip link add vlm0 type veth peer name vlm1");
                w.host.exec("ip link set vlm0 up");
                if !w.host.try_exec("ip link add vlprobe link vlm0 type vlan id 9") {
                    return Value::Null;
                }
                w.host.exec("ip link del vlprobe");
                conf(w, "vlan", w.host_local(&["10.216.0.0/24"]), json!({"master": "vlm0", "vlanId": 9}))
            },
            warm_up: true,
            del_after_failure: false,
        },
        Case {
            name: "vrf taking the container interface and its routes",
            plugin: "vrf",
            ifname: "eth0",
            setup: |w| {
                if !w.cont.try_exec("ip link add vrfprobe type vrf table 99") {
                    return Value::Null;
                }
                w.cont.exec("ip link del vrfprobe");
                let prev = w.attached(217);
                conf(w, "vrf", Value::Null, json!({"prevResult": prev, "vrfname": "fivrf", "table": 1001}))
            },
            // Leaving the VRF on DEL does not bring the routes back into the main table.
            warm_up: false,
            del_after_failure: false,
        },
        Case {
            name: "tuning sysctls and every link attribute",
            plugin: "tuning",
            ifname: "eth0",
            setup: |w| {
                let prev = w.attached(210);
                w.watch("ip -d link show eth0");
                w.watch("cat /proc/sys/net/ipv4/conf/eth0/arp_filter /proc/sys/net/ipv6/conf/eth0/accept_ra");
                conf(
                    w,
                    "tuning",
                    Value::Null,
                    json!({"dataDir": w.state_dir(), "prevResult": prev,
                           "sysctl": {"net.ipv4.conf.eth0.arp_filter": "1", "net.ipv6.conf.IFNAME.accept_ra": "0"},
                           "mac": "02:00:00:00:aa:0a", "promisc": true, "mtu": 1300, "allmulti": true,
                           "txQLen": 500}),
                )
            },
            warm_up: true,
            del_after_failure: false,
        },
        Case {
            name: "bandwidth both directions (tbf, ingress redirect, ifb)",
            plugin: "bandwidth",
            ifname: "eth0",
            setup: |w| {
                let prev = w.attached(211);
                conf(
                    w,
                    "bandwidth",
                    Value::Null,
                    json!({"prevResult": prev, "ingressRate": 8_000_000, "ingressBurst": 80_000,
                           "egressRate": 4_000_000, "egressBurst": 40_000}),
                )
            },
            warm_up: true,
            del_after_failure: false,
        },
        Case {
            name: "portmap tcp and udp, dual stack, with SNAT",
            plugin: "portmap",
            ifname: "eth0",
            setup: |w| {
                let prev = w.attached(212);
                conf(
                    w,
                    "portmap",
                    Value::Null,
                    json!({"prevResult": prev, "snat": true, "runtimeConfig": {"portMappings": [
                        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                        {"hostPort": 8053, "containerPort": 53, "protocol": "udp", "hostIP": "10.212.0.1"}]}}),
                )
            },
            warm_up: true,
            del_after_failure: false,
        },
        Case {
            name: "portmap with conditions (per-mapping rules)",
            plugin: "portmap",
            ifname: "eth0",
            setup: |w| {
                let prev = w.attached(218);
                conf(
                    w,
                    "portmap",
                    Value::Null,
                    json!({"prevResult": prev, "conditionsV4": ["-s", "192.168.77.0/24", "!", "-i", "lo"],
                           "conditionsV6": ["ip6 saddr fd77::/64"], "runtimeConfig": {"portMappings": [
                        {"hostPort": 8081, "containerPort": 81, "protocol": "tcp"}]}}),
                )
            },
            warm_up: true,
            del_after_failure: false,
        },
        Case {
            name: "firewall with the isolated ingress policy",
            plugin: "firewall",
            ifname: "eth0",
            setup: |w| {
                let prev = w.attached(213);
                conf(w, "firewall", Value::Null, json!({"prevResult": prev, "ingressPolicy": "isolated"}))
            },
            // The bridge's isolation elements are shared and outlive DEL.
            warm_up: true,
            del_after_failure: false,
        },
        Case {
            name: "firewall through dockerd's iptables-nft FORWARD policy",
            plugin: "firewall",
            ifname: "eth0",
            setup: |w| {
                // nft's listing of the host holds iptables-nft's rules.
                w.host.exec("iptables-nft -w -P FORWARD DROP");
                w.host.exec("ip6tables-nft -w -P FORWARD DROP");
                let prev = w.attached(214);
                conf(w, "firewall", Value::Null, json!({"prevResult": prev}))
            },
            // CNI-FORWARD, CNI-ADMIN and their jumps outlive DEL, as the reference leaves them.
            warm_up: true,
            del_after_failure: false,
        },
        Case {
            name: "flannel delegating to bridge and host-local (its saved config)",
            plugin: "flannel",
            ifname: "eth0",
            setup: |w| {
                let subnet_env = w.data.path().join("subnet.env");
                std::fs::write(
                    &subnet_env,
                    "FLANNEL_NETWORK=10.218.0.0/16\nFLANNEL_SUBNET=10.218.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
                )
                .unwrap();
                conf(
                    w,
                    "flannel",
                    json!({"dataDir": w.data.path()}),
                    json!({"subnetFile": subnet_env, "dataDir": w.state_dir(),
                           "delegate": {"bridge": format!("{}br", w.tag)}}),
                )
            },
            // The delegate's bridge and its gateway address are shared.
            warm_up: true,
            del_after_failure: true,
        },
    ]
}

/// Whether the binary fails the first step of a loopback ADD when told to.
fn fault_injection_built_in() -> bool {
    let ns = Netns::new("fiprobe");
    let conf = r#"{"cniVersion":"1.0.0","name":"probe","type":"loopback"}"#;
    let r = Call::new("loopback").container("probe", &ns.path(), "lo").env("CNIBOX_FAIL_AT", "1").run("ADD", conf);
    r.code != 0 && r.stdout.contains("injected failure")
}

/// The most steps any ADD may have; a bound against endless loops.
const MAX_STEPS: usize = 100;

fn run_case(case: &Case) -> Option<usize> {
    let w = World::new();
    let conf = (case.setup)(&w);
    if conf.is_null() {
        return None;
    }
    let conf = conf.to_string();
    let call = Call::new(case.plugin)
        .container(&format!("{}-c", w.tag), &w.cont.path(), case.ifname)
        .in_netns(&w.host)
        .env("CNI_PATH", &format!("{}:/usr/lib/cni", plugin_dir().display()));
    if case.warm_up {
        call.run("ADD", &conf).ok();
        call.run("DEL", &conf).ok();
    }
    let before = w.state();
    for n in 1..=MAX_STEPS {
        let r = call.clone().env("CNIBOX_FAIL_AT", &n.to_string()).run("ADD", &conf);
        if r.code == 0 {
            call.run("DEL", &conf).ok();
            if case.warm_up {
                let left = diff(&before, &w.state());
                assert!(left.is_empty(), "{}: DEL after a full ADD left:\n{}", case.name, left.join("\n"));
            }
            return Some(n - 1);
        }
        assert!(
            r.stdout.contains("injected failure"),
            "{}: step {n}: a real failure: {}\n{}",
            case.name,
            r.stdout,
            r.stderr
        );
        if case.del_after_failure {
            call.run("DEL", &conf).ok();
        }
        let left = diff(&before, &w.state());
        assert!(
            left.is_empty(),
            "{}: ADD failing at step {n} ({}) left:\n{}\n{}",
            case.name,
            r.json()["msg"],
            left.join("\n"),
            r.stderr
        );
    }
    panic!("{}: ADD still failing after {MAX_STEPS} injected failures", case.name);
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn every_failed_step_leaves_nothing_behind() {
    require_root();
    if !fault_injection_built_in() {
        eprintln!("skipped: cnibox was built without the fault-injection feature (make test builds it)");
        return;
    }
    // One thread per case: they share nothing.
    let cases = cases();
    std::thread::scope(|s| {
        let handles: Vec<_> = cases.iter().map(|c| (c.name, s.spawn(|| run_case(c)))).collect();
        for (name, h) in handles {
            match h.join() {
                Ok(Some(steps)) => eprintln!("{name}: {steps} steps, each failure cleaned up"),
                Ok(None) => eprintln!("{name}: skipped, this kernel cannot run it"),
                Err(e) => std::panic::resume_unwind(e),
            }
        }
    });
}
