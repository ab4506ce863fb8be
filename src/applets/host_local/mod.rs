//! host-local: IPAM from ranges configured per network, with the
//! reservations in files on the host (the reference's on-disk format, so
//! both can share a data dir).
//!
//! - ADD reserves one address per range set, all or nothing.
//! - DEL releases the attachment's addresses; needs only the network name
//!   and dataDir, so it works with a config whose ranges are gone.
//! - CHECK verifies the attachment still holds an address in every range
//!   set, and every prevResult address of ours.
//! - GC releases reservations of attachments missing from
//!   `cni.dev/valid-attachments` (or the older `cni.dev/attachments`).
//! - STATUS fails with code 50 when the store is unusable or a range set
//!   has no free address left (ADD would fail).

mod allocator;
mod config;
mod dns;
mod store;

use crate::cni::error::NOT_AVAILABLE;
use crate::cni::{gc, Applet, CniError, CniResult, Command};
use allocator::Store;
use store::DiskStore;

pub struct HostLocal;

pub const KEYS: &[(&str, &str)] = &[
    ("ipam.ranges", "list of range sets, each a list of {subnet, rangeStart, rangeEnd, gateway}"),
    ("ipam.subnet", "legacy single range (with rangeStart, rangeEnd, gateway)"),
    ("ipam.routes", "list of {dst, gw} returned in the result"),
    ("ipam.dataDir", "where reservations are kept (default /var/lib/cni/networks)"),
    ("ipam.resolvConf", "resolv.conf file whose DNS settings go into the result"),
    ("CNI_ARGS IP", "comma-separated IPs to reserve"),
    ("args.cni.ips", "IPs to reserve"),
    ("runtimeConfig.ips", "capability \"ips\": IPs to reserve"),
    ("runtimeConfig.ipRanges", "capability \"ipRanges\": range sets put before the configured ones"),
];

impl Applet for HostLocal {
    fn validate(&self, cmd: &Command) -> Result<(), CniError> {
        config::load(cmd, true)?;
        cmd.prev_result().map(|_| ())
    }

    fn add(&self, cmd: &Command) -> Result<CniResult, CniError> {
        let conf = config::load(cmd, true)?;
        let dns = match conf.resolv_conf.as_str() {
            "" => Default::default(),
            path => dns::read_resolv_conf(path.as_ref())?,
        };
        let mut store = DiskStore::open(&conf.data_dir, &conf.name)?;
        let ips = allocator::allocate(&mut store, &conf.ranges, &cmd.container_id, &cmd.ifname, &conf.requested)?;
        log::info!(
            "{}/{}: reserved {}",
            cmd.container_id,
            cmd.ifname,
            ips.iter().map(|i| i.address.to_string()).collect::<Vec<_>>().join(", ")
        );
        Ok(CniResult { ips, routes: conf.routes, dns, ..Default::default() })
    }

    fn del(&self, cmd: &Command) -> Result<(), CniError> {
        let (name, data_dir) = config::load_location(cmd)?;
        let Some(mut store) = DiskStore::open_existing(&data_dir, &name)? else { return Ok(()) };
        let released = allocator::release(&mut store, &cmd.container_id, &cmd.ifname)?;
        if !released.is_empty() {
            log::info!("{}/{}: released {released:?}", cmd.container_id, cmd.ifname);
        }
        Ok(())
    }

    fn check(&self, cmd: &Command) -> Result<(), CniError> {
        let conf = config::load(cmd, true)?;
        let missing = || {
            CniError::internal(format!(
                "host-local: Failed to find address added by container {} (interface {})",
                cmd.container_id, cmd.ifname
            ))
        };
        let Some(store) = DiskStore::open_existing(&conf.data_dir, &conf.name)? else { return Err(missing()) };
        let held = allocator::held_by(&store, &cmd.container_id, &cmd.ifname)?;
        if held.is_empty() {
            return Err(missing());
        }
        for (i, set) in conf.ranges.iter().enumerate() {
            if !held.iter().any(|ip| set.contains(*ip)) {
                return Err(CniError::internal(format!(
                    "host-local: container {} holds no address in range set {i} ({set})",
                    cmd.container_id
                )));
            }
        }
        if let Some(prev) = cmd.prev_result()? {
            for ip in prev.ips.iter().map(|c| c.address.addr()) {
                if conf.ranges.iter().any(|s| s.contains(ip)) && !held.contains(&ip) {
                    return Err(CniError::internal(format!(
                        "host-local: {ip} from prevResult is not reserved for container {}",
                        cmd.container_id
                    )));
                }
            }
        }
        Ok(())
    }

    fn gc(&self, cmd: &Command) -> Result<(), CniError> {
        let (name, data_dir) = config::load_location(cmd)?;
        let Some(valid) = gc::valid_attachments(cmd)? else {
            // Without the list every reservation would look stale: keep them.
            log::warn!("GC without cni.dev/valid-attachments: nothing released");
            return Ok(());
        };
        let Some(mut store) = DiskStore::open_existing(&data_dir, &name)? else { return Ok(()) };
        let leftovers = store.remove_leftovers()?;
        if leftovers > 0 {
            log::info!("GC of network {name}: removed {leftovers} temporary files of killed calls");
        }
        let released = allocator::gc(&mut store, &valid)?;
        if !released.is_empty() {
            log::info!("GC of network {name}: released {released:?}");
        }
        Ok(())
    }

    fn status(&self, cmd: &Command) -> Result<(), CniError> {
        let conf = config::load(cmd, false)?;
        let unavailable = |msg: String| CniError::new(NOT_AVAILABLE, msg);
        let store = DiskStore::open(&conf.data_dir, &conf.name)
            .map_err(|e| unavailable(e.msg.clone()).with_details(e.details))?;
        nix::unistd::access(store.dir(), nix::unistd::AccessFlags::W_OK).map_err(|e| {
            unavailable(format!("the host-local store {} is not writable", store.dir().display()))
                .with_details(e.to_string())
        })?;
        let reservations = store.reservations().map_err(|e| unavailable(e.msg.clone()).with_details(e.details))?;
        let full: Vec<String> = conf
            .ranges
            .iter()
            .enumerate()
            .filter(|(_, set)| allocator::free_in_set(set, &reservations) == 0)
            .map(|(i, set)| format!("range set {i} ({set})"))
            .collect();
        if !full.is_empty() {
            return Err(unavailable(format!("no IP addresses available in {}", full.join(", ")))
                .with_details(format!("network {}: every address is reserved, ADD would fail", conf.name)));
        }
        Ok(())
    }
}
