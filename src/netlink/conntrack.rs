//! Conntrack entry removal over NETLINK_NETFILTER (ctnetlink), without the
//! conntrack tool.
//!
//! The kernel deletes an entry only by its full original tuple, and its
//! flush does not filter on ports, so removing "every UDP flow to port P"
//! is a dump (filtered by the kernel with CTA_FILTER where it can) followed
//! by one IPCTNL_MSG_CT_DELETE per matching entry, carrying that entry's
//! own CTA_TUPLE_ORIG (and zone).

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use super::msg::{attrs, put_attr, NLMSG_DONE, NLMSG_ERROR};
use super::{Error, Result};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLA_F_NESTED: u16 = 0x8000;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_ZONE: u16 = 18;
const CTA_FILTER: u16 = 25;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_FILTER_ORIG_FLAGS: u16 = 1;
const CTA_FILTER_REPLY_FLAGS: u16 = 2;
const CTA_FILTER_FLAG_PROTO_NUM: u32 = 1 << 3;
const CTA_FILTER_FLAG_PROTO_DST_PORT: u32 = 1 << 5;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_SCTP: u8 = 132;

pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;

fn nested(kind: u16, inner: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_attr(&mut out, kind | NLA_F_NESTED, inner);
    out
}

/// A whole ctnetlink message: nlmsghdr + nfgenmsg + attributes.
fn message(msg: u16, flags: u16, seq: u32, family: u8, attrs: &[u8]) -> Vec<u8> {
    let len = (16 + 4 + attrs.len()) as u32;
    let mut buf = Vec::with_capacity(len as usize);
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | msg).to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    // nfgenmsg: family, version 0, res_id 0 (big endian).
    buf.extend_from_slice(&[family, 0, 0, 0]);
    buf.extend_from_slice(attrs);
    buf
}

/// The dump request, filtered in the kernel on protocol and original
/// destination port (CTA_FILTER, Linux 5.8+).
fn dump_request(seq: u32, family: u8, proto: u8, dport: u16, kernel_filter: bool) -> Vec<u8> {
    let mut attrs = Vec::new();
    if kernel_filter {
        let mut proto_attrs = Vec::new();
        put_attr(&mut proto_attrs, CTA_PROTO_NUM, &[proto]);
        put_attr(&mut proto_attrs, CTA_PROTO_DST_PORT, &dport.to_be_bytes());
        attrs.extend(nested(CTA_TUPLE_ORIG, &nested(CTA_TUPLE_PROTO, &proto_attrs)));
        let mut filter = Vec::new();
        put_attr(
            &mut filter,
            CTA_FILTER_ORIG_FLAGS,
            &(CTA_FILTER_FLAG_PROTO_NUM | CTA_FILTER_FLAG_PROTO_DST_PORT).to_ne_bytes(),
        );
        put_attr(&mut filter, CTA_FILTER_REPLY_FLAGS, &0u32.to_ne_bytes());
        attrs.extend(nested(CTA_FILTER, &filter));
    }
    message(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq, family, &attrs)
}

/// One conntrack entry as needed to delete it.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    /// The CTA_TUPLE_ORIG payload, as the kernel sent it.
    tuple: Vec<u8>,
    zone: Option<Vec<u8>>,
    proto: Option<u8>,
    dport: Option<u16>,
}

fn parse_entry(attributes: &[u8]) -> Option<Entry> {
    let mut entry = Entry { tuple: Vec::new(), zone: None, proto: None, dport: None };
    for (kind, payload) in attrs(attributes) {
        match kind {
            CTA_TUPLE_ORIG => {
                entry.tuple = payload.to_vec();
                for (k, p) in attrs(payload) {
                    if k == CTA_TUPLE_PROTO {
                        for (pk, pp) in attrs(p) {
                            match pk {
                                CTA_PROTO_NUM if !pp.is_empty() => entry.proto = Some(pp[0]),
                                CTA_PROTO_DST_PORT if pp.len() >= 2 => {
                                    entry.dport = Some(u16::from_be_bytes([pp[0], pp[1]]))
                                }
                                _ => {}
                            }
                        }
                    }
                }
            }
            CTA_ZONE => entry.zone = Some(payload.to_vec()),
            _ => {}
        }
    }
    (!entry.tuple.is_empty()).then_some(entry)
}

/// One reply datagram may hold several messages.
enum Reply {
    Entry(Entry),
    Done,
    /// errno (positive); 0 is an ACK.
    Error(i32),
    Other,
}

fn parse_replies(buf: &[u8]) -> Vec<Reply> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= 16 {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        if len < 16 || len > rest.len() {
            break;
        }
        let body = &rest[16..len];
        out.push(match kind {
            NLMSG_DONE => Reply::Done,
            NLMSG_ERROR if body.len() >= 4 => Reply::Error(-i32::from_ne_bytes([body[0], body[1], body[2], body[3]])),
            _ if kind >> 8 == NFNL_SUBSYS_CTNETLINK && body.len() >= 4 => {
                parse_entry(&body[4..]).map(Reply::Entry).unwrap_or(Reply::Other)
            }
            _ => Reply::Other,
        });
        rest = &rest[((len + 3) & !3).min(rest.len())..];
    }
    out
}

fn io_err(what: &str, e: std::io::Error) -> Error {
    Error::new(e.raw_os_error().unwrap_or(0), format!("conntrack: {what}: {e}"))
}

struct Ctnetlink {
    sock: Socket,
    seq: u32,
}

impl Ctnetlink {
    fn open() -> Result<Ctnetlink> {
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(|e| io_err("opening a netlink socket", e))?;
        sock.bind_auto().map_err(|e| io_err("binding the netlink socket", e))?;
        sock.connect(&SocketAddr::new(0, 0)).map_err(|e| io_err("connecting the netlink socket", e))?;
        Ok(Ctnetlink { sock, seq: 1 })
    }

    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.sock.send(msg, 0).map_err(|e| io_err("sending", e))?;
        Ok(())
    }

    fn next_seq(&mut self) -> u32 {
        self.seq += 1;
        self.seq
    }

    /// Dumps the entries of `family` (AF_INET/AF_INET6) for `proto` to
    /// original destination port `dport`.
    fn dump(&mut self, family: u8, proto: u8, dport: u16) -> Result<Vec<Entry>> {
        match self.dump_once(family, proto, dport, true) {
            // Kernels before 5.8 do not know CTA_FILTER: filter here instead.
            Err(e)
                if e.errno == nix::errno::Errno::EINVAL as i32 || e.errno == nix::errno::Errno::EOPNOTSUPP as i32 =>
            {
                self.dump_once(family, proto, dport, false)
            }
            other => other,
        }
    }

    fn dump_once(&mut self, family: u8, proto: u8, dport: u16, kernel_filter: bool) -> Result<Vec<Entry>> {
        let seq = self.next_seq();
        self.send(&dump_request(seq, family, proto, dport, kernel_filter))?;
        let mut entries = Vec::new();
        loop {
            let (buf, _) = self.sock.recv_from_full().map_err(|e| io_err("receiving", e))?;
            for reply in parse_replies(&buf) {
                match reply {
                    Reply::Entry(e) => {
                        if e.proto == Some(proto) && e.dport == Some(dport) {
                            entries.push(e);
                        }
                    }
                    Reply::Done => return Ok(entries),
                    Reply::Error(0) | Reply::Other => {}
                    Reply::Error(errno) => {
                        return Err(Error::new(
                            errno,
                            format!("conntrack: dump failed: {}", std::io::Error::from_raw_os_error(errno)),
                        ))
                    }
                }
            }
        }
    }

    /// Deletes one entry; an entry gone meanwhile is not an error.
    fn delete(&mut self, family: u8, entry: &Entry) -> Result<()> {
        let mut attrs = nested(CTA_TUPLE_ORIG, &entry.tuple);
        if let Some(zone) = &entry.zone {
            put_attr(&mut attrs, CTA_ZONE, zone);
        }
        let seq = self.next_seq();
        self.send(&message(IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, seq, family, &attrs))?;
        loop {
            let (buf, _) = self.sock.recv_from_full().map_err(|e| io_err("receiving", e))?;
            for reply in parse_replies(&buf) {
                match reply {
                    Reply::Error(0) => return Ok(()),
                    Reply::Error(errno) if errno == nix::errno::Errno::ENOENT as i32 => return Ok(()),
                    Reply::Error(errno) => {
                        return Err(Error::new(
                            errno,
                            format!("conntrack: delete failed: {}", std::io::Error::from_raw_os_error(errno)),
                        ))
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Deletes the conntrack entries of `family` (AF_INET or AF_INET6) whose
/// original direction goes to `proto` port `dport`, in the calling thread's
/// netns. Returns how many were deleted.
pub fn delete_by_dst_port(family: u8, proto: u8, dport: u16) -> Result<usize> {
    let mut ct = Ctnetlink::open()?;
    let entries = ct.dump(family, proto, dport)?;
    for e in &entries {
        ct.delete(family, e)?;
    }
    Ok(entries.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_filtered_dump() {
        let msg = dump_request(7, AF_INET, IPPROTO_UDP, 5353, true);
        assert_eq!(u32::from_ne_bytes(msg[0..4].try_into().unwrap()) as usize, msg.len());
        assert_eq!(u16::from_ne_bytes([msg[4], msg[5]]), (1 << 8) | 1);
        assert_eq!(msg[16], AF_INET);
        let top: Vec<_> = attrs(&msg[20..]).collect();
        assert_eq!(top.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![CTA_TUPLE_ORIG, CTA_FILTER]);
        let entry = parse_entry(&msg[20..]).unwrap();
        assert_eq!((entry.proto, entry.dport), (Some(17), Some(5353)));
        assert_eq!(msg.len() % 4, 0);
    }

    #[test]
    fn parses_replies() {
        let mut tuple = Vec::new();
        put_attr(&mut tuple, CTA_PROTO_NUM, &[IPPROTO_UDP]);
        put_attr(&mut tuple, CTA_PROTO_DST_PORT, &53u16.to_be_bytes());
        let mut attrs_buf = nested(CTA_TUPLE_ORIG, &nested(CTA_TUPLE_PROTO, &tuple));
        put_attr(&mut attrs_buf, CTA_ZONE, &3u16.to_be_bytes());
        let mut buf = message(0, 0, 1, AF_INET, &attrs_buf);
        let mut done = vec![0u8; 20];
        done[0..4].copy_from_slice(&20u32.to_ne_bytes());
        done[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        buf.extend(done);
        let replies = parse_replies(&buf);
        assert!(matches!(&replies[0], Reply::Entry(e) if e.dport == Some(53) && e.zone.is_some()));
        assert!(matches!(replies[1], Reply::Done));
        // Truncated input never panics.
        for cut in 0..buf.len() {
            let _ = parse_replies(&buf[..cut]);
        }
    }
}
