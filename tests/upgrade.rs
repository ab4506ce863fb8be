//! Upgrading in place under load: `cnibox install` runs over an existing
//! installation, again and again, while 16 workers keep calling ADD and DEL
//! through the installed links (loopback, and bridge delegating to
//! host-local), and no call fails. The new binary is
//! renamed over the old one, so a call execs either the whole old file or
//! the whole new one; writing into the installed file instead would make
//! calls fail with ETXTBSY ("Text file busy") or exec half a binary.

mod common;
use common::*;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WORKERS: usize = 16;
const UPGRADES: usize = 6;

/// One plugin call through `bin_dir`, as a runtime makes it (in the netns
/// `host`, if any); the error says what failed, exec errors (ETXTBSY)
/// included.
fn call(
    bin_dir: &Path,
    host: Option<&Netns>,
    plugin: &str,
    verb: &str,
    env: &[(&str, &str)],
    stdin: &str,
) -> Result<(), String> {
    use std::io::Write;
    let mut cmd = match host {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &ns.name]).arg(bin_dir.join(plugin));
            c
        }
        None => Command::new(bin_dir.join(plugin)),
    };
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", verb)
        .env("CNI_PATH", bin_dir)
        .env("CNIBOX_LOG", "warn")
        .env("DBUS_SYSTEM_BUS_ADDRESS", NO_SYSTEM_BUS)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("{plugin} {verb}: exec failed: {e}"))?;
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().map_err(|e| format!("{plugin} {verb}: wait failed: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{plugin} {verb}: {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// A copy of the built binary with `extra` bytes appended: still the same
/// valid executable (the loader reads only what the ELF headers name), but
/// a different file, so installing it really replaces the installed one.
fn variant(dir: &Path, extra: usize) -> PathBuf {
    let mut bytes = std::fs::read(BIN).unwrap();
    bytes.resize(bytes.len() + extra, 0);
    let path = dir.join(format!("cnibox-{extra}"));
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

/// What the workers share: when to stop, how many calls they made, the
/// time span of every call, and every failure.
#[derive(Default)]
struct Load {
    stop: AtomicBool,
    calls: AtomicUsize,
    spans: Mutex<Vec<(Instant, Instant)>>,
    failures: Mutex<Vec<String>>,
}

/// ADD and DEL of loopback (in the worker's container netns) and of bridge
/// (from the worker's fake host netns, with host-local in the test's
/// directory as its delegate) until told to stop; a DEL follows every ADD
/// that was tried, so nothing is left behind. bridge runs its delegate
/// in-process only while CNI_PATH's host-local is the binary it runs
/// itself: across an upgrade, an old bridge execs the new host-local.
fn worker(n: usize, bin_dir: &Path, data_dir: &Path, load: &Load) {
    let host = Netns::new("uph");
    let ctr = Netns::new("upc");
    let lo = r#"{"cniVersion":"1.0.0","name":"upgrade-lo","type":"loopback"}"#;
    let bridge = format!(
        r#"{{"cniVersion":"1.0.0","name":"upgrade-br","type":"bridge","bridge":"cniup0","ipam":{{"type":"host-local","dataDir":"{}","ranges":[[{{"subnet":"10.123.0.0/16"}}]]}}}}"#,
        data_dir.display()
    );
    let netns = ctr.path();
    let steps: [(Option<&Netns>, &str, &str, &str, &str); 4] = [
        (None, "loopback", "ADD", lo, "lo"),
        (Some(&host), "bridge", "ADD", &bridge, "eth0"),
        (Some(&host), "bridge", "DEL", &bridge, "eth0"),
        (None, "loopback", "DEL", lo, "lo"),
    ];
    let mut round = 0;
    while !load.stop.load(Ordering::SeqCst) {
        let id = format!("upgrade-{n}-{round}");
        for (ns, plugin, verb, conf, ifname) in steps {
            let env = [("CNI_CONTAINERID", id.as_str()), ("CNI_NETNS", netns.as_str()), ("CNI_IFNAME", ifname)];
            let start = Instant::now();
            let result = call(bin_dir, ns, plugin, verb, &env, conf);
            load.spans.lock().unwrap().push((start, Instant::now()));
            load.calls.fetch_add(1, Ordering::SeqCst);
            if let Err(e) = result {
                load.failures.lock().unwrap().push(e);
            }
        }
        round += 1;
    }
    // Every DEL ran: the container has no eth0 left.
    if ctr.try_exec("ip link show eth0") {
        load.failures.lock().unwrap().push(format!("worker {n}: eth0 left in the container"));
    }
}

/// Tells the workers to stop when dropped, also when the test panics:
/// the scope joins them before the panic goes on.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Waits until the workers made `count` calls in all; panics after `limit`.
fn wait_for_calls(load: &Load, count: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    while load.calls.load(Ordering::SeqCst) < count {
        assert!(Instant::now() < deadline, "the workers made {} calls, not {count}", load.calls.load(Ordering::SeqCst));
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
#[cfg_attr(built_without_root, ignore = "needs root")]
fn install_over_a_running_installation() {
    require_root();
    let dir = TempDir::new("upgrade");
    let bin_dir = dir.path().join("bin");
    let data_dir = dir.path().join("ipam");
    let sources = [variant(dir.path(), 0), variant(dir.path(), 1)];
    let install = |source: &Path| {
        let out = Command::new(source).arg("install").arg(&bin_dir).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "install failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        stdout
    };
    install(&sources[0]);

    let load = Load::default();
    let mut upgrades = Vec::new();
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&load.stop);
        for n in 0..WORKERS {
            let (bin_dir, data_dir, load) = (&bin_dir, &data_dir, &load);
            s.spawn(move || worker(n, bin_dir, data_dir, load));
        }
        // Every worker under way (one ADD/DEL round each, on average) before
        // the first upgrade, and a round's worth of calls between upgrades.
        wait_for_calls(&load, WORKERS * 4, Duration::from_secs(120));
        for i in 1..=UPGRADES {
            let before = std::fs::metadata(bin_dir.join("cnibox")).unwrap().ino();
            let start = Instant::now();
            let out = install(&sources[i % 2]);
            upgrades.push((start, Instant::now()));
            assert!(out.contains("installed"), "upgrade {i} did not replace the binary: {out}");
            assert_ne!(std::fs::metadata(bin_dir.join("cnibox")).unwrap().ino(), before, "upgrade {i}: same inode");
            let calls = load.calls.load(Ordering::SeqCst);
            wait_for_calls(&load, calls + WORKERS * 4, Duration::from_secs(120));
        }
    });

    let failures = load.failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} calls failed:\n{}",
        failures.len(),
        load.calls.into_inner(),
        failures.join("\n")
    );
    // Calls really were under way while the binary was replaced.
    let spans = load.spans.into_inner().unwrap();
    let overlapping = spans.iter().filter(|(s, e)| upgrades.iter().any(|(us, ue)| s < ue && us < e)).count();
    assert!(overlapping > 0, "no call ran during an upgrade ({} calls)", spans.len());
    eprintln!("{} calls, {overlapping} of them during one of {UPGRADES} upgrades, none failed", spans.len());
    // The last upgrade is what is installed, and nothing was left behind.
    let installed = std::fs::read(bin_dir.join("cnibox")).unwrap();
    assert!(installed == std::fs::read(&sources[UPGRADES % 2]).unwrap());
    assert_eq!(reserved_ips(&data_dir.join("upgrade-br")), Vec::<String>::new());
    let stray: Vec<_> = std::fs::read_dir(&bin_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(stray.is_empty(), "temporary files left: {stray:?}");
}
