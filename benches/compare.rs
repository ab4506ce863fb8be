//! cnibox and the reference plugins, measured side by side (`make bench`).
//!
//! Usage (as root): compare CNIBOX_DIR REFERENCE_DIR NOOP_PLUGIN MAXRSS [OUTPUT.md]
//!
//! A small libcni-like driver runs the same configurations against each
//! suite, alternating them, inside a fake host netns made here. A third
//! "suite" links every plugin name to a do-nothing static C program: its
//! figures are the floor (fork/exec, pipes, this driver) that ratios are
//! computed above, so the harness's own cost does not hide the difference.

use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const VERSION: &str = "1.0.0"; // the newest version the Debian reference speaks
const HOST_NS: &str = "cnibox-bench-host";

struct Suite {
    name: &'static str,
    dir: PathBuf,
}

/// One network configuration list, as a runtime holds it.
struct ConfList {
    name: String,
    plugins: Vec<Value>,
    ifname: &'static str,
}

fn sh(cmd: &str) {
    let ok = Command::new("sh").arg("-c").arg(cmd).status().map(|s| s.success()).unwrap_or(false);
    assert!(ok, "`{cmd}` failed");
}

fn netns_path(name: &str) -> String {
    format!("/run/netns/{name}")
}

/// Execs one plugin the way a runtime does; returns its parsed stdout.
fn exec_plugin(suite: &Suite, verb: &str, container: &str, ifname: &str, conf: &Value) -> Result<Value, String> {
    let plugin = conf["type"].as_str().unwrap_or_default();
    let start = Instant::now();
    let mut child = Command::new(suite.dir.join(plugin))
        .env_clear()
        .env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", netns_path(container))
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", &suite.dir)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{plugin}: {e}"))?;
    child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    log_call(suite, verb, plugin, start.elapsed());
    if !out.status.success() {
        return Err(format!(
            "{} {verb} {plugin} failed: {}{}",
            suite.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if out.stdout.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{plugin}: bad output: {e}"))
}

/// With BENCH_CALL_LOG=FILE, appends "suite verb plugin microseconds" for
/// every plugin call: where a row's time goes, plugin by plugin.
fn log_call(suite: &Suite, verb: &str, plugin: &str, took: Duration) {
    if let Some(path) = std::env::var_os("BENCH_CALL_LOG") {
        let line = format!("{} {verb} {plugin} {}\n", suite.name, took.as_micros());
        let file = std::fs::OpenOptions::new().append(true).create(true).open(path);
        let _ = file.and_then(|mut f| f.write_all(line.as_bytes()));
    }
}

/// The config one plugin of the list receives.
/// Each container maps its own host port (a node never maps one twice).
fn host_port(container: &str) -> u64 {
    20000 + container.rsplit('c').next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0)
}

fn plugin_conf(list: &ConfList, index: usize, prev: &Value, container: &str) -> Value {
    let mut conf = list.plugins[index].clone();
    conf["name"] = list.name.clone().into();
    conf["cniVersion"] = VERSION.into();
    if !prev.is_null() {
        conf["prevResult"] = prev.clone();
    }
    // runtimeConfig for the capabilities the plugin declares, as libcni does.
    if conf["capabilities"]["portMappings"] == true {
        conf["runtimeConfig"] =
            json!({"portMappings": [{"hostPort": host_port(container), "containerPort": 80, "protocol": "tcp"}]});
    }
    conf
}

fn chain_add(suite: &Suite, list: &ConfList, container: &str) -> Result<Value, String> {
    let mut prev = Value::Null;
    for i in 0..list.plugins.len() {
        prev = exec_plugin(suite, "ADD", container, list.ifname, &plugin_conf(list, i, &prev, container))?;
    }
    Ok(prev)
}

fn chain_del(suite: &Suite, list: &ConfList, container: &str, prev: &Value) -> Result<(), String> {
    for i in (0..list.plugins.len()).rev() {
        exec_plugin(suite, "DEL", container, list.ifname, &plugin_conf(list, i, prev, container))?;
    }
    Ok(())
}

fn add_del(suite: &Suite, list: &ConfList, container: &str) -> Duration {
    let start = Instant::now();
    let result = chain_add(suite, list, container).unwrap_or_else(|e| panic!("{e}"));
    chain_del(suite, list, container, &result).unwrap_or_else(|e| panic!("{e}"));
    let took = start.elapsed();
    wait_for_detached();
    took
}

/// Waits for the detached processes the measured calls left behind: cnibox
/// hands the kernel's slow tail of a link or nftables deletion to one
/// (src/netlink/detached.rs). The kernel work they wait for would otherwise
/// land in the next measurement, another suite's. This driver is their
/// subreaper (see main), and all its own children are reaped by now.
fn wait_for_detached() {
    let mut status = 0;
    while unsafe { nix::libc::waitpid(-1, &mut status, 0) } > 0 {}
}

/// The median: what the issue asks for. Run the bench on an otherwise idle
/// machine; other work's load shows up in medians.
fn typical(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs `f` for every suite in turn, `rounds` times, and returns the medians.
fn alternate(suites: &[Suite], rounds: usize, mut f: impl FnMut(&Suite) -> Duration) -> Vec<Duration> {
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); suites.len()];
    for _ in 0..rounds {
        for (i, s) in suites.iter().enumerate() {
            samples[i].push(f(s));
        }
    }
    samples.into_iter().map(typical).collect()
}

fn parallel_add_del(suite: &Suite, list: &ConfList, containers: &[String]) -> Duration {
    let start = Instant::now();
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = containers.iter().map(|c| s.spawn(move || chain_add(suite, list, c))).collect();
        handles.into_iter().map(|h| h.join().unwrap().unwrap_or_else(|e| panic!("{e}"))).collect()
    });
    std::thread::scope(|s| {
        for (c, r) in containers.iter().zip(&results) {
            s.spawn(move || chain_del(suite, list, c, r).unwrap_or_else(|e| panic!("{e}")));
        }
    });
    let took = start.elapsed();
    wait_for_detached();
    took
}

/// Peak RSS (KiB) of one plugin call (with the processes it waits for),
/// measured by the tiny static `maxrss` launcher: Linux carries the RSS
/// high-water mark across exec, so a plugin spawned from this driver would
/// report the driver's own RSS.
fn peak_rss_kib(maxrss: &Path, suite: &Suite, list: &ConfList, container: &str) -> i64 {
    let conf = plugin_conf(list, 0, &Value::Null, container);
    let plugin = conf["type"].as_str().unwrap();
    let mut child = Command::new(maxrss)
        .arg(suite.dir.join(plugin))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", netns_path(container))
        .env("CNI_IFNAME", list.ifname)
        .env("CNI_PATH", &suite.dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let result: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let _ = chain_del(suite, list, container, &result);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kib = stderr.lines().find_map(|l| l.strip_prefix("maxrss ")).and_then(|n| n.trim().parse().ok());
    kib.unwrap_or_else(|| panic!("{}: no peak RSS reported: {stderr}", suite.name))
}

fn installed_size(dir: &Path, names: &[String]) -> u64 {
    // Distinct files only: cnibox's names are links to one binary.
    let mut seen = std::collections::HashSet::new();
    names
        .iter()
        .filter_map(|n| std::fs::metadata(dir.join(n)).ok())
        .filter(|m| {
            use std::os::unix::fs::MetadataExt;
            seen.insert(m.ino())
        })
        .map(|m| m.len())
        .sum()
}

struct Row {
    what: String,
    cnibox: f64,
    reference: f64,
    floor: f64,
    unit: &'static str,
    budget: String,
    /// Why the row was not measured (a plugin cnibox does not have yet).
    skipped: Option<String>,
}

impl Row {
    /// reference / cnibox, both measured above the floor.
    fn ratio(&self) -> f64 {
        (self.reference - self.floor) / (self.cnibox - self.floor).max(1e-9)
    }
}

/// The applets the cnibox under test provides (`cnibox --list`).
fn cnibox_applets(dir: &Path) -> Vec<String> {
    let out = Command::new(dir.join("cnibox")).arg("--list").output().expect("running cnibox --list");
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// The plugins of `list` (and their IPAM delegates) that cnibox lacks.
fn missing_plugins(list: &ConfList, have: &[String]) -> Vec<String> {
    let mut missing = Vec::new();
    for p in &list.plugins {
        for t in [&p["type"], &p["ipam"]["type"]] {
            if let Some(t) = t.as_str() {
                if !have.iter().any(|h| h == t) && !missing.iter().any(|m| m == t) {
                    missing.push(t.to_string());
                }
            }
        }
    }
    missing
}

fn host_local(data: &Path, subnet: &str) -> Value {
    json!({"type": "host-local", "dataDir": data, "ranges": [[{"subnet": subnet}]]})
}

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    if args.len() < 5 {
        eprintln!("usage: compare CNIBOX_DIR REFERENCE_DIR NOOP_PLUGIN MAXRSS [OUTPUT.md]");
        std::process::exit(2);
    }
    let work = std::env::temp_dir().join(format!("cnibox-bench-{}", std::process::id()));
    let floor_dir = work.join("floor");
    std::fs::create_dir_all(&floor_dir).unwrap();
    let names: Vec<String> =
        ["bridge", "host-local", "loopback", "portmap", "firewall", "tuning"].map(String::from).to_vec();
    for n in &names {
        std::os::unix::fs::symlink(std::fs::canonicalize(&args[3]).unwrap(), floor_dir.join(n)).unwrap();
    }
    let suites = [
        Suite { name: "cnibox", dir: PathBuf::from(&args[1]) },
        Suite { name: "reference", dir: PathBuf::from(&args[2]) },
        Suite { name: "floor", dir: floor_dir },
    ];
    // Orphans of the plugins (detached processes) become ours: see wait_for_detached.
    unsafe { nix::libc::prctl(nix::libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(15);
    // BENCH_ONLY=word,word: only the rows whose name contains one of them,
    // for working on one figure; the table is then printed, not written.
    let only: Option<Vec<String>> =
        std::env::var("BENCH_ONLY").ok().map(|o| o.split(',').map(str::to_string).collect());
    let selected = |what: &str| only.as_ref().is_none_or(|words| words.iter().any(|w| what.contains(w.as_str())));

    // A fake host: this process (and so every plugin it runs) enters it.
    let _ = Command::new("ip").args(["netns", "del", HOST_NS]).stderr(Stdio::null()).status();
    sh(&format!("ip netns add {HOST_NS} && ip -n {HOST_NS} link set lo up"));
    let host = std::fs::File::open(netns_path(HOST_NS)).unwrap();
    nix::sched::setns(host.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
    let containers: Vec<String> = (0..265).map(|i| format!("cnibox-bench-c{i}")).collect();
    for c in &containers {
        // A run that panicked may have left it behind.
        sh(&format!("ip netns del {c} 2>/dev/null; ip netns add {c}"));
    }
    let data = work.join("ipam");

    let loopback = ConfList { name: "bench-lo".into(), plugins: vec![json!({"type": "loopback"})], ifname: "lo" };
    // An IPAM plugin receives the whole network config and reads its `ipam` key.
    let hl = host_local(&data, "10.77.0.0/16");
    let ipam_only =
        ConfList { name: "bench-hl".into(), plugins: vec![json!({"type": "host-local", "ipam": hl})], ifname: "eth0" };
    let bridge = ConfList {
        name: "bench-br".into(),
        plugins: vec![json!({"type": "bridge", "bridge": "benchbr0", "isGateway": true,
                             "ipam": host_local(&data, "10.78.0.0/16")})],
        ifname: "eth0",
    };
    let full = ConfList {
        name: "bench-full".into(),
        plugins: vec![
            json!({"type": "bridge", "bridge": "benchbr1", "isGateway": true, "ipMasq": true,
                   "ipam": host_local(&data, "10.79.0.0/16")}),
            json!({"type": "portmap", "capabilities": {"portMappings": true}}),
            json!({"type": "firewall"}),
            json!({"type": "tuning", "sysctl": {"net.ipv4.conf.IFNAME.arp_notify": "1"}}),
        ],
        ifname: "eth0",
    };
    let c0 = &containers[0];
    let have = cnibox_applets(&suites[0].dir);
    let mut rows = Vec::new();
    // Measures one row with `f`, or records it as skipped when cnibox lacks a plugin of `list`.
    let mut row = |what: &str, list: &ConfList, budget: &str, f: &mut dyn FnMut() -> Vec<Duration>| {
        if !selected(what) {
            return;
        }
        let missing = missing_plugins(list, &have);
        let (m, skipped) = if missing.is_empty() {
            let m = f();
            println!(
                "{what:<48} cnibox {:>8.2} ms  reference {:>8.2} ms  floor {:>7.2} ms",
                ms(m[0]),
                ms(m[1]),
                ms(m[2])
            );
            (m, None)
        } else {
            let why = format!("skipped: cnibox has no {}", missing.join(", "));
            println!("{what:<48} {why}");
            (vec![Duration::ZERO; 3], Some(why))
        };
        rows.push(Row {
            what: what.into(),
            cnibox: ms(m[0]),
            reference: ms(m[1]),
            floor: ms(m[2]),
            unit: "ms",
            budget: budget.into(),
            skipped,
        });
    };

    let version = |s: &Suite| {
        let start = Instant::now();
        exec_plugin(s, "VERSION", c0, "eth0", &json!({"cniVersion": VERSION, "type": "bridge"})).unwrap();
        start.elapsed()
    };
    row("VERSION exec", &bridge, "≥ 4×", &mut || alternate(&suites, rounds * 4, version));
    // Cheap rows get more rounds: their medians are otherwise at the mercy of a busy moment.
    row("host-local ADD+DEL", &ipam_only, "", &mut || alternate(&suites, rounds * 4, |s| add_del(s, &ipam_only, c0)));
    row("loopback ADD+DEL", &loopback, "", &mut || alternate(&suites, rounds * 4, |s| add_del(s, &loopback, c0)));
    row("bridge + host-local ADD+DEL", &bridge, "≥ 5×", &mut || {
        alternate(&suites, rounds, |s| add_del(s, &bridge, c0))
    });
    row("bridge+ipMasq, portmap, firewall, tuning ADD+DEL", &full, "≥ 8×", &mut || {
        alternate(&suites, rounds, |s| add_del(s, &full, c0))
    });
    // dockerd's policy on the node: cnibox's firewall must also open the way
    // through iptables (nft/cni_forward.rs), as the reference always does.
    row("full chain, dockerd's iptables -P FORWARD DROP", &full, "", &mut || {
        sh("iptables-nft -w -P FORWARD DROP && ip6tables-nft -w -P FORWARD DROP");
        let m = alternate(&suites, rounds, |s| add_del(s, &full, c0));
        sh("iptables-nft -w -P FORWARD ACCEPT && ip6tables-nft -w -P FORWARD ACCEPT");
        m
    });
    let par = &containers[1..65];
    row("64 bridge ADDs in parallel, then 64 DELs", &bridge, "≥ 5×", &mut || {
        // Each round takes ~1 s; the row varies more than others, so not too few.
        alternate(&suites, (rounds / 2).max(3), |s| parallel_add_del(s, &bridge, par))
    });

    // Growth with the node's population: the full chain on an empty node,
    // then with 200 containers of the same network present.
    let population = &containers[65..265];
    let mut growth = Vec::new();
    let growth_missing =
        if selected("full chain with 200 containers") { missing_plugins(&full, &have) } else { Vec::new() };
    if !growth_missing.is_empty() {
        println!("full chain with 200 containers: skipped: cnibox has no {}", growth_missing.join(", "));
    }
    for s in suites.iter().filter(|_| growth_missing.is_empty() && selected("full chain with 200 containers")) {
        let empty = typical((0..rounds).map(|_| add_del(s, &full, c0)).collect());
        let results: Vec<Value> = population.iter().map(|c| chain_add(s, &full, c).unwrap()).collect();
        let busy = typical((0..rounds).map(|_| add_del(s, &full, c0)).collect());
        for (c, r) in population.iter().zip(&results) {
            chain_del(s, &full, c, r).unwrap();
        }
        wait_for_detached();
        println!("{:<10} full chain: empty node {:.2} ms, 200 containers {:.2} ms", s.name, ms(empty), ms(busy));
        growth.push((s.name, ms(empty), ms(busy)));
    }

    // The median of a few calls: what a call touches varies a little with timing.
    let mut rss_samples: Vec<Vec<i64>> = vec![Vec::new(); suites.len()];
    for _ in 0..if selected("peak RSS") { 5 } else { 1 } {
        for (i, s) in suites.iter().enumerate() {
            rss_samples[i].push(peak_rss_kib(Path::new(&args[4]), s, &bridge, c0));
        }
    }
    let rss: Vec<i64> = rss_samples
        .into_iter()
        .map(|mut v| {
            v.sort();
            v[v.len() / 2]
        })
        .collect();
    let all_ref: Vec<String> = std::fs::read_dir(&suites[1].dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let all_ours: Vec<String> = std::fs::read_dir(&suites[0].dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let size_ours = installed_size(&suites[0].dir, &all_ours);
    let size_ref = installed_size(&suites[1].dir, &all_ref);

    for c in &containers {
        let _ = Command::new("ip").args(["netns", "del", c]).status();
    }
    let _ = Command::new("ip").args(["netns", "del", HOST_NS]).status();
    let _ = std::fs::remove_dir_all(&work);

    let mut md = String::new();
    let machine = format!(
        "{} cores, {}, kernel {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                .split(':')
                .nth(1)
                .unwrap_or("")
                .trim()
                .to_string()))
            .unwrap_or_default(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim()
    );
    let date = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    md += &format!("# Benchmarks\n\nMeasured {date} on {machine} by `make bench` ({rounds} rounds alternating the suites; medians).\n");
    md += &format!(
        "cnibox: {}; reference: {} ({}).\n\n",
        suites[0].dir.display(),
        suites[1].dir.display(),
        "containernetworking-plugins, Debian"
    );
    md += "Ratios are reference / cnibox on the cost above the floor (the same calls answered by a do-nothing static C plugin).\n\n";
    md += "| what | cnibox | reference | floor | ratio | budget |\n|---|---:|---:|---:|---:|---|\n";
    for r in &rows {
        if let Some(why) = &r.skipped {
            md += &format!("| {} | | | | {why} | {} |\n", r.what, r.budget);
            continue;
        }
        // cnibox within the floor's noise has no meaningful ratio, only a
        // bound: its cost above the floor is under 2% of the reference's
        // and under 0.1 ms.
        let ratio = if r.cnibox - r.floor < (0.02 * (r.reference - r.floor)).min(0.1) {
            "at the floor (> 50×)".to_string()
        } else {
            format!("{:.1}×", r.ratio())
        };
        md += &format!(
            "| {} | {:.2} {u} | {:.2} {u} | {:.2} {u} | {ratio} | {} |\n",
            r.what,
            r.cnibox,
            r.reference,
            r.floor,
            r.budget,
            u = r.unit
        );
    }
    if !growth_missing.is_empty() {
        md += &format!(
            "| full chain with 200 containers / empty node | | | | skipped: cnibox has no {} | cnibox ≤ 1.1× |\n",
            growth_missing.join(", ")
        );
    }
    for (name, empty, busy) in &growth {
        md += &format!("| full chain with 200 containers / empty node, {name} | | | | {:.2}× ({busy:.2} / {empty:.2} ms) | cnibox ≤ 1.1× |\n", busy / empty);
    }
    md += &format!(
        "| peak RSS of one bridge ADD (median of 5) | {} KiB | {} KiB | {} KiB | {:.2} of reference | ≤ 0.5 |\n",
        rss[0],
        rss[1],
        rss[2],
        rss[0] as f64 / rss[1] as f64
    );
    md += &format!(
        "| installed size, every plugin | {:.2} MB ({} names) | {:.2} MB ({} files) | | {:.1}× smaller | ≥ 15× |\n",
        size_ours as f64 / 1e6,
        all_ours.len(),
        size_ref as f64 / 1e6,
        all_ref.len(),
        size_ref as f64 / size_ours.max(1) as f64
    );
    println!("\n{md}");
    if let Some(out) = args.get(5).filter(|_| only.is_none()) {
        let notes = std::fs::read_to_string(out)
            .ok()
            .and_then(|old| old.split_once("\n## Notes").map(|(_, n)| format!("\n## Notes{n}")))
            .unwrap_or_default();
        std::fs::write(out, md + &notes).unwrap();
    }
}
