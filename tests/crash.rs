//! Crash consistency: host-local and bridge ADDs killed with SIGKILL at
//! random moments. Afterwards the store must be readable, no IP may be held
//! twice, ADD/DEL must still work, and GC (with the survivors as the valid
//! attachments) must reclaim what the killed calls left: reservations, host
//! veths, nftables elements.
//!
//! The random delays come from a small PRNG seeded from the clock; the seed
//! is printed, and CNIBOX_CRASH_SEED=<seed> replays a run.
mod common;
mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// xorshift64*: plenty for picking delays.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let seed = std::env::var("CNIBOX_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
        eprintln!("crash test seed: {seed} (CNIBOX_CRASH_SEED={seed} replays it)");
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// How one call ended.
enum Outcome {
    /// It finished before the kill: exit code and stdout.
    Finished(i32, String),
    Killed,
}

/// Spawns the call, waits `delay`, kills it with SIGKILL unless it is done.
fn run_and_kill(call: &Call, conf: &str, delay: Duration) -> Outcome {
    let mut child: Child = call.spawn("ADD", conf);
    std::thread::sleep(delay);
    let killed = match child.try_wait().unwrap() {
        Some(_) => false,
        None => child.kill().is_ok(),
    };
    let out = child.wait_with_output().unwrap();
    match (killed, out.status.code()) {
        (false, Some(code)) => Outcome::Finished(code, String::from_utf8_lossy(&out.stdout).into_owned()),
        _ => Outcome::Killed,
    }
}

/// How long one ADD takes here, so that delays land inside it: the fastest
/// of a few (the first also creates what the network shares, and the tests
/// running alongside slow some down; too long a delay lets the ADD finish).
fn duration_of(call: &Call, conf: &str) -> Duration {
    let mut fastest = Duration::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        call.run("ADD", conf).ok();
        fastest = fastest.min(start.elapsed());
        call.run("DEL", conf).ok();
    }
    fastest
}

/// Every file of a host-local network dir is one the store understands.
/// Returns the reservations: IP -> (container ID, ifname).
fn check_store(dir: &Path) -> BTreeMap<IpAddr, (String, String)> {
    let mut held = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let content = std::fs::read_to_string(entry.path()).unwrap();
        if let Ok(ip) = name.parse::<IpAddr>() {
            let (id, ifname) = content
                .split_once("\r\n")
                .unwrap_or_else(|| panic!("reservation {name} holds {content:?}, not <id>\\r\\n<ifname>"));
            assert!(!id.is_empty() && !ifname.is_empty(), "reservation {name} holds {content:?}");
            held.insert(ip, (id.to_string(), ifname.to_string()));
        } else if let Some(_set) = name.strip_prefix("last_reserved_ip.") {
            assert!(content.trim().parse::<IpAddr>().is_ok(), "{name} holds {content:?}");
        } else if name == ".cnibox-owners" {
            check_owners_cache(dir, &content);
        } else {
            // The lock, and temporary files of killed calls (GC removes those).
            assert!(name == "lock" || name.starts_with(".cnibox-tmp."), "unexpected file {name} in the store");
        }
    }
    held
}

/// host-local's owners cache (a header with a hash of the rest, then one
/// line per file) never contradicts the files it vouches for. (A line of a
/// file since removed or changed is fine: the store reads such files. A
/// write torn by a kill fails the hash, and the store ignores it.)
fn check_owners_cache(dir: &Path, cache: &str) {
    use std::os::unix::fs::MetadataExt;
    let (header, body) = cache.split_once('\n').unwrap_or((cache, ""));
    let Some(hash) = header.strip_prefix("cnibox-owners 2 ") else {
        panic!("owners cache of an unknown version: {header:?}");
    };
    if hash != format!("{:016x}", cnibox::util::hash::fnv1a(&[body])) {
        // A torn cache: the store ignores it.
        return;
    }
    let stamp = |m: &std::fs::Metadata| (m.ctime(), m.ctime_nsec());
    let written = stamp(&std::fs::metadata(dir.join(".cnibox-owners")).unwrap());
    // `<ino> <size> <secs>.<nanos> <ip> <container ID> <ifname>`: a line the
    // store trusts (its file has that stamp, older than the cache) must name
    // the file's owner.
    for line in body.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 6, "owners cache line {line:?}");
        let Ok(meta) = std::fs::metadata(dir.join(fields[3])) else { continue };
        let (secs, nanos) = fields[2].split_once('.').unwrap();
        let recorded = (secs.parse::<i64>().unwrap(), nanos.parse::<i64>().unwrap());
        let same =
            meta.ino().to_string() == fields[0] && meta.size().to_string() == fields[1] && stamp(&meta) == recorded;
        if same && recorded < written {
            let content = std::fs::read_to_string(dir.join(fields[3])).unwrap();
            assert_eq!(content, format!("{}\r\n{}", fields[4], fields[5]), "owners cache line {line:?}");
        }
    }
}

/// No attachment holds two addresses of one family (each case has one range set per family).
fn assert_one_ip_per_set(held: &BTreeMap<IpAddr, (String, String)>) {
    let mut seen: BTreeSet<(String, String, bool)> = BTreeSet::new();
    for (ip, (id, ifname)) in held {
        assert!(seen.insert((id.clone(), ifname.clone(), ip.is_ipv6())), "{id}/{ifname} holds two addresses like {ip}");
    }
}

fn gc_conf(conf: &Value, survivors: &[(String, String)]) -> String {
    let mut c = conf.clone();
    c["cniVersion"] = json!("1.1.0");
    c["cni.dev/valid-attachments"] =
        survivors.iter().map(|(id, ifname)| json!({"containerID": id, "ifname": ifname})).collect();
    c.to_string()
}

fn result_ips(stdout: &str) -> Vec<IpAddr> {
    let v: Value = serde_json::from_str(stdout).unwrap();
    v["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ip| ip["address"].as_str().unwrap().split('/').next().unwrap().parse().unwrap())
        .collect()
}

const HOST_LOCAL_KILLS: usize = 120;
const BRIDGE_KILLS: usize = 90;

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn killed_host_local_adds() {
    require_root();
    let mut rng = Rng::seeded();
    let data = TempDir::new("crash-hl");
    let name = unique("crashhl");
    let conf = json!({"cniVersion": "1.0.0", "name": name, "type": "bridge",
        "ipam": {"type": "host-local", "dataDir": data.path(),
                 "ranges": [[{"subnet": "10.210.0.0/16"}], [{"subnet": "fd00:210::/64"}]]}});
    let text = conf.to_string();
    let call = |id: &str| Call::new("host-local").container(id, "/run/netns/none", "eth0");
    let typical = duration_of(&call("warmup"), &text);

    let mut survivors: Vec<(String, String)> = Vec::new();
    let mut survivor_ips: BTreeMap<IpAddr, String> = BTreeMap::new();
    let (mut kills, mut attempts) = (0, 0);
    while kills < HOST_LOCAL_KILLS && attempts < HOST_LOCAL_KILLS * 4 {
        let id = format!("hl{attempts}");
        attempts += 1;
        let delay = Duration::from_micros(rng.below(typical.as_micros() as u64 + 500));
        match run_and_kill(&call(&id), &text, delay) {
            Outcome::Killed => kills += 1,
            Outcome::Finished(0, out) => {
                for ip in result_ips(&out) {
                    assert!(survivor_ips.insert(ip, id.clone()).is_none(), "{ip} handed out twice");
                }
                survivors.push((id, "eth0".into()));
            }
            Outcome::Finished(code, out) => panic!("ADD {id} failed with {code}: {out}"),
        }
    }
    eprintln!("host-local: {kills} kills, {} survivors in {attempts} ADDs", survivors.len());
    assert!(kills >= HOST_LOCAL_KILLS / 2, "too few kills landed: {kills}");

    let dir = data.path().join(&name);
    let held = check_store(&dir);
    assert_one_ip_per_set(&held);
    for (ip, id) in &survivor_ips {
        assert_eq!(held.get(ip).map(|(i, _)| i.as_str()), Some(id.as_str()), "survivor's {ip}");
    }
    // A fresh round of ADDs still works and gets addresses nobody holds.
    for i in 0..10 {
        let id = format!("fresh{i}");
        let out = call(&id).run("ADD", &text).ok();
        for ip in result_ips(&out.to_string()) {
            assert!(!held.contains_key(&ip), "{ip} handed out again");
        }
        survivors.push((id, "eth0".into()));
    }
    // GC keeps the survivors only and clears the killed calls' temporary files.
    Call::new("host-local").run("GC", &gc_conf(&conf, &survivors)).ok();
    let after = check_store(&dir);
    let owners: BTreeSet<String> = after.values().map(|(id, _)| id.clone()).collect();
    let expected: BTreeSet<String> = survivors.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(owners, expected);
    assert_eq!(after.len(), survivors.len() * 2);
    assert!(std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().starts_with(".cnibox-tmp.")));
    for (id, _) in &survivors {
        call(id).run("DEL", &text).ok();
    }
    assert!(check_store(&dir).is_empty());
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn killed_bridge_adds() {
    require_root();
    let mut rng = Rng::seeded();
    let host = Netns::new("crh");
    let data = TempDir::new("crash-br");
    let name = unique("crashbr");
    let conf = json!({"cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": unique("crbr"),
        "isGateway": true, "ipMasq": true,
        "ipam": {"type": "host-local", "dataDir": data.path(), "ranges": [[{"subnet": "10.211.0.0/16"}]]}});
    let text = conf.to_string();
    let cni_path = format!("{}:/usr/lib/cni", plugin_dir().display());
    // Attachments spread over a few containers, a distinct ifname each.
    let containers: Vec<Netns> = (0..8).map(|_| Netns::new("crc")).collect();
    let call = |n: usize| {
        let ns = &containers[n % containers.len()];
        Call::new("bridge")
            .container(&format!("br{n}"), &ns.path(), &format!("eth{}", n / containers.len()))
            .in_netns(&host)
            .env("CNI_PATH", &cni_path)
            .env("CNIBOX_LOG", "error")
    };
    let typical = duration_of(&call(100_000), &text);

    let mut survivors: Vec<(String, String)> = Vec::new();
    let mut survivor_ips: BTreeMap<IpAddr, usize> = BTreeMap::new();
    let (mut kills, mut attempts) = (0, 0);
    while kills < BRIDGE_KILLS && attempts < BRIDGE_KILLS * 4 {
        let n = attempts;
        attempts += 1;
        let delay = Duration::from_micros(rng.below(typical.as_micros() as u64 + 1000));
        match run_and_kill(&call(n), &text, delay) {
            Outcome::Killed => kills += 1,
            Outcome::Finished(0, out) => {
                for ip in result_ips(&out) {
                    assert!(survivor_ips.insert(ip, n).is_none(), "{ip} handed out twice");
                }
                survivors.push((format!("br{n}"), format!("eth{}", n / containers.len())));
            }
            Outcome::Finished(code, out) => panic!("ADD {n} failed with {code}: {out}"),
        }
    }
    eprintln!("bridge: {kills} kills, {} survivors in {attempts} ADDs (one ADD: {typical:?})", survivors.len());
    assert!(kills >= BRIDGE_KILLS / 2, "too few kills landed: {kills}");

    let dir = data.path().join(&name);
    let held = check_store(&dir);
    assert_one_ip_per_set(&held);
    let fresh = 100_001;
    let out = call(fresh).run("ADD", &text).ok();
    assert!(!held.contains_key(&result_ips(&out.to_string())[0]), "a held IP handed out again");
    survivors.push((format!("br{fresh}"), format!("eth{}", fresh / containers.len())));

    eprintln!(
        "bridge before GC: {} reservations, {} host veths, {} nft elements for {} survivors",
        check_store(&dir).len(),
        state::host_veths(&host).len(),
        state::nft_elements(&host).len(),
        survivors.len()
    );
    // A GC without the list of valid attachments removes nothing.
    let before = (check_store(&dir).len(), state::host_veths(&host).len(), state::nft_elements(&host).len());
    let mut no_list = conf.clone();
    no_list["cniVersion"] = json!("1.1.0");
    Call::new("bridge").in_netns(&host).env("CNI_PATH", &cni_path).run("GC", &no_list.to_string()).ok();
    let after = (check_store(&dir).len(), state::host_veths(&host).len(), state::nft_elements(&host).len());
    assert_eq!(before, after, "GC without cni.dev/valid-attachments removed something");
    // GC with the survivors as the valid attachments.
    Call::new("bridge").in_netns(&host).env("CNI_PATH", &cni_path).run("GC", &gc_conf(&conf, &survivors)).ok();
    let owners: BTreeSet<String> = check_store(&dir).values().map(|(id, _)| id.clone()).collect();
    let expected: BTreeSet<String> = survivors.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(owners, expected, "reservations after GC");
    let veths = state::host_veths(&host);
    assert_eq!(veths.len(), survivors.len(), "host veths after GC: {veths:?}");
    let elements = state::nft_elements(&host);
    let element_owners: BTreeSet<String> =
        elements.iter().map(|(_, _, comment)| comment.split(' ').nth(1).unwrap_or("").to_string()).collect();
    assert_eq!(element_owners, expected, "masquerade elements after GC");

    // DEL of every survivor leaves nothing of the network.
    for (id, ifname) in &survivors {
        let n: usize = id.trim_start_matches("br").parse().unwrap();
        let ns = &containers[n % containers.len()];
        Call::new("bridge")
            .container(id, &ns.path(), ifname)
            .in_netns(&host)
            .env("CNI_PATH", &cni_path)
            .run("DEL", &text)
            .ok();
    }
    assert!(check_store(&dir).is_empty());
    assert!(state::host_veths(&host).is_empty());
    assert!(state::nft_elements(&host).is_empty());
}

/// A host end that had to take a random name (its derived name was taken)
/// is still found by DEL without the container's netns, by its tag.
#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn del_without_netns_finds_a_renamed_host_end() {
    require_root();
    let host = Netns::new("crrh");
    let data = TempDir::new("crash-rn");
    let conf = json!({"cniVersion": "1.0.0", "name": unique("crashrn"), "type": "bridge", "bridge": unique("crbr"),
        "ipam": {"type": "host-local", "dataDir": data.path(), "ranges": [[{"subnet": "10.212.0.0/24"}]]}})
    .to_string();
    let cni_path = format!("{}:/usr/lib/cni", plugin_dir().display());
    let cont = Netns::new("crrc");
    let call = |ns: &str| Call::new("bridge").container("rn1", ns, "eth0").in_netns(&host).env("CNI_PATH", &cni_path);
    let first = call(&cont.path()).run("ADD", &conf).ok();
    let derived = first["interfaces"][1]["name"].as_str().unwrap().to_string();
    call(&cont.path()).run("DEL", &conf).ok();
    // Someone else's link holds the derived name.
    host.exec(&format!("ip link add {derived} type veth peer name squatter"));
    host.exec(&format!("ip link set {derived} alias someone-else"));
    let second = call(&cont.path()).run("ADD", &conf).ok();
    let renamed = second["interfaces"][1]["name"].as_str().unwrap().to_string();
    assert_ne!(renamed, derived);
    // The runtime lost the netns path (the netns itself lives on): DEL without CNI_NETNS.
    call("").run("DEL", &conf).ok();
    assert!(!host.try_exec(&format!("ip link show {renamed}")), "{renamed} left behind");
    assert!(!cont.try_exec("ip link show eth0"), "the container end went with it");
    assert!(host.try_exec(&format!("ip link show {derived}")), "the link holding the derived name is not ours");
}
