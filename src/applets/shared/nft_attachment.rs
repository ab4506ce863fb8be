//! What one attachment owns in cnibox's nftables tables, for the chained
//! plugins that keep state there (firewall, portmap, and bridge/ptp's
//! masquerading): its owner, GC of stale attachments, and STATUS.

use nftables::types::NfFamily;

use crate::cni::{gc, CniError, Command};
use crate::nft::takeover::{self, Kind};
use crate::nft::{owned, owner, Backend, ListedElement, ListedRule, Owner};

/// The attachment `cmd` is about.
pub fn owner(cmd: &Command) -> Owner<'_> {
    Owner { network: &cmd.conf.name, container_id: &cmd.container_id, ifname: &cmd.ifname }
}

/// Removes this network's elements and rules in `table` whose attachment
/// the runtime no longer lists. Without the list (or the table) nothing is
/// removed. Returns what was removed, for the log.
pub fn remove_stale(
    cmd: &Command,
    nft: &mut dyn Backend,
    family: NfFamily,
    table: &str,
) -> Result<(Vec<ListedElement>, Vec<ListedRule>), CniError> {
    let Some(valid) = gc::valid_attachments(cmd)? else { return Ok(Default::default()) };
    let network = cmd.conf.name.as_str();
    let valid: Vec<Owner> =
        valid.iter().map(|a| Owner { network, container_id: &a.container_id, ifname: &a.ifname }).collect();
    Ok(owned::delete_stale(nft, family, table, network, &valid)?)
}

/// Whether a comment names an attachment of this network that the runtime
/// no longer lists (GC of rules outside cnibox's tables); None without the
/// list.
pub fn stale_filter(cmd: &Command) -> Result<Option<impl Fn(&str) -> bool + '_>, CniError> {
    let Some(valid) = gc::valid_attachments(cmd)? else { return Ok(None) };
    let network = cmd.conf.name.as_str();
    Ok(Some(move |comment: &str| {
        let owns =
            |a: &gc::Attachment| Owner { network, container_id: &a.container_id, ifname: &a.ifname }.owns(comment);
        owner::is_network(comment, network) && !valid.iter().any(owns)
    }))
}

/// GC of the reference's state of `kind` for this network's attachments the
/// runtime no longer lists (a node that switched). Without the list nothing
/// is removed.
pub fn remove_stale_reference(cmd: &Command, nft: &mut dyn Backend, kind: Kind) -> Result<(), CniError> {
    let Some(valid) = gc::valid_attachments(cmd)? else { return Ok(()) };
    let network = cmd.conf.name.as_str();
    let valid: Vec<Owner> =
        valid.iter().map(|a| Owner { network, container_id: &a.container_id, ifname: &a.ifname }).collect();
    Ok(takeover::remove_stale(nft, kind, network, &valid)?)
}

/// STATUS of the plugins that keep nftables state: code 50 "not available"
/// when nft cannot run.
pub fn status(nft: &mut dyn Backend) -> Result<(), CniError> {
    nft.available().map_err(|e| CniError::new(crate::cni::error::NOT_AVAILABLE, e.msg).with_details(e.details))
}
