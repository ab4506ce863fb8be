//! IPAM delegation: the plugin named by a config's `ipam.type`, run through
//! the invoker (in-process when it is one of cnibox's applets).

use super::error::{CniError, INVALID_CONFIG};
use super::invoke;
use super::skel::{Command, Verb};
use super::types::CniResult;

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
    invoke::validate_delegate(cmd, plugin)
}

/// IPAM ADD. The caller must call `del` if a later step of its ADD fails.
pub fn add(cmd: &Command) -> Result<CniResult, CniError> {
    let plugin = ipam_type(cmd)?;
    let result = invoke::delegate(cmd, plugin, Verb::Add, &cmd.stdin)?.unwrap_or_default();
    if result.ips.is_empty() {
        let _ = del(cmd);
        return Err(CniError::internal(format!("IPAM plugin {plugin} returned no IP configuration")));
    }
    Ok(result)
}

pub fn del(cmd: &Command) -> Result<(), CniError> {
    run(cmd, Verb::Del)
}

pub fn check(cmd: &Command) -> Result<(), CniError> {
    run(cmd, Verb::Check)
}

/// GC and STATUS are only forwarded when the config speaks 1.1.0.
pub fn gc(cmd: &Command) -> Result<(), CniError> {
    run(cmd, Verb::Gc)
}

pub fn status(cmd: &Command) -> Result<(), CniError> {
    run(cmd, Verb::Status)
}

/// The IPAM plugin for a verb without a result, given this plugin's config.
fn run(cmd: &Command, verb: Verb) -> Result<(), CniError> {
    invoke::delegate(cmd, ipam_type(cmd)?, verb, &cmd.stdin).map(|_| ())
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
