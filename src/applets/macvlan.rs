//! macvlan: a macvlan link on a host (or container) master, moved into the
//! container as CNI_IFNAME, optionally addressed by IPAM.

use rtnetlink::packet_route::link::{InfoData, InfoMacVlan, MacVlanMode};
use rtnetlink::LinkMacVlan;
use serde::Deserialize;

use super::shared::link_plugin::{
    self, address_or_up, check_interface, del_link_and_ipam, open_container, requested_mac,
};
use crate::cni::{ipam, Applet, CniContext, CniError, CniResult, Command};
use crate::netlink::moved_link::{self, Target};
use crate::netlink::Netlink;

pub struct Macvlan;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Conf {
    master: String,
    mode: String,
    mtu: i64,
    mac: String,
    link_in_container: bool,
    bcqueuelen: u32,
}

fn parse_mode(s: &str) -> Result<MacVlanMode, CniError> {
    Ok(match s {
        "" | "bridge" => MacVlanMode::Bridge,
        "private" => MacVlanMode::Private,
        "vepa" => MacVlanMode::Vepa,
        "passthru" => MacVlanMode::Passthrough,
        other => return Err(CniError::invalid_config(format!("unknown macvlan mode: {other:?}"))),
    })
}

/// The macvlan mode of link #index, read from its link info.
fn link_mode(nl: &Netlink, index: u32) -> Result<Option<MacVlanMode>, CniError> {
    let data = nl.link_info_data(index).cni_internal("reading the macvlan's link info")?;
    let Some(InfoData::MacVlan(data)) = data else { return Ok(None) };
    Ok(data.into_iter().find_map(|d| match d {
        InfoMacVlan::Mode(m) => Some(m),
        _ => None,
    }))
}

/// The configuration with everything checked that needs no system access.
fn load(cmd: &Command) -> Result<(Conf, MacVlanMode, Option<Vec<u8>>), CniError> {
    let conf: Conf = cmd.parse_config()?;
    cmd.args()?.check_known(super::shared::link_plugin::KNOWN_ARGS)?;
    let mode = parse_mode(&conf.mode)?;
    let mac = requested_mac(cmd, &conf.mac)?;
    if conf.mtu < 0 {
        return Err(CniError::invalid_config(format!("invalid MTU {}", conf.mtu)));
    }
    Ok((conf, mode, mac))
}

impl Applet for Macvlan {
    fn validate(&self, cmd: &Command) -> Result<(), CniError> {
        load(cmd)?;
        ipam::validate(cmd)
    }

    fn add(&self, cmd: &Command) -> Result<CniResult, CniError> {
        let (conf, mode, mac) = load(cmd)?;
        ipam::validate(cmd)?;
        let (ns, ctr_nl) = open_container(cmd)?;
        let host_nl = if conf.link_in_container { None } else { Some(Netlink::new()?) };
        let creator = host_nl.as_ref().unwrap_or(&ctr_nl);
        let master = link_plugin::find_master(creator, &conf.master)?;
        link_plugin::check_mtu(&master, conf.mtu)?;

        let mut b = LinkMacVlan::new("", master.index, mode);
        if conf.mtu > 0 {
            b = b.mtu(conf.mtu as u32);
        }
        if let Some(mac) = mac {
            b = b.address(mac);
        }
        if conf.bcqueuelen > 0 {
            b = b.append_info_data(InfoMacVlan::BcQueueLen(conf.bcqueuelen));
        }
        let target =
            Target { container: &ns, container_nl: &ctr_nl, creator, creator_is_container: conf.link_in_container };
        let link = moved_link::create_in_container(&target, b.build(), &cmd.ifname).map_err(|e| {
            CniError::internal(format!("failed to create macvlan on {}", master.name)).with_details(e.msg)
        })?;
        moved_link::enable_notify(&ns, &cmd.ifname);
        crate::cni::fault::step("macvlan: link in the container")
            .and_then(|_| address_or_up(cmd, &ns, &ctr_nl, &link))
            .inspect_err(|_| {
                let _ = ctr_nl.del_link(link.index);
            })
    }

    fn del(&self, cmd: &Command) -> Result<(), CniError> {
        del_link_and_ipam(cmd)
    }

    fn check(&self, cmd: &Command) -> Result<(), CniError> {
        let conf: Conf = cmd.parse_config()?;
        let want = parse_mode(&conf.mode)?;
        let (nl, link) = check_interface(cmd)?;
        if link.kind != "macvlan" {
            return Err(CniError::internal(format!("{} is a {:?} link, not a macvlan", link.name, link.kind)));
        }
        let mode = link_mode(&nl, link.index)?;
        if mode != Some(want) {
            return Err(CniError::internal(format!("{} has macvlan mode {mode:?}, expected {want:?}", link.name)));
        }
        Ok(())
    }

    fn gc(&self, cmd: &Command) -> Result<(), CniError> {
        link_plugin::ipam_gc(cmd)
    }

    /// The network can take containers when its master exists (a master in
    /// the container's netns cannot be checked without a container).
    fn status(&self, cmd: &Command) -> Result<(), CniError> {
        let conf: Conf = cmd.parse_config()?;
        link_plugin::master_status(cmd, &conf.master, conf.link_in_container)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(parse_mode("").unwrap(), MacVlanMode::Bridge);
        assert_eq!(parse_mode("passthru").unwrap(), MacVlanMode::Passthrough);
        assert_eq!(parse_mode("private").unwrap(), MacVlanMode::Private);
        assert_eq!(parse_mode("vepa").unwrap(), MacVlanMode::Vepa);
        assert_eq!(parse_mode("source").unwrap_err().code, 7);
    }
}
