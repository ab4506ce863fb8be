//! vlan: an 802.1Q link with `vlanId` on the `master` device, handed to the
//! container as CNI_IFNAME and configured from IPAM.

use rtnetlink::packet_route::link::{InfoData, InfoVlan};
use rtnetlink::LinkVlan;
use serde::Deserialize;

use super::shared::link_plugin::{self, open_container};
use super::shared::result_check;
use crate::cni::fault;
use crate::cni::{ipam, Applet, CniError, CniResult, Command};
use crate::netlink::moved_link::{self, Target};
use crate::netlink::Netlink;

pub struct Vlan;

/// The largest usable VLAN ID (4095 is reserved).
const MAX_VLAN_ID: i64 = 4094;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Conf {
    master: String,
    vlan_id: i64,
    mtu: i64,
    link_in_container: bool,
}

impl Conf {
    fn load(cmd: &Command) -> Result<Conf, CniError> {
        let conf: Conf = cmd.parse_config()?;
        conf.validate()?;
        Ok(conf)
    }

    fn validate(&self) -> Result<(), CniError> {
        if self.master.is_empty() {
            return Err(CniError::invalid_config(
                "\"master\" field is required. It specifies the host interface name to create the VLAN for",
            ));
        }
        if !(0..=MAX_VLAN_ID).contains(&self.vlan_id) {
            return Err(CniError::invalid_config(format!(
                "invalid VLAN ID {} (must be between 0 and {MAX_VLAN_ID} inclusive)",
                self.vlan_id
            )));
        }
        Ok(())
    }
}

impl Applet for Vlan {
    fn validate(&self, cmd: &Command) -> Result<(), CniError> {
        Conf::load(cmd)?;
        if !ipam::has_ipam(cmd) {
            return Err(CniError::invalid_config("ipam.type is required"));
        }
        ipam::validate(cmd)
    }

    fn add(&self, cmd: &Command) -> Result<CniResult, CniError> {
        let conf = Conf::load(cmd)?;
        if !ipam::has_ipam(cmd) {
            return Err(CniError::invalid_config("ipam.type is required"));
        }
        let (ns, cont) = open_container(cmd)?;
        let host = if conf.link_in_container { None } else { Some(Netlink::new()?) };
        let creator = host.as_ref().unwrap_or(&cont);
        let master = link_plugin::find_master(creator, &conf.master)?;
        link_plugin::check_mtu(&master, conf.mtu)?;
        let mut msg = LinkVlan::new(&cmd.ifname, master.index, conf.vlan_id as u16);
        if conf.mtu > 0 {
            msg = msg.mtu(conf.mtu as u32);
        }
        let target = Target { container: &ns, container_nl: &cont, creator, creator_is_container: host.is_none() };
        let link = moved_link::create_in_container(&target, msg.build(), &cmd.ifname)
            .map_err(|e| CniError::internal(format!("failed to create vlan: {}", e.msg)))?;
        let configured =
            fault::step("vlan: link in the container").and_then(|_| link_plugin::address_or_up(cmd, &ns, &cont, &link));
        configured.inspect_err(|_| {
            let _ = cont.del_link(link.index);
        })
    }

    /// Needs neither the master nor a valid vlanId: whatever the config
    /// says now, the container's link goes.
    fn del(&self, cmd: &Command) -> Result<(), CniError> {
        link_plugin::del_link_and_ipam(cmd)
    }

    fn check(&self, cmd: &Command) -> Result<(), CniError> {
        let conf = Conf::load(cmd)?;
        let (cont, link) = link_plugin::check_interface(cmd)?;
        result_check::expect_kind(&link, "vlan")?;
        let host = if conf.link_in_container { None } else { Some(Netlink::new()?) };
        let master = link_plugin::find_master(host.as_ref().unwrap_or(&cont), &conf.master)?;
        result_check::expect_parent(&link, &master)?;
        let id = match cont.link_info_data(link.index)? {
            Some(InfoData::Vlan(infos)) => infos.into_iter().find_map(|i| match i {
                InfoVlan::Id(id) => Some(i64::from(id)),
                _ => None,
            }),
            _ => None,
        };
        if id != Some(conf.vlan_id) {
            return Err(CniError::internal(format!(
                "{} has VLAN ID {id:?}, the config says {}",
                link.name, conf.vlan_id
            )));
        }
        if conf.mtu > 0 && i64::from(link.mtu) != conf.mtu {
            return Err(CniError::internal(format!(
                "{} has MTU {}, the config says {}",
                link.name, link.mtu, conf.mtu
            )));
        }
        Ok(())
    }

    fn gc(&self, cmd: &Command) -> Result<(), CniError> {
        link_plugin::ipam_gc(cmd)
    }

    fn status(&self, cmd: &Command) -> Result<(), CniError> {
        let conf: Conf = cmd.parse_config()?;
        link_plugin::master_status(cmd, &conf.master, conf.link_in_container)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(master: &str, vlan_id: i64) -> Conf {
        Conf { master: master.into(), vlan_id, ..Default::default() }
    }

    #[test]
    fn validation() {
        conf("eth0", 0).validate().unwrap();
        conf("eth0", 4094).validate().unwrap();
        assert_eq!(conf("eth0", 4095).validate().unwrap_err().code, 7);
        assert_eq!(conf("eth0", -1).validate().unwrap_err().code, 7);
        let e = conf("", 5).validate().unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("master"));
    }

    #[test]
    fn keys_are_lenient() {
        let v: serde_json::Value =
            serde_json::json!({"Master": "eth1", "vlanid": 12, "MTU": 1400, "linkInContainer": true});
        let c: Conf = crate::cni::lenient::parse_config(&v, "test").unwrap();
        assert_eq!((c.master.as_str(), c.vlan_id, c.mtu, c.link_in_container), ("eth1", 12, 1400, true));
    }
}
