//! Running another plugin: the one way cnibox does it, for delegates (IPAM
//! plugins, flannel's delegate) and for the runtime side (cnitool's plugin
//! chains), in the spirit of the reference's pkg/invoke. Find the plugin on
//! CNI_PATH, give it the CNI_* environment and its config on stdin, wait for
//! it (at most a timeout), and turn a failure into the plugin's own error.
//!
//! A delegate that is a link to this very binary runs in-process instead:
//! same input, same semantics, one exec saved. cni/ sits below the applets
//! and cannot name them, so main hands the applet table down once at
//! start-up (`register_applets`).

use std::cell::Cell;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use super::error::{CniContext, CniError, DECODE_FAILURE};
use super::skel::{Applet, Command, Verb};
use super::types::CniResult;
use super::{lenient, version};

/// Finds the plugin applet with a given name (`applets::plugin`).
pub type AppletLookup = fn(&str) -> Option<&'static dyn Applet>;

static APPLETS: OnceLock<AppletLookup> = OnceLock::new();

/// Hands the applet table to the invoker: a function pointer in a
/// `OnceLock`, so start-up allocates nothing. The first call wins.
pub fn register_applets(lookup: AppletLookup) {
    let _ = APPLETS.set(lookup);
}

/// The registered applet called `name`. With nothing registered (a library
/// user that did not call `register_applets`) every delegate is exec'd and
/// none is validated in-process.
fn registered_applet(name: &str) -> Option<&'static dyn Applet> {
    APPLETS.get().and_then(|lookup| lookup(name))
}

/// The CNI_* environment of one plugin call. `path` (CNI_PATH) is also
/// where the plugin itself is looked for.
#[derive(Debug, Clone, Copy)]
pub struct CniEnv<'a> {
    pub verb: Verb,
    pub container_id: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
    /// CNI_ARGS as one `K=V;K=V` string.
    pub args: &'a str,
    pub path: &'a [PathBuf],
}

impl<'a> CniEnv<'a> {
    /// A delegate's environment: the one `cmd` was called with, another verb.
    pub fn of_delegate(cmd: &'a Command, verb: Verb) -> CniEnv<'a> {
        CniEnv {
            verb,
            container_id: &cmd.container_id,
            netns: &cmd.netns,
            ifname: &cmd.ifname,
            args: &cmd.raw_args,
            path: &cmd.path,
        }
    }

    /// The variables set on the plugin's process. The rest of our own
    /// environment is inherited (CNIBOX_LOG, CNI_TIMEOUT, ...), as the
    /// reference's invoke does.
    pub fn vars(&self) -> [(&'static str, OsString); 6] {
        [
            ("CNI_COMMAND", self.verb.as_str().into()),
            ("CNI_CONTAINERID", self.container_id.into()),
            ("CNI_NETNS", self.netns.into()),
            ("CNI_IFNAME", self.ifname.into()),
            ("CNI_ARGS", self.args.into()),
            // Fails only for a directory holding ':', which CNI_PATH cannot carry.
            ("CNI_PATH", std::env::join_paths(self.path).unwrap_or_default()),
        ]
    }
}

/// The runtime's limit for one plugin when CNI_TIMEOUT is not set.
pub const DEFAULT_RUNTIME_TIMEOUT: Duration = Duration::from_secs(120);

/// CNI_TIMEOUT (whole seconds), when it is set to a number.
///
/// The runtime falls back to DEFAULT_RUNTIME_TIMEOUT. Delegates fall back to
/// no limit, as they always had: the runtime that runs us already bounds the
/// whole call, and a shorter clock of our own would cut off a slow IPAM that
/// is still working (dhcp waiting for a lease). Once CNI_TIMEOUT is set (as
/// in cnitool's environment, which its plugins inherit) delegates honour it
/// too, so one setting bounds every process of the call.
pub fn timeout_from_env() -> Option<Duration> {
    parse_timeout(std::env::var("CNI_TIMEOUT").ok().as_deref())
}

fn parse_timeout(value: Option<&str>) -> Option<Duration> {
    value?.parse::<u64>().ok().map(Duration::from_secs)
}

/// A plugin type names a file in a CNI_PATH directory: nothing that leaves
/// the directory ('/', ".."), and no hidden file (which covers "." too).
pub fn check_plugin_name(name: &str) -> Result<(), CniError> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(CniError::invalid_config(format!("invalid plugin type {name:?}")));
    }
    Ok(())
}

/// The first `dirs/<name>` that is a file (links followed).
pub fn find_plugin(dirs: &[PathBuf], name: &str) -> Result<PathBuf, CniError> {
    check_plugin_name(name)?;
    dirs.iter().map(|dir| dir.join(name)).find(|p| p.is_file()).ok_or_else(|| {
        let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        CniError::invalid_config(format!("failed to find plugin {name:?} in CNI_PATH [{}]", shown.join(":")))
    })
}

/// Finds `plugin` on `env.path` and runs it as a process with `stdin` as its
/// config, for at most `timeout` (None: as long as it takes). Returns the
/// plugin's result as it printed it for ADD, nothing for the other verbs.
pub fn exec_plugin(
    plugin: &str,
    env: &CniEnv,
    stdin: &[u8],
    timeout: Option<Duration>,
) -> Result<Option<Value>, CniError> {
    let path = find_plugin(env.path, plugin)?;
    exec_found(plugin, &path, env, stdin, timeout)
}

/// `exec_plugin` once the plugin is found.
fn exec_found(
    plugin: &str,
    path: &Path,
    env: &CniEnv,
    stdin: &[u8],
    timeout: Option<Duration>,
) -> Result<Option<Value>, CniError> {
    let child = Process::new(path)
        .envs(env.vars())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CniError::io(format!("cannot run {}", path.display())).with_details(e.to_string()))?;
    let output = wait_for(plugin, child, stdin.to_vec(), timeout)?;
    // The plugin's log lines belong to whoever runs us. They are captured
    // (not inherited) so that an error without an object can quote them.
    let _ = std::io::stderr().write_all(&output.stderr);
    if !output.status.success() {
        return Err(plugin_error(plugin, &output));
    }
    if env.verb != Verb::Add {
        return Ok(None);
    }
    let result = serde_json::from_slice(&output.stdout).map_err(|e| {
        CniError::decode(format!("plugin {plugin} returned an unreadable result")).with_details(e.to_string())
    })?;
    Ok(Some(result))
}

/// Writes `stdin` to the child and collects its output on a helper thread,
/// so that this one can stop waiting at the timeout and kill the child.
fn wait_for(plugin: &str, mut child: Child, stdin: Vec<u8>, timeout: Option<Duration>) -> Result<Output, CniError> {
    let pid = child.id();
    let input = child.stdin.take();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // A plugin that exits without reading its stdin is not an error
        // here: its exit status and output say how it went.
        if let Some(mut input) = input {
            let _ = input.write_all(&stdin);
        }
        let _ = tx.send(child.wait_with_output());
    });
    let received = match timeout {
        Some(limit) => rx.recv_timeout(limit),
        None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
    };
    let waiting_failed = || CniError::io(format!("waiting for plugin {plugin} failed"));
    match received {
        Ok(output) => output.map_err(|e| waiting_failed().with_details(e.to_string())),
        Err(RecvTimeoutError::Disconnected) => Err(waiting_failed()),
        Err(RecvTimeoutError::Timeout) => {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGKILL);
            let secs = timeout.unwrap_or_default().as_secs();
            Err(CniError::io(format!("plugin {plugin} timed out after {secs}s")))
        }
    }
}

/// A failed plugin's error: its own error object when stdout holds one
/// (passed through with its code), otherwise what can be said without one.
fn plugin_error(plugin: &str, output: &Output) -> CniError {
    if let Some(e) = error_object(&output.stdout) {
        return e;
    }
    let mut printed = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if printed.is_empty() {
        // Nothing on stdout: its last words on stderr are the best clue.
        printed = String::from_utf8_lossy(&output.stderr).trim().lines().last().unwrap_or("").to_string();
    }
    CniError::internal(format!("plugin {plugin} {} and printed no error object", how_it_ended(output.status)))
        .with_details(printed)
}

/// The spec's error object (`code`, `msg`, `details`), if `stdout` is one.
fn error_object(stdout: &[u8]) -> Option<CniError> {
    let object: Value = serde_json::from_slice(stdout).ok()?;
    let code = u32::try_from(object.get("code")?.as_u64()?).ok()?;
    let text = |key: &str| object.get(key).and_then(Value::as_str).unwrap_or("").to_string();
    Some(CniError { code, msg: text("msg"), details: text("details") })
}

/// "exited with status 3", "was killed by signal 9 (SIGKILL)".
fn how_it_ended(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => {
            let name = nix::sys::signal::Signal::try_from(signal).map(|s| s.as_str()).unwrap_or("unknown");
            format!("was killed by signal {signal} ({name})")
        }
        (None, None) => format!("ended with {status}"),
    }
}

/// How deep in-process delegation may nest (flannel -> bridge -> host-local
/// is 2). A config whose delegates name each other in a cycle (`"ipam":
/// {"type": "bridge"}` in a bridge config) would otherwise recurse until the
/// stack overflows.
const MAX_DELEGATION_DEPTH: usize = 4;

thread_local! {
    static DELEGATION_DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Runs `f` one delegation level deeper, or fails when that is too deep.
fn nested<T>(plugin: &str, f: impl FnOnce() -> Result<T, CniError>) -> Result<T, CniError> {
    let depth = DELEGATION_DEPTH.with(Cell::get);
    if depth >= MAX_DELEGATION_DEPTH {
        return Err(CniError::invalid_config(format!(
            "delegating to {plugin:?} nests more than {MAX_DELEGATION_DEPTH} plugins deep (do the plugin types form a cycle?)"
        )));
    }
    DELEGATION_DEPTH.with(|d| d.set(depth + 1));
    let out = f();
    DELEGATION_DEPTH.with(|d| d.set(depth));
    out
}

/// A plugin delegating to its own type would run itself again with the same
/// config, forever.
fn refuse_self_delegation(cmd: &Command, plugin: &str) -> Result<(), CniError> {
    if plugin == cmd.conf.plugin_type {
        return Err(CniError::invalid_config(format!("the plugin {plugin:?} cannot delegate to itself")));
    }
    Ok(())
}

/// Runs the delegate `plugin` for `verb` with `stdin` as its config and the
/// rest of the environment taken from `cmd`. Returns its result for ADD, in
/// `cmd`'s version. In-process when the plugin found is a link to this
/// binary; otherwise exec'd, limited only by CNI_TIMEOUT (see
/// `timeout_from_env`).
pub fn delegate(cmd: &Command, plugin: &str, verb: Verb, stdin: &[u8]) -> Result<Option<CniResult>, CniError> {
    refuse_self_delegation(cmd, plugin)?;
    let path = find_plugin(&cmd.path, plugin)?;
    if let Some(applet) = in_process_applet(&path, plugin) {
        return nested(plugin, || run_in_process(cmd, applet, verb, stdin));
    }
    let result = exec_found(plugin, &path, &CniEnv::of_delegate(cmd, verb), stdin, timeout_from_env())?;
    result.map(|value| version::parse_result(&value, &cmd.version)).transpose()
}

/// Checks the delegate's part of `cmd`'s config with the delegate's own
/// parser, when the delegate is one of cnibox's applets (nothing is run or
/// touched).
pub fn validate_delegate(cmd: &Command, plugin: &str) -> Result<(), CniError> {
    refuse_self_delegation(cmd, plugin)?;
    match registered_applet(plugin) {
        Some(applet) => nested(plugin, || applet.validate(cmd)),
        None => Ok(()),
    }
}

/// The applet behind `path` when it is a link to the running executable.
fn in_process_applet(path: &Path, plugin: &str) -> Option<&'static dyn Applet> {
    is_this_executable(path).then(|| registered_applet(plugin)).flatten()
}

/// Compares files (links followed) rather than canonical paths: two stat
/// calls instead of a readlink per path component.
fn is_this_executable(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(me), Ok(it)) = (std::fs::metadata("/proc/self/exe"), std::fs::metadata(path)) else {
        return false;
    };
    (me.dev(), me.ino()) == (it.dev(), it.ino())
}

/// The delegate's call as its own process would have parsed it from the
/// same environment and stdin.
fn run_in_process(cmd: &Command, applet: &dyn Applet, verb: Verb, stdin: &[u8]) -> Result<Option<CniResult>, CniError> {
    let mut sub = cmd.clone();
    sub.verb = verb;
    sub.stdin = stdin.to_vec();
    sub.config = serde_json::from_slice(stdin).cni(DECODE_FAILURE, "failed to parse delegate config")?;
    sub.conf = lenient::parse_config(&sub.config, "delegate config")?;
    sub.version = version::negotiate(&sub.conf.cni_version, &sub.conf.cni_versions)?;
    match verb {
        Verb::Add => applet.add(&sub).map(Some),
        Verb::Del => applet.del(&sub).map(|_| None),
        Verb::Check => applet.check(&sub).map(|_| None),
        Verb::Gc => applet.gc(&sub).map(|_| None),
        Verb::Status => applet.status(&sub).map(|_| None),
        Verb::Version => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::error::{INTERNAL, INVALID_CONFIG, IO_FAILURE};
    use std::time::Instant;

    /// A CNI_PATH directory whose plugins are links to system programs. A
    /// plugin that is /bin/sh runs its stdin as a script, so the tests write
    /// no executables of their own (exec'ing a file this process just wrote
    /// can fail with ETXTBSY while another test thread forks).
    struct PluginDir(PathBuf);

    impl PluginDir {
        fn new(tag: &str) -> PluginDir {
            let dir = std::env::temp_dir().join(format!("cnibox-invoke-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::os::unix::fs::symlink("/bin/sh", dir.join("sh")).unwrap();
            PluginDir(dir)
        }
        fn path(&self) -> Vec<PathBuf> {
            vec![PathBuf::from("/nonexistent"), self.0.clone()]
        }
    }

    impl Drop for PluginDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn env_for<'a>(verb: Verb, path: &'a [PathBuf]) -> CniEnv<'a> {
        CniEnv { verb, container_id: "c1", netns: "/run/netns/x", ifname: "eth0", args: "K=V;IgnoreUnknown=1", path }
    }

    /// Runs `script` as the "sh" plugin, in a directory of its own.
    fn run_script(verb: Verb, script: &str, timeout: Option<Duration>) -> Result<Option<Value>, CniError> {
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = PluginDir::new(&format!("run{}", RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
        let path = dir.path();
        exec_plugin("sh", &env_for(verb, &path), script.as_bytes(), timeout)
    }

    #[test]
    fn plugin_names_are_file_names() {
        for bad in ["", ".", "..", ".hidden", "a/b", "/bin/sh", "../sh"] {
            let e = check_plugin_name(bad).unwrap_err();
            assert_eq!(e.code, INVALID_CONFIG, "{bad:?}");
        }
        for good in ["bridge", "host-local", "a.b", "x.."] {
            check_plugin_name(good).unwrap();
        }
        let dir = PluginDir::new("find");
        assert_eq!(find_plugin(&dir.path(), "sh").unwrap(), dir.0.join("sh"));
        let e = find_plugin(&dir.path(), "missing").unwrap_err();
        assert_eq!(e.code, INVALID_CONFIG);
        assert!(e.msg.contains("\"missing\"") && e.msg.contains(&dir.0.display().to_string()), "{}", e.msg);
        // A directory is not a plugin.
        std::fs::create_dir(dir.0.join("subdir")).unwrap();
        assert!(find_plugin(&dir.path(), "subdir").is_err());
    }

    #[test]
    fn env_carries_the_call() {
        let path = [PathBuf::from("/a"), PathBuf::from("/b")];
        let vars = env_for(Verb::Check, &path).vars();
        let get = |key: &str| vars.iter().find(|(k, _)| *k == key).map(|(_, v)| v.to_str().unwrap()).unwrap();
        assert_eq!(get("CNI_COMMAND"), "CHECK");
        assert_eq!(get("CNI_CONTAINERID"), "c1");
        assert_eq!(get("CNI_NETNS"), "/run/netns/x");
        assert_eq!(get("CNI_IFNAME"), "eth0");
        assert_eq!(get("CNI_ARGS"), "K=V;IgnoreUnknown=1");
        assert_eq!(get("CNI_PATH"), "/a:/b");
        // A delegate is told what its caller was told.
        let cmd = crate::cni::skel::test_command("ADD", r#"{"cniVersion":"1.0.0","name":"n","type":"t"}"#, "A=1");
        let delegated = CniEnv::of_delegate(&cmd, Verb::Del);
        assert_eq!(
            (delegated.verb, delegated.container_id, delegated.netns, delegated.ifname, delegated.args),
            (Verb::Del, "c1", "/x", "eth0", "A=1")
        );
        assert_eq!(delegated.path, [PathBuf::from("/opt/cni/bin")]);
    }

    #[test]
    fn the_plugin_sees_the_env_and_its_stdin() {
        // The script is the plugin's stdin: that it runs at all shows stdin arrived.
        let script = r#"echo "{\"cniVersion\":\"1.0.0\",\"cmd\":\"$CNI_COMMAND\",\"id\":\"$CNI_CONTAINERID\",
            \"netns\":\"$CNI_NETNS\",\"ifname\":\"$CNI_IFNAME\",\"args\":\"$CNI_ARGS\",\"path\":\"$CNI_PATH\"}""#;
        let out = run_script(Verb::Add, script, None).unwrap().unwrap();
        assert_eq!(out["cmd"], "ADD");
        assert_eq!(out["id"], "c1");
        assert_eq!(out["netns"], "/run/netns/x");
        assert_eq!(out["ifname"], "eth0");
        assert_eq!(out["args"], "K=V;IgnoreUnknown=1");
        assert!(out["path"].as_str().unwrap().starts_with("/nonexistent:"), "{out}");
        // Only ADD has a result.
        assert_eq!(run_script(Verb::Del, "echo whatever", None).unwrap(), None);
    }

    #[test]
    fn a_plugins_error_object_passes_through() {
        let script = r#"echo '{"cniVersion":"1.0.0","code":11,"msg":"busy","details":"come back later"}'; exit 1"#;
        let e = run_script(Verb::Add, script, None).unwrap_err();
        assert_eq!(e, CniError::new(11, "busy").with_details("come back later"));
        // Only the code is required.
        let e = run_script(Verb::Del, r#"echo '{"code":7}'; exit 1"#, None).unwrap_err();
        assert_eq!(e, CniError::new(7, ""));
    }

    #[test]
    fn failures_without_an_error_object_say_what_happened() {
        let e = run_script(Verb::Add, "echo 'not json'; exit 1", None).unwrap_err();
        assert_eq!(e.code, INTERNAL);
        assert_eq!(e.msg, "plugin sh exited with status 1 and printed no error object");
        assert_eq!(e.details, "not json");
        // JSON, but not an error object.
        let e = run_script(Verb::Add, "echo '{\"msg\":\"no code\"}'; exit 2", None).unwrap_err();
        assert_eq!((e.code, e.details.as_str()), (INTERNAL, r#"{"msg":"no code"}"#));
        // Nothing on stdout: stderr's last line explains.
        let e = run_script(Verb::Del, "echo first >&2; echo 'last words' >&2; exit 3", None).unwrap_err();
        assert_eq!(e.msg, "plugin sh exited with status 3 and printed no error object");
        assert_eq!(e.details, "last words");
        let e = run_script(Verb::Del, "exit 4", None).unwrap_err();
        assert_eq!((e.code, e.details.as_str()), (INTERNAL, ""));
        let e = run_script(Verb::Check, "kill -9 $$", None).unwrap_err();
        assert_eq!(e.msg, "plugin sh was killed by signal 9 (SIGKILL) and printed no error object");
        // Success with an unreadable result.
        let e = run_script(Verb::Add, "echo 'half {'", None).unwrap_err();
        assert_eq!(e.code, DECODE_FAILURE);
    }

    #[test]
    fn a_hanging_plugin_is_killed_at_the_timeout() {
        let started = Instant::now();
        let e = run_script(Verb::Add, "exec /bin/sleep 30", Some(Duration::from_secs(1))).unwrap_err();
        assert_eq!(e.code, IO_FAILURE);
        assert_eq!(e.msg, "plugin sh timed out after 1s");
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
        // A plugin that finishes in time is not affected.
        assert_eq!(run_script(Verb::Del, "exit 0", Some(Duration::from_secs(30))).unwrap(), None);
    }

    #[test]
    fn cni_timeout_is_whole_seconds() {
        assert_eq!(parse_timeout(Some("1")), Some(Duration::from_secs(1)));
        assert_eq!(parse_timeout(Some("120")), Some(Duration::from_secs(120)));
        for unset in [None, Some(""), Some("soon"), Some("-1"), Some("1.5"), Some(" 1")] {
            assert_eq!(parse_timeout(unset), None, "{unset:?}");
        }
    }

    #[test]
    fn in_process_only_for_links_to_this_executable() {
        let dir = PluginDir::new("self");
        let me = std::env::current_exe().unwrap();
        std::os::unix::fs::symlink(&me, dir.0.join("me")).unwrap();
        assert!(is_this_executable(&dir.0.join("me")));
        assert!(!is_this_executable(&dir.0.join("sh")));
        assert!(!is_this_executable(&dir.0.join("missing")));
    }

    /// Fails with what it was called with, so the test can see it.
    struct Reflect;
    impl Applet for Reflect {
        fn add(&self, cmd: &Command) -> Result<CniResult, CniError> {
            Err(CniError::internal(format!("{} {} {}", cmd.verb.as_str(), cmd.conf.name, cmd.version)))
        }
        fn del(&self, _: &Command) -> Result<(), CniError> {
            Ok(())
        }
        fn check(&self, _: &Command) -> Result<(), CniError> {
            Ok(())
        }
    }

    #[test]
    fn in_process_the_delegate_parses_its_own_config() {
        let cmd = crate::cni::skel::test_command("DEL", r#"{"cniVersion":"1.0.0","name":"outer","type":"t"}"#, "");
        let inner = br#"{"cniVersion":"0.4.0","name":"inner","type":"reflect"}"#;
        let e = run_in_process(&cmd, &Reflect, Verb::Add, inner).unwrap_err();
        assert_eq!(e.msg, "ADD inner 0.4.0");
        assert_eq!(run_in_process(&cmd, &Reflect, Verb::Del, inner).unwrap(), None);
        assert_eq!(run_in_process(&cmd, &Reflect, Verb::Add, b"{nope").unwrap_err().code, DECODE_FAILURE);
    }

    #[test]
    fn delegating_to_oneself_is_refused() {
        let cmd = crate::cni::skel::test_command("ADD", r#"{"cniVersion":"1.0.0","name":"n","type":"bridge"}"#, "");
        assert_eq!(delegate(&cmd, "bridge", Verb::Add, b"{}").unwrap_err().code, INVALID_CONFIG);
        assert_eq!(validate_delegate(&cmd, "bridge").unwrap_err().code, INVALID_CONFIG);
    }

    #[test]
    fn delegation_cycles_end_with_an_error() {
        // ptp -> bridge -> ptp -> ...: every level passes the type check.
        fn cycle() -> Result<(), CniError> {
            nested("bridge", cycle)
        }
        let e = cycle().unwrap_err();
        assert_eq!(e.code, INVALID_CONFIG);
        assert_eq!(DELEGATION_DEPTH.with(Cell::get), 0);
    }
}
