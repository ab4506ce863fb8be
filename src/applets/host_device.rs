//! host-device: moves an existing host interface into the container as
//! CNI_IFNAME, and back to the host under its old name on DEL. The old name
//! is kept in the interface's ifalias, as the reference does, so a DEL by
//! either implementation restores it.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::shared::link_plugin::{self, address_or_up, check_interface, open_container};
use crate::cni::{ipam, Applet, CniError, CniResult, Command};
use crate::netlink::{fault_step, mac, Link, NetNs, Netlink};

pub struct HostDevice;

/// sysfs; CNIBOX_SYSFS names another root (tests, unusual installs).
fn sysfs() -> PathBuf {
    std::env::var_os("CNIBOX_SYSFS").map(PathBuf::from).unwrap_or_else(|| "/sys".into())
}

/// `/sys/bus/<bus>/devices`.
fn bus_devices(bus: &str) -> PathBuf {
    sysfs().join("bus").join(bus).join("devices")
}

/// Drivers that hand a PCI function to user space (DPDK): such a device has
/// no netdev to move, only IPAM is done.
const USERSPACE_DRIVERS: &[&str] = &["vfio-pci", "uio_pci_generic", "igb_uio"];

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Conf {
    device: String,
    hwaddr: String,
    kernelpath: String,
    #[serde(rename = "pciBusID")]
    pci_bus_id: String,
}

#[derive(Debug, Default)]
struct Selector {
    device: String,
    hwaddr: String,
    kernelpath: String,
    pci: String,
    /// A device on the auxiliary bus (a sub-function, say), by its name there.
    aux: String,
    /// runtimeConfig.deviceID: a PCI address or an auxiliary device, told
    /// apart by where sysfs has it (`load`).
    device_id: String,
    /// The PCI function is bound to a user-space driver.
    dpdk: bool,
}

/// The selector as configured, checked without looking at the system.
fn parse(cmd: &Command) -> Result<Selector, CniError> {
    let conf: Conf = cmd.parse_config()?;
    let pci = conf.pci_bus_id;
    let device_id = cmd.runtime_config::<String>("deviceID")?.unwrap_or_default();
    let named = [&conf.device, &conf.hwaddr, &conf.kernelpath, &pci, &device_id];
    if named.iter().all(|n| n.is_empty()) {
        return Err(CniError::invalid_config(r#"specify either "device", "hwaddr", "kernelpath" or "pciBusID""#));
    }
    for (what, id) in [("PCI address", &pci), ("deviceID", &device_id)] {
        if id.contains('/') || *id == "." || *id == ".." {
            return Err(CniError::invalid_config(format!("invalid {what} {id:?}")));
        }
    }
    // The first of device, hwaddr, ... given picks the link.
    if conf.device.is_empty() && !conf.hwaddr.is_empty() && mac::parse(&conf.hwaddr).is_none() {
        return Err(CniError::invalid_config(format!("failed to parse MAC address {:?}", conf.hwaddr)));
    }
    Ok(Selector {
        device: conf.device,
        hwaddr: conf.hwaddr,
        kernelpath: conf.kernelpath,
        pci,
        aux: String::new(),
        device_id,
        dpdk: false,
    })
}

fn load(cmd: &Command) -> Result<Selector, CniError> {
    let mut sel = parse(cmd)?;
    resolve_device_id(&mut sel)?;
    sel.dpdk = !sel.pci.is_empty() && has_userspace_driver(&sel.pci)?;
    Ok(sel)
}

/// runtimeConfig.deviceID names a PCI device (it replaces pciBusID) or,
/// when sysfs has no such PCI device, one on the auxiliary bus, as the
/// reference's does; neither is an error.
fn resolve_device_id(sel: &mut Selector) -> Result<(), CniError> {
    let id = std::mem::take(&mut sel.device_id);
    if id.is_empty() {
        return Ok(());
    }
    if bus_devices("pci").join(&id).exists() {
        sel.pci = id;
    } else if bus_devices("auxiliary").join(&id).exists() {
        sel.pci.clear();
        sel.aux = id;
    } else {
        return Err(CniError::invalid_config(format!("runtime config deviceID {id} not found or unsupported")));
    }
    Ok(())
}

fn has_userspace_driver(pci: &str) -> Result<bool, CniError> {
    let link = bus_devices("pci").join(pci).join("driver");
    let driver = std::fs::canonicalize(&link)
        .map_err(|e| CniError::internal(format!("error with host device {pci}")).with_details(e.to_string()))?;
    let name = driver.file_name().and_then(|n| n.to_str()).unwrap_or("");
    Ok(USERSPACE_DRIVERS.contains(&name))
}

/// The first entry of a device's `net` directory that is a link of `nl`.
fn first_netdev(nl: &Netlink, net_dir: &Path) -> Result<Option<Link>, CniError> {
    let entries = std::fs::read_dir(net_dir)
        .map_err(|e| CniError::internal(format!("failed to read {}", net_dir.display())).with_details(e.to_string()))?;
    let mut names: Vec<String> = entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
    names.sort();
    for name in names {
        if let Some(link) = nl.link(&name)? {
            return Ok(Some(link));
        }
    }
    Ok(None)
}

/// The host link the selector names (first of device, hwaddr, kernelpath,
/// pci, auxiliary device).
fn find_host_link(nl: &Netlink, sel: &Selector) -> Result<Link, CniError> {
    let found = if !sel.device.is_empty() {
        nl.link(&sel.device)?
    } else if !sel.hwaddr.is_empty() {
        let want = mac::parse(&sel.hwaddr)
            .ok_or_else(|| CniError::invalid_config(format!("failed to parse MAC address {:?}", sel.hwaddr)))?;
        let want = mac::format(&want);
        nl.links()?.into_iter().find(|l| l.mac == want)
    } else if !sel.kernelpath.is_empty() {
        let p = Path::new(&sel.kernelpath);
        if !p.is_absolute() || !sel.kernelpath.starts_with("/sys/devices/") || sel.kernelpath.contains("/../") {
            return Err(CniError::invalid_config(format!(
                "kernel device path {:?} must be absolute and begin with /sys/devices/",
                sel.kernelpath
            )));
        }
        first_netdev(nl, &p.join("net"))?
    } else if !sel.aux.is_empty() {
        first_netdev(nl, &bus_devices("auxiliary").join(&sel.aux).join("net"))?
    } else {
        let mut dir = bus_devices("pci").join(&sel.pci).join("net");
        if !dir.exists() {
            dir = virtio_net_dir(&sel.pci)
                .ok_or_else(|| CniError::internal(format!("no net directory under pci device {}", sel.pci)))?;
        }
        first_netdev(nl, &dir)?
    };
    found.ok_or_else(|| CniError::internal("failed to find host device"))
}

/// `/sys/bus/pci/devices/<pci>/virtio*/net` (virtio devices nest one level deeper).
fn virtio_net_dir(pci: &str) -> Option<PathBuf> {
    let dev = bus_devices("pci").join(pci);
    let mut subs: Vec<PathBuf> = std::fs::read_dir(&dev)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("virtio"))
        .map(|e| e.path().join("net"))
        .filter(|p| p.is_dir())
        .collect();
    subs.sort();
    subs.into_iter().next()
}

/// Moves host link `link` into the container as `ifname`, its old name kept
/// as its alias; undoes the move when a later step fails.
fn move_in(
    host_nl: &Netlink,
    host_ns: &NetNs,
    ns: &NetNs,
    ctr_nl: &Netlink,
    link: &Link,
    ifname: &str,
) -> Result<Link, CniError> {
    if ctr_nl.link(ifname)?.is_some() {
        return Err(CniError::internal(format!("container already has an interface {ifname}")));
    }
    host_nl.set_netns(link.index, ns)?;
    let inside = (|| {
        fault_step("host-device: moved into the container")?;
        let moved = ctr_nl.require_link(&link.name)?;
        // Devices can be renamed only when down.
        ctr_nl.set_down(moved.index)?;
        ctr_nl.set_alias(moved.index, &link.name)?;
        fault_step("host-device: alias set")?;
        ctr_nl.set_name(moved.index, ifname)?;
        fault_step("host-device: renamed")?;
        ctr_nl.require_link(ifname)
    })();
    match inside {
        Ok(l) => Ok(l),
        Err(e) => {
            let name = if ctr_nl.link(ifname).ok().flatten().is_some() { ifname } else { link.name.as_str() };
            if let Err(undo) = move_out(ctr_nl, host_ns, name) {
                log::warn!("moving {} back to the host: {undo}", link.name);
            }
            Err(e.into())
        }
    }
}

/// Moves container link `ifname` back to `host_ns` under the name kept in
/// its alias. On failure it keeps (or gets back) the name `ifname`, so the
/// DEL can be retried.
fn move_out(ctr_nl: &Netlink, host_ns: &NetNs, ifname: &str) -> Result<(), CniError> {
    let Some(dev) = ctr_nl.link(ifname)? else { return Ok(()) };
    ctr_nl.set_down(dev.index)?;
    let original = if dev.alias.is_empty() { dev.name.clone() } else { dev.alias.clone() };
    let moved = (|| {
        if original != dev.name {
            ctr_nl.set_name(dev.index, &original)?;
        }
        ctr_nl.set_netns(dev.index, host_ns)
    })();
    if let Err(e) = moved {
        let _ = ctr_nl.set_name(dev.index, ifname);
        if dev.up {
            let _ = ctr_nl.set_up(dev.index);
        }
        return Err(
            CniError::internal(format!("failed to move {ifname} back to the host as {original}")).with_details(e.msg)
        );
    }
    // The alias was only ours to keep the name: clear it in the host.
    if let Ok(host_nl) = Netlink::in_netns(host_ns) {
        if let Ok(Some(l)) = host_nl.link(&original) {
            if l.alias == original {
                let _ = host_nl.set_alias(l.index, "");
            }
        }
    }
    Ok(())
}

/// DEL's part for the device: back to the host. With the netns gone the
/// kernel already returned a physical device to the initial netns (and a
/// virtual one went with the netns). The reference fails such a DEL; a DEL
/// that can never succeed would only make the runtime retry forever.
fn move_out_for_del(cmd: &Command) -> Result<(), CniError> {
    let Some((_ns, ctr_nl)) = link_plugin::open_container_for_del(cmd)? else { return Ok(()) };
    move_out(&ctr_nl, &NetNs::current()?, &cmd.ifname)
}

impl Applet for HostDevice {
    fn validate(&self, cmd: &Command) -> Result<(), CniError> {
        parse(cmd)?;
        ipam::validate(cmd)
    }

    fn add(&self, cmd: &Command) -> Result<CniResult, CniError> {
        let sel = load(cmd)?;
        ipam::validate(cmd)?;
        let (ns, ctr_nl) = open_container(cmd)?;
        if sel.dpdk {
            // No netdev: only addresses to report.
            if !ipam::has_ipam(cmd) {
                return Ok(CniResult::default());
            }
            let mut result = ipam::add(cmd)?;
            for ip in &mut result.ips {
                ip.interface = None;
            }
            if let Some(dns) = cmd.conf.dns.as_ref().filter(|d| !d.is_empty()) {
                result.dns = dns.clone();
            }
            return Ok(result);
        }
        let host_ns = NetNs::current()?;
        let host_nl = Netlink::new()?;
        let host_link = find_host_link(&host_nl, &sel)?;
        let link = move_in(&host_nl, &host_ns, &ns, &ctr_nl, &host_link, &cmd.ifname)?;
        address_or_up(cmd, &ns, &ctr_nl, &link).inspect_err(|_| {
            if let Err(e) = move_out(&ctr_nl, &host_ns, &cmd.ifname) {
                log::warn!("rolling back: {e}");
            }
        })
    }

    fn del(&self, cmd: &Command) -> Result<(), CniError> {
        // A PCI device that vanished from sysfs is no reason to fail DEL.
        let dpdk = match load(cmd) {
            Ok(sel) => sel.dpdk,
            Err(e) if e.code == crate::cni::error::INVALID_CONFIG => return Err(e),
            Err(_) => false,
        };
        let mut first_error = None;
        if ipam::has_ipam(cmd) {
            if let Err(e) = ipam::del(cmd) {
                log::warn!("IPAM DEL: {e}");
                first_error.get_or_insert(e);
            }
        }
        if !dpdk {
            if let Err(e) = move_out_for_del(cmd) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn check(&self, cmd: &Command) -> Result<(), CniError> {
        let sel = load(cmd)?;
        if sel.dpdk {
            if ipam::has_ipam(cmd) {
                ipam::check(cmd)?;
            }
            return Ok(());
        }
        check_interface(cmd).map(|_| ())
    }

    fn gc(&self, cmd: &Command) -> Result<(), CniError> {
        link_plugin::ipam_gc(cmd)
    }

    fn status(&self, cmd: &Command) -> Result<(), CniError> {
        link_plugin::ipam_status(cmd)
    }
}
