//! tap: a persistent tap device inside the container (for VMs and user-space
//! network stacks), optionally a bridge port there, optionally addressed.

use serde::Deserialize;

use super::shared::link_plugin::{self, address_or_up, check_interface, open_container, requested_mac};
use super::shared::result_check;
use crate::cni::fault;
use crate::cni::{ipam, Applet, CniError, CniResult, Command};
use crate::netlink::tuntap::{self, TapSpec};
use crate::netlink::{sysctl, NetNs, Netlink};

pub struct Tap;

/// `cnibox tap make-device NAME [FLAGS]`: how `tuntap::create_tap_labelled`
/// makes a tap under another SELinux context (an exec'd child takes it on).
pub fn args_main(args: &[String]) -> i32 {
    let made = match args.split_first() {
        Some((verb, rest)) if verb == "make-device" => {
            TapSpec::from_args(rest).and_then(|spec| tuntap::create_tap(&spec).map_err(|e| e.to_string()))
        }
        _ => Err("usage: tap make-device NAME [--multi-queue] [--vnet-hdr] [--owner UID] [--group GID] \
             (creates a persistent tap in the current netns; as a plugin, tap takes no arguments)"
            .into()),
    };
    match made {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("tap: {e}");
            1
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Conf {
    multi_queue: bool,
    mtu: i64,
    mac: String,
    owner: Option<u32>,
    group: Option<u32>,
    selinux_context: String,
    bridge: String,
}

/// Everything after the device exists: MTU, MAC, bridge, addresses, up.
fn configure(
    cmd: &Command,
    conf: &Conf,
    mac: Option<Vec<u8>>,
    ns: &NetNs,
    nl: &Netlink,
) -> Result<CniResult, CniError> {
    fault::step("tap: created")?;
    let link = nl.require_link(&cmd.ifname)?;
    if conf.mtu > 0 {
        nl.set_mtu(link.index, conf.mtu as u32)?;
    }
    if let Some(mac) = mac {
        nl.set_mac(link.index, &mac)?;
    }
    fault::step("tap: mtu and mac")?;
    if !conf.bridge.is_empty() {
        let bridge = nl
            .link(&conf.bridge)?
            .ok_or_else(|| CniError::invalid_config(format!("bridge {:?} not found in the container", conf.bridge)))?;
        nl.set_master(link.index, bridge.index)?;
        fault::step("tap: bridge port")?;
    }
    if ipam::has_ipam(cmd) {
        let key = sysctl::iface_key("ipv4", &cmd.ifname, "arp_notify");
        if let Ok(Err(e)) = ns.run(|| sysctl::write(&key, "1")) {
            log::warn!("{e}");
        }
    }
    // Read back for the MAC the kernel picked.
    let link = nl.require_link(&cmd.ifname)?;
    address_or_up(cmd, ns, nl, &link)
}

/// The configuration with everything checked that needs no system access.
fn load(cmd: &Command) -> Result<(Conf, Option<Vec<u8>>), CniError> {
    let conf: Conf = cmd.parse_config()?;
    cmd.args()?.check_known(super::shared::link_plugin::KNOWN_ARGS)?;
    if conf.mtu < 0 || conf.mtu > 65535 {
        return Err(CniError::invalid_config(format!("invalid MTU {}", conf.mtu)));
    }
    let mac = requested_mac(cmd, &conf.mac)?;
    Ok((conf, mac))
}

impl Applet for Tap {
    fn validate(&self, cmd: &Command) -> Result<(), CniError> {
        load(cmd)?;
        ipam::validate(cmd)
    }

    fn add(&self, cmd: &Command) -> Result<CniResult, CniError> {
        let (conf, mac) = load(cmd)?;
        ipam::validate(cmd)?;
        let (ns, nl) = open_container(cmd)?;
        if nl.link(&cmd.ifname)?.is_some() {
            // TUNSETIFF would attach to an existing tap of that name.
            return Err(CniError::internal(format!("container already has an interface {}", cmd.ifname)));
        }
        let spec = TapSpec {
            name: &cmd.ifname,
            multi_queue: conf.multi_queue,
            // As the reference: the vnet header when owner and group are both given.
            vnet_hdr: conf.owner.is_some() && conf.group.is_some(),
            owner: conf.owner,
            group: conf.group,
        };
        if conf.selinux_context.is_empty() {
            ns.run(|| tuntap::create_tap(&spec))??;
        } else {
            ns.run(|| tuntap::create_tap_labelled(&spec, &conf.selinux_context))??;
        }
        configure(cmd, &conf, mac, &ns, &nl).inspect_err(|_| {
            let _ = nl.del_link_by_name(&cmd.ifname);
        })
    }

    fn del(&self, cmd: &Command) -> Result<(), CniError> {
        super::shared::link_plugin::del_link_and_ipam(cmd)
    }

    fn check(&self, cmd: &Command) -> Result<(), CniError> {
        let (_nl, link) = check_interface(cmd)?;
        result_check::expect_kind(&link, "tun")
    }

    fn gc(&self, cmd: &Command) -> Result<(), CniError> {
        link_plugin::ipam_gc(cmd)
    }

    fn status(&self, cmd: &Command) -> Result<(), CniError> {
        link_plugin::ipam_status(cmd)
    }
}
