//! bandwidth: a chained plugin that limits a container's traffic with token
//! bucket filters on the host side of its veth.
//!
//! Traffic toward the container (its ingress) leaves the host through the
//! host-side veth: a root tbf there limits it. Traffic from the container
//! (its egress) arrives on the host veth: an ingress qdisc with a match-all
//! u32 filter redirects it to an ifb device whose root tbf limits it.
//!
//! The limits come from the config's own keys or, when none of them is
//! given, from `runtimeConfig.bandwidth` (the reference's precedence).

use serde::Deserialize;

use super::shared::link_plugin::{open_container_for_del, open_netns};
use crate::cni::fault;
use crate::cni::{gc, Applet, CniError, CniResult, Command, Interface};
use crate::netlink::tc::{self, Tbf};
use crate::netlink::{Link, Netlink};
use crate::util::sha512;

pub struct Bandwidth;

/// The four keys, in the config or in runtimeConfig.bandwidth (bits/s, bits).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Entry {
    ingress_rate: Option<u64>,
    ingress_burst: Option<u64>,
    egress_rate: Option<u64>,
    egress_burst: Option<u64>,
}

impl Entry {
    fn is_given(&self) -> bool {
        self.ingress_rate.is_some()
            || self.ingress_burst.is_some()
            || self.egress_rate.is_some()
            || self.egress_burst.is_some()
    }
}

/// One direction's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Limit {
    /// Bits per second.
    rate: u64,
    /// Bits.
    burst: u64,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Limits {
    ingress: Option<Limit>,
    egress: Option<Limit>,
}

/// How long a full queue may take to drain, as in the reference.
const LATENCY_USEC: f64 = 25_000.0;
const IFB_PREFIX: &str = "bwp";
const IFB_NAME_LEN: usize = 15;
/// Marks ifb devices cnibox made, so GC can find those of one network.
const ALIAS_PREFIX: &str = "cnibox-bandwidth:";

/// The limits to apply: the config's own keys win over runtimeConfig.
fn limits(cmd: &Command) -> Result<Limits, CniError> {
    let own: Entry = cmd.parse_config()?;
    let entry = if own.is_given() { own } else { cmd.runtime_config::<Entry>("bandwidth")?.unwrap_or_default() };
    Ok(Limits {
        ingress: limit(entry.ingress_rate.unwrap_or(0), entry.ingress_burst.unwrap_or(0), "ingress")?,
        egress: limit(entry.egress_rate.unwrap_or(0), entry.egress_burst.unwrap_or(0), "egress")?,
    })
}

fn limit(rate: u64, burst: u64, dir: &str) -> Result<Option<Limit>, CniError> {
    let bad = |msg: String| Err(CniError::invalid_config(msg));
    match (rate, burst) {
        (0, 0) => return Ok(None),
        (_, 0) => return bad(format!("if {dir}Rate is set, {dir}Burst must also be set")),
        (0, _) => return bad(format!("if {dir}Burst is set, {dir}Rate must also be set")),
        _ => {}
    }
    if burst / 8 >= u32::MAX as u64 {
        return bad(format!("{dir}Burst cannot be more than 4GB"));
    }
    if rate < 8 || burst < 8 {
        return bad(format!("{dir}Rate and {dir}Burst must be at least 8 bits (one byte)"));
    }
    Ok(Some(Limit { rate, burst }))
}

/// The tbf settings the reference derives from rate and burst, computed the
/// same way (f64 steps included) so CHECK agrees across implementations.
///
/// Where the reference's 32-bit tick count wraps (large bursts at low rates,
/// e.g. Kubernetes' default burst of 2^31-1 bits under ~8 Mbit/s), the kernel
/// is given the burst in bytes as well, so the bucket is the size asked for;
/// the `buffer` it reports back then wraps just like the reference's value.
fn tbf_for(l: Limit, ticks_per_usec: f64) -> Tbf {
    let rate = l.rate / 8;
    let burst = (l.burst / 8) as u32;
    let usecs = burst as f64 * 1_000_000.0 / rate as f64;
    let ticks = usecs.trunc() * ticks_per_usec;
    let fits = usecs <= u32::MAX as f64 && ticks <= u32::MAX as f64;
    // Go's float to uint32 conversion on amd64 keeps the low 32 bits.
    let buffer = if fits { ticks as u32 } else { (ticks as u64) as u32 };
    let queued = (rate as f64 * LATENCY_USEC / 1_000_000.0) as u64;
    let limit = (queued + burst as u64).min(u32::MAX as u64) as u32;
    Tbf { rate, limit, buffer, burst: (!fits).then_some(burst) }
}

/// Whether the kernel's tbf is the one `want` describes. A buffer the kernel
/// derived from an explicit burst is not compared (its rounding is its own).
fn same_tbf(got: &Tbf, want: &Tbf) -> bool {
    got.rate == want.rate && got.limit == want.limit && (want.burst.is_some() || got.buffer == want.buffer)
}

/// The ifb's name, the reference's: "bwp" + a hash of network name and container ID.
fn ifb_name(cmd: &Command) -> String {
    sha512::name_with_prefix(IFB_NAME_LEN, IFB_PREFIX, &format!("{}{}", cmd.conf.name, cmd.container_id))
}

fn ifb_alias(cmd: &Command) -> String {
    format!("{ALIAS_PREFIX}{}:{}", cmd.container_id, cmd.conf.name)
}

/// The host side of the container's veth. A candidate must be a veth whose
/// peer is the container interface and whose index the container interface
/// names as its peer. Interfaces without a sandbox in prevResult are tried
/// first; the container interface's peer index is the fallback.
fn host_veth(host: &Netlink, container: &Link, prev: Option<&CniResult>) -> Result<Option<Link>, CniError> {
    let is_peer = |l: &Link| l.kind == "veth" && l.parent == Some(container.index) && container.parent == Some(l.index);
    for iface in prev.map(|p| p.interfaces.as_slice()).unwrap_or_default() {
        if !iface.sandbox.is_empty() {
            continue;
        }
        if let Some(l) = host.link(&iface.name)? {
            if is_peer(&l) {
                return Ok(Some(l));
            }
        }
    }
    if container.kind != "veth" {
        return Ok(None);
    }
    let Some(peer) = container.parent else { return Ok(None) };
    Ok(host.link_by_index(peer)?.filter(is_peer))
}

/// Looks up the container interface and the host veth for ADD and CHECK.
fn require_host_veth(cmd: &Command, host: &Netlink, prev: &CniResult) -> Result<Link, CniError> {
    let ns = open_netns(cmd)?;
    let cnl = Netlink::in_netns(&ns)?;
    let container = cnl
        .link(&cmd.ifname)?
        .ok_or_else(|| CniError::internal(format!("container interface {} not found", cmd.ifname)))?;
    host_veth(host, &container, Some(prev))?.ok_or_else(|| {
        CniError::internal(format!("container interface {} has no veth peer in this namespace", cmd.ifname))
    })
}

/// Everything ADD created, to undo it when a later step fails.
#[derive(Default)]
struct Undo {
    root_tbf: Option<u32>,
    ingress_qdisc: Option<u32>,
    ifb: Option<u32>,
}

impl Undo {
    fn run(self, nl: &Netlink) {
        if let Some(i) = self.ingress_qdisc {
            let _ = nl.del_qdisc(i, tc::INGRESS_HANDLE, tc::INGRESS_PARENT);
        }
        if let Some(i) = self.ifb {
            let _ = nl.del_link(i);
        }
        if let Some(i) = self.root_tbf {
            let _ = nl.del_qdisc(i, tc::TBF_HANDLE, tc::ROOT_PARENT);
        }
    }
}

fn apply(cmd: &Command, nl: &Netlink, veth: &Link, limits: &Limits, undo: &mut Undo) -> Result<Option<Link>, CniError> {
    let ticks = tc::ticks_per_usec();
    if let Some(l) = limits.ingress {
        let tbf = tbf_for(l, ticks);
        nl.replace_root_tbf(veth.index, &tbf)?;
        undo.root_tbf = Some(veth.index);
        fault::step("bandwidth: ingress tbf")?;
    }
    let Some(l) = limits.egress else { return Ok(None) };
    let tbf = tbf_for(l, ticks);
    let name = ifb_name(cmd);
    // A leftover from an earlier ADD of the same container is ours to replace.
    if let Some(old) = nl.link(&name)? {
        if old.kind == "ifb" {
            nl.del_link(old.index)?;
        }
    }
    nl.add_ifb(&name, veth.mtu)?;
    let ifb = nl.require_link(&name)?;
    undo.ifb = Some(ifb.index);
    fault::step("bandwidth: ifb created")?;
    nl.set_alias(ifb.index, &ifb_alias(cmd))?;
    fault::step("bandwidth: ifb alias")?;
    match nl.add_ingress_qdisc(veth.index) {
        // An ingress qdisc from an earlier ADD: start afresh so filters do not pile up.
        Err(e) if e.is_exists() => {
            nl.del_qdisc(veth.index, tc::INGRESS_HANDLE, tc::INGRESS_PARENT)?;
            nl.add_ingress_qdisc(veth.index)?;
        }
        r => r?,
    }
    undo.ingress_qdisc = Some(veth.index);
    fault::step("bandwidth: ingress qdisc")?;
    nl.add_redirect_filter(veth.index, ifb.index)?;
    fault::step("bandwidth: redirect filter")?;
    nl.replace_root_tbf(ifb.index, &tbf)?;
    fault::step("bandwidth: egress tbf")?;
    Ok(Some(ifb))
}

fn root_tbf(nl: &Netlink, index: u32) -> Result<Option<Tbf>, CniError> {
    Ok(nl.qdiscs(index)?.into_iter().find(|q| q.parent == tc::ROOT_PARENT).and_then(|q| q.tbf))
}

fn check_tbf(nl: &Netlink, dev: &Link, want: Tbf) -> Result<(), CniError> {
    match root_tbf(nl, dev.index)? {
        None => Err(CniError::internal(format!("no tbf qdisc on {}", dev.name))),
        Some(got) if !same_tbf(&got, &want) => Err(CniError::internal(format!(
            "the tbf qdisc on {} has rate {} B/s, limit {}, buffer {}; expected {} B/s, {}, {}",
            dev.name, got.rate, got.limit, got.buffer, want.rate, want.limit, want.buffer
        ))),
        Some(_) => Ok(()),
    }
}

impl Applet for Bandwidth {
    /// Chained: a prevResult, when given, must parse; ADD demands one.
    fn validate(&self, cmd: &Command) -> Result<(), CniError> {
        limits(cmd)?;
        cmd.prev_result().map(|_| ())
    }

    fn add(&self, cmd: &Command) -> Result<CniResult, CniError> {
        let limits = limits(cmd)?;
        let prev = cmd.prev_result()?;
        if limits == Limits::default() {
            return Ok(prev.unwrap_or_default());
        }
        let mut result =
            prev.ok_or_else(|| CniError::invalid_config("bandwidth must be called as a chained plugin"))?;
        let nl = Netlink::new()?;
        let veth = require_host_veth(cmd, &nl, &result)?;
        let mut undo = Undo::default();
        match apply(cmd, &nl, &veth, &limits, &mut undo) {
            Ok(Some(ifb)) => {
                result.interfaces.push(Interface { name: ifb.name, mac: ifb.mac, ..Default::default() });
            }
            Ok(None) => {}
            Err(e) => {
                undo.run(&nl);
                return Err(e);
            }
        }
        Ok(result)
    }

    /// Removes the ifb and, when the host veth can still be found, the
    /// qdiscs on it (the veth usually goes with the main plugin's DEL).
    /// A netns that cannot be opened (and is not just gone) is reported
    /// after the ifb is removed all the same.
    fn del(&self, cmd: &Command) -> Result<(), CniError> {
        let nl = Netlink::new()?;
        let name = ifb_name(cmd);
        let ifb = nl.link(&name)?.filter(|l| l.kind == "ifb");
        let mut errors = Vec::new();
        let found = find_veth_for_del(cmd, &nl);
        if let Ok(Some(veth)) = &found {
            let redirects_to_ifb = ifb.as_ref().is_some_and(|ifb| {
                nl.ingress_redirect_targets(veth.index).map(|t| t.contains(&ifb.index)).unwrap_or(false)
            });
            if redirects_to_ifb {
                if let Err(e) = nl.del_qdisc(veth.index, tc::INGRESS_HANDLE, tc::INGRESS_PARENT) {
                    if !e.is_not_found() {
                        errors.push(e.to_string());
                    }
                }
            }
            let ours = nl.qdiscs(veth.index).map(|qs| {
                qs.iter().any(|q| q.kind == "tbf" && q.handle == tc::TBF_HANDLE && q.parent == tc::ROOT_PARENT)
            });
            if ours.unwrap_or(false) {
                if let Err(e) = nl.del_qdisc(veth.index, tc::TBF_HANDLE, tc::ROOT_PARENT) {
                    if !e.is_not_found() {
                        errors.push(e.to_string());
                    }
                }
            }
        }
        if let Some(ifb) = ifb {
            if let Err(e) = nl.del_link(ifb.index) {
                if !e.is_not_found() {
                    errors.push(e.to_string());
                }
            }
        }
        let cleaned = if errors.is_empty() {
            Ok(())
        } else {
            Err(CniError::internal("bandwidth DEL failed").with_details(errors.join("; ")))
        };
        found.and(cleaned)
    }

    fn check(&self, cmd: &Command) -> Result<(), CniError> {
        let limits = limits(cmd)?;
        let prev = cmd
            .prev_result()?
            .ok_or_else(|| CniError::invalid_config("bandwidth must be called as a chained plugin"))?;
        let nl = Netlink::new()?;
        let veth = require_host_veth(cmd, &nl, &prev)?;
        let ticks = tc::ticks_per_usec();
        if let Some(l) = limits.ingress {
            let want = tbf_for(l, ticks);
            check_tbf(&nl, &veth, want)?;
        }
        if let Some(l) = limits.egress {
            let want = tbf_for(l, ticks);
            let name = ifb_name(cmd);
            let ifb = nl
                .link(&name)?
                .filter(|l| l.kind == "ifb")
                .ok_or_else(|| CniError::internal(format!("ifb device {name} not found")))?;
            if !nl.ingress_redirect_targets(veth.index)?.contains(&ifb.index) {
                return Err(CniError::internal(format!("no filter on {} redirects to {name}", veth.name)));
            }
            check_tbf(&nl, &ifb, want)?;
        }
        Ok(())
    }

    /// Deletes the ifb devices this network made for containers that are no
    /// longer valid attachments. Only devices carrying cnibox's alias for this
    /// network are considered (the names alone do not tell networks apart).
    fn gc(&self, cmd: &Command) -> Result<(), CniError> {
        let Some(valid) = gc::valid_attachments(cmd)? else { return Ok(()) };
        let nl = Netlink::new()?;
        let mut errors = Vec::new();
        for link in nl.links()? {
            if link.kind != "ifb" {
                continue;
            }
            let Some(rest) = link.alias.strip_prefix(ALIAS_PREFIX) else { continue };
            let Some((container_id, network)) = rest.split_once(':') else { continue };
            if network != cmd.conf.name || gc::is_valid_container(&valid, container_id) {
                continue;
            }
            log::info!("GC: deleting {} of container {container_id}", link.name);
            if let Err(e) = nl.del_link(link.index) {
                if !e.is_not_found() {
                    errors.push(e.to_string());
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(CniError::internal("bandwidth GC failed").with_details(errors.join("; ")))
        }
    }
}

/// The host veth whose qdiscs DEL removes. Best effort past opening the
/// netns: without the netns, the container interface or a prevResult there
/// is nothing to find, and the veth has usually gone with the netns.
fn find_veth_for_del(cmd: &Command, nl: &Netlink) -> Result<Option<Link>, CniError> {
    let Some((_ns, cnl)) = open_container_for_del(cmd)? else { return Ok(None) };
    let Ok(Some(container)) = cnl.link(&cmd.ifname) else { return Ok(None) };
    let prev = cmd.prev_result().ok().flatten();
    Ok(host_veth(nl, &container, prev.as_ref()).ok().flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_rate_and_burst() {
        assert_eq!(limit(0, 0, "ingress").unwrap(), None);
        assert_eq!(limit(1000, 0, "ingress").unwrap_err().code, 7);
        assert_eq!(limit(0, 1000, "egress").unwrap_err().code, 7);
        assert_eq!(limit(1_000_000, 8 * u32::MAX as u64, "egress").unwrap_err().code, 7);
        assert_eq!(limit(4, 1000, "egress").unwrap_err().code, 7);
        // A huge burst at a tiny rate is fine (the kernel gets it in bytes).
        assert!(limit(8_000, 8_000_000_000, "egress").unwrap().is_some());
        assert_eq!(limit(1_000_000, 2_000_000, "egress").unwrap(), Some(Limit { rate: 1_000_000, burst: 2_000_000 }));
    }

    #[test]
    fn tbf_like_the_reference() {
        // 1 Mbit/s, 100 kbit burst: 125000 B/s, 12500 B bucket = 100 ms
        // = 1562500 ticks at 15.625 ticks/us; limit = 3125 + 12500.
        let t = tbf_for(Limit { rate: 1_000_000, burst: 100_000 }, 15.625);
        assert_eq!(t, Tbf { rate: 125_000, limit: 15_625, buffer: 1_562_500, burst: None });
        // Kubernetes' default burst (MaxInt32 bits) at 10 Mbit/s.
        let t = tbf_for(Limit { rate: 10_000_000, burst: 2_147_483_647 }, 15.625);
        assert_eq!(t.rate, 1_250_000);
        assert_eq!(t.limit, 31_250 + 268_435_455);
        assert_eq!(t.buffer, 3_355_443_187); // 214748364 us * 15.625
        assert_eq!(t.burst, None);
        // At 5 Mbit/s the ticks exceed 32 bits: the reference's value wraps,
        // and the kernel is told the burst in bytes.
        let t = tbf_for(Limit { rate: 5_000_000, burst: 2_147_483_647 }, 15.625);
        assert_eq!(t.buffer, (6_710_886_375u64 % (1 << 32)) as u32);
        assert_eq!(t.burst, Some(268_435_455));
    }
}
