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
    /// Whether `table` holds `chain`, without listing (nothing when either is
    /// missing): the cheap check before looking at another's tables.
    fn has_chain(&mut self, family: NfFamily, table: &str, chain: &str) -> Result<bool>;
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

/// An element's nfnetlink encoding, or the error that sends the caller to nft.
fn wire(e: &Element) -> Result<WireElem> {
    e.wire().ok_or_else(|| Error::exec(format!("cannot encode an element of {}", e.set), ""))
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
        // Encoded first, so that an element nfnetlink cannot carry costs no socket.
        let encoded: Vec<Option<WireElem>> = ops
            .iter()
            .map(|op| match op {
                ElementOp::Create(e) | ElementOp::Add(e) | ElementOp::Delete(e) => wire(e).map(Some),
                ElementOp::Flush(_) => Ok(None),
            })
            .collect::<Result<_>>()?;
        let wire: Vec<WireOp> = ops
            .iter()
            .zip(&encoded)
            .map(|(op, w)| match (op, w) {
                (ElementOp::Create(_), Some(w)) => WireOp::Create(w),
                (ElementOp::Add(_), Some(w)) => WireOp::Add(w),
                (ElementOp::Delete(_), Some(w)) => WireOp::Delete(w),
                (ElementOp::Flush(set), _) => WireOp::Flush(set),
                (_, None) => unreachable!("every element op is encoded above"),
            })
            .collect();
        self.nfnl()?.commit(nfgen_family(family), table, &wire)
    }

    fn lookup(&mut self, family: NfFamily, table: &str, elems: &[Element]) -> Result<Vec<Option<Found>>> {
        if elems.is_empty() {
            return Ok(Vec::new());
        }
        let wire: Vec<WireElem> = elems.iter().map(wire).collect::<Result<_>>()?;
        let found = self.nfnl()?.get(nfgen_family(family), table, &wire)?;
        Ok(found.into_iter().map(|f| f.map(|f| Found { comment: f.comment })).collect())
    }

    fn has_chain(&mut self, family: NfFamily, table: &str, chain: &str) -> Result<bool> {
        self.nfnl()?.chain_exists(nfgen_family(family), table, chain)
    }

    fn available(&mut self) -> Result<()> {
        exec::run(&["--version"], None).map(|_| ())
    }
}
