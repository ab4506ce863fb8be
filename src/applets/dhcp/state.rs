//! The daemon's leases on disk, so that they outlive the daemon (a crash,
//! an upgrade, `systemctl restart`): one JSON record per lease in the state
//! directory, replaced atomically on every change and removed when the
//! lease is released or lost.
//!
//! A record holds what resuming needs: the attachment as ADD gave it (its
//! identity and options are rebuilt from the configuration, as ADD builds
//! them) and the lease with wall-clock times (an `Instant` means nothing to
//! another process). It is versioned, and its lease is named by its family
//! (`"lease": {"ipv4": {...}}` or `{"ipv6": {...}}`): an attachment with a
//! DHCPv4 and a DHCPv6 lease has two records, each written by its own
//! lease's thread (`<key hash>.ipv4.json`, `<key hash>.ipv6.json`).
//!
//! The directory also holds the node's DHCPv6 DUID (duid.rs); a DHCPv6
//! record names the DUID and IAID its binding belongs to, so that it stays
//! the same binding whatever becomes of that file.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::client::{Identity, Lease};
use super::client6::{Identity6, Lease6};
use super::daemon::client_id;
use super::packet::Packet;
use super::packet6::Message;
use super::{prepare_options, Conf};
use crate::cni::args::CniArgs;
use crate::cni::CniError;
use crate::netlink::mac;
use crate::util::{atomic_file, base64, hash};

/// The daemon's -statedir unless told otherwise: lease records and the DUID.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cni/dhcp";
/// The record format this daemon writes and reads.
pub const RECORD_VERSION: u32 = 1;
const RECORD_SUFFIX: &str = ".json";
/// The families this daemon keeps leases of.
const FAMILIES: &[&str] = &[IPV4, IPV6];
pub const IPV4: &str = "ipv4";
pub const IPV6: &str = "ipv6";
/// What an unreadable record is renamed to (kept for a person to look at).
const CORRUPT_SUFFIX: &str = ".corrupt";

/// The attachment a lease belongs to, as ADD gave it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    pub container_id: String,
    /// The network's name (from `config`; kept apart for GC and people).
    pub network: String,
    pub ifname: String,
    /// The netns path the plugin gave (without the daemon's -hostprefix).
    pub netns: String,
    /// CNI_ARGS as given (for `provide` options with `fromArg`).
    pub args: String,
    /// The network configuration of ADD.
    pub config: Value,
}

impl Attachment {
    /// The attachment's key: also its DHCP client ID and its file's name.
    pub fn key(&self) -> String {
        client_id(&self.container_id, &self.network, &self.ifname)
    }

    /// Who the client is to the server: the same on every message of the
    /// lease, before and after a restart.
    pub fn identity(&self, host_prefix: &str) -> Result<Identity, CniError> {
        let conf: Conf = crate::cni::lenient::parse_config(&self.config, "network configuration")?;
        let args = CniArgs::parse(&self.args)?;
        let mut client_id = vec![0u8];
        client_id.extend_from_slice(self.key().as_bytes());
        Ok(Identity {
            netns: format!("{host_prefix}{}", self.netns),
            ifname: self.ifname.clone(),
            client_id,
            options: prepare_options(&args, &conf.ipam)?,
        })
    }

    /// Who the DHCPv6 client is: the node's DUID and the attachment's IAID
    /// (given: a resumed binding keeps the ones it was granted to).
    pub fn identity6(&self, host_prefix: &str, duid: Vec<u8>, iaid: u32) -> Identity6 {
        Identity6 {
            netns: format!("{host_prefix}{}", self.netns),
            ifname: self.ifname.clone(),
            duid,
            iaid,
            who: self.key(),
        }
    }
}

/// One lease's file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub version: u32,
    pub attachment: Attachment,
    pub lease: StoredLease,
}

impl Record {
    pub fn new(attachment: Attachment, lease: StoredLease) -> Record {
        Record { version: RECORD_VERSION, attachment, lease }
    }
}

/// A lease of some family: `{"ipv4": {...}}`, `{"ipv6": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StoredLease {
    #[serde(rename = "ipv4")]
    V4(StoredLease4),
    #[serde(rename = "ipv6")]
    V6(StoredLease6),
}

impl StoredLease {
    pub fn family(&self) -> &'static str {
        match self {
            StoredLease::V4(_) => IPV4,
            StoredLease::V6(_) => IPV6,
        }
    }

    /// The leased address, for logs.
    pub fn address(&self) -> std::net::IpAddr {
        match self {
            StoredLease::V4(s) => s.address.into(),
            StoredLease::V6(s) => s.address.into(),
        }
    }

    /// Whether the lease decodes (its times are not judged).
    fn check(&self) -> Result<(), String> {
        let (now, now_mono) = (SystemTime::now(), Instant::now());
        match self {
            StoredLease::V4(s) => s.lease(now, now_mono).map(drop),
            StoredLease::V6(s) => s.lease(now, now_mono).map(drop),
        }
    }
}

/// `obtained` (monotonic) as milliseconds since the Unix epoch (`now` and
/// `now_mono` are the same moment on both clocks).
fn to_unix_ms(obtained: Instant, now: SystemTime, now_mono: Instant) -> u64 {
    let age = now_mono.saturating_duration_since(obtained);
    let wall = now.checked_sub(age).unwrap_or(UNIX_EPOCH);
    wall.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// The other way: a moment stored by `to_unix_ms` on this process's
/// monotonic clock. A clock set back since: as new as it can be.
fn from_unix_ms(ms: u64, now: SystemTime, now_mono: Instant) -> Result<Instant, String> {
    let age = now.duration_since(UNIX_EPOCH + Duration::from_millis(ms)).unwrap_or_default();
    now_mono.checked_sub(age).ok_or_else(|| "the lease's time is out of range".into())
}

/// A DHCPv4 lease as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredLease4 {
    /// For people reading the file; the address in `ack` is the one used.
    pub address: Ipv4Addr,
    /// The DHCPACK that granted the lease, as received (base64): its
    /// options give the result and the lease times.
    pub ack: String,
    pub server_id: Ipv4Addr,
    /// The link-layer source of the ACK (the next hop of renewals).
    pub server_mac: String,
    /// When the lease was granted, in milliseconds since the Unix epoch.
    pub obtained_unix_ms: u64,
}

impl StoredLease4 {
    /// `lease` with its monotonic time turned into wall-clock time (`now`
    /// and `now_mono` are the same moment on both clocks).
    pub fn new(lease: &Lease, now: SystemTime, now_mono: Instant) -> StoredLease4 {
        StoredLease4 {
            address: lease.addr(),
            ack: base64::encode(&lease.ack.encode()),
            server_id: lease.server_id,
            server_mac: mac::format(&lease.server_mac),
            obtained_unix_ms: to_unix_ms(lease.obtained, now, now_mono),
        }
    }

    /// The lease back, on this process's monotonic clock (`now` and
    /// `now_mono` again the same moment).
    pub fn lease(&self, now: SystemTime, now_mono: Instant) -> Result<Lease, String> {
        let bytes = base64::decode(&self.ack).ok_or("the DHCPACK is not base64")?;
        let ack = Packet::decode(&bytes).ok_or("the DHCPACK does not decode")?;
        if ack.yiaddr.is_unspecified() {
            return Err("the DHCPACK grants no address".into());
        }
        let server_mac: [u8; 6] = mac::parse(&self.server_mac)
            .and_then(|m| m.try_into().ok())
            .ok_or_else(|| format!("bad server MAC {:?}", self.server_mac))?;
        let obtained = from_unix_ms(self.obtained_unix_ms, now, now_mono)?;
        Ok(Lease { ack, server_id: self.server_id, server_mac, obtained })
    }
}

/// A DHCPv6 IA_NA binding as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredLease6 {
    /// The bound address; it must be the one the Reply grants.
    pub address: Ipv6Addr,
    /// The Reply that granted (or last extended) the binding, as received
    /// (base64): its IA_NA gives the lifetimes, T1 and T2, its options the
    /// server's DUID and DNS.
    pub reply: String,
    /// The client DUID the binding belongs to ("00:04:...", as in the DUID file).
    pub duid: String,
    pub iaid: u32,
    /// The default router an RA named during ADD (the result's gateway).
    pub gateway: Option<Ipv6Addr>,
    /// When the Reply came, in milliseconds since the Unix epoch.
    pub obtained_unix_ms: u64,
}

impl StoredLease6 {
    /// `lease`, bound to `duid` and `iaid` (times as for `StoredLease4::new`).
    pub fn new(lease: &Lease6, duid: &[u8], iaid: u32, now: SystemTime, now_mono: Instant) -> StoredLease6 {
        StoredLease6 {
            address: lease.addr.addr,
            reply: base64::encode(&lease.reply.encode()),
            duid: super::duid::to_text(duid),
            iaid,
            gateway: lease.gateway,
            obtained_unix_ms: to_unix_ms(lease.obtained, now, now_mono),
        }
    }

    /// The client DUID.
    pub fn duid(&self) -> Result<Vec<u8>, String> {
        super::duid::from_text(&self.duid).ok_or_else(|| format!("bad DUID {:?}", self.duid))
    }

    /// The binding back, on this process's monotonic clock.
    pub fn lease(&self, now: SystemTime, now_mono: Instant) -> Result<Lease6, String> {
        self.duid()?;
        let bytes = base64::decode(&self.reply).ok_or("the DHCPv6 Reply is not base64")?;
        let reply = Message::decode(&bytes).ok_or("the DHCPv6 Reply does not decode")?;
        if reply.server_id().is_none_or(|s| s.is_empty()) {
            return Err("the DHCPv6 Reply names no server".into());
        }
        let ia = reply.ia_na(self.iaid).ok_or_else(|| format!("the DHCPv6 Reply has no IA_NA {:#x}", self.iaid))?;
        let addr = ia
            .granted()
            .filter(|a| a.addr == self.address)
            .ok_or_else(|| format!("the DHCPv6 Reply does not grant {}", self.address))?;
        let mut lease = Lease6::new(&reply, &ia, addr);
        lease.obtained = from_unix_ms(self.obtained_unix_ms, now, now_mono)?;
        lease.gateway = self.gateway;
        Ok(lease)
    }
}

/// The state directory.
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Store {
        Store { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keys may hold any character and be 254 bytes long: the file is named
    /// by the key's hash (the record inside names the attachment).
    fn path(&self, key: &str, family: &str) -> PathBuf {
        self.dir.join(format!("{}.{family}{RECORD_SUFFIX}", hash::fnv1a_128_hex(key)))
    }

    fn ensure_dir(&self) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        // Records hold network configurations: root's eyes only.
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir)
    }

    pub fn save(&self, record: &Record) -> io::Result<()> {
        self.ensure_dir()?;
        let data = serde_json::to_vec(record).map_err(io::Error::other)?;
        atomic_file::replace_file(&self.path(&record.attachment.key(), record.lease.family()), &data, 0o600)
    }

    /// Removes the record of one lease of `key`.
    pub fn remove(&self, key: &str, family: &str) -> io::Result<()> {
        atomic_file::remove(&self.path(key, family))
    }

    /// Removes the records of every lease of `key`.
    pub fn remove_all(&self, key: &str) -> io::Result<()> {
        FAMILIES.iter().try_for_each(|family| self.remove(key, family))
    }

    /// The records of `key`'s leases.
    pub fn load(&self, key: &str) -> Result<Vec<Record>, String> {
        let mut records = Vec::new();
        for family in FAMILIES {
            let path = self.path(key, family);
            match std::fs::read(&path) {
                Ok(data) => {
                    records.push(decode(&data, &path)?.ok_or_else(|| format!("{}: unknown format", path.display()))?)
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        Ok(records)
    }

    /// Every record. A file that does not decode is logged and renamed
    /// aside (`*.corrupt`), never fatal; one from a newer format is left
    /// alone; temporaries of an interrupted write are removed.
    pub fn load_all(&self) -> Vec<Record> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                log::error!("cannot read the state directory {}: {e}", self.dir.display());
                return Vec::new();
            }
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        paths.sort();
        let mut records = Vec::new();
        for path in paths {
            let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            if name.ends_with(atomic_file::TMP_SUFFIX) {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if !name.ends_with(RECORD_SUFFIX) {
                continue;
            }
            let decoded = std::fs::read(&path).map_err(|e| e.to_string()).and_then(|d| decode(&d, &path));
            match decoded {
                Ok(Some(r)) => records.push(r),
                Ok(None) => log::warn!("{}: a record this daemon does not know; left alone", path.display()),
                Err(why) => set_aside(&path, &why),
            }
        }
        records
    }

    /// Whether records can be written now (for STATUS): a probe file
    /// written and removed the way records are.
    pub fn probe(&self) -> io::Result<()> {
        self.ensure_dir()?;
        let probe = self.dir.join(format!(".probe-{}", std::process::id()));
        atomic_file::replace_file(&probe, b"", 0o600)?;
        atomic_file::remove(&probe)
    }
}

/// A record from its file's bytes, checked: it must sit where its key and
/// family put it, and its lease must decode. None: a newer format or a
/// family this daemon does not know.
fn decode(data: &[u8], path: &Path) -> Result<Option<Record>, String> {
    let bad = |e: serde_json::Error| format!("not a lease record: {e}");
    // Read as a Value first: the format and family are checked before the
    // lease is, and the binary already holds Value's parser.
    let value: Value = serde_json::from_slice(data).map_err(bad)?;
    let version = value.get("version").and_then(Value::as_u64).unwrap_or(0);
    let family = value.get("lease").and_then(Value::as_object).and_then(|l| l.keys().next());
    if version > u64::from(RECORD_VERSION) || family.is_some_and(|f| !FAMILIES.contains(&f.as_str())) {
        return Ok(None);
    }
    let record: Record = serde_json::from_value(value).map_err(bad)?;
    let key = record.attachment.key();
    let expected = Store::new(path.parent().unwrap_or(Path::new(""))).path(&key, record.lease.family());
    if expected.file_name() != path.file_name() {
        return Err(format!("the record of {key} does not belong in this file"));
    }
    record.lease.check()?;
    Ok(Some(record))
}

fn set_aside(path: &Path, why: &str) {
    let mut aside = path.as_os_str().to_owned();
    aside.push(CORRUPT_SUFFIX);
    match std::fs::rename(path, &aside) {
        Ok(()) => log::error!("{}: {why}; set aside as {}", path.display(), Path::new(&aside).display()),
        Err(e) => log::error!("{}: {why}; cannot set it aside: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::packet::{opt, MessageType};
    use super::*;

    fn lease(obtained: Instant) -> Lease {
        let mut ack = Packet::request(MessageType::Ack, 7, &[2, 0, 0, 0, 0, 9]);
        ack.yiaddr = Ipv4Addr::new(10, 1, 2, 3);
        ack.set(opt::LEASE_TIME, 120u32.to_be_bytes().to_vec());
        ack.set(opt::SUBNET_MASK, vec![255, 255, 255, 0]);
        Lease { ack, server_id: Ipv4Addr::new(10, 1, 2, 1), server_mac: [2, 0, 0, 0, 0, 1], obtained }
    }

    fn attachment(container: &str) -> Attachment {
        Attachment {
            container_id: container.into(),
            network: "lan".into(),
            ifname: "eth0".into(),
            netns: "/run/netns/x".into(),
            args: "K8S_POD_NAME=web-0".into(),
            config: serde_json::json!({"name": "lan", "ipam": {"type": "dhcp",
                "provide": [{"option": "host-name", "fromArg": "K8S_POD_NAME"}]}}),
        }
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cnibox-dhcp-state-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_lease_keeps_its_age_across_clocks() {
        let mono = Instant::now();
        let wall = SystemTime::now();
        let original = lease(mono.checked_sub(Duration::from_secs(30)).unwrap());
        let stored = StoredLease4::new(&original, wall, mono);
        assert_eq!(stored.address, original.addr());
        // Read back 5 s later by another process: 35 s old.
        let later = mono + Duration::from_secs(5);
        let back = stored.lease(wall + Duration::from_secs(5), later).unwrap();
        let age = later - back.obtained;
        assert!(age >= Duration::from_secs(35) && age < Duration::from_millis(35_002), "{age:?}");
        assert_eq!(back.ack, original.ack);
        assert_eq!((back.server_id, back.server_mac), (original.server_id, original.server_mac));
        // A clock set back: the lease counts as granted now, not in the future.
        let back = stored.lease(wall - Duration::from_secs(3600), mono).unwrap();
        assert_eq!(back.obtained, mono);
        // Damaged leases are errors, not panics.
        for bad in [
            StoredLease4 { ack: "%%%".into(), ..stored.clone() },
            StoredLease4 { ack: base64::encode(b"short"), ..stored.clone() },
            StoredLease4 { server_mac: "nope".into(), ..stored.clone() },
        ] {
            assert!(bad.lease(wall, mono).is_err(), "{bad:?}");
        }
    }

    fn v4(container: &str) -> Record {
        let mono = Instant::now();
        Record::new(attachment(container), StoredLease::V4(StoredLease4::new(&lease(mono), SystemTime::now(), mono)))
    }

    #[test]
    fn the_record_format() {
        let mono = Instant::now();
        let stored = StoredLease4::new(&lease(mono), UNIX_EPOCH + Duration::from_secs(1_700_000_000), mono);
        let record = Record::new(attachment("c1"), StoredLease::V4(stored));
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(json["attachment"]["containerId"], "c1");
        assert_eq!(json["lease"]["ipv4"]["address"], "10.1.2.3");
        assert_eq!(json["lease"]["ipv4"]["serverMac"], "02:00:00:00:00:01");
        assert_eq!(json["lease"]["ipv4"]["obtainedUnixMs"], 1_700_000_000_000u64);
        assert_eq!(serde_json::from_value::<Record>(json).unwrap(), record);
        // The identity is the one ADD builds: client ID and provided options.
        let id = record.attachment.identity("/host").unwrap();
        assert_eq!(id.netns, "/host/run/netns/x");
        assert_eq!(id.client_id, b"\0c1/lan/eth0");
        assert!(id.options.contains(&(opt::HOSTNAME, b"web-0".to_vec())));
    }

    const DUID: &[u8] = &[0, 4, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];

    /// A binding of fd00::1:5 to IAID 9 (T1 60 s, T2 96 s, valid 120 s).
    fn lease6(obtained: Instant) -> Lease6 {
        use super::super::packet6::{opt, IaAddr, IaNa, MessageType};
        let mut reply = Message::new(MessageType::Reply, 5);
        reply.push(opt::CLIENT_ID, DUID.to_vec());
        reply.push(opt::SERVER_ID, vec![0, 1, 0, 1, 9, 9]);
        let addr = IaAddr { addr: "fd00::1:5".parse().unwrap(), preferred: 120, valid: 120, status: None };
        reply.push(opt::IA_NA, IaNa { iaid: 9, t1: 60, t2: 96, addrs: vec![addr.clone()], status: None }.encode());
        let reply = Message::decode(&reply.encode()).unwrap();
        let mut lease = Lease6::new(&reply, &reply.ia_na(9).unwrap(), &addr);
        lease.obtained = obtained;
        lease.gateway = Some("fe80::1".parse().unwrap());
        lease
    }

    fn v6(container: &str) -> Record {
        let mono = Instant::now();
        let stored = StoredLease6::new(&lease6(mono), DUID, 9, SystemTime::now(), mono);
        Record::new(attachment(container), StoredLease::V6(stored))
    }

    #[test]
    fn a_v6_binding_keeps_its_age_duid_and_router() {
        let mono = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let original = lease6(mono.checked_sub(Duration::from_secs(30)).unwrap());
        let stored = StoredLease6::new(&original, DUID, 9, wall, mono);
        let json = serde_json::to_value(Record::new(attachment("c6"), StoredLease::V6(stored.clone()))).unwrap();
        assert_eq!(json["lease"]["ipv6"]["address"], "fd00::1:5");
        assert_eq!(json["lease"]["ipv6"]["duid"], "00:04:01:02:03:04:05:06:07:08:09:0a:0b:0c:0d:0e:0f:10");
        assert_eq!(json["lease"]["ipv6"]["iaid"], 9);
        assert_eq!(json["lease"]["ipv6"]["gateway"], "fe80::1");
        assert_eq!(json["lease"]["ipv6"]["obtainedUnixMs"], 1_699_999_970_000u64);
        assert_eq!(serde_json::from_value::<Record>(json).unwrap().lease, StoredLease::V6(stored.clone()));
        // Read back 5 s later by another process: 35 s old, the same binding.
        let later = mono + Duration::from_secs(5);
        let back = stored.lease(wall + Duration::from_secs(5), later).unwrap();
        assert_eq!(later - back.obtained, Duration::from_secs(35));
        assert_eq!((back.addr.clone(), back.t1, back.t2), (original.addr.clone(), 60, 96));
        assert_eq!((back.server_id.clone(), back.gateway), (original.server_id.clone(), original.gateway));
        assert_eq!(back.renew_at() - back.obtained, Duration::from_secs(60));
        assert_eq!(stored.duid().unwrap(), DUID);
        let id = attachment("c6").identity6("/host", stored.duid().unwrap(), stored.iaid);
        assert_eq!((id.netns.as_str(), id.iaid, id.who.as_str()), ("/host/run/netns/x", 9, "c6/lan/eth0"));
        // Damaged bindings are errors, not panics.
        for bad in [
            StoredLease6 { reply: "%%%".into(), ..stored.clone() },
            StoredLease6 { reply: base64::encode(b"\x07"), ..stored.clone() },
            StoredLease6 { iaid: 10, ..stored.clone() },
            StoredLease6 { address: "fd00::1:6".parse().unwrap(), ..stored.clone() },
            StoredLease6 { duid: "00".into(), ..stored.clone() },
        ] {
            assert!(bad.lease(wall, mono).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn both_families_of_an_attachment() {
        let dir = temp_dir("families");
        let store = Store::new(&dir);
        let (four, six) = (v4("c1"), v6("c1"));
        store.save(&four).unwrap();
        store.save(&six).unwrap();
        let key = four.attachment.key();
        assert!(store.path(&key, IPV6).to_str().unwrap().ends_with(".ipv6.json"));
        assert_eq!(store.load(&key).unwrap(), [four.clone(), six.clone()]);
        // Sorted by file name: the v4 record first, as ADD merges them.
        assert_eq!(store.load_all(), [four, six.clone()]);
        store.remove(&key, IPV4).unwrap();
        assert_eq!(store.load(&key).unwrap(), std::slice::from_ref(&six));
        store.remove_all(&key).unwrap();
        assert!(store.load_all().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn store_saves_loads_and_removes() {
        let dir = temp_dir("store");
        let store = Store::new(dir.join("nested"));
        assert!(store.load_all().is_empty());
        assert_eq!(store.load("c1/lan/eth0").unwrap(), []);
        let (a, b) = (v4("c1"), v4("c2"));
        store.save(&a).unwrap();
        store.save(&b).unwrap();
        store.save(&a).unwrap();
        assert_eq!(store.load("c1/lan/eth0").unwrap(), std::slice::from_ref(&a));
        let mut all = store.load_all();
        all.sort_by_key(|r| r.attachment.container_id.clone());
        assert_eq!(all, [a.clone(), b.clone()]);
        let path = store.path("c1/lan/eth0", IPV4);
        assert!(path.to_str().unwrap().ends_with(".ipv4.json"), "{}", path.display());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        store.remove("c1/lan/eth0", IPV4).unwrap();
        store.remove_all("c1/lan/eth0").unwrap();
        assert_eq!(store.load_all(), std::slice::from_ref(&b));
        store.remove_all("c2/lan/eth0").unwrap();
        assert!(store.load_all().is_empty());
        store.probe().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_records_are_set_aside_and_the_others_kept() {
        let dir = temp_dir("corrupt");
        let store = Store::new(&dir);
        let good = v4("good");
        store.save(&good).unwrap();
        let text = std::fs::read_to_string(store.path(&good.attachment.key(), IPV4)).unwrap();
        let truncated = store.path("truncated", IPV4);
        std::fs::write(&truncated, &text[..text.len() / 2]).unwrap();
        let garbage = dir.join("garbage.json");
        std::fs::write(&garbage, [0xff, 0x00, 0x13]).unwrap();
        // A whole record in a file that is not its own (copied by hand).
        let misplaced = dir.join("misplaced.ipv4.json");
        std::fs::write(&misplaced, &text).unwrap();
        let mut bad_ack = v4("bad-ack");
        let StoredLease::V4(stored) = &mut bad_ack.lease else { unreachable!() };
        stored.ack = "AAAA".into();
        let bad_ack_path = store.path("bad-ack/lan/eth0", IPV4);
        std::fs::write(&bad_ack_path, serde_json::to_vec(&bad_ack).unwrap()).unwrap();
        let mut bad_reply = v6("bad-reply");
        let StoredLease::V6(stored) = &mut bad_reply.lease else { unreachable!() };
        stored.reply = base64::encode(b"\x07\x00");
        let bad_reply_path = store.path("bad-reply/lan/eth0", IPV6);
        std::fs::write(&bad_reply_path, serde_json::to_vec(&bad_reply).unwrap()).unwrap();
        let good6 = v6("good");
        store.save(&good6).unwrap();
        // Records of a newer format, or of a family this daemon does not
        // keep (a downgrade), are not this daemon's to judge.
        let mut newer = serde_json::to_value(v4("newer")).unwrap();
        newer["version"] = (RECORD_VERSION + 1).into();
        let newer_path = store.path("newer/lan/eth0", IPV4);
        std::fs::write(&newer_path, newer.to_string()).unwrap();
        let mut other = serde_json::to_value(v4("other")).unwrap();
        other["lease"] = serde_json::json!({"ipv9": {"address": "?"}});
        let other_path = dir.join("other.ipv9.json");
        std::fs::write(&other_path, other.to_string()).unwrap();
        let leftover = dir.join(format!(".x.json.1-1{}", atomic_file::TMP_SUFFIX));
        std::fs::write(&leftover, "partial").unwrap();
        std::fs::write(dir.join("duid"), "not a record").unwrap();

        assert_eq!(store.load_all(), [good, good6]);
        for set_aside in [&truncated, &garbage, &misplaced, &bad_ack_path, &bad_reply_path] {
            assert!(!set_aside.exists(), "{}", set_aside.display());
            let mut aside = set_aside.as_os_str().to_owned();
            aside.push(CORRUPT_SUFFIX);
            assert!(Path::new(&aside).exists(), "{}", set_aside.display());
        }
        assert!(newer_path.exists() && other_path.exists() && dir.join("duid").exists() && !leftover.exists());
        assert!(store.load("truncated").is_ok_and(|r| r.is_empty()));
        // Set aside once: the next start finds the same good records only.
        assert_eq!(store.load_all().len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn probe_fails_where_records_cannot_be_written() {
        let dir = temp_dir("probe");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a-file");
        std::fs::write(&file, "").unwrap();
        assert!(Store::new(&file).probe().is_err());
        assert!(Store::new(file.join("below")).probe().is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
