//! nftables, through the `nftables` crate's JSON schema and our own runner
//! of `nft -j -f -` (the crate's helper drops nft's stderr; ours puts it in
//! the CNI error's details).
//!
//! Every exec of nft costs ~3.4 ms before it does anything, and every
//! transaction that deletes something makes nft wait an RCU grace period
//! when it exits: batch everything one plugin call needs into one `apply`,
//! skip it when nothing would change, and prefer nfnetlink.rs for the
//! per-container elements of tables that exist.
//!
//! Listings are parsed as plain JSON (nft_owned.rs, masq.rs): the crate's
//! schema deserializer would link ~0.1 MB and cannot read every form nft
//! prints; its types are used to build commands only.

use std::io::Write;
use std::process::{Command, Stdio};

use nftables::schema::Nftables;

/// The nft binary; overridable for tests and unusual installs.
fn nft_binary() -> String {
    std::env::var("CNIBOX_NFT").unwrap_or_else(|_| "nft".into())
}

#[derive(Debug, Clone)]
pub struct NftError {
    pub msg: String,
    /// What nft printed on stderr.
    pub stderr: String,
}

impl std::fmt::Display for NftError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.msg, self.stderr.trim())
    }
}

impl std::error::Error for NftError {}

/// Runs nft with `args`, feeding `stdin`; returns its stdout.
pub fn run(args: &[&str], stdin: Option<&[u8]>) -> Result<String, NftError> {
    log::debug!("nft {}", args.join(" "));
    let fail = |msg: String, stderr: String| NftError { msg, stderr };
    let mut child = Command::new(nft_binary())
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail("failed to run nft (is the nftables package installed?)".into(), e.to_string()))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input).map_err(|e| fail("failed to write to nft".into(), e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail("failed to wait for nft".into(), e.to_string()))?;
    if !out.status.success() {
        return Err(fail(format!("nft {} failed", args.join(" ")), String::from_utf8_lossy(&out.stderr).into_owned()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Applies `doc` as one atomic transaction. An empty document is not sent.
pub fn apply(doc: &Nftables) -> Result<(), NftError> {
    if doc.objects.is_empty() {
        return Ok(());
    }
    let json =
        serde_json::to_vec(doc).map_err(|e| NftError { msg: "encoding nft JSON".into(), stderr: e.to_string() })?;
    log::debug!("nft transaction: {}", String::from_utf8_lossy(&json));
    run(&["-j", "-f", "-"], Some(&json))?;
    log::debug!("nft transaction committed");
    Ok(())
}

/// Applies nft JSON commands (`{"add": {...}}`, ...) as one atomic
/// transaction; none when empty. For callers that build their commands as
/// JSON values: parsing them into the crate's schema types first would link
/// the whole schema's deserializer (~0.1 MB) into the binary.
pub fn apply_commands(cmds: &[serde_json::Value]) -> Result<(), NftError> {
    if cmds.is_empty() {
        return Ok(());
    }
    let json = serde_json::to_vec(&serde_json::json!({ "nftables": cmds }))
        .map_err(|e| NftError { msg: "encoding nft JSON".into(), stderr: e.to_string() })?;
    log::debug!("nft transaction: {}", String::from_utf8_lossy(&json));
    run(&["-j", "-f", "-"], Some(&json))?;
    log::debug!("nft transaction committed");
    Ok(())
}
