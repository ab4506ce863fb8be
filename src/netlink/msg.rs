//! Route-netlink framing: one request out, its replies in, and a reader for
//! the attributes of a reply.
//!
//! Requests are rtnetlink's message types (built with its builders) emitted
//! behind our own nlmsghdr. Replies are not decoded into rtnetlink's types:
//! each caller reads the few attributes it needs from the raw payload, so the
//! binary does not carry a parser for every message family and link kind.
//!
//! For a request the facade does not wrap: build the message with rtnetlink
//! and send it with `nl.ack(RTM_..., flags, &msg, what)` (changes) or
//! `nl.dump(RTM_GET..., &query, what)` (listings; read each payload with
//! `attrs_after`).

use rtnetlink::packet_core::{Emitable, NlaBuffer, NlasIterator, Parseable, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};

use super::{Error, Netlink, Result};

pub const RTM_NEWLINK: u16 = 16;
pub const RTM_DELLINK: u16 = 17;
pub const RTM_GETLINK: u16 = 18;
pub const RTM_SETLINK: u16 = 19;
pub const RTM_NEWADDR: u16 = 20;
pub const RTM_DELADDR: u16 = 21;
pub const RTM_GETADDR: u16 = 22;
pub const RTM_NEWROUTE: u16 = 24;
pub const RTM_DELROUTE: u16 = 25;
pub const RTM_GETROUTE: u16 = 26;
pub const RTM_NEWRULE: u16 = 32;
pub const RTM_DELRULE: u16 = 33;
pub const RTM_GETRULE: u16 = 34;
pub const RTM_NEWQDISC: u16 = 36;
pub const RTM_DELQDISC: u16 = 37;
pub const RTM_GETQDISC: u16 = 38;
pub const RTM_NEWTFILTER: u16 = 44;
pub const RTM_GETTFILTER: u16 = 46;

const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
/// NLM_F_MULTI: more parts of this answer follow (until NLMSG_DONE).
const NLM_F_MULTI: u16 = 2;
/// sizeof(struct nlmsghdr).
const HEADER_LEN: usize = 16;
/// The kernel fills a dump datagram up to 32 KiB; a single answer (one link
/// with many VFs) can be larger. Untouched capacity costs no memory.
const RECV_BUF: usize = 64 * 1024;

impl Netlink {
    /// Sends `body` as a `kind` request with `flags` and returns the payloads
    /// (after the nlmsghdr) of the replies: every part of a dump, the one
    /// answer of a plain GET, nothing for a request that only gets an ACK.
    pub fn request(&self, kind: u16, flags: u16, body: &impl Emitable, what: &str) -> Result<Vec<Vec<u8>>> {
        let flags = NLM_F_REQUEST | flags;
        let (buf, seq) = self.frame(kind, flags, body);
        self.transact(&buf, seq, flags, what)
    }

    /// A change the kernel answers with an ACK or an error.
    pub fn ack(&self, kind: u16, flags: u16, body: &impl Emitable, what: &str) -> Result<()> {
        self.request(kind, NLM_F_ACK | flags, body, what).map(drop)
    }

    /// Every object of one kind (the body may narrow it, e.g. by family).
    pub fn dump(&self, kind: u16, body: &impl Emitable, what: &str) -> Result<Vec<Vec<u8>>> {
        self.request(kind, NLM_F_DUMP, body, what)
    }

    /// `body` behind an nlmsghdr of type `kind` with `flags` and the next
    /// sequence number, which is returned with it.
    pub(super) fn frame(&self, kind: u16, flags: u16, body: &impl Emitable) -> (Vec<u8>, u32) {
        let mut buf = vec![0u8; HEADER_LEN + body.buffer_len()];
        body.emit(&mut buf[HEADER_LEN..]);
        let seq = self.next_seq();
        let len = buf.len() as u32;
        buf[0..4].copy_from_slice(&len.to_ne_bytes());
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        buf[6..8].copy_from_slice(&flags.to_ne_bytes());
        buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        (buf, seq)
    }

    fn transact(&self, buf: &[u8], seq: u32, flags: u16, what: &str) -> Result<Vec<Vec<u8>>> {
        let io = |e: std::io::Error| Error::new(e.raw_os_error().unwrap_or(0), format!("{what}: {e}"));
        self.sock.send(buf, 0).map_err(io)?;
        let mut replies = Vec::new();
        let mut rx = Vec::with_capacity(RECV_BUF);
        loop {
            rx.clear();
            let n = match self.sock.recv(&mut rx, nix::libc::MSG_TRUNC) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io(e)),
            };
            if n > rx.len() {
                return Err(Error::new(0, format!("{what}: a reply of {n} bytes does not fit the receive buffer")));
            }
            for m in messages(&rx) {
                // Left over from an earlier request that failed half-way.
                if m.seq != seq {
                    continue;
                }
                match m.kind {
                    NLMSG_NOOP => {}
                    // Both carry an int: 0 for an ACK or a clean end of dump, else -errno.
                    NLMSG_ERROR | NLMSG_DONE => {
                        let code = m.payload.get(..4).map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                        if code < 0 {
                            return Err(Error::from_errno(-code, what));
                        }
                        return Ok(replies);
                    }
                    _ => {
                        replies.push(m.payload.to_vec());
                        // A plain GET's single answer, with no ACK asked for.
                        if m.flags & NLM_F_MULTI == 0 && flags & NLM_F_ACK == 0 {
                            return Ok(replies);
                        }
                    }
                }
            }
        }
    }
}

/// One netlink message of a datagram.
pub struct Message<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// Splits a received datagram into its messages.
pub fn messages(mut buf: &[u8]) -> impl Iterator<Item = Message<'_>> {
    std::iter::from_fn(move || {
        if buf.len() < HEADER_LEN {
            return None;
        }
        let len = u32_at(buf, 0)? as usize;
        if len < HEADER_LEN || len > buf.len() {
            return None;
        }
        let m = Message {
            kind: u16_at(buf, 4)?,
            flags: u16_at(buf, 6)?,
            seq: u32_at(buf, 8)?,
            payload: &buf[HEADER_LEN..len],
        };
        buf = &buf[((len + 3) & !3).min(buf.len())..];
        Some(m)
    })
}

/// The attributes in `buf` as (type without the nested/byte-order flags, payload).
pub fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16_at(buf, 0)? as usize;
        let kind = u16_at(buf, 2)? & 0x3fff;
        if len < 4 || len > buf.len() {
            return None;
        }
        let payload = &buf[4..len];
        buf = &buf[((len + 3) & !3).min(buf.len())..];
        Some((kind, payload))
    })
}

/// Appends one attribute to `buf`: length, type, payload, padding to 4 bytes.
pub fn put_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    buf.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

/// The attributes that follow a fixed header of `header_len` bytes.
pub fn attrs_after(payload: &[u8], header_len: usize) -> impl Iterator<Item = (u16, &[u8])> {
    attrs(payload.get(header_len..).unwrap_or_default())
}

/// The payload of the first attribute of type `kind` in `buf`.
pub fn find_attr(buf: &[u8], kind: u16) -> Option<&[u8]> {
    attrs(buf).find(|(k, _)| *k == kind).map(|(_, v)| v)
}

pub fn u8_at(buf: &[u8], off: usize) -> Option<u8> {
    buf.get(off).copied()
}

pub fn u16_at(buf: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(buf.get(off..off + 2)?.try_into().ok()?))
}

pub fn u32_at(buf: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(off..off + 4)?.try_into().ok()?))
}

/// A NUL-terminated string attribute.
pub fn string(value: &[u8]) -> String {
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

/// An IPv4 or IPv6 address attribute.
pub fn ip(value: &[u8]) -> Option<std::net::IpAddr> {
    match value.len() {
        4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(value).ok()?)),
        16 => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(value).ok()?)),
        _ => None,
    }
}

/// Nested attributes decoded with one of rtnetlink's attribute types (e.g.
/// the IFLA_INFO_DATA of one link kind); attributes it cannot read are skipped.
pub fn typed_attrs<T>(buf: &[u8]) -> Vec<T>
where
    T: for<'a> Parseable<NlaBuffer<&'a [u8]>>,
{
    NlasIterator::new(buf).filter_map(|nla| T::parse(&nla.ok()?).ok()).collect()
}

/// A message's bytes as the kernel would send them back (for parser tests).
#[cfg(test)]
pub fn emitted(msg: &impl Emitable) -> Vec<u8> {
    let mut buf = vec![0; msg.buffer_len()];
    msg.emit(&mut buf);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_messages_and_attributes() {
        // Two messages: a link payload with one attribute, then NLMSG_DONE.
        let mut d = Vec::new();
        let attr = [8u8, 0, 3, 0, b'l', b'o', 0, 0];
        d.extend_from_slice(&((16 + 16 + 8) as u32).to_ne_bytes());
        d.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
        d.extend_from_slice(&NLM_F_MULTI.to_ne_bytes());
        d.extend_from_slice(&7u32.to_ne_bytes());
        d.extend_from_slice(&0u32.to_ne_bytes());
        d.extend_from_slice(&[0; 16]);
        d.extend_from_slice(&attr);
        d.extend_from_slice(&20u32.to_ne_bytes());
        d.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        d.extend_from_slice(&NLM_F_MULTI.to_ne_bytes());
        d.extend_from_slice(&7u32.to_ne_bytes());
        d.extend_from_slice(&0u32.to_ne_bytes());
        d.extend_from_slice(&0i32.to_ne_bytes());
        let ms: Vec<_> = messages(&d).collect();
        assert_eq!(ms.len(), 2);
        assert_eq!((ms[0].kind, ms[0].seq, ms[0].flags), (RTM_NEWLINK, 7, NLM_F_MULTI));
        assert_eq!(ms[1].kind, NLMSG_DONE);
        let a: Vec<_> = attrs_after(ms[0].payload, 16).collect();
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].0, string(a[0].1).as_str()), (3, "lo"));
        // A truncated attribute ends the walk instead of reading past the end.
        assert_eq!(attrs(&[12, 0, 1, 0, 1, 2]).count(), 0);
    }
}
