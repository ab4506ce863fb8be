//! Running nft: `nft -j -f -` for transactions, `nft -j list` for listings.
//! Our own runner, not the `nftables` crate's helper, which drops nft's
//! stderr: ours puts it in the error's details.
//!
//! Every exec of nft costs ~3.4 ms before it does anything, and every
//! transaction that deletes something makes nft wait an RCU grace period
//! when it exits: batch everything one plugin call needs into one
//! transaction, skip it when nothing would change, and prefer nfnetlink for
//! the per-container elements of tables that exist (backend.rs).

use std::io::Write;
use std::process::{Command, Stdio};

use nftables::types::NfFamily;

use super::error::{Error, ErrorKind, Result};
use super::listing::Listing;
use super::schema::{family_str, Transaction};

/// The nft binary; overridable for tests and unusual installs.
fn nft_binary() -> String {
    std::env::var("CNIBOX_NFT").unwrap_or_else(|_| "nft".into())
}

/// The kind of a failure nft reported. nft prints the kernel's errno as
/// strerror text; this is the one place that reads it.
fn kind_of(stderr: &str) -> ErrorKind {
    if stderr.contains("No such file or directory") {
        ErrorKind::Missing
    } else if stderr.contains("File exists") {
        ErrorKind::Exists
    } else {
        ErrorKind::Exec
    }
}

/// Runs nft with `args`, feeding `stdin`; returns its stdout.
pub fn run(args: &[&str], stdin: Option<&[u8]>) -> Result<String> {
    log::debug!("nft {}", args.join(" "));
    let mut child = Command::new(nft_binary())
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::exec("failed to run nft (is the nftables package installed?)", e))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input).map_err(|e| Error::exec("failed to write to nft", e))?;
    }
    let out = child.wait_with_output().map_err(|e| Error::exec("failed to wait for nft", e))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        return Err(Error::new(kind_of(&stderr), format!("nft {} failed", args.join(" ")), stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Applies `tx` as one atomic transaction. An empty one is not sent.
pub fn apply(tx: &Transaction) -> Result<()> {
    if tx.is_empty() {
        return Ok(());
    }
    let json = serde_json::to_vec(tx).map_err(|e| Error::exec("encoding nft JSON", e))?;
    log::debug!("nft transaction: {}", String::from_utf8_lossy(&json));
    run(&["-j", "-f", "-"], Some(&json))?;
    log::debug!("nft transaction committed");
    Ok(())
}

/// Applies `script`, in nft's text syntax, as one atomic transaction.
pub fn apply_text(script: &str) -> Result<()> {
    log::debug!("nft script: {script}");
    run(&["-f", "-"], Some(script.as_bytes()))?;
    log::debug!("nft script committed");
    Ok(())
}

/// A table's listing, or None when it does not exist.
pub fn list(family: NfFamily, table: &str) -> Result<Option<Listing>> {
    match run(&["-j", "list", "table", family_str(family), table], None) {
        Ok(out) => Listing::parse(&out).map(Some),
        Err(e) if e.is_missing() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The ruleset's tables: (family, name).
pub fn tables() -> Result<Vec<(NfFamily, String)>> {
    Listing::parse(&run(&["-j", "list", "tables"], None)?).map(|l| l.tables())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_nft_messages() {
        assert_eq!(kind_of("Error: Could not process rule: No such file or directory"), ErrorKind::Missing);
        assert_eq!(kind_of("Error: Could not process rule: File exists"), ErrorKind::Exists);
        assert_eq!(kind_of("Error: syntax error"), ErrorKind::Exec);
    }
}
