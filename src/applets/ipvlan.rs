//! ipvlan: an ipvlan link (l2, l3 or l3s) on a master device, handed to the
//! container as CNI_IFNAME and configured from IPAM, or from the
//! prevResult's addresses when chained without IPAM.

use rtnetlink::packet_route::link::{InfoData, InfoIpVlan, IpVlanMode};
use rtnetlink::LinkIpVlan;
use serde::Deserialize;

use super::shared::iface_config;
use super::shared::link_plugin::{self, open_container};
use super::shared::result_check;
use crate::cni::fault;
use crate::cni::{ipam, Applet, CniError, CniResult, Command};
use crate::netlink::moved_link::{self, Target};
use crate::netlink::Netlink;

pub struct Ipvlan;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Conf {
    master: String,
    mode: String,
    mtu: i64,
    link_in_container: bool,
}

fn parse_mode(s: &str) -> Result<IpVlanMode, CniError> {
    match s {
        "" | "l2" => Ok(IpVlanMode::L2),
        "l3" => Ok(IpVlanMode::L3),
        "l3s" => Ok(IpVlanMode::L3S),
        _ => Err(CniError::invalid_config(format!("unknown ipvlan mode: {s:?}"))),
    }
}

impl Conf {
    fn load(cmd: &Command) -> Result<(Conf, IpVlanMode), CniError> {
        let conf: Conf = cmd.parse_config()?;
        let mode = parse_mode(&conf.mode)?;
        Ok((conf, mode))
    }

    /// The master's name: configured, else the single interface of a
    /// prevResult, else "" (the default-route link, see `find_master`).
    fn master_name(&self, prev: Option<&CniResult>) -> Result<String, CniError> {
        if !self.master.is_empty() {
            return Ok(self.master.clone());
        }
        match prev {
            Some(p) if p.interfaces.len() == 1 && !p.interfaces[0].name.is_empty() => Ok(p.interfaces[0].name.clone()),
            Some(_) => {
                Err(CniError::invalid_config("chained master failure: prevResult lacks a single named interface"))
            }
            None => Ok(String::new()),
        }
    }
}

impl Applet for Ipvlan {
    fn validate(&self, cmd: &Command) -> Result<(), CniError> {
        let (conf, _mode) = Conf::load(cmd)?;
        let prev = cmd.prev_result()?;
        conf.master_name(prev.as_ref())?;
        if ipam::has_ipam(cmd) {
            ipam::validate(cmd)?;
        }
        Ok(())
    }

    fn add(&self, cmd: &Command) -> Result<CniResult, CniError> {
        let (conf, mode) = Conf::load(cmd)?;
        let prev = cmd.prev_result()?;
        // Chained without IPAM: the addresses come from the previous plugin.
        let prev_ips = match &prev {
            Some(p) if !ipam::has_ipam(cmd) && !p.ips.is_empty() => Some(p.clone()),
            _ => None,
        };
        if prev_ips.is_none() && !ipam::has_ipam(cmd) {
            return Err(CniError::invalid_config(
                "ipam is required unless chained after a plugin whose result has IP addresses",
            ));
        }
        let (ns, cont) = open_container(cmd)?;
        let host = if conf.link_in_container { None } else { Some(Netlink::new()?) };
        let creator = host.as_ref().unwrap_or(&cont);
        let master = link_plugin::find_master(creator, &conf.master_name(prev.as_ref())?)?;
        link_plugin::check_mtu(&master, conf.mtu)?;
        let mut msg = LinkIpVlan::new(&cmd.ifname, master.index, mode);
        if conf.mtu > 0 {
            msg = msg.mtu(conf.mtu as u32);
        }
        let target = Target { container: &ns, container_nl: &cont, creator, creator_is_container: host.is_none() };
        let link = moved_link::create_in_container(&target, msg.build(), &cmd.ifname)
            .map_err(|e| CniError::internal(format!("failed to create ipvlan: {}", e.msg)))?;
        moved_link::enable_notify(&ns, &cmd.ifname);
        let configured = fault::step("ipvlan: link in the container").and_then(|_| match prev_ips {
            Some(prev) => {
                let result = link_plugin::one_interface_result(cmd, &link, Some(prev));
                iface_config::configure_iface(&ns, &cont, &cmd.ifname, &cmd.netns, &result)
                    .map(|_| result)
                    .map_err(Into::into)
            }
            None => link_plugin::address_or_up(cmd, &ns, &cont, &link),
        });
        configured.inspect_err(|_| {
            let _ = cont.del_link(link.index);
        })
    }

    fn del(&self, cmd: &Command) -> Result<(), CniError> {
        link_plugin::del_link_and_ipam(cmd)
    }

    fn check(&self, cmd: &Command) -> Result<(), CniError> {
        let (conf, mode) = Conf::load(cmd)?;
        let (cont, link) = link_plugin::check_interface(cmd)?;
        result_check::expect_kind(&link, "ipvlan")?;
        // Without a configured master, ADD took the default-route link or the
        // previous plugin's interface, which the prevResult no longer names:
        // only a configured master can be compared.
        if !conf.master.is_empty() {
            let host = if conf.link_in_container { None } else { Some(Netlink::new()?) };
            let master = link_plugin::find_master(host.as_ref().unwrap_or(&cont), &conf.master)?;
            result_check::expect_parent(&link, &master)?;
        }
        let have = match cont.link_info_data(link.index)? {
            Some(InfoData::IpVlan(infos)) => infos.into_iter().find_map(|i| match i {
                InfoIpVlan::Mode(m) => Some(m),
                _ => None,
            }),
            _ => None,
        };
        if have != Some(mode) {
            return Err(CniError::internal(format!(
                "container ipvlan mode {have:?} does not match the configured {mode:?}"
            )));
        }
        Ok(())
    }

    fn gc(&self, cmd: &Command) -> Result<(), CniError> {
        link_plugin::ipam_gc(cmd)
    }

    fn status(&self, cmd: &Command) -> Result<(), CniError> {
        let conf: Conf = cmd.parse_config()?;
        // Without a configured master, ADD takes prevResult's interface or
        // the default-route link: neither is known to STATUS.
        if conf.master.is_empty() {
            return link_plugin::ipam_status(cmd);
        }
        link_plugin::master_status(cmd, &conf.master, conf.link_in_container)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(parse_mode("").unwrap(), IpVlanMode::L2);
        assert_eq!(parse_mode("l2").unwrap(), IpVlanMode::L2);
        assert_eq!(parse_mode("l3").unwrap(), IpVlanMode::L3);
        assert_eq!(parse_mode("l3s").unwrap(), IpVlanMode::L3S);
        assert_eq!(parse_mode("L2").unwrap_err().code, 7);
        assert_eq!(parse_mode("bridge").unwrap_err().code, 7);
    }

    #[test]
    fn keys_are_lenient() {
        let v = serde_json::json!({"Master": "eth1", "MODE": "l3", "mtu": 1400, "linkincontainer": true});
        let c: Conf = crate::cni::lenient::parse_config(&v, "test").unwrap();
        assert_eq!((c.master.as_str(), c.mode.as_str(), c.mtu, c.link_in_container), ("eth1", "l3", 1400, true));
    }

    #[test]
    fn chained_master() {
        let conf = Conf::default();
        let one = CniResult {
            interfaces: vec![crate::cni::Interface { name: "eth0".into(), ..Default::default() }],
            ..Default::default()
        };
        assert_eq!(conf.master_name(Some(&one)).unwrap(), "eth0");
        assert_eq!(conf.master_name(None).unwrap(), "");
        let two = CniResult { interfaces: vec![one.interfaces[0].clone(); 2], ..Default::default() };
        assert_eq!(conf.master_name(Some(&two)).unwrap_err().code, 7);
        let named = Conf { master: "m0".into(), ..Default::default() };
        assert_eq!(named.master_name(Some(&two)).unwrap(), "m0");
    }
}
