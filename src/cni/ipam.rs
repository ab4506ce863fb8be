//! Delegating to another plugin found in CNI_PATH (IPAM plugins, and the
//! flannel delegate). When the delegate is this very binary, the applet is
//! called in-process: same input, same semantics, one exec saved.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command as Process, Stdio};

use serde_json::Value;

use super::error::{CniContext, CniError, INVALID_CONFIG};
use super::skel::{Command, Verb};
use super::types::CniResult;
use super::version;

/// How deep in-process delegation may nest (flannel -> bridge -> host-local
/// is 2). A config whose delegates name each other in a cycle (`"ipam":
/// {"type": "bridge"}` in a bridge config) would otherwise recurse until the
/// stack overflows.
const MAX_DELEGATION_DEPTH: usize = 4;

thread_local! {
    static DELEGATION_DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Runs `f` one delegation level deeper, or fails when that is too deep.
fn nested<T>(plugin: &str, f: impl FnOnce() -> Result<T, CniError>) -> Result<T, CniError> {
    let depth = DELEGATION_DEPTH.with(|d| d.get());
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

/// Finds `plugin` in the CNI_PATH directories.
pub fn find_plugin(cmd: &Command, plugin: &str) -> Result<PathBuf, CniError> {
    if plugin.is_empty() || plugin.contains('/') || plugin == "." || plugin == ".." {
        return Err(CniError::invalid_config(format!("invalid plugin type {plugin:?}")));
    }
    cmd.path
        .iter()
        .map(|dir| dir.join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| CniError::invalid_config(format!("failed to find plugin {plugin:?} in path {:?}", cmd.path)))
}

/// The applet behind `path` when it is a link to the running executable.
/// Compares files (links followed) rather than canonical paths: two stat
/// calls instead of a readlink per path component.
fn in_process_applet(path: &std::path::Path, plugin: &str) -> Option<&'static dyn super::skel::Applet> {
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/self/exe").ok()?;
    let it = std::fs::metadata(path).ok()?;
    if (me.dev(), me.ino()) != (it.dev(), it.ino()) {
        return None;
    }
    crate::applets::plugin(plugin)
}

/// Runs `plugin` for `verb` with `stdin` as its config and the rest of the
/// environment taken from `cmd`. Returns its stdout on success.
pub fn exec_plugin(cmd: &Command, plugin: &str, verb: Verb, stdin: &[u8]) -> Result<Option<CniResult>, CniError> {
    if plugin == cmd.conf.plugin_type {
        // It would run itself again with the same config, forever.
        return Err(CniError::invalid_config(format!("the plugin {plugin:?} cannot delegate to itself")));
    }
    let path = find_plugin(cmd, plugin)?;
    if let Some(applet) = in_process_applet(&path, plugin) {
        return nested(plugin, || run_in_process(cmd, applet, verb, stdin));
    }
    let mut child = Process::new(&path)
        .env("CNI_COMMAND", verb.as_str())
        .env("CNI_CONTAINERID", &cmd.container_id)
        .env("CNI_NETNS", &cmd.netns)
        .env("CNI_IFNAME", &cmd.ifname)
        .env("CNI_ARGS", &cmd.raw_args)
        .env("CNI_PATH", std::env::join_paths(&cmd.path).unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .cni_internal(format!("failed to run {}", path.display()))?;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin).cni_internal(format!("failed to write to {plugin}"))?;
    }
    let output = child.wait_with_output().cni_internal(format!("failed to wait for {plugin}"))?;
    if !output.status.success() {
        return Err(delegate_error(plugin, &output.stdout));
    }
    if verb != Verb::Add {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| CniError::decode(format!("{plugin} returned an unreadable result")).with_details(e.to_string()))?;
    version::parse_result(&value, &cmd.version).map(Some)
}

fn run_in_process(
    cmd: &Command,
    applet: &dyn super::skel::Applet,
    verb: Verb,
    stdin: &[u8],
) -> Result<Option<CniResult>, CniError> {
    let mut sub = cmd.clone();
    sub.verb = verb;
    sub.stdin = stdin.to_vec();
    sub.config = serde_json::from_slice(stdin).cni(super::error::DECODE_FAILURE, "failed to parse delegate config")?;
    sub.conf = super::lenient::parse_config(&sub.config, "delegate config")?;
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

/// A delegate's error object, passed through with its own code.
fn delegate_error(plugin: &str, stdout: &[u8]) -> CniError {
    let parsed: Option<Value> = serde_json::from_slice(stdout).ok();
    let code = parsed.as_ref().and_then(|v| v.get("code")).and_then(Value::as_u64);
    match (parsed.as_ref(), code) {
        (Some(v), Some(code)) => CniError {
            code: code as u32,
            msg: v.get("msg").and_then(Value::as_str).unwrap_or("").to_string(),
            details: v.get("details").and_then(Value::as_str).unwrap_or("").to_string(),
        },
        _ => CniError::internal(format!("{plugin} failed"))
            .with_details(String::from_utf8_lossy(stdout).trim().to_string()),
    }
}

/// The IPAM plugin named by the config's `ipam.type`.
fn ipam_type(cmd: &Command) -> Result<&str, CniError> {
    match cmd.conf.ipam.as_ref().map(|i| i.plugin_type.as_str()) {
        Some(t) if !t.is_empty() => Ok(t),
        _ => Err(CniError::new(INVALID_CONFIG, "ipam.type is required")),
    }
}

/// True when the config names an IPAM plugin (`"ipam": {}` means none).
pub fn has_ipam(cmd: &Command) -> bool {
    ipam_type(cmd).is_ok()
}

/// Validates the IPAM section with the delegate's own parser when the
/// delegate is one of cnibox's applets (nothing is run or touched).
pub fn validate(cmd: &Command) -> Result<(), CniError> {
    let Ok(plugin) = ipam_type(cmd) else { return Ok(()) };
    if plugin == cmd.conf.plugin_type {
        return Err(CniError::invalid_config(format!("the plugin {plugin:?} cannot delegate to itself")));
    }
    match crate::applets::plugin(plugin) {
        Some(applet) => nested(plugin, || applet.validate(cmd)),
        None => Ok(()),
    }
}

/// IPAM ADD. The caller must call `del` if a later step of its ADD fails.
pub fn add(cmd: &Command) -> Result<CniResult, CniError> {
    let plugin = ipam_type(cmd)?;
    let result = exec_plugin(cmd, plugin, Verb::Add, &cmd.stdin)?.unwrap_or_default();
    if result.ips.is_empty() {
        let _ = del(cmd);
        return Err(CniError::internal(format!("IPAM plugin {plugin} returned no IP configuration")));
    }
    Ok(result)
}

pub fn del(cmd: &Command) -> Result<(), CniError> {
    exec_plugin(cmd, ipam_type(cmd)?, Verb::Del, &cmd.stdin).map(|_| ())
}

pub fn check(cmd: &Command) -> Result<(), CniError> {
    exec_plugin(cmd, ipam_type(cmd)?, Verb::Check, &cmd.stdin).map(|_| ())
}

/// GC and STATUS are only forwarded when the config speaks 1.1.0.
pub fn gc(cmd: &Command) -> Result<(), CniError> {
    exec_plugin(cmd, ipam_type(cmd)?, Verb::Gc, &cmd.stdin).map(|_| ())
}

pub fn status(cmd: &Command) -> Result<(), CniError> {
    exec_plugin(cmd, ipam_type(cmd)?, Verb::Status, &cmd.stdin).map(|_| ())
}

/// Runs IPAM ADD, then `rest`; if `rest` fails the reservation is released.
pub fn add_then<T>(cmd: &Command, rest: impl FnOnce(CniResult) -> Result<T, CniError>) -> Result<T, CniError> {
    let ipam = add(cmd)?;
    crate::cni::fault::step("ipam: reserved").and_then(|_| rest(ipam)).inspect_err(|_| {
        if let Err(e) = del(cmd) {
            log::warn!("releasing the IPAM reservation after a failed ADD: {e}");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delegation_cycles_end_with_an_error() {
        // ptp -> bridge -> ptp -> ...: every level passes the type check.
        fn cycle() -> Result<(), CniError> {
            nested("bridge", cycle)
        }
        let e = cycle().unwrap_err();
        assert_eq!(e.code, INVALID_CONFIG);
        assert_eq!(DELEGATION_DEPTH.with(|d| d.get()), 0);
    }
}
