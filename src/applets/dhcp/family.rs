//! The lease families an attachment may hold (`ipam.families`): a DHCPv4
//! lease, a DHCPv6 IA_NA binding, or both. Each is a `Family` to the
//! daemon, whose one maintenance loop (renew at T1, rebind at T2, lose at
//! expiry, release when stopped) drives either, and records each in the
//! state directory as the family's `StoredLease` (state.rs).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use ipnet::{IpNet, Ipv6Net};

use super::client::{self, Client, Error, Identity, Lease, Timing};
use super::client6::{self, Client6, Identity6, Lease6};
use super::state::{self, StoredLease, StoredLease4, StoredLease6};
use crate::cni::{CniError, CniResult, Dns, IpConfig};

/// A value of `ipam.families`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ipv4,
    Ipv6,
}

/// `ipam.families` as configured: `["ipv4"]` when absent, each family
/// once, not empty. (Strings in the config, so a wrong one is an invalid
/// config that says what is allowed.)
pub fn kinds(configured: &Option<Vec<String>>) -> Result<Vec<Kind>, CniError> {
    let Some(names) = configured else { return Ok(vec![Kind::Ipv4]) };
    if names.is_empty() {
        return Err(CniError::invalid_config("ipam.families is empty: give \"ipv4\", \"ipv6\" or both"));
    }
    let mut kinds = Vec::new();
    for name in names {
        let kind = match name.as_str() {
            "ipv4" => Kind::Ipv4,
            "ipv6" => Kind::Ipv6,
            other => {
                return Err(CniError::invalid_config(format!(
                    "unknown family {other:?} in ipam.families (\"ipv4\" or \"ipv6\")"
                )))
            }
        };
        if kinds.contains(&kind) {
            return Err(CniError::invalid_config(format!("ipam.families names {name:?} twice")));
        }
        kinds.push(kind);
    }
    Ok(kinds)
}

/// What the daemon's maintenance needs of a family.
pub trait Family: Send + Sync + 'static {
    type Lease: Clone + Send + 'static;
    /// "DHCPv4" or "DHCPv6", for logs.
    fn name(&self) -> &'static str;
    /// The family of its records ("ipv4", "ipv6": `StoredLease::family`).
    const RECORD: &'static str;
    /// The lease as its record stores it (`now` and `now_mono` are the
    /// same moment on the wall and monotonic clocks). Resuming turns it back
    /// with `StoredLease4::lease` or `StoredLease6::lease`.
    fn stored(&self, lease: &Self::Lease, now: SystemTime, now_mono: Instant) -> StoredLease;
    fn acquire(&self, stop: &AtomicBool) -> Result<Self::Lease, Error>;
    /// Renews (or, `rebinding`, rebinds) until `deadline`.
    fn extend(
        &self,
        lease: &Self::Lease,
        rebinding: bool,
        deadline: Instant,
        stop: &AtomicBool,
    ) -> Result<Self::Lease, Error>;
    fn release(&self, lease: &Self::Lease) -> Result<(), Error>;
    /// Stops the container using a lease that was lost.
    fn withdraw(&self, lease: &Self::Lease) -> Result<(), Error>;
    fn result(&self, lease: &Self::Lease) -> Result<CniResult, CniError>;
    /// T1, T2 and the end of the lease.
    fn times(lease: &Self::Lease) -> [Instant; 3];
    /// The address and how long it is granted for, for logs.
    fn describe(lease: &Self::Lease) -> String;
}

/// DHCPv4 (client.rs).
pub struct V4 {
    pub id: Identity,
    pub timing: Timing,
}

impl Family for V4 {
    type Lease = Lease;
    const RECORD: &'static str = state::IPV4;

    fn name(&self) -> &'static str {
        "DHCPv4"
    }
    fn stored(&self, lease: &Lease, now: SystemTime, now_mono: Instant) -> StoredLease {
        StoredLease::V4(StoredLease4::new(lease, now, now_mono))
    }
    fn acquire(&self, stop: &AtomicBool) -> Result<Lease, Error> {
        Client::open(&self.id, &self.timing, stop)?.acquire()
    }
    fn extend(&self, lease: &Lease, rebinding: bool, deadline: Instant, stop: &AtomicBool) -> Result<Lease, Error> {
        Client::open(&self.id, &self.timing, stop)?.extend(lease, rebinding, deadline)
    }
    fn release(&self, lease: &Lease) -> Result<(), Error> {
        Client::open(&self.id, &self.timing, &AtomicBool::new(false))?.release(lease)
    }
    /// The whole link goes down, as it did before DHCPv6 existed here.
    fn withdraw(&self, _: &Lease) -> Result<(), Error> {
        client::set_link_down(&self.id.netns, &self.id.ifname)
    }
    fn result(&self, lease: &Lease) -> Result<CniResult, CniError> {
        super::lease_result(lease)
    }
    fn times(lease: &Lease) -> [Instant; 3] {
        [lease.renew_at(), lease.rebind_at(), lease.expires_at()]
    }
    fn describe(lease: &Lease) -> String {
        format!("{}, expires in {:?}", lease.addr(), lease.lease_time())
    }
}

/// What DHCPv6 needs from the daemon besides the attachment.
pub struct V6Settings {
    /// Where the node's DUID lives (duid.rs).
    pub state_dir: PathBuf,
    /// The longest ADD waits for a router advertisement's default route.
    pub ra_timeout: Duration,
    duid: Mutex<Option<Vec<u8>>>,
}

impl V6Settings {
    pub fn new(state_dir: PathBuf, ra_timeout: Duration) -> V6Settings {
        V6Settings { state_dir, ra_timeout, duid: Mutex::new(None) }
    }

    /// The node's DUID, read (or made) on the first DHCPv6 ADD.
    pub fn duid(&self) -> Result<Vec<u8>, CniError> {
        let mut cached = self.duid.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = cached.as_ref() {
            return Ok(d.clone());
        }
        let duid =
            super::duid::load_or_create(&self.state_dir).map_err(|e| CniError::io("no DHCPv6 DUID").with_details(e))?;
        *cached = Some(duid.clone());
        Ok(duid)
    }
}

/// DHCPv6 IA_NA (client6.rs).
pub struct V6 {
    pub id: Identity6,
    pub timing: Timing,
    pub ra_timeout: Duration,
}

impl Family for V6 {
    type Lease = Lease6;
    const RECORD: &'static str = state::IPV6;

    fn name(&self) -> &'static str {
        "DHCPv6"
    }
    fn stored(&self, lease: &Lease6, now: SystemTime, now_mono: Instant) -> StoredLease {
        StoredLease::V6(StoredLease6::new(lease, &self.id.duid, self.id.iaid, now, now_mono))
    }

    /// The binding, then the RA's router (waited for a bounded time: an
    /// address without it is still an address).
    fn acquire(&self, stop: &AtomicBool) -> Result<Lease6, Error> {
        let start = Instant::now();
        let deadline = start + self.timing.resend_timeout;
        let mut lease = Client6::open(&self.id, &self.timing, stop, deadline)?.acquire(deadline)?;
        let ra_deadline = (start + self.ra_timeout).min(deadline);
        lease.gateway = client6::wait_ra_router(&self.id.netns, &self.id.ifname, ra_deadline)?;
        match lease.gateway {
            Some(gw) => log::info!("{}: default router {gw} (from an RA) after {:?}", self.id.who, start.elapsed()),
            None => log::warn!(
                "{}: no router advertisement within {:?}: {} has no on-link prefix or default route until one comes",
                self.id.who,
                self.ra_timeout,
                lease.addr.addr
            ),
        }
        Ok(lease)
    }
    fn extend(&self, lease: &Lease6, rebinding: bool, deadline: Instant, stop: &AtomicBool) -> Result<Lease6, Error> {
        Client6::open(&self.id, &self.timing, stop, deadline)?.extend(lease, rebinding, deadline)
    }
    fn release(&self, lease: &Lease6) -> Result<(), Error> {
        let never = AtomicBool::new(false);
        let deadline = Instant::now() + self.timing.timeout;
        Client6::open(&self.id, &self.timing, &never, deadline)?.release(lease)
    }
    /// Only the address goes: the link may still carry a DHCPv4 lease.
    fn withdraw(&self, lease: &Lease6) -> Result<(), Error> {
        client6::remove_address(&self.id.netns, &self.id.ifname, lease.addr.addr)
    }
    fn result(&self, lease: &Lease6) -> Result<CniResult, CniError> {
        Ok(lease6_result(lease))
    }
    fn times(lease: &Lease6) -> [Instant; 3] {
        [lease.renew_at(), lease.rebind_at(), lease.expires_at()]
    }
    fn describe(lease: &Lease6) -> String {
        format!("{}, valid for {:?}", lease.addr.addr, lease.lifetime())
    }
}

/// The CNI result of a DHCPv6 binding: the address as a /128 (DHCPv6 says
/// nothing of prefixes), the RA's router as gateway, DNS from options 23
/// and 24. No routes: the kernel installs the RA's itself.
pub fn lease6_result(lease: &Lease6) -> CniResult {
    let address = IpNet::V6(Ipv6Net::new(lease.addr.addr, 128).unwrap_or_default());
    CniResult {
        ips: vec![IpConfig { address, gateway: lease.gateway.map(IpAddr::V6), interface: None }],
        dns: Dns {
            nameservers: lease.reply.dns_servers().iter().map(|a| a.to_string()).collect(),
            search: lease.reply.domain_list(),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// One result of an attachment's leases, in the order of `families`:
/// addresses and routes of each, DNS servers and search domains of all
/// (each once), the first domain.
pub fn merge(results: Vec<CniResult>) -> CniResult {
    let mut out = CniResult::default();
    for r in results {
        out.ips.extend(r.ips);
        out.routes.extend(r.routes);
        for ns in r.dns.nameservers {
            if !out.dns.nameservers.contains(&ns) {
                out.dns.nameservers.push(ns);
            }
        }
        for s in r.dns.search {
            if !out.dns.search.contains(&s) {
                out.dns.search.push(s);
            }
        }
        if out.dns.domain.is_empty() {
            out.dns.domain = r.dns.domain;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::packet6::{self, opt, IaAddr, IaNa, Message, MessageType};
    use super::*;

    #[test]
    fn families_as_configured() {
        let names = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(kinds(&None).unwrap(), [Kind::Ipv4]);
        assert_eq!(kinds(&names(&["ipv6"])).unwrap(), [Kind::Ipv6]);
        assert_eq!(kinds(&names(&["ipv6", "ipv4"])).unwrap(), [Kind::Ipv6, Kind::Ipv4]);
        for bad in [&[][..], &["ipv6", "ipv6"], &["IPv4"], &["inet6"]] {
            assert_eq!(kinds(&names(bad)).unwrap_err().code, 7, "{bad:?}");
        }
    }

    fn lease6() -> Lease6 {
        let mut reply = Message::new(MessageType::Reply, 5);
        reply.push(opt::SERVER_ID, vec![0, 1]);
        reply.push(opt::DNS_SERVERS, "fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets().to_vec());
        reply.push(opt::DOMAIN_LIST, super::super::packet::encode_search_list(&["lan.test", "v6.test"]));
        let addr = IaAddr { addr: "fd00::1:5".parse().unwrap(), preferred: 120, valid: 120, status: None };
        reply.push(opt::IA_NA, IaNa { iaid: 9, t1: 60, t2: 96, addrs: vec![addr.clone()], status: None }.encode());
        let reply = Message::decode(&reply.encode()).unwrap();
        let ia = reply.ia_na(9).unwrap();
        let mut lease = Lease6 {
            reply: reply.clone(),
            server_id: vec![0, 1],
            addr,
            t1: ia.t1,
            t2: ia.t2,
            obtained: Instant::now(),
            gateway: None,
        };
        assert_eq!(lease.reply.server_id(), Some(&[0, 1][..]));
        lease.gateway = Some("fe80::1".parse().unwrap());
        let _ = packet6::INFINITY;
        lease
    }

    #[test]
    fn v6_result_and_merge() {
        let r6 = lease6_result(&lease6());
        assert_eq!(r6.ips[0].address.to_string(), "fd00::1:5/128");
        assert_eq!(r6.ips[0].gateway.unwrap().to_string(), "fe80::1");
        assert!(r6.routes.is_empty());
        let r4 = CniResult {
            ips: vec![IpConfig { address: "10.0.0.5/24".parse().unwrap(), gateway: None, interface: None }],
            routes: vec![crate::cni::Route::new("0.0.0.0/0".parse().unwrap(), None)],
            dns: Dns {
                nameservers: vec!["10.0.0.1".into()],
                domain: "lan.test".into(),
                search: vec!["lan.test".into()],
                options: vec![],
            },
            ..Default::default()
        };
        let both = merge(vec![r4, r6]);
        assert_eq!(both.ips.len(), 2);
        assert_eq!(both.routes.len(), 1);
        assert_eq!(both.dns.nameservers, ["10.0.0.1", "fd00::1"]);
        assert_eq!(both.dns.search, ["lan.test", "v6.test"]);
        assert_eq!(both.dns.domain, "lan.test");
    }
}
