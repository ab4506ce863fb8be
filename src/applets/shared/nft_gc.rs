//! GC of the nftables state chained plugins (firewall, portmap) keep as
//! elements and rules carrying `nft_owned::owner_comment`.

use nftables::types::NfFamily;

use crate::cni::{gc, CniError, Command};
use crate::nft::owned::{self as nft_owned, ListedElement, ListedRule};

/// Removes this network's elements and rules in `table` whose attachment
/// the runtime no longer lists. Without the list (or the table) nothing is
/// removed. Returns what was removed, for the log.
pub fn remove_stale(
    cmd: &Command,
    family: NfFamily,
    table: &str,
) -> Result<(Vec<ListedElement>, Vec<ListedRule>), CniError> {
    let Some(valid) = gc::valid_attachments(cmd)? else { return Ok(Default::default()) };
    let network = cmd.conf.name.as_str();
    let valid: Vec<String> =
        valid.iter().map(|a| nft_owned::owner_comment(network, &a.container_id, &a.ifname)).collect();
    let Some(listing) = nft_owned::list(nft_owned::family_str(family), table)? else {
        return Ok(Default::default());
    };
    let stale = |c: &str| nft_owned::is_network(c, network) && !valid.iter().any(|v| v == c);
    Ok(nft_owned::delete_owned(family, table, &listing, stale)?)
}

/// STATUS of the plugins that keep nftables state: code 50 "not available"
/// when nft cannot run.
pub fn status() -> Result<(), CniError> {
    crate::nft::owned::status()
        .map_err(|e| CniError::new(crate::cni::error::NOT_AVAILABLE, e.msg).with_details(e.stderr.trim().to_string()))
}
