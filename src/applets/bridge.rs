//! bridge: connects the container to a Linux bridge on the host through a
//! veth pair, optionally acting as the containers' gateway and masquerading
//! their outbound traffic.

use std::time::Duration;

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
use crate::cni::{ipam, Applet, CniError, CniResult, Command, Interface, Route};
use crate::netlink::brport::{PortState, PortVlan};
use crate::netlink::link_events::{LinkEvents, Only};
use crate::netlink::veth::{self, ContainerVeth};
use crate::netlink::{mac, sysctl, Link, NetNs, Netlink};

pub struct Bridge;

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct VlanTrunk {
    #[serde(rename = "minID")]
    min_id: Option<i64>,
    #[serde(rename = "maxID")]
    max_id: Option<i64>,
    id: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Conf {
    bridge: String,
    is_gateway: bool,
    is_default_gateway: bool,
    force_address: bool,
    ip_masq: bool,
    ip_masq_backend: Option<String>,
    mtu: u32,
    hairpin_mode: bool,
    promisc_mode: bool,
    vlan: i64,
    vlan_trunk: Option<Vec<VlanTrunk>>,
    preserve_default_vlan: bool,
    enabledad: bool,
    macspoofchk: bool,
    disable_container_interface: bool,
    port_isolation: bool,
}

impl Default for Conf {
    fn default() -> Self {
        Conf {
            bridge: "cni0".into(),
            is_gateway: false,
            is_default_gateway: false,
            force_address: false,
            ip_masq: false,
            ip_masq_backend: None,
            mtu: 0,
            hairpin_mode: false,
            promisc_mode: false,
            vlan: 0,
            vlan_trunk: None,
            // The reference keeps the default VLAN unless told otherwise.
            // As upstream (PR 1181): a VLAN port leaves the default VLAN.
            preserve_default_vlan: false,
            enabledad: false,
            macspoofchk: false,
            disable_container_interface: false,
            port_isolation: false,
        }
    }
}

/// The configuration, validated, with the derived values the steps need.
struct Plan {
    conf: Conf,
    /// Trunk VLANs as sorted inclusive ranges.
    trunk: Vec<(u16, u16)>,
    mac: Option<Vec<u8>>,
}

/// Inclusive ranges covering the trunk's VLAN ids, validated as the reference does.
fn trunk_ranges(trunk: &[VlanTrunk]) -> Result<Vec<(u16, u16)>, CniError> {
    let valid = |v: i64, what: &str| {
        if (1..=4094).contains(&v) {
            Ok(v as u16)
        } else {
            Err(CniError::invalid_config(format!("incorrect trunk {what} parameter")))
        }
    };
    let mut ids = std::collections::BTreeSet::new();
    for item in trunk {
        match (item.min_id, item.max_id) {
            (Some(lo), Some(hi)) => {
                let (lo, hi) = (valid(lo, "minID")?, valid(hi, "maxID")?);
                if hi < lo {
                    return Err(CniError::invalid_config("minID is greater than maxID in trunk parameter"));
                }
                ids.extend(lo..=hi);
            }
            (None, Some(_)) => {
                return Err(CniError::invalid_config(
                    "minID and maxID should be configured simultaneously, minID is missing",
                ))
            }
            (Some(_), None) => {
                return Err(CniError::invalid_config(
                    "minID and maxID should be configured simultaneously, maxID is missing",
                ))
            }
            (None, None) => {}
        }
        if let Some(id) = item.id {
            ids.insert(valid(id, "id")?);
        }
    }
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    for id in ids {
        match ranges.last_mut() {
            Some((_, hi)) if *hi + 1 == id => *hi = id,
            _ => ranges.push((id, id)),
        }
    }
    Ok(ranges)
}

fn nft_use(conf: &Conf) -> NftUse {
    NftUse { masq: conf.ip_masq, spoof: conf.macspoofchk }
}

fn plan(cmd: &Command) -> Result<Plan, CniError> {
    let mut conf: Conf = cmd.parse_config()?;
    if !(0..=4094).contains(&conf.vlan) {
        return Err(CniError::invalid_config(format!("invalid VLAN ID {} (must be between 0 and 4094)", conf.vlan)));
    }
    let trunk = trunk_ranges(conf.vlan_trunk.as_deref().unwrap_or_default())?;
    if conf.bridge.is_empty() {
        conf.bridge = "cni0".into();
    }
    crate::cni::skel::validate_ifname(&conf.bridge).map_err(|e| CniError::invalid_config(e.msg))?;
    masquerade::check_backend(conf.ip_masq_backend.as_deref())?;
    if conf.is_default_gateway {
        conf.is_gateway = true;
    }
    // The last source wins: CNI_ARGS, then args.cni, then runtimeConfig.
    let mut mac_text = cmd.args()?.get("MAC").map(str::to_string);
    if let Some(m) = cmd.args_cni::<String>("mac")?.filter(|m| !m.is_empty()) {
        mac_text = Some(m);
    }
    if let Some(m) = cmd.runtime_config::<String>("mac")?.filter(|m| !m.is_empty()) {
        mac_text = Some(m);
    }
    let mac = match mac_text {
        Some(m) => Some(
            mac::parse(&m)
                .filter(|b| b.len() == 6)
                .ok_or_else(|| CniError::invalid_config(format!("invalid MAC address {m:?}")))?,
        ),
        None => None,
    };
    Ok(Plan { conf, trunk, mac })
}

/// Creates the bridge unless it exists (a concurrent ADD may win the race:
/// EEXIST is success), then reads it back and brings it up.
fn ensure_bridge(nl: &Netlink, conf: &Conf, vlan_filtering: bool) -> Result<Link, CniError> {
    let name = &conf.bridge;
    let existing = nl.link(name)?;
    let mut created = false;
    if existing.is_none() {
        match nl.add_bridge(name, (conf.mtu > 0).then_some(conf.mtu), vlan_filtering) {
            Err(e) if !e.is_exists() => {
                return Err(CniError::internal(format!("failed to create bridge {name:?}: {e}")))
            }
            Err(_) => {}
            Ok(()) => created = true,
        }
    }
    let br = match existing {
        Some(l) => l,
        None => nl.require_link(name)?,
    };
    if created && br.kind == "bridge" {
        // Setting the bridge's own MAC pins it; otherwise the kernel gives the
        // bridge the lowest port MAC, which changes as containers come and go.
        if let Some(m) = mac::parse(&br.mac) {
            nl.set_mac(br.index, &m)?;
        }
    }
    if br.kind != "bridge" {
        return Err(CniError::internal(format!("{name:?} already exists but is not a bridge")));
    }
    // A bridge made without VLAN filtering (by hand, or by a network without
    // VLANs) would take the ports' VLANs but ignore them: no isolation.
    if vlan_filtering && !created && nl.bridge_vlan_filtering(br.index)? == Some(false) {
        log::info!("turning on vlan_filtering on the existing bridge {name:?}");
        nl.set_bridge_vlan_filtering(br.index, true)?;
    }
    if conf.promisc_mode && !br.promisc {
        nl.set_promisc(br.index, true)?;
    }
    // The plugin owns the bridge's routes: no router advertisements. The
    // link message carries the value: no /proc lookup unless it must change.
    if br.ipv6_accept_ra.is_some_and(|v| v != 0) {
        let _ = sysctl::write(&sysctl::iface_key("ipv6", name, "accept_ra"), "0");
    }
    if !br.up {
        nl.set_up(br.index)?;
    }
    Ok(br)
}

/// Puts `gw` on `link` as the reference does: an equal address is fine; a
/// different IPv4 address, or an overlapping IPv6 one, is an error unless
/// `force` (then it is replaced).
fn ensure_addr(nl: &Netlink, link: &Link, gw: IpNet, force: bool) -> Result<(), CniError> {
    let v6 = gw.addr().is_ipv6();
    for a in nl.link_addrs(link.index, v6)? {
        if a.net == gw {
            return Ok(());
        }
        if !v6 || a.net.contains(&gw.addr()) || gw.contains(&a.net.addr()) {
            if !force {
                return Err(CniError::internal(format!(
                    "{:?} already has an IP address different from {gw}",
                    link.name
                )));
            }
            match nl.del_addr(link.index, a.net) {
                Err(e) if !e.is_not_found() => return Err(e.into()),
                _ => {}
            }
        }
    }
    // IPv6 DAD is skipped: the containers should reach their gateway at once.
    match nl.add_addr(link.index, gw, true) {
        Err(e) if !e.is_exists() => {
            Err(CniError::internal(format!("could not add IP address to {:?}: {e}", link.name)))
        }
        _ => Ok(()),
    }
}

/// A port with nothing to set between enslaving and up: a new port has
/// hairpin and isolation off and no VLANs of its own.
fn is_plain_port(conf: &Conf, trunk: &[(u16, u16)], vlan: u16) -> bool {
    !(conf.hairpin_mode || conf.port_isolation) && vlan == 0 && trunk.is_empty()
}

/// Bridge-port settings of a veth's host end that is not a plain port:
/// master, hairpin, isolation, VLANs, then up.
fn attach_port(
    nl: &Netlink,
    br: &Link,
    port: u32,
    conf: &Conf,
    trunk: &[(u16, u16)],
    vlan: u16,
) -> Result<(), CniError> {
    let flags = conf.hairpin_mode || conf.port_isolation;
    nl.set_master(port, br.index)?;
    fault::step("bridge: port enslaved")?;
    if flags {
        nl.set_bridge_port_flags(port, conf.hairpin_mode, conf.port_isolation)?;
    }
    if (vlan != 0 || !trunk.is_empty()) && !conf.preserve_default_vlan {
        // A new port is a member of the bridge's default VLAN only (0: none).
        let pvid = nl.bridge_default_pvid(br.index)?.unwrap_or(1);
        if pvid != 0 {
            match nl.del_bridge_vlan(port, pvid) {
                Err(e) if !e.is_not_found() => return Err(e.into()),
                _ => {}
            }
        }
    }
    if vlan != 0 {
        nl.add_bridge_vlans(port, vlan, vlan, true)?;
    }
    for &(lo, hi) in trunk {
        nl.add_bridge_vlans(port, lo, hi, false)?;
    }
    if let Some(native) = trunk_native_vlan(vlan, trunk) {
        nl.add_bridge_vlans(port, native, native, true)?;
    }
    fault::step("bridge: port vlans")?;
    nl.set_up(port)?;
    fault::step("bridge: port up")
}

/// A trunk port without `vlan` carries VLAN 1 untagged, as its PVID (as
/// upstream does); with `vlan`, that is its native VLAN (added above).
fn trunk_native_vlan(vlan: u16, trunk: &[(u16, u16)]) -> Option<u16> {
    (vlan == 0 && !trunk.is_empty()).then_some(1)
}

/// The VLAN a port ends up an untagged PVID member of: `vlan`, or a trunk's
/// VLAN 1; none when a trunk range then tagged it again (as upstream's
/// order of requests leaves it).
fn untagged_pvid(vlan: u16, trunk: &[(u16, u16)]) -> Option<u16> {
    let native = if vlan != 0 { Some(vlan) } else { trunk_native_vlan(vlan, trunk) };
    let retagged = |v: u16| vlan != 0 && trunk.iter().any(|&(lo, hi)| (lo..=hi).contains(&v));
    native.filter(|v| !retagged(*v))
}

/// The gateway interface `<bridge>.<vlan>` the reference uses with `vlan`:
/// a veth in the host netns whose peer is an untagged member of the VLAN.
fn ensure_vlan_gateway(nl: &Netlink, br: &Link, conf: &Plan) -> Result<Link, CniError> {
    let vlan = conf.conf.vlan as u16;
    let name = format!("{}.{vlan}", br.name);
    if nl.link(&name)?.is_none() {
        let peer = format!("veth{}", crate::util::hash::short_hex(&[&br.name, &vlan.to_string()], 8));
        let spec = crate::netlink::link::VethSpec {
            name: &name,
            peer_name: &peer,
            mtu: (br.mtu > 0).then_some(br.mtu),
            ..Default::default()
        };
        match nl.add_veth(&spec) {
            // Another ADD is creating it right now: wired below all the same.
            Err(e) if e.is_exists() => {}
            Err(e) => return Err(CniError::internal(format!("failed to create vlan gateway {name:?}: {e}"))),
            Ok(_) => {}
        }
    }
    let gw = nl.require_link(&name)?;
    // Wire the peer as a VLAN port unless that is done: after our own
    // add_veth, or when a concurrent ADD has not finished (all steps are
    // idempotent) or one died half-way.
    let peer = match gw.parent {
        Some(i) => nl.link_by_index(i)?,
        None => None,
    };
    let Some(peer) = peer.filter(|_| gw.kind == "veth") else {
        return Err(CniError::internal(format!("vlan gateway {name:?} is not a veth with its peer in the host")));
    };
    if peer.master != Some(br.index) || !peer.up {
        let port_conf = Conf { preserve_default_vlan: conf.conf.preserve_default_vlan, ..Conf::default() };
        attach_port(nl, br, peer.index, &port_conf, &[], vlan)?;
    }
    if !gw.up {
        nl.set_up(gw.index)?;
    }
    Ok(gw)
}

/// The whole configuration checked, as ADD needs it.
fn validated_plan(cmd: &Command) -> Result<Plan, CniError> {
    let plan = plan(cmd)?;
    if ipam::has_ipam(cmd) && plan.conf.disable_container_interface {
        return Err(CniError::invalid_config("cannot use IPAM when DisableContainerInterface flag is set"));
    }
    if plan.conf.hairpin_mode && plan.conf.promisc_mode {
        return Err(CniError::invalid_config("cannot set hairpin mode and promiscuous mode at the same time"));
    }
    Ok(plan)
}

impl Applet for Bridge {
    fn validate(&self, cmd: &Command) -> Result<(), CniError> {
        validated_plan(cmd)?;
        cmd.prev_result()?;
        ipam::validate(cmd)
    }

    fn add(&self, cmd: &Command) -> Result<CniResult, CniError> {
        let plan = validated_plan(cmd)?;
        // A bad IPAM section fails before the bridge is touched.
        ipam::validate(cmd)?;
        let l3 = ipam::has_ipam(cmd);
        let host = Netlink::new()?;
        let vlan_filtering = plan.conf.vlan != 0 || plan.conf.vlan_trunk.is_some();
        let br = ensure_bridge(&host, &plan.conf, vlan_filtering)?;
        // The bridge is shared by the network's containers: it stays when a later step fails.
        fault::step("bridge: bridge ready")?;
        let (ns, cont) = link_plugin::open_container(cmd)?;

        let run = |ipam_result: Option<CniResult>| {
            let mut made = Made::default();
            let res = setup(cmd, &plan, &host, &br, &ns, &cont, ipam_result, &mut made);
            if res.is_err() {
                rollback(cmd, &host, &ns, &made, nft_use(&plan.conf));
            }
            res
        };
        if l3 {
            ipam::add_then(cmd, |r| run(Some(r)))
        } else {
            run(None)
        }
    }

    fn del(&self, cmd: &Command) -> Result<(), CniError> {
        let conf: Conf = cmd.parse_config()?;
        veth_plugin::del(cmd, nft_use(&conf))
    }

    fn gc(&self, cmd: &Command) -> Result<(), CniError> {
        let conf: Conf = cmd.parse_config()?;
        veth_plugin::gc(cmd, nft_use(&conf))
    }

    fn status(&self, cmd: &Command) -> Result<(), CniError> {
        link_plugin::ipam_status(cmd)
    }

    fn check(&self, cmd: &Command) -> Result<(), CniError> {
        let plan = plan(cmd)?;
        let conf = &plan.conf;
        if ipam::has_ipam(cmd) {
            ipam::check(cmd)?;
        }
        let prev = cmd.prev_result()?.ok_or_else(|| CniError::invalid_config("Required prevResult missing"))?;
        let host = Netlink::new()?;
        let (_ns, cont) = link_plugin::open_container(cmd)?;

        let br_if = prev.interfaces.iter().find(|i| i.name == conf.bridge && i.sandbox.is_empty());
        let br = host.link(&conf.bridge)?.filter(|l| l.kind == "bridge").ok_or_else(|| {
            CniError::internal(format!("CNI created bridge {} in host namespace was not found", conf.bridge))
        })?;
        if let Some(i) = br_if.filter(|i| !i.mac.is_empty()) {
            if i.mac != br.mac {
                return Err(CniError::internal(format!("Bridge interface {} Mac doesn't match: {}", i.name, i.mac)));
            }
        }
        if br.promisc != conf.promisc_mode {
            return Err(CniError::internal(format!(
                "Bridge interface {} configured Promisc Mode {} doesn't match current state: {}",
                br.name, conf.promisc_mode, br.promisc
            )));
        }
        let cont_link = check_container_veth(cmd, &prev, &cont)?;
        // The host end: a veth of the result enslaved to the bridge, peer of the container's.
        let host_veth = prev
            .interfaces
            .iter()
            .filter(|i| i.sandbox.is_empty() && i.name != conf.bridge)
            .filter_map(|i| host.link(&i.name).ok().flatten().map(|l| (i, l)))
            .find(|(_, l)| l.kind == "veth" && l.master == Some(br.index) && cont_link.parent == Some(l.index));
        let Some((host_if, host_link)) = host_veth else {
            return Err(CniError::internal(format!("CNI veth created for bridge {} was not found", conf.bridge)));
        };
        if !host_if.mac.is_empty() && host_if.mac != host_link.mac {
            return Err(CniError::internal(format!("Interface {} Mac doesn't match: {}", host_if.name, host_if.mac)));
        }
        check_port_vlans(&host, &br, &host_link, &plan)?;
        result_check::expect_container_l3(cmd, &prev, &cont, &cont_link)?;
        let att = attachment(cmd);
        if conf.ip_masq {
            let ips: Vec<IpNet> = iface_config::ips_for(&prev, &cmd.ifname, &cmd.netns).map(|ip| ip.address).collect();
            masquerade::check(&att, &ips)?;
        }
        if conf.macspoofchk {
            masquerade::check_spoof(&att, &host_link.name, &cont_link.mac)?;
        }
        Ok(())
    }
}

/// CHECK of the VLANs ADD gave the port: the bridge still filters, the port
/// is an untagged PVID member of `vlan` and carries every trunk VLAN.
fn check_port_vlans(nl: &Netlink, br: &Link, port: &Link, plan: &Plan) -> Result<(), CniError> {
    let vlan = plan.conf.vlan as u16;
    if vlan == 0 && plan.trunk.is_empty() {
        return Ok(());
    }
    if nl.bridge_vlan_filtering(br.index)? != Some(true) {
        return Err(CniError::internal(format!("bridge {} does not filter VLANs", br.name)));
    }
    let have: std::collections::HashMap<u16, PortVlan> =
        nl.bridge_port_vlans(port.index)?.into_iter().map(|v| (v.vid, v)).collect();
    if let Some(native) = untagged_pvid(vlan, &plan.trunk) {
        if !have.get(&native).is_some_and(|v| v.pvid && v.untagged) {
            return Err(CniError::internal(format!(
                "bridge port {} is not an untagged PVID member of VLAN {native}",
                port.name
            )));
        }
    }
    for &(lo, hi) in &plan.trunk {
        if let Some(missing) = (lo..=hi).find(|id| !have.contains_key(id)) {
            return Err(CniError::internal(format!("bridge port {} lacks trunk VLAN {missing}", port.name)));
        }
    }
    Ok(())
}

/// Everything ADD does after IPAM; records what it made in `made` so that
/// `rollback` can undo it.
#[allow(clippy::too_many_arguments)]
fn setup(
    cmd: &Command,
    plan: &Plan,
    host: &Netlink,
    br: &Link,
    ns: &NetNs,
    cont: &Netlink,
    ipam_result: Option<CniResult>,
    made: &mut Made,
) -> Result<CniResult, CniError> {
    let conf = &plan.conf;
    let alias = host_veth_tag(cmd);
    let vlan = conf.vlan as u16;
    // A plain port is enslaved and up from the request that creates it.
    let plain = is_plain_port(conf, &plan.trunk, vlan);
    let want = ContainerVeth {
        container_id: &cmd.container_id,
        ifname: &cmd.ifname,
        mtu: (conf.mtu > 0).then_some(conf.mtu),
        mac: plan.mac.clone(),
        alias: &alias,
        master: plain.then_some(br.index),
        bridge_port: true,
    };
    let pair = veth::create_container_veth(host, ns, cont, &want)?;
    made.veth = true;
    // Before the container end comes up, after which the port starts
    // forwarding: the wait below is woken by the kernel's announcement.
    let port_events =
        if conf.disable_container_interface { None } else { LinkEvents::subscribe(Only::Link(pair.host.index)).ok() };
    if !plain {
        attach_port(host, br, pair.host.index, conf, &plan.trunk, vlan)?;
    }

    let mut result = CniResult {
        interfaces: [Interface { name: br.name.clone(), mac: br.mac.clone(), ..Default::default() }]
            .into_iter()
            .chain(veth_interfaces(cmd, &pair))
            .collect(),
        ..Default::default()
    };
    let att = attachment(cmd);
    let mut nft_additions = masquerade::Additions::default();
    if let Some(ipam_result) = ipam_result {
        result.ips = ipam_result.ips;
        result.routes = ipam_result.routes;
        result.dns = ipam_result.dns;
        let gateways = calc_gateways(&mut result, conf);
        veth::prepare_container_sysctls(ns, &cmd.ifname, conf.enabledad)?;
        fault::step("bridge: container sysctls")?;
        iface_config::configure_link(ns, cont, &pair.container, &cmd.netns, &result, iface_config::ArpNotify::On)?;
        // Even without DAD the kernel clears "tentative" asynchronously after
        // the link comes up; with DAD it takes a second or more.
        if result.ips.iter().any(|ip| ip.address.addr().is_ipv6()) {
            veth::wait_addresses_settled(cont, pair.container.index, Duration::from_secs(10))?;
        }
        if conf.is_gateway && !gateways.is_empty() {
            let gw_link = if conf.vlan != 0 {
                let l = ensure_vlan_gateway(host, br, plan)?;
                result.interfaces.push(Interface { name: l.name.clone(), mac: l.mac.clone(), ..Default::default() });
                l
            } else {
                br.clone()
            };
            for gw in &gateways {
                ensure_addr(host, &gw_link, *gw, conf.force_address)?;
                fault::step("bridge: gateway address")?;
            }
            enable_forwarding(&gateways)?;
            fault::step("bridge: forwarding")?;
        }
        if conf.ip_masq {
            let ips: Vec<IpNet> = result.ips.iter().map(|ip| ip.address).collect();
            nft_additions.masquerade(&ips);
        }
    } else if !conf.disable_container_interface {
        cont.set_up(pair.container.index)?;
        fault::step("bridge: container link up")?;
    }
    if conf.macspoofchk {
        nft_additions.guard(&pair.host.name, &pair.container.mac);
    }
    if !nft_additions.is_empty() {
        made.nft = true;
        masquerade::apply(&att, &nft_additions)?;
    }

    // The host end as last read (the forwarding wait reads it anyway).
    let mut host_link_now = None;
    if !conf.disable_container_interface {
        let (state, port_link) =
            host.wait_bridge_port_forwarding(pair.host.index, Duration::from_secs(3), port_events.as_ref())?;
        host_link_now = port_link;
        match state {
            Some(PortState::Forwarding) => {}
            // STP is on: the port forwards once STP says so.
            Some(PortState::Listening | PortState::Learning) => {
                log::info!("bridge port {} is not forwarding yet (STP)", pair.host.name)
            }
            other => {
                return Err(CniError::internal(format!("bridge port {} in error state: {other:?}", pair.host.name)))
            }
        }
    }
    fault::step("bridge: port forwarding")?;
    // The host end's and the bridge's MACs may change as ports come and go.
    let host_link_now = match host_link_now {
        Some(l) => Some(l),
        None => host.link_by_index(pair.host.index)?,
    };
    if let Some(l) = host_link_now {
        result.interfaces[1].mac = l.mac;
    }
    // A bridge without a MAC of its own takes its lowest port's: only a
    // port whose MAC sorts below the bridge's can have changed it, and host
    // ends get fe:... (mac::random_host_port).
    if mac::parse(&pair.host.mac) < mac::parse(&br.mac) {
        if let Some(l) = host.link_by_index(br.index)? {
            result.interfaces[0].mac = l.mac;
        }
    }
    if let Some(dns) = cmd.conf.dns.as_ref().filter(|d| !d.is_empty()) {
        result.dns = dns.clone();
    }
    fault::step("bridge: result ready")?;
    Ok(result)
}

/// Fills in missing gateways and the default routes; returns the gateway
/// addresses (with the subnet's prefix) the bridge should hold.
fn calc_gateways(result: &mut CniResult, conf: &Conf) -> Vec<IpNet> {
    let mut gateways = Vec::new();
    let mut default_done = [false, false];
    for ip in &mut result.ips {
        ip.interface = Some(2);
        let v6 = ip.address.addr().is_ipv6();
        if ip.gateway.is_none() && conf.is_gateway {
            ip.gateway = Some(first_host(&ip.address));
        }
        if conf.is_default_gateway && !default_done[v6 as usize] {
            let default: IpNet = if v6 { "::/0".parse().unwrap() } else { "0.0.0.0/0".parse().unwrap() };
            if !result.routes.iter().any(|r| r.dst == default && r.gw.is_some()) {
                result.routes.push(Route::new(default, ip.gateway));
            }
            default_done[v6 as usize] = true;
        }
        if let (true, Some(gw)) = (conf.is_gateway, ip.gateway) {
            if let Ok(net) = IpNet::new(gw, ip.address.prefix_len()) {
                if !gateways.contains(&net) {
                    gateways.push(net);
                }
            }
        }
    }
    gateways
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trunks() {
        let t = |v: serde_json::Value| -> Result<Vec<(u16, u16)>, CniError> {
            let items: Vec<VlanTrunk> = serde_json::from_value(v).unwrap();
            trunk_ranges(&items)
        };
        assert_eq!(
            t(serde_json::json!([{"minID": 10, "maxID": 12}, {"id": 13}, {"id": 20}])).unwrap(),
            vec![(10, 13), (20, 20)]
        );
        assert!(t(serde_json::json!([{"minID": 10}])).is_err());
        assert!(t(serde_json::json!([{"minID": 12, "maxID": 10}])).is_err());
        assert!(t(serde_json::json!([{"id": 4095}])).is_err());
        assert!(t(serde_json::json!([{"id": 0}])).is_err());
    }

    #[test]
    fn gateways() {
        assert_eq!(first_host(&"10.1.2.7/24".parse().unwrap()).to_string(), "10.1.2.1");
        assert_eq!(first_host(&"fd00::7/64".parse().unwrap()).to_string(), "fd00::1");
        let mut r = CniResult {
            ips: vec![crate::cni::IpConfig { address: "10.1.2.7/24".parse().unwrap(), gateway: None, interface: None }],
            ..Default::default()
        };
        let conf = Conf { is_gateway: true, is_default_gateway: true, ..Conf::default() };
        let gws = calc_gateways(&mut r, &conf);
        assert_eq!(gws, vec!["10.1.2.1/24".parse::<IpNet>().unwrap()]);
        assert_eq!(r.routes.len(), 1);
        assert_eq!(r.ips[0].interface, Some(2));
    }
}
