//! ptp: a point-to-point veth between the host and the container. The host
//! end holds the gateway as a host address (/32, /128) and a host route to
//! the container; the container reaches everything through the gateway.

use ipnet::IpNet;
use serde::Deserialize;

use super::shared::iface_config;
use super::shared::masquerade;
use super::shared::veth_plugin::{
    self, attachment, check_container_veth, enable_forwarding, first_host, host_veth_tag, rollback, veth_interfaces,
    Made, NftUse,
};
use super::shared::{link_plugin, result_check};
use crate::cni::fault;
use crate::cni::{ipam, Applet, CniError, CniResult, Command};
use crate::netlink::route::{RouteEntry, SCOPE_LINK};
use crate::netlink::veth::{self, ContainerVeth};
use crate::netlink::{NetNs, Netlink};

pub struct Ptp;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Conf {
    ip_masq: bool,
    ip_masq_backend: Option<String>,
    mtu: u32,
}

fn host_prefix(ip: &IpNet) -> u8 {
    if ip.addr().is_ipv4() {
        32
    } else {
        128
    }
}

impl Applet for Ptp {
    fn validate(&self, cmd: &Command) -> Result<(), CniError> {
        let conf: Conf = cmd.parse_config()?;
        masquerade::check_backend(conf.ip_masq_backend.as_deref())?;
        if !ipam::has_ipam(cmd) {
            return Err(CniError::invalid_config("ptp needs an ipam section with a type"));
        }
        cmd.prev_result()?;
        ipam::validate(cmd)
    }

    fn add(&self, cmd: &Command) -> Result<CniResult, CniError> {
        let conf: Conf = cmd.parse_config()?;
        masquerade::check_backend(conf.ip_masq_backend.as_deref())?;
        ipam::validate(cmd)?;
        let (ns, cont) = link_plugin::open_container(cmd)?;
        let host = Netlink::new()?;
        ipam::add_then(cmd, |ipam_result| {
            let mut made = Made::default();
            let res = setup(cmd, &conf, &host, &ns, &cont, ipam_result, &mut made);
            if res.is_err() {
                rollback(cmd, &host, &ns, &made, NftUse { masq: conf.ip_masq, spoof: false });
            }
            res
        })
    }

    fn del(&self, cmd: &Command) -> Result<(), CniError> {
        let conf: Conf = cmd.parse_config()?;
        // The host routes go with the host end of the pair.
        veth_plugin::del(cmd, NftUse { masq: conf.ip_masq, spoof: false })
    }

    fn gc(&self, cmd: &Command) -> Result<(), CniError> {
        let conf: Conf = cmd.parse_config()?;
        veth_plugin::gc(cmd, NftUse { masq: conf.ip_masq, spoof: false })
    }

    fn status(&self, cmd: &Command) -> Result<(), CniError> {
        link_plugin::ipam_status(cmd)
    }

    fn check(&self, cmd: &Command) -> Result<(), CniError> {
        let conf: Conf = cmd.parse_config()?;
        ipam::check(cmd)?;
        let prev = cmd.prev_result()?.ok_or_else(|| CniError::invalid_config("Required prevResult missing"))?;
        let (_ns, cont) = link_plugin::open_container(cmd)?;
        let link = check_container_veth(cmd, &prev, &cont)?;
        result_check::expect_container_l3(cmd, &prev, &cont, &link)?;
        if conf.ip_masq {
            let ips: Vec<IpNet> = iface_config::ips_for(&prev, &cmd.ifname, &cmd.netns).map(|ip| ip.address).collect();
            masquerade::check(&attachment(cmd), &ips)?;
        }
        Ok(())
    }
}

fn setup(
    cmd: &Command,
    conf: &Conf,
    host: &Netlink,
    ns: &NetNs,
    cont: &Netlink,
    ipam_result: CniResult,
    made: &mut Made,
) -> Result<CniResult, CniError> {
    let mut result = ipam_result;
    for ip in &mut result.ips {
        ip.interface = Some(1);
        if ip.gateway.is_none() {
            ip.gateway = Some(first_host(&ip.address));
        }
    }
    let addrs: Vec<IpNet> = result.ips.iter().map(|ip| ip.address).collect();
    enable_forwarding(&addrs)?;
    fault::step("ptp: forwarding")?;

    let alias = host_veth_tag(cmd);
    let want = ContainerVeth {
        container_id: &cmd.container_id,
        ifname: &cmd.ifname,
        mtu: (conf.mtu > 0).then_some(conf.mtu),
        alias: &alias,
        ..Default::default()
    };
    let pair = veth::create_container_veth(host, ns, cont, &want)?;
    made.veth = true;
    result.interfaces = veth_interfaces(cmd, &pair).into();

    // Container side: the addresses and IPAM routes, then every packet is
    // sent to the gateway: the on-link subnet route the kernel added is
    // replaced by "gw/32 dev if" plus "subnet via gw".
    veth::prepare_container_sysctls(ns, &cmd.ifname, false)?;
    fault::step("ptp: container sysctls")?;
    iface_config::configure_link(ns, cont, &pair.container, &cmd.netns, &result, iface_config::ArpNotify::On)?;
    let index = pair.container.index;
    // A tentative address cannot be a route's source: wait for the kernel
    // to clear the flag (asynchronous after link-up even without DAD).
    if addrs.iter().any(|a| a.addr().is_ipv6()) {
        veth::wait_addresses_settled(cont, index, std::time::Duration::from_secs(10))?;
    }
    for ip in &result.ips {
        let Some(gw) = ip.gateway else { continue };
        let subnet = ip.address.trunc();
        let full = host_prefix(&ip.address);
        if ip.address.prefix_len() < full {
            let auto = RouteEntry { dst: Some(subnet), oif: Some(index), ..Default::default() };
            match cont.del_route(&auto) {
                Err(e) if !e.is_not_found() => return Err(e.into()),
                _ => {}
            }
            fault::step("ptp: on-link route removed")?;
        }
        let to_gw = RouteEntry {
            dst: IpNet::new(gw, full).ok(),
            oif: Some(index),
            scope: Some(SCOPE_LINK),
            src: Some(ip.address.addr()),
            ..Default::default()
        };
        add_route(cont, &to_gw)?;
        fault::step("ptp: route to the gateway")?;
        if ip.address.prefix_len() < full {
            let via_gw = RouteEntry {
                dst: Some(subnet),
                gw: Some(gw),
                oif: Some(index),
                src: Some(ip.address.addr()),
                ..Default::default()
            };
            add_route(cont, &via_gw)?;
            fault::step("ptp: subnet route via the gateway")?;
        }
    }

    // Host side: the gateway as a host address, and the container behind it.
    for ip in &result.ips {
        let Some(gw) = ip.gateway else { continue };
        let full = host_prefix(&ip.address);
        let gw_net = IpNet::new(gw, full).map_err(|e| CniError::internal(e.to_string()))?;
        match host.add_addr(pair.host.index, gw_net, true) {
            Err(e) if !e.is_exists() => return Err(e.into()),
            _ => {}
        }
        fault::step("ptp: host address")?;
        let to_container = RouteEntry {
            dst: IpNet::new(ip.address.addr(), full).ok(),
            oif: Some(pair.host.index),
            scope: Some(SCOPE_LINK),
            ..Default::default()
        };
        // The host end must be up before a route can use it.
        host.set_up(pair.host.index)?;
        add_route(host, &to_container)?;
        fault::step("ptp: host route")?;
    }
    host.set_up(pair.host.index)?;
    fault::step("ptp: host end up")?;

    if conf.ip_masq {
        made.nft = true;
        let mut additions = masquerade::Additions::default();
        additions.masquerade(&addrs);
        masquerade::apply(&attachment(cmd), &additions)?;
    }
    if let Some(dns) = cmd.conf.dns.as_ref().filter(|d| !d.is_empty()) {
        result.dns = dns.clone();
    }
    fault::step("ptp: result ready")?;
    Ok(result)
}

fn add_route(nl: &Netlink, r: &RouteEntry) -> Result<(), CniError> {
    match nl.add_route(r) {
        Err(e) if !e.is_exists() => Err(e.into()),
        _ => Ok(()),
    }
}
