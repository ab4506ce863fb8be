//! Set and map elements (and the odd rule) owned by one CNI attachment,
//! found again from their comment (owner.rs). Plugins keep per-container
//! state as elements of per-network sets and maps instead of per-container
//! chains: one transaction adds them, one listing plus one transaction (or,
//! with the keys known, one lookup and one batch) removes them.

use nftables::types::NfFamily;

use super::backend::Backend;
use super::element::{Element, ElementOp};
use super::error::Result;
use super::listing::{key_expr, ListedElement, ListedRule, Listing};
use super::owner::{self, Owner};
use super::schema::{delete_element, delete_rule, Obj, Transaction};

/// What one attachment adds to one table.
pub struct Claim<'a> {
    pub family: NfFamily,
    pub table: &'a str,
    /// The owner's comment, carried by its elements and rules.
    pub owner: &'a str,
    /// Element changes: `Create` for what the attachment owns (fails on a
    /// held key), `Add` for shared elements, `Flush` for marker sets.
    pub ops: Vec<ElementOp<'a>>,
    /// Rules the attachment owns (carrying `owner`).
    pub rules: Vec<Obj>,
}

impl Claim<'_> {
    fn transaction(&self) -> Transaction {
        let mut tx = Transaction::new();
        tx.extend(self.ops.iter().map(|op| op.schema(self.family, self.table)));
        tx.extend(self.rules.iter().cloned());
        tx
    }
}

/// Adds what one attachment claims with the least kernel work:
/// 0. the element ops in one nfnetlink batch, without exec'ing nft: the
///    common case, when the table and its sets exist and no key is held;
/// 1. the claim alone through nft, when the fast path is not possible (a
///    batch refused for another reason than a missing set or a held key);
/// 2. when something is missing (first use on the node, or the table was
///    removed): `skeleton` and the claim in one transaction;
/// 3. when a claimed key is held already (a stale attachment whose DEL never
///    came, or a retried ADD): one listing, then the holders `conflicts`
///    picks (and rules carrying the owner) are deleted and the claim applied
///    in one transaction: last writer wins, as with the reference.
///
/// Rules are not keyed, so a retried ADD would duplicate them: a claim with
/// rules takes path 3 from the start. A failed transaction changes nothing,
/// so each path commits once.
pub fn add_owned(
    nft: &mut dyn Backend,
    claim: &Claim,
    skeleton: impl Fn(&mut dyn Backend) -> Transaction,
    conflicts: impl Fn(&ListedElement) -> bool,
) -> Result<()> {
    let tx = claim.transaction();
    if !claim.rules.is_empty() {
        return reclaim(nft, claim, &skeleton, tx, &conflicts, None);
    }
    let failure = match nft.commit(claim.family, claim.table, &claim.ops) {
        Ok(()) => return Ok(()),
        Err(e) if e.is_exists() => return reclaim(nft, claim, &skeleton, tx, &conflicts, None),
        Err(e) if e.is_missing() => e,
        Err(e) => {
            log::debug!("nfnetlink: {e}; applying with nft");
            match nft.apply(&tx) {
                Ok(()) => return Ok(()),
                Err(e) if e.is_missing() => e,
                Err(e) => return reclaim(nft, claim, &skeleton, tx, &conflicts, Some(e)),
            }
        }
    };
    log::debug!("{}: {failure}; declaring the table", claim.table);
    let mut full = skeleton(nft);
    full.append(tx);
    match nft.apply(&full) {
        Ok(()) => Ok(()),
        // The skeleton is in `full` already.
        Err(e) => reclaim(nft, claim, &|_| Transaction::new(), full, &conflicts, Some(e)),
    }
}

/// Lists the table, deletes what `conflicts` picks and the rules of the
/// claim's owner, and applies `tx` in the same transaction (after the
/// skeleton when the table is missing or the transaction finds something
/// missing).
fn reclaim(
    nft: &mut dyn Backend,
    claim: &Claim,
    skeleton: &dyn Fn(&mut dyn Backend) -> Transaction,
    tx: Transaction,
    conflicts: &dyn Fn(&ListedElement) -> bool,
    failure: Option<super::Error>,
) -> Result<()> {
    let (family, table) = (claim.family, claim.table);
    let with_skeleton = |nft: &mut dyn Backend, rest: Transaction| {
        let mut full = skeleton(nft);
        full.append(rest);
        full
    };
    let Some(listing) = nft.list(family, table)? else {
        let full = with_skeleton(nft, tx);
        return nft.apply(&full);
    };
    let mut deletes = Transaction::new();
    for e in listing.elements().iter().filter(|e| conflicts(e)) {
        deletes.extend(delete_listed_element(family, table, e));
    }
    for r in listing.rules().iter().filter(|r| r.comment.as_deref() == Some(claim.owner)) {
        deletes.push(delete_rule(family, table, &r.chain, r.handle));
    }
    if deletes.is_empty() {
        if let Some(failure) = failure {
            return Err(failure);
        }
    } else {
        log::info!("nft: {table}: replacing {} object(s) held by this or stale attachments", deletes.len());
    }
    let mut retry = deletes.clone();
    retry.append(tx.clone());
    match nft.apply(&retry) {
        Err(e) if e.is_missing() => {
            let full = with_skeleton(nft, retry);
            nft.apply(&full)
        }
        other => other,
    }
}

/// The deletion of a listed element; none for a key form our tables never
/// hold (logged: the element stays).
pub fn delete_listed_element(family: NfFamily, table: &str, e: &ListedElement) -> Option<Obj> {
    let key = key_expr(&e.key);
    if key.is_none() {
        log::warn!("nft: {table} {}: cannot name the listed element {} to delete it", e.set, e.key);
    }
    Some(delete_element(family, table, &e.set, key?))
}

/// Deletes everything in `listing` whose comment `owned` accepts: elements
/// of any set or map and rules of any chain, in one transaction (none when
/// nothing matches). When the transaction fails because a concurrent call
/// changed the table meanwhile, lists it again and retries once. Returns
/// what was removed.
pub fn delete_owned(
    nft: &mut dyn Backend,
    family: NfFamily,
    table: &str,
    listing: &Listing,
    owned: impl Fn(&str) -> bool,
) -> Result<(Vec<ListedElement>, Vec<ListedRule>)> {
    match delete_owned_once(nft, family, table, listing, &owned) {
        Ok(done) => Ok(done),
        Err(first) => match nft.list(family, table)? {
            Some(fresh) => delete_owned_once(nft, family, table, &fresh, &owned).map_err(|_| first),
            None => Ok((Vec::new(), Vec::new())),
        },
    }
}

fn delete_owned_once(
    nft: &mut dyn Backend,
    family: NfFamily,
    table: &str,
    listing: &Listing,
    owned: &impl Fn(&str) -> bool,
) -> Result<(Vec<ListedElement>, Vec<ListedRule>)> {
    let elements: Vec<ListedElement> =
        listing.elements().into_iter().filter(|e| e.comment.as_deref().is_some_and(owned)).collect();
    let rules: Vec<ListedRule> =
        listing.rules().into_iter().filter(|r| r.comment.as_deref().is_some_and(owned)).collect();
    let mut tx = Transaction::new();
    tx.extend(elements.iter().filter_map(|e| delete_listed_element(family, table, e)));
    tx.extend(rules.iter().map(|r| delete_rule(family, table, &r.chain, r.handle)));
    nft.apply(&tx)?;
    Ok((elements, rules))
}

/// DEL by key, without listing: looks `candidates` up in `table` and
/// deletes, in one batch, those whose comment `owned` accepts (a key held by
/// another attachment stays). Returns the indices of the deleted candidates.
/// Missing elements, sets or tables are no error. On an error the caller
/// falls back to the listing path (`delete_owned`).
pub fn delete_by_key(
    nft: &mut dyn Backend,
    family: NfFamily,
    table: &str,
    candidates: &[Element],
    owned: impl Fn(&str) -> bool,
) -> Result<Vec<usize>> {
    let found = nft.lookup(family, table, candidates)?;
    let doomed: Vec<usize> = found
        .iter()
        .enumerate()
        .filter(|(_, f)| f.as_ref().and_then(|f| f.comment.as_deref()).is_some_and(&owned))
        .map(|(i, _)| i)
        .collect();
    let ops: Vec<ElementOp> = doomed.iter().map(|i| ElementOp::Delete(&candidates[*i])).collect();
    nft.commit(family, table, &ops)?;
    Ok(doomed)
}

/// GC: deletes `network`'s elements and rules in `table` whose owner is not
/// one of `valid`. Returns what was removed.
pub fn delete_stale(
    nft: &mut dyn Backend,
    family: NfFamily,
    table: &str,
    network: &str,
    valid: &[Owner],
) -> Result<(Vec<ListedElement>, Vec<ListedRule>)> {
    let Some(listing) = nft.list(family, table)? else { return Ok(Default::default()) };
    let stale = |c: &str| owner::is_network(c, network) && !valid.iter().any(|v| v.owns(c));
    delete_owned(nft, family, table, &listing, stale)
}
