//! A small nfnetlink (NETLINK_NETFILTER) client for the per-container part
//! of our nftables state: adding, looking up and deleting set and map
//! elements of tables that already exist, without exec'ing nft (~3.4 ms
//! before it does anything) and without listing whole tables.
//!
//! Elements are encoded byte for byte as nft encodes them (checked against
//! `nft --debug=netlink` and by round trips through `nft -j list` in the
//! tests), comments included, so nft lists what we write exactly like what
//! it writes itself. Everything else (tables, chains, rules, set
//! declarations) stays with nft: see exec.rs. The elements come encoded from element.rs.
//!
//! Changes go in one batch (NFNL_MSG_BATCH_BEGIN ... END, every message
//! ACKed), which the kernel commits atomically or not at all.

use std::os::fd::AsRawFd;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use nix::libc;

use super::error::{Error, ErrorKind, Result};
use crate::netlink::msg::{find_attr, messages, Message, NLMSG_DONE, NLMSG_ERROR};
use crate::util::detached;

/// nfgenmsg families of the tables we write.
pub const FAMILY_INET: u8 = 1;
pub const FAMILY_BRIDGE: u8 = 7;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;

const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;
/// Deletes an element, and is no error when it is gone (Linux 6.3+).
const NFT_MSG_DESTROYSETELEM: u16 = 30;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP: u16 = 0x300;
const NLA_F_NESTED: u16 = 0x8000;

const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_MATCH_NAME: u16 = 1;
const NFTA_MATCH_REV: u16 = 2;
const NFTA_MATCH_INFO: u16 = 3;

const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
const NFTA_SET_ELEM_KEY_END: u16 = 10;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
/// `jump` (NF_JUMP of nf_tables.h: -3), in network order on the wire.
const NFT_JUMP: i32 = -3;

/// libnftnl's userdata TLV type of an element comment (a NUL-terminated string).
const NFTNL_UDATA_SET_ELEM_COMMENT: u8 = 0;

use super::error::ENOENT;
const EINVAL: i32 = nix::errno::Errno::EINVAL as i32;
const EOPNOTSUPP: i32 = nix::errno::Errno::EOPNOTSUPP as i32;

/// Key and data encodings of the nft types our sets use, as nft sends them.
pub mod key {
    use std::net::IpAddr;

    /// `ipv4_addr` / `ipv6_addr`: the address in network order.
    pub fn ip(addr: IpAddr) -> Vec<u8> {
        match addr {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        }
    }

    /// The last address of `net` (an interval's end, inclusive).
    pub fn ip_last(net: ipnet::IpNet) -> Vec<u8> {
        ip(net.broadcast())
    }

    /// `inet_service`: a port in network order.
    pub fn inet_service(port: u16) -> Vec<u8> {
        port.to_be_bytes().to_vec()
    }

    /// `inet_proto`: the IP protocol number of `tcp`, `udp` or `sctp`.
    pub fn inet_proto(name: &str) -> Option<Vec<u8>> {
        let n = match name {
            "tcp" => 6,
            "udp" => 17,
            "sctp" => 132,
            _ => return None,
        };
        Some(vec![n])
    }

    /// `ifname`: the name NUL-padded to IFNAMSIZ (16) bytes.
    pub fn ifname(name: &str) -> Option<Vec<u8>> {
        if name.is_empty() || name.len() >= 16 {
            return None;
        }
        let mut v = name.as_bytes().to_vec();
        v.resize(16, 0);
        Some(v)
    }

    /// `ether_addr`: six bytes from `aa:bb:cc:dd:ee:ff`.
    pub fn ether(mac: &str) -> Option<Vec<u8>> {
        let bytes: Vec<u8> = mac.split(':').map(|b| u8::from_str_radix(b, 16).ok()).collect::<Option<_>>()?;
        (bytes.len() == 6).then_some(bytes)
    }

    /// A concatenation: every field padded to a multiple of 4 bytes.
    pub fn concat(fields: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for f in fields {
            v.extend_from_slice(f);
            v.resize(v.len() + (4 - f.len() % 4) % 4, 0);
        }
        v
    }
}

/// One set or map element, encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireElem {
    /// The set or map holding it.
    pub set: String,
    pub key: Vec<u8>,
    /// The end of a concatenated interval (pipapo sets), inclusive.
    pub key_end: Option<Vec<u8>>,
    /// A map's value.
    pub data: Option<Vec<u8>>,
    /// A verdict map's value: `jump <chain>`.
    pub jump: Option<String>,
    pub comment: Option<String>,
}

impl WireElem {
    pub fn new(set: &str, key: Vec<u8>) -> WireElem {
        WireElem { set: set.to_string(), key, key_end: None, data: None, jump: None, comment: None }
    }
    pub fn with_data(mut self, data: Vec<u8>) -> WireElem {
        self.data = Some(data);
        self
    }
    /// The value of a verdict map element: `jump <chain>`.
    pub fn with_jump(mut self, chain: &str) -> WireElem {
        self.jump = Some(chain.to_string());
        self
    }
    pub fn with_end(mut self, end: Vec<u8>) -> WireElem {
        self.key_end = Some(end);
        self
    }
    pub fn with_comment(mut self, comment: &str) -> WireElem {
        self.comment = Some(comment.to_string());
        self
    }
}

/// One change of a batch.
#[derive(Debug, Clone, Copy)]
pub enum WireOp<'a> {
    /// `create element`: fails with EEXIST when the key is held.
    Create(&'a WireElem),
    /// `add element`: no error when an identical element exists.
    Add(&'a WireElem),
    /// `delete element` (`destroy` where the kernel has it).
    Delete(&'a WireElem),
    /// `flush set`: fails with ENOENT when the set does not exist. Meant for
    /// empty marker sets (a flush that deletes elements would make the
    /// socket's close wait, like `Delete`, without `close_detached`).
    Flush(&'a str),
}

/// A base chain as the kernel lists it (chains without a hook are left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireChain {
    /// The nfgenmsg family of its table.
    pub family: u8,
    pub table: String,
    pub name: String,
    /// NF_INET_* (or the family's own) hook number.
    pub hooknum: u32,
    pub priority: i32,
    /// NF_DROP (0) or NF_ACCEPT (1).
    pub policy: u32,
}

/// One expression of a rule: its name (`cmp`, `immediate`, `counter`...)
/// and, for an `immediate` verdict, the verdict code (NF_DROP is 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireExpr {
    pub name: String,
    pub verdict: Option<i32>,
    /// The chain of a jump or goto verdict.
    pub chain: Option<String>,
    /// An xt match (iptables-nft) of exactly conntrack's INVALID state:
    /// `-m conntrack --ctstate INVALID` or `-m state --state INVALID`.
    pub invalid_only: bool,
}

/// A rule as the kernel lists it: what foreign.rs needs to know of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireRule {
    pub handle: u64,
    pub comment: Option<String>,
    pub exprs: Vec<WireExpr>,
}

/// An element as the kernel returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub comment: Option<String>,
    pub data: Option<Vec<u8>>,
}

/// Netlink message building.
struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    fn new(msg_type: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> Msg {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish
        buf.extend_from_slice(&msg_type.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
        buf.extend_from_slice(&[family, 0]); // nfgenmsg: family, NFNETLINK_V0
        buf.extend_from_slice(&res_id.to_be_bytes());
        Msg { buf, nests: Vec::new() }
    }

    fn nft(msg: u16, flags: u16, seq: u32, family: u8) -> Msg {
        Msg::new((NFNL_SUBSYS_NFTABLES << 8) | msg, NLM_F_REQUEST | flags, seq, family, 0)
    }

    fn attr(&mut self, kind: u16, payload: &[u8]) {
        crate::netlink::msg::put_attr(&mut self.buf, kind, payload);
    }

    fn attr_str(&mut self, kind: u16, s: &str) {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(kind, &v);
    }

    fn nest(&mut self, kind: u16) {
        self.nests.push(self.buf.len());
        self.attr(kind | NLA_F_NESTED, &[]);
    }

    fn end_nest(&mut self) {
        let start = self.nests.pop().expect("nest opened");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    /// `NFTA_DATA_VALUE` nested in `kind`.
    fn value(&mut self, kind: u16, bytes: &[u8]) {
        self.nest(kind);
        self.attr(NFTA_DATA_VALUE, bytes);
        self.end_nest();
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// nft's userdata for an element comment: one TLV, the string with its NUL.
pub fn comment_userdata(comment: &str) -> Vec<u8> {
    // nft keeps at most 128 bytes of a comment (NFT_USERDATA_MAXLEN allows more).
    let text = &comment.as_bytes()[..comment.len().min(254)];
    let mut v = vec![NFTNL_UDATA_SET_ELEM_COMMENT, (text.len() + 1) as u8];
    v.extend_from_slice(text);
    v.push(0);
    v
}

/// The comment in an element's userdata, if any.
pub fn userdata_comment(mut udata: &[u8]) -> Option<String> {
    while udata.len() >= 2 {
        let (kind, len) = (udata[0], udata[1] as usize);
        let value = udata.get(2..2 + len)?;
        if kind == NFTNL_UDATA_SET_ELEM_COMMENT {
            let text = value.split(|b| *b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        udata = &udata[2 + len..];
    }
    None
}

/// One set element message: `table`, `set` and the element.
fn elem_msg(msg: u16, flags: u16, seq: u32, family: u8, table: &str, elem: &WireElem, with_payload: bool) -> Vec<u8> {
    let mut m = Msg::nft(msg, flags, seq, family);
    m.attr_str(NFTA_SET_ELEM_LIST_TABLE, table);
    m.attr_str(NFTA_SET_ELEM_LIST_SET, &elem.set);
    m.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
    m.nest(NFTA_LIST_ELEM);
    m.value(NFTA_SET_ELEM_KEY, &elem.key);
    if let Some(end) = &elem.key_end {
        m.value(NFTA_SET_ELEM_KEY_END, end);
    }
    if with_payload {
        if let Some(data) = &elem.data {
            m.value(NFTA_SET_ELEM_DATA, data);
        }
        if let Some(chain) = &elem.jump {
            m.nest(NFTA_SET_ELEM_DATA);
            m.nest(NFTA_DATA_VERDICT);
            m.attr(NFTA_VERDICT_CODE, &NFT_JUMP.to_be_bytes());
            m.attr_str(NFTA_VERDICT_CHAIN, chain);
            m.end_nest();
            m.end_nest();
        }
        if let Some(c) = &elem.comment {
            m.attr(NFTA_SET_ELEM_USERDATA, &comment_userdata(c));
        }
    }
    m.end_nest();
    m.end_nest();
    m.finish()
}

/// The messages of one batch (without BEGIN/END), numbered from `seq`.
fn batch_messages(family: u8, table: &str, ops: &[WireOp], destroy: bool, seq: u32) -> Vec<Vec<u8>> {
    let ack = NLM_F_ACK;
    ops.iter()
        .enumerate()
        .map(|(i, op)| {
            let seq = seq + i as u32;
            match op {
                WireOp::Create(e) => {
                    elem_msg(NFT_MSG_NEWSETELEM, ack | NLM_F_CREATE | NLM_F_EXCL, seq, family, table, e, true)
                }
                WireOp::Add(e) => elem_msg(NFT_MSG_NEWSETELEM, ack | NLM_F_CREATE, seq, family, table, e, true),
                WireOp::Delete(e) => {
                    let msg = if destroy { NFT_MSG_DESTROYSETELEM } else { NFT_MSG_DELSETELEM };
                    elem_msg(msg, ack, seq, family, table, e, false)
                }
                WireOp::Flush(set) => {
                    let mut m = Msg::nft(NFT_MSG_DELSETELEM, ack, seq, family);
                    m.attr_str(NFTA_SET_ELEM_LIST_TABLE, table);
                    m.attr_str(NFTA_SET_ELEM_LIST_SET, set);
                    m.finish()
                }
            }
        })
        .collect()
}

/// A whole batch: BEGIN, the messages, END.
fn batch(family: u8, table: &str, ops: &[WireOp], destroy: bool, seq: u32) -> Vec<u8> {
    let mut out = Msg::new(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, 0, NFNL_SUBSYS_NFTABLES).finish();
    for m in batch_messages(family, table, ops, destroy, seq + 1) {
        out.extend(m);
    }
    let end_seq = seq + 1 + ops.len() as u32;
    out.extend(Msg::new(NFNL_MSG_BATCH_END, NLM_F_REQUEST, end_seq, 0, NFNL_SUBSYS_NFTABLES).finish());
    out
}

/// The first element of a NEWSETELEM reply (after its nfgenmsg).
fn parse_found(payload: &[u8]) -> Option<Found> {
    let elems = find_attr(payload.get(4..)?, NFTA_SET_ELEM_LIST_ELEMENTS)?;
    let elem = find_attr(elems, NFTA_LIST_ELEM)?;
    let data = find_attr(elem, NFTA_SET_ELEM_DATA).and_then(|d| find_attr(d, NFTA_DATA_VALUE)).map(<[u8]>::to_vec);
    let comment = find_attr(elem, NFTA_SET_ELEM_USERDATA).and_then(userdata_comment);
    Some(Found { comment, data })
}

fn str_attr(attrs: &[u8], kind: u16) -> Option<String> {
    let v = find_attr(attrs, kind)?;
    Some(String::from_utf8_lossy(v.split(|b| *b == 0).next().unwrap_or_default()).into_owned())
}

fn be_u32_attr(attrs: &[u8], kind: u16) -> Option<u32> {
    Some(u32::from_be_bytes(find_attr(attrs, kind)?.get(..4)?.try_into().ok()?))
}

/// A NEWCHAIN message of a dump; None for a chain without a hook.
fn parse_chain(payload: &[u8]) -> Option<WireChain> {
    let family = *payload.first()?;
    let attrs = payload.get(4..)?;
    let hook = find_attr(attrs, NFTA_CHAIN_HOOK)?;
    Some(WireChain {
        family,
        table: str_attr(attrs, NFTA_CHAIN_TABLE)?,
        name: str_attr(attrs, NFTA_CHAIN_NAME)?,
        hooknum: be_u32_attr(hook, NFTA_HOOK_HOOKNUM)?,
        priority: be_u32_attr(hook, NFTA_HOOK_PRIORITY)? as i32,
        policy: be_u32_attr(attrs, NFTA_CHAIN_POLICY).unwrap_or(1),
    })
}

/// The name of a NEWCHAIN message's chain, when it is one of `table`'s.
fn chain_name_in(payload: &[u8], table: &str) -> Option<String> {
    let attrs = payload.get(4..)?;
    (str_attr(attrs, NFTA_CHAIN_TABLE)? == table).then(|| str_attr(attrs, NFTA_CHAIN_NAME)).flatten()
}

/// A NEWRULE message of a dump.
fn parse_rule(payload: &[u8]) -> Option<WireRule> {
    let attrs = payload.get(4..)?;
    let handle = u64::from_be_bytes(find_attr(attrs, NFTA_RULE_HANDLE)?.get(..8)?.try_into().ok()?);
    let comment = find_attr(attrs, NFTA_RULE_USERDATA).and_then(userdata_comment);
    let exprs = crate::netlink::msg::attrs(find_attr(attrs, NFTA_RULE_EXPRESSIONS).unwrap_or_default())
        .filter_map(|(_, e)| {
            let name = str_attr(e, NFTA_EXPR_NAME)?;
            let verdict_attr = (name == "immediate")
                .then(|| find_attr(e, NFTA_EXPR_DATA))
                .flatten()
                .and_then(|d| find_attr(d, NFTA_IMMEDIATE_DATA))
                .and_then(|d| find_attr(d, NFTA_DATA_VERDICT));
            let verdict = verdict_attr.and_then(|v| be_u32_attr(v, NFTA_VERDICT_CODE)).map(|c| c as i32);
            let chain = verdict_attr.and_then(|v| str_attr(v, NFTA_VERDICT_CHAIN));
            let invalid_only = name == "match" && find_attr(e, NFTA_EXPR_DATA).is_some_and(matches_invalid_only);
            Some(WireExpr { name, verdict, chain, invalid_only })
        })
        .collect();
    Some(WireRule { handle, comment, exprs })
}

/// Whether an xt match's attributes are a `state` or `conntrack` match of
/// exactly the INVALID state (xt_state_info; xt_conntrack_mtinfo1..3,
/// whose flags sit at the same offsets: match_flags at 146, invert_flags at
/// 148, state_mask at 150, a u8 in revision 1).
fn matches_invalid_only(data: &[u8]) -> bool {
    const INVALID: u16 = 1; // XT_STATE_INVALID, XT_CONNTRACK_STATE_INVALID
    const STATE_FLAG: u16 = 1; // XT_CONNTRACK_STATE
    let Some(info) = find_attr(data, NFTA_MATCH_INFO) else { return false };
    let u16_at = |at: usize| info.get(at..at + 2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    match str_attr(data, NFTA_MATCH_NAME).as_deref() {
        Some("state") => {
            info.get(..4).is_some_and(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) == u32::from(INVALID))
        }
        Some("conntrack") => {
            let revision = be_u32_attr(data, NFTA_MATCH_REV).unwrap_or(0);
            let state = if revision == 1 { info.get(150).map(|b| u16::from(*b)) } else { u16_at(150) };
            let (Some(flags), Some(invert)) = (u16_at(146), u16_at(148)) else { return false };
            (1..=3).contains(&revision) && flags & STATE_FLAG != 0 && invert & STATE_FLAG == 0 && state == Some(INVALID)
        }
        _ => false,
    }
}

/// The errno of an NLMSG_ERROR payload (0 for an ACK).
fn error_of(payload: &[u8]) -> i32 {
    payload.get(0..4).map(|b| -i32::from_ne_bytes(b.try_into().unwrap())).unwrap_or(EINVAL)
}

/// An nfnetlink socket in the calling thread's netns.
///
/// Closing a netfilter netlink socket makes the kernel wait for pending
/// nf_tables destroy work (an RCU grace period, ~13-25 ms here) after any
/// transaction that deleted something: see `close_detached`, used on drop
/// once this socket has committed a deletion.
pub struct Nfnl {
    sock: Option<Socket>,
    seq: u32,
    deleted: bool,
}

impl Nfnl {
    pub fn open() -> Result<Nfnl> {
        let fail = |what: &str, e: std::io::Error| Error::exec(what, e);
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(|e| fail("opening an nfnetlink socket", e))?;
        sock.bind_auto().map_err(|e| fail("binding an nfnetlink socket", e))?;
        sock.connect(&SocketAddr::new(0, 0)).map_err(|e| fail("connecting an nfnetlink socket", e))?;
        // ACKs without a copy of the request.
        let _ = sock.set_cap_ack(true);
        // The kernel always answers; should it not, fail (callers fall back
        // to nft) rather than hang the runtime.
        let timeout = nix::sys::time::TimeVal::new(5, 0);
        let _ = nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::ReceiveTimeout, &timeout);
        Ok(Nfnl { sock: Some(sock), seq: 1, deleted: false })
    }

    fn sock(&self) -> &Socket {
        self.sock.as_ref().expect("socket open until drop")
    }

    fn next_seqs(&mut self, n: u32) -> u32 {
        let first = self.seq;
        self.seq += n;
        first
    }

    fn send(&self, buf: &[u8]) -> Result<()> {
        self.sock().send(buf, 0).map(|_| ()).map_err(|e| Error::exec("sending to nfnetlink", e))
    }

    /// Receives until `done` says so; `on_reply` sees every message.
    fn receive(&self, mut on_reply: impl FnMut(&Message) -> bool) -> Result<()> {
        let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
        loop {
            buf.clear();
            self.sock().recv(&mut buf, 0).map_err(|e| Error::exec("receiving from nfnetlink", e))?;
            for r in messages(&buf) {
                if on_reply(&r) {
                    return Ok(());
                }
            }
        }
    }

    /// Applies `ops` on `table` as one atomic batch. The error is the first
    /// failing message's errno (ENOENT: a table or set is missing; EEXIST: a
    /// created key is held).
    pub fn commit(&mut self, family: u8, table: &str, ops: &[WireOp]) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        // A flush is only used on (empty) marker sets: it frees nothing.
        let deletes = ops.iter().any(|op| matches!(op, WireOp::Delete(_)));
        match self.commit_once(family, table, ops, true) {
            // Kernels before 6.3 have no DESTROYSETELEM: delete instead.
            Err(e) if deletes && matches!(e.kind, ErrorKind::Kernel(EINVAL | EOPNOTSUPP)) => {
                log::debug!("nfnetlink: {e}; retrying with DELSETELEM");
                self.commit_once(family, table, ops, false)?;
            }
            other => other?,
        }
        log::debug!("nfnetlink batch committed: {table}, {} message(s)", ops.len());
        self.deleted |= deletes;
        Ok(())
    }

    fn commit_once(&mut self, family: u8, table: &str, ops: &[WireOp], destroy: bool) -> Result<()> {
        let seq = self.next_seqs(ops.len() as u32 + 2);
        self.send(&batch(family, table, ops, destroy, seq))?;
        let (first, last) = (seq + 1, seq + ops.len() as u32);
        let mut acked = 0;
        let mut failure: Option<(u32, i32)> = None;
        self.receive(|r| {
            if r.kind != NLMSG_ERROR {
                return false;
            }
            let errno = error_of(r.payload);
            if r.seq == seq {
                // The batch itself was refused (or its commit failed).
                failure = failure.or(Some((seq, errno)));
                return errno != 0 || acked == ops.len();
            }
            if (first..=last).contains(&r.seq) {
                acked += 1;
                if errno != 0 && failure.is_none_or(|(s, _)| r.seq < s) {
                    failure = Some((r.seq, errno));
                }
            }
            acked == ops.len()
        })?;
        match failure {
            Some((s, errno)) if errno != 0 => {
                let what = match s.checked_sub(first).and_then(|i| ops.get(i as usize)) {
                    Some(WireOp::Create(e) | WireOp::Add(e)) => format!("adding an element to {table} {}", e.set),
                    Some(WireOp::Delete(e)) => format!("deleting an element of {table} {}", e.set),
                    Some(WireOp::Flush(set)) => format!("flushing {table} {set}"),
                    None => format!("nftables batch on {table}"),
                };
                Err(Error::kernel(errno, &what))
            }
            _ => Ok(()),
        }
    }

    /// Looks each of `elems` up by key (and interval end): what the kernel
    /// holds under that key, or None when it (or its set or table) is missing.
    /// One request per element, sent together; no listing of the table.
    pub fn get(&mut self, family: u8, table: &str, elems: &[WireElem]) -> Result<Vec<Option<Found>>> {
        if elems.is_empty() {
            return Ok(Vec::new());
        }
        log::debug!("nfnetlink get: {table}, {} element(s)", elems.len());
        let seq = self.next_seqs(elems.len() as u32);
        let mut out = Vec::new();
        for (i, e) in elems.iter().enumerate() {
            out.extend(elem_msg(NFT_MSG_GETSETELEM, NLM_F_ACK, seq + i as u32, family, table, e, false));
        }
        self.send(&out)?;
        let mut found: Vec<Option<Found>> = vec![None; elems.len()];
        let mut done = 0;
        let mut error = None;
        self.receive(|r| {
            let Some(i) = r.seq.checked_sub(seq).map(|i| i as usize).filter(|i| *i < elems.len()) else {
                return false;
            };
            match r.kind {
                NLMSG_ERROR => {
                    let errno = error_of(r.payload);
                    if errno != 0 && errno != ENOENT {
                        error = error.or(Some(errno));
                    }
                    done += 1;
                }
                NLMSG_DONE => {}
                _ => found[i] = parse_found(r.payload),
            }
            done == elems.len()
        })?;
        match error {
            Some(errno) => Err(Error::kernel(errno, &format!("looking up elements of {table}"))),
            None => Ok(found),
        }
    }
}

impl Nfnl {
    /// The payloads of a dump request (`msg` with `attrs`), every family's
    /// objects when `family` is 0 (NFPROTO_UNSPEC).
    fn dump(&mut self, msg: u16, family: u8, attrs: &[(u16, &str)], what: &str) -> Result<Vec<Vec<u8>>> {
        log::debug!("nfnetlink dump: {what}");
        let seq = self.next_seqs(1);
        let mut m = Msg::nft(msg, NLM_F_DUMP, seq, family);
        for (kind, value) in attrs {
            m.attr_str(*kind, value);
        }
        self.send(&m.finish())?;
        let (mut out, mut errno) = (Vec::new(), 0);
        self.receive(|r| {
            if r.seq != seq {
                return false;
            }
            match r.kind {
                NLMSG_DONE => true,
                NLMSG_ERROR => {
                    // The dump's refusal (a missing table, set or chain).
                    errno = error_of(r.payload);
                    true
                }
                _ => {
                    out.push(r.payload.to_vec());
                    false
                }
            }
        })?;
        match errno {
            0 => Ok(out),
            e => Err(Error::kernel(e, &format!("listing {what}"))),
        }
    }

    /// Every base chain of every table, all families.
    pub fn base_chains(&mut self) -> Result<Vec<WireChain>> {
        Ok(self.dump(NFT_MSG_GETCHAIN, 0, &[], "chains")?.iter().filter_map(|p| parse_chain(p)).collect())
    }

    /// The names of every chain of `table` (nfgenmsg `family`), base or
    /// not: one dump of the family's chains.
    pub fn chain_names(&mut self, family: u8, table: &str) -> Result<Vec<String>> {
        let chains = self.dump(NFT_MSG_GETCHAIN, family, &[], "chain names")?;
        Ok(chains.iter().filter_map(|p| chain_name_in(p, table)).collect())
    }

    /// The rules of one chain, in order.
    pub fn rules(&mut self, family: u8, table: &str, chain: &str) -> Result<Vec<WireRule>> {
        let attrs = [(NFTA_RULE_TABLE, table), (NFTA_RULE_CHAIN, chain)];
        let what = format!("the rules of {table} {chain}");
        Ok(self.dump(NFT_MSG_GETRULE, family, &attrs, &what)?.iter().filter_map(|p| parse_rule(p)).collect())
    }

    /// Whether `table` (of nfgenmsg `family`) holds `chain`: one request,
    /// no listing.
    pub fn chain_exists(&mut self, family: u8, table: &str, chain: &str) -> Result<bool> {
        let seq = self.next_seqs(1);
        let mut m = Msg::nft(NFT_MSG_GETCHAIN, NLM_F_ACK, seq, family);
        m.attr_str(NFTA_CHAIN_TABLE, table);
        m.attr_str(NFTA_CHAIN_NAME, chain);
        self.send(&m.finish())?;
        let (mut found, mut errno) = (false, 0);
        self.receive(|r| {
            if r.seq != seq {
                return false;
            }
            if r.kind != NLMSG_ERROR {
                found = true;
                return false;
            }
            errno = error_of(r.payload);
            true
        })?;
        match errno {
            0 => Ok(found),
            ENOENT => Ok(false),
            errno => Err(Error::kernel(errno, &format!("looking up chain {table} {chain}"))),
        }
    }
}

impl Drop for Nfnl {
    fn drop(&mut self) {
        if let Some(sock) = self.sock.take() {
            // Only a socket that deleted something is detached. Detaching the
            // others too (an ADD's close also waits when another process's
            // deletion is pending) only moved the wait: closed at once, the
            // detached child held the commit mutex through the flush and the next
            // batch waited; closed after a grace period, its deferred socket
            // free (call_rcu) landed in the bridge DEL's veth teardown, whose
            // rcu_barrier then waited for it (chain DEL +15-30 ms).
            if self.deleted {
                close_detached(sock);
            }
        }
    }
}

/// Closes a netfilter netlink socket after it committed a deletion, off the
/// caller's critical path.
///
/// Why: the kernel frees deleted nf_tables objects after an RCU grace
/// period, and whoever closes an nfnetlink socket next waits for that
/// (netlink_release -> nft_rcv_nl_event -> flush of the destroy work, under
/// the netns' nf_tables commit mutex): 13-25 ms here, most of a DEL's time.
/// Our deletion is already committed and visible once its batch is ACKed;
/// what remains is only the kernel freeing memory.
///
/// How: a detached child (detached.rs) takes the socket. It waits until
/// this process has dropped its own copy (a pipe's EOF, or a second at most:
/// the child's close must be the last one, or we would be the one
/// waiting), waits for a grace period itself without any lock
/// (membarrier(MEMBARRIER_CMD_GLOBAL) is synchronize_rcu()), so that its
/// close finds the destroy work done and holds the commit mutex only
/// briefly, then closes the socket. Should fork fail, the socket is closed
/// here (and waits).
fn close_detached(sock: Socket) {
    let Ok((read_end, write_end)) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) else { return drop(sock) };
    let (sock_fd, read_fd) = (sock.as_raw_fd(), read_end.as_raw_fd());
    detached::spawn(&[sock_fd, read_fd], || unsafe {
        // EOF once the plugin dropped its copy; a second at most, whatever happens.
        let mut pfd = libc::pollfd { fd: read_fd, events: libc::POLLIN, revents: 0 };
        libc::poll(&mut pfd, 1, 1000);
        const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
        libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0);
        libc::close(sock_fd);
    });
    drop(sock);
    drop(write_end);
    drop(read_end);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replies(buf: &[u8]) -> Vec<Message<'_>> {
        messages(buf).collect()
    }

    fn attrs(buf: &[u8]) -> Vec<(u16, &[u8])> {
        crate::netlink::msg::attrs(buf).collect()
    }

    fn attr<'a>(list: &[(u16, &'a [u8])], kind: u16) -> Option<&'a [u8]> {
        list.iter().find(|(k, _)| *k == kind).map(|(_, v)| *v)
    }

    fn words(bytes: &[u8]) -> Vec<u32> {
        // As nft --debug=netlink prints them (host-endian 32-bit words).
        bytes
            .chunks(4)
            .map(|c| {
                let mut w = [0u8; 4];
                w[..c.len()].copy_from_slice(c);
                u32::from_le_bytes(w)
            })
            .collect()
    }

    #[test]
    fn keys_match_nft_debug_output() {
        // `nft --debug=netlink add element ...` printed these on x86_64.
        assert_eq!(words(&key::ip("10.1.0.5".parse().unwrap())), [0x0500010a]);
        assert_eq!(words(&key::ifname("veth12").unwrap()), [0x68746576, 0x00003231, 0, 0]);
        let pair = key::concat(&[&key::ifname("veth12").unwrap(), &key::ether("0a:58:0a:01:00:05").unwrap()]);
        assert_eq!(words(&pair), [0x68746576, 0x00003231, 0, 0, 0x010a580a, 0x00000500]);
        let k = key::concat(&[&key::inet_proto("tcp").unwrap(), &key::inet_service(8080)]);
        assert_eq!(words(&k), [0x00000006, 0x0000901f]);
        let k = key::concat(&[
            &key::ip("1.2.3.4".parse().unwrap()),
            &key::inet_proto("udp").unwrap(),
            &key::inet_service(53),
        ]);
        assert_eq!(words(&k), [0x04030201, 0x00000011, 0x00003500]);
        assert_eq!(key::inet_service(80), [0, 80]);
        let net: ipnet::IpNet = "10.1.0.0/24".parse().unwrap();
        let a = key::ip("10.1.0.5".parse().unwrap());
        assert_eq!(words(&key::concat(&[&key::ip(net.network()), &a])), [0x0000010a, 0x0500010a]);
        assert_eq!(words(&key::concat(&[&key::ip_last(net), &a])), [0xff00010a, 0x0500010a]);
        assert_eq!(key::ifname("sixteen-chars-xx"), None);
        assert_eq!(key::ether("0a:58:0a:01:00"), None);
        assert_eq!(key::inet_proto("icmp"), None);
    }

    #[test]
    fn comments_as_nft_writes_them() {
        // nft: userdata = { \x00\x0cnet c1 eth0\x00 }
        let u = comment_userdata("net c1 eth0");
        assert_eq!(u, b"\x00\x0cnet c1 eth0\x00");
        assert_eq!(userdata_comment(&u).as_deref(), Some("net c1 eth0"));
        // Another TLV first (interval flags) is skipped.
        let mut two = vec![1u8, 4, 1, 0, 0, 0];
        two.extend(&u);
        assert_eq!(userdata_comment(&two).as_deref(), Some("net c1 eth0"));
        assert_eq!(userdata_comment(b"\x00\x0atruncated"), None);
    }

    #[test]
    fn batch_framing() {
        let e = WireElem::new("s", key::ip("10.0.0.1".parse().unwrap())).with_comment("x");
        let d = WireElem::new("m", vec![6, 0, 0, 0, 0, 80, 0, 0]).with_data(vec![0, 80]);
        let buf = batch(FAMILY_INET, "t", &[WireOp::Create(&e), WireOp::Delete(&d), WireOp::Flush("f")], true, 7);
        let msgs = replies(&buf);
        let kinds: Vec<u16> = msgs.iter().map(|m| m.kind).collect();
        assert_eq!(kinds, [0x10, 0x0a0c, 0x0a1e, 0x0a0e, 0x11]);
        assert_eq!(msgs.iter().map(|m| m.seq).collect::<Vec<_>>(), [7, 8, 9, 10, 11]);
        // BEGIN names the nftables subsystem in res_id (network order).
        assert_eq!(msgs[0].payload, [0, 0, 0, 10]);
        // Flags: request, ack, create, excl.
        let flags = u16::from_ne_bytes(buf[16 + 4 + 6..16 + 4 + 8].try_into().unwrap());
        assert_eq!(flags, 0x1 | 0x4 | 0x400 | 0x200);
        // The created element: table, set, one element with key and comment.
        let top = attrs(&msgs[1].payload[4..]);
        assert_eq!(attr(&top, NFTA_SET_ELEM_LIST_TABLE), Some(&b"t\0"[..]));
        assert_eq!(attr(&top, NFTA_SET_ELEM_LIST_SET), Some(&b"s\0"[..]));
        let elem = attrs(attr(&attrs(attr(&top, NFTA_SET_ELEM_LIST_ELEMENTS).unwrap()), NFTA_LIST_ELEM).unwrap());
        assert_eq!(attr(&attrs(attr(&elem, NFTA_SET_ELEM_KEY).unwrap()), NFTA_DATA_VALUE), Some(&[10, 0, 0, 1][..]));
        assert_eq!(attr(&elem, NFTA_SET_ELEM_USERDATA), Some(&b"\x00\x02x\x00"[..]));
        // The deleted one carries its key only; the flush no element list.
        let del = attrs(&msgs[2].payload[4..]);
        let elem = attrs(attr(&attrs(attr(&del, NFTA_SET_ELEM_LIST_ELEMENTS).unwrap()), NFTA_LIST_ELEM).unwrap());
        assert!(attr(&elem, NFTA_SET_ELEM_DATA).is_none());
        assert!(attr(&attrs(&msgs[3].payload[4..]), NFTA_SET_ELEM_LIST_ELEMENTS).is_none());
        // Every message length is a multiple of 4 and the parse consumed all.
        assert_eq!(msgs.len(), 5);
        assert_eq!(buf.len() % 4, 0);
    }

    #[test]
    fn verdict_data_as_nft_sends_it() {
        // nft --debug=netlink: `element 0500010a : jump -> hp 0 [end]`.
        let e = WireElem::new("mn", key::ip("10.1.0.5".parse().unwrap())).with_jump("hp");
        let msg = elem_msg(NFT_MSG_NEWSETELEM, 0, 1, FAMILY_INET, "t", &e, true);
        let r = &replies(&msg)[0];
        let top = attrs(&r.payload[4..]);
        let elem = attrs(attr(&attrs(attr(&top, NFTA_SET_ELEM_LIST_ELEMENTS).unwrap()), NFTA_LIST_ELEM).unwrap());
        let data = attrs(attr(&elem, NFTA_SET_ELEM_DATA).unwrap());
        let verdict = attrs(attr(&data, NFTA_DATA_VERDICT).unwrap());
        assert_eq!(attr(&verdict, NFTA_VERDICT_CODE), Some(&[0xff, 0xff, 0xff, 0xfd][..]));
        assert_eq!(attr(&verdict, NFTA_VERDICT_CHAIN), Some(&b"hp\0"[..]));
        // A deletion carries the key alone.
        let del = elem_msg(NFT_MSG_DELSETELEM, 0, 1, FAMILY_INET, "t", &e, false);
        let top = attrs(&replies(&del)[0].payload[4..]);
        let elem = attrs(attr(&attrs(attr(&top, NFTA_SET_ELEM_LIST_ELEMENTS).unwrap()), NFTA_LIST_ELEM).unwrap());
        assert!(attr(&elem, NFTA_SET_ELEM_DATA).is_none());
    }

    #[test]
    fn parses_chain_and_rule_dumps() {
        // NEWCHAIN as the kernel dumps `inet filter forward`, hook forward
        // (2), priority 0, policy drop (0).
        let mut m = Msg::new(NFT_MSG_GETCHAIN, 0, 1, FAMILY_INET, 0);
        m.attr_str(NFTA_CHAIN_TABLE, "filter");
        m.attr_str(NFTA_CHAIN_NAME, "forward");
        m.nest(NFTA_CHAIN_HOOK);
        m.attr(NFTA_HOOK_HOOKNUM, &2u32.to_be_bytes());
        m.attr(NFTA_HOOK_PRIORITY, &(-10i32).to_be_bytes());
        m.end_nest();
        m.attr(NFTA_CHAIN_POLICY, &0u32.to_be_bytes());
        let msg = m.finish();
        let chain = parse_chain(replies(&msg)[0].payload).unwrap();
        let want = WireChain {
            family: FAMILY_INET,
            table: "filter".into(),
            name: "forward".into(),
            hooknum: 2,
            priority: -10,
            policy: 0,
        };
        assert_eq!(chain, want);
        // A regular chain (no hook) is not a base chain.
        let mut m = Msg::new(NFT_MSG_GETCHAIN, 0, 1, FAMILY_INET, 0);
        m.attr_str(NFTA_CHAIN_TABLE, "filter");
        m.attr_str(NFTA_CHAIN_NAME, "mine");
        let msg = m.finish();
        assert_eq!(parse_chain(replies(&msg)[0].payload), None);
        // Its name is listed with its table's.
        assert_eq!(chain_name_in(replies(&msg)[0].payload, "filter").as_deref(), Some("mine"));
        assert_eq!(chain_name_in(replies(&msg)[0].payload, "nat"), None);

        // NEWRULE: `counter drop` with a comment, as the kernel dumps it.
        let mut m = Msg::new(NFT_MSG_GETRULE, 0, 1, FAMILY_INET, 0);
        m.attr_str(NFTA_RULE_TABLE, "filter");
        m.attr_str(NFTA_RULE_CHAIN, "forward");
        m.attr(NFTA_RULE_HANDLE, &7u64.to_be_bytes());
        m.nest(NFTA_RULE_EXPRESSIONS);
        m.nest(NFTA_LIST_ELEM);
        m.attr_str(NFTA_EXPR_NAME, "counter");
        m.end_nest();
        m.nest(NFTA_LIST_ELEM);
        m.attr_str(NFTA_EXPR_NAME, "immediate");
        m.nest(NFTA_EXPR_DATA);
        m.attr(1, &0u32.to_be_bytes()); // NFTA_IMMEDIATE_DREG: the verdict register
        m.nest(NFTA_IMMEDIATE_DATA);
        m.nest(NFTA_DATA_VERDICT);
        m.attr(NFTA_VERDICT_CODE, &0u32.to_be_bytes()); // NF_DROP
        m.end_nest();
        m.end_nest();
        m.end_nest();
        m.end_nest();
        m.end_nest();
        m.attr(NFTA_RULE_USERDATA, &comment_userdata("n c1 eth0"));
        let msg = m.finish();
        let rule = parse_rule(replies(&msg)[0].payload).unwrap();
        assert_eq!(rule.handle, 7);
        assert_eq!(rule.comment.as_deref(), Some("n c1 eth0"));
        let exprs: Vec<(&str, Option<i32>)> = rule.exprs.iter().map(|e| (e.name.as_str(), e.verdict)).collect();
        assert_eq!(exprs, [("counter", None), ("immediate", Some(0))]);
    }

    /// An xt match expression's data, as the kernel dumps it.
    fn xt_match(name: &str, revision: u32, info: &[u8]) -> Vec<u8> {
        let mut m = Msg::new(NFT_MSG_GETRULE, 0, 1, FAMILY_INET, 0);
        m.attr_str(NFTA_MATCH_NAME, name);
        m.attr(NFTA_MATCH_REV, &revision.to_be_bytes());
        m.attr(NFTA_MATCH_INFO, info);
        replies(&m.finish())[0].payload[4..].to_vec()
    }

    #[test]
    fn xt_matches_of_invalid_packets_only() {
        // xt_conntrack_mtinfo3 as iptables 1.8 sends `--ctstate INVALID`.
        let conntrack = |flags: u16, invert: u16, state: u16| {
            let mut info = vec![0u8; 164];
            info[146..148].copy_from_slice(&flags.to_ne_bytes());
            info[148..150].copy_from_slice(&invert.to_ne_bytes());
            info[150..152].copy_from_slice(&state.to_ne_bytes());
            xt_match("conntrack", 3, &info)
        };
        assert!(matches_invalid_only(&conntrack(1, 0, 1)));
        assert!(!matches_invalid_only(&conntrack(1, 1, 1)), "! --ctstate INVALID");
        assert!(!matches_invalid_only(&conntrack(1, 0, 1 | 8)), "INVALID,NEW");
        assert!(!matches_invalid_only(&conntrack(0, 0, 0)), "no state match");
        assert!(matches_invalid_only(&xt_match("state", 0, &1u32.to_ne_bytes())));
        assert!(!matches_invalid_only(&xt_match("state", 0, &2u32.to_ne_bytes())));
        assert!(!matches_invalid_only(&xt_match("comment", 0, &[0; 256])));
    }

    #[test]
    fn parses_a_reply() {
        let e =
            WireElem::new("m", vec![6, 0, 0, 0, 0x1f, 0x90, 0, 0]).with_data(vec![10, 0, 0, 5]).with_comment("n c e");
        let msg = elem_msg(NFT_MSG_NEWSETELEM, 0, 1, FAMILY_INET, "t", &e, true);
        let r = &replies(&msg)[0];
        let f = parse_found(r.payload).unwrap();
        assert_eq!(f, Found { comment: Some("n c e".into()), data: Some(vec![10, 0, 0, 5]) });
        let mut ack = Vec::new();
        ack.extend(&(-2i32).to_ne_bytes());
        assert_eq!(error_of(&ack), ENOENT);
    }
}
