//! DHCPv6 wire format (RFC 8415): the message header, options as
//! type-length-value triples, and the options a stateful IA_NA client uses
//! (identifiers, IA_NA with its addresses, status codes, preference, rapid
//! commit, DNS servers and search list of RFC 3646). Decoding checks every
//! slice and never panics on malformed input.

use std::net::Ipv6Addr;

pub const CLIENT_PORT: u16 = 546;
pub const SERVER_PORT: u16 = 547;
/// All_DHCP_Relay_Agents_and_Servers: where a client sends everything.
pub const ALL_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);
/// A lifetime or T1/T2 that never runs out.
pub const INFINITY: u32 = u32::MAX;

/// Option codes (RFC 8415 section 21, RFC 3646).
pub mod opt {
    pub const CLIENT_ID: u16 = 1;
    pub const SERVER_ID: u16 = 2;
    pub const IA_NA: u16 = 3;
    pub const IA_ADDR: u16 = 5;
    pub const ORO: u16 = 6;
    pub const PREFERENCE: u16 = 7;
    pub const ELAPSED_TIME: u16 = 8;
    pub const STATUS_CODE: u16 = 13;
    pub const RAPID_COMMIT: u16 = 14;
    pub const DNS_SERVERS: u16 = 23;
    pub const DOMAIN_LIST: u16 = 24;
}

/// Status codes (RFC 8415 section 21.13) the client acts on.
pub mod status {
    pub const SUCCESS: u16 = 0;
    pub const NO_ADDRS_AVAIL: u16 = 2;
    pub const NO_BINDING: u16 = 3;
    pub const NOT_ON_LINK: u16 = 4;
}

/// Message types (RFC 8415 section 7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Solicit = 1,
    Advertise = 2,
    Request = 3,
    Confirm = 4,
    Renew = 5,
    Rebind = 6,
    Reply = 7,
    Release = 8,
    Decline = 9,
    Reconfigure = 10,
    InformationRequest = 11,
}

impl MessageType {
    fn from_u8(v: u8) -> Option<MessageType> {
        use MessageType::*;
        Some(match v {
            1 => Solicit,
            2 => Advertise,
            3 => Request,
            4 => Confirm,
            5 => Renew,
            6 => Rebind,
            7 => Reply,
            8 => Release,
            9 => Decline,
            10 => Reconfigure,
            11 => InformationRequest,
            _ => return None,
        })
    }
}

/// A list of options in wire order; an option may repeat (several IA_NAs,
/// several addresses in one IA_NA).
pub type Options = Vec<(u16, Vec<u8>)>;

/// One DHCPv6 message between client and server (relay messages have
/// another header and are not ours to decode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The raw type byte: a message of an unknown type still decodes.
    pub kind: u8,
    /// The 24-bit transaction ID.
    pub xid: u32,
    pub options: Options,
}

/// A status code option: the code and its UTF-8 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: u16,
    pub message: String,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.code {
            status::SUCCESS => "Success",
            1 => "UnspecFail",
            status::NO_ADDRS_AVAIL => "NoAddrsAvail",
            status::NO_BINDING => "NoBinding",
            status::NOT_ON_LINK => "NotOnLink",
            5 => "UseMulticast",
            _ => "status",
        };
        write!(f, "{name} ({})", self.code)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

/// An address of an IA_NA with its lifetimes in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IaAddr {
    pub addr: Ipv6Addr,
    pub preferred: u32,
    pub valid: u32,
    pub status: Option<Status>,
}

/// An identity association for non-temporary addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IaNa {
    pub iaid: u32,
    pub t1: u32,
    pub t2: u32,
    pub addrs: Vec<IaAddr>,
    pub status: Option<Status>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn ipv6_at(b: &[u8], at: usize) -> Option<Ipv6Addr> {
    let s: [u8; 16] = b.get(at..at + 16)?.try_into().ok()?;
    Some(Ipv6Addr::from(s))
}

/// Options one after the other until the end of `b`; None when one runs
/// past it.
pub fn decode_options(mut b: &[u8]) -> Option<Options> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let code = u16_at(b, 0)?;
        let len = usize::from(u16_at(b, 2)?);
        let value = b.get(4..4 + len)?;
        out.push((code, value.to_vec()));
        b = &b[4 + len..];
    }
    Some(out)
}

/// Appends options in wire form. A value longer than an option can say
/// (64 KiB) is cut: nothing we build comes near it.
pub fn encode_options(out: &mut Vec<u8>, options: &[(u16, Vec<u8>)]) {
    for (code, value) in options {
        let value = &value[..value.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&code.to_be_bytes());
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
        out.extend_from_slice(value);
    }
}

fn find(options: &[(u16, Vec<u8>)], code: u16) -> Option<&[u8]> {
    options.iter().find(|(c, _)| *c == code).map(|(_, v)| v.as_slice())
}

fn decode_status(v: &[u8]) -> Option<Status> {
    Some(Status { code: u16_at(v, 0)?, message: String::from_utf8_lossy(v.get(2..)?).into_owned() })
}

impl IaAddr {
    fn decode(v: &[u8]) -> Option<IaAddr> {
        let sub = decode_options(v.get(24..)?)?;
        Some(IaAddr {
            addr: ipv6_at(v, 0)?,
            preferred: u32_at(v, 16)?,
            valid: u32_at(v, 20)?,
            status: find(&sub, opt::STATUS_CODE).and_then(decode_status),
        })
    }

    /// The option value a client sends: the address, lifetimes as hints.
    fn encode(&self) -> Vec<u8> {
        let mut v = self.addr.octets().to_vec();
        v.extend_from_slice(&self.preferred.to_be_bytes());
        v.extend_from_slice(&self.valid.to_be_bytes());
        v
    }

    /// Whether the server granted this address (a status other than
    /// Success, or a zero valid lifetime, takes it back).
    pub fn is_granted(&self) -> bool {
        self.valid > 0 && self.status.as_ref().is_none_or(|s| s.code == status::SUCCESS)
    }
}

impl IaNa {
    pub fn decode(v: &[u8]) -> Option<IaNa> {
        let sub = decode_options(v.get(12..)?)?;
        Some(IaNa {
            iaid: u32_at(v, 0)?,
            t1: u32_at(v, 4)?,
            t2: u32_at(v, 8)?,
            addrs: sub.iter().filter(|(c, _)| *c == opt::IA_ADDR).filter_map(|(_, v)| IaAddr::decode(v)).collect(),
            status: find(&sub, opt::STATUS_CODE).and_then(decode_status),
        })
    }

    /// The option value a client sends (T1/T2 0: the server decides).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(12 + 28 * self.addrs.len());
        v.extend_from_slice(&self.iaid.to_be_bytes());
        v.extend_from_slice(&self.t1.to_be_bytes());
        v.extend_from_slice(&self.t2.to_be_bytes());
        let addrs: Options = self.addrs.iter().map(|a| (opt::IA_ADDR, a.encode())).collect();
        encode_options(&mut v, &addrs);
        v
    }

    /// The first address the server granted.
    pub fn granted(&self) -> Option<&IaAddr> {
        self.addrs.iter().find(|a| a.is_granted())
    }
}

impl Message {
    pub fn new(kind: MessageType, xid: u32) -> Message {
        Message { kind: kind as u8, xid: xid & 0x00ff_ffff, options: Vec::new() }
    }

    pub fn message_type(&self) -> Option<MessageType> {
        MessageType::from_u8(self.kind)
    }

    /// Adds an option after the others (options may repeat).
    pub fn push(&mut self, code: u16, value: Vec<u8>) {
        self.options.push((code, value));
    }

    pub fn get(&self, code: u16) -> Option<&[u8]> {
        find(&self.options, code)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![self.kind];
        b.extend_from_slice(&self.xid.to_be_bytes()[1..]);
        encode_options(&mut b, &self.options);
        b
    }

    /// Parses a client/server message; None when it is not one.
    pub fn decode(b: &[u8]) -> Option<Message> {
        let (&kind, rest) = b.split_first()?;
        let xid = u32::from_be_bytes([0, *rest.first()?, *rest.get(1)?, *rest.get(2)?]);
        Some(Message { kind, xid, options: decode_options(rest.get(3..)?)? })
    }

    pub fn client_id(&self) -> Option<&[u8]> {
        self.get(opt::CLIENT_ID)
    }

    pub fn server_id(&self) -> Option<&[u8]> {
        self.get(opt::SERVER_ID).filter(|v| !v.is_empty())
    }

    /// The server's preference (0 when it says none; 255 means "take me now").
    pub fn preference(&self) -> u8 {
        self.get(opt::PREFERENCE).and_then(|v| v.first().copied()).unwrap_or(0)
    }

    pub fn rapid_commit(&self) -> bool {
        self.get(opt::RAPID_COMMIT).is_some()
    }

    /// The message-level status (absent means Success).
    pub fn status(&self) -> Option<Status> {
        self.get(opt::STATUS_CODE).and_then(decode_status)
    }

    /// The IA_NA with this IAID, if the message carries it.
    pub fn ia_na(&self, iaid: u32) -> Option<IaNa> {
        self.options
            .iter()
            .filter(|(c, _)| *c == opt::IA_NA)
            .filter_map(|(_, v)| IaNa::decode(v))
            .find(|ia| ia.iaid == iaid)
    }

    pub fn dns_servers(&self) -> Vec<Ipv6Addr> {
        let v = self.get(opt::DNS_SERVERS).unwrap_or_default();
        v.chunks_exact(16).filter_map(|c| ipv6_at(c, 0)).collect()
    }

    /// The domain search list: DNS names in wire form, uncompressed
    /// (RFC 8415 section 10); the v4 decoder reads that too.
    pub fn domain_list(&self) -> Vec<String> {
        self.get(opt::DOMAIN_LIST).map(super::packet::decode_search_list).unwrap_or_default()
    }
}

/// The Option Request Option's value for these codes.
pub fn encode_oro(codes: &[u16]) -> Vec<u8> {
    codes.iter().flat_map(|c| c.to_be_bytes()).collect()
}

/// The Elapsed Time option's value: hundredths of a second, saturating.
pub fn encode_elapsed(elapsed: std::time::Duration) -> Vec<u8> {
    let cs = (elapsed.as_millis() / 10).min(u128::from(u16::MAX)) as u16;
    cs.to_be_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advertise() -> Message {
        let mut m = Message::new(MessageType::Advertise, 0xabcdef);
        m.push(opt::CLIENT_ID, vec![0, 4, 1, 2]);
        m.push(opt::SERVER_ID, vec![0, 1, 0, 1, 9, 9]);
        let ia = IaNa {
            iaid: 7,
            t1: 60,
            t2: 96,
            addrs: vec![IaAddr { addr: "fd00::123".parse().unwrap(), preferred: 120, valid: 120, status: None }],
            status: None,
        };
        m.push(opt::IA_NA, ia.encode());
        m.push(opt::PREFERENCE, vec![255]);
        let mut dns = "fd00::1".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        dns.extend_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        m.push(opt::DNS_SERVERS, dns);
        m.push(opt::DOMAIN_LIST, super::super::packet::encode_search_list(&["lan.test", "corp.test"]));
        m
    }

    #[test]
    fn round_trip_and_accessors() {
        let m = advertise();
        let wire = m.encode();
        assert_eq!(&wire[..4], &[2, 0xab, 0xcd, 0xef]);
        let back = Message::decode(&wire).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.message_type(), Some(MessageType::Advertise));
        assert_eq!(back.server_id(), Some(&[0, 1, 0, 1, 9, 9][..]));
        assert_eq!(back.preference(), 255);
        assert!(!back.rapid_commit());
        let ia = back.ia_na(7).unwrap();
        assert_eq!((ia.t1, ia.t2), (60, 96));
        assert_eq!(ia.granted().unwrap().addr, "fd00::123".parse::<Ipv6Addr>().unwrap());
        assert!(back.ia_na(8).is_none());
        assert_eq!(back.dns_servers().len(), 2);
        assert_eq!(back.domain_list(), ["lan.test", "corp.test"]);
        // The transaction ID has 24 bits.
        assert_eq!(Message::new(MessageType::Solicit, 0x1234_5678).xid, 0x34_5678);
    }

    #[test]
    fn status_codes_take_addresses_back() {
        let mut ia_opts = Vec::new();
        let mut addr = "fd00::9".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        addr.extend_from_slice(&[0, 0, 0, 10, 0, 0, 0, 20]);
        encode_options(&mut addr, &[(opt::STATUS_CODE, [&[0, 3][..], b"gone"].concat())]);
        let mut v = vec![0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0, 8];
        encode_options(&mut ia_opts, &[(opt::IA_ADDR, addr), (opt::STATUS_CODE, vec![0, 2])]);
        v.extend_from_slice(&ia_opts);
        let ia = IaNa::decode(&v).unwrap();
        assert_eq!(ia.addrs[0].status.as_ref().unwrap().code, status::NO_BINDING);
        assert_eq!(ia.addrs[0].status.as_ref().unwrap().to_string(), "NoBinding (3): gone");
        assert!(ia.granted().is_none());
        assert_eq!(ia.status.unwrap().code, status::NO_ADDRS_AVAIL);
    }

    #[test]
    fn malformed_input_is_refused_not_panicked_on() {
        let wire = advertise().encode();
        // Every truncation either decodes (at an option boundary) or is refused.
        for n in 0..wire.len() {
            if let Some(m) = Message::decode(&wire[..n]) {
                let _ = (m.ia_na(7), m.dns_servers(), m.domain_list(), m.status(), m.preference());
            }
        }
        assert!(Message::decode(&[]).is_none());
        assert!(Message::decode(&[7, 0, 0]).is_none());
        assert!(Message::decode(&[7, 0, 0, 1, 0, 1, 0, 9, 1]).is_none());
        // Short or odd option values read as absent.
        let mut m = Message::new(MessageType::Reply, 1);
        m.push(opt::IA_NA, vec![0, 0, 0, 1, 0]);
        m.push(opt::DNS_SERVERS, vec![1; 17]);
        m.push(opt::STATUS_CODE, vec![0]);
        m.push(opt::PREFERENCE, vec![]);
        let m = Message::decode(&m.encode()).unwrap();
        assert!(m.ia_na(1).is_none());
        assert_eq!(m.dns_servers().len(), 1);
        assert!(m.status().is_none());
        assert_eq!(m.preference(), 0);
        // An IA_NA whose sub-options overrun is refused as a whole.
        let mut bad = vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        bad.extend_from_slice(&[0, 5, 0, 30, 1]);
        assert!(IaNa::decode(&bad).is_none());
    }

    #[test]
    fn client_option_values() {
        assert_eq!(encode_oro(&[opt::DNS_SERVERS, opt::DOMAIN_LIST]), [0, 23, 0, 24]);
        assert_eq!(encode_elapsed(std::time::Duration::from_millis(1234)), [0, 123]);
        assert_eq!(encode_elapsed(std::time::Duration::from_secs(10_000)), [0xff, 0xff]);
    }
}
