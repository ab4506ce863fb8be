//! What the veth-based main plugins (bridge, ptp) share beyond the netlink
//! layer: gateway arithmetic, forwarding, and the CHECK of the container
//! side against the previous result.

use std::net::IpAddr;

use ipnet::IpNet;

use super::link_plugin::open_netns_for_del;
use super::masquerade;
use super::result_check;
use crate::cni::{gc, ipam, CniError, CniResult, Command, Interface};
use crate::netlink::veth::VethPair;
use crate::netlink::{sysctl, veth, Link, NetNs, Netlink};
use crate::nft::Owner;

/// The attachment `cmd` is about, as the nftables elements name it.
pub fn attachment(cmd: &Command) -> Owner<'_> {
    super::nft_attachment::owner(cmd)
}

/// nft keeps at most this many bytes of a comment; the veth tag was one.
const TAG_MAX: usize = 127;

/// The tag (alias) of an attachment's host veth end, for GC:
/// `<8 hex digits of the network's hash> <container id> <ifname>`.
fn veth_tag(network: &str, container_id: &str, ifname: &str) -> String {
    let mut tag = format!("{} {container_id} {ifname}", masquerade::network_hash(network));
    tag.truncate(TAG_MAX);
    tag
}

/// The tag `cmd`'s host veth end carries.
pub fn host_veth_tag(cmd: &Command) -> String {
    veth_tag(&cmd.conf.name, &cmd.container_id, &cmd.ifname)
}

/// Whether `alias` is the tag of a host veth end of `network`.
fn is_network_tag(alias: &str, network: &str) -> bool {
    let mut parts = alias.splitn(3, ' ');
    parts.next() == Some(masquerade::network_hash(network).as_str()) && parts.next().is_some() && parts.next().is_some()
}

/// The first address of the subnet, the gateway when IPAM names none.
pub fn first_host(net: &IpNet) -> IpAddr {
    match net.trunc() {
        IpNet::V4(n) => IpAddr::V4((u32::from(n.network()).wrapping_add(1)).into()),
        IpNet::V6(n) => IpAddr::V6((u128::from(n.network()).wrapping_add(1)).into()),
    }
}

/// ip_forward on in the host netns for the gateways' families.
pub fn enable_forwarding(addrs: &[IpNet]) -> Result<(), CniError> {
    if addrs.iter().any(|a| a.addr().is_ipv4()) {
        sysctl::write("net/ipv4/ip_forward", "1")?;
    }
    if addrs.iter().any(|a| a.addr().is_ipv6()) {
        sysctl::write("net/ipv6/conf/all/forwarding", "1")?;
    }
    Ok(())
}

/// CHECK of the container side: the interface named in the result exists in
/// the netns, is a veth and has the result's MAC.
pub fn check_container_veth(cmd: &Command, prev: &CniResult, cont: &Netlink) -> Result<Link, CniError> {
    let link = result_check::expect_container_link(cmd, prev, cont)?;
    result_check::expect_kind(&link, "veth")?;
    Ok(link)
}

/// The result's interfaces for a veth pair: the host end, then the
/// container's (in the sandbox).
pub fn veth_interfaces(cmd: &Command, pair: &VethPair) -> [Interface; 2] {
    [
        Interface { name: pair.host.name.clone(), mac: pair.host.mac.clone(), ..Default::default() },
        Interface {
            name: cmd.ifname.clone(),
            mac: pair.container.mac.clone(),
            sandbox: cmd.netns.clone(),
            ..Default::default()
        },
    ]
}

/// Which nftables pieces an attachment has.
#[derive(Debug, Clone, Copy, Default)]
pub struct NftUse {
    pub masq: bool,
    pub spoof: bool,
}

impl NftUse {
    fn any(self) -> bool {
        self.masq || self.spoof
    }
}

/// What a failing ADD has made so far, for `rollback`.
#[derive(Debug, Default)]
pub struct Made {
    pub veth: bool,
    pub nft: bool,
}

/// Undoes a failed ADD's steps in reverse (IPAM is released by
/// `ipam::add_then`). Shared objects (a bridge, its gateway) stay.
pub fn rollback(cmd: &Command, host: &Netlink, ns: &NetNs, made: &Made, nft: NftUse) {
    if made.nft {
        if let Err(e) = masquerade::del(&mut *crate::nft::backend(), &attachment(cmd), nft.masq, nft.spoof, None) {
            log::warn!("rollback: removing nftables elements: {e}");
        }
    }
    if made.veth {
        let tag = host_veth_tag(cmd);
        if let Err(e) = veth::delete_container_veth(host, Some(ns), &cmd.container_id, &cmd.ifname, &tag) {
            log::warn!("rollback: deleting the veth pair: {e}");
        }
    }
}

/// DEL of a veth attachment: its nftables elements (found by container ID),
/// the veth pair (the container's end, or the derived host end when the
/// netns is gone or cannot be opened), then the IPAM reservation. Keeps
/// going past errors and reports the first.
pub fn del(cmd: &Command, nft: NftUse) -> Result<(), CniError> {
    let mut errors: Vec<CniError> = Vec::new();
    // One backend, so one nfnetlink socket: each close after a deletion waits.
    let mut backend = crate::nft::backend();
    if nft.any() {
        let prev = cmd.prev_result().ok().flatten();
        if let Err(e) = masquerade::del(&mut *backend, &attachment(cmd), nft.masq, nft.spoof, prev.as_ref()) {
            errors.push(e);
        }
    }
    if nft.masq {
        if let Err(e) = masquerade::del_reference(&mut *backend, &attachment(cmd)) {
            errors.push(e);
        }
    }
    // A netns that cannot be opened (and is not just gone) is reported, but
    // the host side goes all the same: the host end takes the container's
    // end with it, wherever that is.
    let ns = open_netns_for_del(cmd).unwrap_or_else(|e| {
        errors.push(e);
        None
    });
    let no_container_end = ns.is_none();
    let host = Netlink::new();
    let tag = host_veth_tag(cmd);
    let deleted = host.and_then(|h| {
        veth::delete_container_veth(&h, ns.as_ref(), &cmd.container_id, &cmd.ifname, &tag)?;
        if no_container_end {
            // A host end that got a random name (its derived one was taken) is
            // found by its tag; the container's end is not at hand to take it along.
            veth::delete_host_veths(&h, |alias| alias == tag, |_| true)?;
        }
        Ok(())
    });
    if let Err(e) = deleted {
        errors.push(e.into());
    }
    if ipam::has_ipam(cmd) {
        if let Err(e) = ipam::del(cmd) {
            errors.push(e);
        }
    }
    errors.into_iter().next().map_or(Ok(()), Err)
}

/// GC: the host veths (found by the attachment tag in their alias) and
/// nftables elements of attachments not in `cni.dev/valid-attachments`,
/// then the IPAM delegate's GC. Without the list nothing of ours is removed.
pub fn gc(cmd: &Command, nft: NftUse) -> Result<(), CniError> {
    let mut first_err = None;
    match gc::valid_attachments(cmd) {
        Ok(Some(valid)) => {
            let network = cmd.conf.name.as_str();
            let valid_tags: Vec<String> = valid.iter().map(|a| veth_tag(network, &a.container_id, &a.ifname)).collect();
            let stale = |alias: &str| is_network_tag(alias, network) && !valid_tags.iter().any(|t| t == alias);
            let kept_names: Vec<String> =
                valid.iter().map(|a| veth::host_veth_name(&a.container_id, &a.ifname)).collect();
            let kept = |name: &str| kept_names.iter().any(|n| n == name);
            match Netlink::new().and_then(|host| veth::delete_host_veths(&host, stale, kept)) {
                Ok(0) => {}
                Ok(n) => log::info!("GC of network {network}: deleted {n} leftover veth pairs"),
                Err(e) => first_err = Some(e.into()),
            }
            let mut backend = crate::nft::backend();
            if nft.any() {
                if let Err(e) = masquerade::gc(&mut *backend, network, &valid, nft.masq, nft.spoof) {
                    first_err = first_err.or(Some(e));
                }
            }
            if nft.masq {
                if let Err(e) = masquerade::gc_reference(&mut *backend, network, &valid) {
                    first_err = first_err.or(Some(e));
                }
            }
        }
        Ok(None) => log::warn!("GC without cni.dev/valid-attachments: no veth or nftables element removed"),
        Err(e) => first_err = Some(e),
    }
    if ipam::has_ipam(cmd) {
        if let Err(e) = ipam::gc(cmd) {
            first_err = first_err.or(Some(e));
        }
    }
    first_err.map_or(Ok(()), Err)
}
