//! Shared helpers for integration tests: run the built binary as a runtime
//! would, inside network namespaces the test creates and removes.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_cnibox");

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name unique to this test process: `<prefix><pid>-<n>`, at most 15 bytes
/// when the prefix is short (so it also fits interface names).
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}{}{n}", std::process::id() % 100000)
}

/// A directory holding a link to the built binary under every applet name,
/// standing in for /opt/cni/bin.
pub fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("cnibox-test-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let list = Command::new(BIN).arg("--list").output().unwrap();
        for name in String::from_utf8(list.stdout).unwrap().lines() {
            let link = dir.join(name);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(BIN, &link).unwrap();
        }
        dir
    })
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let p = std::env::temp_dir().join(unique(&format!("cnibox-{prefix}-")));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Netns {
        let name = unique(prefix);
        sh(&format!("ip netns add {name}"));
        sh(&format!("ip -n {name} link set lo up"));
        Netns { name }
    }
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
    /// Runs a shell command inside the netns; panics on failure.
    pub fn exec(&self, cmd: &str) -> String {
        sh(&format!("ip netns exec {} {cmd}", self.name))
    }
    /// Runs a shell command inside the netns; returns whether it succeeded.
    pub fn try_exec(&self, cmd: &str) -> bool {
        try_sh(&format!("ip netns exec {} {cmd}", self.name)).is_some()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = try_sh(&format!("ip netns del {}", self.name));
    }
}

/// Runs `cmd` with sh; panics with its output on failure.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn try_sh(cmd: &str) -> Option<String> {
    let out = Command::new("sh").arg("-c").arg(cmd).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A bus address where nothing listens.
pub const NO_SYSTEM_BUS: &str = "unix:path=/nonexistent/cnibox-test/system_bus_socket";

/// One plugin call as a runtime makes it.
#[derive(Clone, Debug)]
pub struct Call {
    pub plugin: String,
    pub env: Vec<(String, String)>,
    /// Run the plugin inside this netns (the "host" side), if any.
    pub host_netns: Option<String>,
}

/// What a plugin call returned.
#[derive(Debug)]
pub struct Reply {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("bad JSON {:?}: {e}", self.stdout))
    }
    /// Panics unless the call succeeded; returns its JSON (Null when empty).
    pub fn ok(self) -> Value {
        assert_eq!(self.code, 0, "plugin failed: {}\n{}", self.stdout, self.stderr);
        if self.stdout.trim().is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }
    /// Panics unless the call failed; returns the CNI error code.
    pub fn err_code(self) -> u64 {
        assert_ne!(self.code, 0, "plugin unexpectedly succeeded: {}", self.stdout);
        self.json()["code"].as_u64().unwrap()
    }
}

impl Call {
    pub fn new(plugin: &str) -> Call {
        Call { plugin: plugin.to_string(), env: Vec::new(), host_netns: None }
    }
    pub fn env(mut self, k: &str, v: &str) -> Call {
        self.env.retain(|(key, _)| key != k);
        self.env.push((k.to_string(), v.to_string()));
        self
    }
    /// The usual ADD/DEL/CHECK environment.
    pub fn container(self, id: &str, netns: &str, ifname: &str) -> Call {
        self.env("CNI_CONTAINERID", id).env("CNI_NETNS", netns).env("CNI_IFNAME", ifname)
    }
    pub fn in_netns(mut self, ns: &Netns) -> Call {
        self.host_netns = Some(ns.name.clone());
        self
    }
    pub fn run(&self, verb: &str, stdin: &str) -> Reply {
        let out = self.spawn(verb, stdin).wait_with_output().unwrap();
        Reply {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts the call and returns at once (stdin already written and closed).
    pub fn spawn(&self, verb: &str, stdin: &str) -> std::process::Child {
        let exe = plugin_dir().join(&self.plugin);
        let mut cmd = match &self.host_netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CNI_COMMAND", verb)
            .env("CNI_PATH", plugin_dir())
            .env("CNIBOX_LOG", std::env::var("CNIBOX_LOG").unwrap_or_else(|_| "info".into()))
            // No plugin talks to the real host's system bus (firewalld):
            // tests that want a bus point this at their own.
            .env("DBUS_SYSTEM_BUS_ADDRESS", NO_SYSTEM_BUS)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        // A plugin killed early may not read its stdin: a broken pipe is fine.
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        child
    }
}

/// Whether this test binary was built by root. build.rs sets
/// `built_without_root` when it ran without root; every test that needs
/// root carries `#[cfg_attr(built_without_root, ignore = "needs root")]`, so
/// a run without root lists it as ignored instead of passing it. libtest
/// has no way to skip at run time, hence the decision at build time.
pub const BUILT_AS_ROOT: bool = !cfg!(built_without_root);

/// How to rebuild when that decision is stale: build.rs reruns when it
/// changed (it also reruns when USER, HOME or SUDO_UID change).
const REBUILD: &str = "touch build.rs, then cargo test as the user who runs the tests";

/// The first statement of every test that needs root. The build-time
/// decision can be stale (a test binary run by another user than the one
/// who built it): the test then fails with what to do rather than passing
/// without having run, or failing later on a confusing EPERM.
pub fn require_root() {
    let root = nix::unistd::Uid::effective().is_root();
    match (BUILT_AS_ROOT, root) {
        (true, true) => {}
        (true, false) => panic!("built as root, running without root: rebuild ({REBUILD})"),
        (false, true) => panic!("built without root, running as root: rebuild ({REBUILD})"),
        // Only reached with --ignored or --include-ignored.
        (false, false) => panic!("needs root"),
    }
}

/// In every test binary (each includes this module): fails when the binary
/// runs under other privileges than it was built with. Without it a binary
/// built without root but run by root would list its root tests as ignored
/// and pass, and CI would not notice that they never ran.
#[test]
fn built_with_the_privileges_it_runs_with() {
    let root = nix::unistd::Uid::effective().is_root();
    assert!(
        BUILT_AS_ROOT == root,
        "built {} root, running {} root: rebuild ({REBUILD})",
        if BUILT_AS_ROOT { "as" } else { "without" },
        if root { "as" } else { "without" },
    );
}

/// CNI_PATH with cnibox's applets first and the reference plugins after
/// them (for delegates cnibox does not have).
pub fn cni_path() -> String {
    format!("{}:/usr/lib/cni", plugin_dir().display())
}

/// The config of a CHECK: the ADD's config (JSON text or Value) with its
/// result as prevResult.
pub fn with_prev(conf: &(impl std::fmt::Display + ?Sized), result: &Value) -> String {
    let mut c: Value = serde_json::from_str(&conf.to_string()).unwrap();
    c["prevResult"] = result.clone();
    c.to_string()
}

/// Runs `f` on a thread inside the named netns.
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}

/// nft executions in a call's debug log (CNIBOX_LOG=debug): (transactions
/// committed, transactions tried, listings). A failed transaction changes
/// nothing.
pub fn nft_execs(stderr: &str) -> (usize, usize, usize) {
    let committed = stderr.lines().filter(|l| l.contains("nft transaction committed")).count();
    let tried = stderr.lines().filter(|l| l.contains("] nft -j -f -")).count();
    let list = stderr.lines().filter(|l| l.contains("] nft -j list")).count();
    (committed, tried, list)
}

/// iptables executions of one tool in a call's debug log (CNIBOX_LOG=debug),
/// IPv4's and IPv6's: `tool` is e.g. "legacy-save" or "nft-restore".
pub fn iptables_execs(stderr: &str, tool: &str) -> usize {
    let (v4, v6) = (format!("] iptables-{tool} "), format!("] ip6tables-{tool} "));
    stderr.lines().filter(|l| l.contains(&v4) || l.contains(&v6)).count()
}

/// From a plugin's debug log: (nfnetlink batches committed, element lookups).
pub fn nfnl_calls(stderr: &str) -> (usize, usize) {
    let committed = stderr.lines().filter(|l| l.contains("nfnetlink batch committed")).count();
    let gets = stderr.lines().filter(|l| l.contains("nfnetlink get:")).count();
    (committed, gets)
}

/// `nft -j list ruleset` inside the netns.
pub fn ruleset(ns: &Netns) -> String {
    ns.exec("nft -j list ruleset")
}

/// The reservation files (one per reserved IP) of a host-local network
/// directory, sorted; empty when there is none.
pub fn reserved_ips(net_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(net_dir) else { return Vec::new() };
    let mut ips: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .collect();
    ips.sort();
    ips
}
