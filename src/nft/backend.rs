//! The seam between rule-building logic and the kernel. `System` execs nft
//! for transactions and listings and speaks nfnetlink for element-only
//! batches; `fake::Fake` (tests) keeps a model of the tables instead, so the
//! applets' nftables logic is tested without root.

use nftables::types::NfFamily;

use super::element::{Element, ElementOp};
use super::error::{Error, Result};
use super::exec;
use super::listing::Listing;
use super::nfnetlink::{Nfnl, WireElem, WireOp};
use super::schema::{nfgen_family, Transaction};

/// What a lookup by key found: the element's comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub comment: Option<String>,
}

pub trait Backend {
    /// Applies `tx` as one atomic transaction (nothing when it is empty).
    fn apply(&mut self, tx: &Transaction) -> Result<()>;
    /// The table as nft lists it, or None when it does not exist.
    fn list(&mut self, family: NfFamily, table: &str) -> Result<Option<Listing>>;
    /// Applies element-only `ops` on `table` as one atomic batch, without
    /// nft. Missing: a table or set is missing; Exists: a created key is held.
    fn commit(&mut self, family: NfFamily, table: &str, ops: &[ElementOp]) -> Result<()>;
    /// Looks each of `elems` up by key: what `table` holds under it, or None
    /// when it (or its set, or the table) is missing.
    fn lookup(&mut self, family: NfFamily, table: &str, elems: &[Element]) -> Result<Vec<Option<Found>>>;
    /// Whether nftables can be used at all (STATUS).
    fn available(&mut self) -> Result<()>;
}

/// The real thing. The nfnetlink socket is opened on first use and kept for
/// the plugin call: declare the backend before any lock the call takes, so
/// the lock is released before the socket's detached close forks.
#[derive(Default)]
pub struct System {
    nfnl: Option<Nfnl>,
}

impl System {
    fn nfnl(&mut self) -> Result<&mut Nfnl> {
        if self.nfnl.is_none() {
            self.nfnl = Some(Nfnl::open()?);
        }
        Ok(self.nfnl.as_mut().expect("opened above"))
    }
}

/// Every element of `ops` encoded for nfnetlink.
fn encode(ops: &[ElementOp]) -> Result<Vec<(usize, Option<WireElem>)>> {
    ops.iter()
        .enumerate()
        .map(|(i, op)| match op {
            ElementOp::Create(e) | ElementOp::Add(e) | ElementOp::Delete(e) => {
                let wire = e.wire().ok_or_else(|| Error::exec(format!("cannot encode an element of {}", e.set), ""))?;
                Ok((i, Some(wire)))
            }
            ElementOp::Flush(_) => Ok((i, None)),
        })
        .collect()
}

impl Backend for System {
    fn apply(&mut self, tx: &Transaction) -> Result<()> {
        exec::apply(tx)
    }

    fn list(&mut self, family: NfFamily, table: &str) -> Result<Option<Listing>> {
        exec::list(family, table)
    }

    fn commit(&mut self, family: NfFamily, table: &str, ops: &[ElementOp]) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let encoded = encode(ops)?;
        let wire: Vec<WireOp> = encoded
            .iter()
            .map(|(i, w)| match (&ops[*i], w) {
                (ElementOp::Create(_), Some(w)) => WireOp::Create(w),
                (ElementOp::Add(_), Some(w)) => WireOp::Add(w),
                (ElementOp::Delete(_), Some(w)) => WireOp::Delete(w),
                (ElementOp::Flush(set), _) => WireOp::Flush(set),
                (_, None) => unreachable!("encode gives every element its encoding"),
            })
            .collect();
        self.nfnl()?.commit(nfgen_family(family), table, &wire)
    }

    fn lookup(&mut self, family: NfFamily, table: &str, elems: &[Element]) -> Result<Vec<Option<Found>>> {
        let wire: Vec<WireElem> = elems
            .iter()
            .map(|e| e.wire().ok_or_else(|| Error::exec(format!("cannot encode an element of {}", e.set), "")))
            .collect::<Result<_>>()?;
        let found = self.nfnl()?.get(nfgen_family(family), table, &wire)?;
        Ok(found.into_iter().map(|f| f.map(|f| Found { comment: f.comment })).collect())
    }

    fn available(&mut self) -> Result<()> {
        exec::run(&["--version"], None).map(|_| ())
    }
}
