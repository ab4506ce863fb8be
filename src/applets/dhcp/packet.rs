//! DHCPv4 wire format (RFC 2131/2132): the BOOTP header, the options we use,
//! and the IPv4/UDP framing a packet socket needs. Decoding checks every
//! slice and never panics on malformed input.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// Size of the fixed BOOTP part, magic cookie included.
const HEADER_LEN: usize = 240;
/// Some servers drop BOOTP packets shorter than the historical minimum.
const MIN_LEN: usize = 300;
pub const FLAG_BROADCAST: u16 = 0x8000;

pub const BOOTREQUEST: u8 = 1;
pub const BOOTREPLY: u8 = 2;

/// Option codes (RFC 2132 and later); not all are used by the client.
#[allow(dead_code)]
pub mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOSTNAME: u8 = 12;
    pub const DOMAIN_NAME: u8 = 15;
    pub const STATIC_ROUTES: u8 = 33;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const OVERLOAD: u8 = 52;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAM_REQUEST_LIST: u8 = 55;
    pub const MAX_MESSAGE_SIZE: u8 = 57;
    pub const RENEWAL_TIME: u8 = 58;
    pub const REBINDING_TIME: u8 = 59;
    pub const VENDOR_CLASS: u8 = 60;
    pub const CLIENT_ID: u8 = 61;
    pub const USER_CLASS: u8 = 77;
    pub const SEARCH_LIST: u8 = 119;
    pub const CLASSLESS_ROUTES: u8 = 121;
    pub const END: u8 = 255;
}

/// DHCP message types (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Decline = 4,
    Ack = 5,
    Nak = 6,
    Release = 7,
    Inform = 8,
}

impl MessageType {
    fn from_u8(v: u8) -> Option<MessageType> {
        use MessageType::*;
        Some(match v {
            1 => Discover,
            2 => Offer,
            3 => Request,
            4 => Decline,
            5 => Ack,
            6 => Nak,
            7 => Release,
            8 => Inform,
            _ => return None,
        })
    }
}

/// One DHCP message. Options keep their order; a repeated option code is
/// concatenated on decode (RFC 3396).
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    pub op: u8,
    pub xid: u32,
    pub secs: u16,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    /// Client hardware address (Ethernet: 6 bytes).
    pub chaddr: Vec<u8>,
    pub options: Vec<(u8, Vec<u8>)>,
}

/// A classless static route (RFC 3442); `gw` 0.0.0.0 means on-link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticRoute {
    pub dst: Ipv4Net,
    pub gw: Ipv4Addr,
}

fn ipv4_at(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let s: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(Ipv4Addr::from(s))
}

impl Packet {
    /// A client request with Ethernet `mac` as chaddr.
    pub fn request(kind: MessageType, xid: u32, mac: &[u8]) -> Packet {
        let mut p = Packet {
            op: BOOTREQUEST,
            xid,
            secs: 0,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: mac.iter().copied().take(16).collect(),
            options: Vec::new(),
        };
        p.set(opt::MESSAGE_TYPE, vec![kind as u8]);
        p
    }

    /// Sets option `code`, replacing any earlier value.
    pub fn set(&mut self, code: u8, value: Vec<u8>) {
        if let Some(slot) = self.options.iter_mut().find(|(c, _)| *c == code) {
            slot.1 = value;
        } else {
            self.options.push((code, value));
        }
    }

    pub fn get(&self, code: u8) -> Option<&[u8]> {
        self.options.iter().find(|(c, _)| *c == code).map(|(_, v)| v.as_slice())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(MIN_LEN);
        b.extend_from_slice(&[self.op, 1, self.chaddr.len().min(16) as u8, 0]);
        b.extend_from_slice(&self.xid.to_be_bytes());
        b.extend_from_slice(&self.secs.to_be_bytes());
        b.extend_from_slice(&self.flags.to_be_bytes());
        for a in [self.ciaddr, self.yiaddr, self.siaddr, self.giaddr] {
            b.extend_from_slice(&a.octets());
        }
        let mut chaddr = [0u8; 16];
        let n = self.chaddr.len().min(16);
        chaddr[..n].copy_from_slice(&self.chaddr[..n]);
        b.extend_from_slice(&chaddr);
        b.resize(b.len() + 64 + 128, 0); // sname, file
        b.extend_from_slice(&MAGIC);
        for (code, value) in &self.options {
            // Values longer than 255 bytes go out as several instances (RFC 3396).
            let mut chunks = value.chunks(255).peekable();
            if chunks.peek().is_none() {
                b.extend_from_slice(&[*code, 0]);
            }
            for chunk in chunks {
                b.extend_from_slice(&[*code, chunk.len() as u8]);
                b.extend_from_slice(chunk);
            }
        }
        b.push(opt::END);
        if b.len() < MIN_LEN {
            b.resize(MIN_LEN, 0);
        }
        b
    }

    /// Parses a BOOTP/DHCP message; None when it is not one.
    pub fn decode(b: &[u8]) -> Option<Packet> {
        if b.len() < HEADER_LEN || b[236..240] != MAGIC {
            return None;
        }
        let hlen = (b[2] as usize).min(16);
        let mut p = Packet {
            op: b[0],
            xid: u32::from_be_bytes(b[4..8].try_into().ok()?),
            secs: u16::from_be_bytes([b[8], b[9]]),
            flags: u16::from_be_bytes([b[10], b[11]]),
            ciaddr: ipv4_at(b, 12)?,
            yiaddr: ipv4_at(b, 16)?,
            siaddr: ipv4_at(b, 20)?,
            giaddr: ipv4_at(b, 24)?,
            chaddr: b[28..28 + hlen].to_vec(),
            options: Vec::new(),
        };
        let mut rest = &b[HEADER_LEN..];
        // Options overloaded into sname/file (option 52) are ignored.
        while let Some((&code, tail)) = rest.split_first() {
            match code {
                opt::PAD => rest = tail,
                opt::END => break,
                _ => {
                    let (&len, tail) = tail.split_first()?;
                    let value = tail.get(..len as usize)?;
                    match p.options.iter_mut().find(|(c, _)| *c == code) {
                        Some(slot) => slot.1.extend_from_slice(value),
                        None => p.options.push((code, value.to_vec())),
                    }
                    rest = &tail[len as usize..];
                }
            }
        }
        Some(p)
    }

    pub fn message_type(&self) -> Option<MessageType> {
        self.get(opt::MESSAGE_TYPE).and_then(|v| v.first()).and_then(|&t| MessageType::from_u8(t))
    }

    fn addr_opt(&self, code: u8) -> Option<Ipv4Addr> {
        self.get(code).filter(|v| v.len() == 4).and_then(|v| ipv4_at(v, 0))
    }

    fn addrs_opt(&self, code: u8) -> Vec<Ipv4Addr> {
        self.get(code).map(|v| v.chunks_exact(4).filter_map(|c| ipv4_at(c, 0)).collect()).unwrap_or_default()
    }

    fn u32_opt(&self, code: u8) -> Option<u32> {
        self.get(code).and_then(|v| v.try_into().ok()).map(u32::from_be_bytes)
    }

    fn string_opt(&self, code: u8) -> Option<String> {
        let v = self.get(code)?;
        // Some servers count a trailing NUL in the length.
        let v = v.strip_suffix(&[0]).unwrap_or(v);
        let s = String::from_utf8_lossy(v).into_owned();
        (!s.is_empty()).then_some(s)
    }

    pub fn server_id(&self) -> Option<Ipv4Addr> {
        self.addr_opt(opt::SERVER_ID)
    }
    pub fn subnet_mask(&self) -> Option<Ipv4Addr> {
        self.addr_opt(opt::SUBNET_MASK)
    }
    pub fn lease_time(&self) -> Option<u32> {
        self.u32_opt(opt::LEASE_TIME)
    }
    pub fn renewal_time(&self) -> Option<u32> {
        self.u32_opt(opt::RENEWAL_TIME)
    }
    pub fn rebinding_time(&self) -> Option<u32> {
        self.u32_opt(opt::REBINDING_TIME)
    }
    pub fn routers(&self) -> Vec<Ipv4Addr> {
        self.addrs_opt(opt::ROUTER)
    }
    pub fn dns_servers(&self) -> Vec<Ipv4Addr> {
        self.addrs_opt(opt::DNS)
    }
    pub fn domain_name(&self) -> Option<String> {
        self.string_opt(opt::DOMAIN_NAME)
    }
    #[allow(dead_code)] // for logs and tests; servers rarely send it
    pub fn hostname(&self) -> Option<String> {
        self.string_opt(opt::HOSTNAME)
    }
    pub fn search_list(&self) -> Vec<String> {
        self.get(opt::SEARCH_LIST).map(decode_search_list).unwrap_or_default()
    }
    pub fn classless_routes(&self) -> Option<Vec<StaticRoute>> {
        self.get(opt::CLASSLESS_ROUTES).and_then(decode_classless_routes)
    }
    /// Option 33: classful destination + router pairs.
    pub fn static_routes(&self) -> Vec<StaticRoute> {
        let Some(v) = self.get(opt::STATIC_ROUTES) else { return Vec::new() };
        v.chunks_exact(8)
            .filter_map(|c| {
                let dst = ipv4_at(c, 0)?;
                let prefix = match dst.octets()[0] {
                    0..=127 => 8,
                    128..=191 => 16,
                    _ => 24,
                };
                Some(StaticRoute { dst: Ipv4Net::new(dst, prefix).ok()?.trunc(), gw: ipv4_at(c, 4)? })
            })
            .collect()
    }
}

/// RFC 3442: width, the significant octets of the destination, the router.
/// None when the option is malformed (the RFC says to ignore it then).
pub fn decode_classless_routes(mut v: &[u8]) -> Option<Vec<StaticRoute>> {
    let mut routes = Vec::new();
    while let Some((&width, tail)) = v.split_first() {
        if width > 32 {
            return None;
        }
        let n = (width as usize).div_ceil(8);
        let dst_bytes = tail.get(..n)?;
        let gw = ipv4_at(tail, n)?;
        let mut dst = [0u8; 4];
        dst[..n].copy_from_slice(dst_bytes);
        routes.push(StaticRoute { dst: Ipv4Net::new(Ipv4Addr::from(dst), width).ok()?.trunc(), gw });
        v = &tail[n + 4..];
    }
    Some(routes)
}

#[cfg(test)]
pub fn encode_classless_routes(routes: &[StaticRoute]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in routes {
        let n = (r.dst.prefix_len() as usize).div_ceil(8);
        out.push(r.dst.prefix_len());
        out.extend_from_slice(&r.dst.network().octets()[..n]);
        out.extend_from_slice(&r.gw.octets());
    }
    out
}

/// RFC 3397: a sequence of DNS names in wire format, where compression
/// pointers are offsets into the whole (concatenated) option value.
pub fn decode_search_list(data: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut at = 0;
    while at < data.len() {
        match read_name(data, at) {
            Some((name, next)) => {
                if !name.is_empty() {
                    names.push(name);
                }
                at = next;
            }
            None => break,
        }
    }
    names
}

/// Reads the name starting at `at`; returns it and the offset after it.
fn read_name(data: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    let mut end = None;
    // Each pointer must go strictly backwards, so this terminates; the
    // bound is a second guard.
    let mut jumps = 0;
    let mut limit = at;
    loop {
        let len = *data.get(at)?;
        match len {
            0 => {
                end.get_or_insert(at + 1);
                break;
            }
            l if l & 0xc0 == 0xc0 => {
                let target = (((l & 0x3f) as usize) << 8) | *data.get(at + 1)? as usize;
                end.get_or_insert(at + 2);
                jumps += 1;
                if target >= limit || jumps > 128 {
                    return None;
                }
                limit = target;
                at = target;
            }
            l if l & 0xc0 != 0 => return None,
            l => {
                let label = data.get(at + 1..at + 1 + l as usize)?;
                labels.push(String::from_utf8_lossy(label).into_owned());
                at += 1 + l as usize;
            }
        }
    }
    Some((labels.join("."), end?))
}

/// Encodes names without compression (valid RFC 3397 data).
#[cfg(test)]
pub fn encode_search_list(names: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for name in names {
        for label in name.split('.').filter(|l| !l.is_empty()) {
            out.push(label.len().min(63) as u8);
            out.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
        }
        out.push(0);
    }
    out
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 + UDP datagram carrying `payload`, for a packet socket.
pub fn udp_frame(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut b = Vec::with_capacity(total);
    b.extend_from_slice(&[0x45, 0x10]); // IPv4, IHL 5; TOS low delay as DHCP clients use
    b.extend_from_slice(&(total as u16).to_be_bytes());
    b.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]); // id, frag, ttl, proto UDP, checksum
    b.extend_from_slice(&src.octets());
    b.extend_from_slice(&dst.octets());
    let sum = checksum(&b[..20]);
    b[10..12].copy_from_slice(&sum.to_be_bytes());
    b.extend_from_slice(&sport.to_be_bytes());
    b.extend_from_slice(&dport.to_be_bytes());
    b.extend_from_slice(&(udp_len as u16).to_be_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(payload);
    // UDP checksum over the pseudo header; 0 would mean "none", so 0xffff.
    let mut pseudo = Vec::with_capacity(12 + udp_len);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
    pseudo.extend_from_slice(&b[20..]);
    let sum = match checksum(&pseudo) {
        0 => 0xffff,
        s => s,
    };
    b[26..28].copy_from_slice(&sum.to_be_bytes());
    b
}

/// The UDP payload of an IPv4 datagram sent to `dport`, with its source
/// address; None for anything else (other protocols, fragments, truncation).
pub fn parse_udp_frame(b: &[u8], dport: u16) -> Option<(Ipv4Addr, &[u8])> {
    let first = *b.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = (first & 0x0f) as usize * 4;
    let total = u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize;
    let frag = u16::from_be_bytes([*b.get(6)?, *b.get(7)?]);
    if ihl < 20 || *b.get(9)? != 17 || frag & 0x3fff != 0 || total > b.len() || total < ihl + 8 {
        return None;
    }
    let src = ipv4_at(b, 12)?;
    let udp = &b[ihl..total];
    let port = u16::from_be_bytes([udp[2], udp[3]]);
    let len = u16::from_be_bytes([udp[4], udp[5]]) as usize;
    if port != dport || len < 8 || len > udp.len() {
        return None;
    }
    Some((src, &udp[8..len]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// A DHCPACK hand-built in dnsmasq's layout and option order, adding a
    /// host name and a compression pointer into the middle of a name.
    fn dnsmasq_ack() -> Vec<u8> {
        let mut b = hex("02 01 06 00 a1b2c3d4 0000 0000 00000000 0a580025 0a580001 00000000
             02aabbccddee 00000000000000000000");
        b.resize(236, 0);
        b.extend_from_slice(&MAGIC);
        b.extend(hex("35 01 05
             36 04 0a580001
             33 04 00000078
             3a 04 0000003c
             3b 04 00000069
             01 04 ffffff00
             1c 04 0a5800ff
             79 0d 18 0a0b0c 0a580001 00 0a580001
             03 04 0a580001
             06 08 0a580001 08080808
             0f 0b 6578616d706c652e636f6d
             77 17 03666f6f 076578616d706c65 03636f6d 00 03626172 c004
             0c 04 63746e31
             ff"));
        b
    }

    /// An OFFER and an ACK captured from dnsmasq 2.90 (AF_PACKET capture in
    /// the test's container netns); the 192 zero bytes of sname/file are
    /// elided here and restored by `captured`.
    fn captured(header: &str, options: &str) -> Vec<u8> {
        let mut b = hex(header);
        b.resize(236, 0);
        b.extend_from_slice(&MAGIC);
        b.extend(hex(options));
        b
    }

    const CAPTURED_HEADER: &str =
        "020106006ddc940000000000000000000a6300250a630001000000003e5436b48ddc00000000000000000000";
    const CAPTURED_OFFER: &str = "35010236040a6300013304000000783a040000003c3b04000000690104ffffff001c040a6300ff790c100a4d0a630003000a6300017711036c616e04746573740004636f7270c0000f086c616e2e7465737406080a6300010a63000203040a630001ff";
    const CAPTURED_ACK: &str = "35010536040a6300013304000000783a040000003c3b04000000690104ffffff001c040a6300ff790c100a4d0a630003000a6300017711036c616e04746573740004636f7270c0000f086c616e2e7465737406080a6300010a63000203040a630001ff";

    #[test]
    fn decodes_captured_dnsmasq_packets() {
        let offer = Packet::decode(&captured(CAPTURED_HEADER, CAPTURED_OFFER)).unwrap();
        assert_eq!(offer.message_type(), Some(MessageType::Offer));
        let ack = Packet::decode(&captured(CAPTURED_HEADER, CAPTURED_ACK)).unwrap();
        assert_eq!(ack.message_type(), Some(MessageType::Ack));
        assert_eq!(ack.xid, 0x6ddc9400);
        assert_eq!(ack.yiaddr, Ipv4Addr::new(10, 99, 0, 37));
        assert_eq!(ack.siaddr, Ipv4Addr::new(10, 99, 0, 1));
        assert_eq!(ack.chaddr, hex("3e5436b48ddc"));
        assert_eq!(ack.server_id(), Some(Ipv4Addr::new(10, 99, 0, 1)));
        assert_eq!((ack.lease_time(), ack.renewal_time(), ack.rebinding_time()), (Some(120), Some(60), Some(105)));
        assert_eq!(ack.subnet_mask(), Some(Ipv4Addr::new(255, 255, 255, 0)));
        assert_eq!(ack.routers(), vec![Ipv4Addr::new(10, 99, 0, 1)]);
        assert_eq!(ack.dns_servers(), vec![Ipv4Addr::new(10, 99, 0, 1), Ipv4Addr::new(10, 99, 0, 2)]);
        assert_eq!(ack.domain_name().as_deref(), Some("lan.test"));
        // dnsmasq compresses "corp.lan.test" with a pointer to offset 0.
        assert_eq!(ack.search_list(), vec!["lan.test", "corp.lan.test"]);
        let routes: Vec<String> =
            ack.classless_routes().unwrap().iter().map(|r| format!("{} {}", r.dst, r.gw)).collect();
        assert_eq!(routes, ["10.77.0.0/16 10.99.0.3", "0.0.0.0/0 10.99.0.1"]);
    }

    #[test]
    fn decodes_a_dnsmasq_ack() {
        let p = Packet::decode(&dnsmasq_ack()).unwrap();
        assert_eq!(p.op, BOOTREPLY);
        assert_eq!(p.xid, 0xa1b2c3d4);
        assert_eq!(p.yiaddr, Ipv4Addr::new(10, 88, 0, 37));
        assert_eq!(p.chaddr, hex("02aabbccddee"));
        assert_eq!(p.message_type(), Some(MessageType::Ack));
        assert_eq!(p.server_id(), Some(Ipv4Addr::new(10, 88, 0, 1)));
        assert_eq!((p.lease_time(), p.renewal_time(), p.rebinding_time()), (Some(120), Some(60), Some(105)));
        assert_eq!(p.subnet_mask(), Some(Ipv4Addr::new(255, 255, 255, 0)));
        assert_eq!(p.routers(), vec![Ipv4Addr::new(10, 88, 0, 1)]);
        assert_eq!(p.dns_servers(), vec![Ipv4Addr::new(10, 88, 0, 1), Ipv4Addr::new(8, 8, 8, 8)]);
        assert_eq!(p.domain_name().as_deref(), Some("example.com"));
        assert_eq!(p.search_list(), vec!["foo.example.com", "bar.example.com"]);
        assert_eq!(p.hostname().as_deref(), Some("ctn1"));
        assert_eq!(
            p.classless_routes().unwrap(),
            vec![
                StaticRoute { dst: "10.11.12.0/24".parse().unwrap(), gw: Ipv4Addr::new(10, 88, 0, 1) },
                StaticRoute { dst: "0.0.0.0/0".parse().unwrap(), gw: Ipv4Addr::new(10, 88, 0, 1) },
            ]
        );
    }

    #[test]
    fn round_trips_a_request() {
        let mut p = Packet::request(MessageType::Request, 7, &hex("02aabbccddee"));
        p.flags = FLAG_BROADCAST;
        p.set(opt::CLIENT_ID, b"\0abc/net/eth0".to_vec());
        p.set(opt::REQUESTED_IP, vec![10, 0, 0, 5]);
        p.set(opt::PARAM_REQUEST_LIST, vec![1, 3, 6, 15, 119, 121]);
        p.set(opt::USER_CLASS, vec![b'x'; 300]);
        let bytes = p.encode();
        assert!(bytes.len() >= MIN_LEN);
        assert_eq!(&bytes[..4], &[1, 1, 6, 0]);
        let back = Packet::decode(&bytes).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.message_type(), Some(MessageType::Request));
    }

    #[test]
    fn classless_routes_per_rfc3442() {
        // Examples from RFC 3442 section 5.
        let v = hex("00 0a000001  08 0a 0a000001  18 0a0b0c 0a000002  20 0a0b0c0d 0a000003");
        let r = decode_classless_routes(&v).unwrap();
        let dsts: Vec<String> = r.iter().map(|r| r.dst.to_string()).collect();
        assert_eq!(dsts, ["0.0.0.0/0", "10.0.0.0/8", "10.11.12.0/24", "10.11.12.13/32"]);
        assert_eq!(encode_classless_routes(&r), v);
        assert!(decode_classless_routes(&hex("21 0a000000 00000000")).is_none());
        assert!(decode_classless_routes(&hex("18 0a0b")).is_none());
    }

    #[test]
    fn search_list_compression() {
        assert_eq!(decode_search_list(&encode_search_list(&["a.b", "c"])), vec!["a.b", "c"]);
        // Pointer loops and forward pointers are refused, not followed forever.
        assert!(decode_search_list(&hex("c000")).is_empty());
        assert!(decode_search_list(&hex("01 61 c0 05 00 01 62 00")).is_empty());
    }

    #[test]
    fn static_routes_option_33() {
        let mut p = Packet::request(MessageType::Ack, 1, &[0; 6]);
        p.set(opt::STATIC_ROUTES, hex("0a000000 c0a80001 ac100000 c0a80002"));
        let r = p.static_routes();
        assert_eq!(r[0].dst.to_string(), "10.0.0.0/8");
        assert_eq!(r[1].dst.to_string(), "172.16.0.0/16");
    }

    #[test]
    fn udp_framing() {
        let src = Ipv4Addr::new(10, 0, 0, 1);
        let f = udp_frame(src, Ipv4Addr::BROADCAST, 67, 68, b"hello");
        assert_eq!(checksum(&f[..20]), 0);
        assert_eq!(parse_udp_frame(&f, 68), Some((src, &b"hello"[..])));
        assert_eq!(parse_udp_frame(&f, 67), None);
        for n in 0..f.len() {
            assert_eq!(parse_udp_frame(&f[..n], 68), None);
        }
    }

    #[test]
    fn malformed_input_never_panics() {
        let ack = dnsmasq_ack();
        for n in 0..ack.len() {
            let _ = Packet::decode(&ack[..n]).map(|p| (p.search_list(), p.classless_routes(), p.static_routes()));
        }
        // Flip every byte of the options area in turn.
        let mut seed = 0x1234_5678u32;
        for _ in 0..2000 {
            let mut b = ack.clone();
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let i = HEADER_LEN + (seed as usize % (b.len() - HEADER_LEN));
                b[i] = (seed >> 8) as u8;
            }
            if let Some(p) = Packet::decode(&b) {
                let _ = (p.search_list(), p.classless_routes(), p.static_routes(), p.domain_name(), p.routers());
            }
            let _ = parse_udp_frame(&b, 68);
        }
    }
}
