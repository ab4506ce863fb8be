//! The DHCP client the daemon runs for each lease: DISCOVER/OFFER/
//! REQUEST/ACK, RENEW, REBIND and RELEASE over a packet socket on the
//! container's interface.
//!
//! The socket is an AF_PACKET datagram socket created on a thread inside the
//! container's netns and bound to the interface: it sees replies before the
//! interface has an address, and stays tied to that netns whichever thread
//! later uses it. We build the IPv4/UDP headers ourselves (packet.rs).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::libc;

use super::packet::{self, opt, MessageType, Packet};
use crate::netlink::{NetNs, NetNsError, Netlink};
use crate::util::hash::random_u32;

/// How the client paces its retransmissions.
#[derive(Debug, Clone)]
pub struct Timing {
    /// The longest wait for a reply to one transmission.
    pub timeout: Duration,
    /// The largest backoff delay between transmissions.
    pub resend_max: Duration,
    /// The longest one exchange (e.g. an acquisition) may take overall.
    pub resend_timeout: Duration,
    /// Ask servers to broadcast their replies.
    pub broadcast: bool,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            timeout: Duration::from_secs(10),
            resend_max: Duration::from_secs(62),
            resend_timeout: Duration::from_secs(208),
            broadcast: false,
        }
    }
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum Error {
    /// The netns or the interface is gone: nothing left to maintain.
    Gone(String),
    /// The server refused the request (DHCPNAK).
    Nak(String),
    /// No usable answer before the deadline.
    Timeout(String),
    /// Asked to stop.
    Stopped,
    Io(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Gone(m) | Error::Nak(m) | Error::Timeout(m) | Error::Io(m) => f.write_str(m),
            Error::Stopped => f.write_str("stopped"),
        }
    }
}

/// What identifies the client to the server on every message.
#[derive(Debug, Clone)]
pub struct Identity {
    pub netns: String,
    pub ifname: String,
    /// Option 61 as sent (type byte included).
    pub client_id: Vec<u8>,
    /// Extra options sent on DISCOVER/REQUEST (provide + parameter request list).
    pub options: Vec<(u8, Vec<u8>)>,
}

/// A bound lease as the server acknowledged it.
#[derive(Debug, Clone)]
pub struct Lease {
    pub ack: Packet,
    pub server_id: Ipv4Addr,
    /// The link-layer source of the ACK: the server, or the relay in front
    /// of it; the next hop for unicast renewals.
    pub server_mac: [u8; 6],
    pub obtained: Instant,
}

/// Defaults from RFC 2131 when the server sends no times.
const DEFAULT_LEASE: u32 = 3600;

impl Lease {
    pub fn addr(&self) -> Ipv4Addr {
        self.ack.yiaddr
    }
    pub fn lease_time(&self) -> Duration {
        Duration::from_secs(self.ack.lease_time().unwrap_or(DEFAULT_LEASE).into())
    }
    /// T1: when to start renewing with our server.
    pub fn renew_at(&self) -> Instant {
        let secs = self.ack.renewal_time().map(u64::from).unwrap_or(self.lease_time().as_secs() / 2);
        self.obtained + Duration::from_secs(secs).min(self.lease_time())
    }
    /// T2: when to ask any server.
    pub fn rebind_at(&self) -> Instant {
        let secs = self.ack.rebinding_time().map(u64::from).unwrap_or(self.lease_time().as_secs() * 7 / 8);
        (self.obtained + Duration::from_secs(secs).min(self.lease_time())).max(self.renew_at())
    }
    pub fn expires_at(&self) -> Instant {
        self.obtained + self.lease_time()
    }
}

/// A packet socket on one interface of a container.
struct RawSocket {
    fd: OwnedFd,
    ifindex: i32,
    mac: [u8; 6],
}

/// A received IP datagram and the MAC address it came from.
type Datagram = (Vec<u8>, [u8; 6]);

const ETH_P_IP: u16 = 0x0800;
const BROADCAST_MAC: [u8; 6] = [0xff; 6];

/// Only a netns that is gone ends a lease's maintenance; one that cannot
/// be opened otherwise (EACCES, not a namespace) is an error to retry.
fn netns_error(e: NetNsError) -> Error {
    if e.is_gone() {
        Error::Gone(e.to_string())
    } else {
        Error::Io(e.to_string())
    }
}

fn last_os_error(what: &str) -> Error {
    Error::Io(format!("{what}: {}", io::Error::last_os_error()))
}

fn sockaddr_ll(ifindex: i32, mac: &[u8; 6]) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = ETH_P_IP.to_be();
    sa.sll_ifindex = ifindex;
    sa.sll_halen = 6;
    sa.sll_addr[..6].copy_from_slice(mac);
    sa
}

impl RawSocket {
    /// Opens the socket inside `netns` on `ifname`, bringing the link up if
    /// needed (a server cannot answer a down interface).
    fn open(netns: &str, ifname: &str) -> Result<RawSocket, Error> {
        let ns = NetNs::open(netns).map_err(netns_error)?;
        ns.run(|| {
            let nl = Netlink::new().map_err(|e| Error::Io(e.msg))?;
            let link = nl
                .link(ifname)
                .map_err(|e| Error::Io(e.msg))?
                .ok_or_else(|| Error::Gone(format!("interface {ifname} not found in {netns}")))?;
            if !link.up {
                nl.set_up(link.index).map_err(|e| Error::Io(e.msg))?;
            }
            let mac: [u8; 6] = crate::netlink::mac::parse(&link.mac)
                .and_then(|m| m.try_into().ok())
                .ok_or_else(|| Error::Io(format!("{ifname} has no Ethernet address")))?;
            // SAFETY: plain syscalls on a descriptor we own.
            let fd = unsafe {
                libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, i32::from(ETH_P_IP.to_be()))
            };
            if fd < 0 {
                return Err(last_os_error("packet socket"));
            }
            // SAFETY: fd is a fresh descriptor nobody else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let sa = sockaddr_ll(link.index as i32, &[0; 6]);
            // SAFETY: sa is a valid sockaddr_ll of the given size.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    &sa as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if rc < 0 {
                return Err(last_os_error("binding the packet socket"));
            }
            Ok(RawSocket { fd, ifindex: link.index as i32, mac })
        })
        .map_err(|e| Error::Io(e.msg))?
    }

    fn send(&self, to_mac: &[u8; 6], src: Ipv4Addr, dst: Ipv4Addr, msg: &Packet) -> Result<(), Error> {
        let frame = packet::udp_frame(src, dst, packet::CLIENT_PORT, packet::SERVER_PORT, &msg.encode());
        let sa = sockaddr_ll(self.ifindex, to_mac);
        // SAFETY: the buffer and address are valid for the given lengths.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &sa as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc < 0 {
            return Err(last_os_error("sending a DHCP message"));
        }
        Ok(())
    }

    /// One datagram with its link-layer source, or None after `wait`.
    fn recv(&self, wait: Duration) -> Result<Option<Datagram>, Error> {
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = wait.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(None) } else { Err(Error::Io(e.to_string())) };
        }
        if n == 0 {
            return Ok(None);
        }
        let mut buf = vec![0u8; 2048];
        // SAFETY: see sockaddr_ll.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        // SAFETY: buffer and address are valid for their lengths.
        let rc = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_DONTWAIT,
                &mut sa as *mut _ as *mut libc::sockaddr,
                &mut len,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                // The interface went away under us.
                _ if e.raw_os_error() == Some(libc::ENETDOWN) || e.raw_os_error() == Some(libc::ENXIO) => {
                    Err(Error::Gone(e.to_string()))
                }
                _ => Err(Error::Io(e.to_string())),
            };
        }
        buf.truncate(rc as usize);
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&sa.sll_addr[..6]);
        Ok(Some((buf, mac)))
    }
}

/// Brings the interface down once its lease is lost, so the container stops
/// using an address the server may hand to someone else.
pub fn set_link_down(netns: &str, ifname: &str) -> Result<(), Error> {
    let ns = NetNs::open(netns).map_err(netns_error)?;
    let nl = Netlink::in_netns(&ns).map_err(|e| Error::Io(e.msg))?;
    if let Some(link) = nl.link(ifname).map_err(|e| Error::Io(e.msg))? {
        nl.set_down(link.index).map_err(|e| Error::Io(e.msg))?;
    }
    Ok(())
}

/// Whether the interface is still there: Gone when its netns or the link
/// went (unlike `Client::open`, the link is left as it is).
pub fn find_interface(netns: &str, ifname: &str) -> Result<(), Error> {
    let ns = NetNs::open(netns).map_err(netns_error)?;
    let nl = Netlink::in_netns(&ns).map_err(|e| Error::Io(e.msg))?;
    match nl.link(ifname).map_err(|e| Error::Io(e.msg))? {
        Some(_) => Ok(()),
        None => Err(Error::Gone(format!("interface {ifname} not found in {netns}"))),
    }
}

/// `d` randomized by up to ±1 s, as RFC 2131 suggests (never below 500 ms).
fn jittered(d: Duration) -> Duration {
    let offset = Duration::from_millis(u64::from(random_u32() % 2000));
    (d + offset).saturating_sub(Duration::from_secs(1)).max(Duration::from_millis(500))
}

/// Where a request goes.
struct Target {
    mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
}

const BROADCAST: Target = Target { mac: BROADCAST_MAC, src: Ipv4Addr::UNSPECIFIED, dst: Ipv4Addr::BROADCAST };

/// The client for one interface: sends requests, waits for the matching
/// replies, retransmits with exponential backoff.
pub struct Client<'a> {
    sock: RawSocket,
    id: &'a Identity,
    timing: &'a Timing,
    stop: &'a AtomicBool,
}

impl<'a> Client<'a> {
    pub fn open(id: &'a Identity, timing: &'a Timing, stop: &'a AtomicBool) -> Result<Client<'a>, Error> {
        let sock = RawSocket::open(&id.netns, &id.ifname)?;
        Ok(Client { sock, id, timing, stop })
    }

    fn message(&self, kind: MessageType, xid: u32) -> Packet {
        let mut p = Packet::request(kind, xid, &self.sock.mac);
        p.set(opt::CLIENT_ID, self.id.client_id.clone());
        if kind != MessageType::Release {
            for (code, value) in &self.id.options {
                p.set(*code, value.clone());
            }
        }
        p
    }

    /// Sends `msg` until a reply that `accept` takes arrives, or `deadline`.
    fn exchange<T>(
        &self,
        msg: &Packet,
        to: &Target,
        deadline: Instant,
        mut accept: impl FnMut(&Packet, [u8; 6]) -> Option<T>,
    ) -> Result<T, Error> {
        let mut delay = Duration::from_secs(4);
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Err(Error::Stopped);
            }
            let now = Instant::now();
            if now >= deadline {
                let kind = msg.message_type().map(|t| format!("{t:?}")).unwrap_or_default();
                return Err(Error::Timeout(format!("no answer to DHCP{}", kind.to_uppercase())));
            }
            self.sock.send(&to.mac, to.src, to.dst, msg)?;
            log::debug!("{}: sent {:?} xid {:#x}", self.describe(), msg.message_type(), msg.xid);
            let until = (now + jittered(delay).min(self.timing.timeout)).min(deadline);
            while let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
                if self.stop.load(Ordering::Relaxed) {
                    return Err(Error::Stopped);
                }
                // Short waits so a stop request is seen quickly.
                let Some((frame, from_mac)) = self.sock.recv(left.min(Duration::from_millis(250)))? else {
                    continue;
                };
                let Some((_, payload)) = packet::parse_udp_frame(&frame, packet::CLIENT_PORT) else { continue };
                let Some(reply) = Packet::decode(payload) else { continue };
                log::debug!("{}: got {:?} xid {:#x}", self.describe(), reply.message_type(), reply.xid);
                if reply.op != packet::BOOTREPLY
                    || reply.xid != msg.xid
                    || reply.chaddr.get(..6) != Some(&self.sock.mac)
                {
                    continue;
                }
                if let Some(v) = accept(&reply, from_mac) {
                    return Ok(v);
                }
            }
            delay = (delay * 2).min(self.timing.resend_max);
        }
    }

    /// DISCOVER, OFFER, REQUEST, ACK; starts over after a NAK.
    pub fn acquire(&self) -> Result<Lease, Error> {
        let deadline = Instant::now() + self.timing.resend_timeout;
        loop {
            match self.try_acquire(deadline) {
                Err(Error::Nak(why)) => {
                    log::warn!("{}: DHCPNAK during acquisition ({why}); starting over", self.describe());
                    std::thread::sleep(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }

    fn describe(&self) -> String {
        String::from_utf8_lossy(self.id.client_id.get(1..).unwrap_or_default()).into_owned()
    }

    fn try_acquire(&self, deadline: Instant) -> Result<Lease, Error> {
        let xid = random_u32();
        let mut discover = self.message(MessageType::Discover, xid);
        if self.timing.broadcast {
            discover.flags = packet::FLAG_BROADCAST;
        }
        log::info!("{}: DHCPDISCOVER on {} (xid {xid:#x})", self.describe(), self.id.ifname);
        let (offered, server_id) = self.exchange(&discover, &BROADCAST, deadline, |p, _| {
            let server = p.server_id()?;
            (p.message_type() == Some(MessageType::Offer) && !p.yiaddr.is_unspecified()).then_some((p.yiaddr, server))
        })?;
        log::info!("{}: DHCPOFFER of {offered} from {server_id}", self.describe());
        let mut request = self.message(MessageType::Request, xid);
        request.flags = discover.flags;
        request.set(opt::REQUESTED_IP, offered.octets().to_vec());
        request.set(opt::SERVER_ID, server_id.octets().to_vec());
        let lease = self.exchange(&request, &BROADCAST, deadline, |p, mac| self.ack_or_nak(p, mac, Some(server_id)))?;
        let lease = lease?;
        log::info!("{}: DHCPACK of {} from {server_id}", self.describe(), lease.addr());
        Ok(lease)
    }

    /// The lease an ACK grants, a NAK as an error, None for other replies.
    fn ack_or_nak(&self, p: &Packet, mac: [u8; 6], server: Option<Ipv4Addr>) -> Option<Result<Lease, Error>> {
        let from = p.server_id();
        if server.is_some() && from.is_some() && from != server {
            return None;
        }
        match p.message_type()? {
            MessageType::Ack if !p.yiaddr.is_unspecified() => Some(Ok(Lease {
                ack: p.clone(),
                server_id: from.or(server)?,
                server_mac: mac,
                obtained: Instant::now(),
            })),
            MessageType::Nak => {
                let why = p.get(56).map(|m| String::from_utf8_lossy(m).into_owned()).unwrap_or_default();
                Some(Err(Error::Nak(if why.is_empty() { "DHCPNAK".into() } else { format!("DHCPNAK: {why}") })))
            }
            _ => None,
        }
    }

    /// RENEWING (unicast to our server, until `deadline`) or REBINDING
    /// (broadcast to any server).
    pub fn extend(&self, lease: &Lease, rebinding: bool, deadline: Instant) -> Result<Lease, Error> {
        let xid = random_u32();
        let mut request = self.message(MessageType::Request, xid);
        request.ciaddr = lease.addr();
        let to = if rebinding {
            Target { mac: BROADCAST_MAC, src: lease.addr(), dst: Ipv4Addr::BROADCAST }
        } else {
            Target { mac: lease.server_mac, src: lease.addr(), dst: lease.server_id }
        };
        let server = (!rebinding).then_some(lease.server_id);
        let verb = if rebinding { "REBIND" } else { "RENEW" };
        log::info!("{}: DHCPREQUEST ({verb}) of {} to {}", self.describe(), lease.addr(), to.dst);
        let new = self.exchange(&request, &to, deadline, |p, mac| self.ack_or_nak(p, mac, server))??;
        if new.addr() != lease.addr() {
            return Err(Error::Nak(format!("server moved the lease from {} to {}", lease.addr(), new.addr())));
        }
        log::info!("{}: DHCPACK ({verb}) of {}, lease {:?}", self.describe(), new.addr(), new.lease_time());
        Ok(new)
    }

    /// DHCPRELEASE: one unicast message, no answer expected.
    pub fn release(&self, lease: &Lease) -> Result<(), Error> {
        let mut msg = self.message(MessageType::Release, random_u32());
        msg.ciaddr = lease.addr();
        msg.set(opt::SERVER_ID, lease.server_id.octets().to_vec());
        log::info!("{}: DHCPRELEASE of {} to {}", self.describe(), lease.addr(), lease.server_id);
        self.sock.send(&lease.server_mac, lease.addr(), lease.server_id, &msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_times() {
        let mut ack = Packet::request(MessageType::Ack, 1, &[0; 6]);
        ack.set(opt::LEASE_TIME, 120u32.to_be_bytes().to_vec());
        let lease = Lease { ack, server_id: Ipv4Addr::LOCALHOST, server_mac: [0; 6], obtained: Instant::now() };
        assert_eq!(lease.renew_at() - lease.obtained, Duration::from_secs(60));
        assert_eq!(lease.rebind_at() - lease.obtained, Duration::from_secs(105));
        let mut short = lease.clone();
        short.ack.set(opt::RENEWAL_TIME, 10u32.to_be_bytes().to_vec());
        short.ack.set(opt::REBINDING_TIME, 5u32.to_be_bytes().to_vec());
        assert_eq!(short.renew_at() - short.obtained, Duration::from_secs(10));
        // T2 never comes before T1.
        assert_eq!(short.rebind_at(), short.renew_at());
    }

    #[test]
    fn jitter_stays_near() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(4));
            assert!(d >= Duration::from_secs(3) && d <= Duration::from_secs(5), "{d:?}");
        }
    }
}
