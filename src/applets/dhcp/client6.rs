//! The DHCPv6 client the daemon runs for each IA_NA (RFC 8415, stateful):
//! Solicit/Advertise/Request/Reply (or Solicit/Reply with Rapid Commit),
//! Renew, Rebind and Release, over a UDP socket on [::]:546 bound to the
//! container's interface.
//!
//! The socket is created on a thread inside the container's netns and stays
//! tied to it. Messages go to ff02::1:2 from the interface's link-local
//! address, which the kernel only uses once DAD found it unique: opening
//! waits for that (about a second after the link comes up with the
//! kernel's defaults). The on-link prefix and the default route are not
//! DHCPv6's: router advertisements give them, and the kernel installs them
//! once `accept_ra` lets it.

use std::net::{Ipv6Addr, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::libc;

use super::client::{Error, Timing};
use super::packet6::{self, opt, status, IaAddr, IaNa, Message, MessageType};
use crate::netlink::{sysctl, NetNs, NetNsError, Netlink};

/// What identifies the client on every message.
#[derive(Debug, Clone)]
pub struct Identity6 {
    pub netns: String,
    pub ifname: String,
    /// The node's DUID (duid.rs).
    pub duid: Vec<u8>,
    pub iaid: u32,
    /// The attachment, for logs.
    pub who: String,
}

/// A binding as the server's Reply granted it.
#[derive(Debug, Clone)]
pub struct Lease6 {
    pub reply: Message,
    pub server_id: Vec<u8>,
    pub addr: IaAddr,
    pub t1: u32,
    pub t2: u32,
    pub obtained: Instant,
    /// The default router the RAs named, when one did in time.
    pub gateway: Option<Ipv6Addr>,
}

/// Seconds from a lease's start; INFINITY (and anything past ten years)
/// is ten years, which keeps Instant arithmetic from overflowing.
fn after(start: Instant, secs: u32) -> Instant {
    const FAR: u32 = 10 * 365 * 86400;
    start + Duration::from_secs(u64::from(if secs == packet6::INFINITY { FAR } else { secs.min(FAR) }))
}

impl Lease6 {
    /// The binding of `addr` in `ia` of `reply`, as of now.
    pub fn new(reply: &Message, ia: &IaNa, addr: &IaAddr) -> Lease6 {
        Lease6 {
            reply: reply.clone(),
            server_id: reply.server_id().unwrap_or_default().to_vec(),
            addr: addr.clone(),
            t1: ia.t1,
            t2: ia.t2,
            obtained: Instant::now(),
            gateway: None,
        }
    }

    /// T1, or half the preferred lifetime when the server leaves it to us
    /// (RFC 8415 section 21.4).
    pub fn renew_at(&self) -> Instant {
        let t1 = if self.t1 == 0 { self.addr.preferred / 2 } else { self.t1 };
        after(self.obtained, t1.min(self.addr.valid))
    }

    /// T2 (0.8 of the preferred lifetime by default), never before T1.
    pub fn rebind_at(&self) -> Instant {
        let t2 = if self.t2 == 0 { (u64::from(self.addr.preferred) * 4 / 5) as u32 } else { self.t2 };
        after(self.obtained, t2.min(self.addr.valid)).max(self.renew_at())
    }

    pub fn expires_at(&self) -> Instant {
        after(self.obtained, self.addr.valid)
    }

    pub fn lifetime(&self) -> Duration {
        Duration::from_secs(u64::from(self.addr.valid))
    }
}

/// How one kind of exchange retransmits (RFC 8415 section 15, values of
/// section 7.6): initial and largest timeout, most transmissions (0: no
/// limit but the deadline).
struct Pace {
    irt: Duration,
    mrt: Duration,
    mrc: u32,
}

const SOLICIT: Pace = Pace { irt: Duration::from_secs(1), mrt: Duration::from_secs(3600), mrc: 0 };
const REQUEST: Pace = Pace { irt: Duration::from_secs(1), mrt: Duration::from_secs(30), mrc: 10 };
const RENEW: Pace = Pace { irt: Duration::from_secs(10), mrt: Duration::from_secs(600), mrc: 0 };
const REBIND: Pace = RENEW;
const RELEASE: Pace = Pace { irt: Duration::from_secs(1), mrt: Duration::ZERO, mrc: 4 };
/// DEL waits for the Release's Reply: at most this long when no server
/// answers (the first transmission and one retransmission). RFC 8415 allows
/// more, but a runtime's DEL should not stall on a server that is gone; its
/// binding expires anyway.
const RELEASE_LIMIT: Duration = Duration::from_millis(2100);

/// RAND of section 15: uniform in [-0.1, 0.1], or (0, 0.1] for the first
/// Solicit, whose timeout must exceed IRT so replies are collected in it.
fn rand_factor(positive: bool) -> f64 {
    let r = f64::from(crate::util::hash::random_u32() % 10_001) / 100_000.0;
    if positive {
        r.max(0.000_01)
    } else {
        r * 2.0 - 0.1
    }
}

/// The next retransmission timeout after `prev` (None: the first).
fn next_timeout(pace: &Pace, prev: Option<Duration>, first_solicit: bool) -> Duration {
    let rt = match prev {
        None => pace.irt.mul_f64(1.0 + rand_factor(first_solicit)),
        Some(p) => p.mul_f64(2.0 + rand_factor(false)),
    };
    if !pace.mrt.is_zero() && rt > pace.mrt {
        pace.mrt.mul_f64(1.0 + rand_factor(false))
    } else {
        rt
    }
}

fn netns_error(e: NetNsError) -> Error {
    if e.is_gone() {
        Error::Gone(e.to_string())
    } else {
        Error::Io(e.to_string())
    }
}

fn nl_error(e: crate::netlink::Error) -> Error {
    Error::Io(e.msg)
}

/// Readies the interface for DHCPv6 before anything brings it up: IPv6
/// on, router advertisements accepted even if the container forwards
/// (accept_ra 2: its default route and on-link prefix come from them), and
/// `metric` (ipam.priority, when set) as the metric of the RA's default
/// route (ra_defrtr_metric, Linux 5.18+; older kernels keep theirs).
pub fn prepare_link(netns: &str, ifname: &str, metric: u32) -> Result<(), Error> {
    let ns = NetNs::open(netns).map_err(netns_error)?;
    ns.run(|| {
        let key = |name| sysctl::iface_key("ipv6", ifname, name);
        sysctl::write(&key("disable_ipv6"), "0").map_err(nl_error)?;
        sysctl::write(&key("accept_ra"), "2").map_err(nl_error)?;
        if metric != 0 {
            if let Err(e) = sysctl::write(&key("ra_defrtr_metric"), &metric.to_string()) {
                log::warn!("{ifname}: the RA's default route keeps the kernel's metric: {}", e.msg);
            }
        }
        Ok(())
    })
    .map_err(nl_error)?
}

/// Removes a lost lease's address, so the container stops using an address
/// the server may give to someone else.
pub fn remove_address(netns: &str, ifname: &str, addr: Ipv6Addr) -> Result<(), Error> {
    let ns = NetNs::open(netns).map_err(netns_error)?;
    let nl = Netlink::in_netns(&ns).map_err(nl_error)?;
    if let Some(link) = nl.link(ifname).map_err(nl_error)? {
        match nl.del_addr(
            link.index,
            ipnet::IpNet::V6(ipnet::Ipv6Net::new(addr, 128).map_err(|e| Error::Io(e.to_string()))?),
        ) {
            Err(e) if e.errno == crate::netlink::libc_errno::EADDRNOTAVAIL => {}
            other => other.map_err(nl_error)?,
        }
    }
    Ok(())
}

/// Waits for the interface's link-local address to leave DAD (the kernel
/// sends nothing from a tentative address).
fn wait_link_local(nl: &Netlink, index: u32, ifname: &str, deadline: Instant) -> Result<(), Error> {
    let mut pause = Duration::from_millis(5);
    loop {
        let addrs = nl.link_addrs(index, true).map_err(nl_error)?;
        let link_local: Vec<_> = addrs.iter().filter(|a| is_link_local(a.net.addr())).collect();
        if let Some(a) = link_local.iter().find(|a| a.dad_failed) {
            return Err(Error::Io(format!("{ifname}: DAD failed for the link-local address {}", a.net)));
        }
        if link_local.iter().any(|a| !a.tentative) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout(format!("{ifname} has no usable IPv6 link-local address")));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

fn is_link_local(ip: std::net::IpAddr) -> bool {
    matches!(ip, std::net::IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

/// The router of the default route the kernel took from an RA on `index`,
/// waited for until `deadline`.
pub fn wait_ra_router(netns: &str, ifname: &str, deadline: Instant) -> Result<Option<Ipv6Addr>, Error> {
    let ns = NetNs::open(netns).map_err(netns_error)?;
    let nl = Netlink::in_netns(&ns).map_err(nl_error)?;
    let link = nl.link(ifname).map_err(nl_error)?.ok_or_else(|| Error::Gone(format!("{ifname} not found")))?;
    loop {
        let routes = nl.routes(true).map_err(nl_error)?;
        let router = routes.iter().find_map(|r| match (r.dst, r.gw, r.oif) {
            (Some(dst), Some(std::net::IpAddr::V6(gw)), Some(oif)) if dst.prefix_len() == 0 && oif == link.index => {
                Some(gw)
            }
            _ => None,
        });
        if router.is_some() || Instant::now() >= deadline {
            return Ok(router);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Reply with a server ID, from `server` when one is named.
fn is_reply_from(m: &Message, server: Option<&[u8]>) -> bool {
    m.message_type() == Some(MessageType::Reply)
        && m.server_id().is_some()
        && server.is_none_or(|s| m.server_id() == Some(s))
}

/// What a Renew or Rebind got back.
enum Extended {
    Reply(Result<Lease6, Error>),
    /// The server has no binding for our IA (it forgot it): RFC 8415
    /// section 18.2.10.1 says to Request it again from that server.
    NoBinding(Vec<u8>),
}

/// The client for one interface: sends a message, waits for the matching
/// replies, retransmits as section 15 says.
pub struct Client6<'a> {
    sock: UdpSocket,
    ifindex: u32,
    id: &'a Identity6,
    timing: &'a Timing,
    stop: &'a AtomicBool,
}

/// A UDP socket on [::]:546 of the interface, made inside `ns`.
fn open_socket(ifname: &str) -> Result<UdpSocket, Error> {
    let last = |what: &str| Error::Io(format!("{what}: {}", std::io::Error::last_os_error()));
    // SAFETY: plain syscalls on a descriptor we own.
    let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(last("UDP socket"));
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: the option values are valid for their lengths. Bound to the
    // device before the address, so each interface of a netns has its own
    // port 546; SO_REUSEADDR lets a renewal open it while a reply to the
    // last exchange is still queued on an old socket.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            ifname.as_ptr() as *const libc::c_void,
            ifname.len() as u32,
        ) | libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            &one as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    if rc < 0 {
        return Err(last("binding the DHCPv6 socket to its interface"));
    }
    // SAFETY: sockaddr_in6 is plain old data; all-zero is [::]:0.
    let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    sa.sin6_family = libc::AF_INET6 as u16;
    sa.sin6_port = packet6::CLIENT_PORT.to_be();
    // SAFETY: sa is a valid sockaddr_in6 of the given size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sa as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in6>() as u32,
        )
    };
    if rc < 0 {
        return Err(last("binding [::]:546"));
    }
    Ok(UdpSocket::from(fd))
}

impl<'a> Client6<'a> {
    /// Opens the client on the interface, bringing it up if needed, and
    /// waits (until `deadline`) for its link-local address to be usable.
    pub fn open(
        id: &'a Identity6,
        timing: &'a Timing,
        stop: &'a AtomicBool,
        deadline: Instant,
    ) -> Result<Client6<'a>, Error> {
        let ns = NetNs::open(&id.netns).map_err(netns_error)?;
        let nl = Netlink::in_netns(&ns).map_err(nl_error)?;
        let link = nl
            .link(&id.ifname)
            .map_err(nl_error)?
            .ok_or_else(|| Error::Gone(format!("interface {} not found in {}", id.ifname, id.netns)))?;
        if !link.up {
            nl.set_up(link.index).map_err(nl_error)?;
        }
        let sock = ns.run(|| open_socket(&id.ifname)).map_err(nl_error)??;
        let started = Instant::now();
        wait_link_local(&nl, link.index, &id.ifname, deadline)?;
        log::debug!("{}: link-local address usable after {:?}", id.who, started.elapsed());
        Ok(Client6 { sock, ifindex: link.index, id, timing, stop })
    }

    /// A client message with what every one carries: our DUID, the
    /// elapsed time and (but in a Release) the options we want.
    fn message(&self, kind: MessageType, xid: u32, elapsed: Duration) -> Message {
        let mut m = Message::new(kind, xid);
        m.push(opt::CLIENT_ID, self.id.duid.clone());
        m.push(opt::ELAPSED_TIME, packet6::encode_elapsed(elapsed));
        if kind != MessageType::Release {
            m.push(opt::ORO, packet6::encode_oro(&[opt::DNS_SERVERS, opt::DOMAIN_LIST]));
        }
        m
    }

    /// Our IA_NA, holding `addr` when we have one (lifetimes 0: the server
    /// decides them).
    fn ia_na(&self, addr: Option<Ipv6Addr>) -> Vec<u8> {
        let addrs = addr.map(|addr| IaAddr { addr, preferred: 0, valid: 0, status: None }).into_iter().collect();
        IaNa { iaid: self.id.iaid, t1: 0, t2: 0, addrs, status: None }.encode()
    }

    fn send(&self, m: &Message) -> Result<(), Error> {
        let to = SocketAddrV6::new(packet6::ALL_SERVERS, packet6::SERVER_PORT, 0, self.ifindex);
        match self.sock.send_to(&m.encode(), to) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENODEV) | Some(libc::ENXIO)) => {
                Err(Error::Gone(e.to_string()))
            }
            Err(e) => Err(Error::Io(format!("sending a DHCPv6 message: {e}"))),
        }
    }

    /// A reply to `xid` for us, or None after `wait`.
    fn recv(&self, xid: u32, wait: Duration) -> Result<Option<Message>, Error> {
        let _ = self.sock.set_read_timeout(Some(wait.max(Duration::from_millis(1))));
        let mut buf = [0u8; 4096];
        let n = match self.sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Ok(None)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Ok(None),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENODEV) | Some(libc::ENETDOWN)) => {
                return Err(Error::Gone(e.to_string()))
            }
            Err(e) => return Err(Error::Io(e.to_string())),
        };
        let Some(m) = Message::decode(&buf[..n]) else { return Ok(None) };
        log::debug!("{}: got {:?} xid {:#x}", self.id.who, m.message_type(), m.xid);
        Ok((m.xid == xid && m.client_id() == Some(&self.id.duid[..])).then_some(m))
    }

    /// Sends what `build` makes (given the time since the first
    /// transmission) until `accept` takes something: it sees each reply
    /// (Some) and the end of each timeout (None). Ends at `deadline`, or
    /// after the pace's most transmissions.
    fn exchange<T>(
        &self,
        build: impl Fn(Duration) -> Message,
        pace: &Pace,
        deadline: Instant,
        mut accept: impl FnMut(Option<&Message>) -> Option<T>,
    ) -> Result<T, Error> {
        let start = Instant::now();
        let first = build(Duration::ZERO);
        let (kind, xid) = (first.message_type(), first.xid);
        let mut timeout = None;
        let mut sent = 0u32;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Err(Error::Stopped);
            }
            let now = Instant::now();
            if now >= deadline || (pace.mrc != 0 && sent >= pace.mrc) {
                return Err(Error::Timeout(format!("no answer to the DHCPv6 {kind:?}")));
            }
            let rt = next_timeout(pace, timeout, kind == Some(MessageType::Solicit));
            timeout = Some(rt);
            self.send(&build(now - start))?;
            sent += 1;
            log::debug!("{}: sent {kind:?} xid {xid:#x}, next in {rt:?}", self.id.who);
            // -timeout caps the wait for one transmission, as for DHCPv4.
            let until = (now + rt.min(self.timing.timeout)).min(deadline);
            while let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
                if self.stop.load(Ordering::Relaxed) {
                    return Err(Error::Stopped);
                }
                // Short waits so a stop request is seen quickly.
                if let Some(reply) = self.recv(xid, left.min(Duration::from_millis(250)))? {
                    if let Some(v) = accept(Some(&reply)) {
                        return Ok(v);
                    }
                }
            }
            if let Some(v) = accept(None) {
                return Ok(v);
            }
        }
    }

    /// The lease a Reply grants, its refusal as an error, None for a reply
    /// that is not for this exchange (another server's, in a Renew).
    fn reply_lease(&self, m: &Message, server: Option<&[u8]>) -> Option<Result<Lease6, Error>> {
        if !is_reply_from(m, server) {
            return None;
        }
        if let Some(s) = m.status().filter(|s| s.code != status::SUCCESS) {
            return Some(Err(Error::Nak(format!("DHCPv6 Reply: {s}"))));
        }
        let Some(ia) = m.ia_na(self.id.iaid) else {
            return Some(Err(Error::Nak("the DHCPv6 Reply holds no IA_NA for us".into())));
        };
        match ia.granted() {
            Some(addr) => Some(Ok(Lease6::new(m, &ia, addr))),
            None => {
                let why = ia.status.or_else(|| ia.addrs.iter().find_map(|a| a.status.clone()));
                let why = why.map(|s| s.to_string()).unwrap_or_else(|| "no address granted".into());
                Some(Err(Error::Nak(format!("DHCPv6 Reply: {why}"))))
            }
        }
    }

    /// Solicit, then Request the best Advertise; or a Reply at once when
    /// the server does Rapid Commit. Starts over after a refusal.
    pub fn acquire(&self, deadline: Instant) -> Result<Lease6, Error> {
        loop {
            match self.try_acquire(deadline) {
                Err(Error::Nak(why)) if Instant::now() < deadline => {
                    log::warn!("{}: {why}; soliciting again", self.id.who);
                    std::thread::sleep(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }

    /// The first Solicit goes at once: RFC 8415's random delay before it
    /// spreads a whole link's hosts booting together, while an ADD is one
    /// interface whose link-local DAD already took a random while.
    fn try_acquire(&self, deadline: Instant) -> Result<Lease6, Error> {
        let xid = crate::util::hash::random_u32();
        log::info!(
            "{}: DHCPv6 Solicit on {} (xid {:#x}, IAID {:#x})",
            self.id.who,
            self.id.ifname,
            xid & 0xffffff,
            self.id.iaid
        );
        let solicit = |elapsed| {
            let mut m = self.message(MessageType::Solicit, xid, elapsed);
            m.push(opt::RAPID_COMMIT, Vec::new());
            m.push(opt::IA_NA, self.ia_na(None));
            m
        };
        enum Answer {
            Committed(Result<Lease6, Error>),
            Advertised(Message),
        }
        // Advertises are collected until the first timeout ends, unless
        // one has the highest preference; after that the first one wins.
        let mut best: Option<Message> = None;
        let mut first_timeout_over = false;
        let answer = self.exchange(solicit, &SOLICIT, deadline, |reply| {
            let Some(m) = reply else {
                first_timeout_over = true;
                return best.take().map(Answer::Advertised);
            };
            match m.message_type() {
                Some(MessageType::Reply) if m.rapid_commit() => Some(Answer::Committed(self.reply_lease(m, None)?)),
                Some(MessageType::Advertise) => {
                    let offered = m.server_id().is_some()
                        && m.status().is_none_or(|s| s.code == status::SUCCESS)
                        && m.ia_na(self.id.iaid).is_some_and(|ia| ia.granted().is_some());
                    if !offered {
                        return None;
                    }
                    if m.preference() == 255 || first_timeout_over {
                        return Some(Answer::Advertised(m.clone()));
                    }
                    if best.as_ref().is_none_or(|b| m.preference() > b.preference()) {
                        best = Some(m.clone());
                    }
                    None
                }
                _ => None,
            }
        })?;
        let advertise = match answer {
            Answer::Committed(lease) => {
                let lease = lease?;
                log::info!("{}: DHCPv6 Reply (rapid commit) of {}", self.id.who, lease.addr.addr);
                return Ok(lease);
            }
            Answer::Advertised(m) => m,
        };
        let server = advertise.server_id().unwrap_or_default().to_vec();
        let offered = advertise.ia_na(self.id.iaid).and_then(|ia| ia.granted().map(|a| a.addr));
        log::info!("{}: DHCPv6 Advertise of {offered:?}; Request", self.id.who);
        let lease = self.request(&server, offered, deadline)?;
        log::info!("{}: DHCPv6 Reply of {}", self.id.who, lease.addr.addr);
        Ok(lease)
    }

    /// Request of `server` the binding of `addr` (None: of what it picks).
    fn request(&self, server: &[u8], addr: Option<Ipv6Addr>, deadline: Instant) -> Result<Lease6, Error> {
        let xid = crate::util::hash::random_u32();
        let request = |elapsed| {
            let mut m = self.message(MessageType::Request, xid, elapsed);
            m.push(opt::SERVER_ID, server.to_vec());
            m.push(opt::IA_NA, self.ia_na(addr));
            m
        };
        self.exchange(request, &REQUEST, deadline, |r| self.reply_lease(r?, Some(server)))?
    }

    /// Renew (with our server, until `deadline`, normally T2) or Rebind
    /// (with any server, until the address expires).
    pub fn extend(&self, lease: &Lease6, rebinding: bool, deadline: Instant) -> Result<Lease6, Error> {
        let xid = crate::util::hash::random_u32();
        let (kind, pace, verb) =
            if rebinding { (MessageType::Rebind, &REBIND, "Rebind") } else { (MessageType::Renew, &RENEW, "Renew") };
        let build = |elapsed| {
            let mut m = self.message(kind, xid, elapsed);
            if !rebinding {
                m.push(opt::SERVER_ID, lease.server_id.clone());
            }
            m.push(opt::IA_NA, self.ia_na(Some(lease.addr.addr)));
            m
        };
        log::info!("{}: DHCPv6 {verb} of {}", self.id.who, lease.addr.addr);
        let server = (!rebinding).then_some(&lease.server_id[..]);
        let extended = self.exchange(build, pace, deadline, |r| {
            let m = r?;
            let ia_status = m.ia_na(self.id.iaid).and_then(|ia| ia.status).map(|s| s.code);
            if is_reply_from(m, server) && ia_status == Some(status::NO_BINDING) {
                return Some(Extended::NoBinding(m.server_id()?.to_vec()));
            }
            self.reply_lease(m, server).map(Extended::Reply)
        })?;
        let mut new = match extended {
            Extended::Reply(r) => r?,
            Extended::NoBinding(server) => {
                log::warn!("{}: the server has no binding for {} ({verb}); Request", self.id.who, lease.addr.addr);
                self.request(&server, Some(lease.addr.addr), deadline)?
            }
        };
        if new.addr.addr != lease.addr.addr {
            return Err(Error::Nak(format!(
                "the server moved the binding from {} to {}",
                lease.addr.addr, new.addr.addr
            )));
        }
        new.gateway = lease.gateway;
        log::info!("{}: DHCPv6 Reply ({verb}) of {}, valid {}s", self.id.who, new.addr.addr, new.addr.valid);
        Ok(new)
    }

    /// Release, retransmitted until the server's Reply (for at most
    /// RELEASE_LIMIT: DEL waits for it).
    pub fn release(&self, lease: &Lease6) -> Result<(), Error> {
        let xid = crate::util::hash::random_u32();
        let build = |elapsed| {
            let mut m = self.message(MessageType::Release, xid, elapsed);
            m.push(opt::SERVER_ID, lease.server_id.clone());
            m.push(opt::IA_NA, self.ia_na(Some(lease.addr.addr)));
            m
        };
        log::info!("{}: DHCPv6 Release of {}", self.id.who, lease.addr.addr);
        let deadline = Instant::now() + RELEASE_LIMIT;
        self.exchange(build, &RELEASE, deadline, |r| {
            r.filter(|m| m.message_type() == Some(MessageType::Reply)).map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(t1: u32, t2: u32, preferred: u32, valid: u32) -> Lease6 {
        let addr = IaAddr { addr: Ipv6Addr::LOCALHOST, preferred, valid, status: None };
        let ia = IaNa { iaid: 1, t1, t2, addrs: vec![addr.clone()], status: None };
        Lease6::new(&Message::new(MessageType::Reply, 1), &ia, &addr)
    }

    #[test]
    fn lease_times() {
        let l = lease(60, 96, 120, 120);
        assert_eq!(l.renew_at() - l.obtained, Duration::from_secs(60));
        assert_eq!(l.rebind_at() - l.obtained, Duration::from_secs(96));
        assert_eq!(l.expires_at() - l.obtained, Duration::from_secs(120));
        // T1 and T2 of 0 leave them to the client: 0.5 and 0.8 of preferred.
        let l = lease(0, 0, 100, 200);
        assert_eq!(l.renew_at() - l.obtained, Duration::from_secs(50));
        assert_eq!(l.rebind_at() - l.obtained, Duration::from_secs(80));
        // T2 never before T1; neither past the valid lifetime; infinity stays far.
        let l = lease(90, 30, 200, 60);
        assert_eq!(l.renew_at(), l.rebind_at());
        assert_eq!(l.renew_at() - l.obtained, Duration::from_secs(60));
        let l = lease(packet6::INFINITY, packet6::INFINITY, packet6::INFINITY, packet6::INFINITY);
        assert!(l.renew_at() - l.obtained > Duration::from_secs(365 * 86400));
    }

    #[test]
    fn retransmission_timeouts() {
        for _ in 0..200 {
            let first = next_timeout(&SOLICIT, None, true);
            assert!(first > SOLICIT.irt && first <= SOLICIT.irt.mul_f64(1.1), "{first:?}");
            let first = next_timeout(&REQUEST, None, false);
            assert!(first >= REQUEST.irt.mul_f64(0.9) && first <= REQUEST.irt.mul_f64(1.1), "{first:?}");
            let next = next_timeout(&REQUEST, Some(Duration::from_secs(4)), false);
            assert!(next >= Duration::from_millis(7600) && next <= Duration::from_millis(8400), "{next:?}");
            let capped = next_timeout(&REQUEST, Some(Duration::from_secs(20)), false);
            assert!(capped >= Duration::from_secs(27) && capped <= Duration::from_secs(33), "{capped:?}");
        }
    }
}
