//! `cnibox dhcp daemon`: holds the DHCP leases of every container and keeps
//! them alive (a plugin process lives for one call; a lease must be renewed
//! for as long as the container lives).
//!
//! Protocol (ours, not the reference's Go net/rpc): over a unix stream
//! socket, one JSON `Request` per connection, written by the plugin and
//! ended with a write shutdown; the daemon answers one JSON `Response` and
//! closes. Each connection gets a thread; each lease gets a thread that
//! renews it at T1, rebinds at T2 and releases it when told to stop. An
//! attachment holds one lease per family it asks for (family.rs).
//!
//! Every lease is also a record in the state directory (state.rs), written
//! on ADD and on each renewal, removed on release: a daemon that starts
//! resumes the leases its predecessor held.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::client::{self, Timing};
use super::client6;
use super::family::{self, Family, Kind, V6Settings, V4, V6};
use super::state::{self, Attachment, Record, Store, StoredLease};
use super::Conf;
use crate::cni::error::{CniError, INTERNAL, NOT_AVAILABLE, TRY_AGAIN_LATER};
use crate::cni::CniResult;

pub const DEFAULT_SOCKET: &str = "/run/cni/dhcp.sock";
/// How long a DHCPv6 ADD waits for a router advertisement by default.
const DEFAULT_RA_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request accepted (the configuration is at most 1 MiB).
const MAX_REQUEST: u64 = 2 << 20;

/// What the plugin asks.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Request {
    /// ADD, DEL, CHECK, GC or STATUS.
    pub verb: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// CNI_ARGS as given (for `provide` options with `fromArg`).
    pub args: String,
    /// The whole network configuration.
    pub config: Value,
}

/// What the daemon answers: a result (ADD, CHECK), nothing, or an error.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Response {
    pub result: Option<CniResult>,
    pub error: Option<WireError>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct WireError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl From<CniError> for WireError {
    fn from(e: CniError) -> Self {
        WireError { code: e.code, msg: e.msg, details: e.details }
    }
}

impl From<WireError> for CniError {
    fn from(e: WireError) -> Self {
        CniError::new(e.code, e.msg).with_details(e.details)
    }
}

/// The client ID the reference builds: "<container>/<network>/<ifname>",
/// at most 254 bytes, sent after a 0 type byte.
pub fn client_id(container_id: &str, net_name: &str, ifname: &str) -> String {
    let mut id = format!("{container_id}/{net_name}/{ifname}");
    if id.len() > 254 {
        let mut cut = 254;
        while !id.is_char_boundary(cut) {
            cut -= 1;
        }
        id.truncate(cut);
    }
    id
}

/// One lease the daemon maintains, and its record in the state directory.
struct Managed<F: Family> {
    /// The attachment's key: its records' name, and who it is in logs.
    key: String,
    attachment: Attachment,
    store: Arc<Store>,
    family: F,
    /// None once the lease is lost (NAK, expiry, interface gone).
    lease: Mutex<Option<F::Lease>>,
    stop: AtomicBool,
    wake: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// A lease of any family, as an attachment holds it.
trait Held: Send + Sync {
    /// The lease's CNI result; None once it is lost.
    fn result(&self) -> Option<Result<CniResult, CniError>>;
    /// DEL, GC: ends its maintenance, releasing it, and removes its record.
    fn end(&self);
}

impl<F: Family> Held for Managed<F> {
    fn result(&self) -> Option<Result<CniResult, CniError>> {
        self.current().map(|l| self.family.result(&l))
    }
    fn end(&self) {
        Managed::end(self)
    }
}

/// What the daemon holds for one attachment: a lease per family asked for.
struct Holding {
    attachment: Attachment,
    leases: Vec<Arc<dyn Held>>,
}

impl Holding {
    /// The result of every lease, merged; None when one was lost.
    fn result(&self) -> Option<Result<CniResult, CniError>> {
        let mut results = Vec::new();
        for held in &self.leases {
            match held.result()? {
                Ok(r) => results.push(r),
                Err(e) => return Some(Err(e)),
            }
        }
        Some(Ok(family::merge(results)))
    }

    fn end(&self) {
        for held in &self.leases {
            held.end();
        }
    }
}

impl<F: Family> Managed<F> {
    fn new(attachment: Attachment, store: Arc<Store>, family: F, lease: F::Lease) -> Managed<F> {
        Managed {
            key: attachment.key(),
            attachment,
            store,
            family,
            lease: Mutex::new(Some(lease)),
            stop: AtomicBool::new(false),
            wake: Condvar::new(),
            thread: Mutex::new(None),
        }
    }

    /// Replaces the lease's record (the lease as of now).
    fn persist(&self, lease: &F::Lease) -> std::io::Result<()> {
        let stored = self.family.stored(lease, SystemTime::now(), Instant::now());
        self.store.save(&Record::new(self.attachment.clone(), stored))
    }

    /// Removes the lease's record: nothing left for a restart to resume.
    fn forget(&self) {
        if let Err(e) = self.store.remove(&self.key, F::RECORD) {
            log::warn!(
                "{}: cannot remove its {} record from {}: {e}",
                self.key,
                self.family.name(),
                self.store.dir().display()
            );
        }
    }

    fn current(&self) -> Option<F::Lease> {
        self.lease.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sleeps until `when` or a stop request; true when asked to stop.
    fn sleep_until(&self, when: Instant) -> bool {
        let mut guard = self.lease.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return true;
            }
            let Some(left) = when.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
                return false;
            };
            guard = self.wake.wait_timeout(guard, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// `withdraw`: the container must stop using the lease (the server
    /// refused it or it expired), not merely the interface went away.
    fn lose(&self, why: &str, withdraw: bool) {
        let who = &self.key;
        log::error!("{who}: {} lease lost: {why}", self.family.name());
        let lost = self.lease.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.forget();
        if let (true, Some(lease)) = (withdraw, lost) {
            if let Err(e) = self.family.withdraw(&lease) {
                log::warn!("{who}: cannot withdraw the lost {} lease: {e}", self.family.name());
            }
        }
    }

    /// The lease's life after ADD: renew at T1, rebind at T2, give up at
    /// expiry; RELEASE when stopped.
    fn maintain(self: Arc<Self>) {
        let who = self.key.clone();
        loop {
            let Some(lease) = self.current() else { return };
            let [renew_at, rebind_at, expires_at] = F::times(&lease);
            if self.sleep_until(renew_at) {
                break;
            }
            let now = Instant::now();
            let (rebinding, deadline) = if now < rebind_at {
                (false, rebind_at)
            } else if now < expires_at {
                (true, expires_at)
            } else {
                self.lose("expired without renewal", true);
                return;
            };
            let outcome = self.family.extend(&lease, rebinding, deadline, &self.stop);
            match outcome {
                Ok(new) => {
                    // The renewed lease is held either way; an old record
                    // only makes a restart renew sooner than needed.
                    if let Err(e) = self.persist(&new) {
                        log::warn!(
                            "{who}: cannot record the renewed {} lease in {}: {e}",
                            self.family.name(),
                            self.store.dir().display()
                        );
                    }
                    *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = Some(new);
                }
                Err(client::Error::Stopped) => break,
                Err(client::Error::Gone(why)) => {
                    log::info!("{who}: stopping maintenance: {why}");
                    self.lose("interface gone", false);
                    return;
                }
                Err(client::Error::Nak(why)) => {
                    self.lose(&why, true);
                    return;
                }
                Err(e) => {
                    log::warn!("{who}: {e}");
                    // Do not spin on a persistent local error.
                    if self.sleep_until(Instant::now() + Duration::from_secs(1)) {
                        break;
                    }
                }
            }
        }
        // Stopped by DEL.
        if let Some(lease) = self.current() {
            if let Err(e) = self.family.release(&lease) {
                log::warn!("{who}: cannot release the {} lease: {e}", self.family.name());
            }
        }
    }

    /// ADD: acquires a lease, records it and starts its maintenance. It
    /// succeeds whole or leaves no lease behind: one that cannot be
    /// recorded (a restart would lose it) or maintained is released at once.
    fn start(attachment: Attachment, store: Arc<Store>, family: F) -> Result<Arc<dyn Held>, CniError> {
        let who = attachment.key();
        let never = AtomicBool::new(false);
        let name = family.name();
        let lease = family.acquire(&never).map_err(|e| match e {
            client::Error::Timeout(m) => CniError::new(TRY_AGAIN_LATER, format!("no {name} lease")).with_details(m),
            e => CniError::new(INTERNAL, format!("no {name} lease")).with_details(e.to_string()),
        })?;
        if let Err(e) = family.result(&lease) {
            let _ = family.release(&lease);
            return Err(e);
        }
        log::info!("{who}: {name} lease of {} acquired", F::describe(&lease));
        let managed = Arc::new(Managed::new(attachment, store, family, lease.clone()));
        let started = managed
            .persist(&lease)
            .map_err(|e| {
                CniError::io(format!("cannot record the {name} lease"))
                    .with_details(format!("{}: {e}", managed.store.dir().display()))
            })
            .and_then(|()| managed.spawn());
        if let Err(e) = started {
            managed.forget();
            let _ = managed.family.release(&lease);
            return Err(e);
        }
        Ok(managed)
    }

    /// Start-up: maintains a lease a previous daemon recorded.
    fn resume(attachment: Attachment, store: Arc<Store>, family: F, lease: F::Lease) -> Option<Arc<dyn Held>> {
        // An expired lease is lost as if it had expired under this daemon:
        // the maintenance thread finds it so and withdraws it.
        let [renew_at, ..] = F::times(&lease);
        let key = attachment.key();
        log::info!(
            "{key}: resuming the {} lease of {}, renewal in {:?}",
            family.name(),
            F::describe(&lease),
            renew_at.saturating_duration_since(Instant::now())
        );
        let managed = Arc::new(Managed::new(attachment, store, family, lease));
        match managed.spawn() {
            Ok(()) => Some(managed),
            Err(e) => {
                // The record stays: the next start may manage better.
                log::error!("{key}: {}", e.msg);
                None
            }
        }
    }

    /// The lease's maintenance thread.
    fn spawn(self: &Arc<Self>) -> Result<(), CniError> {
        let worker = Arc::clone(self);
        let handle = std::thread::Builder::new()
            .name(format!("lease-{}", self.family.name()))
            .spawn(move || worker.maintain())
            .map_err(|e| CniError::internal("cannot start the lease thread").with_details(e.to_string()))?;
        *self.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(())
    }

    fn stop_and_join(&self) {
        self.stop.store(true, Ordering::Relaxed);
        {
            let _guard = self.lease.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_all();
        }
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    /// The lease released (if still held) and its record removed.
    fn end(&self) {
        self.stop_and_join();
        self.forget();
    }
}

/// Serializes the requests for one attachment (an ADD still acquiring and
/// a DEL for the same container must not overlap), leaving others free.
#[derive(Default)]
struct Busy {
    keys: Mutex<HashSet<String>>,
    freed: Condvar,
}

struct BusyGuard<'a> {
    busy: &'a Busy,
    key: String,
}

impl Busy {
    fn claim(&self, key: &str) -> BusyGuard<'_> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        while keys.contains(key) {
            keys = self.freed.wait(keys).unwrap_or_else(|e| e.into_inner());
        }
        keys.insert(key.to_string());
        BusyGuard { busy: self, key: key.to_string() }
    }
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.busy.keys.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.key);
        self.busy.freed.notify_all();
    }
}

pub struct Daemon {
    timing: Timing,
    host_prefix: String,
    /// The state directory: lease records, and the DUID `v6` reads.
    store: Arc<Store>,
    v6: V6Settings,
    leases: Mutex<HashMap<String, Arc<Holding>>>,
    busy: Busy,
}

impl Daemon {
    /// `ra_timeout`: the longest a DHCPv6 ADD waits for a router advertisement.
    pub fn new(timing: Timing, host_prefix: String, store: Store, ra_timeout: Duration) -> Daemon {
        let v6 = V6Settings::new(store.dir().to_path_buf(), ra_timeout);
        Daemon {
            timing,
            host_prefix,
            store: Arc::new(store),
            v6,
            leases: Mutex::new(HashMap::new()),
            busy: Busy::default(),
        }
    }

    fn lookup(&self, key: &str) -> Option<Arc<Holding>> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }

    fn take(&self, key: &str) -> Option<Arc<Holding>> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner()).remove(key)
    }

    pub fn handle(&self, req: &Request) -> Response {
        let outcome = match req.verb.as_str() {
            "ADD" => self.add(req).map(Some),
            "CHECK" => self.check(req).map(Some),
            "DEL" => self.del(req).map(|_| None),
            "GC" => self.gc(req).map(|_| None),
            "STATUS" => self.status().map(|_| None),
            other => Err(CniError::invalid_config(format!("unknown daemon request {other:?}"))),
        };
        match outcome {
            Ok(result) => Response { result, error: None },
            Err(e) => Response { result: None, error: Some(e.into()) },
        }
    }

    fn key(req: &Request, conf: &Conf) -> String {
        client_id(&req.container_id, &conf.name, &req.ifname)
    }

    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let conf: Conf = crate::cni::lenient::parse_config(&req.config, "network configuration")?;
        let key = Self::key(req, &conf);
        let _busy = self.busy.claim(&key);
        // ADD again for the same attachment returns the leases it already has.
        if let Some(result) = self.lookup(&key).and_then(|a| a.result()) {
            return result;
        }
        if let Some(old) = self.take(&key) {
            old.end();
        }
        let kinds = family::kinds(&conf.ipam.families)?;
        let attachment = Attachment {
            container_id: req.container_id.clone(),
            network: conf.name.clone(),
            ifname: req.ifname.clone(),
            netns: req.netns.clone(),
            args: req.args.clone(),
            config: req.config.clone(),
        };
        let v4 = if kinds.contains(&Kind::Ipv4) {
            Some(V4 { id: attachment.identity(&self.host_prefix)?, timing: self.timing.clone() })
        } else {
            None
        };
        let v6 = if kinds.contains(&Kind::Ipv6) {
            let id = attachment.identity6(&self.host_prefix, self.v6.duid()?, super::duid::iaid(&key));
            // Before either client brings the link up: the kernel
            // solicits routers when it does, if RAs are accepted then.
            client6::prepare_link(&id.netns, &id.ifname, conf.ipam.priority)
                .map_err(|e| CniError::io("preparing the interface for DHCPv6").with_details(e.to_string()))?;
            Some(V6 { id, timing: self.timing.clone(), ra_timeout: self.v6.ra_timeout })
        } else {
            None
        };
        // Both families at once: DHCPv6 waits for DAD, DHCPv4 for its server.
        let (got4, got6) = std::thread::scope(|s| {
            let t4 = v4.map(|f| s.spawn(|| Managed::start(attachment.clone(), Arc::clone(&self.store), f)));
            let got6 = v6.map(|f| Managed::start(attachment.clone(), Arc::clone(&self.store), f));
            let got4 = t4.map(|t| t.join().unwrap_or_else(|_| Err(CniError::internal("the DHCPv4 thread panicked"))));
            (got4, got6)
        });
        let mut leases = Vec::new();
        let mut failure = None;
        for got in [got4, got6].into_iter().flatten() {
            match got {
                Ok(held) => leases.push(held),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        let holding = Holding { attachment, leases };
        // ADD fully succeeds or gives back what it got.
        let result = match failure {
            Some(e) => Err(e),
            None => holding.result().unwrap_or_else(|| Err(CniError::internal("a lease was lost during ADD"))),
        };
        match result {
            Ok(result) => {
                self.leases.lock().unwrap_or_else(|e| e.into_inner()).insert(key, Arc::new(holding));
                Ok(result)
            }
            Err(e) => {
                holding.end();
                Err(e)
            }
        }
    }

    /// Start-up: takes over the leases a previous daemon recorded, one
    /// holding per attachment (records come sorted: ipv4 before ipv6, the
    /// order ADD merges them in).
    pub fn resume(&self) {
        let mut holdings: Vec<Holding> = Vec::new();
        for record in self.store.load_all() {
            let key = record.attachment.key();
            let Some(held) = self.resume_record(&key, &record) else { continue };
            match holdings.iter_mut().find(|h| h.attachment.key() == key) {
                Some(h) => h.leases.push(held),
                None => holdings.push(Holding { attachment: record.attachment, leases: vec![held] }),
            }
        }
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        for h in holdings {
            leases.insert(h.attachment.key(), Arc::new(h));
        }
    }

    /// The lease of one record, maintained again; None (the record
    /// removed) when it cannot be.
    fn resume_record(&self, key: &str, record: &Record) -> Option<Arc<dyn Held>> {
        let family = record.lease.family();
        let address = record.lease.address();
        let remove_record = || {
            if let Err(e) = self.store.remove(key, family) {
                log::warn!("{key}: cannot remove its {family} record: {e}");
            }
        };
        let drop_record = |why: &str| -> Option<Arc<dyn Held>> {
            log::error!("{key}: cannot resume the lease of {address}: {why}; record removed");
            remove_record();
            None
        };
        let attachment = &record.attachment;
        // A container that went while the daemon was down: a release must
        // come from its interface, so the server keeps the lease until it
        // expires (a DEL in the meantime released it; see mod.rs).
        let netns = format!("{}{}", self.host_prefix, attachment.netns);
        if let Err(client::Error::Gone(why)) = client::find_interface(&netns, &attachment.ifname) {
            log::warn!(
                "{key}: {why}: the container went away while the daemon was down; its lease of {address} cannot be released and expires on the server"
            );
            remove_record();
            return None;
        }
        let (now, now_mono) = (SystemTime::now(), Instant::now());
        let store = Arc::clone(&self.store);
        match &record.lease {
            StoredLease::V4(stored) => {
                let lease = match stored.lease(now, now_mono) {
                    Ok(lease) => lease,
                    Err(why) => return drop_record(&why),
                };
                let id = match attachment.identity(&self.host_prefix) {
                    Ok(id) => id,
                    Err(e) => return drop_record(&e.msg),
                };
                Managed::resume(attachment.clone(), store, V4 { id, timing: self.timing.clone() }, lease)
            }
            StoredLease::V6(stored) => {
                let (lease, duid) = match stored.lease(now, now_mono).and_then(|l| Ok((l, stored.duid()?))) {
                    Ok(got) => got,
                    Err(why) => return drop_record(&why),
                };
                let id = attachment.identity6(&self.host_prefix, duid, stored.iaid);
                let v6 = V6 { id, timing: self.timing.clone(), ra_timeout: self.v6.ra_timeout };
                Managed::resume(attachment.clone(), store, v6, lease)
            }
        }
    }

    /// Available when leases can be recorded (a lease that cannot be is
    /// lost to the next restart, so ADD refuses it).
    fn status(&self) -> Result<(), CniError> {
        self.store.probe().map_err(|e| {
            CniError::new(NOT_AVAILABLE, "the DHCP daemon cannot write its state directory")
                .with_details(format!("{}: {e}", self.store.dir().display()))
        })
    }

    fn check(&self, req: &Request) -> Result<CniResult, CniError> {
        let conf: Conf = crate::cni::lenient::parse_config(&req.config, "network configuration")?;
        let key = Self::key(req, &conf);
        let _busy = self.busy.claim(&key);
        let holding = self.lookup(&key).ok_or_else(|| CniError::internal(format!("no DHCP lease for {key}")))?;
        holding.result().unwrap_or_else(|| Err(CniError::internal(format!("a DHCP lease for {key} was lost"))))
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        let conf: Conf = crate::cni::lenient::parse_config(&req.config, "network configuration")?;
        let key = Self::key(req, &conf);
        let _busy = self.busy.claim(&key);
        match self.take(&key) {
            Some(h) => h.end(),
            None => {
                log::info!("{key}: DEL without a lease: nothing to release");
                if let Err(e) = self.store.remove_all(&key) {
                    log::warn!("{key}: cannot remove its records: {e}");
                }
            }
        }
        Ok(())
    }

    /// Releases this network's leases whose attachment the runtime no longer lists.
    fn gc(&self, req: &Request) -> Result<(), CniError> {
        let conf: Conf = crate::cni::lenient::parse_config(&req.config, "network configuration")?;
        let Some(valid) = crate::cni::gc::valid_attachments_in(&req.config)? else { return Ok(()) };
        let stale: Vec<Arc<Holding>> = {
            let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
            let keys: Vec<String> = leases
                .iter()
                .filter(|(_, h)| h.attachment.network == conf.name)
                .filter(|(_, h)| !crate::cni::gc::is_valid(&valid, &h.attachment.container_id, &h.attachment.ifname))
                .map(|(k, _)| k.clone())
                .collect();
            keys.iter().filter_map(|k| leases.remove(k)).collect()
        };
        for h in stale {
            log::info!("GC: releasing the leases of {}", h.attachment.key());
            h.end();
        }
        Ok(())
    }
}

fn serve_connection(daemon: &Daemon, mut conn: UnixStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut body = Vec::new();
    let response = match (&mut conn).take(MAX_REQUEST).read_to_end(&mut body) {
        Err(e) => Response {
            result: None,
            error: Some(CniError::io("reading the request").with_details(e.to_string()).into()),
        },
        // A connection closed without a word (a liveness probe).
        Ok(0) => return,
        Ok(_) => match serde_json::from_slice::<Request>(&body) {
            Ok(req) => {
                log::debug!("{} {} {} {}", req.verb, req.container_id, req.netns, req.ifname);
                daemon.handle(&req)
            }
            Err(e) => Response {
                result: None,
                error: Some(CniError::decode("bad request").with_details(e.to_string()).into()),
            },
        },
    };
    let out = serde_json::to_vec(&response).unwrap_or_default();
    if let Err(e) = conn.write_all(&out) {
        log::warn!("cannot answer the plugin: {e}");
    }
}

/// The daemon's command line (Go flag syntax: -name value, -name=value, --name ...).
#[derive(Debug, Clone)]
pub struct Options {
    pub socket_path: String,
    pub pidfile: String,
    pub host_prefix: String,
    pub timing: Timing,
    /// Where the lease records and the DHCPv6 DUID live.
    pub state_dir: String,
    /// The longest a DHCPv6 ADD waits for a router advertisement.
    pub ra_timeout: Duration,
}

/// Go durations as the reference's flags take them: "10s", "1m30s", "500ms".
pub fn parse_duration(s: &str) -> Option<Duration> {
    if let Ok(n) = s.parse::<u64>() {
        // Go refuses unitless values except 0; take them as seconds.
        return Some(Duration::from_secs(n));
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    Some(Duration::from_secs_f64(total))
}

pub fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        socket_path: String::new(),
        pidfile: String::new(),
        host_prefix: String::new(),
        timing: Timing::default(),
        state_dir: state::DEFAULT_STATE_DIR.to_string(),
        ra_timeout: DEFAULT_RA_TIMEOUT,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            return Err(format!("unexpected argument {arg:?}"));
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        if name == "broadcast" {
            o.timing.broadcast = match inline.as_deref() {
                None | Some("true") | Some("1") => true,
                Some("false") | Some("0") => false,
                Some(v) => return Err(format!("invalid value {v:?} for -broadcast")),
            };
            continue;
        }
        if name == "h" || name == "help" {
            return Err(String::new());
        }
        let value = match inline {
            Some(v) => v,
            None => it.next().cloned().ok_or_else(|| format!("flag needs an argument: -{name}"))?,
        };
        let duration = || parse_duration(&value).ok_or_else(|| format!("invalid duration {value:?} for -{name}"));
        match name {
            "socketpath" => o.socket_path = value.clone(),
            "pidfile" => o.pidfile = value.clone(),
            "hostprefix" => o.host_prefix = value.clone(),
            "timeout" => o.timing.timeout = duration()?,
            "resendmax" => o.timing.resend_max = duration()?,
            "resendtimeout" => o.timing.resend_timeout = duration()?,
            "statedir" => o.state_dir = value.clone(),
            "ratimeout" => o.ra_timeout = duration()?,
            _ => return Err(format!("flag provided but not defined: -{name}")),
        }
    }
    if o.state_dir.is_empty() {
        return Err("-statedir must not be empty".into());
    }
    if o.socket_path.is_empty() {
        o.socket_path = DEFAULT_SOCKET.to_string();
    }
    if o.timing.timeout.is_zero() || o.timing.resend_timeout.is_zero() {
        return Err("-timeout and -resendtimeout must be positive".into());
    }
    Ok(o)
}

const USAGE: &str = "usage: dhcp daemon [-socketpath PATH] [-statedir DIR] [-pidfile PATH] [-hostprefix DIR]
                   [-broadcast] [-timeout DURATION] [-resendmax DURATION] [-resendtimeout DURATION]
                   [-ratimeout DURATION]
  -socketpath     unix socket to serve (default /run/cni/dhcp.sock; systemd socket activation wins)
  -statedir       where the leases are recorded, so that a restarted daemon resumes them, and the
                  node's DHCPv6 DUID is kept (default /var/lib/cni/dhcp; STATUS fails with code 50
                  while it cannot be written)
  -pidfile        absolute path to write the daemon's PID to
  -hostprefix     prefix of the host's root, when the daemon runs in a container (applies to
                  netns paths, -socketpath and -statedir)
  -broadcast      ask DHCP servers to broadcast their replies
  -timeout        longest wait for a reply to one transmission (default 10s)
  -resendmax      largest delay between retransmissions (default 62s)
  -resendtimeout  longest time one acquisition or renewal may take (default 3m28s)
  -ratimeout      longest a DHCPv6 ADD waits for a router advertisement's default route (default 5s)

DHCPv6 (ipam.families [\"ipv6\"] or [\"ipv4\", \"ipv6\"]): stateful IA_NA from inside the
container's netns; the address comes as a /128, the on-link prefix and default route from
router advertisements, which the daemon turns on for the interface (accept_ra=2).";

/// The listening socket: fd 3 under systemd socket activation, else a
/// fresh socket at `path` (replacing a stale one nobody listens on).
fn listener(path: &Path) -> Result<(UnixListener, bool), String> {
    let activated = std::env::var("LISTEN_PID").ok().and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    let fds: u32 = std::env::var("LISTEN_FDS").ok().and_then(|n| n.parse().ok()).unwrap_or(0);
    if activated && fds >= 1 {
        if fds > 1 {
            return Err(format!("too many ({fds}) sockets passed through socket activation"));
        }
        // SAFETY: systemd hands us fd 3 as a listening socket we now own.
        return Ok((unsafe { UnixListener::from_raw_fd(3) }, false));
    }
    if let Some(dir) = path.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(format!("another daemon is listening on {}", path.display()));
        }
        let _ = std::fs::remove_file(path);
    }
    let l = UnixListener::bind(path).map_err(|e| format!("listening on {}: {e}", path.display()))?;
    Ok((l, true))
}

/// Blocks SIGTERM/SIGINT in every thread and removes our files when one comes.
fn handle_signals(cleanup: Vec<PathBuf>) -> Result<(), String> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        let sig = set.wait();
        log::info!("{sig:?}: shutting down (leases stay with their containers)");
        for p in &cleanup {
            let _ = std::fs::remove_file(p);
        }
        std::process::exit(0);
    });
    Ok(())
}

pub fn run(args: &[String]) -> i32 {
    let opts = match parse_args(args) {
        Ok(o) => o,
        Err(e) => {
            if e.is_empty() {
                println!("{USAGE}");
                return 0;
            }
            eprintln!("dhcp daemon: {e}\n{USAGE}");
            return 2;
        }
    };
    match serve(&opts) {
        Ok(()) => 0,
        Err(e) => {
            log::error!("{e}");
            eprintln!("dhcp daemon: {e}");
            1
        }
    }
}

fn serve(opts: &Options) -> Result<(), String> {
    let mut cleanup = Vec::new();
    if !opts.pidfile.is_empty() {
        let p = Path::new(&opts.pidfile);
        if !p.is_absolute() {
            return Err(format!("pidfile {:?} is not an absolute path", opts.pidfile));
        }
        std::fs::write(p, std::process::id().to_string()).map_err(|e| format!("writing {}: {e}", p.display()))?;
        cleanup.push(p.to_path_buf());
    }
    let socket = PathBuf::from(format!("{}{}", opts.host_prefix, opts.socket_path));
    let (listener, owned) = listener(&socket)?;
    if owned {
        cleanup.push(socket.clone());
    }
    handle_signals(cleanup)?;
    let store = Store::new(format!("{}{}", opts.host_prefix, opts.state_dir));
    // Not fatal: STATUS says so until the directory is fixed.
    if let Err(e) = store.probe() {
        log::error!("cannot write the state directory {}: {e}", store.dir().display());
    }
    let daemon = Arc::new(Daemon::new(opts.timing.clone(), opts.host_prefix.clone(), store, opts.ra_timeout));
    // After the socket is bound: a plugin's DEL that found no daemon has
    // removed its records by now (see mod.rs), and later ones queue on the
    // socket until the leases are resumed.
    daemon.resume();
    log::info!("serving on {}", if owned { socket.display().to_string() } else { "the activated socket".into() });
    for conn in listener.incoming() {
        match conn {
            Ok(conn) => {
                let d = Arc::clone(&daemon);
                if let Err(e) =
                    std::thread::Builder::new().name("request".into()).spawn(move || serve_connection(&d, conn))
                {
                    log::error!("cannot start a request thread: {e}");
                }
            }
            Err(e) => {
                log::warn!("accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("3x"), None);
        assert_eq!(parse_duration("s"), None);
    }

    #[test]
    fn flags_as_go_spells_them() {
        let o = parse_args(&strings(&[
            "-socketpath",
            "/tmp/x.sock",
            "--pidfile=/tmp/pid",
            "-broadcast",
            "-timeout=2s",
            "--resendmax",
            "4s",
        ]))
        .unwrap();
        assert_eq!(o.socket_path, "/tmp/x.sock");
        assert_eq!(o.pidfile, "/tmp/pid");
        assert!(o.timing.broadcast);
        assert_eq!(o.timing.timeout, Duration::from_secs(2));
        assert_eq!(o.timing.resend_max, Duration::from_secs(4));
        assert_eq!(o.state_dir, state::DEFAULT_STATE_DIR);
        assert_eq!(parse_args(&strings(&["-statedir=/tmp/s"])).unwrap().state_dir, "/tmp/s");
        assert!(parse_args(&strings(&["-statedir", ""])).is_err());
        assert_eq!(o.ra_timeout, DEFAULT_RA_TIMEOUT);
        assert_eq!(parse_args(&strings(&["-ratimeout=1s"])).unwrap().ra_timeout, Duration::from_secs(1));
        assert_eq!(parse_args(&[]).unwrap().socket_path, DEFAULT_SOCKET);
        assert!(parse_args(&strings(&["-bogus", "1"])).is_err());
        assert!(parse_args(&strings(&["-socketpath"])).is_err());
        assert!(parse_args(&strings(&["-broadcast=maybe"])).is_err());
    }

    #[test]
    fn client_id_like_the_reference() {
        assert_eq!(client_id("abc", "net", "eth0"), "abc/net/eth0");
        let long = "x".repeat(300);
        assert_eq!(client_id(&long, "n", "eth0").len(), 254);
    }

    #[test]
    fn unknown_and_leaseless_requests() {
        let dir = std::env::temp_dir().join(format!("cnibox-dhcp-daemon-{}", std::process::id()));
        let d = Daemon::new(Timing::default(), String::new(), Store::new(&dir), Duration::ZERO);
        let req = |verb: &str| Request {
            verb: verb.into(),
            container_id: "c".into(),
            ifname: "eth0".into(),
            config: serde_json::json!({"name": "n", "ipam": {"type": "dhcp"}}),
            ..Default::default()
        };
        assert!(d.handle(&req("DEL")).error.is_none());
        assert!(d.handle(&req("STATUS")).error.is_none());
        assert!(d.handle(&req("GC")).error.is_none());
        assert!(d.handle(&req("CHECK")).error.is_some());
        assert_eq!(d.handle(&req("FROB")).error.unwrap().code, 7);
        let _ = std::fs::remove_dir_all(&dir);
        // A state directory that cannot be written makes the daemon unavailable.
        let d = Daemon::new(Timing::default(), String::new(), Store::new("/proc/version/state"), Duration::ZERO);
        assert_eq!(d.handle(&req("STATUS")).error.unwrap().code, 50);
    }
}
