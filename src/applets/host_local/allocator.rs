//! Picking addresses from range sets, against any `Store` (the disk store
//! in production, an in-memory one in the unit tests). Callers hold the
//! store's lock for the whole operation.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;

use super::config::{from_u128, to_u128, RangeSet};
use crate::cni::gc::Attachment;
use crate::cni::{CniError, IpConfig};

/// Who holds a reservation: the content of a reservation file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub container_id: String,
    /// None for files written by old reference versions, which stored the ID only.
    pub ifname: Option<String>,
}

impl Owner {
    pub fn new(container_id: &str, ifname: &str) -> Owner {
        Owner { container_id: container_id.trim().to_string(), ifname: Some(ifname.to_string()) }
    }

    /// Reads `<containerID>\r\n<ifname>` (or a bare container ID).
    pub fn parse(content: &str) -> Owner {
        let content = content.trim();
        match content.split_once("\r\n") {
            Some((id, ifname)) => Owner { container_id: id.to_string(), ifname: Some(ifname.to_string()) },
            None => Owner { container_id: content.to_string(), ifname: None },
        }
    }

    /// The file content, byte for byte as the reference writes it.
    pub fn file_content(&self) -> String {
        match &self.ifname {
            Some(ifname) => format!("{}\r\n{ifname}", self.container_id),
            None => self.container_id.clone(),
        }
    }

    fn is_exactly(&self, id: &str, ifname: &str) -> bool {
        self.container_id == id.trim() && self.ifname.as_deref() == Some(ifname)
    }

    fn is_legacy_of(&self, id: &str) -> bool {
        self.ifname.is_none() && self.container_id == id.trim()
    }

    /// True for the attachment's own files and for legacy files of its container.
    pub fn matches(&self, id: &str, ifname: &str) -> bool {
        self.is_exactly(id, ifname) || self.is_legacy_of(id)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub ip: IpAddr,
    pub owner: Owner,
}

/// Where reservations live. One reservation per IP; creating one never
/// overwrites another.
pub trait Store {
    /// Every reservation. The owners may come from a cache (see store.rs):
    /// act on one only after `confirm`.
    fn reservations(&self) -> Result<Vec<Reservation>, CniError>;
    /// Whether `r`'s reservation is, right now, held by the owner `r` names.
    fn confirm(&self, r: &Reservation) -> bool;
    /// Reserves `ip` for `owner` and records it as the last IP handed out
    /// from range set `set`. Ok(false) when the IP is already reserved.
    fn reserve(&mut self, ip: IpAddr, owner: &Owner, set: usize) -> Result<bool, CniError>;
    /// Removes the reservation of `ip` (fine when there is none).
    fn release(&mut self, ip: IpAddr) -> Result<(), CniError>;
    /// The last IP handed out from range set `set`, if known.
    fn last_reserved(&self, set: usize) -> Option<IpAddr>;
}

/// Every address of `set` in allocation order, each once: round robin from
/// the one after `last` (when `last` is in the set), else from the start of
/// the first range. Gateways are skipped.
pub fn candidates(set: &RangeSet, last: Option<IpAddr>) -> impl Iterator<Item = (usize, IpAddr)> + '_ {
    let ranges = &set.0;
    let step = move |(i, n): (usize, u128)| -> (usize, u128) {
        if n == to_u128(ranges[i].end) {
            let next = (i + 1) % ranges.len();
            (next, to_u128(ranges[next].start))
        } else {
            (i, n + 1)
        }
    };
    let first = match last.and_then(|ip| ranges.iter().position(|r| r.contains(ip)).map(|i| (i, ip))) {
        Some((i, ip)) => step((i, to_u128(ip))),
        None => (0, to_u128(ranges[0].start)),
    };
    std::iter::successors(Some(first), move |&pos| Some(step(pos)).filter(|&next| next != first))
        .map(move |(i, n)| (i, from_u128(n, ranges[i].start)))
        .filter(move |&(i, ip)| ip != ranges[i].gateway)
}

/// How many addresses of `set` are still free.
pub fn free_in_set(set: &RangeSet, reservations: &[Reservation]) -> u128 {
    free_given(set, reservations.iter().map(|r| r.ip))
}

/// How many addresses of `set` are not among `reserved`.
fn free_given(set: &RangeSet, reserved: impl Iterator<Item = IpAddr>) -> u128 {
    let size = set.0.iter().fold(0u128, |sum, r| sum.saturating_add(r.size()));
    let used = reserved.filter(|&ip| set.range_for(ip).is_some_and(|r| r.gateway != ip)).count() as u128;
    size.saturating_sub(used)
}

fn join_ips(ips: &[IpAddr]) -> String {
    ips.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(" ")
}

/// Reserves one address in each range set for (id, ifname): the requested
/// one where a requested IP falls in the set, the next free one otherwise.
/// All or nothing: on failure, what this call reserved is released.
pub fn allocate(
    store: &mut impl Store,
    sets: &[RangeSet],
    id: &str,
    ifname: &str,
    requested: &[IpAddr],
) -> Result<Vec<IpConfig>, CniError> {
    let existing = store.reservations()?;

    // The spec forbids a second ADD for the same attachment.
    for set in sets {
        let held_here = |r: &&Reservation| r.owner.matches(id, ifname) && set.contains(r.ip);
        if let Some(held) = existing.iter().filter(held_here).find(|r| store.confirm(r)) {
            return Err(CniError::internal(format!(
                "{} has been allocated to {id}, duplicate allocation is not allowed",
                held.ip
            ))
            .with_details(format!("interface {ifname} already holds {} in range set {set}; DEL it first", held.ip)));
        }
    }

    // Match requested IPs to range sets before reserving anything.
    let mut wanted: Vec<Option<IpAddr>> = vec![None; sets.len()];
    let mut unplaced = Vec::new();
    for &ip in requested {
        match sets.iter().enumerate().position(|(i, s)| wanted[i].is_none() && s.contains(ip)) {
            Some(i) => wanted[i] = Some(ip),
            None => unplaced.push(ip),
        }
    }
    if !unplaced.is_empty() {
        return Err(CniError::internal(format!("failed to allocate all requested IPs: {}", join_ips(&unplaced))));
    }

    let owner = Owner::new(id, ifname);
    let mut taken: HashSet<IpAddr> = existing.iter().map(|r| r.ip).collect();
    let mut result = Vec::with_capacity(sets.len());
    let mut reserved_now = Vec::with_capacity(sets.len());
    for (idx, set) in sets.iter().enumerate() {
        let reserved = allocate_in_set(store, set, idx, &owner, wanted[idx], &taken).and_then(|ip_config| {
            reserved_now.push(ip_config.address.addr());
            crate::cni::fault::step("host-local: range set reserved").map(|_| ip_config)
        });
        match reserved {
            Ok(ip_config) => {
                taken.insert(ip_config.address.addr());
                result.push(ip_config);
            }
            Err(e) => {
                for ip in reserved_now {
                    if let Err(release_error) = store.release(ip) {
                        log::warn!("releasing {ip} after a failed allocation: {release_error}");
                    }
                }
                return Err(CniError { msg: format!("failed to allocate for range {idx}: {}", e.msg), ..e });
            }
        }
    }
    Ok(result)
}

fn allocate_in_set(
    store: &mut impl Store,
    set: &RangeSet,
    idx: usize,
    owner: &Owner,
    wanted: Option<IpAddr>,
    taken: &HashSet<IpAddr>,
) -> Result<IpConfig, CniError> {
    let ip_config = |ip: IpAddr, range: usize| {
        let r = &set.0[range];
        IpConfig {
            address: IpNet::new(ip, r.subnet.prefix_len()).expect("prefix of the subnet"),
            gateway: Some(r.gateway),
            interface: None,
        }
    };
    if let Some(ip) = wanted {
        let range = set.0.iter().position(|r| r.contains(ip)).expect("placed in this set");
        if ip == set.0[range].gateway {
            return Err(CniError::internal(format!("requested ip {ip} is subnet's gateway")));
        }
        if taken.contains(&ip) || !store.reserve(ip, owner, idx)? {
            return Err(CniError::internal(format!("requested IP address {ip} is not available in range set {set}")));
        }
        return Ok(ip_config(ip, range));
    }
    let exhausted = || CniError::internal(format!("no IP addresses available in range set: {set}"));
    // Walking a large full range only to find nothing is slow: count first.
    if free_given(set, taken.iter().copied()) == 0 {
        return Err(exhausted());
    }
    for (range, ip) in candidates(set, store.last_reserved(idx)) {
        if taken.contains(&ip) {
            continue;
        }
        // false: a file we could not read holds it; skip it as the reference would.
        if store.reserve(ip, owner, idx)? {
            return Ok(ip_config(ip, range));
        }
    }
    Err(exhausted())
}

/// Releases every address of (id, ifname). Files of old reference versions
/// (container ID only) are released when the attachment has no file of its own.
pub fn release(store: &mut impl Store, id: &str, ifname: &str) -> Result<Vec<IpAddr>, CniError> {
    let all = store.reservations()?;
    let pick = |want: &dyn Fn(&Owner) -> bool| -> Vec<IpAddr> {
        all.iter().filter(|r| want(&r.owner) && store.confirm(r)).map(|r| r.ip).collect()
    };
    let mut mine = pick(&|o| o.is_exactly(id, ifname));
    if mine.is_empty() {
        mine = pick(&|o| o.is_legacy_of(id));
    }
    release_all(store, &mine)?;
    Ok(mine)
}

/// Releases `ips`, keeping on past errors and reporting them together.
fn release_all(store: &mut impl Store, ips: &[IpAddr]) -> Result<(), CniError> {
    let errors: Vec<String> =
        ips.iter().filter_map(|&ip| store.release(ip).err().map(|e| format!("{ip}: {e}"))).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::io("failed to release reservations").with_details(errors.join("; ")))
    }
}

/// The addresses (id, ifname) holds.
pub fn held_by(store: &impl Store, id: &str, ifname: &str) -> Result<Vec<IpAddr>, CniError> {
    let all = store.reservations()?;
    Ok(all.iter().filter(|r| r.owner.matches(id, ifname) && store.confirm(r)).map(|r| r.ip).collect())
}

/// Releases every reservation whose attachment is not in `valid`
/// (container ID, ifname). Legacy files stay while their container has a
/// valid attachment.
pub fn gc(store: &mut impl Store, valid: &[Attachment]) -> Result<Vec<IpAddr>, CniError> {
    let all = store.reservations()?;
    let stale: Vec<IpAddr> = all
        .iter()
        .filter(|r| !valid.iter().any(|a| r.owner.matches(&a.container_id, &a.ifname)) && store.confirm(r))
        .map(|r| r.ip)
        .collect();
    release_all(store, &stale)?;
    Ok(stale)
}

#[cfg(test)]
pub mod tests {
    use super::super::config::{resolve_set, RawRange};
    use super::*;
    use std::collections::{BTreeMap, HashMap};

    /// The store of the unit tests.
    #[derive(Default)]
    pub struct MemoryStore {
        pub ips: BTreeMap<IpAddr, Owner>,
        pub last: HashMap<usize, IpAddr>,
        /// Makes `reserve` fail once this many more reservations are made.
        pub fail_after: Option<usize>,
    }

    impl Store for MemoryStore {
        fn reservations(&self) -> Result<Vec<Reservation>, CniError> {
            Ok(self.ips.iter().map(|(ip, owner)| Reservation { ip: *ip, owner: owner.clone() }).collect())
        }
        fn reserve(&mut self, ip: IpAddr, owner: &Owner, set: usize) -> Result<bool, CniError> {
            if let Some(n) = self.fail_after.as_mut() {
                if *n == 0 {
                    return Err(CniError::io("disk full"));
                }
                *n -= 1;
            }
            if self.ips.contains_key(&ip) {
                return Ok(false);
            }
            self.ips.insert(ip, owner.clone());
            self.last.insert(set, ip);
            Ok(true)
        }
        fn release(&mut self, ip: IpAddr) -> Result<(), CniError> {
            self.ips.remove(&ip);
            Ok(())
        }
        fn confirm(&self, r: &Reservation) -> bool {
            self.ips.get(&r.ip) == Some(&r.owner)
        }
        fn last_reserved(&self, set: usize) -> Option<IpAddr> {
            self.last.get(&set).copied()
        }
    }

    fn range(subnet: &str, start: &str, end: &str, gateway: &str) -> RawRange {
        RawRange { subnet: subnet.into(), range_start: start.into(), range_end: end.into(), gateway: gateway.into() }
    }

    fn set(ranges: &[RawRange]) -> RangeSet {
        resolve_set(ranges).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn alloc(store: &mut MemoryStore, sets: &[RangeSet], id: &str) -> Result<Vec<String>, CniError> {
        allocate(store, sets, id, "eth0", &[]).map(|v| v.iter().map(|c| c.address.to_string()).collect())
    }

    #[test]
    fn owner_file_format() {
        let o = Owner::new("abc", "eth0");
        assert_eq!(o.file_content(), "abc\r\neth0");
        assert_eq!(Owner::parse("abc\r\neth0\n"), o);
        let legacy = Owner::parse(" abc \n");
        assert_eq!(legacy, Owner { container_id: "abc".into(), ifname: None });
        assert!(legacy.matches("abc", "eth1"));
        assert!(!o.matches("abc", "eth1"));
    }

    #[test]
    fn skips_the_gateway_and_goes_round_robin() {
        let sets = [set(&[range("10.0.0.0/29", "", "", "")])];
        let mut store = MemoryStore::default();
        let got: Vec<String> = (0..5).map(|i| alloc(&mut store, &sets, &format!("c{i}")).unwrap()[0].clone()).collect();
        assert_eq!(got, ["10.0.0.2/29", "10.0.0.3/29", "10.0.0.4/29", "10.0.0.5/29", "10.0.0.6/29"]);
        let e = alloc(&mut store, &sets, "c5").unwrap_err();
        assert_eq!(e.msg, "failed to allocate for range 0: no IP addresses available in range set: 10.0.0.1-10.0.0.6");
        // A released address is handed out again, after the last one given.
        release(&mut store, "c1", "eth0").unwrap();
        release(&mut store, "c3", "eth0").unwrap();
        assert_eq!(alloc(&mut store, &sets, "c6").unwrap(), ["10.0.0.3/29"]);
        assert_eq!(alloc(&mut store, &sets, "c7").unwrap(), ["10.0.0.5/29"]);
        assert_eq!(store.last_reserved(0), Some(ip("10.0.0.5")));
    }

    #[test]
    fn round_robin_continues_after_the_last_reserved_ip() {
        let sets = [set(&[range("10.0.0.0/24", "", "", "")])];
        let mut store = MemoryStore::default();
        store.last.insert(0, ip("10.0.0.100"));
        assert_eq!(alloc(&mut store, &sets, "a").unwrap(), ["10.0.0.101/24"]);
        // From the end of the range back to its start.
        store.last.insert(0, ip("10.0.0.254"));
        assert_eq!(alloc(&mut store, &sets, "b").unwrap(), ["10.0.0.2/24"]);
        // A last IP outside the set (ranges changed) starts from the beginning.
        store.last.insert(0, ip("192.168.0.1"));
        assert_eq!(alloc(&mut store, &sets, "c").unwrap(), ["10.0.0.3/24"]);
    }

    #[test]
    fn gateway_inside_the_range_and_custom_gateway() {
        let sets = [set(&[range("10.0.0.0/24", "10.0.0.1", "10.0.0.4", "10.0.0.3")])];
        let mut store = MemoryStore::default();
        let got: Vec<String> = (0..3).map(|i| alloc(&mut store, &sets, &format!("c{i}")).unwrap()[0].clone()).collect();
        assert_eq!(got, ["10.0.0.1/24", "10.0.0.2/24", "10.0.0.4/24"]);
        let r = allocate(&mut MemoryStore::default(), &sets, "x", "eth0", &[]).unwrap();
        assert_eq!(r[0].gateway, Some(ip("10.0.0.3")));
    }

    #[test]
    fn several_ranges_in_a_set() {
        let sets = [set(&[range("10.0.0.0/30", "", "", ""), range("10.0.1.0/30", "", "", "")])];
        let mut store = MemoryStore::default();
        assert_eq!(alloc(&mut store, &sets, "a").unwrap(), ["10.0.0.2/30"]);
        let second = allocate(&mut store, &sets, "b", "eth0", &[]).unwrap();
        assert_eq!(second[0].address.to_string(), "10.0.1.2/30");
        assert_eq!(second[0].gateway, Some(ip("10.0.1.1")));
        assert!(alloc(&mut store, &sets, "c").is_err());
        assert_eq!(free_in_set(&sets[0], &store.reservations().unwrap()), 0);
    }

    #[test]
    fn dual_stack_one_address_per_set() {
        let sets = [set(&[range("10.0.0.0/24", "", "", "")]), set(&[range("fd00:1::/64", "", "", "")])];
        let mut store = MemoryStore::default();
        assert_eq!(alloc(&mut store, &sets, "a").unwrap(), ["10.0.0.2/24", "fd00:1::2/64"]);
        assert_eq!(alloc(&mut store, &sets, "b").unwrap(), ["10.0.0.3/24", "fd00:1::3/64"]);
        assert_eq!(store.last_reserved(1), Some(ip("fd00:1::3")));
        assert_eq!(held_by(&store, "a", "eth0").unwrap(), [ip("10.0.0.2"), ip("fd00:1::2")]);
    }

    #[test]
    fn ipv6_range_ends_at_the_last_address() {
        let sets = [set(&[range("fd00::/126", "", "", "")])];
        let mut store = MemoryStore::default();
        assert_eq!(alloc(&mut store, &sets, "a").unwrap(), ["fd00::2/126"]);
        assert_eq!(alloc(&mut store, &sets, "b").unwrap(), ["fd00::3/126"]);
        assert!(alloc(&mut store, &sets, "c").is_err());
        // Huge ranges are walked lazily.
        let big = [set(&[range("fd00::/64", "", "", "")])];
        let mut store = MemoryStore::default();
        store.last.insert(0, ip("fd00::ffff:ffff:ffff:ffff"));
        assert_eq!(alloc(&mut store, &big, "a").unwrap(), ["fd00::2/64"]);
        assert_eq!(free_in_set(&big[0], &store.reservations().unwrap()), (1u128 << 64) - 3);
    }

    #[test]
    fn requested_ips() {
        let sets = [set(&[range("10.0.0.0/24", "", "", "")]), set(&[range("fd00::/64", "", "", "")])];
        let mut store = MemoryStore::default();
        let r = allocate(&mut store, &sets, "a", "eth0", &[ip("fd00::77"), ip("10.0.0.77")]).unwrap();
        assert_eq!(r[0].address.to_string(), "10.0.0.77/24");
        assert_eq!(r[1].address.to_string(), "fd00::77/64");
        // Only one family requested: the other set allocates normally.
        let r = allocate(&mut store, &sets, "b", "eth0", &[ip("10.0.0.78")]).unwrap();
        assert_eq!(r[1].address.to_string(), "fd00::78/64");

        let e = allocate(&mut store, &sets, "c", "eth0", &[ip("10.0.0.77")]).unwrap_err();
        assert_eq!(
            e.msg,
            "failed to allocate for range 0: requested IP address 10.0.0.77 is not available in range set 10.0.0.1-10.0.0.254"
        );
        let e = allocate(&mut store, &sets, "c", "eth0", &[ip("10.0.0.1")]).unwrap_err();
        assert_eq!(e.msg, "failed to allocate for range 0: requested ip 10.0.0.1 is subnet's gateway");
        let e = allocate(&mut store, &sets, "c", "eth0", &[ip("192.168.1.1")]).unwrap_err();
        assert_eq!(e.msg, "failed to allocate all requested IPs: 192.168.1.1");
        let e = allocate(&mut store, &sets, "c", "eth0", &[ip("10.0.0.5"), ip("10.0.0.6")]).unwrap_err();
        assert_eq!(e.msg, "failed to allocate all requested IPs: 10.0.0.6");
        // Failures leave nothing behind.
        assert!(held_by(&store, "c", "eth0").unwrap().is_empty());
    }

    #[test]
    fn a_second_add_is_refused() {
        let sets = [set(&[range("10.0.0.0/24", "", "", "")])];
        let mut store = MemoryStore::default();
        alloc(&mut store, &sets, "a").unwrap();
        let e = alloc(&mut store, &sets, "a").unwrap_err();
        assert_eq!(e.msg, "10.0.0.2 has been allocated to a, duplicate allocation is not allowed");
        // The same container on another interface is a different attachment.
        allocate(&mut store, &sets, "a", "eth1", &[]).unwrap();
        assert!(allocate(&mut store, &sets, "a", "eth0", &[ip("10.0.0.50")]).is_err());
    }

    #[test]
    fn failure_in_a_later_set_releases_the_earlier_ones() {
        let sets = [set(&[range("10.0.0.0/24", "", "", "")]), set(&[range("10.1.0.0/30", "", "", "")])];
        let mut store = MemoryStore::default();
        alloc(&mut store, &sets, "a").unwrap();
        assert!(alloc(&mut store, &sets, "b").is_err());
        assert_eq!(store.ips.len(), 2);
        // An I/O error in the middle rolls back too.
        let mut store = MemoryStore { fail_after: Some(1), ..Default::default() };
        assert_eq!(alloc(&mut store, &sets, "a").unwrap_err().code, 5);
        assert!(store.ips.is_empty());
    }

    #[test]
    fn release_and_legacy_files() {
        let sets = [set(&[range("10.0.0.0/24", "", "", "")])];
        let mut store = MemoryStore::default();
        alloc(&mut store, &sets, "a").unwrap();
        store.ips.insert(ip("10.0.0.100"), Owner::parse("old"));
        // The old-style file blocks its container and stays out of reach of others.
        assert!(alloc(&mut store, &sets, "old").is_err());
        assert!(release(&mut store, "b", "eth0").unwrap().is_empty());
        assert_eq!(release(&mut store, "old", "eth0").unwrap(), [ip("10.0.0.100")]);
        assert_eq!(release(&mut store, "a", "eth0").unwrap(), [ip("10.0.0.2")]);
        assert!(release(&mut store, "a", "eth0").unwrap().is_empty());
        assert!(store.ips.is_empty());
    }

    #[test]
    fn gc_keeps_valid_attachments_only() {
        let sets = [set(&[range("10.0.0.0/24", "", "", "")])];
        let mut store = MemoryStore::default();
        for id in ["a", "b", "c"] {
            alloc(&mut store, &sets, id).unwrap();
        }
        allocate(&mut store, &sets, "a", "eth1", &[]).unwrap();
        store.ips.insert(ip("10.0.0.100"), Owner::parse("b"));
        store.ips.insert(ip("10.0.0.101"), Owner::parse("z"));
        let valid = ["a", "b"].map(|id| Attachment { container_id: id.to_string(), ifname: "eth0".to_string() });
        let mut removed = gc(&mut store, &valid).unwrap();
        removed.sort();
        assert_eq!(removed, [ip("10.0.0.4"), ip("10.0.0.5"), ip("10.0.0.101")]);
        let left: Vec<IpAddr> = store.ips.keys().copied().collect();
        assert_eq!(left, [ip("10.0.0.2"), ip("10.0.0.3"), ip("10.0.0.100")]);
        assert_eq!(gc(&mut store, &[]).unwrap().len(), 3);
    }

    #[test]
    fn a_full_large_range_fails_without_walking_it() {
        let sets = [set(&[range("10.0.0.0/16", "", "", "")])];
        let mut store = MemoryStore::default();
        for n in 2..=65534u32 {
            store.ips.insert(IpAddr::V4((0x0a00_0000 + n).into()), Owner::new("x", "eth0"));
        }
        assert_eq!(free_in_set(&sets[0], &store.reservations().unwrap()), 0);
        assert!(alloc(&mut store, &sets, "y").unwrap_err().msg.contains("no IP addresses available"));
        store.ips.remove(&ip("10.0.200.7"));
        assert_eq!(alloc(&mut store, &sets, "y").unwrap(), ["10.0.200.7/16"]);
    }

    #[test]
    fn candidates_visit_every_address_once() {
        let s = set(&[range("10.0.0.0/29", "", "", ""), range("10.0.1.0/29", "10.0.1.4", "", "10.0.1.5")]);
        let all: Vec<String> = candidates(&s, Some(ip("10.0.0.4"))).map(|(_, ip)| ip.to_string()).collect();
        assert_eq!(all, ["10.0.0.5", "10.0.0.6", "10.0.1.4", "10.0.1.6", "10.0.0.2", "10.0.0.3", "10.0.0.4"]);
        assert_eq!(free_in_set(&s, &[]), 7);
    }
}
