//! Soak: many bridge + host-local ADD/DEL cycles from parallel workers, then
//! nothing may be left (links, nftables elements, reservations), the test
//! process's file descriptors must be flat, and so must the plugin's peak
//! RSS (wait4 rusage of the calls, first 50 against last 50).
//!
//! `short_soak` runs in `make test`; `soak` (500 cycles, 16 workers) is
//! `#[ignore]`d and run by `make soak`.
mod common;
mod state;

use std::io::Read;
use std::sync::Mutex;

use common::*;
use serde_json::json;

/// A finished call: exit code, stdout, the process's peak RSS in KiB.
struct Measured {
    code: i32,
    stdout: String,
    max_rss_kib: i64,
}

/// Runs the call and reaps it with wait4 for its resource usage.
fn run_measured(call: &Call, verb: &str, conf: &str) -> Measured {
    let mut child = call.spawn(verb, conf);
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let pid = child.id() as i32;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it in.
    let mut usage: nix::libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our unreaped child; both pointers are to live locals.
    let rc = unsafe { nix::libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4: {}", std::io::Error::last_os_error());
    // `child` is reaped already: dropping it does not wait again.
    drop(child);
    let code = if nix::libc::WIFEXITED(status) { nix::libc::WEXITSTATUS(status) } else { -1 };
    assert_eq!(code, 0, "{verb} failed: {stdout}\n{stderr}");
    Measured { code, stdout, max_rss_kib: usage.ru_maxrss }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn median(mut v: Vec<i64>) -> i64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn soak_cycles(cycles: usize, workers: usize) {
    let host = Netns::new("skh");
    let data = TempDir::new("soak");
    let name = unique("soaknet");
    let conf = json!({"cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": unique("skbr"),
        "isGateway": true, "ipMasq": true,
        "ipam": {"type": "host-local", "dataDir": data.path(), "ranges": [[{"subnet": "10.230.0.0/16"}]]}})
    .to_string();
    let cni_path = format!("{}:/usr/lib/cni", plugin_dir().display());
    let containers: Vec<Netns> = (0..workers).map(|_| Netns::new("skc")).collect();
    // The first cycle creates what the network shares (bridge, nft table).
    let call = |w: usize, id: &str| {
        Call::new("bridge")
            .container(id, &containers[w].path(), "eth0")
            .in_netns(&host)
            .env("CNI_PATH", &cni_path)
            .env("CNIBOX_LOG", "error")
    };
    run_measured(&call(0, "soak-warmup"), "ADD", &conf);
    run_measured(&call(0, "soak-warmup"), "DEL", &conf);
    let fds_before = open_fds();

    // The peak RSS of every call, in the order they finished.
    let samples: Mutex<Vec<i64>> = Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for w in 0..workers {
            let (samples, next, call, conf) = (&samples, &next, &call, &conf);
            s.spawn(move || loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n >= cycles {
                    break;
                }
                let id = format!("soak-{n}");
                let add = run_measured(&call(w, &id), "ADD", conf);
                assert_eq!(add.code, 0);
                assert!(add.stdout.contains("10.230."), "{}", add.stdout);
                let del = run_measured(&call(w, &id), "DEL", conf);
                samples.lock().unwrap().extend([add.max_rss_kib, del.max_rss_kib]);
            });
        }
    });

    // Nothing left behind.
    assert!(state::host_veths(&host).is_empty(), "veths left: {:?}", state::host_veths(&host));
    assert!(state::nft_elements(&host).is_empty(), "nft elements left: {:?}", state::nft_elements(&host));
    assert!(state::reservations(data.path()).is_empty(), "reservations left");
    for c in &containers {
        let links = c.exec("ip -o link show");
        assert_eq!(links.lines().count(), 1, "container links left: {links}");
    }
    // The test process holds no more descriptors than before (pipes closed).
    let fds_after = open_fds();
    assert!(fds_after <= fds_before + 2, "file descriptors grew from {fds_before} to {fds_after}");
    // The plugin's peak RSS does not grow over the run.
    let samples = samples.into_inner().unwrap();
    let window = 50.min(samples.len() / 2);
    let (first, last) = (median(samples[..window].to_vec()), median(samples[samples.len() - window..].to_vec()));
    eprintln!("{cycles} cycles over {workers} workers: peak RSS median {first} KiB first, {last} KiB last");
    assert!(last <= first + first / 5 + 1024, "peak RSS grew from {first} KiB to {last} KiB");
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn short_soak() {
    require_root();
    soak_cycles(64, 8);
}

#[test]
#[ignore = "long: run by `make soak`"]
fn soak() {
    require_root();
    soak_cycles(500, 16);
}
